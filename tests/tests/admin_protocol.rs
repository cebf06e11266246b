//! The admin protocol over a real socket (loopback TCP until the Unix listener lands): replies,
//! `--json`, errors that keep the connection, pipelined commands, several clients, kick,
//! pause/resume, limits, drain, and a listing of 19,000 sessions.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use switchboard::{admin::Admin, Conn, Listener, ListenerHandle, Registry, SessionHandler};
use switchboard_codec::Lines;

const STEP: Duration = Duration::from_secs(20);

struct Echo;
impl SessionHandler<Lines> for Echo {
    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        let _ = conn.write(line);
    }
}

fn server(registry: Registry) -> ListenerHandle {
    Listener::bind("127.0.0.1:0")
        .workers(2)
        .registry(registry)
        .serve(Lines::new(), || Echo)
        .unwrap()
}

/// A blocking admin client; every read is bounded by [`STEP`].
struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(STEP)).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }
    fn line(&mut self) -> String {
        let mut line = String::new();
        assert!(
            self.reader.read_line(&mut line).unwrap() > 0,
            "admin closed"
        );
        line.trim_end_matches('\n').to_string()
    }
    /// The lines of a text block, up to its empty line.
    fn block(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        for _ in 0..100_000 {
            let line = self.line();
            if line.is_empty() {
                return lines;
            }
            lines.push(line);
        }
        panic!("a block without an end");
    }
    fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).unwrap();
    }
}

/// Runs `test` on a blocking thread beside an actix system holding the server and its admin.
fn with_admin(registry: Registry, test: impl FnOnce(SocketAddr, SocketAddr) + Send + 'static) {
    actix_rt::System::new().block_on(async move {
        let server = server(registry);
        let admin = Admin::new(&server);
        let socket = admin.serve_tcp("127.0.0.1:0").unwrap();
        let (server_addr, admin_addr) = (server.local_addr(), socket.local_addr());
        tokio::time::timeout(
            Duration::from_secs(120),
            tokio::task::spawn_blocking(move || test(server_addr, admin_addr)),
        )
        .await
        .expect("the test finished in time")
        .expect("the test passed");
    });
}

#[test]
fn commands_answer_in_order_and_errors_keep_the_connection() {
    with_admin(Registry::new(), |_, admin| {
        let mut c = Client::connect(admin);
        // Pipelined: four commands in one write, answered in order.
        c.send("help\nbogus\ninfo --json\nsessions\n");
        let help = c.block();
        assert!(help.iter().any(|l| l.starts_with("sessions")), "{help:?}");
        assert_eq!(c.line(), "error: unknown command `bogus` (try `help`)");
        let info: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
        assert_eq!(info["totals"]["live"], 0);
        let sessions = c.block();
        assert!(sessions[0].starts_with("ID "), "{sessions:?}");
        assert_eq!(sessions.last().unwrap().split(' ').next(), Some("0"));

        // Bad arguments, an over-long line and bad UTF-8: one error line each, then it goes on.
        c.send("kick\n");
        assert!(c.line().starts_with("error: bad arguments"));
        c.send(&format!("{}\n", "x".repeat(10_000)));
        assert!(c.line().starts_with("error: line exceeds"));
        c.stream.write_all(b"\xff\xfe\n").unwrap();
        assert!(c.line().starts_with("error: line is not valid UTF-8"));
        c.send("session 999999\n");
        assert_eq!(c.line(), "error: no session #999999");
        c.send("set max-connections zero\n");
        assert!(c.line().starts_with("error: `zero`"));
        c.send("info\n");
        assert!(c.block()[0].starts_with("version"));
    });
}

/// The ids of a `sessions --json` reply, in its order.
fn listed_ids(listing: &serde_json::Value) -> Vec<u64> {
    listing["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn sessions_sort_and_limit_pick_the_right_sessions() {
    with_admin(Registry::new(), |server, admin| {
        // Connected one after another (each echoed before the next connects, so each has
        // started): age order is this order; byte order is another.
        let lengths = [3usize, 40, 10, 25, 1];
        let mut peers = Vec::new();
        for n in lengths {
            let mut peer = TcpStream::connect(server).unwrap();
            peer.set_read_timeout(Some(STEP)).unwrap();
            peer.write_all(format!("{}\n", "x".repeat(n)).as_bytes())
                .unwrap();
            let mut echo = vec![0u8; n + 1];
            std::io::Read::read_exact(&mut peer, &mut echo).unwrap();
            peers.push(peer);
        }
        let mut c = Client::connect(admin);
        c.send("sessions --json --sort age\n");
        let all: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
        assert_eq!(all["total"], 5);
        // Oldest first: the order they connected in.
        let by_age = listed_ids(&all);
        assert_eq!(by_age.len(), 5);
        let bytes: Vec<u64> = all["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["bytes_in"].as_u64().unwrap())
            .collect();
        assert_eq!(bytes, [4, 41, 11, 26, 2]);

        c.send("sessions --json --sort age --limit 2\n");
        let oldest: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
        assert_eq!(oldest["total"], 5);
        assert_eq!(listed_ids(&oldest), by_age[..2]);

        // Most bytes first; a limit picks the top ones, in order.
        c.send("sessions --json --limit 3\n");
        let top: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
        assert_eq!(top["total"], 5);
        assert_eq!(listed_ids(&top), [by_age[1], by_age[3], by_age[2]]);
        c.send("sessions --json --sort bytes --limit 100\n");
        let every: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
        assert_eq!(
            listed_ids(&every),
            [by_age[1], by_age[3], by_age[2], by_age[0], by_age[4]]
        );

        // Idle: every session, once each.
        c.send("sessions --json --sort idle\n");
        let idle: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
        let mut ids = listed_ids(&idle);
        ids.sort_unstable();
        let mut expected = by_age.clone();
        expected.sort_unstable();
        assert_eq!(ids, expected);

        // The text block: header, the limit's lines in order, then the count.
        c.send("sessions --sort bytes --limit 2\n");
        let block = c.block();
        assert_eq!(block.len(), 4, "{block:?}");
        assert!(block[0].starts_with("ID "), "{block:?}");
        assert!(
            block[1].starts_with(&format!("#{} ", by_age[1])),
            "{block:?}"
        );
        assert!(
            block[2].starts_with(&format!("#{} ", by_age[3])),
            "{block:?}"
        );
        assert!(block[3].starts_with("2 of 5 sessions"), "{block:?}");

        // `session ID` and `kick ID` find a session by its id directly.
        c.send(&format!("session {} --json\n", by_age[2]));
        let one: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
        assert_eq!(one["bytes_in"], 11);
        drop(peers);
    });
}

/// Admin work over every session runs on a thread of its own at nice 10, below the workers.
#[cfg(target_os = "linux")]
#[test]
fn listings_run_on_a_thread_at_nice_10() {
    with_admin(Registry::new(), |_, admin| {
        let mut c = Client::connect(admin);
        c.send("sessions --json\n");
        let listing: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
        assert_eq!(listing["total"], 0);
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let path = task.unwrap().path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if comm.trim_end() != "sb-admin-low" {
                continue;
            }
            let stat = std::fs::read_to_string(path.join("stat")).unwrap();
            // Fields after the name (which ends at the last `)`): state is field 3, nice 19.
            let rest = &stat[stat.rfind(')').unwrap() + 1..];
            let nice: i32 = rest
                .split_whitespace()
                .nth(19 - 3)
                .unwrap()
                .parse()
                .unwrap();
            found.push(nice);
        }
        assert_eq!(found, [10], "the admin thread and its nice value");
    });
}

#[test]
fn several_clients_see_and_steer_the_same_server() {
    with_admin(Registry::new(), |server, admin| {
        let mut a = Client::connect(admin);
        let mut b = Client::connect(admin);
        let mut peer = TcpStream::connect(server).unwrap();
        peer.set_read_timeout(Some(STEP)).unwrap();
        peer.write_all(b"ping\n").unwrap();
        let mut echo = [0u8; 5];
        std::io::Read::read_exact(&mut peer, &mut echo).unwrap();

        a.send("sessions --json --sort age --limit 5\n");
        let listing: serde_json::Value = serde_json::from_str(&a.line()).unwrap();
        assert_eq!(listing["total"], 1);
        let id = listing["sessions"][0]["id"].as_u64().unwrap();
        assert_eq!(listing["sessions"][0]["bytes_in"], 5);

        b.send(&format!("session #{id} --json\n"));
        let line = b.line();
        let one: serde_json::Value = serde_json::from_str(&line).expect(&line);
        assert_eq!(one["id"], id);

        a.send("pause\n");
        assert_eq!(a.block(), ["paused"]);
        b.send("info --json\n");
        let info: serde_json::Value = serde_json::from_str(&b.line()).unwrap();
        assert_eq!(info["listeners"][0]["accepting"], false);
        // A plaintext listener runs no handshakes, and nothing failed to accept.
        assert_eq!(info["listeners"][0]["handshakes"]["ok"], 0);
        assert_eq!(
            info["listeners"][0]["accept_errors_by_kind"]["descriptors"],
            0
        );
        b.send("resume\nset max-connections-per-ip 3\nset max-connections 50\ninfo --json\n");
        assert_eq!(b.block(), ["accepting"]);
        assert_eq!(b.block(), ["max-connections-per-ip 3"]);
        assert_eq!(b.block(), ["max-connections 50"]);
        let info: serde_json::Value = serde_json::from_str(&b.line()).unwrap();
        assert_eq!(info["limits"]["max_connections"], 50);
        assert_eq!(info["limits"]["max_connections_per_ip"], 3);

        a.send(&format!("kick {id}\n"));
        assert_eq!(a.block(), [format!("closing #{id}")]);
        // The kicked peer sees its connection end.
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut peer, &mut rest).unwrap();
        drop(peer);

        b.send("drain 5\n");
        let report = b.block();
        assert!(report[0].starts_with("drained "), "{report:?}");
        a.send("quit\n");
        assert_eq!(a.block(), ["bye"]);
    });
}

#[test]
fn listing_19000_sessions_gives_every_one() {
    let registry = Registry::new();
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:2".parse().unwrap();
    let held: Vec<_> = (0..19_000)
        .map(|_| registry.register_placeholder(peer, local))
        .collect();
    with_admin(registry, move |_, admin| {
        let mut c = Client::connect(admin);
        let started = Instant::now();
        c.send("sessions\n");
        let lines = c.block();
        let whole = started.elapsed();
        assert_eq!(lines.len(), 19_002);
        let summary = lines.last().unwrap();
        assert!(
            summary.starts_with("19000 of 19000 sessions, listed in "),
            "{summary}"
        );
        // The time is reported, not judged here: the listing runs at a low priority, so on a
        // machine busy with other tests it takes what the cores leave. The 50 ms goal is
        // measured by the benchmark (`e2e --only ops`, BENCHMARKS.md).
        let listed_ms: u64 = summary.split(' ').nth(6).unwrap().parse().unwrap();
        eprintln!("19,000 sessions: listed in {listed_ms} ms, whole reply received in {whole:?}");
        c.send("sessions --json --limit 10\n");
        let listing: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
        assert_eq!(listing["total"], 19_000);

        // The full listing, as JSON: every session, each with the fields of `session ID`
        // (its time is the benchmark's to judge, as above).
        let started = Instant::now();
        c.send("sessions --json\n");
        let line = c.line();
        let whole = started.elapsed();
        let listing: serde_json::Value = serde_json::from_str(&line).unwrap();
        let sessions = listing["sessions"].as_array().unwrap();
        assert_eq!(listing["total"], 19_000);
        assert_eq!(sessions.len(), 19_000);
        let id = sessions[0]["id"].as_u64().unwrap();
        c.send(&format!("session {id} --json\n"));
        let mut one: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
        let mut first = sessions[0].clone();
        let keys =
            |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert!(sessions.iter().all(|s| keys(s) == keys(&one)));
        // Apart from the clocks, which moved on between the two commands.
        for v in [&mut one, &mut first] {
            let v = v.as_object_mut().unwrap();
            assert!(v.remove("age_s").is_some() && v.remove("idle_s").is_some());
        }
        assert_eq!(one, first, "`session ID --json` and the listing disagree");
        eprintln!("19,000 sessions: full JSON listing received in {whole:?}");
        drop(held);
    });
}
