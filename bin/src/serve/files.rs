//! Files mode: receives uploads from `switchboard send` (protocol in [`crate::protocol`]).
//!
//! Each connection is one [`Receiver`] on a worker thread; several uploads run at once on
//! different workers. An upload is written to a hidden temporary file in the target directory
//! (`.switchboard-<session>-<n>.part`, created exclusively) and linked to its final name only
//! after its size and SHA-256 match; linking (not renaming) fails instead of replacing a file
//! that appeared meanwhile, so nothing is ever overwritten. The temporary file is removed by
//! [`Incoming`]'s `Drop`: on `ERR`, on a cut-off connection, on shutdown, whatever ends it.
//!
//! Names being uploaded are reserved in a set shared by all sessions, so two concurrent uploads
//! of one name cannot both start. Hashing and file writes run on a thread of the upload's own
//! ([`DiskWriter`]), never on the session's worker: a disk that stalls stalls that upload only,
//! not the other sessions of its worker. At most [`QUEUED_LIMIT`] bytes wait for that thread;
//! above it the session stops taking frames (its `poll_ready`), so TCP pushes back on the
//! sender. The thread hands its result back with [`Invoke`]. Files are not fsynced. It writes
//! through a [`Disk`]: [`LocalDisk`], or in the tests one whose writes can be held.

use std::{
    collections::HashSet,
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write as _},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{self, Poll},
    time::Instant,
};

use futures::task::AtomicWaker;

use anyhow::Context as _;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use switchboard::{
    Conn, DisconnectReason, Invoke, ListenerBuilder, ListenerHandle, Session, SessionHandler,
    SessionInfo,
};
use switchboard_codec::Frames;

use crate::protocol::{self, Header, Reply};

/// Bytes of an upload that may wait for its disk thread before the session stops reading.
const QUEUED_LIMIT: usize = 4 * 1024 * 1024;

/// Prefix and suffix of temporary upload files; left-overs from a crash are removed at start.
const TEMP_PREFIX: &str = ".switchboard-";
const TEMP_SUFFIX: &str = ".part";

/// Where uploads are written: [`LocalDisk`], or in tests a disk that can stall. Generic, not
/// a trait object, so the production path costs what it did before it could be replaced.
trait Disk: Send + Sync + 'static {
    type Writer: io::Write + Send + 'static;
    /// Creates `path`, which must not exist yet.
    fn create(&self, path: &Path) -> io::Result<Self::Writer>;
    /// Flushes and closes what [`create`](Self::create) made.
    fn close(&self, writer: Self::Writer) -> io::Result<()>;
    /// An upload's queue to its disk thread exists (tests watch its size).
    fn watch(&self, queue: &Arc<Queue>) {
        let _ = queue;
    }
}

/// The file system. The buffer only gathers small frames: a frame of [`protocol::CHUNK`] (what
/// `send` writes) or more goes straight to the file, without a copy into the buffer.
struct LocalDisk;

impl Disk for LocalDisk {
    type Writer = BufWriter<File>;

    fn create(&self, path: &Path) -> io::Result<BufWriter<File>> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        Ok(BufWriter::with_capacity(protocol::CHUNK, file))
    }

    fn close(&self, writer: BufWriter<File>) -> io::Result<()> {
        writer.into_inner().map_err(|e| e.into_error())?;
        Ok(())
    }
}

/// What every receiver shares.
struct Store<D: Disk> {
    disk: D,
    dir: PathBuf,
    /// Names with an upload in progress.
    in_flight: Mutex<HashSet<String>>,
    /// Makes temporary names unique within the process.
    next_temp: AtomicU64,
}

/// Starts the files listener, storing into `dir` (created if missing).
pub(crate) fn start(
    builder: ListenerBuilder,
    dir: &Path,
    max_frame: usize,
) -> anyhow::Result<ListenerHandle> {
    serve(builder, dir, max_frame, LocalDisk)
}

/// [`start`], writing through `disk`.
fn serve<D: Disk>(
    builder: ListenerBuilder,
    dir: &Path,
    max_frame: usize,
    disk: D,
) -> anyhow::Result<ListenerHandle> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let meta = fs::metadata(dir).with_context(|| format!("cannot use {}", dir.display()))?;
    if !meta.is_dir() {
        anyhow::bail!("{} is not a directory", dir.display());
    }
    remove_leftovers(dir);
    // Fail now, not at the first upload, when the directory cannot be written.
    let probe = dir.join(format!(
        "{TEMP_PREFIX}probe-{}{TEMP_SUFFIX}",
        std::process::id()
    ));
    File::create(&probe).with_context(|| format!("cannot write to {}", dir.display()))?;
    let _ = fs::remove_file(&probe);

    let store = Arc::new(Store {
        disk,
        dir: dir.to_path_buf(),
        in_flight: Mutex::new(HashSet::new()),
        next_temp: AtomicU64::new(0),
    });
    tracing::info!(dir = %dir.display(), "storing uploads");
    Ok(
        builder.serve(Frames::with_max_frame_length(max_frame), move || Receiver {
            store: store.clone(),
            state: State::Idle,
        })?,
    )
}

fn remove_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) {
            match fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(file = %name, "removed a left-over partial upload"),
                Err(error) => {
                    tracing::warn!(file = %name, %error, "cannot remove a partial upload")
                }
            }
        }
    }
}

/// Where a connection is in the protocol.
enum State {
    /// Waiting for `FILE <size> <name>`.
    Idle,
    /// Taking data frames.
    Receiving(DiskWriter),
    /// All data in; waiting for `END <sha256>`.
    AwaitingEnd(DiskWriter),
    /// `END` handed to the disk thread; no frame is taken until it answers.
    Committing,
    /// An `ERR` was sent and the connection is closing; frames still arriving are ignored.
    Failed,
}

/// What the session and its upload's disk thread share.
#[derive(Default)]
struct Queue {
    /// Bytes handed to the thread and not written yet.
    bytes: AtomicUsize,
    /// The session, waiting in `poll_ready` for the queue to shrink or a commit to end.
    waker: AtomicWaker,
}

/// Work for an upload's disk thread.
enum DiskJob {
    Data(Bytes),
    /// All data sent: check this digest, give the file its name, answer the session.
    Finish(String),
    /// The connection ended first, for this reason: remove the partial file.
    CutOff(String),
}

/// The session's end of one upload: the thread that hashes and writes it owns the
/// [`Incoming`] (file, hasher, name reservation), so dropping this (a cut-off connection)
/// ends the thread, which removes the partial file.
struct DiskWriter {
    jobs: std::sync::mpsc::Sender<DiskJob>,
    queue: Arc<Queue>,
    name: String,
    size: u64,
    /// Bytes taken from the connection so far.
    received: u64,
}

impl DiskWriter {
    /// Starts the thread for `incoming`; it answers `session` with [`Invoke`] when done.
    fn start<D: Disk>(
        incoming: Incoming<D>,
        session: actix::Addr<Session<Frames, Receiver<D>>>,
        id: switchboard::SessionId,
    ) -> io::Result<Self> {
        let (jobs, inbox) = std::sync::mpsc::channel();
        let queue = Arc::new(Queue::default());
        incoming.store.disk.watch(&queue);
        let writer = DiskWriter {
            jobs,
            queue: queue.clone(),
            name: incoming.name.clone(),
            size: incoming.size,
            received: 0,
        };
        std::thread::Builder::new()
            .name("switchboard-upload".into())
            .spawn(move || {
                let _span = tracing::info_span!("upload", session = %id).entered();
                disk_thread(incoming, inbox, queue, session)
            })?;
        Ok(writer)
    }

    fn remaining(&self) -> u64 {
        self.size - self.received
    }

    fn send(&mut self, data: Bytes) -> Result<(), String> {
        if data.len() as u64 > self.remaining() {
            return Err(format!(
                "more data than announced ({} bytes announced)",
                self.size
            ));
        }
        self.received += data.len() as u64;
        self.queue.bytes.fetch_add(data.len(), Ordering::AcqRel);
        // A closed channel means the thread failed; its `Invoke` with the reason is on the way.
        let _ = self.jobs.send(DiskJob::Data(data));
        Ok(())
    }
}

/// Hashes and writes an upload's data as it comes, then checks and names the file; the
/// outcome goes back to the session. Ends when the session drops its [`DiskWriter`].
fn disk_thread<D: Disk>(
    mut incoming: Incoming<D>,
    inbox: std::sync::mpsc::Receiver<DiskJob>,
    queue: Arc<Queue>,
    session: actix::Addr<Session<Frames, Receiver<D>>>,
) {
    let answer = |result: Result<String, String>| {
        session.do_send(Invoke::new(move |receiver: &mut Receiver<D>, conn| {
            receiver.committed(result, conn)
        }));
    };
    while let Ok(job) = inbox.recv() {
        match job {
            DiskJob::Data(data) => {
                let written = incoming.write(&data);
                queue.bytes.fetch_sub(data.len(), Ordering::AcqRel);
                queue.waker.wake();
                if let Err(reason) = written {
                    // Dropped here: the partial file goes before the session hears of it.
                    drop(incoming);
                    return answer(Err(reason));
                }
            }
            DiskJob::Finish(expected) => {
                let name = incoming.name.clone();
                let size = incoming.size;
                let started = incoming.started;
                let result = incoming.commit(&expected);
                if let Ok(digest) = &result {
                    tracing::info!(%name, size, sha256 = %digest, elapsed = ?started.elapsed(), "file stored");
                }
                answer(result);
                queue.waker.wake();
                return;
            }
            DiskJob::CutOff(reason) => return cut_off(incoming, &reason),
        }
    }
    cut_off(incoming, "the session ended");
}

/// Removes a partial upload, then says so.
fn cut_off<D: Disk>(incoming: Incoming<D>, reason: &str) {
    let (name, written, size) = (incoming.name.clone(), incoming.written, incoming.size);
    drop(incoming);
    tracing::warn!(%name, written, size, %reason, "upload cut off; partial file removed");
}

/// One upload in progress. Dropping it before [`Incoming::commit`] removes the temporary file
/// and frees the name.
struct Incoming<D: Disk> {
    store: Arc<Store<D>>,
    name: String,
    size: u64,
    /// Bytes written to the temporary file (through its buffer).
    written: u64,
    temp: PathBuf,
    file: Option<D::Writer>,
    hasher: Sha256,
    started: Instant,
    committed: bool,
}

impl<D: Disk> Incoming<D> {
    /// Reserves `name` and creates the temporary file.
    fn open(store: &Arc<Store<D>>, header: Header, session: u64) -> Result<Incoming<D>, String> {
        protocol::check_name(&header.name).map_err(|reason| format!("refused: {reason}"))?;
        if store.dir.join(&header.name).symlink_metadata().is_ok() {
            return Err(format!("refused: `{}` already exists", header.name));
        }
        if !lock(&store.in_flight).insert(header.name.clone()) {
            return Err(format!(
                "refused: `{}` is being uploaded by another connection",
                header.name
            ));
        }
        let n = store.next_temp.fetch_add(1, Ordering::Relaxed);
        let temp = store
            .dir
            .join(format!("{TEMP_PREFIX}{session}-{n}{TEMP_SUFFIX}"));
        // From here on, `Drop` releases the name (and the file once it exists).
        let mut incoming = Incoming {
            store: store.clone(),
            name: header.name,
            size: header.size,
            written: 0,
            temp,
            file: None,
            hasher: Sha256::new(),
            started: Instant::now(),
            committed: false,
        };
        let file = (store.disk.create(&incoming.temp))
            .map_err(|e| format!("cannot create a temporary file: {e}"))?;
        incoming.file = Some(file);
        Ok(incoming)
    }

    fn write(&mut self, data: &[u8]) -> Result<(), String> {
        if let Some(file) = &mut self.file {
            file.write_all(data)
                .map_err(|e| format!("cannot write: {e}"))?;
        }
        self.hasher.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Checks the sender's digest and gives the file its final name; returns the digest.
    fn commit(mut self, expected: &str) -> Result<String, String> {
        let file = self.file.take().ok_or("no file")?;
        (self.store.disk.close(file)).map_err(|e| format!("cannot write: {e}"))?;
        let digest = protocol::hex(&std::mem::take(&mut self.hasher).finalize());
        if digest != expected {
            return Err(format!(
                "checksum mismatch: received data has sha256 {digest}"
            ));
        }
        let target = self.store.dir.join(&self.name);
        link_no_replace(&self.temp, &target).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                format!("refused: `{}` already exists", self.name)
            } else {
                format!("cannot store `{}`: {e}", self.name)
            }
        })?;
        self.committed = true;
        Ok(digest)
    }
}

impl<D: Disk> Drop for Incoming<D> {
    fn drop(&mut self) {
        // Close before unlinking.
        self.file = None;
        if let Err(error) = fs::remove_file(&self.temp) {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!(file = %self.temp.display(), %error, "cannot remove a temporary file");
            }
        }
        lock(&self.store.in_flight).remove(&self.name);
        if !self.committed {
            tracing::debug!(name = %self.name, "partial upload removed");
        }
    }
}

/// Gives `temp` the name `target` without ever replacing an existing `target`. A hard link
/// fails with `AlreadyExists`; where the file system has no hard links, a rename after a check
/// (which can race only with another process writing into the directory).
fn link_no_replace(temp: &Path, target: &Path) -> io::Result<()> {
    match fs::hard_link(temp, target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(error) => {
            tracing::debug!(%error, "hard link failed; renaming");
            if target.symlink_metadata().is_ok() {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            fs::rename(temp, target)
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One connection of files mode.
struct Receiver<D: Disk> {
    store: Arc<Store<D>>,
    state: State,
}

impl<D: Disk> Receiver<D> {
    fn reply(conn: &mut Conn<'_, Frames, Self>, reply: &Reply) {
        if let Err(error) = conn.write(Bytes::from(reply.to_string())) {
            tracing::debug!(session = %conn.id(), %error, "reply not sent");
        }
    }

    /// Sends `ERR reason`, drops the upload in progress (removing its file) and closes.
    fn fail(&mut self, reason: String, conn: &mut Conn<'_, Frames, Self>) {
        if let State::Receiving(incoming) | State::AwaitingEnd(incoming) = &self.state {
            tracing::warn!(session = %conn.id(), name = %incoming.name, %reason, "upload failed");
        } else {
            tracing::warn!(session = %conn.id(), %reason, "upload refused");
        }
        self.state = State::Failed;
        Self::reply(conn, &Reply::Err(reason));
        conn.disconnect_from_host();
    }

    /// `END` arrived: the disk thread checks the digest and names the file, then answers
    /// through [`committed`](Self::committed).
    fn finish(&mut self, writer: DiskWriter, end: &[u8], conn: &mut Conn<'_, Frames, Self>) {
        let expected = match protocol::parse_end(end) {
            Ok(hex) => hex,
            Err(reason) => return self.fail(reason, conn),
        };
        self.state = State::Committing;
        // The thread holds the file until it answers; `writer` may go now.
        let _ = writer.jobs.send(DiskJob::Finish(expected));
    }

    /// The disk thread's answer: stored (and the next file may come), or failed.
    fn committed(&mut self, result: Result<String, String>, conn: &mut Conn<'_, Frames, Self>) {
        match result {
            Ok(digest) => {
                Self::reply(conn, &Reply::Ok(digest));
                self.state = State::Idle;
            }
            Err(reason) => self.fail(reason, conn),
        }
    }
}

impl<D: Disk> SessionHandler<Frames> for Receiver<D> {
    fn connected(&mut self, conn: &mut Conn<'_, Frames, Self>) {
        tracing::debug!(session = %conn.id(), peer = %conn.peer_addr(), "sender connected");
    }

    /// Stops taking frames while the disk thread is behind, or a commit is under way.
    fn poll_ready(&mut self, cx: &mut task::Context<'_>) -> Poll<()> {
        let queue = match &self.state {
            State::Receiving(writer) | State::AwaitingEnd(writer) => &writer.queue,
            State::Committing => return Poll::Pending,
            State::Idle | State::Failed => return Poll::Ready(()),
        };
        if queue.bytes.load(Ordering::Acquire) < QUEUED_LIMIT {
            return Poll::Ready(());
        }
        queue.waker.register(cx.waker());
        if queue.bytes.load(Ordering::Acquire) < QUEUED_LIMIT {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn ready_read(&mut self, frame: Bytes, conn: &mut Conn<'_, Frames, Self>) {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Idle => {
                let header = match Header::parse(&frame) {
                    Ok(header) => header,
                    Err(reason) => return self.fail(reason, conn),
                };
                let incoming = match Incoming::open(&self.store, header, conn.id().get()) {
                    Ok(incoming) => incoming,
                    Err(reason) => return self.fail(reason, conn),
                };
                tracing::info!(
                    session = %conn.id(),
                    peer = %conn.peer_addr(),
                    name = %incoming.name,
                    size = incoming.size,
                    "receiving"
                );
                let writer = match DiskWriter::start(incoming, conn.address(), conn.id()) {
                    Ok(writer) => writer,
                    Err(e) => return self.fail(format!("cannot start a disk thread: {e}"), conn),
                };
                Self::reply(conn, &Reply::Ready);
                self.state = if writer.size == 0 {
                    State::AwaitingEnd(writer)
                } else {
                    State::Receiving(writer)
                };
            }
            State::Receiving(mut writer) => {
                if let Err(reason) = writer.send(frame) {
                    self.state = State::Receiving(writer);
                    return self.fail(reason, conn);
                }
                self.state = if writer.remaining() == 0 {
                    State::AwaitingEnd(writer)
                } else {
                    State::Receiving(writer)
                };
            }
            State::AwaitingEnd(writer) => self.finish(writer, &frame, conn),
            // `poll_ready` holds frames back while committing.
            State::Committing => self.state = State::Committing,
            State::Failed => {}
        }
    }

    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        if let State::Receiving(writer) | State::AwaitingEnd(writer) =
            std::mem::replace(&mut self.state, State::Failed)
        {
            // The disk thread removes the partial file, then logs the cut-off.
            let _ = writer.jobs.send(DiskJob::CutOff(reason.to_string()));
        }
        tracing::debug!(session = %info.id, %reason, "sender disconnected");
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Read as _,
        net::{SocketAddr, TcpStream},
        sync::mpsc,
        time::Duration,
    };

    use switchboard::Listener;

    use super::*;

    /// The longest any one step may take before the test fails (a hang, not a slow machine).
    const STEP: Duration = Duration::from_secs(5);

    /// Holds the first upload's first write until released; records every upload's queue.
    struct StallingDisk {
        gate: Mutex<Option<Gate>>,
        queues: Arc<Mutex<Vec<Arc<Queue>>>>,
    }

    struct Gate {
        /// Told when the write blocks.
        blocked: mpsc::Sender<()>,
        release: mpsc::Receiver<()>,
    }

    /// A file behind an optional [`Gate`].
    struct StallingFile {
        file: BufWriter<File>,
        gate: Option<Gate>,
    }

    impl io::Write for StallingFile {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if let Some(gate) = self.gate.take() {
                let _ = gate.blocked.send(());
                // Bounded, so a failed test cannot leave the thread blocked for ever.
                if gate.release.recv_timeout(STEP * 2).is_err() {
                    return Err(io::Error::other("never released"));
                }
            }
            self.file.write(data)
        }

        fn flush(&mut self) -> io::Result<()> {
            self.file.flush()
        }
    }

    impl Disk for StallingDisk {
        type Writer = StallingFile;

        fn create(&self, path: &Path) -> io::Result<StallingFile> {
            Ok(StallingFile {
                file: LocalDisk.create(path)?,
                gate: lock(&self.gate).take(),
            })
        }

        fn close(&self, writer: StallingFile) -> io::Result<()> {
            LocalDisk.close(writer.file)
        }

        fn watch(&self, queue: &Arc<Queue>) {
            lock(&self.queues).push(queue.clone());
        }
    }

    /// A files listener with one worker thread, on a thread (and actix system) of its own.
    struct TestServer {
        addr: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl TestServer {
        fn start(dir: &Path, disk: StallingDisk) -> TestServer {
            let dir = dir.to_path_buf();
            let (ready, addr) = mpsc::channel();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let builder = Listener::bind("127.0.0.1:0").workers(1);
                    let max_frame = Frames::DEFAULT_MAX_FRAME_LENGTH;
                    let handle = serve(builder, &dir, max_frame, disk).unwrap();
                    assert_eq!(handle.pool().len(), 1);
                    ready.send(handle.local_addr()).unwrap();
                    let _ = stopped.await;
                    handle.shutdown(Duration::from_secs(1)).await;
                });
            });
            let addr = addr.recv_timeout(STEP).expect("the server started");
            TestServer {
                addr,
                stop: Some(stop),
                thread: Some(thread),
            }
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// The protocol's frames: a 4-byte big-endian length, then the payload.
    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    fn reply(stream: &mut TcpStream) -> String {
        let mut len = [0; 4];
        stream.read_exact(&mut len).expect("a reply in time");
        let mut payload = vec![0; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut payload).unwrap();
        String::from_utf8(payload).unwrap()
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(STEP)).unwrap();
        stream.set_write_timeout(Some(STEP)).unwrap();
        stream
    }

    fn sha256_hex(data: &[u8]) -> String {
        protocol::hex(&Sha256::digest(data))
    }

    /// `chunks` chunks of one pseudo-random block, each stamped with its index, so a lost,
    /// doubled or reordered chunk shows (and debug builds make it fast).
    fn pattern(chunks: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let block: Vec<u8> = (0..protocol::CHUNK / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        let mut out = Vec::with_capacity(chunks * block.len());
        for index in 0..chunks as u64 {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&block[8..]);
        }
        out
    }

    /// A small send buffer, so the kernel holds little of what the server refuses to read.
    fn small_send_buffer(stream: &TcpStream) {
        use std::os::fd::AsRawFd as _;
        let size: libc::c_int = 64 * 1024;
        // SAFETY: a valid socket and a `c_int` option of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
    }

    /// One upload's disk blocks; the session sharing its worker still completes an upload, the
    /// blocked one stops reading at its queue limit, and finishes intact once released.
    #[test]
    fn a_stalled_disk_stalls_only_its_own_upload() {
        let dir = std::env::temp_dir().join(format!("switchboard-stall-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (blocked_tx, blocked) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let queues = Arc::new(Mutex::new(Vec::new()));
        let disk = StallingDisk {
            gate: Mutex::new(Some(Gate {
                blocked: blocked_tx,
                release: release_rx,
            })),
            queues: queues.clone(),
        };
        let server = TestServer::start(&dir, disk);

        // 12 MiB: far more than the queue and the (small) socket buffers hold together.
        let data = pattern(192);
        let mut wire = Vec::with_capacity(data.len() + data.len() / 1000);
        for chunk in data.chunks(protocol::CHUNK) {
            wire.extend_from_slice(&frame(chunk));
        }
        let digest = sha256_hex(&data);
        let mut stalled = connect(server.addr);
        small_send_buffer(&stalled);
        stalled
            .write_all(&frame(
                format!("FILE {} stalled.bin", data.len()).as_bytes(),
            ))
            .unwrap();
        assert_eq!(reply(&mut stalled), "READY");
        let queue = lock(&queues)[0].clone();

        // Push data until TCP pushes back with the queue full. A write that times out is the
        // event awaited: the socket buffers are full because the session stopped reading.
        stalled
            .set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let deadline = Instant::now() + STEP;
        let mut sent = 0;
        let queued = loop {
            assert!(
                Instant::now() < deadline,
                "never pushed back ({sent} bytes sent)"
            );
            match stalled.write(&wire[sent..]) {
                Ok(n) => {
                    sent += n;
                    assert!(sent < wire.len(), "the stalled upload took every byte");
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    let queued = queue.bytes.load(Ordering::Acquire);
                    if queued >= QUEUED_LIMIT {
                        break queued;
                    }
                }
                Err(e) => panic!("cannot send: {e}"),
            }
        };
        blocked
            .recv_timeout(STEP)
            .expect("the disk thread is blocked");
        // Bounded memory: a frame is taken only below the limit, so at most one frame over.
        assert!(
            queued <= QUEUED_LIMIT + protocol::CHUNK,
            "{queued} bytes queued"
        );

        // Another upload on the same (only) worker goes through meanwhile.
        let mut other = connect(server.addr);
        other.write_all(&frame(b"FILE 3 small.txt")).unwrap();
        assert_eq!(reply(&mut other), "READY");
        other.write_all(&frame(b"abc")).unwrap();
        let end = protocol::encode_end(&sha256_hex(b"abc"));
        other.write_all(&frame(end.as_bytes())).unwrap();
        assert_eq!(reply(&mut other), format!("OK {}", sha256_hex(b"abc")));
        assert_eq!(fs::read(dir.join("small.txt")).unwrap(), b"abc");

        // While the disk stays blocked the stalled session took nothing more.
        assert_eq!(queue.bytes.load(Ordering::Acquire), queued);
        assert!(!dir.join("stalled.bin").exists());

        release.send(()).unwrap();
        stalled.set_write_timeout(Some(STEP)).unwrap();
        stalled.write_all(&wire[sent..]).unwrap();
        let end = protocol::encode_end(&digest);
        stalled.write_all(&frame(end.as_bytes())).unwrap();
        assert_eq!(reply(&mut stalled), format!("OK {digest}"));
        // The server confirmed our digest over the bytes it hashed; these are the bytes stored.
        let stored = fs::read(dir.join("stalled.bin")).unwrap();
        assert_eq!(stored.len(), data.len());
        assert!(stored == data, "stalled.bin differs from what was sent");
        assert_eq!(queue.bytes.load(Ordering::Acquire), 0);

        drop((stalled, other));
        drop(server);
        // Only the two files: no temporary one left behind.
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["small.txt", "stalled.bin"]);
        let _ = fs::remove_dir_all(&dir);
    }
}
