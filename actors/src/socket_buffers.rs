//! Kernel buffer sizes for TCP sockets (`SO_RCVBUF`, `SO_SNDBUF`).

use std::io;

use crate::ConfigError;

/// The kernel's receive and send buffer sizes for TCP sockets: Qt's
/// `ReceiveBufferSizeSocketOption` and `SendBufferSizeSocketOption`.
///
/// By default Linux sizes both buffers itself and grows them with the connection's traffic (up
/// to `net.ipv4.tcp_rmem` / `tcp_wmem`, megabytes each). A size set here is fixed: the kernel
/// stops tuning that buffer, caps the value at `net.core.rmem_max` / `wmem_max` and, on Linux,
/// books twice the capped value (its own accounting overhead, as `socket(7)` says). A fixed
/// receive buffer also bounds the receive window, so one connection's rate is at most about
/// the buffer per round trip: size it for the slowest long path it must serve. Fixing them bounds the bytes a
/// connection can hold in the kernel, which matters for servers with many bulk clients that
/// read slowly: the session's own write buffer stops at its high watermark, and then these
/// buffers are all that is left to fill.
///
/// A listener sets them on its listening sockets, so every accepted connection inherits them
/// (no system call per connection, and the window scale offered in the handshake already
/// fits); a [`Connector`](crate::Connector) sets them before it connects. Unix-socket
/// addresses keep the system's sizes.
///
/// # Examples
///
/// ```
/// use switchboard::SocketBuffers;
///
/// let buffers = SocketBuffers::new().receive(128 * 1024).send(256 * 1024);
/// assert_eq!(buffers.receive_size(), Some(128 * 1024));
/// assert_eq!(buffers.send_size(), Some(256 * 1024));
/// assert!(SocketBuffers::new().is_system_default());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketBuffers {
    receive: Option<usize>,
    send: Option<usize>,
}

impl SocketBuffers {
    /// The system's sizes, tuned by the kernel (nothing is set).
    pub const fn new() -> Self {
        SocketBuffers {
            receive: None,
            send: None,
        }
    }

    /// Fixes the receive buffer (`SO_RCVBUF`) at `bytes`; 0 is refused when the listener or
    /// connector starts ([`ConfigError`]).
    pub const fn receive(mut self, bytes: usize) -> Self {
        self.receive = Some(bytes);
        self
    }

    /// Fixes the send buffer (`SO_SNDBUF`) at `bytes`; 0 is refused when the listener or
    /// connector starts ([`ConfigError`]).
    pub const fn send(mut self, bytes: usize) -> Self {
        self.send = Some(bytes);
        self
    }

    /// The receive buffer size asked for, if any.
    pub const fn receive_size(&self) -> Option<usize> {
        self.receive
    }

    /// The send buffer size asked for, if any.
    pub const fn send_size(&self) -> Option<usize> {
        self.send
    }

    /// Whether nothing is set (the kernel sizes both buffers).
    pub const fn is_system_default(&self) -> bool {
        self.receive.is_none() && self.send.is_none()
    }

    /// Refuses a size of 0 (which the kernel would silently raise to its minimum) or one past
    /// what `setsockopt` takes.
    pub(crate) fn validate(&self, option: &'static str) -> Result<(), ConfigError> {
        for size in [self.receive, self.send].into_iter().flatten() {
            if size == 0 {
                return Err(ConfigError::invalid(
                    option,
                    "a buffer size must be above 0",
                ));
            }
            if i32::try_from(size).is_err() {
                return Err(ConfigError::invalid(
                    option,
                    format!("{size} bytes is more than a socket buffer can be"),
                ));
            }
        }
        Ok(())
    }

    /// Sets what is asked on `socket`.
    pub(crate) fn apply(&self, socket: &socket2::SockRef<'_>) -> io::Result<()> {
        if let Some(bytes) = self.receive {
            socket.set_recv_buffer_size(bytes)?;
        }
        if let Some(bytes) = self.send {
            socket.set_send_buffer_size(bytes)?;
        }
        Ok(())
    }
}

/// What the kernel books per byte asked of `SO_RCVBUF` / `SO_SNDBUF`.
const BOOKED_PER_BYTE_ASKED: usize = if cfg!(target_os = "linux") { 2 } else { 1 };

/// One buffer size that was asked, against what the kernel booked on a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Booked {
    buffer: &'static str,
    sysctl: &'static str,
    asked: usize,
    /// `None` when `getsockopt` failed.
    booked: Option<usize>,
}

impl Booked {
    /// The kernel gave less than asked: `net.core.rmem_max` / `wmem_max` cap what an
    /// unprivileged process sets. Linux books twice the size asked; other systems book it as
    /// asked.
    pub(crate) fn is_capped(&self) -> bool {
        self.booked
            .is_none_or(|got| got < self.asked.saturating_mul(BOOKED_PER_BYTE_ASKED))
    }

    /// Warns that the kernel capped the size on the socket at `addr` (`side` says which end
    /// that address is, for the reader of the log).
    pub(crate) fn warn_capped(&self, side: &'static str, addr: &std::net::SocketAddr) {
        tracing::warn!(
            %addr,
            side,
            buffer = self.buffer,
            asked = self.asked,
            booked = self.booked.unwrap_or(0),
            "the kernel gave a smaller socket buffer than asked (capped by {})",
            self.sysctl
        );
    }
}

impl SocketBuffers {
    /// What the kernel booked on `socket` for each size that was asked.
    pub(crate) fn booked(&self, socket: &socket2::SockRef<'_>) -> impl Iterator<Item = Booked> {
        let receive = self.receive.map(|asked| Booked {
            buffer: "receive",
            sysctl: "net.core.rmem_max",
            asked,
            booked: socket.recv_buffer_size().ok(),
        });
        let send = self.send.map(|asked| Booked {
            buffer: "send",
            sysctl: "net.core.wmem_max",
            asked,
            booked: socket.send_buffer_size().ok(),
        });
        receive.into_iter().chain(send)
    }

    /// Logs what the kernel booked on the listening socket at `addr`, and warns when it gave
    /// less than asked.
    pub(crate) fn report(&self, addr: &std::net::SocketAddr, socket: &socket2::SockRef<'_>) {
        for booked in self.booked(socket) {
            if booked.is_capped() {
                booked.warn_capped("listener", addr);
            } else {
                tracing::info!(
                    %addr,
                    buffer = booked.buffer,
                    asked = booked.asked,
                    booked = booked.booked,
                    "socket buffer fixed"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_oversized_sizes_are_refused_by_name() {
        let error = SocketBuffers::new().receive(0).validate("socket_buffers");
        assert!(
            matches!(&error, Err(ConfigError::Invalid { option: "socket_buffers", reason }) if reason.contains("above 0")),
            "{error:?}"
        );
        let huge = usize::try_from(i64::from(i32::MAX) + 1).unwrap();
        assert!(SocketBuffers::new()
            .send(huge)
            .validate("socket_buffers")
            .is_err());
        assert!(SocketBuffers::new()
            .receive(4096)
            .send(4096)
            .validate("socket_buffers")
            .is_ok());
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_kernel_books_twice_the_size_asked() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        SocketBuffers::new()
            .receive(64 * 1024)
            .send(48 * 1024)
            .apply(&socket2::SockRef::from(&socket))
            .unwrap();
        let sock = socket2::SockRef::from(&socket);
        assert_eq!(sock.recv_buffer_size().unwrap(), 128 * 1024);
        assert_eq!(sock.send_buffer_size().unwrap(), 96 * 1024);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_size_past_the_system_cap_is_reported_capped() {
        let cap: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sock = socket2::SockRef::from(&socket);
        let over = SocketBuffers::new().receive(cap + 4096);
        over.apply(&sock).unwrap();
        let booked: Vec<Booked> = over.booked(&sock).collect();
        assert_eq!(booked.len(), 1, "{booked:?}");
        assert_eq!(booked[0].booked, Some(2 * cap), "{booked:?}");
        assert!(booked[0].is_capped(), "{booked:?}");

        let within = SocketBuffers::new().receive(cap / 2).send(64 * 1024);
        within.apply(&sock).unwrap();
        assert!(within.booked(&sock).all(|b| !b.is_capped()));
        assert_eq!(within.booked(&sock).count(), 2);
    }
}
