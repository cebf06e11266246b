//! `switchboard load` against `switchboard serve --mode echo`: throughput, zero errors, and
//! mismatches caught when the server does not echo.

#[path = "cli_support.rs"]
mod support;

use serde_json::Value;
use support::{run, Finished, Server, STEP};

fn json(finished: &Finished) -> Value {
    assert_eq!(
        finished.stdout.len(),
        1,
        "one JSON line expected: {finished:?}"
    );
    serde_json::from_str(&finished.stdout[0]).expect("valid JSON")
}

fn number(report: &Value, path: &[&str]) -> f64 {
    let mut value = report;
    for key in path {
        value = &value[key];
    }
    value
        .as_f64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {report}"))
}

/// Runs `load` with `args` against a fresh echo server with `codec`; returns the JSON report.
fn load_against_echo(codec: &str, args: &[&str]) -> Value {
    let server = Server::start(&["--mode", "echo", "--codec", codec]);
    let target = server.target();
    let mut all = vec!["load", &target, "--codec", codec, "--json"];
    all.extend_from_slice(args);
    let finished = run(&all, STEP * 2);
    assert!(finished.status.success(), "{finished:?}");
    let report = json(&finished);
    let stopped = server.terminate();
    assert!(stopped.status.success(), "{stopped:?}");
    report
}

fn assert_clean_throughput(report: &Value) {
    assert_eq!(number(report, &["errors"]), 0.0, "{report}");
    assert!(number(report, &["messages"]) > 0.0, "{report}");
    assert!(number(report, &["msgs_per_s"]) > 0.0, "{report}");
    assert!(number(report, &["mb_per_s"]) > 0.0, "{report}");
    assert!(number(report, &["elapsed_s"]) > 0.0, "{report}");
    let p50 = number(report, &["latency_us", "p50"]);
    let p99 = number(report, &["latency_us", "p99"]);
    let max = number(report, &["latency_us", "max"]);
    assert!(p50 >= 1.0 && p50 <= p99 && p99 <= max, "{report}");
    assert!(number(report, &["connect_ms", "max"]) > 0.0, "{report}");
}

#[test]
fn lines_load_counts_every_message_with_no_errors() {
    let report = load_against_echo(
        "lines",
        &[
            "--connections",
            "4",
            "--messages",
            "2000",
            "--pipeline",
            "8",
        ],
    );
    assert_clean_throughput(&report);
    assert_eq!(number(&report, &["messages"]), 2000.0, "{report}");
    assert_eq!(number(&report, &["bytes"]), 2000.0 * 64.0, "{report}");
    assert_eq!(number(&report, &["connections"]), 4.0, "{report}");
}

#[test]
fn raw_load_for_a_duration_checks_a_split_and_merged_echo() {
    // 1000-byte messages, 16 in flight: the raw echo comes back in pieces of any size.
    let report = load_against_echo(
        "raw",
        &[
            "--connections",
            "3",
            "--duration",
            "1",
            "--pipeline",
            "16",
            "--size",
            "1000",
        ],
    );
    assert_clean_throughput(&report);
    assert_eq!(report["codec"], "raw");
}

#[test]
fn frames_load_with_large_messages() {
    let report = load_against_echo(
        "frames",
        &[
            "--connections",
            "2",
            "--messages",
            "200",
            "--pipeline",
            "4",
            "--size",
            "100000",
        ],
    );
    assert_clean_throughput(&report);
    assert_eq!(number(&report, &["messages"]), 200.0, "{report}");
}

#[test]
fn a_server_that_does_not_echo_is_reported_as_errors() {
    // A chat server greets and relays instead of echoing.
    let server = Server::start(&["--mode", "chat"]);
    let target = server.target();
    let finished = run(
        &[
            "load",
            &target,
            "--connections",
            "2",
            "--messages",
            "100",
            "--json",
        ],
        STEP * 2,
    );
    assert_eq!(finished.status.code(), Some(1), "{finished:?}");
    let report = json(&finished);
    assert!(number(&report, &["errors"]) > 0.0, "{report}");
    assert!(
        number(&report, &["error_detail", "mismatch"]) > 0.0,
        "{report}"
    );
    assert!(finished
        .stderr
        .last()
        .unwrap()
        .starts_with("switchboard: load test had errors"));
    server.terminate();
}

/// `load` speaks TLS to a `tls://` target (trusting `--ca`) and Unix sockets to a `unix:`
/// target, against `serve` on the same transports; every echoed byte checked.
#[test]
fn load_runs_over_tls_and_unix_targets() {
    let pki = switchboard_tests::pki::Pki::new();
    let cert = pki.server_cert.to_str().unwrap().to_string();
    let key = pki.server_key.to_str().unwrap().to_string();
    let sock = pki.dir().join("load.sock");
    let unix = format!("unix:{}", sock.display());
    let server = support::Proc::spawn(&[
        "serve",
        "--mode",
        "echo",
        "--codec",
        "raw",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let line = server.stdout_line();
    let port = line
        .strip_prefix("listening on tls://127.0.0.1:")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    let target = format!("tls://localhost:{port}");
    let ca = pki.ca.to_str().unwrap().to_string();
    let finished = run(
        &[
            "load", &target, "--ca", &ca, "--codec", "raw", "-c", "2", "-m", "200", "--json",
        ],
        STEP * 2,
    );
    assert!(finished.status.success(), "{finished:?}");
    let report = json(&finished);
    assert_eq!(number(&report, &["errors"]), 0.0, "{report}");
    assert_eq!(
        number(&report, &["error_detail", "mismatch"]),
        0.0,
        "{report}"
    );
    assert_eq!(number(&report, &["messages"]), 200.0, "{report}");
    server.signal(libc::SIGTERM);
    assert!(server.wait(STEP).status.success());

    let server = support::Proc::spawn(&[
        "serve", "--mode", "echo", "--codec", "raw", "--listen", &unix,
    ]);
    assert_eq!(server.stdout_line(), format!("listening on {unix}"));
    let finished = run(
        &[
            "load", &unix, "--codec", "raw", "-c", "2", "-m", "200", "--json",
        ],
        STEP * 2,
    );
    assert!(finished.status.success(), "{finished:?}");
    let report = json(&finished);
    assert_eq!(number(&report, &["errors"]), 0.0, "{report}");
    server.signal(libc::SIGTERM);
    assert!(server.wait(STEP).status.success());
}
