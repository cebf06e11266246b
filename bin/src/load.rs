//! `switchboard load`: a load generator built on Switchboard's own [`Connector`] and
//! [`Session`], against an echo server.
//!
//! Each connection is a session on a [`WorkerPool`] thread with a [`Loader`] handler that runs
//! inside it: it keeps `--pipeline` messages in flight, checks every echoed byte, and records
//! each round trip.
//!
//! Messages: message `seq` of connection `conn` has `--size` bytes, byte `i` being a function of
//! `(conn, seq, i)` (lowercase letters for `lines`, any byte otherwise). No two messages in
//! flight are alike, so a lost, duplicated, reordered or crossed reply is a mismatch. With
//! `lines` and `frames` each decoded item must be exactly the next message; with `raw` the echo
//! may come back split or merged in any way, so the received bytes are compared against the
//! expected stream and a message completes when its last byte arrives.
//!
//! Latency: the time from the message entering the write buffer to its last byte coming back,
//! in microseconds, recorded in an HDR histogram (3 significant digits, up to 60 s). Sessions
//! collect samples in small batches and merge them into one of a few shared shards, so memory
//! does not grow with the number of connections.
//!
//! Stopping: with `--duration` a shared flag is raised that long after the last connection is
//! up; each session then stops sending, waits for its replies and closes. With `--messages`
//! sessions take tickets from a shared counter and close when none are left. Either way,
//! sessions still open 10 s after the stop (or after 10 s without any reply) are aborted and
//! their missing replies counted as lost.

use std::{
    collections::VecDeque,
    io::Write as _,
    net::SocketAddr,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use actix::Addr;
use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use serde::Serialize;
use switchboard::{
    Abort, Conn, Connector, DisconnectReason, Session, SessionCodec, SessionError, SessionHandler,
    SessionInfo, WorkerPool,
};
use switchboard_codec::{Frames, Lines, Raw};
use tokio::sync::mpsc;

use crate::cli::{CodecKind, LoadArgs};

/// Connection attempts in flight at once.
const CONNECTS_IN_FLIGHT: usize = 256;
/// Round trips a session records before merging them into a shared histogram.
const SAMPLE_BATCH: usize = 256;
/// Shared histograms (sessions pick one by index).
const SHARDS: usize = 16;
/// Highest latency tracked, in microseconds (60 s); longer ones count as 60 s.
const MAX_LATENCY_US: u64 = 60_000_000;
/// How long sessions get to finish after the stop, and how long without any reply counts as a
/// stall.
const GRACE: Duration = Duration::from_secs(10);

/// Runs the load test.
pub(crate) fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    if let [a, b] = args.compare.as_slice() {
        crate::plot::compare(a, b, args.plot.as_deref())?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.workers == Some(0) {
        bail!("--workers must be at least 1");
    }
    if let Err(error) = switchboard::raise_fd_limit() {
        tracing::warn!(%error, "cannot raise the open-file limit");
    }
    let size = args.size as usize;
    actix_rt::System::new().block_on(async move {
        match args.codec {
            CodecKind::Lines => {
                let codec = Lines::with_max_length(size.max(Lines::DEFAULT_MAX_LENGTH));
                drive(args, codec, true, true).await
            }
            CodecKind::Frames => {
                let codec =
                    Frames::with_max_frame_length(size.max(Frames::DEFAULT_MAX_FRAME_LENGTH));
                drive(args, codec, false, true).await
            }
            CodecKind::Raw => drive(args, Raw, false, false).await,
        }
    })
}

/// What every session of a run shares.
struct Shared {
    size: usize,
    pipeline: usize,
    /// Letters only (for the lines codec).
    text: bool,
    /// Each decoded item is one whole message (lines, frames), or a piece of the stream (raw).
    framed: bool,
    /// Raised when the duration is over: send no more.
    stop: AtomicBool,
    /// Messages left to send, with `--messages`.
    tickets: Option<AtomicU64>,
    /// Replies received so far, for progress.
    replies: AtomicU64,
    /// Mismatches so far, for progress.
    mismatches: AtomicU64,
    /// Whether a mismatch was already logged in detail.
    mismatch_logged: AtomicBool,
    /// Latency histograms, merged into at the end.
    latency: Vec<Mutex<Histogram<u64>>>,
}

impl Shared {
    fn take_ticket(&self) -> bool {
        match &self.tickets {
            None => true,
            Some(tickets) => tickets
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

/// Byte `i` of message `seq` on connection `conn`.
#[inline]
fn pattern(text: bool, conn: u64, seq: u64, i: usize) -> u8 {
    let x = conn
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(seq.wrapping_mul(0x0000_0100_0000_01B3))
        .wrapping_add(i as u64);
    if text {
        b'a' + (x % 26) as u8
    } else {
        (x ^ (x >> 8) ^ (x >> 29)) as u8
    }
}

fn message(shared: &Shared, conn: u64, seq: u64) -> Bytes {
    (0..shared.size)
        .map(|i| pattern(shared.text, conn, seq, i))
        .collect::<Vec<u8>>()
        .into()
}

/// What a session reports when it ends.
#[derive(Debug)]
struct Report {
    replies: u64,
    mismatches: u64,
    /// Messages sent whose reply never came.
    lost: u64,
    /// The connection ended before this side closed it.
    unexpected_end: Option<DisconnectReason>,
    last_reply: Option<Instant>,
}

/// One connection's load, run inside its session.
struct Loader {
    shared: Arc<Shared>,
    /// This connection's number, part of every message.
    conn: u64,
    send_seq: u64,
    recv_seq: u64,
    /// Raw codec: bytes of the oldest message in flight already received.
    offset: usize,
    /// When each message in flight was written, oldest first.
    sent_at: VecDeque<Instant>,
    /// A message the write buffer refused; written first once it drains.
    held: Option<Bytes>,
    /// No more messages will be sent (stopped, out of tickets, or failed).
    done_sending: bool,
    /// This side asked to close.
    closing: bool,
    replies: u64,
    unpublished: u64,
    mismatches: u64,
    samples: Vec<u64>,
    last_reply: Option<Instant>,
    report: Option<mpsc::UnboundedSender<Report>>,
}

impl Loader {
    fn new(shared: Arc<Shared>, conn: u64, report: mpsc::UnboundedSender<Report>) -> Loader {
        Loader {
            sent_at: VecDeque::with_capacity(shared.pipeline),
            shared,
            conn,
            send_seq: 0,
            recv_seq: 0,
            offset: 0,
            held: None,
            done_sending: false,
            closing: false,
            replies: 0,
            unpublished: 0,
            mismatches: 0,
            samples: Vec::new(),
            last_reply: None,
            report: Some(report),
        }
    }

    /// Fills the pipeline; closes once nothing more will be sent and nothing is in flight.
    fn pump<C>(&mut self, conn: &mut Conn<'_, C, Self>)
    where
        C: SessionCodec,
        C::Item: Into<Bytes>,
    {
        while !self.closing && self.sent_at.len() < self.shared.pipeline {
            let msg = match self.held.take() {
                Some(msg) => msg,
                None => {
                    if self.done_sending
                        || self.shared.stop.load(Ordering::Relaxed)
                        || !self.shared.take_ticket()
                    {
                        self.done_sending = true;
                        break;
                    }
                    message(&self.shared, self.conn, self.send_seq)
                }
            };
            match conn.write(msg.clone()) {
                Ok(()) => {
                    self.sent_at.push_back(Instant::now());
                    self.send_seq += 1;
                }
                Err(SessionError::WriteBufferFull { .. }) => {
                    self.held = Some(msg);
                    return;
                }
                Err(error) => {
                    tracing::warn!(conn = self.conn, %error, "cannot send; closing");
                    self.done_sending = true;
                    break;
                }
            }
        }
        if self.done_sending && self.sent_at.is_empty() && !self.closing {
            self.closing = true;
            conn.disconnect_from_host();
        }
    }

    fn reply_complete(&mut self, now: Instant) {
        if let Some(sent) = self.sent_at.pop_front() {
            let micros = u64::try_from(now.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
            self.samples.push(micros.clamp(1, MAX_LATENCY_US));
            if self.samples.len() >= SAMPLE_BATCH {
                self.merge_samples();
            }
        }
        self.recv_seq += 1;
        self.replies += 1;
        self.unpublished += 1;
        self.last_reply = Some(now);
    }

    fn merge_samples(&mut self) {
        if self.samples.is_empty() {
            return;
        }
        let shard = &self.shared.latency[(self.conn as usize) % self.shared.latency.len()];
        let mut histogram = shard.lock().unwrap_or_else(|e| e.into_inner());
        for &sample in &self.samples {
            histogram.saturating_record(sample);
        }
        self.samples.clear();
    }

    /// Whether `data` is bytes `offset..` of message `recv_seq`.
    fn matches(&self, data: &[u8], offset: usize) -> bool {
        data.iter()
            .enumerate()
            .all(|(k, &b)| b == pattern(self.shared.text, self.conn, self.recv_seq, offset + k))
    }

    fn mismatch<C>(&mut self, what: String, conn: &mut Conn<'_, C, Self>)
    where
        C: SessionCodec,
        C::Item: Into<Bytes>,
    {
        self.mismatches += 1;
        self.shared.mismatches.fetch_add(1, Ordering::Relaxed);
        if !self.shared.mismatch_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                conn = self.conn,
                seq = self.recv_seq,
                "echo mismatch: {what}"
            );
        }
        // The stream can no longer be trusted: end this connection.
        self.done_sending = true;
        self.closing = true;
        conn.abort();
    }
}

impl<C> SessionHandler<C> for Loader
where
    C: SessionCodec,
    C::Item: Into<Bytes>,
{
    fn connected(&mut self, conn: &mut Conn<'_, C, Self>) {
        self.pump(conn);
    }

    fn ready_read(&mut self, item: C::Item, conn: &mut Conn<'_, C, Self>) {
        if self.closing && self.sent_at.is_empty() {
            return;
        }
        let data: Bytes = item.into();
        let now = Instant::now();
        let size = self.shared.size;
        if self.shared.framed {
            if self.sent_at.is_empty() {
                return self.mismatch(format!("{} bytes nobody asked for", data.len()), conn);
            }
            if data.len() != size || !self.matches(&data, 0) {
                return self.mismatch(
                    format!("a {}-byte reply is not the message sent", data.len()),
                    conn,
                );
            }
            self.reply_complete(now);
        } else {
            let mut pos = 0;
            while pos < data.len() {
                if self.sent_at.is_empty() {
                    return self
                        .mismatch(format!("{} bytes nobody asked for", data.len() - pos), conn);
                }
                let take = (size - self.offset).min(data.len() - pos);
                if !self.matches(&data[pos..pos + take], self.offset) {
                    return self.mismatch(
                        format!(
                            "bytes {}..{} differ from those sent",
                            self.offset,
                            self.offset + take
                        ),
                        conn,
                    );
                }
                self.offset += take;
                pos += take;
                if self.offset == size {
                    self.offset = 0;
                    self.reply_complete(now);
                }
            }
        }
        if self.unpublished > 0 {
            self.shared
                .replies
                .fetch_add(self.unpublished, Ordering::Relaxed);
            self.unpublished = 0;
        }
        self.pump(conn);
    }

    fn bytes_written(&mut self, _bytes: usize, conn: &mut Conn<'_, C, Self>) {
        if self.held.is_some() {
            self.pump(conn);
        }
    }

    fn write_buffer_drained(&mut self, conn: &mut Conn<'_, C, Self>) {
        if self.held.is_some() {
            self.pump(conn);
        }
    }

    fn disconnected(&mut self, reason: &DisconnectReason, _info: &SessionInfo) {
        self.merge_samples();
        let unexpected_end = (!self.closing || reason.is_error()).then(|| reason.clone());
        let report = Report {
            replies: self.replies,
            mismatches: self.mismatches,
            lost: self.sent_at.len() as u64,
            unexpected_end,
            last_reply: self.last_reply,
        };
        if let Some(tx) = self.report.take() {
            let _ = tx.send(report);
        }
    }
}

/// The result, as printed (`--json`: exactly this object).
#[derive(Debug, Serialize)]
struct Summary {
    target: String,
    codec: &'static str,
    size: u32,
    pipeline: u32,
    /// Connections established.
    connections: u64,
    connect_errors: u64,
    connect_ms: ConnectMs,
    /// Replies received and checked.
    messages: u64,
    /// Payload bytes echoed (one way).
    bytes: u64,
    errors: u64,
    error_detail: ErrorDetail,
    /// From the first connection up to the last reply.
    elapsed_s: f64,
    msgs_per_s: f64,
    /// Payload megabytes (10^6 bytes) echoed per second, one way.
    mb_per_s: f64,
    latency_us: Latency,
}

#[derive(Debug, Serialize)]
struct ConnectMs {
    p50: f64,
    p99: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct ErrorDetail {
    /// Connections that could not be opened.
    connect: u64,
    /// Replies that were not the bytes sent.
    mismatch: u64,
    /// Messages whose reply never came.
    lost: u64,
    /// Connections that ended before this side closed them, or with an error.
    disconnected: u64,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
}

async fn drive<C>(args: LoadArgs, codec: C, text: bool, framed: bool) -> anyhow::Result<ExitCode>
where
    C: SessionCodec + Clone + Send,
    C::Item: Into<Bytes>,
{
    let threads = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = WorkerPool::new(threads)?;
    let empty = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)
        .context("cannot set up the latency histogram")?;
    let shared = Arc::new(Shared {
        size: args.size as usize,
        pipeline: args.pipeline as usize,
        text,
        framed,
        stop: AtomicBool::new(false),
        tickets: args.messages.map(AtomicU64::new),
        replies: AtomicU64::new(0),
        mismatches: AtomicU64::new(0),
        mismatch_logged: AtomicBool::new(false),
        latency: (0..SHARDS).map(|_| Mutex::new(empty.clone())).collect(),
    });
    // Held to the end: the worker threads stop when the last clone of the pool is dropped,
    // and a session does not hold one.
    let full_target = args.target.clone().unwrap_or_default();
    let (base, target) = crate::connect::connector_for(&full_target, &args.client)?;
    let target = target.to_string();
    let base = base.timeout(args.timeout).pool(pool.clone());
    let connectors: Vec<Connector> = if args.bind_ip.is_empty() {
        vec![base]
    } else {
        args.bind_ip
            .iter()
            .map(|ip| base.clone().bind_local(SocketAddr::new(*ip, 0)))
            .collect()
    };
    let (report_tx, mut reports) = mpsc::unbounded_channel();
    let show_progress = !args.json;

    // Connect phase.
    let connect_started = Instant::now();
    let rate = args.connect_rate;
    let indices = futures::stream::iter(0..u64::from(args.connections));
    let indices: futures::stream::BoxStream<'static, u64> = match rate {
        None => indices.boxed(),
        Some(rate) => {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let tick = Arc::new(tokio::sync::Mutex::new(tick));
            indices
                .then(move |i| {
                    let tick = tick.clone();
                    async move {
                        tick.lock().await.tick().await;
                        i
                    }
                })
                .boxed()
        }
    };
    let mut attempts = {
        let shared = shared.clone();
        // Moved in: the channel closes once every session (and this stream) is gone.
        let report_tx = report_tx;
        indices.map(move |i| {
            let connector = connectors[(i as usize) % connectors.len()].clone();
            let loader = Loader::new(shared.clone(), i, report_tx.clone());
            let codec = codec.clone();
            let target = target.clone();
            async move {
                let started = Instant::now();
                let result = connector.connect(&target, codec, loader).await;
                (started.elapsed(), result)
            }
        })
    }
    .buffer_unordered(CONNECTS_IN_FLIGHT);
    let mut sessions: Vec<Addr<Session<C, Loader>>> = Vec::new();
    let mut connect_times = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .context("cannot set up the connect histogram")?;
    let mut first_error = None;
    let mut first_up: Option<Instant> = None;
    let mut connect_errors = 0u64;
    let mut last_shown = Instant::now();
    while let Some((took, result)) = attempts.next().await {
        match result {
            Ok(session) => {
                first_up.get_or_insert_with(Instant::now);
                sessions.push(session);
                let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                connect_times.saturating_record(micros.max(1));
            }
            Err(error) => {
                connect_errors += 1;
                tracing::debug!(%error, "connection failed");
                first_error.get_or_insert(error);
            }
        }
        if show_progress && last_shown.elapsed() >= Duration::from_secs(1) {
            last_shown = Instant::now();
            eprintln!(
                "connecting: {} of {} up, {connect_errors} failed",
                sessions.len(),
                args.connections
            );
        }
    }
    drop(attempts);
    if sessions.is_empty() {
        return Err(match first_error {
            Some(error) => error.into(),
            None => anyhow::anyhow!("no connection was made"),
        });
    }
    if let Some(error) = &first_error {
        tracing::warn!(failed = connect_errors, first = %error, "some connections failed");
    }
    let all_up = Instant::now();
    if show_progress {
        eprintln!(
            "connected {} of {} in {:.2} s; running",
            sessions.len(),
            args.connections,
            (all_up - connect_started).as_secs_f64()
        );
    }

    // Traffic phase: collect one report per session.
    let duration = match args.messages {
        Some(_) => None,
        None => Some(args.duration.unwrap_or(Duration::from_secs(10))),
    };
    let stop_at = duration.map(|d| tokio::time::Instant::from_std(all_up + d));
    let mut stopped_at: Option<Instant> = None;
    let mut aborted = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_replies = 0u64;
    let mut last_progress_at = Instant::now();
    let mut collected = Vec::with_capacity(sessions.len());
    while collected.len() < sessions.len() {
        let stop_sleep = async {
            match stop_at {
                Some(at) if stopped_at.is_none() => tokio::time::sleep_until(at).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            report = reports.recv() => match report {
                Some(report) => collected.push(report),
                None => break,
            },
            _ = stop_sleep => {
                shared.stop.store(true, Ordering::Relaxed);
                stopped_at = Some(Instant::now());
            }
            _ = tick.tick() => {
                let replies = shared.replies.load(Ordering::Relaxed);
                if replies != last_replies {
                    last_replies = replies;
                    last_progress_at = Instant::now();
                }
                if show_progress {
                    let secs = all_up.elapsed().as_secs_f64();
                    eprintln!(
                        "[{secs:5.1}s] {replies} replies, {:.0} msg/s, {} of {} connections open, {} mismatches",
                        replies as f64 / secs.max(1e-9),
                        sessions.len() - collected.len(),
                        sessions.len(),
                        shared.mismatches.load(Ordering::Relaxed),
                    );
                }
                let overdue = stopped_at.is_some_and(|at| at.elapsed() >= GRACE);
                let stalled = last_progress_at.elapsed() >= GRACE;
                if (overdue || stalled) && !aborted {
                    tracing::warn!(
                        open = sessions.len() - collected.len(),
                        "{}; aborting the connections still open",
                        if overdue { "replies still missing 10 s after the stop" } else { "no reply for 10 s" }
                    );
                    shared.stop.store(true, Ordering::Relaxed);
                    stopped_at.get_or_insert_with(Instant::now);
                    aborted = true;
                    for session in &sessions {
                        session.do_send(Abort);
                    }
                }
                if aborted && last_progress_at.elapsed() >= GRACE * 2 {
                    tracing::warn!("sessions did not report after being aborted");
                    break;
                }
            }
        }
    }
    let missing_reports = (sessions.len() - collected.len()) as u64;

    // Summary.
    let mut latency = empty;
    for shard in &shared.latency {
        let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        latency
            .add(&*shard)
            .context("cannot merge latency histograms")?;
    }
    let messages: u64 = collected.iter().map(|r| r.replies).sum();
    let mismatch: u64 = collected.iter().map(|r| r.mismatches).sum();
    let lost: u64 = collected.iter().map(|r| r.lost).sum();
    let disconnected = collected
        .iter()
        .filter(|r| r.unexpected_end.is_some())
        .count() as u64
        + missing_reports;
    if let Some(reason) = collected.iter().find_map(|r| r.unexpected_end.as_ref()) {
        tracing::warn!(%reason, count = disconnected, "connections ended unexpectedly");
    }
    // Traffic runs from the first connection being up (it sends at once) to the last reply.
    let last = collected.iter().filter_map(|r| r.last_reply).max();
    let elapsed = match (first_up, last) {
        (Some(first), Some(last)) => last.saturating_duration_since(first),
        _ => Duration::ZERO,
    }
    .max(Duration::from_micros(1));
    let secs = elapsed.as_secs_f64();
    let bytes = messages * u64::from(args.size);
    let errors = connect_errors + mismatch + lost + disconnected;
    let ms = |v: u64| v as f64 / 1000.0;
    let summary = Summary {
        target: args.target.clone().unwrap_or_default(),
        codec: args.codec.name(),
        size: args.size,
        pipeline: args.pipeline,
        connections: sessions.len() as u64,
        connect_errors,
        connect_ms: ConnectMs {
            p50: ms(connect_times.value_at_quantile(0.5)),
            p99: ms(connect_times.value_at_quantile(0.99)),
            max: ms(connect_times.max()),
        },
        messages,
        bytes,
        errors,
        error_detail: ErrorDetail {
            connect: connect_errors,
            mismatch,
            lost,
            disconnected,
        },
        elapsed_s: secs,
        msgs_per_s: messages as f64 / secs,
        mb_per_s: bytes as f64 / 1e6 / secs,
        latency_us: Latency {
            p50: latency.value_at_quantile(0.5),
            p90: latency.value_at_quantile(0.9),
            p99: latency.value_at_quantile(0.99),
            p999: latency.value_at_quantile(0.999),
            max: latency.max(),
            mean: (latency.mean() * 10.0).round() / 10.0,
        },
    };
    if let Some(path) = &args.hdr {
        crate::plot::write_hdr(path, &latency, elapsed)?;
    }
    if let Some(path) = &args.plot {
        crate::plot::plot(path, &[(summary.target.clone(), &latency)])?;
    }
    print_summary(&summary, args.json)?;

    if errors > 0 {
        let mut parts = Vec::new();
        for (count, what) in [
            (connect_errors, "connections failed"),
            (mismatch, "replies did not match"),
            (lost, "replies never came"),
            (disconnected, "connections ended early"),
        ] {
            if count > 0 {
                parts.push(format!("{count} {what}"));
            }
        }
        let first = first_error
            .map(|e| format!(" (first connect error: {e})"))
            .unwrap_or_default();
        bail!("load test had errors: {}{first}", parts.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(s: &Summary, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, s).context("cannot write the JSON report")?;
        let _ = writeln!(out);
    } else {
        let l = &s.latency_us;
        let _ = writeln!(
            out,
            "target       {} ({}, {} B messages, pipeline {})",
            s.target, s.codec, s.size, s.pipeline
        );
        let _ = writeln!(
            out,
            "connections  {} up, {} failed; connect p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            s.connections, s.connect_errors, s.connect_ms.p50, s.connect_ms.p99, s.connect_ms.max
        );
        let _ = writeln!(
            out,
            "messages     {} in {:.2} s: {:.0} msg/s, {:.2} MB/s",
            s.messages, s.elapsed_s, s.msgs_per_s, s.mb_per_s
        );
        let _ = writeln!(
            out,
            "latency (us) p50 {}, p90 {}, p99 {}, p99.9 {}, max {}, mean {:.1}",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        );
        let e = &s.error_detail;
        let _ = writeln!(
            out,
            "errors       {} (connect {}, mismatch {}, lost {}, disconnected {})",
            s.errors, e.connect, e.mismatch, e.lost, e.disconnected
        );
    }
    let _ = out.flush();
    Ok(())
}
