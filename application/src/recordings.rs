//! Terminal recordings: listing and reading them, with the audit log's visibility (admins
//! and auditors every recording, technicians their own).

use rmm_domain::{Actor, TerminalId};

use crate::app::{App, Ports};
use crate::ports::{RecordingQuery, RecordingRecord, RecordingRepository, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("technicians may only read their own recordings")]
    Forbidden,
    #[error("recording {0} not found")]
    NotFound(TerminalId),
    #[error("recording store failed")]
    Store(#[source] StoreError),
}

impl<P: Ports> App<P> {
    /// Recordings matching `query`, newest first.
    ///
    /// # Errors
    /// [`RecordingError::Forbidden`] when a technician asks for someone else's.
    pub async fn list_recordings(
        &self,
        actor: Actor,
        mut query: RecordingQuery,
    ) -> Result<Vec<RecordingRecord>, RecordingError> {
        if !actor.role.reads_all_audit() {
            match query.user {
                Some(user) if user != actor.id => return Err(RecordingError::Forbidden),
                Some(_) | None => query.user = Some(actor.id),
            }
        }
        query.limit = query.limit.clamp(1, 500);
        self.recordings
            .list_recordings(&query)
            .await
            .map_err(RecordingError::Store)
    }

    /// A recording the caller may read (one they may not see is not found).
    ///
    /// # Errors
    /// [`RecordingError::NotFound`], [`RecordingError::Store`].
    pub async fn recording(
        &self,
        actor: Actor,
        id: TerminalId,
    ) -> Result<RecordingRecord, RecordingError> {
        let record = self
            .recordings
            .get_recording(id)
            .await
            .map_err(RecordingError::Store)?
            .ok_or(RecordingError::NotFound(id))?;
        if !actor.role.reads_all_audit() && record.user != actor.id {
            return Err(RecordingError::NotFound(id));
        }
        Ok(record)
    }

    /// Chunk `seq` of a recording's cast file (check access with [`Self::recording`] first);
    /// `None` past the last one.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn recording_chunk(
        &self,
        id: TerminalId,
        seq: u32,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.recordings.chunk(id, seq).await
    }
}
