//! Harnesses shared by the fuzz targets in `fuzz/` and by their regression tests
//! (`tests/fuzz_regressions.rs`), so a crashing input found by the fuzzer replays here on the
//! stable toolchain, in CI, through the very same code.
//!
//! Input layout for every harness: byte 0 picks the limit, byte 1 seeds the split points, the
//! rest is the byte stream a peer sends, cut into chunks of pseudo-random sizes.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::OnceLock,
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use switchboard::{Conn, Listener, ProxyHeader, SessionConfig, SessionHandler};
use switchboard_codec::{CodecError, Frames, Lines, Raw};
use tokio_util::codec::Decoder;

/// Cuts `data` into chunks whose sizes come from a xorshift generator seeded by `seed`.
pub fn chunks(data: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut state = u32::from(seed) | 0x9e37_0000;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        // Mostly small pieces (every boundary matters), sometimes large ones.
        let size = if state % 4 == 0 {
            state as usize % 4096
        } else {
            state as usize % 8
        } + 1;
        let (head, tail) = rest.split_at(size.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

fn layout(data: &[u8]) -> Option<(u8, u8, &[u8])> {
    match data {
        [limit, seed, stream @ ..] => Some((*limit, *seed, stream)),
        _ => None,
    }
}

/// Feeds arbitrary bytes to a `Lines` decoder with a limit of 0–255 and checks its promises:
/// no panic, no line over the limit or containing a newline, only limit and UTF-8 errors, and
/// never more buffered than the limit plus what the last chunk brought.
pub fn lines_decoder(data: &[u8]) {
    let Some((limit, seed, stream)) = layout(data) else {
        return;
    };
    let max = usize::from(limit);
    let mut codec = Lines::with_max_length(max);
    let mut buf = BytesMut::new();
    for chunk in chunks(stream, seed) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(line)) => {
                    assert!(
                        line.len() <= max,
                        "line of {} bytes over limit {max}",
                        line.len()
                    );
                    assert!(!line.contains('\n'));
                }
                Ok(None) => break,
                Err(CodecError::LineTooLong { limit }) => assert_eq!(limit, max),
                Err(CodecError::InvalidUtf8 { .. }) => {}
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
        assert!(
            buf.len() <= max + 2,
            "{} bytes buffered with a limit of {max}",
            buf.len()
        );
    }
    while let Ok(Some(line)) = codec.decode_eof(&mut buf) {
        assert!(line.len() <= max);
    }
}

/// Feeds arbitrary bytes to a `Frames` decoder with a limit of 0–255 × 64 bytes and checks:
/// no panic, no frame over the limit, and once a frame is rejected the stream stays rejected.
pub fn frames_decoder(data: &[u8]) {
    let Some((limit, seed, stream)) = layout(data) else {
        return;
    };
    let max = usize::from(limit) * 64;
    let mut codec = Frames::with_max_frame_length(max);
    let mut buf = BytesMut::new();
    for chunk in chunks(stream, seed) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => assert!(frame.len() <= max),
                Ok(None) => break,
                Err(CodecError::FrameTooLong { len, limit }) => {
                    assert!(len > limit as u64);
                    assert!(
                        codec.decode(&mut buf).is_err(),
                        "a rejected stream must stay rejected"
                    );
                    return;
                }
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
        // What waits is one partial frame: at most its header and payload.
        assert!(buf.len() < max + Frames::HEADER_LEN + 4096 + 8);
        assert!(buf.capacity() <= 2 * (max + Frames::HEADER_LEN) + 2 * Frames::RESERVE_STEP + 8192);
    }
    let _ = codec.decode_eof(&mut buf);
}

/// Feeds arbitrary bytes to the `Raw` decoder: everything that goes in comes out, in order.
pub fn raw_decoder(data: &[u8]) {
    let Some((_, seed, stream)) = layout(data) else {
        return;
    };
    let mut out = Vec::with_capacity(stream.len());
    let mut buf = BytesMut::new();
    for chunk in chunks(stream, seed) {
        buf.extend_from_slice(chunk);
        while let Some(bytes) = Raw.decode(&mut buf).expect("raw never fails") {
            out.extend_from_slice(&bytes);
        }
    }
    assert_eq!(out, stream);
}

struct RawEcho;
impl SessionHandler<Raw> for RawEcho {
    fn ready_read(&mut self, data: Bytes, conn: &mut Conn<'_, Raw, Self>) {
        let _ = conn.write(data);
    }
}

struct LineEcho;
impl SessionHandler<Lines> for LineEcho {
    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        let _ = conn.write(line);
    }
}

struct FrameEcho;
impl SessionHandler<Frames> for FrameEcho {
    fn ready_read(&mut self, frame: Bytes, conn: &mut Conn<'_, Frames, Self>) {
        let _ = conn.write(frame);
    }
}

/// Echo servers (raw, lines with a 64-byte limit, frames with a 256-byte limit) running on a
/// background actix system for the whole process.
fn echo_servers() -> &'static [SocketAddr; 3] {
    static SERVERS: OnceLock<[SocketAddr; 3]> = OnceLock::new();
    SERVERS.get_or_init(|| {
        // Fuzz targets have no Rust `main`, so SIGPIPE is not ignored for them: a write to a
        // connection the server already closed would kill the fuzzer instead of failing.
        // SAFETY: setting a signal disposition to SIG_IGN has no other effect.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let config =
                    SessionConfig::default().with_idle_timeout(Some(Duration::from_secs(5)));
                let bind = || {
                    Listener::bind("127.0.0.1:0")
                        .workers(2)
                        .session_config(config.clone())
                };
                let raw = bind().serve(Raw, || RawEcho).expect("raw echo");
                let lines = bind()
                    .serve(Lines::with_max_length(64), || LineEcho)
                    .expect("line echo");
                let frames = bind()
                    .serve(Frames::with_max_frame_length(256), || FrameEcho)
                    .expect("frame echo");
                tx.send([raw.local_addr(), lines.local_addr(), frames.local_addr()])
                    .unwrap();
                futures::future::pending::<()>().await;
            });
        });
        rx.recv().expect("echo servers started")
    })
}

/// Writes `stream` to `addr` in the splits `seed` picks, half-closes, and returns everything
/// read back until the server closed. The server may close first (bad input): that is an
/// answer, not a failure; a session that neither answers nor closes fails the read timeout.
fn exchange(addr: SocketAddr, stream: &[u8], seed: u8) -> Vec<u8> {
    let mut client = TcpStream::connect(addr).expect("connect to the echo server");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reader = {
        let mut client = client.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut echoed = Vec::new();
            let result = client.read_to_end(&mut echoed);
            (result.map(|_| ()), echoed)
        })
    };
    for chunk in chunks(stream, seed) {
        if client.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Write);
    let (result, echoed) = reader.join().expect("reader thread");
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the session neither answered nor closed: {e}"),
    }
    echoed
}

/// Sends arbitrary bytes, in arbitrary splits, to a live session (byte 0 picks the raw, lines
/// or frames echo server) and half-closes. The session must answer and close by itself: a
/// panic in a worker would leave the connection hanging and fail the read timeout. The raw
/// echo must return the input byte for byte.
pub fn live_session(data: &[u8]) {
    let Some((selector, seed, stream)) = layout(data) else {
        return;
    };
    let which = usize::from(selector % 3);
    let addr = echo_servers()[which];
    let echoed = exchange(addr, stream, seed);
    if which == 0 {
        assert_eq!(echoed, stream, "raw echo must return every byte");
    }
}

/// Feeds arbitrary bytes, growing in arbitrary splits, to the PROXY header parser with a
/// limit of 16–4,096 bytes (byte 0 × 16 + 16) and checks its promises: no panic; "need more"
/// only below the limit; a header never longer than the limit or than the input; once it
/// decides (a header or a kind of error), more bytes do not change it, so a header split over
/// any segments reads the same; and a parsed header written back parses to the same header.
pub fn proxy_header(data: &[u8]) {
    let Some((limit, seed, stream)) = layout(data) else {
        return;
    };
    let limit = usize::from(limit) * 16 + 16;
    let mut seen = 0;
    for chunk in chunks(stream, seed) {
        seen += chunk.len();
        let result = ProxyHeader::parse(&stream[..seen], limit);
        match &result {
            Ok(None) => {
                assert!(
                    seen < limit,
                    "{seen} bytes buffered with a limit of {limit}"
                );
                continue;
            }
            Ok(Some((header, used))) => {
                assert!(
                    *used <= seen && *used <= limit,
                    "{used} of {seen}, limit {limit}"
                );
                let again = header.to_bytes();
                let (reparsed, reused) = ProxyHeader::parse(&again, usize::MAX)
                    .expect("a written header parses")
                    .expect("a written header is complete");
                assert_eq!(reused, again.len());
                assert_eq!(reparsed.addresses, header.addresses);
            }
            Err(_) => {}
        }
        // The same header, or the same kind of refusal (the parser's message may differ:
        // more bytes can show another fault in a header already refused).
        let full = ProxyHeader::parse(stream, limit);
        match (&full, &result) {
            (Err(a), Err(b)) => assert_eq!(
                std::mem::discriminant(a),
                std::mem::discriminant(b),
                "more bytes changed the refusal given after {seen}: {a:?} then {b:?}"
            ),
            _ => assert_eq!(
                full, result,
                "more bytes changed the answer given after {seen}"
            ),
        }
        return;
    }
}

/// Starts a raw echo on loopback, on a background actix system that runs for the rest of the
/// process, with the listener options `layer` adds (PROXY, TLS); gives its address.
fn raw_echo_server(
    layer: impl FnOnce(switchboard::ListenerBuilder) -> switchboard::ListenerBuilder + Send + 'static,
) -> SocketAddr {
    // As in `echo_servers`: a write to a closed connection must not kill the fuzzer.
    // SAFETY: setting a signal disposition to SIG_IGN has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let config = SessionConfig::default()
                .with_idle_timeout(Some(Duration::from_secs(5)))
                .with_handshake_timeout(Duration::from_secs(5));
            let builder = Listener::bind("127.0.0.1:0")
                .workers(2)
                .session_config(config);
            let server = layer(builder)
                .serve(Raw, || RawEcho)
                .expect("the raw echo server");
            tx.send(server.local_addr()).unwrap();
            futures::future::pending::<()>().await;
        });
    });
    rx.recv().expect("the raw echo server started")
}

/// A raw echo behind the PROXY protocol (loopback allowed).
fn proxy_echo_server() -> SocketAddr {
    static SERVER: OnceLock<SocketAddr> = OnceLock::new();
    *SERVER.get_or_init(|| {
        raw_echo_server(|b| b.proxy_protocol(["127.0.0.1/32".parse().expect("a CIDR")]))
    })
}

/// Sends arbitrary bytes, in arbitrary splits, to a live PROXY-protocol session and
/// half-closes: the session must answer and close by itself, and when the bytes start with a
/// header the parser accepts, the echo is exactly the bytes after it (none lost, none from the
/// header). Byte 0 is unused.
pub fn proxy_session(data: &[u8]) {
    let Some((_, seed, stream)) = layout(data) else {
        return;
    };
    let expected = match ProxyHeader::parse(stream, switchboard::MAX_PROXY_HEADER) {
        Ok(Some((_, used))) => Some(&stream[used..]),
        _ => None,
    };
    let echoed = exchange(proxy_echo_server(), stream, seed);
    match expected {
        Some(rest) => assert_eq!(echoed, rest, "the bytes after the header"),
        None => assert!(echoed.is_empty(), "no echo without a header"),
    }
}

/// What the TLS session harness keeps for the whole process: a raw TLS echo server (its
/// certificates generated at start) and a client config that trusts it.
struct TlsBed {
    addr: SocketAddr,
    client: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    /// Keeps the certificate files alive.
    _pki: crate::pki::Pki,
}

fn tls_bed() -> &'static TlsBed {
    static BED: OnceLock<TlsBed> = OnceLock::new();
    BED.get_or_init(|| {
        use rustls_pki_types::{pem::PemObject, CertificateDer};
        use tokio_rustls::rustls;
        let pki = crate::pki::Pki::new();
        let acceptor = switchboard::TlsAcceptor::from_pem_files(&pki.server_cert, &pki.server_key)
            .expect("the server certificate");
        let addr = raw_echo_server(|b| b.tls(acceptor));
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&pki.ca).expect("the CA") {
            roots
                .add(cert.expect("a CA certificate"))
                .expect("a usable CA");
        }
        let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsBed {
            addr,
            client: std::sync::Arc::new(client),
            _pki: pki,
        }
    })
}

/// Completes a real TLS handshake with the TLS echo server, then sends arbitrary bytes in the
/// splits `seed` picks: with byte 0 even, as application data through TLS (the echo must
/// return them byte for byte, then close with close_notify); with byte 0 odd, straight onto
/// the socket under TLS, as forged records. Either way the session must end by itself: a
/// panic or a hang in a worker fails the read timeout.
pub fn tls_session(data: &[u8]) {
    use tokio_rustls::rustls;
    let Some((mode, seed, stream)) = layout(data) else {
        return;
    };
    let bed = tls_bed();
    let mut tcp = TcpStream::connect(bed.addr).expect("connect to the TLS echo");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(bed.client.clone(), name).expect("a client");
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).expect("the handshake");
    }
    if mode % 2 == 1 {
        // Forged records: the server ends the session (an alert, or a close); bytes it sends
        // back are TLS records, not checked here.
        let mut raw = tcp.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut back = Vec::new();
            raw.read_to_end(&mut back).map(|_| ())
        });
        for chunk in chunks(stream, seed) {
            if tcp.write_all(chunk).is_err() {
                break;
            }
        }
        let _ = tcp.shutdown(Shutdown::Write);
        match reader.join().expect("reader thread") {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the session neither answered nor closed: {e}"),
        }
        return;
    }
    // Application data: write it all, then close_notify, then read the echo to its end.
    let mut client = rustls::StreamOwned::new(tls, tcp);
    let mut echoed = Vec::with_capacity(stream.len());
    for chunk in chunks(stream, seed) {
        client.write_all(chunk).expect("write through TLS");
    }
    client.conn.send_close_notify();
    client.flush().expect("flush through TLS");
    match client.read_to_end(&mut echoed) {
        Ok(_) => {}
        Err(e) => panic!("the echo ended without close_notify: {e}"),
    }
    assert_eq!(echoed, stream, "the TLS echo must return every byte");
}
