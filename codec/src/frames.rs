//! [`Frames`]: length-prefixed binary frames.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::CodecError;

/// A codec for length-prefixed frames: a 4-byte big-endian `u32` length, then that many bytes.
///
/// Each item is the payload of one frame, without its header. The payload is taken
/// out of the read buffer as a [`Bytes`] without copying.
///
/// - **Limit.** A frame's payload may be at most
///   [`Frames::DEFAULT_MAX_FRAME_LENGTH`] (1 MiB) long, unless set with
///   [`Frames::with_max_frame_length`]. The header does not count.
/// - **A frame over the limit.** The decoder reads the declared length and checks
///   it before buffering or reserving anything for the frame, and gives
///   [`CodecError::FrameTooLong`]. After that the stream cannot be framed any
///   more: the caller should close the connection. Further calls give the same
///   error again.
/// - **Memory.** Once a header is read, the decoder reserves room for the rest of
///   that frame, but never more than [`Frames::RESERVE_STEP`] (64 KiB) ahead of the
///   bytes that actually arrived: a peer that declares a large frame and sends little
///   of it (slowloris) costs what it sent, not what it declared.
/// - **End of stream.** [`decode_eof`](Decoder::decode_eof) gives `None` at a frame
///   boundary, and [`CodecError::Truncated`] if the stream ended inside a header or
///   a payload.
///
/// The encoder writes the header and then the payload. It refuses a payload longer
/// than the limit with [`CodecError::FrameTooLong`] and writes nothing in that case.
/// It encodes [`Bytes`], [`BytesMut`], `&[u8]` and `Vec<u8>`. An empty payload is a
/// valid frame (a header of zero).
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use switchboard_codec::Frames;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = Frames::new();
/// let mut buf = BytesMut::new();
///
/// codec.encode(&b"hello"[..], &mut buf).unwrap();
/// assert_eq!(&buf[..], b"\x00\x00\x00\x05hello");
///
/// let frame = codec.decode(&mut buf).unwrap().unwrap();
/// assert_eq!(&frame[..], b"hello");
/// assert_eq!(codec.decode(&mut buf).unwrap(), None);
/// ```
#[derive(Debug, Clone)]
pub struct Frames {
    /// Longest payload accepted or sent, in bytes; never above `u32::MAX`, the most a
    /// header can declare.
    max_frame_length: usize,
    /// Where the decoder is in the current frame; it keeps a header already read
    /// while the payload trickles in.
    state: DecodeState,
}

/// Where the decoder is in the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    /// Waiting for the 4 header bytes of the next frame.
    Head,
    /// The header has been read and consumed; waiting for this many payload bytes.
    Data(usize),
}

impl Frames {
    /// The default limit on a frame's payload: 1 MiB (1,048,576 bytes).
    ///
    /// # Examples
    ///
    /// ```
    /// use switchboard_codec::Frames;
    ///
    /// assert_eq!(Frames::new().max_frame_length(), Frames::DEFAULT_MAX_FRAME_LENGTH);
    /// assert_eq!(Frames::DEFAULT_MAX_FRAME_LENGTH, 1_048_576);
    /// ```
    pub const DEFAULT_MAX_FRAME_LENGTH: usize = 1024 * 1024;

    /// The length of a frame's header: a big-endian `u32`, 4 bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::Frames;
    /// use tokio_util::codec::Encoder;
    ///
    /// let mut buf = BytesMut::new();
    /// Frames::new().encode(&b"abc"[..], &mut buf).unwrap();
    /// assert_eq!(buf.len(), Frames::HEADER_LEN + 3);
    /// ```
    pub const HEADER_LEN: usize = 4;

    /// The most the decoder reserves ahead of the bytes received, for a large frame.
    pub const RESERVE_STEP: usize = 64 * 1024;

    /// Creates a frame codec with the default limit, [`Frames::DEFAULT_MAX_FRAME_LENGTH`] (1 MiB).
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::Frames;
    /// use tokio_util::codec::Decoder;
    ///
    /// let mut codec = Frames::new();
    /// let mut buf = BytesMut::from(&b"\x00\x00\x00\x02hi"[..]);
    /// assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"hi");
    /// ```
    pub fn new() -> Self {
        Self::with_max_frame_length(Self::DEFAULT_MAX_FRAME_LENGTH)
    }

    /// Creates a frame codec that accepts payloads of at most `max` bytes.
    ///
    /// The header does not count toward `max`. `0` allows only empty frames. A
    /// value above `u32::MAX` is lowered to `u32::MAX`, the most a header can
    /// declare. The decoder and the encoder both use the limit; see [`Frames`] for
    /// what happens to a frame over it.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::{CodecError, Frames};
    /// use tokio_util::codec::Decoder;
    ///
    /// let mut codec = Frames::with_max_frame_length(2);
    /// // This header declares a 3-byte frame: it is refused before the payload arrives.
    /// let mut buf = BytesMut::from(&b"\x00\x00\x00\x03"[..]);
    /// assert!(matches!(
    ///     codec.decode(&mut buf),
    ///     Err(CodecError::FrameTooLong { len: 3, limit: 2 })
    /// ));
    /// ```
    pub fn with_max_frame_length(max: usize) -> Self {
        let header_max = usize::try_from(u32::MAX).unwrap_or(usize::MAX);
        Frames {
            max_frame_length: max.min(header_max),
            state: DecodeState::Head,
        }
    }

    /// Returns the limit on a frame's payload, in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use switchboard_codec::Frames;
    ///
    /// assert_eq!(Frames::with_max_frame_length(512).max_frame_length(), 512);
    /// ```
    pub fn max_frame_length(&self) -> usize {
        self.max_frame_length
    }

    /// Reads the header at the start of `buf`, checks the length it declares, and
    /// consumes it. Gives `None` while the header is incomplete.
    fn decode_head(&self, buf: &mut BytesMut) -> Result<Option<usize>, CodecError> {
        let Some(head) = buf.first_chunk::<{ Self::HEADER_LEN }>() else {
            return Ok(None);
        };
        let declared = u32::from_be_bytes(*head);
        // Checked before anything is reserved: a hostile header costs nothing.
        let len = usize::try_from(declared)
            .ok()
            .filter(|&len| len <= self.max_frame_length)
            .ok_or(CodecError::FrameTooLong {
                len: u64::from(declared),
                limit: self.max_frame_length,
            })?;
        buf.advance(Self::HEADER_LEN);
        // Room for the rest of this frame, and no more; at most one step ahead of
        // what arrived, so a declared length alone never allocates.
        buf.reserve(len.saturating_sub(buf.len()).min(Self::RESERVE_STEP));
        Ok(Some(len))
    }

    /// Writes the header and `payload` to `buf` after checking the limit; shared by
    /// every encoder.
    fn encode_frame(&self, payload: &[u8], buf: &mut BytesMut) -> Result<(), CodecError> {
        let header = u32::try_from(payload.len())
            .ok()
            .filter(|_| payload.len() <= self.max_frame_length)
            .ok_or(CodecError::FrameTooLong {
                len: u64::try_from(payload.len()).unwrap_or(u64::MAX),
                limit: self.max_frame_length,
            })?;
        buf.reserve(Self::HEADER_LEN.saturating_add(payload.len()));
        buf.put_u32(header);
        buf.extend_from_slice(payload);
        Ok(())
    }
}

impl Default for Frames {
    /// Same as [`Frames::new`]: the limit is [`Frames::DEFAULT_MAX_FRAME_LENGTH`] (1 MiB).
    ///
    /// # Examples
    ///
    /// ```
    /// use switchboard_codec::Frames;
    ///
    /// assert_eq!(Frames::default().max_frame_length(), 1024 * 1024);
    /// ```
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for Frames {
    type Item = Bytes;
    type Error = CodecError;

    /// Takes the next complete frame's payload from `buf`, or gives `None` until one
    /// has arrived.
    ///
    /// # Errors
    ///
    /// [`CodecError::FrameTooLong`] when a header declares a frame longer than the
    /// limit. The stream is then unusable; further calls give the same error.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::Frames;
    /// use tokio_util::codec::Decoder;
    ///
    /// let mut codec = Frames::new();
    /// let mut buf = BytesMut::from(&b"\x00\x00"[..]);
    /// assert_eq!(codec.decode(&mut buf).unwrap(), None);
    ///
    /// buf.extend_from_slice(b"\x00\x03ab");
    /// assert_eq!(codec.decode(&mut buf).unwrap(), None);
    ///
    /// buf.extend_from_slice(b"c\x00\x00\x00\x00");
    /// assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"abc");
    /// // An empty frame.
    /// assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"");
    /// ```
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        let len = match self.state {
            DecodeState::Head => match self.decode_head(buf)? {
                Some(len) => {
                    self.state = DecodeState::Data(len);
                    len
                }
                None => return Ok(None),
            },
            DecodeState::Data(len) => len,
        };
        if buf.len() < len {
            return Ok(None);
        }
        self.state = DecodeState::Head;
        Ok(Some(buf.split_to(len).freeze()))
    }

    /// Like [`decode`](Frames::decode), but bytes left over at the end of the stream
    /// are an error instead of waiting for more.
    ///
    /// # Errors
    ///
    /// Those of [`decode`](Frames::decode), and [`CodecError::Truncated`] if the
    /// stream ended inside a header or a payload. `buffered` counts the bytes of the
    /// unfinished frame that arrived, header included.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::{CodecError, Frames};
    /// use tokio_util::codec::Decoder;
    ///
    /// let mut codec = Frames::new();
    /// let mut buf = BytesMut::from(&b"\x00\x00\x00\x01a\x00\x00\x00\x05ab"[..]);
    ///
    /// assert_eq!(&codec.decode_eof(&mut buf).unwrap().unwrap()[..], b"a");
    /// assert!(matches!(
    ///     codec.decode_eof(&mut buf),
    ///     Err(CodecError::Truncated { buffered: 6 })
    /// ));
    /// ```
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        match self.state {
            DecodeState::Head if buf.is_empty() => Ok(None),
            DecodeState::Head => Err(CodecError::Truncated {
                buffered: buf.len(),
            }),
            DecodeState::Data(_) => Err(CodecError::Truncated {
                buffered: buf.len().saturating_add(Self::HEADER_LEN),
            }),
        }
    }
}

impl Encoder<Bytes> for Frames {
    type Error = CodecError;

    /// Writes a header and the payload.
    ///
    /// # Errors
    ///
    /// [`CodecError::FrameTooLong`] if the payload is longer than the limit. Nothing
    /// is written then.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::{Bytes, BytesMut};
    /// use switchboard_codec::Frames;
    /// use tokio_util::codec::Encoder;
    ///
    /// let mut buf = BytesMut::new();
    /// Frames::new().encode(Bytes::from_static(b"hi"), &mut buf).unwrap();
    /// assert_eq!(&buf[..], b"\x00\x00\x00\x02hi");
    /// ```
    fn encode(&mut self, payload: Bytes, buf: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_frame(&payload, buf)
    }
}

impl Encoder<BytesMut> for Frames {
    type Error = CodecError;

    /// Writes a header and the payload.
    ///
    /// # Errors
    ///
    /// [`CodecError::FrameTooLong`] if the payload is longer than the limit. Nothing
    /// is written then.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::Frames;
    /// use tokio_util::codec::Encoder;
    ///
    /// let mut buf = BytesMut::new();
    /// Frames::new().encode(BytesMut::from("hi"), &mut buf).unwrap();
    /// assert_eq!(&buf[..], b"\x00\x00\x00\x02hi");
    /// ```
    fn encode(&mut self, payload: BytesMut, buf: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_frame(&payload, buf)
    }
}

impl<'a> Encoder<&'a [u8]> for Frames {
    type Error = CodecError;

    /// Writes a header and the payload.
    ///
    /// # Errors
    ///
    /// [`CodecError::FrameTooLong`] if the payload is longer than the limit. Nothing
    /// is written then.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::{CodecError, Frames};
    /// use tokio_util::codec::Encoder;
    ///
    /// let mut codec = Frames::with_max_frame_length(2);
    /// let mut buf = BytesMut::new();
    ///
    /// codec.encode(&b"hi"[..], &mut buf).unwrap();
    /// assert!(matches!(
    ///     codec.encode(&b"hey"[..], &mut buf),
    ///     Err(CodecError::FrameTooLong { len: 3, limit: 2 })
    /// ));
    /// assert_eq!(&buf[..], b"\x00\x00\x00\x02hi");
    /// ```
    fn encode(&mut self, payload: &'a [u8], buf: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_frame(payload, buf)
    }
}

impl Encoder<Vec<u8>> for Frames {
    type Error = CodecError;

    /// Writes a header and the payload.
    ///
    /// # Errors
    ///
    /// [`CodecError::FrameTooLong`] if the payload is longer than the limit. Nothing
    /// is written then.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::Frames;
    /// use tokio_util::codec::Encoder;
    ///
    /// let mut buf = BytesMut::new();
    /// Frames::new().encode(b"hi".to_vec(), &mut buf).unwrap();
    /// assert_eq!(&buf[..], b"\x00\x00\x00\x02hi");
    /// ```
    fn encode(&mut self, payload: Vec<u8>, buf: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_frame(&payload, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` one after the other, decoding after each, then calls
    /// `decode_eof` until it gives `None` or an error. Collects frames and errors.
    fn feed(codec: &mut Frames, chunks: &[&[u8]]) -> Vec<Result<Vec<u8>, String>> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => out.push(Ok(frame.to_vec())),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e.to_string()));
                        return out;
                    }
                }
            }
        }
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(frame)) => out.push(Ok(frame.to_vec())),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    break;
                }
            }
        }
        out
    }

    /// `payload` with its header.
    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    fn ok(frames: &[&[u8]]) -> Vec<Result<Vec<u8>, String>> {
        frames.iter().map(|f| Ok(f.to_vec())).collect()
    }

    fn too_long(len: u64, limit: usize) -> Result<Vec<u8>, String> {
        Err(CodecError::FrameTooLong { len, limit }.to_string())
    }

    fn truncated(buffered: usize) -> Result<Vec<u8>, String> {
        Err(CodecError::Truncated { buffered }.to_string())
    }

    /// Checks that `input` decodes to `expected` when cut in two at every byte
    /// boundary, when fed one byte at a time, and when fed whole.
    fn check_every_split(max: usize, input: &[u8], expected: &[Result<Vec<u8>, String>]) {
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            let got = feed(&mut Frames::with_max_frame_length(max), &[a, b]);
            assert_eq!(got, expected, "split at {at} of {input:?}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let got = feed(&mut Frames::with_max_frame_length(max), &bytes);
        assert_eq!(got, expected, "one byte at a time: {input:?}");
        let got = feed(&mut Frames::with_max_frame_length(max), &[input]);
        assert_eq!(got, expected, "whole: {input:?}");
    }

    #[test]
    fn new_and_default_use_the_1_mib_limit() {
        assert_eq!(Frames::new().max_frame_length(), 1_048_576);
        assert_eq!(Frames::default().max_frame_length(), 1_048_576);
        assert_eq!(Frames::with_max_frame_length(9).max_frame_length(), 9);
    }

    #[test]
    fn limit_above_u32_max_is_lowered_to_u32_max() {
        let codec = Frames::with_max_frame_length(usize::MAX);
        assert_eq!(
            u64::try_from(codec.max_frame_length()).unwrap(),
            u64::from(u32::MAX)
        );
    }

    #[test]
    fn decode_empty_buffer_gives_none() {
        let mut buf = BytesMut::new();
        assert_eq!(Frames::new().decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn frame_split_at_every_byte_boundary_decodes() {
        check_every_split(64, &frame(b"hello, world"), &ok(&[b"hello, world"]));
    }

    #[test]
    fn split_header_waits_for_all_four_bytes() {
        let mut codec = Frames::new();
        let mut buf = BytesMut::new();
        for byte in [0u8, 0, 1] {
            buf.extend_from_slice(&[byte]);
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            assert_eq!(codec.state, DecodeState::Head);
        }
        buf.extend_from_slice(&[0]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(codec.state, DecodeState::Data(256));
        assert!(buf.is_empty());
        assert!(buf.capacity() >= 256);
        buf.extend_from_slice(&[7; 256]);
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], &[7; 256]);
    }

    #[test]
    fn burst_of_frames_in_one_buffer_decodes_in_order() {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for i in 0..1000usize {
            let payload = vec![u8::try_from(i % 251).unwrap(); i % 17];
            input.extend_from_slice(&frame(&payload));
            expected.push(Ok(payload));
        }
        assert_eq!(feed(&mut Frames::new(), &[&input]), expected);
    }

    #[test]
    fn empty_frames_decode_as_empty_items() {
        let mut input = frame(b"");
        input.extend_from_slice(&frame(b"x"));
        input.extend_from_slice(&frame(b""));
        check_every_split(8, &input, &ok(&[b"", b"x", b""]));
    }

    #[test]
    fn frame_exactly_at_limit_decodes() {
        check_every_split(5, &frame(b"12345"), &ok(&[b"12345"]));
    }

    #[test]
    fn frame_one_over_limit_is_rejected_from_its_header() {
        check_every_split(5, &frame(b"123456"), &[too_long(6, 5)]);
    }

    #[test]
    fn zero_limit_accepts_only_empty_frames() {
        let mut input = frame(b"");
        input.extend_from_slice(&frame(b"x"));
        check_every_split(0, &input, &[Ok(Vec::new()), too_long(1, 0)]);
    }

    #[test]
    fn over_limit_header_reserves_nothing_and_consumes_nothing() {
        let mut codec = Frames::with_max_frame_length(1024);
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        let capacity = buf.capacity();
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            CodecError::FrameTooLong {
                len: 4_294_967_295,
                limit: 1024
            }
        ));
        assert!(err.is_limit());
        assert_eq!(buf.capacity(), capacity);
        assert_eq!(buf.len(), Frames::HEADER_LEN);
    }

    #[test]
    fn over_limit_error_repeats_on_later_calls() {
        let mut codec = Frames::with_max_frame_length(4);
        let mut buf = BytesMut::from(&frame(b"12345")[..]);
        for _ in 0..3 {
            assert!(matches!(
                codec.decode(&mut buf),
                Err(CodecError::FrameTooLong { len: 5, limit: 4 })
            ));
        }
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(CodecError::FrameTooLong { len: 5, limit: 4 })
        ));
    }

    #[test]
    fn reserve_covers_only_the_rest_of_the_frame() {
        let mut codec = Frames::new();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&1000u32.to_be_bytes());
        buf.extend_from_slice(&[1; 10]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() >= 1000, "capacity {}", buf.capacity());
        // BytesMut may round up, but not to anything near the 1 MiB limit.
        assert!(buf.capacity() < 4096, "capacity {}", buf.capacity());
    }

    #[test]
    fn header_declaring_the_limit_reserves_at_most_the_limit() {
        let max = 64 * 1024;
        let mut codec = Frames::with_max_frame_length(max);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&u32::try_from(max).unwrap().to_be_bytes());
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() >= max);
        assert!(buf.capacity() <= 2 * (max + Frames::HEADER_LEN));
    }

    #[test]
    fn large_declared_frame_reserves_one_step_not_the_declared_length() {
        let mut codec = Frames::new();
        let mut buf = BytesMut::new();
        let declared = u32::try_from(Frames::DEFAULT_MAX_FRAME_LENGTH).unwrap();
        buf.extend_from_slice(&declared.to_be_bytes());
        buf.extend_from_slice(&[1; 10]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() >= Frames::RESERVE_STEP);
        assert!(
            buf.capacity() <= 2 * Frames::RESERVE_STEP,
            "capacity {}",
            buf.capacity()
        );
    }

    #[test]
    fn decode_eof_at_frame_boundary_gives_none() {
        check_every_split(8, &frame(b"ab"), &ok(&[b"ab"]));
        let mut buf = BytesMut::new();
        assert_eq!(Frames::new().decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn decode_eof_inside_header_is_truncated() {
        let mut input = frame(b"ab");
        input.extend_from_slice(&[0, 0]);
        check_every_split(8, &input, &[Ok(b"ab".to_vec()), truncated(2)]);
    }

    #[test]
    fn decode_eof_inside_payload_is_truncated() {
        let mut input = frame(b"ab");
        input.extend_from_slice(&frame(b"cdef")[..6]);
        check_every_split(8, &input, &[Ok(b"ab".to_vec()), truncated(6)]);
    }

    #[test]
    fn decode_eof_right_after_header_is_truncated() {
        check_every_split(8, &frame(b"abc")[..4], &[truncated(4)]);
    }

    #[test]
    fn decoded_frames_share_the_read_buffer() {
        let mut buf = BytesMut::from(&frame(b"zero-copy")[..]);
        let start = buf.as_ptr();
        let item = Frames::new().decode(&mut buf).unwrap().unwrap();
        assert_eq!(item.as_ptr(), start.wrapping_add(Frames::HEADER_LEN));
    }

    #[test]
    fn encode_writes_header_then_payload_for_every_item_type() {
        let mut codec = Frames::new();
        let mut buf = BytesMut::new();
        codec.encode(Bytes::from_static(b"a"), &mut buf).unwrap();
        codec.encode(BytesMut::from("bc"), &mut buf).unwrap();
        codec.encode(&b""[..], &mut buf).unwrap();
        codec.encode(b"def".to_vec(), &mut buf).unwrap();
        let mut expected = Vec::new();
        for payload in [&b"a"[..], b"bc", b"", b"def"] {
            expected.extend_from_slice(&frame(payload));
        }
        assert_eq!(&buf[..], &expected[..]);
    }

    #[test]
    fn encode_at_limit_succeeds() {
        let mut buf = BytesMut::new();
        Frames::with_max_frame_length(3)
            .encode(&b"abc"[..], &mut buf)
            .unwrap();
        assert_eq!(&buf[..], b"\x00\x00\x00\x03abc");
    }

    #[test]
    fn encode_over_limit_fails_and_writes_nothing() {
        let mut codec = Frames::with_max_frame_length(3);
        let mut buf = BytesMut::from("kept");
        for result in [
            codec.encode(Bytes::from_static(b"abcd"), &mut buf),
            codec.encode(BytesMut::from("abcd"), &mut buf),
            codec.encode(&b"abcd"[..], &mut buf),
            codec.encode(b"abcd".to_vec(), &mut buf),
        ] {
            assert!(matches!(
                result,
                Err(CodecError::FrameTooLong { len: 4, limit: 3 })
            ));
        }
        assert_eq!(&buf[..], b"kept");
    }
}
