//! What both stores share about `recordings`: the columns and the row decoder.

use rmm_application::{RecordingRecord, StoreError};
use rmm_domain::{AgentId, SessionId, TerminalId, Timestamp, UserId};
use uuid::Uuid;

use crate::{RowError, u64_from_db};

/// The columns of `recordings` in the order [`RecordingRow`] is read.
macro_rules! recording_columns {
    () => {
        "recording_id, session_id, agent_id, user_id, started_at, ended_at, cols, rows, term, \
         command, size, truncated"
    };
}
pub(crate) use recording_columns;

/// Read after [`recording_columns`] in selects: whether the retention sweep pruned it.
macro_rules! recording_pruned_column {
    () => {
        ", pruned_at is not null as pruned"
    };
}
pub(crate) use recording_pruned_column;

/// A `recordings` row with its columns decoded but not yet validated.
pub(crate) struct RecordingRow {
    pub recording_id: Uuid,
    pub session_id: Uuid,
    pub agent_id: Uuid,
    pub user_id: Uuid,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub cols: i64,
    pub rows: i64,
    pub term: String,
    pub command: Option<String>,
    pub size: i64,
    pub truncated: bool,
    pub pruned: bool,
}

impl TryFrom<RecordingRow> for RecordingRecord {
    type Error = StoreError;

    fn try_from(row: RecordingRow) -> Result<Self, Self::Error> {
        const TABLE: &str = "recordings";
        let key = row.recording_id;
        let side = |value: i64, column| {
            u16::try_from(value).map_err(|e| RowError::bad(TABLE, key, column, e))
        };
        Ok(Self {
            id: TerminalId::from_uuid(row.recording_id),
            session: SessionId::from_uuid(row.session_id),
            agent: AgentId::from_uuid(row.agent_id),
            user: UserId::from_uuid(row.user_id),
            started_at: row.started_at,
            ended_at: row.ended_at,
            cols: side(row.cols, "cols")?,
            rows: side(row.rows, "rows")?,
            term: row.term,
            command: row.command,
            size: u64_from_db(TABLE, key, "size", row.size)?,
            truncated: row.truncated,
            pruned: row.pruned,
        })
    }
}

/// A chunk's length as added to a recording's size (a slice is never longer than
/// `i64::MAX` bytes; saturate rather than fail if one were).
pub(crate) fn chunk_len(data: &[u8]) -> i64 {
    i64::try_from(data.len()).unwrap_or(i64::MAX)
}

/// The most recordings one `list_recordings` returns, whatever the caller asks.
pub(crate) const RECORDING_PAGE_MAX: u32 = 1000;

/// `limit` capped at [`RECORDING_PAGE_MAX`], as bound into `limit` (0 lists nothing).
pub(crate) fn recording_page_size(limit: u32) -> i64 {
    i64::from(limit.min(RECORDING_PAGE_MAX))
}
