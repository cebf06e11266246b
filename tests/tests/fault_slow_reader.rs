//! Slow readers against the real `switchboard serve --mode echo --codec raw`: clients send
//! as fast as they can and never read, so the server has ever more to write to them. Each
//! session's write buffer stops at its high watermark, then the session stops reading and TCP
//! pushes back on the client: the server's resident memory grows by a small bounded amount
//! however much the clients try to send, and another client's round trips stay as fast as
//! before. Twice: with the server's socket buffers fixed small (20 clients), and left to the
//! kernel's autotuning as `serve` runs by default (4 clients: each may push megabytes into
//! kernel buffers before it stalls, all of it data the test waits on).
//!
//! `backpressure_write.rs` proves the per-session bound in-process; this measures the whole
//! server process under many slow readers at once.

#[path = "cli_support.rs"]
mod cli_support;

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{mpsc, Mutex},
    time::{Duration, Instant},
};

use cli_support::{Server, STEP};

const CHUNK: usize = 64 * 1024;
/// A slow client whose writes make no progress for this long counts as pushed back. A delay
/// that is part of the test: "no progress" has no event, only a write timeout; a loaded
/// machine can only make it fire early, on a smaller `pushed`, which the assertions allow.
const STUCK: Duration = Duration::from_millis(500);
/// The most the server's RSS may grow with every slow reader stuck: 20 sessions × (64 KiB of
/// write buffer + one answer of up to a 256 KiB read) is 6.25 MiB; the rest is allocator slack. The kernel's
/// socket buffers are not in it, autotuned or not.
const MAX_GROWTH_KIB: u64 = 16 * 1024;
/// The slow clients' socket buffers, each way.
const KERNEL_BUFFER: usize = 128 * 1024;
/// The server's, each way (`serve --recv-buffer / --send-buffer`): left to the kernel they
/// grow to megabytes per connection, all of it data the test waits on to be pushed back.
const SERVER_BUFFER: &str = "65536";

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Round-trip times of `n` 64-byte echoes, sorted.
fn round_trips(client: &mut TcpStream, n: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    let mut back = [0u8; 64];
    for i in 0..n {
        let message = [i as u8; 64];
        let start = Instant::now();
        client.write_all(&message).unwrap();
        client.read_exact(&mut back).unwrap();
        times.push(start.elapsed());
        assert_eq!(back, message);
    }
    times.sort();
    times
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// A client that writes and never reads; reports the bytes it got out once its writes stall,
/// then holds the connection until `release` is dropped.
fn slow_reader(
    addr: SocketAddr,
    stuck: mpsc::Sender<usize>,
    release: mpsc::Receiver<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // Fixed kernel buffers on the client's side: autotuned, they held ~3 MiB more per
        // client (163 MiB pushed in all instead of ~95), all of it data the test waits on.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(KERNEL_BUFFER).unwrap();
        socket.set_send_buffer_size(KERNEL_BUFFER).unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut stream = TcpStream::from(socket);
        stream.set_write_timeout(Some(STUCK)).unwrap();
        let chunk = vec![0x5a; CHUNK];
        let mut pushed = 0;
        loop {
            match stream.write(&chunk) {
                Ok(n) => pushed += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("slow reader: {e}"),
            }
            assert!(pushed < 1 << 30, "1 GiB pushed: no backpressure");
        }
        stuck.send(pushed).unwrap();
        let _ = release.recv();
    })
}

#[test]
fn slow_readers_hold_server_memory_flat_and_others_keep_their_latency() {
    slow_readers_against(20, Some(SERVER_BUFFER));
}

/// The server's socket buffers as `serve` leaves them by default: the kernel grows them while
/// data moves, so the session's write buffer empties into a larger socket before it fills.
#[test]
fn slow_readers_against_autotuned_server_buffers() {
    slow_readers_against(4, None);
}

/// The cases run one at a time: each measures its server's memory and a good client's round
/// trips, which the other case's server and clients would share the machine with.
static ONE_CASE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `slow` clients that never read against a server with its socket buffers fixed at
/// `server_buffer` bytes each way, or autotuned.
fn slow_readers_against(slow: usize, server_buffer: Option<&str>) {
    // A case that failed leaves the lock poisoned; the next one still runs.
    let _alone = ONE_CASE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut args = vec!["--mode", "echo", "--codec", "raw", "--idle-timeout", "0"];
    if let Some(size) = server_buffer {
        args.extend(["--recv-buffer", size, "--send-buffer", size]);
    }
    let server = Server::start(&args);
    let pid = server.proc.pid();
    let mut good = TcpStream::connect(server.addr).unwrap();
    good.set_read_timeout(Some(STEP)).unwrap();
    good.set_nodelay(true).unwrap();
    // Warm up, then the baseline.
    round_trips(&mut good, 50);
    let before = round_trips(&mut good, 200);
    let rss_before = rss_kib(pid);

    let (stuck_tx, stuck) = mpsc::channel();
    let mut releases = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..slow {
        let (release, released) = mpsc::channel();
        releases.push(release);
        threads.push(slow_reader(server.addr, stuck_tx.clone(), released));
    }
    let mut pushed = 0;
    for _ in 0..slow {
        pushed += stuck
            .recv_timeout(STEP * 3)
            .expect("every slow reader is pushed back");
    }
    let rss_stuck = rss_kib(pid);
    let during = round_trips(&mut good, 200);
    let rss_after = rss_kib(pid);
    let growth = rss_stuck.max(rss_after).saturating_sub(rss_before);

    drop(releases);
    for thread in threads {
        thread.join().unwrap();
    }
    // The good client still works once the slow ones are gone.
    round_trips(&mut good, 10);
    drop(good);
    let finished = server.terminate();
    assert!(finished.status.success(), "{finished:?}");

    let report = format!(
        "slow readers: {slow} pushed {} MiB before being pushed back (server buffers {}); \
         server RSS {rss_before} \
         KiB before, {rss_stuck} KiB with all stuck (+{growth} KiB); good client round trip \
         p50/p99/max {:?}/{:?}/{:?} before, {:?}/{:?}/{:?} during",
        pushed / (1024 * 1024),
        server_buffer.unwrap_or("autotuned"),
        percentile(&before, 0.5),
        percentile(&before, 0.99),
        before[before.len() - 1],
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        during[during.len() - 1],
    );
    println!("{report}");
    assert!(growth < MAX_GROWTH_KIB, "{report}");
    // What the slow clients got out is more than what the server holds: the rest waits in
    // kernel buffers, pushed back (with the server's buffers fixed at 64 KiB, ~14 MiB against
    // ~3 MiB of growth for 20 clients; a stall timeout that fires early only makes `pushed`
    // smaller).
    assert!(pushed as u64 > 2 * growth * 1024, "{report}");
    // Round trips stay those of an idle server: a generous bound for a loaded machine, where
    // a server that served slow readers before others would take seconds.
    assert!(
        percentile(&during, 0.5) < Duration::from_millis(50),
        "{report}"
    );
    assert!(
        during[during.len() - 1] < Duration::from_secs(1),
        "{report}"
    );
}
