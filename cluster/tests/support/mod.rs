//! Shared by the cluster tests: a real `redis-server` of the test's own, nodes (a Listener, its
//! Registry and a ClusterRegistry on Redis) and plain line clients. Every wait has a deadline.
#![allow(dead_code)]

use std::{
    net::{SocketAddr, TcpListener},
    process::Child,
    time::{Duration, Instant},
};

use switchboard::{Conn, Listener, ListenerHandle, Registry, SessionHandler};
use switchboard_cluster::{
    ClusterConfig, ClusterEvent, ClusterRegistry, NodeId, RedisBus, RedisBusConfig,
};
use switchboard_codec::Lines;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines as TokioLines},
    net::{tcp::OwnedWriteHalf, TcpStream},
    sync::broadcast,
};

/// How long one expected step may take.
pub const STEP: Duration = Duration::from_secs(10);

/// A `redis-server` on 127.0.0.1 and a free port, without persistence; killed (by its PID)
/// when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let mut server = RedisServer { port, child: None };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port; returns once it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.child = Some(switchboard_tests::start_redis(self.port));
    }

    /// Kills the server (SIGKILL, by PID) and waits for it to end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Short timings, so liveness tests run quickly; the defaults are the documented ones.
pub fn fast_config(prefix: &str) -> ClusterConfig {
    ClusterConfig::default()
        .prefix(prefix)
        .heartbeat_interval(Duration::from_millis(200))
        .dead_after(Duration::from_millis(600))
        .tick(Duration::from_millis(20))
}

/// A node: a Listener whose clients get `id FULL-CLUSTER-ID` first, and echo lines that
/// start with `echo `.
pub struct Node {
    pub cluster: ClusterRegistry,
    pub listener: ListenerHandle,
    pub events: broadcast::Receiver<ClusterEvent>,
}

struct Probe {
    node: NodeId,
}

impl SessionHandler<Lines> for Probe {
    fn connected(&mut self, conn: &mut Conn<'_, Lines, Self>) {
        let id = switchboard_cluster::ClusterSessionId::new(self.node.clone(), conn.id());
        let _ = conn.write(format!("id {id}"));
    }
    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        if let Some(rest) = line.strip_prefix("echo ") {
            let _ = conn.write(rest.to_string());
        }
    }
}

impl Node {
    pub async fn start(redis: &str, name: &str, config: ClusterConfig) -> Node {
        let node = NodeId::new(name).unwrap();
        let bus = RedisBus::connect(redis, RedisBusConfig::default())
            .await
            .unwrap();
        let registry = Registry::new();
        let cluster = ClusterRegistry::start(registry.clone(), bus, node.clone(), config)
            .await
            .unwrap();
        let events = cluster.subscribe();
        let listener = Listener::bind("127.0.0.1:0")
            .workers(1)
            .registry(registry)
            .serve(Lines::new(), move || Probe { node: node.clone() })
            .unwrap();
        Node {
            cluster,
            listener,
            events,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// Waits for an event matching `want`, skipping others.
    pub async fn event(
        &mut self,
        within: Duration,
        want: impl Fn(&ClusterEvent) -> bool,
    ) -> ClusterEvent {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Ok(event)) if want(&event) => return event,
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(e)) => panic!("events closed: {e}"),
                Err(_) => panic!(
                    "no matching event within {within:?} on {}",
                    self.cluster.node()
                ),
            }
        }
    }
}

/// Waits until `check` holds, looking every 10 ms, failing after `within`.
pub async fn until(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A plain TCP line client.
pub struct Client {
    pub id: switchboard_cluster::ClusterSessionId,
    lines: TokioLines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

impl Client {
    /// Connects and reads its `id ...` line (so it is registered when this returns).
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (read, write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let first = tokio::time::timeout(STEP, lines.next_line())
            .await
            .expect("id line in time")
            .unwrap()
            .expect("id line");
        let id = first.strip_prefix("id ").expect("id line").parse().unwrap();
        Client { id, lines, write }
    }

    pub async fn line(&mut self) -> String {
        tokio::time::timeout(STEP, self.lines.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("connection open")
    }

    pub async fn send(&mut self, line: &str) {
        self.write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }
}

/// A unique prefix per test, so tests sharing nothing never hear each other.
pub fn prefix(test: &str) -> String {
    format!("t-{test}-{}", std::process::id())
}
