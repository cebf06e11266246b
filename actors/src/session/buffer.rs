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
}
