//! Paths the agent cannot or must not use (issue 12, point 9), end to end on the real
//! binaries: each is a 4xx with its typed `code` and a message naming the problem, never a 500
//! with the operating system's text. Devices and FIFOs are neither read nor written, a NUL
//! byte or an over-long path is refused by the server before the agent is asked, a name too
//! long for the agent's file system, a missing directory, a directory where a file is needed
//! and a permission the system denies each have their code. And `rmm cp` says what is wrong
//! and what to do, in one line.
//!
//! The tests run as root, which permission bits do not stop. So the agent runs as root
//! without the capabilities that let root ignore them (`setpriv`, dropping
//! `CAP_DAC_OVERRIDE` and `CAP_DAC_READ_SEARCH`): a file of mode 000 is then refused to it
//! as to anyone, by the kernel, not by a check of ours. Run as another user, the agent runs
//! as that user.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.
#![cfg(target_os = "linux")]

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use reqwest::Method;
use rmm_e2e::pg::fresh_database;
use rmm_e2e::real_agent::agent_command;
use rmm_e2e::server::{TestServer, rmm_command};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(60);
const TECH: &str = "tina";

/// The capabilities that let root ignore permission bits.
const DAC_CAPS: &str = "-dac_override,-dac_read_search";

struct World {
    server: TestServer,
    agent_id: String,
    tech: String,
    /// The agent's files (the agent runs on this machine).
    dir: TempDir,
    _agent: Child,
}

/// A server and an agent `web-01` that obeys permission bits; a technician `tina`.
async fn world() -> World {
    let db = fresh_database().await.unwrap();
    let server = TestServer::start(&db, &[]).await.unwrap();
    let admin = server.admin_token().await.unwrap();
    let (agent_id, key) = server.register_agent(&admin, "web-01").await.unwrap();
    let tech = server.tech_token(TECH).await.unwrap();
    let agent = spawn_agent_obeying_permissions(&server, &key);
    server.wait_connected(&admin, &agent_id).await.unwrap();
    if let Some(pid) = agent.id() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let effective = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
            .unwrap();
        // Bits 1 and 2: CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH.
        assert_eq!(effective & 0b110, 0, "the agent can ignore permission bits");
    }
    World {
        server,
        agent_id,
        tech,
        dir: tempfile::tempdir().unwrap(),
        _agent: agent,
    }
}

/// `rmm-agent` as the harness starts it, but under `setpriv` without [`DAC_CAPS`] when the
/// test runs as root.
fn spawn_agent_obeying_permissions(server: &TestServer, key: &str) -> Child {
    let agent = agent_command(server, key, &[]).unwrap();
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    if !root {
        let mut agent = agent;
        return agent.spawn().unwrap();
    }
    let plain = agent.as_std();
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--bounding-set={DAC_CAPS}"))
        .arg(format!("--inh-caps={DAC_CAPS}"))
        .arg("--")
        .arg(plain.get_program())
        .args(plain.get_args())
        .env_clear();
    for (name, value) in plain.get_envs() {
        if let Some(value) = value {
            cmd.env(name, value);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("setpriv (util-linux) runs the agent without CAP_DAC_OVERRIDE")
}

impl World {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Opens a tunnel to the agent as the technician; its session id.
    async fn open(&self) -> String {
        let (code, opened) = self
            .server
            .call(
                Method::POST,
                "/api/v1/tunnel/open",
                Some(&self.tech),
                Some(json!({ "agent_id": self.agent_id })),
            )
            .await
            .unwrap();
        assert_eq!(code, 200, "{opened}");
        opened["session_id"].as_str().unwrap().to_owned()
    }

    /// `route` of the session (`files`, `files/list`, `files/upload-status`) on `path`: an
    /// upload of `body` when there is one. The status and the JSON answer.
    async fn send(
        &self,
        session: &str,
        route: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> (u16, Value) {
        let url = self.server.url(&format!(
            "/api/v1/tunnel/{session}/{route}?path={}",
            percent_encoded(path)
        ));
        let request = match body {
            Some(body) => self.server.http().put(url).body(body.to_vec()),
            None => self.server.http().get(url),
        };
        let r = request
            .bearer_auth(&self.tech)
            .timeout(WAIT)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `rmm ARGS` as the technician, logged in under `home`.
    async fn rmm(&self, home: &TempDir, args: &[&str]) -> Output {
        let child = rmm_command(&self.server.url(""), home.path(), args)
            .unwrap()
            .spawn()
            .unwrap();
        tokio::time::timeout(WAIT, child.wait_with_output())
            .await
            .expect("rmm finishes in time")
            .unwrap()
    }
}

/// `text` for a query string: every byte but the unreserved ones and `/` as `%XX`, so a NUL
/// byte travels as `%00`.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The answer is `status` with `code`, and its message says `says` (and no 500 ever).
#[track_caller]
fn assert_refused(answer: &(u16, Value), status: u16, code: &str, says: &str) {
    let (got, body) = answer;
    assert_eq!(
        (*got, body["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    let message = body["error"].as_str().unwrap();
    assert!(message.contains(says), "{message:?} does not say {says:?}");
}

fn mknod(path: &Path, kind: &str, numbers: &[&str]) {
    let made = std::process::Command::new("mknod")
        .arg(path)
        .arg(kind)
        .args(numbers)
        .status()
        .unwrap();
    assert!(made.success(), "mknod {} {kind}", path.display());
}

fn is_char_device(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device())
}

#[tokio::test]
async fn devices_and_fifos_are_neither_read_nor_written() {
    let w = world().await;
    let session = w.open().await;
    // A copy of /dev/zero (the same device numbers) and a FIFO, where the test may lose them:
    // the system's /dev/zero is only ever read.
    let zero = w.path("zero");
    mknod(&zero, "c", &["1", "5"]);
    let fifo = w.path("fifo");
    mknod(&fifo, "p", &[]);
    for target in [&zero, &fifo] {
        let target = target.to_str().unwrap();
        let answer = w.send(&session, "files", target, Some(b"data")).await;
        assert_refused(&answer, 409, "not_a_regular_file", target);
    }
    assert!(is_char_device(&zero), "the device was replaced");
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(!w.path(".zero.rmm-partial").exists());
    assert!(!w.path(".fifo.rmm-partial").exists());

    for source in ["/dev/zero", "/dev/null", fifo.to_str().unwrap()] {
        let answer = w.send(&session, "files", source, None).await;
        assert_refused(&answer, 409, "not_a_regular_file", source);
    }
    assert!(is_char_device(Path::new("/dev/zero")));
    // Listing one is listing something that is not a directory.
    let answer = w.send(&session, "files/list", "/dev/zero", None).await;
    assert_refused(&answer, 409, "not_a_directory", "/dev/zero");
}

#[tokio::test]
async fn nul_bytes_and_over_long_paths_are_refused_before_the_agent_is_asked() {
    let w = world().await;
    let session = w.open().await;
    let dir = w.dir.path().to_str().unwrap();
    let with_nul = format!("{dir}/a\0b");
    let long = format!("{dir}/{}", "a/".repeat(2500));
    let long_name = format!("{dir}/{}", "n".repeat(256));
    for (route, body) in [
        ("files", Some(&b"data"[..])),
        ("files", None),
        ("files/list", None),
        ("files/upload-status", None),
    ] {
        let answer = w.send(&session, route, &with_nul, body).await;
        assert_refused(&answer, 400, "invalid_path", "NUL byte");
        let answer = w.send(&session, route, &long, body).await;
        assert_refused(&answer, 400, "name_too_long", "at most 4096");
        let answer = w.send(&session, route, &long_name, body).await;
        assert_refused(&answer, 400, "name_too_long", "256 characters");
    }
    // 200 two-byte letters: within the server's 255 characters, over Linux's 255 bytes; the
    // agent's file system refuses it, and says so: a well-formed path its machine does not
    // take (409).
    let wide = w.path(&"é".repeat(200));
    let wide = wide.to_str().unwrap();
    for body in [Some(&b"data"[..]), None] {
        let answer = w.send(&session, "files", wide, body).await;
        assert_refused(&answer, 409, "name_too_long", "too long");
    }
    assert_eq!(std::fs::read_dir(w.dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn missing_directories_directories_and_denied_paths_have_their_codes() {
    let w = world().await;
    let session = w.open().await;
    let missing = w.path("nope/file.txt");
    let missing = missing.to_str().unwrap();
    let nope = w.path("nope");
    let answer = w.send(&session, "files", missing, Some(b"data")).await;
    assert_refused(
        &answer,
        404,
        "file_not_found",
        &format!("the directory {} does not exist", nope.display()),
    );
    let answer = w.send(&session, "files", missing, None).await;
    assert_refused(&answer, 404, "file_not_found", missing);
    let answer = w
        .send(&session, "files/list", nope.to_str().unwrap(), None)
        .await;
    assert_refused(&answer, 404, "file_not_found", "nope");

    // A directory where a file is needed, both ways; a file where a directory is needed.
    let dir = w.dir.path().to_str().unwrap();
    let answer = w.send(&session, "files", dir, None).await;
    assert_refused(&answer, 409, "is_directory", dir);
    let answer = w.send(&session, "files", dir, Some(b"data")).await;
    assert_refused(&answer, 409, "is_directory", dir);
    let plain = w.path("plain.txt");
    std::fs::write(&plain, b"plain").unwrap();
    let answer = w
        .send(&session, "files/list", plain.to_str().unwrap(), None)
        .await;
    assert_refused(&answer, 409, "not_a_directory", "plain.txt");
    let under_a_file = w.path("plain.txt/new");
    let answer = w
        .send(
            &session,
            "files",
            under_a_file.to_str().unwrap(),
            Some(b"x"),
        )
        .await;
    assert_refused(&answer, 409, "not_a_directory", "plain.txt");

    // What the permission bits deny the agent.
    let secret = w.path("secret");
    std::fs::write(&secret, b"secret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let sealed = w.path("sealed");
    std::fs::create_dir(&sealed).unwrap();
    std::fs::set_permissions(&sealed, std::fs::Permissions::from_mode(0o000)).unwrap();
    let read_only = w.path("read-only");
    std::fs::create_dir(&read_only).unwrap();
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o555)).unwrap();
    let answer = w
        .send(&session, "files", secret.to_str().unwrap(), None)
        .await;
    assert_refused(&answer, 403, "permission_denied", "secret");
    let answer = w
        .send(&session, "files/list", sealed.to_str().unwrap(), None)
        .await;
    assert_refused(&answer, 403, "permission_denied", "sealed");
    let inside = read_only.join("new.txt");
    let answer = w
        .send(&session, "files", inside.to_str().unwrap(), Some(b"data"))
        .await;
    assert_refused(&answer, 403, "permission_denied", "read-only");
    assert_eq!(std::fs::read_dir(&read_only).unwrap().count(), 0);
    // The tempdir's cleanup needs to open it again.
    std::fs::set_permissions(&sealed, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[tokio::test]
async fn rmm_cp_names_the_cause_and_the_fix_of_a_refused_path_in_one_line() {
    let w = world().await;
    let home = tempfile::tempdir().unwrap();
    let mut login = rmm_command(
        &w.server.url(""),
        home.path(),
        &["login", "--username", TECH, "--password-stdin"],
    )
    .unwrap()
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = login.stdin.take().unwrap();
    stdin
        .write_all(format!("{TECH}-password\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    assert!(login.wait().await.unwrap().success());

    let local = w.path("local.bin");
    let local = local.to_str().unwrap();
    let out = w.rmm(&home, &["cp", "web-01:/dev/zero", local]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        "rmm: /dev/zero on web-01 is not a regular file (a device, FIFO or socket): name a regular file\n"
    );
    assert!(!Path::new(local).exists());

    std::fs::write(local, b"data").unwrap();
    let long = format!("/tmp/{}f", "a/".repeat(2500));
    let out = w
        .rmm(&home, &["cp", local, &format!("web-01:{long}")])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "rmm: the path is too long for web-01: the path is {} bytes long; at most 4096 are allowed; use a shorter path\n",
            long.len()
        )
    );
}
