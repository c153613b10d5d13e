//! Terminal recordings: created with no content, chunks stored byte-exact and counted into the
//! size once (a retried chunk changes nothing), listed newest first with filters and a limit,
//! finished one by one or all the abandoned ones at once, and kept when the user, agent and
//! session they name are deleted.

use anyhow::{Context as _, ensure};
use rmm_application::{RecordingQuery, RecordingRecord, RecordingRepository};
use rmm_domain::{AgentId, SessionId, TerminalId, Timestamp, UserId};
use uuid::Uuid;

use super::{Backend, active_session, is_backend, is_conflict, t, world};

fn recording(agent: AgentId, user: UserId, started: Timestamp) -> RecordingRecord {
    RecordingRecord {
        id: TerminalId::from_uuid(Uuid::new_v4()),
        session: SessionId::from_uuid(Uuid::new_v4()),
        agent,
        user,
        started_at: started,
        ended_at: None,
        cols: 80,
        rows: 24,
        term: "xterm-256color".to_owned(),
        command: None,
        size: 0,
        truncated: false,
        pruned: false,
    }
}

fn any_agent() -> AgentId {
    AgentId::from_uuid(Uuid::new_v4())
}

fn any_user() -> UserId {
    UserId::from_uuid(Uuid::new_v4())
}

fn query() -> RecordingQuery {
    RecordingQuery {
        agent: None,
        user: None,
        since: None,
        until: None,
        limit: 100,
    }
}

fn ids(records: &[RecordingRecord]) -> Vec<TerminalId> {
    records.iter().map(|r| r.id).collect()
}

/// Every chunk of `id`, from 0 until the first missing one, joined.
async fn cast_of(s: &impl RecordingRepository, id: TerminalId) -> anyhow::Result<Vec<u8>> {
    let mut all = Vec::new();
    for seq in 0.. {
        match s.chunk(id, seq).await? {
            Some(data) => all.extend_from_slice(&data),
            None => break,
        }
    }
    Ok(all)
}

pub(crate) async fn a_recording_round_trips_with_binary_chunks_and_its_size(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let mut shell = recording(any_agent(), any_user(), t(10));
    shell.cols = 65_535;
    shell.rows = 1;
    let mut top = recording(any_agent(), any_user(), t(20));
    top.command = Some("top -d 1 'ü'".to_owned());
    top.term = "vt100".to_owned();
    s.create(&shell).await?;
    s.create(&top).await?;
    ensure!(s.get_recording(shell.id).await? == Some(shell.clone()));
    ensure!(s.get_recording(top.id).await? == Some(top.clone()));
    ensure!(
        s.get_recording(TerminalId::from_uuid(Uuid::new_v4()))
            .await?
            .is_none()
    );
    ensure!(
        is_conflict(&s.create(&shell).await),
        "a second create of an id"
    );

    // NUL, invalid UTF-8 (a lone continuation byte, a truncated sequence, 0xff), ESC.
    let first: &[u8] = b"{\"version\":2}\n\0\x80\xe2\x82";
    let second: &[u8] = b"\xff\x1b[0m\0";
    s.append(shell.id, 0, first).await?;
    s.append(shell.id, 1, second).await?;
    s.append(shell.id, 2, b"").await?;
    ensure!(s.chunk(shell.id, 0).await?.as_deref() == Some(first));
    ensure!(s.chunk(shell.id, 1).await?.as_deref() == Some(second));
    ensure!(s.chunk(shell.id, 2).await?.as_deref() == Some(&b""[..]));
    ensure!(s.chunk(shell.id, 3).await?.is_none(), "past the last chunk");
    ensure!(
        s.chunk(top.id, 0).await?.is_none(),
        "another recording's chunks"
    );
    let stored = s.get_recording(shell.id).await?.context("shell")?;
    ensure!(
        stored.size == (first.len() + second.len()) as u64,
        "size {}",
        stored.size
    );
    ensure!(s.get_recording(top.id).await?.context("top")?.size == 0);
    ensure!(cast_of(s, shell.id).await? == [first, second].concat());
    Ok(())
}

pub(crate) async fn a_retried_chunk_changes_neither_data_nor_size(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let r = recording(any_agent(), any_user(), t(0));
    s.create(&r).await?;
    s.append(r.id, 0, b"abc").await?;
    s.append(r.id, 0, b"abc").await?;
    s.append(r.id, 0, b"something else entirely").await?;
    s.append(r.id, 1, b"de").await?;
    s.append(r.id, 1, b"de").await?;
    ensure!(s.chunk(r.id, 0).await?.as_deref() == Some(&b"abc"[..]));
    ensure!(cast_of(s, r.id).await? == b"abcde");
    let size = s.get_recording(r.id).await?.context("stored")?.size;
    ensure!(size == 5, "size {size} after retries");
    // A chunk of a recording never created is refused, not stored loose.
    let unknown = TerminalId::from_uuid(Uuid::new_v4());
    ensure!(is_backend(&s.append(unknown, 0, b"x").await));
    ensure!(s.chunk(unknown, 0).await?.is_none());
    Ok(())
}

pub(crate) async fn recordings_list_newest_first_by_agent_user_and_time_with_a_limit(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let (web, db) = (any_agent(), any_agent());
    let (alice, bob) = (any_user(), any_user());
    // Created out of order: the list orders by start, not by insertion.
    let r2 = recording(web, bob, t(2_000));
    let r0 = recording(web, alice, t(0));
    let r3 = recording(db, alice, t(3_000));
    let r1 = recording(db, bob, t(1_000));
    for r in [&r2, &r0, &r3, &r1] {
        s.create(r).await?;
    }
    let list = |q: RecordingQuery| async move {
        Ok::<_, anyhow::Error>(ids(&s.list_recordings(&q).await?))
    };
    ensure!(list(query()).await? == [r3.id, r2.id, r1.id, r0.id]);
    ensure!(s.list_recordings(&query()).await?[0] == r3, "whole records");
    ensure!(
        list(RecordingQuery {
            agent: Some(web),
            ..query()
        })
        .await?
            == [r2.id, r0.id]
    );
    ensure!(
        list(RecordingQuery {
            user: Some(alice),
            ..query()
        })
        .await?
            == [r3.id, r0.id]
    );
    let both = RecordingQuery {
        agent: Some(db),
        user: Some(bob),
        ..query()
    };
    ensure!(list(both).await? == [r1.id]);
    let none = RecordingQuery {
        agent: Some(any_agent()),
        ..query()
    };
    ensure!(list(none).await?.is_empty());
    // since is inclusive, until exclusive.
    let window = RecordingQuery {
        since: Some(t(1_000)),
        until: Some(t(3_000)),
        ..query()
    };
    ensure!(list(window).await? == [r2.id, r1.id]);
    ensure!(
        list(RecordingQuery {
            since: Some(t(3_000)),
            ..query()
        })
        .await?
            == [r3.id]
    );
    ensure!(
        list(RecordingQuery {
            until: Some(t(1)),
            ..query()
        })
        .await?
            == [r0.id]
    );
    ensure!(
        list(RecordingQuery {
            limit: 2,
            ..query()
        })
        .await?
            == [r3.id, r2.id]
    );
    let limited = RecordingQuery {
        user: Some(bob),
        limit: 1,
        ..query()
    };
    ensure!(list(limited).await? == [r2.id]);
    ensure!(
        list(RecordingQuery {
            limit: 0,
            ..query()
        })
        .await?
        .is_empty()
    );
    Ok(())
}

pub(crate) async fn finish_ends_one_recording_and_finish_abandoned_the_unfinished(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let done = recording(any_agent(), any_user(), t(0));
    let capped = recording(any_agent(), any_user(), t(1));
    let left = recording(any_agent(), any_user(), t(2));
    let also_left = recording(any_agent(), any_user(), t(3));
    for r in [&done, &capped, &left, &also_left] {
        s.create(r).await?;
    }
    s.finish(done.id, t(100), false).await?;
    s.finish(capped.id, t(200), true).await?;
    let got = s.get_recording(done.id).await?.context("done")?;
    ensure!(got.ended_at == Some(t(100)) && !got.truncated, "{got:?}");
    let got = s.get_recording(capped.id).await?.context("capped")?;
    ensure!(got.ended_at == Some(t(200)) && got.truncated, "{got:?}");
    ensure!(
        s.get_recording(left.id)
            .await?
            .context("left")?
            .ended_at
            .is_none()
    );

    ensure!(s.finish_abandoned(t(999)).await? == 2);
    for r in [&left, &also_left] {
        let got = s.get_recording(r.id).await?.context("abandoned")?;
        ensure!(got.ended_at == Some(t(999)) && !got.truncated, "{got:?}");
    }
    // The ones already ended keep their end.
    let got = s.get_recording(done.id).await?.context("done")?;
    ensure!(got.ended_at == Some(t(100)), "{got:?}");
    let got = s.get_recording(capped.id).await?.context("capped")?;
    ensure!(got.ended_at == Some(t(200)) && got.truncated, "{got:?}");
    ensure!(
        s.finish_abandoned(t(1_000)).await? == 0,
        "nothing left unfinished"
    );
    Ok(())
}

/// Bytes of every value, from a fixed xorshift sequence.
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

pub(crate) async fn a_five_mib_recording_reads_back_byte_exact_after_reopening(
    b: impl Backend,
) -> anyhow::Result<()> {
    const CHUNK: usize = 64 * 1024;
    let r = recording(any_agent(), any_user(), t(0));
    b.store().create(&r).await?;
    let cast = noise(5 * 1024 * 1024, 0x9e37_79b9_7f4a_7c15);
    for (seq, data) in (0..).zip(cast.chunks(CHUNK)) {
        b.store().append(r.id, seq, data).await?;
    }
    let b = b.reopen().await?;
    let read = cast_of(b.store(), r.id).await?;
    ensure!(read.len() == cast.len(), "{} bytes read", read.len());
    ensure!(read == cast, "the bytes differ");
    let size = b.store().get_recording(r.id).await?.context("stored")?.size;
    ensure!(size == cast.len() as u64, "size {size}");
    Ok(())
}

pub(crate) async fn recordings_outlive_their_user_agent_and_session(
    b: impl Backend,
) -> anyhow::Result<()> {
    let w = world(b.store()).await?;
    let session = active_session(b.store(), &w.web, &w.alice, t(0), t(1)).await?;
    let mut r = recording(w.web.id, w.alice.id, t(2));
    r.session = session.id();
    b.store().create(&r).await?;
    b.store().append(r.id, 0, b"kept").await?;
    b.delete_session(session.id()).await?;
    b.delete_user(w.alice.id).await?;
    b.delete_agent(w.web.id).await?;
    let s = b.store();
    let mut expected = r.clone();
    expected.size = 4;
    ensure!(s.get_recording(r.id).await? == Some(expected));
    ensure!(s.chunk(r.id, 0).await?.as_deref() == Some(&b"kept"[..]));
    let mine = RecordingQuery {
        user: Some(w.alice.id),
        ..query()
    };
    ensure!(ids(&s.list_recordings(&mine).await?) == [r.id]);
    Ok(())
}
