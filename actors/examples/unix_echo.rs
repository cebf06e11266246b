//! An echo server on a Unix domain socket (Qt's `QLocalServer`), with a client in the same
//! program (Qt's `QLocalSocket`).
//!
//! ```text
//! cargo run -p switchboard --example unix_echo                       # /tmp/switchboard-echo.sock
//! cargo run -p switchboard --example unix_echo -- /tmp/x.sock --serve 30
//! ```
//!
//! By default it connects to itself, echoes one line, prints who the peer was (the kernel
//! tells a Unix socket the connecting process's uid and pid) and exits. With `--serve SECS` it
//! serves for that long instead: try `socat - UNIX-CONNECT:/tmp/x.sock`. The socket file is
//! made with mode 0600 (only this user may connect), a stale one left by a crashed run is
//! replaced, and it is removed when the server stops.

use std::{path::PathBuf, time::Duration};

use switchboard::{Conn, Connector, Listener, SessionHandler};
use switchboard_codec::Lines;
use tokio::sync::oneshot;

struct Echo;

impl SessionHandler<Lines> for Echo {
    fn connected(&mut self, conn: &mut Conn<'_, Lines, Self>) {
        println!("connected: {}", conn.peer_addr());
    }
    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        let _ = conn.write(line);
    }
}

struct Client(Option<oneshot::Sender<String>>);

impl SessionHandler<Lines> for Client {
    fn connected(&mut self, conn: &mut Conn<'_, Lines, Self>) {
        let _ = conn.write("hello over a Unix socket");
    }
    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        if let Some(done) = self.0.take() {
            let _ = done.send(line);
        }
        conn.disconnect_from_host();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut path = PathBuf::from("/tmp/switchboard-echo.sock");
    let mut serve_for = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--serve" => {
                let secs: u64 = args.next().ok_or("--serve needs seconds")?.parse()?;
                serve_for = Some(Duration::from_secs(secs));
            }
            other => path = PathBuf::from(other),
        }
    }
    actix_rt::System::new().block_on(async move {
        let server = Listener::bind(path.as_path())
            .workers(1)
            .serve(Lines::new(), || Echo)?;
        println!("listening on unix:{}", path.display());
        if let Some(duration) = serve_for {
            tokio::time::sleep(duration).await;
        } else {
            let (done, answer) = oneshot::channel();
            Connector::new()
                .connect(path.as_path(), Lines::new(), Client(Some(done)))
                .await?;
            let line = tokio::time::timeout(Duration::from_secs(10), answer).await??;
            println!("echo: {line}");
        }
        server.shutdown(Duration::from_secs(2)).await;
        println!("removed: {}", !path.exists());
        Ok(())
    })
}
