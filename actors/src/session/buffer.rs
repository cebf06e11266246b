//! A session's read or write buffer, boxed only while it holds memory: an idle session's
//! record carries 8 bytes per buffer instead of `BytesMut`'s 32, which keeps its actor's task
//! cell in a smaller allocator size class.

use std::{
    ops::{Deref, DerefMut},
    sync::LazyLock,
};

use bytes::BytesMut;

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

    /// The buffer, if one is allocated: a caller that only tidies an existing buffer must not
    /// allocate one.
    pub(super) fn allocated_mut(&mut self) -> Option<&mut BytesMut> {
        self.0.as_deref_mut()
    }
}

/// Makes the write buffer's allocation the read buffer again, rewound, when the read buffer
/// has none and the write buffer is written out and holds at least `size`. The last chunk read
/// went whole to the write side (a codec that moves large items, as `Raw` does): reading into
/// that allocation instead of a fresh one costs no allocation per chunk and lands each read in
/// memory the cache has just seen.
pub(super) fn reuse_written(read_buf: &mut LazyBuf, write_buf: &mut LazyBuf, size: usize) {
    if read_buf.capacity() > 0 {
        return;
    }
    let reusable = write_buf
        .allocated_mut()
        .is_some_and(|written| written.is_empty() && written.try_reclaim(size));
    if reusable {
        std::mem::swap(read_buf, write_buf);
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
        assert!(buf.allocated_mut().is_none(), "reading allocates nothing");
        buf.extend_from_slice(b"abc");
        assert_eq!(&buf[..], b"abc");
        assert!(buf.allocated_mut().is_some());
        let _ = buf.split();
        buf.release();
        assert!(buf.allocated_mut().is_none());
        assert_eq!(std::mem::size_of::<LazyBuf>(), 8);
    }

    #[test]
    fn a_written_out_buffer_comes_back_as_the_read_buffer() {
        let (mut read, mut write) = (LazyBuf::default(), LazyBuf::default());
        write.reserve(64);
        write.extend_from_slice(&[1; 64]);
        let at = write.as_ptr();
        // Still holding bytes: stays on the write side.
        reuse_written(&mut read, &mut write, 64);
        assert_eq!(read.capacity(), 0);
        assert_eq!(write.len(), 64);
        // Written out (advanced to its end): rewound and handed over.
        let _ = write.split();
        reuse_written(&mut read, &mut write, 64);
        assert!(read.capacity() >= 64 && read.is_empty());
        assert_eq!(read.as_ptr(), at);
        assert_eq!(write.capacity(), 0);
        // A read buffer with room of its own keeps it.
        write.extend_from_slice(&[2; 8]);
        let _ = write.split();
        reuse_written(&mut read, &mut write, 8);
        assert_eq!(read.as_ptr(), at);
    }
}
