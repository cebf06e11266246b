//! The crate's one error type.

use switchboard::SessionError;

use crate::NodeId;

/// What can go wrong with a cluster operation.
///
/// # Examples
///
/// ```
/// use switchboard_cluster::ClusterError;
///
/// let error = ClusterError::BusDown { reason: "connection refused".into() };
/// assert!(error.is_bus_down());
/// assert_eq!(error.to_string(), "the bus is down: connection refused");
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The bus (Redis) cannot be reached: the operation failed fast instead of waiting. Local
    /// sessions are not affected; the node reconnects and resubscribes by itself.
    #[error("the bus is down: {reason}")]
    BusDown {
        /// What the bus client said.
        reason: String,
    },
    /// The node that owns the target session is not subscribed to its channel any more (it
    /// ended, was killed, or restarted as a new incarnation): nobody received the message.
    #[error("node {node} is unreachable")]
    NodeUnreachable {
        /// The node the message was addressed to.
        node: NodeId,
    },
    /// A request to another node got no answer before its deadline.
    #[error("node {node} did not answer within {deadline_ms} ms")]
    Timeout {
        /// The node asked.
        node: NodeId,
        /// The deadline, in milliseconds.
        deadline_ms: u64,
    },
    /// The local registry refused the operation (the session is gone, or cannot keep up).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A node name, group name or id that cannot be used.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid (`node name`, `group name`, `session id`, `bus url`).
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The registry was shut down.
    #[error("the cluster registry was shut down")]
    Shutdown,
}

impl ClusterError {
    /// True for [`ClusterError::BusDown`].
    pub fn is_bus_down(&self) -> bool {
        matches!(self, ClusterError::BusDown { .. })
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        ClusterError::Invalid {
            what,
            reason: reason.into(),
        }
    }
}
