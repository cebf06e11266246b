//! The library's examples (`actors/examples/`), built and run as processes against a local
//! peer, so CI proves they still compile, talk and stop by themselves.
//!
//! Every wait has a deadline and fails the test with what the example printed so far; a child
//! still running when its [`Example`] is dropped is killed.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

/// How long any single expected event may take (generous, for a loaded machine).
const STEP: Duration = Duration::from_secs(20);

/// The directory holding the examples, built once per test process with the tests' profile.
fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ sits in the workspace");
        let release = !cfg!(debug_assertions);
        let mut build = Command::new(env!("CARGO"));
        build
            .current_dir(workspace)
            .args(["build", "--quiet", "-p", "switchboard", "--examples"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the examples failed");
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => workspace.join(dir),
            None => workspace.join("target"),
        };
        target
            .join(if release { "release" } else { "debug" })
            .join("examples")
    })
}

/// A running example; killed when dropped.
struct Example {
    name: String,
    child: Child,
    stdout: mpsc::Receiver<String>,
    /// Everything printed so far (stdout and stderr), for failure messages.
    output: Arc<Mutex<Vec<String>>>,
}

impl Example {
    fn spawn(name: &str, args: &[&str]) -> Example {
        let path = examples_dir().join(name);
        let mut child = Command::new(&path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", path.display()));
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, stdout) = mpsc::channel();
        let all = output.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                all.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let all = output.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                all.lock().unwrap().push(format!("stderr: {line}"));
            }
        });
        Example {
            name: format!("{name} {}", args.join(" ")),
            child,
            stdout,
            output,
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "example `{}`: {what}\n--- its output so far ---\n{}",
            self.name,
            self.output.lock().unwrap().join("\n")
        )
    }

    /// The next stdout line.
    fn line(&self) -> String {
        match self.stdout.recv_timeout(STEP) {
            Ok(line) => line,
            Err(_) => self.fail("no stdout line came in time"),
        }
    }

    /// The next stdout line, which must start with `prefix`; returns the rest.
    fn expect(&self, prefix: &str) -> String {
        let line = self.line();
        match line.strip_prefix(prefix) {
            Some(rest) => rest.to_owned(),
            None => self.fail(&format!(
                "expected a line starting `{prefix}`, got `{line}`"
            )),
        }
    }

    /// The address of the first line, `listening on ADDR`.
    fn listening(&self) -> SocketAddr {
        let addr = self.expect("listening on ");
        addr.parse()
            .unwrap_or_else(|_| self.fail(&format!("`{addr}` is not an address")))
    }

    /// Waits for stdout to end (the example exits by itself), then for its status; returns
    /// the lines not yet taken.
    fn finish(mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + STEP;
        let mut rest = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => rest.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => self.fail("did not exit in time"),
            }
        }
        // Stdout is closed, so the process is exiting: this wait is short.
        let status = self.child.wait().expect("child status");
        (status, rest)
    }

    /// As [`finish`](Self::finish), and the example must have succeeded.
    fn succeeds(self) -> Vec<String> {
        let output = self.output.clone();
        let name = self.name.clone();
        let (status, rest) = self.finish();
        assert!(
            status.success(),
            "example `{name}` failed: {status}\n--- its output ---\n{}",
            output.lock().unwrap().join("\n")
        );
        rest
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A blocking line client with read deadlines.
struct LineClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LineClient {
    fn connect(addr: SocketAddr) -> LineClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(STEP)).unwrap();
        LineClient {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.writer, "{line}").expect("send");
    }

    fn recv(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("a reply in time");
        assert!(n > 0, "connection closed while a line was expected");
        line.trim_end_matches(['\r', '\n']).to_owned()
    }

    /// Reads to the end: true once the server closed its side.
    fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).expect("EOF in time");
        assert!(rest.is_empty(), "unexpected bytes before EOF: {rest:?}");
    }
}

#[test]
fn echo_server_echoes_each_client_and_stops_after_them() {
    let server = Example::spawn(
        "echo_server",
        &["127.0.0.1:0", "--connections", "2", "--timeout", "30"],
    );
    let addr = server.listening();

    for (i, words) in [["one", "two"], ["three", "four"]].iter().enumerate() {
        let mut client = LineClient::connect(addr);
        let id = server.expect("#");
        let id = id.split(' ').next().unwrap().to_owned();
        for word in words {
            client.send(word);
            assert_eq!(client.recv(), *word);
            assert_eq!(server.line(), format!("#{id} says {word:?}"));
        }
        client.writer.shutdown(Shutdown::Write).unwrap();
        client.expect_closed();
        let gone = server.line();
        assert!(
            gone.starts_with(&format!("#{id} disconnected ("))
                && gone.ends_with("2 lines in, 2 out"),
            "client {i}: `{gone}`"
        );
    }

    // Whether the last session still counts as drained depends on how far it got in leaving
    // the registry when the shutdown began; none is left to abort either way.
    let rest = server.succeeds();
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert!(
        rest[0].starts_with("shut down: ") && rest[0].ends_with(" drained, 0 aborted"),
        "{rest:?}"
    );
}

#[test]
fn echo_server_stops_at_its_timeout_without_clients() {
    let server = Example::spawn(
        "echo_server",
        &["127.0.0.1:0", "--connections", "1", "--timeout", "1"],
    );
    server.listening();
    let rest = server.succeeds();
    assert_eq!(
        rest,
        [
            "timed out after 1s",
            "shut down: 0 sessions drained, 0 aborted"
        ]
    );
}

#[test]
fn echo_client_sends_its_lines_and_closes_after_the_replies() {
    // The peer: a plain blocking echo that records what it read.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(STEP)).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut seen = Vec::new();
        for line in BufReader::new(stream).lines() {
            let line = line.expect("the client's lines, then EOF");
            writeln!(writer, "{line}").unwrap();
            seen.push(line);
        }
        seen
    });

    let client = Example::spawn("echo_client", &[&addr.to_string(), "alpha", "beta gamma"]);
    assert_eq!(client.line(), format!("connected to {addr}"));
    assert_eq!(client.line(), "echo: alpha");
    assert_eq!(client.line(), "echo: beta gamma");
    assert_eq!(client.succeeds(), ["disconnected: closed by this side"]);
    assert_eq!(peer.join().unwrap(), ["alpha", "beta gamma"]);
}

#[test]
fn echo_client_talks_to_echo_server() {
    let server = Example::spawn("echo_server", &["127.0.0.1:0", "--timeout", "30"]);
    let addr = server.listening().to_string();
    let client = Example::spawn("echo_client", &[&addr]);
    assert_eq!(client.line(), format!("connected to {addr}"));
    assert_eq!(client.line(), "echo: hello");
    assert_eq!(client.line(), "echo: switchboard");
    assert_eq!(client.succeeds(), ["disconnected: closed by this side"]);
    server.expect("#");
    server.succeeds();
}

#[test]
fn held_stream_greets_with_std_then_answers_from_a_session() {
    let example = Example::spawn("held_stream", &["127.0.0.1:0"]);
    let addr = example.listening();
    let mut client = LineClient::connect(addr);
    assert_eq!(
        client.recv(),
        "hello from std; now talking to a session (send quit to end)"
    );
    client.send("shout this");
    assert_eq!(client.recv(), "SHOUT THIS");
    client.send("quit");
    assert_eq!(client.recv(), "bye");
    client.expect_closed();
    // A graceful close waits for the peer's FIN too (up to the close timeout): send it.
    drop(client);

    assert!(example.expect("accepted ").parse::<SocketAddr>().is_ok());
    assert_eq!(example.line(), "session started");
    let rest = example.succeeds();
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert!(
        rest[0].starts_with("session #")
            && rest[0].ends_with("ended (closed by this side) after 2 lines"),
        "{rest:?}"
    );
}

#[test]
fn custom_codec_frames_with_length_delimited_codec() {
    let example = Example::spawn("custom_codec", &[]);
    example.listening();
    assert_eq!(
        example.succeeds(),
        [
            "not sent: cannot encode: frame size too big",
            "reply: \"desserts\"",
            "reply: \"reward\"",
            "reply: \"\"",
            "client done (closed by this side): 3 frames out, 3 in",
        ]
    );
}

/// `chat`: a line from one member reaches the other, prefixed with its id, and not the sender.
#[test]
fn chat_relays_a_line_to_the_other_member() {
    let example = Example::spawn("chat", &["127.0.0.1:0", "--timeout", "4"]);
    let addr = example.listening();
    let mut alice = LineClient::connect(addr);
    assert!(alice.recv().starts_with("* welcome "));
    let mut bob = LineClient::connect(addr);
    let welcome = bob.recv();
    assert!(welcome.ends_with(", 2 here"), "{welcome}");
    alice.send("hello bob");
    let got = bob.recv();
    assert!(got.ends_with("] hello bob"), "{got}");
    bob.send("hi alice");
    assert!(alice.recv().ends_with("] hi alice"));
    drop(alice);
    drop(bob);
    let rest = example.succeeds();
    assert!(
        rest.iter().any(|l| l.starts_with("closed: ")),
        "no closing line in {rest:?}"
    );
}

/// `qt_flow`: newConnection, readyRead, readAll, write, readChannelFinished, disconnected, in
/// that order, for one client; then the example exits.
#[test]
fn qt_flow_walks_the_five_steps_for_one_client() {
    let example = Example::spawn("qt_flow", &["127.0.0.1:0"]);
    let addr = example.listening();
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(STEP)).unwrap();
    client.write_all(b"hello").unwrap();
    let mut answer = [0u8; 5];
    client.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HELLO");
    client.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert!(example.expect("newConnection: ").contains(" from "));
    assert!(example.expect("connected: ").parse::<SocketAddr>().is_ok());
    assert_eq!(example.expect("readyRead: "), "5 bytes");
    let lines = example.succeeds();
    assert_eq!(
        lines.first().map(String::as_str),
        Some("readChannelFinished")
    );
    assert!(
        lines.iter().any(|l| l.starts_with("disconnected: ")),
        "{lines:?}"
    );
}

/// `tls_echo`: serves TLS with certificates made here, talks to itself, reports TLS 1.3.
#[test]
fn tls_echo_talks_to_itself_over_tls() {
    let pki = switchboard_tests::pki::Pki::new();
    let example = Example::spawn(
        "tls_echo",
        &[
            pki.server_cert.to_str().unwrap(),
            pki.server_key.to_str().unwrap(),
            pki.ca.to_str().unwrap(),
        ],
    );
    assert!(example
        .expect("listening on tls://")
        .parse::<SocketAddr>()
        .is_ok());
    assert_eq!(example.expect("echo: "), "hello over TLS");
    assert!(example.expect("tls: ").starts_with("TLSv1_3 "));
    example.succeeds();
}

/// `unix_echo`: a socket file of its own, an echo, the peer's credentials, the file removed.
#[test]
fn unix_echo_talks_to_itself_and_removes_its_socket() {
    let dir = std::env::temp_dir().join(format!("switchboard-unix-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let example = Example::spawn("unix_echo", &[path.to_str().unwrap()]);
    assert_eq!(
        example.expect("listening on "),
        format!("unix:{}", path.display())
    );
    assert!(example.expect("connected: ").starts_with("unix:"));
    assert_eq!(example.expect("echo: "), "hello over a Unix socket");
    let rest = example.succeeds();
    assert_eq!(rest, ["removed: true"]);
    let _ = std::fs::remove_dir_all(&dir);
}
