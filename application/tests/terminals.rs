//! The terminal's task over mocked ports: what is recorded (and where the cap cuts it), when
//! the agent is granted credit, what the audit log gets, and how a detached terminal ends.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use rmm_application::*;
use tokio::sync::{mpsc, watch};

/// The agent's end of a terminal link, as the test drives it.
struct Agent {
    events: mpsc::Sender<PtyEvent>,
    acks: watch::Receiver<u64>,
    close: watch::Receiver<bool>,
    _control: mpsc::Receiver<PtyControl>,
}

/// What the mocked stores were given.
#[derive(Default)]
struct Written {
    audit: Mutex<Vec<AuditEvent>>,
    cast: Mutex<Vec<u8>>,
    finished: Mutex<Option<bool>>,
}

/// An app whose gateway hands the test the agent's end of the first terminal it opens.
fn world(s: &mut Setup, written: &Arc<Written>) -> Arc<Mutex<Option<Agent>>> {
    active_session_store(s);
    let w = Arc::clone(written);
    s.audit.expect_append().returning(move |e| {
        w.audit.lock().unwrap().push(e.clone());
        Box::pin(async { Ok(()) })
    });
    s.recordings
        .expect_create()
        .returning(|_| Box::pin(async { Ok(()) }));
    let w = Arc::clone(written);
    s.recordings.expect_append().returning(move |_, _, data| {
        w.cast.lock().unwrap().extend_from_slice(data);
        Box::pin(async { Ok(()) })
    });
    let w = Arc::clone(written);
    s.recordings
        .expect_finish()
        .returning(move |_, _, truncated| {
            *w.finished.lock().unwrap() = Some(truncated);
            Box::pin(async { Ok(()) })
        });
    s.gateway.expect_release_channel().return_const(());
    let agent = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&agent);
    s.gateway.expect_open_pty().returning(move |_, _, _, _| {
        let (events_tx, events) = mpsc::channel(300);
        let (control, control_rx) = mpsc::channel(16);
        let (acks, acks_rx) = watch::channel(0);
        let (close, close_rx) = watch::channel(false);
        events_tx.try_send(PtyEvent::Ready).unwrap();
        *slot.lock().unwrap() = Some(Agent {
            events: events_tx,
            acks: acks_rx,
            close: close_rx,
            _control: control_rx,
        });
        Ok(PtyLink {
            events,
            control,
            acks,
            close,
        })
    });
    agent
}

fn request() -> NewTerminal {
    NewTerminal {
        cols: 80,
        rows: 24,
        term: None,
        command: None,
    }
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}

fn actions(written: &Written) -> Vec<&'static str> {
    written
        .audit
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.action.as_str())
        .collect()
}

#[tokio::test]
async fn output_is_recorded_and_credit_follows_what_the_owner_took() {
    let mut s = Setup::default();
    let written = Arc::new(Written::default());
    let agent = world(&mut s, &written);
    let app = Arc::new(s.build());
    let view = app.open_terminal(TECH, SESSION, request()).await.unwrap();
    assert_eq!(view.id, TERMINAL);
    let mut agent = agent.lock().unwrap().take().unwrap();
    let mut attached = app
        .attach_terminal(TECH, SESSION, TERMINAL, false, None)
        .await
        .unwrap();
    // 8 frames fit in the owner's queue; the rest waits, and so does the agent's credit.
    for _ in 0..12 {
        agent
            .events
            .send(PtyEvent::Output(Bytes::from(vec![b'y'; 1000])))
            .await
            .unwrap();
    }
    settle().await;
    assert_eq!(*agent.acks.borrow_and_update(), 8000);
    let mut taken = 0;
    while taken < 12_000 {
        match attached.frames.recv().await.unwrap() {
            TerminalFrame::Output(bytes) => taken += bytes.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
    settle().await;
    assert_eq!(*agent.acks.borrow_and_update(), 12_000);
    agent
        .events
        .send(PtyEvent::Exit {
            exit_code: Some(5),
            signal: None,
        })
        .await
        .unwrap();
    assert_eq!(
        attached.frames.recv().await.unwrap(),
        TerminalFrame::Exit {
            exit_code: Some(5),
            signal: None
        }
    );
    settle().await;
    let cast = String::from_utf8(written.cast.lock().unwrap().clone()).unwrap();
    let mut lines = cast.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with(r#"{"version":2,"width":80,"height":24,"#)
    );
    let recorded: usize = lines
        .filter(|l| l.contains(r#", "o", ""#))
        .map(|l| l.matches('y').count())
        .sum();
    assert_eq!(recorded, 12_000);
    assert_eq!(*written.finished.lock().unwrap(), Some(false));
    assert_eq!(actions(&written), ["terminal_open", "terminal_close"]);
    let close = written.audit.lock().unwrap()[1].detail.clone().unwrap();
    assert!(
        close.contains("reason=exited exit_code=5 output_bytes=12000"),
        "{close}"
    );
    assert!(app.list_terminals(TECH, SESSION).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_recording_stops_at_its_cap_with_a_marker() {
    let mut s = Setup {
        max_recording_bytes: Some(4096),
        ..Setup::default()
    };
    let written = Arc::new(Written::default());
    let agent = world(&mut s, &written);
    let app = Arc::new(s.build());
    app.open_terminal(TECH, SESSION, request()).await.unwrap();
    let agent = agent.lock().unwrap().take().unwrap();
    for _ in 0..10 {
        agent
            .events
            .send(PtyEvent::Output(Bytes::from(vec![b'z'; 1000])))
            .await
            .unwrap();
    }
    agent
        .events
        .send(PtyEvent::Exit {
            exit_code: Some(0),
            signal: None,
        })
        .await
        .unwrap();
    settle().await;
    let cast = String::from_utf8(written.cast.lock().unwrap().clone()).unwrap();
    assert!(cast.len() <= 4096, "{} bytes", cast.len());
    assert!(
        cast.trim_end()
            .ends_with(r#""m", "recording truncated: size cap reached"]"#),
        "{cast}"
    );
    assert_eq!(*written.finished.lock().unwrap(), Some(true));
}

#[tokio::test]
async fn a_terminal_nobody_attaches_to_ends_after_the_grace_period() {
    let mut s = Setup {
        terminal_grace: Some(Duration::from_millis(200)),
        ..Setup::default()
    };
    let written = Arc::new(Written::default());
    let agent = world(&mut s, &written);
    let app = Arc::new(s.build());
    app.open_terminal(TECH, SESSION, request()).await.unwrap();
    let mut agent = agent.lock().unwrap().take().unwrap();
    let attached = app
        .attach_terminal(TECH, SESSION, TERMINAL, false, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!*agent.close.borrow(), "closed while attached");
    drop(attached);
    tokio::time::timeout(Duration::from_secs(2), agent.close.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(*agent.close.borrow());
    agent
        .events
        .send(PtyEvent::Exit {
            exit_code: None,
            signal: Some(1),
        })
        .await
        .unwrap();
    settle().await;
    let close = written.audit.lock().unwrap().last().cloned().unwrap();
    assert_eq!(close.action, AuditAction::TerminalClose);
    assert!(
        close
            .detail
            .unwrap()
            .contains("reason=grace_expired signal=1"),
    );
}

#[tokio::test]
async fn an_admin_watch_is_audited_and_sees_output_but_other_technicians_are_refused() {
    let mut s = Setup::default();
    let written = Arc::new(Written::default());
    let agent = world(&mut s, &written);
    let app = Arc::new(s.build());
    app.open_terminal(TECH, SESSION, request()).await.unwrap();
    let agent = agent.lock().unwrap().take().unwrap();
    let mut watch = app
        .attach_terminal(ADMIN, SESSION, TERMINAL, true, None)
        .await
        .unwrap();
    assert!(watch.input.is_none(), "a watcher has no way in");
    assert!(matches!(
        app.attach_terminal(OTHER_TECH, SESSION, TERMINAL, true, None)
            .await,
        Err(TerminalError::Forbidden(_))
    ));
    assert!(matches!(
        app.attach_terminal(ADMIN, SESSION, TERMINAL, false, None)
            .await,
        Err(TerminalError::Forbidden(_))
    ));
    agent
        .events
        .send(PtyEvent::Output(Bytes::from_static(b"top secret")))
        .await
        .unwrap();
    assert_eq!(
        watch.frames.recv().await.unwrap(),
        TerminalFrame::Output(Bytes::from_static(b"top secret"))
    );
    assert_eq!(actions(&written), ["terminal_open", "terminal_watch"]);
    let watched = written.audit.lock().unwrap()[1].clone();
    assert_eq!(watched.user, Some(ADMIN.id));
}

#[tokio::test]
async fn a_refused_open_is_audited_as_failed_and_answers_the_agents_reason() {
    let mut s = Setup::default();
    let written = Arc::new(Written::default());
    active_session_store(&mut s);
    let w = Arc::clone(&written);
    s.audit.expect_append().returning(move |e| {
        w.audit.lock().unwrap().push(e.clone());
        Box::pin(async { Ok(()) })
    });
    s.recordings
        .expect_create()
        .returning(|_| Box::pin(async { Ok(()) }));
    s.recordings
        .expect_finish()
        .times(1)
        .returning(|_, _, _| Box::pin(async { Ok(()) }));
    s.gateway.expect_open_pty().returning(|_, _, _, _| {
        let (events_tx, events) = mpsc::channel(4);
        let (control, _) = mpsc::channel(1);
        events_tx
            .try_send(PtyEvent::Failed("no such shell".into()))
            .unwrap();
        Ok(PtyLink {
            events,
            control,
            acks: watch::channel(0).0,
            close: watch::channel(false).0,
        })
    });
    let app = Arc::new(s.build());
    match app.open_terminal(TECH, SESSION, request()).await {
        Err(TerminalError::Refused(why)) => assert_eq!(why, "no such shell"),
        other => panic!("{other:?}"),
    }
    assert_eq!(actions(&written), ["terminal_open", "terminal_close"]);
    let bad = NewTerminal {
        cols: 0,
        ..request()
    };
    assert!(matches!(
        app.open_terminal(TECH, SESSION, bad).await,
        Err(TerminalError::Invalid(_))
    ));
}

#[tokio::test]
async fn a_reattach_from_the_clients_position_replays_only_what_follows() {
    let mut s = Setup::default();
    let written = Arc::new(Written::default());
    let agent = world(&mut s, &written);
    let app = Arc::new(s.build());
    app.open_terminal(TECH, SESSION, request()).await.unwrap();
    let agent = agent.lock().unwrap().take().unwrap();
    let output = |text: &'static [u8]| PtyEvent::Output(Bytes::from_static(text));
    agent.events.send(output(b"prompt$ ")).await.unwrap();
    settle().await;
    let first = app
        .attach_terminal(TECH, SESSION, TERMINAL, false, None)
        .await
        .unwrap();
    assert_eq!(first.start, 0);
    drop(first);
    settle().await;
    agent.events.send(output(b"while away")).await.unwrap();
    settle().await;
    // The client showed the 8 bytes of the prompt: only what came after is replayed.
    let mut again = app
        .attach_terminal(TECH, SESSION, TERMINAL, false, Some(8))
        .await
        .unwrap();
    assert_eq!(again.start, 8);
    assert_eq!(
        again.frames.recv().await.unwrap(),
        TerminalFrame::Output(Bytes::from_static(b"while away"))
    );
    // A position the server no longer holds (or never had) replays all it holds.
    let mut fresh = app
        .attach_terminal(TECH, SESSION, TERMINAL, false, Some(999))
        .await
        .unwrap();
    assert_eq!(fresh.start, 0);
    assert_eq!(
        fresh.frames.recv().await.unwrap(),
        TerminalFrame::Output(Bytes::from_static(b"prompt$ while away"))
    );
}
