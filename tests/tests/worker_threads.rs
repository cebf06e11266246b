//! Sessions are spread over the worker pool's threads (Qt's one `QThread` per socket, pooled):
//! least-loaded or round-robin, each session staying on its thread for life, the pool's loads
//! following live sessions, and one blocked session never stalling one on another worker.

use std::{
    collections::{HashMap, HashSet},
    io::BufReader,
    net::TcpStream,
    sync::{Arc, Mutex},
};

use switchboard::{Assignment, Listener, WorkerPool};
use switchboard_codec::Lines;
use switchboard_tests::{
    any_port, blocking, echo_line, std_connect, within, Action, Event, Probes,
};

#[actix_rt::test]
async fn least_loaded_spreads_sessions_over_both_workers() {
    let (probes, mut events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(2)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();
    assert_eq!(server.pool().len(), 2);
    assert_eq!(server.pool().loads(), [0, 0]);

    // Four clients, one after another: each session starts before the next client connects.
    let mut clients: Vec<BufReader<TcpStream>> = Vec::new();
    let mut workers = Vec::new();
    let mut threads: HashMap<usize, String> = HashMap::new();
    let here = std::thread::current()
        .name()
        .unwrap_or_default()
        .to_string();
    for _ in 0..4 {
        let client = std_connect(addr);
        let peer = client.local_addr().unwrap();
        clients.push(BufReader::new(client));
        let (info, _, thread) = events.connected_with_thread(peer).await;
        let worker = info.worker.expect("a listener's session runs on its pool");
        assert_ne!(thread, here, "a session must not run on the test's thread");
        // A worker is one thread: every session on it reports the same thread name.
        let known = threads.entry(worker).or_insert_with(|| thread.clone());
        assert_eq!(
            *known, thread,
            "worker {worker} ran sessions on two threads"
        );
        workers.push(worker);
    }
    workers.sort();
    assert_eq!(workers, [0, 0, 1, 1], "least-loaded assignment");
    assert_ne!(threads[&0], threads[&1], "the two workers are two threads");
    assert_eq!(server.pool().loads(), [2, 2]);

    // Everyone is answered, then leaves; `disconnected` runs on the session's own thread.
    blocking("four echoes, then the clients close", move || {
        for (i, mut client) in clients.into_iter().enumerate() {
            assert_eq!(echo_line(&mut client, &format!("n{i}")), format!("n{i}"));
        }
    })
    .await;
    let mut dropped = 0;
    while dropped < 4 {
        match events.next("sessions to end").await {
            Event::Disconnected { info, thread, .. } => {
                assert_eq!(thread, threads[&info.worker.unwrap()]);
            }
            Event::Dropped { .. } => dropped += 1,
            _ => {}
        }
    }
    // Each session's share of its worker is released when it is dropped.
    assert_eq!(server.pool().loads(), [0, 0]);
}

#[actix_rt::test]
async fn round_robin_alternates_workers() {
    let pool = WorkerPool::with_assignment(2, Assignment::RoundRobin).unwrap();
    let (probes, mut events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .pool(pool.clone())
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();
    let mut held = Vec::new();
    let mut order = Vec::new();
    for _ in 0..6 {
        let client = std_connect(addr);
        let (info, _) = events.connected_from(client.local_addr().unwrap()).await;
        order.push(info.worker.unwrap());
        held.push(client);
    }
    assert!(
        order.windows(2).all(|w| w[0] != w[1]),
        "round robin must alternate: {order:?}"
    );
    assert_eq!(pool.loads(), [3, 3]);
}

/// A session whose handler blocks its worker thread does not stall a session on the other
/// worker, nor the accept loop.
#[actix_rt::test]
async fn a_blocked_worker_does_not_stall_the_other() {
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let (probes, mut events) = Probes::<Lines>::new(move |line| {
        if line == "block" {
            // Holds this worker's thread until the test lets go.
            let _ = release_rx.lock().unwrap().recv();
        }
        Action::Echo
    });
    let server = Listener::bind(any_port())
        .workers(2)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();

    let blocked = std_connect(addr);
    let (blocked_info, _) = events.connected_from(blocked.local_addr().unwrap()).await;
    let free = std_connect(addr);
    let (free_info, _) = events.connected_from(free.local_addr().unwrap()).await;
    assert_ne!(blocked_info.worker, free_info.worker);

    let mut blocked = BufReader::new(blocked);
    let blocked_client = tokio::task::spawn_blocking(move || echo_line(&mut blocked, "block"));
    assert_eq!(events.frame(blocked_info.id).await, "block");

    // The other worker answers many times while the first is held.
    let mut free = BufReader::new(free);
    let free = blocking("the free client's echoes", move || {
        for i in 0..50 {
            assert_eq!(
                echo_line(&mut free, &format!("free {i}")),
                format!("free {i}")
            );
        }
        free
    })
    .await;
    assert!(
        !blocked_client.is_finished(),
        "the blocked session answered"
    );

    release_tx.send(()).unwrap();
    assert_eq!(
        within("the blocked echo", blocked_client).await.unwrap(),
        "block"
    );
    drop(free);
    let seen: HashSet<_> = [blocked_info.worker, free_info.worker].into();
    assert_eq!(seen.len(), 2);
}
