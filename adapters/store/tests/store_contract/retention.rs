//! The retention sweep's statements: stored output measured and listed oldest end first with
//! its bytes; only ended, unpruned commands and recordings pruned (content deleted, row
//! marked, bytes counted), once; running commands and live recordings untouched.

use anyhow::ensure;
use rmm_application::{
    CommandRepository, OutputStream, Pruned, RecordingRecord, RecordingRepository, StoredOutput,
};
use rmm_domain::{SessionId, TerminalId};
use uuid::Uuid;

use super::{Backend, active_session, completed, end_entry, running_command, started, t, world};

fn pruned(items: u64, bytes: u64) -> Pruned {
    Pruned { items, bytes }
}

pub(crate) async fn retention_prunes_only_ended_output_once_and_marks_it(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let session = active_session(s, &w.web, &w.alice, t(0), t(1)).await?;
    let old = running_command(&session, "old", t(2));
    let new = running_command(&session, "new", t(3));
    let live = running_command(&session, "live", t(4));
    for command in [&old, &new, &live] {
        s.insert_command(command, &started(command)).await?;
    }
    s.append_output(old.id, OutputStream::Stdout, 0, b"aaaa")
        .await?;
    s.append_output(old.id, OutputStream::Stderr, 0, b"bb")
        .await?;
    s.append_output(new.id, OutputStream::Stdout, 0, b"cccccc")
        .await?;
    s.append_output(live.id, OutputStream::Stdout, 0, b"dd")
        .await?;
    s.finish_command(old.id, &completed(0, t(10)), &end_entry(old.id))
        .await?;
    s.finish_command(new.id, &completed(0, t(20)), &end_entry(new.id))
        .await?;
    ensure!(s.stored_output_bytes().await? == 14);
    let listed = s.ended_output(None, 10).await?;
    let expected = vec![
        StoredOutput {
            id: old.id,
            finished_at: t(10),
            bytes: 6,
        },
        StoredOutput {
            id: new.id,
            finished_at: t(20),
            bytes: 6,
        },
    ];
    ensure!(listed == expected, "{listed:?}");
    ensure!(s.ended_output(None, 1).await? == expected[..1]);
    ensure!(s.ended_output(Some(t(20)), 10).await? == expected[..1]);

    // The running one is named too: it is left alone.
    ensure!(s.prune_output(&[old.id, live.id], t(30)).await? == pruned(1, 6));
    let gone = s
        .get_command(old.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("old"))?;
    ensure!(gone.output_pruned && gone.stdout_bytes == 12, "{gone:?}");
    ensure!(
        s.read_output(old.id, OutputStream::Stdout, 0, 10)
            .await?
            .is_empty()
    );
    ensure!(
        s.read_output(old.id, OutputStream::Stderr, 0, 10)
            .await?
            .is_empty()
    );
    let kept = s
        .get_command(live.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("live"))?;
    ensure!(!kept.output_pruned);
    ensure!(
        s.read_output(live.id, OutputStream::Stdout, 0, 10).await? == vec![(0, b"dd".to_vec())]
    );
    ensure!(s.prune_output(&[old.id], t(31)).await? == pruned(0, 0));
    ensure!(s.ended_output(None, 10).await? == expected[1..]);
    ensure!(s.stored_output_bytes().await? == 8);
    Ok(())
}

fn recording(ended: Option<i64>) -> RecordingRecord {
    RecordingRecord {
        id: TerminalId::from_uuid(Uuid::new_v4()),
        session: SessionId::from_uuid(Uuid::new_v4()),
        agent: rmm_domain::AgentId::from_uuid(Uuid::new_v4()),
        user: rmm_domain::UserId::from_uuid(Uuid::new_v4()),
        started_at: t(0),
        ended_at: ended.map(t),
        cols: 80,
        rows: 24,
        term: "xterm".to_owned(),
        command: None,
        size: 0,
        truncated: false,
        pruned: false,
    }
}

pub(crate) async fn retention_prunes_only_ended_recordings_once_and_marks_them(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let (old, new, live) = (recording(Some(10)), recording(Some(20)), recording(None));
    for r in [&old, &new, &live] {
        s.create(r).await?;
        s.append(r.id, 0, b"abc").await?;
    }
    ensure!(s.ended_recordings(t(20), 10).await? == vec![old.id]);
    ensure!(s.ended_recordings(t(100), 10).await? == vec![old.id, new.id]);
    ensure!(s.prune_recordings(&[old.id, live.id], t(30)).await? == pruned(1, 3));
    let gone = s
        .get_recording(old.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("old"))?;
    ensure!(gone.pruned && gone.size == 3, "{gone:?}");
    ensure!(s.chunk(old.id, 0).await?.is_none());
    let kept = s
        .get_recording(live.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("live"))?;
    ensure!(!kept.pruned && s.chunk(live.id, 0).await?.is_some());
    ensure!(s.prune_recordings(&[old.id], t(31)).await? == pruned(0, 0));
    ensure!(s.ended_recordings(t(100), 10).await? == vec![new.id]);
    Ok(())
}
