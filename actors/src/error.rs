//! Error types of the `switchboard` crate, one enum per concern.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

/// A configuration value that cannot work, reported when the configuration is used to build
/// something, never later as a panic.
///
/// # Examples
///
/// ```
/// use switchboard::{ConfigError, SessionConfig};
///
/// let config = SessionConfig::default().with_write_watermarks(64 * 1024, 16 * 1024);
/// assert!(matches!(config.validate(), Err(ConfigError::Invalid { .. })));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An option holds a value outside its valid range.
    #[error("invalid {option}: {reason}")]
    Invalid {
        /// The option's name, as its setter is called.
        option: &'static str,
        /// Why the value cannot work.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(option: &'static str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            option,
            reason: reason.into(),
        }
    }
}

/// Why a [`Listener`](crate::Listener) could not start.
///
/// # Examples
///
/// ```
/// use switchboard::ListenError;
///
/// let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let addr = taken.local_addr().unwrap();
/// let error = switchboard::bind_listener(addr, 128).unwrap_err();
/// assert!(matches!(error, ListenError::Bind { .. }));
/// assert!(error.to_string().contains(&addr.to_string()));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// The address to listen on is malformed (no port, a bad port, no host).
    #[error("cannot listen: {reason}")]
    InvalidTarget {
        /// What is wrong with it.
        reason: String,
    },
    /// The host name to listen on could not be resolved, or resolved to no address.
    #[error("cannot resolve {target}: {source}")]
    Resolve {
        /// The target as given.
        target: String,
        /// What the resolver said.
        #[source]
        source: io::Error,
    },
    /// Binding or listening on the address failed (address in use, permission denied, ...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// Binding a Unix socket failed: a live server on the path, a file in the way, a path
    /// too long for the system, no permission.
    #[error("cannot listen on {target}: {source}")]
    BindUnix {
        /// The socket as given.
        target: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// A socket handed over already listening (socket activation, a hand-over) cannot be
    /// used: not a listening stream socket, or its descriptor refused a setting.
    #[error("cannot adopt the listening socket {socket}: {source}")]
    Adopt {
        /// The socket: its address when it could be read, else its descriptor.
        socket: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The listener's thread could not take the sockets.
    #[error("cannot start listening: {source}")]
    Register {
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Why a [`Connector`](crate::Connector) could not connect.
///
/// # Examples
///
/// ```
/// use switchboard::ConnectError;
/// use std::time::Duration;
///
/// let error = ConnectError::Timeout { target: "example:1".into(), after: Duration::from_secs(1) };
/// assert_eq!(error.to_string(), "connecting to example:1 timed out after 1s");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The target is malformed (no port, a bad port, no host): nothing was looked up.
    #[error("cannot connect: {reason}")]
    InvalidTarget {
        /// What is wrong with it.
        reason: String,
    },
    /// The host name could not be resolved.
    #[error("cannot resolve {target}: {source}")]
    Resolve {
        /// The target as given.
        target: String,
        /// What the resolver said.
        #[source]
        source: io::Error,
    },
    /// The host name resolved to no address.
    #[error("{target} resolved to no address")]
    NoAddress {
        /// The target as given.
        target: String,
    },
    /// No connection was made within the connect timeout.
    #[error("connecting to {target} timed out after {after:?}")]
    Timeout {
        /// The target as given.
        target: String,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// Every address was tried and refused the connection, or another I/O error happened.
    #[error("cannot connect to {addr}: {source}")]
    Io {
        /// The last address tried.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// Connecting to a Unix socket failed (no such file, nothing listening, permission).
    #[error("cannot connect to {target}: {source}")]
    Unix {
        /// The target as given.
        target: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The session could not be set up on a worker.
    #[error("cannot start the session: {0}")]
    Session(#[from] SessionError),
}

/// An operation on a [`Session`](crate::Session) that did not go through.
///
/// # Examples
///
/// ```
/// use switchboard::SessionError;
///
/// let error = SessionError::WriteBufferFull { buffered: 70_000, high_watermark: 65_536 };
/// assert!(error.is_backpressure());
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The write buffer is at or above its high watermark: wait for
    /// [`SessionHandler::write_buffer_drained`](crate::SessionHandler::write_buffer_drained)
    /// (or retry later) instead of buffering without bound.
    #[error("write buffer full: {buffered} bytes queued, high watermark {high_watermark}")]
    WriteBufferFull {
        /// Bytes waiting to be written.
        buffered: usize,
        /// The configured high watermark.
        high_watermark: usize,
    },
    /// The session is closing or closed and takes no more writes.
    #[error("the session is closing")]
    Closing,
    /// The session took nothing from its full outbound queue for its slow-consumer timeout
    /// ([`SessionConfig::with_slow_consumer_timeout`](crate::SessionConfig::with_slow_consumer_timeout)),
    /// or was found slow before: its peer is not reading.
    #[error("the session is a slow consumer: it took nothing for {timeout:?}")]
    SlowConsumer {
        /// The session's slow-consumer timeout.
        timeout: Duration,
    },
    /// The codec refused to encode the item (too long, a newline inside a line, ...).
    #[error("cannot encode: {0}")]
    Encode(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The session actor has stopped; its mailbox is gone.
    #[error("the session has ended")]
    Gone,
    /// A socket operation failed.
    #[error("socket error: {0}")]
    Io(#[source] Arc<io::Error>),
    /// STARTTLS was asked of a session that runs over TLS already or is upgrading.
    #[error("the session is already encrypted or being upgraded")]
    AlreadyEncrypted,
    /// A STARTTLS handshake failed; the session ended with this reason.
    #[error("the TLS handshake failed: {0}")]
    Handshake(crate::DisconnectReason),
    /// The session's configuration cannot work; nothing was started.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl SessionError {
    /// True when the error means "try again once the buffer drains", not a failure.
    pub fn is_backpressure(&self) -> bool {
        matches!(self, SessionError::WriteBufferFull { .. })
    }
}

impl From<actix::MailboxError> for SessionError {
    fn from(_: actix::MailboxError) -> Self {
        SessionError::Gone
    }
}

/// A TLS configuration that cannot be built: a certificate, key or CA file that cannot be read
/// or parsed, or a key that does not fit its certificate.
///
/// # Examples
///
/// ```
/// let error = switchboard::TlsAcceptor::from_pem_files("/nonexistent.pem", "/nonexistent.key")
///     .unwrap_err();
/// assert!(error.to_string().contains("/nonexistent.pem"));
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("cannot read {path}: {reason}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The files were read, but they do not make a working configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl TlsError {
    pub(crate) fn file(path: &std::path::Path, error: impl std::fmt::Display) -> TlsError {
        TlsError::File {
            path: path.to_path_buf(),
            reason: error.to_string(),
        }
    }
}
