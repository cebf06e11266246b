//! The yardstick: a plain tokio echo server with no actors, no registry and no framing.
//!
//! A multi-thread runtime with one worker per core (Switchboard's default worker count), a
//! listener bound through socket2 with backlog 1024 (Switchboard's default), and per connection
//! one task that reads into a `--buffer`-byte buffer (64 KiB by default, allocated at the first
//! byte) and writes it back. Prints `listening on IP:PORT` once bound, like `switchboard serve`.
//!
//! `--thread-per-worker` lays the threads out as Switchboard does instead: the listener on its
//! own thread hands each connection, round-robin, to one of N single-threaded runtimes (each
//! with its own `epoll`), where it stays; no worker takes another's tasks. The echo task is the
//! same. It tells what the layout costs apart from what the session code costs.
//!
//! `--busy-ns N` keeps the thread busy for N ns after every read, before the echo: for
//! experiments on what a cost per read does to the closed loop of the throughput scenario
//! (Switchboard's session spends a few hundred ns more per 16-message read than this echo).
//!
//! ```text
//! baseline_echo [--addr 127.0.0.1:0] [--workers N] [--buffer BYTES] [--recv-buffer BYTES]
//!               [--thread-per-worker] [--busy-ns N]
//! ```

use std::{io::Write as _, net::SocketAddr};

use switchboard_benches::{raise_nofile, Args};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USAGE: &str = "usage: baseline_echo [--addr 127.0.0.1:0] [--workers N] [--buffer BYTES] [--recv-buffer BYTES]\n                     [--thread-per-worker] [--busy-ns N]";

fn main() -> std::io::Result<()> {
    let args = Args::from_env();
    args.check(
        USAGE,
        &["--thread-per-worker"],
        &[
            "--addr",
            "--workers",
            "--buffer",
            "--recv-buffer",
            "--busy-ns",
        ],
    );
    let addr: SocketAddr = args.get("--addr", "127.0.0.1:0".parse().expect("address"));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers: usize = args.get("--workers", cores);
    let buffer: usize = args.get("--buffer", 64 * 1024);
    // `SO_RCVBUF` on the listening socket, inherited by every accepted one (as `switchboard
    // serve --recv-buffer`); unset, the kernel tunes it.
    let recv_buffer: Option<usize> = args
        .value("--recv-buffer")
        .map(|v| v.parse().expect("--recv-buffer BYTES"));
    let thread_per_worker = args.flag("--thread-per-worker");
    let busy = std::time::Duration::from_nanos(args.get("--busy-ns", 0));
    if workers == 0 {
        return Err(std::io::Error::other("--workers must be at least 1"));
    }
    raise_nofile()?;

    let runtime = if thread_per_worker {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    // Thread per worker: each worker runs its own runtime and takes its connections from a
    // channel; the listener (this thread) deals them out in turn.
    let worker_queues: Vec<_> = if thread_per_worker {
        (0..workers)
            .map(|_| spawn_worker(buffer, busy))
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    runtime.block_on(async move {
        let mut next_worker = 0;
        let listener = bind(addr, 1024, recv_buffer)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let local = listener.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {local}")?;
            out.flush()?;
        }
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: wait a little, as any server would.
                    eprintln!("accept: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            if !thread_per_worker {
                tokio::spawn(echo(stream, buffer, busy));
                continue;
            }
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(error) => {
                    eprintln!("hand-off: {error}");
                    continue;
                }
            };
            if worker_queues[next_worker].send(stream).is_err() {
                return Err(std::io::Error::other("a worker thread ended"));
            }
            next_worker = (next_worker + 1) % worker_queues.len();
        }
    })
}

/// Starts one worker thread with its own single-threaded runtime; returns where to send it
/// connections.
fn spawn_worker(
    buffer: usize,
    busy: std::time::Duration,
) -> std::io::Result<tokio::sync::mpsc::UnboundedSender<std::net::TcpStream>> {
    let (queue, mut connections) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("baseline-worker".into())
        .spawn(move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                while let Some(stream) = connections.recv().await {
                    match tokio::net::TcpStream::from_std(stream) {
                        Ok(stream) => drop(tokio::task::spawn_local(echo(stream, buffer, busy))),
                        Err(error) => eprintln!("register: {error}"),
                    }
                }
            });
        })?;
    Ok(queue)
}

/// Echoes what the connection sends, `buffer` bytes a read at most, until it closes; after
/// each read the thread stays busy for `busy` (none by default).
async fn echo(mut stream: tokio::net::TcpStream, buffer: usize, busy: std::time::Duration) {
    // No buffer until the first byte is really there: an idle connection holds none (the fair
    // comparison for idle memory). `peek` waits through the spurious readiness a fresh socket
    // can report, which `readable()` alone does not.
    let mut probe = [0u8; 1];
    if !matches!(stream.peek(&mut probe).await, Ok(n) if n > 0) {
        return;
    }
    let mut buf = vec![0u8; buffer];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !busy.is_zero() {
            let until = std::time::Instant::now() + busy;
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A listening socket with the given backlog and, if asked, a fixed receive buffer.
fn bind(
    addr: SocketAddr,
    backlog: i32,
    recv_buffer: Option<usize>,
) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}
