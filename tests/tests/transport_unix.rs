//! Unix domain sockets (Qt's `QLocalServer` / `QLocalSocket`): the same Session over a path or
//! a Linux abstract name; clients nobody here wrote (Python's `AF_UNIX`, `socat`); a stale
//! socket file is replaced, a live one never taken over, a regular file kept; mode 0600; the
//! peer's credentials in the session's info; the file removed on a clean stop; `kill -9` then
//! restart binds again.

#[path = "cli_support.rs"]
mod support;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use switchboard::{Connector, ListenError, Listener, ListenerHandle, SessionConfig, TransportKind};
use switchboard_codec::Lines;
use switchboard_tests::{require_tool, within, Events, Probes};

fn temp_dir(tag: &str) -> support::TempDir {
    support::TempDir::new(tag)
}

fn unix_echo(path: &Path) -> Result<(ListenerHandle, Events<Lines>), ListenError> {
    let (probes, events) = Probes::<Lines>::echo();
    Listener::bind(path)
        .workers(2)
        .session_config(SessionConfig::default())
        .serve(Lines::new(), probes.factory())
        .map(|server| (server, events))
}

fn echo_over(path: &Path, line: &str) -> String {
    let stream = UnixStream::connect(path).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    (&stream).write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    reader.read_line(&mut answer).unwrap();
    answer.trim_end().to_string()
}

#[actix_rt::test]
async fn a_listener_on_a_path_echoes_shows_credentials_and_removes_its_file() {
    let dir = temp_dir("unix-echo");
    let path = dir.path().join("echo.sock");
    let (server, mut events) = unix_echo(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket file mode {mode:o}");
    assert_eq!(server.addresses().len(), 1);
    assert_eq!(
        server.addresses()[0].to_string(),
        format!("unix:{}", path.display())
    );

    let client_path = path.clone();
    let answer = tokio::task::spawn_blocking(move || echo_over(&client_path, "over unix"));
    assert_eq!(within("the echo", answer).await.unwrap(), "over unix");
    let (info, _, _) = events.connected().await;
    assert_eq!(info.transport, TransportKind::Unix);
    let peer = info.peer_addr.unix().expect("a Unix peer");
    let credentials = peer.credentials.expect("SO_PEERCRED");
    // SAFETY: getuid has no preconditions.
    assert_eq!(credentials.uid, unsafe { libc::getuid() });
    assert_eq!(credentials.pid, Some(std::process::id() as i32));
    assert_eq!(
        info.local_addr.unix().and_then(|u| u.path.clone()),
        Some(path.clone())
    );

    // A Switchboard client over the same path.
    let (probes, mut client_events) = Probes::<Lines>::quiet();
    let client = within(
        "connect",
        Connector::new().connect(path.as_path(), Lines::new(), probes.make()),
    )
    .await
    .unwrap();
    within(
        "Write",
        client.send(switchboard::Write("from switchboard".to_string())),
    )
    .await
    .unwrap()
    .unwrap();
    let (client_info, _, _) = client_events.connected().await;
    assert_eq!(
        client_events.frame(client_info.id).await,
        "from switchboard"
    );

    server.shutdown(Duration::from_secs(2)).await;
    assert!(!path.exists(), "a clean stop removes the socket file");
}

#[actix_rt::test]
async fn a_stale_file_is_replaced_a_live_socket_refused_and_a_regular_file_kept() {
    let dir = temp_dir("unix-bind");
    // Stale: a socket file nothing listens on (as a crashed server leaves it).
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let (server, _events) = unix_echo(&stale).expect("a stale socket file is replaced");
    let probe = stale.clone();
    assert_eq!(
        within(
            "the echo",
            tokio::task::spawn_blocking(move || echo_over(&probe, "x"))
        )
        .await
        .unwrap(),
        "x"
    );

    // Live: never taken over, and the first server keeps serving.
    match unix_echo(&stale) {
        Err(ListenError::BindUnix { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse, "{source}")
        }
        other => panic!("expected BindUnix AddrInUse, got {:?}", other.map(|_| ())),
    }
    let probe = stale.clone();
    assert_eq!(
        within(
            "the echo",
            tokio::task::spawn_blocking(move || echo_over(&probe, "still"))
        )
        .await
        .unwrap(),
        "still"
    );

    // A regular file: reported and kept.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"data").unwrap();
    match unix_echo(&file) {
        Err(ListenError::BindUnix { source, .. }) => {
            assert!(source.to_string().contains("not a socket"), "{source}")
        }
        other => panic!("expected BindUnix, got {:?}", other.map(|_| ())),
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"data");

    // A path longer than the system allows: a typed error, no panic.
    let long = dir.path().join("x".repeat(200));
    assert!(matches!(
        unix_echo(&long),
        Err(ListenError::BindUnix { .. })
    ));
    drop(server);
}

#[actix_rt::test]
async fn an_abstract_name_needs_no_file() {
    let name = format!("unix:@switchboard-test-{}", std::process::id());
    let (probes, mut events) = Probes::<Lines>::echo();
    let server = Listener::bind(name.as_str())
        .workers(1)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    assert_eq!(server.addresses()[0].to_string(), name);
    let (client_probes, mut client_events) = Probes::<Lines>::quiet();
    let client = within(
        "connect",
        Connector::new().connect(name.as_str(), Lines::new(), client_probes.make()),
    )
    .await
    .unwrap();
    within(
        "Write",
        client.send(switchboard::Write("abstract".to_string())),
    )
    .await
    .unwrap()
    .unwrap();
    let (info, _, _) = client_events.connected().await;
    assert_eq!(client_events.frame(info.id).await, "abstract");
    let (server_info, _, _) = events.connected().await;
    assert_eq!(server_info.transport, TransportKind::Unix);
}

/// TCP and a Unix path on one listener: one registry, one limit.
#[actix_rt::test]
async fn one_listener_serves_tcp_and_a_unix_path_together() {
    let dir = temp_dir("unix-both");
    let path = dir.path().join("both.sock");
    let (probes, mut events) = Probes::<Lines>::echo();
    let server = Listener::bind("127.0.0.1:0")
        .also_bind(path.as_path())
        .workers(2)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    assert_eq!(server.addresses().len(), 2);
    let tcp = server.local_addr();
    let unix = path.clone();
    let answers = tokio::task::spawn_blocking(move || {
        let mut tcp_client = BufReader::new(std::net::TcpStream::connect(tcp).unwrap());
        let unix_answer = echo_over(&unix, "by unix");
        (
            switchboard_tests::echo_line(&mut tcp_client, "by tcp"),
            unix_answer,
        )
    });
    let (tcp_answer, unix_answer) = within("both echoes", answers).await.unwrap();
    assert_eq!(
        (tcp_answer.as_str(), unix_answer.as_str()),
        ("by tcp", "by unix")
    );
    let mut kinds = vec![
        events.connected().await.0.transport,
        events.connected().await.0.transport,
    ];
    kinds.sort_by_key(|k| k.scheme());
    assert_eq!(kinds, [TransportKind::Tcp, TransportKind::Unix]);
    within("the registry to empty", server.registry().wait_for_count(0)).await;
}

fn serve_unix(path: &Path) -> support::Proc {
    let listen = format!("unix:{}", path.display());
    let proc = support::Proc::spawn(&["serve", "--mode", "echo", "--listen", &listen]);
    assert_eq!(proc.stdout_line(), format!("listening on {listen}"));
    proc
}

#[test]
fn python_and_socat_talk_to_the_command_over_a_unix_socket_and_kill_9_then_restart_binds() {
    require_tool("socat", "socat");
    let dir = temp_dir("unix-cli");
    let path: PathBuf = dir.path().join("cli.sock");
    let server = serve_unix(&path);

    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(b"from python\n")
got = b""
while not got.endswith(b"\n"):
    got += s.recv(100)
print(got.decode().strip())
"#;
    let output = Command::new("python3")
        .args(["-c", script, path.to_str().unwrap()])
        .output()
        .expect("python3 runs");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "from python",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let mut socat = Command::new("socat")
        .args(["-t", "5", "-", &format!("UNIX-CONNECT:{}", path.display())])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("socat runs");
    socat
        .stdin
        .take()
        .unwrap()
        .write_all(b"from socat\n")
        .unwrap();
    let output = socat.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "from socat");

    // kill -9: the file stays behind; a new server replaces it.
    server.signal(libc::SIGKILL);
    let _ = server.wait(Duration::from_secs(10));
    assert!(path.exists(), "a killed server leaves its socket file");
    let again = serve_unix(&path);
    assert_eq!(echo_over(&path, "after restart"), "after restart");
    again.signal(libc::SIGTERM);
    assert!(again.wait(Duration::from_secs(20)).status.success());
    assert!(!path.exists(), "a clean stop removes the file");
}
