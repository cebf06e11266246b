//! Node identity and cluster-wide session ids.

use std::{
    collections::hash_map::RandomState,
    fmt,
    hash::{BuildHasher, Hasher},
    str::FromStr,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use switchboard::SessionId;

use crate::ClusterError;

/// Longest node name accepted.
pub const MAX_NODE_NAME: usize = 64;

/// One run of one node: its name (chosen by the operator, stable across restarts) and its
/// incarnation (random at each start). A restarted node has a new incarnation, so ids of its
/// previous run never reach the new one, and peers replace the old run at once.
///
/// # Examples
///
/// ```
/// use switchboard_cluster::NodeId;
///
/// let a = NodeId::new("node-a").unwrap();
/// let again = NodeId::new("node-a").unwrap();
/// assert_eq!(a.name(), "node-a");
/// assert_ne!(a, again); // another incarnation
/// assert_eq!(a.to_string().parse::<NodeId>().unwrap(), a);
/// assert!(NodeId::new("bad name").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId {
    name: String,
    incarnation: u64,
}

impl NodeId {
    /// A new incarnation of the node called `name`.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Invalid`] when `name` is empty, longer than [`MAX_NODE_NAME`] or holds
    /// anything but ASCII letters, digits, `-`, `_` and `.`.
    pub fn new(name: &str) -> Result<NodeId, ClusterError> {
        Ok(NodeId {
            name: check_name("node name", name)?,
            incarnation: random_u64(),
        })
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This run's random incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:016x}", self.name, self.incarnation)
    }
}

impl FromStr for NodeId {
    type Err = ClusterError;

    /// Parses `name/incarnation-in-hex`, the [`Display`](fmt::Display) form.
    fn from_str(s: &str) -> Result<NodeId, ClusterError> {
        let (name, incarnation) = s
            .rsplit_once('/')
            .ok_or_else(|| ClusterError::invalid("node id", "expected NAME/INCARNATION"))?;
        let incarnation = u64::from_str_radix(incarnation, 16)
            .map_err(|e| ClusterError::invalid("node id", e.to_string()))?;
        Ok(NodeId {
            name: check_name("node name", name)?,
            incarnation,
        })
    }
}

/// A session's id across the cluster: the node it lives on and its id there. Routing needs no
/// directory: the id says where to go.
///
/// The local part is kept as the number behind [`SessionId::get`]; [`ClusterRegistry::local_id`]
/// turns it back into a [`SessionId`] on its own node.
///
/// [`ClusterRegistry::local_id`]: crate::ClusterRegistry::local_id
///
/// # Examples
///
/// ```
/// use switchboard::SessionId;
/// use switchboard_cluster::{ClusterSessionId, NodeId};
///
/// let node = NodeId::new("a").unwrap();
/// let local = SessionId::next();
/// let id = ClusterSessionId::new(node.clone(), local);
/// assert_eq!(id.node(), &node);
/// assert_eq!(id.session(), local.get());
/// let text = id.to_string(); // "a/<incarnation>#<n>"
/// assert_eq!(text.parse::<ClusterSessionId>().unwrap(), id);
/// assert_eq!(id.short(), format!("a#{}", local.get()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClusterSessionId {
    node: NodeId,
    session: u64,
}

impl ClusterSessionId {
    /// The id of `session`, which lives on `node`.
    pub fn new(node: NodeId, session: SessionId) -> ClusterSessionId {
        ClusterSessionId {
            node,
            session: session.get(),
        }
    }

    /// The node the session lives on.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The session's number on its node ([`SessionId::get`] there).
    pub fn session(&self) -> u64 {
        self.session
    }

    /// `name#n`: short, for people; not unique across restarts of a node (use the
    /// [`Display`](fmt::Display) form for that).
    pub fn short(&self) -> String {
        format!("{}#{}", self.node.name, self.session)
    }
}

impl fmt::Display for ClusterSessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.node, self.session)
    }
}

impl FromStr for ClusterSessionId {
    type Err = ClusterError;

    /// Parses `name/incarnation#n`, the [`Display`](fmt::Display) form.
    fn from_str(s: &str) -> Result<ClusterSessionId, ClusterError> {
        let (node, session) = s
            .rsplit_once('#')
            .ok_or_else(|| ClusterError::invalid("session id", "expected NODE#N"))?;
        Ok(ClusterSessionId {
            node: node.parse()?,
            session: session.parse().map_err(|e: std::num::ParseIntError| {
                ClusterError::invalid("session id", e.to_string())
            })?,
        })
    }
}

/// Checks a node or group name: 1 to 64 bytes of `[A-Za-z0-9._-]` (it becomes part of a Redis
/// channel name).
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<String, ClusterError> {
    if name.is_empty() || name.len() > MAX_NODE_NAME {
        return Err(ClusterError::invalid(
            what,
            format!("must be 1 to {MAX_NODE_NAME} bytes long"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(ClusterError::invalid(
            what,
            format!("{c:?} is not allowed (letters, digits, '-', '_', '.')"),
        ));
    }
    Ok(name.to_string())
}

/// 64 random bits from the standard library's per-process random hash keys, the clock and the
/// process id: an incarnation only has to differ from the node's earlier ones.
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_round_trips_and_rejects_garbage() {
        let id = ClusterSessionId::new(NodeId::new("n.1_x-y").unwrap(), SessionId::next());
        assert_eq!(id.to_string().parse::<ClusterSessionId>().unwrap(), id);
        for bad in ["", "#1", "a#1", "a/zz#1", "a/1#x", "a b/1#1", "/1#1"] {
            assert!(bad.parse::<ClusterSessionId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn incarnations_differ() {
        let ids: std::collections::HashSet<u64> = (0..100)
            .map(|_| NodeId::new("a").unwrap().incarnation())
            .collect();
        assert_eq!(ids.len(), 100);
    }
}
