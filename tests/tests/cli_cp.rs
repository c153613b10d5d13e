//! `rmm cp` end to end: the real `rmm` binary against the real `rmm-server` (fresh PostgreSQL
//! database) and the real `rmm-agent` on this machine, so each test checks the agent's files
//! directly. Each test has its own config directory (`XDG_CONFIG_HOME` and `HOME` in a
//! temporary folder). What a technician types and sees: the result line with the verified
//! SHA-256, resumes, one-line errors, and a stderr free of progress bars when piped.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rmm_e2e::pg::fresh_database;
use rmm_e2e::pseudo_random;
use rmm_e2e::real_agent::spawn_agent;
use rmm_e2e::server::{TestServer, binary};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(60);
const TECH: &str = "tina";
const TECH_PASSWORD: &str = "tina-password";
const MIB: usize = 1024 * 1024;

struct World {
    server: TestServer,
    agent_id: String,
    home: TempDir,
    /// The agent's side of the copies (the agent runs here, so its files are ours to read).
    remote: TempDir,
    /// This machine's side of the copies.
    local: TempDir,
    _agent: Child,
}

/// A server with a running agent `web-01` and a technician `tina`, logged in with `rmm`.
async fn world() -> World {
    let db = fresh_database().await.unwrap();
    let server = TestServer::start(&db, &[]).await.unwrap();
    let admin = server.admin_token().await.unwrap();
    let (agent_id, agent_key) = server.register_agent(&admin, "web-01").await.unwrap();
    server.tech_token(TECH).await.unwrap();
    let agent = spawn_agent(&server, &agent_key).unwrap();
    server.wait_connected(&admin, &agent_id).await.unwrap();
    let w = World {
        server,
        agent_id,
        home: tempfile::tempdir().unwrap(),
        remote: tempfile::tempdir().unwrap(),
        local: tempfile::tempdir().unwrap(),
        _agent: agent,
    };
    assert_success(&w.login().await);
    w
}

fn rmm_command(server_url: &str, home: &TempDir, args: &[&str]) -> Command {
    rmm_e2e::server::rmm_command(server_url, home.path(), args).expect("cargo build --bins first")
}

async fn finish(child: Child) -> Output {
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("rmm finishes in time")
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

impl World {
    fn rmm(&self, args: &[&str]) -> Command {
        rmm_command(&self.server.url(""), &self.home, args)
    }

    async fn run(&self, args: &[&str]) -> Output {
        finish(self.rmm(args).spawn().unwrap()).await
    }

    /// `rmm login --password-stdin` as the technician.
    async fn login(&self) -> Output {
        let mut child = self
            .rmm(&["login", "--username", TECH, "--password-stdin"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("{TECH_PASSWORD}\n").as_bytes())
            .await
            .unwrap();
        drop(stdin);
        finish(child).await
    }

    fn remote_path(&self, name: &str) -> PathBuf {
        self.remote.path().join(name)
    }

    fn local_path(&self, name: &str) -> PathBuf {
        self.local.path().join(name)
    }

    /// Waits until the agent is back in heartbeat mode: the session rmm opened was closed.
    async fn wait_heartbeat(&self) {
        let started = Instant::now();
        loop {
            let out = self.run(&["agents", "--json"]).await;
            let agents: Value = serde_json::from_slice(&out.stdout).unwrap();
            if agents[0]["mode"] == "heartbeat" {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "{agents}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Neither a progress bar nor any terminal control reached a piped stderr.
fn assert_no_progress_drawn(stderr: &[u8]) {
    assert!(
        !stderr.contains(&b'\r') && !stderr.contains(&0x1b),
        "progress drawn on a piped stderr: {:?}",
        text(stderr)
    );
}

#[tokio::test]
async fn a_file_goes_up_and_comes_back_verified_by_sha256() {
    let w = world().await;
    let data = pseudo_random(1, 3 * MIB + 17);
    let sum = sha256_hex(&data);
    let local = w.local_path("source.bin");
    std::fs::write(&local, &data).unwrap();
    let remote = w.remote_path("up.bin");

    let target = format!("web-01:{}", remote.display());
    let out = w.run(&["cp", path_str(&local), &target]).await;
    assert_success(&out);
    assert_eq!(
        text(&out.stdout),
        format!(
            "uploaded {} bytes to {target} (sha256 {sum}, verified)\n",
            data.len()
        )
    );
    assert_eq!(text(&out.stderr), "");
    assert!(
        std::fs::read(&remote).unwrap() == data,
        "the agent's file differs"
    );
    assert!(!w.remote_path(".up.bin.rmm-partial").exists());
    // cp opened the session, so it closed it.
    w.wait_heartbeat().await;

    // Into a directory: the remote file's name is kept.
    let down = w.local_path("down");
    std::fs::create_dir(&down).unwrap();
    let out = w.run(&["cp", &target, path_str(&down)]).await;
    assert_success(&out);
    let landed = down.join("up.bin");
    assert_eq!(
        text(&out.stdout),
        format!(
            "downloaded {} bytes from {target} to {} (sha256 {sum}, verified)\n",
            data.len(),
            landed.display()
        )
    );
    assert_eq!(text(&out.stderr), "");
    assert!(
        std::fs::read(&landed).unwrap() == data,
        "the downloaded file differs"
    );
    assert!(!down.join("up.bin.rmm-partial").exists());

    // A trailing slash on the agent's side keeps the local name; by agent id too.
    let out = w
        .run(&[
            "cp",
            path_str(&local),
            &format!("{}:{}/", w.agent_id, w.remote.path().display()),
        ])
        .await;
    assert_success(&out);
    assert!(std::fs::read(w.remote_path("source.bin")).unwrap() == data);
}

#[tokio::test]
async fn progress_is_not_drawn_on_a_piped_stderr() {
    let w = world().await;
    let data = pseudo_random(2, 16 * MIB);
    let local = w.local_path("big.bin");
    std::fs::write(&local, &data).unwrap();
    let remote = format!("web-01:{}", w.remote_path("big.bin").display());

    let up = w.run(&["cp", path_str(&local), &remote]).await;
    assert_success(&up);
    assert_no_progress_drawn(&up.stderr);
    let down = w
        .run(&["cp", &remote, path_str(&w.local_path("back.bin"))])
        .await;
    assert_success(&down);
    assert_no_progress_drawn(&down.stderr);
    assert!(std::fs::read(w.local_path("back.bin")).unwrap() == data);
}

#[tokio::test]
async fn progress_is_drawn_on_a_terminal() {
    let w = world().await;
    let local = w.local_path("tty.bin");
    std::fs::write(&local, pseudo_random(3, 4 * MIB)).unwrap();
    let remote = format!("web-01:{}", w.remote_path("tty.bin").display());
    // `script` gives rmm a pseudo-terminal for stdout and stderr.
    let rmm = binary("rmm").unwrap();
    let line = format!("'{}' cp '{}' '{remote}'", rmm.display(), local.display());
    let out = finish(
        Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", w.home.path())
            .env("XDG_CONFIG_HOME", w.home.path().join("config"))
            .env("RMM_SERVER", w.server.url(""))
            .env("TERM", "xterm")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("util-linux `script` runs rmm on a pseudo-terminal"),
    )
    .await;
    assert_success(&out);
    let shown = text(&out.stdout);
    assert!(shown.contains("uploaded 4194304 bytes"), "{shown:?}");
    assert!(
        shown.contains("hashing") || shown.contains("uploading"),
        "no progress bar on a terminal: {shown:?}"
    );
}

#[tokio::test]
async fn an_interrupted_upload_is_resumed_with_resume() {
    let w = world().await;
    let data = pseudo_random(4, 6 * MIB + 5);
    let sum = sha256_hex(&data);
    let local = w.local_path("resume-up.bin");
    std::fs::write(&local, &data).unwrap();
    let remote = w.remote_path("resume-up.bin");

    // A kept session, so the broken upload below and rmm cp share it.
    let out = w.run(&["open", "web-01"]).await;
    assert_success(&out);
    let session = text(&out.stdout).trim().to_owned();
    let token = w.server.login(TECH, TECH_PASSWORD).await.unwrap();

    // A body that breaks after 3 MiB, as a dropped connection would.
    let first: Vec<Result<Bytes, std::io::Error>> = data[..3 * MIB]
        .chunks(MIB / 2)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .chain(std::iter::once(Err(std::io::Error::other("cable pulled"))))
        .collect();
    let url = w.server.url(&format!(
        "/api/v1/tunnel/{session}/files?path={}",
        remote.display()
    ));
    let _ = w
        .server
        .http()
        .put(url)
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            first,
        )))
        .send()
        .await;
    // The agent holds part of it (once it has written all it received), and nothing is at
    // the target.
    let status_url = format!(
        "/api/v1/tunnel/{session}/files/upload-status?path={}",
        remote.display()
    );
    let started = Instant::now();
    let mut last = 0;
    let held = loop {
        let (code, status) = w
            .server
            .call(reqwest::Method::GET, &status_url, Some(&token), None)
            .await
            .unwrap();
        assert_eq!(code, 200, "{status}");
        let held = status["received"].as_u64().unwrap();
        if held > 0 && held == last {
            break held;
        }
        last = held;
        assert!(started.elapsed() < Duration::from_secs(10), "{status}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(held <= 3 * MIB as u64, "{held}");
    assert!(!remote.exists());

    let target = format!("web-01:{}", remote.display());
    let out = w.run(&["cp", "--resume", path_str(&local), &target]).await;
    assert_success(&out);
    assert_eq!(
        text(&out.stderr),
        format!(
            "rmm: resuming the upload at byte {held} of {}\n",
            data.len()
        )
    );
    assert_eq!(
        text(&out.stdout),
        format!(
            "uploaded {} bytes to {target} (sha256 {sum}, verified)\n",
            data.len()
        )
    );
    assert!(
        std::fs::read(&remote).unwrap() == data,
        "the resumed file differs"
    );
    assert!(!w.remote_path(".resume-up.bin.rmm-partial").exists());

    // cp reused the kept session and left it open.
    let out = w.run(&["status", "--json"]).await;
    assert_success(&out);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status[0]["session_id"], session.as_str(), "{status}");
    assert_eq!(status[0]["status"], "active", "{status}");
}

#[tokio::test]
async fn an_interrupted_download_is_resumed_with_resume_and_a_bad_partial_is_caught() {
    let w = world().await;
    let data = pseudo_random(5, 5 * MIB + 123);
    let sum = sha256_hex(&data);
    let remote = w.remote_path("resume-down.bin");
    std::fs::write(&remote, &data).unwrap();
    let local = w.local_path("resume-down.bin");
    let partial = w.local_path("resume-down.bin.rmm-partial");
    let held = 2 * MIB + 7;
    std::fs::write(&partial, &data[..held]).unwrap();

    let source = format!("web-01:{}", remote.display());
    let out = w.run(&["cp", "--resume", &source, path_str(&local)]).await;
    assert_success(&out);
    assert_eq!(
        text(&out.stderr),
        format!(
            "rmm: resuming the download at byte {held} of {}\n",
            data.len()
        )
    );
    assert_eq!(
        text(&out.stdout),
        format!(
            "downloaded {} bytes from {source} to {} (sha256 {sum}, verified)\n",
            data.len(),
            local.display()
        )
    );
    assert!(
        std::fs::read(&local).unwrap() == data,
        "the resumed file differs"
    );
    assert!(!partial.exists());

    // A partial that is not a prefix of the file: the whole file's hash does not match, so
    // nothing lands and the partial stays.
    let other = w.local_path("other.bin");
    let other_partial = w.local_path("other.bin.rmm-partial");
    let mut wrong = data[..held].to_vec();
    wrong[10] ^= 0xff;
    std::fs::write(&other_partial, &wrong).unwrap();
    let out = w.run(&["cp", "--resume", &source, path_str(&other)]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.ends_with(&format!(
            "\nrmm: checksum mismatch: the file changed during transfer; run again without --resume (the unverified bytes are kept in {})\n",
            other_partial.display()
        )),
        "{stderr}"
    );
    assert!(!other.exists());
    assert_eq!(
        std::fs::metadata(&other_partial).unwrap().len(),
        data.len() as u64
    );

    // Without --resume the download starts over and lands.
    let out = w.run(&["cp", &source, path_str(&other)]).await;
    assert_success(&out);
    assert!(std::fs::read(&other).unwrap() == data);
    assert!(!other_partial.exists());
}

#[tokio::test]
async fn missing_remote_files_and_directories_are_one_line_errors() {
    let w = world().await;
    let missing = w.remote_path("nope.bin");
    let local = w.local_path("nope.bin");
    let out = w
        .run(&[
            "cp",
            &format!("web-01:{}", missing.display()),
            path_str(&local),
        ])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "rmm: no such file on web-01: {} (404); check the path\n",
            missing.display()
        )
    );
    assert_eq!(text(&out.stdout), "");
    assert!(!local.exists());
    assert!(!w.local_path("nope.bin.rmm-partial").exists());

    // An upload into a directory that does not exist, with a body still streaming when the
    // agent refuses.
    let source = w.local_path("payload.bin");
    std::fs::write(&source, pseudo_random(6, 8 * MIB)).unwrap();
    let nowhere = w.remote.path().join("no-such-dir");
    let out = w
        .run(&[
            "cp",
            path_str(&source),
            &format!("web-01:{}/x.bin", nowhere.display()),
        ])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "rmm: no such directory on web-01: {} (404); create it first, or check the path\n",
            nowhere.display()
        )
    );

    // A local file that does not exist costs no session.
    let out = w
        .run(&[
            "cp",
            path_str(&w.local_path("absent")),
            &format!("web-01:{}", w.remote_path("x").display()),
        ])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "rmm: cannot read {}: ",
            w.local_path("absent").display()
        )) && stderr.lines().count() == 1,
        "{stderr}"
    );
    w.wait_heartbeat().await;
}

#[tokio::test]
async fn a_full_disk_on_the_agent_is_named_as_such() {
    let w = world().await;
    let source = w.local_path("payload.bin");
    std::fs::write(&source, pseudo_random(7, 3 * MIB)).unwrap();
    // A tiny filesystem to fill up (mounting needs root, as CI runs).
    let small = w.remote_path("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs needs root, as CI runs");
    let out = w
        .run(&[
            "cp",
            path_str(&source),
            &format!("web-01:{}", small.join("big.bin").display()),
        ])
        .await;
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "rmm: the agent's disk is full: free some space on web-01 and run again\n"
    );
    // The session cp opened is closed even after a refused upload.
    w.wait_heartbeat().await;
}
