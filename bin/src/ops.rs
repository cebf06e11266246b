//! Operating a running `serve`: the `/metrics` endpoint, the admin socket, socket activation,
//! and the address syntax `ctl` and `top` share.
//!
//! `/metrics` is served with hyper (HTTP/1 only): one endpoint needs neither routing nor
//! middleware, hyper builds in a fraction of actix-web's time, and it runs on the actix
//! system's own tokio runtime, so no second runtime or thread is started.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::{body::Bytes, Method, Request, Response, StatusCode};
use switchboard::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE};

/// Most scrapes answered at once; more wait in the kernel backlog.
const MAX_SCRAPERS: usize = 16;

/// Binds `addr` and answers `GET /metrics` from `metrics` until the process exits; returns
/// the bound address.
pub(crate) async fn serve_metrics(
    addr: SocketAddr,
    metrics: Metrics,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let local = listener.local_addr()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPERS));
    actix_rt::spawn(async move {
        // A server's accept loop: it runs for the life of the process.
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "metrics: accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            actix_rt::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, Infallible>(answer(request, &metrics).await) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                if let Err(error) = served {
                    tracing::debug!(%error, "metrics: connection ended with an error");
                }
                drop(permit);
            });
        }
    });
    Ok(local)
}

async fn answer(
    request: Request<hyper::body::Incoming>,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    let reply = |status, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a response from fixed parts")
    };
    match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => reply(
            StatusCode::OK,
            OPENMETRICS_CONTENT_TYPE,
            metrics.render().await,
        ),
        (_, "/metrics") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "try /metrics\n".into()),
    }
}

/// Where an admin socket is: a Unix path, or `tcp:HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AdminAddr {
    Unix(std::path::PathBuf),
    Tcp(String),
}

impl AdminAddr {
    pub(crate) fn parse(text: &str) -> AdminAddr {
        match text.strip_prefix("tcp:") {
            Some(addr) => AdminAddr::Tcp(addr.to_string()),
            None => AdminAddr::Unix(text.into()),
        }
    }
}

impl std::fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminAddr::Unix(path) => write!(f, "{}", path.display()),
            AdminAddr::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

/// A blocking admin client: one command, one reply (as `ctl` and `top` use it).
pub(crate) struct AdminClient {
    writer: Box<dyn std::io::Write + Send>,
    reader: Box<dyn std::io::BufRead + Send>,
}

impl AdminClient {
    /// Connects, with reads bounded by `timeout`.
    pub(crate) fn connect(addr: &AdminAddr, timeout: Duration) -> anyhow::Result<AdminClient> {
        use std::io::BufReader;
        match addr {
            AdminAddr::Unix(path) => {
                let stream = std::os::unix::net::UnixStream::connect(path).with_context(|| {
                    format!("cannot connect to the admin socket {}", path.display())
                })?;
                stream.set_read_timeout(Some(timeout))?;
                Ok(AdminClient {
                    writer: Box::new(stream.try_clone()?),
                    reader: Box::new(BufReader::new(stream)),
                })
            }
            AdminAddr::Tcp(target) => {
                let stream = std::net::TcpStream::connect(target.as_str())
                    .with_context(|| format!("cannot connect to the admin socket tcp:{target}"))?;
                stream.set_read_timeout(Some(timeout))?;
                stream.set_nodelay(true)?;
                Ok(AdminClient {
                    writer: Box::new(stream.try_clone()?),
                    reader: Box::new(BufReader::new(stream)),
                })
            }
        }
    }

    /// Sends `command` and reads its reply: the lines of a text block (without the empty line
    /// that ends it), one JSON line, or one `error: ...` line.
    pub(crate) fn call(&mut self, command: &str) -> anyhow::Result<Vec<String>> {
        let command = command.trim();
        writeln!(self.writer, "{command}").context("the admin connection is lost")?;
        self.writer
            .flush()
            .context("the admin connection is lost")?;
        let json = command.split_whitespace().any(|w| w == "--json");
        let mut lines = Vec::new();
        // Bounded by the server's reply (a listing has one line per session) and by the read
        // timeout of each line.
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .context("no reply from the admin socket")?;
            if n == 0 {
                anyhow::bail!("the admin socket closed the connection");
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            if lines.is_empty() && (json || line.starts_with("error: ")) {
                return Ok(vec![line]);
            }
            if line.is_empty() {
                return Ok(lines);
            }
            lines.push(line);
        }
    }
}

/// Listening sockets passed by systemd's socket activation (`LISTEN_FDS`, `LISTEN_PID`,
/// `LISTEN_FDNAMES`), TCP or Unix, each with its name; the variables are removed so no child
/// inherits them. Must run before any thread starts (it changes the environment).
pub(crate) fn activated_listeners() -> anyhow::Result<Vec<(String, switchboard::StdListener)>> {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|n| n.split(':').map(String::from).collect())
        .unwrap_or_default();
    std::env::remove_var("LISTEN_FDNAMES");
    let mut fds = listenfd::ListenFd::from_env();
    let mut out = Vec::new();
    for index in 0..fds.len() {
        let not_a_listener = || {
            format!(
                "socket-activation descriptor {} is not a listening TCP or Unix socket",
                index + 3
            )
        };
        let Some(raw) = fds.take_raw_fd(index).with_context(not_a_listener)? else {
            continue;
        };
        // SAFETY: socket activation passes these descriptors to this process to own, and
        // `take_raw_fd` gives each index out once.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // The same check and the same adopt path as the sockets of a hand-over.
        let listener = switchboard::StdListener::from_fd(fd).with_context(not_a_listener)?;
        let name = names
            .get(index)
            .cloned()
            .unwrap_or_else(|| format!("fd{}", index + 3));
        out.push((name, listener));
    }
    Ok(out)
}

use std::io::Write as _;
