//! Terminal recordings: the list (`GET /api/v1/recordings`) and one cast file, streamed
//! (`GET /api/v1/recordings/{id}`, asciicast v2).

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::RawOutput;
use crate::classify::About;
use crate::{ApiClient, ClientError, REQUEST_TIMEOUT};

/// One recording of `GET /api/v1/recordings` (its id is its terminal's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordingDto {
    pub recording_id: Uuid,
    pub terminal_id: Uuid,
    pub session_id: Uuid,
    pub agent_id: Uuid,
    pub user_id: Uuid,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    pub cols: u16,
    pub rows: u16,
    pub term: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Bytes of the cast file.
    pub size: u64,
    /// The size cap ended the recording early.
    pub truncated: bool,
    /// The server's retention sweep removed the content (older servers: false).
    #[serde(default)]
    pub pruned: bool,
}

#[derive(Deserialize)]
struct RecordingList {
    recordings: Vec<RecordingDto>,
}

/// Which recordings to list.
#[derive(Debug, Clone, Default)]
pub struct RecordingFilter {
    pub agent: Option<Uuid>,
    pub user: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: Option<u32>,
}

impl ApiClient {
    /// The recordings the caller may see, newest first (a technician's own; all for admins
    /// and auditors).
    ///
    /// # Errors
    /// Auth, transport and server errors.
    pub async fn recordings(
        &self,
        filter: &RecordingFilter,
    ) -> Result<Vec<RecordingDto>, ClientError> {
        let mut url = self.url("api/v1/recordings")?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(agent) = filter.agent {
                query.append_pair("agent_id", &agent.to_string());
            }
            if let Some(user) = filter.user {
                query.append_pair("user_id", &user.to_string());
            }
            for (name, at) in [("since", filter.since), ("until", filter.until)] {
                if let Some(at) = at {
                    query.append_pair(name, &at.to_rfc3339_opts(SecondsFormat::AutoSi, true));
                }
            }
            if let Some(limit) = filter.limit {
                query.append_pair("limit", &limit.to_string());
            }
        }
        let request = self.authorized(self.http.get(url))?;
        let list: RecordingList = self
            .json(request, About::Recordings, REQUEST_TIMEOUT)
            .await?;
        Ok(list.recordings)
    }

    /// One recording's cast file, as it arrives.
    ///
    /// # Errors
    /// [`ClientError::RecordingNotFound`] (404), auth, transport and server errors.
    pub async fn recording(&self, recording: Uuid) -> Result<RawOutput, ClientError> {
        let path = format!("api/v1/recordings/{recording}");
        let request = self.request(Method::GET, &path, true)?;
        let sending = self.send(request, About::Recording(recording), None);
        let response = tokio::time::timeout(REQUEST_TIMEOUT, sending)
            .await
            .map_err(|_| self.timed_out(REQUEST_TIMEOUT))??;
        Ok(RawOutput::new(response, self.server.clone()))
    }
}
