//! What a scrape sees while sessions end: the registry adds an ended session's close reason,
//! frames and lifetime to `closed_stats` before it counts the disconnect, so a reader that
//! takes the disconnect count first never finds fewer closed sessions than disconnects. (The
//! order was the other way round once, and a scrape right after `ctl info` showed N
//! disconnects could hold N − 1 closed sessions.)

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Barrier,
    },
};

use switchboard::Registry;

/// Sessions that end while the reader watches (about 0.3 s in a debug build). The window the old
/// order left was a few tens of nanoseconds per session: put back, it was caught in 7 of 11
/// runs (4 of 5 with 50,000 sessions, 3 of 6 with 200,000; debug build, 2 cores), so this guards
/// against it coming back most of the time, not every time. It never fails with the order right.
const ENDED: u64 = 200_000;

#[test]
fn closed_stats_never_lag_the_disconnect_count() {
    let registry = Registry::new();
    let done = Arc::new(AtomicBool::new(false));
    // The sessions start ending only once the reader runs, so the two overlap.
    let both_running = Arc::new(Barrier::new(2));
    let reader = {
        let registry = registry.clone();
        let done = done.clone();
        let both_running = both_running.clone();
        std::thread::spawn(move || {
            both_running.wait();
            let mut reads = 0u64;
            while !done.load(Ordering::Relaxed) {
                let disconnected = registry.stats().disconnected;
                let closed = closed_sessions(&registry);
                assert!(
                    closed >= disconnected,
                    "a scrape found {closed} closed sessions after {disconnected} disconnects"
                );
                reads += 1;
            }
            reads
        })
    };
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    both_running.wait();
    for _ in 0..ENDED {
        // A placeholder joins when made and leaves when dropped, as a session does.
        drop(registry.register_placeholder(peer, local));
    }
    done.store(true, Ordering::Relaxed);
    let reads = reader
        .join()
        .expect("the reader found the counts out of order");
    assert!(reads > 0, "the reader never ran");
    assert_eq!(registry.stats().disconnected, ENDED);
    assert_eq!(closed_sessions(&registry), ENDED);
}

/// Ended sessions in `closed_stats`, over every close reason.
fn closed_sessions(registry: &Registry) -> u64 {
    registry
        .closed_stats()
        .by_reason
        .iter()
        .map(|(_, n)| n)
        .sum()
}
