//! TLS (Qt's `QSslServer` / `QSslSocket`) with certificates made at test time: Switchboard on
//! both ends, `openssl s_client` and Python's `ssl` against a Switchboard server, a Switchboard
//! client against `openssl s_server`; mutual TLS; bad handshakes end only their own session with
//! a typed reason, as do a TCP connection dropped mid-record and a forged record after the
//! handshake, while close_notify is a clean end; resumption; silent clients are cut at the handshake timeout while a good client still
//! gets through at once.

#[path = "cli_support.rs"]
mod support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use switchboard::{
    Conn, Connector, DisconnectReason, Listener, ListenerHandle, SessionConfig, SessionHandler,
    SessionInfo, TlsAcceptor, TlsConnector, TlsResumption, TransportKind,
};
use switchboard_codec::Lines;
use switchboard_tests::{any_port, pki::Pki, require_tool, within, Probes};
use tokio::sync::mpsc;
use tokio_rustls::rustls;

fn tls_echo(
    acceptor: TlsAcceptor,
    config: SessionConfig,
) -> (ListenerHandle, switchboard_tests::Events<Lines>) {
    let (probes, events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(2)
        .session_config(config)
        .tls(acceptor)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    (server, events)
}

/// A client that says one line, keeps the first line it hears, and closes.
struct Once {
    line: &'static str,
    heard: mpsc::UnboundedSender<Result<(String, SessionInfo), DisconnectReason>>,
    got: Option<String>,
}

impl SessionHandler<Lines> for Once {
    fn connected(&mut self, conn: &mut Conn<'_, Lines, Self>) {
        conn.write(self.line).unwrap();
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

async fn say_once(
    connector: Connector,
    target: String,
    line: &'static str,
) -> Result<(String, SessionInfo), DisconnectReason> {
    let (heard, mut rx) = mpsc::unbounded_channel();
    connector
        .connect(
            target,
            Lines::new(),
            Once {
                line,
                heard,
                got: None,
            },
        )
        .await
        .expect("the TCP connection");
    within("the client's session to end", rx.recv())
        .await
        .expect("a report")
}

#[actix_rt::test]
async fn switchboard_client_and_server_talk_tls_and_report_what_they_negotiated() {
    let pki = Pki::new();
    let acceptor = TlsAcceptor::from_pem_files(&pki.server_cert, &pki.server_key)
        .unwrap()
        .with_alpn(&["switchboard/1"]);
    let (server, mut events) = tls_echo(acceptor, SessionConfig::default());
    let connector = Connector::new().tls(
        TlsConnector::from_ca_file(&pki.ca)
            .unwrap()
            .with_alpn(&["switchboard/1"]),
    );
    let target = format!("localhost:{}", server.local_addr().port());
    let (line, client_info) = say_once(connector, target, "over TLS").await.unwrap();
    assert_eq!(line, "over TLS");
    assert_eq!(client_info.transport, TransportKind::TlsTcp);
    let client_tls = client_info.tls.expect("TLS info on the client");
    assert_eq!(client_tls.version, "TLSv1_3");
    assert_eq!(client_tls.alpn.as_deref(), Some("switchboard/1"));
    assert!(client_tls.peer_names.iter().any(|n| n == "localhost"));
    let (server_info, _, _) = events.connected().await;
    assert_eq!(server_info.transport, TransportKind::TlsTcp);
    let server_tls = server_info.tls.expect("TLS info on the server");
    assert_eq!(server_tls.server_name.as_deref(), Some("localhost"));
    assert!(!server_tls.cipher_suite.is_empty());
    assert_eq!(
        server_tls.peer_subject, None,
        "no client certificate asked for"
    );
    let (reason, _) = events.disconnected(server_info.id).await;
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
}

/// Two connections in turn from one client config: whether each resumed, on the client's side
/// and on the server's.
async fn resumed_twice(acceptor: TlsAcceptor, pki: &Pki) -> [(bool, bool); 2] {
    let (server, mut events) = tls_echo(acceptor, SessionConfig::default());
    // One `TlsConnector`, cloned into each connection: they share its session cache.
    let connector = Connector::new().tls(TlsConnector::from_ca_file(&pki.ca).unwrap());
    let target = format!("localhost:{}", server.local_addr().port());
    let mut seen = [(false, false); 2];
    for (i, line) in ["first", "second"].into_iter().enumerate() {
        // The echo is read before closing, so the client has taken the tickets the server
        // sent after the handshake.
        let (echo, client) = say_once(connector.clone(), target.clone(), line)
            .await
            .unwrap();
        assert_eq!(echo, line);
        let (server_info, _, _) = events.connected().await;
        seen[i] = (
            client.tls.expect("client TLS info").resumed,
            server_info.tls.expect("server TLS info").resumed,
        );
        let (reason, _) = events.disconnected(server_info.id).await;
        assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
    }
    seen
}

#[actix_rt::test]
async fn a_second_connection_from_the_same_client_resumes_and_the_first_does_not() {
    let pki = Pki::new();
    let acceptor = TlsAcceptor::from_pem_files(&pki.server_cert, &pki.server_key).unwrap();
    assert_eq!(
        resumed_twice(acceptor, &pki).await,
        [(false, false), (true, true)]
    );
}

#[actix_rt::test]
async fn with_resumption_off_every_handshake_is_a_full_one() {
    let pki = Pki::new();
    let acceptor = TlsAcceptor::from_pem_files(&pki.server_cert, &pki.server_key)
        .unwrap()
        .with_resumption(TlsResumption::Off)
        .unwrap();
    assert_eq!(
        resumed_twice(acceptor, &pki).await,
        [(false, false), (false, false)]
    );
}

#[actix_rt::test]
async fn mutual_tls_requires_a_client_certificate_and_reports_its_identity() {
    let pki = Pki::new();
    let acceptor =
        TlsAcceptor::with_client_auth(&pki.server_cert, &pki.server_key, &pki.ca).unwrap();
    let (server, mut events) = tls_echo(acceptor, SessionConfig::default());
    let target = format!("localhost:{}", server.local_addr().port());

    // No certificate: the server ends that session with a typed TLS error.
    let anonymous = Connector::new().tls(TlsConnector::from_ca_file(&pki.ca).unwrap());
    let result = say_once(anonymous, target.clone(), "let me in").await;
    assert!(result.is_err(), "{result:?}");
    let refused = events
        .expect("the refused session", |e| {
            matches!(e, switchboard_tests::Event::Disconnected { .. })
        })
        .await;
    match refused {
        switchboard_tests::Event::Disconnected { reason, .. } => {
            assert!(matches!(reason, DisconnectReason::Tls(_)), "{reason:?}");
            assert!(reason.to_string().contains("TLS"), "{reason}");
        }
        _ => unreachable!(),
    }

    // The right certificate: in, with its identity in the session's info.
    let known = Connector::new()
        .tls(TlsConnector::with_client_cert(&pki.ca, &pki.client_cert, &pki.client_key).unwrap());
    let (line, _) = say_once(known, target, "it's me").await.unwrap();
    assert_eq!(line, "it's me");
    let (info, _, _) = events.connected().await;
    let tls = info.tls.expect("TLS info");
    assert!(
        tls.peer_subject
            .as_deref()
            .is_some_and(|s| s.contains("switchboard-test-client")),
        "{tls:?}"
    );
}

#[actix_rt::test]
async fn bad_handshakes_end_only_their_session_with_a_typed_reason() {
    let pki = Pki::new();
    let acceptor = TlsAcceptor::from_pem_files(&pki.server_cert, &pki.server_key).unwrap();
    let (server, mut events) = tls_echo(acceptor, SessionConfig::default());
    let addr = server.local_addr();

    // Plaintext garbage at a TLS port.
    let garbage = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    });
    within("the garbage client", garbage).await.unwrap();
    match events
        .expect("a Disconnected", |e| {
            matches!(e, switchboard_tests::Event::Disconnected { .. })
        })
        .await
    {
        switchboard_tests::Event::Disconnected { reason, .. } => {
            assert!(matches!(reason, DisconnectReason::Tls(_)), "{reason:?}")
        }
        _ => unreachable!(),
    }

    // A client that trusts another CA refuses the server: its own session ends typed.
    let stranger = Connector::new().tls(TlsConnector::from_ca_file(&pki.other_ca).unwrap());
    let result = say_once(stranger, format!("localhost:{}", addr.port()), "hi").await;
    match result {
        Err(DisconnectReason::Tls(error)) => {
            assert!(error.to_string().contains("UnknownIssuer"), "{error}")
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }

    // A good client still gets through.
    let good = Connector::new().tls(TlsConnector::from_ca_file(&pki.ca).unwrap());
    let (line, _) = say_once(good, format!("localhost:{}", addr.port()), "still here")
        .await
        .unwrap();
    assert_eq!(line, "still here");
}

/// A blocking rustls client past its handshake with `addr`, and its socket, for tests that
/// put exact bytes (whole records, half records, forged ones) on the wire.
fn handshaken(addr: SocketAddr, ca: &std::path::Path) -> (rustls::ClientConnection, TcpStream) {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).unwrap();
    }
    (tls, tcp)
}

/// The TLS records that carry `data`, as bytes for the wire.
fn records(tls: &mut rustls::ClientConnection, data: &[u8]) -> Vec<u8> {
    tls.writer().write_all(data).unwrap();
    let mut wire = Vec::new();
    while tls.wants_write() {
        tls.write_tls(&mut wire).unwrap();
    }
    wire
}

/// How the server's session for the next connection ended.
async fn next_ending(events: &mut switchboard_tests::Events<Lines>) -> DisconnectReason {
    let (info, _, _) = events.connected().await;
    events.disconnected(info.id).await.0
}

#[actix_rt::test]
async fn a_peer_that_drops_tcp_mid_record_ends_with_a_tls_error_not_peer_closed() {
    let pki = Pki::new();
    let acceptor = TlsAcceptor::from_pem_files(&pki.server_cert, &pki.server_key).unwrap();
    let (server, mut events) = tls_echo(acceptor, SessionConfig::default());
    let (addr, ca) = (server.local_addr(), pki.ca.clone());
    let client = tokio::task::spawn_blocking(move || {
        let (mut tls, mut tcp) = handshaken(addr, &ca);
        let wire = records(&mut tls, b"a line that never ends\n");
        // Half a record, then a plain FIN: no close_notify.
        tcp.write_all(&wire[..wire.len() / 2]).unwrap();
        tcp.shutdown(std::net::Shutdown::Write).unwrap();
        let _ = tcp.read_to_end(&mut Vec::new());
    });
    let reason = next_ending(&mut events).await;
    within("the client", client).await.unwrap();
    match reason {
        DisconnectReason::Tls(error) => {
            assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}")
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[actix_rt::test]
async fn a_peer_that_sends_close_notify_is_peer_closed() {
    let pki = Pki::new();
    let acceptor = TlsAcceptor::from_pem_files(&pki.server_cert, &pki.server_key).unwrap();
    let (server, mut events) = tls_echo(acceptor, SessionConfig::default());
    let (addr, ca) = (server.local_addr(), pki.ca.clone());
    let client = tokio::task::spawn_blocking(move || {
        let (tls, tcp) = handshaken(addr, &ca);
        let mut stream = rustls::StreamOwned::new(tls, tcp);
        stream.write_all(b"bye\n").unwrap();
        stream.conn.send_close_notify();
        stream.flush().unwrap();
        stream.sock.shutdown(std::net::Shutdown::Write).unwrap();
        let mut echoed = Vec::new();
        // The server answers what it read, then sends its own close_notify.
        stream.read_to_end(&mut echoed).map(|_| echoed)
    });
    let reason = next_ending(&mut events).await;
    let echoed = within("the client", client).await.unwrap();
    assert_eq!(echoed.expect("a clean end, with close_notify"), b"bye\n");
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
}

#[actix_rt::test]
async fn a_forged_record_after_the_handshake_ends_only_that_session_with_a_tls_reason() {
    let pki = Pki::new();
    let acceptor = TlsAcceptor::from_pem_files(&pki.server_cert, &pki.server_key).unwrap();
    let (server, mut events) = tls_echo(acceptor, SessionConfig::default());
    // A neighbour, connected first and still talking afterwards.
    let mut bystander = tokio_rustls_client(&pki, server.local_addr()).await;
    let (neighbour, _, _) = events.connected().await;
    let (addr, ca) = (server.local_addr(), pki.ca.clone());
    // The records go out only once the session has started: sent right behind the client's
    // Finished, one read can take both, and the forged record then fails the handshake
    // instead (also a TLS reason, but not the case this test is about).
    let (go, started) = std::sync::mpsc::channel::<()>();
    let forger = tokio::task::spawn_blocking(move || {
        let (mut tls, mut tcp) = handshaken(addr, &ca);
        started
            .recv_timeout(Duration::from_secs(10))
            .expect("the forger's session starts");
        let mut wire = records(&mut tls, b"genuine\n");
        // Application data, the right length, bytes that no key encrypted.
        wire.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x20]);
        wire.extend_from_slice(&[0xa5; 0x20]);
        tcp.write_all(&wire).unwrap();
        let _ = tcp.read_to_end(&mut Vec::new());
    });
    let (forged, _, _) = events.connected().await;
    go.send(()).unwrap();
    let reason = events.disconnected(forged.id).await.0;
    // The handler is dropped after the session left the registry (its `disconnected` runs
    // before), so the listing below no longer holds it.
    events.dropped(forged.id).await;
    within("the forger", forger).await.unwrap();
    match reason {
        DisconnectReason::Tls(error) => {
            assert!(error.to_string().contains("decrypt"), "{error}")
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    bystander.write_all(b"still here\n").await.unwrap();
    bystander.flush().await.unwrap();
    let mut line = String::new();
    within("the neighbour's echo", bystander.read_line(&mut line))
        .await
        .unwrap();
    assert_eq!(line, "still here\n");
    let listed: Vec<_> = server.registry().list().into_iter().map(|i| i.id).collect();
    assert_eq!(listed, vec![neighbour.id]);
}

/// A tokio-rustls client, buffered for line reads.
async fn tokio_rustls_client(
    pki: &Pki,
    addr: SocketAddr,
) -> tokio::io::BufStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = within(
        "the handshake",
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp),
    )
    .await
    .unwrap();
    tokio::io::BufStream::new(tls)
}

#[actix_rt::test]
async fn an_expired_certificate_is_refused_by_the_client() {
    let pki = Pki::new();
    let acceptor = TlsAcceptor::from_pem_files(&pki.expired_cert, &pki.expired_key).unwrap();
    let (server, _events) = tls_echo(acceptor, SessionConfig::default());
    let client = Connector::new().tls(TlsConnector::from_ca_file(&pki.ca).unwrap());
    let result = say_once(
        client,
        format!("localhost:{}", server.local_addr().port()),
        "hi",
    )
    .await;
    match result {
        Err(DisconnectReason::Tls(error)) => {
            assert!(error.to_string().contains("expired"), "{error}")
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

/// 300 clients connect and send nothing: each is closed at the handshake timeout, and a good
/// client meanwhile completes its handshake quickly.
#[actix_rt::test]
async fn silent_clients_are_cut_at_the_handshake_timeout_while_a_good_one_gets_in() {
    const SILENT: usize = 300;
    let pki = Pki::new();
    let acceptor = TlsAcceptor::from_pem_files(&pki.server_cert, &pki.server_key).unwrap();
    // A delay under test: the handshake timeout must fire for every silent client (seen as
    // EOF or a reset on each, awaited below, not slept for).
    let config = SessionConfig::default().with_handshake_timeout(Duration::from_millis(500));
    let (server, _events) = tls_echo(acceptor, config);
    let addr = server.local_addr();
    let silent: Vec<TcpStream> = (0..SILENT)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let started = Instant::now();
    let good = Connector::new().tls(TlsConnector::from_ca_file(&pki.ca).unwrap());
    let (line, _) = say_once(good, format!("localhost:{}", addr.port()), "fast")
        .await
        .unwrap();
    let good_took = started.elapsed();
    assert_eq!(line, "fast");
    eprintln!("a good handshake and echo among {SILENT} silent clients took {good_took:?}");
    // Each silent one is closed by the server at its timeout: reads see EOF.
    let closed = tokio::task::spawn_blocking(move || {
        for mut stream in silent {
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut buf = [0u8; 16];
            match stream.read(&mut buf) {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!("a silent client was not closed: {other:?}"),
            }
        }
        started.elapsed()
    });
    let all_closed = within("the silent clients closed", closed).await.unwrap();
    // A loaded machine can only make `all_closed` longer, so the lower bound holds anywhere.
    assert!(all_closed >= Duration::from_millis(450), "{all_closed:?}");
    assert!(all_closed < Duration::from_secs(5), "{all_closed:?}");
    assert!(
        good_took < Duration::from_millis(500),
        "the good client waited behind silent ones: {good_took:?}"
    );
    within("the registry to empty", server.registry().wait_for_count(0)).await;
}

fn serve_tls(pki: &Pki, extra: &[&str]) -> (support::Server, SocketAddr) {
    let cert = pki.server_cert.to_str().unwrap().to_string();
    let key = pki.server_key.to_str().unwrap().to_string();
    let mut args = vec![
        "--mode",
        "echo",
        "--tls-cert",
        cert.as_str(),
        "--tls-key",
        key.as_str(),
    ];
    args.extend_from_slice(extra);
    let mut all = vec!["serve", "--port", "0"];
    all.extend_from_slice(&args);
    let proc = support::Proc::spawn(&all);
    let line = proc.stdout_line();
    let addr: SocketAddr = line
        .strip_prefix("listening on tls://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("first stdout line is `{line}`"));
    (support::Server { proc, addr }, addr)
}

#[test]
fn openssl_s_client_talks_to_the_command_over_tls() {
    require_tool("openssl", "openssl");
    let pki = Pki::new();
    let (server, addr) = serve_tls(&pki, &[]);
    let mut client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
            "-CAfile",
            pki.ca.to_str().unwrap(),
            "-verify_return_error",
            "-quiet",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    client
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"hello from openssl\n")
        .unwrap();
    let mut reader = BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), "hello from openssl");
    let _ = client.kill();
    let _ = client.wait();
    assert!(server.terminate().status.success());
}

#[test]
fn python_ssl_talks_to_the_command_and_closes_with_close_notify() {
    let pki = Pki::new();
    let (server, addr) = serve_tls(&pki, &["--alpn", "x-test"]);
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
ctx.set_alpn_protocols(["x-test"])
raw = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s = ctx.wrap_socket(raw, server_hostname="localhost")
s.sendall(b"hello from python\n")
got = b""
while not got.endswith(b"\n"):
    got += s.recv(100)
version, alpn = s.version(), s.selected_alpn_protocol()
s.unwrap()
print(version, alpn, got.decode().strip())
"#;
    let output = python_tls_client(script, addr, &pki);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "TLSv1.3 x-test hello from python",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(server.terminate().status.success());
}

#[test]
fn python_ssl_gets_two_mebibytes_back_byte_for_byte_from_the_raw_echo() {
    // The raw echo hands each chunk back uncopied (`Conn::write_bytes`): over TLS, records of
    // held and encoded pieces. A patterned payload in pieces of 1 byte to 64 KiB, the echo
    // drained after each (one thread: an `SSLSocket` must not be read and written at once).
    require_tool("python3", "python3");
    let pki = Pki::new();
    let (server, addr) = serve_tls(&pki, &["--codec", "raw"]);
    let script = r#"
import hashlib, select, socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
raw = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s = ctx.wrap_socket(raw, server_hostname="localhost")
total = 2 * 1024 * 1024
payload = bytes(i % 251 for i in range(total))
view, got, at, step = memoryview(payload), bytearray(), 0, 1
def drain():
    global got
    while s.pending() or select.select([s], [], [], 0)[0]:
        d = s.recv(65536)
        if not d: sys.exit("eof after %d bytes" % len(got))
        got += d
while at < total:
    # Pieces from 1 byte to 64 KiB, so the server reads small and large chunks.
    n = min(step, total - at)
    s.sendall(view[at:at + n])
    at += n
    step = step * 3 % 65537 or 1
    drain()
while len(got) < total:
    d = s.recv(65536)
    if not d: sys.exit("eof after %d bytes" % len(got))
    got += d
s.unwrap()
print(len(got), hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest())
"#;
    let output = python_tls_client(script, addr, &pki);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "2097152 True",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(server.terminate().status.success());
}

/// Runs a Python `ssl` client script with the server's port and the CA file as its arguments.
fn python_tls_client(script: &str, addr: SocketAddr, pki: &Pki) -> std::process::Output {
    Command::new("python3")
        .args([
            "-c",
            script,
            &addr.port().to_string(),
            pki.ca.to_str().unwrap(),
        ])
        .output()
        .expect("python3 runs")
}

/// Python's `ssl` connects twice, the second time offering the first session: it resumes,
/// unless `serve` was told `--tls-no-resumption`.
fn python_resumes(extra: &[&str]) -> String {
    let pki = Pki::new();
    let (server, addr) = serve_tls(&pki, extra);
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
session, reused = None, []
for line in (b"one\n", b"two\n"):
    raw = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    s.sendall(line)
    got = b""
    while not got.endswith(b"\n"):
        got += s.recv(100)
    # TLS 1.3 tickets come after the handshake: read before taking the session.
    session = s.session
    reused.append(str(s.session_reused))
    s.unwrap()
    s.close()
print(" ".join(reused))
"#;
    let output = python_tls_client(script, addr, &pki);
    assert!(server.terminate().status.success());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn python_ssl_resumes_a_session_with_the_command_unless_resumption_is_off() {
    assert_eq!(python_resumes(&[]), "False True");
    assert_eq!(python_resumes(&["--tls-no-resumption"]), "False False");
}

#[test]
fn the_command_connects_to_openssl_s_server_over_tls() {
    require_tool("openssl", "openssl");
    let pki = Pki::new();
    let port = std::net::TcpListener::bind(any_port())
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // `-rev` answers each line reversed.
    let mut s_server = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            pki.server_cert.to_str().unwrap(),
            "-key",
            pki.server_key.to_str().unwrap(),
            "-rev",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    // It prints `ACCEPT` once it listens.
    let mut server_out = BufReader::new(s_server.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim_end() != "ACCEPT" {
        line.clear();
        let n = server_out.read_line(&mut line).unwrap();
        assert!(n > 0, "openssl s_server exited before listening");
    }
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in server_out.lines() {});
    let mut client = support::Proc::spawn(&[
        "connect",
        &format!("tls://localhost:{port}"),
        "--ca",
        pki.ca.to_str().unwrap(),
        "--grace",
        "1",
    ]);
    client.write_stdin("hello");
    assert_eq!(client.stdout_line(), "olleh");
    client.close_stdin();
    let finished = client.wait(Duration::from_secs(20));
    let _ = s_server.kill();
    let _ = s_server.wait();
    assert!(finished.status.success(), "{}", finished.stderr_text());
}

/// The handshake counters behind `switchboard_handshakes_total{outcome}`, the duration
/// histogram and the cap waits: plaintext garbage ends `tls`, a good client `ok`, then on one
/// worker (cap 256) 260 silent clients, of which four wait for a permit, all end `timeout`.
#[actix_rt::test]
async fn handshake_metrics_count_outcomes_durations_and_cap_waits() {
    const SILENT: usize = 260;
    let pki = Pki::new();
    let acceptor = TlsAcceptor::from_pem_files(&pki.server_cert, &pki.server_key).unwrap();
    let (probes, mut events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(1)
        // A delay under test: every silent client must end `timeout` (awaited through the
        // sessions' Disconnected events, not slept for) and land in the (1 s, 10 s] bucket.
        .session_config(
            SessionConfig::default().with_handshake_timeout(Duration::from_millis(1500)),
        )
        .tls(acceptor)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();
    // Garbage and a good client first, while permits are free; then the silent flood.
    let garbage = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    });
    within("the garbage client", garbage).await.unwrap();
    let good = Connector::new().tls(TlsConnector::from_ca_file(&pki.ca).unwrap());
    let (line, _) = say_once(good, format!("localhost:{}", addr.port()), "counted")
        .await
        .unwrap();
    assert_eq!(line, "counted");
    let silent = tokio::task::spawn_blocking(move || {
        (0..SILENT)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect::<Vec<_>>()
    });
    let silent = within("the silent clients connected", silent)
        .await
        .unwrap();
    // Each session reports its end, failed handshakes included: after SILENT + 2 ends every
    // handshake has been counted (the count comes before the session starts).
    for _ in 0..SILENT + 2 {
        events
            .expect("a Disconnected", |e| {
                matches!(e, switchboard_tests::Event::Disconnected { .. })
            })
            .await;
    }
    drop(silent);
    let stats = server.handshake_stats();
    let outcome = |name: &str| {
        stats
            .outcomes
            .iter()
            .find(|(label, _)| *label == name)
            .map(|(_, n)| *n)
            .unwrap()
    };
    assert_eq!(outcome("timeout"), SILENT as u64, "{stats:?}");
    assert_eq!(outcome("tls"), 1, "{stats:?}");
    assert_eq!(outcome("ok"), 1, "{stats:?}");
    assert_eq!(
        stats.duration_buckets.iter().sum::<u64>(),
        SILENT as u64 + 2,
        "{stats:?}"
    );
    // The timeouts took 1.5 s (the four that waited for a permit too: the wait counts), all
    // in the (1 s, 10 s] bucket.
    let slow_bucket = switchboard::HANDSHAKE_BUCKETS
        .iter()
        .position(|&b| b == 10.0)
        .unwrap();
    assert_eq!(
        stats.duration_buckets[slow_bucket], SILENT as u64,
        "{stats:?}"
    );
    // 256 permits on the one worker: the last four silent ones found the cap reached.
    assert_eq!(stats.waited_for_cap, (SILENT - 256) as u64, "{stats:?}");

    // The admin socket's `info` shows the same figures.
    let admin = switchboard::admin::Admin::new(&server);
    let switchboard::admin::Reply::Json(info) = admin.execute("info --json").await else {
        panic!("info --json gives JSON")
    };
    let handshakes = &info["listeners"][0]["handshakes"];
    assert_eq!(handshakes["timeout"], SILENT as u64, "{info}");
    assert_eq!(handshakes["ok"], 1, "{info}");
    assert_eq!(
        handshakes["waited_for_cap"],
        (SILENT - 256) as u64,
        "{info}"
    );

    let metrics = switchboard::metrics::Metrics::new();
    metrics.watch(&server);
    let text = metrics.render().await;
    assert!(
        text.contains(&format!(
            "switchboard_handshakes_total{{listener=\"{addr}\",outcome=\"timeout\"}} {SILENT}"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "switchboard_handshake_duration_seconds_count{{listener=\"{addr}\"}} {}",
            SILENT + 2
        )),
        "{text}"
    );
}
