//! `switchboard serve`: a [`Listener`] in chat, echo or files mode, with graceful shutdown on
//! SIGINT/SIGTERM.
//!
//! The order of start-up matters to scripts and tests: signal handlers are installed first, then
//! the listener binds, then `listening on IP:PORT` is printed and flushed (exactly once). So a
//! signal sent as soon as that line is read is always handled as a graceful shutdown.
//!
//! Bytes in and out are summed from each session's final counters in its `disconnected`
//! callback, so the summary counts every session that ended, whatever the reason.

mod chat;
mod cluster;
mod echo;
mod files;

use std::{io::Write as _, net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::{bail, Context as _};
use switchboard::{
    admin::Admin, CloseMode, DisconnectReason, Listener, ListenerHandle, SessionConfig,
    SessionInfo, TlsAcceptor, TlsResumption,
};
use switchboard_codec::{Frames, Lines, Raw};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::{
    cli::{CodecKind, Mode, ServeArgs},
    ops::AdminAddr,
};

/// Runs the server until SIGINT or SIGTERM.
pub(crate) fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let codec = match (args.mode, args.codec) {
        (Mode::Chat, None | Some(CodecKind::Lines)) => CodecKind::Lines,
        (Mode::Chat, Some(other)) => bail!(
            "chat mode is line based: it takes --codec lines only, not {}",
            other.name()
        ),
        (Mode::Files, None | Some(CodecKind::Frames)) => CodecKind::Frames,
        (Mode::Files, Some(other)) => bail!(
            "files mode speaks its own framed protocol: it takes --codec frames only, not {}",
            other.name()
        ),
        (Mode::Echo, codec) => codec.unwrap_or(CodecKind::Lines),
    };
    if args.workers == Some(0) {
        bail!("--workers must be at least 1");
    }
    if args.max_connections == Some(0) {
        bail!("--max-connections must be at least 1");
    }
    if args.max_connections_per_ip == Some(0) {
        bail!("--max-connections-per-ip must be at least 1 (leave it out to turn it off)");
    }
    if let Err(error) = switchboard::raise_fd_limit() {
        tracing::warn!(%error, "cannot raise the open-file limit");
    }
    // Before any thread starts: this reads and removes the socket-activation variables.
    let activated = crate::ops::activated_listeners()?;
    let takeover = match &args.takeover {
        Some(_) if !activated.is_empty() => {
            bail!("--takeover cannot be used with sockets passed by socket activation")
        }
        Some(path) => Some(crate::takeover::receive(path, &args)?),
        None => None,
    };
    actix_rt::System::new().block_on(serve(args, codec, activated, takeover))
}

async fn serve(
    args: ServeArgs,
    codec: CodecKind,
    activated: Vec<(String, switchboard::StdListener)>,
    mut takeover: Option<crate::takeover::Received>,
) -> anyhow::Result<ExitCode> {
    // Before binding: a signal that comes once `listening on` is out must find a handler.
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?;

    let mut config = SessionConfig::default();
    if args.idle_timeout.is_zero() {
        config = config.with_idle_timeout(None);
    } else {
        config = config.with_idle_timeout(Some(args.idle_timeout));
    }
    config =
        config.with_frame_timeout((!args.frame_timeout.is_zero()).then_some(args.frame_timeout));
    if args.slow_consumer_timeout.is_zero() {
        bail!("--slow-consumer-timeout must be above 0");
    }
    config = config.with_slow_consumer_timeout(args.slow_consumer_timeout);
    if args.mode == Mode::Files {
        // A turn of an upload writes and hashes up to frames_per_turn × 64 KiB. A session that
        // always has a full turn wakes itself again at once, and the worker's current-thread
        // runtime polls for other sockets' readiness only every 61 task polls: with the default
        // 64 frames a small upload on the same worker as a big one waited seconds (debug build).
        config = config.with_frames_per_turn(4);
        // A 64 KiB read ends inside nearly every 64 KiB data frame, and the next read's buffer
        // (the last one is still shared with frames queued for the disk) starts with a copy of
        // that partial frame: a memmove of about half of every upload on the worker. Reads of
        // four frames copy once per read, not per frame (perf, 1 GiB: 470 samples to 41).
        config = config.with_read_chunk(4 * crate::protocol::CHUNK);
    }
    config = config.with_handshake_timeout(args.handshake_timeout);
    let mut listen = args.listen.iter();
    let builder = match takeover.as_mut() {
        // A hand-over: the old server's sockets replace --listen (checked to be the same).
        Some(received) => {
            listen.by_ref().for_each(drop);
            Listener::adopt(std::mem::take(&mut received.listen))
        }
        // Socket activation: the sockets systemd (or a parent) bound replace --bind/--port.
        None if !activated.is_empty() => {
            for (name, _) in &activated {
                tracing::info!(name, "adopting a socket passed by socket activation");
            }
            Listener::adopt(activated.into_iter().map(|(_, socket)| socket))
        }
        None => match listen.next() {
            Some(first) => Listener::bind(first.as_str()),
            None => Listener::bind(SocketAddr::new(args.bind, args.port)),
        },
    };
    let mut builder = builder.session_config(config.clone());
    for more in listen {
        builder = builder.also_bind(more.as_str());
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let acceptor = match &args.tls_client_ca {
            Some(ca) => TlsAcceptor::with_client_auth(cert, key, ca)?,
            None => TlsAcceptor::from_pem_files(cert, key)?,
        };
        let alpn: Vec<&str> = args.alpn.iter().map(String::as_str).collect();
        let resumption = if args.tls_no_resumption {
            TlsResumption::Off
        } else {
            TlsResumption::Tickets
        };
        builder = builder.tls(acceptor.with_alpn(&alpn).with_resumption(resumption)?);
    }
    if args.proxy_protocol {
        builder = builder.proxy_protocol(args.proxy_from.iter().copied());
    }
    if let Some(sockets) = args.reuseport {
        builder = builder.reuse_port(usize::from(sockets));
    }
    let tls = args.tls_cert.is_some();
    if let Some(workers) = args.workers {
        builder = builder.workers(workers);
    }
    if args.spin_us > 0 {
        builder = builder.worker_spin(Duration::from_micros(args.spin_us));
    }
    builder = builder.accept_on_worker(args.accept_on_worker);
    let mut buffers = switchboard::SocketBuffers::new();
    if let Some(bytes) = args.recv_buffer {
        buffers = buffers.receive(bytes as usize);
    }
    if let Some(bytes) = args.send_buffer {
        buffers = buffers.send(bytes as usize);
    }
    builder = builder.socket_buffers(buffers);
    if let Some(max) = args.max_connections {
        builder = builder.max_connections(max);
    }
    builder = builder.max_connections_per_ip(args.max_connections_per_ip);
    let max_line = args.max_frame.unwrap_or(Lines::DEFAULT_MAX_LENGTH);
    let max_frame = args.max_frame.unwrap_or(Frames::DEFAULT_MAX_FRAME_LENGTH);

    if args.cluster.is_some() && args.mode != Mode::Chat {
        bail!("--cluster works in chat mode only");
    }
    let mut cluster_node = None;
    let handle: ListenerHandle = match (args.mode, codec) {
        (Mode::Chat, _) if args.cluster.is_some() => {
            let url = args.cluster.as_deref().unwrap_or_default();
            let name =
                (args.node_name.clone()).unwrap_or_else(|| format!("node-{}", std::process::id()));
            let (handle, node) = cluster::start(builder, max_line, url, &name).await?;
            cluster_node = Some(node);
            handle
        }
        (Mode::Chat, _) => chat::start(builder, max_line)?,
        (Mode::Echo, CodecKind::Lines) => echo::start(builder, Lines::with_max_length(max_line))?,
        (Mode::Echo, CodecKind::Frames) => {
            echo::start(builder, Frames::with_max_frame_length(max_frame))?
        }
        (Mode::Echo, CodecKind::Raw) => echo::start(builder, Raw)?,
        (Mode::Files, _) => files::start(builder, &args.dir, max_frame)?,
    };

    // One line per address: the sockets of --reuseport share theirs.
    let mut printed = Vec::new();
    for addr in handle.addresses() {
        if !printed.contains(&addr) {
            print_line(&format!("listening on {}", scheme_address(addr, tls)));
            printed.push(addr);
        }
    }
    let metrics = switchboard::metrics::Metrics::new();
    metrics.watch(&handle);
    let admin = Admin::with_details(
        &handle,
        env!("CARGO_PKG_VERSION"),
        Some(config),
        args.drain_timeout,
    )
    .with_metrics(metrics.clone());
    // In cluster mode `info` also shows the nodes, the cluster count and the bus.
    let admin = match &cluster_node {
        Some(node) => {
            let node = node.clone();
            admin.with_info_section("cluster", move || cluster::info_section(&node))
        }
        None => admin,
    };
    // Held for the life of the server.
    let taken_admin = takeover.as_mut().and_then(|received| received.admin.take());
    let admin_socket = match (taken_admin, args.admin.as_deref().map(AdminAddr::parse)) {
        (Some((path, socket)), _) => {
            let socket = admin
                .serve_adopted(socket)
                .with_context(|| format!("cannot serve the admin socket {path} taken over"))?;
            print_line(&format!("admin on {path}"));
            Some(socket)
        }
        (None, None) => None,
        (None, Some(AdminAddr::Tcp(target))) => {
            let socket = admin
                .serve_tcp(&target)
                .with_context(|| format!("cannot open the admin socket tcp:{target}"))?;
            print_line(&format!("admin on tcp:{}", socket.local_addr()));
            Some(socket)
        }
        (None, Some(AdminAddr::Unix(path))) => {
            let socket = admin
                .serve_unix(&path)
                .with_context(|| format!("cannot open the admin socket {}", path.display()))?;
            print_line(&format!("admin on {}", path.display()));
            Some(socket)
        }
    };
    if let Some(addr) = args.metrics {
        let bound = crate::ops::serve_metrics(addr, metrics).await?;
        print_line(&format!("metrics on http://{bound}/metrics"));
    }
    tracing::info!(
        addresses = handle.addresses().len(),
        mode = args.mode.name(),
        codec = codec.name(),
        workers = handle.pool().len(),
        "serving"
    );
    if let Some(received) = takeover {
        // Accepting here already: now the old server may stop. Blocking, so on its own thread.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(received.commit());
        });
        match rx.await {
            Ok(Ok(line)) => print_line(&line),
            Ok(Err(error)) => tracing::warn!(
                error = %format!("{error:#}"),
                "the old server did not confirm the hand-over; serving anyway (it may still accept too)"
            ),
            Err(_) => tracing::warn!("the hand-over commit did not finish; serving anyway"),
        }
    }
    match &cluster_node {
        Some(node) => cluster::forward_stdin(node.clone()),
        None if args.mode == Mode::Chat => chat::forward_stdin(handle.registry().clone()),
        None => {}
    }

    let report = tokio::select! {
        which = next_signal(&mut interrupt, &mut terminate) => {
            tracing::info!(
                signal = which,
                drain_timeout = ?args.drain_timeout,
                "shutting down: no longer accepting, closing sessions"
            );
            let shutdown = handle.shutdown(args.drain_timeout);
            tokio::pin!(shutdown);
            tokio::select! {
                report = &mut shutdown => report,
                which = next_signal(&mut interrupt, &mut terminate) => {
                    tracing::warn!(signal = which, "second signal: aborting the remaining sessions");
                    handle
                        .registry()
                        .close_all(DisconnectReason::Shutdown, CloseMode::Abort);
                    shutdown.await
                }
            }
        }
        report = admin.drained() => {
            tracing::info!("drained by the admin socket");
            report
        }
    };

    if let Some(admin_socket) = &admin_socket {
        // Closing removes a Unix socket's file; threads are not unwound at exit.
        let _ = admin_socket.address().send(switchboard::Close).await;
    }
    if let Some(node) = &cluster_node {
        node.shutdown().await;
    }
    let stats = handle.registry().stats();
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "shutdown: served {} connections, {} bytes in, {} bytes out, drained {}, aborted {}, unflushed {} bytes, {} messages dropped for slow consumers",
        stats.connected,
        stats.bytes_in,
        stats.bytes_out,
        report.drained,
        report.aborted,
        report.unflushed_bytes,
        stats.broadcasts_dropped,
    );
    let _ = stdout.flush();
    if stats.live > 0 {
        tracing::warn!(live = stats.live, "sessions still registered at exit");
    }
    tracing::info!(elapsed = ?report.elapsed, "stopped");
    Ok(ExitCode::SUCCESS)
}

fn print_line(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

async fn next_signal(interrupt: &mut Signal, terminate: &mut Signal) -> &'static str {
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

/// An address as `listening on` prints it: plain TCP as `IP:PORT` (scripts parse it), the rest
/// with their scheme (`tls://IP:PORT`, `unix:/path`, `tls+unix:/path`).
fn scheme_address(addr: &switchboard::Address, tls: bool) -> String {
    match (addr, tls) {
        (switchboard::Address::Ip(ip), false) => ip.to_string(),
        (switchboard::Address::Ip(ip), true) => format!("tls://{ip}"),
        (other, false) => other.to_string(),
        (other, true) => format!("tls+{other}"),
    }
}

/// How long a served session lasted, for logs.
pub(crate) fn lifetime(info: &SessionInfo) -> Duration {
    info.connected_at.elapsed().unwrap_or_default()
}
