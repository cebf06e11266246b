//! One Switchboard registry across processes and machines, on Redis.
//!
//! A [`ClusterRegistry`] wraps a node's local [`switchboard::Registry`] (which stays the
//! authority for that node's sessions) and a [`Bus`] to the other nodes: [`RedisBus`] on Redis
//! pub/sub plus presence keys with a TTL, or [`MemoryBus`] inside one process for tests.
//!
//! | operation | how |
//! |---|---|
//! | `send_to(id)`, `kick(id)` | the id names its node ([`ClusterSessionId`]): one publish on that node's channel; 0 receivers is [`ClusterError::NodeUnreachable`] at once |
//! | `broadcast` | local fan-out plus one publish; each node applies its slow-consumer policy |
//! | groups | `join` / `leave` / `broadcast_group`; a node subscribes to a group's channel only while it has a local member |
//! | `count` | the sum of the counts live nodes publish with their heartbeats: no round trip |
//! | `list`, `get` | scatter-gather with a deadline (default 500 ms); the answer names the nodes that did not answer |
//! | liveness | heartbeat every second, dead after 3 s silent, a new incarnation replaces the old at once, a clean shutdown is announced |
//! | events | [`ClusterEvent`]: `NodeUp`, `NodeDown { graceful }`, `BusDown`, `BusUp` |
//!
//! **Delivery is at most once.** Nothing is stored, acknowledged or retried between nodes;
//! see [`ClusterRegistry`] for exactly what can be lost. While Redis is down, cross-node calls
//! fail at once with [`ClusterError::BusDown`], local sessions carry on untouched, and the node
//! reconnects, resubscribes and announces itself again by itself ([`ClusterEvent::BusUp`]).
//!
//! # Examples
//!
//! ```no_run
//! # actix_rt::System::new().block_on(async {
//! use bytes::Bytes;
//! use switchboard::{Registry, SlowConsumerPolicy};
//! use switchboard_cluster::{ClusterConfig, ClusterRegistry, NodeId, RedisBus, RedisBusConfig};
//!
//! let bus = RedisBus::connect("redis://127.0.0.1:6379", RedisBusConfig::default()).await.unwrap();
//! let registry = Registry::new(); // hand this one to the Listener too
//! let cluster = ClusterRegistry::start(
//!     registry, bus, NodeId::new("node-a").unwrap(), ClusterConfig::default(),
//! ).await.unwrap();
//! let report = cluster.broadcast(Bytes::from("hello, everyone"), None, SlowConsumerPolicy::Drop).await;
//! println!("{} nodes reached, {} online", report.remote.unwrap_or(0), cluster.count());
//! cluster.shutdown().await;
//! # });
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![doc(test(attr(deny(warnings))))]

mod bus;
mod config;
mod error;
mod id;
mod local;
mod redis_bus;
mod registry;
mod wire;

pub use bus::{Bus, BusEvent, MemoryBus, MemoryHub, DEFAULT_INBOX};
pub use config::ClusterConfig;
pub use error::ClusterError;
pub use id::{ClusterSessionId, NodeId, MAX_NODE_NAME};
pub use redis_bus::{RedisBus, RedisBusConfig};
pub use registry::{
    ClusterBroadcastReport, ClusterEvent, ClusterList, ClusterRegistry, ClusterSessionInfo,
    ClusterStats, NodeStatus,
};
