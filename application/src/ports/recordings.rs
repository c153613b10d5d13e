//! Terminal recordings: one asciicast v2 file per terminal, stored in chunks as it is written.

use std::future::Future;

use rmm_domain::{AgentId, SessionId, TerminalId, Timestamp, UserId};

use super::{Pruned, StoreError};

/// A recording's facts (its id is its terminal's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingRecord {
    pub id: TerminalId,
    pub session: SessionId,
    pub agent: AgentId,
    /// Whose terminal it is.
    pub user: UserId,
    pub started_at: Timestamp,
    /// `None` while the terminal lives.
    pub ended_at: Option<Timestamp>,
    pub cols: u16,
    pub rows: u16,
    pub term: String,
    /// `None`: the login shell.
    pub command: Option<String>,
    /// The size of the cast file stored so far, bytes.
    pub size: u64,
    /// The size cap was reached: the cast ends with a marker event saying so.
    pub truncated: bool,
    /// The retention sweep removed its content (the facts stay).
    pub pruned: bool,
}

/// Which recordings to list: newest first (by start), at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingQuery {
    pub agent: Option<AgentId>,
    pub user: Option<UserId>,
    /// Started at or after.
    pub since: Option<Timestamp>,
    /// Started before.
    pub until: Option<Timestamp>,
    pub limit: u32,
}

#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait RecordingRepository: Send + Sync + 'static {
    /// Stores a new recording with no content yet.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the id exists; [`StoreError::Backend`].
    fn create(
        &self,
        recording: &RecordingRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores chunk number `seq` (0, 1, 2, ... in order) of the cast file and adds its
    /// length to the recording's size, in one transaction. Storing a `seq` that is already
    /// stored changes nothing (a retry after an unclear failure).
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn append(
        &self,
        id: TerminalId,
        seq: u32,
        data: &[u8],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks the recording ended.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn finish(
        &self,
        id: TerminalId,
        ended_at: Timestamp,
        truncated: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// # Errors
    /// [`StoreError::Backend`].
    fn get_recording(
        &self,
        id: TerminalId,
    ) -> impl Future<Output = Result<Option<RecordingRecord>, StoreError>> + Send;

    /// # Errors
    /// [`StoreError::Backend`].
    fn list_recordings(
        &self,
        query: &RecordingQuery,
    ) -> impl Future<Output = Result<Vec<RecordingRecord>, StoreError>> + Send;

    /// Chunk `seq` of the cast file; `None` past the last one.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn chunk(
        &self,
        id: TerminalId,
        seq: u32,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Recordings left unfinished by a server that stopped (their terminals are gone): marks
    /// each ended at `at`. How many.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn finish_abandoned(
        &self,
        at: Timestamp,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Up to `limit` ended, unpruned recordings that ended before `ended_before`, oldest end
    /// first.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn ended_recordings(
        &self,
        ended_before: Timestamp,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<TerminalId>, StoreError>> + Send;

    /// Deletes the content of those of `ids` that have ended and are not pruned yet, marking
    /// them pruned at `at`, in one transaction. A live terminal's recording is never touched.
    ///
    /// # Errors
    /// [`StoreError::Backend`]: then nothing is pruned.
    fn prune_recordings(
        &self,
        ids: &[TerminalId],
        at: Timestamp,
    ) -> impl Future<Output = Result<Pruned, StoreError>> + Send;
}
