//! A Switchboard raw echo server on the library (Listener + Registry) that times the registry on
//! demand, for the scale scenario.
//!
//! Prints `listening on IP:PORT`, then answers commands read from stdin, one per line, each
//! with one JSON line on stdout; stdin's end stops it.
//!
//! | command | answer |
//! |---|---|
//! | `count` | `{"count": N, "rss_kib": R, "fds": F}` |
//! | `wait N SECS` | waits until exactly N sessions are live (or SECS pass): `{"count": .., "reached": bool, "ms": ..}` |
//! | `measure` | count, then `ids`, `list` and a 64-byte `broadcast` each timed 5 times: medians and maxima in ms |
//!
//! ```text
//! scale_server [--addr 127.0.0.1:0] [--workers N] [--spin-us N (0 = off)] [--max-connections N] [--idle-timeout SECS (0 = off)]
//! ```

use std::{
    io::{BufRead, Write as _},
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use serde_json::json;
use switchboard::{Conn, Listener, Registry, SessionConfig, SessionHandler, SlowConsumerPolicy};
use switchboard_benches::{median, open_fds, raise_nofile, rss_kib, Args};
use switchboard_codec::Raw;

struct Echo;

impl SessionHandler<Raw> for Echo {
    fn ready_read(&mut self, data: Bytes, conn: &mut Conn<'_, Raw, Self>) {
        let _ = conn.write(data);
    }
}

const USAGE: &str = "usage: scale_server [--addr 127.0.0.1:0] [--workers N] [--spin-us N (0 = off)] [--max-connections N]\n                    [--idle-timeout SECS (0 = off)]";

fn main() -> std::io::Result<()> {
    let args = Args::from_env();
    args.check(
        USAGE,
        &[],
        &[
            "--addr",
            "--workers",
            "--spin-us",
            "--max-connections",
            "--idle-timeout",
        ],
    );
    let addr: SocketAddr = args.get("--addr", "127.0.0.1:0".parse().expect("address"));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers: usize = args.get("--workers", cores);
    // Latency mode (`ListenerBuilder::worker_spin`), as `switchboard serve --spin-us`.
    let spin_us: u64 = args.get("--spin-us", 0);
    let limit = raise_nofile()?;
    let max_connections: usize = args.get(
        "--max-connections",
        usize::try_from(limit.saturating_sub(64)).unwrap_or(usize::MAX),
    );
    let idle: u64 = args.get("--idle-timeout", 0);
    let config =
        SessionConfig::default().with_idle_timeout((idle > 0).then(|| Duration::from_secs(idle)));

    let system = actix_rt::System::new();
    let registry = system.block_on(async move {
        let server = Listener::bind(addr)
            .workers(workers)
            .worker_spin(Duration::from_micros(spin_us))
            .max_connections(max_connections)
            .session_config(config)
            .serve(Raw, || Echo)
            .map_err(std::io::Error::other)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", server.local_addr())?;
        out.flush()?;
        // The handle keeps the listener and its workers alive for the process's life.
        let registry = server.registry().clone();
        std::mem::forget(server);
        Ok::<Registry, std::io::Error>(registry)
    })?;
    let current = system.block_on(async { actix_rt::System::current() });
    std::thread::spawn(move || {
        commands(&registry);
        current.stop();
    });
    system.run()
}

fn commands(registry: &Registry) {
    let pid = std::process::id();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["count"] => json!({
                "count": registry.count(),
                "rss_kib": rss_kib(pid).unwrap_or(0),
                "fds": open_fds(pid).unwrap_or(0),
            }),
            ["wait", count, secs] => {
                let count: usize = count.parse().unwrap_or(0);
                let secs: f64 = secs.parse().unwrap_or(10.0);
                let start = Instant::now();
                let deadline = start + Duration::from_secs_f64(secs);
                while registry.count() != count && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                json!({
                    "count": registry.count(),
                    "reached": registry.count() == count,
                    "ms": start.elapsed().as_secs_f64() * 1e3,
                })
            }
            ["measure"] => measure(registry, pid),
            _ => json!({ "error": format!("unknown command: {line}") }),
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
    }
}

/// Times `f` five times: (median ms, max ms, last result).
fn timed<T>(mut f: impl FnMut() -> T) -> (f64, f64, T) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let start = Instant::now();
        last = Some(f());
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let max = times.iter().copied().fold(0.0, f64::max);
    (median(&times), max, last.expect("ran five times"))
}

fn measure(registry: &Registry, pid: u32) -> serde_json::Value {
    let count = registry.count();
    let (count_ms, _, _) = timed(|| registry.count());
    let (ids_ms, ids_max, ids) = timed(|| registry.ids().len());
    let (list_ms, list_max, listed) = timed(|| registry.list().len());
    let message = Bytes::from_static(&[b'x'; 64]);
    let (broadcast_ms, broadcast_max, report) = timed(|| {
        registry
            .broadcast(message.clone(), None, SlowConsumerPolicy::Drop)
            .report()
    });
    json!({
        "count": count,
        "count_ms": count_ms,
        "ids_ms": ids_ms, "ids_max_ms": ids_max, "ids_len": ids,
        "list_ms": list_ms, "list_max_ms": list_max, "list_len": listed,
        "broadcast_ms": broadcast_ms, "broadcast_max_ms": broadcast_max,
        "broadcast_delivered": report.delivered, "broadcast_waited": report.waited,
        "rss_kib": rss_kib(pid).unwrap_or(0),
        "fds": open_fds(pid).unwrap_or(0),
    })
}
