//! The [`Bus`] between nodes: pub/sub channels plus keys with a time to live. [`RedisBus`]
//! (crate::RedisBus) is the real one; [`MemoryBus`] joins nodes of one process, for tests.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::ClusterError;

/// Messages a bus holds for its node before it drops new ones (counted), by default. A node
/// that cannot keep up loses messages rather than memory: delivery is at most once anyway.
pub const DEFAULT_INBOX: usize = 65_536;

/// What a bus tells its node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BusEvent {
    /// A message published on a channel this node subscribes to.
    Message {
        /// The channel.
        channel: String,
        /// The message.
        payload: Bytes,
    },
    /// The connection to the bus was lost. The bus reconnects (and resubscribes) by itself.
    Disconnected,
}

/// Publish/subscribe plus keys with a TTL: everything a [`ClusterRegistry`](crate::ClusterRegistry)
/// needs from the engine between nodes. Every call returns at once with
/// [`ClusterError::BusDown`] when the engine cannot be reached; none waits without bound.
///
/// # Examples
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use bytes::Bytes;
/// use switchboard_cluster::{Bus, BusEvent, MemoryBus};
///
/// let hub = MemoryBus::hub();
/// let (a, b) = (hub.connect(), hub.connect());
/// let mut inbox = b.take_events().unwrap();
/// b.subscribe("news".into()).await.unwrap();
/// assert_eq!(a.publish("news".into(), Bytes::from("hi")).await.unwrap(), 1);
/// assert_eq!(
///     inbox.recv().await,
///     Some(BusEvent::Message { channel: "news".into(), payload: Bytes::from("hi") })
/// );
/// # });
/// ```
pub trait Bus: Send + Sync + 'static {
    /// Publishes `payload` on `channel`; answers how many subscribers (nodes) received it.
    fn publish(
        &self,
        channel: String,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<usize, ClusterError>>;
    /// Subscribes this node to `channel`. Subscriptions survive reconnects.
    fn subscribe(&self, channel: String) -> BoxFuture<'static, Result<(), ClusterError>>;
    /// Unsubscribes this node from `channel`.
    fn unsubscribe(&self, channel: String) -> BoxFuture<'static, Result<(), ClusterError>>;
    /// Sets `key` to `value`, expiring after `ttl`.
    fn set_key(
        &self,
        key: String,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<(), ClusterError>>;
    /// Deletes `key`.
    fn delete_key(&self, key: String) -> BoxFuture<'static, Result<(), ClusterError>>;
    /// Every live key starting with `prefix`, with its value.
    fn keys_with_prefix(
        &self,
        prefix: String,
    ) -> BoxFuture<'static, Result<Vec<(String, Bytes)>, ClusterError>>;
    /// The node's inbox of [`BusEvent`]s; `Some` the first time only.
    fn take_events(&self) -> Option<mpsc::Receiver<BusEvent>>;
}

/// Buses in one process, joined through a hub: for unit tests of the cluster logic without
/// Redis. [`MemoryHub::set_down`] simulates an outage.
///
/// # Examples
///
/// ```
/// use switchboard_cluster::MemoryBus;
///
/// let hub = MemoryBus::hub();
/// let bus = hub.connect();
/// hub.set_down(true); // every call now fails with `BusDown`
/// # let _ = bus;
/// ```
#[derive(Clone)]
pub struct MemoryBus {
    hub: MemoryHub,
    id: usize,
    events: Arc<Mutex<Option<mpsc::Receiver<BusEvent>>>>,
}

/// The shared middle of [`MemoryBus`]es; see [`MemoryBus::hub`].
#[derive(Clone, Default)]
pub struct MemoryHub {
    inner: Arc<HubInner>,
}

#[derive(Default)]
struct HubInner {
    down: AtomicBool,
    state: Mutex<HubState>,
}

#[derive(Default)]
struct HubState {
    next_id: usize,
    inboxes: HashMap<usize, mpsc::Sender<BusEvent>>,
    channels: HashMap<String, HashSet<usize>>,
    keys: HashMap<String, (Bytes, Instant)>,
}

impl fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBus").field("id", &self.id).finish()
    }
}

impl fmt::Debug for MemoryHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryHub")
            .field("down", &self.inner.down.load(Ordering::Relaxed))
            .finish()
    }
}

impl MemoryBus {
    /// A new hub to [`connect`](MemoryHub::connect) buses to.
    pub fn hub() -> MemoryHub {
        MemoryHub::default()
    }

    fn check(&self) -> Result<std::sync::MutexGuard<'_, HubState>, ClusterError> {
        if self.hub.inner.down.load(Ordering::SeqCst) {
            return Err(ClusterError::BusDown {
                reason: "memory bus set down".into(),
            });
        }
        Ok(self.hub.state())
    }

    /// Leaves the hub as a killed process would: its subscriptions vanish at once.
    pub fn disconnect(&self) {
        let mut state = self.hub.state();
        state.inboxes.remove(&self.id);
        for members in state.channels.values_mut() {
            members.remove(&self.id);
        }
    }
}

impl MemoryHub {
    fn state(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new bus on this hub.
    pub fn connect(&self) -> MemoryBus {
        let (tx, rx) = mpsc::channel(DEFAULT_INBOX);
        let mut state = self.state();
        let id = state.next_id;
        state.next_id += 1;
        state.inboxes.insert(id, tx);
        MemoryBus {
            hub: self.clone(),
            id,
            events: Arc::new(Mutex::new(Some(rx))),
        }
    }

    /// Takes the hub down (every call fails with [`ClusterError::BusDown`] and every bus hears
    /// [`BusEvent::Disconnected`]) or brings it back up (subscriptions kept, as Redis's client
    /// resubscribes after a reconnect).
    pub fn set_down(&self, down: bool) {
        let was = self.inner.down.swap(down, Ordering::SeqCst);
        if down && !was {
            for inbox in self.state().inboxes.values() {
                let _ = inbox.try_send(BusEvent::Disconnected);
            }
        }
    }
}

fn ready<T: Send + 'static>(value: T) -> BoxFuture<'static, T> {
    Box::pin(futures::future::ready(value))
}

impl Bus for MemoryBus {
    fn publish(
        &self,
        channel: String,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<usize, ClusterError>> {
        let result = self.check().map(|state| {
            let mut received = 0;
            for id in state.channels.get(&channel).into_iter().flatten() {
                if let Some(inbox) = state.inboxes.get(id) {
                    received += 1;
                    // A full inbox drops the message: at most once, as with Redis.
                    let _ = inbox.try_send(BusEvent::Message {
                        channel: channel.clone(),
                        payload: payload.clone(),
                    });
                }
            }
            received
        });
        ready(result)
    }

    fn subscribe(&self, channel: String) -> BoxFuture<'static, Result<(), ClusterError>> {
        let result = self.check().map(|mut state| {
            state.channels.entry(channel).or_default().insert(self.id);
        });
        ready(result)
    }

    fn unsubscribe(&self, channel: String) -> BoxFuture<'static, Result<(), ClusterError>> {
        let result = self.check().map(|mut state| {
            if let Some(members) = state.channels.get_mut(&channel) {
                members.remove(&self.id);
            }
        });
        ready(result)
    }

    fn set_key(
        &self,
        key: String,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<(), ClusterError>> {
        let result = self.check().map(|mut state| {
            state.keys.insert(key, (value, Instant::now() + ttl));
        });
        ready(result)
    }

    fn delete_key(&self, key: String) -> BoxFuture<'static, Result<(), ClusterError>> {
        let result = self.check().map(|mut state| {
            state.keys.remove(&key);
        });
        ready(result)
    }

    fn keys_with_prefix(
        &self,
        prefix: String,
    ) -> BoxFuture<'static, Result<Vec<(String, Bytes)>, ClusterError>> {
        let result = self.check().map(|state| {
            let now = Instant::now();
            state
                .keys
                .iter()
                .filter(|(k, (_, expires))| k.starts_with(&prefix) && *expires > now)
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect()
        });
        ready(result)
    }

    fn take_events(&self) -> Option<mpsc::Receiver<BusEvent>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}
