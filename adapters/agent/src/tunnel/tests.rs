use uuid::Uuid;

use super::*;

const S1: &str = "550e8400-e29b-41d4-a716-446655440000";
const S2: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

fn open(session: &str) -> ServerMessage {
    ServerMessage::TunnelOpen {
        session_id: session.to_owned(),
        tech_id: Uuid::from_u128(9),
    }
}

fn close(session: &str) -> ServerMessage {
    ServerMessage::TunnelClose {
        session_id: session.to_owned(),
    }
}

fn session(s: &str) -> SessionId {
    SessionId::parse(s).unwrap()
}

fn channel(id: &str) -> ChannelId {
    ChannelId::parse(id).unwrap()
}

fn terminal(channel: &str, timeout_secs: Option<u64>) -> ServerMessage {
    ServerMessage::TunnelData {
        channel_id: channel.to_owned(),
        data: TunnelDataPayload::Terminal {
            command: "ls".into(),
            timeout_secs,
            stdin: false,
            binary_output: false,
        },
    }
}

fn cancel(channel: &str) -> ServerMessage {
    ServerMessage::CommandCancel {
        channel_id: channel.to_owned(),
    }
}

fn error_on(channel: &str, error: &str) -> Vec<Action> {
    vec![Action::Send(AgentMessage::TunnelError {
        channel_id: channel.into(),
        error: error.into(),
    })]
}

#[test]
fn an_open_enters_tunnel_mode_and_answers_ready() {
    let mut state = TunnelState::default();
    assert_eq!(
        state.handle(open(S1)),
        vec![Action::Send(AgentMessage::TunnelReady {
            session_id: S1.into()
        })]
    );
    assert_eq!(
        state.mode(),
        AgentMode::Tunnel {
            session: session(S1)
        }
    );
}

#[test]
fn a_second_open_is_refused_on_its_own_session_and_the_first_tunnel_is_untouched() {
    let mut state = TunnelState::default();
    state.handle(open(S1));
    state.handle(terminal("terminal-1", None));
    let before = state.clone();
    let reply = state.handle(open(S2));
    assert!(matches!(
        reply.as_slice(),
        [Action::Send(AgentMessage::TunnelError { channel_id, error })] if channel_id == S2 && error.contains("busy")
    ));
    assert_eq!(state, before);
    // The same session again is a protocol error too, not a second ready.
    assert!(matches!(
        state.handle(open(S1)).as_slice(),
        [Action::Send(AgentMessage::TunnelError { channel_id, .. })] if channel_id == S1
    ));
    assert_eq!(state, before);
}

#[test]
fn a_close_returns_to_heartbeat_clears_the_channels_and_stops_every_command() {
    let mut state = TunnelState::default();
    state.handle(open(S1));
    state.handle(terminal("terminal-1", None));
    assert_eq!(state.handle(close(S1)), vec![Action::StopAll]);
    assert_eq!(state.mode(), AgentMode::Heartbeat);
    assert!(state.channels().is_empty());
    // And a new tunnel may open.
    assert!(matches!(
        state.handle(open(S2)).as_slice(),
        [Action::Send(AgentMessage::TunnelReady { .. })]
    ));
}

#[test]
fn a_close_of_another_session_or_in_heartbeat_mode_is_ignored() {
    let mut state = TunnelState::default();
    assert_eq!(state.handle(close(S1)), vec![]);
    assert_eq!(state, TunnelState::default());
    state.handle(open(S1));
    let before = state.clone();
    assert_eq!(state.handle(close(S2)), vec![]);
    assert_eq!(state.handle(close("not-a-uuid")), vec![]);
    assert_eq!(state, before);
}

#[test]
fn a_terminal_frame_in_a_tunnel_opens_its_channel_and_runs_with_the_frames_timeout() {
    let mut state = TunnelState::default();
    state.handle(open(S1));
    assert_eq!(
        state.handle(terminal("cmd-1", Some(30))),
        vec![Action::Run {
            channel: channel("cmd-1"),
            command: "ls".into(),
            timeout: Some(Duration::from_secs(30)),
            stdin: false,
            binary_output: false,
        }]
    );
    assert_eq!(
        state.handle(terminal("cmd-2", None)),
        vec![Action::Run {
            channel: channel("cmd-2"),
            command: "ls".into(),
            timeout: None,
            stdin: false,
            binary_output: false,
        }]
    );
    assert_eq!(state.channels().len(), 2);
    assert!(
        state
            .channels()
            .check(&channel("cmd-1"), ChannelKind::Terminal)
            .is_ok()
    );
}

#[test]
fn a_terminal_frame_outside_a_tunnel_is_refused_on_its_channel() {
    let mut idle = TunnelState::default();
    assert_eq!(
        idle.handle(terminal("terminal-1", None)),
        error_on("terminal-1", NO_TUNNEL)
    );
    assert!(idle.channels().is_empty());
    // A cancel outside a tunnel has nothing to kill.
    assert_eq!(idle.handle(cancel("terminal-1")), vec![]);
}

#[test]
fn a_duplicate_channel_the_limit_or_a_bad_id_is_refused_and_running_commands_stay() {
    let mut state = TunnelState::default();
    state.handle(open(S1));
    state.handle(terminal("cmd-1", None));
    assert_eq!(
        state.handle(terminal("cmd-1", None)),
        error_on("cmd-1", "channel cmd-1 is already open")
    );
    for n in 2..=MAX_CHANNELS {
        assert!(matches!(
            state.handle(terminal(&format!("cmd-{n}"), None)).as_slice(),
            [Action::Run { .. }]
        ));
    }
    assert_eq!(
        state.handle(terminal("cmd-x", None)),
        error_on(
            "cmd-x",
            &format!("too many open channels (limit {MAX_CHANNELS})")
        )
    );
    assert_eq!(
        state.handle(terminal("bad id!", None)),
        error_on("bad id!", "invalid channel id")
    );
    assert_eq!(state.channels().len(), MAX_CHANNELS);
    // A finished command frees its channel for the next one.
    assert!(state.release(&channel("cmd-1")));
    assert!(!state.release(&channel("cmd-1")));
    assert!(matches!(
        state.handle(terminal("cmd-x", None)).as_slice(),
        [Action::Run { .. }]
    ));
}

#[test]
fn output_frames_from_the_server_are_refused() {
    let mut state = TunnelState::default();
    state.handle(open(S1));
    let frame = ServerMessage::TunnelData {
        channel_id: "cmd-1".into(),
        data: TunnelDataPayload::TerminalOutput(rmm_protocol::TerminalOutput::default()),
    };
    assert!(matches!(
        state.handle(frame).as_slice(),
        [Action::Send(AgentMessage::TunnelError { channel_id, .. })] if channel_id == "cmd-1"
    ));
    assert!(state.channels().is_empty());
}

#[test]
fn a_cancel_targets_only_an_open_terminal_channel() {
    let mut state = TunnelState::default();
    state.handle(open(S1));
    state.handle(terminal("cmd-1", None));
    assert_eq!(
        state.handle(cancel("cmd-1")),
        vec![Action::Cancel(channel("cmd-1"))]
    );
    // The channel stays open until the command's final frame releases it.
    assert_eq!(state.channels().len(), 1);
    assert_eq!(state.handle(cancel("cmd-2")), vec![]);
    assert_eq!(state.handle(cancel("bad id!")), vec![]);
    state.release(&channel("cmd-1"));
    assert_eq!(state.handle(cancel("cmd-1")), vec![]);
}

#[test]
fn an_open_with_a_bad_session_id_is_refused_and_changes_nothing() {
    let mut state = TunnelState::default();
    assert!(matches!(
        state.handle(open("nope")).as_slice(),
        [Action::Send(AgentMessage::TunnelError { channel_id, error })] if channel_id == "nope" && error == "invalid session id"
    ));
    assert_eq!(state, TunnelState::default());
    let long = "x".repeat(10_000);
    assert!(matches!(
        state.handle(open(&long)).as_slice(),
        [Action::Send(AgentMessage::TunnelError { channel_id, .. })] if channel_id.len() == 128
    ));
}

fn upload(channel: &str, path: &str, offset: u64) -> ServerMessage {
    ServerMessage::FileUpload {
        channel_id: channel.to_owned(),
        path: path.to_owned(),
        offset,
    }
}

fn file_error_on(channel: &str, message: &str) -> Vec<Action> {
    vec![Action::Send(AgentMessage::FileError {
        channel_id: channel.into(),
        code: FileErrorCode::Io,
        message: message.into(),
    })]
}

fn data(channel: &str, offset: u64) -> DataFrame {
    DataFrame {
        channel_id: channel.into(),
        offset,
        data: bytes::Bytes::from_static(b"abc"),
    }
}

#[test]
fn each_file_request_opens_a_file_channel_and_starts_its_operation() {
    let mut state = TunnelState::default();
    state.handle(open(S1));
    let requests = [
        (
            upload("file-1", "/a", 7),
            FileOp::Upload {
                path: "/a".into(),
                offset: 7,
            },
        ),
        (
            ServerMessage::FileDownload {
                channel_id: "file-2".into(),
                path: "/b".into(),
                offset: 0,
            },
            FileOp::Download {
                path: "/b".into(),
                offset: 0,
            },
        ),
        (
            ServerMessage::FileList {
                channel_id: "file-3".into(),
                path: "/".into(),
            },
            FileOp::List { path: "/".into() },
        ),
        (
            ServerMessage::FileUploadStatus {
                channel_id: "file-4".into(),
                path: "/a".into(),
            },
            FileOp::UploadStatus { path: "/a".into() },
        ),
    ];
    for (n, (request, op)) in requests.into_iter().enumerate() {
        let id = format!("file-{}", n + 1);
        assert_eq!(
            state.handle(request),
            vec![Action::StartFile {
                channel: channel(&id),
                op
            }]
        );
        assert!(
            state
                .channels()
                .check(&channel(&id), ChannelKind::File)
                .is_ok()
        );
    }
    // Commands and transfers share the tunnel: a command runs beside them.
    assert!(matches!(
        state.handle(terminal("cmd-1", None)).as_slice(),
        [Action::Run { .. }]
    ));
    assert_eq!(state.channels().len(), 5);
}

#[test]
fn file_requests_outside_a_tunnel_or_on_a_taken_channel_are_file_errors() {
    let mut state = TunnelState::default();
    assert_eq!(
        state.handle(upload("file-1", "/a", 0)),
        file_error_on("file-1", NO_TUNNEL)
    );
    state.handle(open(S1));
    state.handle(terminal("cmd-1", None));
    assert_eq!(
        state.handle(upload("cmd-1", "/a", 0)),
        file_error_on("cmd-1", "channel cmd-1 is already open")
    );
    assert_eq!(
        state.handle(upload("bad id!", "/a", 0)),
        file_error_on("bad id!", "invalid channel id")
    );
    for n in 2..=MAX_CHANNELS {
        state.handle(upload(&format!("file-{n}"), "/a", 0));
    }
    assert_eq!(
        state.handle(upload("file-x", "/a", 0)),
        file_error_on(
            "file-x",
            &format!("too many open channels (limit {MAX_CHANNELS})")
        )
    );
}

#[test]
fn data_end_and_acks_go_to_the_operation_on_an_open_file_channel_only() {
    let mut state = TunnelState::default();
    state.handle(open(S1));
    state.handle(upload("file-1", "/a", 0));
    state.handle(terminal("cmd-1", None));
    assert_eq!(
        state.data_frame(data("file-1", 0)),
        vec![Action::FileInput {
            channel: channel("file-1"),
            input: FileInput::Data {
                offset: 0,
                data: bytes::Bytes::from_static(b"abc")
            }
        }]
    );
    let end = |id: &str| ServerMessage::FileUploadEnd {
        channel_id: id.into(),
        size: 3,
        sha256: None,
    };
    assert_eq!(
        state.handle(end("file-1")),
        vec![Action::FileInput {
            channel: channel("file-1"),
            input: FileInput::UploadEnd {
                size: 3,
                sha256: None
            }
        }]
    );
    let ack = |id: &str| ServerMessage::FileAck {
        channel_id: id.into(),
        offset: 9,
    };
    assert_eq!(
        state.handle(ack("file-1")),
        vec![Action::FileInput {
            channel: channel("file-1"),
            input: FileInput::Ack { offset: 9 }
        }]
    );
    // Late data and acks for no transfer are dropped without a word (data on a command's
    // channel is its stdin: the command decides); an end is answered, so a server that
    // missed the upload's error does not wait.
    assert_eq!(state.data_frame(data("file-9", 0)), vec![]);
    assert!(matches!(
        state.data_frame(data("cmd-1", 0)).as_slice(),
        [Action::Stdin { offset: 0, .. }]
    ));
    assert_eq!(state.handle(ack("file-9")), vec![]);
    assert_eq!(
        state.handle(end("file-9")),
        file_error_on("file-9", "no file transfer on this channel")
    );
}

#[test]
fn a_file_cancel_closes_the_channel_at_once_and_only_for_file_channels() {
    let mut state = TunnelState::default();
    state.handle(open(S1));
    state.handle(upload("file-1", "/a", 0));
    state.handle(terminal("cmd-1", None));
    let cancel_file = |id: &str| ServerMessage::FileCancel {
        channel_id: id.into(),
    };
    assert_eq!(
        state.handle(cancel_file("file-1")),
        vec![Action::CancelFile(channel("file-1"))]
    );
    assert_eq!(state.channels().len(), 1);
    // The id may be used again right away (the server's view: the transfer is over).
    assert!(matches!(
        state.handle(upload("file-1", "/a", 3)).as_slice(),
        [Action::StartFile { .. }]
    ));
    assert_eq!(state.handle(cancel_file("cmd-1")), vec![]);
    assert_eq!(state.handle(cancel_file("file-9")), vec![]);
    // A file channel is not a command: command_cancel does not reach it.
    assert_eq!(state.handle(cancel("file-1")), vec![]);
}

#[test]
fn a_tunnel_close_stops_the_transfers_with_the_commands() {
    let mut state = TunnelState::default();
    state.handle(open(S1));
    state.handle(upload("file-1", "/a", 0));
    assert_eq!(state.handle(close(S1)), vec![Action::StopAll]);
    assert!(state.channels().is_empty());
    assert_eq!(state.data_frame(data("file-1", 0)), vec![]);
}

#[test]
fn a_reset_drops_the_tunnel_and_hands_back_its_channels() {
    let mut state = TunnelState::default();
    state.handle(open(S1));
    state.handle(terminal("terminal-1", None));
    let closed = state.reset();
    assert_eq!(closed.len(), 1);
    assert_eq!(state, TunnelState::default());
}

fn pty_open(channel: &str) -> ServerMessage {
    ServerMessage::PtyOpen {
        channel_id: channel.to_owned(),
        cols: 100,
        rows: 30,
        term: "xterm-256color".into(),
        command: None,
    }
}

#[cfg(unix)]
#[test]
fn a_pty_open_opens_a_pty_channel_that_counts_like_a_command_and_routes_its_frames() {
    let mut idle = TunnelState::default();
    assert_eq!(idle.handle(pty_open("pty-1")), error_on("pty-1", NO_TUNNEL));
    assert!(idle.channels().is_empty());

    let mut state = TunnelState::default();
    state.handle(open(S1));
    assert_eq!(
        state.handle(pty_open("pty-1")),
        vec![Action::OpenPty(PtyRequest {
            channel: channel("pty-1"),
            cols: 100,
            rows: 30,
            term: "xterm-256color".into(),
            command: None,
        })]
    );
    assert!(
        state
            .channels()
            .check(&channel("pty-1"), ChannelKind::Pty)
            .is_ok()
    );
    assert_eq!(
        state.handle(pty_open("pty-1")),
        error_on("pty-1", "channel pty-1 is already open")
    );
    let to_pty = |input| {
        vec![Action::PtyInput {
            channel: channel("pty-1"),
            input,
        }]
    };
    assert_eq!(
        state.handle(ServerMessage::PtyResize {
            channel_id: "pty-1".into(),
            cols: 120,
            rows: 40
        }),
        to_pty(PtyInput::Resize {
            cols: 120,
            rows: 40
        })
    );
    assert_eq!(
        state.handle(ServerMessage::ChannelAck {
            channel_id: "pty-1".into(),
            offset: 7
        }),
        to_pty(PtyInput::Ack { offset: 7 })
    );
    let data = DataFrame {
        channel_id: "pty-1".into(),
        offset: 3,
        data: bytes::Bytes::from_static(b"ls\r"),
    };
    assert_eq!(
        state.data_frame(data.clone()),
        to_pty(PtyInput::Data {
            offset: 3,
            data: data.data.clone()
        })
    );
    let pty_close = || ServerMessage::PtyClose {
        channel_id: "pty-1".into(),
    };
    // The channel stays open until the terminal's `pty_exit` is queued.
    assert_eq!(state.handle(pty_close()), to_pty(PtyInput::Close));
    assert!(state.release(&channel("pty-1")));
    assert_eq!(state.handle(pty_close()), vec![]);
    assert_eq!(state.data_frame(data), vec![]);
    // Terminals and commands share the channel limit.
    for n in 1..MAX_CHANNELS {
        state.handle(terminal(&format!("cmd-{n}"), None));
    }
    assert!(matches!(
        state.handle(pty_open("pty-2")).as_slice(),
        [Action::OpenPty(_)]
    ));
    assert_eq!(
        state.handle(pty_open("pty-3")),
        error_on(
            "pty-3",
            &format!("too many open channels (limit {MAX_CHANNELS})")
        )
    );
    // `stdin_end` goes to a command, not to a terminal.
    let stdin_end = |id: &str| ServerMessage::StdinEnd {
        channel_id: id.into(),
    };
    assert_eq!(
        state.handle(stdin_end("cmd-1")),
        vec![Action::StdinEnd(channel("cmd-1"))]
    );
    assert_eq!(state.handle(stdin_end("pty-2")), vec![]);
    // A tunnel close stops them all.
    assert_eq!(state.handle(close(S1)), vec![Action::StopAll]);
}

#[cfg(not(unix))]
#[test]
fn a_pty_open_is_refused_where_terminals_are_not_built() {
    let mut state = TunnelState::default();
    state.handle(open(S1));
    assert_eq!(
        state.handle(pty_open("pty-1")),
        error_on("pty-1", PTY_UNSUPPORTED)
    );
    assert!(state.channels().is_empty());
}

#[test]
fn a_terminal_frame_with_stdin_runs_with_stdin() {
    let mut state = TunnelState::default();
    state.handle(open(S1));
    assert_eq!(
        state.handle(ServerMessage::TunnelData {
            channel_id: "cmd-1".into(),
            data: TunnelDataPayload::Terminal {
                command: "cat".into(),
                timeout_secs: None,
                stdin: true,
                binary_output: false,
            },
        }),
        vec![Action::Run {
            channel: channel("cmd-1"),
            command: "cat".into(),
            timeout: None,
            stdin: true,
            binary_output: false,
        }]
    );
}
