//! `rmm-agent`: configuration (flags over environment over config file), telemetry and the
//! shutdown signal, handed to the agent runtime in `rmm_agent_runtime`.

use rmm_process as process;

mod enroll;
mod runtime;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use rmm_agent_runtime::{
    AgentConfig, AgentKey, AgentTimings, DEFAULT_PARTIAL_MAX_AGE, ProxyEnv, ProxyRoute, ServerUrl,
    run,
};
use serde::Deserialize;

/// What `rmm-agent --help` opens with: the program's purpose.
const ABOUT: &str = "rmm-agent: connects this machine to an rmm-server and serves technicians' \
                     tunnels: commands and file transfer.";

/// `--help` says how it runs, after the purpose.
const LONG_ABOUT: &str = "rmm-agent: connects this machine to an rmm-server and serves \
                          technicians' tunnels: commands and file transfer.\n\n\
                          It keeps one WebSocket to the server, sends a heartbeat with this \
                          machine's facts, and redials by itself when the connection is lost. \
                          Settings come from flags, then the environment, then the config file \
                          (--config).";

#[derive(Debug, Parser)]
#[command(name = "rmm-agent", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Server URL: ws://, wss://, or the server's http:// or https:// URL (the same as the rmm
    /// CLI's RMM_SERVER); /api/v1/agent/ws is appended.
    #[arg(long, env = "RMM_SERVER")]
    server: Option<String>,
    /// This agent's key, from `POST /api/v1/agents`. Prefer the env or the config file:
    /// command lines are visible to every local user.
    #[arg(long, env = "RMM_AGENT_KEY", hide_env_values = true)]
    key: Option<String>,
    /// TOML file with `server`, `key`, `heartbeat_secs`, `ca_file`, `command_timeout_secs`,
    /// `state_dir`, `partial_max_age_secs` (flags and env win).
    #[arg(long, env = "RMM_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// One connection attempt: exit non-zero if it fails or ends.
    #[arg(long)]
    once: bool,
    /// Seconds between heartbeats (default 30).
    #[arg(long, env = "RMM_AGENT_HEARTBEAT_SECS")]
    heartbeat_secs: Option<u64>,
    /// PEM file of extra CA certificates to trust for wss:// (self-signed servers).
    #[arg(long, env = "RMM_AGENT_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Seconds without any frame from the server before the socket is dropped and redialled.
    #[arg(long, env = "RMM_AGENT_READ_IDLE_SECS", default_value_t = 90)]
    read_idle_secs: u64,
    /// Largest delay between reconnection attempts, seconds.
    #[arg(long, env = "RMM_AGENT_BACKOFF_CAP_SECS", default_value_t = 60)]
    backoff_cap_secs: u64,
    /// Seconds after which a command is killed when the server's frame sets no timeout (a
    /// server without the timeout extension). Unset or 0: no agent-side default.
    #[arg(long, env = "RMM_AGENT_COMMAND_TIMEOUT_SECS")]
    command_timeout_secs: Option<u64>,
    /// Folder for the agent's own state (the journal of its uploads' partial files).
    /// Default: $STATE_DIRECTORY (systemd's StateDirectory=), else
    /// $XDG_STATE_HOME/rmm-agent or ~/.local/state/rmm-agent.
    #[arg(long, env = "RMM_AGENT_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Seconds an interrupted upload's partial file (.NAME.rmm-partial) is kept for a resume
    /// before the agent removes it (default 86400, a day).
    #[arg(long, env = "RMM_AGENT_PARTIAL_MAX_AGE_SECS")]
    partial_max_age_secs: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register this machine with an enrollment token and write the agent's config file
    /// (its own key, mode 0600); then run `rmm-agent --config PATH`.
    Enroll(enroll::EnrollArgs),
}

/// The config file. Unknown keys are errors: a typo must not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
    key: Option<String>,
    heartbeat_secs: Option<u64>,
    ca_file: Option<PathBuf>,
    command_timeout_secs: Option<u64>,
    state_dir: Option<PathBuf>,
    partial_max_age_secs: Option<u64>,
}

/// A user error (missing key, bad URL, unreadable config) or a failed `--once` ends with one
/// line, `rmm-agent: error: <cause>`, and a non-zero exit: never a backtrace.
fn main() -> ExitCode {
    // A command's supervisor (hidden): no runtime, no logging, just the command.
    #[cfg(target_os = "linux")]
    {
        use rmm_agent_runtime::supervise;
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        if args.first().is_some_and(|a| a == supervise::SUBCOMMAND) {
            let code = supervise::main(&args[1..]);
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
    }
    let cli = Cli::parse();
    if let Err(e) = runtime::init_logging("info") {
        return process::exit_code("rmm-agent", Err(e));
    }
    let result = runtime::build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(agent(cli)));
    process::exit_code("rmm-agent", result)
}

async fn agent(mut cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Enroll(args)) = cli.command.take() {
        return enroll::run(args).await;
    }
    let config = config(cli)?;
    // Commands die with this process, even when it is killed outright (exec/supervise.rs).
    #[cfg(target_os = "linux")]
    rmm_agent_runtime::supervise_commands_with("/proc/self/exe".into());
    if config.partial_journal.is_none() {
        tracing::info!(
            "no state folder (RMM_AGENT_STATE_DIR, $STATE_DIRECTORY or $HOME): partial files of interrupted uploads are not tracked and never removed"
        );
    }
    if let Some(warning) = plaintext_warning(&config.server) {
        tracing::warn!(server = %config.server, "{warning}");
    }
    run(config, process::shutdown_signal()).await?;
    Ok(())
}

fn config(cli: Cli) -> anyhow::Result<AgentConfig> {
    let file = match &cli.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    let Some(server) = cli.server.or(file.server) else {
        bail!(
            "no server URL: pass --server wss://host, set RMM_SERVER, or put `server = \"wss://host\"` in the config file (--config)"
        );
    };
    let Some(key) = cli.key.or(file.key) else {
        bail!(
            "no agent key: set RMM_AGENT_KEY, put `key = \"...\"` in the config file (--config), or pass --key"
        );
    };
    let server = ServerUrl::parse(&server)
        .context("invalid server URL (--server / RMM_SERVER / `server`)")?;
    let key = AgentKey::parse(&key).context("invalid agent key (--key / RMM_AGENT_KEY / `key`)")?;
    let heartbeat_secs = cli.heartbeat_secs.or(file.heartbeat_secs).unwrap_or(30);
    if heartbeat_secs == 0 {
        bail!("heartbeat_secs must be at least 1");
    }
    let mut config = AgentConfig::new(server, key);
    config.ca_file = cli.ca_file.or(file.ca_file);
    config.once = cli.once;
    config.command_timeout = cli
        .command_timeout_secs
        .or(file.command_timeout_secs)
        .filter(|&secs| secs > 0)
        .map(Duration::from_secs);
    config.proxy = ProxyRoute::choose(&proxy_env(), config.server.is_tls(), config.server.host())
        .context("invalid proxy setting (HTTPS_PROXY / HTTP_PROXY / ALL_PROXY)")?;
    config.partial_journal = cli
        .state_dir
        .or(file.state_dir)
        .or_else(default_state_dir)
        .map(|dir| dir.join(PARTIAL_JOURNAL));
    config.partial_max_age = cli
        .partial_max_age_secs
        .or(file.partial_max_age_secs)
        .map_or(DEFAULT_PARTIAL_MAX_AGE, |secs| {
            Duration::from_secs(secs.max(1))
        });
    config.timings = AgentTimings {
        heartbeat_interval: Duration::from_secs(heartbeat_secs),
        read_idle: Duration::from_secs(cli.read_idle_secs.max(1)),
        backoff_cap: Duration::from_secs(cli.backoff_cap_secs.max(1)),
        ..AgentTimings::default()
    };
    Ok(config)
}

/// The journal of partial files, in the state folder.
const PARTIAL_JOURNAL: &str = "partials.journal";

/// The state folder when none is configured: systemd's, else the XDG one of the user.
fn default_state_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("STATE_DIRECTORY")
        .or_else(|| var("XDG_STATE_HOME").map(|d| d.join("rmm-agent")))
        .or_else(|| var("HOME").map(|d| d.join(".local/state/rmm-agent")))
}

/// The proxy variables, lowercase before uppercase (as curl reads them).
fn proxy_env() -> ProxyEnv {
    let var = |lower: &str, upper: &str| {
        [lower, upper]
            .into_iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    };
    ProxyEnv {
        https: var("https_proxy", "HTTPS_PROXY"),
        http: var("http_proxy", "HTTP_PROXY"),
        all: var("all_proxy", "ALL_PROXY"),
        no_proxy: var("no_proxy", "NO_PROXY"),
    }
}

/// Plain ws:// beyond this machine sends the agent key and every command in clear text.
fn plaintext_warning(server: &ServerUrl) -> Option<&'static str> {
    (!server.is_tls() && !server.is_loopback()).then_some(
        "the server URL is plain ws:// (or http://) to another machine: the agent key and every \
         command and file travel unencrypted; use wss:// (or https://)",
    )
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let mut opened = std::fs::File::open(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut opened, &mut text)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let file: FileConfig =
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?;
    // The mode of the file read, not of whatever is at the path now.
    if let Ok(meta) = opened.metadata()
        && let Some(warning) = key_file_warning(path, &meta, file.key.is_some())
    {
        tracing::warn!(path = %path.display(), "{warning}");
    }
    Ok(file)
}

/// The key is a credential: a config file holding it should be readable by its owner only.
/// Such a file open to group or other users gets a warning naming the fix, not a refusal: an
/// agent that stopped after an upgrade would cut the technicians off the machine, and only the
/// administrators who wrote the file can fix it (deploy/rmm-agent.service shows the 0600 setup).
#[cfg(unix)]
fn key_file_warning(path: &Path, meta: &std::fs::Metadata, holds_key: bool) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o777;
    (holds_key && mode & 0o077 != 0).then(|| {
        format!(
            "the config file holds the agent key and is mode {mode:04o}, open to other users; \
             restrict it with `chmod 600 {}`",
            path.display()
        )
    })
}

#[cfg(not(unix))]
fn key_file_warning(_path: &Path, _meta: &std::fs::Metadata, _holds_key: bool) -> Option<String> {
    None
}

#[cfg(test)]
#[path = "main_tests.rs"]
mod tests;
