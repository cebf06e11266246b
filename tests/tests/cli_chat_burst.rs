//! Chat bursts through the real binary: a client that reads never loses a line, however many
//! lines arrive at once, and a client that never reads only costs the others the slow-consumer
//! timeout, with the server's memory bounded.

#[path = "cli_support.rs"]
mod support;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use support::{Server, STEP};

/// A chat client: reads its welcome, then collects every relayed line (`[#ID] text`) on a
/// thread until it has `expect` of them.
struct Member {
    id: String,
    stream: TcpStream,
    reader: Option<BufReader<TcpStream>>,
}

impl Member {
    fn join(addr: SocketAddr) -> Member {
        let stream = TcpStream::connect(addr).expect("connects");
        stream.set_read_timeout(Some(STEP)).unwrap();
        stream.set_write_timeout(Some(STEP)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut welcome = String::new();
        reader.read_line(&mut welcome).expect("a welcome line");
        // `* welcome #ID, N online`
        let id = welcome
            .strip_prefix("* welcome ")
            .and_then(|rest| rest.split(',').next())
            .unwrap_or_else(|| panic!("unexpected welcome {welcome:?}"))
            .to_string();
        Member {
            id,
            stream,
            reader: Some(reader),
        }
    }

    /// Collects relayed lines until `expect` of them came, grouped by sender.
    fn collect(&mut self, expect: usize) -> JoinHandle<HashMap<String, Vec<String>>> {
        let mut reader = self.reader.take().expect("collect once");
        std::thread::spawn(move || {
            let mut by_sender: HashMap<String, Vec<String>> = HashMap::new();
            let mut got = 0;
            let mut line = String::new();
            while got < expect {
                line.clear();
                let n = reader
                    .read_line(&mut line)
                    .unwrap_or_else(|e| panic!("read failed after {got} of {expect} lines: {e}"));
                assert!(n > 0, "closed after {got} of {expect} lines");
                let text = line.trim_end();
                if let Some(rest) = text.strip_prefix('[') {
                    let (sender, body) = rest.split_once("] ").expect("a relayed line");
                    by_sender
                        .entry(sender.to_string())
                        .or_default()
                        .push(body.to_string());
                    got += 1;
                }
            }
            by_sender
        })
    }

    fn send_burst(&mut self, lines: &[String]) {
        let mut all = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            all.push_str(line);
            all.push('\n');
        }
        // One write: the whole burst reaches the server as fast as TCP takes it.
        self.stream.write_all(all.as_bytes()).expect("burst sent");
    }
}

fn lines_of(member: usize, count: usize, pad: usize) -> Vec<String> {
    (0..count)
        .map(|n| format!("m{member}-{n:05}{}", "x".repeat(pad)))
        .collect()
}

/// `members` members each send `count` lines (padded by `pad`) in one write; every member must
/// get every other member's lines, exactly once and in each sender's order, and none of its
/// own. Returns how long the relay took, and the members (still connected).
fn relay_and_check(
    addr: SocketAddr,
    members: usize,
    count: usize,
    pad: usize,
) -> (Duration, Vec<Member>) {
    let mut clients: Vec<Member> = (0..members).map(|_| Member::join(addr)).collect();
    let ids: Vec<String> = clients.iter().map(|c| c.id.clone()).collect();
    let expect = (members - 1) * count;
    let collectors: Vec<_> = clients.iter_mut().map(|c| c.collect(expect)).collect();
    let bursts: Vec<Vec<String>> = (0..members).map(|m| lines_of(m, count, pad)).collect();
    let started = Instant::now();
    let writers: Vec<_> = clients
        .into_iter()
        .zip(bursts.clone())
        .map(|(mut client, lines)| {
            std::thread::spawn(move || {
                client.send_burst(&lines);
                client
            })
        })
        .collect();
    let clients: Vec<Member> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    for (me, collector) in collectors.into_iter().enumerate() {
        let by_sender = collector.join().expect("a reader finished");
        for (other, lines) in bursts.iter().enumerate() {
            let got = by_sender.get(&ids[other]);
            if other == me {
                assert!(got.is_none(), "member {me} got its own lines back");
                continue;
            }
            let got = got.unwrap_or_else(|| panic!("member {me} got nothing from {other}"));
            assert_eq!(got.len(), lines.len(), "member {me} from {other}");
            assert!(
                got == lines,
                "member {me}: lines from {other} lost or out of order"
            );
        }
    }
    (started.elapsed(), clients)
}

/// `members` readers each send `count` lines at once; each gets every other member's lines,
/// exactly once and in each sender's order.
fn burst(members: usize, count: usize, pad: usize, args: &[&str]) -> Server {
    let mut all = vec!["--mode", "chat", "--idle-timeout", "0"];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    let (elapsed, clients) = relay_and_check(server.addr, members, count, pad);
    eprintln!(
        "{members} members × {count} lines of {} bytes relayed in {:?}",
        lines_of(0, 1, pad)[0].len(),
        elapsed
    );
    drop(clients);
    server
}

#[test]
fn three_members_sending_a_thousand_lines_each_lose_nothing() {
    let finished = burst(3, 1000, 0, &[]).terminate();
    assert!(finished.status.success(), "{}", finished.stderr_text());
}

#[test]
fn fifty_members_sending_a_hundred_lines_each_lose_nothing() {
    let finished = burst(50, 100, 0, &[]).terminate();
    assert!(finished.status.success(), "{}", finished.stderr_text());
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Five members push 4,000 lines of 900 bytes to each other while five more connect and never
/// read a byte: the readers get everything, the silent ones are slow consumers after the
/// timeout (their lines counted as dropped), and the server's memory stays bounded.
#[test]
fn readers_lose_nothing_while_silent_members_are_dropped_and_memory_stays_bounded() {
    let server = Server::start(&[
        "--mode",
        "chat",
        "--idle-timeout",
        "0",
        "--slow-consumer-timeout",
        "0.5",
    ]);
    // Silent members: joined, then never read (the kernel's buffers fill, then the server's).
    let silent: Vec<TcpStream> = (0..5)
        .map(|_| {
            let stream = TcpStream::connect(server.addr).unwrap();
            // Smallest receive buffer, so the server's own buffers fill quickly.
            socket2::SockRef::from(&stream)
                .set_recv_buffer_size(4096)
                .unwrap();
            stream
        })
        .collect();
    let rss_before = rss_kib(server.proc.pid());
    let (elapsed, clients) = relay_and_check(server.addr, 5, 4000, 890);
    let rss_after = rss_kib(server.proc.pid());
    eprintln!("relayed 5 × 4,000 × 900 B past 5 silent members in {elapsed:?}; server RSS {rss_before} → {rss_after} KiB");
    // Each silent member holds at most a write buffer and an outbound queue (64 KiB each, plus
    // a line): a few hundred KiB in all. Allow generous slack for the allocator.
    assert!(
        rss_after < rss_before + 64 * 1024,
        "server RSS grew from {rss_before} to {rss_after} KiB"
    );
    // The silent members held the room up for about the slow-consumer timeout, not for ever.
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
    drop(clients);
    drop(silent);
    let finished = server.terminate();
    assert!(finished.status.success(), "{}", finished.stderr_text());
    let summary = finished
        .stdout
        .iter()
        .find(|l| l.starts_with("shutdown:"))
        .expect("a summary line");
    let dropped: u64 = summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" messages dropped for slow consumers"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no drop count in {summary:?}"));
    assert!(dropped > 0, "the silent members missed nothing? {summary}");
}
