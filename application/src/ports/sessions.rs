//! Tunnel sessions as stored.

use std::future::Future;

use rmm_domain::{CloseReason, Session, SessionId, Timestamp, TokenId};

use super::{AuditNote, StoreError};

/// Tunnel sessions. Every method is one atomic operation; transactions stay in the adapter.
///
/// Every audited change (activate, close) takes its audit entry and commits it in the same
/// transaction as the change, one entry per session changed: when the transaction fails,
/// nothing changed and nothing was written.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait SessionRepository: Send + Sync + 'static {
    /// Records a new pending session, opened with token `opened_with` (when known).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the agent already has a pending or active session.
    fn insert_pending(
        &self,
        session: &Session,
        opened_with: Option<TokenId>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// [`Self::insert_pending`] unless the session's owner holds `cap` pending or active
    /// sessions already: then nothing is written and the answer is false. The count and the
    /// insert are one statement (one round trip); callers that need the cap exact under
    /// concurrency serialize the opens of one user around it.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the agent already has a pending or active session (and
    /// the owner is under the cap).
    fn insert_pending_capped(
        &self,
        session: &Session,
        opened_with: Option<TokenId>,
        cap: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The pending or active sessions opened with a token that was logged out (what the
    /// revocation sweep closes when the logout could not).
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn list_open_logged_out(&self)
    -> impl Future<Output = Result<Vec<Session>, StoreError>> + Send;

    /// The pending or active sessions opened with `token` (what its logout closes).
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn list_open_opened_with(
        &self,
        token: TokenId,
    ) -> impl Future<Output = Result<Vec<Session>, StoreError>> + Send;

    /// # Errors
    /// [`StoreError::Backend`].
    fn get(
        &self,
        id: SessionId,
    ) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send;

    /// Every pending or active session.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn list_open(&self) -> impl Future<Output = Result<Vec<Session>, StoreError>> + Send;

    /// Pending → active, with `note`'s entry about the session. Returns false (and writes
    /// nothing) when the session is no longer pending (closed in the meantime, e.g. by the
    /// agent's disconnect).
    ///
    /// # Errors
    /// [`StoreError::Backend`]: then the session is unchanged.
    fn activate(
        &self,
        id: SessionId,
        now: Timestamp,
        note: &AuditNote,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Closes the session if it is pending or active, with `note`'s entry about it, returning
    /// it as closed; `None` (and nothing written) when it does not exist or was closed already.
    ///
    /// # Errors
    /// [`StoreError::Backend`]: then the session is unchanged.
    fn close(
        &self,
        id: SessionId,
        reason: CloseReason,
        now: Timestamp,
        note: &AuditNote,
    ) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send;

    /// Closes every pending or active session (restart reconciliation, shutdown), with
    /// `note`'s entry about each.
    ///
    /// # Errors
    /// [`StoreError::Backend`]: then no session is changed.
    fn close_all_open(
        &self,
        reason: CloseReason,
        now: Timestamp,
        note: &AuditNote,
    ) -> impl Future<Output = Result<Vec<Session>, StoreError>> + Send;

    /// Closes active sessions whose last activity is before `cutoff`, with `note`'s entry
    /// about each.
    ///
    /// # Errors
    /// [`StoreError::Backend`]: then no session is changed.
    fn close_idle(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
        note: &AuditNote,
    ) -> impl Future<Output = Result<Vec<Session>, StoreError>> + Send;

    /// Moves `last_activity` of these active sessions forward to `at` (never backwards).
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn touch(
        &self,
        ids: &[SessionId],
        at: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
