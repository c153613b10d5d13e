//! Channels multiplex independent streams (a command, a file transfer) inside one tunnel.
//!
//! Rules: ids are unique among the open channels of a tunnel; a channel keeps the kind it was
//! opened with; a tunnel holds a bounded number of channels, so a peer cannot grow our memory
//! without limit by opening channels.

use std::collections::BTreeMap;

use crate::ids::ChannelId;

/// What a channel carries. The reference reserves the first four; terminal (a command) and
/// file are used; `Pty` (an interactive terminal) is our extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    Terminal,
    File,
    Registry,
    Service,
    Pty,
}

impl ChannelKind {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Terminal => "terminal",
            Self::File => "file",
            Self::Registry => "registry",
            Self::Service => "service",
            Self::Pty => "pty",
        }
    }
}

/// One open channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub id: ChannelId,
    pub kind: ChannelKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel {0} is already open")]
    Duplicate(ChannelId),
    #[error("too many open channels (limit {limit})")]
    TooMany { limit: usize },
    #[error("no open channel {0}")]
    Unknown(ChannelId),
    #[error("channel {id} is a {actual} channel, not {expected}", actual = .actual.as_str(), expected = .expected.as_str())]
    WrongKind {
        id: ChannelId,
        actual: ChannelKind,
        expected: ChannelKind,
    },
}

/// The open channels of one tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    open: BTreeMap<ChannelId, ChannelKind>,
    limit: usize,
}

impl Channels {
    /// An empty set that admits at most `limit` open channels at once.
    #[must_use]
    pub fn with_limit(limit: usize) -> Self {
        Self {
            open: BTreeMap::new(),
            limit,
        }
    }

    /// # Errors
    /// [`ChannelError::Duplicate`] when `id` is open, [`ChannelError::TooMany`] at the limit.
    pub fn open(&mut self, id: ChannelId, kind: ChannelKind) -> Result<(), ChannelError> {
        if self.open.contains_key(&id) {
            return Err(ChannelError::Duplicate(id));
        }
        if self.open.len() >= self.limit {
            return Err(ChannelError::TooMany { limit: self.limit });
        }
        self.open.insert(id, kind);
        Ok(())
    }

    /// Checks that a frame of `kind` may travel on `id`.
    ///
    /// # Errors
    /// [`ChannelError::Unknown`] or [`ChannelError::WrongKind`].
    pub fn check(&self, id: &ChannelId, kind: ChannelKind) -> Result<(), ChannelError> {
        match self.open.get(id) {
            None => Err(ChannelError::Unknown(id.clone())),
            Some(&actual) if actual == kind => Ok(()),
            Some(&actual) => Err(ChannelError::WrongKind {
                id: id.clone(),
                actual,
                expected: kind,
            }),
        }
    }

    /// # Errors
    /// [`ChannelError::Unknown`] when `id` is not open.
    pub fn close(&mut self, id: &ChannelId) -> Result<Channel, ChannelError> {
        self.open
            .remove(id)
            .map(|kind| Channel {
                id: id.clone(),
                kind,
            })
            .ok_or_else(|| ChannelError::Unknown(id.clone()))
    }

    /// Closes every channel (the tunnel closed), returning what was open.
    pub fn close_all(&mut self) -> Vec<Channel> {
        std::mem::take(&mut self.open)
            .into_iter()
            .map(|(id, kind)| Channel { id, kind })
            .collect()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.open.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ChannelId {
        ChannelId::parse(s).unwrap()
    }

    #[test]
    fn channels_open_check_and_close() {
        let mut c = Channels::with_limit(4);
        c.open(id("terminal-1"), ChannelKind::Terminal).unwrap();
        c.open(id("file-1"), ChannelKind::File).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.check(&id("terminal-1"), ChannelKind::Terminal), Ok(()));
        let closed = c.close(&id("terminal-1")).unwrap();
        assert_eq!(
            closed,
            Channel {
                id: id("terminal-1"),
                kind: ChannelKind::Terminal
            }
        );
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_duplicate_id_is_refused_while_open_and_reusable_after_close() {
        let mut c = Channels::with_limit(4);
        c.open(id("a"), ChannelKind::Terminal).unwrap();
        assert_eq!(
            c.open(id("a"), ChannelKind::File),
            Err(ChannelError::Duplicate(id("a")))
        );
        c.close(&id("a")).unwrap();
        assert_eq!(c.open(id("a"), ChannelKind::File), Ok(()));
    }

    #[test]
    fn the_limit_is_enforced() {
        let mut c = Channels::with_limit(1);
        c.open(id("a"), ChannelKind::Terminal).unwrap();
        assert_eq!(
            c.open(id("b"), ChannelKind::Terminal),
            Err(ChannelError::TooMany { limit: 1 })
        );
    }

    #[test]
    fn frames_of_another_kind_or_on_unknown_channels_are_rejected() {
        let mut c = Channels::with_limit(2);
        c.open(id("a"), ChannelKind::Terminal).unwrap();
        assert!(matches!(
            c.check(&id("a"), ChannelKind::File),
            Err(ChannelError::WrongKind { .. })
        ));
        assert_eq!(
            c.check(&id("zz"), ChannelKind::Terminal),
            Err(ChannelError::Unknown(id("zz")))
        );
        assert_eq!(c.close(&id("zz")), Err(ChannelError::Unknown(id("zz"))));
    }

    #[test]
    fn close_all_empties_the_tunnel() {
        let mut c = Channels::with_limit(3);
        c.open(id("a"), ChannelKind::Terminal).unwrap();
        c.open(id("b"), ChannelKind::File).unwrap();
        let closed = c.close_all();
        assert_eq!(closed.len(), 2);
        assert!(c.is_empty());
    }
}
