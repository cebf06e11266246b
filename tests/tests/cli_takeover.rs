//! `serve --takeover ADMIN_PATH` through the binary: a restart under a connect loop refuses and
//! resets nothing, twice in a row (the new server is taken over in turn); a Unix listen socket
//! is handed over, its file kept, the old sessions drained; nothing listening fails fast; listen
//! options that differ are refused and leave the old server serving.

#[path = "cli_support.rs"]
mod support;

use std::{
    io::{self, BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    os::unix::net::UnixStream,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use support::{assert_one_line_error, run, Finished, LineClient, Proc, Server, TempDir, STEP};

/// What one connect of the loop ended as.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    /// Closed before the echo came (EOF), timed out, or echoed wrong.
    other: AtomicU64,
}

impl Tally {
    fn get(&self) -> [u64; 4] {
        [&self.ok, &self.refused, &self.reset, &self.other].map(|c| c.load(Ordering::Relaxed))
    }
}

/// One connect: sends a line, reads its echo, closes.
fn exchange(addr: SocketAddr, line: &str, tally: &Tally) {
    let outcome = (|| -> io::Result<bool> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        (&stream).write_all(format!("{line}\n").as_bytes())?;
        let mut echo = String::new();
        BufReader::new(&stream).read_line(&mut echo)?;
        Ok(echo.trim_end() == line)
    })();
    let counter = match outcome {
        Ok(true) => &tally.ok,
        Ok(false) => &tally.other,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => &tally.refused,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ) =>
        {
            &tally.reset
        }
        Err(_) => &tally.other,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// `threads` clients, each connecting `per_thread` times at an even pace over `length`.
fn connect_loop(
    addr: SocketAddr,
    threads: u64,
    per_thread: u64,
    length: Duration,
    tally: Arc<Tally>,
) -> Vec<std::thread::JoinHandle<()>> {
    let start = Instant::now();
    let gap = length / u32::try_from(per_thread).unwrap();
    (0..threads)
        .map(|t| {
            let tally = tally.clone();
            std::thread::spawn(move || {
                // Staggered, so the connects are spread evenly, not in bursts of `threads`.
                let offset = gap / u32::try_from(threads).unwrap() * u32::try_from(t).unwrap();
                for i in 0..per_thread {
                    let due = start + offset + gap * u32::try_from(i).unwrap();
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        // Pacing the load, not waiting for an event.
                        std::thread::sleep(wait);
                    }
                    exchange(addr, &format!("client {t} connect {i}"), &tally);
                }
            })
        })
        .collect()
}

/// Polls `done` until it holds (there is no event for a counter), failing after [`STEP`].
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + STEP;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `switchboard serve ARGS --takeover ADMIN`, once it has confirmed the hand-over; its
/// `listening on` lines (the old server's addresses) are checked against `expect`.
fn take_over(args: &[&str], admin: &Path, expect: &[String]) -> Proc {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    all.extend(["--takeover", admin.to_str().unwrap()]);
    let proc = Proc::spawn(&all);
    for address in expect {
        assert_eq!(proc.stdout_line(), format!("listening on {address}"));
    }
    assert_eq!(proc.stdout_line(), format!("admin on {}", admin.display()));
    let confirmed = proc.stdout_line();
    assert!(
        confirmed.starts_with(&format!("took over from {} (pid ", admin.display())),
        "{confirmed}"
    );
    proc
}

/// `(served, drained, aborted)` from a `shutdown:` line.
fn shutdown_counts(finished: &Finished) -> (u64, u64, u64) {
    let line = finished
        .stdout
        .iter()
        .find(|l| l.starts_with("shutdown: "))
        .unwrap_or_else(|| panic!("no shutdown line: {finished:?}"));
    let after = |key: &str| -> u64 {
        let rest = &line[line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (after("served "), after("drained "), after("aborted "))
}

#[test]
fn takeover_twice_under_a_connect_loop_refuses_and_resets_nothing() {
    let dir = TempDir::new("takeover-loop");
    let admin = dir.path().join("admin.sock");
    let admin_arg = admin.to_str().unwrap();
    let old = Server::start(&["--mode", "echo", "--workers", "2", "--admin", admin_arg]);
    assert_eq!(old.proc.stdout_line(), format!("admin on {admin_arg}"));
    let addr = old.addr;
    let tally = Arc::new(Tally::default());
    // 200 connects per second for 10 s: 4 clients at 50 per second each.
    let clients = connect_loop(addr, 4, 500, Duration::from_secs(10), tally.clone());

    let same = ["--mode", "echo", "--workers", "2", "--port", "0"];
    wait_until("the first 400 connects", || tally.get()[0] >= 400);
    let first = take_over(&same, &admin, &[addr.to_string()]);
    // The old server stops by itself once its sessions are done.
    let old = old.proc.wait(STEP);
    assert!(old.status.success(), "{old:?}");

    wait_until("1100 connects", || tally.get()[0] >= 1100);
    let second = take_over(&same, &admin, &[addr.to_string()]);
    let first = first.wait(STEP);
    assert!(first.status.success(), "{first:?}");

    for client in clients {
        client.join().unwrap();
    }
    second.signal(libc::SIGTERM);
    let second = second.wait(STEP);
    assert!(second.status.success(), "{second:?}");

    let [ok, refused, reset, other] = tally.get();
    assert_eq!(
        (refused, reset, other),
        (0, 0, 0),
        "{ok} echoed; refused, reset, other"
    );
    assert_eq!(ok, 2000);
    let counts = [&old, &first, &second].map(shutdown_counts);
    // Every connection was served by exactly one process, and the two that handed over
    // aborted none of theirs.
    assert_eq!(counts.iter().map(|c| c.0).sum::<u64>(), ok, "{counts:?}");
    assert!(
        counts.iter().all(|c| c.0 > 0),
        "each served some: {counts:?}"
    );
    assert_eq!((counts[0].2, counts[1].2), (0, 0), "{counts:?}");
    for finished in [&old, &first] {
        let text = finished.stderr_text();
        assert!(text.contains("hand-over committed"), "{text}");
        assert!(text.contains("drained after the hand-over"), "{text}");
    }
}

/// A line client on a Unix socket, reads bounded by [`STEP`].
struct UnixLines(BufReader<UnixStream>);

impl UnixLines {
    fn connect(path: &Path) -> UnixLines {
        let stream = UnixStream::connect(path).expect("connects");
        stream.set_read_timeout(Some(STEP)).unwrap();
        UnixLines(BufReader::new(stream))
    }

    /// Sends `line` and returns what comes back (empty at end of stream).
    fn echo(&mut self, line: &str) -> String {
        writeln!(self.0.get_mut(), "{line}").unwrap();
        let mut echo = String::new();
        self.0.read_line(&mut echo).expect("an answer in time");
        echo.trim_end().to_string()
    }

    /// Whether the server closed the stream (read without writing: a write to a closed Unix
    /// socket fails at once).
    fn closed(&mut self) -> bool {
        let mut rest = String::new();
        self.0.read_line(&mut rest).expect("the end in time") == 0
    }
}

#[test]
fn unix_listen_socket_is_handed_over_and_the_old_sessions_drain() {
    let dir = TempDir::new("takeover-unix");
    let admin = dir.path().join("admin.sock");
    let socket = dir.path().join("echo.sock");
    let listen = format!("unix:{}", socket.display());
    let args = ["--mode", "echo", "--workers", "1", "--drain-timeout", "2"];
    let mut all = vec![
        "serve",
        "--listen",
        &listen,
        "--admin",
        admin.to_str().unwrap(),
    ];
    all.extend_from_slice(&args);
    let old = Proc::spawn(&all);
    assert_eq!(old.stdout_line(), format!("listening on {listen}"));
    assert_eq!(old.stdout_line(), format!("admin on {}", admin.display()));
    let mut before = UnixLines::connect(&socket);
    assert_eq!(before.echo("before"), "before");

    let mut new_args = vec!["--listen", &listen];
    new_args.extend_from_slice(&args);
    let new = take_over(&new_args, &admin, std::slice::from_ref(&listen));
    // The old server's session goes on while it drains; new clients reach the new server.
    assert_eq!(before.echo("during"), "during");
    let mut after = UnixLines::connect(&socket);
    assert_eq!(after.echo("after"), "after");
    // Half the drain timeout to end on its own, then it is closed gracefully (and waits for
    // the client to close its side).
    assert!(before.closed(), "closed by the old server's drain");
    drop(before);
    let old = old.wait(STEP);
    assert!(old.status.success(), "{old:?}");
    assert_eq!(shutdown_counts(&old), (1, 1, 0));
    // The old server left the socket file for the new one.
    assert!(socket.exists() && admin.exists());
    assert_eq!(UnixLines::connect(&socket).echo("again"), "again");
    assert_eq!(after.echo("still"), "still");
    drop(after);

    new.signal(libc::SIGTERM);
    let new = new.wait(STEP);
    assert!(new.status.success(), "{new:?}");
    assert_eq!(shutdown_counts(&new).0, 2);
    // The last owner cleans up.
    assert!(!socket.exists() && !admin.exists());
}

#[test]
fn takeover_with_nothing_listening_fails_fast() {
    let dir = TempDir::new("takeover-none");
    let missing = dir.path().join("missing.sock");
    // A socket file nothing listens on any more (a crashed server's).
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    support::switchboard_bin();
    for path in [&missing, &stale] {
        let started = Instant::now();
        let finished = run(
            &[
                "serve",
                "--mode",
                "echo",
                "--port",
                "0",
                "--takeover",
                path.to_str().unwrap(),
            ],
            STEP,
        );
        assert_eq!(finished.status.code(), Some(1), "{finished:?}");
        assert_one_line_error(&finished, "nothing is listening there");
        assert!(finished.stderr[0].contains(path.to_str().unwrap()));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}

#[test]
fn takeover_with_other_listen_options_is_refused_and_the_old_keeps_serving() {
    let dir = TempDir::new("takeover-mismatch");
    let admin = dir.path().join("admin.sock");
    let admin_arg = admin.to_str().unwrap();
    let old = Server::start(&["--mode", "echo", "--workers", "1", "--admin", admin_arg]);
    assert_eq!(old.proc.stdout_line(), format!("admin on {admin_arg}"));

    let refused = run(
        &[
            "serve",
            "--mode",
            "echo",
            "--listen",
            "127.0.0.1:1",
            "--takeover",
            admin_arg,
        ],
        STEP,
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    // The sockets came (logged at info), then the check refused them.
    let last = refused.stderr.last().expect("an error line");
    assert!(
        last.starts_with("switchboard: cannot take over: "),
        "{refused:?}"
    );
    assert!(
        last.contains(&format!("the running server listens on {}", old.addr)),
        "{last}"
    );
    assert!(refused.stdout.is_empty(), "{refused:?}");
    old.proc.stderr_until("hand-over abandoned");
    let mut client = LineClient::connect(old.addr);
    client.send("still here");
    assert_eq!(client.read_line(), "still here");

    // The refusal left nothing behind: a taker with the right options succeeds.
    let new = take_over(&["--mode", "echo", "--port", "0"], &admin, &[old.target()]);
    drop(client);
    let old = old.proc.wait(STEP);
    assert_eq!(shutdown_counts(&old), (1, 1, 0));
    new.signal(libc::SIGTERM);
    assert!(new.wait(STEP).status.success());
}
