//! The cluster logic on the in-memory bus: no Redis, no sockets.

use std::time::Duration;

use bytes::Bytes;
use switchboard::{Registry, SessionId, SlowConsumerPolicy};
use switchboard_cluster::{
    ClusterConfig, ClusterError, ClusterEvent, ClusterRegistry, ClusterSessionId, MemoryBus,
    MemoryHub, NodeId,
};
use tokio::sync::broadcast;

fn config() -> ClusterConfig {
    ClusterConfig::default()
        .heartbeat_interval(Duration::from_millis(50))
        .dead_after(Duration::from_millis(200))
        .tick(Duration::from_millis(10))
}

async fn node(hub: &MemoryHub, name: &str) -> (ClusterRegistry, broadcast::Receiver<ClusterEvent>) {
    let cluster = ClusterRegistry::start(
        Registry::new(),
        hub.connect(),
        NodeId::new(name).unwrap(),
        config(),
    )
    .await
    .unwrap();
    let events = cluster.subscribe();
    (cluster, events)
}

async fn next(
    events: &mut broadcast::Receiver<ClusterEvent>,
    want: impl Fn(&ClusterEvent) -> bool,
) -> ClusterEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if want(&event) => return event,
            Ok(_) => {}
            Err(_) => panic!("no matching event in time"),
        }
    }
}

#[actix_rt::test]
async fn peers_see_each_other_and_a_goodbye() {
    let hub = MemoryBus::hub();
    let (a, mut a_events) = node(&hub, "a").await;
    let (b, _) = node(&hub, "b").await;
    let up = next(&mut a_events, |e| matches!(e, ClusterEvent::NodeUp { .. })).await;
    assert_eq!(
        up,
        ClusterEvent::NodeUp {
            node: b.node().clone()
        }
    );
    b.shutdown().await;
    let down = next(&mut a_events, |e| {
        matches!(e, ClusterEvent::NodeDown { .. })
    })
    .await;
    assert_eq!(
        down,
        ClusterEvent::NodeDown {
            node: b.node().clone(),
            graceful: true
        }
    );
    assert!(a.nodes().is_empty());
}

#[actix_rt::test]
async fn a_vanished_node_is_unreachable_and_then_dead() {
    let hub = MemoryBus::hub();
    let (a, mut a_events) = node(&hub, "a").await;
    let bus_b = hub.connect();
    let b = ClusterRegistry::start(
        Registry::new(),
        bus_b.clone(),
        NodeId::new("b").unwrap(),
        config(),
    )
    .await
    .unwrap();
    next(&mut a_events, |e| matches!(e, ClusterEvent::NodeUp { .. })).await;
    let on_b = ClusterSessionId::new(b.node().clone(), SessionId::next());
    // Reached: b is subscribed (the session does not exist there; at most once, not reported).
    a.send_to(&on_b, Bytes::from("x")).await.unwrap();
    b.stop_for_tests();
    bus_b.disconnect();
    let error = a.send_to(&on_b, Bytes::from("x")).await.unwrap_err();
    assert!(
        matches!(error, ClusterError::NodeUnreachable { .. }),
        "{error}"
    );
    let down = next(&mut a_events, |e| {
        matches!(e, ClusterEvent::NodeDown { .. })
    })
    .await;
    assert_eq!(
        down,
        ClusterEvent::NodeDown {
            node: b.node().clone(),
            graceful: false
        }
    );
    // Once dead, its ids are unreachable without asking the bus.
    assert!(matches!(
        a.kick(&on_b, true).await,
        Err(ClusterError::NodeUnreachable { .. })
    ));
}

#[actix_rt::test]
async fn bus_down_fails_fast_and_comes_back_by_itself() {
    let hub = MemoryBus::hub();
    let (a, mut a_events) = node(&hub, "a").await;
    let (b, _) = node(&hub, "b").await;
    next(&mut a_events, |e| matches!(e, ClusterEvent::NodeUp { .. })).await;
    let on_b = ClusterSessionId::new(b.node().clone(), SessionId::next());
    hub.set_down(true);
    next(&mut a_events, |e| matches!(e, ClusterEvent::BusDown { .. })).await;
    assert!(a
        .send_to(&on_b, Bytes::from("x"))
        .await
        .unwrap_err()
        .is_bus_down());
    assert!(a.list().await.unwrap_err().is_bus_down());
    let report = a
        .broadcast(Bytes::from("x"), None, SlowConsumerPolicy::Drop)
        .await;
    assert!(report.remote.unwrap_err().is_bus_down());
    // Liveness is paused while the bus is away: b is not declared dead.
    hub.set_down(false);
    next(&mut a_events, |e| *e == ClusterEvent::BusUp).await;
    assert_eq!(a.nodes().len(), 1);
    a.send_to(&on_b, Bytes::from("x")).await.unwrap();
}

#[actix_rt::test]
async fn a_local_session_that_is_gone_is_a_session_error() {
    let hub = MemoryBus::hub();
    let (a, _) = node(&hub, "a").await;
    let gone = a.id_of(SessionId::next());
    let error = a.send_to(&gone, Bytes::from("x")).await.unwrap_err();
    assert!(
        matches!(
            error,
            ClusterError::Session(switchboard::SessionError::Gone)
        ),
        "{error}"
    );
    assert!(a.join("bad name", SessionId::next()).await.is_err());
    assert!(a.join("room", SessionId::next()).await.is_err(), "not live");
    assert_eq!(a.count(), 0);
}
