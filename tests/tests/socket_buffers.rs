//! Fixed kernel socket buffers (`SocketBuffers`, `serve --recv-buffer / --send-buffer`): what
//! the listener and the connector ask is what the kernel books on each connection, read back
//! with `getsockopt` and, for sockets this test cannot reach, with iproute2's `ss`, a tool
//! nobody here wrote. Linux books twice the size asked (socket(7)).

#[path = "cli_support.rs"]
mod cli_support;

use std::{
    io,
    net::SocketAddr,
    process::Command,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use cli_support::Server;
use switchboard::{
    Conn, ConnectError, Connector, Listener, ListenerEvent, SessionError, SessionHandler,
    SocketBuffers,
};
use switchboard_codec::Raw;
use switchboard_tests::{any_port, inbox, require_tool, take_pending_tcp, within};

struct Quiet;
impl SessionHandler<Raw> for Quiet {
    fn ready_read(&mut self, _data: Bytes, _conn: &mut Conn<'_, Raw, Self>) {}
}

/// The receive and send buffers `ss -tmn` reports (`skmem:(...,rb…,…,tb…,…)`) for the
/// established TCP socket from `local` to `peer`.
fn ss_buffers(local: SocketAddr, peer: SocketAddr) -> (usize, usize) {
    require_tool("ss", "iproute2");
    let output = Command::new("ss")
        .args(["-tmnH", "state", "established", "src", &local.to_string()])
        .args(["dst", &peer.to_string()])
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&output.stdout);
    let skmem = text
        .split_whitespace()
        .find_map(|word| word.strip_prefix("skmem:("))
        .unwrap_or_else(|| panic!("no socket at {local} in `ss -tmn`: {text}"));
    let field = |name: &str| -> usize {
        skmem
            .trim_end_matches(')')
            .split(',')
            .find_map(|f| f.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in skmem:({skmem}"))
    };
    (field("rb"), field("tb"))
}

#[actix_rt::test]
async fn accepted_connections_inherit_the_listeners_buffers() {
    let bound = Listener::bind(any_port());
    accepted_sizes_are(bound).await;
}

/// An adopted socket (socket activation, a hand-over) is listening already: the sizes still
/// reach the connections that arrive after the listener took it.
#[actix_rt::test]
async fn an_adopted_listening_socket_takes_the_buffers_too() {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    accepted_sizes_are(Listener::adopt([switchboard::StdListener::Tcp(socket)])).await;
}

async fn accepted_sizes_are(builder: switchboard::ListenerBuilder) {
    let (owner, mut announced) = inbox::<ListenerEvent>();
    let server = builder
        .workers(1)
        .socket_buffers(SocketBuffers::new().receive(48 * 1024).send(40 * 1024))
        .pull(owner)
        .unwrap();
    let client = std::net::TcpStream::connect(server.local_addr()).unwrap();
    let stream = take_pending_tcp(&server, &mut announced).await;
    let socket = socket2::SockRef::from(&stream);
    assert_eq!(socket.recv_buffer_size().unwrap(), 96 * 1024);
    assert_eq!(socket.send_buffer_size().unwrap(), 80 * 1024);
    drop(client);
}

#[actix_rt::test]
async fn a_connector_fixes_its_buffers_before_it_connects() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let session = within(
        "connect",
        Connector::new()
            .socket_buffers(SocketBuffers::new().receive(56 * 1024).send(36 * 1024))
            .connect(target, Raw, Quiet),
    )
    .await
    .expect("connected");
    let (_accepted, client) = listener.accept().unwrap();
    assert_eq!(ss_buffers(client, target), (112 * 1024, 72 * 1024));
    drop(session);
}

/// `net.core.rmem_max`: the largest receive buffer an unprivileged process may set.
fn rmem_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .expect("read /proc/sys/net/core/rmem_max")
        .trim()
        .parse()
        .expect("rmem_max is a number")
}

/// Log lines written while a test runs, for `tracing_subscriber::fmt().with_writer`.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines_with(&self, needle: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

/// A size past `rmem_max` still connects, with the capped size booked; the connector says so
/// once, not once per connection (a load test opens thousands), and its clones share that.
#[actix_rt::test]
async fn a_connector_warns_once_when_the_kernel_caps_its_buffers() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let cap = rmem_max();
    let connector = Connector::new().socket_buffers(SocketBuffers::new().receive(cap + 4096));
    let mut sessions = Vec::new();
    for connector in [connector.clone(), connector.clone(), connector] {
        let session = within("connect", connector.connect(target, Raw, Quiet))
            .await
            .expect("a capped size still connects");
        let (_accepted, client) = listener.accept().unwrap();
        assert_eq!(ss_buffers(client, target).0, 2 * cap);
        sessions.push(session);
    }
    let warnings = log.lines_with("capped by net.core.rmem_max");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("WARN"), "{warnings:?}");
    assert!(
        warnings[0].contains(&format!("asked={}", cap + 4096)),
        "{warnings:?}"
    );

    // A connector of its own warns again.
    let other = Connector::new().socket_buffers(SocketBuffers::new().receive(cap + 4096));
    let session = within("connect", other.connect(target, Raw, Quiet))
        .await
        .expect("connected");
    sessions.push(session);
    assert_eq!(log.lines_with("capped by net.core.rmem_max").len(), 2);
    drop(sessions);
}

#[actix_rt::test]
async fn a_zero_buffer_size_is_a_config_error_not_a_connection() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let error = Connector::new()
        .socket_buffers(SocketBuffers::new().send(0))
        .connect(listener.local_addr().unwrap(), Raw, Quiet)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ConnectError::Session(SessionError::Config(e)) if e.to_string().contains("socket_buffers")),
        "{error}"
    );
    assert!(
        listener.accept().is_err(),
        "nothing may connect on a bad config"
    );

    let refused = Listener::bind(any_port())
        .socket_buffers(SocketBuffers::new().receive(0))
        .serve(Raw, || Quiet)
        .unwrap_err();
    assert!(refused.to_string().contains("socket_buffers"), "{refused}");
}

/// The command line's flags reach the server's sockets: `ss` sees them on the server's side of
/// a connection from a plain std client.
#[test]
fn serve_fixes_the_buffers_it_is_given() {
    let server = Server::start(&[
        "--mode",
        "echo",
        "--codec",
        "raw",
        "--recv-buffer",
        "65536",
        "--send-buffer",
        "32768",
    ]);
    let client = cli_support::echoed(server.addr, b"sized");
    let server_side = client.peer_addr().unwrap();
    assert_eq!(server_side, server.addr);
    // The server's end of this connection: local address the server's, peer the client's.
    assert_eq!(
        ss_buffers(server.addr, client.local_addr().unwrap()),
        (128 * 1024, 64 * 1024)
    );
    drop(client);
    server.terminate();

    let refused = cli_support::run(
        &["serve", "--port", "0", "--recv-buffer", "0"],
        cli_support::STEP,
    );
    assert!(!refused.status.success());
    assert!(
        refused.stderr_text().contains("--recv-buffer"),
        "{}",
        refused.stderr_text()
    );
}

/// The listener logs the size the kernel booked, and warns, naming the sysctl, when the kernel
/// capped it; the server still serves.
#[test]
fn serve_warns_when_the_kernel_caps_a_buffer() {
    let cap = rmem_max();
    let asked = (cap + 4096).to_string();
    let server = Server::start(&["--mode", "echo", "--codec", "raw", "--recv-buffer", &asked]);
    let warning = server.proc.stderr_until("capped by net.core.rmem_max");
    assert!(warning.contains(&format!("asked={asked}")), "{warning}");
    let client = cli_support::echoed(server.addr, b"capped");
    assert_eq!(
        ss_buffers(server.addr, client.local_addr().unwrap()).0,
        2 * cap
    );
    drop(client);
    server.terminate();

    let server = Server::start(&["--mode", "echo", "--codec", "raw", "--recv-buffer", "65536"]);
    let booked = server.proc.stderr_until("socket buffer fixed");
    assert!(booked.contains("booked=131072"), "{booked}");
    server.terminate();
}
