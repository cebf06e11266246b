//! `connect`, `send` and `load` share their client options: a client certificate for a
//! mutual-TLS server (`--ca --cert --key`) and a PROXY header (`--proxy-header v1|v2`), and each
//! fails plainly without them.

#[path = "cli_support.rs"]
mod support;

use std::time::Duration;

use support::{run, Proc, STEP};
use switchboard_tests::pki::Pki;

/// `serve ARGS` on an OS-chosen port; the port from its first `listening on` line.
fn serve(args: &[&str]) -> (Proc, String) {
    let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let server = Proc::spawn(&all);
    let line = server.stdout_line();
    let port = line
        .rsplit(':')
        .next()
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    (server, port)
}

fn stop(server: Proc) {
    server.signal(libc::SIGTERM);
    let finished = server.wait(STEP);
    assert!(finished.status.success(), "{}", finished.stderr_text());
}

/// `connect TARGET ARGS` with `input` on stdin; how it ended and what it printed.
fn connect(target: &str, args: &[&str], input: &str) -> support::Finished {
    let mut all = vec!["connect", target, "--grace", "0.3"];
    all.extend_from_slice(args);
    let mut client = Proc::spawn(&all);
    client.write_stdin(input);
    client.close_stdin();
    client.wait(STEP)
}

#[test]
fn a_mutual_tls_server_takes_connect_send_and_load_with_a_client_certificate() {
    let pki = Pki::new();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (cert, key, ca) = (path(&pki.server_cert), path(&pki.server_key), path(&pki.ca));
    let (client_cert, client_key) = (path(&pki.client_cert), path(&pki.client_key));
    let identity = [
        "--ca",
        ca.as_str(),
        "--cert",
        client_cert.as_str(),
        "--key",
        client_key.as_str(),
    ];
    let mtls = [
        "--tls-cert",
        cert.as_str(),
        "--tls-key",
        key.as_str(),
        "--tls-client-ca",
        ca.as_str(),
    ];

    let mut echo_args = vec!["--mode", "echo"];
    echo_args.extend_from_slice(&mtls);
    let (server, port) = serve(&echo_args);
    let target = format!("tls://localhost:{port}");
    let talked = connect(&target, &identity, "hello\n");
    assert!(talked.status.success(), "{}", talked.stderr_text());
    assert!(talked.stdout.iter().any(|l| l == "hello"), "{talked:?}");
    // Without the certificate the server refuses the handshake.
    let refused = connect(&target, &["--ca", &ca], "hello\n");
    assert!(!refused.status.success(), "{refused:?}");
    stop(server);

    let mut raw_echo = vec!["--mode", "echo", "--codec", "raw"];
    raw_echo.extend_from_slice(&mtls);
    let (server, port) = serve(&raw_echo);
    let target = format!("tls://localhost:{port}");
    let mut load = vec![
        "load", &target, "--codec", "raw", "-c", "2", "-m", "100", "--json",
    ];
    load.extend_from_slice(&identity);
    let loaded = run(&load, STEP * 2);
    assert!(loaded.status.success(), "{loaded:?}");
    let report: serde_json::Value =
        serde_json::from_str(loaded.stdout.last().expect("the JSON report")).unwrap();
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["messages"], 100, "{report}");
    let unknown = run(
        &[
            "load", &target, "--ca", &ca, "--codec", "raw", "-c", "1", "-m", "10", "--json",
        ],
        STEP * 2,
    );
    assert!(!unknown.status.success(), "{unknown:?}");
    stop(server);

    let dir = support::TempDir::new("mtls-files");
    let received = dir.path().join("in");
    std::fs::create_dir_all(&received).unwrap();
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, support::pattern(100_000, 7)).unwrap();
    let received_arg = path(&received);
    let mut files_args = vec!["--mode", "files", "--dir", received_arg.as_str()];
    files_args.extend_from_slice(&mtls);
    let (server, port) = serve(&files_args);
    let target = format!("tls://localhost:{port}");
    let mut send = vec!["send", target.as_str()];
    send.extend_from_slice(&identity);
    let file_arg = path(&file);
    send.push(&file_arg);
    let sent = run(&send, STEP * 2);
    assert!(sent.status.success(), "{sent:?}");
    assert_eq!(
        std::fs::read(received.join("upload.bin")).unwrap(),
        std::fs::read(&file).unwrap()
    );
    stop(server);
}

#[test]
fn connect_send_and_load_send_the_proxy_header_a_proxy_protocol_server_needs() {
    let dir = support::TempDir::new("proxy-client");
    let received = dir.path().join("in");
    std::fs::create_dir_all(&received).unwrap();
    let proxied = ["--proxy-protocol", "--proxy-from", "127.0.0.1/32"];

    let mut echo_args = vec!["--mode", "echo"];
    echo_args.extend_from_slice(&proxied);
    let (server, port) = serve(&echo_args);
    let target = format!("127.0.0.1:{port}");
    for version in ["v1", "v2"] {
        let talked = connect(&target, &["--proxy-header", version], "through\n");
        assert!(
            talked.status.success(),
            "{version}: {}",
            talked.stderr_text()
        );
        assert!(talked.stdout.iter().any(|l| l == "through"), "{talked:?}");
    }
    // Without the header the server ends the session: the line never comes back.
    let bare = connect(&target, &[], "through\n");
    assert!(!bare.stdout.iter().any(|l| l == "through"), "{bare:?}");
    stop(server);

    let mut raw_echo = vec!["--mode", "echo", "--codec", "raw"];
    raw_echo.extend_from_slice(&proxied);
    let (server, port) = serve(&raw_echo);
    let target = format!("127.0.0.1:{port}");
    let loaded = run(
        &[
            "load",
            &target,
            "--codec",
            "raw",
            "-c",
            "2",
            "-m",
            "100",
            "--json",
            "--proxy-header",
            "v2",
        ],
        STEP * 2,
    );
    assert!(loaded.status.success(), "{loaded:?}");
    stop(server);

    let received_arg = received.to_str().unwrap().to_string();
    let mut files_args = vec!["--mode", "files", "--dir", received_arg.as_str()];
    files_args.extend_from_slice(&proxied);
    let (server, port) = serve(&files_args);
    let file = dir.path().join("proxied.bin");
    std::fs::write(&file, support::pattern(50_000, 3)).unwrap();
    let target = format!("127.0.0.1:{port}");
    let sent = run(
        &[
            "send",
            &target,
            "--proxy-header",
            "v1",
            file.to_str().unwrap(),
        ],
        STEP * 2,
    );
    assert!(sent.status.success(), "{sent:?}");
    assert!(received.join("proxied.bin").exists());
    let other = dir.path().join("unproxied.bin");
    std::fs::write(&other, support::pattern(50_000, 4)).unwrap();
    let unsent = run(
        &["send", &target, "--timeout", "5", other.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(!unsent.status.success(), "{unsent:?}");
    assert!(!received.join("unproxied.bin").exists());
    stop(server);
}
