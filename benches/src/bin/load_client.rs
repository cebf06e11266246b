//! Pipelined echo load against any echo server; prints one JSON [`LoadReport`] on stdout.
//!
//! Each connection keeps `--pipeline` messages of `--size` bytes in flight: it sends that many,
//! and sends one more for each `--size` bytes that come back (so it works with servers that
//! re-chunk the stream, such as a raw echo). A message's latency runs from when it was queued to
//! when its last byte came back. Nothing is counted during `--warmup`; the measured window is
//! `--duration` long.
//!
//! ```text
//! load_client HOST:PORT [--connections 100] [--pipeline 16] [--size 64] [--duration 5]
//!                       [--warmup 1] [--threads 1] [--server-pid PID] [--exclude-pid PID]
//!                       [--per-connection]
//! ```
//!
//! With `--per-connection`, the report lists every connection's client port, messages and
//! reads that completed a message, busiest first (`connections`), to see which of a server's sessions
//! get more turns and how many answers arrived together.
//!
//! With `--server-pid`, the report also gives the server's CPU seconds (user + system, from
//! `/proc/PID/stat`) over the measured window, `server_cpu_s`, this client's, `client_cpu_s`, and
//! what the rest of the machine used meanwhile, `foreign_cpu_s`, and the server's context
//! switches (all threads), `server_context_switches`.

use std::{collections::VecDeque, io, net::SocketAddr, sync::Arc, time::Instant};

use hdrhistogram::Histogram;
use switchboard_benches::{
    context_switches, cpu_seconds, others_cpu_seconds, parse_seconds, raise_nofile, Args,
    ConnectionCount, Latency, LoadReport,
};
use tokio::{io::Interest, net::TcpStream, sync::Barrier};

struct Plan {
    size: usize,
    pipeline: usize,
    /// Start and end of the measured window, set once every connection is up.
    window: tokio::sync::OnceCell<(Instant, Instant)>,
}

struct Outcome {
    histogram: Histogram<u64>,
    messages: u64,
    /// Reads that completed at least one message while measuring.
    reads: u64,
    error: bool,
    /// The client's local port, 0 when it never connected.
    port: u16,
}

const USAGE: &str = "usage: load_client HOST:PORT [--connections 100] [--pipeline 16] [--size 64] [--duration 5]\n                              [--warmup 1] [--threads 1] [--server-pid PID] [--exclude-pid PID]\n                              [--per-connection]";

fn main() -> io::Result<()> {
    let args = Args::from_env();
    let server: SocketAddr = args.address_then_check(
        USAGE,
        &["--per-connection"],
        &[
            "--connections",
            "--pipeline",
            "--size",
            "--duration",
            "--warmup",
            "--threads",
            "--server-pid",
            "--exclude-pid",
        ],
    );
    let connections: usize = args.get("--connections", 100);
    let pipeline: usize = args.get("--pipeline", 16).max(1);
    let size: usize = args.get("--size", 64).max(1);
    let duration = parse_seconds(args.value("--duration").unwrap_or("5")).expect("--duration");
    let warmup = parse_seconds(args.value("--warmup").unwrap_or("1")).expect("--warmup");
    let threads: usize = args.get("--threads", 1).max(1);
    let server_pid: Option<u32> = args.value("--server-pid").map(|p| p.parse().expect("PID"));
    // A process whose CPU is not "other work" either (the runner's idle-priority spinners).
    let exclude_pid: Option<u32> = args.value("--exclude-pid").map(|p| p.parse().expect("PID"));
    let per_connection_report = args.flag("--per-connection");
    raise_nofile()?;

    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    let report = runtime.block_on(async move {
        let plan = Arc::new(Plan {
            size,
            pipeline,
            window: tokio::sync::OnceCell::new(),
        });
        // Everyone connected, then the window is set, then everyone starts.
        let connected = Arc::new(Barrier::new(connections + 1));
        let go = Arc::new(Barrier::new(connections + 1));
        let tasks: Vec<_> = (0..connections)
            .map(|_| {
                let plan = plan.clone();
                let connected = connected.clone();
                let go = go.clone();
                tokio::spawn(async move {
                    let stream = TcpStream::connect(server).await;
                    connected.wait().await;
                    go.wait().await;
                    match stream {
                        Ok(stream) => {
                            let _ = stream.set_nodelay(true);
                            run(stream, &plan).await
                        }
                        Err(_) => Outcome {
                            histogram: new_histogram(),
                            messages: 0,
                            reads: 0,
                            error: true,
                            port: 0,
                        },
                    }
                })
            })
            .collect();
        connected.wait().await;
        let start = Instant::now() + warmup;
        let _ = plan.window.set((start, start + duration));
        go.wait().await;
        // CPU of the server and of this client over exactly the measured window.
        let cpu = tokio::spawn(async move {
            let me = std::process::id();
            let mine: Vec<u32> = server_pid
                .into_iter()
                .chain(exclude_pid)
                .chain([me])
                .collect();
            let sample = || {
                let server = server_pid.and_then(|pid| cpu_seconds(pid).ok());
                let switches = server_pid.and_then(|pid| context_switches(pid).ok());
                (
                    server,
                    switches,
                    cpu_seconds(me).ok(),
                    others_cpu_seconds(&mine).ok(),
                )
            };
            tokio::time::sleep_until(start.into()).await;
            let (server0, switches0, client0, others0) = sample();
            tokio::time::sleep_until((start + duration).into()).await;
            let (server1, switches1, client1, others1) = sample();
            let delta = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| b - a);
            (
                delta(server0, server1),
                switches0.zip(switches1).map(|(a, b)| b.saturating_sub(a)),
                delta(client0, client1),
                delta(others0, others1),
            )
        });
        let mut histogram = new_histogram();
        let mut messages = 0;
        let mut errors = 0;
        let mut per_connection = Vec::with_capacity(connections);
        for task in tasks {
            match task.await {
                Ok(outcome) => {
                    let _ = histogram.add(&outcome.histogram);
                    messages += outcome.messages;
                    per_connection.push(ConnectionCount {
                        port: outcome.port,
                        messages: outcome.messages,
                        reads: outcome.reads,
                    });
                    errors += u64::from(outcome.error);
                }
                Err(_) => errors += 1,
            }
        }
        per_connection.sort_by_key(|c| std::cmp::Reverse(c.messages));
        let (server_cpu_s, server_context_switches, client_cpu_s, foreign_cpu_s) =
            cpu.await.unwrap_or((None, None, None, None));
        let seconds = duration.as_secs_f64();
        let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        LoadReport {
            msgs_per_s: messages as f64 / seconds,
            mb_per_s: (messages as f64 * size as f64) / 1e6 / seconds,
            latency_us: Latency {
                p50: us(0.5),
                p90: us(0.9),
                p99: us(0.99),
                p999: us(0.999),
                max: histogram.max() as f64 / 1000.0,
            },
            errors,
            messages,
            seconds,
            server_cpu_s,
            client_cpu_s,
            foreign_cpu_s,
            server_context_switches,
            messages_per_connection: (
                per_connection.last().map_or(0, |c| c.messages),
                per_connection.first().map_or(0, |c| c.messages),
            ),
            connections: if per_connection_report {
                per_connection
            } else {
                Vec::new()
            },
        }
    });
    println!("{}", serde_json::to_string(&report).expect("json"));
    Ok(())
}

fn new_histogram() -> Histogram<u64> {
    // Nanoseconds, up to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

/// Drives one connection until the window ends: writes what is owed without blocking, reads
/// what came back, and queues one new message per `size` bytes received.
async fn run(stream: TcpStream, plan: &Plan) -> Outcome {
    let mut outcome = Outcome {
        histogram: new_histogram(),
        messages: 0,
        reads: 0,
        error: false,
        port: stream.local_addr().map_or(0, |a| a.port()),
    };
    let (start, end) = *plan.window.get().expect("window set before `go` opens");
    // Large enough to write everything owed in one call (a pipeline's worth, up to 1 MiB): one
    // write per 64-byte message would measure this client, not the server.
    let payload = vec![0x5au8; (plan.size * plan.pipeline).clamp(plan.size, 1 << 20)];
    let mut read_buf = vec![0u8; 256 * 1024];
    let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(plan.pipeline);
    let now = Instant::now();
    for _ in 0..plan.pipeline {
        sent_at.push_back(now);
    }
    // Bytes still to write: the pipeline's worth, then `size` more per echoed message.
    let mut owed = plan.pipeline * plan.size;
    // Bytes of the oldest outstanding message already received.
    let mut received = 0usize;
    // One timer for the whole run (a fresh `sleep` per wait would cost a timer insert each).
    let deadline = tokio::time::sleep_until(end.into());
    tokio::pin!(deadline);
    loop {
        while owed > 0 {
            let chunk = owed.min(payload.len());
            match stream.try_write(&payload[..chunk]) {
                Ok(n) => owed -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    outcome.error = true;
                    return outcome;
                }
            }
        }
        let interest = if owed > 0 {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let ready = tokio::select! {
            ready = stream.ready(interest) => ready,
            () = &mut deadline => return outcome,
        };
        let ready = match ready {
            Ok(ready) => ready,
            Err(_) => {
                outcome.error = true;
                return outcome;
            }
        };
        if !ready.is_readable() {
            continue;
        }
        let n = match stream.try_read(&mut read_buf) {
            Ok(0) => {
                outcome.error = true;
                return outcome;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => {
                outcome.error = true;
                return outcome;
            }
        };
        received += n;
        if received < plan.size {
            continue;
        }
        let now = Instant::now();
        if now >= end {
            return outcome;
        }
        let measuring = now >= start;
        outcome.reads += u64::from(measuring);
        while received >= plan.size {
            received -= plan.size;
            let queued = sent_at.pop_front().unwrap_or(now);
            if measuring {
                let ns = now.duration_since(queued).as_nanos().max(1);
                let _ = outcome
                    .histogram
                    .record(u64::try_from(ns).unwrap_or(u64::MAX));
                outcome.messages += 1;
            }
            sent_at.push_back(now);
            owed += plan.size;
        }
    }
}
