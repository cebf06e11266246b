//! The accept path's system calls, counted by `strace` on `switchboard serve` while clients
//! connect, send a byte, read it back and close: a count, not a clock, so it is a fair CI
//! guard. Per connection the server needs accept4, epoll_ctl to register and deregister,
//! setsockopt (TCP_NODELAY), recvfrom, sendto and close; it must not add a `getsockname`
//! (the listener's address is specific), an `ioctl` to make the socket non-blocking
//! (accept4 does that) or a `shutdown` before the close of a connection the peer ended.

#[path = "cli_support.rs"]
mod support;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::{Server, STEP};

const CONNECTIONS: usize = 300;

/// Calls of each system call in `strace -c` output.
fn counts(summary: &str) -> HashMap<String, u64> {
    summary
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // "% time  seconds  usecs/call  calls  [errors]  syscall"
            let name = *fields.last()?;
            let calls = fields.get(3)?.parse().ok()?;
            (fields.len() >= 5 && name != "total").then(|| (name.to_string(), calls))
        })
        .collect()
}

#[test]
fn a_plain_connection_costs_no_extra_system_calls() {
    assert!(
        Command::new("strace").arg("-V").output().is_ok(),
        "strace is not installed: apt-get install -y strace (.ci/run does this)"
    );
    let server = Server::start(&["--mode", "echo", "--codec", "raw", "--workers", "1"]);
    let dir = support::TempDir::new("strace");
    let summary = dir.path().join("summary");
    // -p takes every thread of the server; the start-up calls are behind us.
    let mut strace = Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&summary)
        .args(["-p", &server.proc.pid().to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace runs");
    // strace reports the attach once it has taken every thread of the process.
    let mut attached = BufReader::new(strace.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("attached") {
        line.clear();
        assert!(
            attached.read_line(&mut line).unwrap() > 0,
            "strace stopped before attaching"
        );
    }
    let open_fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", server.proc.pid()))
            .unwrap()
            .count()
    };
    let fds_before = open_fds();
    for _ in 0..CONNECTIONS {
        let mut client = TcpStream::connect(server.addr).unwrap();
        client.set_read_timeout(Some(STEP)).unwrap();
        client.write_all(b"x").unwrap();
        let mut byte = [0u8; 1];
        client.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x");
        drop(client);
    }
    // The last sessions end on the server's side after the clients' close: wait for them
    // before detaching, so their calls are counted too.
    let deadline = Instant::now() + STEP;
    while open_fds() > fds_before {
        assert!(Instant::now() < deadline, "the sessions did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signals the strace child this test started, by its PID.
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    let status = strace.wait().unwrap();
    // strace detaches, writes its summary, then ends by the signal it was sent.
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.success() || status.signal() == Some(libc::SIGINT),
        "strace: {status:?}"
    );
    let summary = std::fs::read_to_string(&summary).unwrap();
    println!("{summary}");
    let calls = counts(&summary);
    let per_connection =
        |name: &str| calls.get(name).copied().unwrap_or(0) as f64 / CONNECTIONS as f64;
    // Every connection was seen: its accept and its close.
    assert!(per_connection("accept4") >= 1.0, "{summary}");
    assert!(per_connection("close") >= 1.0, "{summary}");
    // tokio's debug builds check each adopted socket's mode with fcntl; release builds don't.
    let mut unwanted = vec!["ioctl", "shutdown", "getsockname", "getpeername"];
    if !cfg!(debug_assertions) {
        unwanted.push("fcntl");
    }
    for name in unwanted {
        assert!(
            per_connection(name) < 0.05,
            "{name}: {} calls for {CONNECTIONS} connections\n{summary}",
            calls.get(name).copied().unwrap_or(0)
        );
    }
    assert!(server.terminate().status.success());
}
