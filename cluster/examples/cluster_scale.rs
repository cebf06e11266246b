//! The scale scenario: many idle connections held across several cluster nodes on one machine,
//! the cluster count checked exact, one broadcast to all of them, then everyone leaves.
//! Not a test; figures go to BENCHMARKS.md.
//!
//! ```text
//! cargo build --release -p switchboard-cluster --examples -p switchboard-benches --bin hold_clients
//! target/release/examples/cluster_scale run TOTAL NODES     # e.g. run 100000 6
//! target/release/examples/cluster_scale node REDIS_URL NAME # one quiet node (what `run` starts)
//! ```
//!
//! A quiet node is a Listener (Lines codec, a handler that does nothing: no join notices, which
//! would cost TOTAL² deliveries) with a `ClusterRegistry` on Redis. It prints
//! `listening on ADDR`, then answers lines on stdin: `count` → `count N` (cluster-wide),
//! `local` → `local N`, `nodes` → `nodes N` (live peers), `broadcast` → `broadcast queued Q remote R`, `stats` →
//! `stats FANNED_OUT`.
//!
//! `run` starts `redis-server`, NODES quiet nodes and, per node, one `hold_clients` process
//! (from the benches crate) opening TOTAL / NODES connections from its own source address
//! 127.0.0.(2 + node).

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use switchboard::{Conn, Listener, Registry, SessionHandler, SlowConsumerPolicy};
use switchboard_cluster::{ClusterConfig, ClusterRegistry, NodeId, RedisBus, RedisBusConfig};
use switchboard_codec::Lines;

struct Quiet;
impl SessionHandler<Lines> for Quiet {
    fn ready_read(&mut self, _: String, _: &mut Conn<'_, Lines, Self>) {}
}

fn node(url: &str, name: &str) {
    if let Err(error) = switchboard::raise_fd_limit() {
        eprintln!("cannot raise the descriptor limit: {error}");
    }
    let (url, name) = (url.to_string(), name.to_string());
    actix_rt::System::new().block_on(async move {
        let bus = RedisBus::connect(&url, RedisBusConfig::default())
            .await
            .unwrap();
        let registry = Registry::new();
        let cluster = ClusterRegistry::start(
            registry.clone(),
            bus,
            NodeId::new(&name).unwrap(),
            ClusterConfig::default(),
        )
        .await
        .unwrap();
        let handle = Listener::bind("127.0.0.1:0")
            .registry(registry)
            .serve(Lines::new(), || Quiet)
            .unwrap();
        println!("listening on {}", handle.local_addr());
        let _ = std::io::stdout().flush();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(command) = rx.recv().await {
            let answer = match command.as_str() {
                "count" => format!("count {}", cluster.count()),
                "local" => format!("local {}", cluster.local().count()),
                "nodes" => format!("nodes {}", cluster.nodes().len()),
                "broadcast" => {
                    let report = cluster
                        .broadcast(
                            Bytes::from("hello, everyone"),
                            None,
                            SlowConsumerPolicy::Drop,
                        )
                        .await;
                    format!(
                        "broadcast queued {} remote {}",
                        report.local_queued,
                        report
                            .remote
                            .map(|n| n.to_string())
                            .unwrap_or_else(|e| e.to_string())
                    )
                }
                "stats" => format!("stats {}", cluster.stats().remote_broadcast_queued),
                _ => "?".into(),
            };
            println!("{answer}");
            let _ = std::io::stdout().flush();
        }
        cluster.shutdown().await;
    });
}

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    fn spawn(command: &mut Command) -> Proc {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        Proc {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }

    fn ask(&mut self, command: &str) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        self.line()
    }

    fn number(&mut self, command: &str) -> u64 {
        let answer = self.ask(command);
        answer
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{answer}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn poll(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

fn run(total: usize, nodes: usize) {
    let exe = std::env::current_exe().unwrap();
    let hold: PathBuf = exe.parent().unwrap().parent().unwrap().join("hold_clients");
    assert!(
        hold.exists(),
        "build hold_clients: cargo build --release -p switchboard-benches --bin hold_clients"
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install -y redis-server)");
    poll("redis up", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let url = format!("redis://127.0.0.1:{port}");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let mut servers: Vec<(Proc, SocketAddr)> = names[..nodes]
        .iter()
        .map(|name| {
            let mut p = Proc::spawn(Command::new(&exe).args(["node", &url, name]));
            let line = p.line();
            let addr = line.strip_prefix("listening on ").unwrap().parse().unwrap();
            (p, addr)
        })
        .collect();
    let peers = (nodes - 1) as u64;
    poll("nodes see each other", Duration::from_secs(10), || {
        servers.iter_mut().all(|s| s.0.number("nodes") == peers)
    });

    // TOTAL exactly: the first TOTAL % NODES nodes get one more.
    let share = |k: usize| total / nodes + usize::from(k < total % nodes);
    let started = Instant::now();
    let mut clients: Vec<Proc> = servers
        .iter()
        .enumerate()
        .map(|(k, (_, addr))| {
            Proc::spawn(Command::new(&hold).args([
                &addr.to_string(),
                "--count",
                &share(k).to_string(),
                "--source-first",
                &(2 + k).to_string(),
                "--concurrency",
                "256",
                "--hold",
                "600",
            ]))
        })
        .collect();
    for (k, c) in clients.iter_mut().enumerate() {
        println!("clients of node {}: {}", names[k], c.line());
    }
    let opened = started.elapsed();
    let expected = total as u64;
    let counted = poll("cluster count exact", Duration::from_secs(60), || {
        servers[0].0.number("count") == expected
    });
    println!(
        "{expected} connections opened in {:.2} s; node a's cluster count = {expected} {:.2} s after the last opened",
        opened.as_secs_f64(),
        counted.as_secs_f64()
    );
    let locals: Vec<u64> = servers.iter_mut().map(|s| s.0.number("local")).collect();
    println!("per node: {locals:?}");

    let before: Vec<u64> = servers.iter_mut().map(|s| s.0.number("stats")).collect();
    let sent = Instant::now();
    let answer = servers[0].0.ask("broadcast");
    let mut rest = servers.split_off(1);
    let reached = poll(
        "broadcast reached every node's sessions",
        Duration::from_secs(60),
        || {
            rest.iter_mut()
                .enumerate()
                .all(|(i, s)| s.0.number("stats") - before[i + 1] == locals[i + 1])
        },
    );
    servers.append(&mut rest);
    println!(
        "broadcast from a: {answer}; every other node had queued it for all its sessions {:.3} s after it was sent ({} sessions in all)",
        reached.as_secs_f64(),
        expected
    );
    let _ = sent;

    let closing = Instant::now();
    for c in clients.iter_mut() {
        c.stdin = None; // hold_clients exits when its stdin ends, closing its connections
    }
    let zero = poll("cluster count back to 0", Duration::from_secs(60), || {
        servers[0].0.number("count") == 0
    });
    println!(
        "all clients closed: node a's cluster count = 0 after {:.2} s",
        zero.as_secs_f64()
    );
    let _ = closing;
    drop(clients);
    drop(servers);
    let _ = redis.kill();
    let _ = redis.wait();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match (args.first().map(String::as_str), args.get(1), args.get(2)) {
        (Some("node"), Some(url), Some(name)) => node(url, name),
        (Some("run"), total, nodes) => run(
            total.and_then(|t| t.parse().ok()).unwrap_or(100_000),
            nodes.and_then(|n| n.parse().ok()).unwrap_or(6).clamp(1, 8),
        ),
        _ => eprintln!("usage: cluster_scale run [TOTAL] [NODES] | node REDIS_URL NAME"),
    }
}
