//! [`Address`]: where a session's ends are, for every transport.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

/// One end of a connection: an IP socket address, or a Unix socket (path, if it has one, and
/// the peer process's credentials, if the kernel gave them). Shown in
/// [`SessionInfo`](crate::SessionInfo), the registry's list, listener events and logs.
///
/// It compares equal to a [`SocketAddr`] when it is that IP address.
///
/// # Examples
///
/// ```
/// use switchboard::Address;
///
/// let addr: std::net::SocketAddr = "127.0.0.1:7878".parse().unwrap();
/// let ip = Address::from(addr);
/// assert_eq!(ip, addr);
/// assert_eq!(ip.to_string(), "127.0.0.1:7878");
/// assert_eq!(ip.ip(), Some(addr.ip()));
/// let unix = Address::unix_path("/run/app.sock");
/// assert_eq!(unix.to_string(), "unix:/run/app.sock");
/// assert_eq!(unix.ip(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Address {
    /// An IP socket address (TCP, TLS over TCP).
    Ip(SocketAddr),
    /// A Unix domain socket; boxed, so an IP address (what most sessions have, twice) stays
    /// the size of a [`SocketAddr`].
    Unix(Box<UnixAddress>),
}

/// A Unix socket end: its path or abstract name (unnamed for most client ends) and, for a
/// peer, the credentials the kernel reports for the process that connected (`SO_PEERCRED`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[non_exhaustive]
pub struct UnixAddress {
    /// The socket's path; `None` for an unnamed socket.
    pub path: Option<PathBuf>,
    /// A Linux abstract-namespace name (shown as `@name`), instead of a path.
    pub abstract_name: Option<Vec<u8>>,
    /// The peer process's credentials, when this is the peer end.
    pub credentials: Option<Credentials>,
}

/// A Unix peer's process credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub struct Credentials {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Process id, where the system reports it.
    pub pid: Option<i32>,
}

impl Address {
    /// A Unix address for `path`.
    pub fn unix_path(path: impl Into<PathBuf>) -> Address {
        Address::Unix(Box::new(UnixAddress {
            path: Some(path.into()),
            ..UnixAddress::default()
        }))
    }

    /// The IP address, for an IP end (per-IP limits, logs).
    pub fn ip(&self) -> Option<IpAddr> {
        self.socket_addr().map(|a| a.ip())
    }

    /// The socket address, for an IP end.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Address::Ip(addr) => Some(*addr),
            Address::Unix(_) => None,
        }
    }

    /// The port, for an IP end.
    pub fn port(&self) -> Option<u16> {
        self.socket_addr().map(|a| a.port())
    }

    /// The Unix end, for a Unix socket.
    pub fn unix(&self) -> Option<&UnixAddress> {
        match self {
            Address::Unix(unix) => Some(unix),
            Address::Ip(_) => None,
        }
    }

    pub(crate) fn from_unix(
        addr: &std::os::unix::net::SocketAddr,
        credentials: Option<Credentials>,
    ) -> Address {
        use std::os::linux::net::SocketAddrExt;
        Address::new_unix(addr.as_pathname(), addr.as_abstract_name(), credentials)
    }

    /// A Unix peer as `accept4` reported it.
    pub(crate) fn from_unix_sockaddr(
        addr: &socket2::SockAddr,
        credentials: Option<Credentials>,
    ) -> Address {
        Address::new_unix(
            addr.as_pathname(),
            addr.as_abstract_namespace(),
            credentials,
        )
    }

    fn new_unix(
        path: Option<&std::path::Path>,
        abstract_name: Option<&[u8]>,
        credentials: Option<Credentials>,
    ) -> Address {
        Address::Unix(Box::new(UnixAddress {
            path: path.map(PathBuf::from),
            abstract_name: abstract_name.map(<[u8]>::to_vec),
            credentials,
        }))
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::Ip(addr)
    }
}

impl PartialEq<SocketAddr> for Address {
    fn eq(&self, other: &SocketAddr) -> bool {
        self.socket_addr() == Some(*other)
    }
}

impl PartialEq<Address> for SocketAddr {
    fn eq(&self, other: &Address) -> bool {
        other == self
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(addr) => addr.fmt(f),
            Address::Unix(unix) => unix.fmt(f),
        }
    }
}

impl fmt::Display for UnixAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, &self.abstract_name) {
            (Some(path), _) => write!(f, "unix:{}", path.display()),
            (None, Some(name)) => write!(f, "unix:@{}", String::from_utf8_lossy(name)),
            (None, None) => match self.credentials {
                Some(c) => match c.pid {
                    Some(pid) => write!(f, "unix:(pid {pid}, uid {})", c.uid),
                    None => write!(f, "unix:(uid {})", c.uid),
                },
                None => f.write_str("unix:(unnamed)"),
            },
        }
    }
}
