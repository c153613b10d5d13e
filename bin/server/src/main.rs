//! `rmm-server`: configuration, telemetry and wiring. The store is chosen once, here, from the
//! database URL; everything else is generic over it. With `--demo-agent` it also registers an
//! agent named `demo` and runs it inside this process (see [`demo`]), for a one-command trial.

use rmm_process as process;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rmm_application::{App, Config};
use rmm_auth::{Argon2Credentials, Jwt, JwtSecret, random_secret};
use rmm_cluster::ClusterSettings;
use rmm_domain::{Role, Username};
use rmm_gateway::agents::ConnectionTimings;
use rmm_server::limits::Limits;
use rmm_server::tls::{ServerTls, TlsFiles};
use rmm_server::wiring::{Production, ServeOptions, Store, build_app_with, openapi_spec, serve};
use rmm_store::{Metered, PgPoolSettings, PgStore, SqliteStore};

mod backup;
mod config_file;
mod console;
mod demo;
mod files;
mod settings;

use files::{data_folder, replace_private, write_private};
use settings::{Cli, ClusterArgs, Command, Settings};

#[tokio::main]
async fn main() -> ExitCode {
    // Before logging: `--help` and usage errors print and exit whatever the log settings.
    let cli = settings::parse();
    if let Err(e) = process::init_logging("info,sqlx=warn,poem=warn") {
        return process::exit_code("rmm-server", Err(e));
    }
    let cli = match cli {
        Ok(cli) => cli,
        Err(e) => return process::exit_code("rmm-server", Err(e)),
    };
    if let Some(path) = &cli.settings.config {
        config_file::warn_if_readable_secrets(path);
    }
    process::exit_code("rmm-server", start(cli).await)
}

/// Checks the settings, opens the store the database URL names and runs the command on it.
async fn start(cli: Cli) -> anyhow::Result<()> {
    // Checked before the database is touched, so a refused start leaves nothing behind.
    let secret = match cli.command {
        None | Some(Command::Serve) => Some(ServeSetup {
            secret: jwt_secret(&cli.settings)?,
            tls: tls(&cli.settings)?,
            limits: cli.settings.front_door.limits()?,
        }),
        Some(_) => None,
    };
    let url = database_url(&cli.settings)?;
    let shown = rmm_store::redact_url(&url);
    let cluster = match cli.command {
        None | Some(Command::Serve) => cluster_settings(&cli.settings, &url)?,
        Some(_) => None,
    };
    if let Some(Command::Backup { to }) = &cli.command {
        refuse_new_sqlite_file(&url, &shown)?;
        return backup::run(&url, &shown, to).await;
    }
    if matches!(cli.command, Some(Command::User { .. })) {
        refuse_new_sqlite_file(&url, &shown)?;
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let pool = PgPoolSettings {
            acquire_timeout: Duration::from_millis(cli.settings.db_acquire_timeout_ms.max(1)),
        };
        let mut store = PgStore::connect_with(&url, pool).await?;
        if let Some(cluster) = &cluster {
            store = store.for_node(&cluster.node_id);
        }
        run(Metered::new(store), cli, secret, shown, cluster).await
    } else if url.starts_with("sqlite:") {
        let store = Metered::new(SqliteStore::connect(&url).await?);
        run(store, cli, secret, shown, None).await
    } else {
        bail!(
            "DATABASE_URL must start with postgres:// or sqlite:// (got {:?})",
            url.split(':').next().unwrap_or("")
        )
    }
}

/// `rmm-server user ...` works on the server's database: a SQLite file that does not exist
/// yet is not that, and creating it would hide the mistake (a wrong folder or URL).
fn refuse_new_sqlite_file(url: &str, shown: &str) -> anyhow::Result<()> {
    let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or(rest))
    else {
        return Ok(());
    };
    if path.is_empty() || path.starts_with(":memory:") || Path::new(path).exists() {
        return Ok(());
    }
    bail!(
        "no database at {shown}: the server creates it on its first start. Run this where the server runs, with its DATABASE_URL or --data-dir"
    )
}

fn database_url(settings: &Settings) -> anyhow::Result<String> {
    if let Some(url) = &settings.database_url {
        return Ok(url.clone());
    }
    data_folder(&settings.data_dir)?;
    Ok(format!(
        "sqlite://{}",
        settings.data_dir.join("rmm.db").display()
    ))
}

/// What serving needs beyond the settings, checked before the database is opened.
#[derive(Debug)]
struct ServeSetup {
    /// The technicians' JWT secret.
    secret: JwtSecret,
    /// HTTPS, when a certificate and key are configured.
    tls: Option<Arc<ServerTls>>,
    /// Request and connection limits (the open-file limit already raised for them).
    limits: Limits,
}

/// The TLS certificate and key, read now so that a bad file stops the start with one line.
fn tls(settings: &Settings) -> anyhow::Result<Option<Arc<ServerTls>>> {
    let (cert, key) = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        (None, None) => {
            tracing::info!(
                "TLS off: plain HTTP and WS; set RMM_TLS_CERT and RMM_TLS_KEY, or put a reverse proxy in front (docs/deploy.md)"
            );
            return Ok(None);
        }
        _ => bail!("RMM_TLS_CERT and RMM_TLS_KEY go together: set both, or neither"),
    };
    if settings.demo_agent {
        bail!("--demo-agent runs without TLS: unset RMM_TLS_CERT and RMM_TLS_KEY for the demo");
    }
    Ok(Some(Arc::new(ServerTls::load(TlsFiles { cert, key })?)))
}

/// `secret` is what serving needs, present when serving.
async fn run<S: Store>(
    store: S,
    cli: Cli,
    secret: Option<ServeSetup>,
    shown_url: String,
    cluster: Option<ClusterSettings>,
) -> anyhow::Result<()> {
    let settings = cli.settings;
    let config = Config {
        open_timeout: Duration::from_secs(settings.open_timeout_secs),
        idle_timeout: Duration::from_secs(settings.idle_timeout_secs),
        command_timeout: Duration::from_secs(settings.command_timeout_secs.max(1)),
        max_stored_output: settings.max_command_output,
        max_output_spool: settings.output_spool_bytes,
        max_sessions_per_user: settings.max_sessions_per_user,
        terminal_grace: Duration::from_secs(settings.terminal_grace_secs),
        max_recording_bytes: settings.recording_max_bytes.max(4096),
        retention: settings.retention.policy(),
        ..Config::default()
    };
    let store = Arc::new(store);
    let credentials = Argon2Credentials::new(settings.front_door.hash_limits());
    let app = build_app_with(Arc::clone(&store), config, credentials);
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
        Command::User { command } => console::run(&app, &shown_url, command).await,
        // Handled in `start`, before a store is opened.
        Command::Backup { .. } => bail!("backup runs before the store is opened"),
        Command::Serve => {
            let setup = secret.context("no JWT secret to serve with")?;
            serve_command(&store, app, &settings, setup, cluster).await
        }
    }
}

/// `serve`: the first-run admin, the demo agent if asked for, then the server until stopped.
async fn serve_command<S: Store>(
    store: &Arc<S>,
    app: Arc<App<Production<S>>>,
    settings: &Settings,
    setup: ServeSetup,
    cluster: Option<ClusterSettings>,
) -> anyhow::Result<()> {
    let ServeSetup {
        secret,
        tls,
        limits,
    } = setup;
    let jwt = Arc::new(Jwt::new(
        &secret,
        Duration::from_secs(settings.token_ttl_secs),
    ));
    let scheme = rmm_server::tls::scheme(tls.as_ref());
    // Held while serving: dropping it stops the metrics listener.
    let _metrics = rmm_server::metrics::start(settings.metrics_listen, Arc::clone(&app)).await?;
    let new_password = first_run_admin(
        &app,
        settings.admin_password.as_deref(),
        &format!("{scheme}://{}", settings.listen),
        !settings.demo_agent,
    )
    .await?;
    let demo_agent = if settings.demo_agent {
        Some(demo::ensure_registered(&**store, &app, &settings.data_dir).await?)
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
        maintenance_interval: Duration::from_millis(settings.maintenance_interval_ms.max(10)),
        tls,
        trusted_proxies: settings.trusted_proxies.clone(),
        limits,
        admission: settings.admission,
        retention_sweep: Duration::from_secs(settings.retention.retention_sweep_secs.max(1)),
        cluster: None,
    };
    let listener = rmm_server::http_server::listen(settings.listen)
        .with_context(|| format!("cannot listen on {} (RMM_LISTEN)", settings.listen))?;
    if let Some(cluster) = cluster {
        return serve_in_cluster(store, app, jwt, options, listener, &cluster).await;
    }
    match demo_agent {
        None => serve(app, jwt, options, listener, process::shutdown_signal()).await,
        Some(agent) => {
            let addr = demo::reachable(listener.local_addr()?);
            let rmm = demo::cli_beside_this_program();
            let steps = demo::next_steps(addr, &agent, new_password.as_deref(), rmm.as_deref());
            demo::serve_with(app, jwt, options, listener, agent, addr, steps).await
        }
    }
}

/// Serves as a node of the cluster: joins (lease, NATS) before the start-up reconciliation,
/// leaves after the shutdown closed this node's sessions. A node that lost its lease stops.
async fn serve_in_cluster<S: Store>(
    store: &Arc<S>,
    app: Arc<App<Production<S>>>,
    jwt: Arc<Jwt>,
    mut options: ServeOptions,
    listener: tokio::net::TcpListener,
    cluster: &ClusterSettings,
) -> anyhow::Result<()> {
    let (accepted_tx, accepted_rx) = tokio::sync::mpsc::channel(FORWARDED_QUEUE);
    let links = rmm_cluster::Links {
        accepted: accepted_tx,
        session_node: {
            let store = Arc::clone(store);
            Arc::new(move |session| {
                let store = Arc::clone(&store);
                Box::pin(async move { store.node_of_open_session(session).await })
            })
        },
        max_json_body: options.limits.max_json_body,
    };
    let node = rmm_cluster::Node::join(cluster, Arc::clone(&app), Arc::clone(store), links).await?;
    options.cluster = Some(rmm_server::wiring::ServeCluster {
        forwarder: node.forwarder(),
        accepted: Arc::new(std::sync::Mutex::new(Some(accepted_rx))),
    });
    let mut lost = node.lost();
    let shutdown = async move {
        tokio::select! {
            () = process::shutdown_signal() => {}
            _ = lost.wait_for(|lost| *lost) => {}
        }
    };
    let served = serve(app, jwt, options, listener, shutdown).await;
    let lost = *node.lost().borrow();
    node.leave().await;
    served?;
    if lost {
        bail!(
            "this node's lease ran out (cut off from the database for longer than RMM_NODE_LEASE_SECS) and another node closed its sessions; start it again"
        );
    }
    Ok(())
}

/// Forwarded requests waiting for the listener to take them.
const FORWARDED_QUEUE: usize = 64;

/// Cluster mode's settings when `RMM_NATS_URL` is set: PostgreSQL required, the node id
/// checked (or generated once and kept in the data folder).
fn cluster_settings(settings: &Settings, url: &str) -> anyhow::Result<Option<ClusterSettings>> {
    let args = &settings.cluster;
    let Some(nats_url) = args.nats_url.clone().filter(|u| !u.trim().is_empty()) else {
        return Ok(None);
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!(
            "cluster mode (RMM_NATS_URL is set) needs PostgreSQL, shared by every node: set DATABASE_URL=postgres://USER:PASSWORD@HOST/DB (SQLite is for a single node)"
        );
    }
    if settings.demo_agent {
        bail!("--demo-agent is for a single node: unset RMM_NATS_URL to try the demo");
    }
    let node_id = match &args.node_id {
        Some(id) => id.clone(),
        None => kept_node_id(&settings.data_dir)?,
    };
    rmm_cluster::check_node_id(&node_id).map_err(anyhow::Error::msg)?;
    if !valid_subject_token(&args.nats_subject_prefix) {
        bail!(
            "RMM_NATS_SUBJECT_PREFIX {:?} is not one NATS subject token: use letters, digits, '-' or '_'",
            args.nats_subject_prefix
        );
    }
    Ok(Some(ClusterSettings {
        nats_url,
        node_id,
        creds: args.nats_creds.clone(),
        tls: args.nats_ca.is_some(),
        ca: args.nats_ca.clone(),
        subject_prefix: args.nats_subject_prefix.clone(),
        lease_ttl: Duration::from_secs(args.node_lease_secs.clamp(3, 300)),
        direct: direct_settings(args)?,
    }))
}

/// The cluster address, when set: one other nodes can connect to.
fn direct_settings(args: &ClusterArgs) -> anyhow::Result<Option<rmm_cluster::DirectSettings>> {
    let advertise = args
        .cluster_advertise
        .clone()
        .filter(|a| !a.trim().is_empty());
    let Some(listen) = args.cluster_listen else {
        if advertise.is_some() {
            bail!(
                "RMM_CLUSTER_ADVERTISE is set without RMM_CLUSTER_LISTEN: set the address to listen on too"
            );
        }
        return Ok(None);
    };
    if let Some(advertise) = &advertise
        && advertise
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        bail!("RMM_CLUSTER_ADVERTISE {advertise:?} is not HOST:PORT");
    }
    if listen.ip().is_unspecified() && advertise.is_none() {
        bail!(
            "RMM_CLUSTER_LISTEN {listen} listens on every address: set RMM_CLUSTER_ADVERTISE to the HOST:PORT other nodes reach this one at"
        );
    }
    Ok(Some(rmm_cluster::DirectSettings { listen, advertise }))
}

fn valid_subject_token(token: &str) -> bool {
    rmm_cluster::check_node_id(token).is_ok()
}

/// The node id generated on the first start in cluster mode, kept in the data folder.
fn kept_node_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) => Ok(id.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            data_folder(data_dir)?;
            // URL-safe base64: letters, digits, '-' and '_', as a node id may hold.
            let id = format!("node-{}", random_secret(9));
            write_private(&path, &id)?;
            tracing::info!(node = %id, path = %path.display(), "cluster mode: generated this node's id (set RMM_NODE_ID to choose it)");
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
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

/// With no users at all, creates `admin` and prints its password once. Returns the password
/// when it was generated here (so the demo's next steps can use it); `show_login` adds a curl
/// login line (the demo prints its own steps instead).
async fn first_run_admin<P: rmm_application::Ports>(
    app: &rmm_application::App<P>,
    password: Option<&str>,
    base_url: &str,
    show_login: bool,
) -> anyhow::Result<Option<String>> {
    if app.count_users().await? > 0 {
        return Ok(None);
    }
    let generated = password.is_none();
    let password = password.map_or_else(|| random_secret(18), str::to_owned);
    let admin = Username::parse(demo::ADMIN)?;
    app.create_user(None, admin, &password, Role::Admin)
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
             curl -s {base_url}/api/v1/auth/login -H 'content-type: application/json' \\\n        \
             -d '{{\"username\":\"admin\",\"password\":\"{password}\"}}'\n"
        );
    }
    Ok(Some(password))
}
