//! Wire-format tests: every message has its documented shape and round-trips.

use serde_json::json;

use super::*;

fn roundtrip_server(expected: serde_json::Value) {
    let message: ServerMessage = serde_json::from_value(expected.clone()).unwrap();
    assert_eq!(serde_json::to_value(&message).unwrap(), expected);
}

fn roundtrip_agent(expected: serde_json::Value) {
    let message = AgentMessage::decode(&expected.to_string()).unwrap();
    assert_eq!(serde_json::to_value(&message).unwrap(), expected);
}

#[test]
fn the_reference_examples_round_trip_exactly() {
    roundtrip_server(
        json!({"type":"tunnel_open","payload":{"session_id":"550e8400-e29b-41d4-a716-446655440000","tech_id":"7c9e6679-7425-40de-944b-e07fc1f90ae7"}}),
    );
    roundtrip_server(
        json!({"type":"tunnel_close","payload":{"session_id":"550e8400-e29b-41d4-a716-446655440000"}}),
    );
    roundtrip_server(
        json!({"type":"tunnel_data","payload":{"channel_id":"terminal-1","data":{"type":"terminal","payload":{"command":"ls -la /home"}}}}),
    );
    roundtrip_agent(
        json!({"type":"tunnel_ready","payload":{"session_id":"550e8400-e29b-41d4-a716-446655440000"}}),
    );
    roundtrip_agent(
        json!({"type":"tunnel_data","payload":{"channel_id":"terminal-1","data":{"type":"terminal_output","payload":{"stdout":"total 8\n","stderr":"","exit_code":0}}}}),
    );
    roundtrip_agent(
        json!({"type":"tunnel_data","payload":{"channel_id":"terminal-1","data":{"type":"terminal_output","payload":{"stdout":"","stderr":"","exit_code":null}}}}),
    );
    roundtrip_agent(
        json!({"type":"tunnel_error","payload":{"channel_id":"terminal-1","error":"Failed to execute command: No such file or directory"}}),
    );
}

#[test]
fn reference_frames_are_sent_without_extension_fields() {
    let frame = ServerMessage::TunnelData {
        channel_id: "terminal-1".into(),
        data: TunnelDataPayload::Terminal {
            command: "ls -la".into(),
            timeout_secs: None,
            stdin: false,
            binary_output: false,
        },
    };
    assert_eq!(
        encode(&frame),
        r#"{"type":"tunnel_data","payload":{"channel_id":"terminal-1","data":{"type":"terminal","payload":{"command":"ls -la"}}}}"#
    );
    roundtrip_server(
        json!({"type":"tunnel_data","payload":{"channel_id":"c","data":{"type":"terminal","payload":{"command":"x","timeout_secs":5}}}}),
    );
    roundtrip_server(json!({"type":"command_cancel","payload":{"channel_id":"c"}}));
}

#[test]
fn output_that_is_not_utf8_travels_losslessly_beside_a_readable_string() {
    let chunk = TerminalOutput::chunk(b"\xff\xfeabc\x80", "héllo".as_bytes());
    assert_eq!(chunk.stdout, "\u{fffd}\u{fffd}abc\u{fffd}");
    assert_eq!(chunk.stdout_b64.as_deref(), Some("//5hYmOA"));
    assert_eq!(
        (chunk.stderr.as_str(), chunk.stderr_b64.as_deref()),
        ("héllo", None)
    );
    let wire = encode(&chunk);
    let back: TerminalOutput = serde_json::from_str(&wire).unwrap();
    assert_eq!(
        back.bytes().unwrap(),
        (b"\xff\xfeabc\x80".to_vec(), "héllo".as_bytes().to_vec())
    );
    let bad = TerminalOutput {
        stdout_b64: Some("!!".into()),
        ..TerminalOutput::default()
    };
    assert!(bad.bytes().is_err());
}

#[test]
fn data_frames_round_trip_and_reject_short_input() {
    let frame = DataFrame {
        channel_id: "file-1".into(),
        offset: 1 << 40,
        data: bytes::Bytes::from_static(b"\x00\xffdata"),
    };
    let wire = frame.encode();
    assert_eq!(wire[0], 6);
    assert_eq!(
        DataFrame::decode(bytes::Bytes::from(wire.clone())).unwrap(),
        frame
    );
    assert_eq!(
        DataFrame::decode(bytes::Bytes::from(wire[..10].to_vec())),
        Err(BadDataFrame)
    );
    assert_eq!(DataFrame::decode(bytes::Bytes::new()), Err(BadDataFrame));
}

#[test]
fn file_messages_have_the_documented_shapes() {
    roundtrip_server(
        json!({"type":"file_upload","payload":{"channel_id":"f","path":"/tmp/x","offset":0}}),
    );
    roundtrip_server(
        json!({"type":"file_upload_end","payload":{"channel_id":"f","size":3,"sha256":"ab"}}),
    );
    roundtrip_agent(
        json!({"type":"file_error","payload":{"channel_id":"f","code":"not_found","message":"no such file"}}),
    );
    roundtrip_agent(
        json!({"type":"file_listing","payload":{"channel_id":"f","path":"/","entries":[{"name":"etc","type":"dir","size":4096,"mode":493,"modified":1}]}}),
    );
}

#[test]
fn every_file_error_code_travels_by_its_name_and_unknown_ones_read_as_io() {
    for code in FileErrorCode::ALL {
        roundtrip_agent(
            json!({"type":"file_error","payload":{"channel_id":"f","code":code.as_str(),"message":"m"}}),
        );
    }
    let newer = AgentMessage::decode(
        r#"{"type":"file_error","payload":{"channel_id":"f","code":"quota_exceeded","message":"m"}}"#,
    )
    .unwrap();
    assert!(matches!(
        newer,
        AgentMessage::FileError {
            code: FileErrorCode::Io,
            ..
        }
    ));
}

#[test]
fn heartbeats_accept_an_empty_payload_and_round_trip_facts() {
    assert_eq!(
        AgentMessage::decode(r#"{"type":"heartbeat","payload":{}}"#).unwrap(),
        AgentMessage::Heartbeat(HeartbeatPayload::default())
    );
    roundtrip_agent(
        json!({"type":"heartbeat","payload":{"agent_version":"0.1.0","hostname":"web-01","os":"linux","uptime_secs":42}}),
    );
}

#[test]
fn unknown_types_are_told_apart_from_malformed_frames() {
    assert!(matches!(
        AgentMessage::decode(r#"{"type":"file_chunk","payload":{}}"#),
        Err(DecodeError::UnknownType(t)) if t == "file_chunk"
    ));
    assert!(matches!(
        AgentMessage::decode(r#"{"type":"tunnel_ready","payload":{"session_id":5}}"#),
        Err(DecodeError::Malformed { kind, .. }) if kind == "tunnel_ready"
    ));
    assert!(matches!(
        AgentMessage::decode("{not json"),
        Err(DecodeError::NotJson(_))
    ));
    assert!(matches!(
        AgentMessage::decode("[1,2]"),
        Err(DecodeError::Malformed { .. })
    ));
}

/// The wire name of one message of every variant; the `match` has no wildcard, so a new
/// variant does not compile until it has a sample here.
fn every_type<T: Serialize>(samples: &[T], variant: fn(&T) -> usize, count: usize) -> Vec<String> {
    let mut seen = vec![false; count];
    let names = samples
        .iter()
        .map(|sample| {
            seen[variant(sample)] = true;
            serde_json::to_value(sample).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(seen.iter().all(|s| *s), "a variant has no sample");
    names
}

#[test]
fn a_malformed_frame_of_every_known_type_is_malformed_not_unknown() {
    // Found by the `server_frame` fuzz target: `pty_*`, `channel_ack` and `stdin_end` were
    // missing from the decoders' lists, so a malformed one was logged as an unknown extension.
    let c = || "c".to_owned();
    let server = [
        ServerMessage::TunnelOpen {
            session_id: c(),
            tech_id: Uuid::nil(),
        },
        ServerMessage::TunnelClose { session_id: c() },
        ServerMessage::TunnelData {
            channel_id: c(),
            data: TunnelDataPayload::TerminalOutput(TerminalOutput::default()),
        },
        ServerMessage::CommandCancel { channel_id: c() },
        ServerMessage::FileUpload {
            channel_id: c(),
            path: c(),
            offset: 0,
        },
        ServerMessage::FileUploadEnd {
            channel_id: c(),
            size: 0,
            sha256: None,
        },
        ServerMessage::FileDownload {
            channel_id: c(),
            path: c(),
            offset: 0,
        },
        ServerMessage::FileList {
            channel_id: c(),
            path: c(),
        },
        ServerMessage::FileUploadStatus {
            channel_id: c(),
            path: c(),
        },
        ServerMessage::FileAck {
            channel_id: c(),
            offset: 0,
        },
        ServerMessage::FileCancel { channel_id: c() },
        ServerMessage::PtyOpen {
            channel_id: c(),
            cols: 1,
            rows: 1,
            term: c(),
            command: None,
        },
        ServerMessage::PtyResize {
            channel_id: c(),
            cols: 1,
            rows: 1,
        },
        ServerMessage::PtyClose { channel_id: c() },
        ServerMessage::ChannelAck {
            channel_id: c(),
            offset: 0,
        },
        ServerMessage::StdinEnd { channel_id: c() },
    ];
    let server_variant = |m: &ServerMessage| match m {
        ServerMessage::TunnelOpen { .. } => 0,
        ServerMessage::TunnelClose { .. } => 1,
        ServerMessage::TunnelData { .. } => 2,
        ServerMessage::CommandCancel { .. } => 3,
        ServerMessage::FileUpload { .. } => 4,
        ServerMessage::FileUploadEnd { .. } => 5,
        ServerMessage::FileDownload { .. } => 6,
        ServerMessage::FileList { .. } => 7,
        ServerMessage::FileUploadStatus { .. } => 8,
        ServerMessage::FileAck { .. } => 9,
        ServerMessage::FileCancel { .. } => 10,
        ServerMessage::PtyOpen { .. } => 11,
        ServerMessage::PtyResize { .. } => 12,
        ServerMessage::PtyClose { .. } => 13,
        ServerMessage::ChannelAck { .. } => 14,
        ServerMessage::StdinEnd { .. } => 15,
    };
    for kind in every_type(&server, server_variant, 16) {
        let frame = format!(r#"{{"type":"{kind}","payload":7}}"#);
        assert!(
            matches!(ServerMessage::decode(&frame), Err(DecodeError::Malformed { kind: k, .. }) if k == kind),
            "{frame}"
        );
    }
    let agent = [
        AgentMessage::TunnelReady { session_id: c() },
        AgentMessage::TunnelData {
            channel_id: c(),
            data: TunnelDataPayload::TerminalOutput(TerminalOutput::default()),
        },
        AgentMessage::TunnelError {
            channel_id: c(),
            error: c(),
        },
        AgentMessage::Heartbeat(HeartbeatPayload::default()),
        AgentMessage::FileInfo {
            channel_id: c(),
            size: 0,
            sha256: c(),
            mode: None,
            modified: None,
        },
        AgentMessage::FileDone {
            channel_id: c(),
            path: c(),
            size: 0,
            sha256: c(),
        },
        AgentMessage::FileError {
            channel_id: c(),
            code: FileErrorCode::Io,
            message: c(),
        },
        AgentMessage::PtyReady { channel_id: c() },
        AgentMessage::PtyExit {
            channel_id: c(),
            exit_code: None,
            signal: None,
        },
        AgentMessage::ChannelAck {
            channel_id: c(),
            offset: 0,
        },
        AgentMessage::FileListing {
            channel_id: c(),
            path: c(),
            entries: Vec::new(),
        },
        AgentMessage::FilePartial {
            channel_id: c(),
            path: c(),
            size: 0,
        },
        AgentMessage::FileAck {
            channel_id: c(),
            offset: 0,
        },
    ];
    let agent_variant = |m: &AgentMessage| match m {
        AgentMessage::TunnelReady { .. } => 0,
        AgentMessage::TunnelData { .. } => 1,
        AgentMessage::TunnelError { .. } => 2,
        AgentMessage::Heartbeat(_) => 3,
        AgentMessage::FileInfo { .. } => 4,
        AgentMessage::FileDone { .. } => 5,
        AgentMessage::FileError { .. } => 6,
        AgentMessage::PtyReady { .. } => 7,
        AgentMessage::PtyExit { .. } => 8,
        AgentMessage::ChannelAck { .. } => 9,
        AgentMessage::FileListing { .. } => 10,
        AgentMessage::FilePartial { .. } => 11,
        AgentMessage::FileAck { .. } => 12,
    };
    for kind in every_type(&agent, agent_variant, 13) {
        let frame = format!(r#"{{"type":"{kind}","payload":7}}"#);
        assert!(
            matches!(AgentMessage::decode(&frame), Err(DecodeError::Malformed { kind: k, .. }) if k == kind),
            "{frame}"
        );
    }
}
