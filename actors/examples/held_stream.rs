//! A session over a socket the program accepted itself.
//!
//! ```text
//! cargo run -p switchboard --example held_stream                 # 127.0.0.1:7878
//! cargo run -p switchboard --example held_stream -- 127.0.0.1:0  # an OS port
//! ```
//!
//! Then `nc 127.0.0.1 7878` (or `cargo run -p switchboard --example echo_client`): the program
//! greets the client with plain blocking std I/O, then hands the same socket to a Switchboard
//! session, which answers each line in upper case until the client sends `quit` or closes.
//! It serves that one client and exits; it waits at most 30 s for the client to come.
//!
//! Use this shape when something else owns accepting: a socket passed down by a supervisor,
//! one taken from a protocol you spoke first, or a std listener you already have.
//! [`SessionBuilder::start_std`] starts the session on the current thread;
//! `SessionBuilder::start_on(&pool, stream)` would run it on a [`WorkerPool`] thread instead.
//!
//! [`WorkerPool`]: switchboard::WorkerPool

use std::{
    io::Write as _,
    net::{TcpListener, TcpStream},
    sync::mpsc,
    time::Duration,
};

use switchboard::{Conn, DisconnectReason, SessionBuilder, SessionHandler, SessionInfo};
use switchboard_codec::Lines;
use tokio::sync::oneshot;

/// Answers each line in upper case; `quit` closes.
struct Shout {
    /// Tells `main` the session has ended, so it can exit.
    done: Option<oneshot::Sender<()>>,
}

impl SessionHandler<Lines> for Shout {
    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        if line == "quit" {
            let _ = conn.write("bye");
            // Flushes "bye", shuts the write side, then waits for the client to close its
            // own (at most the close timeout, 10 s by default), so nothing is lost to a reset.
            conn.disconnect_from_host();
        } else {
            let _ = conn.write(line.to_uppercase());
        }
    }

    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        println!(
            "session {} ended ({reason}) after {} lines",
            info.id, info.frames_in
        );
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

/// Accepts one client, waiting at most `timeout` (std's `accept` has no timeout of its own, so
/// it runs on a thread that is simply left behind if nobody comes).
fn accept_one(listener: TcpListener, timeout: Duration) -> std::io::Result<TcpStream> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(listener.accept());
    });
    match rx.recv_timeout(timeout) {
        Ok(accepted) => accepted.map(|(stream, _peer)| stream),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no client within {timeout:?}"),
        )),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7878".to_owned());

    // Plain std networking: no runtime exists yet.
    let listener = TcpListener::bind(&addr)?;
    println!("listening on {}", listener.local_addr()?);
    let mut stream = accept_one(listener, Duration::from_secs(30))?;
    println!("accepted {}", stream.peer_addr()?);

    // The program owns the socket and may use it as it likes before handing it over. Writing
    // is safe; reading through a buffered reader is not, since bytes it buffered past what
    // was used would never reach the session.
    stream.set_nodelay(true)?;
    stream.write_all(b"hello from std; now talking to a session (send quit to end)\n")?;

    // A runtime for the session: an actix system on this thread.
    actix_rt::System::new().block_on(async move {
        let (done, ended) = oneshot::channel();
        // `start_std` makes the socket non-blocking and registers it with this runtime; the
        // session takes it from here (reads, limits, timeouts, graceful close).
        // The returned `Addr` is how other actors would talk to the session (`Write`,
        // `GetInfo`, `DisconnectFromHost`, ...).
        let _session =
            SessionBuilder::new(Lines::new(), Shout { done: Some(done) }).start_std(stream)?;
        println!("session started");
        // Give the client a minute at most; the session's idle timeout (120 s by default)
        // would end it anyway.
        if tokio::time::timeout(Duration::from_secs(60), ended)
            .await
            .is_err()
        {
            println!("the client is still there after 60 s; leaving");
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
