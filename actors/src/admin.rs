//! The admin protocol: steer a running server over a line socket, one command per line.
//!
//! [`Admin`] watches a [`ListenerHandle`] (its listener, registry and workers) and mounts as a
//! [`SessionHandler`] on any [`Listener`] of your own, framed by
//! [`AdminLines`] (the [`Lines`] codec, reporting an over-long or non-UTF-8 line as an item
//! instead of ending the session). It does not depend on the transport: the `switchboard`
//! command serves it on a Unix socket, tests on loopback TCP.
//!
//! # Protocol
//!
//! One command per line; the reply is one block of lines ended by an empty line, or, when the
//! command ends with `--json`, one line holding a JSON object. A command that fails gets one
//! line `error: ...`, and the connection stays usable. Replies come in the order of the
//! commands; a client may send several at once.
//!
//! | command | reply |
//! |---|---|
//! | `help` | the commands |
//! | `info [--json]` | version, uptime, listener, workers, limits, totals, and the sections the owner added ([`Admin::with_info_section`]) |
//! | `sessions [--json] [--sort bytes\|age\|idle] [--limit N]` | one line per session (default sort: bytes, most first) |
//! | `session ID [--json]` | one session (`ID` with or without `#`) |
//! | `kick ID`, `abort ID` | closes it gracefully, or at once |
//! | `pause`, `resume` | stops or resumes accepting |
//! | `set max-connections N`, `set max-connections-per-ip N\|off` | changes a limit |
//! | `drain [SECS]` | stops accepting, closes every session within SECS (default: the admin's drain timeout), answers the shutdown report |
//! | `metrics` | the OpenMetrics text of `/metrics` (feature `metrics`) |
//! | `handover` | (Unix admin socket only) one JSON line describing the listening sockets and this admin socket, with the sockets attached (`SCM_RIGHTS`); accepting goes on. See [`handover`](crate::handover) |
//! | `handover commit` | (after `handover`, on the same connection) stops accepting at once, leaves the sockets to the taker, drains within the drain timeout, then the owner exits |
//! | `quit` | closes this admin connection |
//!
//! # Cost
//!
//! Work that grows with the session count (`sessions`, and `info`'s sum over live sessions)
//! runs on one thread of its own at nice 10 (Linux), not on a worker: when the cores are
//! short, the workers take them first and the listing waits, rather than the other way round.
//! A listing holds each registry shard's lock only while it copies that shard's record
//! pointers, sorts a key per session (with `--limit N`, picks the first N by partial
//! selection), and writes each session straight from its record, so a listing of 19,200
//! sessions builds no list of snapshots. `session ID`, `kick ID` and `abort ID` look the id up
//! directly.

use std::{
    fmt::Write as _,
    path::Path,
    sync::{Arc, Mutex},
    task::{self, Poll, Waker},
    time::{Duration, Instant, SystemTime},
};

use actix::{Recipient, WeakAddr};
use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};
use switchboard_codec::{CodecError, Lines};
use tokio_util::codec::{Decoder, Encoder};

use crate::{
    handover::{SocketDescription, SocketRole},
    session::SessionMeta,
    Address, CloseMode, Conn, DisconnectFromHost, DisconnectReason, Flush, GetListenerStats,
    ListenError, Listener, ListenerBuilder, ListenerHandle, PauseAccepting, Registry, Release,
    ResumeAccepting, SessionConfig, SessionError, SessionHandler, SessionId, SessionInfo,
    SetMaxConnections, SetMaxConnectionsPerIp, ShareSockets, ShutdownReport, StdListener, Write,
};

/// Longest admin command line, in bytes.
pub const MAX_COMMAND_LENGTH: usize = 4096;

/// The admin socket's codec: [`Lines`] (limit [`MAX_COMMAND_LENGTH`]), except that a line
/// over the limit or not UTF-8 is handed on as `Err` (the codec has already skipped it)
/// rather than ending the session, so the client gets an `error:` line and goes on.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use switchboard::admin::AdminLines;
/// use tokio_util::codec::Decoder;
///
/// let mut codec = AdminLines::default();
/// let mut buf = BytesMut::from(&b"help\n"[..]);
/// assert_eq!(codec.decode(&mut buf).unwrap().unwrap().unwrap(), "help");
/// ```
#[derive(Debug, Clone)]
pub struct AdminLines(Lines);

impl Default for AdminLines {
    fn default() -> Self {
        AdminLines(Lines::with_max_length(MAX_COMMAND_LENGTH))
    }
}

fn recoverable(
    result: Result<Option<String>, CodecError>,
) -> Result<Option<Result<String, CodecError>>, CodecError> {
    match result {
        Ok(line) => Ok(line.map(Ok)),
        // Both consume the bad line (or start discarding it) before they return.
        Err(error @ (CodecError::LineTooLong { .. } | CodecError::InvalidUtf8 { .. })) => {
            Ok(Some(Err(error)))
        }
        Err(error) => Err(error),
    }
}

impl Decoder for AdminLines {
    type Item = Result<String, CodecError>;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        recoverable(self.0.decode(buf))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        recoverable(self.0.decode_eof(buf))
    }
}

impl Encoder<Bytes> for AdminLines {
    type Error = CodecError;
    fn encode(&mut self, line: Bytes, buf: &mut BytesMut) -> Result<(), CodecError> {
        // Replies are not held to the command limit.
        Lines::with_max_length(usize::MAX).encode(line, buf)
    }
}

impl Encoder<String> for AdminLines {
    type Error = CodecError;
    fn encode(&mut self, line: String, buf: &mut BytesMut) -> Result<(), CodecError> {
        // Replies are not held to the command limit.
        Lines::with_max_length(usize::MAX).encode(line, buf)
    }
}

/// What an admin socket steers: a listener, its registry and workers; built once, shared by
/// every admin connection.
///
/// # Examples
///
/// ```
/// # actix_rt::System::new().block_on(async {
/// use std::io::{BufRead, BufReader, Write};
/// use switchboard::{admin::Admin, Conn, Listener, SessionHandler};
/// use switchboard_codec::Lines;
///
/// struct Quiet;
/// impl SessionHandler<Lines> for Quiet {
///     fn ready_read(&mut self, _: String, _: &mut Conn<'_, Lines, Self>) {}
/// }
/// let server = Listener::bind("127.0.0.1:0").workers(1).serve(Lines::new(), || Quiet).unwrap();
/// let admin = Admin::new(&server);
/// let socket = admin.serve_tcp("127.0.0.1:0").unwrap();
///
/// let addr = socket.local_addr();
/// let reply = tokio::task::spawn_blocking(move || {
///     let mut stream = std::net::TcpStream::connect(addr).unwrap();
///     stream.write_all(b"info --json\n").unwrap();
///     let mut line = String::new();
///     BufReader::new(stream).read_line(&mut line).unwrap();
///     line
/// })
/// .await
/// .unwrap();
/// assert!(reply.starts_with('{'), "{reply}");
/// # });
/// ```
#[derive(Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

struct Inner {
    server: ListenerHandle,
    started: Instant,
    version: String,
    config: Option<SessionConfig>,
    drain_timeout: Duration,
    drained: tokio::sync::watch::Sender<Option<ShutdownReport>>,
    /// A finished drain whose reply is not yet out; published to `drained` once it is, so the
    /// owner does not exit before the client has its report.
    finished_drain: Mutex<Option<ShutdownReport>>,
    #[cfg(feature = "metrics")]
    metrics: Option<crate::metrics::Metrics>,
    /// Extra `info` sections, in the order added.
    sections: Vec<(String, SectionFn)>,
    /// The listeners this admin is served on (handed over with the server's sockets).
    own: Mutex<Vec<WeakAddr<Listener>>>,
    /// Where a hand-over stands.
    handover: Mutex<Handover>,
    /// A committed hand-over's drain waits on this until the commit's answer is out.
    commit_answered: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

/// Where a hand-over stands; one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handover {
    None,
    /// The sockets went to the process on this admin connection; it has not committed.
    Offered(SessionId),
    /// The sockets are the taker's: this process only drains.
    Committed,
}

/// Fills one extra `info` section; see [`Admin::with_info_section`].
type SectionFn = Arc<dyn Fn() -> InfoSection + Send + Sync>;

/// Keys of `info --json` that a section may not take.
const BUILT_IN_INFO: [&str; 6] = [
    "version",
    "uptime_s",
    "listeners",
    "workers",
    "limits",
    "totals",
];

/// One extra section of the `info` reply, as a provider given to
/// [`Admin::with_info_section`] reports it: the JSON value that `info --json` holds under the
/// section's name, and the lines the text reply shows for it (after the built-in ones, each
/// best started with a label padded to 10 columns, as `totals    ...` is).
///
/// # Examples
///
/// ```
/// use serde_json::json;
/// use switchboard::admin::InfoSection;
///
/// let section = InfoSection::new(json!({ "jobs": 3 }), vec!["jobs      3 queued".into()]);
/// assert_eq!(section.json["jobs"], 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct InfoSection {
    /// The value under the section's name in `info --json`.
    pub json: Value,
    /// The lines of the text reply (none may be empty; an empty one is sent as one space).
    pub text: Vec<String>,
}

impl InfoSection {
    /// A section with this JSON value and these text lines.
    pub fn new(json: Value, text: Vec<String>) -> InfoSection {
        InfoSection { json, text }
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("server", &self.inner.server.label())
            .finish()
    }
}

impl Admin {
    /// An admin for `server`.
    pub fn new(server: &ListenerHandle) -> Admin {
        Admin::build(server, |_| {})
    }

    fn build(server: &ListenerHandle, tune: impl FnOnce(&mut Inner)) -> Admin {
        let mut inner = Inner {
            server: server.clone(),
            started: Instant::now(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            config: None,
            drain_timeout: Duration::from_secs(10),
            drained: tokio::sync::watch::channel(None).0,
            finished_drain: Mutex::new(None),
            #[cfg(feature = "metrics")]
            metrics: None,
            sections: Vec::new(),
            own: Mutex::new(Vec::new()),
            handover: Mutex::new(Handover::None),
            commit_answered: Mutex::new(None),
        };
        tune(&mut inner);
        Admin {
            inner: Arc::new(inner),
        }
    }

    /// Sets what `info` shows: the version string (default: the library's), the sessions'
    /// config (for their timeouts) and the default `drain` timeout (10 s).
    pub fn with_details(
        server: &ListenerHandle,
        version: &str,
        config: Option<SessionConfig>,
        drain_timeout: Duration,
    ) -> Admin {
        Admin::build(server, |inner| {
            inner.version = version.to_string();
            inner.config = config;
            inner.drain_timeout = drain_timeout;
        })
    }

    /// The same admin with one more setting: every field copied, then `tune` applied.
    fn rebuilt(&self, tune: impl FnOnce(&mut Inner)) -> Admin {
        let old = &self.inner;
        Admin::build(&old.server, |new| {
            new.started = old.started;
            new.version = old.version.clone();
            new.config = old.config.clone();
            new.drain_timeout = old.drain_timeout;
            #[cfg(feature = "metrics")]
            {
                new.metrics = old.metrics.clone();
            }
            new.sections = old.sections.clone();
            tune(new);
        })
    }

    /// Answers `metrics` from `metrics` (otherwise from a collector watching the server only).
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn with_metrics(self, metrics: crate::metrics::Metrics) -> Admin {
        self.rebuilt(|new| new.metrics = Some(metrics))
    }

    /// Adds a section to every `info` reply: `provider` is called once per `info` command, on
    /// the admin connection's worker, and what it returns is shown after the built-in lines
    /// and held under `name` in `info --json`. This is how the owner of a server shows state
    /// the library does not know about (the `switchboard` command shows its cluster this
    /// way); sections appear in the order they were added. The provider should answer from
    /// memory and at once: it runs beside the admin's other sessions.
    ///
    /// # Panics
    ///
    /// When `name` is a built-in key of `info --json` (`version`, `uptime_s`, `listeners`,
    /// `workers`, `limits`, `totals`) or was already added.
    ///
    /// # Examples
    ///
    /// ```
    /// # actix_rt::System::new().block_on(async {
    /// use std::sync::{atomic::{AtomicU64, Ordering}, Arc};
    /// use serde_json::json;
    /// use switchboard::{admin::{Admin, InfoSection, Reply}, Listener};
    /// use switchboard_codec::Lines;
    ///
    /// # struct Quiet;
    /// # impl switchboard::SessionHandler<Lines> for Quiet {
    /// #     fn ready_read(&mut self, _: String, _: &mut switchboard::Conn<'_, Lines, Self>) {}
    /// # }
    /// let server = Listener::bind("127.0.0.1:0").workers(1).serve(Lines::new(), || Quiet).unwrap();
    /// let jobs = Arc::new(AtomicU64::new(3));
    /// let seen = jobs.clone();
    /// let admin = Admin::new(&server).with_info_section("jobs", move || {
    ///     let queued = seen.load(Ordering::Relaxed);
    ///     InfoSection::new(json!({ "queued": queued }), vec![format!("jobs      {queued} queued")])
    /// });
    /// let Reply::Json(info) = admin.execute("info --json").await else { panic!() };
    /// assert_eq!(info["jobs"]["queued"], 3);
    /// let Reply::Text(lines) = admin.execute("info").await else { panic!() };
    /// assert_eq!(lines.last().unwrap(), "jobs      3 queued");
    /// # });
    /// ```
    pub fn with_info_section(
        self,
        name: &str,
        provider: impl Fn() -> InfoSection + Send + Sync + 'static,
    ) -> Admin {
        assert!(
            !BUILT_IN_INFO.contains(&name) && self.inner.sections.iter().all(|(n, _)| n != name),
            "`{name}` is already an info section"
        );
        let section: SectionFn = Arc::new(provider);
        self.rebuilt(|new| new.sections.push((name.to_string(), section)))
    }

    /// A handler for one admin connection; mount it with a factory such as
    /// `move || admin.handler()` and the [`AdminLines`] codec.
    pub fn handler(&self) -> AdminSession {
        AdminSession {
            admin: self.clone(),
            flow: Arc::new(Mutex::new(Flow::default())),
            writer: None,
            id: None,
        }
    }

    /// Resolves with the report once a `drain` command has finished (the server's owner then
    /// exits).
    pub async fn drained(&self) -> ShutdownReport {
        let mut rx = self.inner.drained.subscribe();
        loop {
            if let Some(report) = *rx.borrow_and_update() {
                return report;
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self`: not reached while we hold it.
                return ShutdownReport::default();
            }
        }
    }

    /// Serves the admin protocol on a TCP address (one worker thread), for tests and for hosts
    /// without Unix sockets. Anyone who can connect can steer the server: bind loopback only.
    ///
    /// # Errors
    ///
    /// As [`ListenerBuilder::serve`](crate::ListenerBuilder::serve).
    pub fn serve_tcp(&self, addr: &str) -> Result<ListenerHandle, ListenError> {
        self.serve_on(Listener::bind(addr))
    }

    /// Serves the admin protocol on a socket already listening: one received in a hand-over
    /// (so that the taker can be taken over in turn), or passed by a service manager.
    ///
    /// # Errors
    ///
    /// As [`Listener::adopt`].
    pub fn serve_adopted(&self, socket: StdListener) -> Result<ListenerHandle, ListenError> {
        self.serve_on(Listener::adopt([socket]))
    }

    fn serve_on(&self, builder: ListenerBuilder) -> Result<ListenerHandle, ListenError> {
        let admin = self.clone();
        let handle = builder
            .workers(1)
            .max_connections(64)
            .session_config(admin_session_config())
            .serve(AdminLines::default(), move || admin.handler())?;
        // Weak: the listener's sessions hold this admin, and the admin must not keep the
        // listener alive.
        lock_any(&self.inner.own).push(handle.address().downgrade());
        Ok(handle)
    }

    /// Serves the admin protocol on a Unix socket at `path`, mode 0600 (only the owner can
    /// steer the server). A stale socket file left by a crashed server is replaced; a live one
    /// is never taken over.
    ///
    /// # Errors
    ///
    /// [`ListenError::BindUnix`] when the path is taken by a live server or another file, or
    /// cannot be bound.
    pub fn serve_unix(&self, path: &Path) -> Result<ListenerHandle, ListenError> {
        self.serve_on(Listener::bind(path).unix_mode(0o600))
    }

    /// Runs one command line and gives its reply (what a connection would receive, without
    /// the trailing empty line of a text block).
    pub async fn execute(&self, line: &str) -> Reply {
        let reply = self.answer(line, None).await;
        self.publish_drain();
        reply
    }

    /// `from`: the admin connection the line came on (none through [`execute`](Self::execute)).
    async fn answer(&self, line: &str, from: Option<SessionId>) -> Reply {
        match self.run(line, from).await {
            Ok(reply) => reply,
            Err(message) => Reply::Error(message),
        }
    }

    /// Tells [`drained`](Self::drained) about a drain that has finished and been answered.
    fn publish_drain(&self) {
        if let Some(answered) = lock_any(&self.inner.commit_answered).take() {
            let _ = answered.send(());
        }
        let finished = self
            .inner
            .finished_drain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(report) = finished {
            self.inner.drained.send_replace(Some(report));
        }
    }

    async fn run(&self, line: &str, from: Option<SessionId>) -> Result<Reply, String> {
        let mut words: Vec<&str> = line.split_whitespace().collect();
        let before = words.len();
        words.retain(|w| *w != "--json");
        let json = words.len() != before;
        let Some((&command, args)) = words.split_first() else {
            return Err("empty command (try `help`)".into());
        };
        let server = &self.inner.server;
        let reply = |text: Vec<String>, value: Value| {
            if json {
                Reply::Json(value)
            } else {
                Reply::Text(text)
            }
        };
        match (command, args) {
            ("help", []) => Ok(reply(
                HELP.lines().map(String::from).collect(),
                json!({ "commands": HELP.lines().collect::<Vec<_>>() }),
            )),
            ("info", []) => {
                let mut value = self.info().await?;
                let mut text = info_text(&value);
                for (name, provider) in &self.inner.sections {
                    let section = provider();
                    text.extend(section.text);
                    value[name.as_str()] = section.json;
                }
                Ok(reply(text, value))
            }
            ("sessions", args) => {
                let (sort, limit) = sessions_args(args)?;
                let started = Instant::now();
                let registry = server.registry().clone();
                // Off the worker, on the low-priority admin thread: listing tens of thousands
                // of sessions takes milliseconds of a core, which the workers get first.
                let listed = crate::background::run(move || list(&registry, sort, limit, json))
                    .await
                    .map_err(|e| format!("listing failed: {e}"))?;
                Ok(match listed {
                    Listed::Json(text) => Reply::JsonText(text),
                    Listed::Text {
                        mut lines,
                        shown,
                        total,
                    } => {
                        lines.push(format!(
                            "{shown} of {total} sessions, listed in {} ms",
                            started.elapsed().as_millis()
                        ));
                        Reply::Text(lines)
                    }
                })
            }
            ("session", [id]) => {
                let info = find(server, id)?;
                Ok(reply(
                    vec![SESSION_HEADER.to_string(), session_line(&info)],
                    session_json(&info),
                ))
            }
            ("kick" | "abort", [id]) => {
                let info = find(server, id)?;
                let mode = if command == "kick" {
                    CloseMode::Graceful
                } else {
                    CloseMode::Abort
                };
                if !server.registry().kick(info.id, mode) {
                    return Err(format!("session {} has already ended", info.id));
                }
                let done = if command == "kick" {
                    "closing"
                } else {
                    "aborted"
                };
                Ok(reply(
                    vec![format!("{done} {}", info.id)],
                    json!({ "id": info.id.get(), "result": done }),
                ))
            }
            ("pause" | "resume", []) => {
                let sent = if command == "pause" {
                    server.address().send(PauseAccepting).await
                } else {
                    server.address().send(ResumeAccepting).await
                };
                sent.map_err(|_| "the listener has stopped".to_string())?;
                let state = if command == "pause" {
                    "paused"
                } else {
                    "accepting"
                };
                Ok(reply(
                    vec![state.to_string()],
                    json!({ "accepting": command == "resume" }),
                ))
            }
            ("set", [name, value]) => self
                .set(name, value)
                .await
                .map(|text| reply(vec![text.clone()], json!({ "set": name, "value": value }))),
            ("drain", args) => {
                let timeout = match args {
                    [] => self.inner.drain_timeout,
                    [secs] => parse_secs(secs)?,
                    _ => return Err("usage: drain [SECS]".into()),
                };
                let report = server.shutdown(timeout).await;
                *self
                    .inner
                    .finished_drain
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(report);
                let text = format!(
                    "drained {}, aborted {}, unflushed {} bytes, {} bytes in, {} bytes out, in {} ms",
                    report.drained,
                    report.aborted,
                    report.unflushed_bytes,
                    report.bytes_in,
                    report.bytes_out,
                    report.elapsed.as_millis()
                );
                Ok(reply(
                    vec![text],
                    json!({
                        "drained": report.drained, "aborted": report.aborted,
                        "unflushed_bytes": report.unflushed_bytes, "bytes_in": report.bytes_in,
                        "bytes_out": report.bytes_out, "elapsed_ms": report.elapsed.as_millis() as u64,
                    }),
                ))
            }
            ("metrics", []) => self.metrics().await.map(|text| {
                let value = json!({ "openmetrics": text });
                reply(text.lines().map(String::from).collect(), value)
            }),
            ("quit", []) => Ok(Reply::Quit),
            // The sockets travel on the connection itself: see `AdminSession::ready_read`.
            ("handover", []) => Err("`handover` needs a connection to a Unix admin socket".into()),
            ("handover", ["commit"]) => self
                .commit(from)
                .await
                .map(|text| reply(vec![text.clone()], json!({ "handover": text }))),
            (
                "help" | "info" | "session" | "kick" | "abort" | "pause" | "resume" | "set"
                | "metrics" | "quit" | "handover",
                _,
            ) => Err(format!("bad arguments for `{command}` (try `help`)")),
            _ => Err(format!("unknown command `{command}` (try `help`)")),
        }
    }

    /// `handover` on connection `from`: the description line and the sockets to send with it.
    /// Accepting goes on.
    async fn offer(&self, from: SessionId) -> Result<(String, Vec<StdListener>), String> {
        {
            let mut state = lock_any(&self.inner.handover);
            match *state {
                Handover::None => *state = Handover::Offered(from),
                Handover::Offered(other) if other == from => {}
                Handover::Offered(other) => {
                    return Err(format!(
                        "a hand-over to another process is under way (admin connection {other})"
                    ))
                }
                Handover::Committed => {
                    return Err("already handed over: this process is draining".into())
                }
            }
        }
        let offered = self.collect_sockets().await;
        if offered.is_err() {
            let mut state = lock_any(&self.inner.handover);
            if *state == Handover::Offered(from) {
                *state = Handover::None;
            }
        }
        offered
    }

    async fn collect_sockets(&self) -> Result<(String, Vec<StdListener>), String> {
        let gone = |_| "the listener has stopped".to_string();
        let shared = self
            .inner
            .server
            .address()
            .send(ShareSockets)
            .await
            .map_err(gone)?
            .map_err(|e| format!("cannot share the listening sockets: {e}"))?;
        if shared.sockets.is_empty() {
            return Err("the listener has closed: nothing to hand over".into());
        }
        let describe = |role, socket: &StdListener, tls: bool, proxy: bool| {
            let address = socket
                .address()
                .map_err(|e| format!("cannot read a socket's address: {e}"))?;
            let scheme = match (&address, tls) {
                (Address::Ip(_), false) => "tcp",
                (Address::Ip(_), true) => "tls",
                (Address::Unix(_), false) => "unix",
                (Address::Unix(_), true) => "tls+unix",
            };
            Ok::<_, String>(SocketDescription::new(
                role,
                &address.to_string(),
                scheme,
                proxy,
            ))
        };
        let mut descriptions = Vec::new();
        for socket in &shared.sockets {
            descriptions.push(describe(
                SocketRole::Listen,
                socket,
                shared.tls,
                shared.proxy_protocol,
            )?);
        }
        let mut sockets = shared.sockets;
        let own: Vec<_> = lock_any(&self.inner.own)
            .iter()
            .filter_map(WeakAddr::upgrade)
            .collect();
        for listener in own {
            let Ok(Ok(admin)) = listener.send(ShareSockets).await else {
                continue;
            };
            for socket in admin.sockets {
                descriptions.push(describe(SocketRole::Admin, &socket, false, false)?);
                sockets.push(socket);
            }
        }
        if sockets.len() > crate::handover::MAX_HANDED_SOCKETS {
            return Err(format!(
                "{} sockets: more than one hand-over carries ({})",
                sockets.len(),
                crate::handover::MAX_HANDED_SOCKETS
            ));
        }
        Ok((crate::handover::answer_line(&descriptions), sockets))
    }

    /// `handover` on an admin connection over a Unix socket (`fd`, a duplicate of it): sends
    /// the description and the sockets, after every earlier reply has left.
    async fn offer_on(
        &self,
        from: SessionId,
        fd: Option<std::io::Result<std::os::fd::OwnedFd>>,
        writer: &Writer,
    ) -> Result<(), String> {
        use std::os::fd::AsFd;
        let fd = match fd {
            None => return Err("`handover` needs a connection to a Unix admin socket".into()),
            Some(Err(e)) => return Err(format!("cannot use this connection's socket: {e}")),
            Some(Ok(fd)) => fd,
        };
        let (line, sockets) = self.offer(from).await?;
        if !matches!(writer.flush.send(Flush).await, Ok(Ok(()))) {
            self.abandon(from);
            return Err("this admin connection is closing".into());
        }
        let fds: Vec<_> = sockets.iter().map(AsFd::as_fd).collect();
        match crate::handover::send_with_fds(fd.as_fd(), line.as_bytes(), &fds).await {
            Ok(()) => {
                tracing::info!(
                    connection = %from,
                    sockets = sockets.len(),
                    "handed the listening sockets over; still accepting until the taker commits"
                );
                Ok(())
            }
            Err(e) => {
                self.abandon(from);
                Err(format!("cannot send the sockets: {e}"))
            }
        }
    }

    /// The taker on connection `from` is gone, or failed, before committing.
    fn abandon(&self, from: SessionId) {
        let mut state = lock_any(&self.inner.handover);
        if *state == Handover::Offered(from) {
            *state = Handover::None;
            tracing::info!(
                connection = %from,
                "hand-over abandoned before its commit: still serving"
            );
        }
    }

    /// `handover commit` on connection `from`: stop accepting now, drain in the background.
    async fn commit(&self, from: Option<SessionId>) -> Result<String, String> {
        {
            let mut state = lock_any(&self.inner.handover);
            match (*state, from) {
                (Handover::Offered(offered), Some(from)) if offered == from => {
                    *state = Handover::Committed
                }
                (Handover::Committed, _) => {
                    return Err("already handed over: this process is draining".into())
                }
                _ => {
                    return Err(
                        "no hand-over on this connection (send `handover` first, on the same connection)"
                            .into(),
                    )
                }
            }
        }
        let server = self.inner.server.clone();
        // The listener first: from here the backlog is the taker's alone.
        let released = server.address().send(Release).await.unwrap_or(0);
        let own: Vec<_> = lock_any(&self.inner.own)
            .iter()
            .filter_map(WeakAddr::upgrade)
            .collect();
        for listener in own {
            let _ = listener.send(Release).await;
        }
        let live = server.registry().stats().live;
        let drain_timeout = self.inner.drain_timeout;
        // Half the drain timeout for sessions to end on their own, the rest to close them.
        let linger = drain_timeout / 2;
        tracing::info!(
            released,
            live,
            ?drain_timeout,
            "hand-over committed: no longer accepting, draining"
        );
        let (answered, answer_out) = tokio::sync::oneshot::channel();
        *lock_any(&self.inner.commit_answered) = Some(answered);
        let admin = self.clone();
        tokio::spawn(async move {
            let report = server.retire(linger, drain_timeout - linger).await;
            // The owner exits once this is published: not before the taker has its answer.
            let _ = answer_out.await;
            tracing::info!(
                drained = report.drained,
                aborted = report.aborted,
                "drained after the hand-over"
            );
            admin.inner.drained.send_replace(Some(report));
        });
        Ok(format!(
            "handed over: released {released} listening sockets, draining {live} sessions within {} s",
            drain_timeout.as_secs_f64()
        ))
    }

    #[cfg(feature = "metrics")]
    async fn metrics(&self) -> Result<String, String> {
        let metrics = self.inner.metrics.clone().unwrap_or_else(|| {
            let metrics = crate::metrics::Metrics::new();
            metrics.watch(&self.inner.server);
            metrics
        });
        Ok(metrics.render().await)
    }

    #[cfg(not(feature = "metrics"))]
    async fn metrics(&self) -> Result<String, String> {
        Err("built without the `metrics` feature".into())
    }

    async fn set(&self, name: &str, value: &str) -> Result<String, String> {
        let listener = self.inner.server.address();
        let gone = |_| "the listener has stopped".to_string();
        match name {
            "max-connections" => {
                let n = parse_count(value)?;
                listener.send(SetMaxConnections(n)).await.map_err(gone)?;
                Ok(format!("max-connections {n}"))
            }
            "max-connections-per-ip" => {
                let n = if value == "off" { None } else { Some(parse_count(value)?) };
                listener.send(SetMaxConnectionsPerIp(n)).await.map_err(gone)?;
                Ok(format!("max-connections-per-ip {value}"))
            }
            "idle-timeout" => Err(
                "idle-timeout cannot be changed on a running listener yet (sessions keep the config they started with)"
                    .into(),
            ),
            _ => Err(format!("unknown setting `{name}` (max-connections, max-connections-per-ip)")),
        }
    }

    async fn info(&self) -> Result<Value, String> {
        let server = &self.inner.server;
        let listener = server
            .address()
            .send(GetListenerStats)
            .await
            .map_err(|_| "the listener has stopped".to_string())?;
        let stats = server.registry().stats();
        let registry = server.registry().clone();
        // A pass over every session: on the admin thread, as a listing is.
        let (live_in, live_out) = crate::background::run(move || {
            registry.records().iter().fold((0, 0), |(i, o), meta| {
                let c = meta.counters();
                (i + c.bytes_in, o + c.bytes_out)
            })
        })
        .await
        .map_err(|e| format!("cannot sum the sessions' counters: {e}"))?;
        let config = self.inner.config.as_ref();
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        let handshake_stats = server.handshake_stats();
        let mut handshakes: serde_json::Map<_, _> = handshake_stats
            .outcomes
            .iter()
            .map(|(outcome, n)| (outcome.to_string(), json!(n)))
            .collect();
        handshakes.insert(
            "waited_for_cap".into(),
            json!(handshake_stats.waited_for_cap),
        );
        Ok(json!({
            "version": self.inner.version,
            "uptime_s": self.inner.started.elapsed().as_secs(),
            "listeners": [{
                "addr": server.label(),
                "transport": server.addresses().first().map(|a| match a {
                    crate::Address::Unix(_) => "unix",
                    _ => "tcp",
                }),
                "accepting": !listener.paused,
                "active": listener.active,
                "accepted": listener.accepted,
                "rejected_per_ip": listener.rejected_per_ip,
                "accept_errors": listener.accept_errors,
                "accept_errors_by_kind": crate::ACCEPT_ERROR_KINDS
                    .iter()
                    .zip(listener.accept_errors_by_kind)
                    .map(|(kind, n)| (kind.to_string(), json!(n)))
                    .collect::<serde_json::Map<_, _>>(),
                "limit_waits": listener.limit_waits,
                "handshakes": handshakes,
            }],
            "workers": server.pool().loads(),
            "limits": {
                "max_connections": listener.max_connections,
                "max_connections_per_ip": listener.max_connections_per_ip,
                "idle_timeout_s": secs(config.and_then(|c| c.idle_timeout())),
                "frame_timeout_s": secs(config.and_then(|c| c.frame_timeout())),
            },
            "totals": {
                "live": stats.live,
                "connected": stats.connected,
                "disconnected": stats.disconnected,
                "bytes_in": stats.bytes_in + live_in,
                "bytes_out": stats.bytes_out + live_out,
                "bytes_in_ended": stats.bytes_in,
                "bytes_out_ended": stats.bytes_out,
                "broadcasts_dropped": stats.broadcasts_dropped,
                "slow_consumers": stats.slow_consumers,
            },
        }))
    }
}

/// The reply to one admin command.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Reply {
    /// Lines of text; on the wire an empty line follows.
    Text(Vec<String>),
    /// One JSON object on one line (the command ended with `--json`).
    Json(Value),
    /// One JSON object already serialized, on one line: a reply too large to build as a
    /// [`Value`] first (`sessions --json`).
    JsonText(String),
    /// `error: ...` on one line.
    Error(String),
    /// The connection closes.
    Quit,
}

impl Reply {
    /// The lines sent on the wire for this reply.
    ///
    /// # Examples
    ///
    /// ```
    /// use switchboard::admin::Reply;
    /// assert_eq!(Reply::Error("no".into()).into_lines(), vec!["error: no".to_string()]);
    /// assert_eq!(Reply::Text(vec!["a".into()]).into_lines(), vec!["a".to_string(), String::new()]);
    /// ```
    pub fn into_lines(self) -> Vec<String> {
        match self {
            Reply::Text(mut lines) => {
                // A line inside a block is never empty: that would end the block early.
                for line in lines.iter_mut().filter(|l| l.is_empty()) {
                    line.push(' ');
                }
                lines.push(String::new());
                lines
            }
            Reply::Json(value) => vec![value.to_string()],
            Reply::JsonText(text) => vec![text],
            Reply::Error(message) => vec![format!("error: {}", message.replace('\n', " "))],
            Reply::Quit => vec!["bye".into(), String::new()],
        }
    }
}

const HELP: &str = "help                                   this list
info [--json]                          version, uptime, listener, workers, limits, totals, extra sections
sessions [--json] [--sort bytes|age|idle] [--limit N]
session ID [--json]                    one session
kick ID | abort ID                     close a session gracefully | at once
pause | resume                         stop | resume accepting
set max-connections N
set max-connections-per-ip N|off
drain [SECS]                           stop accepting, close every session, report
metrics                                OpenMetrics text, as GET /metrics
handover                               (Unix socket) send the listening sockets to this client
handover commit                        stop accepting, leave the sockets to the taker, drain
quit                                   close this connection";

const SESSION_HEADER: &str =
    "ID         PEER                   TRANSPORT WORKER      AGE     IDLE     BYTES_IN    BYTES_OUT  FRAMES_IN FRAMES_OUT   TO_WRITE STATE";

enum Sort {
    Bytes,
    Age,
    Idle,
}

fn sessions_args(args: &[&str]) -> Result<(Sort, Option<usize>), String> {
    let mut sort = Sort::Bytes;
    let mut limit = None;
    let mut rest = args.iter();
    // Bounded by the number of words.
    while let Some(&arg) = rest.next() {
        match (arg, rest.next()) {
            ("--sort", Some(&"bytes")) => sort = Sort::Bytes,
            ("--sort", Some(&"age")) => sort = Sort::Age,
            ("--sort", Some(&"idle")) => sort = Sort::Idle,
            ("--limit", Some(n)) => limit = Some(parse_count(n)?),
            _ => return Err("usage: sessions [--json] [--sort bytes|age|idle] [--limit N]".into()),
        }
    }
    Ok((sort, limit))
}

fn parse_count(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{text}` is not a whole number above 0"))
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && (0.0..=1e6).contains(s))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("`{text}` is not a number of seconds"))
}

fn find(server: &ListenerHandle, id: &str) -> Result<SessionInfo, String> {
    let n: u64 = id
        .trim_start_matches('#')
        .parse()
        .map_err(|_| format!("`{id}` is not a session id"))?;
    server
        .registry()
        .get(SessionId::from_raw(n))
        .ok_or_else(|| format!("no session #{n}"))
}

/// What [`list`] made: the reply's text, but for the text block's last line (the time taken).
enum Listed {
    Json(String),
    Text {
        lines: Vec<String>,
        shown: usize,
        total: usize,
    },
}

/// `sessions`: every record taken with the shard locks held only for pointer copies, one sort
/// key read per session, the `limit` first found by partial selection (a full sort only
/// without a limit), and the reply written straight from the records, one snapshot at a time.
fn list(registry: &Registry, sort: Sort, limit: Option<usize>, json: bool) -> Listed {
    let records = registry.records();
    let total = records.len();
    let key = |meta: &SessionMeta| -> u64 {
        match sort {
            Sort::Bytes => u64::MAX - meta.bytes_total(),
            Sort::Age => meta.connected_at_us(),
            Sort::Idle => u64::MAX - u64::from(meta.idle_ms()),
        }
    };
    // Keys and indexes: sorting 16 bytes per session, not whole snapshots.
    let mut order: Vec<(u64, usize)> = records
        .iter()
        .enumerate()
        .map(|(i, meta)| (key(meta), i))
        .collect();
    let shown = limit.unwrap_or(usize::MAX).min(total);
    if shown < total {
        order.select_nth_unstable(shown);
        order.truncate(shown);
    }
    order.sort_unstable();
    let chosen: Vec<&SessionMeta> = order.iter().map(|&(_, i)| &*records[i]).collect();
    if json {
        // About 330 bytes per session over TCP; one growth at most past that.
        let mut out = Vec::with_capacity(64 + 384 * shown);
        let listing = Listing {
            total,
            sessions: Records(&chosen),
        };
        // Into a Vec, which cannot fail; the text is JSON, so UTF-8.
        let _ = serde_json::to_writer(&mut out, &listing);
        Listed::Json(String::from_utf8(out).unwrap_or_default())
    } else {
        let mut lines = Vec::with_capacity(shown + 2);
        lines.push(SESSION_HEADER.to_string());
        lines.extend(chosen.iter().map(|meta| session_line(&meta.info())));
        Listed::Text {
            lines,
            shown,
            total,
        }
    }
}

fn age(info: &SessionInfo) -> Duration {
    SystemTime::now()
        .duration_since(info.connected_at)
        .unwrap_or_default()
}

fn state_name(info: &SessionInfo) -> &'static str {
    match info.state {
        crate::SessionState::Connected if info.read_paused => "paused",
        crate::SessionState::Connected => "connected",
        crate::SessionState::Closing => "closing",
        _ => "closed",
    }
}

fn short(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn session_line(s: &SessionInfo) -> String {
    let mut line = String::with_capacity(140);
    let _ = write!(
        line,
        "{:<10} {:<22} {:<9} {:>6} {:>8} {:>8} {:>12} {:>12} {:>10} {:>10} {:>10} {}",
        s.id.to_string(),
        s.peer_addr.to_string(),
        transport_name(s),
        s.worker.map_or("-".to_string(), |w| w.to_string()),
        short(age(s)),
        short(s.idle_for),
        s.bytes_in,
        s.bytes_out,
        s.frames_in,
        s.frames_out,
        s.bytes_to_write + s.bytes_queued,
        state_name(s),
    );
    line
}

/// The transport's scheme; a resumed TLS session says so (`tls/r`), to tell at a glance
/// whether clients resume.
fn transport_name(s: &SessionInfo) -> &'static str {
    match &s.tls {
        Some(tls) if tls.resumed => match s.transport {
            crate::TransportKind::TlsUnix => "tls+unix/r",
            _ => "tls/r",
        },
        _ => s.transport.scheme(),
    }
}

fn session_json(s: &SessionInfo) -> Value {
    serde_json::to_value(SessionJson(s)).unwrap_or_default()
}

/// A session as `sessions --json` and `session ID --json` show it, serialized without an
/// intermediate [`Value`].
struct SessionJson<'a>(&'a SessionInfo);

impl serde::Serialize for SessionJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let s = self.0;
        let mut map = serializer.serialize_map(Some(16))?;
        map.serialize_entry("id", &s.id.get())?;
        map.serialize_entry("peer", &Shown(&s.peer_addr))?;
        map.serialize_entry("local", &Shown(&s.local_addr))?;
        map.serialize_entry("transport", s.transport.scheme())?;
        map.serialize_entry("tls", &s.tls.as_ref().map(TlsJson))?;
        map.serialize_entry("worker", &s.worker)?;
        map.serialize_entry("age_s", &age(s).as_secs_f64())?;
        map.serialize_entry("idle_s", &s.idle_for.as_secs_f64())?;
        map.serialize_entry("bytes_in", &s.bytes_in)?;
        map.serialize_entry("bytes_out", &s.bytes_out)?;
        map.serialize_entry("frames_in", &s.frames_in)?;
        map.serialize_entry("frames_out", &s.frames_out)?;
        map.serialize_entry("bytes_to_write", &(s.bytes_to_write + s.bytes_queued))?;
        map.serialize_entry("write_buffer_full", &s.write_buffer_full)?;
        map.serialize_entry("state", state_name(s))?;
        map.end()
    }
}

/// A session's TLS parameters, as `"tls"` in [`SessionJson`].
struct TlsJson<'a>(&'a crate::TlsInfo);

impl serde::Serialize for TlsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let t = self.0;
        let mut map = serializer.serialize_map(Some(6))?;
        map.serialize_entry("version", &t.version)?;
        map.serialize_entry("cipher_suite", &t.cipher_suite)?;
        map.serialize_entry("alpn", &t.alpn)?;
        map.serialize_entry("server_name", &t.server_name)?;
        map.serialize_entry("peer_subject", &t.peer_subject)?;
        map.serialize_entry("resumed", &t.resumed)?;
        map.end()
    }
}

/// The reply to `sessions --json`: `{"total": N, "sessions": [...]}`.
#[derive(serde::Serialize)]
struct Listing<'a> {
    total: usize,
    sessions: Records<'a>,
}

/// The sessions of a [`Listing`], each serialized from a snapshot taken as it is written (no
/// list of snapshots).
struct Records<'a>(&'a [&'a SessionMeta]);

impl serde::Serialize for Records<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|meta| SessionJsonOwned(meta.info())))
    }
}

/// [`SessionJson`] over a snapshot it owns.
struct SessionJsonOwned(SessionInfo);

impl serde::Serialize for SessionJsonOwned {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SessionJson(&self.0).serialize(serializer)
    }
}

/// A value serialized as the string it displays as, without allocating it.
struct Shown<'a, T>(&'a T);

impl<T: std::fmt::Display> serde::Serialize for Shown<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self.0)
    }
}

fn info_text(v: &Value) -> Vec<String> {
    let mut out = vec![
        format!("version   {}", v["version"].as_str().unwrap_or("?")),
        format!("uptime    {} s", v["uptime_s"]),
    ];
    if let Some(listeners) = v["listeners"].as_array() {
        for l in listeners {
            out.push(format!(
                "listener  {} {} {}, {} active, {} accepted, {} rejected (per IP), {} accept errors",
                l["transport"].as_str().unwrap_or("?"),
                l["addr"].as_str().unwrap_or("?"),
                if l["accepting"].as_bool() == Some(true) { "accepting" } else { "paused" },
                l["active"],
                l["accepted"],
                l["rejected_per_ip"],
                l["accept_errors"],
            ));
            let h = &l["handshakes"];
            if let Some(outcomes) = h
                .as_object()
                .filter(|o| o.values().any(|n| n.as_u64() > Some(0)))
            {
                let parts: Vec<String> = outcomes.iter().map(|(k, n)| format!("{k} {n}")).collect();
                out.push(format!("handshakes {}", parts.join(", ")));
            }
        }
    }
    out.push(format!("workers   {}", v["workers"]));
    let limits = &v["limits"];
    out.push(format!(
        "limits    max-connections {}, max-connections-per-ip {}, idle-timeout {}, frame-timeout {}",
        limits["max_connections"],
        if limits["max_connections_per_ip"].is_null() { "off".to_string() } else { limits["max_connections_per_ip"].to_string() },
        if limits["idle_timeout_s"].is_null() { "off".to_string() } else { format!("{} s", limits["idle_timeout_s"]) },
        if limits["frame_timeout_s"].is_null() { "off".to_string() } else { format!("{} s", limits["frame_timeout_s"]) },
    ));
    let t = &v["totals"];
    out.push(format!(
        "totals    {} live, {} connected, {} disconnected, {} bytes in and {} bytes out (ended sessions), {} dropped, {} slow consumers",
        t["live"], t["connected"], t["disconnected"], t["bytes_in_ended"], t["bytes_out_ended"], t["broadcasts_dropped"], t["slow_consumers"],
    ));
    out
}

/// Admin sessions: no idle timeout (an operator's prompt may sit for hours).
fn admin_session_config() -> SessionConfig {
    SessionConfig::default().with_idle_timeout(None)
}

/// Whether a command is being answered; the next waits (its frame stays in the read buffer,
/// and past that TCP pushes back).
#[derive(Default)]
struct Flow {
    busy: bool,
    waker: Option<Waker>,
}

/// How a reply task writes to its session, whatever the session's transport.
#[derive(Clone)]
struct Writer {
    /// `Bytes`, so that a retried write costs a reference count, not a copy of the line
    /// (a full listing is one line of megabytes).
    write: Recipient<Write<Bytes>>,
    flush: Recipient<Flush>,
    close: Recipient<DisconnectFromHost>,
}

impl Writer {
    /// Writes the lines in order, waiting for the buffer to drain whenever it is full. False
    /// once the session is gone.
    async fn send(&self, lines: Vec<String>) -> bool {
        for line in lines {
            let line = Bytes::from(line);
            // Each refusal is followed by a flush that empties the buffer, so the second
            // attempt has room; a third is a session that no longer writes.
            let mut attempts = 0;
            loop {
                match self.write.send(Write(line.clone())).await {
                    Ok(Ok(())) => break,
                    Ok(Err(SessionError::WriteBufferFull { .. })) if attempts < 3 => {
                        attempts += 1;
                        if !matches!(self.flush.send(Flush).await, Ok(Ok(()))) {
                            return false;
                        }
                    }
                    _ => return false,
                }
            }
        }
        true
    }
}

/// One admin connection: commands in, replies out, one command at a time. Made by
/// [`Admin::handler`].
pub struct AdminSession {
    admin: Admin,
    flow: Arc<Mutex<Flow>>,
    writer: Option<Writer>,
    /// This connection's session, known from `connected` on.
    id: Option<SessionId>,
}

impl std::fmt::Debug for AdminSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSession").finish_non_exhaustive()
    }
}

fn lock(flow: &Mutex<Flow>) -> std::sync::MutexGuard<'_, Flow> {
    lock_any(flow)
}

fn lock_any<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl SessionHandler<AdminLines> for AdminSession {
    fn connected(&mut self, conn: &mut Conn<'_, AdminLines, Self>) {
        let address = conn.address();
        self.writer = Some(Writer {
            write: address.clone().recipient(),
            flush: address.clone().recipient(),
            close: address.recipient(),
        });
        self.id = Some(conn.id());
        tracing::debug!(session = %conn.id(), "admin client connected");
    }

    fn disconnected(&mut self, _: &DisconnectReason, info: &SessionInfo) {
        self.admin.abandon(info.id);
    }

    fn poll_ready(&mut self, cx: &mut task::Context<'_>) -> Poll<()> {
        let mut flow = lock(&self.flow);
        if flow.busy {
            flow.waker = Some(cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    fn ready_read(
        &mut self,
        line: Result<String, CodecError>,
        conn: &mut Conn<'_, AdminLines, Self>,
    ) {
        let line = match line {
            Ok(line) => line,
            Err(error) => {
                let _ = conn.write(format!("error: {error}"));
                return;
            }
        };
        if line.trim().is_empty() {
            return;
        }
        let Some(writer) = self.writer.clone() else {
            return;
        };
        lock(&self.flow).busy = true;
        let admin = self.admin.clone();
        let flow = self.flow.clone();
        let from = conn.id();
        // The sockets go out on this connection's own socket (a duplicate, so that it stays
        // the same socket however the session ends meanwhile).
        let handover_fd = (line.split_whitespace().collect::<Vec<_>>() == ["handover"])
            .then(|| conn.unix_fd().map(|fd| fd.try_clone_to_owned()));
        // On the session's own worker thread: the command runs beside the session, which goes
        // on serving its neighbours; the next command waits in `poll_ready`.
        actix_rt::spawn(async move {
            let reply = match handover_fd {
                Some(fd) => admin
                    .offer_on(from, fd, &writer)
                    .await
                    .err()
                    .map(Reply::Error),
                None => Some(admin.answer(&line, Some(from)).await),
            };
            let quit = reply == Some(Reply::Quit);
            let lines = reply.map(Reply::into_lines).unwrap_or_default();
            if writer.send(lines).await {
                // Out to the kernel before a drain lets the owner exit.
                let _ = writer.flush.send(Flush).await;
                if quit {
                    let _ = writer.close.send(DisconnectFromHost).await;
                }
            }
            admin.publish_drain();
            let waker = {
                let mut flow = lock(&flow);
                flow.busy = false;
                flow.waker.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        });
    }
}
