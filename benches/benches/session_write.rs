//! The session write path, per message, over a real loopback socket whose peer drains:
//!
//! - `write_msg`: one `Write` message from another thread, awaited before the next (mailbox
//!   hop, encode, flush to the socket, reply);
//! - `write_msg_pipelined_64`: 64 `Write` messages in flight at once;
//! - `in_session_burst_512`: a handler writing 512 64-byte messages with `Conn::write` from
//!   `ready_read` (the fast path: no mailbox), timed from the trigger byte to the last byte read.
//!
//! `cargo bench -p switchboard-benches --bench session_write`.

use std::{
    io::{Read, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use actix::Addr;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchboard::{Conn, Session, SessionBuilder, SessionError, SessionHandler, Write};
use switchboard_codec::Raw;

const MESSAGE: &[u8] = &[b'x'; 64];
const BURST: usize = 512;

/// Ignores what it reads.
struct Sink;

impl SessionHandler<Raw> for Sink {
    fn ready_read(&mut self, _: Bytes, _: &mut Conn<'_, Raw, Self>) {}
}

/// Answers each trigger with a burst of `BURST` messages written in-session.
struct Burst;

impl SessionHandler<Raw> for Burst {
    fn ready_read(&mut self, trigger: Bytes, conn: &mut Conn<'_, Raw, Self>) {
        for _ in 0..trigger.len() * BURST {
            conn.write(Bytes::from_static(MESSAGE))
                .expect("32 KiB per trigger stays under the 64 KiB high watermark");
        }
    }
}

struct Sessions {
    sink: Addr<Session<Raw, Sink>>,
    burst_client: TcpStream,
}

/// Starts an actix system on its own thread with one `Sink` session (its client drained by a
/// thread) and one `Burst` session (its client returned).
fn start() -> Sessions {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let system = actix_rt::System::new();
        system.block_on(async move {
            let pair = || {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                let client =
                    TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
                let (server, _) = listener.accept().expect("accept");
                client.set_nodelay(true).expect("nodelay");
                (client, server)
            };
            let (sink_client, sink_server) = pair();
            let sink = SessionBuilder::new(Raw, Sink)
                .start_std(sink_server)
                .expect("sink session");
            std::thread::spawn(move || drain(sink_client));
            let (burst_client, burst_server) = pair();
            SessionBuilder::new(Raw, Burst)
                .start_std(burst_server)
                .expect("burst session");
            tx.send(Sessions { sink, burst_client }).expect("send");
        });
        system.run().expect("actix system");
    });
    rx.recv().expect("sessions started")
}

fn drain(mut client: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    while matches!(client.read(&mut buf), Ok(n) if n > 0) {}
}

async fn write(sink: &Addr<Session<Raw, Sink>>) {
    loop {
        match sink.send(Write(Bytes::from_static(MESSAGE))).await {
            Ok(Ok(())) => return,
            // The drain thread fell behind: give it a moment, then write again.
            Ok(Err(SessionError::WriteBufferFull { .. })) => {
                tokio::time::sleep(Duration::from_micros(50)).await
            }
            other => panic!("write failed: {other:?}"),
        }
    }
}

fn session_write(c: &mut Criterion) {
    let Sessions {
        sink,
        mut burst_client,
    } = start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let mut group = c.benchmark_group("session_write");
    group.throughput(Throughput::Elements(1));
    group.bench_function("write_msg", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    write(&sink).await;
                }
                start.elapsed()
            })
        })
    });

    group.throughput(Throughput::Elements(64));
    group.bench_function("write_msg_pipelined_64", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    futures::future::join_all((0..64).map(|_| write(&sink))).await;
                }
                start.elapsed()
            })
        })
    });

    group.throughput(Throughput::Elements(BURST as u64));
    let mut reply = vec![0u8; BURST * MESSAGE.len()];
    group.bench_function("in_session_burst_512", |b| {
        b.iter(|| {
            burst_client.write_all(b"!").expect("trigger");
            burst_client.read_exact(&mut reply).expect("burst");
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = session_write
}
criterion_main!(benches);
