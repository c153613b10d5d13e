//! The soak (issue 17, point 5): a mixed workload on real `rmm-agent` processes for some
//! minutes — tunnel opens and closes, commands with output (checked byte for byte), uploads
//! and downloads (checked by content), cancelled commands, agents killed with SIGKILL and
//! started again — then the checks that nothing leaked: the server's gauges (`/metrics`)
//! back to their baseline, every session opened closed, the server's RSS within 10% of its
//! baseline, and every audit start (`tunnel_open`, `command`) with exactly one end.
//!
//! The baseline is taken after a warm-up (one of every operation, then a tenth of the run of
//! the mixed loop): the first operations fill pools and caches (database connections, the
//! allocator's arenas) that are meant to stay, and are not a leak. `scripts/soak.sh` starts the server and drives this.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rmm_agent_runtime::random_unit;
use serde::Serialize;
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::api::Api;
use crate::{procfs, reliability};

#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// http://127.0.0.1:PORT
    #[arg(long)]
    pub server: String,
    /// An admin's token.
    #[arg(long, env = "RMM_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The server's metrics, http://127.0.0.1:PORT/metrics (`RMM_METRICS_LISTEN`).
    #[arg(long)]
    pub metrics: String,
    #[arg(long)]
    pub server_pid: u32,
    /// The `rmm-agent` binary to run.
    #[arg(long)]
    pub agent_bin: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub agents: usize,
    /// How long the mixed loop runs, in seconds.
    #[arg(long, default_value_t = 1800)]
    pub secs: u64,
    /// A folder for the agents' logs, state and files.
    #[arg(long)]
    pub work: PathBuf,
    /// The database the server runs on, for the figure (`PostgreSQL`, `SQLite`).
    #[arg(long, default_value = "?")]
    pub database: String,
    /// The command that runs this check alone, for the reliability row.
    #[arg(long, default_value = "scripts/soak.sh")]
    pub reproduce: String,
}

/// What the loop did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    pub opens: u64,
    pub closes: u64,
    pub commands: u64,
    pub output_bytes: u64,
    pub cancels: u64,
    pub transfers: u64,
    pub transfer_bytes: u64,
    pub agent_kills: u64,
}

impl Counts {
    fn add(&mut self, o: &Self) {
        self.opens += o.opens;
        self.closes += o.closes;
        self.commands += o.commands;
        self.output_bytes += o.output_bytes;
        self.cancels += o.cancels;
        self.transfers += o.transfers;
        self.transfer_bytes += o.transfer_bytes;
        self.agent_kills += o.agent_kills;
    }
}

/// The server's state that must come back: gauges, RSS, descriptors, threads.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub sessions_open: f64,
    pub agents_tunnel: f64,
    pub agents_heartbeat: f64,
    pub rss_kib: u64,
    pub fds: usize,
    pub threads: u64,
}

/// The soak's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct SoakFigures {
    pub secs: f64,
    pub counts: Counts,
    pub baseline: Snapshot,
    pub after: Snapshot,
    pub sessions_checked: usize,
    pub audit_starts: usize,
    pub audit_ended: usize,
    pub failures: Vec<String>,
    pub load_at_start: String,
}

/// Runs the soak, prints its figures (JSON), records the reliability row when it passed.
///
/// # Errors
/// When it cannot be set up, or a check failed (the error says which).
pub async fn run(args: &SoakArgs) -> anyhow::Result<()> {
    let load_at_start = reliability::load_average();
    let api = Api::with_token(&args.server, &args.token)?;
    std::fs::create_dir_all(&args.work)
        .with_context(|| format!("cannot create {}", args.work.display()))?;
    let mut agents = Vec::with_capacity(args.agents);
    for i in 0..args.agents {
        let a = api.register_agent(&format!("soak-{i}")).await?;
        let mut agent = Agent::new(i, a.id, a.key, args);
        agent.start(&api).await?;
        agents.push(agent);
    }
    let api = Arc::new(api);
    eprintln!("soak: {} agents connected; warm-up round", agents.len());
    let mut sessions = Vec::new();
    let (agents, warm) = run_workers(&api, agents, Duration::ZERO, true).await;
    sessions.extend(warm.sessions);
    if let Some(e) = warm.failures.first() {
        bail!("the warm-up round failed: {e}");
    }
    // Then a tenth of the run (5 s to 2 min) of the mixed loop itself, so the baseline is
    // the warm server's, not one that has served five requests.
    let warm_up = Duration::from_secs((args.secs / 10).clamp(5, 120));
    let (agents, warm) = run_workers(&api, agents, warm_up, false).await;
    sessions.extend(warm.sessions);
    if let Some(e) = warm.failures.first() {
        bail!("the warm-up loop failed: {e}");
    }
    let baseline = settled(args, &api, &agents, None).await;
    eprintln!(
        "soak: baseline {baseline:?}; mixed loop for {} s",
        args.secs
    );
    let started = Instant::now();
    let (agents, soaked) = run_workers(&api, agents, Duration::from_secs(args.secs), false).await;
    let secs = started.elapsed().as_secs_f64();
    sessions.extend(soaked.sessions);
    let mut failures = soaked.failures;
    eprintln!("soak: loop done ({:?}); checking", soaked.counts);
    let after = settled(args, &api, &agents, Some(&baseline)).await;
    failures.extend(compare(&baseline, &after, args.agents));
    for s in &sessions {
        match session_status(&api, s).await {
            Ok(status) if status == "closed" => {}
            Ok(status) => failures.push(format!("session {s} is {status}, not closed")),
            Err(e) => failures.push(format!("session {s}: {e:#}")),
        }
    }
    let (audit_starts, audit_ended, unpaired) = audit_pairs(&api).await?;
    failures.extend(unpaired);
    drop(agents);
    let figures = SoakFigures {
        secs,
        counts: soaked.counts,
        baseline,
        after,
        sessions_checked: sessions.len(),
        audit_starts,
        audit_ended,
        failures,
        load_at_start,
    };
    println!("{}", serde_json::to_string_pretty(&figures)?);
    let figure = figure(&figures, args);
    if !figures.failures.is_empty() {
        bail!(
            "the soak failed ({}): {figure}",
            figures.failures.join("; ")
        );
    }
    eprintln!("soak: passed: {figure}");
    let check = format!(
        "soak: a mixed workload (opens, commands with output, uploads and downloads, cancels, agent SIGKILLs and restarts, closes) on {} real agents: afterwards no session, tunnel or connection left over, RSS within 10% of its baseline, every audit start with one end",
        args.agents
    );
    reliability::record("soak", &check, &figure, &args.reproduce)
}

fn figure(f: &SoakFigures, args: &SoakArgs) -> String {
    let c = &f.counts;
    let growth = (f.after.rss_kib as f64 / f.baseline.rss_kib.max(1) as f64 - 1.0) * 100.0;
    format!(
        "{:.1} min on {}, {} real agents: {} opens, {} closes, {} commands ({} MiB of output, every byte checked), {} cancels, {} uploads+downloads ({} MiB, content checked), {} agent SIGKILLs; after: {} sessions open (baseline {}), {} agents in a tunnel, {}/{} connected, {}/{} sessions closed; RSS {:.1} MiB vs baseline {:.1} MiB ({growth:+.1}%); {}/{} audit starts with one end; descriptors {} → {}, threads {} → {}; load {} at start",
        f.secs / 60.0,
        args.database,
        args.agents,
        c.opens,
        c.closes,
        c.commands,
        c.output_bytes / (1024 * 1024),
        c.cancels,
        c.transfers,
        c.transfer_bytes / (1024 * 1024),
        c.agent_kills,
        f.after.sessions_open,
        f.baseline.sessions_open,
        f.after.agents_tunnel,
        f.after.agents_heartbeat,
        args.agents,
        f.sessions_checked,
        f.sessions_checked,
        f.after.rss_kib as f64 / 1024.0,
        f.baseline.rss_kib as f64 / 1024.0,
        f.audit_ended,
        f.audit_starts,
        f.baseline.fds,
        f.after.fds,
        f.baseline.threads,
        f.after.threads,
        f.load_at_start,
    )
}

/// What must hold between the baseline and the end.
fn compare(baseline: &Snapshot, after: &Snapshot, agents: usize) -> Vec<String> {
    let mut failures = Vec::new();
    if after.sessions_open > baseline.sessions_open {
        failures.push(format!(
            "rmm_sessions_open is {} (baseline {})",
            after.sessions_open, baseline.sessions_open
        ));
    }
    if after.agents_tunnel > 0.0 {
        failures.push(format!("{} agents still in a tunnel", after.agents_tunnel));
    }
    if after.agents_heartbeat < agents as f64 {
        failures.push(format!(
            "{} of {agents} agents connected at the end",
            after.agents_heartbeat
        ));
    }
    if after.rss_kib as f64 > baseline.rss_kib as f64 * 1.10 {
        failures.push(format!(
            "RSS {} KiB, more than 10% over the baseline {} KiB",
            after.rss_kib, baseline.rss_kib
        ));
    }
    failures
}

/// The server's state once it has settled: gauges and RSS are polled (for up to 60 s) until
/// they are back within what `baseline` allows, or read once when there is no baseline yet.
async fn settled(
    args: &SoakArgs,
    api: &Api,
    agents: &[Agent],
    baseline: Option<&Snapshot>,
) -> Snapshot {
    let deadline = Instant::now() + Duration::from_secs(60);
    // Presence is flushed in batches and a closed session's cleanup runs after its answer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    loop {
        let now = snapshot(args, api).await;
        let good = baseline.is_none_or(|b| compare(b, &now, agents.len()).is_empty());
        if good || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn snapshot(args: &SoakArgs, api: &Api) -> Snapshot {
    let text = match api.http().get(&args.metrics).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let gauge = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let pid = args.server_pid;
    Snapshot {
        sessions_open: gauge("rmm_sessions_open "),
        agents_tunnel: gauge("rmm_agents_connected{mode=\"tunnel\"}"),
        agents_heartbeat: gauge("rmm_agents_connected{mode=\"heartbeat\"}"),
        rss_kib: procfs::rss_kib(pid).unwrap_or(0),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count),
        threads: std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0),
    }
}

async fn session_status(api: &Api, session: &str) -> anyhow::Result<String> {
    let r = api
        .http()
        .get(api.url(&format!("/api/v1/tunnel/status/{session}")))
        .bearer_auth(api.token())
        .send()
        .await?;
    let body: Value = r.json().await?;
    body["status"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("status without a status: {body}"))
}

/// Every `tunnel_open` and `command` entry of the audit log with exactly one end
/// (`tunnel_close` of the same session, `command_end` of the same command): how many starts,
/// how many of them ended so, and what is wrong.
async fn audit_pairs(api: &Api) -> anyhow::Result<(usize, usize, Vec<String>)> {
    let text = api
        .http()
        .get(api.url("/api/v1/audit/export?format=ndjson"))
        .bearer_auth(api.token())
        .timeout(Duration::from_secs(120))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    // (start, end) per session and per command.
    let mut pairs: HashMap<(char, String), (usize, usize)> = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let entry: Value = serde_json::from_str(line).context("an audit line is not JSON")?;
        let key = |field: &str| entry[field].as_str().unwrap_or("?").to_owned();
        let (slot, start) = match entry["event"].as_str() {
            Some("tunnel_open") => (('s', key("session_id")), true),
            Some("tunnel_close") => (('s', key("session_id")), false),
            Some("command") => (('c', key("command_id")), true),
            Some("command_end") => (('c', key("command_id")), false),
            _ => continue,
        };
        let counts = pairs.entry(slot).or_default();
        if start {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }
    let starts = pairs.values().map(|c| c.0).sum();
    let ended = pairs.values().filter(|c| *c == &(1, 1)).count();
    let wrong: Vec<String> = pairs
        .iter()
        .filter(|(_, c)| **c != (1, 1))
        .take(10)
        .map(|((kind, id), (s, e))| {
            let what = if *kind == 's' { "session" } else { "command" };
            format!("audit: {what} {id} has {s} starts and {e} ends")
        })
        .collect();
    Ok((starts, ended, wrong))
}

/// A real agent process.
struct Agent {
    index: usize,
    id: String,
    key: String,
    dir: PathBuf,
    server_ws: String,
    bin: PathBuf,
    child: Option<Child>,
}

impl Agent {
    fn new(index: usize, id: String, key: String, args: &SoakArgs) -> Self {
        Self {
            index,
            id,
            key,
            dir: args.work.join(format!("agent-{index}")),
            server_ws: args.server.replacen("http://", "ws://", 1),
            bin: args.agent_bin.clone(),
            child: None,
        }
    }

    /// Starts the process and waits until the server lists it as connected.
    async fn start(&mut self, api: &Api) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.dir.join("files"))
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))?;
        let child = Command::new(&self.bin)
            .env("RMM_SERVER", &self.server_ws)
            .env("RMM_AGENT_KEY", &self.key)
            .env("RMM_AGENT_STATE_DIR", self.dir.join("state"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        self.child = Some(child);
        wait_connected(api, &self.id).await
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

async fn wait_connected(api: &Api, agent: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let r = api
            .http()
            .get(api.url("/api/v1/agents"))
            .bearer_auth(api.token())
            .send()
            .await?;
        let list: Value = r.json().await?;
        let connected = list.as_array().is_some_and(|l| {
            l.iter()
                .any(|a| a["agent_id"] == agent && a["connected"] == true)
        });
        if connected {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("agent {agent} was not listed as connected within 30 s")
}

/// What a round of workers did.
struct Round {
    counts: Counts,
    sessions: Vec<String>,
    failures: Vec<String>,
}

/// One worker per agent, each running operations on its own agent until `length` has passed
/// (with `warm_up`, one of each operation instead); the agents come back for the next round.
async fn run_workers(
    api: &Arc<Api>,
    agents: Vec<Agent>,
    length: Duration,
    warm_up: bool,
) -> (Vec<Agent>, Round) {
    let deadline = Instant::now() + length;
    let mut tasks = tokio::task::JoinSet::new();
    for agent in agents {
        let api = Arc::clone(api);
        tasks.spawn(async move {
            let mut w = crate::soak::worker::Worker::new(agent);
            let result = w.run(&api, deadline, warm_up).await;
            (w, result)
        });
    }
    let mut round = Round {
        counts: Counts::default(),
        sessions: Vec::new(),
        failures: Vec::new(),
    };
    let mut agents = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((w, result)) => {
                if let Err(e) = result {
                    round
                        .failures
                        .push(format!("agent {}: {e:#}", w.agent.index));
                }
                round.counts.add(&w.counts);
                round.sessions.extend(w.sessions.iter().cloned());
                agents.push(w.agent);
            }
            Err(e) => round.failures.push(format!("a worker panicked: {e}")),
        }
    }
    agents.sort_by_key(|a| a.index);
    (agents, round)
}

/// A random whole number below `n`.
fn below(n: u64) -> u64 {
    ((random_unit() * n as f64) as u64).min(n.saturating_sub(1))
}

mod worker;
