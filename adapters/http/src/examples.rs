//! Example values of the operations' parameters, shown in the spec (`example`) and so in the
//! API docs and generated clients.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::rules::{AgentPathRule, ExportFormatRule, Text};

/// Any id in a path.
pub fn id() -> Uuid {
    Uuid::from_u128(0x0192_6b3e_7c1a_7d4e_9f21_3a5b_8c6d_0e1f)
}

/// Any id in a query filter.
pub fn some_id() -> Option<Uuid> {
    Some(id())
}

pub fn group_name() -> String {
    "acme".to_owned()
}

pub fn file_path() -> Text<AgentPathRule> {
    Text::new("/var/log/syslog")
}

pub fn dir_path() -> Text<AgentPathRule> {
    Text::new("/var/log")
}

pub fn offset() -> Option<u64> {
    Some(1_048_576)
}

pub fn sha256() -> Option<String> {
    Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned())
}

pub fn range() -> Option<String> {
    Some("bytes=1000-1999".to_owned())
}

pub fn wait_secs() -> Option<u64> {
    Some(30)
}

pub fn since() -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(1_767_225_600, 0)
}

pub fn until() -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(1_767_312_000, 0)
}

pub fn limit() -> Option<u32> {
    Some(50)
}

pub fn before() -> Option<i64> {
    Some(1234)
}

/// The audit export's format.
pub fn export_format() -> Text<ExportFormatRule> {
    Text::new("ndjson")
}
