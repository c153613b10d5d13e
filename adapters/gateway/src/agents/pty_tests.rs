//! Terminals and command stdin through the gateway: a connected agent (its outbound queue read
//! by the test) and its frames fed to the same routing calls the connection task makes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rmm_application::{
    AgentGateway as _, ByteStream, GatewayError, OpenReply, PtyControl, PtyEvent, PtyLink, PtySpec,
    StdinError,
};
use rmm_domain::{
    AgentId, ChannelId, CommandId, SessionId, TermName, TermSize, TerminalId, UserId,
};
use rmm_protocol::limits::{STREAM_FRAME_DATA, STREAM_WINDOW, STREAM_WINDOW_FRAMES};
use rmm_protocol::{DataFrame, ServerMessage, TunnelDataPayload};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{Capabilities, OUTBOUND_QUEUE, Outbound, WsAgentGateway};

const FRAME: u64 = STREAM_FRAME_DATA as u64;
const WAIT: Duration = Duration::from_secs(5);

struct Agent {
    gateway: Arc<WsAgentGateway>,
    outbound: mpsc::Receiver<Outbound>,
    id: AgentId,
    generation: u64,
    session: SessionId,
}

fn agent_id() -> AgentId {
    AgentId::from_uuid(Uuid::from_u128(0xA))
}

/// A connected agent speaking `capabilities` with its tunnel open.
async fn connected(capabilities: Capabilities) -> Agent {
    let gateway = Arc::new(WsAgentGateway::default());
    let (tx, mut outbound) = mpsc::channel(OUTBOUND_QUEUE);
    let (id, session) = (agent_id(), SessionId::from_uuid(Uuid::from_u128(5)));
    let (generation, _) = gateway.register(id, tx, capabilities, "127.0.0.1".into());
    let opener = Arc::clone(&gateway);
    let open = tokio::spawn(async move {
        let tech = UserId::from_uuid(Uuid::from_u128(1));
        opener.open_tunnel(id, session, tech).await
    });
    assert!(matches!(
        outbound.recv().await,
        Some(Outbound::Message(m)) if matches!(*m, ServerMessage::TunnelOpen { .. })
    ));
    gateway.on_ready(id, generation, session);
    assert_eq!(open.await.unwrap(), Ok(OpenReply::Ready));
    Agent {
        gateway,
        outbound,
        id,
        generation,
        session,
    }
}

fn all() -> Capabilities {
    Capabilities {
        pty: true,
        command_stdin: true,
        ..Capabilities::default()
    }
}

fn spec() -> PtySpec {
    PtySpec {
        size: TermSize::new(80, 24).unwrap(),
        term: TermName::parse("xterm-256color").unwrap(),
        command: Some("top".into()),
    }
}

fn pty_channel() -> ChannelId {
    ChannelId::for_terminal(TerminalId::from_uuid(Uuid::from_u128(7)))
}

impl Agent {
    /// The next frame the server sent the agent.
    async fn next(&mut self) -> Outbound {
        tokio::time::timeout(WAIT, self.outbound.recv())
            .await
            .expect("a frame to the agent in time")
            .expect("the connection's queue is open")
    }

    async fn next_message(&mut self) -> ServerMessage {
        match self.next().await {
            Outbound::Message(message) => *message,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    async fn next_data(&mut self) -> DataFrame {
        match self.next().await {
            Outbound::Data(bytes) => DataFrame::decode(Bytes::from(bytes)).unwrap(),
            other => panic!("expected a data frame, got {other:?}"),
        }
    }

    fn quiet(&mut self) -> bool {
        self.outbound.try_recv().is_err()
    }

    /// Opens a terminal and takes its `pty_open`.
    async fn open(&mut self) -> (ChannelId, PtyLink) {
        let channel = pty_channel();
        let link = self
            .gateway
            .open_pty(self.id, self.session, &channel, &spec())
            .unwrap();
        let open = self.next_message().await;
        assert_eq!(
            open,
            ServerMessage::PtyOpen {
                channel_id: channel.to_string(),
                cols: 80,
                rows: 24,
                term: "xterm-256color".into(),
                command: Some("top".into()),
            }
        );
        (channel, link)
    }

    /// The agent sends output on `channel`.
    fn output(&self, channel: &ChannelId, offset: u64, data: &[u8]) {
        let frame = DataFrame {
            channel_id: channel.to_string(),
            offset,
            data: Bytes::copy_from_slice(data),
        };
        assert!(
            self.gateway
                .route_pty_output(self.id, self.generation, frame)
                .is_ok(),
            "a terminal's frame is routed to it"
        );
    }

    fn ack(&self, channel: &ChannelId, offset: u64) -> bool {
        self.gateway
            .on_channel_ack(self.id, self.generation, &channel.to_string(), offset)
    }

    fn open_channels(&self) -> usize {
        self.gateway
            .lock()
            .get(&self.id)
            .map_or(0, |c| c.channels.len())
    }
}

async fn event(link: &mut PtyLink) -> Option<PtyEvent> {
    tokio::time::timeout(WAIT, link.events.recv())
        .await
        .expect("an event in time")
}

#[tokio::test]
async fn a_terminal_opens_only_on_an_agent_that_speaks_pty_in_the_sessions_tunnel() {
    let agent = connected(Capabilities::default()).await;
    let refused = agent
        .gateway
        .open_pty(agent.id, agent.session, &pty_channel(), &spec());
    assert_eq!(refused.unwrap_err(), GatewayError::Unsupported);
    assert_eq!(agent.open_channels(), 0);

    let mut agent = connected(all()).await;
    let other = SessionId::from_uuid(Uuid::from_u128(6));
    let refused = agent
        .gateway
        .open_pty(agent.id, other, &pty_channel(), &spec());
    assert_eq!(refused.unwrap_err(), GatewayError::NotConnected);
    let (channel, _link) = agent.open().await;
    let again = agent
        .gateway
        .open_pty(agent.id, agent.session, &channel, &spec());
    assert_eq!(
        again.unwrap_err(),
        GatewayError::Busy,
        "the channel is taken"
    );
    assert_eq!(agent.open_channels(), 1);
}

#[tokio::test]
async fn ready_output_and_exit_reach_the_application_and_the_channel_is_released() {
    let mut agent = connected(all()).await;
    let (channel, mut link) = agent.open().await;
    let id = channel.to_string();
    assert!(agent.gateway.on_pty_ready(agent.id, agent.generation, &id));
    agent.output(&channel, 0, b"hello ");
    agent.output(&channel, 6, b"world");
    assert!(
        agent
            .gateway
            .on_pty_exit(agent.id, agent.generation, &id, Some(5), None)
    );
    assert_eq!(event(&mut link).await, Some(PtyEvent::Ready));
    assert_eq!(
        event(&mut link).await,
        Some(PtyEvent::Output(Bytes::from_static(b"hello ")))
    );
    assert_eq!(
        event(&mut link).await,
        Some(PtyEvent::Output(Bytes::from_static(b"world")))
    );
    assert_eq!(
        event(&mut link).await,
        Some(PtyEvent::Exit {
            exit_code: Some(5),
            signal: None
        })
    );
    assert_eq!(
        event(&mut link).await,
        None,
        "the events end after the exit"
    );
    assert_eq!(agent.open_channels(), 0);
    // The control task ended with the terminal; nothing is sent for it any more.
    tokio::time::timeout(WAIT, link.control.closed())
        .await
        .unwrap();
    assert!(
        !agent.gateway.on_pty_ready(agent.id, agent.generation, &id),
        "a frame on the closed channel is not routed"
    );
    assert!(agent.quiet());
}

#[tokio::test]
async fn a_frame_at_the_wrong_offset_fails_and_closes_the_terminal() {
    let mut agent = connected(all()).await;
    let (channel, mut link) = agent.open().await;
    agent.output(&channel, 0, b"abc");
    agent.output(&channel, 4, b"d");
    assert_eq!(
        event(&mut link).await,
        Some(PtyEvent::Output(Bytes::from_static(b"abc")))
    );
    match event(&mut link).await {
        Some(PtyEvent::Failed(why)) => assert!(why.contains("offset 4, expected 3"), "{why}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(event(&mut link).await, None);
    assert_eq!(
        agent.next_message().await,
        ServerMessage::PtyClose {
            channel_id: channel.to_string()
        }
    );
    // Draining: later output is dropped quietly, the exit releases the channel.
    agent.output(&channel, 5, b"e");
    assert_eq!(agent.open_channels(), 1);
    let id = channel.to_string();
    assert!(
        agent
            .gateway
            .on_pty_exit(agent.id, agent.generation, &id, None, Some(1))
    );
    assert_eq!(agent.open_channels(), 0);
    // The application's close after that sends nothing more.
    drop(link);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(agent.quiet());
}

/// Sends `frames` output frames of `size` bytes from `offset`; the offset after them.
fn flood(agent: &Agent, channel: &ChannelId, offset: u64, frames: u64, size: u64) -> u64 {
    let data = vec![b'y'; usize::try_from(size).unwrap()];
    (0..frames).fold(offset, |offset, _| {
        agent.output(channel, offset, &data);
        offset + size
    })
}

#[tokio::test]
async fn output_beyond_the_granted_credit_is_a_violation() {
    let mut agent = connected(all()).await;
    let (channel, mut link) = agent.open().await;
    // The whole byte window and one frame more are allowed.
    let end = flood(&agent, &channel, 0, STREAM_WINDOW / FRAME + 1, FRAME);
    // The application grants 64 KiB: the agent may send one more frame.
    link.acks.send(FRAME).unwrap();
    assert_eq!(
        agent.next_message().await,
        ServerMessage::ChannelAck {
            channel_id: channel.to_string(),
            offset: FRAME
        }
    );
    let end = flood(&agent, &channel, end, 1, FRAME);
    for _ in 0..=(STREAM_WINDOW / FRAME + 1) {
        assert!(matches!(event(&mut link).await, Some(PtyEvent::Output(_))));
    }
    // One byte more is over.
    flood(&agent, &channel, end, 1, 1);
    match event(&mut link).await {
        Some(PtyEvent::Failed(why)) => assert!(why.contains("exceeded its credit"), "{why}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(event(&mut link).await, None);
    assert_eq!(
        agent.next_message().await,
        ServerMessage::PtyClose {
            channel_id: channel.to_string()
        }
    );
}

#[tokio::test]
async fn too_many_small_frames_are_a_violation_and_acks_are_clamped_to_what_arrived() {
    let mut agent = connected(all()).await;
    let (channel, mut link) = agent.open().await;
    let end = flood(&agent, &channel, 0, STREAM_WINDOW_FRAMES, 1);
    for _ in 0..STREAM_WINDOW_FRAMES {
        assert!(matches!(event(&mut link).await, Some(PtyEvent::Output(_))));
    }
    // An ack beyond what arrived grants only what arrived.
    link.acks.send(u64::MAX).unwrap();
    assert_eq!(
        agent.next_message().await,
        ServerMessage::ChannelAck {
            channel_id: channel.to_string(),
            offset: STREAM_WINDOW_FRAMES
        }
    );
    let end = flood(&agent, &channel, end, STREAM_WINDOW_FRAMES, 1);
    flood(&agent, &channel, end, 1, 1);
    let mut outputs = 0;
    let failure = loop {
        match event(&mut link).await {
            Some(PtyEvent::Output(_)) => outputs += 1,
            Some(PtyEvent::Failed(why)) => break why,
            other => panic!("expected output then a failure, got {other:?}"),
        }
    };
    assert_eq!(outputs, STREAM_WINDOW_FRAMES);
    assert!(failure.contains("257 frames"), "{failure}");
}

#[tokio::test]
async fn an_agent_filling_the_event_queue_is_cut_off() {
    let mut agent = connected(all()).await;
    let (channel, mut link) = agent.open().await;
    // The application acks without reading its events (it should not): the queue fills.
    let mut end = 0;
    for _ in 0..2 {
        end = flood(&agent, &channel, end, 128, 1);
        link.acks.send(end).unwrap();
        assert!(matches!(
            agent.next_message().await,
            ServerMessage::ChannelAck { .. }
        ));
    }
    flood(
        &agent,
        &channel,
        end,
        super::PTY_EVENTS_QUEUE as u64 - end + 1,
        1,
    );
    assert!(matches!(
        agent.next_message().await,
        ServerMessage::PtyClose { .. }
    ));
    let mut outputs = 0;
    while let Some(PtyEvent::Output(_)) = event(&mut link).await {
        outputs += 1;
    }
    assert_eq!(
        outputs,
        super::PTY_EVENTS_QUEUE,
        "no room was left for Failed"
    );
}

#[tokio::test]
async fn input_is_split_into_frames_and_held_within_the_window_while_acks_pass() {
    let mut agent = connected(all()).await;
    let (channel, link) = agent.open().await;
    let input: Vec<u8> = (0..3 * STREAM_WINDOW).map(|i| (i % 251) as u8).collect();
    link.control
        .send(PtyControl::Input(Bytes::from(input.clone())))
        .await
        .unwrap();
    let mut received = Vec::new();
    for _ in 0..STREAM_WINDOW / FRAME {
        let frame = agent.next_data().await;
        assert_eq!(frame.channel_id, channel.to_string());
        assert_eq!(frame.offset, received.len() as u64);
        assert_eq!(frame.data.len() as u64, FRAME);
        received.extend_from_slice(&frame.data);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(agent.quiet(), "nothing beyond the window before an ack");
    // Past a window of held input the task takes no more controls: the sender waits...
    link.control
        .send(PtyControl::Resize(TermSize::new(100, 30).unwrap()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(agent.quiet(), "the resize waits behind the held input");
    // ... unless the agent waits for an output ack: then acks are not stuck behind input.
    flood(&agent, &channel, 0, STREAM_WINDOW / FRAME, FRAME);
    assert_eq!(
        agent.next_message().await,
        ServerMessage::PtyResize {
            channel_id: channel.to_string(),
            cols: 100,
            rows: 30
        }
    );
    link.acks.send(FRAME).unwrap();
    assert!(matches!(
        agent.next_message().await,
        ServerMessage::ChannelAck { offset: FRAME, .. }
    ));
    // Each ack lets as much through as it freed.
    while (received.len() as u64) < 3 * STREAM_WINDOW {
        assert!(agent.ack(&channel, received.len() as u64 - STREAM_WINDOW + FRAME));
        let frame = agent.next_data().await;
        assert_eq!(frame.offset, received.len() as u64);
        received.extend_from_slice(&frame.data);
        assert!(agent.quiet());
    }
    assert_eq!(received, input);
}

#[tokio::test]
async fn close_is_sent_once_and_dropping_the_control_closes_the_terminal() {
    let mut agent = connected(all()).await;
    let (channel, link) = agent.open().await;
    link.close.send(true).unwrap();
    link.control
        .send(PtyControl::Input(Bytes::from_static(b"late")))
        .await
        .unwrap();
    drop(link);
    assert_eq!(
        agent.next_message().await,
        ServerMessage::PtyClose {
            channel_id: channel.to_string()
        }
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(agent.quiet(), "no input after a close, and one pty_close");

    let id = channel.to_string();
    agent
        .gateway
        .on_pty_exit(agent.id, agent.generation, &id, None, Some(1));
    let (channel, link) = agent.open().await;
    drop(link.control);
    assert_eq!(
        agent.next_message().await,
        ServerMessage::PtyClose {
            channel_id: channel.to_string()
        }
    );
}

#[tokio::test]
async fn a_refused_terminal_fails_with_the_agents_error() {
    let mut agent = connected(all()).await;
    let (channel, mut link) = agent.open().await;
    let id = channel.to_string();
    assert!(
        agent
            .gateway
            .on_pty_error(agent.id, agent.generation, &id, "no shell")
    );
    assert_eq!(
        event(&mut link).await,
        Some(PtyEvent::Failed("no shell".into()))
    );
    assert_eq!(event(&mut link).await, None);
    assert_eq!(agent.open_channels(), 0);
}

#[tokio::test]
async fn a_closed_tunnel_a_gone_agent_or_a_released_channel_ends_the_terminal() {
    let mut agent = connected(all()).await;
    let (_, mut link) = agent.open().await;
    agent.gateway.close_tunnel(agent.id, agent.session);
    assert_eq!(event(&mut link).await, None);
    tokio::time::timeout(WAIT, link.control.closed())
        .await
        .unwrap();

    let mut agent = connected(all()).await;
    let (_, mut link) = agent.open().await;
    agent.gateway.unregister(agent.id, agent.generation);
    assert_eq!(event(&mut link).await, None);

    let mut agent = connected(all()).await;
    let (channel, mut link) = agent.open().await;
    agent.gateway.release_channel(agent.id, &channel);
    assert_eq!(event(&mut link).await, None);
    assert_eq!(
        agent.next_message().await,
        ServerMessage::PtyClose {
            channel_id: channel.to_string()
        }
    );
    assert_eq!(agent.open_channels(), 0);
}

fn cmd_channel() -> ChannelId {
    ChannelId::for_command(CommandId::from_uuid(Uuid::from_u128(9)))
}

/// A request body fed by the test.
fn body() -> (mpsc::Sender<Result<Bytes, std::io::Error>>, ByteStream) {
    let (tx, rx) = mpsc::channel(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (tx, Box::pin(stream))
}

impl Agent {
    async fn command(&mut self, stdin: bool) -> Result<ChannelId, GatewayError> {
        let channel = cmd_channel();
        self.gateway
            .send_command(self.id, self.session, &channel, "cat", 0, stdin)?;
        match self.next_message().await {
            ServerMessage::TunnelData {
                data: TunnelDataPayload::Terminal { stdin: sent, .. },
                ..
            } => assert_eq!(sent, stdin),
            other => panic!("expected the command, got {other:?}"),
        }
        Ok(channel)
    }

    fn feed(&self, channel: &ChannelId) -> (mpsc::Sender<Result<Bytes, std::io::Error>>, Feed) {
        let (tx, mut stream) = body();
        let (gateway, id, channel) = (Arc::clone(&self.gateway), self.id, channel.clone());
        let feed =
            tokio::spawn(async move { gateway.command_stdin(id, &channel, &mut stream).await });
        (tx, feed)
    }
}

type Feed = tokio::task::JoinHandle<Result<u64, StdinError>>;

#[tokio::test]
async fn stdin_needs_the_capability_and_a_command_started_with_it() {
    let mut agent = connected(Capabilities::default()).await;
    let refused =
        agent
            .gateway
            .send_command(agent.id, agent.session, &cmd_channel(), "cat", 0, true);
    assert_eq!(refused, Err(GatewayError::Unsupported));
    assert_eq!(agent.open_channels(), 0);
    let channel = agent.command(false).await.unwrap();
    let (_tx, feed) = agent.feed(&channel);
    assert_eq!(feed.await.unwrap(), Err(StdinError::Closed));
}

#[tokio::test]
async fn stdin_streams_within_the_window_ends_and_waits_for_the_last_ack() {
    let mut agent = connected(all()).await;
    let channel = agent.command(true).await.unwrap();
    let (tx, feed) = agent.feed(&channel);
    // A second feed of the same stdin is refused while the first runs.
    let (_tx2, second) = agent.feed(&channel);
    assert_eq!(second.await.unwrap(), Err(StdinError::Closed));
    let total = STREAM_WINDOW + 3 * FRAME + 10;
    let input: Vec<u8> = (0..total).map(|i| (i % 253) as u8).collect();
    for chunk in input.chunks(100_000) {
        tx.send(Ok(Bytes::copy_from_slice(chunk))).await.unwrap();
    }
    drop(tx);
    let mut received = Vec::new();
    while (received.len() as u64) < STREAM_WINDOW {
        let frame = agent.next_data().await;
        assert_eq!(frame.offset, received.len() as u64);
        assert!(frame.data.len() as u64 <= FRAME);
        received.extend_from_slice(&frame.data);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(agent.quiet(), "held at the window");
    assert!(agent.ack(&channel, STREAM_WINDOW));
    let end = loop {
        match agent.next().await {
            Outbound::Data(bytes) => {
                let frame = DataFrame::decode(Bytes::from(bytes)).unwrap();
                assert_eq!(frame.offset, received.len() as u64);
                received.extend_from_slice(&frame.data);
            }
            Outbound::Message(message) => break *message,
            Outbound::Close(why) => panic!("closed: {why}"),
        }
    };
    assert_eq!(
        end,
        ServerMessage::StdinEnd {
            channel_id: channel.to_string()
        }
    );
    assert_eq!(received, input);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!feed.is_finished(), "waits for the last ack");
    assert!(agent.ack(&channel, total));
    assert_eq!(feed.await.unwrap(), Ok(total));
    // Fed once.
    let (_tx, again) = agent.feed(&channel);
    assert_eq!(again.await.unwrap(), Err(StdinError::Closed));
}

#[tokio::test]
async fn a_broken_body_ends_stdin_and_reports_the_abort() {
    let mut agent = connected(all()).await;
    let channel = agent.command(true).await.unwrap();
    let (tx, feed) = agent.feed(&channel);
    tx.send(Ok(Bytes::from_static(b"partial"))).await.unwrap();
    tx.send(Err(std::io::Error::other("client went away")))
        .await
        .unwrap();
    assert_eq!(agent.next_data().await.data, Bytes::from_static(b"partial"));
    assert_eq!(
        agent.next_message().await,
        ServerMessage::StdinEnd {
            channel_id: channel.to_string()
        }
    );
    match feed.await.unwrap() {
        Err(StdinError::ClientAborted(why)) => assert!(why.contains("client went away")),
        other => panic!("expected an abort, got {other:?}"),
    }
}

#[tokio::test]
async fn a_command_ending_or_an_agent_leaving_stops_its_stdin() {
    let mut agent = connected(all()).await;
    let channel = agent.command(true).await.unwrap();
    let (tx, feed) = agent.feed(&channel);
    tx.send(Ok(Bytes::from(vec![0; 2 * STREAM_WINDOW as usize])))
        .await
        .unwrap();
    for _ in 0..STREAM_WINDOW / FRAME {
        agent.next_data().await;
    }
    // The command's last output closes its channel.
    let session = agent
        .gateway
        .accept_on_channel(agent.id, agent.generation, &channel, true);
    assert_eq!(session, Some(agent.session));
    assert_eq!(feed.await.unwrap(), Err(StdinError::Closed));
    assert!(!agent.ack(&channel, 1), "no stdin on the channel any more");

    let mut agent = connected(all()).await;
    let channel = agent.command(true).await.unwrap();
    let (tx, feed) = agent.feed(&channel);
    tx.send(Ok(Bytes::from(vec![0; 2 * STREAM_WINDOW as usize])))
        .await
        .unwrap();
    for _ in 0..STREAM_WINDOW / FRAME {
        agent.next_data().await;
    }
    agent.gateway.unregister(agent.id, agent.generation);
    assert_eq!(feed.await.unwrap(), Err(StdinError::AgentGone));
}

#[tokio::test(start_paused = true)]
async fn an_unacknowledged_end_reports_what_was_acknowledged_after_the_timeout() {
    let mut agent = connected(all()).await;
    let channel = agent.command(true).await.unwrap();
    let (tx, feed) = agent.feed(&channel);
    tx.send(Ok(Bytes::from_static(b"0123456789")))
        .await
        .unwrap();
    drop(tx);
    agent.next_data().await;
    assert!(matches!(
        agent.next_message().await,
        ServerMessage::StdinEnd { .. }
    ));
    assert!(agent.ack(&channel, 4));
    let started = tokio::time::Instant::now();
    assert_eq!(feed.await.unwrap(), Ok(4));
    assert!(started.elapsed() >= super::STDIN_FINAL_ACK_TIMEOUT - Duration::from_secs(1));
}

#[test]
fn the_pty_and_command_stdin_capabilities_are_parsed() {
    let parsed = Capabilities::parse(Some("file-transfer, pty ,command-stdin"));
    assert!(parsed.pty && parsed.command_stdin && parsed.file_transfer);
    let parsed = Capabilities::parse(Some("ptyx,command-timeout"));
    assert!(!parsed.pty && !parsed.command_stdin && parsed.command_timeout);
}
