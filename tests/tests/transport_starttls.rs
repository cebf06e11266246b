//! STARTTLS (Qt's `startServerEncryption` / `startClientEncryption`) in the middle of a line
//! protocol: Python's `ssl` as the client over TCP and over a Unix socket (with its ClientHello
//! in the same segment as the command), a Switchboard client through `Conn` and through the
//! `StartTls` message, and bad or silent handshakes ending only their own session.

#[path = "cli_support.rs"]
mod support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::Command,
    time::Duration,
};

use switchboard::{
    Conn, Connector, DisconnectReason, Forward, GetInfo, Listener, ListenerHandle, SessionConfig,
    SessionError, SessionEvent, SessionHandler, SessionInfo, StartTls, TlsAcceptor, TlsConnector,
    TlsInfo, TransportKind, Write as WriteLine,
};
use switchboard_codec::Lines;
use switchboard_tests::{any_port, inbox, pki::Pki, require_tool, within};
use tokio::sync::mpsc;

/// What the server's sessions report.
#[derive(Debug)]
enum Seen {
    Frame(String),
    Encrypted(TlsInfo),
    Ended(DisconnectReason, Box<SessionInfo>),
}

/// A line protocol: `STARTTLS` answers `OK` in plaintext, switches, and then says `after`
/// (written after the switch was asked for, so it must arrive encrypted); any other line comes
/// back prefixed with the transport it arrived over.
struct StartTlsServer {
    tls: TlsAcceptor,
    seen: mpsc::UnboundedSender<Seen>,
}

impl SessionHandler<Lines> for StartTlsServer {
    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        let _ = self.seen.send(Seen::Frame(line.clone()));
        if line == "STARTTLS" {
            // Over TCP "OK" is held by reference (`write_bytes` into an empty buffer), over a
            // Unix socket encoded: the switch must send exactly it in plaintext either way.
            if conn.transport() == TransportKind::Tcp {
                conn.write_bytes(bytes::Bytes::from_static(b"OK\n"))
                    .unwrap();
            } else {
                conn.write("OK").unwrap();
            }
            match conn.start_server_encryption(&self.tls) {
                Ok(()) => conn.write("after").unwrap(),
                Err(error) => conn.write(format!("error: {error}")).unwrap(),
            }
        } else {
            let scheme = conn.transport().scheme();
            conn.write(format!("{scheme} {line}")).unwrap();
        }
    }

    fn encrypted(&mut self, tls: &TlsInfo, _: &mut Conn<'_, Lines, Self>) {
        let _ = self.seen.send(Seen::Encrypted(tls.clone()));
    }

    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        let _ = self
            .seen
            .send(Seen::Ended(reason.clone(), Box::new(info.clone())));
    }
}

fn serve(
    pki: &Pki,
    target: impl switchboard::IntoTarget,
    config: SessionConfig,
) -> (ListenerHandle, mpsc::UnboundedReceiver<Seen>) {
    let tls = TlsAcceptor::from_pem_files(&pki.server_cert, &pki.server_key).unwrap();
    let (seen, rx) = mpsc::unbounded_channel();
    let server = Listener::bind(target)
        .workers(2)
        .session_config(config)
        .serve(Lines::new(), move || StartTlsServer {
            tls: tls.clone(),
            seen: seen.clone(),
        })
        .unwrap();
    (server, rx)
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    within("a server-side event", rx.recv())
        .await
        .expect("the server is running")
}

/// Python's `ssl` over a memory BIO, so its ClientHello goes out in the same `send` as the
/// `STARTTLS` line: the server must hand those bytes to TLS, not decode them as a line.
const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys
where, ca = sys.argv[1], sys.argv[2]
if where.startswith("unix:"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(where[5:])
else:
    s = socket.create_connection(("127.0.0.1", int(where)), timeout=10)
plain = b""
def plain_line():
    global plain
    while b"\n" not in plain:
        d = s.recv(4096)
        if not d: sys.exit("eof in plaintext")
        plain += d
    l, plain = plain.split(b"\n", 1)
    return l.decode()
s.sendall(b"hello\n")
out = [plain_line()]
inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ssl.create_default_context(cafile=ca).wrap_bio(inc, outg, server_hostname="localhost")
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
s.sendall(b"STARTTLS\n" + outg.read())
out.append(plain_line())
# Whatever follows "OK" on the wire is TLS.
inc.write(plain)
while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        pending = outg.read()
        if pending: s.sendall(pending)
        d = s.recv(65536)
        if not d: sys.exit("eof in the handshake")
        inc.write(d)
tls.write(b"secret\n")
s.sendall(outg.read())
buf = b""
def tls_line():
    global buf
    while b"\n" not in buf:
        try:
            buf += tls.read(4096)
        except ssl.SSLWantReadError:
            pending = outg.read()
            if pending: s.sendall(pending)
            d = s.recv(65536)
            if not d: sys.exit("eof over TLS")
            inc.write(d)
    l, buf = buf.split(b"\n", 1)
    return l.decode()
out.append(tls_line())
out.append(tls_line())
out.append(tls.version())
# A clean end: close_notify, then the TCP FIN.
try:
    tls.unwrap()
except ssl.SSLWantReadError:
    pass
s.sendall(outg.read())
s.shutdown(socket.SHUT_WR)
while s.recv(65536):
    pass
print("|".join(out))
"#;

async fn python_upgrade(where_: String, pki: &Pki) -> String {
    require_tool("python3", "python3");
    let ca = pki.ca.clone();
    let output = within(
        "the Python client",
        tokio::task::spawn_blocking(move || {
            Command::new("python3")
                .args(["-c", PYTHON_CLIENT, &where_, ca.to_str().unwrap()])
                .output()
                .expect("python3 runs")
        }),
    )
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "the Python client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The frames, the upgrade and the end of one server session, in order.
async fn server_story(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
) -> (Vec<String>, TlsInfo, SessionInfo) {
    let mut frames = Vec::new();
    let mut tls = None;
    loop {
        match next_seen(rx).await {
            Seen::Frame(line) => frames.push(line),
            Seen::Encrypted(info) => {
                assert!(tls.is_none(), "encrypted twice");
                tls = Some(info);
            }
            Seen::Ended(reason, info) => {
                assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
                return (frames, tls.expect("the session was encrypted"), *info);
            }
        }
    }
}

#[actix_rt::test]
async fn python_upgrades_a_tcp_line_protocol_with_its_hello_right_behind_the_command() {
    let pki = Pki::new();
    let (server, mut seen) = serve(&pki, any_port(), SessionConfig::default());
    let heard = python_upgrade(server.local_addr().port().to_string(), &pki).await;
    // Plaintext before, "OK" as the last plaintext line, "after" encrypted although the
    // handler wrote it in the same callback, then the protocol goes on over TLS.
    assert_eq!(heard, "tcp hello|OK|after|tls secret|TLSv1.3");
    let (frames, tls, info) = server_story(&mut seen).await;
    // The ClientHello that came with "STARTTLS\n" was never decoded as a line.
    assert_eq!(frames, ["hello", "STARTTLS", "secret"]);
    assert_eq!(tls.version, "TLSv1_3");
    assert_eq!(tls.server_name.as_deref(), Some("localhost"));
    assert_eq!(info.transport, TransportKind::TlsTcp);
    assert_eq!(info.tls.as_ref(), Some(&tls));
}

#[actix_rt::test]
async fn python_upgrades_a_unix_socket_session() {
    let pki = Pki::new();
    let dir = support::TempDir::new("starttls");
    let path = dir.path().join("s.sock");
    let (_server, mut seen) = serve(&pki, path.as_path(), SessionConfig::default());
    let heard = python_upgrade(format!("unix:{}", path.display()), &pki).await;
    assert_eq!(heard, "unix hello|OK|after|tls+unix secret|TLSv1.3");
    let (frames, _, info) = server_story(&mut seen).await;
    assert_eq!(frames, ["hello", "STARTTLS", "secret"]);
    assert_eq!(info.transport, TransportKind::TlsUnix);
}

/// A client that upgrades through `Conn` when the server says `OK`.
struct UpgradingClient {
    tls: TlsConnector,
    heard: mpsc::UnboundedSender<String>,
}

impl SessionHandler<Lines> for UpgradingClient {
    fn connected(&mut self, conn: &mut Conn<'_, Lines, Self>) {
        conn.write("before").unwrap();
        conn.write("STARTTLS").unwrap();
    }
    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        if line == "OK" {
            conn.start_client_encryption(&self.tls, "localhost")
                .unwrap();
            // Asked again while the first is under way: refused, typed.
            assert!(matches!(
                conn.start_client_encryption(&self.tls, "localhost"),
                Err(SessionError::AlreadyEncrypted)
            ));
            assert!(conn.is_encrypting());
            // Written after the call: goes out encrypted, once the handshake is done.
            conn.write("secret").unwrap();
        }
        if line.starts_with("tls secret") {
            conn.disconnect_from_host();
        }
        let _ = self.heard.send(line);
    }
    fn encrypted(&mut self, tls: &TlsInfo, conn: &mut Conn<'_, Lines, Self>) {
        assert!(!conn.is_encrypting());
        assert_eq!(conn.transport(), TransportKind::TlsTcp);
        let _ = self.heard.send(format!("encrypted {}", tls.version));
    }
}

#[actix_rt::test]
async fn a_switchboard_client_upgrades_through_conn() {
    let pki = Pki::new();
    let (server, mut seen) = serve(&pki, any_port(), SessionConfig::default());
    let (heard, mut lines) = mpsc::unbounded_channel();
    Connector::new()
        .connect(
            server.local_addr(),
            Lines::new(),
            UpgradingClient {
                tls: TlsConnector::from_ca_file(&pki.ca).unwrap(),
                heard,
            },
        )
        .await
        .unwrap();
    let mut story = Vec::new();
    while story.last().map(String::as_str) != Some("tls secret") {
        story.push(within("the client's lines", lines.recv()).await.unwrap());
    }
    assert_eq!(
        story,
        [
            "tcp before",
            "OK",
            "encrypted TLSv1_3",
            "after",
            "tls secret"
        ]
    );
    let (frames, _, info) = server_story(&mut seen).await;
    assert_eq!(frames, ["before", "STARTTLS", "secret"]);
    assert_eq!(info.transport, TransportKind::TlsTcp);
}

#[actix_rt::test]
async fn the_start_tls_message_resolves_with_what_was_negotiated() {
    let pki = Pki::new();
    let (server, mut seen) = serve(&pki, any_port(), SessionConfig::default());
    let (recipient, mut events) = inbox::<SessionEvent<Lines>>();
    Connector::new()
        .connect(server.local_addr(), Lines::new(), Forward::new(recipient))
        .await
        .unwrap();
    let session = match events.next("Connected").await {
        SessionEvent::Connected { session, .. } => session,
        other => panic!("expected Connected, got {other:?}"),
    };
    let mut next_line = async || loop {
        if let SessionEvent::ReadyRead { frame, .. } = events.next("a line").await {
            return frame;
        }
    };
    session.send(WriteLine("STARTTLS")).await.unwrap().unwrap();
    assert_eq!(next_line().await, "OK");
    let connector = TlsConnector::from_ca_file(&pki.ca).unwrap();
    let tls = within(
        "the upgrade",
        session.send(StartTls::client(connector.clone(), "localhost")),
    )
    .await
    .unwrap()
    .expect("the handshake succeeds");
    assert_eq!(tls.version, "TLSv1_3");
    assert!(tls.peer_names.iter().any(|n| n == "localhost"), "{tls:?}");
    assert_eq!(next_line().await, "after");
    session.send(WriteLine("secret")).await.unwrap().unwrap();
    assert_eq!(next_line().await, "tls secret");
    // Once is enough.
    let again = session
        .send(StartTls::client(connector, "localhost"))
        .await
        .unwrap();
    assert!(
        matches!(again, Err(SessionError::AlreadyEncrypted)),
        "{again:?}"
    );
    let info = session.send(GetInfo).await.unwrap();
    assert_eq!(info.transport, TransportKind::TlsTcp);
    assert_eq!(info.tls.as_ref(), Some(&tls));
    // The server's registry lists the session as TLS too.
    let listed = server.registry().list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].transport, TransportKind::TlsTcp);
    session.send(switchboard::DisconnectFromHost).await.unwrap();
    let (frames, _, _) = server_story(&mut seen).await;
    assert_eq!(frames, ["STARTTLS", "secret"]);
}

/// Sends `STARTTLS`, reads the `OK`, then does `then` to the raw socket; returns how the
/// socket ended.
fn raw_starttls(port: u16, then: &'static [u8]) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(b"STARTTLS\n").unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut ok = String::new();
        reader.read_line(&mut ok).unwrap();
        assert_eq!(ok, "OK\n");
        stream.write_all(then).unwrap();
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
        rest
    })
}

#[actix_rt::test]
async fn a_bad_or_silent_starttls_handshake_ends_only_its_session_typed() {
    let pki = Pki::new();
    let config = SessionConfig::default().with_handshake_timeout(Duration::from_millis(300));
    let (server, mut seen) = serve(&pki, any_port(), config);
    let port = server.local_addr().port();

    // A plaintext line where the ClientHello should be.
    let garbage = raw_starttls(port, b"this is not TLS\n");
    let reason = loop {
        if let Seen::Ended(reason, _) = next_seen(&mut seen).await {
            break reason;
        }
    };
    assert!(matches!(reason, DisconnectReason::Tls(_)), "{reason:?}");
    let rest = garbage.join().unwrap();
    // No plaintext "after": it was waiting for the TLS stream that never came.
    assert!(
        !String::from_utf8_lossy(&rest).contains("after"),
        "{rest:?}"
    );

    // Silence after the command: cut at the handshake timeout.
    let silent = raw_starttls(port, b"");
    let reason = loop {
        if let Seen::Ended(reason, _) = next_seen(&mut seen).await {
            break reason;
        }
    };
    assert!(
        matches!(reason, DisconnectReason::HandshakeTimeout),
        "{reason:?}"
    );
    silent.join().unwrap();

    // Other sessions never noticed.
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    (&stream).write_all(b"still fine\n").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "tcp still fine\n");
}
