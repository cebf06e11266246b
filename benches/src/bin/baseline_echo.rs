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
//! `--actor` (with `--thread-per-worker`) runs each connection as an actix actor whose socket is
//! driven by one future spawned in its own context, as Switchboard's session is, with the same
//! reads and writes (its buffer comes at the first readiness rather than after a `peek`, which
//! matters only to idle memory): it tells what the actor context costs apart from what the
//! session code costs.
//!
//! `--busy-ns N` keeps the thread busy for N ns after every read, before the echo: for
//! experiments on what a cost per read does to the closed loop of the throughput scenario
//! (Switchboard's session spends a few hundred ns more per 16-message read than this echo).
//!
//! ```text
//! baseline_echo [--addr 127.0.0.1:0] [--workers N] [--buffer BYTES] [--recv-buffer BYTES]
//!               [--thread-per-worker [--actor]] [--busy-ns N]
//! ```

use std::{io::Write as _, net::SocketAddr};

use actix::{Actor as _, AsyncContext as _};
use switchboard_benches::{raise_nofile, Args};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USAGE: &str = "usage: baseline_echo [--addr 127.0.0.1:0] [--workers N] [--buffer BYTES] [--recv-buffer BYTES]\n                     [--thread-per-worker [--actor]] [--busy-ns N]";

fn main() -> std::io::Result<()> {
    let args = Args::from_env();
    args.check(
        USAGE,
        &["--thread-per-worker", "--actor"],
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
    let actor = args.flag("--actor");
    if workers == 0 {
        return Err(std::io::Error::other("--workers must be at least 1"));
    }
    if actor && !thread_per_worker {
        eprintln!("--actor needs --thread-per-worker\n{USAGE}");
        std::process::exit(2);
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
            .map(|_| spawn_worker(buffer, busy, actor))
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
    actor: bool,
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
                        Ok(stream) if actor => {
                            EchoActor::create(|ctx| {
                                ctx.spawn(EchoTurns::new(stream, buffer, busy));
                                EchoActor
                            });
                        }
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
        stay_busy(busy);
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Keeps the thread busy for `busy` (nothing when zero).
fn stay_busy(busy: std::time::Duration) {
    if busy.is_zero() {
        return;
    }
    let until = std::time::Instant::now() + busy;
    while std::time::Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// `--actor`: a connection's actor. It holds nothing; its one item, [`EchoTurns`], owns the
/// socket, as a Switchboard session's driver runs inside the session's context.
struct EchoActor;

impl actix::Actor for EchoActor {
    type Context = actix::Context<Self>;
}

/// The echo loop of [`echo`] as a future polled by the actor's context: every wake-up of the
/// socket goes through actix's `ContextFut` (mailbox check, item list) before it reaches here.
struct EchoTurns {
    stream: tokio::net::TcpStream,
    /// Empty until the first read that finds the socket readable.
    buf: Vec<u8>,
    size: usize,
    /// `buf[written..filled]` is read and not yet written back.
    written: usize,
    filled: usize,
    busy: std::time::Duration,
}

impl EchoTurns {
    fn new(stream: tokio::net::TcpStream, size: usize, busy: std::time::Duration) -> Self {
        EchoTurns {
            stream,
            buf: Vec::new(),
            size,
            written: 0,
            filled: 0,
            busy,
        }
    }
}

impl actix::ActorFuture<EchoActor> for EchoTurns {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        _actor: &mut EchoActor,
        ctx: &mut actix::Context<EchoActor>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        use actix::ActorContext as _;
        use std::{pin::Pin, task::Poll};
        use tokio::io::{AsyncRead, AsyncWrite};
        let this = self.get_mut();
        loop {
            while this.written < this.filled {
                match Pin::new(&mut this.stream)
                    .poll_write(cx, &this.buf[this.written..this.filled])
                {
                    Poll::Ready(Ok(n)) if n > 0 => this.written += n,
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(_) => {
                        ctx.stop();
                        return Poll::Ready(());
                    }
                }
            }
            if this.buf.is_empty() {
                match this.stream.poll_read_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => this.buf = vec![0u8; this.size],
                    Poll::Ready(Err(_)) => {
                        ctx.stop();
                        return Poll::Ready(());
                    }
                }
            }
            let mut read = tokio::io::ReadBuf::new(&mut this.buf);
            match Pin::new(&mut this.stream).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                    this.filled = read.filled().len();
                    this.written = 0;
                    stay_busy(this.busy);
                }
                Poll::Ready(_) => {
                    ctx.stop();
                    return Poll::Ready(());
                }
            }
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
