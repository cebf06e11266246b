//! Operating `switchboard serve` through the binary: `/metrics` parsed by Python's OpenMetrics
//! parser, `ctl` commands and exit codes, a drain from the admin socket, and socket activation
//! the way systemd passes a socket.

#[path = "cli_support.rs"]
mod support;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::{run, switchboard_bin, Proc, Server, STEP};

/// `serve --admin tcp:127.0.0.1:0 --metrics 127.0.0.1:0 ARGS`, with both addresses.
fn start_ops(args: &[&str]) -> (Server, String, String) {
    let mut all = vec!["--admin", "tcp:127.0.0.1:0", "--metrics", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    let admin = server.proc.stdout_line();
    let admin = admin.strip_prefix("admin on ").expect(&admin).to_string();
    let metrics = server.proc.stdout_line();
    let metrics = metrics
        .strip_prefix("metrics on http://")
        .and_then(|m| m.strip_suffix("/metrics"))
        .expect(&metrics)
        .to_string();
    (server, admin, metrics)
}

/// A plain HTTP/1.1 GET; returns the head and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(STEP)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = String::new();
    stream.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").expect("a head and a body");
    (head.to_string(), body.to_string())
}

/// Parses `text` with `prometheus_client.openmetrics.parser`; returns `name{labels} value`
/// lines as Python printed them.
fn parse_openmetrics(text: &str) -> Vec<String> {
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{family.type} {s.name}{{{labels}}} {s.value}")
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (and `pip install prometheus_client` was done: .ci/run does it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the output: {}\n---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn sample(samples: &[String], prefix: &str) -> f64 {
    let line = samples
        .iter()
        .find(|l| l.contains(prefix))
        .unwrap_or_else(|| panic!("no sample `{prefix}` in {samples:#?}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn metrics_parse_as_openmetrics_and_count_traffic() {
    let (server, admin, metrics) = start_ops(&["--mode", "echo"]);
    let mut client = support::LineClient::connect(server.addr);
    for n in 0..10 {
        client.send(&format!("line {n}"));
        assert_eq!(client.read_line(), format!("line {n}"));
    }
    // A second client that comes and goes: one closed session.
    let mut gone = support::LineClient::connect(server.addr);
    gone.send("bye");
    assert_eq!(gone.read_line(), "bye");
    drop(gone);
    // Wait for the close to be counted, through the admin socket. The registry counts an
    // ended session's reasons, frames and lifetime before its disconnect, so the metrics
    // below already hold them.
    let deadline = Instant::now() + STEP;
    loop {
        let info = run(&["ctl", &admin, "info", "--json"], STEP);
        let info: serde_json::Value = serde_json::from_str(&info.stdout[0]).unwrap();
        if info["totals"]["disconnected"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed session was not counted within {STEP:?}: {info}"
        );
        std::thread::sleep(Duration::from_millis(25)); // polling a state with no event for it
    }

    let (head, body) = http_get(&metrics, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    let samples = parse_openmetrics(&body);
    assert_eq!(sample(&samples, "counter switchboard_accepted_total{"), 2.0);
    assert_eq!(sample(&samples, "gauge switchboard_sessions_active{"), 1.0);
    let closed: f64 = samples
        .iter()
        .filter(|l| l.contains("switchboard_sessions_closed_total"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(closed, 1.0, "{samples:#?}");
    // 10 lines of 6 bytes and their newlines, plus "bye\n", each way.
    assert_eq!(sample(&samples, "switchboard_bytes_in_total{"), 74.0);
    assert_eq!(sample(&samples, "switchboard_frames_out_total{"), 11.0);
    assert_eq!(
        sample(&samples, "switchboard_session_lifetime_seconds_count{"),
        1.0
    );
    assert!(samples
        .iter()
        .any(|l| l.contains("switchboard_worker_sessions{")));
    // The families a plaintext server leaves at zero parse too: accept errors by kind,
    // handshakes by outcome, the handshake histogram, the waits.
    assert_eq!(
        sample(
            &samples,
            "counter switchboard_accept_errors_total{kind=descriptors,"
        ),
        0.0
    );
    assert_eq!(
        sample(
            &samples,
            "counter switchboard_handshakes_total{listener=127.0.0.1:"
        ),
        0.0
    );
    assert_eq!(
        sample(&samples, "switchboard_handshake_duration_seconds_count{"),
        0.0
    );
    assert_eq!(
        sample(&samples, "switchboard_accept_limit_waits_total{"),
        0.0
    );
    assert_eq!(
        sample(&samples, "switchboard_handshake_cap_waits_total{"),
        0.0
    );

    // The admin socket's `metrics` is the same text.
    let via_admin = run(&["ctl", &admin, "metrics"], STEP);
    assert!(via_admin.status.success());
    assert_eq!(via_admin.stdout.last().map(String::as_str), Some("# EOF"));
    let (head, _) = http_get(&metrics, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    drop(client);
    server.terminate();
}

#[test]
fn ctl_runs_commands_and_a_drain_ends_serve() {
    let (server, admin, _) = start_ops(&["--mode", "echo"]);
    let mut client = support::LineClient::connect(server.addr);
    client.send("hello");
    assert_eq!(client.read_line(), "hello");

    let sessions = run(&["ctl", &admin, "sessions", "--sort", "bytes"], STEP);
    assert!(sessions.status.success(), "{sessions:?}");
    assert!(sessions.stdout[0].starts_with("ID "));
    assert!(sessions.stdout[1].contains("connected"), "{sessions:?}");
    assert!(sessions.stdout[2].starts_with("1 of 1 sessions"));

    let bad = run(&["ctl", &admin, "set", "idle-timeout", "x"], STEP);
    assert_eq!(bad.status.code(), Some(1));
    assert!(bad.stdout[0].starts_with("error: "), "{bad:?}");

    let mut drain = Proc::spawn(&["ctl", &admin, "drain", "5"]);
    drain.close_stdin();
    // The client sees the graceful close, then closes its side: the session is drained.
    let mut rest = Vec::new();
    client.stream.read_to_end(&mut rest).unwrap();
    drop(client);
    let drained = drain.wait(STEP);
    assert!(drained.status.success(), "{drained:?}");
    assert!(
        drained.stdout[0].starts_with("drained 1, aborted 0"),
        "{drained:?}"
    );
    let finished = server.proc.wait(STEP);
    assert!(finished.status.success());
    assert!(
        finished
            .stdout
            .iter()
            .any(|l| l.starts_with("shutdown: served 1 connections")),
        "{finished:?}"
    );
}

#[test]
fn serve_adopts_a_socket_passed_by_socket_activation() {
    // As systemd does: the socket is bound and listening before the server starts, sits at
    // descriptor 3, and LISTEN_PID names the server's own pid (the shell execs the server).
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = socket.local_addr().unwrap();
    let fd = socket.as_raw_fd();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web exec {} serve --mode echo --port 1",
            switchboard_bin().display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only dup2 and fcntl between fork and exec, both async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            // dup2 onto another number clears close-on-exec; a socket already at 3 must have
            // the flag cleared by hand.
            let ok = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) >= 0
            } else {
                libc::dup2(fd, 3) >= 0
            };
            if !ok {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().unwrap();
    let proc = Proc::adopt("serve (socket-activated)", child);
    let line = proc.stdout_line();
    assert_eq!(line, format!("listening on {addr}"));
    // Our copy of the socket is closed: only the server accepts on it now.
    drop(socket);
    let mut client = support::LineClient::connect(addr);
    client.send("activated");
    assert_eq!(client.read_line(), "activated");
    proc.signal(libc::SIGTERM);
    let finished = proc.wait(STEP);
    assert!(finished.status.success(), "{finished:?}");
}

/// `serve --admin PATH`: a Unix socket only the owner may use (mode 0600), which `ctl` speaks
/// to; removed when the server stops.
#[test]
fn the_admin_socket_is_a_unix_socket_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = support::TempDir::new("admin-unix");
    let path = dir.path().join("admin.sock");
    let path_text = path.to_str().unwrap().to_string();
    let server = Server::start(&["--mode", "echo", "--admin", &path_text]);
    assert_eq!(server.proc.stdout_line(), format!("admin on {path_text}"));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin socket mode {mode:o}");
    let info = run(&["ctl", &path_text, "info"], STEP);
    assert!(info.status.success(), "{info:?}");
    assert!(
        info.stdout.iter().any(|l| l.contains("version")),
        "{info:?}"
    );
    assert!(server.terminate().status.success());
    assert!(
        !path.exists(),
        "the admin socket file is removed on a clean stop"
    );
}
