//! The yardstick: a plain tokio echo server with no actors, no registry and no framing.
//!
//! A multi-thread runtime with one worker per core (Switchboard's default worker count), a
//! listener bound through socket2 with backlog 1024 (Switchboard's default), and per connection
//! one task that reads into a 64 KiB buffer (allocated at the first byte) and writes it back. Prints `listening on IP:PORT`
//! once bound, like `switchboard serve`.
//!
//! ```text
//! baseline_echo [--addr 127.0.0.1:0] [--workers N] [--buffer BYTES] [--recv-buffer BYTES]
//! ```

use std::{io::Write as _, net::SocketAddr};

use switchboard_benches::{raise_nofile, Args};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() -> std::io::Result<()> {
    let args = Args::from_env();
    let addr: SocketAddr = args.get("--addr", "127.0.0.1:0".parse().expect("address"));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers: usize = args.get("--workers", cores);
    let buffer: usize = args.get("--buffer", 64 * 1024);
    // `SO_RCVBUF` on the listening socket, inherited by every accepted one (as `switchboard
    // serve --recv-buffer`); unset, the kernel tunes it.
    let recv_buffer: Option<usize> = args
        .value("--recv-buffer")
        .map(|v| v.parse().expect("--recv-buffer BYTES"));
    raise_nofile()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = bind(addr, 1024, recv_buffer)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let local = listener.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {local}")?;
            out.flush()?;
        }
        loop {
            let (mut stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: wait a little, as any server would.
                    eprintln!("accept: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                // No buffer until the first byte is really there: an idle connection holds none
                // (the fair comparison for idle memory). `peek` waits through the spurious
                // readiness a fresh socket can report, which `readable()` alone does not.
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
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

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
