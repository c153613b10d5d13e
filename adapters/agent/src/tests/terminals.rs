//! Interactive terminals (`pty`) and command stdin (`command-stdin`) over the real connection
//! loop: real PTYs, real shells, real process groups.

use rmm_protocol::DataFrame;
use rmm_protocol::limits::{STREAM_FRAME_DATA, STREAM_WINDOW, STREAM_WINDOW_FRAMES};
use serde_json::{Value, json};

use super::*;

type Ws = WebSocketStream<TcpStream>;

/// A frame from the agent, heartbeats and pings skipped; `None` when nothing came in `wait`.
async fn frame_within(ws: &mut Ws, wait: Duration) -> Option<Result<Value, DataFrame>> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await.ok()? {
            Some(Ok(Message::Text(t))) => {
                let value: Value = serde_json::from_str(&t).unwrap();
                if value["type"] != "heartbeat" {
                    return Some(Ok(value));
                }
            }
            Some(Ok(Message::Binary(b))) => return Some(Err(DataFrame::decode(b).unwrap())),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

async fn next_frame(ws: &mut Ws) -> Result<Value, DataFrame> {
    frame_within(ws, Duration::from_secs(10))
        .await
        .expect("a frame from the agent in time")
}

/// One terminal's output as the server sees it: offsets checked contiguous.
struct Term {
    channel: String,
    output: Vec<u8>,
    frames: u64,
}

impl Term {
    /// Opens a terminal of `cols` x `rows` running `command` (the login shell when `None`)
    /// and waits for `pty_ready`.
    async fn open(ws: &mut Ws, channel: &str, size: (u16, u16), command: Option<&str>) -> Self {
        let mut payload =
            json!({"channel_id":channel,"cols":size.0,"rows":size.1,"term":"xterm-256color"});
        if let Some(command) = command {
            payload["command"] = json!(command);
        }
        send_json(ws, json!({"type":"pty_open","payload":payload})).await;
        let ready = next_frame(ws).await.unwrap();
        assert_eq!(
            ready,
            json!({"type":"pty_ready","payload":{"channel_id":channel}})
        );
        Self {
            channel: channel.to_owned(),
            output: Vec::new(),
            frames: 0,
        }
    }

    fn take(&mut self, frame: DataFrame) {
        assert_eq!(frame.channel_id, self.channel);
        assert_eq!(
            frame.offset,
            self.output.len() as u64,
            "offsets are cumulative"
        );
        assert!(!frame.data.is_empty() && frame.data.len() <= STREAM_FRAME_DATA);
        self.output.extend_from_slice(&frame.data);
        self.frames += 1;
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }

    /// Output until it contains `needle`; JSON frames on the way are returned.
    async fn until(&mut self, ws: &mut Ws, needle: &str) -> Vec<Value> {
        let mut json = Vec::new();
        while !self.text().contains(needle) {
            match next_frame(ws).await {
                Ok(value) => json.push(value),
                Err(frame) => self.take(frame),
            }
        }
        json
    }

    /// Output until `pty_exit`: its payload.
    async fn exit(&mut self, ws: &mut Ws) -> Value {
        loop {
            match next_frame(ws).await {
                Ok(value) if value["type"] == "pty_exit" => {
                    assert_eq!(value["payload"]["channel_id"], self.channel.as_str());
                    return value["payload"].clone();
                }
                Ok(value) => panic!("unexpected {value}"),
                Err(frame) => self.take(frame),
            }
        }
    }

    async fn input(&self, ws: &mut Ws, offset: u64, bytes: &[u8]) {
        send_data(ws, &self.channel, offset, bytes).await;
    }

    async fn ack(&self, ws: &mut Ws) {
        send_json(ws, json!({"type":"channel_ack","payload":{"channel_id":self.channel,"offset":self.output.len()}})).await;
    }

    async fn close(&self, ws: &mut Ws) {
        send_json(
            ws,
            json!({"type":"pty_close","payload":{"channel_id":self.channel}}),
        )
        .await;
    }
}

async fn send_data(ws: &mut Ws, channel: &str, offset: u64, bytes: &[u8]) {
    let frame = DataFrame {
        channel_id: channel.to_owned(),
        offset,
        data: bytes::Bytes::copy_from_slice(bytes),
    };
    ws.send(Message::binary(frame.encode())).await.unwrap();
}

/// The first number printed in `text` (the `echo $$` of the commands below).
fn first_number(text: &str) -> i32 {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_terminal_is_a_real_pty_with_term_set_and_reports_its_exit_code() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let mut term = Term::open(
        &mut ws,
        "pty-1",
        (80, 24),
        Some("tty; echo \"T=$TERM\"; exit 5"),
    )
    .await;
    let exit = term.exit(&mut ws).await;
    assert_eq!(exit, json!({"channel_id":"pty-1","exit_code":5}));
    let text = term.text();
    assert!(text.starts_with("/dev/pts/"), "{text:?}");
    // The line discipline's output processing: "\n" becomes "\r\n".
    assert!(text.contains("T=xterm-256color\r\n"), "{text:?}");
    // The channel was released: its id runs again.
    let mut again = Term::open(&mut ws, "pty-1", (80, 24), Some("kill -9 $$")).await;
    assert_eq!(
        again.exit(&mut ws).await,
        json!({"channel_id":"pty-1","signal":9})
    );
    agent.abort();
}

#[tokio::test]
async fn stty_sees_the_opened_size_and_the_size_after_a_resize() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let mut term = Term::open(
        &mut ws,
        "pty-1",
        (100, 30),
        Some("stty size; read x; stty size"),
    )
    .await;
    term.until(&mut ws, "30 100\r\n").await;
    send_json(
        &mut ws,
        json!({"type":"pty_resize","payload":{"channel_id":"pty-1","cols":132,"rows":43}}),
    )
    .await;
    term.input(&mut ws, 0, b"\r").await;
    let acks = term.until(&mut ws, "43 132\r\n").await;
    assert_eq!(
        acks,
        vec![json!({"type":"channel_ack","payload":{"channel_id":"pty-1","offset":1}})]
    );
    assert_eq!(term.exit(&mut ws).await["exit_code"], 0);
    agent.abort();
}

#[tokio::test]
async fn input_is_written_in_order_acknowledged_and_echoed_through_cat() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let mut term = Term::open(&mut ws, "pty-1", (80, 24), Some("cat")).await;
    term.input(&mut ws, 0, b"hello ").await;
    term.input(&mut ws, 6, b"world\r").await;
    let mut acked = 0;
    // The terminal echoes the line as typed, then cat prints it back.
    while !term.text().contains("hello world\r\nhello world\r\n") || acked < 12 {
        match next_frame(&mut ws).await {
            Ok(ack) => {
                assert_eq!(ack["type"], "channel_ack", "{ack}");
                acked = ack["payload"]["offset"].as_u64().unwrap();
            }
            Err(frame) => term.take(frame),
        }
    }
    assert_eq!(acked, 12);
    // ^D at the start of a line: cat reads EOF and exits.
    term.input(&mut ws, 12, b"\x04").await;
    let exit = term.exit_skipping_acks(&mut ws).await;
    assert_eq!(exit["exit_code"], 0);
    agent.abort();
}

impl Term {
    /// Like [`Term::exit`], with the agent's input acks allowed on the way.
    async fn exit_skipping_acks(&mut self, ws: &mut Ws) -> Value {
        loop {
            match next_frame(ws).await {
                Ok(value) if value["type"] == "channel_ack" => {}
                Ok(value) if value["type"] == "pty_exit" => return value["payload"].clone(),
                Ok(value) => panic!("unexpected {value}"),
                Err(frame) => self.take(frame),
            }
        }
    }
}

#[tokio::test]
async fn without_a_command_the_login_shell_runs() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let mut term = Term::open(&mut ws, "pty-1", (80, 24), None).await;
    term.input(&mut ws, 0, b"echo \"zero=$0\"; exit 3\r").await;
    let exit = term.exit_skipping_acks(&mut ws).await;
    assert_eq!(exit["exit_code"], 3, "{}", term.text());
    // A login shell: argv[0] starts with a dash.
    assert!(term.text().contains("zero=-"), "{}", term.text());
    agent.abort();
}

#[tokio::test]
async fn a_close_hangs_up_the_whole_process_group() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let mut term = Term::open(
        &mut ws,
        "pty-1",
        (80, 24),
        Some("echo $$; sleep 1000 & sleep 1000"),
    )
    .await;
    term.until(&mut ws, "\r\n").await;
    let pgid = first_number(&term.text());
    // Both sleeps (the shell may have become the second one by exec).
    let mut waited = 0;
    while exec::tests::live_members(pgid).len() < 2 && waited < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    assert!(exec::tests::live_members(pgid).len() >= 2);
    term.close(&mut ws).await;
    assert_eq!(
        term.exit(&mut ws).await,
        json!({"channel_id":"pty-1","signal":1})
    );
    exec::tests::assert_group_gone(pgid).await;
    agent.abort();
}

#[tokio::test]
async fn a_process_that_ignores_the_hangup_gets_term_then_kill() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let mut term = Term::open(
        &mut ws,
        "pty-1",
        (80, 24),
        Some("trap '' HUP TERM; echo $$; sleep 1000 & wait"),
    )
    .await;
    term.until(&mut ws, "\r\n").await;
    let pgid = first_number(&term.text());
    let closed = tokio::time::Instant::now();
    term.close(&mut ws).await;
    assert_eq!(
        term.exit(&mut ws).await,
        json!({"channel_id":"pty-1","signal":9})
    );
    // HUP, the grace, TERM, the grace, KILL.
    assert!(closed.elapsed() >= 2 * fast().kill_grace);
    exec::tests::assert_group_gone(pgid).await;
    agent.abort();
}

#[tokio::test]
async fn a_member_ignoring_the_hangup_after_the_leader_died_gets_term_then_kill() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let mut term = Term::open(
        &mut ws,
        "pty-1",
        (80, 24),
        Some("echo $$; sh -c \"trap '' HUP TERM; echo armed; sleep 1000\" & sleep 1000"),
    )
    .await;
    // Closed only once the member ignores the signals (else the hangup would beat the trap).
    term.until(&mut ws, "armed\r\n").await;
    let pgid = first_number(&term.text());
    let closed = tokio::time::Instant::now();
    term.close(&mut ws).await;
    // The leader dies of the hangup; the member holding the PTY open is killed on schedule
    // (two graces), not left until the drain gives up.
    assert_eq!(term.exit(&mut ws).await["signal"], 1);
    let took = closed.elapsed();
    assert!(took >= 2 * fast().kill_grace, "{took:?}");
    assert!(took < crate::connection::KILL_DRAIN, "{took:?}");
    exec::tests::assert_group_gone(pgid).await;
    agent.abort();
}

#[tokio::test]
async fn closing_the_tunnel_or_losing_the_server_ends_the_terminals() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let mut term = Term::open(&mut ws, "pty-1", (80, 24), Some("echo $$; sleep 1000")).await;
    term.until(&mut ws, "\r\n").await;
    let pgid = first_number(&term.text());
    send_json(
        &mut ws,
        json!({"type":"tunnel_close","payload":{"session_id": SESSION}}),
    )
    .await;
    assert_eq!(term.exit(&mut ws).await["signal"], 1);
    exec::tests::assert_group_gone(pgid).await;
    agent.abort();

    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let mut term = Term::open(&mut ws, "pty-1", (80, 24), Some("echo $$; sleep 1000")).await;
    term.until(&mut ws, "\r\n").await;
    let pgid = first_number(&term.text());
    drop(ws);
    exec::tests::assert_group_gone(pgid).await;
    agent.abort();
}

#[tokio::test]
async fn output_stops_at_the_window_until_the_server_acknowledges() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let mut term = Term::open(&mut ws, "pty-1", (80, 24), Some("yes")).await;
    // No acks: the agent stops reading the PTY at the window, in bytes or in frames.
    let full = |term: &Term| {
        term.output.len() as u64 > STREAM_WINDOW - STREAM_FRAME_DATA as u64
            || term.frames == STREAM_WINDOW_FRAMES
    };
    while !full(&term) {
        term.take(next_frame(&mut ws).await.unwrap_err());
    }
    // (Bounded, so that an agent ignoring the window fails rather than streams forever.)
    while term.output.len() as u64 <= 2 * STREAM_WINDOW
        && let Some(frame) = frame_within(&mut ws, Duration::from_millis(300)).await
    {
        term.take(frame.unwrap_err());
    }
    let stalled = term.output.len() as u64;
    assert!(stalled <= STREAM_WINDOW, "{stalled} bytes in flight");
    assert!(term.frames <= STREAM_WINDOW_FRAMES);
    // It stays stopped.
    assert!(
        frame_within(&mut ws, Duration::from_millis(300))
            .await
            .is_none()
    );
    // An ack grants credit again: output resumes where it stopped.
    term.ack(&mut ws).await;
    term.take(next_frame(&mut ws).await.unwrap_err());
    assert!(term.output.len() as u64 > stalled);
    term.close(&mut ws).await;
    // The rest of the window may still come; then the exit. Ack as the server would.
    loop {
        term.ack(&mut ws).await;
        match next_frame(&mut ws).await {
            Ok(exit) => {
                assert_eq!(exit["type"], "pty_exit", "{exit}");
                break;
            }
            Err(frame) => term.take(frame),
        }
    }
    agent.abort();
}

fn command_with_stdin(channel: &str, command: &str, stdin: bool) -> Value {
    json!({"type":"tunnel_data","payload":{"channel_id":channel,"data":{"type":"terminal","payload":{"command":command,"stdin":stdin}}}})
}

#[tokio::test]
async fn a_command_with_stdin_reads_the_servers_bytes_until_stdin_end() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    send_json(&mut ws, command_with_stdin("cmd-1", "cat", true)).await;
    send_data(&mut ws, "cmd-1", 0, b"hello\n").await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(next_frame(&mut ws).await.unwrap());
    }
    seen.sort_by_key(|frame| frame["type"].as_str().unwrap().to_owned());
    assert_eq!(
        seen[0],
        json!({"type":"channel_ack","payload":{"channel_id":"cmd-1","offset":6}})
    );
    assert_eq!(seen[1]["payload"]["data"]["payload"]["stdout"], "hello\n");
    send_data(&mut ws, "cmd-1", 6, b"bye").await;
    send_json(
        &mut ws,
        json!({"type":"stdin_end","payload":{"channel_id":"cmd-1"}}),
    )
    .await;
    let mut stdout = String::new();
    loop {
        let frame = next_frame(&mut ws).await.unwrap();
        if frame["type"] == "channel_ack" {
            assert_eq!(frame["payload"]["offset"], 9);
            continue;
        }
        let output = &frame["payload"]["data"]["payload"];
        stdout.push_str(output["stdout"].as_str().unwrap_or_default());
        if !output["exit_code"].is_null() {
            assert_eq!(output["exit_code"], 0);
            break;
        }
    }
    assert_eq!(stdout, "bye");
    agent.abort();
}

#[tokio::test]
async fn a_command_without_stdin_reads_nothing_and_its_data_frames_are_dropped() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    send_json(
        &mut ws,
        command_with_stdin("cmd-1", "sleep 0.3; cat; echo end", false),
    )
    .await;
    send_data(&mut ws, "cmd-1", 0, b"hello\n").await;
    let (_, first) = next_output(&mut ws).await;
    // No ack, no echo: cat read /dev/null.
    assert_eq!(first["stdout"], "end\n");
    assert_eq!(next_output(&mut ws).await.1["exit_code"], 0);
    agent.abort();
}
