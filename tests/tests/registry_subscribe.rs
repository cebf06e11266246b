//! Subscribers hear every registry event, or are told how many they missed: 2,000
//! connect/disconnect cycles against a subscriber that takes 1 ms per event.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use actix::{Actor, Context, Handler};
use switchboard::{Listener, RegistryEvent};
use switchboard_codec::Raw;
use switchboard_tests::{any_port, within, Probes};
use tokio::sync::watch;

const CYCLES: usize = 2000;

/// Counts what it hears, 1 ms per event (a subscriber busy with other work).
struct Slow {
    connected: Arc<AtomicU64>,
    disconnected: Arc<AtomicU64>,
    missed: Arc<AtomicU64>,
    progress: watch::Sender<u64>,
}

impl Actor for Slow {
    type Context = Context<Self>;
}

impl Handler<RegistryEvent> for Slow {
    type Result = ();
    fn handle(&mut self, event: RegistryEvent, _: &mut Context<Self>) {
        std::thread::sleep(Duration::from_millis(1));
        match event {
            RegistryEvent::Connected(_) => self.connected.fetch_add(1, Ordering::SeqCst),
            RegistryEvent::Disconnected { .. } => self.disconnected.fetch_add(1, Ordering::SeqCst),
            RegistryEvent::Missed { count } => self.missed.fetch_add(count, Ordering::SeqCst),
            other => panic!("unexpected {other:?}"),
        };
        let seen = self.connected.load(Ordering::SeqCst)
            + self.disconnected.load(Ordering::SeqCst)
            + self.missed.load(Ordering::SeqCst);
        let _ = self.progress.send(seen);
    }
}

struct Counts {
    connected: u64,
    disconnected: u64,
    missed: u64,
}

async fn cycle_with_subscriber(backlog: Option<usize>) -> (Counts, u64) {
    let (probes, _events) = Probes::<Raw>::quiet();
    let server = Listener::bind(any_port())
        .workers(2)
        .serve(Raw, probes.factory())
        .unwrap();
    let connected = Arc::new(AtomicU64::new(0));
    let disconnected = Arc::new(AtomicU64::new(0));
    let missed = Arc::new(AtomicU64::new(0));
    let (progress, mut seen) = watch::channel(0);
    let slow = Slow {
        connected: connected.clone(),
        disconnected: disconnected.clone(),
        missed: missed.clone(),
        progress,
    };
    // Its own thread: its sleeps hold up nobody but itself.
    let arbiter = actix_rt::Arbiter::new();
    let subscriber = Slow::start_in_arbiter(&arbiter.handle(), move |_| slow);
    match backlog {
        Some(backlog) => server
            .registry()
            .subscribe_with_backlog(subscriber.recipient(), backlog),
        None => server.registry().subscribe(subscriber.recipient()),
    }
    let addr = server.local_addr();
    within(
        "the cycles",
        tokio::task::spawn_blocking(move || {
            for _ in 0..CYCLES {
                drop(std::net::TcpStream::connect(addr).unwrap());
            }
        }),
    )
    .await
    .unwrap();
    within("every session to end", server.registry().wait_for_count(0)).await;
    let total = 2 * CYCLES as u64;
    // 4,000 events at 1 ms each: seconds, not the usual per-step limit.
    tokio::time::timeout(Duration::from_secs(60), seen.wait_for(|&n| n >= total))
        .await
        .expect("the subscriber hears of every event")
        .unwrap();
    let counts = Counts {
        connected: connected.load(Ordering::SeqCst),
        disconnected: disconnected.load(Ordering::SeqCst),
        missed: missed.load(Ordering::SeqCst),
    };
    let dropped = server.registry().stats().events_dropped;
    arbiter.stop();
    (counts, dropped)
}

#[actix_rt::test]
async fn a_slow_subscriber_gets_every_event_within_its_backlog() {
    let (counts, dropped) = cycle_with_subscriber(None).await;
    assert_eq!(counts.connected, CYCLES as u64);
    assert_eq!(counts.disconnected, CYCLES as u64);
    assert_eq!(counts.missed, 0);
    assert_eq!(dropped, 0);
}

#[actix_rt::test]
async fn a_subscriber_past_its_backlog_is_told_how_many_it_missed() {
    let (counts, dropped) = cycle_with_subscriber(Some(64)).await;
    assert!(counts.missed > 0, "64 events of backlog held 4,000 at 1 ms each?");
    assert_eq!(
        counts.connected + counts.disconnected + counts.missed,
        2 * CYCLES as u64,
        "every event arrived or was counted as missed"
    );
    assert_eq!(dropped, counts.missed, "the registry counts the same misses");
}
