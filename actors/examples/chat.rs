//! A chat room on [`Registry::broadcast`]: every line a client sends goes to all the others.
//!
//! ```text
//! cargo run -p switchboard --example chat                    # 127.0.0.1:7879, 60 s
//! cargo run -p switchboard --example chat -- 127.0.0.1:0 --timeout 10
//! ```
//!
//! Connect with `nc 127.0.0.1 7879` from two terminals and type. The room stops by itself
//! after `--timeout` seconds (default 60).
//!
//! It shows the flow-control rule a broadcast follows. A line goes into each member's outbound
//! queue (bounded in bytes). When a member's queue is full but it still reads, the broadcast
//! waits for it, and the sender's session waits for its broadcast before it takes its next
//! line (by returning the pending broadcast from `poll_ready`): the sender's socket is then not
//! read, and TCP slows the sending client down to what the readers take. No line of a member
//! that reads is ever dropped. A member that takes nothing for the slow-consumer timeout
//! (here 2 s) is a *slow consumer*: with [`SlowConsumerPolicy::Drop`] it misses lines (each
//! counted) until it reads again, so it holds the room up for at most that long.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use switchboard::{
    Broadcasting, Conn, DisconnectReason, Listener, Registry, SessionConfig, SessionHandler,
    SessionInfo, SlowConsumerPolicy,
};
use switchboard_codec::Lines;

/// One member of the room; lives on its session's worker thread.
struct Member {
    registry: Registry,
    /// The broadcast of this member's last line, while some member's queue was full.
    relaying: Option<Broadcasting>,
}

impl SessionHandler<Lines> for Member {
    fn connected(&mut self, conn: &mut Conn<'_, Lines, Self>) {
        // The session is registered before `connected` runs: the count includes it.
        let _ = conn.write(format!(
            "* welcome {}, {} here",
            conn.id(),
            self.registry.count()
        ));
        println!("{} joined from {}", conn.id(), conn.peer_addr());
    }

    // Asked before each line is handed over: "not yet" while the last broadcast still waits
    // for a member with a full queue. The session then reads no more from this client.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(broadcast) = &mut self.relaying {
            let report = std::task::ready!(Pin::new(broadcast).poll(cx));
            if report.dropped > 0 {
                println!("a line skipped {} slow consumer(s)", report.dropped);
            }
            self.relaying = None;
        }
        Poll::Ready(())
    }

    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        let message = Bytes::from(format!("[{}] {line}", conn.id()));
        // Queued at once for every member with room; the rest are waited for.
        let broadcast = self
            .registry
            .broadcast(message, Some(conn.id()), SlowConsumerPolicy::Drop);
        if !broadcast.is_done() {
            self.relaying = Some(broadcast);
        }
    }

    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        println!(
            "{} left ({reason}); it missed {} line(s)",
            info.id, info.broadcasts_dropped
        );
    }
}

fn parse_args() -> Result<(SocketAddr, Duration), String> {
    let mut addr: SocketAddr = "127.0.0.1:7879".parse().map_err(|e| format!("{e}"))?;
    let mut timeout = Duration::from_secs(60);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--timeout" => {
                let secs = args.next().ok_or("--timeout needs seconds")?;
                timeout = Duration::from_secs(secs.parse().map_err(|_| "bad --timeout")?);
            }
            other => {
                addr = other
                    .parse()
                    .map_err(|_| format!("`{other}` is not an address"))?
            }
        }
    }
    Ok((addr, timeout))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (addr, timeout) = parse_args()?;
    actix_rt::System::new().block_on(async move {
        // The handlers need the registry: make it here and give it to the listener too.
        let registry = Registry::new();
        let for_members = registry.clone();
        let server = Listener::bind(addr)
            .registry(registry)
            .session_config(
                SessionConfig::default().with_slow_consumer_timeout(Duration::from_secs(2)),
            )
            .serve(Lines::new(), move || Member {
                registry: for_members.clone(),
                relaying: None,
            })?;
        println!("listening on {}", server.local_addr());
        tokio::time::sleep(timeout).await;
        let report = server.shutdown(Duration::from_secs(5)).await;
        let stats = server.registry().stats();
        println!(
            "closed: {} members drained, {} lines dropped for slow consumers",
            report.drained, stats.broadcasts_dropped
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
