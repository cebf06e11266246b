//! Restarting without dropping a connection: a new process takes the listening sockets of a
//! running one over its admin socket, as HAProxy's `-x` and Envoy's hot restart do.
//!
//! 1. The new process connects to the old one's admin socket (a Unix socket) and sends
//!    `handover`. The old one answers one JSON line that describes its sockets, with the
//!    sockets themselves attached as `SCM_RIGHTS` ancillary data, and goes on accepting.
//! 2. The new process checks them ([`Takeover::connect`]), starts accepting on them with its
//!    own [`Listener`](crate::Listener) ([`Listener::adopt`](crate::Listener::adopt)), and
//!    only then sends `handover commit` ([`Takeover::commit`]).
//! 3. The old process stops accepting at once ([`Release`](crate::Release): its descriptors
//!    close, the sockets stay open in the new process, Unix socket files stay), lets its
//!    sessions finish within its drain timeout
//!    ([`ListenerHandle::retire`](crate::ListenerHandle::retire)) and its owner exits.
//!
//! Between 1 and 3 both processes accept on the same sockets, so no client is refused at any
//! point. A taker that leaves before committing (it crashed, or refused the sockets) leaves the
//! old process serving as before.
//!
//! Descriptors travel with rustix's `sendmsg`/`recvmsg`: its ancillary-buffer API is safe (no
//! `cmsghdr` arithmetic here), received descriptors come back as `OwnedFd` so none can leak,
//! and it is one of the most used crates for system calls (std-style types, no libc in the
//! way); it was already in the dependency tree through crossterm, while `nix` (there through
//! rustyline) deals in raw descriptors and needs manual `cmsg` sizing.
//!
//! The wire format of the answer to `handover`:
//!
//! ```text
//! {"handover":{"protocol":1,"pid":4242,"version":"0.1.0","sockets":[
//!   {"role":"listen","address":"127.0.0.1:7878","scheme":"tcp","proxy_protocol":false},
//!   {"role":"admin","address":"unix:/run/sb.admin","scheme":"unix","proxy_protocol":false}]}}
//! ```
//!
//! (on one line), with one descriptor per entry of `sockets`, in that order.

use std::{
    io::{self, IoSlice, IoSliceMut, Write as _},
    os::{
        fd::{AsFd, BorrowedFd, OwnedFd},
        unix::net::UnixStream,
    },
    path::{Path, PathBuf},
    time::Duration,
};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde_json::{json, Value};

use crate::StdListener;

/// Most sockets one hand-over carries: Linux's `SCM_MAX_FD`.
pub const MAX_HANDED_SOCKETS: usize = 253;

/// Longest answer line the taker reads, in bytes.
const MAX_ANSWER: usize = 64 * 1024;

/// The version of the answer's format.
const PROTOCOL: u64 = 1;

/// What a handed-over socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketRole {
    /// One the server accepts clients on.
    Listen,
    /// The admin socket itself (so that the taker can be taken over in turn).
    Admin,
}

impl SocketRole {
    fn name(self) -> &'static str {
        match self {
            SocketRole::Listen => "listen",
            SocketRole::Admin => "admin",
        }
    }
}

/// How the old process described one socket it handed over.
///
/// # Examples
///
/// ```
/// use switchboard::handover::{SocketDescription, SocketRole};
///
/// let socket = SocketDescription::new(SocketRole::Listen, "127.0.0.1:7878", "tls", false);
/// assert_eq!(socket.to_string(), "listen tls://127.0.0.1:7878");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketDescription {
    /// What it is for.
    pub role: SocketRole,
    /// Its address as [`Address`](crate::Address) prints it (`127.0.0.1:7878`,
    /// `unix:/run/sb.sock`).
    pub address: String,
    /// How its connections start: `tcp`, `tls`, `unix` or `tls+unix`.
    pub scheme: String,
    /// Whether its connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
}

impl SocketDescription {
    /// A description.
    pub fn new(
        role: SocketRole,
        address: &str,
        scheme: &str,
        proxy_protocol: bool,
    ) -> SocketDescription {
        SocketDescription {
            role,
            address: address.to_string(),
            scheme: scheme.to_string(),
            proxy_protocol,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "role": self.role.name(),
            "address": self.address,
            "scheme": self.scheme,
            "proxy_protocol": self.proxy_protocol,
        })
    }

    fn from_json(value: &Value) -> Option<SocketDescription> {
        let role = match value["role"].as_str()? {
            "listen" => SocketRole::Listen,
            "admin" => SocketRole::Admin,
            _ => return None,
        };
        Some(SocketDescription {
            role,
            address: value["address"].as_str()?.to_string(),
            scheme: value["scheme"].as_str()?.to_string(),
            proxy_protocol: value["proxy_protocol"].as_bool().unwrap_or(false),
        })
    }
}

impl std::fmt::Display for SocketDescription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = self.role.name();
        let proxy = if self.proxy_protocol {
            " (PROXY protocol)"
        } else {
            ""
        };
        match self.scheme.as_str() {
            "tcp" | "unix" => write!(f, "{role} {}{proxy}", self.address),
            "tls" => write!(f, "{role} tls://{}{proxy}", self.address),
            other => write!(f, "{role} {other}+{}{proxy}", self.address),
        }
    }
}

/// One socket received from the old process: its description and the socket, already checked
/// to be a listening socket bound where the description says.
#[derive(Debug)]
#[non_exhaustive]
pub struct HandedSocket {
    /// What the old process said it is.
    pub description: SocketDescription,
    /// The socket (blocking, as received; [`Listener::adopt`](crate::Listener::adopt) makes it
    /// non-blocking).
    pub socket: StdListener,
}

/// Why a hand-over failed. Until [`Takeover::commit`] has succeeded the old process still
/// serves, whatever failed.
///
/// # Examples
///
/// ```
/// use switchboard::handover::{HandoverError, Takeover};
///
/// let error = Takeover::connect("/nonexistent/sb.admin", std::time::Duration::from_secs(1))
///     .unwrap_err();
/// assert!(matches!(error, HandoverError::NotAServer { .. }));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoverError {
    /// Nothing answers at the admin path: no such socket, or no process listening on it.
    #[error("cannot take over from {}: nothing is listening there (is a server running with --admin {}?): {source}", path.display(), path.display())]
    NotAServer {
        /// The admin socket path.
        path: PathBuf,
        /// What `connect` said.
        #[source]
        source: io::Error,
    },
    /// The admin socket accepted the connection but did not answer in time, or closed it.
    #[error("cannot take over from {}: no answer from the admin socket: {source}", path.display())]
    NoAnswer {
        /// The admin socket path.
        path: PathBuf,
        /// What the read said.
        #[source]
        source: io::Error,
    },
    /// What answered is not a Switchboard admin socket that hands over sockets.
    #[error("cannot take over from {}: not a hand-over answer: {answer}", path.display())]
    NotAnAdmin {
        /// The admin socket path.
        path: PathBuf,
        /// The start of what it answered.
        answer: String,
    },
    /// The old process refused (its `error:` line): over TCP, a hand-over already under way,
    /// its listener already closed, an old version without hand-over.
    #[error("cannot take over from {}: the server refused: {reason}", path.display())]
    Refused {
        /// The admin socket path.
        path: PathBuf,
        /// What it said.
        reason: String,
    },
    /// The number of descriptors received is not the number described.
    #[error("hand-over from {}: {described} sockets described but {received} descriptors received", path.display())]
    FdCountMismatch {
        /// The admin socket path.
        path: PathBuf,
        /// How many the answer described.
        described: usize,
        /// How many came.
        received: usize,
    },
    /// A descriptor received is not the socket its description names.
    #[error("hand-over from {}: socket {index} was described as {described} but is {actual}", path.display())]
    SocketMismatch {
        /// The admin socket path.
        path: PathBuf,
        /// Its position in the answer.
        index: usize,
        /// What the answer said.
        described: String,
        /// What the descriptor is.
        actual: String,
    },
    /// Talking to the admin socket failed after it had answered.
    #[error("hand-over from {}: {source}", path.display())]
    Io {
        /// The admin socket path.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
}

/// The taker's side of a hand-over: connected to the old process's admin socket, holding the
/// sockets it handed over until [`commit`](Self::commit) tells it to stop accepting.
///
/// It is blocking (a std socket with read timeouts): a new process takes the sockets before
/// it starts its runtime, and commits from any thread.
///
/// # Examples
///
/// ```no_run
/// # actix_rt::System::new().block_on(async {
/// use std::time::Duration;
/// use switchboard::{handover::Takeover, Listener};
/// use switchboard_codec::Lines;
/// # struct Echo;
/// # impl switchboard::SessionHandler<Lines> for Echo {
/// #     fn ready_read(&mut self, line: String, conn: &mut switchboard::Conn<'_, Lines, Self>) {
/// #         let _ = conn.write(line);
/// #     }
/// # }
///
/// let mut takeover = Takeover::connect("/run/sb.admin", Duration::from_secs(5)).unwrap();
/// let sockets = takeover.take_listen_sockets();
/// let server = Listener::adopt(sockets).serve(Lines::new(), || Echo).unwrap();
/// // Accepting here now; the old process stops.
/// let answer = takeover.commit().unwrap();
/// println!("{answer}");
/// # drop(server);
/// # });
/// ```
#[derive(Debug)]
pub struct Takeover {
    path: PathBuf,
    stream: UnixStream,
    /// Bytes read past the answer line (none in practice: the old process says nothing more
    /// until `handover commit`).
    pending: Vec<u8>,
    sockets: Vec<HandedSocket>,
    pid: Option<u32>,
}

impl Takeover {
    /// Connects to the admin socket at `path`, asks for the listening sockets, and checks
    /// what comes: as many descriptors as described, each a listening socket bound to the
    /// address its description names. Each read waits at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`HandoverError::NotAServer`] when nothing listens at `path`;
    /// [`HandoverError::NoAnswer`], [`HandoverError::NotAnAdmin`] and
    /// [`HandoverError::Refused`] for what answered; [`HandoverError::FdCountMismatch`] and
    /// [`HandoverError::SocketMismatch`] for what came.
    pub fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Takeover, HandoverError> {
        let path = path.as_ref().to_path_buf();
        let stream = UnixStream::connect(&path).map_err(|source| HandoverError::NotAServer {
            path: path.clone(),
            source,
        })?;
        let io = |source| HandoverError::Io {
            path: path.clone(),
            source,
        };
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        (&stream).write_all(b"handover\n").map_err(io)?;
        let mut takeover = Takeover {
            path: path.clone(),
            stream,
            pending: Vec::new(),
            sockets: Vec::new(),
            pid: None,
        };
        let (line, fds) = takeover
            .read_line(true)
            .map_err(|source| HandoverError::NoAnswer {
                path: path.clone(),
                source,
            })?;
        if let Some(reason) = line.strip_prefix("error: ") {
            return Err(HandoverError::Refused {
                path,
                reason: reason.to_string(),
            });
        }
        let not_admin = || HandoverError::NotAnAdmin {
            path: path.clone(),
            answer: line.chars().take(200).collect(),
        };
        let value: Value = serde_json::from_str(&line).map_err(|_| not_admin())?;
        let answer = &value["handover"];
        if answer["protocol"].as_u64() != Some(PROTOCOL) {
            return Err(not_admin());
        }
        let descriptions = answer["sockets"]
            .as_array()
            .ok_or_else(not_admin)?
            .iter()
            .map(SocketDescription::from_json)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(not_admin)?;
        if descriptions.len() != fds.len() {
            return Err(HandoverError::FdCountMismatch {
                path,
                described: descriptions.len(),
                received: fds.len(),
            });
        }
        for (index, (description, fd)) in descriptions.into_iter().zip(fds).enumerate() {
            let mismatch = |actual: String| HandoverError::SocketMismatch {
                path: path.clone(),
                index,
                described: description.to_string(),
                actual,
            };
            let socket = StdListener::from_fd(fd).map_err(|e| mismatch(e.to_string()))?;
            let actual = socket
                .address()
                .map_err(|e| mismatch(e.to_string()))?
                .to_string();
            if actual != description.address {
                return Err(mismatch(actual));
            }
            takeover.sockets.push(HandedSocket {
                description,
                socket,
            });
        }
        takeover.pid = answer["pid"].as_u64().and_then(|p| u32::try_from(p).ok());
        tracing::info!(
            path = %takeover.path.display(),
            pid = takeover.pid,
            sockets = takeover.sockets.len(),
            "received the listening sockets"
        );
        Ok(takeover)
    }

    /// The sockets received and not yet taken, in the old process's order.
    pub fn sockets(&self) -> &[HandedSocket] {
        &self.sockets
    }

    /// Takes every socket received (descriptions with them).
    pub fn take_sockets(&mut self) -> Vec<HandedSocket> {
        std::mem::take(&mut self.sockets)
    }

    /// Takes the sockets clients connect to ([`SocketRole::Listen`]), ready for
    /// [`Listener::adopt`](crate::Listener::adopt); the others stay.
    pub fn take_listen_sockets(&mut self) -> Vec<StdListener> {
        let (listen, rest) = std::mem::take(&mut self.sockets)
            .into_iter()
            .partition(|s| s.description.role == SocketRole::Listen);
        self.sockets = rest;
        listen.into_iter().map(|s| s.socket).collect()
    }

    /// The old process's id, as it said.
    pub fn old_pid(&self) -> Option<u32> {
        self.pid
    }

    /// Tells the old process to stop accepting and drain: start accepting on the sockets
    /// first. Returns its answer (what it released and how long it will drain); it then
    /// finishes its sessions and exits on its own.
    ///
    /// # Errors
    ///
    /// [`HandoverError::Refused`] with its reason; [`HandoverError::NoAnswer`] when it did not
    /// answer (it may have died: then the sockets are this process's alone).
    pub fn commit(mut self) -> Result<String, HandoverError> {
        let path = self.path.clone();
        (&self.stream)
            .write_all(b"handover commit\n")
            .map_err(|source| HandoverError::Io {
                path: path.clone(),
                source,
            })?;
        let no_answer = |source| HandoverError::NoAnswer {
            path: path.clone(),
            source,
        };
        let (first, _) = self.read_line(false).map_err(no_answer)?;
        if let Some(reason) = first.strip_prefix("error: ") {
            return Err(HandoverError::Refused {
                path,
                reason: reason.to_string(),
            });
        }
        // A text block: lines up to an empty one (bounded by the read limit of each line).
        let mut lines = vec![first];
        for _ in 0..64 {
            let (line, _) = self.read_line(false).map_err(no_answer)?;
            if line.is_empty() {
                break;
            }
            lines.push(line);
        }
        let answer = lines.join("; ");
        tracing::info!(path = %path.display(), answer, "the old process is draining");
        Ok(answer)
    }

    /// One line (without its newline), and the descriptors that came with it.
    fn read_line(&mut self, with_fds: bool) -> io::Result<(String, Vec<OwnedFd>)> {
        let mut fds = Vec::new();
        let mut space = vec![0u8; rustix::cmsg_space!(ScmRights(MAX_HANDED_SOCKETS))];
        let mut chunk = [0u8; 4096];
        // Bounded by MAX_ANSWER: each turn adds at least one byte or ends.
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line[..end]);
                return Ok((text.trim_end_matches('\r').to_string(), fds));
            }
            if self.pending.len() > MAX_ANSWER {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "an answer line over 64 KiB",
                ));
            }
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let received = rustix::net::recvmsg(
                self.stream.as_fd(),
                &mut [IoSliceMut::new(&mut chunk)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = message {
                    fds.extend(received);
                }
            }
            if received.flags.bits() & libc::MSG_CTRUNC as u32 != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "descriptors were cut off (more than the hand-over limit)",
                ));
            }
            if !with_fds && !fds.is_empty() {
                // Unasked-for descriptors are closed (dropped) rather than kept.
                fds.clear();
            }
            if received.bytes == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the admin socket closed the connection",
                ));
            }
            self.pending.extend_from_slice(&chunk[..received.bytes]);
        }
    }
}

/// The answer to `handover`: the JSON line (with its newline) that goes with the descriptors.
pub(crate) fn answer_line(sockets: &[SocketDescription]) -> String {
    let value = json!({
        "handover": {
            "protocol": PROTOCOL,
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "sockets": sockets.iter().map(SocketDescription::to_json).collect::<Vec<_>>(),
        }
    });
    format!("{value}\n")
}

/// Sends `bytes` on the connected Unix socket `socket` with `fds` attached (`SCM_RIGHTS`).
/// The socket may be non-blocking: a full send buffer is waited out for up to about a second.
pub(crate) async fn send_with_fds(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    if fds.len() > MAX_HANDED_SOCKETS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("more than {MAX_HANDED_SOCKETS} sockets to hand over"),
        ));
    }
    let mut space = vec![0u8; rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
    let mut sent = 0;
    let mut waits = 0;
    // Bounded: each turn sends bytes or waits, at most 100 waits of 10 ms.
    while sent < bytes.len() {
        let mut control = SendAncillaryBuffer::new(&mut space);
        // The descriptors go with the first bytes only.
        if sent == 0 && !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("no room for the descriptors"));
        }
        match rustix::net::sendmsg(
            socket,
            &[IoSlice::new(&bytes[sent..])],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(n) => sent += n,
            Err(rustix::io::Errno::AGAIN) if waits < 100 => {
                waits += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{io::BufRead as _, os::unix::net::UnixListener};

    use super::*;

    /// A one-connection server at a fresh path that reads the `handover` line and answers
    /// `answer` with `fds` attached; the path and its directory's guard.
    fn fake_admin(
        tag: &str,
        answer: String,
        fds: Vec<OwnedFd>,
    ) -> (PathBuf, std::thread::JoinHandle<()>) {
        let dir = std::env::temp_dir().join(format!("sb-handover-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("admin.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut line = String::new();
            io::BufReader::new(&stream).read_line(&mut line).unwrap();
            assert_eq!(line, "handover\n");
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
            let mut space = vec![0u8; rustix::cmsg_space!(ScmRights(borrowed.len().max(1)))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !borrowed.is_empty() {
                assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
            }
            rustix::net::sendmsg(
                &stream,
                &[IoSlice::new(answer.as_bytes())],
                &mut control,
                SendFlags::NOSIGNAL,
            )
            .unwrap();
            // Held open until the taker has read (it closes first).
            let _ = io::BufReader::new(&stream).read_line(&mut line);
            let _ = std::fs::remove_dir_all(dir);
        });
        (path, server)
    }

    fn tcp_listener() -> (OwnedFd, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        (listener.into(), address)
    }

    fn listen(address: &str) -> SocketDescription {
        SocketDescription::new(SocketRole::Listen, address, "tcp", false)
    }

    fn takeover(path: &Path) -> Result<Takeover, HandoverError> {
        Takeover::connect(path, Duration::from_secs(10))
    }

    #[test]
    fn sockets_arrive_checked_and_in_order() {
        let (first, a) = tcp_listener();
        let (second, b) = tcp_listener();
        let answer = answer_line(&[listen(&a), listen(&b)]);
        let (path, server) = fake_admin("ok", answer, vec![first, second]);
        let mut taken = takeover(&path).unwrap();
        assert_eq!(taken.old_pid(), Some(std::process::id()));
        let sockets = taken.take_listen_sockets();
        let addresses: Vec<String> = sockets
            .iter()
            .map(|s| s.address().unwrap().to_string())
            .collect();
        assert_eq!(addresses, [a, b]);
        drop(taken);
        server.join().unwrap();
    }

    #[test]
    fn fewer_descriptors_than_described_is_a_count_mismatch() {
        let (first, a) = tcp_listener();
        let answer = answer_line(&[listen(&a), listen("127.0.0.1:1")]);
        let (path, server) = fake_admin("count", answer, vec![first]);
        let error = takeover(&path).unwrap_err();
        assert!(
            matches!(
                error,
                HandoverError::FdCountMismatch {
                    described: 2,
                    received: 1,
                    ..
                }
            ),
            "{error}"
        );
        server.join().unwrap();
    }

    #[test]
    fn a_descriptor_bound_elsewhere_than_described_is_a_socket_mismatch() {
        let (first, a) = tcp_listener();
        let answer = answer_line(&[listen("127.0.0.1:1")]);
        let (path, server) = fake_admin("where", answer, vec![first]);
        let error = takeover(&path).unwrap_err();
        match &error {
            HandoverError::SocketMismatch {
                index: 0, actual, ..
            } => assert_eq!(actual, &a),
            other => panic!("{other}"),
        }
        server.join().unwrap();
    }

    #[test]
    fn a_descriptor_that_is_not_a_listener_is_a_socket_mismatch() {
        let file = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let answer = answer_line(&[listen("127.0.0.1:1")]);
        let (path, server) = fake_admin("file", answer, vec![file]);
        let error = takeover(&path).unwrap_err();
        assert!(error.to_string().contains("not a socket"), "{error}");
        server.join().unwrap();
    }

    #[test]
    fn an_error_line_is_a_refusal_and_other_answers_are_not_an_admin() {
        let (path, server) = fake_admin("refused", "error: no thanks\n".into(), Vec::new());
        let error = takeover(&path).unwrap_err();
        assert!(
            matches!(&error, HandoverError::Refused { reason, .. } if reason == "no thanks"),
            "{error}"
        );
        server.join().unwrap();

        let (path, server) = fake_admin("other", "{\"hello\":1}\n".into(), Vec::new());
        let error = takeover(&path).unwrap_err();
        assert!(matches!(error, HandoverError::NotAnAdmin { .. }), "{error}");
        server.join().unwrap();
    }
}
