//! `SO_REUSEPORT`: several sockets on one port inside one listener, and one port shared by
//! two `switchboard serve --reuseport` processes, only when asked: without the option a second
//! bind still fails with `AddrInUse`.

#[path = "cli_support.rs"]
mod support;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use bytes::Bytes;
use support::{Proc, Server};
use switchboard::{Conn, ListenError, Listener, SessionHandler};
use switchboard_codec::Raw;
use switchboard_tests::{any_port, within};

struct Echo;

impl SessionHandler<Raw> for Echo {
    fn ready_read(&mut self, data: Bytes, conn: &mut Conn<'_, Raw, Self>) {
        let _ = conn.write(data);
    }
}

/// Sockets in LISTEN state on `port` (IPv4), as the kernel lists them.
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let suffix = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[1].ends_with(&suffix) && fields[3] == "0A"
        })
        .count()
}

/// Connects, sends one byte, expects it back, closes; `Err` says what went wrong.
fn echo_once(addr: SocketAddr, byte: u8) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(&[byte])
        .map_err(|e| format!("write: {e}"))?;
    let mut back = [0u8; 1];
    stream
        .read_exact(&mut back)
        .map_err(|e| format!("read: {e}"))?;
    if back[0] != byte {
        return Err(format!("echoed {} for {byte}", back[0]));
    }
    Ok(())
}

#[actix_rt::test]
async fn one_listener_accepts_on_several_sockets_of_one_port() {
    let server = Listener::bind(any_port())
        .workers(2)
        .reuse_port(4)
        .serve(Raw, || Echo)
        .unwrap();
    let addresses = server.addresses().to_vec();
    assert_eq!(addresses.len(), 4, "{addresses:?}");
    assert!(
        addresses.iter().all(|a| a == &addresses[0]),
        "{addresses:?}"
    );
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0, "port 0 resolved once");
    assert_eq!(listening_sockets(addr.port()), 4);
    let results = within(
        "200 echoes",
        tokio::task::spawn_blocking(move || {
            (0..200u32)
                .map(|i| echo_once(addr, i as u8))
                .collect::<Vec<_>>()
        }),
    )
    .await
    .unwrap();
    let failed: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    assert!(failed.is_empty(), "{failed:?}");
    within("every session to end", server.registry().wait_for_count(0)).await;
}

#[actix_rt::test]
async fn without_the_option_a_second_bind_of_the_port_fails() {
    let plain = Listener::bind(any_port()).serve(Raw, || Echo).unwrap();
    let taken = plain.local_addr();
    // Neither a plain bind nor a SO_REUSEPORT one may join a socket bound without it.
    for reuse in [None, Some(2)] {
        let mut second = Listener::bind(taken);
        if let Some(sockets) = reuse {
            second = second.reuse_port(sockets);
        }
        match second.serve(Raw, || Echo) {
            Err(ListenError::Bind { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse, "{source}")
            }
            Err(other) => panic!("expected AddrInUse, got {other}"),
            Ok(_) => panic!("a second listener bound {taken} (reuse_port {reuse:?})"),
        }
    }
    // And a SO_REUSEPORT socket takes no plain neighbour either.
    let shared = Listener::bind(any_port())
        .reuse_port(2)
        .serve(Raw, || Echo)
        .unwrap();
    let refused = Listener::bind(shared.local_addr()).serve(Raw, || Echo);
    assert!(
        matches!(refused, Err(ListenError::Bind { .. })),
        "{refused:?}"
    );
    assert!(matches!(
        Listener::bind(any_port()).reuse_port(0).serve(Raw, || Echo),
        Err(ListenError::Config(_))
    ));
}

/// `served N connections` from a server's shutdown line.
fn served(finished: &support::Finished) -> usize {
    let line = finished
        .stdout
        .iter()
        .find(|l| l.starts_with("shutdown: served "))
        .unwrap_or_else(|| panic!("no shutdown line in {:?}", finished.stdout));
    line["shutdown: served ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {line}"))
}

#[test]
fn two_processes_share_a_port_and_the_second_serves_alone_once_the_first_stops() {
    let first = Server::start(&["--mode", "echo", "--codec", "raw", "--reuseport", "2"]);
    let addr = first.addr;
    let port = addr.port().to_string();
    let second = Proc::spawn(&[
        "serve",
        "--port",
        &port,
        "--mode",
        "echo",
        "--codec",
        "raw",
        "--reuseport",
        "2",
    ]);
    assert_eq!(second.stdout_line(), format!("listening on {addr}"));
    assert_eq!(listening_sockets(addr.port()), 4);

    // A third server that did not ask to share is refused, and says why.
    let third = support::run(&["serve", "--port", &port], Duration::from_secs(10));
    assert!(!third.status.success());
    assert!(
        third.stderr_text().contains("in use"),
        "{}",
        third.stderr_text()
    );

    let failed: Vec<_> = (0..200u32)
        .filter_map(|i| echo_once(addr, i as u8).err())
        .collect();
    assert!(failed.is_empty(), "{failed:?}");

    // The first stops; the port keeps answering through the second alone.
    let first_done = first.terminate();
    assert!(first_done.status.success(), "{}", first_done.stderr_text());
    let failed: Vec<_> = (0..50u32)
        .filter_map(|i| echo_once(addr, i as u8).err())
        .collect();
    assert!(failed.is_empty(), "after the first stopped: {failed:?}");
    second.signal(libc::SIGTERM);
    let second_done = second.wait(Duration::from_secs(15));
    assert!(
        second_done.status.success(),
        "{}",
        second_done.stderr_text()
    );
    let (a, b) = (served(&first_done), served(&second_done));
    // The kernel spread the first 200 over both; the last 50 went to the second.
    assert_eq!(a + b, 250, "first {a}, second {b}");
    assert!(a > 0 && b > 50, "first {a}, second {b}");
}
