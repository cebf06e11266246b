//! Accept rate: `--concurrency` clients each loop connect, one-byte echo, close, for
//! `--duration` seconds after `--warmup`; prints one JSON line
//! `{"conns_per_s": .., "connections": .., "errors": .., "seconds": .., "p50_us": .., "p99_us": ..}`.
//!
//! The one-byte echo makes every counted connection one the server really accepted and served
//! (a bare connect completes in the kernel backlog without the server). Source addresses rotate
//! over `127.0.0.FIRST …` so the client's TIME_WAIT sockets never exhaust the ports.
//!
//! ```text
//! accept_rate HOST:PORT [--concurrency 8] [--duration 5] [--warmup 0.5]
//!                       [--source-first 10] [--source-count 200] [--server-pid PID]
//! ```
//!
//! With `--server-pid`, the report also gives the server's CPU seconds over the measured
//! window, `server_cpu_s`, and what the rest of the machine used meanwhile, `foreign_cpu_s`.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use switchboard_benches::{
    connect_from, cpu_seconds, loopback_source, others_cpu_seconds, parse_seconds, raise_nofile,
    Args,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USAGE: &str = "usage: accept_rate HOST:PORT [--concurrency 8] [--duration 5] [--warmup 0.5]\n                              [--source-first 10] [--source-count 200] [--server-pid PID]";

fn main() -> std::io::Result<()> {
    let args = Args::from_env();
    let server: SocketAddr = args.address_then_check(
        USAGE,
        &[],
        &[
            "--concurrency",
            "--duration",
            "--warmup",
            "--source-first",
            "--source-count",
            "--server-pid",
        ],
    );
    let concurrency: usize = args.get("--concurrency", 8).max(1);
    let duration = parse_seconds(args.value("--duration").unwrap_or("5")).expect("--duration");
    let warmup = parse_seconds(args.value("--warmup").unwrap_or("0.5")).expect("--warmup");
    let first: u32 = args.get("--source-first", 10);
    let sources: u32 = args.get("--source-count", 200);
    let server_pid: Option<u32> = args.value("--server-pid").map(|p| p.parse().expect("PID"));
    raise_nofile()?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (connections, errors, histogram, server_cpu_s) = runtime.block_on(async move {
        let start = Instant::now() + warmup;
        let end = start + duration;
        let cpu = tokio::spawn(async move {
            let pid = server_pid?;
            let mine = [pid, std::process::id()];
            tokio::time::sleep_until(start.into()).await;
            let (server0, others0) = (cpu_seconds(pid).ok()?, others_cpu_seconds(&mine).ok()?);
            tokio::time::sleep_until(end.into()).await;
            let (server1, others1) = (cpu_seconds(pid).ok()?, others_cpu_seconds(&mine).ok()?);
            Some((server1 - server0, others1 - others0))
        });
        let next_source = Arc::new(AtomicU32::new(0));
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let next_source = next_source.clone();
                tokio::spawn(async move {
                    let mut done = 0u64;
                    let mut errors = 0u64;
                    let mut histogram =
                        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
                    loop {
                        let began = Instant::now();
                        if began >= end {
                            break;
                        }
                        let source = loopback_source(
                            first,
                            sources,
                            next_source.fetch_add(1, Ordering::Relaxed),
                        );
                        let cycle = tokio::time::timeout(Duration::from_secs(5), async {
                            let mut stream = connect_from(Some(source), server).await?;
                            stream.write_all(b"!").await?;
                            let mut byte = [0u8; 1];
                            stream.read_exact(&mut byte).await?;
                            Ok::<(), std::io::Error>(())
                        })
                        .await;
                        let finished = Instant::now();
                        let counted = began >= start && finished < end;
                        match cycle {
                            Ok(Ok(())) if counted => {
                                done += 1;
                                let ns = finished.duration_since(began).as_nanos();
                                let _ =
                                    histogram.record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
                            }
                            Ok(Ok(())) => {}
                            _ => errors += 1,
                        }
                    }
                    (done, errors, histogram)
                })
            })
            .collect();
        let mut total = 0;
        let mut errors = 0;
        let mut histogram =
            Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
        for task in tasks {
            if let Ok((done, failed, h)) = task.await {
                total += done;
                errors += failed;
                let _ = histogram.add(&h);
            }
        }
        (total, errors, histogram, cpu.await.ok().flatten())
    });
    let seconds = duration.as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "conns_per_s": connections as f64 / seconds,
            "connections": connections,
            "errors": errors,
            "seconds": seconds,
            "p50_us": histogram.value_at_quantile(0.5) as f64 / 1000.0,
            "p99_us": histogram.value_at_quantile(0.99) as f64 / 1000.0,
            "server_cpu_s": server_cpu_s.map(|(server, _)| server),
            "foreign_cpu_s": server_cpu_s.map(|(_, foreign)| foreign),
        })
    );
    Ok(())
}
