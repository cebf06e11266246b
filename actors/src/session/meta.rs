use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::SystemTime,
};

use once_cell::race::OnceBox;

use super::{CloseMode, DisconnectReason, Parts, SessionId, SessionInfo, SessionState};
use crate::{outbox::Outbox, Address, SessionConfig, TlsInfo, TransportKind};

/// What a session shares with the registry: identity, live counters, and the write-buffer
/// size and pause flag published once per turn.
#[derive(Debug)]
pub(crate) struct SessionMeta {
    pub(crate) id: SessionId,
    pub(crate) peer_addr: Address,
    /// Shared by every session of a listener bound to one address.
    pub(crate) local_addr: Arc<Address>,
    /// What the session started over; [`SessionMeta::transport`] says what it runs over now.
    started_over: TransportKind,
    /// What TLS negotiated: set by the handshake at start or by STARTTLS later, at most once.
    /// Boxed, so plaintext sessions pay one pointer.
    tls: OnceBox<TlsInfo>,
    /// The worker's index, or [`NO_WORKER`] off a pool (4 bytes where an `Option` takes 8,
    /// to keep the record in its allocator size class).
    worker: u32,
    /// Microseconds since the Unix epoch: 8 bytes where a `SystemTime` takes 16.
    connected_at_us: u64,
    pub(super) bytes_in: Counter,
    pub(super) bytes_out: Counter,
    pub(super) frames_in: Counter,
    pub(super) frames_out: Counter,
    /// Bytes read while lingering and thrown away; kept out of `bytes_in`, which counts only
    /// input the session accepted (an echo's `bytes_in` must equal its `bytes_out`).
    pub(super) bytes_discarded: Counter,
    pub(super) bytes_to_write: AtomicUsize,
    pub(crate) broadcasts_dropped: AtomicU64,
    pub(super) read_finished: AtomicBool,
    pub(super) state: AtomicU8,
    /// Write-buffer-full events; bumped once per crossing of the high watermark.
    pub(super) write_buffer_full: AtomicU64,
    pub(super) read_paused: AtomicBool,
    /// Quiet time as of the last tick, in milliseconds.
    pub(super) idle_ms: AtomicU32,
    /// The strongest close already asked of this session through the registry (a
    /// [`CloseMode`] as `u8`, or [`NO_CLOSE_REQUESTED`]), so repeated kicks or a burst of
    /// slow-consumer broadcasts queue one close message per level, not one per call.
    pub(crate) close_requested: AtomicU8,
    /// The close asked through the registry and not yet taken by the session (its level is
    /// `close_requested`); boxed, as it is rare.
    close_request: Mutex<Option<Box<(DisconnectReason, CloseMode)>>>,
    /// What the registry hands this session from other threads.
    pub(crate) outbox: Outbox,
    /// The session is counted under its listener's per-IP limit, as `peer_addr`'s address
    /// (the session's admission holds no address of its own).
    pub(super) counted_per_ip: bool,
}

/// A counter only the session's own thread writes (so a load and a store, no locked
/// read-modify-write) and anyone reads: live, so a peer that has its answer never sees
/// counters older than its request.
/// A session's live counters as [`SessionMeta::counters`] reads them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LiveCounters {
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) frames_in: u64,
    pub(crate) frames_out: u64,
    pub(crate) bytes_to_write: usize,
    pub(crate) bytes_queued: usize,
    pub(crate) write_buffer_full: u64,
    pub(crate) read_paused: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    // Called a few times per frame from other modules: a call costs more than the add.
    #[inline]
    pub(super) fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// `SessionMeta::worker` of a session that is not on a worker pool.
const NO_WORKER: u32 = u32::MAX;

/// [`SessionMeta::close_requested`] before any close was asked.
pub(crate) const NO_CLOSE_REQUESTED: u8 = 0;

/// Waking a session's record wakes its driver (the waker the driver registered last with
/// the outbound queue): the worker's timeout clock holds one such waker per session, made
/// once, instead of a copy of the driver's own that would have to be checked every turn.
impl std::task::Wake for SessionMeta {
    fn wake(self: Arc<Self>) {
        self.outbox.wake_session();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.outbox.wake_session();
    }
}

impl SessionMeta {
    pub(super) fn new(
        id: SessionId,
        parts: Parts,
        worker: Option<usize>,
        config: &SessionConfig,
        transport: Option<TransportKind>,
        tls: Option<TlsInfo>,
        counted_per_ip: bool,
    ) -> SessionMeta {
        let transport = transport.unwrap_or(match parts.peer_addr {
            Address::Unix(_) => TransportKind::Unix,
            _ => TransportKind::Tcp,
        });
        let tls_info = OnceBox::new();
        if let Some(info) = tls {
            let _ = tls_info.set(Box::new(info));
        }
        SessionMeta {
            id,
            peer_addr: parts.peer_addr,
            local_addr: parts.local_addr,
            started_over: transport,
            tls: tls_info,
            worker: worker.map_or(NO_WORKER, |w| {
                u32::try_from(w).expect("worker indexes fit in u32")
            }),
            connected_at_us: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            frames_in: Counter::default(),
            frames_out: Counter::default(),
            bytes_discarded: Counter::default(),
            bytes_to_write: AtomicUsize::new(0),
            broadcasts_dropped: AtomicU64::new(0),
            read_finished: AtomicBool::new(false),
            state: AtomicU8::new(SessionState::Connected as u8),
            write_buffer_full: AtomicU64::new(0),
            read_paused: AtomicBool::new(false),
            idle_ms: AtomicU32::new(0),
            close_requested: AtomicU8::new(NO_CLOSE_REQUESTED),
            close_request: Mutex::new(None),
            outbox: Outbox::new(config.outbound_queue, config.slow_consumer_timeout),
            counted_per_ip,
        }
    }

    /// A record with no session behind it, for measuring the registry alone.
    /// The index of the worker the session runs on, if it runs on a pool.
    pub(super) fn worker(&self) -> Option<usize> {
        (self.worker != NO_WORKER).then_some(self.worker as usize)
    }

    pub(crate) fn placeholder(peer_addr: SocketAddr, local_addr: SocketAddr) -> Arc<SessionMeta> {
        let parts = Parts {
            id: None,
            peer_addr: peer_addr.into(),
            local_addr: Arc::new(local_addr.into()),
        };
        Arc::new(SessionMeta::new(
            SessionId::next(),
            parts,
            None,
            &SessionConfig::default(),
            None,
            None,
            false,
        ))
    }

    /// The counters alone, for sums over many sessions (a scrape, `info`): read without
    /// copying the addresses and TLS details a full [`info`](Self::info) carries.
    pub(crate) fn counters(&self) -> LiveCounters {
        LiveCounters {
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            frames_in: self.frames_in.get(),
            frames_out: self.frames_out.get(),
            bytes_to_write: self.bytes_to_write.load(Ordering::Relaxed),
            bytes_queued: self.outbox.queued_bytes(),
            write_buffer_full: self.write_buffer_full.load(Ordering::Relaxed),
            read_paused: self.read_paused.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn info(&self) -> SessionInfo {
        let counters = self.counters();
        SessionInfo {
            id: self.id,
            peer_addr: self.peer_addr.clone(),
            local_addr: Address::clone(&self.local_addr),
            transport: self.transport(),
            tls: self.tls().cloned(),
            worker: self.worker(),
            connected_at: self.connected_at(),
            bytes_in: counters.bytes_in,
            bytes_out: counters.bytes_out,
            frames_in: counters.frames_in,
            frames_out: counters.frames_out,
            bytes_to_write: counters.bytes_to_write,
            bytes_queued: counters.bytes_queued,
            broadcasts_dropped: self.broadcasts_dropped.load(Ordering::Relaxed),
            read_finished: self.read_finished.load(Ordering::Relaxed),
            bytes_discarded: self.bytes_discarded.get(),
            state: SessionState::from_u8(self.state.load(Ordering::Relaxed)),
            write_buffer_full: counters.write_buffer_full,
            read_paused: counters.read_paused,
            idle_for: std::time::Duration::from_millis(u64::from(
                self.idle_ms.load(Ordering::Relaxed),
            )),
        }
    }

    /// Bytes in and out so far, the key of `sessions --sort bytes`.
    pub(crate) fn bytes_total(&self) -> u64 {
        self.bytes_in.get().saturating_add(self.bytes_out.get())
    }

    /// Quiet time as of the last tick, in milliseconds: the key of `sessions --sort idle`.
    pub(crate) fn idle_ms(&self) -> u32 {
        self.idle_ms.load(Ordering::Relaxed)
    }

    /// When the session started.
    pub(crate) fn connected_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(self.connected_at_us)
    }

    /// When the session started, in microseconds since the Unix epoch (a sort key).
    pub(crate) fn connected_at_us(&self) -> u64 {
        self.connected_at_us
    }

    /// What the session runs over now: TLS once STARTTLS has finished.
    pub(crate) fn transport(&self) -> TransportKind {
        match self.tls.get() {
            Some(_) => self.started_over.encrypted(),
            None => self.started_over,
        }
    }

    /// What TLS negotiated, once it has.
    pub(crate) fn tls(&self) -> Option<&TlsInfo> {
        self.tls.get()
    }

    /// Records a finished STARTTLS handshake.
    pub(super) fn set_tls(&self, info: TlsInfo) {
        let _ = self.tls.set(Box::new(info));
    }

    /// Asks the session to close (kick, shutdown, slow consumer), unless a close at least as
    /// strong was asked already: repeated kicks or a burst of slow-consumer broadcasts leave
    /// one request per level. The session takes it at its next turn ([`take_close_request`]).
    ///
    /// [`take_close_request`]: SessionMeta::take_close_request
    pub(crate) fn request_close(&self, reason: DisconnectReason, mode: CloseMode) {
        let level = mode as u8;
        if self.close_requested.fetch_max(level, Ordering::AcqRel) < level {
            *lock(&self.close_request) = Some(Box::new((reason, mode)));
            self.outbox.wake_session();
        }
    }

    /// The close asked since the session last took one, if any. A request whose level is
    /// already set but whose reason is not stored yet is taken at the wake-up that follows.
    /// Checked at the start of every driver turn: the check is inline, the rare take is not.
    #[inline]
    pub(super) fn take_close_request(
        &self,
        taken_level: u8,
    ) -> Option<(DisconnectReason, CloseMode)> {
        if self.close_requested.load(Ordering::Acquire) <= taken_level {
            return None;
        }
        self.take_stored_close_request()
    }

    #[cold]
    #[inline(never)]
    fn take_stored_close_request(&self) -> Option<(DisconnectReason, CloseMode)> {
        lock(&self.close_request).take().map(|request| *request)
    }

    /// Whether a close was asked that the session has not taken: checked after the driver
    /// registers its waker, as a request made during the turn may have found none to wake.
    pub(super) fn close_pending(&self, taken_level: u8) -> bool {
        self.close_requested.load(Ordering::Acquire) > taken_level
    }

    /// Bytes this session still owes its peer: its write buffer and its outbound queue.
    pub(crate) fn bytes_owed(&self) -> usize {
        self.bytes_to_write.load(Ordering::Relaxed) + self.outbox.queued_bytes()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded value is replaced whole: a panic elsewhere cannot leave it half written.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
