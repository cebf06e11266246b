//! Handler panics under load: 10 of 40 sessions panic while all 40 are mid-traffic on two
//! worker threads. Each panicking session ends with `HandlerPanicked`, exactly once, and the
//! registry drops it (its subscribers hear `Disconnected` with that reason); the other 30 never
//! miss an answer, and the listener goes on accepting.
//!
//! `session_panic.rs` proves one panic beside one idle survivor, and a panic in `connected`.

use std::{
    collections::HashSet,
    io::BufReader,
    net::SocketAddr,
    sync::{Arc, Barrier},
};

use switchboard::{DisconnectReason, Listener, RegistryEvent};
use switchboard_codec::Lines;
use switchboard_tests::{
    any_port, blocking, echo_line, ended_once, inbox, read_to_eof, std_connect, within, Action,
    Probes,
};

const CLIENTS: usize = 40;
const VICTIMS: usize = 10;
const ROUNDS: usize = 200;

#[actix_rt::test]
async fn panics_in_some_sessions_leave_the_others_and_the_listener_running() {
    let (probes, mut events) = Probes::<Lines>::new(|line| {
        if line == "panic" {
            Action::Panic
        } else {
            Action::Echo
        }
    });
    let server = Listener::bind(any_port())
        .workers(2)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();
    let (subscriber, mut registry_events) = inbox::<RegistryEvent>();
    server.registry().subscribe(subscriber);

    // Every client makes some round trips, waits for all the others to be mid-traffic, then
    // either panics its session or carries on.
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let (peers_tx, mut peers) = tokio::sync::mpsc::unbounded_channel();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let barrier = barrier.clone();
        let peers_tx = peers_tx.clone();
        clients.push(tokio::task::spawn_blocking(move || {
            let stream = std_connect(addr);
            peers_tx.send((c, stream.local_addr().unwrap())).unwrap();
            let mut client = BufReader::new(stream);
            for i in 0..ROUNDS / 2 {
                let line = format!("client {c} line {i}");
                assert_eq!(echo_line(&mut client, &line), line);
            }
            barrier.wait();
            if c < VICTIMS {
                use std::io::Write as _;
                client.get_mut().write_all(b"panic\n").unwrap();
                assert!(read_to_eof(client.get_mut(), true).is_empty());
                return None;
            }
            for i in ROUNDS / 2..ROUNDS {
                let line = format!("client {c} line {i}");
                assert_eq!(echo_line(&mut client, &line), line);
            }
            Some(client)
        }));
    }
    let mut by_peer: Vec<(usize, SocketAddr)> = Vec::new();
    for _ in 0..CLIENTS {
        by_peer.push(within("a client's address", peers.recv()).await.unwrap());
    }
    let mut victim_ids = HashSet::new();
    for (c, peer) in &by_peer {
        let (info, _) = events.connected_from(*peer).await;
        if *c < VICTIMS {
            victim_ids.insert(info.id);
        }
    }

    // Every victim ends with HandlerPanicked, exactly once, and leaves the registry.
    for id in &victim_ids {
        let reason = ended_once(&probes, &mut events, *id).await;
        assert!(
            matches!(&reason, DisconnectReason::HandlerPanicked(m) if m == "probe told to panic"),
            "{reason:?}"
        );
        assert!(server.registry().get(*id).is_none());
    }
    let mut heard = HashSet::new();
    while heard.len() < VICTIMS {
        if let RegistryEvent::Disconnected { info, reason } = registry_events
            .next("the registry's Disconnected events")
            .await
        {
            assert!(
                victim_ids.contains(&info.id),
                "{} ended too: {reason:?}",
                info.id
            );
            assert!(matches!(reason, DisconnectReason::HandlerPanicked(_)));
            heard.insert(info.id);
        }
    }

    // The survivors made every round trip.
    let mut survivors = Vec::new();
    for client in clients {
        if let Some(client) = within("a client", client).await.unwrap() {
            survivors.push(client);
        }
    }
    assert_eq!(survivors.len(), CLIENTS - VICTIMS);
    assert_eq!(server.registry().count(), CLIENTS - VICTIMS);

    // The listener still accepts, and the survivors still talk.
    let survivors = blocking("a newcomer and the survivors", move || {
        let mut newcomer = BufReader::new(std_connect(addr));
        assert_eq!(echo_line(&mut newcomer, "newcomer"), "newcomer");
        let mut survivors = survivors;
        for (i, s) in survivors.iter_mut().enumerate() {
            assert_eq!(echo_line(s, &format!("after {i}")), format!("after {i}"));
        }
        survivors
    })
    .await;
    drop(survivors);
    within("the registry to empty", server.registry().wait_for_count(0)).await;
    let tally = probes.tally.lock().unwrap();
    assert_eq!(tally.len(), CLIENTS + 1);
    assert!(tally.values().all(|&n| n == 1), "{tally:?}");
}
