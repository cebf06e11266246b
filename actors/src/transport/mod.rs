//! The transports a session runs over: plaintext TCP, Unix sockets, TLS over either, and an
//! in-memory duplex for tests. A closed enum rather than a trait object or a type parameter:
//! the session's type stays `Session<C, H>` whatever it runs over, the plaintext path costs one
//! `match` per socket call (no allocation, no dynamic dispatch), and handshakes can turn one
//! variant into another in place (STARTTLS).

mod address;
mod prefixed;
pub(crate) mod proxy;
pub(crate) mod tls;

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::rustls;

pub use address::{Address, Credentials, UnixAddress};
pub(crate) use prefixed::Prefixed;
pub use proxy::{Cidr, ProxyError, ProxyHeader, ProxyVersion, MAX_PROXY_HEADER};
pub use tls::{TlsAcceptor, TlsConnector, TlsInfo, TlsResumption};

/// A plaintext byte stream: what TLS runs over, and what PROXY headers arrive on.
#[derive(Debug)]
pub(crate) enum Plain {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// Either of the above with bytes already read in front (those that came with a PROXY
    /// header); boxed, so the plain variants stay small.
    Prefixed(Box<Prefixed>),
}

/// A connected stream as a session drives it.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(Plain),
    Tls(Box<tokio_rustls::TlsStream<Plain>>),
    /// In-memory, for the session's own unit tests.
    #[cfg(test)]
    // No unit test builds one yet (the state-machine tests over a duplex are still to come).
    #[allow(dead_code)]
    Memory(tokio::io::DuplexStream),
}

/// How a session's bytes travel, for logs and [`SessionInfo`](crate::SessionInfo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// Plaintext TCP.
    Tcp,
    /// A Unix domain socket.
    Unix,
    /// TLS over TCP.
    TlsTcp,
    /// TLS over a Unix domain socket.
    TlsUnix,
    /// In memory (tests).
    Memory,
}

impl TransportKind {
    /// The scheme `switchboard` prints and takes for it (`tcp`, `unix`, `tls`, `tls+unix`).
    pub fn scheme(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Unix => "unix",
            TransportKind::TlsTcp => "tls",
            TransportKind::TlsUnix => "tls+unix",
            TransportKind::Memory => "memory",
        }
    }
}

impl TransportKind {
    /// The same transport with TLS over it (STARTTLS).
    pub(crate) fn encrypted(self) -> TransportKind {
        match self {
            TransportKind::Tcp => TransportKind::TlsTcp,
            TransportKind::Unix => TransportKind::TlsUnix,
            other => other,
        }
    }

    /// Whether TLS runs over it.
    pub fn is_tls(self) -> bool {
        matches!(self, TransportKind::TlsTcp | TransportKind::TlsUnix)
    }
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.scheme())
    }
}

impl Plain {
    fn kind(&self) -> TransportKind {
        match self {
            Plain::Tcp(_) => TransportKind::Tcp,
            Plain::Unix(_) => TransportKind::Unix,
            Plain::Prefixed(p) => p.inner.kind(),
        }
    }

    /// Sets `TCP_NODELAY` (nothing for a Unix socket).
    pub(crate) fn set_nodelay(&self, on: bool) {
        if let Some(tcp) = self.tcp() {
            let _ = tcp.set_nodelay(on);
        }
    }

    /// The TCP socket underneath, if it is one.
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Plain::Tcp(s) => Some(s),
            Plain::Unix(_) => None,
            Plain::Prefixed(p) => p.inner.tcp(),
        }
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Plain::Tcp(s) => s.poll_read_ready(cx),
            Plain::Unix(s) => s.poll_read_ready(cx),
            Plain::Prefixed(p) if !p.prefix.is_empty() => Poll::Ready(Ok(())),
            Plain::Prefixed(p) => p.inner.poll_read_ready(cx),
        }
    }
}

impl Stream {
    pub(crate) fn kind(&self) -> TransportKind {
        match self {
            Stream::Plain(plain) => plain.kind(),
            Stream::Tls(tls) => match tls.get_ref().0.kind() {
                TransportKind::Unix => TransportKind::TlsUnix,
                _ => TransportKind::TlsTcp,
            },
            #[cfg(test)]
            Stream::Memory(_) => TransportKind::Memory,
        }
    }

    /// Readiness of the socket underneath, so an idle session can wait without holding a read
    /// buffer. TLS and memory streams report ready: a read then tells.
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(plain) => plain.poll_read_ready(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Ends TLS politely when the session ends without a graceful close (an idle or frame
    /// timeout, a kick, a codec error): queues close_notify and writes what the socket takes
    /// right now, never waiting, so the peer sees an orderly end rather than a truncation.
    /// Nothing for plaintext.
    pub(crate) fn close_notify_now(&mut self) {
        fn send<C>(io: &mut Plain, conn: &mut rustls::ConnectionCommon<C>) {
            conn.send_close_notify();
            let mut socket = TryWrite(io);
            while conn.wants_write() {
                match conn.write_tls(&mut socket) {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
        if let Stream::Tls(tls) = self {
            match &mut **tls {
                tokio_rustls::TlsStream::Client(s) => {
                    let (io, conn) = s.get_mut();
                    send(io, conn);
                }
                tokio_rustls::TlsStream::Server(s) => {
                    let (io, conn) = s.get_mut();
                    send(io, conn);
                }
            }
        }
    }

    /// What TLS negotiated, for a TLS stream.
    pub(crate) fn tls_info(&self) -> Option<TlsInfo> {
        match self {
            Stream::Tls(tls) => Some(TlsInfo::of(tls)),
            _ => None,
        }
    }
}

/// A plaintext socket as a `std::io::Write` that never blocks: a full socket reads as
/// `WouldBlock`.
struct TryWrite<'a>(&'a mut Plain);

impl io::Write for TryWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        fn plain(p: &mut Plain, buf: &[u8]) -> io::Result<usize> {
            match p {
                Plain::Tcp(s) => s.try_write(buf),
                Plain::Unix(s) => s.try_write(buf),
                Plain::Prefixed(p) => plain(&mut p.inner, buf),
            }
        }
        plain(self.0, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain(Plain::Tcp($s)) => $e,
            Stream::Plain(Plain::Unix($s)) => $e,
            Stream::Plain(Plain::Prefixed($s)) => $e,
            Stream::Tls($s) => $e,
            #[cfg(test)]
            Stream::Memory($s) => $e,
        }
    };
}

macro_rules! delegate_plain {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Plain::Tcp($s) => $e,
            Plain::Unix($s) => $e,
            Plain::Prefixed($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    // Vectored writes pass through: TLS writes its pending records with one `writev`, where
    // the default would make a `send` per record.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(plain) => plain.is_write_vectored(),
            Stream::Tls(tls) => tls.is_write_vectored(),
            #[cfg(test)]
            Stream::Memory(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

impl AsyncRead for Plain {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate_plain!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Plain {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate_plain!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate_plain!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Plain::Tcp(s) => s.is_write_vectored(),
            Plain::Unix(s) => s.is_write_vectored(),
            Plain::Prefixed(p) => p.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate_plain!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate_plain!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// A stream as it crosses threads: a std socket, registered again on the worker's runtime
/// (tokio sockets are bound to the runtime that made them).
#[derive(Debug)]
pub(crate) enum RawStream {
    Tcp(std::net::TcpStream),
    /// Accepted with `accept4(SOCK_NONBLOCK)`: registers without a second system call.
    NonBlockingTcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
    /// Accepted with `accept4(SOCK_NONBLOCK)`, like `NonBlockingTcp`.
    NonBlockingUnix(std::os::unix::net::UnixStream),
}

impl RawStream {
    /// The stream on the current runtime.
    pub(crate) fn register(self) -> io::Result<Plain> {
        match self {
            RawStream::Tcp(s) => {
                s.set_nonblocking(true)?;
                Ok(Plain::Tcp(TcpStream::from_std(s)?))
            }
            RawStream::NonBlockingTcp(s) => Ok(Plain::Tcp(TcpStream::from_std(s)?)),
            RawStream::Unix(s) => {
                s.set_nonblocking(true)?;
                Ok(Plain::Unix(UnixStream::from_std(s)?))
            }
            RawStream::NonBlockingUnix(s) => Ok(Plain::Unix(UnixStream::from_std(s)?)),
        }
    }

    /// Both ends' addresses, read before the stream moves to its worker.
    pub(crate) fn addresses(&self) -> io::Result<(Address, Address)> {
        match self {
            RawStream::Tcp(s) | RawStream::NonBlockingTcp(s) => {
                Ok((s.peer_addr()?.into(), s.local_addr()?.into()))
            }
            RawStream::Unix(s) | RawStream::NonBlockingUnix(s) => {
                let credentials = peer_credentials(s);
                Ok((
                    Address::from_unix(&s.peer_addr()?, credentials),
                    Address::from_unix(&s.local_addr()?, None),
                ))
            }
        }
    }
}

/// The peer process's credentials (`SO_PEERCRED`).
pub(crate) fn peer_credentials(stream: &std::os::unix::net::UnixStream) -> Option<Credentials> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given, and the descriptor is
    // open for the duration of the call (borrowed from `stream`).
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(Credentials {
        uid: cred.uid,
        gid: cred.gid,
        pid: (cred.pid > 0).then_some(cred.pid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Both slices go out in one call: the default `poll_write_vectored` would write only the
    /// first, and TLS would make a `send` per record.
    #[tokio::test]
    async fn a_vectored_write_passes_through_to_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (mut peer, mut stream) = (
            client.unwrap(),
            // With bytes in front (a PROXY header's remainder), the innermost layer.
            Stream::Plain(Prefixed::wrap(
                bytes::Bytes::from_static(b"read side"),
                Plain::Tcp(accepted.unwrap().0),
            )),
        );
        assert!(stream.is_write_vectored());
        let slices = [io::IoSlice::new(b"first "), io::IoSlice::new(b"second")];
        let written = stream.write_vectored(&slices).await.unwrap();
        assert_eq!(written, 12, "both slices in one write");
        let mut got = [0u8; 12];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"first second");
    }
}
