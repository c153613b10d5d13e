//! `rmm-server`: configuration, telemetry and wiring. The store is chosen once, here, from the
//! database URL; everything else is generic over it. With `--demo-agent` it also registers an
//! agent named `demo` and runs it inside this process (see [`demo`]), for a one-command trial.

use rmm_process as process;

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use rmm_application::{Config, CreateUserError};
use rmm_auth::{Jwt, JwtSecret, random_secret};
use rmm_domain::{Role, Username};
use rmm_gateway::agents::ConnectionTimings;
use rmm_server::wiring::{ServeOptions, Store, build_app, openapi_spec, serve};
use rmm_store::{PgStore, SqliteStore};

/// The rmm tunnel server.
#[derive(Debug, Parser)]
#[command(name = "rmm-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from the first line of standard input.
    Add {
        #[arg(long)]
        username: String,
        /// Read the password from standard input (required: passwords never go in argv).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Make the user an admin.
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Debug, Args)]
struct Settings {
    /// postgres://... or sqlite://path; default: SQLite in the data folder.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// Address to listen on.
    #[arg(
        long,
        env = "RMM_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    listen: SocketAddr,
    /// HS256 secret for technicians' tokens, at least 32 bytes.
    #[arg(long, env = "RMM_JWT_SECRET", global = true, hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Development mode: without RMM_JWT_SECRET, generate one and keep it in the data folder.
    #[arg(long, env = "RMM_DEV", global = true)]
    dev: bool,
    /// Demo: register an agent named `demo` and run it inside this server, connected to it, so a
    /// tunnel can be tried at once. It runs commands as the user running the server.
    #[arg(long, env = "RMM_DEMO_AGENT", global = true)]
    demo_agent: bool,
    /// Folder for the embedded database, the dev-mode secret and the demo agent's key.
    #[arg(long, env = "RMM_DATA_DIR", default_value = "data", global = true)]
    data_dir: PathBuf,
    /// Password for the `admin` user created on first run (default: random, printed once).
    #[arg(
        long,
        env = "RMM_ADMIN_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    admin_password: Option<String>,
    /// Seconds an open waits for the agent's tunnel_ready.
    #[arg(
        long,
        env = "RMM_OPEN_TIMEOUT_SECS",
        default_value_t = 10,
        global = true
    )]
    open_timeout_secs: u64,
    /// Seconds without activity after which a session is closed.
    #[arg(
        long,
        env = "RMM_IDLE_TIMEOUT_SECS",
        default_value_t = 1800,
        global = true
    )]
    idle_timeout_secs: u64,
    /// Default timeout of a command, seconds (a request may ask for up to 24 h).
    #[arg(
        long,
        env = "RMM_COMMAND_TIMEOUT_SECS",
        default_value_t = 300,
        global = true
    )]
    command_timeout_secs: u64,
    /// Output stored per stream of one command, bytes; beyond it output is streamed live but
    /// not stored, and the command is marked truncated.
    #[arg(long, env = "RMM_MAX_COMMAND_OUTPUT", default_value_t = 16 * 1024 * 1024, global = true)]
    max_command_output: u64,
    /// Lifetime of login tokens, seconds.
    #[arg(
        long,
        env = "RMM_TOKEN_TTL_SECS",
        default_value_t = 43_200,
        global = true
    )]
    token_ttl_secs: u64,
    /// Largest WebSocket message an agent may send, bytes (larger: close code 1009).
    #[arg(long, env = "RMM_MAX_AGENT_FRAME", default_value_t = 1024 * 1024, global = true)]
    max_agent_frame: usize,
    /// Seconds between pings to agents.
    #[arg(
        long,
        env = "RMM_PING_INTERVAL_SECS",
        default_value_t = 20,
        global = true
    )]
    ping_interval_secs: u64,
    /// Seconds without any frame from an agent after which its socket is dropped.
    #[arg(
        long,
        env = "RMM_AGENT_READ_IDLE_SECS",
        default_value_t = 60,
        global = true
    )]
    agent_read_idle_secs: u64,
    /// Milliseconds between presence flushes and idle checks.
    #[arg(
        long,
        env = "RMM_MAINTENANCE_INTERVAL_MS",
        default_value_t = 5000,
        global = true
    )]
    maintenance_interval_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    process::init_logging("info,sqlx=warn,poem=warn");
    // Checked before the database is touched, so a refused start leaves nothing behind.
    let secret = match cli.command {
        None | Some(Command::Serve) => Some(jwt_secret(&cli.settings)?),
        Some(_) => None,
    };
    let url = database_url(&cli.settings)?;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        run(PgStore::connect(&url).await?, cli, secret).await
    } else if url.starts_with("sqlite:") {
        run(SqliteStore::connect(&url).await?, cli, secret).await
    } else {
        bail!(
            "DATABASE_URL must start with postgres:// or sqlite:// (got {:?})",
            url.split(':').next().unwrap_or("")
        )
    }
}

fn database_url(settings: &Settings) -> anyhow::Result<String> {
    if let Some(url) = &settings.database_url {
        return Ok(url.clone());
    }
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create the data folder {}",
            settings.data_dir.display()
        )
    })?;
    Ok(format!(
        "sqlite://{}",
        settings.data_dir.join("rmm.db").display()
    ))
}

/// `secret` is the technicians' JWT secret, present when serving.
async fn run<S: Store>(store: S, cli: Cli, secret: Option<JwtSecret>) -> anyhow::Result<()> {
    let settings = cli.settings;
    let config = Config {
        open_timeout: Duration::from_secs(settings.open_timeout_secs),
        idle_timeout: Duration::from_secs(settings.idle_timeout_secs),
        command_timeout: Duration::from_secs(settings.command_timeout_secs.max(1)),
        max_stored_output: settings.max_command_output,
        ..Config::default()
    };
    let store = Arc::new(store);
    let app = build_app(Arc::clone(&store), config);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Openapi => {
            let jwt = Arc::new(Jwt::new(
                &JwtSecret::parse(&"x".repeat(32))?,
                Duration::from_secs(1),
            ));
            println!("{}", openapi_spec(app, jwt));
            Ok(())
        }
        Command::User {
            command:
                UserCommand::Add {
                    username,
                    password_stdin: _,
                    admin,
                },
        } => {
            let username = Username::parse(&username)?;
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut password)
                .context("cannot read the password from stdin")?;
            let password = password.trim_end_matches(['\r', '\n']);
            let role = if admin { Role::Admin } else { Role::Tech };
            match app.create_user(username.clone(), password, role).await {
                Ok(id) => {
                    println!("created {} {username} ({id})", role.as_str());
                    Ok(())
                }
                Err(e @ (CreateUserError::Taken(_) | CreateUserError::WeakPassword)) => {
                    bail!("{e}")
                }
                Err(e) => Err(anyhow::Error::new(e).context("could not create the user")),
            }
        }
        Command::Serve => {
            let secret = secret.context("no JWT secret to serve with")?;
            let jwt = Arc::new(Jwt::new(
                &secret,
                Duration::from_secs(settings.token_ttl_secs),
            ));
            let new_password = first_run_admin(
                &app,
                settings.admin_password.as_deref(),
                settings.listen,
                !settings.demo_agent,
            )
            .await?;
            let demo_agent = if settings.demo_agent {
                Some(demo::ensure_registered(&*store, &app, &settings.data_dir).await?)
            } else {
                None
            };
            let options = ServeOptions {
                max_agent_frame: settings.max_agent_frame,
                timings: ConnectionTimings {
                    ping_interval: Duration::from_secs(settings.ping_interval_secs.max(1)),
                    read_idle: Duration::from_secs(settings.agent_read_idle_secs.max(1)),
                    ..ConnectionTimings::default()
                },
                maintenance_interval: Duration::from_millis(
                    settings.maintenance_interval_ms.max(10),
                ),
            };
            let listener = tokio::net::TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("cannot listen on {} (RMM_LISTEN)", settings.listen))?;
            match demo_agent {
                None => serve(app, jwt, options, listener, process::shutdown_signal()).await,
                Some(agent) => {
                    let addr = demo::reachable(listener.local_addr()?);
                    let steps = demo::next_steps(addr, &agent, new_password.as_deref());
                    demo::serve_with(app, jwt, options, listener, agent, addr, steps).await
                }
            }
        }
    }
}

fn jwt_secret(settings: &Settings) -> anyhow::Result<JwtSecret> {
    if let Some(secret) = &settings.jwt_secret {
        return Ok(JwtSecret::parse(secret)?);
    }
    if !settings.dev {
        bail!(
            "RMM_JWT_SECRET is not set: set it to a random string of at least 32 bytes \
             (e.g. `export RMM_JWT_SECRET=$(openssl rand -base64 48)`), or pass --dev to generate one for local use"
        );
    }
    let path = settings.data_dir.join("jwt-secret");
    let secret = match std::fs::read_to_string(&path) {
        Ok(secret) => secret.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = random_secret(48);
            write_private(&path, &secret)?;
            secret
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    tracing::warn!(path = %path.display(), "dev mode: using the JWT secret kept in the data folder; set RMM_JWT_SECRET in production");
    Ok(JwtSecret::parse(&secret)?)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut file, contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `contents` to `path` readable by the owner only, replacing any previous file whole:
/// a new file is written beside it and renamed over it, so a crash leaves the old or the new.
fn replace_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".new");
    let partial = PathBuf::from(partial);
    // A leftover from a crash may have any mode; `write_private` only sets it on creation.
    match std::fs::remove_file(&partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", partial.display())),
    }
    write_private(&partial, contents)?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// With no users at all, creates `admin` and prints its password once. Returns the password
/// when it was generated here (so the demo's next steps can use it); `show_login` adds a curl
/// login line (the demo prints its own steps instead).
async fn first_run_admin<P: rmm_application::Ports>(
    app: &rmm_application::App<P>,
    password: Option<&str>,
    listen: SocketAddr,
    show_login: bool,
) -> anyhow::Result<Option<String>> {
    if app.count_users().await? > 0 {
        return Ok(None);
    }
    let generated = password.is_none();
    let password = password.map_or_else(|| random_secret(18), str::to_owned);
    let admin = Username::parse(demo::ADMIN)?;
    app.create_user(admin, &password, Role::Admin)
        .await
        .context("could not create the first admin user")?;
    if !generated {
        println!("First run: created user `admin` with the password from RMM_ADMIN_PASSWORD.");
        return Ok(None);
    }
    println!(
        "\n  First run: created user `admin` with password\n\n      {password}\n\n  It is shown only this once."
    );
    if show_login {
        println!(
            "  Log in with:\n\n      \
             curl -s http://{listen}/api/v1/auth/login -H 'content-type: application/json' \\\n        \
             -d '{{\"username\":\"admin\",\"password\":\"{password}\"}}'\n"
        );
    }
    Ok(Some(password))
}

/// `--demo-agent`: an agent registered here and run inside this process, connected to this
/// server over loopback like any other agent, so a newcomer can open a tunnel and run a
/// command right after the first start.
///
/// Only the digest of an agent key is stored, so the demo key itself is kept in the data
/// folder ([`KEY_FILE`], mode 0600). When that file is gone but `demo` is still registered,
/// its key cannot be recovered and there is no port to rotate it: the demo registers a fresh
/// agent (`demo-2`, `demo-3`, ...) and says so; the old one stays listed, offline.
mod demo {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use anyhow::{Context as _, bail};
    use rmm_agent_runtime::{AgentConfig, AgentKey, ServerUrl};
    use rmm_application::{AgentGateway as _, App, Credentials as _, Ports, RegisterAgentError};
    use rmm_auth::{Argon2Credentials, Jwt};
    use rmm_domain::{Actor, AgentId, AgentName, CloseReason, Username};
    use rmm_server::wiring::{ServeOptions, Store, serve};
    use tokio::sync::watch;
    use tracing::Instrument as _;

    /// The first-run user, who registers the demo agent.
    pub const ADMIN: &str = "admin";
    /// The demo agent's key, in the data folder.
    pub const KEY_FILE: &str = "demo-agent.key";
    /// `demo`, then `demo-2` ... `demo-N` when earlier names are taken by lost demo agents.
    const NAMES: u32 = 20;
    /// How long the start-up waits for the demo agent before it gives up announcing it.
    const CONNECT_WAIT: Duration = Duration::from_secs(20);

    /// The demo agent: who it is and the key it connects with.
    pub struct DemoAgent {
        pub id: AgentId,
        pub name: AgentName,
        key: AgentKey,
    }

    /// Finds the demo agent by the key kept in `data_dir`, or registers one as `admin`.
    ///
    /// # Errors
    /// When the store fails, the key file cannot be read or written, there is no admin user
    /// named `admin`, or every demo name is taken.
    pub async fn ensure_registered<S: Store, P: Ports>(
        store: &S,
        app: &App<P>,
        data_dir: &Path,
    ) -> anyhow::Result<DemoAgent> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let digest = Argon2Credentials.digest_agent_key(text.trim());
                if let Some(agent) = store.find_agent_by_key(digest).await? {
                    return Ok(DemoAgent {
                        id: agent.id,
                        name: agent.name,
                        key: AgentKey::parse(&text)?,
                    });
                }
                tracing::warn!(path = %path.display(), "the demo agent key matches no registered agent (was the database replaced?): registering a new demo agent");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
        let admin = store.find_user(&Username::parse(ADMIN)?).await?.context(
            "--demo-agent registers the demo agent as the user `admin`, which does not exist",
        )?;
        let actor = Actor {
            id: admin.id,
            role: admin.role,
        };
        for n in 1..=NAMES {
            let name = if n == 1 {
                "demo".to_owned()
            } else {
                format!("demo-{n}")
            };
            match app.register_agent(actor, AgentName::parse(&name)?).await {
                Ok(registered) => {
                    super::replace_private(&path, &registered.key.secret)?;
                    if n > 1 {
                        tracing::warn!(name, path = %path.display(), "`demo` is registered but its key is not in the key file (only a digest is stored, so it cannot be recovered): registered a new demo agent; the old one stays listed, offline");
                    }
                    return Ok(DemoAgent {
                        id: registered.id,
                        name: registered.name,
                        key: AgentKey::parse(&registered.key.secret)?,
                    });
                }
                Err(RegisterAgentError::NameTaken(_)) => {}
                Err(RegisterAgentError::Forbidden) => {
                    bail!("--demo-agent registers the demo agent as `admin`, who is not an admin")
                }
                Err(e @ RegisterAgentError::Store(_)) => {
                    return Err(anyhow::Error::new(e).context("cannot register the demo agent"));
                }
            }
        }
        bail!(
            "demo, demo-2 ... demo-{NAMES} are all registered already: start without --demo-agent"
        )
    }

    /// The address to dial, and to tell users: `0.0.0.0` and `[::]` only make sense to bind.
    pub fn reachable(listen: SocketAddr) -> SocketAddr {
        let ip = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, listen.port())
    }

    /// Copy-paste next steps; `password` is the first-run password when it was just made.
    pub fn next_steps(addr: SocketAddr, agent: &DemoAgent, password: Option<&str>) -> String {
        let (name, id) = (agent.name.as_str(), agent.id);
        // A password made just now goes in the steps; an older one was shown once and is
        // gone, so the CLI prompts for it and curl gets a placeholder.
        let cli_login = match password {
            Some(password) => {
                format!("echo '{password}' | rmm login --username admin --password-stdin")
            }
            None => "rmm login --username admin".to_owned(),
        };
        let password = password.unwrap_or("<admin password>");
        let auth = r#"-H "authorization: Bearer $TOKEN""#;
        let json = "-H 'content-type: application/json'";
        format!(
            "
  Demo agent `{name}` is connected. Try it with curl and jq:

    URL=http://{addr}
    TOKEN=$(curl -s $URL/api/v1/auth/login {json} \\
      -d '{{\"username\":\"admin\",\"password\":\"{password}\"}}' | jq -r .token)
    curl -s $URL/api/v1/agents {auth} | jq .
    SESSION=$(curl -s $URL/api/v1/tunnel/open {auth} \\
      {json} -d '{{\"agent_id\":\"{id}\"}}' | jq -r .session_id)
    COMMAND=$(curl -s $URL/api/v1/tunnel/$SESSION/command {auth} \\
      {json} -d '{{\"command\":\"uname -a\"}}' | jq -r .command_id)
    curl -s \"$URL/api/v1/tunnel/$SESSION/commands/$COMMAND?wait=10\" {auth} | jq .
    curl -s $URL/api/v1/tunnel/close {auth} \\
      {json} -d \"{{\\\"session_id\\\":\\\"$SESSION\\\"}}\" | jq .

  With the CLI:

    export RMM_SERVER=http://{addr}
    {cli_login}
    rmm agents
    rmm exec {name} -- uname -a
"
        )
    }

    /// Serves with the demo agent running beside the server, and prints `steps` once the
    /// agent is connected.
    ///
    /// # Errors
    /// As [`serve`]; an invalid agent URL.
    pub async fn serve_with<S: Store>(
        app: Arc<App<rmm_server::wiring::Production<S>>>,
        jwt: Arc<Jwt>,
        options: ServeOptions,
        listener: tokio::net::TcpListener,
        agent: DemoAgent,
        addr: SocketAddr,
        steps: String,
    ) -> anyhow::Result<()> {
        tracing::warn!(
            name = agent.name.as_str(),
            "demo agent: every user of this server can run commands on this machine as the user running it"
        );
        let config = AgentConfig::new(ServerUrl::parse(&format!("ws://{addr}"))?, agent.key);
        let (stop_tx, stop_rx) = watch::channel(false);
        let app_for_signal = Arc::clone(&app);
        let signal = tokio::spawn(async move {
            rmm_process::shutdown_signal().await;
            // Close the sessions before the demo agent hangs up: otherwise its disconnect
            // races `serve`'s own shutdown close and a session may be recorded as
            // `agent_disconnected` instead of `server_shutdown`.
            if let Err(e) = app_for_signal
                .close_all_sessions(CloseReason::ServerShutdown)
                .await
            {
                tracing::error!(error = %e, "could not close sessions at shutdown");
            }
            let _ = stop_tx.send(true);
        });
        let runtime = tokio::spawn(
            rmm_agent_runtime::run(config, stopped(stop_rx.clone()))
                .instrument(tracing::info_span!("demo_agent")),
        );
        let announce = tokio::spawn(announce(Arc::clone(&app), agent.id, steps));
        let served = serve(app, jwt, options, listener, stopped(stop_rx)).await;
        announce.abort();
        signal.abort();
        // After a clean stop the agent has its signal and closes at once; after a failed
        // serve it never will, so it is not waited for long.
        match tokio::time::timeout(Duration::from_secs(5), runtime).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "demo agent ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "demo agent task failed"),
            Err(_) => tracing::warn!("demo agent did not stop within 5 s"),
        }
        served
    }

    /// Resolves when a stop is sent, or when nobody can send one any more.
    async fn stopped(mut stop: watch::Receiver<bool>) {
        let _ = stop.wait_for(|stop| *stop).await;
    }

    /// Prints the next steps once the agent is connected: before that, they would fail.
    async fn announce<P: Ports>(app: Arc<App<P>>, agent: AgentId, steps: String) {
        let started = tokio::time::Instant::now();
        while app.gateway().mode(agent).is_none() {
            if started.elapsed() > CONNECT_WAIT {
                tracing::error!(agent_id = %agent, "the demo agent did not connect within {}s; see the demo_agent lines of this log", CONNECT_WAIT.as_secs());
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("{steps}");
    }

    #[cfg(test)]
    mod tests {
        #![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

        use std::sync::Arc;

        use rmm_application::{App, Config};
        use rmm_domain::{Role, Username};
        use rmm_server::wiring::{Production, build_app};
        use rmm_store::SqliteStore;

        use super::*;

        async fn fresh(dir: &Path) -> (Arc<SqliteStore>, Arc<App<Production<SqliteStore>>>) {
            let url = format!("sqlite://{}", dir.join("rmm.db").display());
            let store = Arc::new(SqliteStore::connect(&url).await.unwrap());
            let app = build_app(Arc::clone(&store), Config::default());
            (store, app)
        }

        async fn with_admin(dir: &Path) -> (Arc<SqliteStore>, Arc<App<Production<SqliteStore>>>) {
            let (store, app) = fresh(dir).await;
            app.create_user(Username::parse(ADMIN).unwrap(), "password-1", Role::Admin)
                .await
                .unwrap();
            (store, app)
        }

        #[tokio::test]
        async fn the_demo_agent_is_registered_once_and_found_again_by_its_kept_key() {
            let dir = tempfile::tempdir().unwrap();
            let (store, app) = with_admin(dir.path()).await;
            let first = ensure_registered(&*store, &app, dir.path()).await.unwrap();
            assert_eq!(first.name.as_str(), "demo");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600);
            }
            let again = ensure_registered(&*store, &app, dir.path()).await.unwrap();
            assert_eq!((again.id, again.key), (first.id, first.key));
            assert_eq!(app.list_agents().await.unwrap().len(), 1);
        }

        #[tokio::test]
        async fn a_lost_or_stale_key_registers_a_fresh_demo_agent_under_the_next_name() {
            let dir = tempfile::tempdir().unwrap();
            let (store, app) = with_admin(dir.path()).await;
            let first = ensure_registered(&*store, &app, dir.path()).await.unwrap();
            std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
            let second = ensure_registered(&*store, &app, dir.path()).await.unwrap();
            assert_eq!(second.name.as_str(), "demo-2");
            assert_ne!(second.id, first.id);
            std::fs::write(dir.path().join(KEY_FILE), "rmmk_not-a-key-of-ours\n").unwrap();
            let third = ensure_registered(&*store, &app, dir.path()).await.unwrap();
            assert_eq!(third.name.as_str(), "demo-3");
            let kept = ensure_registered(&*store, &app, dir.path()).await.unwrap();
            assert_eq!(kept.id, third.id);
        }

        #[tokio::test]
        async fn without_a_user_named_admin_the_demo_agent_is_refused() {
            let dir = tempfile::tempdir().unwrap();
            let (store, app) = fresh(dir.path()).await;
            let e = ensure_registered(&*store, &app, dir.path())
                .await
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("`admin`"), "{e}");
            assert!(!dir.path().join(KEY_FILE).exists());
        }

        #[test]
        fn the_next_steps_use_the_real_address_the_agent_and_a_new_password() {
            let agent = DemoAgent {
                id: AgentId::parse("7f74e9bf-0f33-4b8d-8cf6-fd76b6a1437e").unwrap(),
                name: AgentName::parse("demo-2").unwrap(),
                key: AgentKey::parse("k").unwrap(),
            };
            let addr = reachable("0.0.0.0:9090".parse().unwrap());
            let steps = next_steps(addr, &agent, Some("pw-123"));
            assert!(steps.contains("URL=http://127.0.0.1:9090\n"), "{steps}");
            assert!(steps.contains(r#""password":"pw-123""#), "{steps}");
            assert!(steps.contains(r#"{"agent_id":"7f74e9bf-0f33-4b8d-8cf6-fd76b6a1437e"}"#));
            assert!(steps.contains("rmm exec demo-2 -- uname -a"), "{steps}");
            assert!(steps.contains("export RMM_SERVER=http://127.0.0.1:9090\n"));
            assert!(steps.contains("echo 'pw-123' | rmm login --username admin --password-stdin"));
            let later = next_steps(addr, &agent, None);
            assert!(
                later.contains("\n    rmm login --username admin\n"),
                "{later}"
            );
            assert!(
                later.contains(r#""password":"<admin password>""#),
                "{later}"
            );
            assert_eq!(
                reachable("[::]:1".parse().unwrap()),
                "[::1]:1".parse().unwrap()
            );
            assert_eq!(
                reachable("10.0.0.5:8080".parse().unwrap()),
                "10.0.0.5:8080".parse().unwrap()
            );
        }
    }
}
