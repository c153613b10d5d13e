//! Internet-facing hardening, end to end on the real binaries:
//!
//! * files (point 8): `rmm-server` started the zero-setup way (SQLite in its data folder, a
//!   generated JWT secret, umask 022) keeps the data folder at 0700 and the database, its WAL
//!   and shared-memory files and `jwt-secret` at 0600; a data folder it finds open to other
//!   users is named in a warning with the fix; `rmm-agent` warns about a config file that holds
//!   its key and is readable by other users;
//! * supply chain (point 10): no binary carries the `rsa` crate, and the server's own HS256
//!   provider signs standard tokens and refuses every other algorithm.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.
#![cfg(unix)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, StatusCode};
use rmm_e2e::server::{binary, init_crypto};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;
use tokio::process::{Child, Command};

/// Start-up includes migrations and the first argon2 hash; CI machines are slow.
const START: Duration = Duration::from_secs(60);
const PASSWORD: &str = "hardening-admin-password";

/// The permission bits of `path`, in octal as `ls -l` and `chmod` spell them ("600").
fn mode(path: &Path) -> String {
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    format!("{:o}", mode & 0o777)
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `rmm-server --dev` in `dir` with no database URL and no JWT secret, under umask 022 (set
/// here, so the test does not depend on the caller's): SQLite and the secret go in `dir/data`.
struct Server {
    addr: SocketAddr,
    child: Child,
    stderr: Arc<Mutex<String>>,
    http: reqwest::Client,
}

impl Server {
    async fn start(dir: &Path) -> anyhow::Result<Self> {
        init_crypto();
        let addr = free_port();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"umask 022 && exec "$0" "$@""#)
            .arg(binary("rmm-server")?)
            .arg("--dev")
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RMM_LISTEN", addr.to_string())
            .env("RMM_ADMIN_PASSWORD", PASSWORD)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting rmm-server")?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().context("no stderr pipe")?;
        let kept = Arc::clone(&stderr);
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("rmm-server: {line}");
                let mut kept = kept.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        let mut server = Self {
            addr,
            child,
            stderr,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
        };
        let started = Instant::now();
        while started.elapsed() < START {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "rmm-server exited during start-up: {status}\n{}",
                    server.stderr()
                );
            }
            if let Ok(r) = server.http.get(server.url("/healthz")).send().await
                && r.status().is_success()
            {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("rmm-server did not answer /healthz within {START:?}")
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> StatusCode {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap().status()
    }

    async fn login(&self) -> String {
        let r = self
            .http
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({ "username": "admin", "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn the_server_keeps_its_data_folder_database_and_secret_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await.unwrap();

    // A request that writes to the database while the server runs (WAL and SHM in use).
    let token = server.login().await;
    let created = server
        .call(
            Method::POST,
            "/api/v1/agents",
            &token,
            Some(json!({ "name": "modes" })),
        )
        .await;
    assert_eq!(created, StatusCode::CREATED);

    let data = dir.path().join("data");
    assert_eq!(mode(&data), "700", "data folder");
    for file in ["rmm.db", "rmm.db-wal", "rmm.db-shm", "jwt-secret"] {
        assert_eq!(mode(&data.join(file)), "600", "data/{file}");
    }
    assert!(
        !server.stderr().contains("chmod 700"),
        "a folder the server made itself is not warned about:\n{}",
        server.stderr()
    );
}

#[tokio::test]
async fn a_data_folder_open_to_other_users_is_named_in_a_warning_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start(dir.path()).await.unwrap();

    let stderr = server.stderr();
    assert!(
        stderr.contains("WARN") && stderr.contains("0755") && stderr.contains("chmod 700 data"),
        "no warning about the open data folder:\n{stderr}"
    );
    // The folder is the operator's: left as it was. What is in it is still owner-only.
    assert_eq!(mode(&data), "755");
    for file in ["rmm.db", "jwt-secret"] {
        assert_eq!(mode(&data.join(file)), "600", "data/{file}");
    }
}

/// `rmm-agent --once --config <file>` against a port nobody listens on: stderr and whether it
/// exited non-zero.
async fn agent_once(config: &Path) -> (String, bool) {
    let out = Command::new(binary("rmm-agent").unwrap())
        .arg("--once")
        .arg("--config")
        .arg(config)
        .env_clear()
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        !out.status.success(),
    )
}

#[tokio::test]
async fn the_agent_warns_about_a_key_file_readable_by_other_users() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    let nobody = free_port();
    std::fs::write(
        &config,
        format!("server = \"ws://{nobody}\"\nkey = \"rmmk_not-a-real-key-0123456789\"\n"),
    )
    .unwrap();

    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (stderr, failed) = agent_once(&config).await;
    assert!(failed, "--once with no server must fail:\n{stderr}");
    assert!(
        stderr.contains("WARN")
            && stderr.contains("0644")
            && stderr.contains(&format!("chmod 600 {}", config.display())),
        "no warning naming the file and the fix:\n{stderr}"
    );

    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (stderr, failed) = agent_once(&config).await;
    assert!(failed, "--once with no server must fail:\n{stderr}");
    assert!(
        !stderr.contains("chmod 600"),
        "a 0600 config file is warned about:\n{stderr}"
    );
}

/// Whether the executable holds any symbol of crate `krate` (legacy mangling: `_ZN<len><name>`).
fn has_crate_symbols(exe: &[u8], krate: &str) -> bool {
    let prefix = format!("_ZN{}{krate}", krate.len());
    exe.windows(prefix.len() + 1)
        .any(|w| w.starts_with(prefix.as_bytes()) && w[prefix.len()].is_ascii_digit())
}

#[test]
fn no_binary_carries_the_rsa_crate() {
    for name in ["rmm-server", "rmm-agent", "rmm"] {
        let path: PathBuf = binary(name).unwrap();
        let exe = std::fs::read(&path).unwrap();
        // The symbol table is there to search (not stripped, legacy mangling): `core` is in
        // every Rust program.
        assert!(
            has_crate_symbols(&exe, "core"),
            "{name}: no symbols to check"
        );
        // RUSTSEC-2023-0071: jsonwebtoken's rust_crypto backend linked it for RS*/PS* tokens.
        assert!(
            !has_crate_symbols(&exe, "rsa"),
            "{name} links the rsa crate"
        );
    }
    let server = std::fs::read(binary("rmm-server").unwrap()).unwrap();
    assert!(
        has_crate_symbols(&server, "jsonwebtoken"),
        "rmm-server: jsonwebtoken is where rsa came from; its symbols should be found"
    );
}

/// HMAC (RFC 2104) over `D`, whose block is `D::BLOCK` bytes, written out here so the test
/// checks the server against an implementation that is not the one it uses.
fn hmac<D: sha2::Digest + Block>(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let block = D::BLOCK;
    let mut k = if key.len() > block {
        D::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(block, 0);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = D::new().chain_update(&ipad).chain_update(msg).finalize();
    D::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

trait Block {
    const BLOCK: usize;
}
impl Block for sha2::Sha256 {
    const BLOCK: usize = 64;
}
impl Block for sha2::Sha384 {
    const BLOCK: usize = 128;
}
impl Block for sha2::Sha512 {
    const BLOCK: usize = 128;
}

fn sign(alg: &str, payload: &str, tag: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
    let signed = format!("{header}.{payload}");
    let tag = URL_SAFE_NO_PAD.encode(tag(signed.as_bytes()));
    format!("{signed}.{tag}")
}

#[tokio::test]
async fn the_servers_tokens_are_standard_hs256_and_no_other_algorithm_passes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await.unwrap();
    let secret = std::fs::read_to_string(dir.path().join("data/jwt-secret")).unwrap();
    let secret = secret.trim().as_bytes().to_vec();
    let token = server.login().await;
    let ok = |status| assert_eq!(status, StatusCode::OK);
    let refused = |status, what: &str| assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
    ok(server
        .call(Method::GET, "/api/v1/agents", &token, None)
        .await);

    // The issued token is HMAC-SHA-256 of header.payload under the secret: re-signed here it
    // is the same token, byte for byte.
    let mut parts = token.split('.');
    let (header, payload) = (parts.next().unwrap(), parts.next().unwrap());
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["alg"], "HS256");
    let resigned = sign("HS256", payload, |m| hmac::<sha2::Sha256>(&secret, m));
    ok(server
        .call(Method::GET, "/api/v1/agents", &resigned, None)
        .await);

    // The same claims under the same secret, any other way: refused.
    let hs384 = sign("HS384", payload, |m| hmac::<sha2::Sha384>(&secret, m));
    refused(
        server
            .call(Method::GET, "/api/v1/agents", &hs384, None)
            .await,
        "HS384",
    );
    let hs512 = sign("HS512", payload, |m| hmac::<sha2::Sha512>(&secret, m));
    refused(
        server
            .call(Method::GET, "/api/v1/agents", &hs512, None)
            .await,
        "HS512",
    );
    let rs256 = sign("RS256", payload, |m| hmac::<sha2::Sha256>(&secret, m));
    refused(
        server
            .call(Method::GET, "/api/v1/agents", &rs256, None)
            .await,
        "RS256 label",
    );
    let none = sign("none", payload, |_| Vec::new());
    refused(
        server
            .call(Method::GET, "/api/v1/agents", &none, None)
            .await,
        "alg none",
    );
    let other = sign("HS256", payload, |m| hmac::<sha2::Sha256>(&[b'x'; 64], m));
    refused(
        server
            .call(Method::GET, "/api/v1/agents", &other, None)
            .await,
        "other secret",
    );

    // exp is enforced: the same claims, expired a minute ago, correctly signed.
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    claims["exp"] = json!(now - 60);
    let expired_payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let expired = sign("HS256", &expired_payload, |m| {
        hmac::<sha2::Sha256>(&secret, m)
    });
    refused(
        server
            .call(Method::GET, "/api/v1/agents", &expired, None)
            .await,
        "expired",
    );
    claims["exp"] = json!(now + 600);
    let fresh_payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let fresh = sign("HS256", &fresh_payload, |m| {
        hmac::<sha2::Sha256>(&secret, m)
    });
    ok(server
        .call(Method::GET, "/api/v1/agents", &fresh, None)
        .await);
}
