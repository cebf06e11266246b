//! OpenMetrics (Prometheus) figures of running listeners, computed when someone asks from the
//! counters the listener, its workers, its sessions and its registry keep anyway: nothing is
//! counted on the data path for them.
//!
//! [`Metrics`] is a [`Collector`] for a `prometheus_client` registry of your own, and renders
//! itself with [`Metrics::render`]. Listener counters ([`ListenerStats`]) live in the listener
//! actor, so they are fetched by [`Metrics::refresh`] (which `render` calls first); the rest
//! (registry, sessions, workers) is read at encode time.
//!
//! Every name starts with `switchboard_` and carries a `listener` label (its address).
//! Counters: `accepted`, `rejected{cause}` (`per_ip`: the only refusal; a listener at its
//! connection limit or a worker at its handshake cap makes clients wait instead, counted by
//! `accept_limit_waits` and `handshake_cap_waits`), `accept_errors{kind}`
//! ([`ACCEPT_ERROR_KINDS`]), `handshakes{outcome}` ([`HANDSHAKE_OUTCOME_LABELS`]),
//! `sessions_closed{reason}`, `bytes_in`, `bytes_out`, `frames_in`, `frames_out`,
//! `broadcasts`, `broadcast_drops`, `slow_consumers`, `write_buffer_full`. Gauges:
//! `sessions_active`, `worker_sessions{worker}`, `sessions_read_paused`, `bytes_to_write`,
//! `pending`, `accept_paused`, `max_connections`, `max_connections_per_ip` (0: off).
//! Histograms: `session_lifetime_seconds` (ended sessions; buckets [`LIFETIME_BUCKETS`]) and
//! `handshake_duration_seconds` (PROXY and TLS handshakes, a wait for a permit included;
//! buckets [`HANDSHAKE_BUCKETS`]).
//!
//! [`LIFETIME_BUCKETS`]: crate::LIFETIME_BUCKETS
//! [`HANDSHAKE_BUCKETS`]: crate::HANDSHAKE_BUCKETS
//! [`ACCEPT_ERROR_KINDS`]: crate::ACCEPT_ERROR_KINDS
//! [`HANDSHAKE_OUTCOME_LABELS`]: crate::HANDSHAKE_OUTCOME_LABELS

use std::{
    fmt,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
};

use crate::{
    GetListenerStats, ListenerHandle, ListenerStats, ACCEPT_ERROR_KINDS, HANDSHAKE_BUCKETS,
    LIFETIME_BUCKETS,
};

/// The `Content-Type` of [`Metrics::render`]'s output (OpenMetrics text 1.0.0).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The figures of one or more listeners, as an OpenMetrics collector.
///
/// Cheap to clone; clones share the listeners they watch.
///
/// # Examples
///
/// ```
/// # actix_rt::System::new().block_on(async {
/// use switchboard::{metrics::Metrics, Listener, SessionHandler, Conn};
/// use switchboard_codec::Lines;
///
/// struct Echo;
/// impl SessionHandler<Lines> for Echo {
///     fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
///         let _ = conn.write(line);
///     }
/// }
/// let server = Listener::bind("127.0.0.1:0").workers(1).serve(Lines::new(), || Echo).unwrap();
/// let metrics = Metrics::new();
/// metrics.watch(&server);
/// let text = metrics.render().await;
/// assert!(text.contains("switchboard_accepted_total"));
/// assert!(text.ends_with("# EOF\n"));
///
/// // Or in a registry of your own (listener counters as of the last `refresh`):
/// let mut registry = prometheus_client::registry::Registry::default();
/// registry.register_collector(Box::new(metrics.clone()));
/// # });
/// ```
#[derive(Clone, Default)]
pub struct Metrics {
    watched: Arc<Mutex<Vec<Watched>>>,
}

struct Watched {
    handle: ListenerHandle,
    label: String,
    /// As of the last [`Metrics::refresh`]; `None` before the first.
    stats: Option<ListenerStats>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("listeners", &lock(&self.watched).len())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// A collector watching no listener yet.
    ///
    /// # Examples
    ///
    /// ```
    /// let metrics = switchboard::metrics::Metrics::new();
    /// # drop(metrics);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a listener (labelled with its address) to what is reported.
    pub fn watch(&self, handle: &ListenerHandle) {
        lock(&self.watched).push(Watched {
            handle: handle.clone(),
            label: handle.label(),
            stats: None,
        });
    }

    /// Asks every watched listener for its counters, for the next encode. A listener that has
    /// stopped keeps its last figures.
    pub async fn refresh(&self) {
        let handles: Vec<_> = lock(&self.watched)
            .iter()
            .map(|w| w.handle.address().clone())
            .collect();
        for (index, address) in handles.into_iter().enumerate() {
            if let Ok(stats) = address.send(GetListenerStats).await {
                if let Some(w) = lock(&self.watched).get_mut(index) {
                    w.stats = Some(stats);
                }
            }
        }
    }

    /// Refreshes, then renders every figure as OpenMetrics text (ending in `# EOF`), the body
    /// of a `GET /metrics` answered with [`OPENMETRICS_CONTENT_TYPE`].
    pub async fn render(&self) -> String {
        self.refresh().await;
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

/// Sums over a listener's live sessions, read from one registry listing.
#[derive(Default)]
struct Live {
    bytes_in: u64,
    bytes_out: u64,
    frames_in: u64,
    frames_out: u64,
    write_buffer_full: u64,
    read_paused: i64,
    bytes_to_write: i64,
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, String)>, u64)],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, String)>, i64)],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// A histogram row: its labels, per-bucket counts (the bounds, then `+Inf`; not cumulative)
/// and the sum of the observations.
type HistogramRow = (Vec<(&'static str, String)>, Vec<u64>, f64);

/// One histogram family.
fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    bounds: &[f64],
    rows: &[HistogramRow],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, counts, sum) in rows {
        let buckets: Vec<(f64, u64)> = bounds
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(counts.iter().copied())
            .collect();
        family
            .encode_family(labels)?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                *sum,
                counts.iter().sum(),
                &buckets,
                None,
            )?;
    }
    Ok(())
}

fn int(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        // Rows per metric, gathered listener by listener, then written family by family.
        type Rows<T> = Vec<(Vec<(&'static str, String)>, T)>;
        let mut counters: Vec<(&str, &str, Rows<u64>)> = vec![
            (
                "switchboard_accepted",
                "Connections accepted and admitted.",
                vec![],
            ),
            (
                "switchboard_rejected",
                "Connections closed at once, by cause.",
                vec![],
            ),
            (
                "switchboard_accept_errors",
                "Accept errors that caused a back-off, by kind.",
                vec![],
            ),
            (
                "switchboard_sessions_closed",
                "Sessions ended, by disconnect reason.",
                vec![],
            ),
            ("switchboard_bytes_in", "Bytes read by sessions.", vec![]),
            (
                "switchboard_bytes_out",
                "Bytes written by sessions.",
                vec![],
            ),
            (
                "switchboard_frames_in",
                "Frames decoded by sessions.",
                vec![],
            ),
            (
                "switchboard_frames_out",
                "Frames encoded by sessions.",
                vec![],
            ),
            (
                "switchboard_broadcasts",
                "Broadcasts sent through the registry.",
                vec![],
            ),
            (
                "switchboard_broadcast_drops",
                "Registry messages not delivered.",
                vec![],
            ),
            (
                "switchboard_slow_consumers",
                "Times a session was found to be a slow consumer.",
                vec![],
            ),
            (
                "switchboard_handshakes",
                "Handshakes (PROXY header, TLS) finished, by outcome.",
                vec![],
            ),
            (
                "switchboard_handshake_cap_waits",
                "Connections that waited for a handshake permit at their worker's cap.",
                vec![],
            ),
            (
                "switchboard_accept_limit_waits",
                "Times accepting stopped at the connection limit (clients wait in the backlog).",
                vec![],
            ),
            (
                "switchboard_write_buffer_full",
                "Times a write buffer reached its high watermark, or an answer past it held the frames.",
                vec![],
            ),
        ];
        let mut gauges: Vec<(&str, &str, Rows<i64>)> = vec![
            (
                "switchboard_sessions_active",
                "Connections counted against the limit.",
                vec![],
            ),
            (
                "switchboard_worker_sessions",
                "Sessions per worker thread.",
                vec![],
            ),
            (
                "switchboard_sessions_read_paused",
                "Sessions whose reading is held back.",
                vec![],
            ),
            (
                "switchboard_bytes_to_write",
                "Bytes waiting in write buffers and outbound queues.",
                vec![],
            ),
            (
                "switchboard_pending",
                "Connections waiting in the pull-mode queue.",
                vec![],
            ),
            (
                "switchboard_accept_paused",
                "1 while accepting is paused.",
                vec![],
            ),
            (
                "switchboard_max_connections",
                "The connection limit in force.",
                vec![],
            ),
            (
                "switchboard_max_connections_per_ip",
                "The per-IP limit in force (0: off).",
                vec![],
            ),
        ];
        let mut lifetimes = Vec::new();
        let mut handshake_durations = Vec::new();
        let watched = lock(&self.watched);
        for w in watched.iter() {
            let l = || vec![("listener", w.label.clone())];
            let registry = w.handle.registry();
            let stats = registry.stats();
            let closed = registry.closed_stats();
            let mut live = Live::default();
            // One record at a time, with no shard lock held and no list of snapshots built.
            for meta in registry.records() {
                let c = meta.counters();
                live.bytes_in += c.bytes_in;
                live.bytes_out += c.bytes_out;
                live.frames_in += c.frames_in;
                live.frames_out += c.frames_out;
                live.write_buffer_full += c.write_buffer_full;
                live.read_paused += i64::from(c.read_paused);
                live.bytes_to_write += int(c.bytes_to_write + c.bytes_queued);
            }
            let mut push_counter =
                |index: usize, labels, value| counters[index].2.push((labels, value));
            if let Some(s) = &w.stats {
                push_counter(0, l(), s.accepted);
                let mut labels = l();
                labels.push(("cause", "per_ip".to_string()));
                push_counter(1, labels, s.rejected_per_ip);
                for (kind, count) in ACCEPT_ERROR_KINDS.iter().zip(s.accept_errors_by_kind) {
                    let mut labels = l();
                    labels.push(("kind", (*kind).to_string()));
                    push_counter(2, labels, count);
                }
                push_counter(13, l(), s.limit_waits);
            }
            for (reason, count) in &closed.by_reason {
                let mut labels = l();
                labels.push(("reason", (*reason).to_string()));
                push_counter(3, labels, *count);
            }
            push_counter(4, l(), stats.bytes_in + live.bytes_in);
            push_counter(5, l(), stats.bytes_out + live.bytes_out);
            push_counter(6, l(), closed.frames_in + live.frames_in);
            push_counter(7, l(), closed.frames_out + live.frames_out);
            push_counter(8, l(), closed.broadcasts);
            push_counter(9, l(), stats.broadcasts_dropped);
            push_counter(10, l(), stats.slow_consumers);
            push_counter(14, l(), closed.write_buffer_full + live.write_buffer_full);
            let handshakes = w.handle.handshake_stats();
            for (outcome, count) in &handshakes.outcomes {
                let mut labels = l();
                labels.push(("outcome", (*outcome).to_string()));
                push_counter(11, labels, *count);
            }
            push_counter(12, l(), handshakes.waited_for_cap);

            let mut push_gauge =
                |index: usize, labels, value| gauges[index].2.push((labels, value));
            for (worker, load) in w.handle.pool().loads().into_iter().enumerate() {
                let mut labels = l();
                labels.push(("worker", worker.to_string()));
                push_gauge(1, labels, int(load));
            }
            push_gauge(2, l(), live.read_paused);
            push_gauge(3, l(), live.bytes_to_write);
            if let Some(s) = &w.stats {
                push_gauge(0, l(), int(s.active));
                push_gauge(4, l(), int(s.pending));
                push_gauge(5, l(), i64::from(s.paused));
                push_gauge(6, l(), int(s.max_connections));
                push_gauge(7, l(), int(s.max_connections_per_ip.unwrap_or(0)));
            }
            lifetimes.push((
                l(),
                closed.lifetime_buckets.clone(),
                closed.lifetime_sum.as_secs_f64(),
            ));
            handshake_durations.push((
                l(),
                handshakes.duration_buckets,
                handshakes.duration_sum.as_secs_f64(),
            ));
        }
        drop(watched);
        for (name, help, rows) in &counters {
            counter(&mut encoder, name, help, rows)?;
        }
        for (name, help, rows) in &gauges {
            gauge(&mut encoder, name, help, rows)?;
        }
        histogram(
            &mut encoder,
            "switchboard_session_lifetime_seconds",
            "How long ended sessions lasted.",
            &LIFETIME_BUCKETS,
            &lifetimes,
        )?;
        histogram(
            &mut encoder,
            "switchboard_handshake_duration_seconds",
            "How long finished handshakes took, a wait for a permit included.",
            &HANDSHAKE_BUCKETS,
            &handshake_durations,
        )?;
        Ok(())
    }
}
