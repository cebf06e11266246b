//! The session's `tracing` span, held as its id and subscriber only.

use tracing::{Dispatch, Id, Span};

/// What a [`Span`] holds less its metadata pointer: 32 bytes instead of 40. An idle session
/// keeps it inline for its whole life, where the 8 bytes decide whether a `Lines` session fits
/// its allocator size class (see `Core`'s size test).
pub(super) struct SessionSpan {
    id: Id,
    dispatch: Dispatch,
}

impl SessionSpan {
    /// `None` for a disabled span: no subscriber took it, so there is nothing to enter.
    pub(super) fn of(span: Span) -> Option<SessionSpan> {
        // Our own reference; `span`'s is released when it drops at the end of this call.
        span.with_subscriber(|(id, dispatch)| SessionSpan {
            id: dispatch.clone_span(id),
            dispatch: dispatch.clone(),
        })
    }

    /// Enters the span until the guard drops (also when `f` panics: the guard exits it).
    pub(super) fn enter(&self) -> Entered<'_> {
        self.dispatch.enter(&self.id);
        Entered(self)
    }
}

impl Drop for SessionSpan {
    fn drop(&mut self) {
        self.dispatch.try_close(self.id.clone());
    }
}

/// The span entered; exits it when dropped.
pub(super) struct Entered<'a>(&'a SessionSpan);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.0.dispatch.exit(&self.0.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handle_is_32_bytes() {
        // Held by every session while a subscriber takes session spans.
        assert_eq!(std::mem::size_of::<SessionSpan>(), 32);
    }
}
