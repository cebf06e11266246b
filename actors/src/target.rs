//! [`Target`]: an address to listen on or connect to, from anything a user would pass.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
};

/// An address to listen on or connect to: a socket address, or a host name and a port to
/// resolve. Made from whatever a user would pass to [`Listener::bind`](crate::Listener::bind)
/// or [`Connector::connect`](crate::Connector::connect): a [`SocketAddr`], `"host:port"`,
/// `"[::1]:port"`, `(host, port)`, `(ip, port)`.
///
/// # Examples
///
/// ```
/// use switchboard::{IntoTarget, Target};
///
/// let addr: std::net::SocketAddr = "127.0.0.1:80".parse().unwrap();
/// assert_eq!(addr.into_target(), Ok(Target::Addr(addr)));
/// assert_eq!("127.0.0.1:80".into_target(), Ok(Target::Addr(addr)));
/// assert_eq!(
///     ("localhost", 80).into_target(),
///     Ok(Target::Host { host: "localhost".into(), port: 80 })
/// );
/// assert!("localhost".into_target().unwrap_err().contains("no port"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A socket address, used as it is.
    Addr(SocketAddr),
    /// A host name and a port, resolved when used.
    Host {
        /// The name.
        host: String,
        /// The port.
        port: u16,
    },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(addr) => addr.fmt(f),
            Target::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl Target {
    /// Parses `host:port`, `ip:port` or `[ipv6]:port`.
    ///
    /// # Errors
    ///
    /// Why the text is not a target (no port, a port that is not a number 0–65535, no host),
    /// as a sentence.
    pub fn parse(text: &str) -> Result<Target, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Target::Addr(addr));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("`{text}` has no port (write host:port)"));
        };
        if host.contains(':') && !host.starts_with('[') {
            return Err(format!(
                "`{text}` looks like a bare IPv6 address: write [address]:port"
            ));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{port}` in `{text}` is not a port (0–65535)"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("`{text}` has no host"));
        }
        Ok(Target::Host {
            host: host.to_string(),
            port,
        })
    }

    /// Resolves with the system resolver (blocking: listeners bind once, at start).
    pub(crate) fn resolve_blocking(&self) -> std::io::Result<Vec<SocketAddr>> {
        use std::net::ToSocketAddrs;
        match self {
            Target::Addr(addr) => Ok(vec![*addr]),
            Target::Host { host, port } => Ok((host.as_str(), *port).to_socket_addrs()?.collect()),
        }
    }

    /// Resolves without blocking the thread.
    pub(crate) async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        match self {
            Target::Addr(addr) => Ok(vec![*addr]),
            Target::Host { host, port } => {
                Ok(tokio::net::lookup_host((host.as_str(), *port))
                    .await?
                    .collect())
            }
        }
    }
}

/// What can become a [`Target`]. Text is checked here, so a malformed target (no port) is
/// reported as such, not as a failed name lookup.
pub trait IntoTarget {
    /// The target, or why this is not one.
    ///
    /// # Errors
    ///
    /// A sentence saying what is wrong with the text.
    fn into_target(self) -> Result<Target, String>;
}

impl IntoTarget for Target {
    fn into_target(self) -> Result<Target, String> {
        Ok(self)
    }
}

impl IntoTarget for &Target {
    fn into_target(self) -> Result<Target, String> {
        Ok(self.clone())
    }
}

impl IntoTarget for &str {
    fn into_target(self) -> Result<Target, String> {
        Target::parse(self)
    }
}

impl IntoTarget for String {
    fn into_target(self) -> Result<Target, String> {
        Target::parse(&self)
    }
}

impl IntoTarget for &String {
    fn into_target(self) -> Result<Target, String> {
        Target::parse(self)
    }
}

impl IntoTarget for (&str, u16) {
    fn into_target(self) -> Result<Target, String> {
        match self.0.parse::<IpAddr>() {
            Ok(ip) => Ok(Target::Addr(SocketAddr::new(ip, self.1))),
            Err(_) if self.0.is_empty() => Err("the host is empty".to_string()),
            Err(_) => Ok(Target::Host {
                host: self.0.to_string(),
                port: self.1,
            }),
        }
    }
}

impl IntoTarget for (String, u16) {
    fn into_target(self) -> Result<Target, String> {
        (self.0.as_str(), self.1).into_target()
    }
}

macro_rules! socket_addr_targets {
    ($($ty:ty),*) => {$(
        impl IntoTarget for $ty {
            fn into_target(self) -> Result<Target, String> {
                Ok(Target::Addr(SocketAddr::from(self)))
            }
        }
    )*};
}

socket_addr_targets!(
    SocketAddr,
    SocketAddrV4,
    SocketAddrV6,
    (IpAddr, u16),
    (Ipv4Addr, u16),
    (Ipv6Addr, u16),
    ([u8; 4], u16)
);

impl IntoTarget for &SocketAddr {
    fn into_target(self) -> Result<Target, String> {
        Ok(Target::Addr(*self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_targets_parse_or_say_what_is_wrong() {
        assert_eq!(
            "[::1]:7".into_target(),
            Ok(Target::Addr("[::1]:7".parse().unwrap()))
        );
        assert_eq!(
            "example.org:443".into_target(),
            Ok(Target::Host {
                host: "example.org".into(),
                port: 443
            })
        );
        assert!("example.org".into_target().unwrap_err().contains("no port"));
        assert!("example.org:http"
            .into_target()
            .unwrap_err()
            .contains("not a port"));
        assert!("example.org:70000"
            .into_target()
            .unwrap_err()
            .contains("not a port"));
        assert!(":80".into_target().unwrap_err().contains("no host"));
        assert!("::1:80".into_target().unwrap_err().contains("IPv6"));
        assert_eq!(
            ("127.0.0.1", 9).into_target(),
            Ok(Target::Addr("127.0.0.1:9".parse().unwrap()))
        );
        assert_eq!(
            (Ipv4Addr::LOCALHOST, 9).into_target(),
            Ok(Target::Addr("127.0.0.1:9".parse().unwrap()))
        );
        assert!(("", 9).into_target().is_err());
    }
}
