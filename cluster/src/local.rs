//! Every call into the local [`switchboard::Registry`], in one place: when the core's
//! flow-control API changes (awaitable broadcast, `send_to` waiting for room, new event
//! variants) this file is the one to adapt. The rest of the crate sees only [`Local`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::UNIX_EPOCH,
};

use bytes::Bytes;
use switchboard::{Registry, SessionError, SessionId, SessionInfo, SlowConsumerPolicy};

use crate::{ClusterSessionId, ClusterSessionInfo, NodeId};

/// What one local fan-out did by the time it returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FanOut {
    pub(crate) queued: usize,
    pub(crate) dropped: usize,
    /// Sessions whose outbound queue was full: the message waits for them in a task of its
    /// own (so the bus reader is never held up by one slow session); what becomes of it is
    /// counted in the local registry's stats.
    pub(crate) waiting: usize,
}

/// The local registry, as the cluster uses it.
#[derive(Clone)]
pub(crate) struct Local {
    registry: Registry,
    /// Session numbers to ids. The core hands out `SessionId`s but cannot make one from a
    /// number, so ids are looked up among the live ones; this cache is rebuilt from
    /// `Registry::ids` on a miss (one pass over the live sessions).
    ids: Arc<Mutex<HashMap<u64, SessionId>>>,
}

impl Local {
    pub(crate) fn new(registry: Registry) -> Local {
        Local {
            registry,
            ids: Arc::default(),
        }
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn count(&self) -> usize {
        self.registry.count()
    }

    /// The live session numbered `n`, if any.
    pub(crate) fn resolve(&self, n: u64) -> Option<SessionId> {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = ids.get(&n) {
            return Some(*id);
        }
        ids.clear();
        ids.extend(self.registry.ids().into_iter().map(|id| (id.get(), id)));
        ids.get(&n).copied()
    }

    pub(crate) fn is_live(&self, id: SessionId) -> bool {
        self.registry.get(id).is_some()
    }

    pub(crate) async fn send_to(&self, id: SessionId, data: Bytes) -> Result<(), SessionError> {
        self.registry.send_to(id, data).await
    }

    pub(crate) async fn broadcast(
        &self,
        data: Bytes,
        except: Option<SessionId>,
        policy: SlowConsumerPolicy,
    ) -> FanOut {
        let broadcast = self.registry.broadcast(data, except, policy);
        let report = broadcast.report();
        let waiting = report.waited;
        if !broadcast.is_done() {
            tokio::spawn(broadcast);
        }
        FanOut {
            queued: report.delivered,
            dropped: report.undelivered(),
            waiting,
        }
    }

    /// Writes `data` to each of `ids` (a group); one that is gone or cannot keep up misses it.
    pub(crate) async fn send_each(&self, ids: Vec<SessionId>, data: Bytes) -> FanOut {
        let mut fan_out = FanOut::default();
        for id in ids {
            let mut sending = self.registry.send_to(id, data.clone());
            match futures::poll!(&mut sending) {
                std::task::Poll::Ready(Ok(())) => fan_out.queued += 1,
                std::task::Poll::Ready(Err(_)) => fan_out.dropped += 1,
                std::task::Poll::Pending => {
                    fan_out.waiting += 1;
                    tokio::spawn(async move {
                        let _ = sending.await;
                    });
                }
            }
        }
        fan_out
    }

    pub(crate) fn kick(&self, id: SessionId, graceful: bool) -> bool {
        let mode = if graceful {
            switchboard::CloseMode::Graceful
        } else {
            switchboard::CloseMode::Abort
        };
        self.registry.kick(id, mode)
    }

    pub(crate) fn list(&self, node: &NodeId) -> Vec<ClusterSessionInfo> {
        self.registry
            .list()
            .iter()
            .map(|i| summary(node, i))
            .collect()
    }

    pub(crate) fn get(&self, node: &NodeId, id: SessionId) -> Option<ClusterSessionInfo> {
        self.registry.get(id).map(|i| summary(node, &i))
    }
}

fn summary(node: &NodeId, info: &SessionInfo) -> ClusterSessionInfo {
    ClusterSessionInfo {
        id: ClusterSessionId::new(node.clone(), info.id),
        peer_addr: info.peer_addr.to_string(),
        local_addr: info.local_addr.to_string(),
        connected_at_ms: info
            .connected_at
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
        bytes_in: info.bytes_in,
        bytes_out: info.bytes_out,
    }
}
