//! `rmm shell`, `rmm exec` with standard input, `rmm recordings` and `rmm replay` end to end:
//! the real `rmm` against the real `rmm-server` and `rmm-agent` (on this machine, so files
//! the agent writes can be read here).
//!
//! The shell is driven as a person would, in a real terminal: tmux (installed with apt-get
//! when missing) runs `rmm shell`, keys are typed with `send-keys` and the screen is read
//! with `capture-pane`.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use rmm_e2e::pg::{fresh_database, sqlite_url};
use rmm_e2e::real_agent::spawn_agent;
use rmm_e2e::server::{TestServer, binary};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(30);
const TECH: &str = "tina";
const TECH_PASSWORD: &str = "tina-password";

struct World {
    server: TestServer,
    home: TempDir,
    /// The SQLite database's folder, kept as long as the server runs.
    _db_dir: Option<TempDir>,
    _agent: Child,
}

/// A server (on SQLite or on a fresh PostgreSQL database) with the agent `web-01` running
/// and the technician `tina` logged in with `rmm login`.
async fn world(on_sqlite: bool) -> World {
    let (db, db_dir) = if on_sqlite {
        let dir = tempfile::tempdir().unwrap();
        (sqlite_url(dir.path()), Some(dir))
    } else {
        (fresh_database().await.unwrap(), None)
    };
    let server = TestServer::start(&db, &[]).await.unwrap();
    let admin = server.admin_token().await.unwrap();
    let (agent_id, agent_key) = server.register_agent(&admin, "web-01").await.unwrap();
    server.tech_token(TECH).await.unwrap();
    let agent = spawn_agent(&server, &agent_key).unwrap();
    server.wait_connected(&admin, &agent_id).await.unwrap();
    let w = World {
        server,
        home: tempfile::tempdir().unwrap(),
        _db_dir: db_dir,
        _agent: agent,
    };
    let mut login = w
        .rmm(&["login", "--username", TECH, "--password-stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = login.stdin.take().unwrap();
    stdin
        .write_all(format!("{TECH_PASSWORD}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    assert_success(&finish(login).await);
    w
}

impl World {
    fn rmm(&self, args: &[&str]) -> Command {
        rmm_e2e::server::rmm_command(&self.server.url(""), self.home.path(), args)
            .expect("cargo build --bins first")
    }

    async fn run(&self, args: &[&str]) -> Output {
        finish(self.rmm(args).spawn().unwrap()).await
    }

    /// The environment `rmm` needs, as `NAME='value'` words for a shell command line.
    fn env_words(&self) -> String {
        let home = self.home.path().display();
        format!(
            "env -i PATH='{}' HOME='{home}' XDG_CONFIG_HOME='{home}/config' RMM_SERVER='{}' TERM=xterm-256color",
            std::env::var("PATH").unwrap_or_default(),
            self.server.url("")
        )
    }
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

/// A tmux server of this test alone (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `command` (a shell command line) in a detached 120x40 window.
    fn start(command: &str) -> Self {
        ensure_tmux();
        let tmux = Self {
            socket: format!("rmm-e2e-{}-{}", std::process::id(), uuid::Uuid::new_v4()),
        };
        let ok = tmux
            .tmux(&[
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "120",
                "-y",
                "40",
                command,
            ])
            .status
            .success();
        assert!(ok, "tmux new-session failed");
        tmux
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// Types `keys` (tmux key names, e.g. `Enter`).
    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success(), "send-keys {keys:?}");
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        assert!(
            self.tmux(&["send-keys", "-t", "t", "-l", text])
                .status
                .success()
        );
    }

    fn screen(&self) -> String {
        text(&self.tmux(&["capture-pane", "-p", "-t", "t"]).stdout)
    }

    /// Waits until a line of the screen, trimmed, is `line`; the screen then.
    async fn wait_line(&self, line: &str) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if screen.lines().any(|l| l.trim() == line) {
                return screen;
            }
            assert!(
                started.elapsed() < WAIT,
                "no line {line:?} on the screen:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// tmux, installed when missing (the machines run as root with Debian's packages).
fn ensure_tmux() {
    let present = || {
        std::process::Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if present() {
        return;
    }
    let apt = |args: &[&str]| {
        std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !apt(&["install", "-y", "tmux"]) {
        apt(&["update"]);
        apt(&["install", "-y", "tmux"]);
    }
    assert!(
        present(),
        "tmux is needed to drive `rmm shell` in a terminal: apt-get install tmux"
    );
}

#[tokio::test]
async fn a_shell_runs_typed_commands_exits_with_the_remote_code_and_is_recorded() {
    let w = world(true).await;
    let rmm = binary("rmm").unwrap();
    // After rmm: its exit code, and whether it gave the terminal back in canonical mode.
    let tmux = Tmux::start(&format!(
        "{} '{}' shell web-01; echo EXIT=$?; stty -a | grep -o -- '-*icanon'; sleep 30",
        w.env_words(),
        rmm.display()
    ));
    // The remote login shell is up once it has drawn something (its prompt).
    let started = Instant::now();
    while tmux.screen().trim().is_empty() {
        assert!(started.elapsed() < WAIT, "the shell never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    tmux.type_text("echo h''i");
    tmux.send(&["Enter"]);
    tmux.wait_line("hi").await;
    tmux.type_text("exit 3");
    tmux.send(&["Enter"]);
    let screen = tmux.wait_line("EXIT=3").await;
    tmux.wait_line("icanon").await;
    assert!(!screen.contains("[rmm:"), "no notices expected:\n{screen}");

    // The shell was recorded: listed, printed as a cast, replayed.
    let started = Instant::now();
    let id = loop {
        let out = w.run(&["recordings"]).await;
        assert_success(&out);
        let table = text(&out.stdout);
        if let Some(row) = table.lines().find(|l| l.contains("web-01")) {
            let header = table.lines().next().unwrap();
            for column in [
                "ID",
                "AGENT",
                "USER",
                "STARTED",
                "DURATION",
                "SIZE",
                "TRUNCATED",
            ] {
                assert!(header.contains(column), "{table}");
            }
            break row.split_whitespace().next().unwrap().to_owned();
        }
        assert!(started.elapsed() < WAIT, "never listed:\n{table}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let out = w.run(&["replay", "--raw", &id]).await;
    assert_success(&out);
    let cast = text(&out.stdout);
    let header: Value = serde_json::from_str(cast.lines().next().unwrap()).unwrap();
    assert_eq!(header["version"], 2, "{cast}");
    assert_eq!(header["width"], 120, "{cast}");
    assert_eq!(header["height"], 40, "{cast}");
    let out = w.run(&["replay", "--speed", "1000", &id]).await;
    assert_success(&out);
    assert!(
        // The shell may wrap its lines in escapes (bracketed paste): the output line ends
        // in `hi` and is not the echoed command.
        text(&out.stdout)
            .lines()
            .any(|l| l.trim_end().ends_with("hi") && !l.contains("echo")),
        "{}",
        text(&out.stdout)
    );

    let missing = uuid::Uuid::new_v4().to_string();
    let out = w.run(&["replay", &missing]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("rmm: no recording {missing}; list them with `rmm recordings`\n")
    );
}

#[tokio::test]
async fn tilde_dot_at_the_start_of_a_line_disconnects_with_255() {
    let w = world(true).await;
    let rmm = binary("rmm").unwrap();
    let tmux = Tmux::start(&format!(
        "{} '{}' shell web-01 -- 'echo ready; sleep 600'; echo EXIT=$?; sleep 30",
        w.env_words(),
        rmm.display()
    ));
    tmux.wait_line("ready").await;
    tmux.send(&["Enter"]);
    tmux.type_text("~.");
    let screen = tmux.wait_line("EXIT=255").await;
    assert!(screen.contains("rmm: disconnected (~.)"), "{screen}");
}

#[tokio::test]
async fn exec_forwards_a_piped_stdin_and_n_keeps_it_closed() {
    // PostgreSQL here; the shell's tests run on SQLite.
    let w = world(false).await;

    let mut child = w
        .rmm(&["exec", "web-01", "--", "cat"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").await.unwrap();
    drop(stdin);
    let out = finish(child).await;
    assert_success(&out);
    assert_eq!(text(&out.stdout), "hello\n");

    // -n: the remote stdin is closed even though ours stays open.
    let started = Instant::now();
    let mut child = w
        .rmm(&["exec", "-n", "web-01", "--", "cat"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let open_stdin = child.stdin.take().unwrap();
    let out = finish(child).await;
    drop(open_stdin);
    assert_success(&out);
    assert_eq!(out.stdout, b"");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn three_megabytes_of_stdin_arrive_byte_for_byte() {
    let w = world(true).await;
    let dir = tempfile::tempdir().unwrap();
    // Random-looking bytes (xorshift): every byte value, no line structure.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let data: Vec<u8> = (0..3 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[3]
        })
        .collect();
    let source = dir.path().join("source");
    std::fs::write(&source, &data).unwrap();
    let copy = dir.path().join("copy");
    let out = finish(
        w.rmm(&[
            "exec",
            "web-01",
            "--",
            &format!("cat > '{}'", copy.display()),
        ])
        .stdin(std::fs::File::open(&source).unwrap())
        .spawn()
        .unwrap(),
    )
    .await;
    assert_success(&out);
    let copied = std::fs::read(&copy).unwrap();
    assert_eq!(copied.len(), data.len());
    assert_eq!(Sha256::digest(&copied), Sha256::digest(&data));
}
