//! Connection limits are kept by not accepting: at `max_connections` a new client waits in the
//! kernel backlog unserved, and is served as soon as a connection ends or the limit is raised
//! with `SetMaxConnections`. A per-IP limit closes the extra client at once.

use std::net::SocketAddr;

use switchboard::{
    DisconnectReason, GetListenerStats, Listener, ListenerHandle, SetMaxConnections,
    SetMaxConnectionsPerIp,
};
use switchboard_codec::Lines;
use switchboard_tests::{any_port, assert_silent, ended_once, within, Events, Probes};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

type Client = BufReader<TcpStream>;

async fn connect(addr: SocketAddr) -> Client {
    BufReader::new(
        within("connect", TcpStream::connect(addr))
            .await
            .expect("the kernel completes the handshake even at the limit"),
    )
}

async fn send(client: &mut Client, line: &str) {
    client
        .get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
}

async fn reply(client: &mut Client) -> String {
    let mut line = String::new();
    client.read_line(&mut line).await.unwrap();
    line.trim_end().to_string()
}

async fn ask(client: &mut Client, line: &str) -> String {
    send(client, line).await;
    within("a reply", reply(client)).await
}

fn echo_server(max: usize) -> (ListenerHandle, Probes<Lines>, Events<Lines>) {
    let (probes, events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(2)
        .max_connections(max)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    (server, probes, events)
}

/// At the limit the listener stops accepting: the extra client's request gets no answer until
/// a connection leaves; raising the limit at run time serves one more at once.
#[actix_rt::test]
async fn at_the_limit_new_clients_wait_until_one_leaves_or_the_limit_rises() {
    let (server, probes, mut events) = echo_server(2);
    let addr = server.local_addr();
    let listener = server.address().clone();

    let mut one = connect(addr).await;
    assert_eq!(ask(&mut one, "one").await, "one");
    let mut two = connect(addr).await;
    assert_eq!(ask(&mut two, "two").await, "two");
    let (first, _) = events
        .connected_from(one.get_ref().local_addr().unwrap())
        .await;

    let mut three = connect(addr).await;
    send(&mut three, "three").await;
    let waiting = assert_silent(
        "reply for a client over the limit",
        Box::pin(reply(&mut three)),
    )
    .await;
    let stats = within("stats", listener.send(GetListenerStats))
        .await
        .unwrap();
    assert_eq!(stats.active, 2);
    assert_eq!(stats.accepted, 2);
    assert_eq!(stats.limit_waits, 1, "accepting stopped once at the limit");
    assert_eq!(server.registry().count(), 2);

    // One leaves: the waiting client is accepted and answered.
    drop(one);
    let reason = ended_once(&probes, &mut events, first.id).await;
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
    assert_eq!(within("the waiting client's reply", waiting).await, "three");
    within("two sessions", server.registry().wait_for_count(2)).await;

    // Still at the limit: a fourth waits...
    let mut four = connect(addr).await;
    send(&mut four, "four").await;
    let waiting = assert_silent(
        "reply for a client over the limit",
        Box::pin(reply(&mut four)),
    )
    .await;
    // ...until the limit is raised.
    within("SetMaxConnections", listener.send(SetMaxConnections(3)))
        .await
        .unwrap();
    assert_eq!(within("the fourth client's reply", waiting).await, "four");
    let stats = within("stats", listener.send(GetListenerStats))
        .await
        .unwrap();
    assert_eq!(stats.active, 3);
    assert_eq!(stats.accepted, 4);
    // At the limit again after the third client, then after the fourth (the limit raised to 3).
    assert_eq!(stats.limit_waits, 3);

    // And the new limit holds too.
    let mut five = connect(addr).await;
    send(&mut five, "five").await;
    let waiting = assert_silent(
        "reply for a client over the raised limit",
        Box::pin(reply(&mut five)),
    )
    .await;
    drop(two);
    assert_eq!(within("the fifth client's reply", waiting).await, "five");
    drop((three, four, five));
    within("the registry to empty", server.registry().wait_for_count(0)).await;
}

/// A per-IP limit closes the extra client from that address at once (loopback clients all
/// share 127.0.0.1), counts it, and can be lifted at run time.
#[actix_rt::test]
async fn per_ip_limit_closes_the_extra_client_at_once() {
    let (probes, mut events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(2)
        .max_connections_per_ip(Some(1))
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();
    let listener = server.address().clone();

    let mut one = connect(addr).await;
    assert_eq!(ask(&mut one, "one").await, "one");
    let mut extra = connect(addr).await;
    let mut rest = Vec::new();
    let n = within(
        "the extra client to be closed",
        extra.read_to_end(&mut rest),
    )
    .await
    .unwrap_or(0);
    assert_eq!(n, 0, "the extra client got data");
    let stats = within("stats", listener.send(GetListenerStats))
        .await
        .unwrap();
    assert_eq!(stats.rejected_per_ip, 1);
    assert_eq!(stats.active, 1);
    assert_eq!(server.registry().count(), 1);

    within(
        "SetMaxConnectionsPerIp",
        listener.send(SetMaxConnectionsPerIp(None)),
    )
    .await
    .unwrap();
    let mut two = connect(addr).await;
    assert_eq!(ask(&mut two, "two").await, "two");
    drop((one, two));
    within("the registry to empty", server.registry().wait_for_count(0)).await;
    let (info, _, _) = events.connected().await;
    ended_once(&probes, &mut events, info.id).await;
}
