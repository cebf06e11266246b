//! Cluster benchmarks through the real binary: `switchboard serve --cluster` processes on a
//! `redis-server` of its own, plain socket clients. Not a test; figures go to BENCHMARKS.md.
//!
//! ```text
//! cargo build --release -p switchboard-cli -p switchboard-cluster --examples
//! target/release/examples/cluster_bench latency [N]            # /msg same-node vs cross-node, N each (default 5000)
//! target/release/examples/cluster_bench broadcast NODES CLIENTS LINES
//!                                                           # chat lines to NODES x CLIENTS clients
//! ```
//!
//! `latency`: two nodes; a sender on node a alternates `/msg` to a client on a and to a client
//! on b, one at a time, and times each from the write to the target's read.
//!
//! `broadcast`: NODES nodes with CLIENTS clients each; one more client on node a sends LINES
//! chat lines in rounds of 100 (a round is sent once a client on the last node has the previous
//! one); every other client receives each line once. Reports deliveries per second and the CPU
//! time each node and Redis used per delivered message (from /proc/PID/stat).

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/release/examples/cluster_bench -> target/release/switchboard
    exe.parent().unwrap().parent().unwrap().join("switchboard")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis() -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install -y redis-server)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    (Proc(child), port)
}

fn node(redis_port: u16, name: &str) -> (Proc, SocketAddr) {
    let mut child = Command::new(bin())
        .args(["serve", "--port", "0", "--idle-timeout", "0"])
        .args([
            "--cluster",
            &format!("redis://127.0.0.1:{redis_port}"),
            "--node-name",
            name,
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("switchboard binary next to the examples directory");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    (Proc(child), addr)
}

struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    id: String,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut welcome = String::new();
        reader.read_line(&mut welcome).unwrap();
        let id = welcome
            .strip_prefix("* welcome ")
            .and_then(|r| r.split_once(", "))
            .unwrap()
            .0
            .to_string();
        Client { stream, reader, id }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("line in time");
        assert!(n > 0, "closed");
        line.trim_end().to_string()
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    utime + stime
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory-safety requirements.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(n).unwrap_or(100)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn wait_count(client: &mut Client, n: usize) {
    let want = format!("* {n} online");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        client.stream.write_all(b"/count\n").unwrap();
        let mut answer = client.line();
        while !answer.ends_with(" online") || answer.starts_with("* welcome") {
            answer = client.line();
        }
        if answer == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "count stuck at {answer}, want {n}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn latency(n: usize) {
    let (_redis, port) = redis();
    let (_a, a) = node(port, "a");
    let (_b, b) = node(port, "b");
    let mut sender = Client::connect(a);
    let mut near = Client::connect(a);
    let mut far = Client::connect(b);
    wait_count(&mut sender, 3);
    // Drain join notices.
    near.stream.write_all(b"/count\n").unwrap();
    far.stream.write_all(b"/count\n").unwrap();
    for c in [&mut near, &mut far] {
        let mut l = c.line();
        while !l.ends_with(" online") || l.starts_with("* welcome") {
            l = c.line();
        }
    }
    let (mut same, mut cross) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + 200 {
        for (target, samples) in [(&mut near, &mut same), (&mut far, &mut cross)] {
            let t = Instant::now();
            sender
                .stream
                .write_all(format!("/msg {} m{i}\n", target.id).as_bytes())
                .unwrap();
            let line = target.line();
            let took = t.elapsed();
            assert!(line.ends_with(&format!("] m{i}")), "{line}");
            if i >= 200 {
                samples.push(took); // the first 200 of each are warm-up
            }
        }
    }
    same.sort();
    cross.sort();
    println!(
        "latency /msg, {n} each: same-node p50 {:.1} us p99 {:.1} us; cross-node p50 {:.1} us p99 {:.1} us; p99 difference {:.1} us",
        percentile(&same, 0.5),
        percentile(&same, 0.99),
        percentile(&cross, 0.5),
        percentile(&cross, 0.99),
        percentile(&cross, 0.99) - percentile(&same, 0.99),
    );
}

fn broadcast(nodes: usize, clients: usize, lines: usize) {
    let (redis, port) = redis();
    let names = ["a", "b", "c", "d", "e", "f"];
    let servers: Vec<(Proc, SocketAddr)> = names[..nodes].iter().map(|n| node(port, n)).collect();
    let mut receivers = Vec::new();
    for (_, addr) in &servers {
        for _ in 0..clients {
            receivers.push(Client::connect(*addr));
        }
    }
    let mut sender = Client::connect(servers[0].1);
    wait_count(&mut sender, nodes * clients + 1);
    // Each receiver: skip notices, then count lines from the sender until the last one.
    let sender_id = sender.id.clone();
    let prefix = format!("[{sender_id}] ");
    let last = format!("{prefix}line {}", lines - 1);
    let delivered = Arc::new(AtomicU64::new(0));
    let (round_tx, round_rx) = std::sync::mpsc::channel::<usize>();
    let total_receivers = receivers.len();
    let mut threads = Vec::new();
    for (k, mut r) in receivers.into_iter().enumerate() {
        let (prefix, last, delivered) = (prefix.clone(), last.clone(), delivered.clone());
        let tx = (k == total_receivers - 1).then(|| round_tx.clone());
        threads.push(std::thread::spawn(move || loop {
            let mut line = String::new();
            match r.reader.read_line(&mut line) {
                Ok(n) if n > 0 => {}
                _ => return, // timed out: the last lines were dropped for this one
            }
            let line = line.trim_end();
            if let Some(text) = line.strip_prefix(&prefix) {
                delivered.fetch_add(1, Ordering::Relaxed);
                if let Some(tx) = &tx {
                    let i: usize = text.trim_start_matches("line ").parse().unwrap_or(0);
                    if (i + 1).is_multiple_of(100) {
                        let _ = tx.send(i);
                    }
                }
                if line == last {
                    return;
                }
            }
        }));
    }
    let pids: Vec<u32> = servers.iter().map(|(p, _)| p.0.id()).collect();
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let redis_before = cpu_ticks(redis.0.id());
    let started = Instant::now();
    for round in 0..lines.div_ceil(100) {
        let mut batch = String::new();
        for i in round * 100..((round + 1) * 100).min(lines) {
            batch.push_str(&format!("line {i}\n"));
        }
        sender.stream.write_all(batch.as_bytes()).unwrap();
        let end = ((round + 1) * 100).min(lines) - 1;
        loop {
            match round_rx.recv_timeout(Duration::from_secs(1)) {
                Ok(i) if i >= end => break,
                Ok(_) => {}
                Err(_) => break, // lines dropped for the slowest: the totals show it
            }
        }
    }
    for t in threads {
        let _ = t.join();
    }
    let elapsed = started.elapsed();
    let hz = ticks_per_second() as f64;
    let delivered = delivered.load(Ordering::Relaxed);
    let expected = (total_receivers * lines) as u64;
    println!(
        "broadcast: {nodes} node(s) x {clients} clients, {lines} lines: {delivered} of {expected} deliveries in {:.2} s = {:.0} deliveries/s",
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64()
    );
    for (i, pid) in pids.iter().enumerate() {
        let cpu = (cpu_ticks(*pid) - before[i]) as f64 / hz;
        println!(
            "  node {}: {:.2} CPU s, {:.0} ns per delivered message (all nodes' deliveries)",
            names[i],
            cpu,
            cpu * 1e9 / delivered.max(1) as f64
        );
    }
    let redis_cpu = (cpu_ticks(redis.0.id()) - redis_before) as f64 / hz;
    println!(
        "  redis: {:.2} CPU s, {:.0} ns per delivered message, {:.0} us per published line",
        redis_cpu,
        redis_cpu * 1e9 / delivered.max(1) as f64,
        redis_cpu * 1e6 / lines as f64
    );
    let _ = std::io::stdout().flush();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("latency") => latency(arg(1, 5000)),
        Some("broadcast") => broadcast(arg(1, 3).clamp(1, 6), arg(2, 300), arg(3, 1000)),
        _ => eprintln!("usage: cluster_bench latency [N] | broadcast NODES CLIENTS LINES"),
    }
}
