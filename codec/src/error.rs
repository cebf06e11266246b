//! The one error type shared by every codec in this crate.

use std::io;

/// An error from one of the Switchboard codecs, or from the I/O under them.
///
/// Decoding errors come in two kinds:
///
/// - [`LineTooLong`](CodecError::LineTooLong) and
///   [`InvalidUtf8`](CodecError::InvalidUtf8) from [`Lines`](crate::Lines) are
///   recoverable: the codec has already skipped the bad line, and the next call to
///   `decode` goes on with the line after it.
/// - [`FrameTooLong`](CodecError::FrameTooLong) from [`Frames`](crate::Frames) and
///   [`Truncated`](CodecError::Truncated) are not: the stream can no longer be framed,
///   and the connection should be closed.
///
/// Note that tokio-util's `FramedRead` ends the stream after any decode error; carrying
/// on after a recoverable one means calling the decoder yourself.
///
/// Encoding errors ([`LineTooLong`](CodecError::LineTooLong),
/// [`FrameTooLong`](CodecError::FrameTooLong),
/// [`NewlineInLine`](CodecError::NewlineInLine)) are raised before anything is written,
/// so the output buffer is left as it was and the connection is still usable.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use switchboard_codec::{CodecError, Lines};
/// use tokio_util::codec::Decoder;
///
/// let mut codec = Lines::with_max_length(4);
/// let mut buf = BytesMut::from("far too long\nok\n");
///
/// let err = codec.decode(&mut buf).unwrap_err();
/// assert!(matches!(err, CodecError::LineTooLong { limit: 4 }));
/// assert!(err.is_limit());
/// assert_eq!(err.to_string(), "line exceeds the 4-byte limit");
///
/// // The codec skipped the long line and goes on with the next one.
/// assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("ok"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A line is longer than the limit (decoding), or the line to send is (encoding).
    ///
    /// The length counted is that of the line's content, without the `\n` and without
    /// a `\r` right before it.
    #[error("line exceeds the {limit}-byte limit")]
    LineTooLong {
        /// The limit in force, in bytes.
        limit: usize,
    },

    /// A frame is longer than the limit.
    ///
    /// When decoding, `len` is the length declared in the frame's header, checked
    /// before any of the frame is buffered. When encoding, it is the length of the
    /// item to send.
    #[error("frame of {len} bytes exceeds the {limit}-byte limit")]
    FrameTooLong {
        /// The length of the frame, in bytes.
        len: u64,
        /// The limit in force, in bytes.
        limit: usize,
    },

    /// A line received is not valid UTF-8.
    #[error("line is not valid UTF-8 (valid up to byte {valid_up_to})")]
    InvalidUtf8 {
        /// The length of the line's longest valid UTF-8 prefix, in bytes.
        valid_up_to: usize,
    },

    /// The line to send contains a `\n`, which would make the peer read two lines.
    #[error("line to send contains a newline")]
    NewlineInLine,

    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes of it received)")]
    Truncated {
        /// How many bytes of the unfinished frame had arrived, header included.
        buffered: usize,
    },

    /// An I/O error from the transport under the codec.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl CodecError {
    /// Tells whether this error is a length limit being exceeded.
    ///
    /// This is true for [`LineTooLong`](CodecError::LineTooLong) and
    /// [`FrameTooLong`](CodecError::FrameTooLong), whether raised by a decoder or an
    /// encoder. A caller can use it to count or log abuse apart from other errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use switchboard_codec::CodecError;
    ///
    /// assert!(CodecError::FrameTooLong { len: 10, limit: 4 }.is_limit());
    /// assert!(!CodecError::NewlineInLine.is_limit());
    /// ```
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            CodecError::LineTooLong { .. } | CodecError::FrameTooLong { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_limit_is_true_only_for_length_limits() {
        assert!(CodecError::LineTooLong { limit: 1 }.is_limit());
        assert!(CodecError::FrameTooLong { len: 2, limit: 1 }.is_limit());
        assert!(!CodecError::InvalidUtf8 { valid_up_to: 0 }.is_limit());
        assert!(!CodecError::NewlineInLine.is_limit());
        assert!(!CodecError::Truncated { buffered: 3 }.is_limit());
        assert!(!CodecError::Io(io::Error::other("x")).is_limit());
    }

    #[test]
    fn messages_are_sentences_with_context() {
        assert_eq!(
            CodecError::LineTooLong { limit: 65536 }.to_string(),
            "line exceeds the 65536-byte limit"
        );
        assert_eq!(
            CodecError::FrameTooLong {
                len: 2_000_000,
                limit: 1_048_576
            }
            .to_string(),
            "frame of 2000000 bytes exceeds the 1048576-byte limit"
        );
        assert_eq!(
            CodecError::InvalidUtf8 { valid_up_to: 3 }.to_string(),
            "line is not valid UTF-8 (valid up to byte 3)"
        );
        assert_eq!(
            CodecError::NewlineInLine.to_string(),
            "line to send contains a newline"
        );
        assert_eq!(
            CodecError::Truncated { buffered: 7 }.to_string(),
            "stream ended inside a frame (7 bytes of it received)"
        );
    }

    #[test]
    fn io_error_converts_and_stays_the_source() {
        use std::error::Error as _;
        let err: CodecError = io::Error::new(io::ErrorKind::BrokenPipe, "pipe gone").into();
        assert_eq!(err.to_string(), "I/O error: pipe gone");
        let source = err.source().expect("io error is the source");
        assert_eq!(source.to_string(), "pipe gone");
    }
}
