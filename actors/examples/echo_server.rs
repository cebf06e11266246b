//! An echo server: every line a client sends comes back to it.
//!
//! ```text
//! cargo run -p switchboard --example echo_server                      # 127.0.0.1:7878, one client
//! cargo run -p switchboard --example echo_server -- 127.0.0.1:0 --connections 3 --timeout 60
//! ```
//!
//! Then, from another terminal, `cargo run -p switchboard --example echo_client` (or `nc
//! 127.0.0.1 7878`). The server stops by itself once `--connections` clients (default 1) have
//! come and gone, or after `--timeout` seconds (default 30), whichever is first.
//!
//! It shows push mode: [`Listener::bind`] + `serve` start a `Session` actor per client on a
//! pool of worker threads, and the [`SessionHandler`] callbacks run inside that session (no
//! mailbox hop) with each decoded [`Lines`] item.

use std::{net::SocketAddr, time::Duration};

use switchboard::{Conn, DisconnectReason, Listener, SessionHandler, SessionInfo};
use switchboard_codec::Lines;
use tokio::sync::mpsc;

/// One of these is made for each client (the closure given to `serve` is called per
/// connection), and it lives on that client's worker thread.
struct Echo {
    /// Tells `main` that this client has gone, so it can count them and stop.
    gone: mpsc::UnboundedSender<()>,
}

impl SessionHandler<Lines> for Echo {
    // Qt's `newConnection` + `connected`: the session is up.
    fn connected(&mut self, conn: &mut Conn<'_, Lines, Self>) {
        println!("{} connected from {}", conn.id(), conn.peer_addr());
    }

    // Qt's `readyRead` + `readLine`: `Lines` has already cut the bytes at `\n` and checked
    // them for length (64 KiB by default) and UTF-8.
    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        println!("{} says {line:?}", conn.id());
        // An answer written here is never refused for room: once answers fill the write
        // buffer, the session holds the next lines (and stops reading, so TCP slows a client
        // that sends but never reads) until the buffer drains. `write` fails only once the
        // session is closing.
        if let Err(error) = conn.write(line) {
            println!("{} reply not sent: {error}", conn.id());
        }
    }

    // Qt's `disconnected`: called exactly once, whatever ended the session.
    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        println!(
            "{} disconnected ({reason}): {} lines in, {} out",
            info.id, info.frames_in, info.frames_out
        );
        let _ = self.gone.send(());
    }
}

/// What the command line asked for.
struct Args {
    addr: SocketAddr,
    connections: usize,
    timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:7878".parse().unwrap(),
        connections: 1,
        timeout: Duration::from_secs(30),
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = |name: &str| words.next().ok_or(format!("{name} needs a value"));
        match word.as_str() {
            "--connections" => {
                args.connections = value("--connections")?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?
            }
            "--timeout" => {
                let secs = value("--timeout")?
                    .parse()
                    .map_err(|e| format!("--timeout: {e}"))?;
                args.timeout = Duration::from_secs(secs);
            }
            addr => args.addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        }
    }
    Ok(args)
}

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let (gone, mut clients_gone) = mpsc::unbounded_channel();

    // Binds (port 0 lets the OS choose), starts the accept loop on a thread of its own and
    // two worker threads for the sessions. Every limit (line length, connections, write
    // buffer, idle time) is on by default.
    let server = Listener::bind(args.addr)
        .workers(2)
        .serve(Lines::new(), move || Echo { gone: gone.clone() })?;
    // The real address, with the port the OS chose when 0 was asked for.
    println!("listening on {}", server.local_addr());

    // Wait for the clients to come and go, but never longer than the timeout.
    let served = tokio::time::timeout(args.timeout, async {
        for _ in 0..args.connections {
            clients_gone.recv().await;
        }
    })
    .await;
    if served.is_err() {
        println!("timed out after {:?}", args.timeout);
    }

    // Stop accepting, then give any session still open up to 5 s to flush and close.
    let report = server.shutdown(Duration::from_secs(5)).await;
    println!(
        "shut down: {} sessions drained, {} aborted",
        report.drained, report.aborted
    );
    Ok(())
}
