//! `GET .../commands/{id}` inlines a bounded prefix of each stream: at most 1 MiB of text,
//! read from the store a few chunks at a time, with `*_truncated` when it stops short.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use poem::http::StatusCode;
use rmm_application::{CommandRecord, OutputStream};
use rmm_domain::{ChannelId, CommandStatus};

use super::{AGENT, COMMAND, SESSION, Setup, TECH, active, assert_ok, now};

const MIB: usize = 1024 * 1024;
const CHUNK: usize = 32 * 1024;

fn record() -> CommandRecord {
    CommandRecord {
        id: COMMAND,
        session: SESSION,
        agent: AGENT,
        owner: TECH.id,
        channel: ChannelId::for_command(COMMAND),
        text: "head -c 16M /dev/zero".into(),
        timeout_secs: 60,
        status: CommandStatus::Completed,
        exit_code: Some(0),
        signal: None,
        end_reason: None,
        started_at: now(),
        finished_at: Some(now()),
        stdout_bytes: 16 * MIB as u64,
        stderr_bytes: 3,
        stdout_truncated: false,
        stderr_truncated: false,
        output_pruned: false,
    }
}

/// Stdout is 512 chunks of `byte` (16 MiB) and stderr `err!`; the bytes of stdout read.
fn setup(byte: u8) -> (Setup, Arc<AtomicU64>) {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    s.commands
        .expect_get_command()
        .returning(|_| Box::pin(async { Ok(Some(record())) }));
    let read = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&read);
    s.commands
        .expect_read_output()
        .returning(move |_, stream, from, limit| {
            let chunks: Vec<(u64, Vec<u8>)> = match stream {
                OutputStream::Stdout => (from..512)
                    .take(limit as usize)
                    .map(|seq| (seq, vec![byte; CHUNK]))
                    .collect(),
                OutputStream::Stderr if from == 0 => vec![(0, b"err".to_vec())],
                OutputStream::Stderr => Vec::new(),
            };
            if stream == OutputStream::Stdout {
                let bytes: usize = chunks.iter().map(|(_, c)| c.len()).sum();
                counter.fetch_add(bytes as u64, Ordering::SeqCst);
            }
            Box::pin(async move { Ok(chunks) })
        });
    (s, read)
}

async fn get(s: Setup) -> serde_json::Value {
    let path = format!(
        "/api/v1/tunnel/{}/commands/{}",
        SESSION.as_uuid(),
        COMMAND.as_uuid()
    );
    let resp = s.serve().get(&path, TECH).send().await;
    assert_ok(resp, StatusCode::OK).await
}

#[tokio::test]
async fn a_long_output_is_inlined_up_to_one_mebibyte_and_marked_truncated() {
    let (s, read) = setup(0);
    let body = get(s).await;
    let stdout = body["stdout"].as_str().unwrap();
    assert_eq!(stdout.len(), MIB);
    assert!(stdout.bytes().all(|b| b == 0));
    assert_eq!(body["stdout_truncated"], true);
    assert_eq!(body["stdout_bytes"], 16 * MIB);
    // Never the whole 16 MiB: the prefix and at most one read past it.
    let read = read.load(Ordering::SeqCst);
    assert!(read > MIB as u64 && read <= (MIB + CHUNK) as u64, "{read}");
    assert_eq!(body["stderr"], "err");
    assert_eq!(body["stderr_truncated"], false);
}

#[tokio::test]
async fn replaced_invalid_bytes_do_not_grow_the_text_past_the_bound() {
    // Each 0xff becomes U+FFFD (3 bytes) in the text.
    let (s, _) = setup(0xff);
    let body = get(s).await;
    let stdout = body["stdout"].as_str().unwrap();
    assert!(
        stdout.len() <= MIB && stdout.len() > MIB - 3,
        "{}",
        stdout.len()
    );
    assert!(stdout.chars().all(|c| c == '\u{fffd}'));
    assert_eq!(body["stdout_truncated"], true);
}
