//! [`Lines`]: newline-delimited UTF-8 text.

use std::{cmp, str};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::CodecError;

/// A codec for newline-delimited UTF-8 text, with a limit on the length of a line.
///
/// This is Qt's `readLine`. Each item is one line as a [`String`], without its
/// terminator.
///
/// - **Terminator.** A line ends at `\n`. A `\r` right before the `\n` is removed
///   too, so peers that send `\r\n` work unchanged. Any other `\r` is kept.
/// - **Limit.** The limit counts the bytes of the line's content: the `\n`, and a
///   `\r` right before it, are not counted. It is [`Lines::DEFAULT_MAX_LENGTH`]
///   (64 KiB) unless set with [`Lines::with_max_length`]. The decoder never looks at
///   more than the limit plus two bytes (`\r\n`) of a line while searching for its
///   end, and never scans the same byte twice when a line arrives in pieces.
/// - **A line over the limit** gives [`CodecError::LineTooLong`] once, as soon as
///   the line is known to be too long, even before its `\n` has arrived. The codec
///   then drops bytes as they arrive, up to and including the next `\n`, without
///   keeping them, and the next line after that decodes as usual. Memory held for a
///   line is thus at most the limit plus two bytes, however long the line is.
/// - **Invalid UTF-8.** A line that is not UTF-8 gives
///   [`CodecError::InvalidUtf8`]; the line is consumed, and the next call decodes
///   the line after it.
/// - **End of stream.** In [`decode_eof`](Decoder::decode_eof), bytes left without a
///   final `\n` are returned as a last line (a trailing `\r` is removed, as the
///   start of a `\r\n` cut short). An empty buffer gives `None`.
///
/// The encoder writes the item followed by `\n`. It refuses an item longer than the
/// limit ([`CodecError::LineTooLong`]) or containing a `\n`
/// ([`CodecError::NewlineInLine`]), which would make the peer read two lines, and
/// writes nothing in that case. It encodes [`String`], `&str` and [`Bytes`]; the last
/// one is not checked for UTF-8. An item that ends in `\r` is sent as it is, but
/// the peer's decoder will take that `\r` as part of the terminator and drop it.
///
/// Both errors from the decoder leave the codec ready for the next line, but note
/// that tokio-util's `FramedRead` ends its stream after any decode error.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use switchboard_codec::Lines;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = Lines::new();
/// let mut buf = BytesMut::new();
///
/// codec.encode("hello", &mut buf).unwrap();
/// buf.extend_from_slice(b"from telnet\r\npartial");
///
/// assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("hello"));
/// assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("from telnet"));
/// // "partial" waits for its '\n'...
/// assert_eq!(codec.decode(&mut buf).unwrap(), None);
/// // ...unless the stream ends.
/// assert_eq!(codec.decode_eof(&mut buf).unwrap().as_deref(), Some("partial"));
/// ```
#[derive(Debug, Clone)]
pub struct Lines {
    /// Longest line content accepted or sent, in bytes (terminator not counted).
    max_length: usize,
    /// Where the search for `\n` resumes in the buffer, so that bytes of a line that
    /// arrives in pieces are scanned only once. Always 0 while discarding.
    next_index: usize,
    /// True once a line over the limit has been reported and until its `\n` arrives:
    /// bytes are dropped, unread, until then.
    is_discarding: bool,
}

impl Lines {
    /// The default limit on a line's length: 64 KiB (65,536 bytes).
    ///
    /// # Examples
    ///
    /// ```
    /// use switchboard_codec::Lines;
    ///
    /// assert_eq!(Lines::new().max_length(), Lines::DEFAULT_MAX_LENGTH);
    /// assert_eq!(Lines::DEFAULT_MAX_LENGTH, 65_536);
    /// ```
    pub const DEFAULT_MAX_LENGTH: usize = 64 * 1024;

    /// Creates a line codec with the default limit, [`Lines::DEFAULT_MAX_LENGTH`] (64 KiB).
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::Lines;
    /// use tokio_util::codec::Decoder;
    ///
    /// let mut codec = Lines::new();
    /// let mut buf = BytesMut::from("PING\r\n");
    /// assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("PING"));
    /// ```
    pub fn new() -> Self {
        Self::with_max_length(Self::DEFAULT_MAX_LENGTH)
    }

    /// Creates a line codec that accepts lines of at most `max` bytes.
    ///
    /// `max` counts the line's content, not its `\n` nor a `\r` before it. Any value
    /// is accepted: `0` allows only empty lines, and `usize::MAX` in effect removes
    /// the limit, which lets a peer that never sends `\n` fill the memory. The
    /// decoder and the encoder both use the limit; see [`Lines`] for what happens to
    /// a line over it.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::{CodecError, Lines};
    /// use tokio_util::codec::Decoder;
    ///
    /// let mut codec = Lines::with_max_length(3);
    /// let mut buf = BytesMut::from("abc\r\nabcd\nxyz\n");
    ///
    /// assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("abc"));
    /// assert!(matches!(
    ///     codec.decode(&mut buf),
    ///     Err(CodecError::LineTooLong { limit: 3 })
    /// ));
    /// assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("xyz"));
    /// ```
    pub fn with_max_length(max: usize) -> Self {
        Lines {
            max_length: max,
            next_index: 0,
            is_discarding: false,
        }
    }

    /// Returns the limit on a line's content, in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use switchboard_codec::Lines;
    ///
    /// assert_eq!(Lines::with_max_length(80).max_length(), 80);
    /// ```
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Checks a line's content (without terminator) against the limit and UTF-8.
    fn to_line(&self, content: &[u8]) -> Result<String, CodecError> {
        if content.len() > self.max_length {
            return Err(CodecError::LineTooLong {
                limit: self.max_length,
            });
        }
        match str::from_utf8(content) {
            Ok(line) => Ok(line.to_owned()),
            Err(e) => Err(CodecError::InvalidUtf8 {
                valid_up_to: e.valid_up_to(),
            }),
        }
    }

    /// Tells whether `buf`, which has no `\n` in the part scanned so far, already
    /// holds more than a line of the maximum length can have before its `\n`.
    fn is_over_limit(&self, buf: &[u8]) -> bool {
        let max = self.max_length;
        match buf.len().cmp(&max.saturating_add(1)) {
            cmp::Ordering::Less => false,
            // `max` bytes of content and a `\r` may still be followed by `\n`.
            cmp::Ordering::Equal => buf.len() > max && buf[max] != b'\r',
            cmp::Ordering::Greater => true,
        }
    }

    /// Writes `line` and `\n` to `buf` after checking it; shared by every encoder.
    fn encode_line(&self, line: &[u8], buf: &mut BytesMut) -> Result<(), CodecError> {
        if line.len() > self.max_length {
            return Err(CodecError::LineTooLong {
                limit: self.max_length,
            });
        }
        if memchr::memchr(b'\n', line).is_some() {
            return Err(CodecError::NewlineInLine);
        }
        buf.reserve(line.len().saturating_add(1));
        buf.extend_from_slice(line);
        buf.put_u8(b'\n');
        Ok(())
    }
}

impl Default for Lines {
    /// Same as [`Lines::new`]: the limit is [`Lines::DEFAULT_MAX_LENGTH`] (64 KiB).
    ///
    /// # Examples
    ///
    /// ```
    /// use switchboard_codec::Lines;
    ///
    /// assert_eq!(Lines::default().max_length(), 64 * 1024);
    /// ```
    fn default() -> Self {
        Self::new()
    }
}

/// Removes one `\r` at the end of `line`, if there is one.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl Decoder for Lines {
    type Item = String;
    type Error = CodecError;

    /// Takes the next complete line from `buf`, or gives `None` until one has arrived.
    ///
    /// # Errors
    ///
    /// - [`CodecError::LineTooLong`] when a line is over the limit. It is reported
    ///   once; the rest of the line, up to its `\n`, is dropped by later calls.
    /// - [`CodecError::InvalidUtf8`] when a line is not UTF-8; that line is consumed.
    ///
    /// After either error, the next call goes on with the next line.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::{CodecError, Lines};
    /// use tokio_util::codec::Decoder;
    ///
    /// let mut codec = Lines::new();
    /// let mut buf = BytesMut::from(&b"caf\xc3\xa9\n\xff\xfe\nnext\n"[..]);
    ///
    /// assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("café"));
    /// assert!(matches!(
    ///     codec.decode(&mut buf),
    ///     Err(CodecError::InvalidUtf8 { valid_up_to: 0 })
    /// ));
    /// assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("next"));
    /// assert_eq!(codec.decode(&mut buf).unwrap(), None);
    /// ```
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<String>, CodecError> {
        if self.is_discarding {
            // Drop the rest of a line over the limit; every byte scanned here is
            // dropped, so nothing is scanned twice and nothing piles up.
            match memchr::memchr(b'\n', buf) {
                Some(newline) => {
                    buf.advance(newline + 1);
                    self.is_discarding = false;
                }
                None => {
                    buf.clear();
                    return Ok(None);
                }
            }
        }

        // A line at the limit needs `max` bytes, maybe a `\r`, then the `\n`:
        // there is no point searching further than that.
        let read_to = cmp::min(self.max_length.saturating_add(2), buf.len());
        // `min` only matters if the caller emptied the buffer between calls.
        let start = cmp::min(self.next_index, read_to);
        match memchr::memchr(b'\n', &buf[start..read_to]) {
            Some(offset) => {
                let newline = start + offset;
                self.next_index = 0;
                let line = buf.split_to(newline + 1);
                self.to_line(strip_cr(&line[..newline])).map(Some)
            }
            None if self.is_over_limit(&buf[..read_to]) => {
                // Report the line now, and drop what was scanned of it; the rest
                // goes on the next calls, up to the `\n`.
                buf.advance(read_to);
                self.next_index = 0;
                self.is_discarding = true;
                Err(CodecError::LineTooLong {
                    limit: self.max_length,
                })
            }
            None => {
                self.next_index = read_to;
                Ok(None)
            }
        }
    }

    /// Like [`decode`](Lines::decode), but at the end of the stream the bytes left
    /// without a final `\n` are returned as a last line.
    ///
    /// A single `\r` at the very end is removed, as the start of a `\r\n` cut short.
    /// An empty buffer, or one holding only the rest of a line over the limit or a
    /// lone `\r`, gives `None`.
    ///
    /// # Errors
    ///
    /// Those of [`decode`](Lines::decode), for the last line too.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::Lines;
    /// use tokio_util::codec::Decoder;
    ///
    /// let mut codec = Lines::new();
    /// let mut buf = BytesMut::from("one\ntwo");
    ///
    /// assert_eq!(codec.decode_eof(&mut buf).unwrap().as_deref(), Some("one"));
    /// assert_eq!(codec.decode_eof(&mut buf).unwrap().as_deref(), Some("two"));
    /// assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    /// ```
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<String>, CodecError> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        // `decode` found no `\n`: what is left, if anything, is the last line. When
        // discarding, `decode` has already dropped it.
        self.next_index = 0;
        self.is_discarding = false;
        if buf.is_empty() || &buf[..] == b"\r" {
            buf.clear();
            return Ok(None);
        }
        let line = buf.split();
        self.to_line(strip_cr(&line)).map(Some)
    }
}

impl Encoder<String> for Lines {
    type Error = CodecError;

    /// Writes the line followed by `\n`.
    ///
    /// # Errors
    ///
    /// [`CodecError::LineTooLong`] if the line is longer than the limit, and
    /// [`CodecError::NewlineInLine`] if it contains a `\n`. Nothing is written then.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::{CodecError, Lines};
    /// use tokio_util::codec::Encoder;
    ///
    /// let mut codec = Lines::new();
    /// let mut buf = BytesMut::new();
    ///
    /// codec.encode(String::from("hello"), &mut buf).unwrap();
    /// assert_eq!(&buf[..], b"hello\n");
    ///
    /// let err = codec.encode(String::from("a\nb"), &mut buf).unwrap_err();
    /// assert!(matches!(err, CodecError::NewlineInLine));
    /// assert_eq!(&buf[..], b"hello\n");
    /// ```
    fn encode(&mut self, line: String, buf: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_line(line.as_bytes(), buf)
    }
}

impl<'a> Encoder<&'a str> for Lines {
    type Error = CodecError;

    /// Writes the line followed by `\n`.
    ///
    /// # Errors
    ///
    /// [`CodecError::LineTooLong`] if the line is longer than the limit, and
    /// [`CodecError::NewlineInLine`] if it contains a `\n`. Nothing is written then.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::{CodecError, Lines};
    /// use tokio_util::codec::Encoder;
    ///
    /// let mut codec = Lines::with_max_length(5);
    /// let mut buf = BytesMut::new();
    ///
    /// codec.encode("hello", &mut buf).unwrap();
    /// assert_eq!(&buf[..], b"hello\n");
    ///
    /// let err = codec.encode("hello!", &mut buf).unwrap_err();
    /// assert!(matches!(err, CodecError::LineTooLong { limit: 5 }));
    /// ```
    fn encode(&mut self, line: &'a str, buf: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_line(line.as_bytes(), buf)
    }
}

impl Encoder<Bytes> for Lines {
    type Error = CodecError;

    /// Writes the bytes followed by `\n`, without checking that they are UTF-8.
    ///
    /// # Errors
    ///
    /// [`CodecError::LineTooLong`] if the line is longer than the limit, and
    /// [`CodecError::NewlineInLine`] if it contains a `\n`. Nothing is written then.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::{Bytes, BytesMut};
    /// use switchboard_codec::Lines;
    /// use tokio_util::codec::Encoder;
    ///
    /// let mut codec = Lines::new();
    /// let mut buf = BytesMut::new();
    ///
    /// codec.encode(Bytes::from_static(b"\xff raw"), &mut buf).unwrap();
    /// assert_eq!(&buf[..], b"\xff raw\n");
    /// ```
    fn encode(&mut self, line: Bytes, buf: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_line(&line, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` one after the other, decoding after each, then calls `decode_eof`
    /// until it gives `None`. Collects items and errors in order.
    fn feed(codec: &mut Lines, chunks: &[&[u8]]) -> Vec<Result<String, String>> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(line)) => out.push(Ok(line)),
                    Ok(None) => break,
                    Err(e) => out.push(Err(e.to_string())),
                }
            }
        }
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(line)) => out.push(Ok(line)),
                Ok(None) => break,
                Err(e) => out.push(Err(e.to_string())),
            }
        }
        assert!(buf.is_empty(), "decode_eof left {buf:?}");
        out
    }

    fn ok(lines: &[&str]) -> Vec<Result<String, String>> {
        lines.iter().map(|l| Ok((*l).to_owned())).collect()
    }

    fn too_long(limit: usize) -> Result<String, String> {
        Err(CodecError::LineTooLong { limit }.to_string())
    }

    /// Checks that `input` decodes to `expected` when cut in two at every byte
    /// boundary, when fed one byte at a time, and when fed whole.
    fn check_every_split(max: usize, input: &[u8], expected: &[Result<String, String>]) {
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            let got = feed(&mut Lines::with_max_length(max), &[a, b]);
            assert_eq!(got, expected, "split at {at} of {input:?}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let got = feed(&mut Lines::with_max_length(max), &bytes);
        assert_eq!(got, expected, "one byte at a time: {input:?}");
        let got = feed(&mut Lines::with_max_length(max), &[input]);
        assert_eq!(got, expected, "whole: {input:?}");
    }

    #[test]
    fn new_and_default_use_the_64_kib_limit() {
        assert_eq!(Lines::new().max_length(), 65_536);
        assert_eq!(Lines::default().max_length(), 65_536);
        assert_eq!(Lines::with_max_length(7).max_length(), 7);
    }

    #[test]
    fn decode_empty_buffer_gives_none() {
        let mut buf = BytesMut::new();
        assert_eq!(Lines::new().decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn line_split_at_every_byte_boundary_decodes() {
        check_every_split(64, "héllo wörld\n".as_bytes(), &ok(&["héllo wörld"]));
    }

    #[test]
    fn crlf_line_split_at_every_byte_boundary_decodes() {
        check_every_split(64, b"hello\r\n", &ok(&["hello"]));
    }

    #[test]
    fn burst_of_lines_in_one_buffer_decodes_in_order() {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for i in 0..1000 {
            let line = format!("message number {i}");
            input.extend_from_slice(line.as_bytes());
            input.extend_from_slice(if i % 2 == 0 { b"\n" } else { b"\r\n" });
            expected.push(line);
        }
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        let got = feed(&mut Lines::new(), &[&input]);
        assert_eq!(got, ok(&expected));
    }

    #[test]
    fn empty_lines_decode_as_empty_strings() {
        check_every_split(8, b"\n\r\n\na\n\n", &ok(&["", "", "", "a", ""]));
    }

    #[test]
    fn cr_not_before_newline_is_kept() {
        check_every_split(8, b"a\rb\r\r\n\r\n", &ok(&["a\rb\r", ""]));
    }

    #[test]
    fn line_exactly_at_limit_decodes() {
        check_every_split(5, b"12345\n", &ok(&["12345"]));
    }

    #[test]
    fn crlf_line_exactly_at_limit_decodes() {
        // The `\r` does not count toward the limit.
        check_every_split(5, b"12345\r\n", &ok(&["12345"]));
    }

    #[test]
    fn line_one_over_limit_is_rejected_once() {
        check_every_split(5, b"123456\n", &[too_long(5)]);
    }

    #[test]
    fn crlf_line_one_over_limit_is_rejected_once() {
        check_every_split(5, b"123456\r\n", &[too_long(5)]);
    }

    #[test]
    fn zero_limit_accepts_only_empty_lines() {
        check_every_split(
            0,
            b"\n\r\nx\n\n",
            &[
                Ok(String::new()),
                Ok(String::new()),
                too_long(0),
                Ok(String::new()),
            ],
        );
    }

    #[test]
    fn over_limit_line_is_skipped_and_next_line_decodes() {
        let input = b"this line is far too long for the limit\nok\r\nfine\n";
        check_every_split(8, input, &[too_long(8), Ok("ok".into()), Ok("fine".into())]);
    }

    #[test]
    fn several_over_limit_lines_each_report_once() {
        let input = b"0123456789\nab\n0123456789abcdef\r\n\ncd\n";
        let expected = [
            too_long(4),
            Ok("ab".into()),
            too_long(4),
            Ok(String::new()),
            Ok("cd".into()),
        ];
        check_every_split(4, input, &expected);
    }

    #[test]
    fn over_limit_error_comes_before_the_newline_arrives() {
        let mut codec = Lines::with_max_length(4);
        let mut buf = BytesMut::from("abcde");
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::LineTooLong { limit: 4 })
        ));
        // What was read of the long line is already gone.
        assert!(buf.is_empty());
        buf.extend_from_slice(b"fgh");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"ij\nok\n");
        assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("ok"));
    }

    #[test]
    fn trailing_cr_at_limit_waits_for_the_newline() {
        let mut codec = Lines::with_max_length(4);
        let mut buf = BytesMut::from("abcd\r");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\n");
        assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("abcd"));
    }

    #[test]
    fn cr_at_limit_not_followed_by_newline_is_over_limit() {
        let mut codec = Lines::with_max_length(4);
        let mut buf = BytesMut::from("abcd\r");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"x");
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::LineTooLong { limit: 4 })
        ));
    }

    #[test]
    fn invalid_utf8_line_is_consumed_and_next_line_decodes() {
        let input = b"ok\nab\xffcd\nnext\n";
        let expected = [
            Ok("ok".into()),
            Err(CodecError::InvalidUtf8 { valid_up_to: 2 }.to_string()),
            Ok("next".into()),
        ];
        check_every_split(16, input, &expected);
    }

    #[test]
    fn invalid_utf8_reports_valid_prefix_length() {
        let mut buf = BytesMut::from(&b"h\xc3\xa9\xe2\x82\n"[..]);
        let err = Lines::new().decode(&mut buf).unwrap_err();
        assert!(matches!(err, CodecError::InvalidUtf8 { valid_up_to: 3 }));
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_line_is_scanned_once_and_not_yielded() {
        let mut codec = Lines::new();
        let mut buf = BytesMut::from("abc");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(codec.next_index, 3);
        buf.extend_from_slice(b"de");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(codec.next_index, 5);
        assert_eq!(&buf[..], b"abcde");
    }

    #[test]
    fn search_stops_at_limit_plus_two() {
        // A `\n` far past the limit is never reached: the line is too long before.
        let mut codec = Lines::with_max_length(3);
        let mut buf = BytesMut::from("abcdefgh\n");
        assert!(codec.decode(&mut buf).is_err());
        // Only `max + 2` bytes were read and dropped; the rest waits for discarding.
        assert_eq!(&buf[..], b"fgh\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn endless_over_limit_line_keeps_memory_bounded() {
        let max = 1024;
        let mut codec = Lines::with_max_length(max);
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let chunk = [b'x'; 8 * 1024];
        let mut errors = 0;
        // 10 MiB without a single `\n`.
        for _ in 0..(10 * 1024 * 1024 / chunk.len()) {
            buf.extend_from_slice(&chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(None) => break,
                    Ok(Some(line)) => panic!("unexpected line of {} bytes", line.len()),
                    Err(e) => {
                        assert!(e.is_limit());
                        errors += 1;
                    }
                }
            }
            assert!(buf.len() <= max + 2, "buffer holds {} bytes", buf.len());
            assert!(
                buf.capacity() <= 16 * 1024,
                "capacity grew to {}",
                buf.capacity()
            );
        }
        assert_eq!(errors, 1);
        buf.extend_from_slice(b"end of the long line\nnext\n");
        assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("next"));
    }

    #[test]
    fn decode_eof_returns_final_line_without_newline() {
        check_every_split(16, b"one\ntwo", &ok(&["one", "two"]));
    }

    #[test]
    fn decode_eof_strips_a_final_cr() {
        check_every_split(16, b"one\r", &ok(&["one"]));
    }

    #[test]
    fn decode_eof_with_lone_cr_gives_none() {
        let mut buf = BytesMut::from("\r");
        assert_eq!(Lines::new().decode_eof(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn decode_eof_with_empty_buffer_gives_none() {
        let mut buf = BytesMut::new();
        assert_eq!(Lines::new().decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn decode_eof_inside_an_over_limit_line_gives_none() {
        check_every_split(4, b"ok\nabcdefgh", &[Ok("ok".into()), too_long(4)]);
    }

    #[test]
    fn decode_eof_final_line_over_limit_is_rejected() {
        check_every_split(4, b"abcde", &[too_long(4)]);
    }

    #[test]
    fn decode_eof_final_line_at_limit_with_cr_decodes() {
        check_every_split(4, b"abcd\r", &ok(&["abcd"]));
    }

    #[test]
    fn decode_eof_final_line_invalid_utf8_is_rejected() {
        let expected = [Err(CodecError::InvalidUtf8 { valid_up_to: 1 }.to_string())];
        check_every_split(16, b"a\xff", &expected);
    }

    #[test]
    fn codec_is_reusable_after_decode_eof() {
        let mut codec = Lines::with_max_length(2);
        assert_eq!(feed(&mut codec, &[b"abcdef"]), [too_long(2)]);
        assert_eq!(feed(&mut codec, &[b"ab\n"]), ok(&["ab"]));
    }

    #[test]
    fn encode_appends_newline_for_every_item_type() {
        let mut codec = Lines::new();
        let mut buf = BytesMut::new();
        codec.encode(String::from("one"), &mut buf).unwrap();
        codec.encode("two", &mut buf).unwrap();
        codec
            .encode(Bytes::from_static(b"three"), &mut buf)
            .unwrap();
        codec.encode("", &mut buf).unwrap();
        assert_eq!(&buf[..], b"one\ntwo\nthree\n\n");
    }

    #[test]
    fn encode_at_limit_succeeds() {
        let mut buf = BytesMut::new();
        Lines::with_max_length(3).encode("abc", &mut buf).unwrap();
        assert_eq!(&buf[..], b"abc\n");
    }

    #[test]
    fn encode_over_limit_fails_and_writes_nothing() {
        let mut codec = Lines::with_max_length(3);
        let mut buf = BytesMut::from("kept");
        for result in [
            codec.encode("abcd", &mut buf),
            codec.encode(String::from("abcd"), &mut buf),
            codec.encode(Bytes::from_static(b"abcd"), &mut buf),
        ] {
            assert!(matches!(result, Err(CodecError::LineTooLong { limit: 3 })));
        }
        assert_eq!(&buf[..], b"kept");
    }

    #[test]
    fn encode_with_newline_fails_and_writes_nothing() {
        let mut codec = Lines::new();
        let mut buf = BytesMut::from("kept");
        for result in [
            codec.encode("a\nQUIT", &mut buf),
            codec.encode(String::from("\n"), &mut buf),
            codec.encode(Bytes::from_static(b"trailing\n"), &mut buf),
        ] {
            assert!(matches!(result, Err(CodecError::NewlineInLine)));
        }
        assert_eq!(&buf[..], b"kept");
    }

    #[test]
    fn encode_bytes_does_not_require_utf8() {
        let mut buf = BytesMut::new();
        Lines::new()
            .encode(Bytes::from_static(b"\xff\xfe"), &mut buf)
            .unwrap();
        assert_eq!(&buf[..], b"\xff\xfe\n");
    }

    #[test]
    fn encoded_lines_decode_back() {
        let mut codec = Lines::with_max_length(32);
        let mut buf = BytesMut::new();
        let lines = ["", "a", "with spaces", "ünïcödé", "tab\there", "cr\rinside"];
        for line in lines {
            codec.encode(line, &mut buf).unwrap();
        }
        let got = feed(&mut codec, &[&buf]);
        assert_eq!(got, ok(&lines));
    }
}
