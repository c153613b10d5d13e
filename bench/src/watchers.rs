//! The watcher storm (issue 17, point 4): many technicians' session streams at once over
//! simulated agents that write known output, each stream checked byte for byte.
//!
//! Every session gets one `rmm-sim-emit` command (see [`crate::sim::Emission`]): its agent
//! writes lines that name their own position at a steady rate. Watchers are spread evenly
//! over the sessions, alternately in the reference JSON and in binary frames
//! (`?output=binary`), and each compares every byte it gets with what the agent wrote at that
//! offset, so a byte lost, repeated or moved fails it. The first sessions also get one
//! watcher that stops reading (a small receive buffer, nothing read for up to 6 s) while its
//! session writes more than the 16 MiB a watcher may fall behind: the protocol says it is
//! closed with 1008 `client too slow`, and the others of its session still get every byte.
//!
//! The server's RSS is sampled every 20 ms from `/proc/<pid>` meanwhile. Nothing here knows
//! the server's insides: the HTTP API, the session stream and the agents' WebSocket only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use rmm_protocol::{AgentMessage, DataFrame, OutputChannel, OutputStream, TunnelDataPayload};
use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::api::Api;
use crate::sim::{Fleet, SimOptions, Target, emit_command, emitted_bytes, register_many};
use crate::{procfs, reliability};

const MIB: u64 = 1024 * 1024;
/// How far a watcher may fall behind before it is closed as too slow (docs/protocol.md,
/// "The technicians' stream"), frames counted as charged.
const WATCHER_LAG: u64 = 16 * MIB;
/// The longest a stopped watcher stays stopped, counted from its session's first output:
/// the server ends, without a close frame, a socket whose write has blocked for 10 s, and
/// its writes block from soon after the first output on.
const STALL_AT_MOST: Duration = Duration::from_secs(6);
/// A reading watcher that gets nothing for this long has failed.
const IDLE_AT_MOST: Duration = Duration::from_secs(60);

/// The watcher storm's sizes.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchersArgs {
    /// http://127.0.0.1:PORT
    #[arg(long)]
    pub server: String,
    /// An admin's token.
    #[arg(long, env = "RMM_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Simulated agents, one session each.
    #[arg(long, default_value_t = 50)]
    pub agents: usize,
    /// Session streams, spread evenly over the sessions.
    #[arg(long, default_value_t = 200)]
    pub watchers: usize,
    /// Watchers that stop reading, one on each of the first sessions.
    #[arg(long, default_value_t = 5)]
    pub slow: usize,
    /// Output of each session without a stopped watcher, in bytes.
    #[arg(long, default_value_t = 4 * MIB)]
    pub bytes: u64,
    /// Its rate, in bytes a second.
    #[arg(long, default_value_t = 256 * 1024)]
    pub rate: u64,
    /// Output of each session with a stopped watcher (as fast as it is read): more than the
    /// 16 MiB a watcher may fall behind.
    #[arg(long, default_value_t = 40 * MIB)]
    pub slow_bytes: u64,
    /// The server's process id, to sample its RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The whole run's limit, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// The command that runs this check alone, for the reliability row.
    #[arg(long, default_value = "scripts/storms.sh --parts watchers")]
    pub reproduce: String,
}

/// How one watcher's stream ended.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Every byte, in order, then the command's end.
    Complete {
        bytes: u64,
    },
    /// Closed 1008 `client too slow` after `bytes` (all of them correct).
    TooSlow {
        bytes: u64,
        reason: String,
    },
    Failed {
        why: String,
    },
}

/// What the storm measured.
#[derive(Debug, Clone, Serialize)]
pub struct WatcherFigures {
    pub agents: usize,
    pub watchers: usize,
    pub slow: usize,
    pub complete: usize,
    pub too_slow: usize,
    /// Reading watchers that did not get every byte, and stopped ones not closed too slow.
    pub failures: Vec<String>,
    pub bytes_delivered: u64,
    pub secs: f64,
    pub server_rss_start_kib: u64,
    pub server_rss_before_kib: u64,
    pub server_rss_peak_kib: u64,
    pub server_rss_after_kib: u64,
    pub rss_growth_limit_kib: u64,
    pub load_at_start: String,
}

impl WatcherFigures {
    fn passed(&self) -> bool {
        self.failures.is_empty()
            && self
                .server_rss_peak_kib
                .saturating_sub(self.server_rss_before_kib)
                <= self.rss_growth_limit_kib
    }

    fn figure(&self) -> String {
        let reading = self.watchers - self.slow;
        format!(
            "{}/{reading} reading watchers got every byte ({} MiB in {:.1} s, byte-exact, in order); {}/{} stopped watchers closed 1008 too slow; server RSS {} MiB before, peak {} MiB (+{} MiB, bound +{} MiB), {} MiB after; load {} at start",
            self.complete,
            self.bytes_delivered / MIB,
            self.secs,
            self.too_slow,
            self.slow,
            self.server_rss_before_kib / 1024,
            self.server_rss_peak_kib / 1024,
            self.server_rss_peak_kib
                .saturating_sub(self.server_rss_before_kib)
                / 1024,
            self.rss_growth_limit_kib / 1024,
            self.server_rss_after_kib / 1024,
            self.load_at_start,
        )
    }
}

/// Runs the storm, prints its figures (JSON), records the reliability row when it passed.
///
/// # Errors
/// When the storm cannot be set up, or a check failed (the error says which).
pub async fn run(args: &WatchersArgs) -> anyhow::Result<()> {
    if args.agents == 0 || args.slow > args.agents || args.watchers < args.agents + args.slow {
        bail!(
            "--watchers must be at least --agents + --slow (every session watched, a stopped watcher's session watched by a reader too), and --slow at most --agents"
        );
    }
    if args.slow_bytes < 2 * WATCHER_LAG {
        bail!("--slow-bytes must be at least 32 MiB: twice what a watcher may fall behind");
    }
    let load_at_start = reliability::load_average();
    let figures = tokio::time::timeout(
        Duration::from_secs(args.timeout_secs),
        storm(args, load_at_start),
    )
    .await
    .with_context(|| {
        format!(
            "the watcher storm did not end within {} s",
            args.timeout_secs
        )
    })??;
    println!("{}", serde_json::to_string_pretty(&figures)?);
    if !figures.passed() {
        bail!("the watcher storm failed: {}", figures.figure());
    }
    let check = format!(
        "watcher storm: {} technicians' session streams over {} simulated agents writing known output, {} of them stopped: every reader gets every byte, every stopped one an explicit too-slow close, server RSS bounded",
        args.watchers, args.agents, args.slow
    );
    eprintln!("watchers: passed: {}", figures.figure());
    reliability::record("storms", &check, &figures.figure(), &args.reproduce)
}

/// A session of the storm: its id, its output's tag and size, and how far its readers got.
struct Session {
    id: String,
    tag: u16,
    bytes: u64,
    /// The most bytes any reading watcher of it has checked.
    progress: AtomicU64,
    done: AtomicBool,
    /// When its command was sent.
    output_started: std::sync::OnceLock<Instant>,
}

async fn storm(args: &WatchersArgs, load_at_start: String) -> anyhow::Result<WatcherFigures> {
    let rss = || {
        args.server_pid
            .and_then(|p| procfs::rss_kib(p).ok())
            .unwrap_or(0)
    };
    let server_rss_start_kib = rss();
    let api = Api::with_token(&args.server, &args.token)?;
    let target = Target::parse(&args.server.replacen("http://", "ws://", 1))?;
    // Names of their own, so the storm can run again against the same server.
    let prefix = format!(
        "watch-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp()
    );
    let keys = register_many(&api, &prefix, args.agents, 16).await?;
    let ids: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
    let fleet = Fleet::start(&fleet_options(target.clone()), keys);
    let ramp = fleet.wait_ramped(Duration::from_secs(120), |_| {}).await;
    if ramp.connected < args.agents {
        bail!(
            "only {} of {} simulated agents connected: {}",
            ramp.connected,
            args.agents,
            fleet.first_error().unwrap_or_default()
        );
    }
    let sessions = open_sessions(&api, &ids, args).await?;
    eprintln!(
        "watchers: {} sessions open; connecting {} watchers",
        sessions.len(),
        args.watchers
    );
    let mut sockets = Vec::with_capacity(args.watchers);
    for w in 0..args.watchers {
        let session = Arc::clone(&sessions[w % args.agents]);
        let slow = w < args.slow;
        let binary = (w + w / args.agents) % 2 == 1;
        let socket = subscribe(&target, &api, &session.id, binary, slow)
            .await
            .with_context(|| format!("watcher {w}"))?;
        sockets.push((w, session, socket, binary, slow));
    }
    let server_rss_before_kib = rss();
    let peak = RssPeak::start(args.server_pid);
    // The readers first: a stopped watcher's stall is timed from its session's output start.
    let mut tasks = tokio::task::JoinSet::new();
    for (w, session, socket, binary, slow) in sockets {
        tasks.spawn(async move {
            let outcome = watch(socket, &session, binary, slow).await;
            (w, slow, outcome)
        });
    }
    let started = Instant::now();
    for s in &sessions {
        let rate = if usize::from(s.tag) < args.slow {
            0
        } else {
            args.rate
        };
        let _ = s.output_started.set(Instant::now());
        api.run_command(&s.id, &emit_command(s.bytes, rate, s.tag), 3600)
            .await
            .with_context(|| format!("starting the output of session {}", s.tag))?;
    }
    eprintln!("watchers: output started in every session");
    let mut outcomes = Vec::with_capacity(args.watchers);
    while let Some(joined) = tasks.join_next().await {
        outcomes.push(joined.context("a watcher task panicked")?);
    }
    let secs = started.elapsed().as_secs_f64();
    let server_rss_peak_kib = peak.stop().await.max(server_rss_before_kib);
    for s in &sessions {
        if let Err(e) = api.close_tunnel(&s.id).await {
            eprintln!("watchers: closing session {}: {e:#}", s.tag);
        }
    }
    fleet.stop(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut figures = WatcherFigures {
        agents: args.agents,
        watchers: args.watchers,
        slow: args.slow,
        complete: 0,
        too_slow: 0,
        failures: Vec::new(),
        bytes_delivered: 0,
        secs,
        server_rss_start_kib,
        server_rss_before_kib,
        server_rss_peak_kib,
        server_rss_after_kib: rss(),
        // What the protocol bounds (docs/protocol.md, "The technicians' stream"): per
        // watched session the newest 16 MiB of frames for its live watchers and the 1 MiB
        // replay, whether or not a watcher lags; plus the watchers' and agents' socket
        // buffers in the server (up to ~256 KiB each) and the allocator's slack.
        rss_growth_limit_kib: (args.agents as u64 * 17 + 128) * 1024,
        load_at_start,
    };
    outcomes.sort_by_key(|(w, _, _)| *w);
    for (w, slow, outcome) in outcomes {
        match (slow, outcome) {
            (false, Outcome::Complete { bytes }) => {
                figures.complete += 1;
                figures.bytes_delivered += bytes;
            }
            (true, Outcome::TooSlow { bytes, .. }) => {
                figures.too_slow += 1;
                figures.bytes_delivered += bytes;
            }
            (slow, outcome) => {
                let who = if slow { "stopped" } else { "reading" };
                figures
                    .failures
                    .push(format!("{who} watcher {w}: {outcome:?}"));
            }
        }
    }
    Ok(figures)
}

/// A quiet local fleet of simulated agents (heartbeats every 30 s, no ping sampling), as
/// the storms that drive their own agents use it.
#[must_use]
pub fn fleet_options(target: Target) -> SimOptions {
    SimOptions {
        target,
        heartbeat: Duration::from_secs(30),
        bind_ips: vec![std::net::Ipv4Addr::LOCALHOST],
        ramp_per_sec: 2000.0,
        max_in_flight: 64,
        ping_sample: 0,
        ping_every: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(30),
    }
}

async fn open_sessions(
    api: &Api,
    ids: &[String],
    args: &WatchersArgs,
) -> anyhow::Result<Vec<Arc<Session>>> {
    // A handshake completes a moment before the server has registered the connection:
    // an open is retried for a few seconds.
    let mut sessions = Vec::with_capacity(ids.len());
    for (i, agent) in ids.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(15);
        let id = loop {
            match api.open_tunnel(agent).await {
                Ok(id) => break id,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("opening a session to agent {i}")));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        sessions.push(Arc::new(Session {
            id,
            tag: u16::try_from(i).context("at most 65,536 sessions")?,
            bytes: if i < args.slow {
                args.slow_bytes
            } else {
                args.bytes
            },
            progress: AtomicU64::new(0),
            done: AtomicBool::new(false),
            output_started: std::sync::OnceLock::new(),
        }));
    }
    Ok(sessions)
}

type Socket = WebSocketStream<TcpStream>;

/// A watcher's stream, subscribed: the server answers a frame it does not run with a
/// `tunnel_error` on channel `client`, and it reads a watcher's frames only once the watcher
/// is subscribed, so after that answer no output can be missed. A stopped watcher's socket
/// gets a small receive buffer (set before connecting, so the kernel does not grow it).
async fn subscribe(
    target: &Target,
    api: &Api,
    session: &str,
    binary: bool,
    slow: bool,
) -> anyhow::Result<Socket> {
    let socket = TcpSocket::new_v4().context("socket")?;
    if slow {
        socket
            .set_recv_buffer_size(64 * 1024)
            .context("SO_RCVBUF")?;
    }
    let stream = socket
        .connect(target.addr)
        .await
        .with_context(|| format!("connect {}", target.addr))?;
    let output = if binary { "?output=binary" } else { "" };
    let url = format!(
        "ws://{}/api/v1/tunnel/{session}/stream{output}",
        target.addr
    );
    let mut request = url.into_client_request().context("stream URL")?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", api.token())
            .parse()
            .context("token is not a header value")?,
    );
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .context("the stream's upgrade")?;
    ws.send(Message::text(r#"{"type":"subscribed?"}"#))
        .await
        .context("writing to the stream")?;
    let answered = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(frame) = ws.next().await {
            if let Message::Text(text) = frame.context("reading the stream")?
                && text.as_str().contains(r#""channel_id":"client""#)
            {
                return Ok(());
            }
        }
        bail!("the stream ended before answering")
    })
    .await;
    answered.context("the stream did not answer within 30 s")??;
    Ok(ws)
}

/// Reads one watcher's stream to its end, checking every byte. A stopped watcher first reads
/// nothing until the readers of its session are [`WATCHER_LAG`] + 8 MiB ahead, or for
/// [`STALL_AT_MOST`] from its session's output start.
async fn watch(mut socket: Socket, session: &Session, binary: bool, slow: bool) -> Outcome {
    if slow {
        let waiting = Instant::now();
        let started = loop {
            match session.output_started.get() {
                Some(at) => break *at,
                None if waiting.elapsed() > IDLE_AT_MOST => break waiting,
                None => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        while session.progress.load(Ordering::Relaxed) < WATCHER_LAG + 8 * MIB
            && !session.done.load(Ordering::Relaxed)
            && started.elapsed() < STALL_AT_MOST
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut check = Checker {
        tag: session.tag,
        got: 0,
        channel: None,
    };
    let outcome = loop {
        let frame = match tokio::time::timeout(IDLE_AT_MOST, socket.next()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => break check.failed(format!("socket error: {e}")),
            Ok(None) => break check.failed("the stream ended without a close frame".into()),
            Err(_) => break check.failed(format!("nothing for {} s", IDLE_AT_MOST.as_secs())),
        };
        let step = match frame {
            Message::Text(text) => check.json(text.as_str(), binary),
            Message::Binary(bytes) => check.binary(bytes, binary),
            Message::Close(Some(close))
                if close.code == CloseCode::Policy && close.reason.contains("too slow") =>
            {
                Step::End(Outcome::TooSlow {
                    bytes: check.got,
                    reason: close.reason.to_string(),
                })
            }
            Message::Close(close) => Step::End(check.failed(format!("closed: {close:?}"))),
            _ => Step::More,
        };
        match step {
            Step::More => {
                if !slow {
                    session.progress.fetch_max(check.got, Ordering::Relaxed);
                }
            }
            Step::End(Outcome::Complete { bytes }) if bytes != session.bytes => {
                break check.failed(format!("the command ended after {bytes} bytes"));
            }
            Step::End(outcome) => break outcome,
        }
    };
    if !slow {
        session.done.store(true, Ordering::Relaxed);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
    outcome
}

enum Step {
    More,
    End(Outcome),
}

/// Checks a stream's output against what the agent wrote.
struct Checker {
    tag: u16,
    got: u64,
    channel: Option<String>,
}

impl Checker {
    fn failed(&self, why: String) -> Outcome {
        Outcome::Failed {
            why: format!("{why} (after {} correct bytes)", self.got),
        }
    }

    fn same_channel(&mut self, channel: &str) -> Result<(), String> {
        match &self.channel {
            Some(c) if c != channel => Err(format!("output on {channel} and on {c}")),
            Some(_) => Ok(()),
            None => {
                self.channel = Some(channel.to_owned());
                Ok(())
            }
        }
    }

    fn bytes(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        if offset != self.got {
            return Err(format!("a frame at offset {offset}: a gap or a repeat"));
        }
        if data != emitted_bytes(self.tag, offset, data.len()).as_slice() {
            return Err(format!(
                "{} bytes at offset {offset} differ from what the agent wrote",
                data.len()
            ));
        }
        self.got += data.len() as u64;
        Ok(())
    }

    fn json(&mut self, text: &str, binary: bool) -> Step {
        let checked = match AgentMessage::decode(text) {
            Ok(AgentMessage::TunnelData {
                channel_id,
                data: TunnelDataPayload::TerminalOutput(out),
            }) => self.same_channel(&channel_id).and_then(|()| {
                let (stdout, stderr) = out.bytes().map_err(|e| e.to_string())?;
                if binary && !stdout.is_empty() {
                    return Err("output in JSON on a binary stream".into());
                }
                if !stderr.is_empty() {
                    return Err("output on stderr".into());
                }
                self.bytes(self.got, &stdout)?;
                Ok(out.exit_code)
            }),
            Ok(AgentMessage::TunnelError { channel_id, error }) => {
                Err(format!("tunnel_error on {channel_id}: {error}"))
            }
            _ => Ok(None),
        };
        match checked {
            Ok(Some(_)) => Step::End(Outcome::Complete { bytes: self.got }),
            Ok(None) => Step::More,
            Err(why) => Step::End(self.failed(why)),
        }
    }

    fn binary(&mut self, frame: bytes::Bytes, binary: bool) -> Step {
        let checked = DataFrame::decode(frame)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                if !binary {
                    return Err("a binary frame on a JSON stream".into());
                }
                match OutputChannel::parse(&f.channel_id) {
                    Some(OutputChannel {
                        channel,
                        stream: OutputStream::Stdout,
                    }) => {
                        self.same_channel(channel)?;
                        self.bytes(f.offset, &f.data)
                    }
                    _ => Err(format!("a binary frame on {}", f.channel_id)),
                }
            });
        match checked {
            Ok(()) => Step::More,
            Err(why) => Step::End(self.failed(why)),
        }
    }
}

/// Samples a process's RSS every 20 ms until stopped; the highest seen.
struct RssPeak {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl RssPeak {
    fn start(pid: Option<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Some(kib) = pid.and_then(|p| procfs::rss_kib(p).ok()) {
                    peak = peak.max(kib);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        });
        Self { stop, task }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmm_protocol::{TerminalOutput, encode};

    fn output(channel: &str, stdout: &[u8], exit_code: Option<i32>) -> String {
        let mut out = TerminalOutput::chunk(stdout, b"");
        out.exit_code = exit_code;
        encode(&AgentMessage::TunnelData {
            channel_id: channel.into(),
            data: TunnelDataPayload::TerminalOutput(out),
        })
    }

    fn checker() -> Checker {
        Checker {
            tag: 9,
            got: 0,
            channel: None,
        }
    }

    fn failed(step: Step) -> String {
        match step {
            Step::End(Outcome::Failed { why }) => why,
            Step::End(other) => panic!("not a failure: {other:?}"),
            Step::More => panic!("not a failure: more"),
        }
    }

    #[test]
    fn json_output_in_order_completes_and_anything_else_fails() {
        let mut c = checker();
        assert!(matches!(
            c.json(&output("c-1", &emitted_bytes(9, 0, 100), None), false),
            Step::More
        ));
        assert!(matches!(
            c.json(&output("c-1", &emitted_bytes(9, 100, 60), None), false),
            Step::More
        ));
        assert!(matches!(
            c.json(&output("c-1", b"", Some(0)), false),
            Step::End(Outcome::Complete { bytes: 160 })
        ));
        // A chunk skipped, a byte changed, another channel, JSON on a binary stream.
        let mut c = checker();
        let _ = c.json(&output("c-1", &emitted_bytes(9, 0, 100), None), false);
        let why = failed(c.json(&output("c-1", &emitted_bytes(9, 116, 16), None), false));
        assert!(why.contains("differ"), "{why}");
        let mut c = checker();
        let mut bytes = emitted_bytes(9, 0, 32);
        bytes[5] = b'x';
        assert!(failed(c.json(&output("c-1", &bytes, None), false)).contains("differ"));
        let mut c = checker();
        let _ = c.json(&output("c-1", &emitted_bytes(9, 0, 16), None), false);
        let why = failed(c.json(&output("c-2", &emitted_bytes(9, 16, 16), None), false));
        assert!(why.contains("c-2"), "{why}");
        let mut c = checker();
        let why = failed(c.json(&output("c-1", &emitted_bytes(9, 0, 16), None), true));
        assert!(why.contains("binary stream"), "{why}");
    }

    #[test]
    fn binary_frames_must_follow_each_other_exactly() {
        let frame = |offset: u64, len: usize| {
            bytes::Bytes::from(DataFrame::encode_parts(
                "c-1/stdout",
                offset,
                &emitted_bytes(9, offset, len),
            ))
        };
        let mut c = checker();
        assert!(matches!(c.binary(frame(0, 64), true), Step::More));
        assert!(matches!(c.binary(frame(64, 64), true), Step::More));
        assert_eq!(c.got, 128);
        // A repeat, a gap, a binary frame on a JSON stream, stderr.
        assert!(failed(c.binary(frame(64, 64), true)).contains("gap or a repeat"));
        let mut c = checker();
        assert!(failed(c.binary(frame(16, 16), true)).contains("gap or a repeat"));
        let mut c = checker();
        assert!(failed(c.binary(frame(0, 16), false)).contains("JSON stream"));
        let mut c = checker();
        let stderr = bytes::Bytes::from(DataFrame::encode_parts("c-1/stderr", 0, b"x"));
        assert!(failed(c.binary(stderr, true)).contains("c-1/stderr"));
    }
}
