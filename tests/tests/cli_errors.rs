//! How `switchboard` fails: one clear line on stderr, a non-zero status, no panic, no backtrace
//! (the tests set `RUST_BACKTRACE=1` to be sure none is printed); and `--help` everywhere.

#[path = "cli_support.rs"]
mod support;

use std::net::TcpListener;

use support::{assert_one_line_error, closed_port, run, TempDir, STEP};

#[test]
fn address_in_use_is_one_line_and_status_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let finished = run(&["serve", "--port", &port], STEP);
    assert_one_line_error(&finished, "in use");
    assert!(finished.stderr[0].contains(&format!("127.0.0.1:{port}")));
    assert_eq!(finished.status.code(), Some(1));
}

#[test]
fn connection_refused_is_one_line_for_every_client() {
    let target = closed_port().to_string();
    let dir = TempDir::new("refused");
    let file = dir.path().join("a.txt");
    std::fs::write(&file, b"data").unwrap();
    let file = file.to_str().unwrap();
    for args in [
        vec!["connect", &target],
        vec!["send", &target, file],
        vec!["load", &target, "--messages", "10"],
    ] {
        let finished = run(&args, STEP);
        assert_one_line_error(&finished, "refused");
        assert!(finished.stderr[0].contains(&target), "{finished:?}");
        assert_eq!(finished.status.code(), Some(1), "{args:?}");
    }
}

#[test]
fn missing_file_is_one_line_before_connecting() {
    // Nothing listens there: the file is checked first.
    let target = closed_port().to_string();
    let finished = run(&["send", &target, "/no/such/file.bin"], STEP);
    assert_one_line_error(&finished, "/no/such/file.bin");
    assert!(finished.stderr[0].contains("No such file"));
}

#[test]
fn bad_invocations_are_one_line_and_status_2() {
    for args in [
        vec!["serve", "--mode", "nope"],
        vec!["serve", "--port", "70000"],
        vec!["serve", "--bogus"],
        vec!["serve", "--spin-us", "100001"],
        vec!["load"],
        vec!["load", "127.0.0.1:1", "--duration", "1", "--messages", "5"],
        vec!["send", "127.0.0.1:1"],
        vec!["frobnicate"],
    ] {
        let finished = run(&args, STEP);
        assert_one_line_error(&finished, "see --help");
        assert_eq!(finished.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn mode_and_codec_that_do_not_fit_are_refused() {
    let finished = run(
        &["serve", "--port", "0", "--mode", "chat", "--codec", "raw"],
        STEP,
    );
    assert_one_line_error(&finished, "chat mode is line based");
    let finished = run(
        &[
            "serve", "--port", "0", "--mode", "files", "--codec", "lines",
        ],
        STEP,
    );
    assert_one_line_error(&finished, "files mode");
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["serve", "connect", "send", "load"] {
        let finished = run(&[sub, "--help"], STEP);
        assert!(finished.status.success(), "{finished:?}");
        let text = finished.stdout.join("\n");
        assert!(
            text.contains(&format!("Usage: switchboard {sub}")),
            "{text}"
        );
        assert!(finished.stderr.is_empty(), "{finished:?}");
    }
    let finished = run(&["--help"], STEP);
    assert!(finished.status.success());
    assert!(finished.stdout.join("\n").contains("Commands:"));
}
