//! Churn soak: connect, talk, disconnect, over and over, from several client threads. After it
//! the registry is back to 0, the process's descriptor count is back to its baseline
//! (`/proc/self/fd`), and its resident memory is within 10% of where it started.
//!
//! The cycle count comes from `SWITCHBOARD_SOAK_CYCLES`; the default is 20,000 in a debug
//! build (a few seconds) and 200,000 in a release build, the figure RELIABILITY.md records:
//!
//! ```text
//! cargo test --release -p switchboard-tests --test soak_churn -- --nocapture
//! ```
//!
//! Baselines are taken after a warm-up (a tenth of the cycles, at least 2,000) on the same
//! client threads, once every session of the warm-up is gone: by then the worker runtimes,
//! the registry's shards, the allocator's per-thread arenas and the client threads' stacks all
//! exist, so what is measured is growth per cycle, not start-up.
//!
//! Clients bind to 16 loopback source addresses (127.0.0.2 to 127.0.0.17) with
//! `IP_BIND_ADDRESS_NO_PORT`, so the TIME_WAIT each client close leaves behind (the client
//! closes first) never exhausts the ephemeral ports of one address.

use std::{
    io::{BufRead, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use switchboard::{
    raise_fd_limit, Conn, DisconnectReason, GetListenerStats, Listener, SessionHandler, SessionInfo,
};
use switchboard_codec::Lines;
use switchboard_tests::{any_port, within, LIMIT};
use tokio::sync::Notify;

const THREADS: usize = 8;
const SOURCES: u8 = 16;
/// Descriptors the process may hold above its baseline at the end. None are expected; this
/// allows for a runtime-internal descriptor opened lazily (none has been seen).
const FD_SLACK: usize = 2;
/// Allowed RSS growth from the post-warm-up baseline, in percent.
const RSS_SLACK_PERCENT: u64 = 10;

fn cycles() -> usize {
    match std::env::var("SWITCHBOARD_SOAK_CYCLES") {
        Ok(value) => value.parse().expect("SWITCHBOARD_SOAK_CYCLES is a number"),
        Err(_) if cfg!(debug_assertions) => 20_000,
        Err(_) => 200_000,
    }
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Line echo; counts its own drop (after the session's socket is closed: the session drops
/// its socket before its handler).
struct Echo {
    dropped: Arc<Dropped>,
    errors: Arc<AtomicUsize>,
}

struct Dropped {
    count: AtomicUsize,
    changed: Notify,
}

impl SessionHandler<Lines> for Echo {
    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        conn.write(line).expect("a one-line echo is never refused");
    }

    fn disconnected(&mut self, reason: &DisconnectReason, _: &SessionInfo) {
        if !matches!(reason, DisconnectReason::PeerClosed) {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.dropped.count.fetch_add(1, Ordering::SeqCst);
        self.dropped.changed.notify_one();
    }
}

/// Waits until `n` handlers have been dropped.
async fn all_dropped(dropped: &Dropped, n: usize) {
    within("every session to be dropped", async {
        loop {
            let changed = dropped.changed.notified();
            if dropped.count.load(Ordering::SeqCst) >= n {
                return;
            }
            changed.await;
        }
    })
    .await;
}

/// One connect / echo / close cycle from `source`.
fn cycle(server: SocketAddr, source: Ipv4Addr, tag: &str) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `on` for its stated size; the descriptor is the socket's own.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    socket
        .bind(&SocketAddr::V4(SocketAddrV4::new(source, 0)).into())
        .unwrap();
    socket
        .connect_timeout(&server.into(), LIMIT)
        .unwrap_or_else(|e| panic!("{tag}: connect from {source}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut reader = BufReader::new(stream);
    reader
        .get_mut()
        .write_all(format!("{tag}\n").as_bytes())
        .unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), tag);
}

#[actix_rt::test]
async fn churn_leaves_no_sessions_descriptors_or_memory_behind() {
    raise_fd_limit().unwrap();
    let total = cycles();
    let warmup = (total / 10).max(2_000);
    let dropped = Arc::new(Dropped {
        count: AtomicUsize::new(0),
        changed: Notify::new(),
    });
    let errors = Arc::new(AtomicUsize::new(0));
    let server = {
        let dropped = dropped.clone();
        let errors = errors.clone();
        Listener::bind(any_port())
            .workers(2)
            .serve(Lines::new(), move || Echo {
                dropped: dropped.clone(),
                errors: errors.clone(),
            })
            .unwrap()
    };
    let addr = server.local_addr();
    let registry = server.registry().clone();

    // Client threads: the warm-up, then a pause for the baselines, then the soak.
    let (warm_tx, mut warm) = tokio::sync::mpsc::unbounded_channel();
    let mut gos = Vec::new();
    let mut threads = Vec::new();
    for t in 0..THREADS {
        let (go, went) = mpsc::channel::<()>();
        gos.push(go);
        let warm_tx = warm_tx.clone();
        let share = |n: usize| n / THREADS + usize::from(t < n % THREADS);
        let (first, second) = (share(warmup), share(total));
        threads.push(tokio::task::spawn_blocking(move || {
            let mut k = t;
            let mut run = |n: usize, phase: &str| {
                for i in 0..n {
                    let source = Ipv4Addr::new(127, 0, 0, 2 + (k % usize::from(SOURCES)) as u8);
                    cycle(addr, source, &format!("{phase} thread {t} cycle {i}"));
                    k += THREADS;
                }
            };
            run(first, "warm-up");
            warm_tx.send(()).unwrap();
            went.recv().unwrap();
            run(second, "soak");
        }));
    }
    for _ in 0..THREADS {
        within("the warm-up", warm.recv()).await.unwrap();
    }
    within("the warm-up sessions to end", registry.wait_for_count(0)).await;
    all_dropped(&dropped, warmup).await;
    let fds_before = open_descriptors();
    let rss_before = rss_kib();

    let started = Instant::now();
    for go in &gos {
        go.send(()).unwrap();
    }
    for thread in threads {
        // The whole soak: allow a minute per 20,000 cycles on top of the usual limit.
        let budget = LIMIT + Duration::from_secs(60) * (total / 20_000 + 1) as u32;
        match tokio::time::timeout(budget, thread).await {
            Ok(joined) => joined.unwrap(),
            Err(_) => panic!("the soak took more than {budget:?}"),
        }
    }
    let took = started.elapsed();
    within("the registry to empty", registry.wait_for_count(0)).await;
    all_dropped(&dropped, warmup + total).await;
    let fds_after = open_descriptors();
    let rss_after = rss_kib();

    let stats = within("stats", server.address().send(GetListenerStats))
        .await
        .unwrap();
    let report = format!(
        "churn: {total} cycles in {took:.1?} ({:.0} cycles/s) after {warmup} warm-up cycles; \
         registry {} live, {} connected; descriptors {fds_before} -> {fds_after}; RSS \
         {rss_before} KiB -> {rss_after} KiB ({:+.1}%)",
        total as f64 / took.as_secs_f64(),
        registry.count(),
        registry.stats().connected,
        (rss_after as f64 - rss_before as f64) * 100.0 / rss_before as f64,
    );
    println!("{report}");
    assert_eq!(registry.count(), 0, "{report}");
    assert_eq!(
        registry.stats().connected,
        (warmup + total) as u64,
        "{report}"
    );
    assert_eq!(stats.accepted, (warmup + total) as u64, "{report}");
    assert_eq!(stats.active, 0, "{report}");
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "sessions ended in error: {report}"
    );
    assert!(fds_after <= fds_before + FD_SLACK, "{report}");
    assert!(
        rss_after * 100 <= rss_before * (100 + RSS_SLACK_PERCENT),
        "{report}"
    );
}
