//! The session's `tracing` span, held as its id and subscriber only.

use tracing::{Dispatch, Id, Span};

/// What a [`Span`] holds less its metadata pointer: 32 bytes, boxed in the next size class
/// down from a boxed `Span` (40 bytes, boxed in 48). An idle session keeps it for its whole
/// life, so the 16 bytes are paid per connection.
pub(super) struct SessionSpan {
    id: Id,
    dispatch: Dispatch,
}

impl SessionSpan {
    /// `None` for a disabled span: no subscriber took it, so there is nothing to enter.
    pub(super) fn of(span: Span) -> Option<Box<SessionSpan>> {
        // Our own reference; `span`'s is released when it drops at the end of this call.
        span.with_subscriber(|(id, dispatch)| {
            Box::new(SessionSpan {
                id: dispatch.clone_span(id),
                dispatch: dispatch.clone(),
            })
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
        // Allocated per session while a subscriber takes session spans; 40 would cost 48.
        assert_eq!(std::mem::size_of::<SessionSpan>(), 32);
    }
}
