//! `switchboard connect`: an interactive client on a [`Connector`] session.
//!
//! The session runs on the main arbiter with a [`Printer`] handler that writes received data to
//! stdout as it arrives. Stdin lines come from [`crate::stdin`] and go out as [`Write`]
//! messages; a write refused because the buffer is full waits for a [`Flush`] and is retried,
//! so a fast pipe into stdin is paced by the connection.
//!
//! When stdin ends: flush, wait until the server has been quiet for `--grace` (at most ten
//! times that), then close gracefully. The wait is needed because a closing session no longer
//! reads (the library has no half-close that shuts only the write side while reading on).

use std::{
    io::Write as _,
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use actix::Addr;
use anyhow::bail;
use bytes::Bytes;
use switchboard::{
    Conn, Connector, DisconnectFromHost, DisconnectReason, Flush, Session, SessionCodec,
    SessionError, SessionHandler, SessionInfo, Write,
};
use switchboard_codec::{Frames, Lines, Raw};
use tokio::sync::mpsc;

use crate::cli::{ClientOptions, CodecKind, ConnectArgs};

/// Runs the client until the server closes or stdin ends.
pub(crate) fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    actix_rt::System::new().block_on(async move {
        match args.codec {
            CodecKind::Lines => client(&args, Lines::new(), true).await,
            CodecKind::Frames => client(&args, Frames::new(), true).await,
            CodecKind::Raw => client(&args, Raw, false).await,
        }
    })
}

/// Prints what arrives; tells the main task when the session ends.
struct Printer {
    /// Print a `\n` after each item (lines and frames), or not (raw bytes).
    newline: bool,
    /// When data last arrived, in milliseconds since `start`.
    last_read: Arc<AtomicU64>,
    start: Instant,
    ended: Option<mpsc::UnboundedSender<DisconnectReason>>,
}

impl<C> SessionHandler<C> for Printer
where
    C: SessionCodec,
    C::Item: Into<Bytes>,
{
    fn connected(&mut self, conn: &mut Conn<'_, C, Self>) {
        eprintln!("connected to {}", conn.peer_addr());
    }

    fn ready_read(&mut self, item: C::Item, _conn: &mut Conn<'_, C, Self>) {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_read.store(elapsed, Ordering::Relaxed);
        let data: Bytes = item.into();
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(&data);
        if self.newline {
            let _ = stdout.write_all(b"\n");
        }
        let _ = stdout.flush();
    }

    fn disconnected(&mut self, reason: &DisconnectReason, _info: &SessionInfo) {
        if let Some(ended) = self.ended.take() {
            let _ = ended.send(reason.clone());
        }
    }
}

async fn client<C>(args: &ConnectArgs, codec: C, newline: bool) -> anyhow::Result<ExitCode>
where
    C: SessionCodec + Send,
    C::Item: Into<Bytes>,
{
    let (ended_tx, mut ended) = mpsc::unbounded_channel();
    let start = Instant::now();
    let last_read = Arc::new(AtomicU64::new(0));
    let printer = Printer {
        newline,
        last_read: last_read.clone(),
        start,
        ended: Some(ended_tx),
    };
    let (connector, target) = connector_for(&args.target, &args.client)?;
    let session = connector
        .timeout(args.timeout)
        .connect(target, codec, printer)
        .await?;
    let mut stdin = crate::stdin::lines()?;

    loop {
        tokio::select! {
            line = stdin.recv() => match line {
                Some(mut line) => {
                    if !newline {
                        line.push(b'\n');
                    }
                    if let Err(error) = send(&session, Bytes::from(line)).await {
                        match error {
                            // The session is ending: its `disconnected` comes next.
                            SessionError::Gone | SessionError::Closing => {}
                            SessionError::Encode(error) => {
                                tracing::warn!(%error, "line not sent");
                            }
                            other => bail!("cannot send: {other}"),
                        }
                    }
                }
                None => break,
            },
            reason = ended.recv() => return finish(reason),
        }
    }

    // Stdin ended: flush, give the server a moment to answer, close.
    let _ = session.send(Flush).await;
    let flushed = Instant::now();
    let cap = flushed + args.grace * 10;
    loop {
        let last_read = start + Duration::from_millis(last_read.load(Ordering::Relaxed));
        let quiet_until = (last_read.max(flushed) + args.grace).min(cap);
        if Instant::now() >= quiet_until {
            break;
        }
        tokio::select! {
            reason = ended.recv() => return finish(reason),
            _ = tokio::time::sleep_until(quiet_until.into()) => {}
        }
    }
    session.do_send(DisconnectFromHost);
    match tokio::time::timeout(Duration::from_secs(15), ended.recv()).await {
        Ok(reason) => finish(reason),
        Err(_) => bail!("the connection did not close within 15 s"),
    }
}

/// Writes `data`, waiting for the buffer to drain while it is full.
async fn send<C, H>(session: &Addr<Session<C, H>>, data: Bytes) -> Result<(), SessionError>
where
    C: SessionCodec,
    H: SessionHandler<C>,
{
    loop {
        match session.send(Write(data.clone())).await? {
            Ok(()) => return Ok(()),
            Err(error) if error.is_backpressure() => session.send(Flush).await??,
            Err(error) => return Err(error),
        }
    }
}

fn finish(reason: Option<DisconnectReason>) -> anyhow::Result<ExitCode> {
    let reason = reason.unwrap_or(DisconnectReason::Closed);
    if reason.is_error() {
        bail!("disconnected: {reason}");
    }
    eprintln!("disconnected: {reason}");
    Ok(ExitCode::SUCCESS)
}

/// The connector for `target` and what to connect it to: a `tls://` scheme is split off and
/// turns TLS on (trusting `--ca`, or the Mozilla roots, with `--cert`/`--key` as the client
/// certificate); `--proxy-header` adds the PROXY header. `connect`, `send` and `load` share it.
pub(crate) fn connector_for<'a>(
    target: &'a str,
    options: &ClientOptions,
) -> anyhow::Result<(Connector, &'a str)> {
    let mut connector = Connector::new();
    if let Some(version) = options.proxy_header {
        connector = connector.proxy_header(version);
    }
    let Some(rest) = target.strip_prefix("tls://") else {
        return Ok((connector, target));
    };
    let identity = options.cert.as_deref().zip(options.key.as_deref());
    let tls = match (options.ca.as_deref(), identity) {
        (Some(ca), Some((cert, key))) => {
            switchboard::TlsConnector::with_client_cert(ca, cert, key)?
        }
        (Some(ca), None) => switchboard::TlsConnector::from_ca_file(ca)?,
        (None, _) => switchboard::TlsConnector::webpki_roots(),
    };
    Ok((connector.tls(tls), rest))
}
