//! The writes of a tunnel open: the pending session inserted with the owner's cap checked in
//! the same statement, and what an open that loses leaves behind (nothing, no entry).

use rmm_application::{AgentRepository, AuditNote, GroupRepository, SessionRepository};
use rmm_domain::CloseReason;

use super::{Backend, agent, audited::entries, is_conflict, new_session, open_note, t, world};

pub(crate) async fn a_capped_insert_counts_the_owners_open_sessions_and_writes_nothing_at_the_cap(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let third = agent("app-01", 3)?;
    s.insert_agent(&third).await?;
    let web = new_session(&w.web, &w.alice, t(0));
    let db = new_session(&w.db, &w.alice, t(1));
    assert!(s.insert_pending_capped(&web, None, 2).await?);
    assert!(s.insert_pending_capped(&db, None, 2).await?);
    // Another user's sessions do not count against alice's cap, nor hers against theirs.
    let bobs = new_session(&third, &w.bob, t(2));
    assert!(s.insert_pending_capped(&bobs, None, 1).await?);
    s.close(
        bobs.id(),
        CloseReason::ClosedByOwner,
        t(3),
        &AuditNote::close(CloseReason::ClosedByOwner),
    )
    .await?;

    // At the cap: refused, nothing written.
    let over = new_session(&third, &w.alice, t(4));
    assert!(!s.insert_pending_capped(&over, None, 2).await?);
    assert_eq!(s.get(over.id()).await?, None);
    assert_eq!(s.open_sessions_of(w.alice.id).await?, 2);
    assert!(!s.insert_pending_capped(&over, None, 0).await?);

    // A closed session no longer counts; an active one does.
    assert!(s.activate(db.id(), t(5), &open_note()).await?);
    let note = AuditNote::close(CloseReason::ClosedByOwner);
    s.close(web.id(), CloseReason::ClosedByOwner, t(6), &note)
        .await?;
    assert!(s.insert_pending_capped(&over, None, 2).await?);
    assert_eq!(s.get(over.id()).await?, Some(over.clone()));
    assert!(
        !s.insert_pending_capped(&new_session(&w.web, &w.alice, t(7)), None, 2)
            .await?
    );
    Ok(())
}

pub(crate) async fn an_open_that_loses_the_race_for_an_agent_leaves_no_session_and_no_entry(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let (a, c) = (
        new_session(&w.web, &w.alice, t(1)),
        new_session(&w.web, &w.bob, t(1)),
    );
    let (ra, rc) = tokio::join!(
        s.insert_pending_capped(&a, None, 5),
        s.insert_pending_capped(&c, None, 5)
    );
    assert!(
        matches!((&ra, &rc), (Ok(true), Err(_)) | (Err(_), Ok(true))),
        "{ra:?} / {rc:?}"
    );
    assert!(is_conflict(&ra) || is_conflict(&rc));
    let (won, lost) = if ra.is_ok() { (a, c) } else { (c, a) };
    assert_eq!(s.get(lost.id()).await?, None);
    // The loser cannot be activated (and so never gets a tunnel_open entry).
    assert!(!s.activate(lost.id(), t(2), &open_note()).await?);
    assert!(entries(s).await?.is_empty(), "{:?}", entries(s).await?);
    // The winner's activation writes exactly its own entry.
    assert!(s.activate(won.id(), t(2), &open_note()).await?);
    let written = entries(s).await?;
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(written[0].session, Some(won.id()));
    // Held: the same agent again conflicts, whoever asks, and writes nothing.
    let again = new_session(&w.web, &w.alice, t(3));
    assert!(is_conflict(&s.insert_pending_capped(&again, None, 5).await));
    assert_eq!(entries(s).await?.len(), 1);
    Ok(())
}
