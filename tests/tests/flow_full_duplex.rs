//! Full duplex: a client that writes as fast as its write buffer allows (until
//! `WriteBufferFull`, then again on `write_buffer_drained`) while it reads the echo must never
//! stall, whoever the peer is, and neither side's buffers may grow. Reading depends only on
//! where read bytes go, never on the reader's own write buffer.
//!
//! The volume is `SWITCHBOARD_PUMP_MIB` MiB (default 32, quick in a debug build); the closing
//! note and BENCHMARKS.md record a 1 GiB run in release.

#[path = "cli_support.rs"]
mod support;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use switchboard::{
    Conn, Connector, DisconnectReason, Listener, SessionConfig, SessionError, SessionHandler,
};
use switchboard_codec::Raw;
use switchboard_tests::{any_port, pattern_byte};
use tokio::sync::oneshot;

const CHUNK: usize = 16 * 1024;
const HIGH: usize = 64 * 1024;

fn volume() -> usize {
    let mib = std::env::var("SWITCHBOARD_PUMP_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(32);
    mib * 1024 * 1024
}

/// Long enough for the whole pump in a debug build on a loaded machine; a stall fails here.
fn deadline(bytes: usize) -> Duration {
    Duration::from_secs(60 + (bytes / (8 * 1024 * 1024)) as u64)
}

/// The test pattern repeats every 251 bytes: one buffer holds every chunk as a slice.
fn pattern_source() -> Bytes {
    Bytes::from((0..251 + CHUNK).map(pattern_byte).collect::<Vec<u8>>())
}

fn slice_at(source: &Bytes, offset: usize, len: usize) -> Bytes {
    let start = offset % 251;
    source.slice(start..start + len)
}

/// What a pump saw.
#[derive(Debug)]
struct Pumped {
    sent: usize,
    received: usize,
    /// The largest write buffer it ever had.
    max_buffered: usize,
    reason: String,
}

/// Writes `total` pattern bytes as fast as the write buffer allows, checks every echoed byte,
/// and closes once all came back.
struct Pump {
    total: usize,
    sent: usize,
    received: usize,
    max_buffered: usize,
    source: Bytes,
    done: Option<oneshot::Sender<Pumped>>,
}

impl Pump {
    fn new(total: usize, done: oneshot::Sender<Pumped>) -> Pump {
        Pump {
            total,
            sent: 0,
            received: 0,
            max_buffered: 0,
            source: pattern_source(),
            done: Some(done),
        }
    }

    fn fill(&mut self, conn: &mut Conn<'_, Raw, Self>) {
        while self.sent < self.total {
            let n = CHUNK.min(self.total - self.sent);
            match conn.write(slice_at(&self.source, self.sent, n)) {
                Ok(()) => self.sent += n,
                Err(SessionError::WriteBufferFull { .. }) => break,
                Err(e) => panic!("pump write failed: {e}"),
            }
            self.max_buffered = self.max_buffered.max(conn.bytes_to_write());
        }
    }
}

impl SessionHandler<Raw> for Pump {
    fn connected(&mut self, conn: &mut Conn<'_, Raw, Self>) {
        self.fill(conn);
    }

    fn ready_read(&mut self, data: Bytes, conn: &mut Conn<'_, Raw, Self>) {
        assert!(
            self.received + data.len() <= self.total,
            "more echoed than sent"
        );
        let expected = slice_at(&self.source, self.received, data.len().min(CHUNK));
        if data.len() <= CHUNK {
            assert_eq!(data, expected, "echo differs at offset {}", self.received);
        } else {
            for (i, &b) in data.iter().enumerate() {
                assert_eq!(b, pattern_byte(self.received + i), "echo differs");
            }
        }
        self.received += data.len();
        if self.received == self.total {
            conn.disconnect_from_host();
        }
    }

    fn write_buffer_drained(&mut self, conn: &mut Conn<'_, Raw, Self>) {
        self.fill(conn);
    }

    fn disconnected(&mut self, reason: &DisconnectReason, _: &switchboard::SessionInfo) {
        if let Some(done) = self.done.take() {
            let _ = done.send(Pumped {
                sent: self.sent,
                received: self.received,
                max_buffered: self.max_buffered,
                reason: reason.to_string(),
            });
        }
    }
}

/// An echo that records the largest write buffer it had.
struct Echo(Arc<AtomicUsize>);

impl SessionHandler<Raw> for Echo {
    fn ready_read(&mut self, data: Bytes, conn: &mut Conn<'_, Raw, Self>) {
        conn.write(data).expect("an answer is never refused");
        self.0.fetch_max(conn.bytes_to_write(), Ordering::Relaxed);
    }
}

fn config() -> SessionConfig {
    SessionConfig::default()
        .with_write_watermarks(HIGH / 2, HIGH)
        .with_idle_timeout(Some(Duration::from_secs(30)))
}

async fn pump_into(addr: SocketAddr, total: usize) -> Pumped {
    let (done, result) = oneshot::channel();
    Connector::new()
        .session_config(config())
        .connect(&addr.to_string(), Raw, Pump::new(total, done))
        .await
        .expect("connects");
    match tokio::time::timeout(deadline(total), result).await {
        Ok(result) => result.expect("the pump reports"),
        Err(_) => panic!("the pump stalled: full duplex deadlocked"),
    }
}

fn assert_pumped(pumped: &Pumped, total: usize) {
    assert_eq!(pumped.sent, total, "{pumped:?}");
    assert_eq!(pumped.received, total, "{pumped:?}");
    assert_eq!(pumped.reason, DisconnectReason::Closed.to_string());
    // Writes stop at the high watermark, plus one chunk.
    assert!(pumped.max_buffered < HIGH + CHUNK, "{pumped:?}");
}

/// Both ends Switchboard sessions: the pump reads the echo while its own write buffer is full,
/// so the echo server's answers drain and it reads on.
#[actix_rt::test]
async fn switchboard_pump_into_switchboard_echo_completes() {
    let max_server_buffer = Arc::new(AtomicUsize::new(0));
    let recorded = max_server_buffer.clone();
    let server = Listener::bind(any_port())
        .workers(2)
        .session_config(config())
        .serve(Raw, move || Echo(recorded.clone()))
        .unwrap();
    let total = volume();
    let pumped = pump_into(server.local_addr(), total).await;
    assert_pumped(&pumped, total);
    // The echo's answers go past the mark by at most one answer, and an answer is one read.
    let server_max = max_server_buffer.load(Ordering::Relaxed);
    let bound = HIGH + config().largest_read();
    assert!(
        server_max < bound,
        "echo buffer grew to {server_max}, past {bound}"
    );
    tokio::time::timeout(Duration::from_secs(10), server.registry().wait_for_count(0))
        .await
        .expect("the echo session ends");
    let info = server.registry().stats();
    assert_eq!(info.bytes_in, total as u64);
    assert_eq!(info.bytes_out, total as u64);
}

/// A Switchboard pump into a plain tokio echo (`tokio::io::copy` per connection).
#[actix_rt::test]
async fn switchboard_pump_into_tokio_echo_completes() {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let echo = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let (mut socket, _) = listener.accept().await.unwrap();
            let (mut read, mut write) = socket.split();
            let copied = tokio::io::copy(&mut read, &mut write).await.unwrap();
            use tokio::io::AsyncWriteExt;
            write.shutdown().await.unwrap();
            copied
        })
    });
    let addr = addr_rx.recv().unwrap();
    let total = volume();
    let pumped = pump_into(addr, total).await;
    assert_pumped(&pumped, total);
    assert_eq!(echo.join().unwrap(), total as u64);
}

/// A Python client (two threads: one writes as fast as the socket takes, one reads and checks)
/// against `switchboard serve --mode echo --codec raw`.
#[test]
fn python_pump_into_the_command_echo_completes() {
    let server = support::Server::start(&["--mode", "echo", "--codec", "raw"]);
    let total = volume();
    let script = r#"
import socket, sys, threading
host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pattern = bytes(i % 251 for i in range(251 * 300))
s = socket.create_connection((host, port), timeout=60)
def write():
    sent = 0
    while sent < total:
        start = sent % 251
        n = min(total - sent, 251 * 256)
        s.sendall(pattern[start:start + n])
        sent += n
    s.shutdown(socket.SHUT_WR)
writer = threading.Thread(target=write)
writer.start()
received = 0
while True:
    data = s.recv(1 << 16)
    if not data:
        break
    start = received % 251
    if data != pattern[start:start + len(data)]:
        print("mismatch at", received)
        sys.exit(1)
    received += len(data)
writer.join()
print("ok", received)
"#;
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            "127.0.0.1",
            &server.addr.port().to_string(),
            &total.to_string(),
        ])
        .output()
        .expect("python3 runs (install it: apt-get install -y python3)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python client failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), format!("ok {total}"));
    let finished = server.terminate();
    assert!(finished.status.success());
}
