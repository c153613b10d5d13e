//! The JSON of a stored command (`GET`/`DELETE .../commands/{command_id}`): the record with a
//! bounded prefix of each output stream inlined as text.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use rmm_application::CommandRecord;
use rmm_domain::{CommandEndReason, CommandStatus};
use uuid::Uuid;

use super::INLINE_OUTPUT_BYTES;
use crate::to_datetime;
use crate::wire_enum::Wire;

#[derive(Debug, Object)]
pub(super) struct CommandDto {
    command_id: Uuid,
    channel_id: String,
    session_id: Uuid,
    command: String,
    // `running`, `completed`, `timed_out`, `cancelled` or `failed` (agent gone).
    status: Wire<CommandStatus>,
    /// Null while running; 128 + signal number when killed by a signal.
    #[oai(nullable)]
    exit_code: Option<i32>,
    /// The signal that killed the process, e.g. `SIGKILL`.
    #[oai(skip_serializing_if_is_none)]
    signal: Option<String>,
    // Why the command ended, for every end but `completed`; absent while it runs and when its
    // process exited on its own (`exit_code` and `signal` say how), as `close_reason` is for
    // a session. The enum's schema carries the description and an example: a `///` here, or
    // `nullable`, would make the property an `allOf` over a string enum, which generated
    // clients cannot read (openapi_spec.rs checks it).
    #[oai(skip_serializing_if_is_none)]
    end_reason: Option<Wire<CommandEndReason>>,
    /// The start of the stored stdout, decoded as UTF-8 (invalid bytes replaced), at most
    /// 1 MiB (1,048,576 bytes) of text: `.../stdout` streams every stored byte.
    stdout: String,
    /// As `stdout`, for stderr (`.../stderr`).
    stderr: String,
    /// Bytes written in all (stored or not).
    stdout_bytes: u64,
    stderr_bytes: u64,
    /// True when `stdout` shows less than the command wrote: the text stops at its 1 MiB
    /// bound or the stored output stops at the server's cap (`RMM_MAX_COMMAND_OUTPUT`). Read
    /// `GET .../commands/{command_id}/stdout` for all stored bytes.
    stdout_truncated: bool,
    /// As `stdout_truncated`, for stderr (`GET .../commands/{command_id}/stderr`).
    stderr_truncated: bool,
    /// True when the server's retention sweep removed the stored output: `stdout` and
    /// `stderr` are empty because it was pruned, not because the command wrote nothing.
    output_pruned: bool,
    timeout_secs: u64,
    started_at: DateTime<Utc>,
    #[oai(nullable)]
    finished_at: Option<DateTime<Utc>>,
}

/// What a command's JSON shows of one stream: text of at most [`INLINE_OUTPUT_BYTES`]
/// bytes, and whether it stops short of what is stored.
#[derive(Debug, Default)]
pub(super) struct Inline {
    text: String,
    short: bool,
}

impl Inline {
    /// `prefix` (the start of the stored bytes; `more` when more is stored) as text: invalid
    /// UTF-8 is replaced, which can lengthen it, so the text is cut again at a character
    /// boundary within the bound.
    pub(super) fn new(mut prefix: &[u8], more: bool) -> Self {
        // A character the bound cut in two is left out rather than shown as U+FFFD.
        if more
            && let Err(e) = std::str::from_utf8(prefix)
            && e.error_len().is_none()
        {
            prefix = &prefix[..e.valid_up_to()];
        }
        let mut text = String::from_utf8_lossy(prefix).into_owned();
        let mut short = more;
        if text.len() > INLINE_OUTPUT_BYTES {
            let mut end = INLINE_OUTPUT_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            short = true;
        }
        Self { text, short }
    }
}

impl CommandDto {
    pub(super) fn new(r: &CommandRecord, stdout: Inline, stderr: Inline) -> Self {
        Self {
            command_id: r.id.as_uuid(),
            channel_id: r.channel.to_string(),
            session_id: r.session.as_uuid(),
            command: r.text.clone(),
            status: Wire(r.status),
            exit_code: r.exit_code,
            signal: r.signal.clone(),
            end_reason: r.end_reason.map(Wire),
            stdout: stdout.text,
            stderr: stderr.text,
            stdout_bytes: r.stdout_bytes,
            stderr_bytes: r.stderr_bytes,
            stdout_truncated: r.stdout_truncated || stdout.short,
            stderr_truncated: r.stderr_truncated || stderr.short,
            output_pruned: r.output_pruned,
            timeout_secs: r.timeout_secs,
            started_at: to_datetime(r.started_at),
            finished_at: r.finished_at.map(to_datetime),
        }
    }
}
