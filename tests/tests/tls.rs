//! TLS in rmm-server end to end: a CA made at test time signs the server's certificate
//! (`RMM_TLS_CERT` / `RMM_TLS_KEY`); the real agent connects over `wss://` and the real `rmm`
//! runs a command over `https://`, both trusting the CA with `--ca-file`; curl reads
//! `/healthz`; clients without the CA are refused; SIGHUP serves a renewed certificate and
//! keeps the old one when the new files are broken. Also: the agent warns about plain `ws://`
//! beyond this machine.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use rmm_e2e::pg::fresh_database;
use rmm_e2e::pki::{ServerCert, TestCa};
use rmm_e2e::real_agent::agent_command;
use rmm_e2e::server::{StartOptions, TestServer, binary, rmm_command};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Child;

const WAIT: Duration = Duration::from_secs(30);

struct World {
    dir: TempDir,
    ca: TestCa,
    live: ServerCert,
    server: TestServer,
}

/// A server on https with a certificate of a fresh CA, its log captured.
async fn tls_world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path()).unwrap();
    let live = ca.server_cert(dir.path(), "rmm-server").unwrap();
    let db = fresh_database().await.unwrap();
    let cert = live.cert_file.to_str().unwrap();
    let key = live.key_file.to_str().unwrap();
    let options = StartOptions {
        tls_ca_pem: Some(ca.pem()),
        capture_log: true,
        ..StartOptions::default()
    };
    let env = [("RMM_TLS_CERT", cert), ("RMM_TLS_KEY", key)];
    let server = TestServer::start_with(&db, &env, options).await.unwrap();
    World {
        dir,
        ca,
        live,
        server,
    }
}

async fn finish(child: Child) -> Output {
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the process finishes in time")
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn curl(args: &[&str]) -> Output {
    let child = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("curl is installed (scripts/test.sh installs it)");
    finish(child).await
}

fn sighup(server: &TestServer) {
    let pid = server.pid().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn the_agent_rmm_and_curl_reach_the_server_over_tls_with_the_private_ca() {
    let w = tls_world().await;
    let url = w.server.url("");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca_file = w.ca.ca_file().to_str().unwrap();
    let started = w
        .server
        .wait_for_log(&["TLS on", "rmm-server.crt", "SHA-256"], WAIT)
        .await
        .unwrap();
    assert!(started.contains("rmm-server.key"), "{started}");
    w.server
        .wait_for_log(&["API docs at https://127.0.0.1:"], WAIT)
        .await
        .unwrap();

    // The real agent over wss://, given the server's https:// URL and the CA.
    let admin = w.server.admin_token().await.unwrap();
    let (agent_id, key) = w.server.register_agent(&admin, "web-01").await.unwrap();
    let _agent = agent_command(&w.server, &key, &["--ca-file", ca_file])
        .unwrap()
        .env("RMM_SERVER", &url)
        .spawn()
        .unwrap();
    w.server.wait_connected(&admin, &agent_id).await.unwrap();

    // `rmm login` with --ca-file, then `rmm exec` with RMM_CA_FILE: the API over https and
    // the output over the stream WebSocket (wss).
    w.server.tech_token("tina").await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut login = rmm_command(
        &url,
        home.path(),
        &[
            "--ca-file",
            ca_file,
            "login",
            "--username",
            "tina",
            "--password-stdin",
        ],
    )
    .unwrap()
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = login.stdin.take().unwrap();
    stdin.write_all(b"tina-password\n").await.unwrap();
    drop(stdin);
    let out = finish(login).await;
    assert!(out.status.success(), "login: {}", text(&out.stderr));

    let exec = rmm_command(
        &url,
        home.path(),
        &["exec", "web-01", "--", "echo hello-over-tls"],
    )
    .unwrap()
    .env("RMM_CA_FILE", ca_file)
    .spawn()
    .unwrap();
    let out = finish(exec).await;
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(0), "hello-over-tls\n"),
        "stderr: {}",
        text(&out.stderr)
    );

    // Without the CA the same token gets nowhere, and the error names the fix.
    let agents = rmm_command(&url, home.path(), &["agents"])
        .unwrap()
        .spawn()
        .unwrap();
    let out = finish(agents).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("invalid peer certificate") && stderr.contains("--ca-file"),
        "{stderr}"
    );

    // curl: trusted with --cacert, refused without, and no plain HTTP on the TLS port.
    let healthz = w.server.url("/healthz");
    let out = curl(&["--cacert", ca_file, &healthz]).await;
    assert_eq!(
        text(&out.stdout),
        r#"{"status":"ok"}"#,
        "{}",
        text(&out.stderr)
    );
    let out = curl(&[&healthz]).await;
    assert_eq!(out.status.code(), Some(60), "{}", text(&out.stderr));
    let plain = format!("http://{}/healthz", w.server.addr);
    let out = curl(&["--write-out", "%{http_code}", &plain]).await;
    assert!(
        !out.status.success(),
        "plain HTTP answered: {}",
        text(&out.stdout)
    );

    // An agent without the CA is refused too.
    let lonely = agent_command(&w.server, &key, &["--once"])
        .unwrap()
        .env("RMM_SERVER", &url)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = finish(lonely).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("certificate"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn sighup_serves_a_renewed_certificate_and_keeps_the_old_one_when_the_new_is_broken() {
    let w = tls_world().await;
    let addr = w.server.addr;
    assert_eq!(w.ca.served_certificate(addr).await.unwrap(), w.live.der);

    // A renewal gone wrong: the old certificate stays in service.
    std::fs::write(&w.live.cert_file, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    sighup(&w.server);
    let refused = w
        .server
        .wait_for_log(&["keeping the one in use"], WAIT)
        .await
        .unwrap();
    assert!(refused.contains("rmm-server.crt"), "{refused}");
    assert_eq!(w.ca.served_certificate(addr).await.unwrap(), w.live.der);
    let (code, _) = w
        .server
        .call(reqwest::Method::GET, "/healthz", None, None)
        .await
        .unwrap();
    assert_eq!(code, 200);

    // A good renewal, files replaced whole: new connections get the new certificate.
    let renewed =
        w.ca.server_cert(w.dir.path(), "rmm-server-renewed")
            .unwrap();
    assert_ne!(renewed.der, w.live.der);
    std::fs::rename(&renewed.key_file, &w.live.key_file).unwrap();
    std::fs::rename(&renewed.cert_file, &w.live.cert_file).unwrap();
    sighup(&w.server);
    let started = Instant::now();
    loop {
        let served = w.ca.served_certificate(addr).await.unwrap();
        if served == renewed.der {
            break;
        }
        assert_eq!(
            served, w.live.der,
            "neither the old nor the new certificate"
        );
        assert!(
            started.elapsed() < WAIT,
            "the renewed certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.server
        .wait_for_log(&["TLS certificate reloaded"], WAIT)
        .await
        .unwrap();
}

/// `rmm-agent --once` against `server` (nothing listens there); its stderr.
async fn agent_once_stderr(server: &str) -> String {
    let child = tokio::process::Command::new(binary("rmm-agent").unwrap())
        .args(["--once", "--server", server])
        .env_clear()
        .env("RMM_AGENT_KEY", "some-key")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = finish(child).await;
    assert!(!out.status.success(), "nothing listens at {server}");
    text(&out.stderr)
}

#[tokio::test]
async fn the_agent_warns_about_plain_ws_to_another_machine_only() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // 0.0.0.0 is not a loopback address, yet a connection to it stays on this machine.
    let remote = agent_once_stderr(&format!("ws://0.0.0.0:{port}")).await;
    assert!(remote.contains("plain ws://"), "{remote}");
    for local in [
        format!("ws://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
    ] {
        let stderr = agent_once_stderr(&local).await;
        assert!(!stderr.contains("plain ws://"), "{local}: {stderr}");
    }
}
