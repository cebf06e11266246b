//! A session that keeps finding bytes does not keep its worker: when its turn ends with bytes
//! still waiting, the sessions whose sockets became ready meanwhile run before its next turn.
//! Counted in the busy session's turns, not in time, so a loaded machine cannot make it pass
//! or fail: the light session answers with how many frames the busy one had taken when the
//! light one's byte was handled, and the client compares that with the count just after it
//! sent the byte.

use std::{
    io::{Read, Write},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Instant,
};

use bytes::Bytes;
use switchboard::{Conn, Listener, SessionHandler};
use switchboard_codec::Raw;
use switchboard_tests::{any_port, blocking, std_connect, LIMIT};

/// A turn reads at most 4 chunks (one `Raw` frame each). Measured: at most 4-5 in 100 pings
/// (the rest of the turn the light byte arrived in), up to 10 in rare pings (a second turn,
/// when the worker had polled its sockets just before the byte arrived). Woken at once
/// instead, the busy session took 115-248 frames: up to 61 turns, the batch of task polls a
/// worker runs between two looks at its sockets.
const MOST_BUSY_FRAMES_BEFORE_THE_LIGHT_ONE: u64 = 16;
const PINGS: usize = 100;

/// Counts the frames of the busy connection (bytes `b`) and answers a ping (`p`) with that
/// count.
struct Fairness {
    busy_frames: Arc<AtomicU64>,
}

impl SessionHandler<Raw> for Fairness {
    fn ready_read(&mut self, frame: Bytes, conn: &mut Conn<'_, Raw, Self>) {
        if frame.first() == Some(&b'p') {
            let seen = self.busy_frames.load(Ordering::SeqCst);
            conn.write(Bytes::copy_from_slice(&seen.to_be_bytes()))
                .expect("an 8-byte answer fits");
        } else {
            self.busy_frames.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[actix_rt::test]
async fn a_busy_session_lets_a_ready_neighbour_run_before_its_next_turn() {
    let busy_frames = Arc::new(AtomicU64::new(0));
    let counted = busy_frames.clone();
    let server = Listener::bind(any_port())
        .workers(1)
        .serve(Raw, move || Fairness {
            busy_frames: counted.clone(),
        })
        .unwrap();
    let addr = server.local_addr();

    let (waits, busy_during) = blocking("a busy sender beside a light one", move || {
        let stop = Arc::new(AtomicBool::new(false));
        let mut busy = std_connect(addr);
        let sending = stop.clone();
        let sender = std::thread::spawn(move || {
            let chunk = vec![b'b'; 64 * 1024];
            while !sending.load(Ordering::SeqCst) {
                busy.write_all(&chunk)
                    .expect("the busy connection takes bytes");
            }
        });
        let mut light = std_connect(addr);
        light.set_nodelay(true).unwrap();
        let mut waits = Vec::with_capacity(PINGS);
        let busy_at_start = busy_frames.load(Ordering::SeqCst);
        let mut last_answer = 0;
        for _ in 0..PINGS {
            // Each ping goes while the busy session is moving: once it took a frame since the
            // last answer (on a loaded machine its sender may not have run in between).
            let deadline = Instant::now() + LIMIT;
            while busy_frames.load(Ordering::SeqCst) <= last_answer {
                assert!(
                    Instant::now() < deadline,
                    "the busy session stopped taking bytes"
                );
                std::thread::yield_now();
            }
            light.write_all(b"p").unwrap();
            // Read after the write: frames the busy session takes between the two are not
            // counted against it.
            let before = busy_frames.load(Ordering::SeqCst);
            let mut answer = [0u8; 8];
            light
                .read_exact(&mut answer)
                .expect("the light session answers");
            last_answer = u64::from_be_bytes(answer);
            waits.push(last_answer.saturating_sub(before));
        }
        let busy_during = busy_frames.load(Ordering::SeqCst) - busy_at_start;
        stop.store(true, Ordering::SeqCst);
        sender.join().unwrap();
        (waits, busy_during)
    })
    .await;

    let most = waits.iter().copied().max().unwrap_or_default();
    println!(
        "busy frames before the light one ran: at most {most} in {PINGS} pings; \
         {busy_during} busy frames meanwhile"
    );
    assert!(
        most <= MOST_BUSY_FRAMES_BEFORE_THE_LIGHT_ONE,
        "the busy session took up to {most} frames before its ready neighbour ran \
         (at most {MOST_BUSY_FRAMES_BEFORE_THE_LIGHT_ONE}); per ping: {waits:?}"
    );
    // Every ping waited for a busy frame first.
    assert!(busy_during >= PINGS as u64, "{busy_during} busy frames");
}
