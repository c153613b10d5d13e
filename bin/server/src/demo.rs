//! `--demo-agent`: an agent registered here and run inside this process, connected to this
//! server over loopback like any other agent, so a newcomer can open a tunnel and run a
//! command right after the first start.
//!
//! Only the digest of an agent key is stored, so the demo key itself is kept in the data
//! folder ([`KEY_FILE`], mode 0600). When that file is gone but `demo` is still registered,
//! its key cannot be recovered and there is no port to rotate it: the demo registers a fresh
//! agent (`demo-2`, `demo-3`, ...) and says so; the old one stays listed, offline.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
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
            let digest = Argon2Credentials::default().digest_agent_key(text.trim());
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
    bail!("demo, demo-2 ... demo-{NAMES} are all registered already: start without --demo-agent")
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

/// The `rmm` CLI when it sits beside this program, as cargo builds the two (in
/// `target/<profile>/`) and as a release archive ships them; `None` when it is not there.
pub fn cli_beside_this_program() -> Option<PathBuf> {
    cli_beside(&std::env::current_exe().ok()?)
}

fn cli_beside(program: &Path) -> Option<PathBuf> {
    let cli = program
        .parent()?
        .join(format!("rmm{}", std::env::consts::EXE_SUFFIX));
    cli.is_file().then_some(cli)
}

/// `path` as one word of a POSIX shell command line: as is when it holds nothing the shell
/// would interpret, else single-quoted.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Copy-paste next steps; `password` is the first-run password when it was just made, `rmm`
/// the CLI's path when it is built (the steps name it by that path; without it they say how
/// to build it).
pub fn next_steps(
    addr: SocketAddr,
    agent: &DemoAgent,
    password: Option<&str>,
    rmm: Option<&Path>,
) -> String {
    let (name, id) = (agent.name.as_str(), agent.id);
    let (cli_intro, rmm) = match rmm {
        Some(path) => ("With the CLI:", shell_word(path)),
        None => (
            "With the CLI, which is not built beside this server: build it with\n  \
             `cargo build --release -p rmm-cli` (it lands in target/release/rmm) and use that\n  \
             path for `rmm` below:",
            "rmm".to_owned(),
        ),
    };
    // A password made just now goes in the steps; an older one was shown once and is
    // gone, so the CLI prompts for it and curl gets a placeholder.
    let cli_login = match password {
        Some(password) => {
            format!("echo '{password}' | {rmm} login --username admin --password-stdin")
        }
        None => format!("{rmm} login --username admin"),
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

  {cli_intro}

    export RMM_SERVER=http://{addr}
    {cli_login}
    {rmm} agents
    {rmm} exec {name} -- uname -a
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
mod tests;
