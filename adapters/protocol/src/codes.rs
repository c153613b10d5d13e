//! The agent's `file_error` codes. The enum is the domain's ([`rmm_domain::FileErrorCode`]):
//! one type for the agent that sends them, the server that maps them to HTTP statuses, and
//! the use cases in between. This module is how it travels: its snake_case wire name, and a
//! code unknown to this build (a newer agent's) reads as `io`.

pub use rmm_domain::FileErrorCode;

/// `#[serde(with = "wire")]` for a [`FileErrorCode`] field.
pub(crate) mod wire {
    use serde::{Deserialize as _, Deserializer, Serializer};

    use super::FileErrorCode;

    pub(crate) fn serialize<S: Serializer>(
        code: &FileErrorCode,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(code.as_str())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<FileErrorCode, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(FileErrorCode::from_wire(&text))
    }
}
