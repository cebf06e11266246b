//! The accept path's system calls, counted by `strace` on `switchboard serve` while clients
//! connect, send a byte, read it back and close: a count, not a clock, so it is a fair CI
//! guard. Per connection the server needs accept4, epoll_ctl to register and deregister,
//! setsockopt (TCP_NODELAY), recvfrom, sendto and close; it must not add a `getsockname`
//! (the listener's address is specific), an `ioctl` to make the socket non-blocking
//! (accept4 does that) or a `shutdown` before the close of a connection the peer ended; and
//! with the accept loop on a worker, no wake-up of another thread. A Unix socket's connection
//! needs no `getpeername` or `getsockname` either (the peer's address comes with `accept4`).

#[path = "cli_support.rs"]
mod support;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::{Proc, Server, STEP};

/// Where the traced server listens, and so how a client connects.
enum Served {
    Tcp(Server),
    Unix(Proc, PathBuf),
}

impl Served {
    fn proc(&self) -> &Proc {
        match self {
            Served::Tcp(server) => &server.proc,
            Served::Unix(proc, _) => proc,
        }
    }

    /// One client: connect, send a byte, read it back, close.
    fn echo_once(&self) {
        match self {
            Served::Tcp(server) => drop(support::echoed(server.addr, b"x")),
            Served::Unix(_, path) => {
                let mut client = UnixStream::connect(path).unwrap();
                client.set_read_timeout(Some(STEP)).unwrap();
                client.write_all(b"x").unwrap();
                let mut reply = [0u8; 1];
                client.read_exact(&mut reply).unwrap();
                assert_eq!(&reply, b"x", "the echo differs");
            }
        }
    }

    fn terminate(self) -> bool {
        match self {
            Served::Tcp(server) => server.terminate().status.success(),
            Served::Unix(proc, _) => {
                proc.signal(libc::SIGTERM);
                proc.wait(STEP).status.success()
            }
        }
    }
}

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

/// Runs `CONNECTIONS` connect-echo-close cycles against `switchboard serve ARGS` under
/// `strace -c`; the summary and each call's count per connection.
fn calls_per_connection(args: &[&str]) -> (String, HashMap<String, f64>) {
    let mut all = vec!["--mode", "echo", "--codec", "raw", "--workers", "1"];
    all.extend_from_slice(args);
    traced(Served::Tcp(Server::start(&all)))
}

/// As [`calls_per_connection`], the server listening on a Unix socket in a temp dir.
fn unix_calls_per_connection() -> (String, HashMap<String, f64>) {
    let dir = support::TempDir::new("strace-unix");
    let path = dir.path().join("echo.sock");
    let listen = format!("unix:{}", path.display());
    let proc = Proc::spawn(&[
        "serve",
        "--mode",
        "echo",
        "--codec",
        "raw",
        "--workers",
        "1",
        "--listen",
        &listen,
    ]);
    assert_eq!(proc.stdout_line(), format!("listening on {listen}"));
    traced(Served::Unix(proc, path))
}

fn traced(server: Served) -> (String, HashMap<String, f64>) {
    assert!(
        Command::new("strace").arg("-V").output().is_ok(),
        "strace is not installed: apt-get install -y strace (.ci/run does this)"
    );
    let dir = support::TempDir::new("strace");
    let summary = dir.path().join("summary");
    // -p takes every thread of the server; the start-up calls are behind us.
    let mut strace = Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&summary)
        .args(["-p", &server.proc().pid().to_string()])
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
            "strace could not attach to the server: {line} (it needs to trace a sibling \
             process: root, CAP_SYS_PTRACE, or kernel.yama.ptrace_scope=0)"
        );
    }
    let open_fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", server.proc().pid()))
            .unwrap()
            .count()
    };
    let fds_before = open_fds();
    for _ in 0..CONNECTIONS {
        server.echo_once();
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
    assert!(server.terminate(), "the server did not exit cleanly");
    let per_connection = counts(&summary)
        .into_iter()
        .map(|(name, calls)| (name, calls as f64 / CONNECTIONS as f64))
        .collect();
    (summary, per_connection)
}

/// Fails naming the call when `name` is made `at_least`..`below` times per connection.
fn assert_per_connection(
    calls: &(String, HashMap<String, f64>),
    name: &str,
    range: std::ops::Range<f64>,
) {
    let (summary, per_connection) = calls;
    let seen = per_connection.get(name).copied().unwrap_or(0.0);
    assert!(
        range.contains(&seen),
        "{name}: {seen:.3} calls per connection, expected {range:?}\n{summary}"
    );
}

/// No `ioctl` to make a socket non-blocking, no `shutdown` before a close, no address lookups.
fn assert_no_extra_calls(calls: &(String, HashMap<String, f64>)) {
    // tokio's debug builds check each adopted socket's mode with fcntl; release builds don't.
    let mut unwanted = vec!["ioctl", "shutdown", "getsockname", "getpeername"];
    if !cfg!(debug_assertions) {
        unwanted.push("fcntl");
    }
    for name in unwanted {
        assert_per_connection(calls, name, 0.0..0.05);
    }
}

#[test]
fn a_plain_connection_costs_no_extra_system_calls() {
    let calls = calls_per_connection(&[]);
    // Every connection was seen: its accept and its close.
    assert_per_connection(&calls, "accept4", 1.0..3.0);
    assert_per_connection(&calls, "close", 1.0..1.05);
    assert_no_extra_calls(&calls);
}

#[test]
fn a_unix_connection_costs_no_extra_system_calls() {
    let calls = unix_calls_per_connection();
    assert_per_connection(&calls, "accept4", 1.0..3.0);
    assert_per_connection(&calls, "close", 1.0..1.05);
    // SO_PEERCRED is read once per connection, for the peer's credentials.
    assert_per_connection(&calls, "getsockopt", 1.0..1.05);
    assert_no_extra_calls(&calls);
}

/// With the accept loop on the only worker, every session starts on the accepting thread: no
/// wake-up of another thread (an eventfd `write`) per connection. The listener's own thread
/// makes one for nearly every connection, which shows the guard can fail.
#[test]
fn accepting_on_the_worker_hands_nothing_to_another_thread() {
    let on_worker = calls_per_connection(&["--accept-on-worker"]);
    assert_per_connection(&on_worker, "accept4", 1.0..3.0);
    assert_per_connection(&on_worker, "write", 0.0..0.05);
    let own_thread = calls_per_connection(&[]);
    assert_per_connection(&own_thread, "write", 0.5..1.5);
}
