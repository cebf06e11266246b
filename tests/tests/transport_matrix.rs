//! The key behaviours, over each transport: plaintext TCP, TLS (a tokio-rustls client, not
//! Switchboard's) and Unix sockets. Echo byte-exact, backpressure both ways, idle and frame
//! timeouts, a graceful drain mid-echo, and the registry's count after churn: what a session
//! promises must not depend on what it runs over.

#[path = "cli_support.rs"]
mod support;

use std::{path::PathBuf, pin::Pin, sync::Arc, task::Poll, time::Duration};

use actix::Addr;
use bytes::Bytes;
use switchboard::{
    Conn, DisconnectReason, GetListenerStats, Listener, ListenerBuilder, ListenerHandle,
    ResumeReading, Session, SessionConfig, SessionHandler, SessionInfo, TlsAcceptor, TransportKind,
};
use switchboard_codec::{Lines, Raw};
use switchboard_tests::{any_port, assert_pattern, pattern, pki::Pki, within};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::mpsc,
};
use tokio_rustls::rustls;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Tcp,
    Tls,
    Unix,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Client = Box<dyn Io>;

/// One transport's server side and a client for it.
struct Bed {
    over: Over,
    pki: Pki,
    dir: support::TempDir,
    connector: tokio_rustls::TlsConnector,
}

/// Where a client connects.
#[derive(Clone)]
enum Place {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl Bed {
    fn new(over: Over) -> Bed {
        let pki = Pki::new();
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::{pem::PemObject, CertificateDer};
        for cert in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Bed {
            over,
            pki,
            dir: support::TempDir::new("matrix"),
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    /// A listener over this transport; `name` tells apart several in one test.
    fn listener(&self, name: &str) -> ListenerBuilder {
        match self.over {
            Over::Tcp => Listener::bind(any_port()),
            Over::Tls => Listener::bind(any_port()).tls(
                TlsAcceptor::from_pem_files(&self.pki.server_cert, &self.pki.server_key).unwrap(),
            ),
            Over::Unix => Listener::bind(self.dir.path().join(name).as_path()),
        }
    }

    /// As [`listener`](Self::listener), with sockets whose kernel send buffer is small (an
    /// accepted TCP socket inherits it from the listening one), so a burst fills the socket
    /// and waits in the layers above it.
    fn small_send_buffer_listener(&self, name: &str) -> ListenerBuilder {
        if self.over == Over::Unix {
            return self.listener(name);
        }
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_send_buffer_size(4 * 1024).unwrap();
        socket.bind(&any_port().into()).unwrap();
        socket.listen(64).unwrap();
        let builder = Listener::from_std(socket.into());
        match self.over {
            Over::Tls => builder.tls(
                TlsAcceptor::from_pem_files(&self.pki.server_cert, &self.pki.server_key).unwrap(),
            ),
            _ => builder,
        }
    }

    fn place(&self, server: &ListenerHandle, name: &str) -> Place {
        match self.over {
            Over::Unix => Place::Unix(self.dir.path().join(name)),
            _ => Place::Tcp(server.local_addr()),
        }
    }

    async fn connect(&self, place: &Place) -> Client {
        connect(self.over, self.connector.clone(), place.clone()).await
    }

    /// A client whose socket takes little before the sender must wait (a 4 KiB receive
    /// buffer, set before connecting so TCP's window follows it).
    async fn connect_small(&self, place: &Place) -> Client {
        const RCVBUF: u32 = 4 * 1024;
        match (self.over, place) {
            (Over::Unix, Place::Unix(path)) => {
                let stream = tokio::net::UnixStream::connect(path).await.unwrap();
                socket2::SockRef::from(&stream)
                    .set_recv_buffer_size(RCVBUF as usize)
                    .unwrap();
                Box::new(stream)
            }
            (over, Place::Tcp(addr)) => {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.set_recv_buffer_size(RCVBUF).unwrap();
                let tcp = socket.connect(*addr).await.unwrap();
                if over == Over::Tcp {
                    return Box::new(tcp);
                }
                let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                Box::new(
                    within("the TLS handshake", self.connector.connect(name, tcp))
                        .await
                        .unwrap(),
                )
            }
            (over, _) => unreachable!("no place for {over:?}"),
        }
    }

    fn kind(&self) -> TransportKind {
        match self.over {
            Over::Tcp => TransportKind::Tcp,
            Over::Tls => TransportKind::TlsTcp,
            Over::Unix => TransportKind::Unix,
        }
    }
}

async fn connect(over: Over, connector: tokio_rustls::TlsConnector, place: Place) -> Client {
    match (over, place) {
        (Over::Unix, Place::Unix(path)) => {
            Box::new(tokio::net::UnixStream::connect(path).await.unwrap())
        }
        (Over::Tcp, Place::Tcp(addr)) => {
            Box::new(tokio::net::TcpStream::connect(addr).await.unwrap())
        }
        (Over::Tls, Place::Tcp(addr)) => {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            Box::new(
                within("the TLS handshake", connector.connect(name, tcp))
                    .await
                    .unwrap(),
            )
        }
        (over, _) => unreachable!("no place for {over:?}"),
    }
}

/// Reads until EOF (a TLS EOF must come with close_notify: tokio-rustls errs otherwise).
async fn read_all(client: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    within("the server's EOF", client.read_to_end(&mut got))
        .await
        .expect("a clean EOF");
    got
}

/// What the servers' sessions report.
#[derive(Debug)]
enum Seen {
    Started(Addr<Session<Raw, Recorder>>),
    Full(usize),
    Drained,
    Read(usize),
    Ended(DisconnectReason, Box<SessionInfo>),
}

/// A raw handler for every scenario: echoes, or pumps `pump` bytes at a peer that may not
/// read, or pauses on start; and reports what happens.
struct Recorder {
    seen: mpsc::UnboundedSender<Seen>,
    echo: bool,
    pause: bool,
    pump: usize,
    pumped: usize,
    /// After the pump, stay open and silent instead of closing.
    hold: bool,
    read: Vec<u8>,
}

impl Recorder {
    fn pump_on(&mut self, conn: &mut Conn<'_, Raw, Self>) {
        while self.pumped < self.pump {
            let len = (self.pump - self.pumped).min(16 * 1024);
            match conn.write(Bytes::from(pattern(self.pumped, len))) {
                Ok(()) => self.pumped += len,
                Err(e) if e.is_backpressure() => return,
                Err(e) => panic!("pump failed: {e}"),
            }
        }
        if !self.hold {
            conn.disconnect_from_host();
        }
    }
}

impl SessionHandler<Raw> for Recorder {
    fn connected(&mut self, conn: &mut Conn<'_, Raw, Self>) {
        let _ = self.seen.send(Seen::Started(conn.address()));
        if self.pause {
            conn.pause_reading();
        }
        if self.pump > 0 {
            self.pump_on(conn);
        }
    }
    fn ready_read(&mut self, data: Bytes, conn: &mut Conn<'_, Raw, Self>) {
        if self.echo {
            conn.write(data).unwrap();
        } else {
            self.read.extend_from_slice(&data);
        }
    }
    fn read_finished(&mut self, _: &mut Conn<'_, Raw, Self>) {
        assert_pattern(&self.read);
        let _ = self.seen.send(Seen::Read(self.read.len()));
    }
    fn write_buffer_full(&mut self, conn: &mut Conn<'_, Raw, Self>) {
        let _ = self.seen.send(Seen::Full(conn.bytes_to_write()));
    }
    fn write_buffer_drained(&mut self, conn: &mut Conn<'_, Raw, Self>) {
        let _ = self.seen.send(Seen::Drained);
        if self.pump > 0 {
            self.pump_on(conn);
        }
    }
    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        let _ = self
            .seen
            .send(Seen::Ended(reason.clone(), Box::new(info.clone())));
    }
}

#[derive(Clone, Copy, Default)]
struct Role {
    echo: bool,
    pause: bool,
    pump: usize,
    hold: bool,
}

fn serve(
    builder: ListenerBuilder,
    config: SessionConfig,
    role: Role,
) -> (ListenerHandle, mpsc::UnboundedReceiver<Seen>) {
    let (seen, rx) = mpsc::unbounded_channel();
    let server = builder
        .workers(2)
        .session_config(config)
        .serve(Raw, move || Recorder {
            seen: seen.clone(),
            echo: role.echo,
            pause: role.pause,
            pump: role.pump,
            pumped: 0,
            hold: role.hold,
            read: Vec::new(),
        })
        .unwrap();
    (server, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    within("a server-side event", rx.recv())
        .await
        .expect("the server is running")
}

async fn ended(rx: &mut mpsc::UnboundedReceiver<Seen>) -> (DisconnectReason, SessionInfo) {
    loop {
        if let Seen::Ended(reason, info) = next(rx).await {
            return (reason, *info);
        }
    }
}

/// 2 MiB each way through an echo, written and read at once, byte-exact; a clean close.
async fn echo_is_byte_exact(over: Over) {
    const TOTAL: usize = 2 * 1024 * 1024;
    let bed = Bed::new(over);
    let role = Role {
        echo: true,
        ..Role::default()
    };
    let (server, mut seen) = serve(bed.listener("echo"), SessionConfig::default(), role);
    let client = bed.connect(&bed.place(&server, "echo")).await;
    let (mut reader, mut writer) = tokio::io::split(client);
    let write = async move {
        writer.write_all(&pattern(0, TOTAL)).await.unwrap();
        writer.shutdown().await.unwrap();
    };
    let (_, got) = within(
        "the echo",
        futures::future::join(write, read_all(&mut reader)),
    )
    .await;
    assert_eq!(got.len(), TOTAL);
    assert_pattern(&got);
    let (reason, info) = ended(&mut seen).await;
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
    assert_eq!(info.transport, bed.kind());
    assert_eq!(
        (info.bytes_in, info.bytes_out),
        (TOTAL as u64, TOTAL as u64)
    );
}

/// A server pumping at a peer that does not read hits its high watermark and waits; once the
/// peer reads, every byte arrives in order and the pump hears `drained`.
async fn write_backpressure_holds_then_delivers_everything(over: Over) {
    const TOTAL: usize = 4 * 1024 * 1024;
    const HIGH: usize = 32 * 1024;
    let bed = Bed::new(over);
    let config = SessionConfig::default().with_write_watermarks(8 * 1024, HIGH);
    let role = Role {
        pump: TOTAL,
        ..Role::default()
    };
    let (server, mut seen) = serve(bed.listener("pump"), config, role);
    let mut client = bed.connect(&bed.place(&server, "pump")).await;
    // The peer reads nothing until the server's buffer is full and stays full: a "full" with
    // the buffer already flushed (into the kernel, or into TLS's own buffer) is followed by
    // "drained" at once and the pump goes on.
    let buffered = loop {
        match next(&mut seen).await {
            Seen::Full(buffered) if buffered >= HIGH => break buffered,
            Seen::Full(_) | Seen::Drained | Seen::Started(_) => {}
            other => panic!("expected Full first, got {other:?}"),
        }
    };
    assert!(buffered < HIGH + 16 * 1024, "{buffered}");
    let listed = server.registry().list();
    assert!(listed[0].bytes_to_write < HIGH + 16 * 1024, "{listed:?}");
    assert!(
        listed[0].bytes_out < TOTAL as u64,
        "all sent before the peer read"
    );
    let got = read_all(&mut client).await;
    assert_eq!(got.len(), TOTAL);
    assert_pattern(&got);
    let mut drained = 0;
    let reason = loop {
        match next(&mut seen).await {
            Seen::Drained => drained += 1,
            Seen::Ended(reason, _) => break reason,
            _ => {}
        }
    };
    assert!(drained >= 1);
    // The pump closed after the last byte (and lingered for our FIN, which dropping sends).
    drop(client);
    assert!(
        !reason.is_error() || matches!(reason, DisconnectReason::CloseTimeout),
        "{reason:?}"
    );
}

/// A burst written to a peer that reads late, after which the server goes quiet, arrives
/// whole. The session's own buffer empties into the transport long before the peer reads;
/// over TLS the last records then wait inside the TLS layer for a socket that was full, and
/// only a flush of the transport once the socket takes bytes again sends them (nothing else
/// will: the server writes nothing more).
async fn a_burst_then_silence_reaches_a_late_reader(over: Over) {
    const TOTAL: usize = 1024 * 1024;
    let bed = Bed::new(over);
    let role = Role {
        pump: TOTAL,
        hold: true,
        ..Role::default()
    };
    let (server, mut seen) = serve(
        bed.small_send_buffer_listener("burst"),
        SessionConfig::default(),
        role,
    );
    let mut client = bed.connect_small(&bed.place(&server, "burst")).await;
    // Read only once the socket is full and the session's buffer with it.
    loop {
        match next(&mut seen).await {
            Seen::Full(_) => break,
            Seen::Ended(reason, _) => panic!("ended early: {reason:?}"),
            _ => {}
        }
    }
    let mut got = vec![0u8; TOTAL];
    within("the whole burst", client.read_exact(&mut got))
        .await
        .expect("the burst");
    assert_pattern(&got);
    let info = server.registry().list().pop().expect("the session");
    assert_eq!((info.bytes_out, info.bytes_to_write), (TOTAL as u64, 0));
}

/// A paused session reads nothing while its peer floods it until the peer's socket is full;
/// resumed, it takes every byte in order.
async fn read_backpressure_stops_reading_then_takes_everything(over: Over) {
    const TOTAL: usize = 4 * 1024 * 1024;
    let bed = Bed::new(over);
    let role = Role {
        pause: true,
        ..Role::default()
    };
    let (server, mut seen) = serve(bed.listener("paused"), SessionConfig::default(), role);
    let mut client = bed.connect(&bed.place(&server, "paused")).await;
    let session = match next(&mut seen).await {
        Seen::Started(session) => session,
        other => panic!("expected Started, got {other:?}"),
    };
    // Write without waiting until the transport says "not now".
    let mut sent = 0;
    loop {
        assert!(sent < TOTAL, "{sent} bytes went out: reading never paused");
        let chunk = pattern(sent, 16 * 1024);
        let write = futures::future::poll_fn(|cx| Pin::new(&mut client).poll_write(cx, &chunk));
        match futures::poll!(write) {
            Poll::Ready(Ok(n)) => sent += n,
            Poll::Ready(Err(e)) => panic!("flood failed: {e}"),
            Poll::Pending => break,
        }
        tokio::task::yield_now().await;
    }
    let info = server.registry().list().pop().expect("the session");
    assert_eq!(
        info.bytes_in, 0,
        "a paused session read {} bytes",
        info.bytes_in
    );
    assert!(info.read_paused);
    session.send(ResumeReading).await.unwrap();
    let rest = pattern(sent, TOTAL - sent);
    within("the rest of the flood", client.write_all(&rest))
        .await
        .unwrap();
    within("the client's close", client.shutdown())
        .await
        .unwrap();
    let read = loop {
        if let Seen::Read(read) = next(&mut seen).await {
            break read;
        }
    };
    assert_eq!(read, TOTAL);
}

/// A silent peer is closed at the idle timeout; a partial frame at the frame timeout.
async fn idle_and_frame_timeouts_end_the_session(over: Over) {
    let bed = Bed::new(over);
    let config = SessionConfig::default().with_idle_timeout(Some(Duration::from_millis(300)));
    let (server, mut seen) = serve(bed.listener("idle"), config, Role::default());
    let mut client = bed.connect(&bed.place(&server, "idle")).await;
    assert!(read_all(&mut client).await.is_empty());
    let (reason, _) = ended(&mut seen).await;
    assert!(
        matches!(reason, DisconnectReason::IdleTimeout),
        "{reason:?}"
    );

    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel();
    let lines = bed
        .listener("frame")
        .session_config(
            SessionConfig::default().with_frame_timeout(Some(Duration::from_millis(300))),
        )
        .serve(Lines::new(), move || LineEnd(ended_tx.clone()))
        .unwrap();
    let mut client = bed.connect(&bed.place(&lines, "frame")).await;
    client
        .write_all(b"complete\npartial, never end")
        .await
        .unwrap();
    client.flush().await.unwrap();
    let _ = read_all(&mut client).await;
    let reason = within("the frame timeout", ended_rx.recv()).await.unwrap();
    assert!(
        matches!(reason, DisconnectReason::FrameTimeout),
        "{reason:?}"
    );
}

struct LineEnd(mpsc::UnboundedSender<DisconnectReason>);

impl SessionHandler<Lines> for LineEnd {
    fn ready_read(&mut self, line: String, _: &mut Conn<'_, Lines, Self>) {
        assert_eq!(line, "complete");
    }
    fn disconnected(&mut self, reason: &DisconnectReason, _: &SessionInfo) {
        let _ = self.0.send(reason.clone());
    }
}

/// Shutdown in the middle of 10 echoes: every session drains, and each client gets back a
/// prefix of what it sent, ending in a clean EOF; together exactly what the server wrote.
async fn a_drain_mid_echo_answers_what_was_read(over: Over) {
    const CLIENTS: usize = 10;
    const EACH: usize = 256 * 1024;
    let bed = Bed::new(over);
    let role = Role {
        echo: true,
        ..Role::default()
    };
    let (server, _seen) = serve(bed.listener("drain"), SessionConfig::default(), role);
    let place = bed.place(&server, "drain");
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let client = bed.connect(&place).await;
        let started_tx = started_tx.clone();
        clients.push(tokio::spawn(async move {
            let (mut reader, mut writer) = tokio::io::split(client);
            let write = async move {
                let _ = writer.write_all(&pattern(0, EACH)).await;
                // Keep the write side open: the server is the one closing.
                futures::future::pending::<()>().await
            };
            let read = async move {
                let mut got = Vec::new();
                let mut buf = vec![0u8; 16 * 1024];
                let mut told = false;
                loop {
                    let n = reader.read(&mut buf).await.expect("a clean EOF");
                    if n == 0 {
                        return got;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if !told && got.len() >= 16 * 1024 {
                        told = true;
                        let _ = started_tx.send(());
                    }
                }
            };
            futures::pin_mut!(write, read);
            match futures::future::select(write, read).await {
                futures::future::Either::Right((got, _)) => got,
                futures::future::Either::Left(_) => unreachable!(),
            }
        }));
    }
    for _ in 0..CLIENTS {
        within("every client under way", started.recv())
            .await
            .unwrap();
    }
    let report = within("the drain", server.shutdown(Duration::from_secs(10))).await;
    assert_eq!((report.drained, report.aborted), (CLIENTS, 0), "{report:?}");
    let mut received = 0u64;
    for client in clients {
        let got = within("a client", client).await.unwrap();
        assert!(got.len() <= EACH);
        assert_pattern(&got);
        received += got.len() as u64;
    }
    assert_eq!(report.bytes_out, received, "{report:?}");
    assert_eq!(report.bytes_in, report.bytes_out, "{report:?}");
}

/// 200 connect / echo / close cycles from 4 tasks: the registry and the limiter are back at
/// zero.
async fn the_count_returns_to_zero_after_churn(over: Over) {
    let bed = Arc::new(Bed::new(over));
    let role = Role {
        echo: true,
        ..Role::default()
    };
    let (server, _seen) = serve(bed.listener("churn"), SessionConfig::default(), role);
    let place = bed.place(&server, "churn");
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let (bed_over, connector, place) = (bed.over, bed.connector.clone(), place.clone());
            tokio::spawn(async move {
                for i in 0..50 {
                    let mut client = connect(bed_over, connector.clone(), place.clone()).await;
                    let data = pattern(t * 1000 + i, 32);
                    client.write_all(&data).await.unwrap();
                    client.shutdown().await.unwrap();
                    let mut back = Vec::new();
                    client.read_to_end(&mut back).await.unwrap();
                    assert_eq!(back, data);
                }
            })
        })
        .collect();
    for task in tasks {
        within("a churning task", task).await.unwrap();
    }
    within("the count back at 0", server.registry().wait_for_count(0)).await;
    let stats = server.registry().stats();
    assert_eq!(
        (stats.connected, stats.disconnected, stats.live),
        (200, 200, 0)
    );
    let stats = server.address().send(GetListenerStats).await.unwrap();
    assert_eq!(stats.accepted, 200);
    // Permits are released when each session is dropped, a moment after it leaves the
    // registry.
    within("the limiter back at 0", async {
        // No event marks it; a short poll.
        while server
            .address()
            .send(GetListenerStats)
            .await
            .unwrap()
            .active
            > 0
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

macro_rules! over_each {
    ($($scenario:ident),* $(,)?) => {
        mod tcp { $( #[actix_rt::test] async fn $scenario() { super::$scenario(super::Over::Tcp).await } )* }
        mod tls { $( #[actix_rt::test] async fn $scenario() { super::$scenario(super::Over::Tls).await } )* }
        mod unix { $( #[actix_rt::test] async fn $scenario() { super::$scenario(super::Over::Unix).await } )* }
    };
}

over_each!(
    echo_is_byte_exact,
    a_burst_then_silence_reaches_a_late_reader,
    write_backpressure_holds_then_delivers_everything,
    read_backpressure_stops_reading_then_takes_everything,
    idle_and_frame_timeouts_end_the_session,
    a_drain_mid_echo_answers_what_was_read,
    the_count_returns_to_zero_after_churn,
);
