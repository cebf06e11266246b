//! A session framed by a codec from another crate: tokio-util's [`LengthDelimitedCodec`].
//!
//! ```text
//! cargo run -p switchboard --example custom_codec
//! ```
//!
//! The program runs a server and its own client over loopback and exits when the client is
//! done (within 10 s at most). The frames have a 2-byte big-endian length header and at most
//! 64 bytes of payload, a layout `switchboard_codec::Frames` (4-byte header) does not speak.
//!
//! A session takes any [`SessionCodec`]: a tokio-util `Decoder` that also implements
//! `Encoder<Bytes>` (so the registry can send to and broadcast over any session), whose errors
//! are `std::error::Error + Send + Sync`. The handler gets the decoder's `Item` (`BytesMut`
//! here) and [`Conn::write`] takes whatever the codec encodes (`Bytes` here). A listener also
//! needs the codec to be `Clone + Send + Sync`, since each session gets its own clone.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use switchboard::{
    Conn, Connector, DisconnectReason, Listener, SessionCodec, SessionHandler, SessionInfo,
};
use tokio::sync::oneshot;
use tokio_util::codec::LengthDelimitedCodec;

/// The most payload a frame may carry, in either direction.
const MAX_FRAME: usize = 64;

/// The wire format both ends agree on.
fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u16>()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

// Not needed to run: it only shows, at compile time, that the codec qualifies.
const _: fn() = || {
    fn is_session_codec<C: SessionCodec + Clone + Send + Sync>() {}
    is_session_codec::<LengthDelimitedCodec>();
};

/// The server's handler: answers each frame with its bytes reversed.
struct Reverse;

impl SessionHandler<LengthDelimitedCodec> for Reverse {
    fn ready_read(&mut self, frame: BytesMut, conn: &mut Conn<'_, LengthDelimitedCodec, Self>) {
        let mut reply = frame.to_vec();
        reply.reverse();
        let _ = conn.write(Bytes::from(reply));
    }
}

/// The client's handler: sends a few frames and prints what comes back.
struct Client {
    replies_due: usize,
    done: Option<oneshot::Sender<()>>,
}

impl SessionHandler<LengthDelimitedCodec> for Client {
    fn connected(&mut self, conn: &mut Conn<'_, LengthDelimitedCodec, Self>) {
        for payload in [&b"stressed"[..], b"drawer", b""] {
            conn.write(Bytes::from_static(payload))
                .expect("small frames fit");
            self.replies_due += 1;
        }
        // The limit holds on the way out too: the codec refuses to encode this one, and
        // `write` reports it as `SessionError::Encode` without sending anything.
        match conn.write(Bytes::from(vec![b'x'; MAX_FRAME + 1])) {
            Ok(()) => println!("unexpected: an oversized frame was accepted"),
            Err(error) => println!("not sent: {error}"),
        }
    }

    fn ready_read(&mut self, frame: BytesMut, conn: &mut Conn<'_, LengthDelimitedCodec, Self>) {
        println!("reply: {:?}", String::from_utf8_lossy(&frame));
        self.replies_due -= 1;
        if self.replies_due == 0 {
            conn.disconnect_from_host();
        }
    }

    fn disconnected(&mut self, reason: &DisconnectReason, info: &SessionInfo) {
        println!(
            "client done ({reason}): {} frames out, {} in",
            info.frames_out, info.frames_in
        );
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server: one clone of the codec per session.
    let server = Listener::bind("127.0.0.1:0")
        .workers(1)
        .serve(codec(), || Reverse)?;
    println!("listening on {}", server.local_addr());

    // The client, framed the same way.
    let (done, finished) = oneshot::channel();
    let client = Client {
        replies_due: 0,
        done: Some(done),
    };
    Connector::new()
        .connect(&server.local_addr().to_string(), codec(), client)
        .await?;

    tokio::time::timeout(Duration::from_secs(10), finished)
        .await
        .map_err(|_| "the client did not finish within 10 s")??;
    server.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
