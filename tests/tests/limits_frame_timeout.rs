//! The partial-frame timeout counts only a frame the peer has not finished sending: complete
//! frames held back by this side (a pause) are never the peer's fault, and a decoder that has
//! already consumed a frame's header (`Frames`) is still waiting on the peer.

use std::{io::Write as _, time::Duration};

use bytes::Bytes;
use switchboard::{Conn, DisconnectReason, Listener, SessionConfig, SessionHandler, SessionInfo};
use switchboard_codec::{Frames, Lines};
use switchboard_tests::{any_port, within};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

fn short_frame_timeout() -> SessionConfig {
    SessionConfig::default()
        .with_idle_timeout(None)
        .with_frame_timeout(Some(Duration::from_millis(200)))
}

struct PauseOnFirst(UnboundedSender<DisconnectReason>);
impl SessionHandler<Lines> for PauseOnFirst {
    fn ready_read(&mut self, _: String, conn: &mut Conn<'_, Lines, Self>) {
        conn.pause_reading();
    }
    fn disconnected(&mut self, reason: &DisconnectReason, _: &SessionInfo) {
        let _ = self.0.send(reason.clone());
    }
}

#[actix_rt::test]
async fn complete_frames_held_by_a_pause_do_not_time_out() {
    let (tx, mut ended) = unbounded_channel();
    let server = Listener::bind(any_port())
        .workers(1)
        .session_config(short_frame_timeout())
        .serve(Lines::new(), move || PauseOnFirst(tx.clone()))
        .unwrap();
    let mut client = std::net::TcpStream::connect(server.local_addr()).unwrap();
    client.write_all(b"a\nb\nc\n").unwrap();
    within("the session to start", server.registry().wait_for_count(1)).await;
    // Five frame timeouts long: a pause holding complete lines must not end the session. (A
    // loaded machine can only make this pass wrongly, never fail wrongly.)
    let outcome = tokio::time::timeout(Duration::from_secs(1), ended.recv()).await;
    assert!(outcome.is_err(), "paused session ended: {outcome:?}");
    assert_eq!(server.registry().count(), 1);
}

struct Quiet(UnboundedSender<DisconnectReason>);
impl SessionHandler<Frames> for Quiet {
    fn ready_read(&mut self, _: Bytes, _: &mut Conn<'_, Frames, Self>) {}
    fn disconnected(&mut self, reason: &DisconnectReason, _: &SessionInfo) {
        let _ = self.0.send(reason.clone());
    }
}

#[actix_rt::test]
async fn a_frame_header_followed_by_silence_times_out() {
    let (tx, mut ended) = unbounded_channel();
    let server = Listener::bind(any_port())
        .workers(1)
        .session_config(short_frame_timeout())
        .serve(Frames::new(), move || Quiet(tx.clone()))
        .unwrap();
    let mut client = std::net::TcpStream::connect(server.local_addr()).unwrap();
    client.write_all(&[0, 0, 0, 10]).unwrap();
    let reason = within("the frame timeout", ended.recv()).await;
    assert!(
        matches!(reason, Some(DisconnectReason::FrameTimeout)),
        "{reason:?}"
    );
}
