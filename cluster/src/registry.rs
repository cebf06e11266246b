//! [`ClusterRegistry`]: the local [`Registry`] plus a [`Bus`] to the other nodes.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use switchboard::{Registry, SessionError, SessionId, SlowConsumerPolicy};
use tokio::sync::{broadcast, mpsc, watch};

use crate::{
    id::check_name,
    local::{FanOut, Local},
    wire::{self, Header, Reply},
    Bus, BusEvent, ClusterConfig, ClusterError, ClusterSessionId, NodeId,
};

/// Old incarnations remembered per node name, so a late message from one is ignored.
const RETIRED_PER_NAME: usize = 16;
/// A lane (ordered queue of remote sends to one local session) ends after this long unused.
const LANE_IDLE: Duration = Duration::from_secs(5);

/// Something that happened to the cluster, from this node's point of view.
///
/// # Examples
///
/// ```
/// use switchboard_cluster::{ClusterEvent, NodeId};
///
/// fn describe(event: &ClusterEvent) -> String {
///     match event {
///         ClusterEvent::NodeUp { node } => format!("{} joined", node.name()),
///         ClusterEvent::NodeDown { node, graceful: true } => format!("{} left", node.name()),
///         ClusterEvent::NodeDown { node, .. } => format!("{} died", node.name()),
///         ClusterEvent::BusDown { reason } => format!("bus down: {reason}"),
///         ClusterEvent::BusUp => "bus up".into(),
///         _ => "something new".into(),
///     }
/// }
/// let node = NodeId::new("b").unwrap();
/// assert_eq!(describe(&ClusterEvent::NodeDown { node, graceful: false }), "b died");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterEvent {
    /// A node was seen for the first time (or a new incarnation of a known name).
    NodeUp {
        /// The node.
        node: NodeId,
    },
    /// A node left: `graceful` when it announced its shutdown, otherwise it was silent for the
    /// configured `dead_after` or was replaced by a new incarnation of its name.
    NodeDown {
        /// The node.
        node: NodeId,
        /// Whether it said goodbye.
        graceful: bool,
    },
    /// The bus was lost: cross-node calls now fail fast with [`ClusterError::BusDown`].
    BusDown {
        /// What the bus said.
        reason: String,
    },
    /// The bus is back: the node has resubscribed and announced itself again.
    BusUp,
}

/// One session anywhere in the cluster, as [`ClusterRegistry::list`] and
/// [`ClusterRegistry::get`] report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClusterSessionInfo {
    /// The session's cluster-wide id.
    pub id: ClusterSessionId,
    /// The remote end (`IP:PORT`, or `unix:PATH` for a Unix socket).
    pub peer_addr: String,
    /// The local end (on its node).
    pub local_addr: String,
    /// When it connected, in milliseconds since the Unix epoch.
    pub connected_at_ms: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
}

/// What [`ClusterRegistry::list`] found.
///
/// # Examples
///
/// ```
/// # actix_rt::System::new().block_on(async {
/// use switchboard::Registry;
/// use switchboard_cluster::{ClusterConfig, ClusterRegistry, MemoryBus, NodeId};
///
/// let hub = MemoryBus::hub();
/// let node = NodeId::new("a").unwrap();
/// let a = ClusterRegistry::start(Registry::new(), hub.connect(), node, ClusterConfig::default())
///     .await
///     .unwrap();
/// let list = a.list().await.unwrap();
/// assert!(list.sessions.is_empty() && list.missing.is_empty());
/// # });
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterList {
    /// Sessions of this node and of every node that answered in time.
    pub sessions: Vec<ClusterSessionInfo>,
    /// Live nodes (by heartbeat) that did not answer before the deadline.
    pub missing: Vec<NodeId>,
}

/// What a cluster broadcast did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterBroadcastReport {
    /// Local sessions the message was queued for.
    pub local_queued: usize,
    /// Local sessions that could not take it (handled by the slow-consumer policy).
    pub local_dropped: usize,
    /// Other nodes that received the publish, or why it could not be published. The local
    /// fan-out has happened either way.
    pub remote: Result<usize, ClusterError>,
}

/// A live peer, as seen from this node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStatus {
    /// The node.
    pub node: NodeId,
    /// Its session count as of its last heartbeat.
    pub count: usize,
    /// How long ago its last heartbeat arrived.
    pub last_seen: Duration,
}

/// Totals since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Messages from other nodes for a local session, handed to the local registry.
    pub remote_sends_delivered: u64,
    /// Messages from other nodes for a local session that were lost: session gone, its lane
    /// full, or the local registry refused them.
    pub remote_sends_lost: u64,
    /// Bus messages that could not be decoded.
    pub undecodable: u64,
    /// Deliveries to local sessions queued by broadcasts from other nodes (one per session
    /// per broadcast).
    pub remote_broadcast_queued: u64,
    /// Local sessions that could not take a broadcast from another node (its slow-consumer
    /// policy applied).
    pub remote_broadcast_dropped: u64,
}

struct Peer {
    node: NodeId,
    count: usize,
    last_seen: Instant,
}

#[derive(Default)]
struct State {
    /// Live peers by name: one incarnation per name.
    peers: HashMap<String, Peer>,
    /// Recent dead incarnations per name.
    retired: HashMap<String, VecDeque<u64>>,
    /// Local members of each group this node subscribes to.
    groups: HashMap<String, HashSet<SessionId>>,
    /// Requests waiting for replies, by request number.
    pending: HashMap<u64, mpsc::Sender<(NodeId, Reply)>>,
    /// Ordered queues of remote sends, by local session number.
    lanes: HashMap<u64, mpsc::Sender<Bytes>>,
}

impl State {
    fn retire(&mut self, node: &NodeId) {
        let list = self.retired.entry(node.name().to_string()).or_default();
        list.push_back(node.incarnation());
        while list.len() > RETIRED_PER_NAME {
            list.pop_front();
        }
    }

    fn is_retired(&self, node: &NodeId) -> bool {
        self.retired
            .get(node.name())
            .is_some_and(|l| l.contains(&node.incarnation()))
    }
}

struct Shared {
    node: NodeId,
    config: ClusterConfig,
    local: Local,
    bus: Arc<dyn Bus>,
    state: Mutex<State>,
    bus_up: AtomicBool,
    events: broadcast::Sender<ClusterEvent>,
    next_request: AtomicU64,
    delivered: AtomicU64,
    lost: AtomicU64,
    undecodable: AtomicU64,
    fanned_out: AtomicU64,
    fan_out_dropped: AtomicU64,
    stop: watch::Sender<bool>,
}

/// One registry across nodes: the local [`Registry`] (still the authority for this node's
/// sessions) joined to the other nodes through a [`Bus`].
///
/// - Session ids carry their node ([`ClusterSessionId`]): `send_to` and `kick` go straight
///   to the owner's channel, with no directory.
/// - `broadcast` is a local fan-out plus one publish; each node applies the slow-consumer
///   policy to its own sessions.
/// - `count` adds the counts that live nodes publish with their heartbeats: no round trip.
/// - `list` and `get` ask the other nodes and wait at most the request deadline.
///
/// # Delivery is at most once
///
/// A message sent to another node is handed to Redis pub/sub and then to the owner if it is
/// subscribed at that moment. Nothing is stored or retried: a message is lost when the owner
/// dies or restarts while it is in flight, when Redis goes away (everything published while
/// the connection is down fails, and whatever Redis had not yet pushed to a subscriber is
/// gone), when the owner's inbox or the target session's queue is full, or when the session
/// has ended. `send_to` returning `Ok` means the owning node received the message, not that
/// the client did. Messages from one node to one session arrive in the order sent.
///
/// # Examples
///
/// Two nodes in one process, on a [`MemoryBus`](crate::MemoryBus):
///
/// ```
/// # actix_rt::System::new().block_on(async {
/// use switchboard::Registry;
/// use switchboard_cluster::{ClusterConfig, ClusterRegistry, MemoryBus, NodeId};
///
/// let hub = MemoryBus::hub();
/// let a = ClusterRegistry::start(
///     Registry::new(), hub.connect(), NodeId::new("a").unwrap(), ClusterConfig::default(),
/// ).await.unwrap();
/// let b = ClusterRegistry::start(
///     Registry::new(), hub.connect(), NodeId::new("b").unwrap(), ClusterConfig::default(),
/// ).await.unwrap();
/// // `b` announced itself when it started, and `a` answered with its heartbeat at once.
/// let mut waited = 0;
/// while a.nodes().is_empty() && waited < 100 {
///     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
///     waited += 1;
/// }
/// assert_eq!(a.nodes()[0].node, *b.node());
/// assert_eq!(a.count(), 0);
/// b.shutdown().await;
/// a.shutdown().await;
/// # });
/// ```
#[derive(Clone)]
pub struct ClusterRegistry {
    shared: Arc<Shared>,
}

impl fmt::Debug for ClusterRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterRegistry")
            .field("node", &self.shared.node)
            .field("bus_up", &self.is_bus_up())
            .finish()
    }
}

/// Removes a pending request when its caller is done (or dropped it).
struct PendingGuard<'a>(&'a Shared, u64);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.state().pending.remove(&self.1);
    }
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn all_channel(&self) -> String {
        format!("{}:all", self.config.prefix)
    }

    fn node_channel(&self, node: &NodeId) -> String {
        format!(
            "{}:node:{}:{:016x}",
            self.config.prefix,
            node.name(),
            node.incarnation()
        )
    }

    fn group_channel(&self, group: &str) -> String {
        format!("{}:group:{group}", self.config.prefix)
    }

    fn presence_prefix(&self) -> String {
        format!("{}:presence:", self.config.prefix)
    }

    fn emit(&self, event: ClusterEvent) {
        tracing::debug!(node = %self.node, ?event, "cluster event");
        let _ = self.events.send(event);
    }

    fn check_up(&self) -> Result<(), ClusterError> {
        if *self.stop.borrow() {
            return Err(ClusterError::Shutdown);
        }
        if self.bus_up.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(ClusterError::BusDown {
                reason: "not connected".into(),
            })
        }
    }

    /// Notes a failed bus call: the first one after the bus was up emits `BusDown`.
    fn bus_failed(&self, error: &ClusterError) {
        if let ClusterError::BusDown { reason } = error {
            if self.bus_up.swap(false, Ordering::SeqCst) {
                tracing::warn!(node = %self.node, %reason, "bus down");
                self.emit(ClusterEvent::BusDown {
                    reason: reason.clone(),
                });
            }
        }
    }

    async fn publish(
        &self,
        channel: String,
        header: &Header,
        payload: &[u8],
    ) -> Result<usize, ClusterError> {
        self.check_up()?;
        let result = self
            .bus
            .publish(channel, wire::encode(header, payload))
            .await;
        if let Err(error) = &result {
            self.bus_failed(error);
        }
        result
    }

    /// Publishes to the owner of `node`'s sessions; nobody subscribed means it is gone.
    async fn publish_to(
        &self,
        node: &NodeId,
        header: &Header,
        payload: &[u8],
    ) -> Result<(), ClusterError> {
        if node.name() == self.node.name() || self.state().is_retired(node) {
            return Err(ClusterError::NodeUnreachable { node: node.clone() });
        }
        match self
            .publish(self.node_channel(node), header, payload)
            .await?
        {
            0 => Err(ClusterError::NodeUnreachable { node: node.clone() }),
            _ => Ok(()),
        }
    }

    fn heartbeat(&self, hello: bool) -> Header {
        Header::Heartbeat {
            from: self.node.clone(),
            count: self.local.count() as u64,
            hello,
        }
    }

    /// Heartbeat on the bus and presence key refreshed.
    async fn announce(&self, hello: bool) -> Result<(), ClusterError> {
        let header = self.heartbeat(hello);
        let presence = serde_json::to_vec(&header).unwrap_or_default();
        let published = self
            .bus
            .publish(self.all_channel(), wire::encode(&header, &[]))
            .await;
        let kept = match published {
            Ok(_) => {
                self.bus
                    .set_key(
                        format!("{}{}", self.presence_prefix(), self.node.name()),
                        Bytes::from(presence),
                        self.config.dead_after,
                    )
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(error) = &kept {
            self.bus_failed(error);
        }
        kept
    }

    /// (Re)subscribes to every channel this node needs.
    async fn subscribe_all(&self) -> Result<(), ClusterError> {
        self.bus.subscribe(self.all_channel()).await?;
        self.bus.subscribe(self.node_channel(&self.node)).await?;
        let groups: Vec<String> = self.state().groups.keys().cloned().collect();
        for group in groups {
            self.bus.subscribe(self.group_channel(&group)).await?;
        }
        Ok(())
    }

    /// Learns the live nodes from their presence keys (at start and after the bus returns).
    async fn read_presence(&self) -> Result<(), ClusterError> {
        let keys = self.bus.keys_with_prefix(self.presence_prefix()).await?;
        for (_, value) in keys {
            if let Ok(Header::Heartbeat { from, count, .. }) = serde_json::from_slice(&value) {
                self.seen(from, count as usize);
            }
        }
        Ok(())
    }

    /// A heartbeat (or presence) from `from`.
    fn seen(&self, from: NodeId, count: usize) {
        if from.name() == self.node.name() {
            return;
        }
        let mut events = Vec::new();
        {
            let mut state = self.state();
            if state.is_retired(&from) {
                return;
            }
            let now = Instant::now();
            match state.peers.get_mut(from.name()) {
                Some(peer) if peer.node == from => {
                    peer.count = count;
                    peer.last_seen = now;
                }
                Some(_) => {
                    let old = state
                        .peers
                        .insert(
                            from.name().to_string(),
                            Peer {
                                node: from.clone(),
                                count,
                                last_seen: now,
                            },
                        )
                        .map(|p| p.node);
                    if let Some(old) = old {
                        state.retire(&old);
                        events.push(ClusterEvent::NodeDown {
                            node: old,
                            graceful: false,
                        });
                    }
                    events.push(ClusterEvent::NodeUp { node: from });
                }
                None => {
                    state.peers.insert(
                        from.name().to_string(),
                        Peer {
                            node: from.clone(),
                            count,
                            last_seen: now,
                        },
                    );
                    events.push(ClusterEvent::NodeUp { node: from });
                }
            }
        }
        for event in events {
            self.emit(event);
        }
    }

    fn gone(&self, node: &NodeId, graceful: bool) {
        let removed = {
            let mut state = self.state();
            let current = state
                .peers
                .get(node.name())
                .is_some_and(|p| p.node == *node);
            if current {
                state.peers.remove(node.name());
            }
            if !state.is_retired(node) {
                state.retire(node);
            }
            current
        };
        if removed {
            self.emit(ClusterEvent::NodeDown {
                node: node.clone(),
                graceful,
            });
        }
    }

    /// Peers silent for `dead_after` are dead.
    fn expire(&self) {
        let dead: Vec<NodeId> = {
            let state = self.state();
            state
                .peers
                .values()
                .filter(|p| p.last_seen.elapsed() >= self.config.dead_after)
                .map(|p| p.node.clone())
                .collect()
        };
        for node in dead {
            tracing::info!(node = %self.node, peer = %node, "peer silent: dead");
            self.gone(&node, false);
        }
    }

    fn reply(self: &Arc<Self>, to: NodeId, req: u64, body: Reply) {
        let shared = self.clone();
        tokio::spawn(async move {
            let header = Header::Reply {
                from: shared.node.clone(),
                req,
                body,
            };
            let _ = shared.publish(shared.node_channel(&to), &header, &[]).await;
        });
    }

    /// Queues a remote send for local session `n`, in order, without waiting.
    fn enqueue_send(self: &Arc<Self>, n: u64, data: Bytes) {
        let mut state = self.state();
        if let Some(lane) = state.lanes.get(&n) {
            match lane.try_send(data) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(data)) => {
                    return self.start_lane(&mut state, n, data);
                }
            }
        }
        self.start_lane(&mut state, n, data);
    }

    fn start_lane(self: &Arc<Self>, state: &mut State, n: u64, data: Bytes) {
        let Some(id) = self.local.resolve(n) else {
            self.lost.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (tx, mut rx) = mpsc::channel(self.config.lane_capacity);
        let _ = tx.try_send(data);
        state.lanes.insert(n, tx);
        let shared = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(data)) = tokio::time::timeout(LANE_IDLE, rx.recv()).await {
                shared.deliver(id, data).await;
            }
            // Closed first, then drained: nothing queued in between is lost.
            rx.close();
            while let Some(data) = rx.recv().await {
                shared.deliver(id, data).await;
            }
        });
    }

    async fn deliver(&self, id: SessionId, data: Bytes) {
        match self.local.send_to(id, data).await {
            Ok(()) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.lost.fetch_add(1, Ordering::Relaxed),
        };
    }

    async fn local_groups_send(
        &self,
        group: &str,
        except: Option<SessionId>,
        data: Bytes,
    ) -> FanOut {
        let members: Vec<SessionId> = self
            .state()
            .groups
            .get(group)
            .map(|m| m.iter().copied().filter(|id| Some(*id) != except).collect())
            .unwrap_or_default();
        self.local.send_each(members, data).await
    }

    fn local_except(&self, except: &Option<ClusterSessionId>) -> Option<SessionId> {
        except
            .as_ref()
            .filter(|id| *id.node() == self.node)
            .and_then(|id| self.local.resolve(id.session()))
    }

    /// One message from the bus.
    async fn handle(self: &Arc<Self>, channel: &str, message: Bytes) {
        let Some((header, payload)) = wire::decode(message) else {
            self.undecodable.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%channel, "undecodable bus message");
            return;
        };
        match header {
            Header::Heartbeat { from, count, hello } => {
                if from == self.node {
                    return;
                }
                let new = self
                    .state()
                    .peers
                    .get(from.name())
                    .is_none_or(|p| p.node != from);
                self.seen(from, count as usize);
                if hello || new {
                    // A node that just started (or came back) learns of us at once.
                    let shared = self.clone();
                    tokio::spawn(async move {
                        let _ = shared.announce(false).await;
                    });
                }
            }
            Header::Bye { from } => {
                if from != self.node {
                    self.gone(&from, true);
                }
            }
            Header::Broadcast {
                from,
                except,
                disconnect_slow,
            } => {
                if from == self.node {
                    return;
                }
                let policy = if disconnect_slow {
                    SlowConsumerPolicy::Disconnect
                } else {
                    SlowConsumerPolicy::Drop
                };
                let except = self.local_except(&except);
                let fan_out = self.local.broadcast(payload, except, policy).await;
                self.fanned_out
                    .fetch_add(fan_out.queued as u64, Ordering::Relaxed);
                self.fan_out_dropped
                    .fetch_add(fan_out.dropped as u64, Ordering::Relaxed);
            }
            Header::Group {
                from,
                group,
                except,
            } => {
                if from == self.node {
                    return;
                }
                let except = self.local_except(&except);
                self.local_groups_send(&group, except, payload).await;
            }
            Header::Send { session, .. } => self.enqueue_send(session, payload),
            Header::Kick {
                from,
                req,
                session,
                graceful,
            } => {
                let kicked = self
                    .local
                    .resolve(session)
                    .is_some_and(|id| self.local.kick(id, graceful));
                self.reply(from, req, Reply::Kick(kicked));
            }
            Header::List { from, req } => {
                if from != self.node {
                    let sessions = self.local.list(&self.node);
                    self.reply(from, req, Reply::List(sessions));
                }
            }
            Header::Get { from, req, session } => {
                let info = self
                    .local
                    .resolve(session)
                    .and_then(|id| self.local.get(&self.node, id));
                self.reply(from, req, Reply::Get(info));
            }
            Header::Reply { from, req, body } => {
                if let Some(waiter) = self.state().pending.get(&req) {
                    let _ = waiter.try_send((from, body));
                }
            }
        }
    }

    /// Sends a request to `node` and waits for its one reply.
    async fn ask(
        &self,
        node: &NodeId,
        make: impl FnOnce(u64) -> Header,
    ) -> Result<Reply, ClusterError> {
        let req = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel(4);
        self.state().pending.insert(req, tx);
        let _guard = PendingGuard(self, req);
        self.publish_to(node, &make(req), &[]).await?;
        let deadline = self.config.request_deadline;
        match tokio::time::timeout(deadline, rx.recv()).await {
            Ok(Some((_, reply))) => Ok(reply),
            _ => Err(ClusterError::Timeout {
                node: node.clone(),
                deadline_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    /// One turn of the ticker.
    async fn tick(
        self: &Arc<Self>,
        last_beat: &mut Instant,
        last_count: &mut usize,
        last_prune: &mut Instant,
    ) {
        if !self.bus_up.load(Ordering::SeqCst) {
            // Probe; the bus client reconnects (and resubscribes) on this call.
            if self.announce(true).await.is_ok() && self.subscribe_all().await.is_ok() {
                {
                    // Peers could not be heard while the bus was away: give them a fresh
                    // `dead_after` to heartbeat again instead of declaring them all dead.
                    let mut state = self.state();
                    let now = Instant::now();
                    for peer in state.peers.values_mut() {
                        peer.last_seen = now;
                    }
                }
                let _ = self.read_presence().await;
                if !self.bus_up.swap(true, Ordering::SeqCst) {
                    tracing::info!(node = %self.node, "bus up");
                    self.emit(ClusterEvent::BusUp);
                }
                *last_beat = Instant::now();
            }
            return;
        }
        let count = self.local.count();
        if last_beat.elapsed() >= self.config.heartbeat_interval || count != *last_count {
            *last_count = count;
            *last_beat = Instant::now();
            let _ = self.announce(false).await;
        }
        self.expire();
        if last_prune.elapsed() >= Duration::from_secs(1) {
            *last_prune = Instant::now();
            self.prune().await;
        }
    }

    /// Drops group members that ended and lanes that closed; leaves emptied groups' channels.
    async fn prune(&self) {
        let emptied: Vec<String> = {
            let mut state = self.state();
            state.lanes.retain(|_, lane| !lane.is_closed());
            let mut emptied = Vec::new();
            for (group, members) in state.groups.iter_mut() {
                members.retain(|id| self.local.is_live(*id));
                if members.is_empty() {
                    emptied.push(group.clone());
                }
            }
            for group in &emptied {
                state.groups.remove(group);
            }
            emptied
        };
        for group in emptied {
            let _ = self.bus.unsubscribe(self.group_channel(&group)).await;
        }
    }
}

impl ClusterRegistry {
    /// Joins the cluster: subscribes to this node's channels, reads the other nodes' presence,
    /// announces itself, and starts the heartbeat and the inbound tasks on the current Tokio
    /// runtime (the actix System's, in a server).
    ///
    /// # Errors
    ///
    /// [`ClusterError::BusDown`] when the bus cannot be reached now (later outages are
    /// survived); [`ClusterError::Invalid`] when the prefix is not a valid name, or when the
    /// bus's inbox was already taken by another registry.
    pub async fn start(
        registry: Registry,
        bus: impl Bus,
        node: NodeId,
        config: ClusterConfig,
    ) -> Result<ClusterRegistry, ClusterError> {
        check_name("prefix", &config.prefix)?;
        let mut inbox = bus
            .take_events()
            .ok_or_else(|| ClusterError::invalid("bus", "its inbox is already taken"))?;
        let (events, _) = broadcast::channel(config.events_capacity);
        let (stop, mut stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            node,
            local: Local::new(registry),
            bus: Arc::new(bus),
            state: Mutex::default(),
            bus_up: AtomicBool::new(true),
            events,
            next_request: AtomicU64::new(1),
            delivered: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            undecodable: AtomicU64::new(0),
            fanned_out: AtomicU64::new(0),
            fan_out_dropped: AtomicU64::new(0),
            stop,
            config,
        });
        shared.subscribe_all().await?;
        shared.read_presence().await?;
        shared.announce(true).await?;

        let inbound = shared.clone();
        let mut inbound_stop = stopped.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    event = inbox.recv() => event,
                    _ = inbound_stop.changed() => None,
                };
                match event {
                    Some(BusEvent::Message { channel, payload }) => {
                        inbound.handle(&channel, payload).await
                    }
                    Some(BusEvent::Disconnected) => inbound.bus_failed(&ClusterError::BusDown {
                        reason: "connection lost".into(),
                    }),
                    None => break,
                }
            }
        });
        let ticker = shared.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(ticker.config.tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut last_beat, mut last_prune) = (Instant::now(), Instant::now());
            let mut last_count = ticker.local.count();
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = stopped.changed() => break,
                }
                ticker
                    .tick(&mut last_beat, &mut last_count, &mut last_prune)
                    .await;
            }
        });
        tracing::info!(node = %shared.node, "joined the cluster");
        Ok(ClusterRegistry { shared })
    }

    /// This node.
    pub fn node(&self) -> &NodeId {
        &self.shared.node
    }

    /// The local registry this wraps.
    pub fn local(&self) -> &Registry {
        self.shared.local.registry()
    }

    /// The cluster-wide id of local session `id`.
    pub fn id_of(&self, id: SessionId) -> ClusterSessionId {
        ClusterSessionId::new(self.shared.node.clone(), id)
    }

    /// The local session behind `id`, when it lives on this node and is live.
    pub fn local_id(&self, id: &ClusterSessionId) -> Option<SessionId> {
        (*id.node() == self.shared.node)
            .then(|| self.shared.local.resolve(id.session()))
            .flatten()
    }

    /// Whether the bus is connected, as last seen.
    pub fn is_bus_up(&self) -> bool {
        self.shared.bus_up.load(Ordering::SeqCst)
    }

    /// Every future [`ClusterEvent`]. A subscriber more than the configured events capacity
    /// behind misses the oldest (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.shared.events.subscribe()
    }

    /// Writes `data` to session `id` wherever it lives (through its codec, as
    /// [`Registry::send_to`]). At most once: see the type's docs.
    ///
    /// # Errors
    ///
    /// - local session: [`ClusterError::Session`] as [`Registry::send_to`] (`Gone`, ...);
    /// - [`ClusterError::NodeUnreachable`] at once when the owning node is not subscribed
    ///   (Redis counted 0 receivers) or is a past incarnation;
    /// - [`ClusterError::BusDown`] at once while the bus is down.
    pub async fn send_to(&self, id: &ClusterSessionId, data: Bytes) -> Result<(), ClusterError> {
        let shared = &self.shared;
        if *id.node() == shared.node {
            let local = shared
                .local
                .resolve(id.session())
                .ok_or(ClusterError::Session(SessionError::Gone))?;
            return Ok(shared.local.send_to(local, data).await?);
        }
        let header = Header::Send {
            from: shared.node.clone(),
            session: id.session(),
        };
        shared.publish_to(id.node(), &header, &data).await
    }

    /// Closes session `id` wherever it lives; answers whether it was live.
    ///
    /// # Errors
    ///
    /// As [`send_to`](Self::send_to) for a remote node, plus [`ClusterError::Timeout`] when it
    /// does not answer within the request deadline.
    pub async fn kick(&self, id: &ClusterSessionId, graceful: bool) -> Result<bool, ClusterError> {
        let shared = &self.shared;
        if *id.node() == shared.node {
            return Ok(shared
                .local
                .resolve(id.session())
                .is_some_and(|local| shared.local.kick(local, graceful)));
        }
        let from = shared.node.clone();
        match shared
            .ask(id.node(), |req| Header::Kick {
                from,
                req,
                session: id.session(),
                graceful,
            })
            .await?
        {
            Reply::Kick(kicked) => Ok(kicked),
            _ => Ok(false),
        }
    }

    /// Sends `data` to every session on every node except `except`: a local fan-out, then one
    /// publish that every other node fans out to its own sessions with `policy`.
    pub async fn broadcast(
        &self,
        data: Bytes,
        except: Option<&ClusterSessionId>,
        policy: SlowConsumerPolicy,
    ) -> ClusterBroadcastReport {
        let shared = &self.shared;
        let except = except.cloned();
        let local_except = shared.local_except(&except);
        let fan_out = shared
            .local
            .broadcast(data.clone(), local_except, policy)
            .await;
        let header = Header::Broadcast {
            from: shared.node.clone(),
            except,
            disconnect_slow: policy == SlowConsumerPolicy::Disconnect,
        };
        let remote = shared
            .publish(shared.all_channel(), &header, &data)
            .await
            .map(|n| n.saturating_sub(1));
        ClusterBroadcastReport {
            local_queued: fan_out.queued,
            local_dropped: fan_out.dropped,
            remote,
        }
    }

    /// Adds local session `id` to `group`. The node subscribes to the group's channel while
    /// it has at least one member; a member that ends is removed within a second (or at once
    /// with [`leave`](Self::leave)).
    ///
    /// # Errors
    ///
    /// [`ClusterError::Invalid`] for a bad group name (1 to 64 of `[A-Za-z0-9._-]`);
    /// [`ClusterError::Session`] (`Gone`) when `id` is not live; [`ClusterError::BusDown`] when
    /// the subscription could not be made now: the member is kept locally and the channel is
    /// subscribed when the bus returns.
    pub async fn join(&self, group: &str, id: SessionId) -> Result<(), ClusterError> {
        let group = check_name("group name", group)?;
        if !self.shared.local.is_live(id) {
            return Err(ClusterError::Session(SessionError::Gone));
        }
        let first = {
            let mut state = self.shared.state();
            let members = state.groups.entry(group.clone()).or_default();
            members.insert(id);
            members.len() == 1
        };
        if first {
            self.shared.check_up()?;
            let result = self
                .shared
                .bus
                .subscribe(self.shared.group_channel(&group))
                .await;
            if let Err(error) = &result {
                self.shared.bus_failed(error);
            }
            result?;
        }
        Ok(())
    }

    /// Removes local session `id` from `group`; answers whether it was a member.
    pub async fn leave(&self, group: &str, id: SessionId) -> bool {
        let (was, emptied) = {
            let mut state = self.shared.state();
            let Some(members) = state.groups.get_mut(group) else {
                return false;
            };
            let was = members.remove(&id);
            let emptied = members.is_empty();
            if emptied {
                state.groups.remove(group);
            }
            (was, emptied)
        };
        if emptied {
            let _ = self
                .shared
                .bus
                .unsubscribe(self.shared.group_channel(group))
                .await;
        }
        was
    }

    /// The local members of `group`.
    pub fn members(&self, group: &str) -> Vec<SessionId> {
        self.shared
            .state()
            .groups
            .get(group)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Sends `data` to every member of `group` on every node except `except`.
    pub async fn broadcast_group(
        &self,
        group: &str,
        data: Bytes,
        except: Option<&ClusterSessionId>,
    ) -> ClusterBroadcastReport {
        let shared = &self.shared;
        let except = except.cloned();
        let local_except = shared.local_except(&except);
        let subscribed = shared.state().groups.contains_key(group);
        let fan_out = shared
            .local_groups_send(group, local_except, data.clone())
            .await;
        let header = Header::Group {
            from: shared.node.clone(),
            group: group.to_string(),
            except,
        };
        let remote = shared
            .publish(shared.group_channel(group), &header, &data)
            .await
            .map(|n| n.saturating_sub(usize::from(subscribed)));
        ClusterBroadcastReport {
            local_queued: fan_out.queued,
            local_dropped: fan_out.dropped,
            remote,
        }
    }

    /// Live sessions in the cluster: this node's exact count plus each live peer's count as of
    /// its last heartbeat (at most a heartbeat interval old). No round trip. While the bus is
    /// down, peers' last known counts are kept.
    pub fn count(&self) -> usize {
        let peers: usize = self.shared.state().peers.values().map(|p| p.count).sum();
        self.shared.local.count() + peers
    }

    /// The live peers (this node not included).
    pub fn nodes(&self) -> Vec<NodeStatus> {
        let mut nodes: Vec<NodeStatus> = self
            .shared
            .state()
            .peers
            .values()
            .map(|p| NodeStatus {
                node: p.node.clone(),
                count: p.count,
                last_seen: p.last_seen.elapsed(),
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        nodes
    }

    /// Every session in the cluster, by scatter-gather: one request to all nodes, answers
    /// collected until every live node answered or the request deadline passed. Never waits
    /// longer than the deadline (plus one bus call).
    ///
    /// # Errors
    ///
    /// [`ClusterError::BusDown`] at once while the bus is down.
    pub async fn list(&self) -> Result<ClusterList, ClusterError> {
        let shared = &self.shared;
        let expected: HashSet<NodeId> = shared
            .state()
            .peers
            .values()
            .map(|p| p.node.clone())
            .collect();
        let req = shared.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel(expected.len() + 16);
        shared.state().pending.insert(req, tx);
        let _guard = PendingGuard(shared, req);
        let deadline = tokio::time::Instant::now() + shared.config.request_deadline;
        let header = Header::List {
            from: shared.node.clone(),
            req,
        };
        shared.publish(shared.all_channel(), &header, &[]).await?;
        let mut sessions = shared.local.list(&shared.node);
        let mut answered = HashSet::new();
        while !expected.is_subset(&answered) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((from, Reply::List(found)))) => {
                    if answered.insert(from) {
                        sessions.extend(found);
                    }
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        let mut missing: Vec<NodeId> = expected.difference(&answered).cloned().collect();
        missing.sort();
        Ok(ClusterList { sessions, missing })
    }

    /// One session's snapshot, wherever it lives; `None` when its node says it is not live.
    ///
    /// # Errors
    ///
    /// As [`kick`](Self::kick).
    pub async fn get(
        &self,
        id: &ClusterSessionId,
    ) -> Result<Option<ClusterSessionInfo>, ClusterError> {
        let shared = &self.shared;
        if *id.node() == shared.node {
            return Ok(shared
                .local
                .resolve(id.session())
                .and_then(|local| shared.local.get(&shared.node, local)));
        }
        let from = shared.node.clone();
        match shared
            .ask(id.node(), |req| Header::Get {
                from,
                req,
                session: id.session(),
            })
            .await?
        {
            Reply::Get(info) => Ok(info),
            _ => Ok(None),
        }
    }

    /// Stops the background tasks without a goodbye and without leaving any channel, as a
    /// hung process would: for tests of liveness and deadlines.
    #[doc(hidden)]
    pub fn stop_for_tests(&self) {
        let _ = self.shared.stop.send(true);
    }

    /// Totals since start.
    pub fn stats(&self) -> ClusterStats {
        ClusterStats {
            remote_sends_delivered: self.shared.delivered.load(Ordering::Relaxed),
            remote_sends_lost: self.shared.lost.load(Ordering::Relaxed),
            undecodable: self.shared.undecodable.load(Ordering::Relaxed),
            remote_broadcast_queued: self.shared.fanned_out.load(Ordering::Relaxed),
            remote_broadcast_dropped: self.shared.fan_out_dropped.load(Ordering::Relaxed),
        }
    }

    /// Leaves the cluster cleanly: announces the shutdown (peers see
    /// [`ClusterEvent::NodeDown`] with `graceful: true` at once), removes the presence key and
    /// stops the background tasks. Local sessions are not touched (shut the local registry
    /// down separately). Bounded by the bus's operation timeout.
    pub async fn shutdown(&self) {
        let shared = &self.shared;
        let _ = shared.stop.send(true);
        if shared.bus_up.load(Ordering::SeqCst) {
            let header = Header::Bye {
                from: shared.node.clone(),
            };
            let _ = shared
                .bus
                .publish(shared.all_channel(), wire::encode(&header, &[]))
                .await;
            let _ = shared
                .bus
                .delete_key(format!(
                    "{}{}",
                    shared.presence_prefix(),
                    shared.node.name()
                ))
                .await;
            // Senders to this node now get `NodeUnreachable` at once.
            let groups: Vec<String> = shared.state().groups.keys().cloned().collect();
            for channel in groups
                .iter()
                .map(|g| shared.group_channel(g))
                .chain([shared.node_channel(&shared.node), shared.all_channel()])
            {
                let _ = shared.bus.unsubscribe(channel).await;
            }
        }
        tracing::info!(node = %shared.node, "left the cluster");
    }
}
