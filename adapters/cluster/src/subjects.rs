//! The NATS subjects of a cluster, all under one prefix (docs/deploy.md, "Cluster mode",
//! lists them and the permissions to set):
//!
//! - `<prefix>.presence`: every node's presence announcements (agent ids and modes; no keys,
//!   tokens or output);
//! - `<prefix>.node.<node>.presence`: a node's whole presence, on request;
//! - `<prefix>.node.<node>.dial`: requests for a cross-node stream to `node`;
//! - `<prefix>.inbox.>`: the replies to requests, and the cross-node streams' bytes (the
//!   forwarded requests and their answers: tokens, command output, files).

/// The subjects of one node of one cluster.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
    node: String,
}

impl Subjects {
    #[must_use]
    pub fn new(prefix: &str, node: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            node: node.to_owned(),
        }
    }

    /// Where every node announces its agents.
    #[must_use]
    pub fn presence(&self) -> String {
        format!("{}.presence", self.prefix)
    }

    /// Where `node` answers with its whole presence.
    #[must_use]
    pub fn snapshot_of(&self, node: &str) -> String {
        format!("{}.node.{node}.presence", self.prefix)
    }

    /// Where this node answers with its whole presence.
    #[must_use]
    pub fn my_snapshot(&self) -> String {
        self.snapshot_of(&self.node)
    }

    /// Where `node` takes requests forwarded to it (cross-node streams).
    #[must_use]
    pub fn dial_of(&self, node: &str) -> String {
        format!("{}.node.{node}.dial", self.prefix)
    }

    /// The prefix of reply subjects.
    #[must_use]
    pub fn inbox_prefix(&self) -> String {
        format!("{}.inbox", self.prefix)
    }
}
