//! `switchboard send`: uploads files to `serve --mode files` (protocol in [`crate::protocol`]).
//!
//! Every file gets its own connection and [`Uploader`] handler, up to `--parallel` at once, on a
//! small [`WorkerPool`]. The handler pumps the file from inside the session: it reads and writes
//! 64 KiB chunks until [`Conn::write`] answers [`SessionError::WriteBufferFull`], keeps the
//! refused chunk, and carries on from `bytes_written` / `write_buffer_drained`. The file is
//! read and hashed by a thread of the upload's own ([`read_ahead`]), [`READ_AHEAD`] chunks
//! ahead of the socket, so hashing overlaps sending and a slow disk never blocks the worker;
//! when the session finds no chunk ready, the thread wakes it with [`Invoke`]. Memory per
//! upload is the write buffer's high watermark plus the chunks read ahead, whatever the file's
//! size.
//!
//! Files are checked before anything is sent: a missing or unreadable file, or a name the server
//! would refuse, fails the command at once. If no upload could even connect, the connection
//! error is the command's error.

use std::{
    fs::File,
    io::{IsTerminal, Read as _, Write as _},
    path::PathBuf,
    process::ExitCode,
    sync::mpsc::{self, TryRecvError},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures::StreamExt as _;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use switchboard::{
    Conn, ConnectError, Connector, DisconnectReason, Invoke, SessionError, SessionHandler,
    SessionInfo, WorkerPool,
};
use switchboard_codec::Frames;
use tokio::sync::oneshot;

use crate::{
    cli::SendArgs,
    protocol::{self, Header, Reply, CHUNK},
};

/// A file to upload, checked.
#[derive(Debug, Clone)]
struct Job {
    path: PathBuf,
    name: String,
    size: u64,
}

/// How one upload ended.
enum Outcome {
    /// The server stored it and confirmed this SHA-256.
    Stored(String),
    Failed(String),
    NotConnected(ConnectError),
}

/// Uploads every file; exits 1 if any failed.
pub(crate) fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let jobs = args
        .files
        .iter()
        .map(check_file)
        .collect::<anyhow::Result<Vec<_>>>()?;
    actix_rt::System::new().block_on(send_all(args, jobs))
}

fn check_file(path: &PathBuf) -> anyhow::Result<Job> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    // Opening now catches unreadable files before anything is sent.
    File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no UTF-8 file name", path.display()))?
        .to_string();
    if let Err(reason) = protocol::check_name(&name) {
        bail!(
            "cannot send {}: the server refuses {reason}",
            path.display()
        );
    }
    Ok(Job {
        path: path.clone(),
        name,
        size: meta.len(),
    })
}

async fn send_all(args: SendArgs, jobs: Vec<Job>) -> anyhow::Result<ExitCode> {
    let parallel = usize::from(args.parallel).min(jobs.len()).max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = WorkerPool::new(parallel.min(cores))?;
    // The pool stops its threads when its last clone goes; sessions hold none, so the
    // connector (holding one) lives until every upload is done.
    let (connector, target) = crate::connect::connector_for(&args.target, &args.client)?;
    let target = target.to_string();
    let connector = connector.timeout(args.timeout).pool(pool);
    let total: u64 = jobs.iter().map(|j| j.size).sum();
    let progress = Progress::new(total);
    let started = Instant::now();

    let mut results: Vec<(usize, Outcome)> =
        futures::stream::iter(jobs.iter().cloned().enumerate())
            .map(|(index, job)| {
                let connector = connector.clone();
                let bar = progress.file(&job);
                let target = target.clone();
                async move { (index, upload(&connector, &target, job, bar).await) }
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
    results.sort_by_key(|(index, _)| *index);
    let elapsed = started.elapsed();
    progress.finish();

    if results
        .iter()
        .all(|(_, o)| matches!(o, Outcome::NotConnected(_)))
    {
        if let Some((_, Outcome::NotConnected(error))) = results.into_iter().next() {
            return Err(error.into());
        }
        bail!("nothing was sent");
    }

    let mut stdout = std::io::stdout().lock();
    let mut stored = 0;
    let mut bytes = 0;
    for ((_, outcome), job) in results.iter().zip(&jobs) {
        let _ = match outcome {
            Outcome::Stored(digest) => {
                stored += 1;
                bytes += job.size;
                writeln!(
                    stdout,
                    "ok      {}  {} bytes  sha256 {digest}",
                    job.name, job.size
                )
            }
            Outcome::Failed(reason) => writeln!(stdout, "FAILED  {}: {reason}", job.name),
            Outcome::NotConnected(error) => writeln!(stdout, "FAILED  {}: {error}", job.name),
        };
    }
    let secs = elapsed.as_secs_f64();
    let _ = writeln!(
        stdout,
        "sent {stored} of {} files, {bytes} bytes in {secs:.2} s ({:.1} MiB/s)",
        jobs.len(),
        bytes as f64 / (1024.0 * 1024.0) / secs.max(1e-9),
    );
    let _ = stdout.flush();
    let failed = jobs.len() - stored;
    if failed > 0 {
        bail!("{failed} of {} files failed", jobs.len());
    }
    Ok(ExitCode::SUCCESS)
}

async fn upload(connector: &Connector, target: &str, job: Job, bar: FileProgress) -> Outcome {
    let file = match File::open(&job.path) {
        Ok(file) => file,
        Err(e) => return Outcome::Failed(format!("cannot read {}: {e}", job.path.display())),
    };
    let (done, result) = oneshot::channel();
    let uploader = Uploader {
        header: Header {
            size: job.size,
            name: job.name.clone(),
        },
        file: Some(file),
        chunks: None,
        starved: Arc::new(AtomicBool::new(false)),
        digest: None,
        stage: Stage::AwaitReady,
        held: None,
        bar,
        done: Some(done),
    };
    if let Err(error) = connector.connect(target, Frames::new(), uploader).await {
        return Outcome::NotConnected(error);
    }
    match result.await {
        Ok(Ok(digest)) => Outcome::Stored(digest),
        Ok(Err(reason)) => Outcome::Failed(reason),
        Err(_) => Outcome::Failed("the session ended without a result".into()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `FILE` sent; waiting for `READY`.
    AwaitReady,
    /// Writing data frames.
    Sending,
    /// `END` sent; waiting for `OK`.
    AwaitOk,
    /// The result is out.
    Done,
}

/// Chunks the reading thread may hold ready for the socket.
const READ_AHEAD: usize = 16;

/// What the reading thread hands the session.
enum Read {
    Chunk(Bytes),
    /// Every byte was read; the file's SHA-256.
    Done(String),
    Failed(String),
}

/// Reads `size` bytes of `file` in chunks, hashing them, at most [`READ_AHEAD`] chunks ahead;
/// wakes the session (which set `starved` on finding nothing) with [`Invoke`]. Ends early when
/// the session drops its end.
fn read_ahead(
    mut file: File,
    size: u64,
    chunks: mpsc::SyncSender<Read>,
    starved: Arc<AtomicBool>,
    session: actix::Addr<switchboard::Session<Frames, Uploader>>,
) {
    let mut hasher = Sha256::new();
    let mut left = size;
    let give = |read: Read| {
        let sent = chunks.send(read).is_ok();
        if sent && starved.swap(false, Ordering::SeqCst) {
            session.do_send(Invoke::new(|uploader: &mut Uploader, conn| {
                uploader.pump(conn)
            }));
        }
        sent
    };
    while left > 0 {
        let len = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        // Read into the spare capacity: zeroing the chunk first cost a memset per chunk.
        let mut chunk = Vec::with_capacity(len);
        let failure = match (&mut file).take(len as u64).read_to_end(&mut chunk) {
            Ok(n) if n == len => None,
            Ok(_) => Some("the file got shorter while being sent".to_string()),
            Err(e) => Some(format!("cannot read: {e}")),
        };
        if let Some(reason) = failure {
            give(Read::Failed(reason));
            return;
        }
        hasher.update(&chunk);
        left -= len as u64;
        if !give(Read::Chunk(Bytes::from(chunk))) {
            return;
        }
    }
    give(Read::Done(protocol::hex(&hasher.finalize())));
}

/// One upload, driven from inside its session.
struct Uploader {
    header: Header,
    /// The file, until the reading thread takes it (when the session starts).
    file: Option<File>,
    /// From the reading thread.
    chunks: Option<mpsc::Receiver<Read>>,
    /// Set when the session found no chunk ready and waits for the thread's wake-up.
    starved: Arc<AtomicBool>,
    /// Our SHA-256, once every byte was read.
    digest: Option<String>,
    stage: Stage,
    /// A chunk the write buffer refused; written first when it drains.
    held: Option<Bytes>,
    bar: FileProgress,
    done: Option<oneshot::Sender<Result<String, String>>>,
}

impl Uploader {
    fn complete(&mut self, result: Result<String, String>) {
        self.stage = Stage::Done;
        self.bar.finish();
        if let Some(done) = self.done.take() {
            let _ = done.send(result);
        }
    }

    fn fail(&mut self, reason: String, conn: &mut Conn<'_, Frames, Self>) {
        self.complete(Err(reason));
        conn.abort();
    }

    /// The next read-ahead chunk, `None` when none is ready yet (the thread wakes the session).
    fn next_read(&mut self) -> Option<Read> {
        let chunks = self.chunks.as_ref()?;
        match chunks.try_recv() {
            Ok(read) => return Some(read),
            Err(TryRecvError::Disconnected) => {
                return Some(Read::Failed("the file reader stopped".into()))
            }
            Err(TryRecvError::Empty) => {}
        }
        self.starved.store(true, Ordering::SeqCst);
        // A chunk sent before the flag was seen would otherwise wait for a wake-up that the
        // thread already decided not to send.
        match chunks.try_recv() {
            Ok(read) => Some(read),
            Err(TryRecvError::Disconnected) => Some(Read::Failed("the file reader stopped".into())),
            Err(TryRecvError::Empty) => None,
        }
    }

    /// Writes chunks until the write buffer is full or the file is sent; then `END`. A frame
    /// the buffer refuses is held and written first next time.
    fn pump(&mut self, conn: &mut Conn<'_, Frames, Self>) {
        while self.stage == Stage::Sending {
            let frame = match self.held.take() {
                Some(frame) => frame,
                None => match self.next_read() {
                    Some(Read::Chunk(chunk)) => chunk,
                    // Every byte was read (and written): the digest is final.
                    Some(Read::Done(digest)) => {
                        let end = protocol::encode_end(&digest);
                        self.digest = Some(digest);
                        Bytes::from(end)
                    }
                    Some(Read::Failed(reason)) => return self.fail(reason, conn),
                    None => return,
                },
            };
            // The digest exists only once the data is all written, so this frame is `END`.
            let is_end = self.digest.is_some();
            let len = frame.len() as u64;
            match conn.write(frame.clone()) {
                Ok(()) if is_end => self.stage = Stage::AwaitOk,
                Ok(()) => self.bar.inc(len),
                Err(SessionError::WriteBufferFull { .. }) => {
                    self.held = Some(frame);
                    return;
                }
                Err(e) => return self.fail(format!("cannot send: {e}"), conn),
            }
        }
    }
}

impl SessionHandler<Frames> for Uploader {
    fn connected(&mut self, conn: &mut Conn<'_, Frames, Self>) {
        let Some(file) = self.file.take() else {
            return;
        };
        let (chunks, ready) = mpsc::sync_channel(READ_AHEAD);
        let (size, starved, session) = (self.header.size, self.starved.clone(), conn.address());
        let reader = std::thread::Builder::new()
            .name("switchboard-send-read".into())
            .spawn(move || read_ahead(file, size, chunks, starved, session));
        if let Err(e) = reader {
            return self.fail(format!("cannot start a reading thread: {e}"), conn);
        }
        self.chunks = Some(ready);
        if let Err(e) = conn.write(Bytes::from(self.header.encode())) {
            self.fail(format!("cannot send: {e}"), conn);
        }
    }

    fn ready_read(&mut self, frame: Bytes, conn: &mut Conn<'_, Frames, Self>) {
        let reply = match Reply::parse(&frame) {
            Ok(reply) => reply,
            Err(reason) => return self.fail(reason, conn),
        };
        match (self.stage, reply) {
            (Stage::Done, _) => {}
            (_, Reply::Err(reason)) => {
                self.complete(Err(reason));
                conn.disconnect_from_host();
            }
            (Stage::AwaitReady, Reply::Ready) => {
                self.stage = Stage::Sending;
                self.pump(conn);
            }
            (Stage::AwaitOk, Reply::Ok(theirs)) => {
                let ours = self.digest.clone().unwrap_or_default();
                let result = if theirs == ours {
                    Ok(ours)
                } else {
                    Err(format!(
                        "checksum mismatch: sent {ours}, server confirmed {theirs}"
                    ))
                };
                self.complete(result);
                conn.disconnect_from_host();
            }
            (stage, reply) => {
                self.fail(
                    format!("unexpected `{reply}` from the server ({stage:?})"),
                    conn,
                );
            }
        }
    }

    fn bytes_written(&mut self, _bytes: usize, conn: &mut Conn<'_, Frames, Self>) {
        if self.stage == Stage::Sending {
            self.pump(conn);
        }
    }

    fn write_buffer_drained(&mut self, conn: &mut Conn<'_, Frames, Self>) {
        if self.stage == Stage::Sending {
            self.pump(conn);
        }
    }

    fn disconnected(&mut self, reason: &DisconnectReason, _info: &SessionInfo) {
        if self.stage != Stage::Done {
            self.complete(Err(format!(
                "the connection ended before the server confirmed the file ({reason})"
            )));
        }
    }
}

/// Progress of every upload: indicatif bars on a terminal, otherwise a plain line a second.
struct Progress {
    bars: Option<MultiProgress>,
    sent: Arc<AtomicU64>,
    total: u64,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

/// One file's share of the progress.
struct FileProgress {
    bar: Option<ProgressBar>,
    sent: Arc<AtomicU64>,
}

impl FileProgress {
    fn inc(&self, bytes: u64) {
        self.sent.fetch_add(bytes, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress {
    fn new(total: u64) -> Progress {
        let sent = Arc::new(AtomicU64::new(0));
        if std::io::stdout().is_terminal() {
            return Progress {
                bars: Some(MultiProgress::with_draw_target(ProgressDrawTarget::stdout())),
                sent,
                total,
                ticker: None,
            };
        }
        let ticker = {
            let sent = sent.clone();
            actix_rt::spawn(async move {
                let start = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let done = sent.load(Ordering::Relaxed);
                    let secs = start.elapsed().as_secs_f64();
                    let rate = done as f64 / secs.max(1e-9);
                    let eta = if rate > 0.0 {
                        format!("{:.0} s", total.saturating_sub(done) as f64 / rate)
                    } else {
                        "?".into()
                    };
                    let percent = (done * 100).checked_div(total).unwrap_or(100);
                    let mut stdout = std::io::stdout().lock();
                    let _ = writeln!(
                        stdout,
                        "progress: {} of {} ({percent}%), {}/s, ETA {eta}",
                        HumanBytes(done),
                        HumanBytes(total),
                        HumanBytes(rate as u64),
                    );
                    let _ = stdout.flush();
                }
            })
        };
        Progress {
            bars: None,
            sent,
            total,
            ticker: Some(ticker),
        }
    }

    fn file(&self, job: &Job) -> FileProgress {
        let bar = self.bars.as_ref().map(|multi| {
            let bar = multi.add(ProgressBar::new(job.size));
            let style = ProgressStyle::with_template(
                "{prefix:20!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(job.name.clone());
            bar
        });
        FileProgress {
            bar,
            sent: self.sent.clone(),
        }
    }

    fn finish(self) {
        if let Some(ticker) = self.ticker {
            ticker.abort();
        }
        if let Some(bars) = self.bars {
            let _ = bars.clear();
        }
        let _ = self.total;
    }
}
