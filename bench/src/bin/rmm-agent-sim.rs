//! `rmm-agent-sim`: opens N authenticated agent connections to a running `rmm-server`, ramps
//! to N at a chosen rate, holds them for a measurement window, and reports the connect rate,
//! the server's memory per connected agent and CPU (from `/proc/<server pid>`), and the
//! heartbeat round trip at that load (WebSocket ping/pong on a sample of connections: the
//! protocol has no heartbeat acknowledgement).
//!
//! `--register N --admin-token T` registers N agents through the API and writes their keys
//! to `--keys-file` instead.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use rmm_bench::api::Api;
use rmm_bench::measure::{self, Figures, Measurement, Part, SimFigures, StormFigures};
use rmm_bench::sim::{
    Fleet, SimOptions, Target, parse_bind_ips, read_keys, register_many, write_keys,
};
use rmm_bench::{limits, procfs};

/// Simulated rmm agents, for load measurements against a loopback server.
#[derive(Debug, Parser)]
#[command(name = "rmm-agent-sim", version, about)]
struct Cli {
    /// The server, ws://127.0.0.x:PORT (loopback only).
    #[arg(long)]
    server: String,
    /// Agent connections to open.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Keys, one `agent_id<TAB>agent_key` per line (written by --register).
    #[arg(long)]
    keys_file: PathBuf,
    /// Seconds between heartbeats of each agent.
    #[arg(long, default_value_t = 30)]
    heartbeat_secs: u64,
    /// New connections per second while ramping.
    #[arg(long, default_value_t = 1000.0)]
    ramp_per_sec: f64,
    /// Source addresses, e.g. 127.0.0.1-127.0.0.20: each gives ~28k ephemeral ports.
    #[arg(long, default_value = "127.0.0.1-127.0.0.20")]
    bind_ips: String,
    /// The server's process id, to read its memory and CPU from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds to hold every connection at full load while measuring.
    #[arg(long, default_value_t = 30)]
    hold_secs: u64,
    /// Connections that measure round trips with WebSocket pings.
    #[arg(long, default_value_t = 1000)]
    ping_sample: usize,
    /// Milliseconds between the pings of one sampled connection.
    #[arg(long, default_value_t = 1000)]
    ping_every_ms: u64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Give up on connections still not up this many seconds after the start.
    #[arg(long, default_value_t = 900)]
    max_ramp_secs: u64,
    /// Register N agents through the API, write their keys to --keys-file, and exit.
    #[arg(long, value_name = "N")]
    register: Option<usize>,
    /// An admin's token, for --register.
    #[arg(long, env = "RMM_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Measure a server restart with the fleet connected: after the windows, write
    /// DIR/ready, then time until every agent is back; whoever restarts the server writes
    /// the new server's pid and the signal used (`PID SIGNAL`) to DIR/restarted.
    #[arg(long)]
    storm_dir: Option<PathBuf>,
    /// Seconds the agents have to come back after a restart.
    #[arg(long, default_value_t = 120)]
    storm_deadline_secs: u64,
    /// The report part the row belongs to (`cluster`: a fleet over a cluster's nodes).
    #[arg(long, value_enum, default_value = "sim")]
    part: Part,
    /// Write the measurement (JSON) here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The row's name in the report (default: `N agents`); `bench/run.sh` names the run
    /// against the bare peer (`rmm-bench bare-ws`) with [`rmm_bench::report::SIM_PEER`].
    #[arg(long)]
    name: Option<String>,
}

/// Sockets the process needs besides the agents' (stdio, the runtime, the API client).
const SPARE_FDS: u64 = 256;
/// Descriptors the server needs besides its agents' sockets (database, listener, logs).
const SERVER_SPARE_FDS: u64 = 128;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let target = Target::parse(&cli.server)?;
    if let Some(n) = cli.register {
        return register(&cli, &target, n).await;
    }
    let figures = run(&cli, target).await?;
    let m = Measurement {
        part: cli.part,
        name: cli
            .name
            .clone()
            .unwrap_or_else(|| format!("{} agents", cli.agents)),
        command: command_line(),
        figures: Figures::Sim(Box::new(figures)),
    };
    println!("{}", serde_json::to_string_pretty(&m)?);
    if let Some(out) = &cli.out {
        measure::write(out, &m)?;
    }
    Ok(())
}

fn command_line() -> String {
    rmm_bench::report::shorten_paths(&std::env::args().collect::<Vec<_>>().join(" "))
}

async fn register(cli: &Cli, target: &Target, n: usize) -> anyhow::Result<()> {
    let token = cli
        .admin_token
        .as_deref()
        .context("--register needs --admin-token (or RMM_ADMIN_TOKEN)")?;
    let api = Api::with_token(&format!("http://{}", target.addr), token)?;
    let started = std::time::Instant::now();
    let keys = register_many(&api, "sim", n, 16).await?;
    write_keys(&cli.keys_file, &keys)?;
    eprintln!(
        "registered {n} agents in {:.1} s; keys in {}",
        started.elapsed().as_secs_f64(),
        cli.keys_file.display()
    );
    Ok(())
}

async fn run(cli: &Cli, target: Target) -> anyhow::Result<SimFigures> {
    let mut notes = Vec::new();
    let wanted = u64::try_from(cli.agents).unwrap_or(u64::MAX);
    let mut usable = cli.agents;
    let nofile = limits::raise_nofile(wanted + SPARE_FDS).context("reading RLIMIT_NOFILE")?;
    if !nofile.enough {
        usable = usable.min(usize::try_from(nofile.soft.saturating_sub(SPARE_FDS)).unwrap_or(0));
        let note = format!(
            "the simulator's open-file limit is {} (hard {}; raising the hard limit needs CAP_SYS_RESOURCE, which this process lacks): at most {usable} of the {} agents asked for could be simulated",
            nofile.soft, nofile.hard, cli.agents
        );
        eprintln!("rmm-agent-sim: {note}");
        notes.push(note);
    }
    let server_nofile = match cli.server_pid {
        Some(pid) => procfs::max_open_files(pid).ok().flatten(),
        None => None,
    };
    if let Some(limit) = server_nofile
        && limit < wanted + SERVER_SPARE_FDS
    {
        usable = usable.min(usize::try_from(limit.saturating_sub(SERVER_SPARE_FDS)).unwrap_or(0));
        let note = format!(
            "the server's open-file limit is {limit}, too low for {} agents: {usable} were connected. Start the server with a higher `ulimit -n` (its hard limit, raised only with CAP_SYS_RESOURCE, bounds it)",
            cli.agents
        );
        eprintln!("rmm-agent-sim: {note}");
        notes.push(note);
    }
    let mut keys = read_keys(&cli.keys_file)?;
    if keys.len() < usable {
        bail!(
            "{} holds {} keys, fewer than the {usable} agents to simulate: register more with --register {usable}",
            cli.keys_file.display(),
            keys.len(),
        );
    }
    keys.truncate(usable);
    let bind_ips = parse_bind_ips(&cli.bind_ips)?;
    let ports_per_ip = 28_000;
    if keys.len() > bind_ips.len() * ports_per_ip {
        eprintln!(
            "rmm-agent-sim: {} source addresses give about {} ephemeral ports, fewer than {} agents: pass a wider --bind-ips range",
            bind_ips.len(),
            bind_ips.len() * ports_per_ip,
            keys.len()
        );
    }
    let opts = SimOptions {
        target,
        heartbeat: Duration::from_secs(cli.heartbeat_secs.max(1)),
        bind_ips,
        ramp_per_sec: cli.ramp_per_sec,
        max_in_flight: cli.max_in_flight,
        ping_sample: cli.ping_sample,
        ping_every: Duration::from_millis(cli.ping_every_ms.max(10)),
        connect_timeout: Duration::from_secs(30),
    };
    let pid = cli.server_pid;
    let rss = |pid: Option<u32>| pid.and_then(|p| procfs::rss_kib(p).ok()).unwrap_or(0);
    let ticks = |pid: Option<u32>| pid.and_then(|p| procfs::cpu_ticks(p).ok()).unwrap_or(0);
    let rss_baseline = rss(pid);
    let cpu_before_ramp = ticks(pid);
    let requested = keys.len();
    eprintln!(
        "rmm-agent-sim: connecting {requested} agents at {}/s from {} source addresses",
        cli.ramp_per_sec,
        opts.bind_ips.len()
    );
    let ramp_started = std::time::Instant::now();
    let fleet = Fleet::start(&opts, keys);
    let ramp = fleet
        .wait_ramped(Duration::from_secs(cli.max_ramp_secs), |c| {
            eprintln!(
                "rmm-agent-sim: {} connected, {} failed",
                c.connected, c.failed
            );
        })
        .await;
    let cpu_after_ramp = ticks(pid);
    let ramp_wall = ramp_started.elapsed().as_secs_f64();
    eprintln!(
        "rmm-agent-sim: {} of {} connected in {:.1} s ({:.0}/s), {} failed",
        ramp.connected, ramp.requested, ramp.secs, ramp.rate_per_s, ramp.failed
    );
    if let Some(e) = fleet.first_error() {
        eprintln!("rmm-agent-sim: first connection failure: {e}");
        notes.push(format!("first connection failure: {e}"));
    }
    // Let start-up work (first heartbeats, presence flushes) settle before measuring.
    // Idle first: heartbeats only, no pings from the sample.
    fleet.set_pinging(false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = Duration::from_secs(cli.hold_secs.max(1));
    let cpu_start = ticks(pid);
    let window_started = std::time::Instant::now();
    tokio::time::sleep(window).await;
    let window_secs = window_started.elapsed().as_secs_f64();
    let cpu_end = ticks(pid);
    let rss_loaded = rss(pid);
    let counts = fleet.counts();
    // Then the round trips, with the sample pinging.
    fleet.set_pinging(true);
    let rtt_window = window.min(Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_ping_start = ticks(pid);
    fleet.set_measuring(true);
    let rtt_started = std::time::Instant::now();
    tokio::time::sleep(rtt_window).await;
    fleet.set_measuring(false);
    let rtt_secs = rtt_started.elapsed().as_secs_f64();
    let cpu_ping_end = ticks(pid);
    let rtts = fleet.take_rtts();
    let storm = match &cli.storm_dir {
        Some(dir) => Some(storm(&fleet, dir, Duration::from_secs(cli.storm_deadline_secs)).await?),
        None => None,
    };
    if let Some(why) = fleet.first_drop().filter(|_| counts.dropped > 0) {
        notes.push(format!(
            "{} connections ended early; the first because: {why}",
            counts.dropped
        ));
    }
    let (handshake_p50_ms, handshake_p99_ms) = measure::p50_p99_ms(&fleet.handshakes());
    let (rtt_p50_ms, rtt_p99_ms) = measure::p50_p99_ms(&rtts);
    eprintln!("rmm-agent-sim: closing connections");
    fleet.stop(Duration::from_secs(20)).await;
    let cpu_pct = |ticks: u64, secs: f64| {
        if secs > 0.0 {
            ticks as f64 / procfs::TICKS_PER_SEC / secs * 100.0
        } else {
            0.0
        }
    };
    if pid.is_none() {
        notes.push("no --server-pid: server memory and CPU were not measured".into());
    }
    Ok(SimFigures {
        requested: cli.agents,
        connected: ramp.connected,
        failed: ramp.failed,
        dropped: counts.dropped,
        bind_ips: opts.bind_ips.len(),
        ramp_per_sec: cli.ramp_per_sec,
        connect_secs: ramp.secs,
        connect_rate_per_s: ramp.rate_per_s,
        handshake_p50_ms,
        handshake_p99_ms,
        heartbeat_secs: cli.heartbeat_secs,
        window_secs,
        server_rss_baseline_kib: rss_baseline,
        server_rss_loaded_kib: rss_loaded,
        server_rss_per_agent_kib: if counts.live > 0 {
            rss_loaded.saturating_sub(rss_baseline) as f64 / counts.live as f64
        } else {
            0.0
        },
        server_cpu_ramp_pct: cpu_pct(cpu_after_ramp.saturating_sub(cpu_before_ramp), ramp_wall),
        server_cpu_window_pct: cpu_pct(cpu_end.saturating_sub(cpu_start), window_secs),
        rtt_samples: rtts.len(),
        rtt_p50_ms,
        rtt_p99_ms,
        rtt_method: format!(
            "WebSocket ping/pong from {} sampled connections, one ping each every {} ms (the protocol has no heartbeat acknowledgement)",
            cli.ping_sample.min(requested),
            cli.ping_every_ms
        ),
        server_nofile_limit: server_nofile,
        notes,
        server_cpu_pinging_pct: Some(cpu_pct(
            cpu_ping_end.saturating_sub(cpu_ping_start),
            rtt_secs,
        )),
        storm,
    })
}

/// The restart: waits for the first lost connection after DIR/ready, reads the new server
/// from DIR/restarted, and times until every agent connected before is connected again.
async fn storm(fleet: &Fleet, dir: &Path, deadline: Duration) -> anyhow::Result<StormFigures> {
    let before = fleet.counts();
    std::fs::write(dir.join("ready"), b"ready\n").context("writing the storm's ready file")?;
    eprintln!(
        "rmm-agent-sim: {} agents connected; waiting for the server's restart",
        before.live
    );
    let waited = std::time::Instant::now();
    while fleet.counts().dropped == before.dropped {
        if waited.elapsed() > Duration::from_secs(60) {
            bail!("no connection was lost within 60 s of asking for the restart");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let lost_at = fleet.now_secs();
    let restarted = dir.join("restarted");
    let (pid, signal) = loop {
        if let Ok(text) = std::fs::read_to_string(&restarted)
            && let Some((pid, signal)) = text.trim().split_once(' ')
        {
            break (
                pid.parse::<u32>().context("the restarted server's pid")?,
                signal.to_owned(),
            );
        }
        if waited.elapsed() > Duration::from_secs(120) {
            bail!(
                "the server was not restarted within 120 s ({} missing)",
                restarted.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let restart_secs = fleet.now_secs() - lost_at;
    let mut peak = 0;
    let mut all_back_secs = None;
    let mut last_report = std::time::Instant::now();
    loop {
        let c = fleet.counts();
        peak = peak.max(procfs::rss_kib(pid).unwrap_or(0));
        if c.live >= before.live {
            all_back_secs = Some(fleet.last_connect_secs() - lost_at);
            break;
        }
        if fleet.now_secs() - lost_at > deadline.as_secs_f64() {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "rmm-agent-sim: {} of {} back, {} answered 503",
                c.live,
                before.live,
                c.busy - before.busy
            );
            last_report = std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = fleet.counts();
    let up_secs = fleet.now_secs() - lost_at - restart_secs;
    let cpu = procfs::cpu_ticks(pid).unwrap_or(0) as f64 / procfs::TICKS_PER_SEC;
    let figures = StormFigures {
        signal,
        agents: before.live,
        back: c.live,
        all_back_secs,
        restart_secs,
        deadline_secs: deadline.as_secs_f64(),
        busy: c.busy - before.busy,
        failed_dials: (c.failed - before.failed) as u64,
        rejected: c.rejected - before.rejected,
        server_peak_rss_kib: peak,
        server_cpu_pct: if up_secs > 0.0 {
            cpu / up_secs * 100.0
        } else {
            0.0
        },
    };
    eprintln!("rmm-agent-sim: storm: {figures:?}");
    Ok(figures)
}
