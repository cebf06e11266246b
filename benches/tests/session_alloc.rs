//! Allocation guard for the session start path and the per-frame path: a counting global
//! allocator, not a clock, so the figures do not drift with machine noise and CI can assert
//! them. The budgets are the figures BENCHMARKS.md states ("Allocation guard"); a change that
//! raises one must say so there.
//!
//! One test function only: the counters are process-wide, so two tests measuring at once
//! would count each other's allocations.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::atomic::{AtomicIsize, AtomicUsize, Ordering},
    time::Duration,
};

use bytes::Bytes;
use switchboard::{Conn, Listener, SessionConfig, SessionHandler};
use switchboard_codec::Raw;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
/// Bytes asked for, never decreased: what a path allocates, whatever it frees after.
static ASKED_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters only watch.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ASKED_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ASKED_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ASKED_BYTES.fetch_add(new_size.saturating_sub(layout.size()), Ordering::Relaxed);
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn snapshot() -> (usize, isize) {
    (
        ALLOCATIONS.load(Ordering::SeqCst),
        LIVE_BYTES.load(Ordering::SeqCst),
    )
}

fn asked() -> usize {
    ASKED_BYTES.load(Ordering::SeqCst)
}

/// Heap allocations per plaintext session start (accept, hand-off to the worker, registry
/// insert, actor start), averaged over `SESSIONS`. BENCHMARKS.md, "Allocation guard".
const START_ALLOCATIONS_BUDGET: f64 = 12.5;
/// Net heap growth per idle session (requested sizes, before the allocator's own overhead;
/// net of what the warm-up wave left behind and the second wave freed, so it moves between
/// runs: 1,074-1,262 B seen, against 1,336 B in the six allocations an idle session keeps).
/// The allocation count above and the size test in `switchboard::session` are the exact
/// guards; this one catches a large regression.
const IDLE_HEAP_BYTES_BUDGET: f64 = 1_400.0;
/// What a session's `tracing` span adds to its start under `switchboard::log::LineLog` at INFO
/// (the command's subscriber): a 64-byte slot of the span slab, allocated a 16 KiB page at a
/// time; the session holds its handle inline. 64 by construction, measured 47-72: the window
/// also sees the registry's maps grow, and the per-start figure it is net of moves. Bytes asked
/// for, so what is freed later still counts; issue 11 §7 allows 128 bytes per idle connection
/// for spans and metrics. A boxed handle again would show in the allocation budget below.
const SPAN_BYTES_BUDGET: f64 = 96.0;
/// Below this the sessions made no spans: without them the window sees a few bytes of noise.
const SPAN_BYTES_MADE: f64 = 32.0;
/// One slab page per [`SPAN_SESSIONS`], and the callsite's first registration.
const SPAN_ALLOCATIONS_BUDGET: f64 = 0.05;
/// One page of the span slab (`switchboard::log`).
const SPAN_SESSIONS: usize = 256;
/// Waves of [`SPAN_SESSIONS`] measured; the least is taken.
const SPAN_WAVES: usize = 3;
/// Heap allocations per echoed 64-byte message on a busy session.
const FRAME_ALLOCATIONS_BUDGET: f64 = 0.05;

/// Heap allocations per echoed 64 KiB chunk on a bulk session. `Raw` moves a large read whole
/// into the write buffer, and the next read takes that allocation back once it is written
/// out, so no buffer is allocated per chunk (2.0 allocations before, a fresh read buffer
/// each time). The one left is the small header `Bytes` needs to share a buffer the read did
/// not fill (`BytesMut::freeze`), freed when the write buffer takes the chunk over. The budget
/// leaves room for the timing noise the half-chunk case below shows under load, and still
/// fails at 2.0.
const BULK_ALLOCATIONS_BUDGET: f64 = 1.5;
/// Heap allocations per 32 KiB read when two moved chunks come in one turn: 0.000 on a quiet
/// machine since the first is written out before the second read (1.000 while answers waited
/// for the next read); 0.140 once under CI's load, where a read can come before the bytes (the
/// taken buffer is then given back to the allocator) or bring less than a chunk (split, not
/// moved). The budget sits between the two behaviours, not at the quiet figure.
const HALF_CHUNK_ALLOCATIONS_BUDGET: f64 = 0.5;
const BULK_CHUNK: usize = 64 * 1024;
const BULK_CHUNKS: usize = 200;

const SESSIONS: usize = 400;
const FRAMES: usize = 2_000;

struct Echo;

impl SessionHandler<Raw> for Echo {
    fn ready_read(&mut self, data: Bytes, conn: &mut Conn<'_, Raw, Self>) {
        let _ = conn.write(data);
    }
}

/// The same echo with the chunk handed back uncopied (`Conn::write_bytes`): held by
/// reference instead of encoded into the write buffer, which must cost no allocation either.
struct EchoUncopied;

impl SessionHandler<Raw> for EchoUncopied {
    fn ready_read(&mut self, data: Bytes, conn: &mut Conn<'_, Raw, Self>) {
        let _ = conn.write_bytes(data);
    }
}

fn connect_all(addr: SocketAddr, count: usize, into: &mut Vec<TcpStream>) {
    for _ in 0..count {
        into.push(TcpStream::connect(addr).expect("connect to the echo listener"));
    }
}

/// Allocations per echo of `message` by the session behind `client`, one at a time, over
/// `rounds` echoes after `warm_up` uncounted ones (on a blocking thread: the session's own
/// runs on the test's runtime).
async fn echo_allocations(
    mut client: TcpStream,
    message: Vec<u8>,
    warm_up: usize,
    rounds: usize,
) -> f64 {
    tokio::task::spawn_blocking(move || {
        let mut back = vec![0u8; message.len()];
        let mut round = || {
            client.write_all(&message).expect("write");
            client.read_exact(&mut back).expect("read the echo");
            assert!(back == message, "the echo came back changed");
        };
        for _ in 0..warm_up {
            round();
        }
        let (before, _) = snapshot();
        for _ in 0..rounds {
            round();
        }
        let (after, _) = snapshot();
        (after - before) as f64 / rounds as f64
    })
    .await
    .expect("echo thread")
}

#[test]
fn session_start_and_frame_allocations_stay_within_budget() {
    let system = actix_rt::System::new();
    system.block_on(async {
        // Ticks off, so an idle session's figure is not muddled by a tick in the window.
        let config = SessionConfig::default().with_idle_timeout(None);
        let server = Listener::bind("127.0.0.1:0".parse::<SocketAddr>().expect("address"))
            .workers(1)
            .session_config(config.clone())
            .serve(Raw, || Echo)
            .expect("listen");
        let addr = server.local_addr();
        let registry = server.registry().clone();
        let wait_for = |count: usize| {
            let registry = registry.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(20), registry.wait_for_count(count))
                    .await
                    .unwrap_or_else(|_| panic!("registry never reached {count} sessions"));
            }
        };

        // Warm-up: the registry's shards, the worker's slabs and the listener grow to size
        // once; a second wave of the same size must reuse them.
        let mut clients = Vec::with_capacity(SESSIONS);
        let connect = |clients: Vec<TcpStream>, count: usize| {
            tokio::task::spawn_blocking(move || {
                let mut clients = clients;
                connect_all(addr, count, &mut clients);
                clients
            })
        };
        clients = connect(clients, SESSIONS).await.expect("connect thread");
        wait_for(SESSIONS).await;
        clients.clear();
        wait_for(0).await;

        let (allocations_before, live_before) = snapshot();
        let asked_before = asked();
        clients = connect(clients, SESSIONS).await.expect("connect thread");
        // A session joins the registry inside the worker turn that starts it, so at most the
        // last one is still finishing that turn here: noise of one session in `SESSIONS`.
        wait_for(SESSIONS).await;
        let (allocations_after, live_after) = snapshot();
        let asked_per_start = (asked() - asked_before) as f64 / SESSIONS as f64;
        let per_start = (allocations_after - allocations_before) as f64 / SESSIONS as f64;
        let per_idle = (live_after - live_before) as f64 / SESSIONS as f64;

        // The per-frame path: one busy session echoing 64-byte messages one at a time; the
        // bulk path: another echoing 64 KiB chunks.
        let busy = clients.pop().expect("a client");
        let per_frame = echo_allocations(busy, vec![7u8; 64], 100, FRAMES).await;
        let bulk = clients.pop().expect("a client");
        let chunk: Vec<u8> = (0..BULK_CHUNK).map(|i| (i % 251) as u8).collect();
        let per_chunk = echo_allocations(bulk, chunk.clone(), 20, BULK_CHUNKS).await;
        drop(clients);
        wait_for(0).await;

        // Two moved chunks per turn: reads fixed at 32 KiB (under the 64 KiB high watermark,
        // so nothing holds the frames) and 64 KiB sent at a time. The first chunk must be
        // written out before the second read for that read to take its buffer back.
        let halves = Listener::bind("127.0.0.1:0".parse::<SocketAddr>().expect("address"))
            .workers(1)
            .session_config(
                config
                    .clone()
                    .with_read_chunk(BULK_CHUNK / 2)
                    .with_max_read_chunk(BULK_CHUNK / 2),
            )
            .serve(Raw, || Echo)
            .expect("listen");
        let client = TcpStream::connect(halves.local_addr()).expect("connect");
        let per_half_chunk = echo_allocations(client, chunk.clone(), 20, BULK_CHUNKS).await / 2.0;
        // Its session's end must not fall inside the span measurement below.
        tokio::time::timeout(Duration::from_secs(20), halves.registry().wait_for_count(0))
            .await
            .expect("the two-chunk session never ended");
        drop(halves);

        // The frame and bulk paths again, each echo held by reference.
        let uncopied = Listener::bind("127.0.0.1:0".parse::<SocketAddr>().expect("address"))
            .workers(1)
            .session_config(config.clone())
            .serve(Raw, || EchoUncopied)
            .expect("listen");
        let client = TcpStream::connect(uncopied.local_addr()).expect("connect");
        let per_frame_uncopied = echo_allocations(client, vec![7u8; 64], 100, FRAMES).await;
        let client = TcpStream::connect(uncopied.local_addr()).expect("connect");
        let per_chunk_uncopied = echo_allocations(client, chunk, 20, BULK_CHUNKS).await;
        tokio::time::timeout(Duration::from_secs(20), uncopied.registry().wait_for_count(0))
            .await
            .expect("the uncopied echo's sessions never ended");
        drop(uncopied);

        // The same start with a span per session: the subscriber goes in last, as it stays
        // for the rest of the process. One slab page of sessions, so the slots they take are
        // counted in full; everything else was made to size above.
        switchboard::log::LineLog::new(std::io::sink, false)
            .with(EnvFilter::new("info"))
            .try_init()
            .expect("no subscriber yet");
        // Waves of fresh sessions, each beside the ones before it (so each fills a page of new
        // slots). A window counts every thread's allocations, and what other threads do in it
        // only ever adds, so the least of the waves is the spans' own cost: one wave alone
        // read 0.01-0.07 allocations a session from run to run.
        let mut span_allocations = f64::INFINITY;
        let mut span_bytes = f64::INFINITY;
        let mut span_clients = Vec::with_capacity(SPAN_WAVES);
        for wave in 1..=SPAN_WAVES {
            let (allocations_before, _) = snapshot();
            let asked_before = asked();
            let clients = connect(Vec::with_capacity(SPAN_SESSIONS), SPAN_SESSIONS)
                .await
                .expect("connect thread");
            wait_for(SPAN_SESSIONS * wave).await;
            let (allocations_after, _) = snapshot();
            let allocations = (allocations_after - allocations_before) as f64
                / SPAN_SESSIONS as f64
                - per_start;
            let bytes = (asked() - asked_before) as f64 / SPAN_SESSIONS as f64 - asked_per_start;
            span_allocations = span_allocations.min(allocations);
            span_bytes = span_bytes.min(bytes);
            span_clients.push(clients);
        }

        println!(
            "session start: {per_start:.2} allocations, idle session: {per_idle:.0} heap bytes, \
             echoed frame: {per_frame:.3} allocations, echoed 64 KiB chunk: {per_chunk:.3} \
             allocations, two 32 KiB reads a turn: {per_half_chunk:.3} allocations a read; \
             uncopied (`write_bytes`): {per_frame_uncopied:.3} per frame, \
             {per_chunk_uncopied:.3} per 64 KiB chunk; \
             a session span adds {span_allocations:.2} allocations and \
             {span_bytes:.0} bytes"
        );
        assert!(
            span_bytes >= SPAN_BYTES_MADE,
            "the sessions got no spans ({span_bytes:.0} bytes more per start)"
        );
        assert!(
            span_bytes <= SPAN_BYTES_BUDGET,
            "a session span costs {span_bytes:.0} bytes (budget {SPAN_BYTES_BUDGET})"
        );
        assert!(
            span_allocations <= SPAN_ALLOCATIONS_BUDGET,
            "a session span makes {span_allocations:.2} allocations (budget {SPAN_ALLOCATIONS_BUDGET})"
        );
        assert!(
            per_start <= START_ALLOCATIONS_BUDGET,
            "a session start made {per_start:.2} allocations (budget {START_ALLOCATIONS_BUDGET})"
        );
        assert!(
            per_idle <= IDLE_HEAP_BYTES_BUDGET,
            "an idle session holds {per_idle:.0} heap bytes (budget {IDLE_HEAP_BYTES_BUDGET})"
        );
        assert!(
            per_frame <= FRAME_ALLOCATIONS_BUDGET,
            "an echoed frame made {per_frame:.3} allocations (budget {FRAME_ALLOCATIONS_BUDGET})"
        );
        assert!(
            per_chunk <= BULK_ALLOCATIONS_BUDGET,
            "an echoed 64 KiB chunk made {per_chunk:.3} allocations (budget {BULK_ALLOCATIONS_BUDGET})"
        );
        assert!(
            per_frame_uncopied <= FRAME_ALLOCATIONS_BUDGET,
            "an echoed frame held by reference made {per_frame_uncopied:.3} allocations \
             (budget {FRAME_ALLOCATIONS_BUDGET})"
        );
        assert!(
            per_chunk_uncopied <= BULK_ALLOCATIONS_BUDGET,
            "an echoed 64 KiB chunk held by reference made {per_chunk_uncopied:.3} allocations \
             (budget {BULK_ALLOCATIONS_BUDGET})"
        );
        assert!(
            per_half_chunk <= HALF_CHUNK_ALLOCATIONS_BUDGET,
            "a second moved chunk in a turn made {per_half_chunk:.3} allocations a read \
             (budget {HALF_CHUNK_ALLOCATIONS_BUDGET})"
        );
        drop(span_clients);
        drop(server);
    });
}
