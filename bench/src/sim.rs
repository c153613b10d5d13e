//! The agent simulator's engine: many authenticated agent connections in one process, each
//! a task speaking the real protocol (heartbeats at an interval, `tunnel_ready` for every
//! `tunnel_open`, an empty successful result for every command), opened at a chosen rate.
//!
//! One source address gives at most ~28k ephemeral ports, so sockets are bound round-robin
//! to several `127.0.0.x` addresses before connecting. Only loopback addresses are accepted,
//! as source and as target.
//!
//! The protocol has no heartbeat acknowledgement, so round trips are measured with WebSocket
//! ping/pong on a sample of connections: the server's WebSocket layer answers a ping from the
//! same task and socket that handles that agent's heartbeats, so the pong's delay is the delay
//! a heartbeat sees at that load. Each sampled connection pings at an interval with its send
//! time as the payload.
//!
//! Buffers are kept small (4 KiB read buffer, no write buffer): at 100k connections
//! tungstenite's defaults (128 KiB each way) would cost the simulator tens of GiB.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _, TryStreamExt as _};
use rmm_agent_runtime::{AgentTimings, Backoff, parse_retry_after, random_unit, rejected_delay};
use rmm_protocol::{
    AgentMessage, HeartbeatPayload, ServerMessage, TerminalOutput, TunnelDataPayload, encode,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::api::Api;

mod emit;
pub use emit::{EMIT_COMMAND, Emission, command as emit_command, expected as emitted_bytes};

/// One agent's credentials, as kept in a keys file (`agent_id<TAB>agent_key` per line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentKey {
    pub id: String,
    pub key: String,
}

/// Reads a keys file; blank lines and `#` comments are skipped.
///
/// # Errors
/// When the file cannot be read or a line is not `id<TAB>key`.
pub fn read_keys(path: &Path) -> anyhow::Result<Vec<AgentKey>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the keys file {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|(n, line)| {
            let (id, key) = line.trim().split_once('\t').with_context(|| {
                format!(
                    "{}:{}: expected agent_id<TAB>agent_key",
                    path.display(),
                    n + 1
                )
            })?;
            Ok(AgentKey {
                id: id.to_owned(),
                key: key.to_owned(),
            })
        })
        .collect()
}

/// Writes a keys file readable by the owner only (the keys are secrets).
///
/// # Errors
/// When the file cannot be written.
pub fn write_keys(path: &Path, keys: &[AgentKey]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut text = String::with_capacity(keys.len() * 96);
    for k in keys {
        text.push_str(&k.id);
        text.push('\t');
        text.push_str(&k.key);
        text.push('\n');
    }
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Registers `n` agents named `{prefix}-{i}` through the API, `concurrency` at a time.
///
/// # Errors
/// The first registration that fails.
pub async fn register_many(
    api: &Api,
    prefix: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<AgentKey>> {
    futures_util::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let name = format!("{prefix}-{i}");
            async move {
                api.register_agent(&name).await.map(|a| AgentKey {
                    id: a.id,
                    key: a.key,
                })
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// Parses `127.0.0.1-127.0.0.20`, `127.0.0.1,127.0.0.5` or a mix; every address must be in
/// 127.0.0.0/8.
///
/// # Errors
/// On a malformed address or range, or a non-loopback address.
pub fn parse_bind_ips(spec: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((from, to)) => {
                let from: Ipv4Addr = from
                    .trim()
                    .parse()
                    .with_context(|| format!("bad address {from:?}"))?;
                let to: Ipv4Addr = to
                    .trim()
                    .parse()
                    .with_context(|| format!("bad address {to:?}"))?;
                let (from, to) = (u32::from(from), u32::from(to));
                if to < from || to - from > 65_535 {
                    bail!("bad address range {part:?}");
                }
                out.extend((from..=to).map(Ipv4Addr::from));
            }
            None => out.push(
                part.parse()
                    .with_context(|| format!("bad address {part:?}"))?,
            ),
        }
    }
    if let Some(ip) = out.iter().find(|ip| !ip.is_loopback()) {
        bail!("{ip} is not a loopback address: the simulator only uses 127.0.0.0/8");
    }
    if out.is_empty() {
        bail!("no bind address given");
    }
    Ok(out)
}

/// Where the agents connect: the loopback socket address and the WebSocket URL.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub url: String,
}

impl Target {
    /// From `ws://127.0.0.1:PORT` (`/api/v1/agent/ws` is appended when no path is given).
    ///
    /// # Errors
    /// When the URL is not `ws://` or its host is not a loopback IPv4 address.
    pub fn parse(server: &str) -> anyhow::Result<Self> {
        let url =
            reqwest::Url::parse(server).with_context(|| format!("bad server URL {server:?}"))?;
        if url.scheme() != "ws" {
            bail!("the simulator speaks ws:// to a loopback server (got {server:?})");
        }
        let ip: Ipv4Addr = url
            .host_str()
            .unwrap_or_default()
            .parse()
            .with_context(|| {
                format!("the server must be given as a 127.x.y.z address (got {server:?})")
            })?;
        if !ip.is_loopback() {
            bail!("{ip} is not a loopback address: the simulator only talks to 127.0.0.0/8");
        }
        let port = url.port().unwrap_or(80);
        let path = match url.path() {
            "" | "/" => "/api/v1/agent/ws",
            path => path,
        };
        Ok(Self {
            addr: SocketAddr::new(IpAddr::V4(ip), port),
            url: format!("ws://{ip}:{port}{path}"),
        })
    }
}

/// How the simulated agents behave.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub target: Target,
    pub heartbeat: Duration,
    pub bind_ips: Vec<Ipv4Addr>,
    /// New connections per second.
    pub ramp_per_sec: f64,
    /// Handshakes in flight at once.
    pub max_in_flight: usize,
    /// How many connections measure round trips with pings (spread over the fleet).
    pub ping_sample: usize,
    pub ping_every: Duration,
    pub connect_timeout: Duration,
}

/// Counters of the fleet.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Agents that completed a handshake at least once.
    pub connected: usize,
    /// Handshakes after a lost connection (the agent redialled, as the real agent does).
    pub reconnects: usize,
    /// Upgrades answered 503 (the server shedding handshakes) and 401.
    pub busy: u64,
    pub rejected: u64,
    /// Connections open now.
    pub live: usize,
    /// Dial attempts that failed (each is retried as the real agent retries).
    pub failed: usize,
    /// Connections that ended before the stop (the server closed or the socket failed).
    pub dropped: usize,
    pub opens: u64,
    pub closes: u64,
    pub commands: u64,
}

#[derive(Debug)]
struct Shared {
    epoch: Instant,
    connected: AtomicUsize,
    reconnects: AtomicUsize,
    busy: AtomicU64,
    rejected: AtomicU64,
    live: AtomicUsize,
    failed: AtomicUsize,
    dropped: AtomicUsize,
    launched: AtomicUsize,
    opens: AtomicU64,
    closes: AtomicU64,
    commands: AtomicU64,
    /// Nanoseconds from `epoch` to the latest completed handshake.
    last_connect_ns: AtomicU64,
    measuring: AtomicBool,
    /// Whether the sampled connections ping (off while idle CPU is measured).
    pinging: AtomicBool,
    rtts: Mutex<Vec<Duration>>,
    handshakes: Mutex<Vec<Duration>>,
    first_error: Mutex<Option<String>>,
    first_drop: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only counters and sample lists are behind these locks; a panic elsewhere leaves them usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Shared {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            connected: AtomicUsize::new(0),
            reconnects: AtomicUsize::new(0),
            busy: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            launched: AtomicUsize::new(0),
            opens: AtomicU64::new(0),
            closes: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            last_connect_ns: AtomicU64::new(0),
            measuring: AtomicBool::new(false),
            pinging: AtomicBool::new(true),
            rtts: Mutex::new(Vec::new()),
            handshakes: Mutex::new(Vec::new()),
            first_error: Mutex::new(None),
            first_drop: Mutex::new(None),
        }
    }

    fn failed(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        lock(&self.first_error).get_or_insert(why);
    }

    fn connected(&self, handshake: Duration, first: bool) {
        if first {
            self.connected.fetch_add(1, Ordering::Relaxed);
            lock(&self.handshakes).push(handshake);
        } else {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.live.fetch_add(1, Ordering::Relaxed);
        self.last_connect_ns
            .fetch_max(nanos(self.epoch.elapsed()), Ordering::Relaxed);
    }

    fn pong(&self, payload: &[u8]) {
        let Ok(sent) = <[u8; 8]>::try_from(payload) else {
            return; // A pong to the server's own ping payload, or unsolicited: not ours.
        };
        let sent = Duration::from_nanos(u64::from_be_bytes(sent));
        if self.measuring.load(Ordering::Relaxed) {
            lock(&self.rtts).push(self.epoch.elapsed().saturating_sub(sent));
        }
    }
}

/// A running fleet of simulated agents.
#[derive(Debug)]
pub struct Fleet {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    launcher: JoinHandle<JoinSet<()>>,
    requested: usize,
}

/// How the ramp went.
#[derive(Debug, Clone, Copy)]
pub struct Ramp {
    pub requested: usize,
    pub connected: usize,
    pub failed: usize,
    /// From the first connect to the last completed handshake.
    pub secs: f64,
    pub rate_per_s: f64,
}

impl Fleet {
    /// Starts connecting `keys` at the configured rate; returns at once.
    #[must_use]
    pub fn start(opts: &SimOptions, keys: Vec<AgentKey>) -> Self {
        let shared = Arc::new(Shared::new());
        let (stop, stop_rx) = watch::channel(false);
        let requested = keys.len();
        let launcher = tokio::spawn(launch(
            Arc::new(opts.clone()),
            keys,
            Arc::clone(&shared),
            stop_rx,
        ));
        Self {
            shared,
            stop,
            launcher,
            requested,
        }
    }

    /// Waits until every connection attempt has succeeded or failed, or `deadline` passed
    /// since the start; `progress` is called about every two seconds with the counts.
    pub async fn wait_ramped(&self, deadline: Duration, mut progress: impl FnMut(Counts)) -> Ramp {
        let mut last_report = Instant::now();
        loop {
            let c = self.counts();
            if c.connected >= self.requested || self.shared.epoch.elapsed() >= deadline {
                break;
            }
            if last_report.elapsed() >= Duration::from_secs(2) {
                progress(c);
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let c = self.counts();
        let secs = self.shared.last_connect_ns.load(Ordering::Relaxed) as f64 / 1e9;
        Ramp {
            requested: self.requested,
            connected: c.connected,
            // Attempts still pending at the deadline count as failures.
            failed: self.requested - c.connected,
            secs,
            rate_per_s: if secs > 0.0 {
                c.connected as f64 / secs
            } else {
                0.0
            },
        }
    }

    #[must_use]
    pub fn counts(&self) -> Counts {
        let s = &self.shared;
        Counts {
            connected: s.connected.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
            busy: s.busy.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
            live: s.live.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            opens: s.opens.load(Ordering::Relaxed),
            closes: s.closes.load(Ordering::Relaxed),
            commands: s.commands.load(Ordering::Relaxed),
        }
    }

    /// Round trips are recorded only while measuring (the window at full load).
    pub fn set_measuring(&self, on: bool) {
        self.shared.measuring.store(on, Ordering::Relaxed);
    }

    /// Whether the sampled connections ping (they do from the start).
    pub fn set_pinging(&self, on: bool) {
        self.shared.pinging.store(on, Ordering::Relaxed);
    }

    /// The round trips recorded so far (and forgets them).
    #[must_use]
    pub fn take_rtts(&self) -> Vec<Duration> {
        std::mem::take(&mut *lock(&self.shared.rtts))
    }

    /// Seconds from the fleet's start to the latest completed handshake.
    #[must_use]
    pub fn last_connect_secs(&self) -> f64 {
        self.shared.last_connect_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Seconds since the fleet's start.
    #[must_use]
    pub fn now_secs(&self) -> f64 {
        self.shared.epoch.elapsed().as_secs_f64()
    }

    /// The handshakes of the agents' first connections.
    #[must_use]
    pub fn handshakes(&self) -> Vec<Duration> {
        lock(&self.shared.handshakes).clone()
    }

    /// The first connection failure, for the report.
    #[must_use]
    pub fn first_error(&self) -> Option<String> {
        lock(&self.shared.first_error).clone()
    }

    /// Why the first dropped connection ended.
    #[must_use]
    pub fn first_drop(&self) -> Option<String> {
        lock(&self.shared.first_drop).clone()
    }

    /// Closes every connection (a WebSocket close each), waiting at most `grace`.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let Ok(Ok(mut tasks)) = tokio::time::timeout(grace, self.launcher).await else {
            return;
        };
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tasks.abort_all();
        }
    }
}

async fn launch(
    opts: Arc<SimOptions>,
    keys: Vec<AgentKey>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let total = keys.len();
    let gap = Duration::from_secs_f64(1.0 / opts.ramp_per_sec.max(0.001));
    let permits = Arc::new(Semaphore::new(opts.max_in_flight.max(1)));
    // Sampled connections are spread evenly over the fleet.
    let sample_every = match opts.ping_sample {
        0 => usize::MAX,
        n => (total / n).max(1),
    };
    for (index, key) in keys.into_iter().enumerate() {
        if *stop.borrow() {
            break;
        }
        tokio::time::sleep_until(shared.epoch + gap.mul_f64(index as f64)).await;
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        shared.launched.fetch_add(1, Ordering::Relaxed);
        let sampled = index % sample_every == 0 && index / sample_every < opts.ping_sample;
        tasks.spawn(agent(
            index,
            key,
            Arc::clone(&opts),
            Arc::clone(&shared),
            stop.clone(),
            permit,
            sampled,
        ));
    }
    tasks
}

/// One simulated agent: dials, serves until the connection is lost, and redials by the real
/// agent's rule (`rmm_agent_runtime`'s [`Backoff`] with its default timings: full-jitter
/// exponential backoff, a 503's `Retry-After` honoured with jitter, a 401 retried slowly)
/// until the fleet stops.
async fn agent(
    index: usize,
    key: AgentKey,
    opts: Arc<SimOptions>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
    sampled: bool,
) {
    let ip = opts.bind_ips[index % opts.bind_ips.len()];
    let timings = AgentTimings::default();
    let mut backoff = Backoff::new(
        timings.backoff_base,
        timings.backoff_cap,
        timings.stable_after,
    );
    // The ramp's permit bounds the first attempt's handshakes in flight only.
    let mut permit = Some(permit);
    let mut first = true;
    loop {
        let started = Instant::now();
        let dialled =
            tokio::time::timeout(opts.connect_timeout, connect(&opts.target, ip, &key.key)).await;
        drop(permit.take());
        let delay = match dialled {
            Ok(Ok(socket)) => {
                shared.connected(started.elapsed(), first);
                first = false;
                let ended = serve(socket, index, &opts, &shared, stop.clone(), sampled).await;
                shared.live.fetch_sub(1, Ordering::Relaxed);
                let Some(why) = ended else { return };
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                lock(&shared.first_drop).get_or_insert(why);
                backoff.connection_lasted(started.elapsed());
                backoff.next_delay(random_unit())
            }
            Ok(Err(Dial::Busy(hint))) => {
                shared.busy.fetch_add(1, Ordering::Relaxed);
                backoff.after_busy(hint, random_unit())
            }
            Ok(Err(Dial::Rejected)) => {
                shared.rejected.fetch_add(1, Ordering::Relaxed);
                shared.failed("the server rejected the agent key (HTTP 401)".into());
                rejected_delay(timings.rejected_retry, random_unit())
            }
            Ok(Err(Dial::Failed(e))) => {
                shared.failed(format!("{e:#}"));
                backoff.next_delay(random_unit())
            }
            Err(_) => {
                shared.failed(format!(
                    "handshake took longer than {} s",
                    opts.connect_timeout.as_secs()
                ));
                backoff.next_delay(random_unit())
            }
        };
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Why a dial failed, as the real agent tells them apart.
enum Dial {
    /// 503, with the `Retry-After` hint if any.
    Busy(Option<Duration>),
    /// 401.
    Rejected,
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Dial {
    fn from(e: anyhow::Error) -> Self {
        Self::Failed(e)
    }
}

/// Binds a socket to `ip`, connects it to the server and upgrades it with the agent's key.
async fn connect(
    target: &Target,
    ip: Ipv4Addr,
    key: &str,
) -> Result<WebSocketStream<TcpStream>, Dial> {
    let socket = TcpSocket::new_v4().context("socket")?;
    socket
        .bind(SocketAddr::new(IpAddr::V4(ip), 0))
        .with_context(|| format!("bind {ip}"))?;
    let stream = socket
        .connect(target.addr)
        .await
        .with_context(|| format!("connect {} from {ip}", target.addr))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let mut request = target
        .url
        .as_str()
        .into_client_request()
        .context("request")?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {key}")
            .parse()
            .context("agent key is not a header value")?,
    );
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(match response.status() {
                StatusCode::SERVICE_UNAVAILABLE => Dial::Busy(
                    response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after),
                ),
                StatusCode::UNAUTHORIZED => Dial::Rejected,
                status => Dial::Failed(anyhow::anyhow!(
                    "the server answered the upgrade with HTTP {status}"
                )),
            })
        }
        Err(e) => Err(Dial::Failed(
            anyhow::Error::new(e).context("WebSocket handshake"),
        )),
    }
}

/// An agent's life: answer the server, heartbeat, ping when sampled, until stopped. Returns
/// why it ended when that was not the stop.
async fn serve(
    mut socket: WebSocketStream<TcpStream>,
    index: usize,
    opts: &SimOptions,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
    sampled: bool,
) -> Option<String> {
    // Phases spread by the golden ratio: no two agents' timers line up, whatever N is.
    let phase = |period: Duration| period.mul_f64((index as f64 * 0.618_033_988_75).fract());
    let now = Instant::now();
    let mut heartbeat = tokio::time::interval_at(now + phase(opts.heartbeat), opts.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ping = tokio::time::interval_at(now + phase(opts.ping_every), opts.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let beat = encode(&AgentMessage::Heartbeat(HeartbeatPayload {
        agent_version: Some("rmm-agent-sim".into()),
        hostname: Some(format!("sim-{index}")),
        os: Some("linux".into()),
        uptime_secs: None,
    }));
    // Like a real agent, say who we are at once.
    if let Err(e) = socket.send(Message::text(beat.clone())).await {
        return Some(format!("first heartbeat failed: {e}"));
    }
    // The output being sent for an `rmm-sim-emit` command (the watcher storm), if any.
    let mut emission: Option<Emission> = None;
    loop {
        let due = emission.as_ref().map_or_else(Instant::now, Emission::due);
        tokio::select! {
            () = tokio::time::sleep_until(due), if emission.is_some() => {
                let Some(e) = emission.as_mut() else { continue };
                let (frame, last) = e.next_frame();
                if let Err(e) = socket.send(Message::text(frame)).await {
                    return Some(format!("output write failed: {e}"));
                }
                if last {
                    emission = None;
                }
            }
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if let Some(asked) = Emission::asked(text.as_str()) {
                        shared.commands.fetch_add(1, Ordering::Relaxed);
                        emission = Some(asked);
                    } else if let Some(reply) = answer(text.as_str(), shared)
                        && let Err(e) = socket.send(Message::text(reply)).await
                    {
                        return Some(format!("write failed: {e}"));
                    }
                }
                Some(Ok(Message::Pong(payload))) => shared.pong(&payload),
                Some(Ok(Message::Close(frame))) => return Some(format!("server closed the connection: {frame:?}")),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Some(format!("socket error: {e}")),
                None => return Some("connection ended".into()),
            },
            _ = heartbeat.tick() => {
                if let Err(e) = socket.send(Message::text(beat.clone())).await {
                    return Some(format!("heartbeat failed: {e}"));
                }
            }
            _ = ping.tick(), if sampled => {
                if !shared.pinging.load(Ordering::Relaxed) {
                    continue;
                }
                let sent = nanos(shared.epoch.elapsed()).to_be_bytes();
                if let Err(e) = socket.send(Message::Ping(bytes::Bytes::copy_from_slice(&sent))).await {
                    return Some(format!("ping failed: {e}"));
                }
            }
            _ = stop.changed() => {
                let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
                return None;
            }
        }
    }
}

/// The reply to a server frame, if any.
fn answer(text: &str, shared: &Shared) -> Option<String> {
    match ServerMessage::decode(text) {
        Ok(ServerMessage::TunnelOpen { session_id, .. }) => {
            shared.opens.fetch_add(1, Ordering::Relaxed);
            Some(encode(&AgentMessage::TunnelReady { session_id }))
        }
        Ok(ServerMessage::TunnelClose { .. }) => {
            shared.closes.fetch_add(1, Ordering::Relaxed);
            None
        }
        Ok(ServerMessage::TunnelData {
            channel_id,
            data: TunnelDataPayload::Terminal { .. },
        }) => {
            shared.commands.fetch_add(1, Ordering::Relaxed);
            Some(encode(&AgentMessage::TunnelData {
                channel_id,
                data: TunnelDataPayload::TerminalOutput(TerminalOutput {
                    exit_code: Some(0),
                    ..TerminalOutput::default()
                }),
            }))
        }
        // Extensions the simulator does not advertise, and anything it cannot parse.
        Ok(_) | Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses_are_ranges_or_lists_of_loopback_addresses() {
        let ips = parse_bind_ips("127.0.0.1-127.0.0.3, 127.0.1.9").unwrap();
        assert_eq!(ips.len(), 4);
        assert_eq!(ips[2], Ipv4Addr::new(127, 0, 0, 3));
        assert!(parse_bind_ips("10.0.0.1").is_err());
        assert!(parse_bind_ips("127.0.0.5-127.0.0.1").is_err());
        assert!(parse_bind_ips("").is_err());
    }

    #[test]
    fn the_target_must_be_a_loopback_ws_url() {
        let t = Target::parse("ws://127.0.0.1:8080").unwrap();
        assert_eq!(t.url, "ws://127.0.0.1:8080/api/v1/agent/ws");
        assert_eq!(t.addr.port(), 8080);
        assert!(Target::parse("ws://192.168.1.1:8080").is_err());
        assert!(Target::parse("http://127.0.0.1:8080").is_err());
        assert!(Target::parse("ws://example.com").is_err());
    }

    #[test]
    fn opens_are_confirmed_and_commands_succeed() {
        let shared = Shared::new();
        let open = r#"{"type":"tunnel_open","payload":{"session_id":"s-1","tech_id":"7c9e6679-7425-40de-944b-e07fc1f90ae7"}}"#;
        assert_eq!(
            answer(open, &shared).unwrap(),
            r#"{"type":"tunnel_ready","payload":{"session_id":"s-1"}}"#
        );
        let run = r#"{"type":"tunnel_data","payload":{"channel_id":"c","data":{"type":"terminal","payload":{"command":"true"}}}}"#;
        assert!(answer(run, &shared).unwrap().contains(r#""exit_code":0"#));
        assert!(
            answer(
                r#"{"type":"tunnel_close","payload":{"session_id":"s-1"}}"#,
                &shared
            )
            .is_none()
        );
        assert!(answer("nonsense", &shared).is_none());
    }

    #[test]
    fn keys_files_round_trip() {
        let dir = std::env::temp_dir().join(format!("rmm-bench-keys-{}", std::process::id()));
        let keys = vec![
            AgentKey {
                id: "a".into(),
                key: "k1".into(),
            },
            AgentKey {
                id: "b".into(),
                key: "k2".into(),
            },
        ];
        write_keys(&dir, &keys).unwrap();
        assert_eq!(read_keys(&dir).unwrap(), keys);
        std::fs::remove_file(&dir).unwrap();
    }
}
