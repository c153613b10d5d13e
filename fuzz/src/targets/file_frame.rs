//! File transfers' frames in sequence, as records (see `rmm_fuzz::records`): binary data
//! frames both ways (uploads' and downloads' data), the server's `file_*` messages as the
//! agent decodes them and the path check it applies first, the agent's `file_*` messages as
//! the gateway decodes them. Properties: as for every frame (round trips, the exact binary
//! layout, no known type called unknown), and a path the check accepts keeps the limits it
//! claims.
use rmm_domain::{MAX_NAME_CHARS, MAX_PATH_BYTES, check_agent_path};
use rmm_protocol::ServerMessage;

fn path_checked(path: &str) {
    if check_agent_path(path).is_ok() {
        assert!(!path.contains('\0'), "{path:?}");
        assert!(path.len() <= MAX_PATH_BYTES, "{path:?}");
        let names_fit = path
            .split(['/', '\\'])
            .all(|name| name.chars().count() <= MAX_NAME_CHARS);
        assert!(names_fit, "{path:?}");
    }
}

/// One input of the target.
pub fn run(data: &[u8]) {
    for (kind, record) in crate::records(data) {
        match kind % 3 {
            // Upload data (server → agent) or download data (agent → server).
            0 => {
                crate::data_frame(record);
            }
            1 => {
                if let Some(
                    ServerMessage::FileUpload { path, .. }
                    | ServerMessage::FileDownload { path, .. }
                    | ServerMessage::FileList { path, .. }
                    | ServerMessage::FileUploadStatus { path, .. },
                ) = crate::text(record).and_then(crate::server_text)
                {
                    path_checked(&path);
                }
            }
            _ => {
                crate::text(record).and_then(crate::agent_text);
            }
        }
    }
}
