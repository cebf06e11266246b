//! The PROXY protocol (HAProxy's, v1 text and v2 binary): the header a proxy sends first on a
//! connection to say which client it speaks for. Parsing is the `ppp` crate's; this module adds
//! the size cap, the allowlist of proxies, reading a header that arrives in pieces, and
//! writing one (for the [`Connector`](crate::Connector)).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

use bytes::{Bytes, BytesMut};
use ppp::{v1, v2, PartialResult};
use tokio::io::AsyncReadExt;

use super::Plain;
use crate::Address;

/// The longest PROXY header a listener reads, in bytes: v1 headers are at most 107 bytes;
/// a v2 header may declare up to 16 + 65,535, but none that proxies send with their usual TLVs
/// comes near 4 KiB. A longer one ends the connection with [`ProxyError::TooLong`].
pub const MAX_PROXY_HEADER: usize = 4096;

/// The longest v1 (text) header the protocol allows, CRLF included.
const V1_MAX: usize = 107;

/// How a v1 header starts.
const V1_PREFIX: &[u8] = b"PROXY ";

/// The fixed part of a v2 header: the signature, version and command, family and protocol,
/// and the length of the rest.
const V2_FIXED: usize = 16;

/// Which PROXY protocol version a header is in.
///
/// # Examples
///
/// ```
/// use switchboard::ProxyVersion;
/// assert_eq!("v2".parse::<ProxyVersion>(), Ok(ProxyVersion::V2));
/// assert_eq!(ProxyVersion::V1.to_string(), "v1");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyVersion {
    /// The text header: `PROXY TCP4 src dst sport dport\r\n`.
    V1,
    /// The binary header, which can carry TLVs.
    V2,
}

impl fmt::Display for ProxyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyVersion::V1 => "v1",
            ProxyVersion::V2 => "v2",
        })
    }
}

impl FromStr for ProxyVersion {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "v1" | "1" => Ok(ProxyVersion::V1),
            "v2" | "2" => Ok(ProxyVersion::V2),
            _ => Err(format!(
                "`{text}` is not a PROXY protocol version (v1 or v2)"
            )),
        }
    }
}

/// Why a PROXY header was refused; the session ends with
/// [`DisconnectReason::Proxy`](crate::DisconnectReason::Proxy).
///
/// # Examples
///
/// ```
/// use switchboard::{ProxyError, ProxyHeader, MAX_PROXY_HEADER};
///
/// let error = ProxyHeader::parse(b"GET / HTTP/1.1\r\n", MAX_PROXY_HEADER).unwrap_err();
/// assert_eq!(error, ProxyError::Missing);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The connection does not start with a PROXY header (neither signature).
    #[error("no PROXY header: the connection starts with other bytes")]
    Missing,
    /// The header has a PROXY signature but is not valid.
    #[error("malformed PROXY header: {reason}")]
    Malformed {
        /// What the parser said.
        reason: String,
    },
    /// The header is, or declares itself, longer than the limit.
    #[error("PROXY header longer than {limit} bytes")]
    TooLong {
        /// The limit in force: 107 bytes for v1, [`MAX_PROXY_HEADER`] for v2.
        limit: usize,
    },
    /// The peer closed the connection before the header was complete.
    #[error("the peer closed the connection after {received} bytes of a PROXY header")]
    Truncated {
        /// Bytes of the header that had arrived.
        received: usize,
    },
    /// The peer is not an allowed proxy: only addresses in the listener's allowlist may send
    /// headers.
    #[error("{peer} may not send PROXY headers (not in the allowlist)")]
    NotAllowed {
        /// The socket's peer.
        peer: Address,
    },
}

/// A parsed PROXY header: the client and the address it connected to, as the proxy saw them.
///
/// # Examples
///
/// ```
/// use switchboard::{ProxyHeader, ProxyVersion, MAX_PROXY_HEADER};
///
/// let client = "192.0.2.7:50000".parse().unwrap();
/// let server = "198.51.100.1:443".parse().unwrap();
/// for version in [ProxyVersion::V1, ProxyVersion::V2] {
///     let mut bytes = ProxyHeader::new(version, client, server).to_bytes();
///     let header_len = bytes.len();
///     bytes.extend_from_slice(b"hello");
///     let (header, used) = ProxyHeader::parse(&bytes, MAX_PROXY_HEADER).unwrap().unwrap();
///     assert_eq!(used, header_len);
///     assert_eq!(header.source(), Some(client));
///     assert_eq!(header.destination(), Some(server));
/// }
/// // Not all there yet: ask for more.
/// assert_eq!(ProxyHeader::parse(b"PROXY TCP4 192.0", MAX_PROXY_HEADER), Ok(None));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyHeader {
    /// The header's version.
    pub version: ProxyVersion,
    /// The client's address and the one it connected to; `None` for a v2 LOCAL command (the
    /// proxy's own health check), a v1 UNKNOWN, or an address family other than IP: the socket's
    /// own addresses then stand.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
    /// v2 type-length-value fields, in order (type, value); always empty for v1.
    pub tlvs: Vec<(u8, Vec<u8>)>,
}

impl ProxyHeader {
    /// A header saying that `source` connected to `destination`.
    ///
    /// # Examples
    ///
    /// ```
    /// use switchboard::{ProxyHeader, ProxyVersion};
    ///
    /// let header = ProxyHeader::new(
    ///     ProxyVersion::V1,
    ///     "127.0.0.1:5000".parse().unwrap(),
    ///     "127.0.0.1:7878".parse().unwrap(),
    /// );
    /// assert_eq!(header.to_bytes(), b"PROXY TCP4 127.0.0.1 127.0.0.1 5000 7878\r\n");
    /// ```
    pub fn new(version: ProxyVersion, source: SocketAddr, destination: SocketAddr) -> Self {
        ProxyHeader {
            version,
            addresses: Some((source, destination)),
            tlvs: Vec::new(),
        }
    }

    /// A header that speaks for no client (v2 LOCAL, v1 UNKNOWN): the receiver keeps the
    /// socket's own addresses.
    ///
    /// # Examples
    ///
    /// ```
    /// use switchboard::{ProxyHeader, ProxyVersion};
    /// assert_eq!(ProxyHeader::local(ProxyVersion::V1).to_bytes(), b"PROXY UNKNOWN\r\n");
    /// ```
    pub fn local(version: ProxyVersion) -> Self {
        ProxyHeader {
            version,
            addresses: None,
            tlvs: Vec::new(),
        }
    }

    /// The client's address, when the header names one.
    pub fn source(&self) -> Option<SocketAddr> {
        self.addresses.map(|(source, _)| source)
    }

    /// The address the client connected to, when the header names one.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.addresses.map(|(_, destination)| destination)
    }

    /// The header on the wire. v1 carries no TLVs (they are left out); v2 carries those in
    /// [`tlvs`](Self::tlvs) as long as the whole fits the 16-bit length.
    ///
    /// # Examples
    ///
    /// ```
    /// use switchboard::{ProxyHeader, ProxyVersion};
    /// let bytes = ProxyHeader::local(ProxyVersion::V2).to_bytes();
    /// assert_eq!(bytes.len(), 16);
    /// assert_eq!(&bytes[..12], b"\r\n\r\n\0\r\nQUIT\n");
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        match self.version {
            ProxyVersion::V1 => {
                let addresses = match self.addresses.map(same_family) {
                    None => v1::Addresses::Unknown,
                    Some(Pair::V4(s, d)) => {
                        v1::Addresses::new_tcp4(*s.ip(), *d.ip(), s.port(), d.port())
                    }
                    Some(Pair::V6(s, d)) => {
                        v1::Addresses::new_tcp6(*s.ip(), *d.ip(), s.port(), d.port())
                    }
                };
                addresses.to_string().into_bytes()
            }
            ProxyVersion::V2 => {
                let (command, addresses) = match self.addresses.map(same_family) {
                    None => (v2::Command::Local, v2::Addresses::Unspecified),
                    Some(Pair::V4(s, d)) => (
                        v2::Command::Proxy,
                        v2::IPv4::new(*s.ip(), *d.ip(), s.port(), d.port()).into(),
                    ),
                    Some(Pair::V6(s, d)) => (
                        v2::Command::Proxy,
                        v2::IPv6::new(*s.ip(), *d.ip(), s.port(), d.port()).into(),
                    ),
                };
                let protocol = match addresses {
                    v2::Addresses::Unspecified => v2::Protocol::Unspecified,
                    _ => v2::Protocol::Stream,
                };
                let build = || -> std::io::Result<Vec<u8>> {
                    let mut builder = v2::Builder::with_addresses(
                        v2::Version::Two | command,
                        protocol,
                        addresses,
                    );
                    for (kind, value) in &self.tlvs {
                        builder = builder.write_tlv(*kind, value)?;
                    }
                    builder.build()
                };
                // Only TLVs past the 16-bit length can fail; the addresses alone always fit.
                build().unwrap_or_else(|_| {
                    ProxyHeader {
                        tlvs: Vec::new(),
                        ..self.clone()
                    }
                    .to_bytes()
                })
            }
        }
    }

    /// Parses the header at the start of `buf`. `Ok(None)` means it may still be a header but
    /// more bytes are needed; `Ok(Some((header, n)))` gives the header and its length, and the
    /// bytes after `n` belong to the application. Headers longer than `limit` (capped at 107
    /// bytes for v1) are refused, as is anything that cannot become a header.
    ///
    /// # Errors
    ///
    /// [`ProxyError::Missing`], [`ProxyError::Malformed`] or [`ProxyError::TooLong`]; more bytes
    /// would not change the answer.
    ///
    /// # Examples
    ///
    /// ```
    /// use switchboard::{ProxyError, ProxyHeader, MAX_PROXY_HEADER};
    ///
    /// let (header, used) = ProxyHeader::parse(b"PROXY UNKNOWN\r\nrest", MAX_PROXY_HEADER)
    ///     .unwrap()
    ///     .unwrap();
    /// assert_eq!((header.addresses, used), (None, 15));
    /// assert!(matches!(
    ///     ProxyHeader::parse(b"PROXY TCP9 x\r\n", MAX_PROXY_HEADER),
    ///     Err(ProxyError::Malformed { .. })
    /// ));
    /// ```
    pub fn parse(buf: &[u8], limit: usize) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
        if buf.is_empty() {
            return Ok(None);
        }
        let starts = |signature: &[u8]| {
            let n = buf.len().min(signature.len());
            buf[..n] == signature[..n]
        };
        if starts(v2::PROTOCOL_PREFIX) {
            parse_v2(buf, limit)
        } else if starts(V1_PREFIX) {
            parse_v1(buf, limit.min(V1_MAX))
        } else {
            Err(ProxyError::Missing)
        }
    }
}

fn malformed(error: impl fmt::Display) -> ProxyError {
    ProxyError::Malformed {
        reason: error.to_string(),
    }
}

fn parse_v1(buf: &[u8], limit: usize) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    // ppp is handed exactly one line, once its CRLF is in: on a cut-off line its guesses
    // (partial or bad) depend on where the cut falls, and on a line followed by more bytes
    // it can read the next byte as part of the line. Without a CRLF in the first `limit`
    // bytes the header is too long.
    let window = &buf[..buf.len().min(limit)];
    let wait = || {
        if window.len() >= limit {
            Err(ProxyError::TooLong { limit })
        } else {
            Ok(None)
        }
    };
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return wait();
    };
    match window.get(cr + 1) {
        None => return wait(),
        Some(b'\n') => {}
        Some(_) => return Err(malformed("a CR not followed by LF")),
    }
    let line = &window[..cr + 2];
    match v1::Header::try_from(line) {
        Ok(header) => {
            let addresses = match header.addresses {
                v1::Addresses::Unknown => None,
                v1::Addresses::Tcp4(a) => Some((
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                )),
                v1::Addresses::Tcp6(a) => Some((
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                )),
            };
            Ok(Some((
                ProxyHeader {
                    version: ProxyVersion::V1,
                    addresses,
                    tlvs: Vec::new(),
                },
                line.len(),
            )))
        }
        Err(v1::BinaryParseError::Parse(v1::ParseError::HeaderTooLong)) => {
            Err(ProxyError::TooLong { limit })
        }
        // The whole line is there: "partial" is as final as any other fault.
        Err(error) => Err(malformed(error)),
    }
}

fn parse_v2(buf: &[u8], limit: usize) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if buf.len() >= V2_FIXED {
        // Checked before waiting for the rest: a declared length over the limit is refused
        // at once, and nothing is buffered for it.
        let declared = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if declared > limit {
            return Err(ProxyError::TooLong { limit });
        }
    }
    match v2::Header::try_from(buf) {
        Ok(header) => {
            let addresses = match (header.command, header.addresses) {
                (v2::Command::Local, _) => None,
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => Some((
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                )),
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => Some((
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                )),
                (v2::Command::Proxy, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
            };
            let mut tlvs = Vec::new();
            for tlv in header.tlvs() {
                let tlv = tlv.map_err(malformed)?;
                tlvs.push((tlv.kind, tlv.value.into_owned()));
            }
            Ok(Some((
                ProxyHeader {
                    version: ProxyVersion::V2,
                    addresses,
                    tlvs,
                },
                header.len(),
            )))
        }
        Err(error) if error.is_incomplete() => Ok(None),
        Err(error) => Err(malformed(error)),
    }
}

/// Two addresses of one family, as both header versions need them.
enum Pair {
    V4(std::net::SocketAddrV4, std::net::SocketAddrV4),
    V6(std::net::SocketAddrV6, std::net::SocketAddrV6),
}

/// Puts both addresses in one family: IPv4 when both are, IPv6 (IPv4-mapped) otherwise.
fn same_family((source, destination): (SocketAddr, SocketAddr)) -> Pair {
    let v6 = |addr: SocketAddr| match addr {
        SocketAddr::V4(a) => std::net::SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0),
        SocketAddr::V6(a) => a,
    };
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => Pair::V4(s, d),
        _ => Pair::V6(v6(source), v6(destination)),
    }
}

/// An IP network: an address and a prefix length (`10.0.0.0/8`, `::1/128`), for the allowlist
/// of proxies.
///
/// # Examples
///
/// ```
/// use switchboard::Cidr;
///
/// let net: Cidr = "10.1.0.0/16".parse().unwrap();
/// assert!(net.contains("10.1.200.3".parse().unwrap()));
/// assert!(!net.contains("10.2.0.1".parse().unwrap()));
/// // A bare address is a network of one.
/// let one: Cidr = "::1".parse().unwrap();
/// assert!(one.contains("::1".parse().unwrap()));
/// // IPv4 peers seen on an IPv6 socket (::ffff:a.b.c.d) match IPv4 networks.
/// assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
/// assert!("10.0.0.0/33".parse::<Cidr>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr` with a `prefix`-bit mask; the host bits are cleared.
    ///
    /// # Errors
    ///
    /// A message when `prefix` is over 32 (IPv4) or 128 (IPv6).
    ///
    /// # Examples
    ///
    /// ```
    /// let net = switchboard::Cidr::new("192.168.7.9".parse().unwrap(), 24).unwrap();
    /// assert_eq!(net.to_string(), "192.168.7.0/24");
    /// ```
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, String> {
        let network = match addr {
            IpAddr::V4(a) if prefix <= 32 => {
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask_v4(prefix)))
            }
            IpAddr::V6(a) if prefix <= 128 => {
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask_v6(prefix)))
            }
            _ => return Err(format!("prefix /{prefix} is too long for {addr}")),
        };
        Ok(Cidr { network, prefix })
    }

    /// Whether `addr` is in this network. An IPv4-mapped IPv6 address counts as its IPv4
    /// address.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, addr.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                u32::from(a) & mask_v4(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                u128::from(a) & mask_v6(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an IP network (like 10.0.0.0/8 or ::1/128)"))?;
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .map_err(|_| format!("`{text}`: `{p}` is not a prefix length"))?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A listener's PROXY protocol settings: who may send headers, and how long one may be.
#[derive(Debug, Clone)]
pub(crate) struct ProxyProtocol {
    pub(crate) allowlist: Vec<Cidr>,
    pub(crate) limit: usize,
}

impl ProxyProtocol {
    /// Whether `peer` may send a header. Unix-socket peers may: the socket file's mode decides
    /// who connects there.
    pub(crate) fn allows(&self, peer: &Address) -> bool {
        match peer.ip() {
            Some(ip) => self.allowlist.iter().any(|net| net.contains(ip)),
            None => true,
        }
    }
}

/// What reading a header can end in besides a header.
#[derive(Debug)]
pub(crate) enum ReadError {
    Proxy(ProxyError),
    Io(std::io::Error),
}

/// Reads a PROXY header off `plain`, however the proxy's segments cut it, never buffering more
/// than `limit` bytes. Returns the header and the bytes that came after it in the same reads
/// (which belong to TLS or the codec). Bounded: each round reads at least one byte or ends,
/// and at most `limit` bytes are read.
///
/// # Cancel safety
///
/// Not cancel safe: dropped mid-way (the handshake timeout), bytes read are lost with the
/// connection, which is what the caller does next.
pub(crate) async fn read_header(
    plain: &mut Plain,
    limit: usize,
) -> Result<(ProxyHeader, Bytes), ReadError> {
    let mut buf = BytesMut::with_capacity(256);
    loop {
        if let Some((header, used)) = ProxyHeader::parse(&buf, limit).map_err(ReadError::Proxy)? {
            let rest = buf.split_off(used).freeze();
            return Ok((header, rest));
        }
        let room = limit - buf.len();
        if room == 0 {
            return Err(ReadError::Proxy(ProxyError::TooLong { limit }));
        }
        buf.reserve(room.min(1024));
        let read = plain
            .read_buf(&mut bytes::BufMut::limit(&mut buf, room))
            .await
            .map_err(ReadError::Io)?;
        if read == 0 {
            return Err(ReadError::Proxy(ProxyError::Truncated {
                received: buf.len(),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> Vec<Vec<u8>> {
        let v4 = (
            "192.0.2.1:1".parse().unwrap(),
            "198.51.100.2:65535".parse().unwrap(),
        );
        let v6 = (
            "[2001:db8::1]:10".parse().unwrap(),
            "[2001:db8::2]:20".parse().unwrap(),
        );
        let mut with_tlv = ProxyHeader::new(ProxyVersion::V2, v4.0, v4.1);
        with_tlv.tlvs = vec![(0x04, vec![1, 2, 3]), (0x01, b"h2".to_vec())];
        vec![
            ProxyHeader::new(ProxyVersion::V1, v4.0, v4.1).to_bytes(),
            ProxyHeader::new(ProxyVersion::V1, v6.0, v6.1).to_bytes(),
            ProxyHeader::local(ProxyVersion::V1).to_bytes(),
            ProxyHeader::new(ProxyVersion::V2, v4.0, v4.1).to_bytes(),
            ProxyHeader::new(ProxyVersion::V2, v6.0, v6.1).to_bytes(),
            ProxyHeader::local(ProxyVersion::V2).to_bytes(),
            with_tlv.to_bytes(),
        ]
    }

    #[test]
    fn a_header_cut_after_any_byte_waits_for_the_rest() {
        for header in headers() {
            for cut in 0..header.len() {
                assert_eq!(
                    ProxyHeader::parse(&header[..cut], MAX_PROXY_HEADER),
                    Ok(None),
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(&header)
                );
            }
            let mut with_rest = header.clone();
            with_rest.extend_from_slice(b"rest");
            let (_, used) = ProxyHeader::parse(&with_rest, MAX_PROXY_HEADER)
                .unwrap()
                .unwrap();
            assert_eq!(used, header.len());
        }
    }

    #[test]
    fn headers_round_trip_with_their_addresses_and_tlvs() {
        for header in headers() {
            let (parsed, _) = ProxyHeader::parse(&header, MAX_PROXY_HEADER)
                .unwrap()
                .unwrap();
            assert_eq!(parsed.to_bytes(), header);
        }
    }

    #[test]
    fn mixed_families_are_sent_as_ipv6() {
        let header = ProxyHeader::new(
            ProxyVersion::V1,
            "192.0.2.1:1".parse().unwrap(),
            "[2001:db8::2]:2".parse().unwrap(),
        );
        assert_eq!(
            header.to_bytes(),
            b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 2\r\n".to_vec()
        );
    }

    #[test]
    fn limits_hold_for_both_versions() {
        let v2 = ProxyHeader::new(
            ProxyVersion::V2,
            "192.0.2.1:1".parse().unwrap(),
            "192.0.2.2:2".parse().unwrap(),
        )
        .to_bytes();
        // 28 bytes: refused under a limit of 27, from the fixed part alone.
        assert_eq!(
            ProxyHeader::parse(&v2[..16], 27),
            Err(ProxyError::TooLong { limit: 27 })
        );
        assert!(ProxyHeader::parse(&v2, 28).unwrap().is_some());
        let v1 = b"PROXY UNKNOWN";
        assert_eq!(
            ProxyHeader::parse(v1, 13),
            Err(ProxyError::TooLong { limit: 13 })
        );
        assert_eq!(ProxyHeader::parse(v1, 14), Ok(None));
    }

    #[test]
    fn cidrs_match_their_networks_only() {
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("255.1.2.3".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        let net: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(net.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!net.contains("2001:db9::1".parse().unwrap()));
        assert_eq!(
            "10.9.8.7/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        for bad in ["", "10.0.0.0/", "10.0.0.0/x", "::/129", "host/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
