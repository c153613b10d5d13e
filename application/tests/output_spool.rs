//! Command output the store refuses is kept in a bounded spool and written again, in order,
//! by maintenance (while the store refuses, new output queues behind it and an end whose
//! output waits is kept, without a write of their own), before the command's end. Output that
//! cannot be kept makes the command truncated, never silently short.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rmm_application::*;
use rmm_domain::*;

/// Every `append_output` attempt as `(seq, data, stored)`.
type Attempts = Arc<Mutex<Vec<(u64, Vec<u8>, bool)>>>;

/// A store whose output writes fail while `locked` is set, and whose end is recorded in
/// `ends` (never refused).
struct Store {
    locked: Arc<AtomicBool>,
    attempts: Attempts,
    ends: Arc<Mutex<Vec<CommandOutcome>>>,
}

fn setup(spool: Option<u64>) -> (Setup, Store) {
    let mut s = Setup::default();
    active_session_store(&mut s);
    s.max_output_spool = spool;
    s.commands
        .expect_insert_command()
        .returning(|_, _| Box::pin(async { Ok(()) }));
    s.gateway
        .expect_send_command()
        .returning(|_, _, _, _, _, _| Ok(()));
    s.streams.expect_publish().return_const(());
    no_open_sessions(&mut s);
    s.sessions
        .expect_close_idle()
        .returning(|_, _, _| Box::pin(async { Ok(vec![]) }));
    s.sessions
        .expect_touch()
        .returning(|_, _| Box::pin(async { Ok(()) }));
    let store = Store {
        locked: Arc::default(),
        attempts: Arc::default(),
        ends: Arc::default(),
    };
    let (locked, attempts) = (Arc::clone(&store.locked), Arc::clone(&store.attempts));
    s.commands
        .expect_append_output()
        .returning(move |_, stream, seq, data| {
            assert_eq!(stream, OutputStream::Stdout);
            let ok = !locked.load(Ordering::SeqCst);
            attempts.lock().unwrap().push((seq, data.to_vec(), ok));
            Box::pin(async move {
                if ok {
                    Ok(())
                } else {
                    Err(StoreError::backend(std::io::Error::other(
                        "database is locked",
                    )))
                }
            })
        });
    let ends = Arc::clone(&store.ends);
    s.commands
        .expect_finish_command()
        .returning(move |_, outcome, _| {
            ends.lock().unwrap().push(outcome.clone());
            Box::pin(async { Ok(true) })
        });
    (s, store)
}

impl Store {
    /// The output as stored: the data of the successful attempts, each seq once, in order.
    fn stored(&self) -> Vec<u8> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut last = None;
        for (seq, data, ok) in self.attempts.lock().unwrap().iter() {
            if *ok && seen.insert(*seq) {
                assert!(last.is_none_or(|l| l + 1 == *seq), "chunks out of order");
                last = Some(*seq);
                out.extend_from_slice(data);
            }
        }
        out
    }

    fn lock(&self, on: bool) {
        self.locked.store(on, Ordering::SeqCst);
    }
}

async fn started(s: Setup) -> App<Mocks> {
    let app = s.build();
    app.run_command(TECH, SESSION, "yes", None, None)
        .await
        .unwrap();
    app
}

async fn out(app: &App<Mocks>, data: &[u8]) {
    let chunk = OutputChunk {
        stdout: data.to_vec(),
        ..OutputChunk::default()
    };
    assert!(
        app.command_output(AGENT, &ChannelId::for_command(COMMAND), chunk)
            .await
    );
}

async fn end(app: &App<Mocks>) {
    let chunk = OutputChunk {
        exit_code: Some(0),
        ..OutputChunk::default()
    };
    assert!(
        app.command_output(AGENT, &ChannelId::for_command(COMMAND), chunk)
            .await
    );
}

#[tokio::test]
async fn a_refused_chunk_is_written_again_by_maintenance_before_the_next_one() {
    let (s, store) = setup(None);
    let app = started(s).await;
    store.lock(true);
    out(&app, b"first ").await;
    store.lock(false);
    // The store refused the last write: the next chunk and the end wait for maintenance
    // rather than trying at once (a store that is down would make each try wait for its
    // timeout, stalling the agent's connection).
    out(&app, b"second").await;
    end(&app).await;
    assert!(store.ends.lock().unwrap().is_empty());
    app.flush_presence_and_close_idle().await.unwrap();
    assert_eq!(store.stored(), b"first second");
    let seqs: Vec<_> = store
        .attempts
        .lock()
        .unwrap()
        .iter()
        .map(|a| (a.0, a.2))
        .collect();
    assert_eq!(seqs, [(0, false), (0, true), (1, true)]);
    let ends = store.ends.lock().unwrap();
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].stdout_bytes, 12);
    assert!(!ends[0].stdout_truncated);
}

#[tokio::test]
async fn while_the_store_refuses_output_and_ends_wait_without_a_write_each() {
    let (s, store) = setup(None);
    let app = started(s).await;
    store.lock(true);
    out(&app, b"one ").await;
    for _ in 0..10 {
        out(&app, b"more ").await;
    }
    end(&app).await;
    // One refused write, not one per chunk or for the end.
    assert_eq!(store.attempts.lock().unwrap().len(), 1);
    store.lock(false);
    app.flush_presence_and_close_idle().await.unwrap();
    assert_eq!(
        store.stored(),
        b"one more more more more more more more more more more "
    );
    let ends = store.ends.lock().unwrap();
    assert_eq!(ends.len(), 1);
    assert_eq!(
        (ends[0].stdout_bytes, ends[0].stdout_truncated),
        (54, false)
    );
}

#[tokio::test]
async fn the_end_waits_for_spooled_output_and_maintenance_delivers_both() {
    let (s, store) = setup(None);
    let app = started(s).await;
    store.lock(true);
    out(&app, b"one ").await;
    out(&app, b"two").await;
    end(&app).await;
    assert!(
        store.ends.lock().unwrap().is_empty(),
        "the end waits for its output"
    );
    // Still locked: the sweep keeps both.
    assert!(app.flush_presence_and_close_idle().await.is_err());
    assert!(store.ends.lock().unwrap().is_empty());
    store.lock(false);
    app.flush_presence_and_close_idle().await.unwrap();
    assert_eq!(store.stored(), b"one two");
    let ends = store.ends.lock().unwrap();
    assert_eq!(ends.len(), 1);
    assert_eq!((ends[0].stdout_bytes, ends[0].stdout_truncated), (7, false));
}

#[tokio::test]
async fn a_full_spool_truncates_the_stream_and_keeps_the_stored_output_a_prefix() {
    let (s, store) = setup(Some(16));
    let app = started(s).await;
    out(&app, b"stored ").await;
    store.lock(true);
    out(&app, b"0123456789").await;
    // Over the cap: the stream gives up, this chunk and the one waiting are dropped...
    out(&app, b"abcdefghij").await;
    store.lock(false);
    // ...and so is what comes after, so what is stored stays a prefix.
    out(&app, b"later").await;
    end(&app).await;
    assert_eq!(store.stored(), b"stored ");
    assert!(
        store
            .attempts
            .lock()
            .unwrap()
            .iter()
            .all(|a| a.1 != b"later"),
        "nothing after the gap is written"
    );
    let ends = store.ends.lock().unwrap();
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].stdout_bytes, 32);
    assert!(ends[0].stdout_truncated, "never silently short");
}

#[tokio::test(start_paused = true)]
async fn an_end_that_waited_too_long_is_stored_truncated() {
    let (s, store) = setup(None);
    let app = started(s).await;
    out(&app, b"kept ").await;
    store.lock(true);
    out(&app, b"refused").await;
    end(&app).await;
    assert!(store.ends.lock().unwrap().is_empty());
    tokio::time::advance(Duration::from_secs(119)).await;
    let _ = app.flush_presence_and_close_idle().await;
    assert!(store.ends.lock().unwrap().is_empty());
    tokio::time::advance(Duration::from_secs(2)).await;
    let _ = app.flush_presence_and_close_idle().await;
    assert_eq!(store.stored(), b"kept ");
    let ends = store.ends.lock().unwrap();
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].stdout_bytes, 12);
    assert!(ends[0].stdout_truncated);
}
