//! Zero-setup start, end to end: the real `rmm-server` in an empty folder with no
//! `DATABASE_URL`, no `RMM_ADMIN_PASSWORD` and no `RMM_JWT_SECRET`, started the way the README
//! says (`--dev --demo-agent`). A newcomer reads the admin password from the output, logs in,
//! finds the in-process demo agent connected, opens a tunnel and runs a command; after a
//! restart on the same folder users, agents, sessions, audit and the JWT secret are all there.
//!
//! The server here is started by hand rather than through `TestServer`, which always passes a
//! database URL, a JWT secret and an admin password: leaving those out is the point.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use reqwest::Method;
use rmm_e2e::server::{binary, init_crypto};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;
use tokio::process::{Child, Command};

/// Start-up includes migrations and the first argon2 hash; CI machines are slow.
const START: Duration = Duration::from_secs(60);

/// The line the first run prints just before the generated admin password.
const PASSWORD_INTRO: &str = "First run: created user `admin` with password";

/// `rmm-server` run in `dir` as a newcomer would: whatever it prints to stdout is kept.
struct Embedded {
    dir: PathBuf,
    addr: SocketAddr,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    stdout: Arc<Mutex<String>>,
    http: reqwest::Client,
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Embedded {
    fn new(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        init_crypto();
        Self {
            dir: dir.to_owned(),
            addr: free_port(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
            stdout: Arc::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// The command with a clean environment: only `PATH` (the demo agent runs `sh`), the
    /// listen address, a log filter and what the test adds.
    fn command(&self) -> anyhow::Result<Command> {
        let mut cmd = Command::new(binary("rmm-server")?);
        cmd.args(&self.args)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RMM_LISTEN", self.addr.to_string())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        Ok(cmd)
    }

    /// Starts the server and waits until it answers `/healthz`; stdout starts afresh.
    async fn start(&mut self) -> anyhow::Result<()> {
        let mut child = self
            .command()?
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting rmm-server")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let kept = Arc::new(Mutex::new(String::new()));
        self.stdout = Arc::clone(&kept);
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut kept = kept.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < START {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("rmm-server exited during start-up: {status}");
            }
            if let Ok(r) = self.http.get(self.url("/healthz")).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("rmm-server did not answer /healthz within {START:?}")
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits until stdout contains `needle`; all of stdout so far.
    async fn wait_printed(&self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let out = self.stdout();
            if out.contains(needle) {
                return out;
            }
            assert!(
                started.elapsed() < START,
                "{needle:?} not printed within {START:?}; stdout:\n{out}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM and the exit code.
    async fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("server is running");
        let pid = child.id().unwrap();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .expect("server exits within 20 s of SIGTERM")
            .unwrap()
            .code()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn login(&self, password: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({ "username": "admin", "password": password })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// The agent named `name`, once it is listed as connected.
    async fn connected_agent(&self, token: &str, name: &str) -> Value {
        let started = Instant::now();
        loop {
            let (status, agents) = self
                .call(Method::GET, "/api/v1/agents", Some(token), None)
                .await;
            assert_eq!(status, 200, "{agents}");
            let found = agents
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["name"] == name)
                .cloned();
            if let Some(agent) = found.filter(|a| a["connected"] == true) {
                return agent;
            }
            assert!(
                started.elapsed() < START,
                "agent {name} not listed as connected: {agents}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `command` in `session`; the finished command.
    async fn run(&self, token: &str, session: &str, command: &str) -> Value {
        let (status, started) = self
            .call(
                Method::POST,
                &format!("/api/v1/tunnel/{session}/command"),
                Some(token),
                Some(json!({ "command": command })),
            )
            .await;
        assert_eq!(status, 202, "{started}");
        let id = started["command_id"].as_str().unwrap();
        let (status, done) = self
            .call(
                Method::GET,
                &format!("/api/v1/tunnel/{session}/commands/{id}?wait=10"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{done}");
        done
    }
}

/// The generated password: the first non-blank line after [`PASSWORD_INTRO`].
fn printed_password(stdout: &str) -> String {
    stdout
        .lines()
        .skip_while(|line| !line.contains(PASSWORD_INTRO))
        .skip(1)
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or_else(|| panic!("no admin password printed; stdout:\n{stdout}"))
        .to_owned()
}

/// A printed block of steps: the lines from the one starting with `first` to the next blank.
fn printed_block(stdout: &str, first: &str) -> String {
    let steps: Vec<&str> = stdout
        .lines()
        .skip_while(|line| !line.trim_start().starts_with(first))
        .take_while(|line| !line.trim().is_empty())
        .collect();
    assert!(
        !steps.is_empty(),
        "no {first} steps printed; stdout:\n{stdout}"
    );
    steps.join("\n")
}

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_fresh_folder_runs_the_demo_from_the_printed_password_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Embedded::new(dir.path(), &["--dev", "--demo-agent"], &[]);
    server.start().await.unwrap();
    let out = server.wait_printed("Demo agent `demo` is connected").await;

    // The data folder was made in the working directory, secrets readable by the owner only.
    let data = dir.path().join("data");
    for file in ["rmm.db", "jwt-secret", "demo-agent.key"] {
        assert!(data.join(file).is_file(), "data/{file} missing");
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&data.join("jwt-secret")), 0o600);
        assert_eq!(mode(&data.join("demo-agent.key")), 0o600);
    }

    let password = printed_password(&out);
    let token = server.login(&password).await;
    let demo = server.connected_agent(&token, "demo").await;
    let agent_id = demo["agent_id"].as_str().unwrap().to_owned();
    assert_eq!(demo["mode"], "heartbeat");

    // The printed curl steps work as printed (they open, run `uname -a` and close).
    if have("curl") && have("jq") {
        let steps = printed_block(&out, "URL=");
        let ran = Command::new("sh")
            .args(["-e", "-c", &steps])
            .current_dir(dir.path())
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&ran.stdout);
        assert!(
            ran.status.success(),
            "steps failed: {}\n{stdout}\n{}",
            ran.status,
            String::from_utf8_lossy(&ran.stderr)
        );
        let docs: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(docs.len(), 3, "{stdout}");
        assert!(
            docs[0]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["name"] == "demo")
        );
        assert_eq!(docs[1]["status"], "completed", "{stdout}");
        assert_eq!(docs[1]["exit_code"], 0);
        assert!(!docs[1]["stdout"].as_str().unwrap().is_empty(), "{stdout}");
        assert_eq!(docs[2]["status"], "closed", "{stdout}");
    } else {
        eprintln!("zero_setup: curl or jq missing, the printed curl steps were not run");
    }

    // The printed CLI steps name the `rmm` built beside the server by its path, and work as
    // printed with nothing added to PATH (the CLI keeps its token under HOME). Without a
    // built CLI they say how to build it.
    let steps = printed_block(&out, "export RMM_SERVER=");
    match binary("rmm") {
        Ok(rmm) => {
            let agents_line = steps
                .lines()
                .map(str::trim)
                .find(|line| line.ends_with(" agents"))
                .unwrap_or_else(|| panic!("no `rmm agents` step: {steps}"));
            let program = agents_line.trim_end_matches(" agents").trim_matches('\'');
            assert_eq!(Path::new(program), rmm, "{steps}");
            assert!(Path::new(program).is_file(), "{program} is not a file");
            let ran = Command::new("sh")
                .args(["-e", "-c", &steps])
                .current_dir(dir.path())
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", dir.path())
                .output()
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&ran.stdout);
            assert!(
                ran.status.success(),
                "CLI steps failed: {}\n{stdout}\n{}",
                ran.status,
                String::from_utf8_lossy(&ran.stderr)
            );
            assert!(stdout.contains("demo"), "{stdout}");
        }
        Err(e) => {
            eprintln!("zero_setup: the printed CLI steps were not run: {e}");
            assert!(out.contains("cargo build --release -p rmm-cli"), "{out}");
        }
    }

    // A tunnel of our own, with a command in it, left open across the restart.
    let (status, opened) = server
        .call(
            Method::POST,
            "/api/v1/tunnel/open",
            Some(&token),
            Some(json!({ "agent_id": agent_id })),
        )
        .await;
    assert_eq!(status, 200, "{opened}");
    assert_eq!(opened["status"], "active");
    let session = opened["session_id"].as_str().unwrap().to_owned();
    let hello = server.run(&token, &session, "echo hello").await;
    assert_eq!(hello["status"], "completed", "{hello}");
    assert_eq!(hello["exit_code"], 0);
    assert_eq!(hello["stdout"], "hello\n");

    assert_eq!(server.terminate().await, Some(0));
    server.start().await.unwrap();
    let out = server.wait_printed("Demo agent `demo` is connected").await;
    assert!(
        !out.contains(PASSWORD_INTRO),
        "a second admin password was printed:\n{out}"
    );

    // The JWT secret was kept: the token from before the restart still works.
    let demo = server.connected_agent(&token, "demo").await;
    assert_eq!(
        demo["agent_id"],
        agent_id.as_str(),
        "the demo agent was re-registered"
    );
    let (_, agents) = server
        .call(Method::GET, "/api/v1/agents", Some(&token), None)
        .await;
    assert_eq!(agents.as_array().unwrap().len(), 1, "{agents}");
    // The user and password were kept.
    server.login(&password).await;
    // The session was closed by the shutdown, and says so.
    let (status, closed) = server
        .call(
            Method::GET,
            &format!("/api/v1/tunnel/status/{session}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["status"], "closed");
    assert_eq!(closed["close_reason"], "server_shutdown");
    // So was the audit trail.
    let (status, audit) = server
        .call(
            Method::GET,
            &format!("/api/v1/audit?session_id={session}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{audit}");
    let events: Vec<(&str, Option<&str>)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["detail"].as_str()))
        .collect();
    assert!(events.iter().any(|(e, _)| *e == "tunnel_open"), "{audit}");
    assert!(events.iter().any(|(e, _)| *e == "command"), "{audit}");
    assert!(
        events.contains(&("tunnel_close", Some("server_shutdown"))),
        "{audit}"
    );
    // The stored command output survived too.
    let (status, again) = server
        .call(
            Method::GET,
            &format!(
                "/api/v1/tunnel/{session}/commands/{}",
                hello["command_id"].as_str().unwrap()
            ),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["stdout"], "hello\n");

    // And the demo agent serves a new tunnel after the restart.
    let (status, reopened) = server
        .call(
            Method::POST,
            "/api/v1/tunnel/open",
            Some(&token),
            Some(json!({ "agent_id": agent_id })),
        )
        .await;
    assert_eq!(status, 200, "{reopened}");
    assert_eq!(server.terminate().await, Some(0));
}

#[tokio::test]
async fn with_rmm_jwt_secret_the_demo_runs_without_dev_and_keeps_no_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Embedded::new(
        dir.path(),
        &["--demo-agent"],
        &[("RMM_JWT_SECRET", "zero-setup-test-secret-0123456789abcdef")],
    );
    server.start().await.unwrap();
    let out = server.wait_printed("Demo agent `demo` is connected").await;
    let token = server.login(&printed_password(&out)).await;
    server.connected_agent(&token, "demo").await;
    assert!(!dir.path().join("data/jwt-secret").exists());
    assert_eq!(server.terminate().await, Some(0));
}

#[tokio::test]
async fn without_dev_or_rmm_jwt_secret_the_server_refuses_to_start_and_says_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&[][..], &["--demo-agent"][..]] {
        let server = Embedded::new(dir.path(), args, &[]);
        let out = tokio::time::timeout(
            START,
            server
                .command()
                .unwrap()
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output(),
        )
        .await
        .expect("the server exits at once")
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started: {stderr}");
        assert!(stderr.contains("RMM_JWT_SECRET"), "{args:?}: {stderr}");
        assert!(stderr.contains("--dev"), "{args:?}: {stderr}");
        // Nothing answers on its address: it never listened.
        assert!(std::net::TcpStream::connect(server.addr).is_err());
    }
    // The secret is checked first: no data folder, no database was made.
    assert!(!dir.path().join("data").exists());
}

/// A setting the user got wrong ends the server at once with one line naming the cause and a
/// non-zero exit code: no backtrace, even with `RUST_BACKTRACE=1`.
#[tokio::test]
async fn a_bad_setting_ends_the_server_with_one_line_naming_the_cause_and_no_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let not_a_folder = dir.path().join("not-a-folder");
    std::fs::write(&not_a_folder, "").unwrap();
    let data_dir = not_a_folder.join("data").display().to_string();
    let secret = ("RMM_JWT_SECRET", "zero-setup-test-secret-0123456789abcdef");
    // (arguments, environment, what the one error line must contain)
    type Case<'a> = (&'a [&'a str], Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: [Case; 4] = [
        (
            &[],
            vec![secret, ("DATABASE_URL", "mysql://db/rmm")],
            vec![
                "DATABASE_URL must start with postgres:// or sqlite://",
                "mysql",
            ],
        ),
        (
            &[],
            vec![("RMM_JWT_SECRET", "too-short")],
            vec!["RMM_JWT_SECRET must be at least 32 bytes"],
        ),
        (
            &["--data-dir", &data_dir],
            vec![secret],
            vec!["cannot create the data folder", &data_dir],
        ),
        (
            &[],
            vec![secret, ("RMM_LISTEN", &busy_addr)],
            vec!["cannot listen on", &busy_addr],
        ),
    ];
    for (args, mut env, causes) in cases {
        // Logs at error only: the one line to check is the exit message, not start-up news.
        env.extend([
            ("RUST_BACKTRACE", "1"),
            ("RUST_LIB_BACKTRACE", "1"),
            ("RUST_LOG", "error"),
        ]);
        let server = Embedded::new(dir.path(), args, &env);
        let out = tokio::time::timeout(
            START,
            server
                .command()
                .unwrap()
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output(),
        )
        .await
        .expect("the server exits at once")
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?} {env:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?} {env:?}: not one line: {stderr}");
        assert!(
            lines[0].starts_with("rmm-server: error: "),
            "{args:?} {env:?}: {stderr}"
        );
        for cause in causes {
            assert!(lines[0].contains(cause), "{cause:?} not named: {stderr}");
        }
        assert!(
            !stderr.to_lowercase().contains("backtrace"),
            "{args:?} {env:?}: {stderr}"
        );
    }
    drop(busy);
}
