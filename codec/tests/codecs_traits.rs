//! The codecs and their error can be moved into actors and across threads.

use switchboard_codec::{CodecError, Frames, Lines, Raw};
use tokio_util::codec::{Decoder, Encoder};

fn assert_codec<T: Send + Sync + Unpin + Clone + std::fmt::Debug + 'static>() {}

fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}

fn assert_decoder<D: Decoder<Error = CodecError>>() {}

fn assert_encoder<T, E: Encoder<T, Error = CodecError>>() {}

#[test]
fn codecs_are_send_sync_unpin_static_clone_debug() {
    assert_codec::<Raw>();
    assert_codec::<Lines>();
    assert_codec::<Frames>();
}

#[test]
fn codec_error_is_a_send_sync_static_error() {
    assert_error::<CodecError>();
}

#[test]
fn every_codec_reports_codec_error_for_every_item_type() {
    assert_decoder::<Raw>();
    assert_decoder::<Lines>();
    assert_decoder::<Frames>();

    assert_encoder::<bytes::Bytes, Raw>();
    assert_encoder::<bytes::BytesMut, Raw>();
    assert_encoder::<&[u8], Raw>();
    assert_encoder::<Vec<u8>, Raw>();

    assert_encoder::<String, Lines>();
    assert_encoder::<&str, Lines>();
    assert_encoder::<bytes::Bytes, Lines>();

    assert_encoder::<bytes::Bytes, Frames>();
    assert_encoder::<bytes::BytesMut, Frames>();
    assert_encoder::<&[u8], Frames>();
    assert_encoder::<Vec<u8>, Frames>();
}

#[test]
fn cloned_codec_keeps_its_limit() {
    let lines = Lines::with_max_length(12);
    assert_eq!(lines.clone().max_length(), 12);
    let frames = Frames::with_max_frame_length(34);
    assert_eq!(frames.clone().max_frame_length(), 34);
    assert!(format!("{lines:?}").contains("12"));
    assert!(format!("{frames:?}").contains("34"));
}
