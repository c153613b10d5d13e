use rmm_application::OutputChunk;
use rmm_domain::ChannelId;
use std::time::Duration;
use uuid::Uuid;

use super::*;

fn output(text: &str) -> StreamEvent {
    StreamEvent::Output {
        channel: ChannelId::parse("c-1").unwrap(),
        chunk: OutputChunk {
            stdout: text.as_bytes().to_vec(),
            ..OutputChunk::default()
        },
    }
}

const S: SessionId = SessionId::from_uuid(Uuid::from_u128(1));

#[tokio::test]
async fn watchers_get_the_replay_then_live_frames_in_the_reference_format() {
    let hub = BroadcastStreams::default();
    hub.publish(S, &output("early\n"));
    let mut sub = hub.subscribe(S, false);
    assert_eq!(sub.replay.len(), 1);
    assert_eq!(
        sub.replay[0].json(),
        r#"{"type":"tunnel_data","payload":{"channel_id":"c-1","data":{"type":"terminal_output","payload":{"stdout":"early\n","stderr":"","exit_code":null}}}}"#
    );
    hub.publish(S, &output("late\n"));
    assert!(sub.live.recv().await.unwrap().json().contains("late"));
}

#[tokio::test]
async fn the_replay_buffer_is_bounded_in_bytes() {
    let hub = BroadcastStreams::default();
    let big = "x".repeat(256 * 1024);
    for _ in 0..10 {
        hub.publish(S, &output(&big));
    }
    let sub = hub.subscribe(S, false);
    let bytes: usize = sub.replay.iter().map(|f| f.charged()).sum();
    assert!(bytes <= REPLAY_BYTES, "{bytes}");
    assert_eq!(sub.replay.len(), 3);
}

fn ring_bytes(hub: &BroadcastStreams) -> usize {
    hub.lock().get(&S).map_or(0, |s| s.live.borrow().bytes)
}

#[tokio::test]
async fn a_watcher_that_falls_behind_the_byte_bound_is_told_it_lagged() {
    let hub = BroadcastStreams::default();
    let mut slow = hub.subscribe(S, false);
    let mut reading = hub.subscribe(S, false);
    let big = "x".repeat(64 * 1024);
    let frames = 2 * WATCHER_LAG_BYTES / big.len();
    for _ in 0..frames {
        hub.publish(S, &output(&big));
        // The reading watcher keeps up and misses nothing.
        assert!(reading.live.recv().await.unwrap().json().contains("xxx"));
        assert!(
            ring_bytes(&hub) <= WATCHER_LAG_BYTES,
            "{}",
            ring_bytes(&hub)
        );
    }
    let Err(RecvError::Lagged(missed)) = slow.live.recv().await else {
        panic!("the slow watcher was not told it lagged");
    };
    assert!(missed > 0 && missed < frames as u64, "{missed}");
    // After the lag it reads on from the oldest frame kept.
    assert!(slow.live.recv().await.unwrap().json().contains("xxx"));
}

#[tokio::test]
async fn the_frames_a_lagging_watcher_missed_are_counted_as_dropped() {
    use futures_util::FutureExt as _;
    let hub = BroadcastStreams::default();
    let mut slow = hub.subscribe(S, false);
    let big = "x".repeat(64 * 1024);
    for _ in 0..2 * WATCHER_LAG_BYTES / big.len() {
        hub.publish(S, &output(&big));
    }
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    // The lag is known at the first poll: no await needed inside the local recorder.
    let lagged = metrics::with_local_recorder(&recorder, || slow.live.recv().now_or_never());
    let Some(Err(RecvError::Lagged(missed))) = lagged else {
        panic!("the slow watcher was not told it lagged");
    };
    let line = format!("rmm_ws_frames_dropped_total{{queue=\"session_stream\"}} {missed}\n");
    assert!(metrics.render().contains(&line), "{}", metrics.render());
}

#[tokio::test]
async fn nothing_is_kept_for_live_watchers_when_nobody_watches() {
    let hub = BroadcastStreams::default();
    let big = "x".repeat(64 * 1024);
    for _ in 0..100 {
        hub.publish(S, &output(&big));
    }
    assert!(ring_bytes(&hub) < 2 * big.len(), "{}", ring_bytes(&hub));
}

#[tokio::test]
async fn a_frame_over_the_bound_still_reaches_a_reading_watcher() {
    let hub = BroadcastStreams::default();
    let mut sub = hub.subscribe(S, false);
    let huge = "y".repeat(WATCHER_LAG_BYTES + 1);
    hub.publish(S, &output(&huge));
    assert!(sub.live.recv().await.unwrap().json().len() > WATCHER_LAG_BYTES);
}

#[tokio::test]
async fn a_feed_delivers_what_is_kept_before_it_reports_the_end() {
    let hub = BroadcastStreams::default();
    let mut sub = hub.subscribe(S, false);
    hub.publish(S, &output("last\n"));
    hub.end_session(S);
    assert!(sub.live.recv().await.unwrap().json().contains("last"));
    assert!(matches!(sub.live.recv().await, Err(RecvError::Closed)));
}

#[tokio::test]
async fn ending_a_session_closes_every_feed() {
    let hub = BroadcastStreams::default();
    let mut sub = hub.subscribe(S, false);
    hub.end_session(S);
    assert!(matches!(sub.live.recv().await, Err(RecvError::Closed)));
}

fn chunk(stdout: &[u8], stderr: &[u8], exit_code: Option<i32>) -> StreamEvent {
    StreamEvent::Output {
        channel: ChannelId::parse("c-1").unwrap(),
        chunk: OutputChunk {
            stdout: stdout.to_vec(),
            stderr: stderr.to_vec(),
            exit_code,
            ..OutputChunk::default()
        },
    }
}

fn data_frame(message: &Message) -> DataFrame {
    let Message::Binary(bytes) = message else {
        panic!("not a binary frame: {message:?}");
    };
    DataFrame::decode(bytes::Bytes::from(bytes.clone())).unwrap()
}

#[tokio::test]
async fn a_binary_watcher_gets_each_streams_bytes_at_their_offsets_then_the_end_as_json() {
    let hub = BroadcastStreams::default();
    let mut sub = hub.subscribe(S, true);
    let invalid: &[u8] = &[0xff, 0x00, 0xe2, 0x82];
    hub.publish(S, &chunk(b"abc", b"", None));
    hub.publish(S, &chunk(invalid, b"err", None));
    hub.publish(S, &chunk(b"", b"", Some(3)));
    let first = sub.live.recv().await.unwrap().messages(true);
    assert_eq!(first.len(), 1);
    let frame = data_frame(&first[0]);
    assert_eq!((frame.channel_id.as_str(), frame.offset), ("c-1/stdout", 0));
    assert_eq!(&frame.data[..], b"abc");
    let second = sub.live.recv().await.unwrap().messages(true);
    let (out, err) = (data_frame(&second[0]), data_frame(&second[1]));
    assert_eq!((out.channel_id.as_str(), out.offset), ("c-1/stdout", 3));
    assert_eq!(&out.data[..], invalid);
    assert_eq!((err.channel_id.as_str(), err.offset), ("c-1/stderr", 0));
    let end = sub.live.recv().await.unwrap().messages(true);
    let [Message::Text(text)] = &end[..] else {
        panic!("{end:?}");
    };
    assert!(text.contains(r#""exit_code":3"#), "{text}");
    // A command's positions end with it: the next one on the channel starts at 0.
    hub.publish(S, &chunk(b"x", b"", None));
    let again = sub.live.recv().await.unwrap().messages(true);
    assert_eq!(data_frame(&again[0]).offset, 0);
}

#[tokio::test]
async fn the_json_is_built_only_for_watchers_without_the_opt_in_and_matches_the_reference() {
    let hub = BroadcastStreams::default();
    let mut binary = hub.subscribe(S, true);
    hub.publish(S, &chunk(b"only binary", b"", None));
    let frame = binary.live.recv().await.unwrap();
    assert!(
        frame.json.get().is_none(),
        "JSON built with no JSON watcher"
    );
    let mut json = hub.subscribe(S, false);
    hub.publish(S, &chunk(b"both\n", b"", Some(0)));
    let frame = json.live.recv().await.unwrap();
    assert!(frame.json.get().is_some());
    assert_eq!(
        frame.messages(false),
        vec![Message::Text(
            r#"{"type":"tunnel_data","payload":{"channel_id":"c-1","data":{"type":"terminal_output","payload":{"stdout":"both\n","stderr":"","exit_code":0}}}}"#
                .into()
        )]
    );
    // The binary watcher of the same frame: the bytes, then the end without them.
    let messages = binary.live.recv().await.unwrap().messages(true);
    assert_eq!(&data_frame(&messages[0]).data[..], b"both\n");
    assert_eq!(
        messages[1],
        Message::Text(
            r#"{"type":"tunnel_data","payload":{"channel_id":"c-1","data":{"type":"terminal_output","payload":{"stdout":"","stderr":"","exit_code":0}}}}"#
                .into()
        )
    );
    // Once the JSON watcher leaves, frames are published without JSON again.
    drop(json);
    hub.publish(S, &chunk(b"later", b"", None));
    assert!(binary.live.recv().await.unwrap().json.get().is_none());
}

#[tokio::test(start_paused = true)]
async fn the_publisher_waits_for_a_reading_watcher_and_gives_up_on_a_stopped_one() {
    let hub = BroadcastStreams::default();
    let mut sub = hub.subscribe(S, true);
    let big = vec![b'x'; 1024 * 1024];
    for _ in 0..10 {
        hub.publish(S, &chunk(&big, b"", None));
    }
    assert!(hub.backlog(S).0 > WATCHER_LAG_BYTES / 2);
    // A watcher that reads lets the publisher on as soon as it is under half the bound.
    let reading = async {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            sub.live.recv().await.unwrap();
        }
    };
    let started = tokio::time::Instant::now();
    tokio::join!(hub.wait_for_room(S, Duration::from_secs(2)), reading);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(hub.backlog(S).0 <= WATCHER_LAG_BYTES / 2);
    // It stops reading: the publisher waits `patience`, then no longer for it.
    for _ in 0..5 {
        hub.publish(S, &chunk(&big, b"", None));
    }
    let started = tokio::time::Instant::now();
    hub.wait_for_room(S, Duration::from_secs(2)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let started = tokio::time::Instant::now();
    hub.wait_for_room(S, Duration::from_secs(2)).await;
    assert!(started.elapsed() < Duration::from_millis(10));
    // Reading again, it is waited for again.
    sub.live.recv().await.unwrap();
    assert!(hub.backlog(S).1.is_some());
}
