use rmm_protocol::DataFrame;
use rmm_protocol::limits::{FILE_FRAME_DATA, FILE_WINDOW};

use super::*;
use crate::NO_TUNNEL;

/// A frame from the agent, heartbeats and pings skipped.
#[derive(Debug)]
enum Frame {
    Json(serde_json::Value),
    Data(DataFrame),
}

async fn next_frame(ws: &mut WebSocketStream<TcpStream>) -> Frame {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame from the agent in time")
        {
            Some(Ok(Message::Text(t))) => {
                let value: serde_json::Value = serde_json::from_str(&t).unwrap();
                if value["type"] != "heartbeat" {
                    return Frame::Json(value);
                }
            }
            Some(Ok(Message::Binary(b))) => {
                return Frame::Data(DataFrame::decode(b).unwrap());
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

/// The next JSON frame, which must be of `kind` on `channel`; its payload.
async fn expect_json(
    ws: &mut WebSocketStream<TcpStream>,
    kind: &str,
    channel: &str,
) -> serde_json::Value {
    match next_frame(ws).await {
        Frame::Json(value) => {
            assert_eq!(value["type"], kind, "{value}");
            assert_eq!(value["payload"]["channel_id"], channel, "{value}");
            value["payload"].clone()
        }
        Frame::Data(frame) => panic!("expected {kind}, got data at {}", frame.offset),
    }
}

/// The `file_error` on `channel`: its code and message.
async fn expect_error(ws: &mut WebSocketStream<TcpStream>, channel: &str) -> (String, String) {
    let payload = expect_json(ws, "file_error", channel).await;
    (
        payload["code"].as_str().unwrap().to_owned(),
        payload["message"].as_str().unwrap().to_owned(),
    )
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn path_of(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// Sends `data` as the bytes from `from` on, in frames of [`FILE_FRAME_DATA`].
async fn send_data(ws: &mut WebSocketStream<TcpStream>, channel: &str, from: u64, data: &[u8]) {
    let mut offset = from;
    for piece in data.chunks(FILE_FRAME_DATA) {
        let frame = DataFrame {
            channel_id: channel.to_owned(),
            offset,
            data: bytes::Bytes::copy_from_slice(piece),
        };
        ws.send(Message::binary(frame.encode())).await.unwrap();
        offset += piece.len() as u64;
    }
}

fn upload(channel: &str, path: &str, offset: u64) -> serde_json::Value {
    serde_json::json!({"type":"file_upload","payload":{"channel_id":channel,"path":path,"offset":offset}})
}

fn upload_end(channel: &str, size: u64, sha256: Option<&str>) -> serde_json::Value {
    serde_json::json!({"type":"file_upload_end","payload":{"channel_id":channel,"size":size,"sha256":sha256}})
}

fn file_request(kind: &str, channel: &str, path: &str) -> serde_json::Value {
    serde_json::json!({"type":kind,"payload":{"channel_id":channel,"path":path}})
}

fn download(channel: &str, path: &str, offset: u64) -> serde_json::Value {
    serde_json::json!({"type":"file_download","payload":{"channel_id":channel,"path":path,"offset":offset}})
}

fn file_ack(channel: &str, offset: u64) -> serde_json::Value {
    serde_json::json!({"type":"file_ack","payload":{"channel_id":channel,"offset":offset}})
}

fn file_cancel(channel: &str) -> serde_json::Value {
    serde_json::json!({"type":"file_cancel","payload":{"channel_id":channel}})
}

/// The acks up to the one at `until`, then nothing else: their offsets.
async fn acks_until(ws: &mut WebSocketStream<TcpStream>, channel: &str, until: u64) -> Vec<u64> {
    let mut acks = Vec::new();
    while acks.last() != Some(&until) {
        let ack = expect_json(ws, "file_ack", channel).await;
        acks.push(ack["offset"].as_u64().unwrap());
    }
    acks
}

/// The names in `dir`.
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn an_upload_in_frames_is_acknowledged_per_mebibyte_and_lands_in_place_verified() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("payload.bin");
    let data = random_bytes(3 * MIB as usize + 1000);
    let sha = sha256_hex(&data);
    send_json(&mut ws, upload("file-1", &path_of(&target), 0)).await;
    send_data(&mut ws, "file-1", 0, &data).await;
    send_json(&mut ws, upload_end("file-1", data.len() as u64, Some(&sha))).await;
    assert_eq!(
        acks_until(&mut ws, "file-1", data.len() as u64).await,
        [MIB, 2 * MIB, 3 * MIB, data.len() as u64]
    );
    let done = expect_json(&mut ws, "file_done", "file-1").await;
    assert_eq!(
        done,
        serde_json::json!({"channel_id":"file-1","path":path_of(&target),"size":data.len(),"sha256":sha})
    );
    assert!(std::fs::read(&target).unwrap() == data, "content differs");
    // No partial file is left behind: the directory holds the target only.
    assert_eq!(names_in(dir.path()), ["payload.bin"]);
    // The channel was released: its id serves a new operation.
    send_json(
        &mut ws,
        file_request("file_upload_status", "file-1", &path_of(&target)),
    )
    .await;
    assert_eq!(
        expect_json(&mut ws, "file_partial", "file-1").await["size"],
        0
    );
    agent.abort();
}

#[tokio::test]
async fn an_interrupted_upload_keeps_its_partial_reports_it_and_resumes_to_a_correct_file() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("resumed.bin");
    let path = path_of(&target);
    let data = random_bytes(4 * MIB as usize + 77);
    let half = 2 * MIB;
    let (first, rest) = data.split_at(usize::try_from(half).unwrap());

    send_json(&mut ws, upload("file-1", &path, 0)).await;
    send_data(&mut ws, "file-1", 0, first).await;
    assert_eq!(acks_until(&mut ws, "file-1", half).await, [MIB, half]);
    send_json(&mut ws, file_cancel("file-1")).await;
    // The target does not exist yet; only the partial beside it does.
    assert_eq!(names_in(dir.path()), [".resumed.bin.rmm-partial"]);

    send_json(&mut ws, file_request("file_upload_status", "file-2", &path)).await;
    assert_eq!(
        expect_json(&mut ws, "file_partial", "file-2").await,
        serde_json::json!({"channel_id":"file-2","path":path,"size":half})
    );
    // Resuming beyond what is held is refused, and says how much is held.
    send_json(&mut ws, upload("file-3", &path, half + 1)).await;
    let (code, message) = expect_error(&mut ws, "file-3").await;
    assert_eq!(code, "bad_offset");
    assert!(message.contains(&half.to_string()), "{message}");

    send_json(&mut ws, upload("file-4", &path, half)).await;
    send_data(&mut ws, "file-4", half, rest).await;
    let sha = sha256_hex(&data);
    send_json(&mut ws, upload_end("file-4", data.len() as u64, Some(&sha))).await;
    assert_eq!(
        acks_until(&mut ws, "file-4", data.len() as u64).await,
        [3 * MIB, 4 * MIB, data.len() as u64]
    );
    let done = expect_json(&mut ws, "file_done", "file-4").await;
    assert_eq!(
        (done["size"].as_u64(), done["sha256"].as_str()),
        (Some(data.len() as u64), Some(sha.as_str()))
    );
    assert!(std::fs::read(&target).unwrap() == data, "content differs");
    assert_eq!(names_in(dir.path()), ["resumed.bin"]);
    agent.abort();
}

#[tokio::test]
async fn a_resume_of_a_partial_file_cut_shorter_than_held_truncates_it_first() {
    // The server may resume from less than the agent holds (it lost the last acks).
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("f");
    let path = path_of(&target);
    send_json(&mut ws, upload("file-1", &path, 0)).await;
    send_data(&mut ws, "file-1", 0, b"hello wrong tail").await;
    // Too little for an ack: wait until it is written (a cancel drops what is not).
    let partial = dir.path().join(".f.rmm-partial");
    for _ in 0..250 {
        if std::fs::metadata(&partial).is_ok_and(|m| m.len() == 16) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_json(&mut ws, file_cancel("file-1")).await;
    send_json(&mut ws, upload("file-2", &path, 5)).await;
    send_data(&mut ws, "file-2", 5, b", world").await;
    send_json(&mut ws, upload_end("file-2", 12, None)).await;
    acks_until(&mut ws, "file-2", 12).await;
    let done = expect_json(&mut ws, "file_done", "file-2").await;
    assert_eq!(done["sha256"], sha256_hex(b"hello, world"));
    assert_eq!(std::fs::read(&target).unwrap(), b"hello, world");
    agent.abort();
}

#[tokio::test]
async fn upload_failures_are_typed_and_never_leave_a_file_at_the_target() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t");
    let path = path_of(&target);

    send_json(&mut ws, upload("file-1", "relative/t", 0)).await;
    assert_eq!(expect_error(&mut ws, "file-1").await.0, "not_absolute");

    let missing = dir.path().join("no-such-dir").join("t");
    send_json(&mut ws, upload("file-2", &path_of(&missing), 0)).await;
    assert_eq!(expect_error(&mut ws, "file-2").await.0, "not_found");

    send_json(&mut ws, upload("file-3", &path_of(dir.path()), 0)).await;
    assert_eq!(expect_error(&mut ws, "file-3").await.0, "is_directory");

    let file_as_dir = dir.path().join("plain");
    std::fs::write(&file_as_dir, b"x").unwrap();
    send_json(
        &mut ws,
        upload("file-4", &path_of(&file_as_dir.join("t")), 0),
    )
    .await;
    assert_eq!(expect_error(&mut ws, "file-4").await.0, "not_a_directory");

    // Data out of order.
    send_json(&mut ws, upload("file-5", &path, 0)).await;
    send_data(&mut ws, "file-5", 0, b"abc").await;
    send_data(&mut ws, "file-5", 7, b"def").await;
    let (code, message) = expect_error(&mut ws, "file-5").await;
    assert_eq!(code, "bad_offset");
    assert!(message.contains("expected offset 3"), "{message}");

    // An end whose size is not what arrived.
    send_json(&mut ws, upload("file-6", &path, 0)).await;
    send_data(&mut ws, "file-6", 0, b"abc").await;
    send_json(&mut ws, upload_end("file-6", 4, None)).await;
    acks_until(&mut ws, "file-6", 3).await;
    assert_eq!(expect_error(&mut ws, "file-6").await.0, "bad_offset");

    // A checksum mismatch deletes the partial: its bytes are wrong.
    send_json(&mut ws, upload("file-7", &path, 0)).await;
    send_data(&mut ws, "file-7", 0, b"abc").await;
    send_json(&mut ws, upload_end("file-7", 3, Some(&sha256_hex(b"abd")))).await;
    acks_until(&mut ws, "file-7", 3).await;
    let (code, message) = expect_error(&mut ws, "file-7").await;
    assert_eq!(code, "checksum_mismatch");
    assert!(message.contains(&sha256_hex(b"abc")), "{message}");

    assert_eq!(names_in(dir.path()), ["plain"]);
    agent.abort();
}

#[tokio::test]
async fn a_download_sends_its_hash_first_then_waits_for_acks_at_the_window_without_holding_up_commands()
 {
    use std::os::unix::fs::PermissionsExt as _;
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("big.bin");
    let data = random_bytes(6 * MIB as usize + 5);
    std::fs::write(&source, &data).unwrap();
    std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o640)).unwrap();
    let modified = std::fs::metadata(&source)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = path_of(&source);
    let sha = sha256_hex(&data);

    send_json(&mut ws, download("file-1", &path, 0)).await;
    assert_eq!(
        expect_json(&mut ws, "file_info", "file-1").await,
        serde_json::json!({"channel_id":"file-1","size":data.len(),"sha256":sha,"mode":0o640,"modified":modified})
    );
    let mut received = Vec::new();
    while (received.len() as u64) < FILE_WINDOW {
        let Frame::Data(frame) = next_frame(&mut ws).await else {
            panic!("expected data");
        };
        assert_eq!(frame.channel_id, "file-1");
        assert_eq!(frame.offset, received.len() as u64);
        assert!(frame.data.len() <= FILE_FRAME_DATA);
        received.extend_from_slice(&frame.data);
    }
    assert_eq!(received.len() as u64, FILE_WINDOW);
    // The window is full: nothing more comes until an ack...
    let more = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(more.is_err(), "sent beyond the window: {more:?}");
    // ...and commands still run beside the stalled download.
    send_json(&mut ws, terminal("cmd-1", "echo beside")).await;
    assert_eq!(next_output(&mut ws).await.1["stdout"], "beside\n");
    assert_eq!(next_output(&mut ws).await.1["exit_code"], 0);

    // An ack of 1 MiB lets exactly 1 MiB more through.
    send_json(&mut ws, file_ack("file-1", MIB)).await;
    while (received.len() as u64) < FILE_WINDOW + MIB {
        let Frame::Data(frame) = next_frame(&mut ws).await else {
            panic!("expected data");
        };
        assert_eq!(frame.offset, received.len() as u64);
        received.extend_from_slice(&frame.data);
    }
    let more = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(more.is_err(), "sent beyond the window: {more:?}");
    send_json(&mut ws, file_ack("file-1", received.len() as u64)).await;
    loop {
        match next_frame(&mut ws).await {
            Frame::Data(frame) => {
                assert_eq!(frame.offset, received.len() as u64);
                received.extend_from_slice(&frame.data);
            }
            Frame::Json(done) => {
                assert_eq!(
                    done,
                    serde_json::json!({"type":"file_done","payload":{"channel_id":"file-1","path":path,"size":data.len(),"sha256":sha}})
                );
                break;
            }
        }
    }
    assert!(received == data, "content differs");
    agent.abort();
}

#[tokio::test]
async fn a_download_resumes_from_an_offset_and_refuses_what_is_no_file() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("f.bin");
    let data = random_bytes(MIB as usize + 300);
    std::fs::write(&source, &data).unwrap();
    let path = path_of(&source);
    let from = MIB - 10;

    send_json(&mut ws, download("file-1", &path, from)).await;
    let info = expect_json(&mut ws, "file_info", "file-1").await;
    // The whole file's size and hash, whatever the offset.
    assert_eq!(info["size"], data.len());
    assert_eq!(info["sha256"], sha256_hex(&data));
    let mut received = Vec::new();
    loop {
        match next_frame(&mut ws).await {
            Frame::Data(frame) => {
                assert_eq!(frame.offset, from + received.len() as u64);
                received.extend_from_slice(&frame.data);
            }
            Frame::Json(done) => {
                assert_eq!(done["type"], "file_done", "{done}");
                break;
            }
        }
    }
    assert!(received[..] == data[usize::try_from(from).unwrap()..]);

    // At the very end: no data, just the end.
    send_json(&mut ws, download("file-2", &path, data.len() as u64)).await;
    expect_json(&mut ws, "file_info", "file-2").await;
    expect_json(&mut ws, "file_done", "file-2").await;

    send_json(&mut ws, download("file-3", &path, data.len() as u64 + 1)).await;
    let (code, message) = expect_error(&mut ws, "file-3").await;
    assert_eq!(code, "bad_offset");
    assert!(message.contains("past the end"), "{message}");
    agent.abort();
}

#[tokio::test]
async fn download_failures_are_typed() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("f");
    std::fs::write(&source, b"12345").unwrap();
    // A FIFO would block an open until a writer came: it is refused unopened.
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let cases = [
        (path_of(&source), 6, "bad_offset"),
        (path_of(dir.path()), 0, "is_directory"),
        (path_of(&dir.path().join("missing")), 0, "not_found"),
        (path_of(&source.join("below")), 0, "not_a_directory"),
        ("f".to_owned(), 0, "not_absolute"),
        ("/dev/null".to_owned(), 0, "not_a_regular_file"),
        (path_of(&fifo), 0, "not_a_regular_file"),
        (format!("{}/a\0b", path_of(dir.path())), 0, "invalid_path"),
        (
            path_of(&dir.path().join("n".repeat(300))),
            0,
            "name_too_long",
        ),
    ];
    for (n, (path, offset, code)) in cases.into_iter().enumerate() {
        let channel = format!("file-{n}");
        send_json(&mut ws, download(&channel, &path, offset)).await;
        assert_eq!(expect_error(&mut ws, &channel).await.0, code, "{path}");
    }
    agent.abort();
}

#[tokio::test]
async fn a_cancelled_download_stops_sending() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("big.bin");
    std::fs::write(&source, random_bytes(6 * MIB as usize)).unwrap();
    send_json(&mut ws, download("file-1", &path_of(&source), 0)).await;
    expect_json(&mut ws, "file_info", "file-1").await;
    send_json(&mut ws, file_cancel("file-1")).await;
    send_json(&mut ws, file_ack("file-1", 6 * MIB)).await;
    // Frames queued before the cancel may still arrive, but never the whole file, nor an
    // end; then silence.
    let mut received = 0u64;
    while let Ok(Some(Ok(frame))) =
        tokio::time::timeout(Duration::from_millis(500), ws.next()).await
    {
        match frame {
            Message::Binary(bytes) => {
                received += DataFrame::decode(bytes).unwrap().data.len() as u64
            }
            Message::Text(text) => panic!("unexpected {text}"),
            _ => {}
        }
    }
    assert!(received <= FILE_WINDOW, "{received}");
    agent.abort();
}

#[tokio::test]
async fn a_listing_holds_names_types_sizes_modes_and_times_sorted_by_name() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.log"), b"12345").unwrap();
    std::fs::create_dir(dir.path().join("a-dir")).unwrap();
    std::os::unix::fs::symlink("/nowhere", dir.path().join("c-link")).unwrap();
    send_json(
        &mut ws,
        file_request("file_list", "file-1", &path_of(dir.path())),
    )
    .await;
    let listing = expect_json(&mut ws, "file_listing", "file-1").await;
    assert_eq!(listing["path"], path_of(dir.path()));
    let entries = listing["entries"].as_array().unwrap();
    let summary: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [("a-dir", "dir"), ("b.log", "file"), ("c-link", "symlink")]
    );
    assert_eq!(entries[1]["size"], 5);
    assert_eq!(entries[2]["size"], "/nowhere".len());
    assert!(
        entries
            .iter()
            .all(|e| e["mode"].is_u64() && e["modified"].is_i64())
    );

    send_json(
        &mut ws,
        file_request("file_list", "file-2", &path_of(&dir.path().join("b.log"))),
    )
    .await;
    assert_eq!(expect_error(&mut ws, "file-2").await.0, "not_a_directory");
    send_json(&mut ws, file_request("file_list", "file-3", "tmp")).await;
    assert_eq!(expect_error(&mut ws, "file-3").await.0, "not_absolute");
    agent.abort();
}

#[tokio::test]
async fn a_denied_path_is_permission_denied_with_the_os_reason() {
    // Root bypasses file modes, and these tests run as root in CI. Find a place this
    // process cannot create a file in: a read-only directory for an ordinary user, else
    // sysfs (EACCES even for root on most kernels). Skip, saying why, if there is none.
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
    let denied = |dir: &std::path::Path| {
        let probe = dir.join(".rmm-permission-probe");
        let result = std::fs::File::create(&probe);
        let _ = std::fs::remove_file(&probe);
        matches!(result, Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied)
    };
    let Some(denied_dir) = [locked.as_path(), std::path::Path::new("/sys/kernel")]
        .into_iter()
        .find(|dir| denied(dir))
    else {
        eprintln!("skipped: no directory denies file creation to this process");
        return;
    };
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    send_json(
        &mut ws,
        upload("file-1", &path_of(&denied_dir.join("x")), 0),
    )
    .await;
    let (code, message) = expect_error(&mut ws, "file-1").await;
    assert_eq!(code, "permission_denied");
    assert!(
        message.contains("Permission denied (os error 13)"),
        "{message}"
    );
    agent.abort();
}

#[tokio::test]
async fn closing_the_tunnel_stops_an_upload_and_keeps_its_partial_for_the_next_one() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t");
    let path = path_of(&target);
    send_json(&mut ws, upload("file-1", &path, 0)).await;
    send_data(&mut ws, "file-1", 0, &random_bytes(MIB as usize)).await;
    acks_until(&mut ws, "file-1", MIB).await;
    send_json(
        &mut ws,
        serde_json::json!({"type":"tunnel_close","payload":{"session_id": SESSION}}),
    )
    .await;
    // Outside a tunnel, file requests are refused.
    send_json(&mut ws, file_request("file_upload_status", "file-2", &path)).await;
    assert_eq!(
        expect_error(&mut ws, "file-2").await,
        ("io".to_owned(), NO_TUNNEL.to_owned())
    );
    ws.send(Message::text(format!(
        r#"{{"type":"tunnel_open","payload":{{"session_id":"{SESSION}","tech_id":"7c9e6679-7425-40de-944b-e07fc1f90ae7"}}}}"#
    )))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "tunnel_ready");
    send_json(&mut ws, file_request("file_upload_status", "file-3", &path)).await;
    assert_eq!(
        expect_json(&mut ws, "file_partial", "file-3").await["size"],
        MIB
    );
    assert!(!target.exists());
    agent.abort();
}
