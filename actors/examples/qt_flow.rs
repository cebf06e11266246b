//! Qt's five steps, in pull mode: `listen` → `newConnection` → `nextPendingConnection` →
//! `readyRead` → `readAll` → `write` → `disconnected`.
//!
//! ```text
//! cargo run -p switchboard --example qt_flow                     # 127.0.0.1:7880
//! cargo run -p switchboard --example qt_flow -- 127.0.0.1:0
//! ```
//!
//! Then `echo hello | nc -N 127.0.0.1 7880`: the server answers `HELLO`, the client closes,
//! and the example exits after that one client (or after 30 s with none).
//!
//! The owner of a Qt server is the object that created it (`new QTcpServer(this)`). Here the
//! owner is an actor that needs the listener's handle (to ask for the next pending connection)
//! while the listener needs the owner (to announce connections): [`Actor::create`] hands out
//! the owner's address before the owner exists, so the listener is bound in between.

use std::{net::SocketAddr, time::Duration};

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, ResponseActFuture, WrapFuture};
use bytes::Bytes;
use switchboard::{
    Listener, ListenerEvent, ListenerHandle, NextPendingConnection, Notify, NotifyEvent,
};
use switchboard_codec::Raw;

/// The owner: Qt's `QObject` with the slots connected to the server's and socket's signals.
struct Owner {
    listener: ListenerHandle,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Actor for Owner {
    type Context = Context<Self>;
}

// `newConnection`: take it with `nextPendingConnection` and talk to it in Qt's pull style.
impl Handler<ListenerEvent> for Owner {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, event: ListenerEvent, ctx: &mut Context<Self>) -> Self::Result {
        let listener = self.listener.address().clone();
        let me = ctx.address();
        Box::pin(
            async move {
                match event {
                    ListenerEvent::NewConnection { id, peer } => {
                        println!("newConnection: {id} from {peer}");
                        if let Ok(Some(pending)) = listener.send(NextPendingConnection).await {
                            // The socket's signals come to this owner as `NotifyEvent`s.
                            let _ = pending.start(Raw, Notify::new(me.recipient()));
                        }
                    }
                    ListenerEvent::AcceptError { error, .. } => println!("acceptError: {error}"),
                    _ => {}
                }
            }
            .into_actor(self),
        )
    }
}

impl Handler<NotifyEvent> for Owner {
    type Result = ();

    fn handle(&mut self, event: NotifyEvent, ctx: &mut Context<Self>) {
        match event {
            NotifyEvent::Connected { info, .. } => println!("connected: {}", info.peer_addr),
            // `readyRead`: take what waits with `readAll`, answer with `write`.
            NotifyEvent::ReadyRead { handle, .. } => {
                let data = handle.read_all();
                println!("readyRead: {} bytes", data.len());
                let answer = Bytes::from(data.to_ascii_uppercase());
                let handle = handle.clone();
                ctx.spawn(
                    async move {
                        if let Err(error) = handle.write(answer).await {
                            println!("write failed: {error}");
                        }
                    }
                    .into_actor(self),
                );
            }
            NotifyEvent::ReadFinished { .. } => println!("readChannelFinished"),
            // `disconnected`: whatever was still buffered stays readable through the handle.
            NotifyEvent::Disconnected { reason, handle, .. } => {
                println!(
                    "disconnected: {reason} ({} bytes left unread)",
                    handle.bytes_available()
                );
                if let Some(done) = self.done.take() {
                    let _ = done.send(());
                }
                ctx.stop();
            }
            _ => {}
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7880".to_string())
        .parse()?;
    actix_rt::System::new().block_on(async move {
        let (done, finished) = tokio::sync::oneshot::channel();
        let mut bound = None;
        // `listen`: the owner's address exists before the owner, so the listener can report
        // to it, and the owner can keep the listener's handle.
        let _owner = Owner::create(|ctx| {
            let listener = Listener::bind(addr)
                .workers(1)
                .pull(ctx.address().recipient())
                .expect("binds");
            bound = Some(listener.local_addr());
            Owner {
                listener,
                done: Some(done),
            }
        });
        println!("listening on {}", bound.expect("bound in create"));
        // One client, or 30 s without one.
        let _ = tokio::time::timeout(Duration::from_secs(30), finished).await;
        Ok(())
    })
}
