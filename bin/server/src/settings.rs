//! The command line: subcommands and settings (flags, each with its environment variable).

use std::net::SocketAddr;
use std::path::PathBuf;

use std::ffi::OsString;

use clap::builder::BoolishValueParser;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use rmm_http::client_addr::TrustedProxies;
use rmm_server::limits::FrontDoorSettings;

use crate::config_file;
use crate::console::UserCommand;

/// The command line over the config file's values (flag > environment > file > default).
/// Help, version and usage errors print and exit here, as clap does.
pub(crate) fn parse() -> anyhow::Result<Cli> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let mut command = Cli::command();
    if let Some(path) = config_file::named(&args) {
        command = config_file::apply(command, &path)?;
    }
    let matches = command
        .try_get_matches_from(args)
        .unwrap_or_else(|e| e.exit());
    Ok(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

/// rmm-server: the rmm tunnel server. Agents connect to it over WebSocket; technicians open
/// tunnels to them through its HTTP API (docs at /docs).
///
/// With no settings it keeps its SQLite database in the data folder and, on the first run,
/// creates the user `admin` and prints its password once. To try it on this machine:
/// `rmm-server --dev --demo-agent`.
#[derive(Debug, Parser)]
#[command(name = "rmm-server", version)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) settings: Settings,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage users on the server's database (a running server sees changes at once).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Write a consistent snapshot of the SQLite database to a new file, while the server
    /// runs (PostgreSQL: use pg_dump, see docs/deploy.md).
    Backup {
        /// The file to write; it must not exist.
        #[arg(long)]
        to: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(crate) struct Settings {
    /// Config file (TOML): keys are these settings' long flags in snake case; flags and
    /// environment variables win over it (docs/deploy.md, "Configuration").
    #[arg(long, env = "RMM_CONFIG", global = true)]
    pub(crate) config: Option<PathBuf>,
    /// The database: postgres://USER:PASSWORD@HOST/DB or sqlite://PATH; default: SQLite in
    /// the data folder (rmm.db).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// PostgreSQL: the longest a request waits for a database connection, milliseconds
    /// (opening one included). While the database is down, requests that need it answer 503
    /// `database_unavailable` after this long; keep it under 2000.
    #[arg(
        long,
        env = "RMM_DB_ACQUIRE_TIMEOUT_MS",
        default_value_t = 1000,
        global = true
    )]
    pub(crate) db_acquire_timeout_ms: u64,
    /// Address to listen on.
    #[arg(
        long,
        env = "RMM_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub(crate) listen: SocketAddr,
    /// Address to serve Prometheus metrics on, at /metrics (default: off). A listener of its
    /// own, plain HTTP with NO authentication: bind it to loopback or a private network.
    #[arg(long, env = "RMM_METRICS_LISTEN", global = true)]
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// HS256 secret for technicians' tokens, at least 32 bytes.
    #[arg(long, env = "RMM_JWT_SECRET", global = true, hide_env_values = true)]
    pub(crate) jwt_secret: Option<String>,
    /// Development mode: without RMM_JWT_SECRET, generate one and keep it in the data folder.
    #[arg(long, env = "RMM_DEV", global = true, value_parser = BoolishValueParser::new())]
    pub(crate) dev: bool,
    /// Demo: register an agent named `demo` and run it inside this server, connected to it, so a
    /// tunnel can be tried at once. It runs commands as the user running the server.
    #[arg(long, env = "RMM_DEMO_AGENT", global = true, value_parser = BoolishValueParser::new())]
    pub(crate) demo_agent: bool,
    /// Folder for the embedded database, the dev-mode secret and the demo agent's key.
    #[arg(long, env = "RMM_DATA_DIR", default_value = "data", global = true)]
    pub(crate) data_dir: PathBuf,
    /// Password for the `admin` user created on first run (default: random, printed once).
    #[arg(
        long,
        env = "RMM_ADMIN_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub(crate) admin_password: Option<String>,
    /// Seconds an open waits for the agent's tunnel_ready.
    #[arg(
        long,
        env = "RMM_OPEN_TIMEOUT_SECS",
        default_value_t = 10,
        global = true
    )]
    pub(crate) open_timeout_secs: u64,
    /// Seconds without activity after which a session is closed.
    #[arg(
        long,
        env = "RMM_IDLE_TIMEOUT_SECS",
        default_value_t = 1800,
        global = true
    )]
    pub(crate) idle_timeout_secs: u64,
    /// Default timeout of a command, seconds (a request may ask for up to 24 h).
    #[arg(
        long,
        env = "RMM_COMMAND_TIMEOUT_SECS",
        default_value_t = 300,
        global = true
    )]
    pub(crate) command_timeout_secs: u64,
    /// Output stored per stream of one command, bytes; beyond it output is streamed live but
    /// not stored, and the command is marked truncated.
    #[arg(long, env = "RMM_MAX_COMMAND_OUTPUT", default_value_t = 16 * 1024 * 1024, global = true)]
    pub(crate) max_command_output: u64,
    /// Command output the database refused, kept in memory to write again (all commands
    /// together), bytes; beyond it a stream's output is dropped and the command marked
    /// truncated.
    #[arg(long, env = "RMM_OUTPUT_SPOOL_BYTES", default_value_t = 16 * 1024 * 1024, global = true)]
    pub(crate) output_spool_bytes: u64,
    /// Pending or active tunnel sessions one user may hold at once; the next open answers
    /// 429 `too_many_sessions`.
    #[arg(
        long,
        env = "RMM_MAX_SESSIONS_PER_USER",
        default_value_t = 20,
        global = true
    )]
    pub(crate) max_sessions_per_user: u64,
    /// How long a terminal whose client's socket dropped waits for a reattach, seconds;
    /// then its process group is killed.
    #[arg(
        long,
        env = "RMM_TERMINAL_GRACE_SECS",
        default_value_t = 60,
        global = true
    )]
    pub(crate) terminal_grace_secs: u64,
    /// The largest terminal recording (asciicast bytes); then a marker and no more.
    #[arg(
        long,
        env = "RMM_RECORDING_MAX_BYTES",
        default_value_t = 64 * 1024 * 1024,
        global = true
    )]
    pub(crate) recording_max_bytes: u64,
    /// Lifetime of login tokens, seconds.
    #[arg(
        long,
        env = "RMM_TOKEN_TTL_SECS",
        default_value_t = 43_200,
        global = true
    )]
    pub(crate) token_ttl_secs: u64,
    /// Largest WebSocket message an agent may send, bytes (larger: close code 1009).
    #[arg(long, env = "RMM_MAX_AGENT_FRAME", default_value_t = 1024 * 1024, global = true)]
    pub(crate) max_agent_frame: usize,
    /// Seconds between pings to agents.
    #[arg(
        long,
        env = "RMM_PING_INTERVAL_SECS",
        default_value_t = 20,
        global = true
    )]
    pub(crate) ping_interval_secs: u64,
    /// Seconds without any frame from an agent after which its socket is dropped.
    #[arg(
        long,
        env = "RMM_AGENT_READ_IDLE_SECS",
        default_value_t = 60,
        global = true
    )]
    pub(crate) agent_read_idle_secs: u64,
    /// Milliseconds between presence flushes and idle checks.
    #[arg(
        long,
        env = "RMM_MAINTENANCE_INTERVAL_MS",
        default_value_t = 5000,
        global = true
    )]
    pub(crate) maintenance_interval_ms: u64,
    /// PEM certificate chain: serve HTTPS and WSS on --listen (with --tls-key). SIGHUP
    /// re-reads both files.
    #[arg(long, env = "RMM_TLS_CERT", global = true, requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "RMM_TLS_KEY", global = true, requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Reverse proxies (comma-separated addresses or CIDR ranges) whose X-Forwarded-For
    /// names the client: the right-most address in it that is not one of them.
    #[arg(long, env = "RMM_TRUSTED_PROXIES", default_value = "", global = true)]
    pub(crate) trusted_proxies: TrustedProxies,
    #[command(flatten)]
    pub(crate) front_door: FrontDoorSettings,
    #[command(flatten)]
    pub(crate) admission: rmm_server::admission::AdmissionSettings,
    #[command(flatten)]
    pub(crate) retention: RetentionSettings,
    #[command(flatten)]
    pub(crate) cluster: ClusterArgs,
}

/// Cluster mode (docs/deploy.md, "Cluster mode"): on when `RMM_NATS_URL` is set. Needs
/// PostgreSQL, shared by every node.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClusterArgs {
    /// Cluster mode: the NATS server(s) the nodes talk through, comma-separated
    /// (nats://HOST:4222, tls://HOST:4222). Unset: a single node, no NATS.
    #[arg(long, env = "RMM_NATS_URL", global = true, hide_env_values = true)]
    pub(crate) nats_url: Option<String>,
    /// Cluster mode: this node's id (letters, digits, '-', '_'; unique in the cluster, kept
    /// across restarts). Default: generated on the first start and kept in the data folder
    /// (node-id).
    #[arg(long, env = "RMM_NODE_ID", global = true)]
    pub(crate) node_id: Option<String>,
    /// Cluster mode: a NATS credentials file (user JWT and NKey seed), when NATS requires one.
    #[arg(long, env = "RMM_NATS_CREDS", global = true)]
    pub(crate) nats_creds: Option<PathBuf>,
    /// Cluster mode: a PEM file of CA certificates for NATS's TLS certificate (implies TLS).
    #[arg(long, env = "RMM_NATS_CA", global = true)]
    pub(crate) nats_ca: Option<PathBuf>,
    /// Cluster mode: the first token of every NATS subject the cluster uses.
    #[arg(
        long,
        env = "RMM_NATS_SUBJECT_PREFIX",
        default_value = "rmm",
        global = true
    )]
    pub(crate) nats_subject_prefix: String,
    /// Cluster mode: a node that has not renewed its lease for this long is lost; another
    /// node closes its sessions (`node_lost`), seconds.
    #[arg(long, env = "RMM_NODE_LEASE_SECS", default_value_t = 15, global = true)]
    pub(crate) node_lease_secs: u64,
    /// Cluster mode: this node's cluster address (HOST:PORT on the nodes' private network):
    /// other nodes connect here to reach its agents, with a one-time ticket they got over
    /// NATS. Unset: they reach it over NATS alone (slower; docs/deploy.md).
    #[arg(long, env = "RMM_CLUSTER_LISTEN", global = true)]
    pub(crate) cluster_listen: Option<std::net::SocketAddr>,
    /// Cluster mode: the address other nodes connect to for RMM_CLUSTER_LISTEN (HOST:PORT),
    /// when it is not the one listened on (0.0.0.0, NAT). Default: RMM_CLUSTER_LISTEN.
    #[arg(long, env = "RMM_CLUSTER_ADVERTISE", global = true)]
    pub(crate) cluster_advertise: Option<String>,
}

/// What the retention sweep prunes; unset keeps everything forever. Audit entries are never
/// pruned, and neither is a running command's output or a live terminal's recording.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct RetentionSettings {
    /// Prune the stored output of commands that ended longer ago than this, seconds (the
    /// command stays, its output reads as pruned).
    #[arg(long, env = "RMM_OUTPUT_RETENTION_SECS", global = true)]
    pub(crate) output_retention_secs: Option<u64>,
    /// Keep at most this many bytes of command output in all: beyond it the oldest ended
    /// commands' output is pruned first.
    #[arg(long, env = "RMM_OUTPUT_RETENTION_BYTES", global = true)]
    pub(crate) output_retention_bytes: Option<u64>,
    /// Prune the recordings of terminals that ended longer ago than this, seconds (the
    /// listing keeps them, marked pruned).
    #[arg(long, env = "RMM_RECORDING_RETENTION_SECS", global = true)]
    pub(crate) recording_retention_secs: Option<u64>,
    /// Seconds between retention sweeps.
    #[arg(
        long,
        env = "RMM_RETENTION_SWEEP_SECS",
        default_value_t = 3600,
        global = true
    )]
    pub(crate) retention_sweep_secs: u64,
}

impl RetentionSettings {
    /// The application's retention policy.
    pub(crate) fn policy(&self) -> rmm_application::Retention {
        rmm_application::Retention {
            output_age: self
                .output_retention_secs
                .map(std::time::Duration::from_secs),
            output_bytes: self.output_retention_bytes,
            recording_age: self
                .recording_retention_secs
                .map(std::time::Duration::from_secs),
        }
    }
}
