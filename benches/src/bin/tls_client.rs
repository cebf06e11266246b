//! Load for the TLS and Unix-socket scenarios; prints one JSON line on stdout.
//!
//! The TLS client offers TLS 1.3 only and one cipher suite (`TLS13_AES_128_GCM_SHA256`, ring),
//! so every server it is pointed at runs the same cryptography.
//!
//! ```text
//! tls_client bulk TARGET [--ca FILE] [--connections 10] [--pipeline 4] [--size 65536]
//!                        [--duration 5] [--warmup 1] [--server-pid PID]
//! tls_client handshakes IP:PORT --ca FILE [--resume] [--concurrency 4] [--duration 5]
//!                        [--warmup 1] [--server-pid PID]
//! tls_client hold IP:PORT --ca FILE --count N
//! ```
//!
//! `TARGET` is `tls://IP:PORT`, `tcp://HOST:PORT` or `unix:PATH`. `bulk` keeps `--pipeline`
//! messages of `--size` bytes in flight on each connection and reports `mb_per_s` and
//! `msgs_per_s` over the window. `handshakes` runs connect, handshake, a 1-byte echo and a
//! close_notify, `--concurrency` at a time, and reports `per_s` and how many were resumed
//! (`--resume` keeps a session cache; without it every handshake is a full one). `hold` opens
//! `--count` TLS connections (handshake, no data), prints `{"opened": N}`, and keeps them
//! until its stdin closes.

use std::{
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
use serde_json::json;
use switchboard_benches::{cpu_seconds, parse_seconds, raise_nofile, Args};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn client_config(ca: &str, resume: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("usable CA");
    }
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256],
        ..rustls::crypto::ring::default_provider()
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = if resume {
        rustls::client::Resumption::in_memory_sessions(256)
    } else {
        rustls::client::Resumption::disabled()
    };
    Arc::new(config)
}

async fn tls_connect(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").expect("server name");
    connector.connect(name, tcp).await
}

async fn open(target: &str, ca: Option<&str>) -> io::Result<Box<dyn Io>> {
    if let Some(addr) = target.strip_prefix("tls://") {
        let config = client_config(ca.expect("--ca FILE for tls://"), false);
        let connector = tokio_rustls::TlsConnector::from(config);
        let addr: SocketAddr = addr.parse().expect("checked by check_target");
        Ok(Box::new(tls_connect(addr, &connector).await?))
    } else if let Some(addr) = target.strip_prefix("tcp://") {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(Box::new(tcp))
    } else if let Some(path) = target.strip_prefix("unix:") {
        Ok(Box::new(tokio::net::UnixStream::connect(path).await?))
    } else {
        unreachable!("check_target lets only tls://, tcp:// and unix: targets through")
    }
}

/// The measured window: `warmup` from now, `duration` long.
fn window(warmup: Duration, duration: Duration) -> (Instant, Instant) {
    let start = Instant::now() + warmup;
    (start, start + duration)
}

/// One connection of `bulk`: a writer that keeps `pipeline` messages owed, a reader that
/// counts each `size` bytes back as a message (counted if it completes inside the window).
async fn bulk_one(
    stream: Box<dyn Io>,
    size: usize,
    pipeline: usize,
    (start, end): (Instant, Instant),
    done: Arc<AtomicU64>,
) -> io::Result<()> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let credit = Arc::new(tokio::sync::Semaphore::new(pipeline));
    let write = {
        let credit = credit.clone();
        tokio::spawn(async move {
            let payload = vec![0x5au8; size];
            loop {
                let Ok(permit) = credit.acquire().await else {
                    return;
                };
                permit.forget();
                if writer.write_all(&payload).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
            }
        })
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut partial = 0usize;
    let result = loop {
        let now = Instant::now();
        if now >= end {
            break Ok(());
        }
        let n = match tokio::time::timeout_at(end.into(), reader.read(&mut buf)).await {
            Err(_) => break Ok(()),
            Ok(Ok(0)) => break Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => break Err(e),
        };
        partial += n;
        let now = Instant::now();
        while partial >= size {
            partial -= size;
            if now >= start && now < end {
                done.fetch_add(1, Ordering::Relaxed);
            }
            credit.add_permits(1);
        }
    };
    credit.close();
    write.abort();
    result
}

fn cpu_window(
    pid: Option<u32>,
    (start, end): (Instant, Instant),
) -> tokio::task::JoinHandle<Option<f64>> {
    tokio::spawn(async move {
        let pid = pid?;
        tokio::time::sleep_until(start.into()).await;
        let a = cpu_seconds(pid).ok()?;
        tokio::time::sleep_until(end.into()).await;
        Some(cpu_seconds(pid).ok()? - a)
    })
}

const USAGE: &str =
    "usage: tls_client bulk TARGET [--ca FILE] [--connections 10] [--pipeline 4] [--size 65536]
                       [--duration 5] [--warmup 1] [--server-pid PID]
       tls_client handshakes IP:PORT --ca FILE [--resume] [--concurrency 4] [--duration 5]
                       [--warmup 1] [--server-pid PID]
       tls_client hold IP:PORT --ca FILE --count N
TARGET is tls://IP:PORT, tcp://HOST:PORT or unix:PATH";

/// `tls_client MODE TARGET [options]`: the mode, the target and the mode's options; exits with
/// the usage (status 2) when one is missing or not the mode's, 0 for `--help`.
fn mode_target_options() -> (String, String, Args) {
    let all: Vec<String> = std::env::args().skip(1).collect();
    if all.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        std::process::exit(0);
    }
    let common = ["--duration", "--warmup", "--server-pid", "--ca"];
    let (flags, valued): (&[&str], Vec<&str>) = match all.first().map(String::as_str) {
        Some("bulk") => (
            &[],
            [&common[..], &["--connections", "--pipeline", "--size"]].concat(),
        ),
        Some("handshakes") => (&["--resume"], [&common[..], &["--concurrency"]].concat()),
        Some("hold") => (&[], [&common[..], &["--count"]].concat()),
        Some(other) => {
            eprintln!("`{other}` is not a mode (bulk, handshakes, hold)\n\n{USAGE}");
            std::process::exit(2);
        }
        None => {
            eprintln!("a mode comes first\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let Some(target) = all.get(1).filter(|t| !t.starts_with("--")) else {
        eprintln!("the target comes second\n\n{USAGE}");
        std::process::exit(2);
    };
    if let Err(problem) = check_target(&all[0], target) {
        eprintln!("{problem}\n\n{USAGE}");
        std::process::exit(2);
    }
    let options = Args::from_vec(all[2..].to_vec());
    options.check(USAGE, flags, &valued);
    // TLS needs the CA to trust: every mode but a bulk run over plain TCP or a Unix socket.
    if (all[0] != "bulk" || target.starts_with("tls://")) && options.value("--ca").is_none() {
        eprintln!("--ca FILE is needed for TLS\n\n{USAGE}");
        std::process::exit(2);
    }
    (all[0].clone(), target.clone(), options)
}

/// Whether `target` has the form `mode` takes: `bulk` a `tls://` or `tcp://` address or a
/// `unix:` path, the others a bare `IP:PORT` (they always speak TLS). A `tcp://` host may be a
/// name (the connect resolves it); the TLS paths take an address.
fn check_target(mode: &str, target: &str) -> Result<(), String> {
    let address = |addr: &str| {
        addr.parse::<SocketAddr>()
            .map(drop)
            .map_err(|_| format!("`{target}`: IP:PORT must be an IP address and a port"))
    };
    if mode != "bulk" {
        return address(target);
    }
    if let Some(addr) = target.strip_prefix("tls://") {
        address(addr)
    } else if let Some(addr) = target.strip_prefix("tcp://") {
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
            _ => Err(format!(
                "`{target}`: tcp://HOST:PORT needs a host and a port"
            )),
        }
    } else if target
        .strip_prefix("unix:")
        .is_some_and(|path| !path.is_empty())
    {
        Ok(())
    } else {
        Err(format!(
            "`{target}`: TARGET is tls://IP:PORT, tcp://HOST:PORT or unix:PATH"
        ))
    }
}

fn main() -> io::Result<()> {
    let (mode, target, args) = mode_target_options();
    let ca = args.value("--ca").map(str::to_string);
    let seconds = |option: &str, default: &str| {
        parse_seconds(args.value(option).unwrap_or(default)).unwrap_or_else(|problem| {
            eprintln!("{option}: {problem}\n\n{USAGE}");
            std::process::exit(2);
        })
    };
    let duration = seconds("--duration", "5");
    let warmup = seconds("--warmup", "1");
    let server_pid: Option<u32> = args.value("--server-pid").map(|p| {
        p.parse().unwrap_or_else(|_| {
            eprintln!("--server-pid takes a process id\n\n{USAGE}");
            std::process::exit(2);
        })
    });
    raise_nofile()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async move {
        match mode.as_str() {
            "bulk" => {
                let connections: usize = args.get("--connections", 10);
                let pipeline: usize = args.get("--pipeline", 4).max(1);
                let size: usize = args.get("--size", 64 * 1024).max(1);
                let mut streams = Vec::new();
                for _ in 0..connections {
                    match open(&target, ca.as_deref()).await {
                        Ok(stream) => streams.push(stream),
                        Err(error) => {
                            eprintln!("tls_client: {target}: {error}");
                            std::process::exit(1);
                        }
                    }
                }
                let span = window(warmup, duration);
                let cpu = cpu_window(server_pid, span);
                let done = Arc::new(AtomicU64::new(0));
                let tasks: Vec<_> = streams
                    .into_iter()
                    .map(|s| tokio::spawn(bulk_one(s, size, pipeline, span, done.clone())))
                    .collect();
                let mut errors = 0;
                for task in tasks {
                    if !matches!(task.await, Ok(Ok(()))) {
                        errors += 1;
                    }
                }
                let messages = done.load(Ordering::Relaxed) as f64;
                let secs = duration.as_secs_f64();
                json!({
                    "messages": messages,
                    "msgs_per_s": messages / secs,
                    "mb_per_s": messages * size as f64 / 1e6 / secs,
                    "errors": errors,
                    "server_cpu_s": cpu.await.ok().flatten(),
                })
            }
            "handshakes" => {
                let addr: SocketAddr = target.parse().expect("checked by check_target");
                let resume = args.flag("--resume");
                let concurrency: usize = args.get("--concurrency", 4).max(1);
                let connector = tokio_rustls::TlsConnector::from(client_config(
                    ca.as_deref().expect("--ca FILE"),
                    resume,
                ));
                let span = window(warmup, duration);
                let cpu = cpu_window(server_pid, span);
                let (done, resumed, errors) = (
                    Arc::new(AtomicU64::new(0)),
                    Arc::new(AtomicU64::new(0)),
                    Arc::new(AtomicU64::new(0)),
                );
                let tasks: Vec<_> = (0..concurrency)
                    .map(|_| {
                        let (connector, done, resumed, errors) = (
                            connector.clone(),
                            done.clone(),
                            resumed.clone(),
                            errors.clone(),
                        );
                        tokio::spawn(async move {
                            while Instant::now() < span.1 {
                                let one = async {
                                    let mut tls = tls_connect(addr, &connector).await?;
                                    tls.write_all(b"x").await?;
                                    tls.flush().await?;
                                    let mut back = [0u8; 1];
                                    tls.read_exact(&mut back).await?;
                                    let kind = tls.get_ref().1.handshake_kind();
                                    tls.shutdown().await?;
                                    io::Result::Ok(kind == Some(rustls::HandshakeKind::Resumed))
                                };
                                let outcome = one.await;
                                let now = Instant::now();
                                if now < span.0 || now >= span.1 {
                                    continue;
                                }
                                match outcome {
                                    Ok(was_resumed) => {
                                        done.fetch_add(1, Ordering::Relaxed);
                                        resumed
                                            .fetch_add(u64::from(was_resumed), Ordering::Relaxed);
                                    }
                                    Err(_) => {
                                        errors.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    let _ = task.await;
                }
                let n = done.load(Ordering::Relaxed) as f64;
                json!({
                    "handshakes": n,
                    "per_s": n / duration.as_secs_f64(),
                    "resumed": resumed.load(Ordering::Relaxed),
                    "errors": errors.load(Ordering::Relaxed),
                    "server_cpu_s": cpu.await.ok().flatten(),
                })
            }
            "hold" => {
                let addr: SocketAddr = target.parse().expect("checked by check_target");
                let count: usize = args.get("--count", 1000);
                let connector = tokio_rustls::TlsConnector::from(client_config(
                    ca.as_deref().expect("--ca FILE"),
                    false,
                ));
                let mut held = Vec::with_capacity(count);
                let mut pending = futures::stream::FuturesUnordered::new();
                let mut started = 0;
                use futures::StreamExt;
                while started < count || !pending.is_empty() {
                    while started < count && pending.len() < 64 {
                        pending.push(tls_connect(addr, &connector));
                        started += 1;
                    }
                    if let Some(Ok(stream)) = pending.next().await {
                        held.push(stream);
                    }
                }
                println!("{}", json!({"opened": held.len()}));
                // Held until the runner closes stdin.
                let mut stdin = tokio::io::stdin();
                let mut sink = [0u8; 64];
                while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
                drop(held);
                return None;
            }
            other => panic!("unknown mode {other}"),
        }
        .into()
    });
    if let Some(report) = report {
        println!("{report}");
    }
    Ok(())
}
