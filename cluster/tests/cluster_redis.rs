//! The cluster against a real `redis-server` (started by each test): three nodes in this
//! process, each with its own Listener, Registry and Redis connection, and plain TCP clients.
//!
//! Client counts are the (300 per node) in release builds and with
//! `SB_CLUSTER_FULL=1`; debug builds use 100 per node to keep CI short.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard::SlowConsumerPolicy;
use switchboard_cluster::{ClusterError, ClusterEvent};

use support::{fast_config, prefix, until, Client, Node, RedisServer, STEP};

fn per_node() -> usize {
    if !cfg!(debug_assertions) || std::env::var_os("SB_CLUSTER_FULL").is_some() {
        300
    } else {
        100
    }
}

async fn three(redis: &RedisServer, test: &str) -> (Node, Node, Node) {
    let p = prefix(test);
    let a = Node::start(&redis.url(), "a", fast_config(&p)).await;
    let b = Node::start(&redis.url(), "b", fast_config(&p)).await;
    let c = Node::start(&redis.url(), "c", fast_config(&p)).await;
    for node in [&a, &b, &c] {
        until(STEP, "every node sees the other two", || {
            node.cluster.nodes().len() == 2
        })
        .await;
    }
    (a, b, c)
}

#[actix_rt::test]
async fn send_to_across_nodes_arrives_complete_and_in_order() {
    let redis = RedisServer::start();
    let (a, b, _c) = three(&redis, "order").await;
    let mut target = Client::connect(b.addr()).await;
    const N: usize = 10_000;
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(N);
        for _ in 0..N {
            got.push(target.line().await);
        }
        got
    });
    let started = Instant::now();
    for i in 0..N {
        a.cluster
            .send_to(&reader_id(&b, &a), Bytes::from(format!("m{i}")))
            .await
            .unwrap();
    }
    let got = reader.await.unwrap();
    let expected: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected, "lost, duplicated or reordered");
    eprintln!("{N} cross-node messages in {:?}", started.elapsed());
    assert_eq!(b.cluster.stats().remote_sends_lost, 0);
}

/// The only session on `b` (the reader), as seen from `a`.
fn reader_id(b: &Node, _a: &Node) -> switchboard_cluster::ClusterSessionId {
    let ids = b.listener.registry().ids();
    assert_eq!(ids.len(), 1);
    b.cluster.id_of(ids[0])
}

#[actix_rt::test]
async fn broadcast_reaches_every_other_session_once() {
    let redis = RedisServer::start();
    let (a, b, c) = three(&redis, "broadcast").await;
    let per_node = per_node();
    let mut clients = Vec::new();
    for node in [&a, &b, &c] {
        for _ in 0..per_node {
            clients.push(Client::connect(node.addr()).await);
        }
    }
    let sender = clients[0].id.clone();
    let report = a
        .cluster
        .broadcast(
            Bytes::from("hello all"),
            Some(&sender),
            SlowConsumerPolicy::Drop,
        )
        .await;
    assert_eq!(report.local_queued, per_node - 1);
    assert_eq!(report.remote.unwrap(), 2);
    // A second broadcast to everyone marks the end: each client must see exactly one
    // "hello all" (the sender none) before it.
    a.cluster
        .broadcast(Bytes::from("end"), None, SlowConsumerPolicy::Drop)
        .await;
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut hellos = 0;
                loop {
                    match client.line().await.as_str() {
                        "end" => return (client.id, hellos),
                        "hello all" => hellos += 1,
                        other => panic!("unexpected {other:?}"),
                    }
                }
            })
        })
        .collect();
    let mut reached = 0;
    for reader in readers {
        let (id, hellos) = reader.await.unwrap();
        if id == sender {
            assert_eq!(hellos, 0, "the sender got its own broadcast");
        } else {
            assert_eq!(hellos, 1, "{id} got {hellos} copies");
            reached += 1;
        }
    }
    assert_eq!(reached, 3 * per_node - 1);
    eprintln!("broadcast reached {reached} clients exactly once");
}

#[actix_rt::test]
async fn count_is_summed_from_heartbeats_and_drops_a_node_that_leaves() {
    let redis = RedisServer::start();
    let (mut a, b, c) = three(&redis, "count").await;
    let per_node = 2 * per_node() / 3; // 200 per node with the full counts: 600 in all
    let mut clients = Vec::new();
    for node in [&a, &b, &c] {
        for _ in 0..per_node {
            clients.push(Client::connect(node.addr()).await);
        }
    }
    let total = 3 * per_node;
    for node in [&a, &b, &c] {
        until(Duration::from_secs(1), "cluster count within 1 s", || {
            node.cluster.count() == total
        })
        .await;
    }
    // A clean shutdown is announced: NodeDown { graceful: true } at once, count without it.
    let c_id = c.cluster.node().clone();
    let started = Instant::now();
    c.cluster.shutdown().await;
    let event = a
        .event(Duration::from_secs(1), |e| {
            matches!(e, ClusterEvent::NodeDown { .. })
        })
        .await;
    assert_eq!(
        event,
        ClusterEvent::NodeDown {
            node: c_id.clone(),
            graceful: true
        }
    );
    until(Duration::from_secs(1), "count without c", || {
        a.cluster.count() == total - per_node
    })
    .await;
    eprintln!(
        "graceful NodeDown and count {} after {:?}",
        a.cluster.count(),
        started.elapsed()
    );
    // A session on the node that left: NodeUnreachable at once, not a timeout.
    let on_c = clients[2 * per_node].id.clone();
    assert_eq!(on_c.node(), &c_id);
    let started = Instant::now();
    let error = a
        .cluster
        .send_to(&on_c, Bytes::from("x"))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(error, ClusterError::NodeUnreachable { ref node } if *node == c_id),
        "{error}"
    );
    assert!(
        took < Duration::from_millis(100),
        "NodeUnreachable took {took:?}"
    );
    eprintln!("NodeUnreachable in {took:?}");
    drop(b);
}

#[actix_rt::test]
async fn a_silent_node_is_dead_after_the_timeout_and_a_restart_replaces_it() {
    let redis = RedisServer::start();
    let p = prefix("silent");
    let mut a = Node::start(&redis.url(), "a", fast_config(&p)).await;
    let b = Node::start(&redis.url(), "b", fast_config(&p)).await;
    until(STEP, "a sees b", || a.cluster.nodes().len() == 1).await;
    let old = b.cluster.node().clone();
    // Stop b's heartbeats without a goodbye (as a killed process): its background tasks
    // stop, its connection stays (so only the timeout can tell).
    b.cluster.stop_for_tests();
    let started = Instant::now();
    let event = a
        .event(Duration::from_secs(2), |e| {
            matches!(e, ClusterEvent::NodeDown { .. })
        })
        .await;
    assert_eq!(
        event,
        ClusterEvent::NodeDown {
            node: old.clone(),
            graceful: false
        }
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "declared dead too early: {took:?}"
    );
    // A new incarnation of "b": replaces nothing now, and the old never comes back.
    let b2 = Node::start(&redis.url(), "b", fast_config(&p)).await;
    let event = a
        .event(STEP, |e| matches!(e, ClusterEvent::NodeUp { .. }))
        .await;
    assert_eq!(
        event,
        ClusterEvent::NodeUp {
            node: b2.cluster.node().clone()
        }
    );
    let nodes = a.cluster.nodes();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].node, *b2.cluster.node());
}

#[actix_rt::test]
async fn a_restarted_node_replaces_its_old_incarnation_at_once() {
    let redis = RedisServer::start();
    let p = prefix("restart");
    let mut a = Node::start(
        &redis.url(),
        "a",
        fast_config(&p).dead_after(Duration::from_secs(30)),
    )
    .await;
    let b = Node::start(&redis.url(), "b", fast_config(&p)).await;
    until(STEP, "a sees b", || a.cluster.nodes().len() == 1).await;
    let old = b.cluster.node().clone();
    b.cluster.stop_for_tests();
    // dead_after is 30 s on a: only the new incarnation can retire the old one this soon.
    let b2 = Node::start(&redis.url(), "b", fast_config(&p)).await;
    let down = a
        .event(STEP, |e| matches!(e, ClusterEvent::NodeDown { .. }))
        .await;
    assert_eq!(
        down,
        ClusterEvent::NodeDown {
            node: old,
            graceful: false
        }
    );
    let up = a
        .event(STEP, |e| matches!(e, ClusterEvent::NodeUp { .. }))
        .await;
    assert_eq!(
        up,
        ClusterEvent::NodeUp {
            node: b2.cluster.node().clone()
        }
    );
    assert_eq!(a.cluster.nodes().len(), 1);
}

#[actix_rt::test]
async fn list_gathers_every_node_within_the_deadline() {
    let redis = RedisServer::start();
    let (a, b, c) = three(&redis, "list").await;
    let mut clients = Vec::new();
    for node in [&a, &b, &c] {
        for _ in 0..3 {
            clients.push(Client::connect(node.addr()).await);
        }
    }
    let list = a.cluster.list().await.unwrap();
    assert!(list.missing.is_empty(), "{:?}", list.missing);
    let mut found: Vec<String> = list.sessions.iter().map(|s| s.id.to_string()).collect();
    let mut expected: Vec<String> = clients.iter().map(|c| c.id.to_string()).collect();
    found.sort();
    expected.sort();
    assert_eq!(found, expected);
    // get and kick route to the owner.
    let on_b = clients[3].id.clone();
    assert_eq!(a.cluster.get(&on_b).await.unwrap().unwrap().id, on_b);
    assert!(a.cluster.kick(&on_b, false).await.unwrap());
    // A node that stops answering (b's tasks stopped, its subscription kept, as SIGSTOP):
    // list returns at the deadline and names it.
    b.cluster.stop_for_tests();
    let started = Instant::now();
    let list = a.cluster.list().await.unwrap();
    let took = started.elapsed();
    assert_eq!(list.missing, vec![b.cluster.node().clone()]);
    assert!(took < Duration::from_millis(600), "list took {took:?}");
    assert_eq!(list.sessions.len(), 6);
}

#[actix_rt::test]
async fn groups_reach_members_on_every_node_only() {
    let redis = RedisServer::start();
    let (a, b, c) = three(&redis, "groups").await;
    let mut in_a = Client::connect(a.addr()).await;
    let mut in_b = Client::connect(b.addr()).await;
    let mut out_c = Client::connect(c.addr()).await;
    a.cluster
        .join("room-1", a.cluster.local_id(&in_a.id).unwrap())
        .await
        .unwrap();
    b.cluster
        .join("room-1", b.cluster.local_id(&in_b.id).unwrap())
        .await
        .unwrap();
    let report = a
        .cluster
        .broadcast_group("room-1", Bytes::from("to the room"), None)
        .await;
    assert_eq!(report.local_queued, 1);
    assert_eq!(report.remote.unwrap(), 1, "only b has members");
    assert_eq!(in_a.line().await, "to the room");
    assert_eq!(in_b.line().await, "to the room");
    c.cluster
        .broadcast(Bytes::from("marker"), None, SlowConsumerPolicy::Drop)
        .await;
    assert_eq!(
        out_c.line().await,
        "marker",
        "c's client is not in the room"
    );
    assert!(
        b.cluster
            .leave("room-1", b.cluster.local_id(&in_b.id).unwrap())
            .await
    );
    let report = a
        .cluster
        .broadcast_group("room-1", Bytes::from("again"), None)
        .await;
    assert_eq!(report.remote.unwrap(), 0, "b left the room's channel");
}

#[actix_rt::test]
async fn redis_down_fails_fast_keeps_local_traffic_and_recovers() {
    let mut redis = RedisServer::start();
    let (mut a, mut b, _c) = three(&redis, "outage").await;
    let mut local = Client::connect(a.addr()).await;
    let mut remote = Client::connect(b.addr()).await;
    let echo_p99 = |samples: &mut Vec<Duration>| {
        samples.sort();
        samples[samples.len() * 99 / 100]
    };
    let mut before = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        local.send(&format!("echo {i}")).await;
        assert_eq!(local.line().await, i.to_string());
        before.push(t.elapsed());
    }

    redis.stop();
    let stopped = Instant::now();
    a.event(Duration::from_secs(1), |e| {
        matches!(e, ClusterEvent::BusDown { .. })
    })
    .await;
    let error = a
        .cluster
        .send_to(&remote.id, Bytes::from("lost"))
        .await
        .unwrap_err();
    assert!(error.is_bus_down(), "{error}");
    assert!(
        stopped.elapsed() < Duration::from_secs(1),
        "BusDown took {:?}",
        stopped.elapsed()
    );
    let fail_fast = Instant::now();
    assert!(a
        .cluster
        .send_to(&remote.id, Bytes::from("lost"))
        .await
        .unwrap_err()
        .is_bus_down());
    assert!(a.cluster.list().await.unwrap_err().is_bus_down());
    assert!(
        fail_fast.elapsed() < Duration::from_millis(50),
        "not fast: {:?}",
        fail_fast.elapsed()
    );
    let mut during = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        local.send(&format!("echo {i}")).await;
        assert_eq!(local.line().await, i.to_string());
        during.push(t.elapsed());
    }
    let (p99_before, p99_during) = (echo_p99(&mut before), echo_p99(&mut during));
    eprintln!("local echo p99: {p99_before:?} before, {p99_during:?} with Redis down");
    // Loose bound (a shared CI machine): the outage must not slow local traffic down.
    assert!(
        p99_during < p99_before * 3 + Duration::from_millis(2),
        "{p99_before:?} -> {p99_during:?}"
    );

    redis.restart();
    let restarted = Instant::now();
    a.event(Duration::from_secs(5), |e| *e == ClusterEvent::BusUp)
        .await;
    b.event(Duration::from_secs(5), |e| *e == ClusterEvent::BusUp)
        .await;
    a.cluster
        .send_to(&remote.id, Bytes::from("back"))
        .await
        .unwrap();
    assert_eq!(remote.line().await, "back");
    let took = restarted.elapsed();
    assert!(took < Duration::from_secs(5), "recovery took {took:?}");
    eprintln!("BusUp and a cross-node send {took:?} after Redis restarted");
}
