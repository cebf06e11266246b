//! Per-session logs (issue 11 §2) from `switchboard serve` itself, read off its stderr: each
//! session's lines carry its span (id, peer, transport, listener); its end is logged at DEBUG
//! with the reason and totals, so the default level writes no line per connection; and the
//! spans can be turned off alone by their target.

#[path = "cli_support.rs"]
mod support;

use support::{LineClient, Server};

/// Connects, echoes one line, disconnects; the client's address.
fn one_session(server: &Server) -> std::net::SocketAddr {
    let mut client = LineClient::connect(server.addr);
    let peer = client.stream.local_addr().unwrap();
    client.send("hello");
    assert_eq!(client.read_line(), "hello");
    drop(client);
    peer
}

#[test]
fn a_session_logs_inside_its_span_and_its_end_at_debug() {
    let server = Server::start_logging(None, &["--mode", "echo"], Some("debug"));
    let peer = one_session(&server);
    let ended = server.proc.stderr_until("session ended");
    for field in [
        "session{id=#1 ".to_string(),
        format!("peer={peer}"),
        "transport=tcp".to_string(),
        format!("listener={}", server.addr),
        "reason=".to_string(),
        "bytes_in=6".to_string(),
        "bytes_out=6".to_string(),
        "frames_in=1".to_string(),
    ] {
        assert!(ended.contains(&field), "no `{field}` in: {ended}");
    }
    assert!(server.terminate().status.success());
}

#[test]
fn the_default_level_writes_no_line_per_connection() {
    let server = Server::start(&["--mode", "echo"]);
    let peer = one_session(&server);
    // The shutdown summary (stdout) counts the session, so it had ended, and every log line
    // the server wrote is in `stderr` once it has exited.
    let finished = server.terminate();
    assert!(finished.status.success());
    let summary = finished.stdout.join("\n");
    assert!(summary.contains("served 1 connection"), "{summary}");
    let text = finished.stderr_text();
    // The address whole: a bare port number could turn up inside a timestamp.
    assert!(
        !text.contains(&peer.to_string()),
        "a line names the client at the default level:\n{text}"
    );
}

#[test]
fn the_span_target_turns_the_spans_off_and_keeps_the_lines() {
    let directive = format!("debug,{}=off", switchboard::SESSION_SPAN_TARGET);
    let server = Server::start_logging(None, &["--mode", "echo"], Some(&directive));
    let peer = one_session(&server);
    let ended = server.proc.stderr_until("session ended");
    assert!(
        !ended.contains("session{"),
        "a span is still there: {ended}"
    );
    assert!(ended.contains(&format!("peer={peer}")), "{ended}");
    assert!(server.terminate().status.success());
}
