//! The TLS yardstick: a plain tokio-rustls echo server with no actors, no registry and no
//! framing, built as Switchboard builds its TLS servers: the `ring` provider chosen
//! explicitly, rustls's safe default versions and suites, stateless session tickets from
//! ring's `Ticketer` (two per handshake) and no server-side session cache. The clients pick
//! TLS 1.3 and one cipher suite, so both servers run the same cryptography.
//!
//! A multi-thread runtime with one worker per core, a listener with backlog 1024, and per
//! connection one task that runs the handshake, then reads into a 64 KiB buffer (allocated at
//! the first byte) and writes it back. Prints `listening on IP:PORT` once bound.
//!
//! ```text
//! baseline_tls_echo --cert FILE --key FILE [--addr 127.0.0.1:0] [--workers N] [--buffer BYTES]
//! ```

use std::{io::Write as _, net::SocketAddr, sync::Arc};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use switchboard_benches::{raise_nofile, Args};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

const USAGE: &str = "usage: baseline_tls_echo --cert FILE --key FILE [--addr 127.0.0.1:0] [--workers N] [--buffer BYTES]";

fn main() -> std::io::Result<()> {
    let args = Args::from_env();
    args.check(
        USAGE,
        &[],
        &["--cert", "--key", "--addr", "--workers", "--buffer"],
    );
    let (Some(cert), Some(key)) = (args.value("--cert"), args.value("--key")) else {
        eprintln!("--cert and --key are required\n\n{USAGE}");
        std::process::exit(2);
    };
    let addr: SocketAddr = args.get("--addr", "127.0.0.1:0".parse().expect("address"));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers: usize = args.get("--workers", cores);
    let buffer: usize = args.get("--buffer", 64 * 1024);
    raise_nofile()?;

    let certs: Vec<_> = CertificateDer::pem_file_iter(cert)
        .expect("certificate file")
        .collect::<Result<_, _>>()
        .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(key).expect("key file");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("certificate and key");
    config.ticketer = rustls::crypto::ring::Ticketer::new().expect("ticketer");
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = bind(addr, 1024)?;
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
                    eprintln!("accept: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(stream).await else {
                    return;
                };
                // No buffer until the first byte of application data: an idle connection
                // holds none (as an idle Switchboard session holds none).
                let mut first = [0u8; 1];
                match stream.read(&mut first).await {
                    Ok(1) => {}
                    _ => return,
                }
                if stream.write_all(&first).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
                let mut buf = vec![0u8; buffer];
                loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    // The flush sends records TLS kept back when the socket was full.
                    if stream.write_all(&buf[..n]).await.is_err() || stream.flush().await.is_err() {
                        return;
                    }
                }
                let _ = stream.shutdown().await;
            });
        }
    })
}

fn bind(addr: SocketAddr, backlog: i32) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}
