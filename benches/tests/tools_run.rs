//! The end-to-end bench tools run and talk to each other (no timing is asserted): the baseline
//! and the library scale server answer the load, accept-rate and hold clients.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use serde_json::Value;

/// A child process killed (by its own handle) when dropped.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    fn start(exe: &str, args: &[&str]) -> Proc {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tool");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Proc {
            child,
            stdin,
            stdout,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read line");
        line.trim().to_string()
    }

    fn json(&mut self) -> Value {
        serde_json::from_str(&self.line()).expect("one JSON line")
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("command");
        stdin.flush().expect("flush");
    }

    fn listening(&mut self) -> String {
        self.line()
            .strip_prefix("listening on ")
            .expect("`listening on IP:PORT` first")
            .to_string()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_json(exe: &str, args: &[&str]) -> Value {
    let output = Command::new(exe)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run tool");
    assert!(output.status.success(), "{exe} {args:?} failed");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    serde_json::from_str(stdout.lines().last().expect("a line")).expect("JSON")
}

/// Load, then accept-rate runs against `server`; returns its address.
fn exercise(server: &mut Proc) -> String {
    let addr = server.listening();
    let pid = server.child.id().to_string();
    let load = run_json(
        env!("CARGO_BIN_EXE_load_client"),
        &[
            &addr,
            "--connections",
            "2",
            "--pipeline",
            "2",
            "--size",
            "64",
            "--duration",
            "0.3",
            "--warmup",
            "0.1",
            "--server-pid",
            &pid,
            "--per-connection",
        ],
    );
    assert_eq!(load["errors"], 0, "{load}");
    assert!(load["messages"].as_u64().unwrap() > 0, "{load}");
    assert!(load["server_cpu_s"].as_f64().is_some(), "{load}");
    // Sampled with the CPU at the window's ends: a server that echoed messages woke for them.
    assert!(
        load["server_context_switches"].as_u64().unwrap() > 0,
        "{load}"
    );
    // One entry per connection, busiest first, adding up to the total and to the min/max.
    let counts: Vec<(u64, u64)> = load["connections"]
        .as_array()
        .expect("--per-connection lists the connections")
        .iter()
        .map(|c| (c["port"].as_u64().unwrap(), c["messages"].as_u64().unwrap()))
        .collect();
    assert_eq!(counts.len(), 2, "{load}");
    assert!(counts[0].1 >= counts[1].1, "{load}");
    assert!(counts.iter().all(|&(port, _)| port > 0), "{load}");
    assert_ne!(counts[0].0, counts[1].0, "{load}");
    assert_eq!(
        counts.iter().map(|c| c.1).sum::<u64>(),
        load["messages"],
        "{load}"
    );
    assert_eq!(load["messages_per_connection"][0], counts[1].1, "{load}");
    assert_eq!(load["messages_per_connection"][1], counts[0].1, "{load}");

    let accept = run_json(
        env!("CARGO_BIN_EXE_accept_rate"),
        &[
            &addr,
            "--concurrency",
            "2",
            "--duration",
            "0.3",
            "--warmup",
            "0",
        ],
    );
    assert_eq!(accept["errors"], 0, "{accept}");
    assert!(accept["connections"].as_u64().unwrap() > 0, "{accept}");
    addr
}

/// Ten idle connections held open by `hold_clients` (connected, which the kernel completes
/// before the server has accepted them).
fn hold_ten(addr: &str) -> Proc {
    let mut hold = Proc::start(
        env!("CARGO_BIN_EXE_hold_clients"),
        &[addr, "--count", "10", "--hold", "30"],
    );
    assert_eq!(hold.json()["opened"], 10);
    hold
}

fn close(mut hold: Proc) {
    hold.stdin = None;
    let _ = hold.child.wait();
}

#[test]
fn baseline_echo_serves_every_client_tool() {
    let mut server = Proc::start(env!("CARGO_BIN_EXE_baseline_echo"), &[]);
    let addr = exercise(&mut server);
    close(hold_ten(&addr));
}

/// The same echo with each connection an actix actor driving its socket from its context.
#[test]
fn baseline_echo_as_actors_serves_every_client_tool() {
    let mut server = Proc::start(
        env!("CARGO_BIN_EXE_baseline_echo"),
        &["--thread-per-worker", "--actor"],
    );
    let addr = exercise(&mut server);
    close(hold_ten(&addr));
}

/// `--busy-ns` holds the worker after every read: one connection with one message in flight
/// cannot go faster than one message per busy period (2 ms here, so at most 500 a second).
#[test]
fn baseline_echo_busy_ns_costs_each_read_that_long() {
    let mut server = Proc::start(
        env!("CARGO_BIN_EXE_baseline_echo"),
        &["--thread-per-worker", "--busy-ns", "2000000"],
    );
    let addr = server.listening();
    let load = run_json(
        env!("CARGO_BIN_EXE_load_client"),
        &[
            &addr,
            "--connections",
            "1",
            "--pipeline",
            "1",
            "--duration",
            "0.5",
            "--warmup",
            "0.1",
        ],
    );
    assert_eq!(load["errors"], 0, "{load}");
    let rate = load["msgs_per_s"].as_f64().unwrap();
    assert!(rate > 0.0 && rate <= 500.0, "{load}");
}

#[test]
fn scale_server_serves_and_answers_registry_commands() {
    let mut server = Proc::start(
        env!("CARGO_BIN_EXE_scale_server"),
        &["--idle-timeout", "120"],
    );
    let addr = exercise(&mut server);
    // The load's sessions gone first, so the count below rises only with the held ones: it
    // reaches 10 once the server has accepted every one, and none can arrive after `wait 0`.
    server.send("wait 0 10");
    assert_eq!(server.json()["reached"], true);
    let hold = hold_ten(&addr);
    server.send("wait 10 10");
    assert_eq!(server.json()["reached"], true);
    close(hold);
    server.send("wait 0 10");
    assert_eq!(server.json()["reached"], true);
    server.send("measure");
    let measured = server.json();
    assert_eq!(measured["count"], 0, "{measured}");
    assert_eq!(measured["list_len"], 0, "{measured}");
}

/// A client tool run without its address, with a bad one or with an option it does not take
/// stops with its usage and status 2 (not a panic, not a silently ignored option).
#[test]
fn client_tools_refuse_bad_arguments_with_their_usage() {
    for exe in [
        env!("CARGO_BIN_EXE_load_client"),
        env!("CARGO_BIN_EXE_accept_rate"),
        env!("CARGO_BIN_EXE_hold_clients"),
    ] {
        for args in [
            &[][..],
            &["not-an-address"][..],
            &["127.0.0.1:9", "--no-such-option"][..],
            &["127.0.0.1:9", "--duration"][..],
        ] {
            assert_refused(exe, args);
        }
    }
}

/// Runs `exe` with `args` and asserts that it stopped with its usage and status 2, without a
/// panic.
fn assert_refused(exe: &str, args: &[&str]) {
    let output = Command::new(exe).args(args).output().expect("run tool");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{exe} {args:?}: {stderr}");
    assert!(stderr.contains("usage: "), "{exe} {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{exe} {args:?}: {stderr}");
}

/// The servers and the TLS client refuse what they do not take the same way, and `--help`
/// prints the usage with status 0 instead of starting (a server that ignored it would listen).
#[test]
fn servers_and_the_tls_client_refuse_bad_arguments_with_their_usage() {
    struct Case {
        exe: &'static str,
        bad: &'static [&'static [&'static str]],
        help: &'static [&'static [&'static str]],
    }
    let cases = [
        Case {
            exe: env!("CARGO_BIN_EXE_baseline_echo"),
            // `--actor` is a layout of its own only beside `--thread-per-worker`.
            bad: &[&["--no-such-option"], &["--workers"], &["--actor"]],
            help: &[&["--help"]],
        },
        Case {
            exe: env!("CARGO_BIN_EXE_baseline_tls_echo"),
            bad: &[
                &[],
                &["--cert", "c.pem"],
                &["--cert", "c.pem", "--key", "k.pem", "--bogus"],
            ],
            help: &[&["--help"]],
        },
        Case {
            exe: env!("CARGO_BIN_EXE_scale_server"),
            bad: &[&["--max-connections"], &["--no-such-option"]],
            help: &[&["--help"]],
        },
        Case {
            exe: env!("CARGO_BIN_EXE_tls_client"),
            bad: &[
                &[],
                &["sideways", "tls://127.0.0.1:9"],
                &["bulk"],
                &["bulk", "--ca", "ca.pem"],
                &["hold", "127.0.0.1:9", "--resume"],
                &["bulk", "tls://127.0.0.1:9", "--duration"],
                // TLS without the CA to trust.
                &["bulk", "tls://127.0.0.1:9"],
                &["handshakes", "127.0.0.1:9"],
                // Targets of the wrong form.
                &["bulk", "tls://", "--ca", "ca.pem"],
                &["bulk", "localhost:9"],
                &["bulk", "unix:"],
                &["bulk", "tcp://localhost"],
                &["bulk", "tcp://127.0.0.1:9", "--duration", "soon"],
                &["handshakes", "tls://127.0.0.1:9", "--ca", "ca.pem"],
                &["hold", "nowhere", "--ca", "ca.pem", "--count", "1"],
            ],
            help: &[&["--help"], &["bulk", "--help"]],
        },
    ];
    for case in cases {
        for args in case.bad {
            assert_refused(case.exe, args);
        }
        for args in case.help {
            let output = Command::new(case.exe)
                .args(*args)
                .output()
                .expect("run tool");
            let stdout = String::from_utf8_lossy(&output.stdout);
            let exe = case.exe;
            assert_eq!(output.status.code(), Some(0), "{exe} {args:?}");
            assert!(stdout.starts_with("usage: "), "{exe} {args:?}: {stdout}");
        }
    }
}
