//! `switchboard serve`, run as a process: the `listening on` line, chat, echo, and graceful
//! shutdown on SIGTERM.

#[path = "cli_support.rs"]
mod support;

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    sync::mpsc,
};

use support::{pattern, LineClient, Proc, Server, STEP};

/// Parses `* welcome #ID, N online` into (`#ID`, N).
fn welcome(line: &str) -> (String, usize) {
    let rest = line
        .strip_prefix("* welcome ")
        .unwrap_or_else(|| panic!("not a welcome: `{line}`"));
    let (id, online) = rest.split_once(", ").unwrap();
    let online = online.strip_suffix(" online").unwrap().parse().unwrap();
    (id.to_string(), online)
}

/// The numbers of the summary line, by name: `served`, `in`, `out`, `drained`, `aborted`,
/// `unflushed`.
fn summary_value(summary: &str, name: &str) -> u64 {
    // "shutdown: served N connections, X bytes in, Y bytes out, drained D, aborted A,
    // unflushed U bytes"
    let rest = summary
        .strip_prefix("shutdown: ")
        .unwrap_or_else(|| panic!("not a summary: `{summary}`"));
    let names = ["served", "in", "out", "drained", "aborted", "unflushed"];
    let index = names.iter().position(|n| *n == name).unwrap();
    let part = rest.split(", ").nth(index).unwrap();
    part.split(' ')
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no number in `{part}` of `{summary}`"))
}

#[test]
fn port_zero_prints_the_real_port_exactly_once() {
    let server = Server::start(&["--mode", "echo"]);
    assert_eq!(server.addr.ip().to_string(), "127.0.0.1");
    assert_ne!(server.addr.port(), 0);
    // The printed port is the one that answers.
    let mut client = LineClient::connect(server.addr);
    client.send("ping");
    assert_eq!(client.read_line(), "ping");
    drop(client);

    let finished = server.terminate();
    assert!(finished.status.success(), "{finished:?}");
    // Nothing else on stdout but the shutdown summary.
    assert_eq!(finished.stdout.len(), 1, "{finished:?}");
    assert!(finished.stdout[0].starts_with("shutdown: served 1 connections"));
}

#[test]
fn chat_relays_lines_among_three_clients_with_joins_and_leaves() {
    let mut server = Server::start(&["--mode", "chat"]);

    let mut a = LineClient::connect(server.addr);
    let (id_a, online) = welcome(&a.read_line());
    assert_eq!(online, 1);

    let mut b = LineClient::connect(server.addr);
    let (id_b, online) = welcome(&b.read_line());
    assert_eq!(online, 2);
    assert_eq!(a.read_line(), format!("* {id_b} joined"));

    // The third client is `switchboard connect` itself.
    let mut c = Proc::spawn(&["connect", &server.target()]);
    let (id_c, online) = welcome(&c.stdout_line());
    assert_eq!(online, 3);
    assert!(c.stderr_until("connected to").ends_with(&server.target()));
    assert_eq!(a.read_line(), format!("* {id_c} joined"));
    assert_eq!(b.read_line(), format!("* {id_c} joined"));

    a.send("hello from a");
    assert_eq!(b.read_line(), format!("[{id_a}] hello from a"));
    assert_eq!(c.stdout_line(), format!("[{id_a}] hello from a"));

    c.write_stdin("hi from c");
    // A's next line is C's: A did not get its own line back.
    assert_eq!(a.read_line(), format!("[{id_c}] hi from c"));
    assert_eq!(b.read_line(), format!("[{id_c}] hi from c"));

    server.proc.write_stdin("the server speaks");
    assert_eq!(a.read_line(), "[server] the server speaks");
    assert_eq!(b.read_line(), "[server] the server speaks");
    assert_eq!(c.stdout_line(), "[server] the server speaks");

    drop(b);
    assert_eq!(a.read_line(), format!("* {id_b} left"));
    assert_eq!(c.stdout_line(), format!("* {id_b} left"));

    // C's stdin ends: it closes by itself and exits 0.
    c.close_stdin();
    let finished = c.wait(STEP);
    assert!(finished.status.success(), "{finished:?}");
    assert!(finished.stdout.is_empty(), "{finished:?}");
    assert!(finished
        .stderr
        .iter()
        .any(|l| l.starts_with("disconnected: ")));
    assert_eq!(a.read_line(), format!("* {id_c} left"));

    drop(a);
    let finished = server.terminate();
    assert!(finished.status.success(), "{finished:?}");
    assert_eq!(summary_value(&finished.stdout[0], "served"), 3);
}

#[test]
fn raw_echo_returns_every_byte_to_a_plain_tcp_stream() {
    let server = Server::start(&["--mode", "echo", "--codec", "raw"]);
    let data = pattern(4 * 1024 * 1024, 7);
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(STEP)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let to_send = data.clone();
    let sender = std::thread::spawn(move || {
        for chunk in to_send.chunks(10_000) {
            writer.write_all(chunk).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut echoed = Vec::new();
    (&stream).read_to_end(&mut echoed).unwrap();
    sender.join().unwrap();
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "the echo differs from what was sent");

    let finished = server.terminate();
    assert!(finished.status.success(), "{finished:?}");
    let summary = &finished.stdout[0];
    assert_eq!(summary_value(summary, "in"), data.len() as u64, "{summary}");
    assert_eq!(
        summary_value(summary, "out"),
        data.len() as u64,
        "{summary}"
    );
}

#[test]
fn latency_mode_echoes_like_the_default() {
    let server = Server::start(&[
        "--mode",
        "echo",
        "--codec",
        "raw",
        "--workers",
        "1",
        "--spin-us",
        "200",
    ]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(STEP)).unwrap();
    for round in 0..50u8 {
        let message = [round; 64];
        stream.write_all(&message).unwrap();
        let mut echoed = [0u8; 64];
        stream.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, message, "round {round}");
    }
    drop(stream);
    let finished = server.terminate();
    assert!(finished.status.success(), "{finished:?}");
    assert_eq!(summary_value(&finished.stdout[0], "in"), 50 * 64);
}

#[test]
fn sigterm_during_traffic_flushes_closes_and_exits_0_with_a_summary() {
    let server = Server::start(&["--mode", "echo", "--codec", "raw"]);
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(STEP)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    // The client sends without pause until the socket fails.
    let sender = std::thread::spawn(move || {
        let data = pattern(64 * 1024, 3);
        let mut sent = Vec::new();
        while writer.write_all(&data).is_ok() {
            sent.extend_from_slice(&data);
        }
        sent
    });
    // It reads until EOF, saying when the first MiB came back.
    let (busy_tx, busy) = mpsc::channel();
    let mut reader = stream.try_clone().unwrap();
    let receiver = std::thread::spawn(move || {
        let mut echoed = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => echoed.extend_from_slice(&buf[..n]),
                Err(e) => panic!("read failed before EOF: {e}"),
            }
            if echoed.len() >= 1024 * 1024 {
                let _ = busy_tx.send(());
            }
        }
        echoed
    });
    busy.recv_timeout(STEP).expect("traffic flows");

    server.proc.signal(libc::SIGTERM);
    // The server flushes what it owes and closes: the reader sees EOF.
    let echoed = receiver.join().unwrap();
    stream.shutdown(Shutdown::Both).unwrap();
    let sent = sender.join().unwrap();

    let finished = server.proc.wait(STEP);
    assert!(finished.status.success(), "{finished:?}");
    assert_eq!(finished.stdout.len(), 1, "{finished:?}");
    let summary = &finished.stdout[0];
    assert!(
        summary.starts_with("shutdown: served 1 connections"),
        "{summary}"
    );
    assert_eq!(summary_value(summary, "drained"), 1, "{summary}");
    assert_eq!(summary_value(summary, "aborted"), 0, "{summary}");
    // Every byte the server wrote arrived, and it is what was sent, in order.
    assert_eq!(
        summary_value(summary, "out"),
        echoed.len() as u64,
        "{summary}"
    );
    assert!(
        summary_value(summary, "in") >= echoed.len() as u64,
        "{summary}"
    );
    assert!(echoed.len() <= sent.len() + 64 * 1024);
    let pattern = pattern(64 * 1024, 3);
    for (i, chunk) in echoed.chunks(pattern.len()).enumerate() {
        assert!(
            chunk == &pattern[..chunk.len()],
            "echo differs in chunk {i}"
        );
    }
}

#[test]
fn connect_prints_replies_and_exits_0_when_the_server_closes() {
    let server = Server::start(&["--mode", "echo"]);
    let mut client = Proc::spawn(&["connect", &server.target()]);
    client.stderr_until("connected to");
    client.write_stdin("ping");
    assert_eq!(client.stdout_line(), "ping");
    client.write_stdin("pong");
    assert_eq!(client.stdout_line(), "pong");

    // SIGTERM: the server closes gracefully; the client says so and exits 0, stdin still open.
    let finished = server.terminate();
    assert!(finished.status.success(), "{finished:?}");
    assert!(finished.stdout[0].contains("drained 1"), "{finished:?}");
    let line = client.stderr_until("disconnected: ");
    assert_eq!(line, "disconnected: the peer closed the connection");
    let finished = client.wait(STEP);
    assert!(finished.status.success(), "{finished:?}");
}

#[test]
fn max_connections_per_ip_closes_the_extra_client_and_serves_the_first() {
    let server = Server::start(&[
        "--mode",
        "echo",
        "--codec",
        "raw",
        "--max-connections-per-ip",
        "1",
    ]);
    let mut first = support::echoed(server.addr, b"ping");

    // Same address, over its limit: accepted and closed at once (EOF or a reset), never echoed.
    let mut second = TcpStream::connect(server.addr).unwrap();
    second.set_read_timeout(Some(STEP)).unwrap();
    let _ = second.write_all(b"pong");
    let mut got = Vec::new();
    let outcome = second.read_to_end(&mut got);
    assert!(
        got.is_empty(),
        "the client over the per-IP limit was served: {got:?}"
    );
    if let Err(e) = outcome {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }

    // The first client is still served.
    first.write_all(b"again").unwrap();
    let mut reply = [0u8; 5];
    first.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"again");
    drop(first);
    let finished = server.terminate();
    assert!(finished.status.success(), "{finished:?}");
}
