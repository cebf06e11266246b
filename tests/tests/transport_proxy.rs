//! PROXY protocol (v1 and v2) on a listener: hand-written headers split over several segments
//! name the client in the session, the registry and the per-IP limit; bytes after the header
//! reach the codec or TLS; junk, malformed, oversized, cut-off or silent headers and senders
//! not on the allowlist end only their own session, with a typed reason; the Connector sends
//! headers a listener accepts.

use std::{
    io::{BufRead, BufReader, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    time::Duration,
};

use switchboard::{
    Cidr, Conn, Connector, DisconnectReason, GetListenerStats, Listener, ListenerHandle,
    ProxyError, ProxyHeader, ProxyVersion, SessionConfig, SessionHandler, SessionInfo, TlsAcceptor,
    TlsConnector, TransportKind,
};
use switchboard_codec::Lines;
use switchboard_tests::{any_port, blocking, pki::Pki, within, Event, Events, Probes};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};

const CLIENT: &str = "203.0.113.7:4242";
const DESTINATION: &str = "198.51.100.1:443";

fn client() -> SocketAddr {
    CLIENT.parse().unwrap()
}

fn destination() -> SocketAddr {
    DESTINATION.parse().unwrap()
}

/// A v1 header, written out by hand.
fn v1_header() -> Vec<u8> {
    b"PROXY TCP4 203.0.113.7 198.51.100.1 4242 443\r\n".to_vec()
}

/// A v2 header, written out by hand: PROXY command, TCP over IPv4, one NOOP TLV.
fn v2_header() -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12 + 7]);
    header.extend_from_slice(&[203, 0, 113, 7, 198, 51, 100, 1]);
    header.extend_from_slice(&4242u16.to_be_bytes());
    header.extend_from_slice(&443u16.to_be_bytes());
    header.extend_from_slice(&[0x04, 0, 4, 1, 2, 3, 4]);
    header
}

fn allow(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|c| c.parse().unwrap()).collect()
}

fn proxy_echo(allowlist: &[&str], config: SessionConfig) -> (ListenerHandle, Events<Lines>) {
    let (probes, events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(2)
        .session_config(config)
        .proxy_protocol(allow(allowlist))
        .serve(Lines::new(), probes.factory())
        .unwrap();
    (server, events)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Writes `data` in three pieces with a short pause between them, as a proxy whose header
/// spans several segments would. (The pauses only spread the writes; nothing waits on them.)
fn write_in_three(stream: &mut TcpStream, data: &[u8]) {
    let a = data.len() / 3;
    let b = 2 * data.len() / 3;
    for (i, piece) in [&data[..a], &data[a..b], &data[b..]]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        stream.write_all(piece).unwrap();
        stream.flush().unwrap();
    }
}

fn read_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("a line in time");
    line.trim_end().to_string()
}

#[actix_rt::test]
async fn headers_split_in_three_segments_name_the_client_in_the_session_and_the_registry() {
    let (server, mut events) = proxy_echo(&["127.0.0.1/32"], SessionConfig::default());
    let addr = server.local_addr();
    for header in [v1_header(), v2_header()] {
        let client_side = blocking("a client behind a proxy", move || {
            let mut stream = connect(addr);
            write_in_three(&mut stream, &header);
            stream.write_all(b"hello\n").unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            assert_eq!(read_line(&mut reader), "hello");
            stream
        })
        .await;
        let (info, _) = events.connected_from(client()).await;
        assert_eq!(info.peer_addr, client());
        assert_eq!(info.local_addr, destination());
        let listed = server.registry().list();
        assert!(
            listed
                .iter()
                .any(|s| s.id == info.id && s.peer_addr == client()),
            "{listed:?}"
        );
        drop(client_side);
        let (reason, _) = events.disconnected(info.id).await;
        assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason}");
    }
}

#[actix_rt::test]
async fn bytes_after_the_header_in_the_same_segment_reach_the_codec() {
    let (server, mut events) = proxy_echo(&["127.0.0.1/32"], SessionConfig::default());
    let addr = server.local_addr();
    for header in [v1_header(), v2_header()] {
        blocking("header and lines in one write", move || {
            let mut stream = connect(addr);
            let mut all = header;
            all.extend_from_slice(b"one\ntwo\n");
            stream.write_all(&all).unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            assert_eq!(read_line(&mut reader), "one");
            assert_eq!(read_line(&mut reader), "two");
        })
        .await;
        let (info, _) = events.connected_from(client()).await;
        events.disconnected(info.id).await;
    }
}

/// Sends `data`, closes the write side if `then_close`, and reads until the server closes.
/// Returns the client's own address (the session's peer when the header is refused).
async fn refused(addr: SocketAddr, data: &'static [u8], then_close: bool) -> SocketAddr {
    blocking("a refused client", move || {
        let mut stream = connect(addr);
        let local = stream.local_addr().unwrap();
        stream.write_all(data).unwrap();
        if then_close {
            stream.shutdown(Shutdown::Write).unwrap();
        }
        let _ = switchboard_tests::read_to_eof(&mut stream, true);
        local
    })
    .await
}

async fn reason_for(events: &mut Events<Lines>, peer: SocketAddr) -> DisconnectReason {
    match events
        .expect(
            &format!("{peer}'s session to end"),
            |e| matches!(e, Event::Disconnected { info, .. } if info.peer_addr == peer),
        )
        .await
    {
        Event::Disconnected { reason, .. } => reason,
        _ => unreachable!(),
    }
}

fn proxy_error(reason: &DisconnectReason) -> &ProxyError {
    match reason {
        DisconnectReason::Proxy(error) => error.as_ref(),
        other => panic!("expected a PROXY error, got {other:?}"),
    }
}

#[actix_rt::test]
async fn junk_malformed_oversized_and_cut_off_headers_end_only_their_session() {
    let (server, mut events) = proxy_echo(&["127.0.0.1/32"], SessionConfig::default());
    let addr = server.local_addr();
    // A good session stays up throughout.
    let (mut good, mut good_reader) = blocking("a good client", move || {
        let mut stream = connect(addr);
        let mut all = v1_header();
        all.extend_from_slice(b"before\n");
        stream.write_all(&all).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        assert_eq!(read_line(&mut reader), "before");
        (stream, reader)
    })
    .await;
    let (good_info, _) = events.connected_from(client()).await;

    let peer = refused(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false).await;
    let reason = reason_for(&mut events, peer).await;
    assert_eq!(proxy_error(&reason), &ProxyError::Missing);
    assert!(reason.to_string().contains("no PROXY header"), "{reason}");

    let peer = refused(addr, b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n", false).await;
    let reason = reason_for(&mut events, peer).await;
    assert!(
        matches!(proxy_error(&reason), ProxyError::Malformed { .. }),
        "{reason:?}"
    );

    // A v2 header that declares 5,000 bytes: refused from its first 16 bytes.
    static BIG_V2: [u8; 16] = [
        b'\r', b'\n', b'\r', b'\n', 0, b'\r', b'\n', b'Q', b'U', b'I', b'T', b'\n', 0x21, 0x11,
        0x13, 0x88,
    ];
    let peer = refused(addr, &BIG_V2, false).await;
    let reason = reason_for(&mut events, peer).await;
    assert_eq!(
        proxy_error(&reason),
        &ProxyError::TooLong {
            limit: switchboard::MAX_PROXY_HEADER
        }
    );

    // A v1 header with no CRLF in its first 107 bytes.
    static LONG_V1: [u8; 200] = {
        let mut line = [b'1'; 200];
        let prefix = b"PROXY TCP4 ";
        let mut i = 0;
        while i < prefix.len() {
            line[i] = prefix[i];
            i += 1;
        }
        line
    };
    let peer = refused(addr, &LONG_V1, false).await;
    let reason = reason_for(&mut events, peer).await;
    assert_eq!(proxy_error(&reason), &ProxyError::TooLong { limit: 107 });

    // Half a header, then the client closes.
    let peer = refused(addr, b"PROXY TCP4 203.0.113.7 ", true).await;
    let reason = reason_for(&mut events, peer).await;
    assert_eq!(
        proxy_error(&reason),
        &ProxyError::Truncated { received: 23 }
    );

    // The good session never noticed.
    let line = blocking("the good client again", move || {
        good.write_all(b"after\n").unwrap();
        let line = read_line(&mut good_reader);
        (line, good)
    })
    .await;
    assert_eq!(line.0, "after");
    events
        .expect_none(
            "the good session to end",
            |e| matches!(e, Event::Disconnected { id, .. } if *id == good_info.id),
        )
        .await;
}

#[actix_rt::test]
async fn a_sender_not_on_the_allowlist_is_refused_with_its_address() {
    let (server, mut events) = proxy_echo(&["10.0.0.0/8", "::1/128"], SessionConfig::default());
    let addr = server.local_addr();
    let header: &'static [u8] = b"PROXY TCP4 203.0.113.7 198.51.100.1 4242 443\r\nhi\n";
    let peer = refused(addr, header, false).await;
    let reason = reason_for(&mut events, peer).await;
    assert_eq!(
        proxy_error(&reason),
        &ProxyError::NotAllowed { peer: peer.into() }
    );
}

#[actix_rt::test]
async fn a_proxy_that_sends_nothing_is_cut_at_the_handshake_timeout() {
    let config = SessionConfig::default().with_handshake_timeout(Duration::from_millis(300));
    let (server, mut events) = proxy_echo(&["127.0.0.1/32"], config);
    let addr = server.local_addr();
    let peer = blocking("a silent proxy", move || {
        let mut stream = connect(addr);
        let local = stream.local_addr().unwrap();
        let _ = switchboard_tests::read_to_eof(&mut stream, true);
        local
    })
    .await;
    let reason = reason_for(&mut events, peer).await;
    assert!(
        matches!(reason, DisconnectReason::HandshakeTimeout),
        "{reason:?}"
    );
}

#[actix_rt::test]
async fn the_per_ip_limit_counts_the_client_the_header_names_not_the_proxy() {
    let (probes, mut events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(2)
        .max_connections_per_ip(Some(1))
        .proxy_protocol(allow(&["127.0.0.1/32"]))
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();
    let open = |header: &'static str| {
        blocking("a client behind the proxy", move || {
            let mut stream = connect(addr);
            stream.write_all(header.as_bytes()).unwrap();
            stream.write_all(b"ping\n").unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            (stream, line)
        })
    };
    // Two clients through one proxy address: both get in.
    let (a, line) = open("PROXY TCP4 203.0.113.7 198.51.100.1 1001 443\r\n").await;
    assert_eq!(line, "ping\n");
    let (_b, line) = open("PROXY TCP4 203.0.113.8 198.51.100.1 1002 443\r\n").await;
    assert_eq!(line, "ping\n");
    let a_peer: SocketAddr = "203.0.113.7:1001".parse().unwrap();
    let (a_info, _) = events.connected_from(a_peer).await;

    // A second connection of the first client is over its limit.
    let (_c, line) = open("PROXY TCP4 203.0.113.7 198.51.100.1 1003 443\r\n").await;
    assert_eq!(line, "", "refused: closed without an answer");
    let c_peer: SocketAddr = "203.0.113.7:1003".parse().unwrap();
    let reason = reason_for(&mut events, c_peer).await;
    assert!(
        matches!(reason, DisconnectReason::PerIpLimit(ip) if ip == c_peer.ip()),
        "{reason:?}"
    );
    let stats = server.address().send(GetListenerStats).await.unwrap();
    assert_eq!(stats.rejected_per_ip, 1);

    // Its slot comes back when its first connection ends.
    drop(a);
    events.disconnected(a_info.id).await;
    let (_d, line) = open("PROXY TCP4 203.0.113.7 198.51.100.1 1004 443\r\n").await;
    assert_eq!(line, "ping\n");
}

/// A client that says one line, keeps the echo, and closes; reports its own session info.
struct Once {
    heard: mpsc::UnboundedSender<Result<(String, SessionInfo), DisconnectReason>>,
    got: Option<String>,
}

impl SessionHandler<Lines> for Once {
    fn connected(&mut self, conn: &mut Conn<'_, Lines, Self>) {
        conn.write("through the proxy").unwrap();
    }
    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        self.got = Some(line);
        conn.disconnect_from_host();
    }
    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        let _ = self.heard.send(match self.got.take() {
            Some(line) => Ok((line, info.clone())),
            None => Err(reason.clone()),
        });
    }
}

async fn say_once(connector: Connector, target: String) -> (String, SessionInfo) {
    let (heard, mut rx) = mpsc::unbounded_channel();
    connector
        .connect(target, Lines::new(), Once { heard, got: None })
        .await
        .expect("the TCP connection");
    within("the client's session to end", rx.recv())
        .await
        .expect("a report")
        .expect("an echo")
}

#[actix_rt::test]
async fn the_connector_sends_v1_and_v2_headers_the_listener_accepts() {
    let (server, mut events) = proxy_echo(&["127.0.0.1/32"], SessionConfig::default());
    let target = server.local_addr().to_string();
    for version in [ProxyVersion::V1, ProxyVersion::V2] {
        // Its own addresses: the server sees the client socket, as if no proxy were there.
        let (line, info) = say_once(Connector::new().proxy_header(version), target.clone()).await;
        assert_eq!(line, "through the proxy");
        let own = info.local_addr.socket_addr().unwrap();
        let (server_info, _) = events.connected_from(own).await;
        assert_eq!(server_info.local_addr, server.local_addr());

        // A header of its choosing.
        let header = ProxyHeader::new(version, client(), destination());
        let (line, _) = say_once(Connector::new().proxy_header_for(header), target.clone()).await;
        assert_eq!(line, "through the proxy");
        let (server_info, _) = events.connected_from(client()).await;
        assert_eq!(server_info.local_addr, destination());
    }
}

/// Relays one connection to `server` as a proxy would, writing the PROXY header and the
/// client's first bytes (a TLS ClientHello) in one write, so they reach the server in one
/// segment.
async fn coalescing_proxy(server: SocketAddr, header: Vec<u8>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix_rt::spawn(async move {
        let (mut downstream, _) = listener.accept().await.unwrap();
        let mut first = vec![0u8; 16 * 1024];
        let n = downstream.read(&mut first).await.unwrap();
        let mut upstream = tokio::net::TcpStream::connect(server).await.unwrap();
        let mut all = header;
        all.extend_from_slice(&first[..n]);
        upstream.write_all(&all).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
    });
    addr
}

#[actix_rt::test]
async fn a_proxy_header_then_tls_and_the_client_hello_in_the_same_segment() {
    let pki = Pki::new();
    let acceptor = TlsAcceptor::from_pem_files(&pki.server_cert, &pki.server_key).unwrap();
    let (probes, mut events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(2)
        .proxy_protocol(allow(&["127.0.0.1/32"]))
        .tls(acceptor)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let tls = || Connector::new().tls(TlsConnector::from_ca_file(&pki.ca).unwrap());

    // The Connector's header, then its TLS handshake.
    let port = server.local_addr().port();
    let (line, info) = say_once(
        tls().proxy_header(ProxyVersion::V2),
        format!("localhost:{port}"),
    )
    .await;
    assert_eq!(line, "through the proxy");
    let (server_info, _) = events
        .connected_from(info.local_addr.socket_addr().unwrap())
        .await;
    assert_eq!(server_info.transport, TransportKind::TlsTcp);

    // Header and ClientHello in one segment: the bytes after the header reach TLS.
    for header in [v1_header(), v2_header()] {
        let relay = coalescing_proxy(server.local_addr(), header).await;
        let (line, _) = say_once(tls(), format!("localhost:{}", relay.port())).await;
        assert_eq!(line, "through the proxy");
        let (server_info, _) = events.connected_from(client()).await;
        assert_eq!(server_info.transport, TransportKind::TlsTcp);
        assert!(server_info.tls.is_some());
    }
}

#[test]
fn an_empty_allowlist_is_a_config_error() {
    let system = actix_rt::System::new();
    system.block_on(async {
        let result = Listener::bind(any_port())
            .proxy_protocol(Vec::new())
            .serve(Lines::new(), || Probes::<Lines>::quiet().0.make());
        assert!(
            matches!(result, Err(switchboard::ListenError::Config(_))),
            "{result:?}"
        );
    });
}
