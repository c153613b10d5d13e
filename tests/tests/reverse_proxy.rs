//! The reverse-proxy recipe of docs/deploy.md, tested as shipped: Debian's nginx runs
//! deploy/nginx/rmm.conf (only its addresses, ports and certificate paths substituted),
//! terminating TLS in front of a plain-HTTP rmm-server. Through it: real agents' WebSockets,
//! `rmm exec` (the API and the technicians' stream), a 100 MiB upload and download with
//! `rmm cp`, a `?wait=60` long poll, and the client address of a refused agent key taken from
//! X-Forwarded-For by the trusted-proxy rule (RMM_TRUSTED_PROXIES).

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use rmm_e2e::nginx::Nginx;
use rmm_e2e::pg::fresh_database;
use rmm_e2e::pki::TestCa;
use rmm_e2e::pseudo_random;
use rmm_e2e::real_agent::agent_command;
use rmm_e2e::server::{StartOptions, TestServer, rmm_command};
use serde_json::{Value, json};
use tokio::process::Child;

const WAIT: Duration = Duration::from_secs(30);
const MIB: usize = 1024 * 1024;

/// deploy/nginx/rmm.conf with each of `(from, to)` replaced; each `from` must occur exactly
/// once, so a change of the recipe that this test no longer covers fails here.
fn recipe(substitutions: &[(&str, String)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx/rmm.conf");
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in substitutions {
        assert_eq!(
            text.matches(from).count(),
            1,
            "{from:?} in {}",
            path.display()
        );
        text = text.replace(from, to);
    }
    text
}

fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

async fn finish(child: Child, within: Duration) -> Output {
    tokio::time::timeout(within, child.wait_with_output())
        .await
        .expect("the process finishes in time")
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A JSON call through the proxy; `(status, body)`.
async fn call(
    http: &reqwest::Client,
    url: String,
    method: Method,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_nginx_recipe_carries_agents_streams_big_files_long_polls_and_client_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path()).unwrap();
    let cert = ca.server_cert(dir.path(), "rmm-proxy").unwrap();
    let ca_file = ca.ca_file().to_str().unwrap().to_owned();

    // rmm-server on plain HTTP behind the proxy, believing its X-Forwarded-For.
    let db = fresh_database().await.unwrap();
    let options = StartOptions {
        tls_ca_pem: None,
        capture_log: true,
        ..StartOptions::default()
    };
    let env = [("RMM_TRUSTED_PROXIES", "127.0.0.1")];
    let server = TestServer::start_with(&db, &env, options).await.unwrap();

    let (https, http) = (free_addr(), free_addr());
    let site = recipe(&[
        ("server 127.0.0.1:8080;", format!("server {};", server.addr)),
        ("listen 443 ssl;", format!("listen {https} ssl;")),
        ("listen 80;", format!("listen {http};")),
        (
            "/etc/ssl/rmm/fullchain.pem",
            cert.cert_file.display().to_string(),
        ),
        (
            "/etc/ssl/rmm/privkey.pem",
            cert.key_file.display().to_string(),
        ),
    ]);
    let nginx = Nginx::start(&site, &[https, http]).await.unwrap();
    let proxy = format!("https://{https}");
    let via_proxy = reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&ca.pem()).unwrap())
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    // Plain HTTP is redirected to HTTPS.
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://{http}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), StatusCode::MOVED_PERMANENTLY);

    // Two real agents over wss:// through the proxy.
    let admin = server.admin_token().await.unwrap();
    let mut agents = Vec::new();
    for name in ["web-01", "web-02"] {
        let (id, key) = server.register_agent(&admin, name).await.unwrap();
        let child = agent_command(&server, &key, &["--ca-file", &ca_file])
            .unwrap()
            .env("RMM_SERVER", &proxy)
            .spawn()
            .unwrap();
        server.wait_connected(&admin, &id).await.unwrap();
        agents.push((id, child));
    }
    let tech = server.tech_token("tina").await.unwrap();

    // A ?wait=60 long poll on a command that runs longer, held open through the proxy while
    // the rest goes on.
    let (code, opened) = call(
        &via_proxy,
        format!("{proxy}/api/v1/tunnel/open"),
        Method::POST,
        &tech,
        Some(json!({ "agent_id": agents[1].0 })),
    )
    .await;
    assert_eq!(code, 200, "{opened}");
    let session = opened["session_id"].as_str().unwrap().to_owned();
    let (code, started) = call(
        &via_proxy,
        format!("{proxy}/api/v1/tunnel/{session}/command"),
        Method::POST,
        &tech,
        Some(json!({ "command": "sleep 120", "timeout_secs": 150 })),
    )
    .await;
    assert_eq!(code, 202, "{started}");
    let command = started["command_id"].as_str().unwrap().to_owned();
    let long_poll = tokio::spawn({
        let (http, token) = (via_proxy.clone(), tech.clone());
        let url = format!("{proxy}/api/v1/tunnel/{session}/commands/{command}?wait=60");
        async move {
            let started = Instant::now();
            let (code, body) = call(&http, url, Method::GET, &token, None).await;
            (code, body, started.elapsed())
        }
    });

    // `rmm exec` through the proxy: the API over https, the output over the stream (wss).
    let home = tempfile::tempdir().unwrap();
    let rmm = |args: &[&str]| {
        let mut cmd = rmm_command(&proxy, home.path(), args).unwrap();
        cmd.env("RMM_CA_FILE", &ca_file).env("RMM_TOKEN", &tech);
        cmd
    };
    let out = finish(
        rmm(&["exec", "web-01", "--", "echo through-nginx"])
            .spawn()
            .unwrap(),
        WAIT,
    )
    .await;
    assert_success("rmm exec", &out);
    assert_eq!(text(&out.stdout), "through-nginx\n");

    // 100 MiB up and back down with `rmm cp`, streamed through the proxy.
    let data = pseudo_random(7, 100 * MIB + 3);
    let local = dir.path().join("big.bin");
    std::fs::write(&local, &data).unwrap();
    let remote_dir = tempfile::tempdir().unwrap();
    let remote = format!("web-01:{}", remote_dir.path().join("big.bin").display());
    let out = finish(
        rmm(&["cp", local.to_str().unwrap(), &remote])
            .spawn()
            .unwrap(),
        Duration::from_secs(300),
    )
    .await;
    assert_success("rmm cp upload", &out);
    assert!(std::fs::read(remote_dir.path().join("big.bin")).unwrap() == data);
    let back = dir.path().join("back.bin");
    let out = finish(
        rmm(&["cp", &remote, back.to_str().unwrap()])
            .spawn()
            .unwrap(),
        Duration::from_secs(300),
    )
    .await;
    assert_success("rmm cp download", &out);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the download differs"
    );

    // A refused agent key from 127.0.0.2, claiming to be 203.0.113.7: nginx (127.0.0.1, the
    // trusted proxy) appends 127.0.0.2, which the server logs; neither the forged entry nor
    // nginx's own address.
    let from_elsewhere = reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&ca.pem()).unwrap())
        .build()
        .unwrap();
    let refused = from_elsewhere
        .get(format!("{proxy}/api/v1/agent/ws"))
        .bearer_auth("not-an-agent-key")
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let line = server
        .wait_for_log(&["unknown key rejected"], WAIT)
        .await
        .unwrap();
    assert!(line.contains("remote=127.0.0.2"), "{line}");
    assert!(line.contains("peer=socket://127.0.0.1:"), "{line}");
    let log = nginx.access_log_with("127.0.0.2 ", WAIT).await;
    assert!(log.contains("127.0.0.2 "), "{log}");

    // The long poll was held the full minute and answered: the command still runs.
    let (code, body, took) = tokio::time::timeout(Duration::from_secs(120), long_poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "running", "{body}");
    assert!(
        took >= Duration::from_secs(59) && took < Duration::from_secs(90),
        "{took:?}"
    );
    drop(nginx);
    drop(agents);
}
