//! Shared helpers for the integration tests.
//!
//! Every test talks over real sockets on `127.0.0.1`. Nothing here sleeps to order steps: a
//! [`Probe`] handler reports what happens inside a session on a channel ([`Events`]), an
//! [`Inbox`] actor does the same for any actix message, and every wait goes through
//! [`within`], which fails the test after [`LIMIT`].

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    future::Future,
    io::{BufRead, BufReader, Read, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use actix::{Actor, Addr, Context, Handler, Message, Recipient};
use switchboard::{
    Conn, DisconnectReason, Session, SessionCodec, SessionHandler, SessionId, SessionInfo,
};
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, Encoder};

/// How long any single wait may take before the test fails: generous, for a loaded machine.
pub const LIMIT: Duration = Duration::from_secs(10);

/// How long a test watches for something that must *not* happen (a reply from a client that
/// is over a limit). A loaded machine can only make such a check pass wrongly, never fail
/// wrongly.
pub const SILENCE: Duration = Duration::from_millis(300);

/// Fails the test, with the command that installs it, when `tool` (a program a test starts:
/// `openssl`, `socat`, `haproxy`...) is not on the PATH. Never a silent skip.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is missing: install it with `apt-get install -y {package}` (.ci/run does)"
    );
}

/// Starts a `redis-server` of the test's own on 127.0.0.1:`port` (no persistence) and returns
/// once it logs that it accepts connections; the caller stops it by its PID (`Child::kill`).
/// A missing binary fails the test with the command that installs it.
pub fn start_redis(port: u16) -> std::process::Child {
    use std::process::{Command, Stdio};
    let mut child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run redis-server ({e}): install it with `apt-get install -y redis-server`"
            )
        });
    let stdout = child.stdout.take().expect("piped stdout");
    let (ready, is_ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut ready = Some(ready);
        // Read to the end, so the server never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("Ready to accept connections") {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
        }
    });
    if is_ready.recv_timeout(LIMIT).is_err() {
        let _ = child.kill();
        panic!("redis-server did not come up on port {port}");
    }
    child
}

/// `127.0.0.1:0`: loopback, with a port the OS picks.
pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("a literal address")
}

/// Awaits `fut`, failing the test with `what` if it takes longer than [`LIMIT`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(LIMIT, fut).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {LIMIT:?} waiting for {what}"),
    }
}

/// Asserts that `fut` does not finish within [`SILENCE`]; gives it back for a later await.
pub async fn assert_silent<F: Future + Unpin>(what: &str, mut fut: F) -> F
where
    F::Output: fmt::Debug,
{
    if let Ok(output) = tokio::time::timeout(SILENCE, &mut fut).await {
        panic!("expected no {what} within {SILENCE:?}, got {output:?}");
    }
    fut
}

/// Runs blocking client code on tokio's blocking pool and awaits it within [`LIMIT`].
pub async fn blocking<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    within(what, tokio::task::spawn_blocking(f))
        .await
        .unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

/// A blocking std client with read and write timeouts of [`LIMIT`], so a client never hangs a
/// test.
pub fn std_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(LIMIT)).expect("read timeout");
    stream
        .set_write_timeout(Some(LIMIT))
        .expect("write timeout");
    stream
}

/// Reads one `\n`-terminated line (terminator removed) from a blocking client.
pub fn read_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    let n = reader.read_line(&mut line).expect("read a line");
    assert!(n > 0, "the server closed before sending a line");
    assert!(line.ends_with('\n'), "cut-off line {line:?}");
    line.pop();
    line
}

/// Reads until end of stream; returns every byte read. Panics on an error other than a reset
/// (`allow_reset`), which some closes produce instead of a clean EOF.
pub fn read_to_eof(stream: &mut TcpStream, allow_reset: bool) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if allow_reset && e.kind() == std::io::ErrorKind::ConnectionReset => return all,
            Err(e) => panic!("read to EOF failed after {} bytes: {e}", all.len()),
        }
    }
}

/// Writes a line and reads the echo back.
pub fn echo_line(stream: &mut BufReader<TcpStream>, line: &str) -> String {
    stream
        .get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .expect("write a line");
    read_line(stream)
}

/// The byte at `offset` of the test pattern: not periodic at any power of two, so a lost,
/// doubled or reordered chunk shows.
pub fn pattern_byte(offset: usize) -> u8 {
    (offset % 251) as u8
}

/// `len` bytes of the test pattern starting at `offset`.
pub fn pattern(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(pattern_byte).collect()
}

/// Asserts that `data` is the test pattern from offset 0, naming the first wrong byte.
pub fn assert_pattern(data: &[u8]) {
    if let Some(at) = data
        .iter()
        .enumerate()
        .position(|(i, &b)| b != pattern_byte(i))
    {
        panic!(
            "byte {at} of {} is {} instead of {}",
            data.len(),
            data[at],
            pattern_byte(at)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Inbox: any actix message, to a channel.
// ---------------------------------------------------------------------------------------------

/// An actor that forwards every message it gets to a channel: the test's end of a
/// [`Recipient`] (listener events, registry events, [`Forward`](switchboard::Forward) and
/// [`Notify`](switchboard::Notify) events).
pub struct Inbox<M: Message<Result = ()> + Send + 'static> {
    tx: mpsc::UnboundedSender<M>,
}

impl<M: Message<Result = ()> + Send + 'static> Actor for Inbox<M> {
    type Context = Context<Self>;
}

impl<M: Message<Result = ()> + Send + 'static> Handler<M> for Inbox<M> {
    type Result = ();

    fn handle(&mut self, msg: M, _: &mut Context<Self>) {
        let _ = self.tx.send(msg);
    }
}

/// Starts an [`Inbox`] on the current arbiter; returns its recipient and the receiving end.
pub fn inbox<M: Message<Result = ()> + Send + 'static>() -> (Recipient<M>, Received<M>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = Inbox::create(|ctx| {
        // Listener and registry events use `try_send` and are skipped when the mailbox is
        // full: room for bursts, set now (not in `started`, which runs only once this thread
        // yields), so none is dropped in a test.
        ctx.set_mailbox_capacity(100_000);
        Inbox { tx }
    });
    (
        addr.recipient(),
        Received {
            rx,
            stash: VecDeque::new(),
        },
    )
}

/// Pull mode: waits for the listener's `NewConnection`, takes the connection with
/// `NextPendingConnection` and hands it over as the std TCP stream it is.
pub async fn take_pending_tcp(
    server: &switchboard::ListenerHandle,
    announced: &mut Received<switchboard::ListenerEvent>,
) -> TcpStream {
    match announced.next("NewConnection").await {
        switchboard::ListenerEvent::NewConnection { .. } => {}
        other => panic!("expected NewConnection, got {other:?}"),
    }
    let pending = within(
        "NextPendingConnection",
        server.address().send(switchboard::NextPendingConnection),
    )
    .await
    .unwrap()
    .expect("a pending connection");
    let switchboard::AcceptedStream::Tcp(stream) = pending.into_stream() else {
        panic!("a TCP listener hands over a TCP stream");
    };
    stream
}

/// Messages received by an [`Inbox`] or a [`Probe`], taken in order or by what they are.
pub struct Received<M> {
    rx: mpsc::UnboundedReceiver<M>,
    /// Messages passed over by [`expect`](Self::expect), kept in order for later calls.
    stash: VecDeque<M>,
}

impl<M> Received<M> {
    /// The next message, within [`LIMIT`].
    pub async fn next(&mut self, what: &str) -> M {
        if let Some(msg) = self.stash.pop_front() {
            return msg;
        }
        within(what, self.rx.recv())
            .await
            .unwrap_or_else(|| panic!("channel closed waiting for {what}"))
    }

    /// The first message (stashed or new) for which `matches` is true, within [`LIMIT`];
    /// others are kept, in order, for later calls.
    pub async fn expect(&mut self, what: &str, mut matches: impl FnMut(&M) -> bool) -> M {
        if let Some(at) = self.stash.iter().position(&mut matches) {
            return self.stash.remove(at).expect("position is in range");
        }
        within(what, async {
            loop {
                let msg = self
                    .rx
                    .recv()
                    .await
                    .unwrap_or_else(|| panic!("channel closed waiting for {what}"));
                if matches(&msg) {
                    return msg;
                }
                self.stash.push_back(msg);
            }
        })
        .await
    }

    /// Asserts that no message for which `matches` is true arrives within [`SILENCE`].
    pub async fn expect_none(&mut self, what: &str, mut matches: impl FnMut(&M) -> bool) {
        assert!(
            !self.stash.iter().any(&mut matches),
            "unexpected {what} (already received)"
        );
        let deadline = tokio::time::Instant::now() + SILENCE;
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            assert!(!matches(&msg), "unexpected {what}");
            self.stash.push_back(msg);
        }
    }

    /// Every message received so far without waiting, stashed ones first.
    pub fn drain_now(&mut self) -> Vec<M> {
        let mut all: Vec<M> = self.stash.drain(..).collect();
        while let Ok(msg) = self.rx.try_recv() {
            all.push(msg);
        }
        all
    }
}

// ---------------------------------------------------------------------------------------------
// Probe: a session handler that reports everything.
// ---------------------------------------------------------------------------------------------

/// What a [`Probe`] does with a frame, after reporting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Writes the frame back; a refused write is reported as [`Event::WriteRefused`].
    Echo,
    /// Nothing.
    Ignore,
    /// Panics (the session must end with `HandlerPanicked`).
    Panic,
    /// Closes gracefully (`Conn::disconnect_from_host`).
    DisconnectFromHost,
    /// Closes at once (`Conn::abort`).
    Abort,
}

/// Decides a [`Probe`]'s [`Action`] per frame.
pub type Script<T> = Arc<dyn Fn(&T) -> Action + Send + Sync>;

/// How many times `disconnected` ran, per session: must end at exactly 1 for each.
pub type Tally = Arc<Mutex<HashMap<SessionId, usize>>>;

/// A codec a [`Probe`] can echo with: its decoded item can be encoded back.
pub trait ProbeCodec:
    SessionCodec + Send + Decoder<Item = Self::Frame> + Encoder<Self::Frame, Error = Self::EchoError>
{
    /// The decoded (and echoed) item.
    type Frame: Clone + Send + fmt::Debug + 'static;
    /// The error of encoding a frame.
    type EchoError: std::error::Error + Send + Sync + 'static;
}

impl<C, T, E> ProbeCodec for C
where
    C: SessionCodec + Send + Decoder<Item = T> + Encoder<T, Error = E>,
    T: Clone + Send + fmt::Debug + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    type Frame = T;
    type EchoError = E;
}

/// The session type a [`Probe`] runs in.
pub type ProbeSession<C> = Session<C, Probe<C>>;

/// What a [`Probe`] saw.
pub enum Event<C: ProbeCodec> {
    /// `connected` ran, on thread `thread`.
    Connected {
        /// The session at start.
        info: SessionInfo,
        /// The session, for messages.
        session: Addr<ProbeSession<C>>,
        /// The name of the thread the session runs on.
        thread: String,
    },
    /// A frame arrived.
    Frame {
        /// The session.
        id: SessionId,
        /// The frame.
        frame: C::Item,
    },
    /// An echo was refused.
    WriteRefused {
        /// The session.
        id: SessionId,
        /// Why.
        error: switchboard::SessionError,
    },
    /// `write_buffer_full` ran.
    Full {
        /// The session.
        id: SessionId,
        /// `Conn::bytes_to_write` at that moment.
        buffered: usize,
    },
    /// `write_buffer_drained` ran.
    Drained {
        /// The session.
        id: SessionId,
        /// `Conn::bytes_to_write` at that moment.
        buffered: usize,
    },
    /// `disconnected` ran.
    Disconnected {
        /// The session.
        id: SessionId,
        /// Why it ended.
        reason: DisconnectReason,
        /// Its final snapshot.
        info: SessionInfo,
        /// The thread `disconnected` ran on.
        thread: String,
    },
    /// The handler was dropped: the session is gone, no callback can follow, and its worker
    /// load and connection permit were already released (they drop before the handler).
    Dropped {
        /// The session.
        id: SessionId,
    },
}

impl<C: ProbeCodec> Event<C> {
    /// The session the event is about.
    pub fn id(&self) -> SessionId {
        match self {
            Event::Connected { info, .. } => info.id,
            Event::Frame { id, .. }
            | Event::WriteRefused { id, .. }
            | Event::Full { id, .. }
            | Event::Drained { id, .. }
            | Event::Disconnected { id, .. }
            | Event::Dropped { id } => *id,
        }
    }
}

impl<C: ProbeCodec> fmt::Debug for Event<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Connected { info, thread, .. } => {
                write!(f, "Connected({} on {thread})", info.id)
            }
            Event::Frame { id, frame } => {
                let text = format!("{frame:?}");
                let cut: String = text.chars().take(60).collect();
                write!(f, "Frame({id}, {cut})")
            }
            Event::WriteRefused { id, error } => write!(f, "WriteRefused({id}, {error})"),
            Event::Full { id, buffered } => write!(f, "Full({id}, {buffered})"),
            Event::Drained { id, buffered } => write!(f, "Drained({id}, {buffered})"),
            Event::Disconnected { id, reason, .. } => write!(f, "Disconnected({id}, {reason})"),
            Event::Dropped { id } => write!(f, "Dropped({id})"),
        }
    }
}

/// A session handler that reports every callback as an [`Event`], counts `disconnected` calls
/// in a [`Tally`], and acts on frames as its [`Script`] says.
pub struct Probe<C: ProbeCodec> {
    tx: mpsc::UnboundedSender<Event<C>>,
    tally: Tally,
    script: Script<C::Item>,
    id: Option<SessionId>,
}

fn thread_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_string()
}

impl<C: ProbeCodec> SessionHandler<C> for Probe<C> {
    fn connected(&mut self, conn: &mut Conn<'_, C, Self>) {
        self.id = Some(conn.id());
        let _ = self.tx.send(Event::Connected {
            info: conn.info(),
            session: conn.address(),
            thread: thread_name(),
        });
    }

    fn ready_read(&mut self, frame: C::Item, conn: &mut Conn<'_, C, Self>) {
        let id = conn.id();
        // Reported before the script runs, so a script that blocks still shows its frame.
        let _ = self.tx.send(Event::Frame {
            id,
            frame: frame.clone(),
        });
        let action = (self.script)(&frame);
        match action {
            Action::Echo => {
                if let Err(error) = conn.write(frame) {
                    let _ = self.tx.send(Event::WriteRefused { id, error });
                }
            }
            Action::Ignore => {}
            Action::Panic => panic!("probe told to panic"),
            Action::DisconnectFromHost => conn.disconnect_from_host(),
            Action::Abort => conn.abort(),
        }
    }

    fn write_buffer_full(&mut self, conn: &mut Conn<'_, C, Self>) {
        let _ = self.tx.send(Event::Full {
            id: conn.id(),
            buffered: conn.bytes_to_write(),
        });
    }

    fn write_buffer_drained(&mut self, conn: &mut Conn<'_, C, Self>) {
        let _ = self.tx.send(Event::Drained {
            id: conn.id(),
            buffered: conn.bytes_to_write(),
        });
    }

    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        *self
            .tally
            .lock()
            .expect("tally lock")
            .entry(info.id)
            .or_insert(0) += 1;
        let _ = self.tx.send(Event::Disconnected {
            id: info.id,
            reason: reason.clone(),
            info: info.clone(),
            thread: thread_name(),
        });
    }
}

impl<C: ProbeCodec> Drop for Probe<C> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let _ = self.tx.send(Event::Dropped { id });
        }
    }
}

/// Makes [`Probe`]s that share one event channel and one [`Tally`].
pub struct Probes<C: ProbeCodec> {
    tx: mpsc::UnboundedSender<Event<C>>,
    /// `disconnected` calls per session, across every probe made here.
    pub tally: Tally,
    script: Script<C::Item>,
}

impl<C: ProbeCodec> Clone for Probes<C> {
    fn clone(&self) -> Self {
        Probes {
            tx: self.tx.clone(),
            tally: self.tally.clone(),
            script: self.script.clone(),
        }
    }
}

impl<C: ProbeCodec> Probes<C> {
    /// Probes that act on every frame as `script` says, and the events they report.
    pub fn new(script: impl Fn(&C::Item) -> Action + Send + Sync + 'static) -> (Self, Events<C>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Probes {
                tx,
                tally: Tally::default(),
                script: Arc::new(script),
            },
            Received {
                rx,
                stash: VecDeque::new(),
            },
        )
    }

    /// Probes that echo every frame.
    pub fn echo() -> (Self, Events<C>) {
        Self::new(|_| Action::Echo)
    }

    /// Probes that only report.
    pub fn quiet() -> (Self, Events<C>) {
        Self::new(|_| Action::Ignore)
    }

    /// A new probe for one session.
    pub fn make(&self) -> Probe<C> {
        Probe {
            tx: self.tx.clone(),
            tally: self.tally.clone(),
            script: self.script.clone(),
            id: None,
        }
    }

    /// A handler factory for [`ListenerBuilder::serve`](switchboard::ListenerBuilder::serve).
    pub fn factory(&self) -> impl Fn() -> Probe<C> + Send + Sync + 'static {
        let probes = Mutex::new(self.clone());
        move || probes.lock().expect("probes lock").make()
    }

    /// How many times `disconnected` ran for `id`.
    pub fn disconnects(&self, id: SessionId) -> usize {
        self.tally
            .lock()
            .expect("tally lock")
            .get(&id)
            .copied()
            .unwrap_or(0)
    }
}

/// What a set of [`Probes`] reported.
pub type Events<C> = Received<Event<C>>;

impl<C: ProbeCodec> Events<C> {
    /// The next session to start: its snapshot, address and thread name.
    pub async fn connected(&mut self) -> (SessionInfo, Addr<ProbeSession<C>>, String) {
        match self
            .expect("a session to start", |e| {
                matches!(e, Event::Connected { .. })
            })
            .await
        {
            Event::Connected {
                info,
                session,
                thread,
            } => (info, session, thread),
            _ => unreachable!(),
        }
    }

    /// The next session to start whose peer is `peer` (a client's local address).
    pub async fn connected_from(
        &mut self,
        peer: SocketAddr,
    ) -> (SessionInfo, Addr<ProbeSession<C>>) {
        let (info, session, _) = self.connected_with_thread(peer).await;
        (info, session)
    }

    /// As [`connected_from`](Self::connected_from), with the name of the session's thread.
    pub async fn connected_with_thread(
        &mut self,
        peer: SocketAddr,
    ) -> (SessionInfo, Addr<ProbeSession<C>>, String) {
        match self
            .expect(
                &format!("the session of client {peer} to start"),
                |e| matches!(e, Event::Connected { info, .. } if info.peer_addr == peer),
            )
            .await
        {
            Event::Connected {
                info,
                session,
                thread,
            } => (info, session, thread),
            _ => unreachable!(),
        }
    }

    /// The next frame of session `id`.
    pub async fn frame(&mut self, id: SessionId) -> C::Item {
        match self
            .expect(
                &format!("a frame on {id}"),
                |e| matches!(e, Event::Frame { id: of, .. } if *of == id),
            )
            .await
        {
            Event::Frame { frame, .. } => frame,
            _ => unreachable!(),
        }
    }

    /// Session `id`'s `disconnected` call: the reason and the final snapshot.
    pub async fn disconnected(&mut self, id: SessionId) -> (DisconnectReason, SessionInfo) {
        match self
            .expect(
                &format!("{id} to disconnect"),
                |e| matches!(e, Event::Disconnected { id: of, .. } if *of == id),
            )
            .await
        {
            Event::Disconnected { reason, info, .. } => (reason, info),
            _ => unreachable!(),
        }
    }

    /// Waits until session `id`'s handler is dropped: after this no callback can run.
    pub async fn dropped(&mut self, id: SessionId) {
        self.expect(
            &format!("{id} to be dropped"),
            |e| matches!(e, Event::Dropped { id: of } if *of == id),
        )
        .await;
    }

    /// Waits for `write_buffer_full` on `id`; returns the bytes buffered then.
    pub async fn full(&mut self, id: SessionId) -> usize {
        match self
            .expect(
                &format!("write_buffer_full on {id}"),
                |e| matches!(e, Event::Full { id: of, .. } if *of == id),
            )
            .await
        {
            Event::Full { buffered, .. } => buffered,
            _ => unreachable!(),
        }
    }

    /// Waits for `write_buffer_drained` on `id`; returns the bytes buffered then.
    pub async fn drained(&mut self, id: SessionId) -> usize {
        match self
            .expect(
                &format!("write_buffer_drained on {id}"),
                |e| matches!(e, Event::Drained { id: of, .. } if *of == id),
            )
            .await
        {
            Event::Drained { buffered, .. } => buffered,
            _ => unreachable!(),
        }
    }

    /// Asserts that no echo was refused so far.
    pub fn assert_no_refused_write(&mut self) {
        let all = self.drain_now();
        for event in &all {
            if let Event::WriteRefused { id, error } = event {
                panic!("an echo on {id} was refused: {error}");
            }
        }
        self.stash.extend(all);
    }
}

/// Waits for session `id` to end and be dropped, then asserts that `disconnected` ran exactly
/// once for it; returns the reason.
pub async fn ended_once<C: ProbeCodec>(
    probes: &Probes<C>,
    events: &mut Events<C>,
    id: SessionId,
) -> DisconnectReason {
    let (reason, _) = events.disconnected(id).await;
    events.dropped(id).await;
    assert_eq!(
        probes.disconnects(id),
        1,
        "disconnected must run exactly once for {id} (reason {reason})"
    );
    reason
}

/// The codec error inside a `DisconnectReason::Codec`, downcast to the codec crate's type.
pub fn codec_error(reason: &DisconnectReason) -> &switchboard_codec::CodecError {
    match reason {
        DisconnectReason::Codec(error) => error
            .downcast_ref::<switchboard_codec::CodecError>()
            .unwrap_or_else(|| panic!("codec error of another type: {error}")),
        other => panic!("expected a codec error, got {other:?}"),
    }
}

/// Harnesses shared with the fuzz targets in `fuzz/`.
pub mod fuzzing;
pub mod pki;

/// The workspace README's examples, compiled as doctests so they cannot rot (kept here rather
/// than in `switchboard`, whose package does not contain that file).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
