//! An oversized line or frame closes that connection with a typed error
//! (`DisconnectReason::Codec`, downcastable to `switchboard_codec::CodecError`) while another
//! connection on the same server keeps working; a partial frame that never completes is ended
//! by the frame timeout.

use std::{
    io::{BufReader, Read, Write as _},
    net::TcpStream,
    time::Duration,
};

use bytes::Bytes;
use switchboard::{DisconnectReason, Listener, SessionConfig};
use switchboard_codec::{CodecError, Frames, Lines};
use switchboard_tests::{
    any_port, blocking, codec_error, echo_line, ended_once, read_to_eof, std_connect, within,
    Probes,
};

#[actix_rt::test]
async fn line_over_limit_closes_only_that_session() {
    let (probes, mut events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(2)
        .serve(Lines::with_max_length(64), probes.factory())
        .unwrap();
    let addr = server.local_addr();

    let good = std_connect(addr);
    let (good_info, _) = events.connected_from(good.local_addr().unwrap()).await;
    let mut good = BufReader::new(good);
    let good = blocking("the good client", move || {
        assert_eq!(echo_line(&mut good, "fine"), "fine");
        // Exactly at the limit is still fine.
        let at_limit = "a".repeat(64);
        assert_eq!(echo_line(&mut good, &at_limit), at_limit);
        good
    })
    .await;

    let mut bad = std_connect(addr);
    let (bad_info, _) = events.connected_from(bad.local_addr().unwrap()).await;
    let bad = blocking("the bad client", move || {
        bad.write_all(format!("{}\n", "b".repeat(65)).as_bytes())
            .unwrap();
        read_to_eof(&mut bad, true)
    })
    .await;
    assert!(bad.is_empty(), "the long line was answered");
    let reason = ended_once(&probes, &mut events, bad_info.id).await;
    let error = codec_error(&reason);
    assert!(
        matches!(error, CodecError::LineTooLong { limit: 64 }),
        "{error:?}"
    );
    assert!(error.is_limit());
    assert!(reason.is_error());
    assert_eq!(
        reason.to_string(),
        "bad input: line exceeds the 64-byte limit"
    );

    // The other connection carries on.
    let mut good = good;
    let good = blocking("the good client again", move || {
        assert_eq!(echo_line(&mut good, "still here"), "still here");
        good
    })
    .await;
    assert_eq!(server.registry().count(), 1);
    drop(good);
    let reason = ended_once(&probes, &mut events, good_info.id).await;
    assert!(matches!(reason, DisconnectReason::PeerClosed), "{reason:?}");
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).unwrap();
    let mut payload = vec![0u8; u32::from_be_bytes(head) as usize];
    stream.read_exact(&mut payload).unwrap();
    payload
}

#[actix_rt::test]
async fn frame_over_limit_closes_only_that_session() {
    let (probes, mut events) = Probes::<Frames>::echo();
    let server = Listener::bind(any_port())
        .workers(2)
        .serve(Frames::with_max_frame_length(1024), probes.factory())
        .unwrap();
    let addr = server.local_addr();

    let mut good = std_connect(addr);
    let (good_info, _) = events.connected_from(good.local_addr().unwrap()).await;
    let mut bad = std_connect(addr);
    let (bad_info, _) = events.connected_from(bad.local_addr().unwrap()).await;

    let good = blocking("the good client", move || {
        good.write_all(&frame(&[7u8; 1024])).unwrap();
        assert_eq!(read_frame(&mut good), vec![7u8; 1024]);
        good
    })
    .await;
    let bad = blocking("the bad client", move || {
        // The declared length alone condemns it: the payload never needs to arrive.
        bad.write_all(&4096u32.to_be_bytes()).unwrap();
        bad.write_all(&[1u8; 100]).unwrap();
        read_to_eof(&mut bad, true)
    })
    .await;
    assert!(bad.is_empty());
    let reason = ended_once(&probes, &mut events, bad_info.id).await;
    let error = codec_error(&reason);
    assert!(
        matches!(
            error,
            CodecError::FrameTooLong {
                len: 4096,
                limit: 1024
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        events.frame(good_info.id).await,
        Bytes::from(vec![7u8; 1024])
    );

    let mut good = good;
    let good = blocking("the good client again", move || {
        good.write_all(&frame(b"after")).unwrap();
        assert_eq!(read_frame(&mut good), b"after");
        good
    })
    .await;
    drop(good);
    ended_once(&probes, &mut events, good_info.id).await;
}

/// A peer that starts a frame and never finishes it is closed by the frame timeout.
#[actix_rt::test]
async fn partial_frame_is_ended_by_the_frame_timeout() {
    let (probes, mut events) = Probes::<Frames>::echo();
    let server = Listener::bind(any_port())
        .workers(1)
        .session_config(
            SessionConfig::default()
                .with_idle_timeout(None)
                .with_frame_timeout(Some(Duration::from_millis(200))),
        )
        .serve(Frames::new(), probes.factory())
        .unwrap();
    let mut client = std_connect(server.local_addr());
    let (info, _) = events.connected_from(client.local_addr().unwrap()).await;
    let client = blocking("the slow client", move || {
        // Two of the four header bytes, then nothing.
        client.write_all(&[0, 0]).unwrap();
        read_to_eof(&mut client, true)
    })
    .await;
    assert!(client.is_empty());
    let reason = within("the end", ended_once(&probes, &mut events, info.id)).await;
    assert!(
        matches!(reason, DisconnectReason::FrameTimeout),
        "{reason:?}"
    );
}
