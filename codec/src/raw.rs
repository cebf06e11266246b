//! [`Raw`]: bytes as they arrive, with no framing.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::CodecError;

/// A codec with no framing: it yields whatever bytes have arrived, and writes items as they are.
///
/// This is Qt's `readAll`: each call to `decode` takes everything buffered so far as
/// one [`Bytes`], without copying it. How the bytes are cut into items depends only on
/// how they came off the socket, so a protocol that has messages must find them
/// itself; [`Lines`](crate::Lines) or [`Frames`](crate::Frames) do that for the two
/// common cases.
///
/// `Raw` has no limit of its own: an item is at most what one read put in the buffer.
/// It encodes [`Bytes`], [`BytesMut`], `&[u8]` and `Vec<u8>`, and never fails.
///
/// Large chunks are moved, not copied: an item of at least [`Raw::MOVE_AT`] bytes takes the
/// buffer it was read into along with it, and an item written into an empty buffer that it
/// owns alone becomes that buffer. An echo or a proxy of bulk data so hands the bytes the
/// socket gave it back to the socket without touching them, as a plain `read` / `write_all`
/// loop does. Smaller items share the read buffer and are copied on encoding: a small copy
/// costs less than giving the read buffer away.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use switchboard_codec::Raw;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = Raw;
/// let mut buf = BytesMut::new();
///
/// codec.encode(&b"hello "[..], &mut buf).unwrap();
/// codec.encode(b"world".to_vec(), &mut buf).unwrap();
///
/// let chunk = codec.decode(&mut buf).unwrap().unwrap();
/// assert_eq!(&chunk[..], b"hello world");
/// // Nothing is left, so there is no item.
/// assert_eq!(codec.decode(&mut buf).unwrap(), None);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Raw {
    /// Items of at least this many bytes are moved between buffers instead of copied.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::Raw;
    /// use tokio_util::codec::{Decoder, Encoder};
    ///
    /// let mut read = BytesMut::from(&vec![7u8; Raw::MOVE_AT][..]);
    /// let chunk = Raw.decode(&mut read).unwrap().unwrap();
    /// // The item took the read buffer with it...
    /// assert_eq!(read.capacity(), 0);
    /// let at = chunk.as_ptr();
    /// let mut write = BytesMut::new();
    /// Raw.encode(chunk, &mut write).unwrap();
    /// // ...and became the write buffer, with no copy.
    /// assert_eq!(write.as_ptr(), at);
    /// ```
    pub const MOVE_AT: usize = 16 * 1024;
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = CodecError;

    /// Takes everything buffered as one item, or gives `None` if the buffer is empty.
    ///
    /// # Errors
    ///
    /// Never fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::Raw;
    /// use tokio_util::codec::Decoder;
    ///
    /// let mut buf = BytesMut::from(&b"\x00\xffany bytes"[..]);
    /// let chunk = Raw.decode(&mut buf).unwrap().unwrap();
    /// assert_eq!(&chunk[..], b"\x00\xffany bytes");
    /// assert!(buf.is_empty());
    /// ```
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        if buf.is_empty() {
            Ok(None)
        } else if buf.len() >= Self::MOVE_AT {
            // The whole buffer, so the item is its only owner and can become a write buffer.
            Ok(Some(std::mem::take(buf).freeze()))
        } else {
            Ok(Some(buf.split().freeze()))
        }
    }
}

impl Encoder<Bytes> for Raw {
    type Error = CodecError;

    /// Appends the bytes to `buf` as they are.
    ///
    /// # Errors
    ///
    /// Never fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::{Bytes, BytesMut};
    /// use switchboard_codec::Raw;
    /// use tokio_util::codec::Encoder;
    ///
    /// let mut buf = BytesMut::new();
    /// Raw.encode(Bytes::from_static(b"ping"), &mut buf).unwrap();
    /// assert_eq!(&buf[..], b"ping");
    /// ```
    fn encode(&mut self, item: Bytes, buf: &mut BytesMut) -> Result<(), CodecError> {
        if buf.is_empty() && item.len() >= Self::MOVE_AT && item.is_unique() {
            *buf = BytesMut::from(item);
        } else {
            buf.extend_from_slice(&item);
        }
        Ok(())
    }
}

impl Encoder<BytesMut> for Raw {
    type Error = CodecError;

    /// Appends the bytes to `buf` as they are.
    ///
    /// # Errors
    ///
    /// Never fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::Raw;
    /// use tokio_util::codec::Encoder;
    ///
    /// let mut buf = BytesMut::new();
    /// Raw.encode(BytesMut::from("ping"), &mut buf).unwrap();
    /// assert_eq!(&buf[..], b"ping");
    /// ```
    fn encode(&mut self, item: BytesMut, buf: &mut BytesMut) -> Result<(), CodecError> {
        if buf.is_empty() && item.len() >= Self::MOVE_AT {
            *buf = item;
        } else {
            buf.extend_from_slice(&item);
        }
        Ok(())
    }
}

impl<'a> Encoder<&'a [u8]> for Raw {
    type Error = CodecError;

    /// Appends the bytes to `buf` as they are.
    ///
    /// # Errors
    ///
    /// Never fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::Raw;
    /// use tokio_util::codec::Encoder;
    ///
    /// let mut buf = BytesMut::new();
    /// Raw.encode(&b"ping"[..], &mut buf).unwrap();
    /// assert_eq!(&buf[..], b"ping");
    /// ```
    fn encode(&mut self, item: &'a [u8], buf: &mut BytesMut) -> Result<(), CodecError> {
        buf.extend_from_slice(item);
        Ok(())
    }
}

impl Encoder<Vec<u8>> for Raw {
    type Error = CodecError;

    /// Appends the bytes to `buf` as they are.
    ///
    /// # Errors
    ///
    /// Never fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use switchboard_codec::Raw;
    /// use tokio_util::codec::Encoder;
    ///
    /// let mut buf = BytesMut::new();
    /// Raw.encode(b"ping".to_vec(), &mut buf).unwrap();
    /// assert_eq!(&buf[..], b"ping");
    /// ```
    fn encode(&mut self, item: Vec<u8>, buf: &mut BytesMut) -> Result<(), CodecError> {
        buf.extend_from_slice(&item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_chunk_moves_from_the_read_buffer_to_an_empty_write_buffer() {
        let mut read = BytesMut::with_capacity(64 * 1024);
        read.extend_from_slice(&[1u8; Raw::MOVE_AT + 1]);
        let chunk = Raw.decode(&mut read).unwrap().unwrap();
        assert_eq!(read.capacity(), 0, "the read buffer went with the item");
        let at = chunk.as_ptr();
        let mut write = BytesMut::with_capacity(64 * 1024);
        Raw.encode(chunk, &mut write).unwrap();
        assert_eq!(write.as_ptr(), at, "the item became the write buffer");
        assert_eq!(&write[..], &[1u8; Raw::MOVE_AT + 1][..]);
        // The next read gets a buffer of its own.
        read.extend_from_slice(b"next");
        assert_eq!(&Raw.decode(&mut read).unwrap().unwrap()[..], b"next");
        assert_eq!(write.len(), Raw::MOVE_AT + 1);
    }

    #[test]
    fn a_large_chunk_behind_buffered_bytes_or_still_shared_is_copied() {
        let big = Bytes::from(vec![2u8; Raw::MOVE_AT]);
        let mut write = BytesMut::from(&b"head"[..]);
        Raw.encode(big.clone(), &mut write).unwrap();
        assert_eq!(&write[..4], b"head", "the bytes already waiting stay first");
        assert_eq!(write.len(), 4 + Raw::MOVE_AT);

        // A clone still alive: moving would let two owners see one buffer.
        let mut empty = BytesMut::new();
        Raw.encode(big.clone(), &mut empty).unwrap();
        assert_ne!(empty.as_ptr(), big.as_ptr());
        empty[0] = 9;
        assert_eq!(
            big[0], 2,
            "the shared item is untouched by writes to the buffer"
        );
    }

    #[test]
    fn a_small_chunk_shares_the_read_buffer_and_is_copied_on_encoding() {
        let mut read = BytesMut::with_capacity(1024);
        read.extend_from_slice(b"small");
        let chunk = Raw.decode(&mut read).unwrap().unwrap();
        assert!(
            read.capacity() > 0,
            "the read buffer keeps its room for the next read"
        );
        let mut write = BytesMut::new();
        Raw.encode(chunk.clone(), &mut write).unwrap();
        assert_ne!(write.as_ptr(), chunk.as_ptr());
        assert_eq!(&write[..], b"small");
    }

    #[test]
    fn decode_empty_buffer_gives_none() {
        let mut buf = BytesMut::new();
        assert_eq!(Raw.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn decode_takes_everything_buffered_in_one_item() {
        let mut buf = BytesMut::from(&b"one\ntwo\0three"[..]);
        let item = Raw.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&item[..], b"one\ntwo\0three");
        assert!(buf.is_empty());
        assert_eq!(Raw.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn decode_yields_each_arrival_as_it_comes() {
        let mut codec = Raw;
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in [&b"ab"[..], b"c", b"", b"defg"] {
            buf.extend_from_slice(chunk);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                got.push(item);
            }
        }
        assert_eq!(got, [&b"ab"[..], b"c", b"defg"]);
    }

    #[test]
    fn decode_eof_with_empty_buffer_gives_none() {
        let mut buf = BytesMut::new();
        assert_eq!(Raw.decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn decode_eof_returns_the_last_bytes() {
        let mut buf = BytesMut::from("tail");
        assert_eq!(&Raw.decode_eof(&mut buf).unwrap().unwrap()[..], b"tail");
        assert_eq!(Raw.decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn encode_appends_every_item_type_as_is() {
        let mut codec = Raw;
        let mut buf = BytesMut::from("0");
        codec.encode(Bytes::from_static(b"1"), &mut buf).unwrap();
        codec.encode(BytesMut::from("2"), &mut buf).unwrap();
        codec.encode(&b"3"[..], &mut buf).unwrap();
        codec.encode(b"4\n\0".to_vec(), &mut buf).unwrap();
        codec.encode(Vec::new(), &mut buf).unwrap();
        assert_eq!(&buf[..], b"01234\n\0");
    }
}
