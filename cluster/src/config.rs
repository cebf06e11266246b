//! [`ClusterConfig`]: timings and bounds of a [`ClusterRegistry`](crate::ClusterRegistry).

use std::time::Duration;

/// Timings and bounds of a [`ClusterRegistry`](crate::ClusterRegistry); `Default` plus chained
/// setters, each documenting its default.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use switchboard_cluster::ClusterConfig;
///
/// let config = ClusterConfig::default()
///     .heartbeat_interval(Duration::from_millis(200))
///     .dead_after(Duration::from_millis(600))
///     .prefix("test-42");
/// assert_eq!(config.get_dead_after(), Duration::from_millis(600));
/// assert_eq!(ClusterConfig::default().get_request_deadline(), Duration::from_millis(500));
/// ```
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub(crate) heartbeat_interval: Duration,
    pub(crate) dead_after: Duration,
    pub(crate) tick: Duration,
    pub(crate) request_deadline: Duration,
    pub(crate) prefix: String,
    pub(crate) events_capacity: usize,
    pub(crate) lane_capacity: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            heartbeat_interval: Duration::from_secs(1),
            dead_after: Duration::from_secs(3),
            tick: Duration::from_millis(100),
            request_deadline: Duration::from_millis(500),
            prefix: "switchboard".into(),
            events_capacity: 1024,
            lane_capacity: 4096,
        }
    }
}

impl ClusterConfig {
    /// How often the node publishes its heartbeat (with its session count) and refreshes its
    /// presence key. Default 1 s. A changed count is also published at the next tick.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How long a peer may stay silent before it counts as dead (for `count`, `list` and
    /// [`ClusterEvent::NodeDown`](crate::ClusterEvent::NodeDown)); also the presence key's TTL.
    /// Default 3 s.
    pub fn dead_after(mut self, after: Duration) -> Self {
        self.dead_after = after.max(Duration::from_millis(30));
        self
    }

    /// How often liveness, count changes and (while the bus is down) reconnection are checked.
    /// Default 100 ms.
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick.max(Duration::from_millis(5));
        self
    }

    /// How long `list`, `get` and a remote `kick` wait for answers. Default 500 ms.
    pub fn request_deadline(mut self, deadline: Duration) -> Self {
        self.request_deadline = deadline;
        self
    }

    /// Prefix of every channel and key, so several clusters can share one Redis. Default
    /// `switchboard`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Events kept for a lagging subscriber before it misses some (it then gets
    /// `RecvError::Lagged`). Default 1024.
    pub fn events_capacity(mut self, capacity: usize) -> Self {
        self.events_capacity = capacity.max(1);
        self
    }

    /// Messages from other nodes queued for one local session (kept in order) before new ones
    /// are dropped and counted. Default 4096.
    pub fn lane_capacity(mut self, capacity: usize) -> Self {
        self.lane_capacity = capacity.max(1);
        self
    }

    /// The heartbeat interval.
    pub fn get_heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// The silence after which a peer is dead.
    pub fn get_dead_after(&self) -> Duration {
        self.dead_after
    }

    /// The deadline of `list`, `get` and remote `kick`.
    pub fn get_request_deadline(&self) -> Duration {
        self.request_deadline
    }
}
