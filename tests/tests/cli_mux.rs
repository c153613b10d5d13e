//! `rmm exec` through its mux (`rmm mux`, ssh's ControlMaster for rmm), end to end: the real
//! `rmm`, `rmm-server` (SQLite) and `rmm-agent`. The mux is found by its process (its command
//! line names the server) and its socket in the test's private config folder.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::pg::sqlite_url;
use rmm_e2e::real_agent::spawn_agent;
use rmm_e2e::server::{StartOptions, TestServer};
use serde_json::Value;
use tempfile::TempDir;
use tokio::process::Child;

const WAIT: Duration = Duration::from_secs(30);

struct World {
    server: TestServer,
    admin: String,
    token: String,
    home: TempDir,
    _db: TempDir,
    _agent: Child,
}

async fn world(env: &[(&str, &str)]) -> World {
    world_with(env, StartOptions::default()).await
}

async fn world_with(env: &[(&str, &str)], options: StartOptions) -> World {
    let db = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&sqlite_url(db.path()), env, options)
        .await
        .unwrap();
    let admin = server.admin_token().await.unwrap();
    let (agent_id, agent_key) = server.register_agent(&admin, "web-01").await.unwrap();
    let token = server.tech_token("tina").await.unwrap();
    let agent = spawn_agent(&server, &agent_key).unwrap();
    server.wait_connected(&admin, &agent_id).await.unwrap();
    World {
        server,
        admin,
        token,
        home: tempfile::tempdir().unwrap(),
        _db: db,
        _agent: agent,
    }
}

impl World {
    async fn rmm_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd =
            rmm_e2e::server::rmm_command(&self.server.url(""), self.home.path(), args).unwrap();
        cmd.env("RMM_TOKEN", &self.token);
        for (k, v) in env {
            cmd.env(k, v);
        }
        tokio::time::timeout(WAIT, cmd.spawn().unwrap().wait_with_output())
            .await
            .expect("rmm finishes in time, never hangs")
            .unwrap()
    }

    async fn rmm(&self, args: &[&str]) -> Output {
        self.rmm_env(args, &[]).await
    }

    fn mux_dir(&self) -> PathBuf {
        self.home.path().join("config/rmm/mux")
    }

    /// The pids of the `rmm mux` processes serving this test's server.
    fn mux_pids(&self) -> Vec<u32> {
        let url = self.server.url("");
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.iter().any(|a| a == "mux") && args.contains(&url) {
                pids.push(pid);
            }
        }
        pids
    }

    async fn audit_count(&self, event: &str) -> usize {
        let (code, body) = self
            .server
            .call(
                Method::GET,
                "/api/v1/audit?limit=500",
                Some(&self.admin),
                None,
            )
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == event)
            .count()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

fn sockets(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Waits until `done` holds, up to `within`.
async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

#[tokio::test]
async fn execs_reuse_one_private_mux_with_byte_exact_output_and_exit_codes() {
    let w = world(&[]).await;
    // A kept session: the mux keeps it and its stream warm.
    let out = w.rmm(&["exec", "--keep", "web-01", "--", "true"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first = w.mux_pids();
    assert_eq!(first.len(), 1, "one mux started by the first exec");
    let script = r"printf 'a\000b\377\376c\n'; printf 'to-err\201\n' >&2; exit 3";
    for _ in 0..3 {
        let out = w.rmm(&["exec", "web-01", "--", script]).await;
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
        assert_eq!(out.stdout, b"a\0b\xff\xfec\n");
        assert_eq!(out.stderr, b"to-err\x81\n");
    }
    assert_eq!(w.mux_pids(), first, "the same mux served every exec");
    assert_eq!(w.audit_count("tunnel_open").await, 1, "one session for all");
    assert_eq!(w.audit_count("command").await, 4);
    // Private: the folder 0700, the socket 0600, both ours.
    assert_eq!(mode(&w.mux_dir()), 0o700);
    let socks = sockets(&w.mux_dir());
    assert_eq!(socks.len(), 1, "{socks:?}");
    assert_eq!(mode(&socks[0]), 0o600);

    // Without a kept session the mux opens one per command and closes it after, as
    // before: it never holds the agent's one tunnel by itself.
    let out = w.rmm(&["close", "web-01"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = w.rmm(&["exec", "web-01", "--", "echo one"]).await;
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "one\n".into())
    );
    assert_eq!(w.audit_count("tunnel_open").await, 2);
    assert_eq!(w.audit_count("tunnel_close").await, 2);
    assert_eq!(w.mux_pids(), first);

    // A large output, byte for byte, in order.
    let out = w
        .rmm(&[
            "exec",
            "web-01",
            "--",
            "head -c 3000000 /dev/zero | tr '\\0' 'x'",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 3_000_000);
    assert!(out.stdout.iter().all(|b| *b == b'x'));
}

#[tokio::test]
async fn a_mux_folder_open_to_others_is_refused_and_the_command_runs_directly() {
    let w = world(&[]).await;
    let dir = w.mux_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = w.rmm(&["exec", "web-01", "--", "echo direct"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "direct\n");
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr,
        format!(
            "rmm: not using the exec mux: {} has mode 755, not 700; run `chmod 700 {}`\n",
            dir.display(),
            dir.display()
        )
    );
    assert!(
        sockets(&dir).is_empty(),
        "no socket in a folder others can enter"
    );
    assert!(w.mux_pids().is_empty(), "no mux started");
}

#[tokio::test]
async fn the_mux_ends_after_its_idle_time_and_no_mux_runs_directly() {
    let w = world(&[]).await;
    for (args, env) in [
        (vec!["exec", "--no-mux", "web-01", "--", "echo a"], vec![]),
        (
            vec!["exec", "web-01", "--", "echo a"],
            vec![("RMM_MUX", "off")],
        ),
    ] {
        let out = w.rmm_env(&args, &env).await;
        assert_eq!(text(&out.stdout), "a\n", "{}", text(&out.stderr));
        assert!(w.mux_pids().is_empty(), "{args:?} {env:?} started a mux");
        assert!(sockets(&w.mux_dir()).is_empty());
    }
    let out = w
        .rmm_env(
            &["exec", "web-01", "--", "echo b"],
            &[("RMM_MUX_IDLE_SECS", "2")],
        )
        .await;
    assert_eq!(text(&out.stdout), "b\n", "{}", text(&out.stderr));
    assert_eq!(w.mux_pids().len(), 1);
    assert!(
        eventually(Duration::from_secs(10), || w.mux_pids().is_empty()).await,
        "the idle mux did not exit"
    );
    assert!(sockets(&w.mux_dir()).is_empty(), "its socket is removed");
}

#[tokio::test]
async fn a_revoked_token_through_the_mux_is_a_one_line_error_not_a_hang() {
    let w = world(&[]).await;
    let out = w.rmm(&["exec", "--keep", "web-01", "--", "true"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = w.rmm(&["exec", "web-01", "--", "echo warm"]).await;
    assert_eq!(text(&out.stdout), "warm\n");
    assert_eq!(w.mux_pids().len(), 1);
    let (code, body): (u16, Value) = w
        .server
        .call(Method::POST, "/api/v1/auth/logout", Some(&w.token), None)
        .await
        .unwrap();
    assert_eq!(code, 204, "{body}");
    let started = Instant::now();
    let out = w.rmm(&["exec", "web-01", "--", "echo never"]).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("rmm: ") && stderr.ends_with('\n') && stderr.lines().count() == 1,
        "{stderr}"
    );
    assert!(stderr.contains("rmm login"), "{stderr}");
}

#[tokio::test]
async fn the_long_poll_the_stream_made_needless_is_finished_not_dropped() {
    // Dropped, it would cost the mux its connection (a new one per command; in cluster mode
    // a new dial between nodes). Finished, the server logs it like any request.
    let w = world_with(
        &[("RUST_LOG", "info")],
        StartOptions {
            capture_log: true,
            ..StartOptions::default()
        },
    )
    .await;
    let out = w.rmm(&["exec", "--keep", "web-01", "--", "true"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    for _ in 0..3 {
        let out = w.rmm(&["exec", "web-01", "--", "true"]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let finished = || {
        w.server
            .log_text()
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.contains("route=/api/v1/tunnel/{session_id}/commands/{command_id}")
                    && l.contains("status=200")
            })
            .count()
    };
    assert!(
        eventually(Duration::from_secs(5), || finished() >= 3).await,
        "the long polls of the mux's commands were dropped: {} answered",
        finished()
    );
}
