//! Reliability (issue 17): the agent's disk fills up during an upload. The upload's target
//! folder is a 1 MiB tmpfs (mounting needs root, as CI runs); a larger file is refused with a
//! typed error (507 `disk_full`), the agent removes its partial file (the space is given
//! back), and the session stays usable: a small upload and a command work after it.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rmm_e2e::ops::run_command;
use rmm_e2e::pseudo_random;
use rmm_e2e::real_agent::open_tunnel;
use rmm_e2e::reliability;
use serde_json::Value;

const MIB: usize = 1024 * 1024;

/// A tmpfs of `size` mounted on a folder, unmounted when dropped (a failed assertion too).
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
        assert!(
            status.success(),
            "mounting a {size} tmpfs on {} failed: this test needs root (as CI runs)",
            dir.display()
        );
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The names in the folder, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
    }
}

#[tokio::test]
async fn a_full_disk_fails_the_upload_typed_removes_the_partial_and_keeps_the_session() {
    let t = open_tunnel().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&tmp.path().join("small"), "1m");
    let upload = |path: PathBuf, body: Vec<u8>| {
        let url = t.server.url(&format!(
            "/api/v1/tunnel/{}/files?path={}",
            t.session,
            path.display()
        ));
        let request = t.server.http().put(url).bearer_auth(&t.tech).body(body);
        async move {
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let started = Instant::now();
    let (code, body) = upload(disk.dir.join("big.bin"), pseudo_random(11, 3 * MIB)).await;
    let refused_after = started.elapsed();
    assert_eq!(code, 507, "{body}");
    assert_eq!(body["code"], "disk_full", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("No space left"),
        "the agent's reason is passed on: {body}"
    );
    // Neither the target nor the partial file (.big.bin.rmm-partial) is left: the disk is
    // free again. The agent removes the partial before it reports the failure.
    assert_eq!(disk.names(), Vec::<String>::new(), "left on the full disk");
    let free = nix::sys::statvfs::statvfs(&disk.dir).unwrap();
    let free_bytes = free.blocks_available() * free.fragment_size();
    assert!(
        free_bytes >= (MIB as u64) * 9 / 10,
        "only {free_bytes} bytes free after the failed upload"
    );

    // The session still works: a small upload to the same disk, and a command.
    let small = pseudo_random(12, 64 * 1024);
    let (code, body) = upload(disk.dir.join("small.bin"), small.clone()).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(std::fs::read(disk.dir.join("small.bin")).unwrap(), small);
    let done = run_command(
        &t.server,
        &t.tech,
        &t.session,
        &format!("wc -c < {}", disk.dir.join("small.bin").display()),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(done["stdout"], "65536\n", "{done}");
    assert_eq!(done["exit_code"], 0, "{done}");

    reliability::record(
        "faults",
        "disk full on the agent during an upload (3 MiB to a 1 MiB tmpfs): typed error, partial file removed, session usable",
        &format!(
            "507 disk_full after {:.2} s; nothing left on the disk; a 64 KiB upload and a command then succeed in the same session",
            refused_after.as_secs_f64()
        ),
        "cargo build --workspace --bins && cargo test -p rmm-e2e --test faults_disk (as root)",
    );
}
