//! The `rmm` CLI end to end: the real `rmm` binary against the real `rmm-server` (fresh
//! PostgreSQL database) and the real `rmm-agent`, each test with its own config directory
//! (`XDG_CONFIG_HOME` and `HOME` in a temporary folder). What a technician types, and what
//! they see: output bytes, exit codes and the one-line errors.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::agent::ScriptedAgent;
use rmm_e2e::pg::fresh_database;
use rmm_e2e::real_agent::spawn_agent;
use rmm_e2e::server::TestServer;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(30);
const TECH: &str = "tina";
const TECH_PASSWORD: &str = "tina-password";

struct World {
    server: TestServer,
    admin: String,
    agent_id: String,
    agent_key: String,
    home: TempDir,
    _agent: Option<Child>,
}

/// A server with an agent `web-01` (running when `run_agent`) and a technician `tina`.
async fn world(env: &[(&str, &str)], run_agent: bool) -> World {
    let db = fresh_database().await.unwrap();
    let server = TestServer::start(&db, env).await.unwrap();
    let admin = server.admin_token().await.unwrap();
    let (agent_id, agent_key) = server.register_agent(&admin, "web-01").await.unwrap();
    server.tech_token(TECH).await.unwrap();
    let agent = if run_agent {
        let child = spawn_agent(&server, &agent_key).unwrap();
        server.wait_connected(&admin, &agent_id).await.unwrap();
        Some(child)
    } else {
        None
    };
    World {
        server,
        admin,
        agent_id,
        agent_key,
        home: tempfile::tempdir().unwrap(),
        _agent: agent,
    }
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

impl World {
    fn rmm(&self, args: &[&str]) -> Command {
        rmm_command(&self.server.url(""), &self.home, args)
    }

    async fn run(&self, args: &[&str]) -> Output {
        finish(self.rmm(args).spawn().unwrap()).await
    }

    /// `rmm login --password-stdin` as the technician.
    async fn login(&self) -> Output {
        self.login_with(TECH_PASSWORD).await
    }

    async fn login_with(&self, password: &str) -> Output {
        let mut child = self
            .rmm(&["login", "--username", TECH, "--password-stdin"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("{password}\n").as_bytes())
            .await
            .unwrap();
        drop(stdin);
        finish(child).await
    }

    async fn tech_token(&self) -> String {
        self.server.login(TECH, TECH_PASSWORD).await.unwrap()
    }

    /// The newest audit entry of `event` whose command is `command`, waiting for it.
    async fn wait_audit_command(&self, command: &str) -> Value {
        let started = Instant::now();
        loop {
            let (code, body) = self
                .server
                .call(
                    Method::GET,
                    "/api/v1/audit?limit=100",
                    Some(&self.admin),
                    None,
                )
                .await
                .unwrap();
            assert_eq!(code, 200, "{body}");
            if let Some(entry) = body["entries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["event"] == "command" && e["command"] == command)
            {
                return entry.clone();
            }
            assert!(started.elapsed() < WAIT, "command {command} never started");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
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

#[tokio::test]
async fn login_reads_the_password_from_stdin_and_agents_lists_the_agent() {
    let w = world(&[], true).await;

    let wrong = w.login_with("not-the-password").await;
    assert_eq!(wrong.status.code(), Some(1));
    assert_eq!(
        text(&wrong.stderr),
        "rmm: invalid username or password: check them and run `rmm login` again\n"
    );

    let out = w.login().await;
    assert_success(&out);
    assert!(
        text(&out.stderr).contains("Logged in"),
        "{}",
        text(&out.stderr)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = w.home.path().join("config").join("rmm");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("token")), 0o600);
        assert_eq!(mode(&dir), 0o700);
    }

    let out = w.run(&["agents"]).await;
    assert_success(&out);
    let table = text(&out.stdout);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for column in ["NAME", "ID", "CONNECTED", "MODE", "LAST SEEN"] {
        assert!(header.contains(column), "{table}");
    }
    let row = lines.next().unwrap();
    assert!(row.starts_with("web-01 "), "{table}");
    assert!(row.contains(&w.agent_id), "{table}");
    assert!(row.contains("yes"), "{table}");

    let out = w.run(&["agents", "--json"]).await;
    assert_success(&out);
    let agents: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(agents[0]["name"], "web-01");
    assert_eq!(agents[0]["agent_id"], w.agent_id.as_str());
    assert_eq!(agents[0]["connected"], true);
}

#[tokio::test]
async fn exec_streams_output_and_exits_with_the_remote_exit_code() {
    let w = world(&[], true).await;
    assert_success(&w.login().await);

    let out = w.run(&["exec", "web-01", "--", "echo", "hello"]).await;
    assert_success(&out);
    assert_eq!(text(&out.stdout), "hello\n");
    assert_eq!(text(&out.stderr), "");

    // Words are joined for the remote shell, as ssh does: quote for it.
    let out = w.run(&["exec", "web-01", "--", "sh -c 'exit 3'"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));

    let out = w
        .run(&["exec", "web-01", "--", "echo oops >&2; echo out"])
        .await;
    assert_success(&out);
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "oops\n");

    // By agent id too; and each exec closed the session it opened.
    let out = w.run(&["exec", &w.agent_id, "--", "true"]).await;
    assert_success(&out);
    let started = Instant::now();
    loop {
        let out = w.run(&["agents", "--json"]).await;
        let agents: Value = serde_json::from_slice(&out.stdout).unwrap();
        if agents[0]["mode"] == "heartbeat" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{agents}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn bytes_that_are_not_utf8_reach_stdout_exactly() {
    let w = world(&[], true).await;
    assert_success(&w.login().await);
    let out = w
        .run(&["exec", "web-01", "--", r"printf '\377\376abc\200'"])
        .await;
    assert_success(&out);
    assert_eq!(out.stdout, b"\xff\xfeabc\x80");
}

#[tokio::test]
async fn a_timeout_exits_124_and_says_so() {
    let w = world(&[], true).await;
    assert_success(&w.login().await);
    let started = Instant::now();
    let out = w
        .run(&[
            "exec",
            "web-01",
            "--timeout",
            "1",
            "--",
            "echo before; sleep 30",
        ])
        .await;
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "before\n");
    assert!(
        text(&out.stderr).contains("rmm: the remote command timed out after 1 s"),
        "{}",
        text(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn sigint_cancels_the_remote_command_and_exits_130() {
    let w = world(&[], true).await;
    assert_success(&w.login().await);

    // A kept session: exec reuses it, and it stays open after the cancel.
    let out = w.run(&["open", "web-01"]).await;
    assert_success(&out);
    let session = text(&out.stdout).trim().to_owned();
    uuid::Uuid::parse_str(&session).unwrap();

    let child = w
        .rmm(&["exec", "web-01", "--", "echo started; sleep 100"])
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let entry = w.wait_audit_command("echo started; sleep 100").await;
    assert_eq!(entry["session_id"], session.as_str(), "{entry}");
    let command_id = entry["command_id"].as_str().unwrap().to_owned();
    // The output has started, so the command is running on the agent.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let interrupted = Instant::now();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(
        interrupted.elapsed() < Duration::from_secs(10),
        "took {:?}",
        interrupted.elapsed()
    );
    assert_eq!(text(&out.stdout), "started\n");
    assert_eq!(text(&out.stderr), "rmm: the remote command was cancelled\n");

    let token = w.tech_token().await;
    let (code, command) = w
        .server
        .call(
            Method::GET,
            &format!("/api/v1/tunnel/{session}/commands/{command_id}"),
            Some(&token),
            None,
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{command}");
    assert_eq!(command["status"], "cancelled", "{command}");

    // The session was not exec's to close.
    let out = w.run(&["status", "--json"]).await;
    assert_success(&out);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status[0]["session_id"], session.as_str(), "{status}");
    assert_eq!(status[0]["status"], "active", "{status}");
}

#[tokio::test]
async fn open_status_and_close_remember_the_session() {
    let w = world(&[], true).await;
    assert_success(&w.login().await);

    let out = w.run(&["close"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("rmm: no open session is remembered: pass a SESSION id"),
        "{}",
        text(&out.stderr)
    );

    let out = w.run(&["open", "web-01"]).await;
    assert_success(&out);
    let session = text(&out.stdout).trim().to_owned();
    // Opening again returns the same session rather than a 409.
    let again = w.run(&["open", "web-01"]).await;
    assert_success(&again);
    assert_eq!(text(&again.stdout).trim(), session);

    let out = w.run(&["status"]).await;
    assert_success(&out);
    let table = text(&out.stdout);
    assert!(
        table.contains(&session) && table.contains("active"),
        "{table}"
    );
    assert!(table.contains("web-01"), "{table}");

    let out = w.run(&["close"]).await;
    assert_success(&out);
    assert!(
        text(&out.stdout).contains(&session),
        "{}",
        text(&out.stdout)
    );

    let out = w.run(&["status", &session, "--json"]).await;
    assert_success(&out);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["status"], "closed", "{status}");
    assert_eq!(status["close_reason"], "closed_by_owner", "{status}");
}

#[tokio::test]
async fn audit_lists_the_commands_run() {
    let w = world(&[], true).await;
    assert_success(&w.login().await);
    assert_success(&w.run(&["exec", "web-01", "--", "echo audited"]).await);

    // rmm exits on the final frame; the server writes `command_end` a moment after
    // publishing it, so the entries are awaited.
    let wanted = ["tunnel_open", "command", "command_end", "tunnel_close"];
    let started = Instant::now();
    loop {
        let out = w
            .run(&["audit", "--agent", "web-01", "--since", "1h", "--json"])
            .await;
        assert_success(&out);
        let entries: Value = serde_json::from_slice(&out.stdout).unwrap();
        let events: Vec<String> = entries
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_owned())
            .collect();
        if wanted.iter().all(|w| events.iter().any(|e| e == w)) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let out = w.run(&["audit", "--limit", "2"]).await;
    assert_success(&out);
    let table = text(&out.stdout);
    assert_eq!(table.lines().count(), 3, "{table}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["TIME", "EVENT", "USER", "AGENT", "SESSION", "DETAIL"],
        "{table}"
    );
    // Every entry here is the technician's: their username in the USER column.
    for row in table.lines().skip(1) {
        assert_eq!(row.split_whitespace().nth(2), Some(TECH), "{table}");
    }
    // More entries exist: the listing says so, and how to see them.
    let hint = text(&out.stderr);
    let before: i64 = hint
        .split("--before ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no --before hint in {hint:?}"));
    let out = w
        .run(&["audit", "--before", &before.to_string(), "--json"])
        .await;
    assert_success(&out);
    let older: Value = serde_json::from_slice(&out.stdout).unwrap();
    let older = older.as_array().unwrap();
    assert!(!older.is_empty(), "nothing before {before}");
    assert!(older.iter().all(|e| e["id"].as_i64().unwrap() < before));
    assert!(older.iter().all(|e| e["username"] == TECH), "{older:?}");
    // The rest fits under the default limit: no hint.
    let out = w.run(&["audit", "--before", &before.to_string()]).await;
    assert_success(&out);
    assert_eq!(text(&out.stderr), "", "a hint after the last page");
}

#[tokio::test]
async fn an_offline_agent_is_named_in_a_one_line_error() {
    let w = world(&[], false).await;
    assert_success(&w.login().await);
    let expected =
        "rmm: agent web-01 is offline: it is not connected to the server; check `rmm agents`\n";

    let out = w.run(&["exec", "web-01", "--", "true"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), expected);
    assert_eq!(text(&out.stdout), "");

    let out = w.run(&["open", "web-01"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), expected);

    let out = w.run(&["exec", "mail-01", "--", "true"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "rmm: no agent is named \"mail-01\" or has that id: see `rmm agents`\n"
    );
}

#[tokio::test]
async fn an_expired_login_says_to_log_in_again() {
    let w = world(&[("RMM_TOKEN_TTL_SECS", "1")], false).await;
    assert_success(&w.login().await);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let out = w.run(&["agents"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "rmm: your login expired: run `rmm login`\n"
    );
}

#[tokio::test]
async fn no_login_and_an_unreachable_server_are_one_line_errors() {
    let home = tempfile::tempdir().unwrap();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let server = format!("http://{closed_port}");

    let out = finish(rmm_command(&server, &home, &["agents"]).spawn().unwrap()).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "rmm: not logged in: run `rmm login` (or set RMM_TOKEN)\n"
    );

    let out = finish(
        rmm_command(&server, &home, &["agents"])
            .env("RMM_TOKEN", "a.b.c")
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("rmm: cannot reach the server at {server}: ")),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("; check --server / RMM_SERVER\n"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn completions_are_printed_for_bash() {
    let home = tempfile::tempdir().unwrap();
    let out = finish(
        rmm_command("http://127.0.0.1:9", &home, &["completions", "bash"])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_success(&out);
    assert!(
        text(&out.stdout).contains("_rmm()"),
        "{}",
        text(&out.stdout)
    );
}

/// A scripted agent that speaks only the reference protocol, with `rmm exec` started against
/// it and a first chunk of output `partial\n` sent: the agent, the running `rmm` and the
/// command's channel.
async fn exec_on_scripted_agent(w: &World, command: &str) -> (ScriptedAgent, Child, String) {
    let mut agent = ScriptedAgent::connect(&w.server.ws_url(), Some(&w.agent_key))
        .await
        .unwrap();
    w.server
        .wait_connected(&w.admin, &w.agent_id)
        .await
        .unwrap();
    let child = w.rmm(&["exec", "web-01", "--", command]).spawn().unwrap();
    let session = agent.expect_open().await.unwrap();
    agent.ready(&session).await.unwrap();
    let frame = agent.recv_json(WAIT).await.unwrap();
    assert_eq!(
        frame["payload"]["data"]["payload"]["command"], command,
        "{frame}"
    );
    let channel = frame["payload"]["channel_id"].as_str().unwrap().to_owned();
    let output = serde_json::json!({"type":"tunnel_data","payload":{"channel_id":channel,"data":{"type":"terminal_output","payload":{"stdout":"partial\n","stderr":"","exit_code":null}}}});
    agent.send_text(&output.to_string()).await.unwrap();
    (agent, child, channel)
}

/// Reads `expected` from the child's stdout (so it was written live), then waits for the end.
async fn expect_live_then_finish(mut child: Child, expected: &[u8]) -> Output {
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = vec![0; expected.len()];
    tokio::time::timeout(WAIT, stdout.read_exact(&mut seen))
        .await
        .expect("live output in time")
        .unwrap();
    assert_eq!(seen, expected);
    let mut out = finish(child).await;
    stdout.read_to_end(&mut out.stdout).await.unwrap();
    out.stdout.splice(0..0, seen);
    out
}

#[tokio::test]
async fn a_cancel_the_agent_cannot_carry_out_still_ends_the_command_without_a_final_frame() {
    let w = world(&[], false).await;
    assert_success(&w.login().await);
    let (_agent, child, _) = exec_on_scripted_agent(&w, "sleep 100").await;
    let pid = child.id().unwrap().to_string();
    let mut stdout = Vec::new();
    let out = {
        let mut child = child;
        let mut pipe = child.stdout.take().unwrap();
        let mut seen = [0; 8];
        tokio::time::timeout(WAIT, pipe.read_exact(&mut seen))
            .await
            .expect("live output in time")
            .unwrap();
        stdout.extend_from_slice(&seen);
        // A reference agent has no `command_cancel`: the server ends the command itself, and
        // no final frame ever comes. rmm learns of the end from its poll.
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        let out = finish(child).await;
        pipe.read_to_end(&mut stdout).await.unwrap();
        out
    };
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert_eq!(stdout, b"partial\n");
    assert_eq!(text(&out.stderr), "rmm: the remote command was cancelled\n");
}

#[tokio::test]
async fn an_agent_that_goes_away_mid_command_fails_it_with_255_and_keeps_the_output() {
    let w = world(&[], false).await;
    assert_success(&w.login().await);
    let (agent, child, _) = exec_on_scripted_agent(&w, "long-job").await;
    let (out, ()) = tokio::join!(expect_live_then_finish(child, b"partial\n"), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        agent.drop_connection();
    });
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"partial\n");
    assert_eq!(
        text(&out.stderr),
        "rmm: the remote command failed: the agent went away before the command ended; check `rmm agents` (agent_disconnected)\n"
    );
}

fn output_frame(channel: &str, stdout: &str, exit_code: Option<i32>) -> String {
    serde_json::json!({"type":"tunnel_data","payload":{"channel_id":channel,"data":{"type":"terminal_output","payload":{"stdout":stdout,"stderr":"","exit_code":exit_code}}}}).to_string()
}

#[tokio::test]
async fn output_the_stream_dropped_is_recovered_from_the_server_byte_for_byte() {
    let w = world(&[("RMM_MAX_COMMAND_OUTPUT", "67108864")], false).await;
    assert_success(&w.login().await);
    let (mut agent, child, channel) = exec_on_scripted_agent(&w, "big-job").await;
    // More than the socket buffers hold while nobody reads rmm's stdout: rmm blocks on its
    // pipe, the server's write to it times out (10 s) and it drops the stream mid-output.
    let mut expected = b"partial\n".to_vec();
    for i in 0..1100 {
        let line = format!("{i:05}{}\n", "x".repeat(16 * 1024 - 6));
        expected.extend_from_slice(line.as_bytes());
        agent
            .send_text(&output_frame(&channel, &line, None))
            .await
            .unwrap();
    }
    agent
        .send_text(&output_frame(&channel, "end\n", Some(0)))
        .await
        .unwrap();
    expected.extend_from_slice(b"end\n");
    tokio::time::sleep(Duration::from_secs(12)).await;
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    assert_eq!(out.stdout.len(), expected.len());
    assert!(out.stdout == expected, "the output differs");
}

#[tokio::test]
async fn a_server_shutdown_during_exec_says_so_in_one_line_and_exits_255() {
    let mut w = world(&[], true).await;
    assert_success(&w.login().await);
    let child = w
        .rmm(&["exec", "web-01", "--", "echo started; sleep 100"])
        .spawn()
        .unwrap();
    w.wait_audit_command("echo started; sleep 100").await;
    // The output has started, so the command is running on the agent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopping = Instant::now();
    w.server.terminate().await.unwrap();
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "started\n");
    // The server closed the session itself: no advice to close it, one line saying what
    // happened (whether the command was seen to stop depends on which news came first).
    let stderr = text(&out.stderr);
    assert!(
        stderr
            == "rmm: the server shut down and closed the session; the remote command was stopped with it\n"
            || stderr
                == "rmm: the server shut down and closed the session; the command's end is unknown\n",
        "{stderr}"
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "took {:?}",
        stopping.elapsed()
    );
}

#[tokio::test]
async fn an_agent_whose_tunnel_another_user_holds_says_whose_and_what_to_do() {
    let w = world(&[], true).await;
    assert_success(&w.login().await);
    // The admin holds the agent's one tunnel.
    let (code, opened) = w
        .server
        .call(
            Method::POST,
            "/api/v1/tunnel/open",
            Some(&w.admin),
            Some(serde_json::json!({ "agent_id": w.agent_id })),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{opened}");
    for args in [
        &["exec", "web-01", "--", "true"][..],
        &["open", "web-01"][..],
    ] {
        let out = w.run(args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(text(&out.stdout), "", "{args:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("rmm: cannot open a session to agent web-01: "),
            "{stderr}"
        );
        assert!(
            stderr.ends_with(
                "; wait until that session ends, or have it closed (by whoever holds it, or by an admin with `rmm close SESSION`)\n"
            ),
            "{stderr}"
        );
        assert!(!stderr.contains("close yours"), "{stderr}");
    }
}
