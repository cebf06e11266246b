//! `switchboard serve --cluster`: three real processes on one real `redis-server` (started by
//! the test on a free port, without persistence, killed by PID at the end), plain socket
//! clients. Client counts: 200 per node in release builds or with `SB_CLUSTER_FULL=1`, 40 in
//! debug builds.

#[path = "cli_support.rs"]
mod support;

use std::{
    io::Write,
    net::TcpListener,
    process::Child,
    time::{Duration, Instant},
};

use support::{LineClient, Server, STEP};

/// A `redis-server` of the test's own; killed when dropped.
struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = switchboard_tests::start_redis(port);
        Redis { port, child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(redis: &Redis, name: &str) -> Server {
    let url = redis.url();
    let server = Server::start(&[
        "--cluster",
        &url,
        "--node-name",
        name,
        "--idle-timeout",
        "0",
    ]);
    server.proc.stderr_until("cluster: joined");
    server
}

/// A chat client that has read its welcome; returns it with its `NODE#N` id.
fn client(server: &Server) -> (LineClient, String) {
    let mut client = LineClient::connect(server.addr);
    let welcome = client.read_line();
    let id = welcome
        .strip_prefix("* welcome ")
        .and_then(|r| r.split_once(", "))
        .unwrap_or_else(|| panic!("not a welcome: {welcome}"))
        .0
        .to_string();
    (client, id)
}

/// Reads until a line satisfies `want` (skipping notices), within `within`.
fn read_until(client: &mut LineClient, within: Duration, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        assert!(
            Instant::now() < deadline,
            "no matching line within {within:?}"
        );
        let line = client.read_line();
        if want(&line) {
            return line;
        }
    }
}

/// Asks `/count` until it says `n`, within `within`; returns how long it took.
fn await_count(client: &mut LineClient, n: usize, within: Duration) -> Duration {
    let started = Instant::now();
    let want = format!("* {n} online");
    loop {
        client.send("/count");
        let answer = read_until(client, STEP, |l| {
            l.ends_with(" online") && !l.starts_with("* welcome")
        });
        if answer == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "count not {n} within {within:?}: {answer}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn chat_spans_three_nodes() {
    let redis = Redis::start();
    let (a, b, c) = (node(&redis, "a"), node(&redis, "b"), node(&redis, "c"));
    let (mut on_a, a_id) = client(&a);
    let (mut on_b, b_id) = client(&b);
    let (mut on_c, _) = client(&c);
    await_count(&mut on_a, 3, Duration::from_secs(3));

    on_a.send("hello from a");
    let want = format!("[{a_id}] hello from a");
    read_until(&mut on_b, STEP, |l| l == want);
    read_until(&mut on_c, STEP, |l| l == want);

    let (newcomer, new_id) = client(&b);
    let joined = format!("* {new_id} joined");
    read_until(&mut on_a, STEP, |l| l == joined);
    read_until(&mut on_c, STEP, |l| l == joined);
    drop(newcomer);
    let left = format!("* {new_id} left");
    read_until(&mut on_a, STEP, |l| l == left);
    read_until(&mut on_c, STEP, |l| l == left);

    on_c.send(&format!("/msg {b_id} just you"));
    read_until(&mut on_b, STEP, |l| l.ends_with("to you] just you"));
    drop((on_a, on_b, on_c));
    for server in [a, b, c] {
        assert!(server.terminate().status.success());
    }
}

#[test]
fn msg_across_nodes_arrives_complete_and_in_order() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let (mut sender, _) = client(&a);
    let (mut target, target_id) = client(&b);
    await_count(&mut sender, 2, Duration::from_secs(3));
    // In rounds of 500 (each round read before the next is sent): a chat client's queue of
    // cluster operations is bounded, and a client writing faster than that is told so.
    const N: usize = 10_000;
    let started = Instant::now();
    for round in 0..N / 500 {
        let mut batch = String::new();
        for i in round * 500..(round + 1) * 500 {
            batch.push_str(&format!("/msg {target_id} m{i}\n"));
        }
        sender.stream.write_all(batch.as_bytes()).unwrap();
        for i in round * 500..(round + 1) * 500 {
            let line = target.read_line();
            let text = line.split_once("to you] ").map(|(_, t)| t.to_string());
            assert_eq!(
                text.as_deref(),
                Some(format!("m{i}").as_str()),
                "got `{line}`"
            );
        }
    }
    eprintln!("{N} /msg lines across nodes in {:?}", started.elapsed());
}

fn per_node() -> usize {
    if !cfg!(debug_assertions) || std::env::var_os("SB_CLUSTER_FULL").is_some() {
        200
    } else {
        40
    }
}

#[test]
fn killed_and_stopped_nodes() {
    let redis = Redis::start();
    let (a, b, c) = (node(&redis, "a"), node(&redis, "b"), node(&redis, "c"));
    let per_node = per_node();
    let mut clients = Vec::new();
    for server in [&a, &b, &c] {
        for _ in 0..per_node {
            clients.push(client(server));
        }
    }
    let total = 3 * per_node;
    let (mut probe, _) = client(&a);
    let took = await_count(&mut probe, total + 1, Duration::from_secs(1));
    eprintln!(
        "count {} seen {took:?} after the last client connected",
        total + 1
    );
    let on_c = clients[2 * per_node].1.clone();

    // kill -9 the node holding `per_node` clients.
    c.proc.signal(libc::SIGKILL);
    let killed = Instant::now();
    let _ = c.proc.wait(STEP);
    let sent = Instant::now();
    // One write (LineClient::send may write the newline separately, and Nagle would then
    // hold it back for a delayed ACK).
    probe
        .stream
        .write_all(format!("/msg {on_c} are you there\n").as_bytes())
        .unwrap();
    let answer = read_until(&mut probe, STEP, |l| l.starts_with("* cannot send"));
    let took = sent.elapsed();
    assert!(answer.contains("unreachable"), "{answer}");
    assert!(
        took < Duration::from_millis(100),
        "NodeUnreachable took {took:?}"
    );
    eprintln!("NodeUnreachable in {took:?}: {answer}");
    a.proc.stderr_until("cluster: node down");
    let down = killed.elapsed();
    await_count(&mut probe, total + 1 - per_node, Duration::from_secs(4));
    assert!(
        killed.elapsed() < Duration::from_secs(4),
        "NodeDown and count took {:?}",
        killed.elapsed()
    );
    eprintln!(
        "NodeDown {down:?} and count {} {:?} after kill -9",
        total + 1 - per_node,
        killed.elapsed()
    );

    // Restarted: a new incarnation; the old one never reappears.
    let c2 = node(&redis, "c");
    a.proc.stderr_until("cluster: node up");
    probe.send("/who");
    let who = read_until(&mut probe, STEP, |l| {
        l.starts_with("* ") && l.contains("online:")
    });
    assert!(!who.contains("no answer"), "{who}");
    assert!(!who.contains(" c#"), "an old session of c is listed: {who}");

    // SIGSTOP b: /who returns within 600 ms and names it.
    b.proc.signal(libc::SIGSTOP);
    let asked = Instant::now();
    probe.stream.write_all(b"/who\n").unwrap();
    let who = read_until(&mut probe, STEP, |l| {
        l.starts_with("* ") && l.contains("online:")
    });
    let took = asked.elapsed();
    b.proc.signal(libc::SIGCONT);
    assert!(
        who.ends_with("(no answer from: b)"),
        "{}",
        &who[who.len().saturating_sub(80)..]
    );
    assert!(took < Duration::from_millis(600), "/who took {took:?}");
    eprintln!("/who with b stopped answered in {took:?}");
    drop(c2);
}
