//! Runs the real `rmm-server` binary for a test: on a free loopback port, against a given
//! database, with a known admin password and short timeouts, killed when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The admin password every test server is started with.
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
/// The JWT secret of every test server.
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// The folder holding the workspace's binaries (`target/debug`), found from the test
/// executable's own path (`target/debug/deps/<test>`), so `CARGO_TARGET_DIR` is honoured.
///
/// # Errors
/// When the binary is missing: build it first (`cargo build --bins`, as scripts/test.sh does).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test executable has no target folder")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found: run `cargo build --bins` before the end-to-end tests",
            path.display()
        );
    }
    Ok(path)
}

/// One running server.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    pub database_url: String,
    env: Vec<(String, String)>,
    child: Option<Child>,
    http: reqwest::Client,
    /// `http`, or `https` when started with a CA to trust.
    scheme: &'static str,
    /// The server's stderr so far, when captured.
    log: Option<Arc<Mutex<String>>>,
    /// The soft open-file limit the server starts with (`ulimit -Sn`), when set.
    soft_nofile: Option<u64>,
    /// The container image to run instead of the binary ([`StartOptions::image`]).
    image: Option<String>,
    /// The running container's name, removed on kill and drop.
    container: Option<String>,
}

/// How to start a server beyond its environment (see [`TestServer::start_with`]).
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// PEM of the CA that signed the server's certificate (`RMM_TLS_CERT` in the env): the
    /// server is reached over https, trusting it.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Keep the server's log for [`TestServer::wait_for_log`] (it is still echoed on stderr).
    pub capture_log: bool,
    /// Run the server in this container image (scripts/build-image.sh) instead of the
    /// binary: `docker run` on the host's network, the same environment given with `-e`.
    pub image: Option<String>,
}

/// Installs the TLS crypto provider reqwest needs (once per process; later calls are no-ops).
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

impl TestServer {
    /// Starts a server on `database_url` with `env` added to (and overriding) the defaults.
    ///
    /// # Errors
    /// When the binary is missing or the server does not become healthy within 30 s.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_with(database_url, env, StartOptions::default()).await
    }

    /// As [`Self::start`], over https and/or with its log kept, as `options` say.
    ///
    /// # Errors
    /// As [`Self::start`]; when the CA is not PEM.
    pub async fn start_with(
        database_url: &str,
        env: &[(&str, &str)],
        options: StartOptions,
    ) -> anyhow::Result<Self> {
        Self::start_inner(database_url, env, options, None).await
    }

    /// As [`Self::start_with`], with the soft open-file limit set to `soft_nofile` (through
    /// `sh -c 'ulimit -Sn N'`), as systemd's default of 1024 would.
    ///
    /// # Errors
    /// As [`Self::start`].
    pub async fn start_with_soft_nofile(
        database_url: &str,
        env: &[(&str, &str)],
        options: StartOptions,
        soft_nofile: u64,
    ) -> anyhow::Result<Self> {
        Self::start_inner(database_url, env, options, Some(soft_nofile)).await
    }

    async fn start_inner(
        database_url: &str,
        env: &[(&str, &str)],
        options: StartOptions,
        soft_nofile: Option<u64>,
    ) -> anyhow::Result<Self> {
        init_crypto();
        // Pooled connections are dropped before the server closes idle ones (after its 10 s
        // header-read timeout): reusing one it is closing just then fails a streamed upload
        // with a broken pipe.
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(5));
        if let Some(ca) = &options.tls_ca_pem {
            http = http.tls_certs_merge(reqwest::Certificate::from_pem_bundle(ca)?);
        }
        let mut server = Self {
            addr: free_port()?,
            database_url: database_url.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
            http: http.build()?,
            scheme: if options.tls_ca_pem.is_some() {
                "https"
            } else {
                "http"
            },
            log: options.capture_log.then(Arc::default),
            soft_nofile,
            image: options.image,
            container: None,
        };
        server.spawn().await?;
        Ok(server)
    }

    /// The server's environment: the test defaults, then the test's own.
    fn server_env(&self) -> Vec<(String, String)> {
        let defaults = [
            ("DATABASE_URL", self.database_url.clone()),
            ("RMM_LISTEN", self.addr.to_string()),
            ("RMM_JWT_SECRET", JWT_SECRET.to_owned()),
            ("RMM_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
            ("RMM_OPEN_TIMEOUT_SECS", "2".to_owned()),
            ("RMM_MAINTENANCE_INTERVAL_MS", "200".to_owned()),
            (
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            ),
        ];
        defaults
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(self.env.iter().cloned())
            .collect()
    }

    fn command(&mut self) -> anyhow::Result<Command> {
        let env = self.server_env();
        if let Some(image) = &self.image {
            let name = format!("rmm-test-server-{}", uuid::Uuid::new_v4().simple());
            let mut docker = Command::new("docker");
            docker.args(["run", "--rm", "--name", &name, "--label", "rmm-tunnel-test"]);
            docker.args(["--network", "host"]);
            for (k, v) in &env {
                docker.arg("-e").arg(format!("{k}={v}"));
            }
            docker.arg(image);
            self.container = Some(name);
            return Ok(docker);
        }
        let mut cmd = match self.soft_nofile {
            None => Command::new(binary("rmm-server")?),
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", r#"ulimit -Sn "$1" && shift && exec "$@""#, "sh"])
                    .arg(limit.to_string())
                    .arg(binary("rmm-server")?);
                sh
            }
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env);
        Ok(cmd)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = self.command()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if self.log.is_some() {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("starting rmm-server")?;
        if let (Some(log), Some(stderr)) = (&self.log, child.stderr.take()) {
            tokio::spawn(keep_log(stderr, Arc::clone(log)));
        }
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
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
        bail!("rmm-server did not answer /healthz within 30 s")
    }

    /// The server process's id, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    #[must_use]
    pub fn ws_url(&self) -> String {
        let scheme = if self.scheme == "https" { "wss" } else { "ws" };
        format!("{scheme}://{}/api/v1/agent/ws", self.addr)
    }

    /// Waits until a line of the server's log contains every one of `needles`; that line.
    ///
    /// # Errors
    /// When the log is not captured ([`StartOptions::capture_log`]) or no such line appears
    /// within `within`.
    pub async fn wait_for_log(&self, needles: &[&str], within: Duration) -> anyhow::Result<String> {
        let log = self
            .log
            .as_ref()
            .context("the server's log is not captured")?;
        let started = Instant::now();
        loop {
            let found = log
                .lock()
                .map_err(|_| anyhow::anyhow!("log lock poisoned"))?
                .lines()
                .find(|line| needles.iter().all(|n| line.contains(n)))
                .map(str::to_owned);
            if let Some(line) = found {
                return Ok(line);
            }
            if started.elapsed() > within {
                bail!("no server log line with {needles:?} within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's log so far, when captured ([`StartOptions::capture_log`]).
    #[must_use]
    pub fn log_text(&self) -> Option<String> {
        let log = self.log.as_ref()?;
        log.lock().ok().map(|log| log.clone())
    }

    /// Bytes of the server's log so far, when captured ([`StartOptions::capture_log`]).
    #[must_use]
    pub fn log_len(&self) -> Option<usize> {
        let log = self.log.as_ref()?;
        log.lock().ok().map(|log| log.len())
    }

    #[must_use]
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Logs in; the token.
    ///
    /// # Errors
    /// When the login is not 200.
    pub async fn login(&self, username: &str, password: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        if status != 200 {
            bail!("login of {username} answered {status}: {body}");
        }
        body["token"]
            .as_str()
            .map(str::to_owned)
            .context("login response without token")
    }

    /// The first-run admin's token.
    ///
    /// # Errors
    /// When login fails.
    pub async fn admin_token(&self) -> anyhow::Result<String> {
        self.login("admin", ADMIN_PASSWORD).await
    }

    /// Creates a technician with `rmm-server user add` (the real CLI) and logs them in.
    ///
    /// # Errors
    /// When the CLI or the login fails.
    pub async fn tech_token(&self, username: &str) -> anyhow::Result<String> {
        let password = format!("{username}-password");
        let mut child = Command::new(binary("rmm-server")?)
            .args(["user", "add", "--username", username, "--password-stdin"])
            .env_clear()
            .env("DATABASE_URL", &self.database_url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            tokio::io::AsyncWriteExt::write_all(&mut stdin, format!("{password}\n").as_bytes())
                .await?;
        }
        let out = child.wait_with_output().await?;
        if !out.status.success() {
            bail!("user add failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        self.login(username, &password).await
    }

    /// Registers an agent as admin; `(agent_id, agent_key)`.
    ///
    /// # Errors
    /// When registration is not 201.
    pub async fn register_agent(
        &self,
        admin_token: &str,
        name: &str,
    ) -> anyhow::Result<(String, String)> {
        let r = self
            .http
            .post(self.url("/api/v1/agents"))
            .bearer_auth(admin_token)
            .json(&json!({ "name": name }))
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        if status != 201 {
            bail!("register agent answered {status}: {body}");
        }
        Ok((
            body["agent_id"].as_str().context("agent_id")?.to_owned(),
            body["agent_key"].as_str().context("agent_key")?.to_owned(),
        ))
    }

    /// Waits until `agent_id` is listed as connected: an agent's WebSocket handshake
    /// completes a moment before the server has registered the connection.
    ///
    /// # Errors
    /// When it is not connected within 10 s.
    pub async fn wait_connected(&self, token: &str, agent_id: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let (_, agents) = self
                .call(reqwest::Method::GET, "/api/v1/agents", Some(token), None)
                .await?;
            let connected = agents.as_array().is_some_and(|list| {
                list.iter()
                    .any(|a| a["agent_id"] == agent_id && a["connected"] == true)
            });
            if connected {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("agent {agent_id} was not listed as connected within 10 s")
    }

    /// Sends a JSON request; `(status, body)` where a non-JSON body is `Value::Null`.
    ///
    /// # Errors
    /// On transport failure.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A command's raw stdout or stderr (`stream`): `(status, content type, bytes)`.
    ///
    /// # Errors
    /// On transport failure.
    pub async fn raw_output(
        &self,
        token: &str,
        session: &str,
        command: &str,
        stream: &str,
    ) -> anyhow::Result<(u16, String, Vec<u8>)> {
        let path = format!("/api/v1/tunnel/{session}/commands/{command}/{stream}");
        let r = self
            .http
            .get(self.url(&path))
            .bearer_auth(token)
            .send()
            .await?;
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Ok((status, content_type, r.bytes().await?.to_vec()))
    }

    /// SIGKILL: no cleanup at all, as a crash or power loss.
    ///
    /// # Errors
    /// When the process cannot be killed.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.remove_container();
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// `docker rm -f` of the server's container, if it runs in one (killing `docker run`
    /// would leave the container running).
    fn remove_container(&mut self) {
        if let Some(name) = self.container.take() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", &name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// SIGTERM, then waits for the exit; its exit code.
    ///
    /// # Errors
    /// When the signal cannot be sent or the server does not exit within 20 s.
    pub async fn terminate(&mut self) -> anyhow::Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            bail!("server is not running")
        };
        let pid = child.id().context("server has no pid")?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .context("server did not exit after SIGTERM")??;
        Ok(exit.code())
    }

    /// Waits for the server to exit by itself; its exit code (`None`: killed by a signal).
    ///
    /// # Errors
    /// When it is not running or does not exit within `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            bail!("server is not running")
        };
        match tokio::time::timeout(within, child.wait()).await {
            Ok(exit) => Ok(exit?.code()),
            Err(_) => {
                self.child = Some(child);
                bail!("server did not exit within {within:?}")
            }
        }
    }

    /// Starts the server again on the same port and database.
    ///
    /// # Errors
    /// As [`Self::start`].
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.spawn().await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.remove_container();
    }
}

/// Copies the server's stderr into `log`, echoing it.
async fn keep_log(stderr: tokio::process::ChildStderr, log: Arc<Mutex<String>>) {
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("{line}");
        if let Ok(mut log) = log.lock() {
            log.push_str(&line);
            log.push('\n');
        }
    }
}

/// The `rmm` CLI with a clean environment: only PATH, the server's URL and a private config
/// folder under `home` (so tests never share or touch a real token).
///
/// # Errors
/// When the binary is missing (`cargo build --bins` first).
pub fn rmm_command(
    server_url: &str,
    home: &std::path::Path,
    args: &[&str],
) -> anyhow::Result<Command> {
    let mut cmd = Command::new(binary("rmm")?);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("RMM_SERVER", server_url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    Ok(cmd)
}
