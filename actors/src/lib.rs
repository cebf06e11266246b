//! Switchboard: Qt's `QTcpServer` / `QTcpSocket` programming model as actix actors, on a pool of
//! worker threads.
//!
//! | Qt | Switchboard |
//! |---|---|
//! | `QTcpServer` | [`Listener`] (built with [`Listener::bind`]) |
//! | `newConnection`, `acceptError` | [`ListenerEvent`], [`RegistryEvent::Connected`] |
//! | `nextPendingConnection` | [`NextPendingConnection`] in pull mode ([`ListenerBuilder::pull`]) |
//! | `QTcpSocket` | [`Session`], one actor per connection, on a [`WorkerPool`] thread |
//! | `connectToHost`, `connected` | [`Connector::connect`], [`SessionHandler::connected`] |
//! | `readyRead` + `read` | [`SessionHandler::ready_read`] with decoded frames; or [`Notify`] with [`Read`], [`ReadAll`], [`ReadLine`] |
//! | `write`, `bytesWritten`, `bytesToWrite` | [`Write`] (or [`WriteBytes`] for bytes as they are, uncopied), [`SessionHandler::bytes_written`], [`SessionInfo::bytes_to_write`] |
//! | `disconnectFromHost`, `abort` | [`DisconnectFromHost`], [`Abort`] |
//! | `disconnected`, `errorOccurred` | [`SessionHandler::disconnected`] with a [`DisconnectReason`], exactly once |
//! | (none) | [`Registry`]: count, list, send-to-one, broadcast, kick, subscribe, wait, shutdown |
//!
//! Every limit is on by default: see [`SessionConfig`] and [`ListenerBuilder`].
//!
//! # Examples
//!
//! An echo server and a client in one process:
//!
//! ```
//! # actix_rt::System::new().block_on(async {
//! use switchboard::{Conn, Connector, Listener, SessionHandler};
//! use switchboard_codec::Lines;
//!
//! struct Echo;
//! impl SessionHandler<Lines> for Echo {
//!     fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
//!         let _ = conn.write(line);
//!     }
//! }
//!
//! struct Client(Option<tokio::sync::oneshot::Sender<String>>);
//! impl SessionHandler<Lines> for Client {
//!     fn connected(&mut self, conn: &mut Conn<'_, Lines, Self>) {
//!         conn.write("hello").unwrap();
//!     }
//!     fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
//!         if let Some(reply) = self.0.take() {
//!             let _ = reply.send(line);
//!         }
//!         conn.disconnect_from_host();
//!     }
//! }
//!
//! let server = Listener::bind("127.0.0.1:0")
//!     .workers(2)
//!     .serve(Lines::new(), || Echo)
//!     .unwrap();
//! let (tx, rx) = tokio::sync::oneshot::channel();
//! Connector::new()
//!     .connect(&server.local_addr().to_string(), Lines::new(), Client(Some(tx)))
//!     .await
//!     .unwrap();
//! assert_eq!(rx.await.unwrap(), "hello");
//! # });
//! ```
//!
//! # Choosing a handler
//!
//! Every session calls one [`SessionHandler`]; which one decides where your code runs.
//!
//! - **Your own [`SessionHandler`]** (as above): the fast path. Its callbacks run inside the
//!   session, on the session's worker thread, with each decoded frame and a [`Conn`] to write
//!   through: no mailbox hop, no allocation per frame. Keep them short and non-blocking, since
//!   the worker serves other sessions too. Use it unless a reason below applies.
//! - **[`Forward`]**: the session sends every event ([`SessionEvent`]) to any actix
//!   [`Recipient`](actix::Recipient), and you write through the session's address. For
//!   connection logic that lives in an actor of its own (state shared by many connections, or
//!   code already written as actors), at the cost of a message per frame.
//! - **[`Notify`]**: Qt's pull style, over raw bytes. The owner hears only that bytes wait
//!   ([`NotifyEvent::ReadyRead`], Qt's `readyRead`) and takes them with [`Read`], [`ReadAll`] or
//!   [`ReadLine`] (Qt's `read`, `readAll`, `readLine`); for porting Qt code with its shape kept.
//!
//! # Logs
//!
//! Each session runs inside a `tracing` span named `session` (fields `id`, `peer`, `transport`,
//! `listener`, `worker`) at INFO, of target [`SESSION_SPAN_TARGET`]: every line logged while
//! the session runs, by the library or by a handler, carries them. A session's end is logged at
//! DEBUG with its reason and totals. A live span costs whatever the subscriber keeps per span:
//! with `tracing-subscriber`'s registry and fmt layer, ~560 bytes per connection; with
//! `switchboard::log::LineLog` (feature `log`, the same lines), 96. The spans can also be
//! turned off alone, e.g. `RUST_LOG=info,switchboard::session_span=off` with an `EnvFilter`.
//!
//! Runnable programs are in the crate's `examples/`: `echo_server`, `echo_client`, `held_stream`
//! and `custom_codec` (run one with `cargo run -p switchboard --example NAME`).
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![doc(test(attr(deny(warnings))))]
// docs.rs (nightly, `--cfg docsrs`) labels feature-gated items with the feature they need.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admin;
mod background;
mod config;
mod connector;
mod counters;
mod error;
mod forward;
pub mod handover;
mod limits;
mod listener;
#[cfg(feature = "log")]
#[cfg_attr(docsrs, doc(cfg(feature = "log")))]
pub mod log;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
mod notify;
mod outbox;
mod registry;
mod session;
mod socket_buffers;
mod spin;
mod target;
mod ticker;
mod transport;
mod worker;

pub use config::SessionConfig;
pub use connector::Connector;
pub use counters::{
    ClosedStats, HandshakeStats, ACCEPT_ERROR_KINDS, DISCONNECT_REASON_LABELS, HANDSHAKE_BUCKETS,
    HANDSHAKE_OUTCOME_LABELS, LIFETIME_BUCKETS,
};
pub use error::{ConfigError, ConnectError, ListenError, SessionError, TlsError};
pub use forward::{Forward, SessionEvent};
pub use limits::ConnectionPermit;
pub use listener::{
    bind_listener, default_max_connections, raise_fd_limit, AcceptedStream, Close,
    GetListenerStats, IsListening, Listener, ListenerBuilder, ListenerEvent, ListenerHandle,
    ListenerStats, NextPendingConnection, PauseAccepting, PendingConnection, Release,
    ResumeAccepting, ServerAddress, SetMaxConnections, SetMaxConnectionsPerIp,
    SetMaxPendingConnections, ShareSockets, SharedSockets, StdListener, DEFAULT_BACKLOG,
    DEFAULT_MAX_PENDING,
};
pub use notify::{BytesAvailable, Notify, NotifyEvent, NotifyHandle, Read, ReadAll, ReadLine};
pub use registry::{
    Broadcast, BroadcastReport, Broadcasting, Count, Get, Kick, List, Placeholder, Registry,
    RegistryEvent, RegistryEvents, RegistryStats, SendTo, Sending, Shutdown, ShutdownReport,
    Subscribe, WaitForCount, DEFAULT_EVENT_BACKLOG,
};
pub use session::{
    Abort, CloseMode, Conn, DisconnectFromHost, DisconnectReason, Flush, GetInfo, Invoke,
    PauseReading, ResumeReading, Session, SessionBuilder, SessionCodec, SessionHandler, SessionId,
    SessionInfo, SessionState, SharedError, ShutdownWrite, SlowConsumerPolicy, StartTls, Write,
    WriteBytes,
};
pub use socket_buffers::SocketBuffers;
pub use target::{IntoTarget, Target, UnixTarget};
pub use transport::{
    Address, Cidr, Credentials, ProxyError, ProxyHeader, ProxyVersion, TlsAcceptor, TlsConnector,
    TlsInfo, TlsResumption, TransportKind, UnixAddress, MAX_PROXY_HEADER,
};
pub use worker::{Assignment, WorkerPool, WorkerPoolBuilder};

/// The `tracing` target of each session's span, for filters that treat the spans apart from
/// the events inside them (see [Logs](crate#logs)).
///
/// # Examples
///
/// ```
/// // Lines at INFO, without a span per session.
/// let directive = format!("info,{}=off", switchboard::SESSION_SPAN_TARGET);
/// assert_eq!(directive, "info,switchboard::session_span=off");
/// ```
pub const SESSION_SPAN_TARGET: &str = "switchboard::session_span";

/// The crate's README (the page crates.io shows), compiled as doctests so it cannot rot. The
/// workspace README's examples are compiled by the `switchboard-tests` crate, since that file is
/// not part of this package.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
