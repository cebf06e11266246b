//! [`RedisBus`]: the [`Bus`] on Redis pub/sub and keys with a TTL, through the `redis` crate's
//! `ConnectionManager` over RESP3 (subscriptions are restored by the client after a reconnect).

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use redis::{aio::ConnectionManager, aio::ConnectionManagerConfig, PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use crate::{bus::DEFAULT_INBOX, Bus, BusEvent, ClusterError};

/// Most `SCAN` rounds when listing keys: the presence keys are one per node, so this bounds
/// the loop far above any real cluster.
const MAX_SCAN_ROUNDS: usize = 1_000;

/// How a [`RedisBus`] talks to Redis.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use switchboard_cluster::RedisBusConfig;
///
/// let config = RedisBusConfig::default().op_timeout(Duration::from_millis(300));
/// assert_eq!(config.get_op_timeout(), Duration::from_millis(300));
/// ```
#[derive(Debug, Clone)]
pub struct RedisBusConfig {
    op_timeout: Duration,
    inbox: usize,
}

impl Default for RedisBusConfig {
    fn default() -> Self {
        RedisBusConfig {
            op_timeout: Duration::from_millis(500),
            inbox: DEFAULT_INBOX,
        }
    }
}

impl RedisBusConfig {
    /// Longest a command, or a connection attempt, may take before it fails with
    /// [`ClusterError::BusDown`]. Default 500 ms.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// The configured operation timeout.
    pub fn get_op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// Messages held for the node before new ones are dropped (counted in
    /// [`RedisBus::inbox_dropped`]). Default [`DEFAULT_INBOX`].
    pub fn inbox(mut self, messages: usize) -> Self {
        self.inbox = messages.max(1);
        self
    }
}

/// The [`Bus`] on Redis.
///
/// One multiplexed RESP3 connection carries commands and subscription messages. When it
/// breaks, the `ConnectionManager` reconnects on the next command (one quick retry, then the
/// command fails with [`ClusterError::BusDown`]; the next command tries again) and restores
/// every subscription before it hands the new connection out.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), switchboard_cluster::ClusterError> {
/// use switchboard_cluster::{RedisBus, RedisBusConfig};
///
/// let bus = RedisBus::connect("redis://127.0.0.1:6379", RedisBusConfig::default()).await?;
/// # let _ = bus;
/// # Ok(())
/// # }
/// # drop(run());
/// ```
#[derive(Clone)]
pub struct RedisBus {
    manager: ConnectionManager,
    events: Arc<Mutex<Option<mpsc::Receiver<BusEvent>>>>,
    dropped: Arc<AtomicU64>,
    op_timeout: Duration,
}

impl fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus")
            .field("op_timeout", &self.op_timeout)
            .field("inbox_dropped", &self.inbox_dropped())
            .finish()
    }
}

fn bus_down(error: impl fmt::Display) -> ClusterError {
    ClusterError::BusDown {
        reason: error.to_string(),
    }
}

impl RedisBus {
    /// Connects to the Redis at `url` (`redis://host:port[/db]`; RESP3 is added when the URL
    /// does not ask for it).
    ///
    /// # Errors
    ///
    /// [`ClusterError::Invalid`] for a bad URL or one that asks for RESP2;
    /// [`ClusterError::BusDown`] when Redis cannot be reached within the operation timeout.
    pub async fn connect(url: &str, config: RedisBusConfig) -> Result<RedisBus, ClusterError> {
        let url = if url.contains("protocol=") {
            url.to_string()
        } else if url.contains('?') {
            format!("{url}&protocol=resp3")
        } else {
            format!("{url}?protocol=resp3")
        };
        let client = redis::Client::open(url.as_str())
            .map_err(|e| ClusterError::invalid("bus url", e.to_string()))?;
        let (tx, rx) = mpsc::channel(config.inbox);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let push = move |info: PushInfo| -> Result<(), redis::aio::SendError> {
            if let Some(event) = to_event(info) {
                if tx.try_send(event).is_err() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        };
        let manager_config = ConnectionManagerConfig::new()
            .set_push_sender(push)
            .set_automatic_resubscription()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(100))
            .set_connection_timeout(Some(config.op_timeout))
            .set_response_timeout(Some(config.op_timeout));
        let manager = tokio::time::timeout(
            config.op_timeout * 2,
            ConnectionManager::new_with_config(client, manager_config),
        )
        .await
        .map_err(|_| bus_down("timed out connecting"))?
        .map_err(|e| {
            if e.kind() == redis::ErrorKind::Client {
                ClusterError::invalid("bus url", e.to_string())
            } else {
                bus_down(e)
            }
        })?;
        Ok(RedisBus {
            manager,
            events: Arc::new(Mutex::new(Some(rx))),
            dropped,
            op_timeout: config.op_timeout,
        })
    }

    /// Messages dropped because the node's inbox was full.
    pub fn inbox_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(ConnectionManager) -> BoxFuture<'static, redis::RedisResult<T>>,
    ) -> BoxFuture<'static, Result<T, ClusterError>> {
        let request = op(self.manager.clone());
        let timeout = self.op_timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, request).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(error)) => Err(bus_down(error)),
                Err(_) => Err(bus_down(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                ))),
            }
        })
    }
}

fn to_event(info: PushInfo) -> Option<BusEvent> {
    match info.kind {
        PushKind::Disconnection => Some(BusEvent::Disconnected),
        PushKind::Message => {
            let mut data = info.data.into_iter();
            let channel = match data.next()? {
                Value::BulkString(b) => String::from_utf8(b).ok()?,
                Value::SimpleString(s) => s,
                _ => return None,
            };
            let payload = match data.next()? {
                Value::BulkString(b) => Bytes::from(b),
                _ => return None,
            };
            Some(BusEvent::Message { channel, payload })
        }
        _ => None,
    }
}

impl Bus for RedisBus {
    fn publish(
        &self,
        channel: String,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<usize, ClusterError>> {
        self.run(move |mut c| {
            Box::pin(async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload.as_ref())
                    .query_async::<usize>(&mut c)
                    .await
            })
        })
    }

    fn subscribe(&self, channel: String) -> BoxFuture<'static, Result<(), ClusterError>> {
        self.run(move |mut c| Box::pin(async move { c.subscribe(channel).await }))
    }

    fn unsubscribe(&self, channel: String) -> BoxFuture<'static, Result<(), ClusterError>> {
        self.run(move |mut c| Box::pin(async move { c.unsubscribe(channel).await }))
    }

    fn set_key(
        &self,
        key: String,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<(), ClusterError>> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.run(move |mut c| {
            Box::pin(async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value.as_ref())
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<()>(&mut c)
                    .await
            })
        })
    }

    fn delete_key(&self, key: String) -> BoxFuture<'static, Result<(), ClusterError>> {
        self.run(move |mut c| {
            Box::pin(async move { redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await })
        })
    }

    fn keys_with_prefix(
        &self,
        prefix: String,
    ) -> BoxFuture<'static, Result<Vec<(String, Bytes)>, ClusterError>> {
        self.run(move |mut c| {
            Box::pin(async move {
                let pattern = format!("{prefix}*");
                let mut keys = Vec::new();
                let mut cursor: u64 = 0;
                for _ in 0..MAX_SCAN_ROUNDS {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c)
                        .await?;
                    keys.extend(batch);
                    cursor = next;
                    if cursor == 0 {
                        break;
                    }
                }
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                let values: Vec<Option<Vec<u8>>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
                Ok(keys
                    .into_iter()
                    .zip(values)
                    .filter_map(|(k, v)| v.map(|v| (k, Bytes::from(v))))
                    .collect())
            })
        })
    }

    fn take_events(&self) -> Option<mpsc::Receiver<BusEvent>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}
