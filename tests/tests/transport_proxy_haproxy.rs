//! HAProxy (Debian's `haproxy`) in front of Switchboard, with `send-proxy-v2` and, in a
//! second run, `send-proxy`: the library's session sees the client's real address, and the
//! `switchboard serve --proxy-protocol` command echoes through it.

#[path = "cli_support.rs"]
mod support;

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use switchboard::{Cidr, Listener};
use switchboard_codec::Lines;
use switchboard_tests::{any_port, blocking, Probes};

/// HAProxy started from a config file in a temporary directory; stopped by its PID on drop.
struct Haproxy {
    pid: i32,
    frontend: SocketAddr,
    _dir: support::TempDir,
}

fn haproxy_binary() -> PathBuf {
    let found = Command::new("sh")
        .args(["-c", "command -v haproxy"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    found.unwrap_or_else(|| {
        panic!("`haproxy` is missing: install it with `apt-get install -y haproxy` (.ci/run does)")
    })
}

impl Haproxy {
    /// `mode tcp` from a free loopback port to `backend`, with `send` (`send-proxy` or
    /// `send-proxy-v2`) on the server line.
    fn start(backend: SocketAddr, send: &str) -> Haproxy {
        let binary = haproxy_binary();
        let dir = support::TempDir::new("haproxy");
        // A port the OS just handed out and that nothing else holds.
        let frontend = TcpListener::bind(any_port()).unwrap().local_addr().unwrap();
        let config = dir.path().join("haproxy.cfg");
        let pidfile = dir.path().join("haproxy.pid");
        std::fs::write(
            &config,
            format!(
                "global\n    maxconn 64\n\
                 defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
                 frontend fe\n    bind {frontend}\n    default_backend be\n\
                 backend be\n    server s1 {backend} {send}\n"
            ),
        )
        .unwrap();
        // `-D` daemonizes once the frontend is bound: the command's exit is the event that
        // says HAProxy is ready, and the pidfile names the process to stop.
        let output = Command::new(&binary)
            .arg("-D")
            .arg("-p")
            .arg(&pidfile)
            .arg("-f")
            .arg(&config)
            .output()
            .expect("haproxy runs");
        assert!(
            output.status.success(),
            "haproxy failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("haproxy wrote its pidfile")
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("a PID in the pidfile");
        Haproxy {
            pid,
            frontend,
            _dir: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal, to the HAProxy this test started.
        unsafe {
            libc::kill(self.pid, libc::SIGTERM);
        }
    }
}

/// Says `line` through HAProxy and returns the echo and the client socket's own address.
fn echo_through(frontend: SocketAddr, line: &str) -> (String, SocketAddr) {
    let mut stream = TcpStream::connect(frontend).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let local = stream.local_addr().unwrap();
    writeln!(stream, "{line}").unwrap();
    let mut reader = BufReader::new(stream);
    let mut echoed = String::new();
    reader.read_line(&mut echoed).expect("an echo in time");
    (echoed.trim_end().to_string(), local)
}

#[actix_rt::test]
async fn haproxy_send_proxy_v2_and_v1_carry_the_client_address_to_the_session() {
    let (probes, mut events) = Probes::<Lines>::echo();
    let loopback: Cidr = "127.0.0.1/32".parse().unwrap();
    let server = Listener::bind(any_port())
        .workers(2)
        .proxy_protocol([loopback])
        .serve(Lines::new(), probes.factory())
        .unwrap();
    for send in ["send-proxy-v2", "send-proxy"] {
        let haproxy = Haproxy::start(server.local_addr(), send);
        let frontend = haproxy.frontend;
        let (echoed, client) = blocking("a client through haproxy", move || {
            echo_through(frontend, "hi")
        })
        .await;
        assert_eq!(echoed, "hi", "{send}");
        // The session's peer is the client's socket, not HAProxy's backend connection.
        let (info, _) = events.connected_from(client).await;
        assert_eq!(info.peer_addr, client, "{send}");
        assert_eq!(info.local_addr, frontend, "{send}");
        drop(haproxy);
    }
}

#[test]
fn the_command_serves_echo_behind_haproxy_with_both_header_versions() {
    let server = support::Server::start(&[
        "--mode",
        "echo",
        "--proxy-protocol",
        "--proxy-from",
        "127.0.0.1/32,::1/128",
    ]);
    for send in ["send-proxy-v2", "send-proxy"] {
        let haproxy = Haproxy::start(server.addr, send);
        for i in 0..3 {
            let line = format!("{send} line {i}");
            let (echoed, _) = echo_through(haproxy.frontend, &line);
            assert_eq!(echoed, line);
        }
    }
    // Without a header (straight to the server) the connection is refused, and the server
    // carries on.
    let mut direct = TcpStream::connect(server.addr).unwrap();
    direct
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    writeln!(direct, "no header").unwrap();
    let mut rest = String::new();
    let _ = BufReader::new(direct).read_line(&mut rest);
    assert_eq!(rest, "", "closed without an echo");
    let finished = server.terminate();
    assert!(finished.status.success(), "{}", finished.stderr_text());
}
