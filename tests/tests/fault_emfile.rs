//! Descriptors run out during accept, in a real `switchboard serve` child whose
//! `RLIMIT_NOFILE` is lowered to 64 (soft and hard, so `serve`'s `raise_fd_limit` cannot lift
//! it): the accept error is reported on stderr, the accept loop backs off instead of spinning
//! (the child's CPU time over a one-second window, read from `/proc/PID/stat`, stays low),
//! sessions already accepted keep being served, and once clients leave and descriptors free
//! up, accepting resumes by itself.
//!
//! `listener_accept_error.rs` proves the `AcceptError` event in-process; this proves the
//! behaviour of the shipped binary under a real descriptor limit.

#[path = "cli_support.rs"]
mod cli_support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use cli_support::{switchboard_bin, STEP};

/// The child's descriptor limit, soft and hard.
const NOFILE: u64 = 64;
/// Clients opened at once: well past what 64 descriptors hold.
const CLIENTS: usize = 100;
/// The most CPU the child may use while it is out of descriptors, as a share of one core.
const MAX_CPU: f64 = 0.20;

/// A `switchboard serve` child with a lowered descriptor limit; killed when dropped.
struct Child64 {
    child: Child,
    stderr: mpsc::Receiver<String>,
    stderr_all: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
}

impl Child64 {
    fn start() -> Child64 {
        let mut command = Command::new(switchboard_bin());
        command
            .args([
                "serve",
                "--mode",
                "echo",
                "--codec",
                "raw",
                "--port",
                "0",
                "--workers",
                "1",
                "--max-connections",
                "1000",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG");
        // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: NOFILE,
                    rlim_max: NOFILE,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().expect("switchboard starts");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                let _ = line_tx.send(line);
            }
        });
        let stderr_all = Arc::new(Mutex::new(Vec::new()));
        let (err_tx, stderr) = mpsc::channel();
        {
            let all = stderr_all.clone();
            let source = BufReader::new(child.stderr.take().unwrap());
            std::thread::spawn(move || {
                for line in source.lines() {
                    let Ok(line) = line else { break };
                    all.lock().unwrap().push(line.clone());
                    let _ = err_tx.send(line);
                }
            });
        }
        let line: String = line_rx.recv_timeout(STEP).expect("`listening on` in time");
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("first stdout line is `{line}`"));
        Child64 {
            child,
            stderr,
            stderr_all,
            addr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr_text(&self) -> String {
        self.stderr_all.lock().unwrap().join("\n")
    }

    /// Skips stderr lines until one contains `needle`.
    fn stderr_until(&self, needle: &str) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no `{needle}` on stderr in time:\n{}", self.stderr_text()),
            }
        }
    }

    /// The child's user + system CPU time, in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // The command name (field 2) is in parentheses and may hold spaces: count from after it.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf only reads a constant.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        ticks as f64 / per_second
    }

    /// Open descriptors numbered under the limit (a descriptor inherited from whatever ran the
    /// tests may sit above it, out of the limit's reach).
    fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .filter(|&fd| fd < NOFILE)
            .count()
    }
}

impl Drop for Child64 {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("the kernel backlog takes the connection");
    stream.set_read_timeout(Some(STEP)).unwrap();
    stream
}

fn echo(stream: &mut TcpStream, what: &[u8]) {
    stream.write_all(what).unwrap();
    let mut back = vec![0u8; what.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, what);
}

#[test]
fn out_of_descriptors_backs_off_quietly_and_resumes_by_itself() {
    let server = Child64::start();
    let idle_fds = server.open_descriptors();
    assert!(
        (idle_fds as u64) < NOFILE,
        "{idle_fds} descriptors open at start"
    );

    // The first client is served before descriptors run out.
    let mut first = connect(server.addr);
    echo(&mut first, b"before");
    // More clients than descriptors: the kernel completes every handshake (backlog 1024), the
    // server accepts until EMFILE.
    let mut clients: Vec<TcpStream> = (1..CLIENTS).map(|_| connect(server.addr)).collect();
    let warning = server.stderr_until("accept failed");
    assert!(
        warning.contains("Too many open files") || warning.contains("os error 24"),
        "{warning}"
    );
    assert!(warning.contains("WARN"), "{warning}");
    let held = server.open_descriptors();
    assert_eq!(held as u64, NOFILE, "every descriptor is in use");

    // Out of descriptors with clients waiting: the accept loop backs off instead of spinning.
    // (A loop retrying at once would burn a whole core on EMFILE.)
    let wall = Instant::now();
    let cpu = server.cpu_seconds();
    // A measurement window, not a synchronisation: nothing waits on it.
    std::thread::sleep(Duration::from_secs(1));
    let used = (server.cpu_seconds() - cpu) / wall.elapsed().as_secs_f64();
    assert!(
        used < MAX_CPU,
        "the child used {:.0}% of a core while out of descriptors",
        used * 100.0
    );

    // Sessions already accepted carry on.
    echo(&mut first, b"still served while out of descriptors");

    // Clients leave: descriptors come free and accepting resumes with no outside help (the
    // back-off is at most 1 s). The clients still in the backlog are accepted and end at once.
    drop(first);
    clients.clear();
    let mut late = connect(server.addr);
    echo(&mut late, b"served after the descriptors came back");
    let errors = server
        .stderr_all
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("accept failed"))
        .count();
    println!(
        "EMFILE: {idle_fds} descriptors open idle, {held} at the limit of {NOFILE}; CPU while \
         out of descriptors {:.1}% of a core; {errors} back-off warnings",
        used * 100.0
    );
    drop(late);

    // And it shuts down cleanly.
    // SAFETY: kill only signals our own child, which has not been reaped.
    assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) }, 0);
    let mut server = server;
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}\n{}", server.stderr_text());
    assert!(!server.stderr_text().contains("panicked"));
}
