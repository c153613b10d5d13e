//! `rmm-bench`: the in-process measurements of the benchmark suite and its helpers, driven by
//! `bench/run.sh`. Each measuring subcommand writes one JSON [`Measurement`] per row to the
//! results folder; `report` renders the folder as BENCHMARKS.md.
//!
//! The OpenSSH baselines and the `rmm` CLI are measured by `time-cmd`, which runs an external
//! command repeatedly and times each run from spawn to exit, so both sides of a comparison
//! pay the same process start-up.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt as _;
use rmm_bench::api::{Api, UnexpectedStatus};
use rmm_bench::measure::{
    self, Figures, Latency, Measurement, OpensFigures, Part, SingleOpens, Throughput,
};
use rmm_bench::report::{self, ReportInputs};
use rmm_bench::sim::{Fleet, Target, register_many};
use rmm_bench::terminal;
use rmm_protocol::{AgentMessage, TunnelDataPayload};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

/// Benchmarks of the rmm tunnel (see bench/run.sh, which runs them all).
#[derive(Debug, Parser)]
#[command(name = "rmm-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in and print the token.
    Token {
        #[arg(long)]
        server: String,
        #[arg(long, default_value = "admin")]
        username: String,
        #[arg(long, env = "RMM_BENCH_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Register an agent and print `agent_id<TAB>agent_key`.
    Register {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        name: String,
    },
    /// Print a free TCP port on 127.0.0.1.
    FreePort,
    /// Wait until the agent is listed as connected, at most --timeout-secs.
    WaitAgent {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        agent_id: String,
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
    },
    /// Wait until URL answers 200 (GET), at most --timeout-secs.
    WaitHttp {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Run an external command repeatedly and time each run (latency), or time it moving
    /// bytes (throughput: --count-stdout or --bytes).
    TimeCmd(TimeCmd),
    /// Command round trip through the HTTP API: POST .../command, then GET ...?wait=.
    Roundtrip(Roundtrip),
    /// Output throughput: `cat FILE` on the agent, read from the session stream WebSocket.
    Stream(StreamArgs),
    /// File transfer throughput: PUT and GET .../files.
    Files(FilesArgs),
    /// Tunnel opens and closes per second, with simulated agents answering tunnel_open.
    Opens(OpensArgs),
    /// Keystroke echo round trip through a terminal's WebSocket (a PTY running `cat` raw).
    TermEcho(TermEchoArgs),
    /// Keystroke echo round trip through a command's stdin and stdout (the `ssh -tt` peer).
    EchoCmd(EchoCmdArgs),
    /// Output throughput: `cat FILE` on a terminal, read from its WebSocket.
    TermCat(TermCatArgs),
    /// The idle agent: its VmRSS after --settle-secs, its binary's size, and the summed VmRSS
    /// of --sshd-pids (an idle ssh connection's sshd processes), as one row.
    AgentIdle {
        #[arg(long)]
        pid: u32,
        #[arg(long)]
        binary: PathBuf,
        #[arg(long, default_value_t = 5)]
        settle_secs: u64,
        #[arg(long, default_value_t = 10)]
        samples: usize,
        /// Comma-separated; empty: no sshd in this run.
        #[arg(long, default_value = "")]
        sshd_pids: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// The idle fleet's peer: a bare agent WebSocket server on the server's stack (decode,
    /// ping on the grid, nothing else), for `--sim` to run the same fleet against. Runs until
    /// killed.
    BareWs {
        /// 127.0.0.1:PORT
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Seconds between pings to each connection (rmm-server's default: 20).
        #[arg(long, default_value_t = 20)]
        ping_secs: u64,
    },
    /// Record that a part could not run, and why.
    NotAvailable {
        #[arg(long, value_enum)]
        part: Part,
        #[arg(long)]
        name: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Render a results folder as markdown (BENCHMARKS.md).
    Report(ReportArgs),
    /// The watcher storm: many session streams over simulated agents writing known output,
    /// every byte checked; some stop reading and must be closed as too slow (a reliability
    /// check: exits 1 when it fails).
    Watchers(rmm_bench::watchers::WatchersArgs),
    /// Cluster mode: how long until one node lists a fleet connected through the balancer,
    /// and how it spread over the nodes (agents, memory).
    ClusterFleet(rmm_bench::cluster_fleet::FleetArgs),
    /// Judge the restart storm of `bench/run.sh --sim` against its target (a reliability
    /// check: exits 1 when it fails).
    StormCheck(rmm_bench::storm_check::StormCheckArgs),
    /// The soak: a mixed workload on real agents for some minutes, then the checks that
    /// nothing leaked (a reliability check: exits 1 when it fails).
    Soak(rmm_bench::soak::SoakArgs),
    /// Exit 1 unless every part in --parts left a row of ours (not an OpenSSH baseline) with
    /// figures in --results: the smoke test's only assertion.
    Check {
        #[arg(long)]
        results: PathBuf,
        /// Comma-separated parts, e.g. roundtrip,stream.
        #[arg(long)]
        parts: String,
    },
}

/// The server and the technician's token.
#[derive(Debug, Args)]
struct Conn {
    /// http://127.0.0.1:PORT
    #[arg(long)]
    server: String,
    #[arg(long, env = "RMM_TOKEN", hide_env_values = true)]
    token: String,
}

impl Conn {
    fn api(&self) -> anyhow::Result<Api> {
        Api::with_token(&self.server, &self.token)
    }
}

#[derive(Debug, Args)]
struct TimeCmd {
    #[arg(long, value_enum)]
    part: Part,
    #[arg(long)]
    name: String,
    #[arg(long, default_value_t = 100)]
    iterations: usize,
    /// Untimed runs first (connections, caches).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Stop early after this many seconds.
    #[arg(long, default_value_t = 300)]
    max_secs: u64,
    /// Throughput: count the bytes the command writes to stdout.
    #[arg(long)]
    count_stdout: bool,
    /// Throughput: the command moves this many bytes (e.g. scp of a file of that size).
    #[arg(long)]
    bytes: Option<u64>,
    /// With --count-stdout: a run whose stdout is not this many bytes failed.
    #[arg(long)]
    expect_bytes: Option<u64>,
    #[arg(long)]
    out: PathBuf,
    /// Add these runs to the throughput row already in --out.
    #[arg(long)]
    append: bool,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct Roundtrip {
    #[command(flatten)]
    conn: Conn,
    #[arg(long)]
    agent_id: String,
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[arg(long, default_value_t = 300)]
    max_secs: u64,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct StreamArgs {
    #[command(flatten)]
    conn: Conn,
    #[arg(long)]
    agent_id: String,
    /// The file the agent cats (its size is read here: agent and bench share the machine).
    #[arg(long)]
    file: PathBuf,
    #[arg(long, default_value_t = 1)]
    runs: usize,
    #[arg(long)]
    out: PathBuf,
    /// Add these runs to the row already in --out.
    #[arg(long)]
    append: bool,
}

#[derive(Debug, Args)]
struct FilesArgs {
    #[command(flatten)]
    conn: Conn,
    #[arg(long)]
    agent_id: String,
    /// The file to upload.
    #[arg(long)]
    local: PathBuf,
    /// Where the agent writes it (absolute), and reads it back from.
    #[arg(long)]
    remote: String,
    /// Where the download is written.
    #[arg(long)]
    download_to: PathBuf,
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Folder for the two result files (upload, download).
    #[arg(long)]
    out_dir: PathBuf,
    /// Add these runs to the rows already in --out-dir.
    #[arg(long)]
    append: bool,
}

#[derive(Debug, Args)]
struct OpensArgs {
    #[command(flatten)]
    conn: Conn,
    /// Simulated agents to register and connect.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Technicians opening and closing at once (each on its own agents).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Stop after this many open+close pairs.
    #[arg(long, default_value_t = 1_000_000)]
    max_pairs: usize,
    /// Then this many opens one at a time (each closed untimed), for the open's latency alone.
    #[arg(long, default_value_t = 300)]
    single: usize,
    /// The database, for the report: sqlite or postgres.
    #[arg(long)]
    backend: String,
    /// The server's process id, to report its CPU over the run.
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct TermEchoArgs {
    #[command(flatten)]
    conn: Conn,
    #[arg(long)]
    agent_id: String,
    #[arg(long, default_value_t = 1000)]
    iterations: usize,
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct EchoCmdArgs {
    #[arg(long)]
    name: String,
    #[arg(long, default_value_t = 1000)]
    iterations: usize,
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
    #[arg(long)]
    out: PathBuf,
    /// The command; it must print `R` once its PTY is raw, then echo each byte once.
    #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct TermCatArgs {
    #[command(flatten)]
    conn: Conn,
    #[arg(long)]
    agent_id: String,
    /// The file the terminal cats (read here too: agent and bench share the machine).
    #[arg(long)]
    file: PathBuf,
    #[arg(long, default_value_t = 1)]
    runs: usize,
    #[arg(long)]
    out: PathBuf,
    /// Add these runs to the row already in --out.
    #[arg(long)]
    append: bool,
}

#[derive(Debug, Args)]
struct ReportArgs {
    #[arg(long)]
    results: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// The command that produced the results.
    #[arg(long)]
    command: String,
    /// The sizes used, in words.
    #[arg(long)]
    sizes: String,
    /// release or debug.
    #[arg(long, default_value = "release")]
    profile: String,
    #[arg(long, default_value = "")]
    ssh_version: String,
    /// The load average when the run started (other work on the machine skews figures).
    #[arg(long, default_value = "")]
    load: String,
    /// Hand-written analysis appended to the report (kept across regenerations).
    #[arg(long)]
    notes: Option<PathBuf>,
    /// Merge into the report already at --out: only the sections and target rows of
    /// --parts are replaced, the others kept (a run of some parts).
    #[arg(long, requires = "parts")]
    merge: bool,
    /// The parts this run measured, comma-separated (e.g. terminal).
    #[arg(long)]
    parts: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Token {
            server,
            username,
            password,
        } => {
            let api = Api::login(&server, &username, &password).await?;
            println!("{}", api.token());
        }
        Command::Register { conn, name } => {
            let agent = conn.api()?.register_agent(&name).await?;
            println!("{}\t{}", agent.id, agent.key);
        }
        Command::FreePort => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", listener.local_addr()?.port());
        }
        Command::BareWs { listen, ping_secs } => {
            rmm_bench::bare_ws::serve(listen, Duration::from_secs(ping_secs.max(1))).await?;
        }
        Command::WaitHttp { url, timeout_secs } => wait_http(&url, timeout_secs).await?,
        Command::WaitAgent {
            conn,
            agent_id,
            timeout_secs,
        } => wait_agent(&conn.api()?, &agent_id, timeout_secs).await?,
        Command::TimeCmd(args) => time_cmd(args).await?,
        Command::Roundtrip(args) => roundtrip(args).await?,
        Command::Stream(args) => stream(args).await?,
        Command::Files(args) => files(args).await?,
        Command::Opens(args) => opens(args).await?,
        Command::TermEcho(args) => term_echo(args).await?,
        Command::EchoCmd(args) => echo_cmd(args).await?,
        Command::TermCat(args) => term_cat(args).await?,
        Command::AgentIdle {
            pid,
            binary,
            settle_secs,
            samples,
            sshd_pids,
            out,
        } => agent_idle(pid, &binary, settle_secs, samples, &sshd_pids, &out).await?,
        Command::NotAvailable {
            part,
            name,
            reason,
            out,
        } => {
            let m = Measurement {
                part,
                name,
                command: String::new(),
                figures: Figures::NotAvailable { reason },
            };
            emit(&out, &m)?;
        }
        Command::Report(args) => {
            let rows = measure::read_dir(&args.results)?;
            let notes = match &args.notes {
                Some(path) if path.exists() => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                ),
                Some(_) | None => None,
            };
            let text = report::render(&ReportInputs {
                rows: &rows,
                command: &args.command,
                sizes: &args.sizes,
                profile: &args.profile,
                ssh_version: &args.ssh_version,
                load: &args.load,
                machine: rmm_bench::procfs::machine(),
                date: chrono::Utc::now(),
                notes: notes.as_deref(),
            });
            let text = match (args.merge, std::fs::read_to_string(&args.out)) {
                (true, Ok(old)) => {
                    let parts = parse_parts(args.parts.as_deref().unwrap_or_default())?;
                    eprintln!(
                        "merging the figures of {} into {}",
                        args.parts.as_deref().unwrap_or_default(),
                        args.out.display()
                    );
                    report::merge::merge(&old, &text, &parts)
                }
                (true, Err(_)) | (false, _) => text,
            };
            std::fs::write(&args.out, text)
                .with_context(|| format!("cannot write {}", args.out.display()))?;
            eprintln!("wrote {}", args.out.display());
        }
        Command::Check { results, parts } => check(&results, &parts)?,
        Command::Watchers(args) => rmm_bench::watchers::run(&args).await?,
        Command::ClusterFleet(args) => rmm_bench::cluster_fleet::run(&args).await?,
        Command::StormCheck(args) => rmm_bench::storm_check::run(&args)?,
        Command::Soak(args) => rmm_bench::soak::run(&args).await?,
    }
    Ok(())
}

/// Writes a row and echoes it as one line on stderr.
fn emit(out: &Path, m: &Measurement) -> anyhow::Result<()> {
    emit_appending(out, m, false)
}

/// As [`emit`]; with `append`, merges the runs into the row already in `out`.
fn emit_appending(out: &Path, m: &Measurement, append: bool) -> anyhow::Result<()> {
    let written = measure::write_appending(out, m, append)?;
    eprintln!("{}", report::one_line(&written));
    Ok(())
}

/// The command line as shown in the report: the work folder as `$WORK`, paths in the
/// repository relative to it.
fn shown(command: &str) -> String {
    rmm_bench::report::shorten_paths(command)
}

async fn wait_http(url: &str, timeout_secs: u64) -> anyhow::Result<()> {
    let http = rmm_bench::api::http_client()?;
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(url).timeout(Duration::from_secs(2)).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{url} did not answer 200 within {timeout_secs} s")
}

async fn wait_agent(api: &Api, agent_id: &str, timeout_secs: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    while Instant::now() < deadline {
        let listed: serde_json::Value = api
            .http()
            .get(api.url("/api/v1/agents"))
            .bearer_auth(api.token())
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .json()
            .await?;
        let connected = listed.as_array().is_some_and(|agents| {
            agents
                .iter()
                .any(|a| a["agent_id"] == agent_id && a["connected"] == true)
        });
        if connected {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("agent {agent_id} did not connect within {timeout_secs} s")
}

async fn time_cmd(args: TimeCmd) -> anyhow::Result<()> {
    let (program, rest) = args
        .command
        .split_first()
        .context("no command given after --")?;
    let throughput = args.count_stdout || args.bytes.is_some();
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let mut samples = Vec::new();
    let mut failures = 0;
    let mut first_failure: Option<String> = None;
    let mut bytes_seen = 0;
    for i in 0..args.warmup + args.iterations {
        if Instant::now() > deadline {
            eprintln!("time-cmd: stopped after {} s", args.max_secs);
            break;
        }
        let mut command = tokio::process::Command::new(program);
        command.args(rest).stdin(Stdio::null()).kill_on_drop(true);
        let started = Instant::now();
        let result = if args.count_stdout {
            run_counting(&mut command).await
        } else {
            command
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .await
                .context("cannot start the command")
                .and_then(|out| {
                    if out.status.success() {
                        Ok(0)
                    } else {
                        bail!(
                            "{}: {}",
                            out.status,
                            String::from_utf8_lossy(&out.stderr).trim()
                        )
                    }
                })
        };
        let took = started.elapsed();
        let result = match (result, args.expect_bytes) {
            (Ok(counted), Some(want)) if counted != want => {
                Err(anyhow::anyhow!("wrote {counted} bytes, expected {want}"))
            }
            (result, _) => result,
        };
        match result {
            Ok(counted) => {
                if i >= args.warmup {
                    samples.push(took);
                    bytes_seen = counted;
                }
            }
            Err(e) => {
                failures += 1;
                first_failure.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let command = shown(&args.command.join(" "));
    let figures = if throughput {
        let bytes = args.bytes.unwrap_or(bytes_seen);
        Throughput::from_runs(bytes, &samples).map(Figures::Throughput)
    } else {
        Latency::from_samples(&samples, failures).map(Figures::Latency)
    };
    let figures = figures.unwrap_or_else(|| Figures::NotAvailable {
        reason: format!(
            "every run failed: {}",
            first_failure.as_deref().unwrap_or("no run")
        ),
    });
    if let Some(f) = &first_failure {
        eprintln!("time-cmd: {failures} failed runs; first: {f}");
    }
    emit_appending(
        &args.out,
        &Measurement {
            part: args.part,
            name: args.name,
            command,
            figures,
        },
        args.append,
    )
}

/// Runs `command`, counting its stdout bytes; the count when it exits 0.
async fn run_counting(command: &mut tokio::process::Command) -> anyhow::Result<u64> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the command")?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = stdout.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(total)
}

/// Runs `body` with a session open on `agent`, closing it afterwards whatever happened.
async fn with_session<T>(
    api: &Api,
    agent: &str,
    body: impl AsyncFnOnce(&str) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let session = api
        .open_tunnel(agent)
        .await
        .with_context(|| format!("opening a tunnel to agent {agent}"))?;
    let result = body(&session).await;
    if let Err(e) = api.close_tunnel(&session).await {
        eprintln!("rmm-bench: closing session {session} failed: {e:#}");
    }
    result
}

async fn roundtrip(args: Roundtrip) -> anyhow::Result<()> {
    let api = args.conn.api()?;
    let (samples, failures, first, repolled) =
        with_session(&api, &args.agent_id, async |session| {
            let deadline = Instant::now() + Duration::from_secs(args.max_secs);
            let (mut samples, mut failures, mut first, mut repolled) = (Vec::new(), 0, None, 0);
            for i in 0..args.warmup + args.iterations {
                if Instant::now() > deadline {
                    break;
                }
                let started = Instant::now();
                match run_true(&api, session).await {
                    Ok(extra) if i >= args.warmup => {
                        samples.push(started.elapsed());
                        repolled += usize::from(extra > 0);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        failures += 1;
                        first.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            Ok((samples, failures, first, repolled))
        })
        .await?;
    if repolled > 0 {
        eprintln!(
            "roundtrip: {repolled} of {} round trips needed a second GET ?wait= (the held GET answered `running` after the command had ended)",
            samples.len()
        );
    }
    if let Some(e) = &first {
        eprintln!("roundtrip: {failures} failed; first: {e}");
    }
    let figures = Latency::from_samples(&samples, failures).map_or_else(
        || Figures::NotAvailable {
            reason: format!("every round trip failed: {}", first.unwrap_or_default()),
        },
        Figures::Latency,
    );
    emit(
        &args.out,
        &Measurement {
            part: Part::Roundtrip,
            name: "HTTP API (POST command, GET ?wait=)".into(),
            command: format!(
                "POST /api/v1/tunnel/{{session}}/command {{\"command\":\"true\"}}, then GET /api/v1/tunnel/{{session}}/commands/{{id}}?wait=30, again while it answers running (reqwest, keep-alive, session kept open; {repolled} of {} round trips needed a second GET)",
                samples.len()
            ),
            figures,
        },
    )
}

/// Runs `true` and waits for its end; how many extra `?wait=` polls that took (a held GET
/// can come back while the command is still `running`; a client then asks again).
async fn run_true(api: &Api, session: &str) -> anyhow::Result<u32> {
    let started = api.run_command(session, "true", 60).await?;
    for extra in 0..MAX_POLLS {
        let done = api.wait_command(session, &started.command_id, 30).await?;
        if done["status"] == "running" {
            continue;
        }
        if done["status"] != "completed" || done["exit_code"] != 0 {
            bail!("`true` did not complete with 0: {done}");
        }
        return Ok(extra);
    }
    bail!("`true` still running after {MAX_POLLS} polls")
}

/// Polls of one command before a round trip counts as failed.
const MAX_POLLS: u32 = 10;

async fn stream(args: StreamArgs) -> anyhow::Result<()> {
    let api = args.conn.api()?;
    let size = std::fs::metadata(&args.file)
        .with_context(|| format!("cannot stat {}", args.file.display()))?
        .len();
    let path = args
        .file
        .to_str()
        .context("the file path is not UTF-8")?
        .to_owned();
    let runs = with_session(&api, &args.agent_id, async |session| {
        let mut runs = Vec::new();
        for _ in 0..args.runs.max(1) {
            let (bytes, took) = cat_through_stream(&api, session, &path).await?;
            if bytes != size {
                bail!("received {bytes} bytes of output, expected {size}");
            }
            eprintln!(
                "stream: {bytes} bytes in {:.2} s ({:.1} MB/s)",
                took.as_secs_f64(),
                bytes as f64 / took.as_secs_f64() / 1e6
            );
            runs.push(took);
        }
        Ok(runs)
    })
    .await?;
    let figures = Throughput::from_runs(size, &runs).map_or_else(
        || Figures::NotAvailable {
            reason: "no run".into(),
        },
        Figures::Throughput,
    );
    emit_appending(
        &args.out,
        &Measurement {
            part: Part::Stream,
            name: "rmm session stream (WebSocket)".into(),
            command: shown(&format!(
                "POST .../command {{\"command\":\"cat {path}\"}}; read tunnel_data frames from GET /api/v1/tunnel/{{session}}/stream until exit_code"
            )),
            figures,
        },
        args.append,
    )
}

/// Runs `cat PATH` with the stream connected first; the stdout bytes received and the time
/// from the POST to the final frame.
async fn cat_through_stream(
    api: &Api,
    session: &str,
    path: &str,
) -> anyhow::Result<(u64, Duration)> {
    let mut socket = api.stream(session).await?;
    let started = Instant::now();
    let command = api
        .run_command(session, &format!("cat '{path}'"), 1800)
        .await?;
    let mut bytes = 0u64;
    // Bounded: the command's own timeout ends it, and a silent socket for a minute is a failure.
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .context("no frame for 60 s")?;
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                bail!("the stream closed after {bytes} bytes: {frame:?}")
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("stream failed after {bytes} bytes: {e}"),
            None => bail!("the stream ended after {bytes} bytes"),
        };
        match AgentMessage::decode(text.as_str()) {
            Ok(AgentMessage::TunnelData {
                channel_id,
                data: TunnelDataPayload::TerminalOutput(output),
            }) if channel_id == command.channel_id => {
                let (stdout, _) = output.bytes()?;
                bytes += stdout.len() as u64;
                if let Some(code) = output.exit_code {
                    if code != 0 {
                        bail!("cat exited with {code}");
                    }
                    let took = started.elapsed();
                    let _ = socket.close(None).await;
                    return Ok((bytes, took));
                }
            }
            Ok(AgentMessage::TunnelError { channel_id, error })
                if channel_id == command.channel_id =>
            {
                bail!("the agent reported: {error}")
            }
            Ok(_) | Err(_) => {}
        }
    }
}

async fn files(args: FilesArgs) -> anyhow::Result<()> {
    let api = args.conn.api()?;
    let size = std::fs::metadata(&args.local)
        .with_context(|| format!("cannot stat {}", args.local.display()))?
        .len();
    let up_out = args.out_dir.join("files-1-upload-api.json");
    let down_out = args.out_dir.join("files-3-download-api.json");
    let up_name = "upload: rmm API (PUT .../files)";
    let down_name = "download: rmm API (GET .../files)";
    let up_command = format!(
        "PUT /api/v1/tunnel/{{session}}/files?path={} (body streamed from the file)",
        shown(&args.remote)
    );
    let down_command = format!(
        "GET /api/v1/tunnel/{{session}}/files?path={} (body streamed to a file)",
        shown(&args.remote)
    );
    let outcome = with_session(&api, &args.agent_id, async |session| {
        let (mut ups, mut downs) = (Vec::new(), Vec::new());
        for _ in 0..args.runs.max(1) {
            ups.push(upload(&api, session, &args.local, &args.remote).await?);
            let (got, took) = download(&api, session, &args.remote, &args.download_to).await?;
            if got != size {
                bail!("downloaded {got} bytes, expected {size}");
            }
            downs.push(took);
        }
        Ok((ups, downs))
    })
    .await;
    let (ups, downs) = match outcome {
        Ok(runs) => runs,
        Err(e) => {
            let unsupported = e
                .downcast_ref::<UnexpectedStatus>()
                .filter(|s| s.status == 409)
                .map(ToString::to_string);
            let Some(why) = unsupported else {
                return Err(e);
            };
            let reason = format!(
                "the server refused the transfer ({why}): agent-side file transfer is not in this build"
            );
            for (out, name) in [(&up_out, up_name), (&down_out, down_name)] {
                emit(
                    out,
                    &Measurement {
                        part: Part::Files,
                        name: name.into(),
                        command: String::new(),
                        figures: Figures::NotAvailable {
                            reason: reason.clone(),
                        },
                    },
                )?;
            }
            return Ok(());
        }
    };
    for (out, name, command, runs) in [
        (&up_out, up_name, up_command, ups),
        (&down_out, down_name, down_command, downs),
    ] {
        let figures = Throughput::from_runs(size, &runs).map_or_else(
            || Figures::NotAvailable {
                reason: "no run".into(),
            },
            Figures::Throughput,
        );
        emit_appending(
            out,
            &Measurement {
                part: Part::Files,
                name: name.into(),
                command,
                figures,
            },
            args.append,
        )?;
    }
    Ok(())
}

/// `.../files?path=REMOTE`, with the path percent-encoded.
fn files_url(api: &Api, session: &str, remote: &str) -> anyhow::Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(&api.url(&format!("/api/v1/tunnel/{session}/files")))?;
    url.query_pairs_mut().append_pair("path", remote);
    Ok(url)
}

async fn upload(api: &Api, session: &str, local: &Path, remote: &str) -> anyhow::Result<Duration> {
    let file = tokio::fs::File::open(local)
        .await
        .with_context(|| format!("cannot open {}", local.display()))?;
    let chunks = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let started = Instant::now();
    let r = api
        .http()
        .put(files_url(api, session, remote)?)
        .bearer_auth(api.token())
        .header("content-type", "application/octet-stream")
        .timeout(Duration::from_secs(3600))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await?;
    let status = r.status().as_u16();
    let body = r.text().await?;
    if status != 201 {
        return Err(UnexpectedStatus { status, body }.into());
    }
    Ok(started.elapsed())
}

async fn download(
    api: &Api,
    session: &str,
    remote: &str,
    to: &Path,
) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut r = api
        .http()
        .get(files_url(api, session, remote)?)
        .bearer_auth(api.token())
        .timeout(Duration::from_secs(3600))
        .send()
        .await?;
    let status = r.status().as_u16();
    if status != 200 {
        let body = r.text().await.unwrap_or_default();
        return Err(UnexpectedStatus { status, body }.into());
    }
    let mut file = tokio::io::BufWriter::with_capacity(
        1 << 20,
        tokio::fs::File::create(to)
            .await
            .with_context(|| format!("cannot create {}", to.display()))?,
    );
    let mut total = 0u64;
    while let Some(chunk) = r.chunk().await? {
        total += chunk.len() as u64;
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    Ok((total, started.elapsed()))
}

async fn opens(args: OpensArgs) -> anyhow::Result<()> {
    let api = args.conn.api()?;
    let target = Target::parse(&args.conn.server.replacen("http://", "ws://", 1))?;
    let started = Instant::now();
    let keys = register_many(&api, "opens", args.agents, 16).await?;
    eprintln!(
        "opens: registered {} agents in {:.1} s",
        keys.len(),
        started.elapsed().as_secs_f64()
    );
    let ids: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
    let opts = rmm_bench::watchers::fleet_options(target);
    let nofile = rmm_bench::limits::raise_nofile(args.agents as u64 + 256)?;
    if !nofile.enough {
        bail!(
            "the open-file limit ({}) is too low for {} agents",
            nofile.soft,
            args.agents
        );
    }
    let fleet = Fleet::start(&opts, keys);
    let ramp = fleet.wait_ramped(Duration::from_secs(120), |_| {}).await;
    if ramp.connected < args.agents {
        bail!(
            "only {} of {} simulated agents connected: {}",
            ramp.connected,
            args.agents,
            fleet.first_error().unwrap_or_default()
        );
    }
    // A handshake completes a moment before the server has registered the connection.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let concurrency = args.concurrency.clamp(1, args.agents.max(1));
    let deadline = Instant::now() + Duration::from_secs(args.secs);
    let pairs_left = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(args.max_pairs));
    let ticks = || {
        args.server_pid
            .and_then(|p| rmm_bench::procfs::cpu_ticks(p).ok())
    };
    let ticks_before = ticks();
    let began = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        // Each worker owns its agents: an agent holds one session at a time.
        let mine: Vec<String> = ids.iter().skip(w).step_by(concurrency).cloned().collect();
        let api = api.clone();
        let pairs_left = std::sync::Arc::clone(&pairs_left);
        workers.spawn(async move {
            let (mut opens, mut closes, mut errors, mut first) = (Vec::new(), Vec::new(), 0, None);
            for agent in mine.iter().cycle() {
                if Instant::now() >= deadline
                    || pairs_left
                        .fetch_update(
                            std::sync::atomic::Ordering::Relaxed,
                            std::sync::atomic::Ordering::Relaxed,
                            |n| n.checked_sub(1),
                        )
                        .is_err()
                {
                    break;
                }
                let t0 = Instant::now();
                let session = match api.open_tunnel(agent).await {
                    Ok(session) => session,
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert_with(|| format!("open: {e:#}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let t1 = Instant::now();
                match api.close_tunnel(&session).await {
                    Ok(()) => {
                        opens.push(t1 - t0);
                        closes.push(t1.elapsed());
                    }
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert_with(|| format!("close: {e:#}"));
                    }
                }
            }
            (opens, closes, errors, first)
        });
    }
    let (mut opens, mut closes, mut errors, mut first_error) = (Vec::new(), Vec::new(), 0, None);
    while let Some(done) = workers.join_next().await {
        let (o, c, e, f) = done?;
        opens.extend(o);
        closes.extend(c);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let secs = began.elapsed().as_secs_f64();
    let server_cpu_pct = ticks_before.zip(ticks()).map(|(before, after)| {
        after.saturating_sub(before) as f64 / rmm_bench::procfs::TICKS_PER_SEC / secs * 100.0
    });
    let single = opens_one_at_a_time(&api, &ids, args.single).await;
    let counts = fleet.counts();
    fleet.stop(Duration::from_secs(10)).await;
    if let Some(e) = &first_error {
        eprintln!("opens: {errors} errors; first: {e}");
    }
    eprintln!(
        "opens: the agents saw {} tunnel_open and {} tunnel_close",
        counts.opens, counts.closes
    );
    let (open_p50_ms, open_p99_ms) = measure::p50_p99_ms(&opens);
    let (close_p50_ms, close_p99_ms) = measure::p50_p99_ms(&closes);
    emit(
        &args.out,
        &Measurement {
            part: Part::Opens,
            name: format!(
                "{} ({} agents, {} at once)",
                args.backend, args.agents, concurrency
            ),
            command: format!(
                "POST /api/v1/tunnel/open then POST /api/v1/tunnel/close, {concurrency} concurrent loops over {} simulated agents, {} s; then {} opens one at a time (the close untimed)",
                args.agents, args.secs, args.single
            ),
            figures: Figures::Opens(OpensFigures {
                backend: args.backend,
                agents: args.agents,
                concurrency,
                secs,
                pairs: opens.len(),
                pairs_per_s: opens.len() as f64 / secs.max(1e-9),
                open_p50_ms,
                open_p99_ms,
                close_p50_ms,
                close_p99_ms,
                errors,
                first_error,
                server_cpu_pct,
                single: Some(single),
            }),
        },
    )
}

/// `n` opens one after the other (each closed before the next, the close untimed), cycling
/// over `agents`: the latency of an open with nothing else in flight.
async fn opens_one_at_a_time(api: &Api, agents: &[String], n: usize) -> SingleOpens {
    let (mut opens, mut errors, mut first_error) = (Vec::with_capacity(n), 0, None);
    for agent in agents
        .iter()
        .cycle()
        .take(if agents.is_empty() { 0 } else { n })
    {
        let t0 = Instant::now();
        match api.open_tunnel(agent).await {
            Ok(session) => {
                opens.push(t0.elapsed());
                if let Err(e) = api.close_tunnel(&session).await {
                    errors += 1;
                    first_error.get_or_insert_with(|| format!("close: {e:#}"));
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("open: {e:#}"));
            }
        }
    }
    let (open_p50_ms, open_p99_ms) = measure::p50_p99_ms(&opens);
    if let Some(e) = &first_error {
        eprintln!("opens one at a time: {errors} errors; first: {e}");
    }
    SingleOpens {
        opens: opens.len(),
        open_p50_ms,
        open_p99_ms,
        errors,
        first_error,
    }
}

/// The echo row: latency of the samples, or why there are none.
fn echo_row(name: &str, command: String, run: anyhow::Result<Vec<Duration>>) -> Measurement {
    let figures = match run {
        Ok(samples) => Latency::from_samples(&samples, 0).map_or_else(
            || Figures::NotAvailable {
                reason: "no echo was timed".into(),
            },
            Figures::Latency,
        ),
        Err(e) => Figures::NotAvailable {
            reason: format!("failed: {e:#}"),
        },
    };
    Measurement {
        part: Part::Terminal,
        name: name.into(),
        command,
        figures,
    }
}

async fn term_echo(args: TermEchoArgs) -> anyhow::Result<()> {
    let api = args.conn.api()?;
    let max = Duration::from_secs(args.max_secs);
    let run = with_session(&api, &args.agent_id, async |session| {
        terminal::echo_terminal(&api, session, args.warmup, args.iterations, max).await
    })
    .await;
    let command = format!(
        "POST /api/v1/tunnel/{{session}}/terminals {{\"command\":\"{}\"}}; on GET .../terminals/{{id}}/ws (TCP_NODELAY) send one byte as a binary frame, wait for it to come back, {} times (+{} warm-up)",
        terminal::ECHO_COMMAND,
        args.iterations,
        args.warmup
    );
    emit(
        &args.out,
        &echo_row("rmm terminal echo (WebSocket)", command, run),
    )
}

async fn echo_cmd(args: EchoCmdArgs) -> anyhow::Result<()> {
    let (program, rest) = args
        .command
        .split_first()
        .context("no command given after --")?;
    let max = Duration::from_secs(args.max_secs);
    let run = terminal::echo_command(program, rest, args.warmup, args.iterations, max).await;
    let command = format!(
        "{}; write one byte to its stdin, wait for it on its stdout, {} times (+{} warm-up)",
        shown(&args.command.join(" ")),
        args.iterations,
        args.warmup
    );
    emit(&args.out, &echo_row(&args.name, command, run))
}

async fn term_cat(args: TermCatArgs) -> anyhow::Result<()> {
    let api = args.conn.api()?;
    let expected = terminal::bytes_on_a_pty(&args.file)?;
    let path = args
        .file
        .to_str()
        .context("the file path is not UTF-8")?
        .to_owned();
    let runs = with_session(&api, &args.agent_id, async |session| {
        let mut runs = Vec::new();
        for _ in 0..args.runs.max(1) {
            let (bytes, took) = terminal::cat_through_terminal(&api, session, &path).await?;
            if bytes != expected {
                bail!("received {bytes} bytes of output, expected {expected} (the file with each \\n as \\r\\n)");
            }
            eprintln!(
                "terminal cat: {bytes} bytes in {:.2} s ({:.1} MB/s)",
                took.as_secs_f64(),
                bytes as f64 / took.as_secs_f64() / 1e6
            );
            runs.push(took);
        }
        Ok(runs)
    })
    .await?;
    let figures = Throughput::from_runs(expected, &runs).map_or_else(
        || Figures::NotAvailable {
            reason: "no run".into(),
        },
        Figures::Throughput,
    );
    emit_appending(
        &args.out,
        &Measurement {
            part: Part::Terminal,
            name: "rmm terminal cat (WebSocket)".into(),
            command: shown(&format!(
                "POST /api/v1/tunnel/{{session}}/terminals {{\"command\":\"{}\"}}; read binary frames from GET .../terminals/{{id}}/ws until the exit frame (timed from the POST)",
                terminal::cat_command(&path)
            )),
            figures,
        },
        args.append,
    )
}

async fn agent_idle(
    pid: u32,
    binary: &Path,
    settle_secs: u64,
    samples: usize,
    sshd_pids: &str,
    out: &Path,
) -> anyhow::Result<()> {
    let sshd: Vec<u32> = sshd_pids
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let settle = Duration::from_secs(settle_secs);
    let f = rmm_bench::agent_idle::measure(pid, binary, settle, samples, &sshd).await?;
    eprintln!(
        "agent idle: {} KiB RSS, {} thread(s), binary {} bytes; sshd connection {:?} KiB",
        f.rss_kib, f.threads, f.binary_bytes, f.sshd_rss_kib
    );
    measure::write(
        out,
        &Measurement {
            part: Part::Agent,
            name: "rmm-agent idle".into(),
            command: format!(
                "{} connected to rmm-server over ws://127.0.0.1, idle {settle_secs} s, then VmRSS of /proc/PID/status (largest of {samples} samples 200 ms apart); stat of the binary",
                shown(&binary.display().to_string())
            ),
            figures: Figures::AgentIdle(f),
        },
    )
}

/// `roundtrip,terminal` as parts.
fn parse_parts(list: &str) -> anyhow::Result<Vec<Part>> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|name| {
            Part::ALL
                .into_iter()
                .find(|p| p.as_str() == name)
                .with_context(|| format!("no part {name}"))
        })
        .collect()
}

fn check(results: &Path, parts: &str) -> anyhow::Result<()> {
    let rows = measure::read_dir(results)?;
    let mut missing = Vec::new();
    for part in parts.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let with_figures = rows
            .iter()
            .filter(|m| m.part.as_str() == part && !report::is_ssh(m) && m.figures.has_figures())
            .count();
        if with_figures == 0 {
            missing.push(part.to_owned());
        }
    }
    for m in rows.iter().filter(|m| !m.figures.has_figures()) {
        eprintln!("check: not available: {}", report::one_line(m));
    }
    if missing.is_empty() {
        eprintln!("check: every part produced figures ({parts})");
        Ok(())
    } else {
        bail!("no figures from: {}", missing.join(", "))
    }
}
