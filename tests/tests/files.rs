//! File transfer end to end: the real server and agent (on this machine, so the test checks
//! the agent's files directly), PostgreSQL from testcontainers.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use reqwest::Method;
use rmm_e2e::procfs::proc_bytes;
use rmm_e2e::pseudo_random;
use rmm_e2e::real_agent::{Tunnel, open_tunnel};
use rmm_e2e::server::TestServer;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::process::Child;

/// The harness client gives up on a request after 60 s; a transfer of hundreds of MiB
/// through a debug build on a loaded 2-core machine can take longer while making progress, so
/// transfers get this bound instead (a stalled one still fails the test, later).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(900);
const MIB: usize = 1024 * 1024;

struct World {
    server: TestServer,
    admin: String,
    tech: String,
    session: String,
    dir: tempfile::TempDir,
    _agent: Child,
}

async fn world() -> World {
    let Tunnel {
        server,
        admin,
        tech,
        session,
        agent,
    } = open_tunnel().await.unwrap();
    World {
        server,
        admin,
        tech,
        session,
        dir: tempfile::tempdir().unwrap(),
        _agent: agent,
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl World {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn files_url(&self, path: &Path, query: &str) -> String {
        self.server.url(&format!(
            "/api/v1/tunnel/{}/files?path={}{query}",
            self.session,
            path.display()
        ))
    }

    /// Uploads `body` to `path` on the agent; the status and JSON answer.
    async fn upload(
        &self,
        path: &Path,
        body: impl Into<reqwest::Body>,
        query: &str,
    ) -> (u16, Value) {
        let r = self
            .server
            .http()
            .put(self.files_url(path, query))
            .bearer_auth(&self.tech)
            .timeout(TRANSFER_TIMEOUT)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.server
            .call(
                Method::GET,
                &format!("/api/v1/tunnel/{}{path}", self.session),
                Some(&self.tech),
                None,
            )
            .await
            .unwrap()
    }

    async fn audit(&self) -> Vec<Value> {
        let (_, body) = self
            .server
            .call(
                Method::GET,
                "/api/v1/audit?limit=100",
                Some(&self.admin),
                None,
            )
            .await
            .unwrap();
        body["entries"].as_array().cloned().unwrap()
    }
}

#[tokio::test]
async fn a_64_mib_file_goes_up_and_comes_back_with_matching_sha256() {
    let w = world().await;
    let data = pseudo_random(1, 64 * MIB);
    let sum = sha256_hex(&data);
    let target = w.path("up.bin");
    let (code, body) = w.upload(&target, data.clone(), "").await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        body,
        json!({ "path": target.display().to_string(), "size": 64 * MIB, "sha256": sum })
    );
    assert!(
        std::fs::read(&target).unwrap() == data,
        "the file on the agent differs"
    );
    assert!(!w.path(".up.bin.rmm-partial").exists());

    let r = w
        .server
        .http()
        .get(w.files_url(&target, ""))
        .bearer_auth(&w.tech)
        .timeout(TRANSFER_TIMEOUT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-content-sha256"], sum.as_str());
    assert_eq!(
        r.headers()["content-length"],
        (64 * MIB).to_string().as_str()
    );
    let got = r.bytes().await.unwrap();
    assert_eq!(sha256_hex(&got), sum);

    let audit = w.audit().await;
    let up = audit.iter().find(|e| e["event"] == "file_upload").unwrap();
    assert_eq!(
        (
            up["sha256"].clone(),
            up["size"].clone(),
            up["result"].clone(),
            up["direction"].clone()
        ),
        (json!(sum), json!(64 * MIB), json!("ok"), json!("upload"))
    );
    let down = audit
        .iter()
        .find(|e| e["event"] == "file_download")
        .unwrap();
    assert_eq!(
        (down["path"].clone(), down["result"].clone()),
        (json!(target.display().to_string()), json!("ok"))
    );
}

#[tokio::test]
async fn an_upload_cut_in_the_middle_leaves_no_file_and_resumes_to_a_correct_one() {
    let w = world().await;
    let data = pseudo_random(2, 24 * MIB);
    let sum = sha256_hex(&data);
    let target = w.path("resumed.bin");
    // A body that breaks after 12 MiB, as a dropped connection would.
    let first: Vec<Result<Bytes, std::io::Error>> = data[..12 * MIB]
        .chunks(MIB)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .chain(std::iter::once(Err(std::io::Error::other("cable pulled"))))
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(first));
    let _ = w
        .server
        .http()
        .put(w.files_url(&target, ""))
        .bearer_auth(&w.tech)
        .body(body)
        .send()
        .await;
    // The agent writes what arrived before the break on its own time (a busy machine may take
    // a while): wait until it reports the bytes it holds, then check them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let received = loop {
        let (code, status) = w
            .get(&format!("/files/upload-status?path={}", target.display()))
            .await;
        assert_eq!(code, 200, "{status}");
        let received = usize::try_from(status["received"].as_u64().unwrap()).unwrap();
        if received > 0 || tokio::time::Instant::now() > deadline {
            assert!(received > 0 && received <= 12 * MIB, "{status}");
            break received;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !target.exists(),
        "a broken upload left a file at the target"
    );

    let (code, body) = w
        .upload(
            &target,
            data[received..].to_vec(),
            &format!("&offset={received}&sha256={sum}"),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["sha256"], sum.as_str());
    assert!(std::fs::read(&target).unwrap() == data);
}

#[tokio::test]
async fn a_range_download_resumes_where_it_stopped() {
    let w = world().await;
    let data = pseudo_random(3, 5 * MIB + 123);
    let target = w.path("ranged.bin");
    std::fs::write(&target, &data).unwrap();
    let start = 3 * MIB + 7;
    let r = w
        .server
        .http()
        .get(w.files_url(&target, ""))
        .bearer_auth(&w.tech)
        .header("range", format!("bytes={start}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes {start}-{}/{}", data.len() - 1, data.len()).as_str()
    );
    assert_eq!(r.headers()["x-content-sha256"], sha256_hex(&data).as_str());
    assert!(r.bytes().await.unwrap() == data[start..]);
}

/// The case: `Range: bytes=1000-1999` answers 206 with exactly those 1000 bytes and
/// their `Content-Range`; a range starting at or past the end answers 416 with the size.
#[tokio::test]
async fn a_closed_range_answers_206_and_a_range_past_the_end_416() {
    let w = world().await;
    let data = pseudo_random(5, 300_000);
    let target = w.path("closed-range.bin");
    std::fs::write(&target, &data).unwrap();
    let get = |range: &'static str| {
        w.server
            .http()
            .get(w.files_url(&target, ""))
            .bearer_auth(&w.tech)
            .header("range", range)
            .send()
    };
    let r = get("bytes=1000-1999").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 1000-1999/300000");
    assert_eq!(r.headers()["content-length"], "1000");
    assert!(r.bytes().await.unwrap() == data[1000..2000]);
    // A last byte past the end is cut to the end.
    let r = get("bytes=299990-400000").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 299990-299999/300000");
    assert!(r.bytes().await.unwrap() == data[299_990..]);
    for past in ["bytes=300000-", "bytes=300000-300010", "bytes=400000-"] {
        let r = get(past).await.unwrap();
        assert_eq!(r.status(), 416, "{past}");
        let size_known = r.headers().get("content-range").cloned();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "range_not_satisfiable", "{past}: {body}");
        if past != "bytes=400000-" {
            assert_eq!(size_known.unwrap(), "bytes */300000", "{past}");
        }
    }
    // The session is still usable: the whole file, as 200.
    let r = w
        .server
        .http()
        .get(w.files_url(&target, ""))
        .bearer_auth(&w.tech)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == data);
}

#[tokio::test]
async fn server_memory_stays_bounded_during_a_transfer_far_larger_than_the_window() {
    let w = world().await;
    let pid = w.server.pid().unwrap();
    let before = proc_bytes(pid, "VmRSS") / 1024;
    let total = 512 * MIB;
    let chunk = Bytes::from(pseudo_random(4, MIB));
    let stream = futures_util::stream::iter(
        (0..total / MIB).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..600 {
            peak = peak.max(proc_bytes(pid, "VmRSS") / 1024);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    });
    let target = w.path("big.bin");
    let (code, body) = w
        .upload(&target, reqwest::Body::wrap_stream(stream), "")
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["size"], total);
    let peak = {
        sampler.abort();
        proc_bytes(pid, "VmRSS") / 1024.max(before)
    };
    // Sampled while the upload ran: the growth is the window and buffers, not the file.
    let growth_mib = peak.saturating_sub(before) / 1024;
    assert!(
        growth_mib < 64,
        "server RSS grew by {growth_mib} MiB for a 512 MiB upload"
    );
    std::fs::remove_file(&target).unwrap();
}

#[tokio::test]
async fn file_errors_are_typed_and_clear() {
    let w = world().await;
    let missing = w.path("nope/missing.bin");
    let (code, body) = w.get(&format!("/files?path={}", missing.display())).await;
    assert_eq!(code, 404, "{body}");
    // A directory where a file is needed: a well-formed request the machine refuses.
    let (code, body) = w
        .get(&format!("/files?path={}", w.dir.path().display()))
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["code"], "is_directory", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("directory"),
        "{body}"
    );
    let (code, body) = w.get("/files?path=relative/path").await;
    assert_eq!(code, 400);
    assert!(
        body["error"].as_str().unwrap().contains("absolute"),
        "{body}"
    );
    let (code, body) = w
        .upload(Path::new("/sys/rmm-denied"), b"x".to_vec(), "")
        .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("permission denied"),
        "{body}"
    );
    let (code, body) = w.upload(&missing, b"x".to_vec(), "").await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = w.upload(&w.path("x"), b"abc".to_vec(), "&sha256=00").await;
    assert_eq!(code, 422, "{body}");
    assert!(!w.path("x").exists());

    // A tiny filesystem to fill up.
    let small = w.path("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs needs root, as CI runs");
    let (code, body) = w.upload(&small.join("big"), vec![0u8; 3 * MIB], "").await;
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert_eq!(code, 507, "{body}");

    let otto = w.server.tech_token("otto").await.unwrap();
    let (code, _) = w
        .server
        .call(
            Method::GET,
            &format!("/api/v1/tunnel/{}/files/list?path=/", w.session),
            Some(&otto),
            None,
        )
        .await
        .unwrap();
    assert_eq!(code, 403);
}

#[tokio::test]
async fn a_directory_lists_with_types_sizes_and_modes() {
    let w = world().await;
    std::fs::write(w.path("b.txt"), b"hello").unwrap();
    std::fs::create_dir(w.path("a-dir")).unwrap();
    let (code, body) = w
        .get(&format!("/files/list?path={}", w.dir.path().display()))
        .await;
    assert_eq!(code, 200, "{body}");
    let entries = body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        (entries[0]["name"].clone(), entries[0]["type"].clone()),
        (json!("a-dir"), json!("dir"))
    );
    assert_eq!(
        (
            entries[1]["name"].clone(),
            entries[1]["type"].clone(),
            entries[1]["size"].clone()
        ),
        (json!("b.txt"), json!("file"), json!(5))
    );
    assert!(entries[1]["mode"].is_u64() && entries[1]["modified"].is_i64());
}

#[tokio::test]
async fn a_transfer_and_a_command_run_side_by_side() {
    let w = world().await;
    let (code, started) = w
        .server
        .call(
            Method::POST,
            &format!("/api/v1/tunnel/{}/command", w.session),
            Some(&w.tech),
            Some(json!({ "command": "for i in 1 2 3 4 5; do echo $i; sleep 0.2; done" })),
        )
        .await
        .unwrap();
    assert_eq!(code, 202);
    let data = pseudo_random(5, 32 * MIB);
    let (code, body) = w.upload(&w.path("side.bin"), data.clone(), "").await;
    assert_eq!(code, 201, "{body}");
    let id = started["command_id"].as_str().unwrap();
    let (_, result) = w.get(&format!("/commands/{id}?wait=30")).await;
    assert_eq!(result["stdout"], "1\n2\n3\n4\n5\n");
    let mut stream = w
        .server
        .http()
        .get(w.files_url(&w.path("side.bin"), ""))
        .bearer_auth(&w.tech)
        .timeout(TRANSFER_TIMEOUT)
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let mut hasher = Sha256::new();
    while let Some(chunk) = stream.next().await {
        hasher.update(chunk.unwrap());
    }
    assert_eq!(hex(&hasher.finalize()), sha256_hex(&data));
}
