//! A session's read and write buffers, boxed only while they hold memory: an idle session's
//! record carries 8 bytes per buffer instead of `BytesMut`'s 32 (or 64 for the write side),
//! which keeps its actor's task cell in a smaller allocator size class.

use std::{
    ops::{Deref, DerefMut},
    sync::LazyLock,
};

use bytes::{Buf, Bytes, BytesMut};

/// What an absent buffer reads as.
static EMPTY: LazyLock<BytesMut> = LazyLock::new(BytesMut::new);

/// A `BytesMut` that is allocated at its first mutable use and given back by [`release`].
///
/// [`release`]: LazyBuf::release
#[derive(Default)]
pub(super) struct LazyBuf(Option<Box<BytesMut>>);

impl LazyBuf {
    /// Frees the buffer and its box; only called on an empty buffer.
    pub(super) fn release(&mut self) {
        debug_assert!(self.is_empty(), "a buffer released with bytes in it");
        self.0 = None;
    }
}

/// Makes the write buffer's allocation the read buffer again, rewound, when the read buffer
/// has none and the write buffer is written out and holds at least `size`. The last chunk read
/// went whole to the write side (a codec that moves large items, as `Raw` does, or bytes held
/// by reference that were their memory's only owner): reading into that allocation instead of
/// a fresh one costs no allocation per chunk and lands each read in memory the cache has just
/// seen.
#[inline]
pub(super) fn reuse_written(read_buf: &mut LazyBuf, write_buf: &mut WriteBuf, size: usize) {
    if read_buf.capacity() > 0 {
        return;
    }
    if let Some(written) = write_buf.reclaimable(size) {
        std::mem::swap(&mut **read_buf, written);
    }
}

/// A session's write buffer: what the codec encoded, after at most one piece of bytes held by
/// reference ([`WriteBuf::hold`]). A handler that hands back bytes it was given (an echo, a
/// proxy) has them written from the memory they were read into: no copy, and the read buffer
/// gets that memory back once they are out. Boxed only while it holds memory, as [`LazyBuf`].
///
/// Its length is both parts: the watermarks, `bytes_to_write` and a STARTTLS switch count
/// every byte not yet written, held or encoded.
#[derive(Default)]
pub(super) struct WriteBuf(Option<Box<WriteParts>>);

/// Below this a held piece that shares its memory is copied once the socket blocks (see
/// [`WriteBuf::copy_small_held`]); `Raw` splits reads under the same size and moves larger ones.
pub(super) const HOLD_WHILE_BLOCKED: usize = switchboard_codec::Raw::MOVE_AT;

#[derive(Default)]
struct WriteParts {
    /// Goes out before `encoded`; empty when nothing is held.
    held: Bytes,
    encoded: BytesMut,
}

impl WriteParts {
    /// Drops the held bytes, written out. If they were their memory's only owner and nothing
    /// encoded waits behind them, that memory, rewound, becomes the empty encoded part in
    /// place of a smaller one, for the read side to take back ([`reuse_written`]): it is the
    /// memory the last read was sized for. Rewound (`try_reclaim` moves an empty buffer back
    /// to the start of its allocation), it also no longer points past its end, where a leak
    /// checker would not see it.
    fn let_go_of_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        if !self.encoded.is_empty() {
            return;
        }
        if let Ok(mut memory) = held.try_into_mut() {
            memory.clear();
            if memory.try_reclaim(self.encoded.capacity().max(1)) {
                self.encoded = memory;
            }
        }
    }
}

impl WriteBuf {
    /// Bytes not yet written.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, |parts| parts.held.len() + parts.encoded.len())
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the codec encodes into: after whatever is held, so the order of writes is kept.
    #[inline]
    pub(super) fn encoded_mut(&mut self) -> &mut BytesMut {
        &mut self.0.get_or_insert_with(Box::default).encoded
    }

    /// Queues `bytes` to go out as they are. Into an empty buffer they are held by reference
    /// (the socket is written from their own memory); behind anything else they are copied,
    /// so one piece at most is held and the order of writes is kept.
    pub(super) fn hold(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let parts = self.0.get_or_insert_with(Box::default);
        if parts.held.is_empty() && parts.encoded.is_empty() {
            parts.held = bytes;
        } else {
            parts.encoded.extend_from_slice(&bytes);
        }
    }

    /// The first `limit` bytes not yet written, in order: the held part, then the encoded one.
    #[inline]
    pub(super) fn chunks(&self, limit: usize) -> [&[u8]; 2] {
        let Some(parts) = self.0.as_deref() else {
            return [&[], &[]];
        };
        let held = &parts.held[..limit.min(parts.held.len())];
        let rest = limit - held.len();
        [held, &parts.encoded[..rest.min(parts.encoded.len())]]
    }

    /// Drops the first `n` bytes, which the socket took. Held bytes written out to their end
    /// are let go ([`WriteParts::let_go_of_held`]); encoded bytes written out to their end are
    /// cleared, not advanced past, so the next answer starts where this one did.
    #[inline]
    pub(super) fn consume(&mut self, n: usize) {
        let Some(parts) = self.0.as_deref_mut() else {
            debug_assert_eq!(n, 0, "consumed from an empty write buffer");
            return;
        };
        let from_held = n.min(parts.held.len());
        if from_held == parts.held.len() {
            if from_held > 0 {
                parts.let_go_of_held();
            }
        } else {
            parts.held.advance(from_held);
        }
        let from_encoded = n - from_held;
        if from_encoded == parts.encoded.len() {
            parts.encoded.clear();
        } else {
            parts.encoded.advance(from_encoded);
        }
    }

    /// Copies a small held piece that shares its memory into the encoded part, ahead of what
    /// is encoded there, once the socket has stopped taking bytes. Held, a 64-byte chunk split
    /// from a 256 KiB read buffer keeps that whole buffer allocated, and the next read
    /// allocates another, for as long as the peer does not read: the watermarks count 64 bytes.
    /// Copied, it costs its own size. Pieces of [`HOLD_WHILE_BLOCKED`] bytes and more stay
    /// held (a copy would cost about what it frees), and so does a piece that is its
    /// memory's only owner.
    pub(super) fn copy_small_held(&mut self) {
        let Some(parts) = self.0.as_deref_mut() else {
            return;
        };
        let held = &parts.held;
        if held.is_empty() || held.len() >= HOLD_WHILE_BLOCKED || held.is_unique() {
            return;
        }
        let mut copied = BytesMut::with_capacity(held.len() + parts.encoded.len());
        copied.extend_from_slice(held);
        copied.extend_from_slice(&parts.encoded);
        parts.held = Bytes::new();
        parts.encoded = copied;
    }

    /// The encoded part's memory, rewound, when nothing waits to be written and it holds at
    /// least `size` bytes.
    fn reclaimable(&mut self, size: usize) -> Option<&mut BytesMut> {
        let parts = self.0.as_deref_mut()?;
        (parts.held.is_empty() && parts.encoded.is_empty() && parts.encoded.try_reclaim(size))
            .then_some(&mut parts.encoded)
    }

    /// The memory the buffer owns (held bytes are shared, so not counted).
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |parts| parts.encoded.capacity())
    }

    /// Frees the buffer and its box; only called on an empty buffer.
    pub(super) fn release(&mut self) {
        debug_assert!(self.is_empty(), "a buffer released with bytes in it");
        self.0 = None;
    }
}

impl Deref for LazyBuf {
    type Target = BytesMut;

    #[inline]
    fn deref(&self) -> &BytesMut {
        // Only an absent buffer touches `EMPTY` (and its once-check).
        match &self.0 {
            Some(buf) => buf,
            None => &EMPTY,
        }
    }
}

impl DerefMut for LazyBuf {
    #[inline]
    fn deref_mut(&mut self) -> &mut BytesMut {
        self.0.get_or_insert_with(Box::default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_boxed_from_its_first_write_until_released() {
        let mut buf = LazyBuf::default();
        assert!(buf.is_empty());
        assert!(buf.0.is_none(), "reading allocates nothing");
        buf.extend_from_slice(b"abc");
        assert_eq!(&buf[..], b"abc");
        assert!(buf.0.is_some());
        let _ = buf.split();
        buf.release();
        assert!(buf.0.is_none());
        assert_eq!(std::mem::size_of::<LazyBuf>(), 8);
        assert_eq!(std::mem::size_of::<WriteBuf>(), 8);
    }

    #[test]
    fn a_written_out_buffer_comes_back_as_the_read_buffer() {
        let (mut read, mut write) = (LazyBuf::default(), WriteBuf::default());
        write.encoded_mut().reserve(64);
        write.encoded_mut().extend_from_slice(&[1; 64]);
        let at = write.chunks(64)[1].as_ptr();
        // Still holding bytes: stays on the write side.
        reuse_written(&mut read, &mut write, 64);
        assert_eq!(read.capacity(), 0);
        assert_eq!(write.len(), 64);
        // Written out in two pieces: rewound and handed over.
        write.consume(10);
        write.consume(54);
        reuse_written(&mut read, &mut write, 64);
        assert!(read.capacity() >= 64 && read.is_empty());
        assert_eq!(read.as_ptr(), at);
        assert_eq!(write.capacity(), 0);
        // A read buffer with room of its own keeps it.
        write.encoded_mut().extend_from_slice(&[2; 8]);
        write.consume(8);
        reuse_written(&mut read, &mut write, 8);
        assert_eq!(read.as_ptr(), at);
    }

    #[test]
    fn held_bytes_are_written_from_their_own_memory_before_what_follows() {
        let mut read = BytesMut::with_capacity(4096);
        read.extend_from_slice(b"echo me");
        let frame = read.split().freeze();
        let mut write = WriteBuf::default();
        write.hold(frame.clone());
        write.encoded_mut().extend_from_slice(b" and this");
        write.hold(Bytes::from_static(b" then that"));
        assert_eq!(write.len(), 26);
        let [held, encoded] = write.chunks(usize::MAX);
        assert_eq!(
            held.as_ptr(),
            frame.as_ptr(),
            "held by reference, not copied"
        );
        assert_eq!(held, b"echo me");
        assert_eq!(encoded, b" and this then that");
        // A limit (a STARTTLS switch) can end inside either part.
        assert_eq!(write.chunks(3), [&b"ech"[..], &b""[..]]);
        assert_eq!(write.chunks(9), [&b"echo me"[..], &b" a"[..]]);
        write.consume(4);
        assert_eq!(write.chunks(usize::MAX)[0], b" me");
        write.consume(5);
        assert_eq!(
            write.chunks(usize::MAX),
            [&b""[..], &b"nd this then that"[..]]
        );
        write.consume(17);
        assert!(write.is_empty());
        drop(frame);
        // The read buffer is its memory's only owner again: it takes the memory back.
        read.reserve(4096);
        assert_eq!(read.capacity(), 4096);
    }

    #[test]
    fn a_small_shared_piece_is_copied_once_the_socket_blocks_and_frees_its_read_buffer() {
        let mut read = BytesMut::with_capacity(64 * 1024);
        read.extend_from_slice(b"small");
        let mut write = WriteBuf::default();
        write.hold(read.split().freeze());
        write.encoded_mut().extend_from_slice(b" then encoded");
        write.consume(2);
        write.copy_small_held();
        assert_eq!(
            write.chunks(usize::MAX),
            [&b""[..], &b"all then encoded"[..]]
        );
        assert_eq!(write.len(), 16);
        // Nothing else holds the read buffer's memory: it is reclaimed, not reallocated.
        let at = read.as_ptr();
        read.reserve(64 * 1024);
        assert_eq!(read.as_ptr(), at.wrapping_sub(5));

        // A piece that owns its memory, and a large shared one, stay held.
        let mut write = WriteBuf::default();
        write.hold(Bytes::from(vec![1u8; 10]));
        write.copy_small_held();
        assert_eq!(write.chunks(usize::MAX)[0].len(), 10);
        let large = Bytes::from(vec![2u8; HOLD_WHILE_BLOCKED]);
        let mut write = WriteBuf::default();
        write.hold(large.clone());
        write.copy_small_held();
        assert_eq!(write.chunks(usize::MAX)[0].as_ptr(), large.as_ptr());
    }

    #[test]
    fn held_bytes_that_owned_their_memory_leave_it_for_the_read_side() {
        let mut chunk = BytesMut::with_capacity(1024);
        chunk.extend_from_slice(&[7; 100]);
        let at = chunk.as_ptr();
        let mut write = WriteBuf::default();
        write.hold(chunk.freeze());
        assert_eq!(write.capacity(), 0, "held memory is not the buffer's own");
        write.consume(100);
        let mut read = LazyBuf::default();
        reuse_written(&mut read, &mut write, 1024);
        assert_eq!(read.as_ptr(), at);
        assert!(read.capacity() >= 1024 && read.is_empty());

        // An empty encoded part that kept smaller memory gives way to the held memory.
        write.encoded_mut().reserve(256);
        let mut larger = BytesMut::with_capacity(4096);
        larger.extend_from_slice(&[8; 4096]);
        let at = larger.as_ptr();
        write.hold(larger.freeze());
        write.consume(4096);
        let mut read = LazyBuf::default();
        reuse_written(&mut read, &mut write, 4096);
        assert_eq!(
            read.as_ptr(),
            at,
            "the held memory came back, not the smaller one"
        );
    }
}
