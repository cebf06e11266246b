//! Totals the registry keeps about sessions that have ended (by disconnect reason, frames,
//! write-buffer-full events, lifetimes) and about broadcasts: each is one relaxed atomic add per
//! session end or per broadcast, never per frame. Read them with [`Registry::closed_stats`]
//! (the metrics collector and the admin socket do).
//!
//! [`Registry::closed_stats`]: crate::Registry::closed_stats

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use crate::{DisconnectReason, SessionInfo};

/// Every label [`DisconnectReason::label`] gives, in a fixed order.
pub const DISCONNECT_REASON_LABELS: [&str; 17] = [
    "peer_closed",
    "reset",
    "closed",
    "aborted",
    "idle_timeout",
    "frame_timeout",
    "close_timeout",
    "codec",
    "io",
    "slow_consumer",
    "kicked",
    "shutdown",
    "handler_panicked",
    "tls",
    "handshake_timeout",
    "proxy",
    "per_ip_limit",
];

/// Upper bounds, in seconds, of the session-lifetime histogram's buckets (an implicit `+Inf`
/// bucket follows).
pub const LIFETIME_BUCKETS: [f64; 10] =
    [0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0, 3600.0];

impl DisconnectReason {
    /// A short, stable `snake_case` name for the kind of ending, without its details: a metric
    /// label or a log field. One of [`DISCONNECT_REASON_LABELS`].
    ///
    /// # Examples
    ///
    /// ```
    /// use switchboard::DisconnectReason;
    /// assert_eq!(DisconnectReason::IdleTimeout.label(), "idle_timeout");
    /// ```
    pub fn label(&self) -> &'static str {
        DISCONNECT_REASON_LABELS[reason_index(self)]
    }
}

fn reason_index(reason: &DisconnectReason) -> usize {
    match reason {
        DisconnectReason::PeerClosed => 0,
        DisconnectReason::Reset => 1,
        DisconnectReason::Closed => 2,
        DisconnectReason::Aborted => 3,
        DisconnectReason::IdleTimeout => 4,
        DisconnectReason::FrameTimeout => 5,
        DisconnectReason::CloseTimeout => 6,
        DisconnectReason::Codec(_) => 7,
        DisconnectReason::Io(_) => 8,
        DisconnectReason::SlowConsumer => 9,
        DisconnectReason::Kicked => 10,
        DisconnectReason::Shutdown => 11,
        DisconnectReason::HandlerPanicked(_) => 12,
        DisconnectReason::Tls(_) => 13,
        DisconnectReason::HandshakeTimeout => 14,
        DisconnectReason::Proxy(_) => 15,
        DisconnectReason::PerIpLimit(_) => 16,
    }
}

/// Durations counted into fixed buckets: `B` counts, one per upper bound then `+Inf` (not
/// cumulative), and their sum. One relaxed add each per observation.
#[derive(Debug)]
pub(crate) struct DurationHistogram<const B: usize> {
    counts: [AtomicU64; B],
    sum_micros: AtomicU64,
}

impl<const B: usize> Default for DurationHistogram<B> {
    fn default() -> Self {
        DurationHistogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl<const B: usize> DurationHistogram<B> {
    /// Counts `took` into the first bucket of `bounds` (seconds; `B - 1` of them) it fits.
    fn record(&self, bounds: &[f64], took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = bounds
            .iter()
            .position(|&upper| secs <= upper)
            .unwrap_or(bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn counts(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_micros.load(Ordering::Relaxed))
    }
}

/// The registry's atomics for ended sessions and broadcasts.
#[derive(Debug, Default)]
pub(crate) struct RegistryCounters {
    by_reason: [AtomicU64; DISCONNECT_REASON_LABELS.len()],
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    write_buffer_full: AtomicU64,
    lifetimes: DurationHistogram<{ LIFETIME_BUCKETS.len() + 1 }>,
    /// Calls to `Registry::broadcast`.
    pub(crate) broadcasts: AtomicU64,
}

impl RegistryCounters {
    /// Counts one session that ended.
    pub(crate) fn record(&self, reason: &DisconnectReason, info: &SessionInfo) {
        self.by_reason[reason_index(reason)].fetch_add(1, Ordering::Relaxed);
        self.frames_in.fetch_add(info.frames_in, Ordering::Relaxed);
        self.frames_out
            .fetch_add(info.frames_out, Ordering::Relaxed);
        self.write_buffer_full
            .fetch_add(info.write_buffer_full, Ordering::Relaxed);
        let lived = info.connected_at.elapsed().unwrap_or_default();
        self.lifetimes.record(&LIFETIME_BUCKETS, lived);
    }

    pub(crate) fn snapshot(&self) -> ClosedStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClosedStats {
            by_reason: DISCONNECT_REASON_LABELS
                .iter()
                .zip(self.by_reason.iter())
                .map(|(label, count)| (*label, load(count)))
                .collect(),
            frames_in: load(&self.frames_in),
            frames_out: load(&self.frames_out),
            write_buffer_full: load(&self.write_buffer_full),
            lifetime_buckets: self.lifetimes.counts(),
            lifetime_sum: self.lifetimes.sum(),
            broadcasts: load(&self.broadcasts),
        }
    }
}

/// Totals over the sessions that have ended, and broadcasts sent; from
/// [`Registry::closed_stats`](crate::Registry::closed_stats).
///
/// # Examples
///
/// ```
/// let stats = switchboard::Registry::new().closed_stats();
/// assert!(stats.by_reason.iter().all(|(_, n)| *n == 0));
/// assert_eq!(stats.lifetime_buckets.len(), switchboard::LIFETIME_BUCKETS.len() + 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ClosedStats {
    /// Sessions ended, per [`DisconnectReason::label`], in [`DISCONNECT_REASON_LABELS`] order.
    pub by_reason: Vec<(&'static str, u64)>,
    /// Frames the ended sessions decoded, over their whole lives.
    pub frames_in: u64,
    /// Frames the ended sessions encoded, over their whole lives.
    pub frames_out: u64,
    /// Times the ended sessions' write buffers reached their high watermark.
    pub write_buffer_full: u64,
    /// Ended sessions per lifetime bucket ([`LIFETIME_BUCKETS`], then `+Inf`), not cumulative.
    pub lifetime_buckets: Vec<u64>,
    /// The ended sessions' lifetimes added up.
    pub lifetime_sum: Duration,
    /// Broadcasts sent through the registry.
    pub broadcasts: u64,
}

/// Every outcome label of a handshake (PROXY header, TLS), in a fixed order:
/// [`HandshakeStats::outcomes`] follows it.
pub const HANDSHAKE_OUTCOME_LABELS: [&str; 6] =
    ["ok", "timeout", "tls", "proxy", "per_ip_limit", "io"];

/// Upper bounds, in seconds, of the handshake-duration histogram's buckets (an implicit
/// `+Inf` bucket follows).
pub const HANDSHAKE_BUCKETS: [f64; 10] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0, 10.0,
];

/// Every kind label of an accept error, in a fixed order: [`ListenerStats::accept_errors_by_kind`]
/// follows it. `descriptors`: EMFILE / ENFILE; `memory`: ENOMEM / ENOBUFS; `other`: the rest.
///
/// [`ListenerStats::accept_errors_by_kind`]: crate::ListenerStats::accept_errors_by_kind
pub const ACCEPT_ERROR_KINDS: [&str; 3] = ["descriptors", "memory", "other"];

/// Where [`ACCEPT_ERROR_KINDS`] files `error`.
pub(crate) fn accept_error_kind(error: &std::io::Error) -> usize {
    match error.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => 0,
        Some(libc::ENOMEM | libc::ENOBUFS) => 1,
        _ => 2,
    }
}

/// A listener's handshake atomics, shared by its sessions' launches: a few relaxed adds per
/// handshake, nothing per frame.
#[derive(Debug, Default)]
pub(crate) struct HandshakeCounters {
    outcomes: [AtomicU64; HANDSHAKE_OUTCOME_LABELS.len()],
    durations: DurationHistogram<{ HANDSHAKE_BUCKETS.len() + 1 }>,
    waited: AtomicU64,
}

impl HandshakeCounters {
    /// Counts one finished handshake: its outcome and how long it took (permit wait included).
    pub(crate) fn record(&self, outcome: Result<(), &DisconnectReason>, took: Duration) {
        let index = match outcome {
            Ok(()) => 0,
            Err(DisconnectReason::HandshakeTimeout) => 1,
            Err(DisconnectReason::Tls(_)) => 2,
            Err(DisconnectReason::Proxy(_)) => 3,
            Err(DisconnectReason::PerIpLimit(_)) => 4,
            Err(_) => 5,
        };
        self.outcomes[index].fetch_add(1, Ordering::Relaxed);
        self.durations.record(&HANDSHAKE_BUCKETS, took);
    }

    /// Counts one connection that found its worker's handshake cap reached and waited.
    pub(crate) fn record_wait(&self) {
        self.waited.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HandshakeStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HandshakeStats {
            outcomes: HANDSHAKE_OUTCOME_LABELS
                .iter()
                .zip(self.outcomes.iter())
                .map(|(label, count)| (*label, load(count)))
                .collect(),
            duration_buckets: self.durations.counts(),
            duration_sum: self.durations.sum(),
            waited_for_cap: load(&self.waited),
        }
    }
}

/// The handshakes (PROXY header, TLS) a listener's sessions have run; from
/// [`ListenerHandle::handshake_stats`](crate::ListenerHandle::handshake_stats). A listener
/// without TLS or PROXY runs none.
///
/// # Examples
///
/// ```
/// # actix_rt::System::new().block_on(async {
/// use switchboard::{Listener, SessionHandler, Conn, HANDSHAKE_BUCKETS};
/// use switchboard_codec::Lines;
///
/// struct Quiet;
/// impl SessionHandler<Lines> for Quiet {
///     fn ready_read(&mut self, _: String, _: &mut Conn<'_, Lines, Self>) {}
/// }
/// let server = Listener::bind("127.0.0.1:0").serve(Lines::new(), || Quiet).unwrap();
/// let stats = server.handshake_stats();
/// assert!(stats.outcomes.iter().all(|(_, n)| *n == 0));
/// assert_eq!(stats.duration_buckets.len(), HANDSHAKE_BUCKETS.len() + 1);
/// # });
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct HandshakeStats {
    /// Finished handshakes per outcome, in [`HANDSHAKE_OUTCOME_LABELS`] order.
    pub outcomes: Vec<(&'static str, u64)>,
    /// Handshakes per duration bucket ([`HANDSHAKE_BUCKETS`], then `+Inf`), not cumulative.
    pub duration_buckets: Vec<u64>,
    /// The handshakes' durations added up.
    pub duration_sum: Duration,
    /// Connections that found their worker at its handshake cap and waited for a permit
    /// (they are never refused for it).
    pub waited_for_cap: u64,
}
