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
//! of one name cannot both start. File writes are synchronous on the worker (buffered, 1 MiB at
//! a time); a disk that stalls stalls that worker's sessions. Files are not fsynced.

use std::{
    collections::HashSet,
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write as _},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use anyhow::Context as _;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use switchboard::{
    Conn, DisconnectReason, ListenerBuilder, ListenerHandle, SessionHandler, SessionInfo,
};
use switchboard_codec::Frames;

use super::Totals;
use crate::protocol::{self, Header, Reply};

/// Prefix and suffix of temporary upload files; left-overs from a crash are removed at start.
const TEMP_PREFIX: &str = ".switchboard-";
const TEMP_SUFFIX: &str = ".part";

/// What every receiver shares.
#[derive(Debug)]
struct Store {
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
    totals: Arc<Totals>,
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
        dir: dir.to_path_buf(),
        in_flight: Mutex::new(HashSet::new()),
        next_temp: AtomicU64::new(0),
    });
    tracing::info!(dir = %dir.display(), "storing uploads");
    Ok(
        builder.serve(Frames::with_max_frame_length(max_frame), move || Receiver {
            store: store.clone(),
            totals: totals.clone(),
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
    Receiving(Incoming),
    /// All data in; waiting for `END <sha256>`.
    AwaitingEnd(Incoming),
    /// An `ERR` was sent and the connection is closing; frames still arriving are ignored.
    Failed,
}

/// One upload in progress. Dropping it before [`Incoming::commit`] removes the temporary file
/// and frees the name.
struct Incoming {
    store: Arc<Store>,
    name: String,
    size: u64,
    received: u64,
    temp: PathBuf,
    file: Option<BufWriter<File>>,
    hasher: Sha256,
    started: Instant,
    committed: bool,
}

impl Incoming {
    /// Reserves `name` and creates the temporary file.
    fn open(store: &Arc<Store>, header: Header, session: u64) -> Result<Incoming, String> {
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
            received: 0,
            temp,
            file: None,
            hasher: Sha256::new(),
            started: Instant::now(),
            committed: false,
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&incoming.temp)
            .map_err(|e| format!("cannot create a temporary file: {e}"))?;
        incoming.file = Some(BufWriter::with_capacity(1024 * 1024, file));
        Ok(incoming)
    }

    fn remaining(&self) -> u64 {
        self.size - self.received
    }

    fn write(&mut self, data: &[u8]) -> Result<(), String> {
        if data.len() as u64 > self.remaining() {
            return Err(format!(
                "more data than announced ({} bytes announced)",
                self.size
            ));
        }
        if let Some(file) = &mut self.file {
            file.write_all(data)
                .map_err(|e| format!("cannot write: {e}"))?;
        }
        self.hasher.update(data);
        self.received += data.len() as u64;
        Ok(())
    }

    /// Checks the sender's digest and gives the file its final name; returns the digest.
    fn commit(mut self, expected: &str) -> Result<String, String> {
        let file = self.file.take().ok_or("no file")?;
        let file = file
            .into_inner()
            .map_err(|e| format!("cannot write: {}", e.error()))?;
        drop(file);
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

impl Drop for Incoming {
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
struct Receiver {
    store: Arc<Store>,
    totals: Arc<Totals>,
    state: State,
}

impl Receiver {
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

    fn finish(&mut self, incoming: Incoming, end: &[u8], conn: &mut Conn<'_, Frames, Self>) {
        let expected = match protocol::parse_end(end) {
            Ok(hex) => hex,
            Err(reason) => return self.fail(reason, conn),
        };
        let name = incoming.name.clone();
        let size = incoming.size;
        let started = incoming.started;
        match incoming.commit(&expected) {
            Ok(digest) => {
                let elapsed = started.elapsed();
                tracing::info!(
                    session = %conn.id(),
                    %name,
                    size,
                    sha256 = %digest,
                    ?elapsed,
                    "file stored"
                );
                Self::reply(conn, &Reply::Ok(digest));
                self.state = State::Idle;
            }
            Err(reason) => self.fail(reason, conn),
        }
    }
}

impl SessionHandler<Frames> for Receiver {
    fn connected(&mut self, conn: &mut Conn<'_, Frames, Self>) {
        tracing::debug!(session = %conn.id(), peer = %conn.peer_addr(), "sender connected");
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
                Self::reply(conn, &Reply::Ready);
                self.state = if incoming.size == 0 {
                    State::AwaitingEnd(incoming)
                } else {
                    State::Receiving(incoming)
                };
            }
            State::Receiving(mut incoming) => {
                if let Err(reason) = incoming.write(&frame) {
                    self.state = State::Receiving(incoming);
                    return self.fail(reason, conn);
                }
                self.state = if incoming.remaining() == 0 {
                    State::AwaitingEnd(incoming)
                } else {
                    State::Receiving(incoming)
                };
            }
            State::AwaitingEnd(incoming) => self.finish(incoming, &frame, conn),
            State::Failed => {}
        }
    }

    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        self.totals.add(info);
        if let State::Receiving(incoming) | State::AwaitingEnd(incoming) =
            std::mem::replace(&mut self.state, State::Failed)
        {
            let (name, received, size) = (incoming.name.clone(), incoming.received, incoming.size);
            // Removed before the log line, which tells that it is gone.
            drop(incoming);
            tracing::warn!(
                session = %info.id,
                %name,
                received,
                size,
                %reason,
                "upload cut off; partial file removed"
            );
        }
        tracing::debug!(session = %info.id, %reason, "sender disconnected");
    }
}
