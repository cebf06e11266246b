//! The registry's count is exact: after 1,000 connect / talk / disconnect cycles from several
//! client threads it is back to 0, every session was registered and unregistered once, and
//! every session's `disconnected` ran exactly once.

use std::{io::BufReader, time::Instant};

use actix::Actor;
use switchboard::{Count, DisconnectReason, Listener, WaitForCount};
use switchboard_codec::Lines;
use switchboard_tests::{any_port, echo_line, std_connect, within, Event, Probes};

const THREADS: usize = 4;
const CYCLES: usize = 1000;

#[actix_rt::test]
async fn count_returns_to_zero_after_1000_cycles_with_traffic() {
    let (probes, mut events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(2)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();
    let registry = server.registry().clone();
    let started = Instant::now();

    let mut threads = Vec::new();
    for t in 0..THREADS {
        threads.push(tokio::task::spawn_blocking(move || {
            for i in 0..CYCLES / THREADS {
                let mut client = BufReader::new(std_connect(addr));
                let line = format!("thread {t} cycle {i}");
                assert_eq!(echo_line(&mut client, &line), line);
                let line = format!("{line}, again");
                assert_eq!(echo_line(&mut client, &line), line);
            }
        }));
    }
    for thread in threads {
        within("a client thread", thread).await.unwrap();
    }
    within("the registry to empty", registry.wait_for_count(0)).await;

    // The registry actor agrees.
    let actor = registry.clone().start();
    assert_eq!(within("Count", actor.send(Count)).await.unwrap(), 0);
    within("WaitForCount(0)", actor.send(WaitForCount(0)))
        .await
        .unwrap();
    let stats = registry.stats();
    assert_eq!(stats.live, 0);
    assert_eq!(stats.connected, CYCLES as u64);
    assert_eq!(stats.disconnected, CYCLES as u64);

    // Every handler is gone, each after exactly one `disconnected`, for a peer close.
    let mut dropped = 0;
    while dropped < CYCLES {
        match events.next("sessions to be dropped").await {
            Event::Dropped { .. } => dropped += 1,
            Event::Disconnected { reason, .. } => {
                assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}")
            }
            Event::WriteRefused { id, error } => panic!("echo refused on {id}: {error}"),
            _ => {}
        }
    }
    let tally = probes.tally.lock().unwrap();
    assert_eq!(tally.len(), CYCLES);
    assert!(
        tally.values().all(|&n| n == 1),
        "some session's disconnected ran more than once"
    );
    assert!(
        started.elapsed() < switchboard_tests::LIMIT * 3,
        "1,000 cycles took {:?}",
        started.elapsed()
    );
}
