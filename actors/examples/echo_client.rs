//! An echo client: sends lines, prints each reply, and closes once every line has come back.
//!
//! ```text
//! cargo run -p switchboard --example echo_server &
//! cargo run -p switchboard --example echo_client                        # 127.0.0.1:7878
//! cargo run -p switchboard --example echo_client -- 127.0.0.1:7878 one two three
//! ```
//!
//! It gives up after 10 s if the server never answers.
//!
//! It shows the client side of push mode: [`Connector::connect`] (Qt's `connectToHost`) starts
//! the same `Session` actor a server uses, and the [`SessionHandler`] hears `connected` first.

use std::time::Duration;

use switchboard::{Conn, Connector, DisconnectReason, SessionHandler, SessionInfo};
use switchboard_codec::Lines;
use tokio::sync::oneshot;

/// The client's state: what it still has to send, and how many replies it waits for.
struct Client {
    lines: Vec<String>,
    replies_due: usize,
    /// Tells `main` how the session ended and how many replies never came.
    done: Option<oneshot::Sender<(DisconnectReason, usize)>>,
}

impl SessionHandler<Lines> for Client {
    // Qt's `connected`: the socket is up, so send everything. `Lines` adds the `\n`.
    fn connected(&mut self, conn: &mut Conn<'_, Lines, Self>) {
        println!("connected to {}", conn.peer_addr());
        for line in self.lines.drain(..) {
            // A handful of short lines cannot fill the write buffer (64 KiB by default).
            conn.write(line).expect("the write buffer has room");
        }
    }

    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        println!("echo: {line}");
        self.replies_due -= 1;
        if self.replies_due == 0 {
            // Qt's `disconnectFromHost`: flush what is left, then close gracefully.
            conn.disconnect_from_host();
        }
    }

    fn disconnected(&mut self, reason: &DisconnectReason, _info: &SessionInfo) {
        if let Some(done) = self.done.take() {
            let _ = done.send((reason.clone(), self.replies_due));
        }
    }
}

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server = args.next().unwrap_or_else(|| "127.0.0.1:7878".to_owned());
    let mut lines: Vec<String> = args.collect();
    if lines.is_empty() {
        lines = vec!["hello".to_owned(), "switchboard".to_owned()];
    }

    let (done, ended) = oneshot::channel();
    let client = Client {
        replies_due: lines.len(),
        lines,
        done: Some(done),
    };

    // Resolves the name, connects (within 5 s here; 10 s by default) and starts the session on
    // this thread. The returned `Addr<Session<..>>` could be kept to send it `Write` messages.
    Connector::new()
        .timeout(Duration::from_secs(5))
        .connect(&server, Lines::new(), client)
        .await?;

    // `disconnected` runs exactly once, so `ended` always gets an answer unless the server
    // stalls; the timeout covers that.
    let (reason, missing) = tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .map_err(|_| "no reply within 10 s")??;
    println!("disconnected: {reason}");
    if missing > 0 {
        return Err(format!("{missing} replies never came").into());
    }
    Ok(())
}
