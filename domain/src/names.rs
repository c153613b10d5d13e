//! Validated names and the identity of whoever acts.

use std::fmt;

use crate::ids::UserId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("username must be 1 to 64 characters of a-z A-Z 0-9 . _ @ -")]
    BadUsername,
    #[error("agent name must be 1 to 128 characters without control characters")]
    BadAgentName,
    #[error("group name must be 1 to 64 characters without control characters or '/'")]
    BadGroupName,
    #[error("role must be \"admin\", \"technician\" or \"auditor\", got {0:?}")]
    BadRole(String),
}

/// A login name.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    /// # Errors
    /// [`NameError::BadUsername`] when empty, longer than 64 or with other characters.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let ok = !value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(NameError::BadUsername)
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Username({})", self.0)
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The display name an admin gives an agent, e.g. the machine's hostname.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AgentName(String);

impl AgentName {
    /// # Errors
    /// [`NameError::BadAgentName`] when blank, longer than 128 characters or with a control
    /// character.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let trimmed = value.trim();
        let ok = !trimmed.is_empty()
            && trimmed.chars().count() <= 128
            && !trimmed.chars().any(char::is_control);
        if ok {
            Ok(Self(trimmed.to_owned()))
        } else {
            Err(NameError::BadAgentName)
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentName({})", self.0)
    }
}

/// A group of agents: a customer or a site. Every agent is in exactly one; technicians are
/// granted a set of them.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupName(String);

impl GroupName {
    /// The group of agents and users for which none was named.
    pub const DEFAULT: &'static str = "default";

    /// # Errors
    /// [`NameError::BadGroupName`] when blank, longer than 64 characters, or with a control
    /// character or `/` (names appear in URL paths).
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let trimmed = value.trim();
        let ok = !trimmed.is_empty()
            && trimmed.chars().count() <= 64
            && !trimmed.chars().any(|c| c.is_control() || c == '/');
        if ok {
            Ok(Self(trimmed.to_owned()))
        } else {
            Err(NameError::BadGroupName)
        }
    }

    /// The `default` group.
    #[must_use]
    pub fn default_group() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupName({})", self.0)
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a user may do. Stored and sent as `admin`, `technician` or `auditor`; `tech` (the
/// name before auditors existed, still in older databases and tokens) reads as `technician`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Manages users and agents, may close anyone's session, reads the whole audit log.
    Admin,
    /// Opens and uses their own sessions.
    Tech,
    /// Reads agents and the whole audit log; opens nothing.
    Auditor,
}

impl Role {
    /// Every role, in documentation order.
    pub const ALL: [Self; 3] = [Self::Admin, Self::Tech, Self::Auditor];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Tech => "technician",
            Self::Auditor => "auditor",
        }
    }

    /// # Errors
    /// [`NameError::BadRole`] for anything but `admin`, `technician` (or `tech`) and `auditor`.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        match value {
            "admin" => Ok(Self::Admin),
            "technician" | "tech" => Ok(Self::Tech),
            "auditor" => Ok(Self::Auditor),
            other => Err(NameError::BadRole(other.chars().take(32).collect())),
        }
    }

    /// Whether the role may open tunnels (and so run commands and move files).
    #[must_use]
    pub const fn may_open_tunnels(self) -> bool {
        matches!(self, Self::Admin | Self::Tech)
    }

    /// Whether the role reads every user's audit entries (others read their own).
    #[must_use]
    pub const fn reads_all_audit(self) -> bool {
        matches!(self, Self::Admin | Self::Auditor)
    }
}

/// An authenticated user acting on the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub id: UserId,
    pub role: Role,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_restricted_to_a_safe_alphabet() {
        assert_eq!(
            Username::parse("alice.b@msp-1").unwrap().as_str(),
            "alice.b@msp-1"
        );
        assert_eq!(Username::parse(""), Err(NameError::BadUsername));
        assert_eq!(Username::parse("a b"), Err(NameError::BadUsername));
        assert_eq!(
            Username::parse(&"a".repeat(65)),
            Err(NameError::BadUsername)
        );
    }

    #[test]
    fn agent_names_are_trimmed_and_reject_control_characters() {
        assert_eq!(AgentName::parse("  web-01 ").unwrap().as_str(), "web-01");
        assert_eq!(AgentName::parse("   "), Err(NameError::BadAgentName));
        assert_eq!(AgentName::parse("a\nb"), Err(NameError::BadAgentName));
    }

    #[test]
    fn roles_round_trip_through_text() {
        for role in [Role::Admin, Role::Tech] {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        assert!(Role::parse("root").is_err());
    }
}
