//! Peers that leave badly. A peer that resets in the middle of a frame ends only its own
//! session, with `DisconnectReason::Reset`, and the half frame never reaches the handler. A
//! peer that pipelines far more requests than the write buffer holds and then half-closes
//! (shuts its write side) still receives every answer before the server closes.
//!
//! `session_disconnect.rs` already proves a reset between frames and a half-closed peer
//! reading a long answer the server wrote of its own accord.

use std::{
    io::{BufRead, BufReader, Read, Write as _},
    net::Shutdown,
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use switchboard::{DisconnectReason, Listener, SessionConfig};
use switchboard_codec::{Frames, Lines};
use switchboard_tests::{
    any_port, blocking, ended_once, read_to_eof, std_connect, within, Event, Probes,
};
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, Encoder};

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

fn read_frame(stream: &mut std::net::TcpStream) -> Vec<u8> {
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).unwrap();
    let mut payload = vec![0u8; u32::from_be_bytes(head) as usize];
    stream.read_exact(&mut payload).unwrap();
    payload
}

/// [`Frames`] that reports, after every decode call, how many bytes its session has taken
/// from the socket so far (the bytes decoded plus those still buffered): the event of the
/// server holding a half frame, which no handler callback shows.
#[derive(Clone)]
struct Watched {
    inner: Frames,
    /// Bytes taken out of the read buffer by decoded frames (headers included).
    consumed: usize,
    read: mpsc::UnboundedSender<usize>,
}

impl Watched {
    fn new(read: mpsc::UnboundedSender<usize>) -> Watched {
        Watched {
            inner: Frames::new(),
            consumed: 0,
            read,
        }
    }

    fn report<T>(
        &mut self,
        buf: &mut BytesMut,
        decode: impl FnOnce(&mut Frames, &mut BytesMut) -> T,
    ) -> T {
        let before = buf.len();
        let out = decode(&mut self.inner, buf);
        self.consumed += before - buf.len();
        let _ = self.read.send(self.consumed + buf.len());
        out
    }
}

impl Decoder for Watched {
    type Item = Bytes;
    type Error = switchboard_codec::CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Self::Error> {
        self.report(buf, |inner, buf| inner.decode(buf))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Self::Error> {
        self.report(buf, |inner, buf| inner.decode_eof(buf))
    }
}

impl Encoder<Bytes> for Watched {
    type Error = <Frames as Encoder<Bytes>>::Error;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), Self::Error> {
        self.inner.encode(item, dst)
    }
}

/// Waits until a decode call reports that its session has read `bytes`.
async fn until_read(read: &mut mpsc::UnboundedReceiver<usize>, bytes: usize) {
    within("the session to read the bytes sent", async {
        while let Some(seen) = read.recv().await {
            if seen >= bytes {
                return;
            }
        }
        panic!("every session's codec is gone");
    })
    .await;
}

#[actix_rt::test]
async fn reset_in_the_middle_of_a_frame_ends_only_that_session() {
    let (probes, mut events) = Probes::<Watched>::echo();
    let (read, mut bytes_read) = mpsc::unbounded_channel();
    // One worker: the survivor shares its thread with the reset session.
    let server = Listener::bind(any_port())
        .workers(1)
        .serve(Watched::new(read), probes.factory())
        .unwrap();
    let addr = server.local_addr();

    let mut good = std_connect(addr);
    let (good_info, _) = events.connected_from(good.local_addr().unwrap()).await;
    let mut bad = std_connect(addr);
    let (bad_info, _) = events.connected_from(bad.local_addr().unwrap()).await;

    // A whole frame, then the header and 100 bytes of a 1,000-byte frame.
    let mut sent = frame(b"complete");
    sent.extend_from_slice(&1000u32.to_be_bytes());
    sent.extend_from_slice(&[9u8; 100]);
    let bad = blocking("the bad client's frames", move || {
        bad.write_all(&sent).unwrap();
        assert_eq!(read_frame(&mut bad), b"complete");
        bad
    })
    .await;
    assert_eq!(
        events.frame(bad_info.id).await,
        Bytes::from_static(b"complete")
    );
    // The server holds the half frame when the reset comes. (Only the bad session's codec
    // has bytes to report so far: the good client has sent nothing yet.)
    until_read(&mut bytes_read, 8 + 4 + 104).await;
    // SO_LINGER 0, then close: RST instead of FIN.
    socket2::SockRef::from(&bad)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(bad);

    let reason = ended_once(&probes, &mut events, bad_info.id).await;
    assert!(matches!(reason, DisconnectReason::Reset), "{reason:?}");
    // The half frame never reached the handler.
    let frames_after = events
        .drain_now()
        .into_iter()
        .filter(|e| matches!(e, Event::Frame { id, .. } if *id == bad_info.id))
        .count();
    assert_eq!(frames_after, 0);
    assert!(server.registry().get(bad_info.id).is_none());
    assert_eq!(server.registry().count(), 1);

    // The other session, on the same thread, carries on; so does the listener.
    let good = blocking("the good client", move || {
        good.write_all(&frame(b"still here")).unwrap();
        assert_eq!(read_frame(&mut good), b"still here");
        let mut newcomer = std_connect(addr);
        newcomer.write_all(&frame(b"newcomer")).unwrap();
        assert_eq!(read_frame(&mut newcomer), b"newcomer");
        good
    })
    .await;
    drop(good);
    ended_once(&probes, &mut events, good_info.id).await;
    within("the registry to empty", server.registry().wait_for_count(0)).await;
}

/// Lines the client pipelines before it half-closes: about 1.9 MB, thirty times the write
/// buffer's high watermark.
const LINES: usize = 50_000;

#[actix_rt::test]
async fn half_closed_peer_receives_every_pipelined_answer() {
    let (probes, mut events) = Probes::<Lines>::echo();
    let config = SessionConfig::default().with_write_watermarks(16 * 1024, 32 * 1024);
    let server = Listener::bind(any_port())
        .workers(1)
        .session_config(config)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();

    let stream = std_connect(addr);
    let peer = stream.local_addr().unwrap();
    let mut writer = stream.try_clone().unwrap();
    // Sends every request without reading, then shuts its write side.
    let sender = std::thread::spawn(move || {
        let mut sent = 0;
        for i in 0..LINES {
            let line = format!("request {i:08} of the pipelined batch\n");
            writer.write_all(line.as_bytes()).unwrap();
            sent += line.len();
        }
        writer.shutdown(Shutdown::Write).unwrap();
        sent
    });
    let (info, _) = events.connected_from(peer).await;
    let answers = blocking("every answer, then EOF", move || {
        let mut reader = BufReader::new(stream);
        let mut answers = 0;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            assert_eq!(
                line,
                format!("request {answers:08} of the pipelined batch\n"),
                "answer {answers}"
            );
            answers += 1;
        }
        // Nothing after the EOF.
        assert!(read_to_eof(reader.get_mut(), false).is_empty());
        answers
    })
    .await;
    assert_eq!(answers, LINES);
    let sent = sender.join().unwrap() as u64;
    let (reason, last) = events.disconnected(info.id).await;
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
    assert_eq!(last.bytes_in, sent);
    assert_eq!(last.bytes_out, sent);
    assert_eq!(last.frames_in, LINES as u64);
    assert_eq!(last.bytes_discarded, 0);
    events.assert_no_refused_write();
    events.dropped(info.id).await;
    assert_eq!(probes.disconnects(info.id), 1);
    within("the registry to empty", server.registry().wait_for_count(0)).await;
}

/// Peers that keep sending while their sessions linger for their FIN (this side closed first)
/// get their bytes read and thrown away a few chunks per turn: a neighbour on the same worker
/// thread keeps its round trips, and the close timeout still ends the lingering sessions.
/// (Before the fix a lingering session read until the socket was empty, which a peer sending
/// faster than one thread reads never lets happen: the worker, its timers included, was
/// held.)
#[actix_rt::test]
async fn peers_flooding_lingering_sessions_starve_nobody() {
    const FLOODERS: usize = 4;
    // A delay under test: the close timeout must fire (seen as `CloseTimeout` below) while
    // the flooders never let the lingering sessions see their FIN.
    let close_timeout = Duration::from_millis(500);
    let (probes, mut events) = Probes::<Lines>::new(|line| {
        if line == "bye" {
            switchboard_tests::Action::DisconnectFromHost
        } else {
            switchboard_tests::Action::Echo
        }
    });
    let server = Listener::bind(any_port())
        .workers(1)
        .session_config(
            SessionConfig::default()
                .with_idle_timeout(None)
                .with_close_timeout(close_timeout),
        )
        .serve(Lines::with_max_length(1024 * 1024), probes.factory())
        .unwrap();
    let addr = server.local_addr();

    let good = std_connect(addr);
    let (good_info, _) = events.connected_from(good.local_addr().unwrap()).await;
    let mut floods = Vec::new();
    for _ in 0..FLOODERS {
        let mut flooder = std_connect(addr);
        let (info, _) = events.connected_from(flooder.local_addr().unwrap()).await;
        // "bye" makes the server close its side; then the flood, never a newline, until the
        // server's abort makes a write fail.
        let flood = std::thread::spawn(move || {
            flooder.write_all(b"bye\n").unwrap();
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0u64;
            while flooder.write_all(&chunk).is_ok() {
                sent += chunk.len() as u64;
            }
            sent
        });
        floods.push((info.id, flood));
    }
    for (id, _) in &floods {
        assert_eq!(events.frame(*id).await, "bye");
    }

    // Meanwhile the neighbour's round trips go on.
    let (good, slowest) = blocking("the neighbour's round trips", move || {
        let mut good = BufReader::new(good);
        let mut slowest = Duration::ZERO;
        for i in 0..50 {
            let line = format!("round trip {i}");
            let start = std::time::Instant::now();
            assert_eq!(switchboard_tests::echo_line(&mut good, &line), line);
            slowest = slowest.max(start.elapsed());
        }
        (good, slowest)
    })
    .await;
    // Milliseconds even on a loaded machine; seconds when the lingering sessions hold the
    // thread.
    assert!(
        slowest < Duration::from_millis(500),
        "slowest round trip {slowest:?}"
    );

    for (id, flood) in floods {
        let (reason, info) = events.disconnected(id).await;
        assert!(
            matches!(reason, DisconnectReason::CloseTimeout),
            "{reason:?}"
        );
        assert!(info.bytes_discarded > 0, "{info:?}");
        let sent = blocking("a flooder to see the abort", move || flood.join().unwrap()).await;
        // `sent` leaves out a chunk cut short by the abort.
        assert!(sent + 64 * 1024 >= info.bytes_discarded);
    }
    drop(good);
    let reason = ended_once(&probes, &mut events, good_info.id).await;
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
    within("the registry to empty", server.registry().wait_for_count(0)).await;
}
