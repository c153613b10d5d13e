//! Runs the interactive terminals of a tunnel (the `pty` extension): one task per terminal, a
//! real PTY (the process in its own session, the PTY its controlling terminal), output in
//! binary data frames under the server's credit, input written in order and acknowledged,
//! resize by the window-size ioctl, and on close (or `tunnel_close`, or the connection lost)
//! SIGHUP to the process group, then SIGTERM, then SIGKILL. `pty_exit` follows the last output.
//!
//! Frames go into the connection's bounded queue ([`Event`]), like command output. It must not
//! know about the socket or the tunnel's rules: [`TunnelState`] decides what may run and routes
//! the server's input here.
//!
//! Unix only: Windows (ConPTY) is not built; the tunnel state refuses `pty_open` there and the
//! agent does not announce `pty`.
//!
//! [`TunnelState`]: super::TunnelState

#[cfg(unix)]
mod output;
#[cfg(unix)]
mod session;
#[cfg(unix)]
mod shell;

use std::collections::HashMap;

use rmm_domain::ChannelId;
use tokio::sync::{mpsc, oneshot, watch};

use crate::Event;
use crate::exec::KillTimings;
use crate::input::{InputReceiver, InputSender, input};
use crate::tunnel::{PtyInput, PtyRequest};

/// Identifies one terminal, so a late [`Event::TerminalEnded`] can never close a channel that
/// a newer terminal reuses.
pub type TerminalRunId = u64;

/// What the registry hands a terminal's task: everything but the input is "latest value"
/// state, so a flood of acks or resizes queues nothing.
#[derive(Debug)]
#[cfg_attr(not(unix), allow(dead_code))]
struct Control {
    /// Resolves (or is dropped) when the terminal must end: HUP, TERM, KILL.
    stop: oneshot::Receiver<()>,
    /// The server's last `channel_ack` of the output.
    acks: watch::Receiver<u64>,
    /// The latest size asked for (`cols`, `rows`).
    sizes: watch::Receiver<(u16, u16)>,
    input: InputReceiver,
}

/// The terminals running for one connection. Dropping it ends every one of them.
#[derive(Debug)]
pub struct Terminals {
    events: mpsc::Sender<Event>,
    timings: KillTimings,
    next: TerminalRunId,
    running: HashMap<TerminalRunId, Running>,
}

#[derive(Debug)]
struct Running {
    channel: ChannelId,
    stop: Option<oneshot::Sender<()>>,
    acks: watch::Sender<u64>,
    sizes: watch::Sender<(u16, u16)>,
    input: InputSender,
    /// Its tunnel is gone: it takes no more input and finishing releases nothing.
    detached: bool,
}

impl Terminals {
    #[must_use]
    pub fn new(events: mpsc::Sender<Event>, timings: KillTimings) -> Self {
        Self {
            events,
            timings,
            next: 0,
            running: HashMap::new(),
        }
    }

    /// Starts the terminal on its own task. The tunnel state has already opened its channel.
    pub fn start(&mut self, request: PtyRequest) {
        let id = self.next;
        self.next += 1;
        let (stop, stopped) = oneshot::channel();
        let (acks, acked) = watch::channel(0);
        let (sizes, sized) = watch::channel((request.cols, request.rows));
        let (sender, receiver) = input(request.channel.as_str());
        let control = Control {
            stop: stopped,
            acks: acked,
            sizes: sized,
            input: receiver,
        };
        let channel = request.channel.clone();
        let events = self.events.clone();
        let timings = self.timings;
        tokio::spawn(async move {
            run(request, &events, control, timings).await;
            // After `pty_exit` in the same queue: the channel is released only once the
            // server knows how the terminal ended.
            let _ = events.send(Event::TerminalEnded(id)).await;
        });
        self.running.insert(
            id,
            Running {
                channel,
                stop: Some(stop),
                acks,
                sizes,
                input: sender,
                detached: false,
            },
        );
    }

    /// Hands the server's frame to the terminal on `channel`, if one runs there.
    pub fn input(&mut self, channel: &ChannelId, input: PtyInput) {
        let Some(running) = self
            .running
            .values_mut()
            .find(|running| !running.detached && running.channel == *channel)
        else {
            return;
        };
        match input {
            PtyInput::Data { offset, data } => running.input.data(channel.as_str(), offset, data),
            PtyInput::Ack { offset } => {
                running.acks.send_if_modified(|acked| {
                    let newer = offset > *acked;
                    if newer {
                        *acked = offset;
                    }
                    newer
                });
            }
            PtyInput::Resize { cols, rows } => {
                let _ = running.sizes.send((cols, rows));
            }
            PtyInput::Close => running.close(),
        }
    }

    /// The tunnel closed or the connection ends: every terminal is hung up. Their `pty_exit`
    /// frames are still queued (sent if the socket is up); their channels are already gone.
    pub fn stop_all(&mut self) {
        for running in self.running.values_mut() {
            running.detached = true;
            running.close();
        }
    }

    /// Terminal `id` sent its last frame: the channel to release, unless its tunnel is gone.
    pub fn finished(&mut self, id: TerminalRunId) -> Option<ChannelId> {
        let running = self.running.remove(&id)?;
        (!running.detached).then_some(running.channel)
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.running.len()
    }
}

impl Running {
    fn close(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The task may have just ended on its own.
            let _ = stop.send(());
        }
    }
}

#[cfg(unix)]
async fn run(
    request: PtyRequest,
    out: &mpsc::Sender<Event>,
    control: Control,
    timings: KillTimings,
) {
    session::run(request, out, control, timings).await;
}

/// Where terminals are not built the tunnel state refuses `pty_open`; this is the backstop.
#[cfg(not(unix))]
async fn run(
    request: PtyRequest,
    out: &mpsc::Sender<Event>,
    _control: Control,
    _timings: KillTimings,
) {
    let refusal = rmm_protocol::AgentMessage::TunnelError {
        channel_id: request.channel.as_str().to_owned(),
        error: crate::tunnel::PTY_UNSUPPORTED.to_owned(),
    };
    let _ = out.send(Event::Frame(refusal)).await;
}
