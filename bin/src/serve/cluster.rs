//! Chat mode across nodes (`serve --cluster URL`): the room spans every node on the same Redis,
//! through [`switchboard_cluster::ClusterRegistry`].
//!
//! Ids are `NODE#N` (`a#5`: session 5 on node `a`). As in one-node chat:
//!
//! | event | the client itself sees | every other client, on every node, sees |
//! |---|---|---|
//! | it connects | `* welcome a#5, N online` (N cluster-wide) | `* a#5 joined` |
//! | it sends `text` | nothing | `[a#5] text` |
//! | it leaves | (gone) | `* a#5 left` |
//! | the server's stdin has `text` | `[server a] text` | `[server a] text` |
//!
//! and three commands, answered to the sender only:
//!
//! | command | answer |
//! |---|---|
//! | `/count` | `* N online` (cluster-wide, from heartbeats) |
//! | `/who` | `* N online: a#1 b#4 ...`, then ` (no answer from: c)` when a node missed the deadline |
//! | `/msg a#5 text` | a#5 gets `[b#2 to you] text`; errors come back as `* cannot send to a#5: REASON` |
//!
//! A client's lines are relayed in order: each session has one queue of cluster operations,
//! run one after the other (bounded; a client faster than the bus gets
//! `* too fast: line dropped`). Delivery between nodes is at most once.

use anyhow::Context as _;
use bytes::Bytes;
use serde_json::json;
use switchboard::{
    admin::InfoSection, Conn, DisconnectReason, ListenerBuilder, ListenerHandle, Registry,
    SessionHandler, SessionId, SessionInfo, SlowConsumerPolicy,
};
use switchboard_cluster::{
    ClusterConfig, ClusterError, ClusterEvent, ClusterRegistry, ClusterSessionId, NodeId, RedisBus,
    RedisBusConfig,
};
use switchboard_codec::Lines;
use tokio::sync::mpsc;

/// Cluster operations queued per client.
const QUEUE: usize = 1024;

/// Joins the cluster at `url` as `node_name` and starts the chat listener on it.
pub(crate) async fn start(
    builder: ListenerBuilder,
    max_line: usize,
    url: &str,
    node_name: &str,
) -> anyhow::Result<(ListenerHandle, ClusterRegistry)> {
    let node = NodeId::new(node_name).context("--node-name")?;
    let bus = RedisBus::connect(url, RedisBusConfig::default())
        .await
        .with_context(|| format!("cannot join the cluster at {url}"))?;
    let registry = Registry::new();
    let cluster = ClusterRegistry::start(registry.clone(), bus, node, ClusterConfig::default())
        .await
        .with_context(|| format!("cannot join the cluster at {url}"))?;
    let mut events = cluster.subscribe();
    actix_rt::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ClusterEvent::NodeUp { node }) => tracing::info!(%node, "cluster: node up"),
                Ok(ClusterEvent::NodeDown { node, graceful }) => {
                    tracing::info!(%node, graceful, "cluster: node down")
                }
                Ok(ClusterEvent::BusDown { reason }) => {
                    tracing::warn!(%reason, "cluster: bus down")
                }
                Ok(ClusterEvent::BusUp) => tracing::info!("cluster: bus up"),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "cluster: events missed")
                }
                Err(_) => break,
            }
        }
    });
    let peers: Vec<String> = cluster.nodes().iter().map(|n| n.node.to_string()).collect();
    tracing::info!(node = %cluster.node(), ?peers, "cluster: joined");
    let for_handlers = cluster.clone();
    let handle = builder
        .registry(registry)
        .serve(Lines::with_max_length(max_line), move || Member {
            cluster: for_handlers.clone(),
            max_line,
            queue: None,
        })?;
    Ok((handle, cluster))
}

/// The `cluster` section of the admin's `info`: this node (name, incarnation, its own
/// sessions), whether the bus (Redis) is up, the cluster-wide count, and every live peer with
/// the count of its last heartbeat and how long ago that came.
///
/// ```text
/// cluster   node a, incarnation 3f2c9a0e5b7d1468, bus up, 6 online cluster-wide, 2 here
/// peer      b, incarnation 91d0c4e2a6f83b57, 3 sessions, last heartbeat 0.4 s ago
/// peer      c, incarnation 0a7e5d3c1b9f2468, 1 session, last heartbeat 0.9 s ago
/// ```
///
/// `info --json` holds the same under `cluster`: `node`, `incarnation` (16 hex digits),
/// `bus_up`, `count`, `sessions`, and `peers` (`node`, `incarnation`, `sessions`,
/// `last_heartbeat_s`), sorted by name. While the bus is down, peers keep their last known
/// counts and their heartbeat age grows.
pub(crate) fn info_section(cluster: &ClusterRegistry) -> InfoSection {
    let me = cluster.node();
    let bus_up = cluster.is_bus_up();
    let count = cluster.count();
    let here = cluster.local().count();
    let peers = cluster.nodes();
    let mut text = vec![format!(
        "cluster   node {}, incarnation {:016x}, bus {}, {count} online cluster-wide, {here} here",
        me.name(),
        me.incarnation(),
        if bus_up { "up" } else { "DOWN" },
    )];
    if peers.is_empty() {
        text.push("peers     none".into());
    }
    text.extend(peers.iter().map(|p| {
        format!(
            "peer      {}, incarnation {:016x}, {} session{}, last heartbeat {:.1} s ago",
            p.node.name(),
            p.node.incarnation(),
            p.count,
            if p.count == 1 { "" } else { "s" },
            p.last_seen.as_secs_f64(),
        )
    }));
    let json = json!({
        "node": me.name(),
        "incarnation": format!("{:016x}", me.incarnation()),
        "bus_up": bus_up,
        "count": count,
        "sessions": here,
        "peers": peers.iter().map(|p| json!({
            "node": p.node.name(),
            "incarnation": format!("{:016x}", p.node.incarnation()),
            "sessions": p.count,
            "last_heartbeat_s": p.last_seen.as_secs_f64(),
        })).collect::<Vec<_>>(),
    });
    InfoSection::new(json, text)
}

/// Sends lines typed on the server's stdin to every client of every node.
pub(crate) fn forward_stdin(cluster: ClusterRegistry) {
    // See chat::forward_stdin: a background server must not be stopped by SIGTTIN.
    // SAFETY: setting a signal's disposition to SIG_IGN has no memory-safety requirements.
    unsafe {
        libc::signal(libc::SIGTTIN, libc::SIG_IGN);
    }
    let Ok(mut lines) = crate::stdin::lines() else {
        tracing::warn!("cannot read stdin; server messages are off");
        return;
    };
    actix_rt::spawn(async move {
        while let Some(line) = lines.recv().await {
            if line.is_empty() {
                continue;
            }
            let mut message = format!("[server {}] ", cluster.node().name()).into_bytes();
            message.extend_from_slice(&line);
            let report = cluster
                .broadcast(Bytes::from(message), None, SlowConsumerPolicy::Drop)
                .await;
            tracing::debug!(queued = report.local_queued, remote = ?report.remote, "server message sent");
        }
    });
}

/// One thing a client asked of the cluster, run in its order.
enum Op {
    Relay(Bytes, ClusterSessionId),
    Count(SessionId),
    Who(SessionId),
    Msg {
        from: SessionId,
        to: String,
        text: String,
    },
}

/// One chat client.
struct Member {
    cluster: ClusterRegistry,
    max_line: usize,
    queue: Option<mpsc::Sender<Op>>,
}

impl Member {
    fn push(&self, op: Op, conn: &mut Conn<'_, Lines, Self>) {
        if let Some(queue) = &self.queue {
            if queue.try_send(op).is_err() {
                let _ = conn.write("* too fast: line dropped");
            }
        }
    }
}

/// Runs one client's operations in order until its session ends.
async fn run_ops(cluster: ClusterRegistry, mut ops: mpsc::Receiver<Op>) {
    while let Some(op) = ops.recv().await {
        match op {
            Op::Relay(line, from) => {
                let report = cluster
                    .broadcast(line, Some(&from), SlowConsumerPolicy::Drop)
                    .await;
                if let Err(error) = report.remote {
                    tracing::debug!(%error, "relay to other nodes failed");
                }
            }
            Op::Count(me) => {
                let answer = format!("* {} online", cluster.count());
                let _ = cluster.local().send_to(me, Bytes::from(answer)).await;
            }
            Op::Who(me) => {
                let answer = match cluster.list().await {
                    Ok(list) => {
                        let mut ids: Vec<String> =
                            list.sessions.iter().map(|s| s.id.short()).collect();
                        ids.sort();
                        let mut line = format!("* {} online: {}", ids.len(), ids.join(" "));
                        if !list.missing.is_empty() {
                            let names: Vec<&str> = list.missing.iter().map(|n| n.name()).collect();
                            line.push_str(&format!(" (no answer from: {})", names.join(" ")));
                        }
                        line
                    }
                    Err(error) => format!("* cannot list: {error}"),
                };
                let _ = cluster.local().send_to(me, Bytes::from(answer)).await;
            }
            Op::Msg { from, to, text } => {
                let sender = cluster.id_of(from).short();
                let result = match resolve(&cluster, &to) {
                    Ok(target) => {
                        cluster
                            .send_to(&target, Bytes::from(format!("[{sender} to you] {text}")))
                            .await
                    }
                    Err(error) => Err(error),
                };
                if let Err(error) = result {
                    let answer = format!("* cannot send to {to}: {error}");
                    let _ = cluster.local().send_to(from, Bytes::from(answer)).await;
                }
            }
        }
    }
}

/// `NODE#N` to a cluster id, with the node's current incarnation; a full id passes through.
fn resolve(cluster: &ClusterRegistry, text: &str) -> Result<ClusterSessionId, ClusterError> {
    if let Ok(id) = text.parse::<ClusterSessionId>() {
        return Ok(id);
    }
    let (name, n) = text.rsplit_once('#').ok_or_else(|| ClusterError::Invalid {
        what: "session id",
        reason: "expected NODE#N".into(),
    })?;
    // A cluster id with the node's incarnation: parse the full form built from what we know.
    let node = if name == cluster.node().name() {
        cluster.node().clone()
    } else {
        cluster
            .nodes()
            .into_iter()
            .map(|s| s.node)
            .find(|node| node.name() == name)
            .ok_or_else(|| ClusterError::Invalid {
                what: "session id",
                reason: format!("no live node called {name:?}"),
            })?
    };
    format!("{node}#{n}").parse()
}

impl SessionHandler<Lines> for Member {
    fn connected(&mut self, conn: &mut Conn<'_, Lines, Self>) {
        let id = self.cluster.id_of(conn.id());
        let (tx, rx) = mpsc::channel(QUEUE);
        actix_rt::spawn(run_ops(self.cluster.clone(), rx));
        self.queue = Some(tx);
        // The session is registered before `connected` runs, so the count includes it.
        let online = self.cluster.count();
        let _ = conn.write(format!("* welcome {}, {online} online", id.short()));
        let joined = Bytes::from(format!("* {} joined", id.short()));
        self.push(Op::Relay(joined, id.clone()), conn);
        tracing::info!(session = %id, peer = %conn.peer_addr(), online, "joined");
    }

    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        if line.is_empty() {
            return;
        }
        let me = conn.id();
        if line == "/count" {
            return self.push(Op::Count(me), conn);
        }
        if line == "/who" {
            return self.push(Op::Who(me), conn);
        }
        if let Some(rest) = line.strip_prefix("/msg ") {
            let (to, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let op = Op::Msg {
                from: me,
                to: to.to_string(),
                text: text.to_string(),
            };
            return self.push(op, conn);
        }
        let id = self.cluster.id_of(me);
        let message = format!("[{}] {line}", id.short());
        if message.len() > self.max_line {
            let _ = conn.write("* line too long to relay");
            return;
        }
        self.push(Op::Relay(Bytes::from(message), id), conn);
    }

    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        let id = self.cluster.id_of(info.id);
        if let Some(queue) = self.queue.take() {
            // Queued after the client's last lines; the queue's task ends once it has run.
            let _ = queue.try_send(Op::Relay(
                Bytes::from(format!("* {} left", id.short())),
                id.clone(),
            ));
        }
        tracing::info!(session = %id, peer = %info.peer_addr, %reason, lasted = ?super::lifetime(info), "left");
    }
}
