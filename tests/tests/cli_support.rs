//! Helpers for the `cli_*` tests, which run the real `switchboard` binary. Each test file
//! includes this one with `#[path = "cli_support.rs"] mod support;` (built alone, it is an empty
//! test target).
//!
//! Every wait has a deadline and fails the test with the child's stderr when it passes. Children
//! are killed when their [`Proc`] is dropped, so a failing test leaves nothing running.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc, Mutex, OnceLock,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// How long any single expected event may take.
pub const STEP: Duration = Duration::from_secs(20);

/// The `switchboard` binary, built once per test process with the profile of the tests.
pub fn switchboard_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ sits in the workspace");
        let release = !cfg!(debug_assertions);
        let mut build = Command::new(env!("CARGO"));
        build.current_dir(workspace).args([
            "build",
            "--quiet",
            "-p",
            "switchboard-cli",
            "--bin",
            "switchboard",
        ]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building switchboard failed");
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => workspace.join(dir),
            None => workspace.join("target"),
        };
        let bin = target
            .join(if release { "release" } else { "debug" })
            .join("switchboard");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
}

/// A running `switchboard` child; killed when dropped.
pub struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// Every stderr line so far, for failure messages.
    stderr_all: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

/// How a child ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// Stdout lines not yet taken with [`Proc::stdout_line`].
    pub stdout: Vec<String>,
    /// All of stderr.
    pub stderr: Vec<String>,
}

impl Finished {
    pub fn stderr_text(&self) -> String {
        self.stderr.join("\n")
    }
}

fn pipe_lines<R: Read + Send + 'static>(
    source: R,
    all: Option<Arc<Mutex<Vec<String>>>>,
) -> (mpsc::Receiver<String>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            if let Some(all) = &all {
                all.lock().unwrap().push(line.clone());
            }
            let _ = tx.send(line);
        }
    });
    (rx, reader)
}

impl Proc {
    /// Starts `switchboard ARGS` in `dir` (or the current directory), all three pipes captured.
    pub fn spawn_in(dir: Option<&Path>, args: &[&str]) -> Proc {
        Proc::spawn_logging(dir, args, None)
    }

    /// As [`spawn_in`](Self::spawn_in), with `RUST_LOG` set to `log` (unset when `None`).
    pub fn spawn_logging(dir: Option<&Path>, args: &[&str], log: Option<&str>) -> Proc {
        let mut command = Command::new(switchboard_bin());
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .env("RUST_BACKTRACE", "1");
        if let Some(log) = log {
            command.env("RUST_LOG", log);
        }
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let child = command.spawn().expect("switchboard starts");
        Proc::adopt(&args.join(" "), child)
    }

    /// Takes over a child started some other way, its stdout and stderr piped.
    pub fn adopt(name: &str, mut child: Child) -> Proc {
        let stderr_all = Arc::new(Mutex::new(Vec::new()));
        let (stdout, out_reader) = pipe_lines(child.stdout.take().unwrap(), None);
        let (stderr, err_reader) =
            pipe_lines(child.stderr.take().unwrap(), Some(stderr_all.clone()));
        Proc {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            stderr_all,
            readers: vec![out_reader, err_reader],
        }
    }

    pub fn spawn(args: &[&str]) -> Proc {
        Proc::spawn_in(None, args)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "`switchboard {}`: {what}\n--- its stderr so far ---\n{}",
            self.name,
            self.stderr_all.lock().unwrap().join("\n")
        )
    }

    /// The next stdout line.
    pub fn stdout_line(&self) -> String {
        match self.stdout.recv_timeout(STEP) {
            Ok(line) => line,
            Err(_) => self.fail("no stdout line came in time"),
        }
    }

    /// Skips stderr lines until one contains `needle`; returns it.
    pub fn stderr_until(&self, needle: &str) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => self.fail(&format!("no stderr line with `{needle}` in time")),
            }
        }
    }

    /// Every stderr line so far.
    pub fn stderr_so_far(&self) -> Vec<String> {
        self.stderr_all.lock().unwrap().clone()
    }

    pub fn write_stdin(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").expect("child takes stdin");
        stdin.flush().unwrap();
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill only sends a signal to our own child, which has not been reaped.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the child to exit (polling its status: there is no event for it), then for
    /// its output to end.
    pub fn wait(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                break status;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("did not exit within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Finished {
            status,
            stdout: self.stdout.try_iter().collect(),
            stderr: self.stderr_all.lock().unwrap().clone(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `switchboard ARGS` with stdin closed and waits for it.
pub fn run(args: &[&str], timeout: Duration) -> Finished {
    let mut proc = Proc::spawn(args);
    proc.close_stdin();
    proc.wait(timeout)
}

/// A `switchboard serve` on an OS-chosen port.
pub struct Server {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Server {
    /// `switchboard serve --port 0 ARGS`, once it printed `listening on IP:PORT`.
    pub fn start(args: &[&str]) -> Server {
        Server::start_in(None, args)
    }

    pub fn start_in(dir: Option<&Path>, args: &[&str]) -> Server {
        Server::start_logging(dir, args, None)
    }

    /// As [`start_in`](Self::start_in), with `RUST_LOG` set to `log` (unset when `None`).
    pub fn start_logging(dir: Option<&Path>, args: &[&str], log: Option<&str>) -> Server {
        let mut all = vec!["serve", "--port", "0"];
        all.extend_from_slice(args);
        let proc = Proc::spawn_logging(dir, &all, log);
        let line = proc.stdout_line();
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("first stdout line is `{line}`"));
        Server { proc, addr }
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// SIGTERM, then the exit (expected within the drain time and then some).
    pub fn terminate(self) -> Finished {
        self.proc.signal(libc::SIGTERM);
        self.proc.wait(STEP)
    }
}

/// A line client over a plain `TcpStream`, reads bounded by [`STEP`].
pub struct LineClient {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

/// A TCP client that sent `payload` and read it back whole (a raw echo), still connected.
pub fn echoed(addr: SocketAddr, payload: &[u8]) -> TcpStream {
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(STEP)).unwrap();
    client.write_all(payload).unwrap();
    let mut reply = vec![0u8; payload.len()];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(reply, payload, "the echo differs");
    client
}

impl LineClient {
    pub fn connect(addr: SocketAddr) -> LineClient {
        let stream = TcpStream::connect(addr).expect("connects");
        stream.set_read_timeout(Some(STEP)).unwrap();
        LineClient {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .expect("a line before the timeout");
        assert!(n > 0, "the server closed the connection");
        line.trim_end_matches(['\r', '\n']).to_string()
    }

    pub fn send(&mut self, line: &str) {
        writeln!(self.stream, "{line}").unwrap();
    }
}

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "switchboard-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A local address nothing listens on (bound, then released).
pub fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// `len` bytes of a fast deterministic pattern (xorshift), different for each `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Asserts that a failed command said one clear line on stderr and nothing on stdout.
pub fn assert_one_line_error(finished: &Finished, needle: &str) {
    assert!(
        !finished.status.success(),
        "expected a failure: {finished:?}"
    );
    assert_eq!(
        finished.stderr.len(),
        1,
        "expected exactly one stderr line: {finished:?}"
    );
    assert!(
        finished.stdout.is_empty(),
        "expected no stdout: {finished:?}"
    );
    let line = &finished.stderr[0];
    assert!(line.starts_with("switchboard: "), "{line}");
    assert!(
        line.contains(needle),
        "`{line}` does not mention `{needle}`"
    );
    assert!(!line.contains("panicked"), "{line}");
}
