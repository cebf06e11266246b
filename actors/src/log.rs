//! A log subscriber for servers holding many connections: the lines of `tracing-subscriber`'s
//! fmt output, with each live span held in one 64-byte slot (feature `log`; the `switchboard`
//! command logs through it).
//!
//! Every session has a span for as long as it lives, so a span's cost is paid per idle
//! connection. `tracing-subscriber`'s registry with its fmt layer keeps ~560 B per live span
//! (slab slot, extension map, boxed formatted fields and their string). Here a span's values are
//! kept without their names (its metadata has them), inline in a slot of a paged slab; only a
//! span whose values pass 53 bytes makes an allocation for them.
//!
//! Filtering is left to the `EnvFilter` layered on top; this subscriber enables everything it
//! is asked about.

use std::{
    cell::RefCell,
    collections::HashMap,
    fmt::{self, Write as _},
    io::Write as _,
    num::NonZeroU64,
    sync::Mutex,
};

use smallvec::SmallVec;
use thread_local::ThreadLocal;
use tracing::{
    field::{Field, Visit},
    span, Event, Id, Level, Metadata, Subscriber,
};
use tracing_subscriber::fmt::{
    format::{DefaultFields, Writer},
    time::{FormatTime, SystemTime},
    FormatFields, MakeWriter,
};

/// Slots per slab page: a page is allocated whole (16 KiB) and never moves or shrinks.
const PAGE: usize = 256;
/// Inline room for a span's values: the session span's five fit in it with IPv4 peers and ids
/// up to eight digits.
const INLINE_VALUES: usize = 53;
/// [`Slot::len`] of a span whose values did not fit inline and live in [`Slab::spilled`].
const SPILLED: u8 = u8::MAX;
/// A value's first byte is `FIELD + index` for the field at `index` (< 7) of its metadata's
/// field set, or `FAR_FIELD, index` for a later one. UTF-8 text never holds a byte from 0xF8
/// up, so a value's text runs to the next such byte.
const FIELD: u8 = 0xF8;
const FAR_FIELD: u8 = 0xFF;
/// [`Slot::meta`] of a span whose metadata did not fit the table (65,534 span callsites).
const META_ELSEWHERE: u16 = u16::MAX;

/// Values as they are recorded, and as a span keeps them once they outgrow its slot.
type Values = SmallVec<[u8; 64]>;

/// One span in 64 bytes: its metadata as a table index, its values (see [`FIELD`]) inline.
struct Slot {
    /// While live: the parent's slot + 1, or 0 for a root. While free: the next free slot + 1.
    link: u32,
    refs: u32,
    /// Index + 1 into [`Slab::metas`]; 0 while the slot is free.
    meta: u16,
    /// Bytes of `inline` in use, or [`SPILLED`].
    len: u8,
    inline: [u8; INLINE_VALUES],
}

/// A slot index as [`Slot::link`] holds it: + 1, so that 0 can mean none.
fn link_to(index: usize) -> u32 {
    index as u32 + 1
}

impl Slot {
    /// The parent's slot, for a live slot.
    fn parent(&self) -> Option<usize> {
        self.link.checked_sub(1).map(|i| i as usize)
    }

    fn vacant() -> Slot {
        Slot {
            link: 0,
            refs: 0,
            meta: 0,
            len: 0,
            inline: [0; INLINE_VALUES],
        }
    }
}

#[derive(Default)]
struct Slab {
    pages: Vec<Box<[Slot]>>,
    /// Every span metadata seen, in order of first use: a handful per program.
    metas: Vec<&'static Metadata<'static>>,
    meta_index: HashMap<usize, u16>,
    /// Metadata of live spans past the table's capacity, by slot.
    far_metas: HashMap<u32, &'static Metadata<'static>>,
    /// Values of live spans that did not fit inline, by slot.
    spilled: HashMap<u32, Values>,
    /// The first free slot + 1, or 0 when every made slot is live.
    free: u32,
    /// Slots made so far, live or free.
    made: usize,
    live: usize,
}

impl Slab {
    fn slot(&self, index: usize) -> &Slot {
        &self.pages[index / PAGE][index % PAGE]
    }

    fn slot_mut(&mut self, index: usize) -> &mut Slot {
        &mut self.pages[index / PAGE][index % PAGE]
    }

    /// The live slot of `id`; `None` for an id this slab did not give out or has freed.
    fn live(&self, id: &Id) -> Option<usize> {
        let index = usize::try_from(id.into_u64() - 1).ok()?;
        (index < self.made && self.slot(index).meta != 0).then_some(index)
    }

    /// The metadata of a live slot.
    fn meta(&self, index: usize) -> &'static Metadata<'static> {
        match self.slot(index).meta {
            META_ELSEWHERE => self.far_metas[&(index as u32)],
            at => self.metas[usize::from(at) - 1],
        }
    }

    /// The values of a live slot.
    fn values(&self, index: usize) -> &[u8] {
        let slot = self.slot(index);
        match slot.len {
            SPILLED => self.spilled.get(&(index as u32)).map_or(&[], |v| v),
            len => &slot.inline[..usize::from(len)],
        }
    }

    /// Appends to a live slot's values, moving them out of line when they no longer fit.
    fn add_values(&mut self, index: usize, added: &[u8]) {
        let key = index as u32;
        let slot = self.slot_mut(index);
        if slot.len == SPILLED {
            self.spilled
                .entry(key)
                .or_default()
                .extend_from_slice(added);
            return;
        }
        let len = usize::from(slot.len);
        if len + added.len() <= INLINE_VALUES {
            slot.inline[len..len + added.len()].copy_from_slice(added);
            slot.len = (len + added.len()) as u8;
        } else {
            let mut values = Values::from_slice(&slot.inline[..len]);
            values.extend_from_slice(added);
            slot.len = SPILLED;
            self.spilled.insert(key, values);
        }
    }

    fn intern(&mut self, meta: &'static Metadata<'static>) -> u16 {
        let key = meta as *const Metadata<'static> as usize;
        if let Some(&at) = self.meta_index.get(&key) {
            return at;
        }
        if self.metas.len() + 1 >= usize::from(META_ELSEWHERE) {
            return META_ELSEWHERE;
        }
        self.metas.push(meta);
        let at = self.metas.len() as u16;
        self.meta_index.insert(key, at);
        at
    }

    fn insert(&mut self, meta: &'static Metadata<'static>, parent: u32, values: &[u8]) -> usize {
        let at = self.intern(meta);
        let index = if let Some(index) = self.free.checked_sub(1).map(|i| i as usize) {
            self.free = self.slot(index).link;
            index
        } else {
            if self.made == self.pages.len() * PAGE {
                self.pages.push((0..PAGE).map(|_| Slot::vacant()).collect());
            }
            self.made += 1;
            self.made - 1
        };
        self.live += 1;
        if at == META_ELSEWHERE {
            self.far_metas.insert(index as u32, meta);
        }
        *self.slot_mut(index) = Slot {
            link: parent,
            refs: 1,
            meta: at,
            ..Slot::vacant()
        };
        self.add_values(index, values);
        index
    }

    /// Drops one reference to `index`; true when it was the last (the span closed). A closed
    /// span lets go of its parent, which may close in turn.
    fn release(&mut self, index: usize) -> bool {
        let Some(mut parent) = self.drop_ref(index) else {
            return false;
        };
        while let Some(index) = parent {
            parent = self.drop_ref(index).flatten();
        }
        true
    }

    /// Drops one reference; when it was the last, frees the slot and gives its parent.
    fn drop_ref(&mut self, index: usize) -> Option<Option<usize>> {
        let free = self.free;
        let slot = self.slot_mut(index);
        slot.refs -= 1;
        if slot.refs > 0 {
            return None;
        }
        let parent = slot.parent();
        let (spilled, far) = (slot.len == SPILLED, slot.meta == META_ELSEWHERE);
        *slot = Slot {
            link: free,
            ..Slot::vacant()
        };
        if spilled {
            self.spilled.remove(&(index as u32));
        }
        if far {
            self.far_metas.remove(&(index as u32));
        }
        self.free = link_to(index);
        self.live -= 1;
        Some(parent)
    }
}

/// Writes one field value per call (see [`FIELD`]).
struct ValueWriter<'a>(&'a mut Values);

impl fmt::Write for ValueWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl Visit for ValueWriter<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // What fmt leaves out: the `log` crate's metadata of a forwarded record.
        if field.name().starts_with("log.") {
            return;
        }
        // A field set has at most 32 fields.
        let index = field.index() as u8;
        if index < FAR_FIELD - FIELD {
            self.0.push(FIELD + index);
        } else {
            self.0.extend_from_slice(&[FAR_FIELD, index]);
        }
        let _ = write!(self, "{value:?}");
    }
}

/// A `tracing` subscriber that writes fmt's full line format (timestamp, level, span scope,
/// fields; no target) and keeps spans in a compact slab: with it, a session's span costs a
/// 64-byte slot here (besides the 32-byte handle the session holds inline) where
/// `tracing-subscriber`'s registry and fmt layer keep ~560 bytes.
///
/// It enables everything: put a filter on top, such as `tracing-subscriber`'s `EnvFilter`.
///
/// # Examples
///
/// ```
/// use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};
///
/// let installed = switchboard::log::LineLog::new(std::io::stderr, false)
///     .with(EnvFilter::new("info"))
///     .try_init();
/// assert!(installed.is_ok());
/// tracing::info!(port = 7000, "listening");
/// ```
pub struct LineLog<W> {
    spans: Mutex<Slab>,
    /// The spans each thread is in, innermost last.
    stacks: ThreadLocal<RefCell<Vec<Id>>>,
    writer: W,
    ansi: bool,
}

impl<W> LineLog<W> {
    fn slab(&self) -> std::sync::MutexGuard<'_, Slab> {
        // A panic while the lock was held left the slab consistent: every change is a few
        // assignments that do not panic.
        self.spans.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<W> std::fmt::Debug for LineLog<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineLog")
            .field("live_spans", &self.slab().live)
            .field("ansi", &self.ansi)
            .finish_non_exhaustive()
    }
}

impl<W> LineLog<W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    /// Lines go to `writer` (one write per line); `ansi` colours the level, as fmt does on a
    /// terminal.
    pub fn new(writer: W, ansi: bool) -> Self {
        LineLog {
            spans: Mutex::new(Slab::default()),
            stacks: ThreadLocal::new(),
            writer,
            ansi,
        }
    }

    fn current(&self) -> Option<Id> {
        self.stacks.get()?.borrow().last().cloned()
    }

    /// Writes `name{fields}: ` for the span `id` and its ancestors, outermost first; nothing
    /// for a span this subscriber does not hold.
    fn write_scope(&self, id: &Id, line: &mut String) {
        let slab = self.slab();
        let mut chain = SmallVec::<[usize; 8]>::new();
        let mut next = slab.live(id);
        if next.is_none() {
            return;
        }
        while let Some(index) = next {
            chain.push(index);
            next = slab.slot(index).parent();
        }
        for &index in chain.iter().rev() {
            let meta = slab.meta(index);
            line.push_str(meta.name());
            let values = slab.values(index);
            if !values.is_empty() {
                line.push('{');
                write_values(meta, values, line);
                line.push('}');
            }
            line.push(':');
        }
        line.push(' ');
    }

    fn write_level(&self, level: &Level, line: &mut String) {
        let color = match *level {
            Level::TRACE => "35",
            Level::DEBUG => "34",
            Level::INFO => "32",
            Level::WARN => "33",
            Level::ERROR => "31",
        };
        if self.ansi {
            let _ = write!(line, "\x1b[{color}m{level:>5}\x1b[0m ");
        } else {
            let _ = write!(line, "{level:>5} ");
        }
    }

    #[cfg(test)]
    fn live_spans(&self) -> usize {
        self.slab().live
    }

    #[cfg(test)]
    fn spilled_spans(&self) -> usize {
        self.slab().spilled.len()
    }
}

/// `name=text` for each stored value, space-separated; a `message` value is written bare.
fn write_values(meta: &Metadata<'_>, values: &[u8], line: &mut String) {
    let mut rest = values;
    let mut first = true;
    while let Some((&marker, after)) = rest.split_first() {
        let (index, after) = match marker {
            FAR_FIELD => match after.split_first() {
                Some((&index, after)) => (usize::from(index), after),
                None => break,
            },
            _ => (usize::from(marker.wrapping_sub(FIELD)), after),
        };
        let end = after
            .iter()
            .position(|&b| b >= FIELD)
            .unwrap_or(after.len());
        let text = std::str::from_utf8(&after[..end]).unwrap_or("<invalid>");
        rest = &after[end..];
        if !first {
            line.push(' ');
        }
        first = false;
        match meta.fields().iter().nth(index).map(|f| f.name()) {
            Some("message") => line.push_str(text),
            Some(name) => {
                line.push_str(name.strip_prefix("r#").unwrap_or(name));
                line.push('=');
                line.push_str(text);
            }
            None => line.push_str(text),
        }
    }
}

impl<W> Subscriber for LineLog<W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &span::Attributes<'_>) -> Id {
        let mut values = Values::new();
        attrs.record(&mut ValueWriter(&mut values));
        let parent = if attrs.is_contextual() {
            self.current()
        } else {
            attrs.parent().cloned()
        };
        let mut slab = self.slab();
        let parent = match parent.and_then(|p| slab.live(&p)) {
            Some(index) => {
                slab.slot_mut(index).refs += 1;
                link_to(index)
            }
            None => 0,
        };
        let index = slab.insert(attrs.metadata(), parent, &values);
        Id::from_non_zero_u64(NonZeroU64::new(index as u64 + 1).expect("index + 1 is not zero"))
    }

    fn record(&self, span: &Id, values: &span::Record<'_>) {
        let mut added = Values::new();
        values.record(&mut ValueWriter(&mut added));
        let mut slab = self.slab();
        if let Some(index) = slab.live(span) {
            slab.add_values(index, &added);
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = String::with_capacity(160);
        let _ = SystemTime.format_time(&mut Writer::new(&mut line));
        line.push(' ');
        self.write_level(event.metadata().level(), &mut line);
        let scope = if event.is_contextual() {
            self.current()
        } else {
            event.parent().cloned()
        };
        if let Some(id) = scope {
            self.write_scope(&id, &mut line);
        }
        let _ = DefaultFields::new().format_fields(Writer::new(&mut line), event);
        line.push('\n');
        // One write per line, so lines from several threads do not interleave.
        let _ = self.writer.make_writer().write_all(line.as_bytes());
    }

    fn enter(&self, span: &Id) {
        self.stacks
            .get_or(|| RefCell::new(Vec::new()))
            .borrow_mut()
            .push(span.clone());
    }

    fn exit(&self, span: &Id) {
        if let Some(stack) = self.stacks.get() {
            let mut stack = stack.borrow_mut();
            if let Some(at) = stack.iter().rposition(|id| id == span) {
                stack.remove(at);
            }
        }
    }

    fn clone_span(&self, span: &Id) -> Id {
        let mut slab = self.slab();
        if let Some(index) = slab.live(span) {
            slab.slot_mut(index).refs += 1;
        }
        span.clone()
    }

    fn try_close(&self, span: Id) -> bool {
        let mut slab = self.slab();
        match slab.live(&span) {
            Some(index) => slab.release(index),
            None => false,
        }
    }

    fn current_span(&self) -> tracing_core::span::Current {
        let Some(id) = self.current() else {
            return tracing_core::span::Current::none();
        };
        let meta = {
            let slab = self.slab();
            slab.live(&id).map(|index| slab.meta(index))
        };
        match meta {
            Some(meta) => tracing_core::span::Current::new(id, meta),
            None => tracing_core::span::Current::none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn with_log(f: impl FnOnce(&Arc<LineLog<Captured>>)) -> Vec<String> {
        let out = Captured::default();
        let log = Arc::new(LineLog::new(out.clone(), false));
        let dispatch = tracing::Dispatch::new(log.clone());
        tracing::dispatcher::with_default(&dispatch, || f(&log));
        out.lines()
    }

    /// The line without its timestamp (the text up to the first space).
    fn body(line: &str) -> &str {
        line.split_once(' ').unwrap().1
    }

    #[test]
    fn a_slot_is_64_bytes() {
        // The per-connection cost of a session span on the heap: this slot (the session holds
        // its handle inline).
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }

    #[test]
    fn lines_read_as_fmt_writes_them() {
        let lines = with_log(|_| {
            let outer = tracing::info_span!("listener", addr = %"127.0.0.1:7000");
            let _o = outer.enter();
            let inner = tracing::info_span!("session", id = 7u64, name = "x y");
            let _i = inner.enter();
            tracing::warn!(bytes = 3, "peer went away");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(
            body(&lines[0]),
            " WARN listener{addr=127.0.0.1:7000}:session{id=7 name=\"x y\"}: peer went away bytes=3"
        );
        let stamp = lines[0].split_once(' ').unwrap().0;
        assert!(stamp.ends_with('Z') && stamp.contains('T'), "{stamp}");
    }

    #[test]
    fn an_event_outside_spans_has_no_scope_and_a_span_without_values_no_braces() {
        let lines = with_log(|_| {
            tracing::info!("plain");
            let span = tracing::info_span!("bare");
            span.in_scope(|| tracing::debug!(n = 1));
        });
        assert_eq!(body(&lines[0]), " INFO plain");
        assert_eq!(body(&lines[1]), "DEBUG bare: n=1");
    }

    #[test]
    fn values_recorded_later_and_explicit_parents_show() {
        let lines = with_log(|_| {
            let parent = tracing::info_span!("conn", peer = tracing::field::Empty);
            parent.record("peer", "a");
            let child = tracing::info_span!(parent: &parent, "turn", n = 2);
            tracing::info!(parent: &child, "inside");
        });
        assert_eq!(body(&lines[0]), " INFO conn{peer=\"a\"}:turn{n=2}: inside");
    }

    #[test]
    fn closed_spans_free_their_slots_and_the_slots_are_reused() {
        with_log(|log| {
            let spans: Vec<_> = (0..600)
                .map(|i| tracing::info_span!("session", id = i))
                .collect();
            assert_eq!(log.live_spans(), 600);
            drop(spans);
            assert_eq!(log.live_spans(), 0);
            let again: Vec<_> = (0..600)
                .map(|i| tracing::info_span!("session", id = i))
                .collect();
            assert_eq!(log.live_spans(), 600);
            assert_eq!(log.slab().pages.len(), 600_usize.div_ceil(PAGE));
            drop(again);
        });
    }

    #[test]
    fn a_parent_lives_while_a_child_holds_it() {
        with_log(|log| {
            let parent = tracing::info_span!("conn");
            let child = tracing::info_span!(parent: &parent, "turn");
            drop(parent);
            assert_eq!(log.live_spans(), 2);
            tracing::info!(parent: &child, "still");
            drop(child);
            assert_eq!(log.live_spans(), 0);
        });
    }

    #[test]
    fn a_session_span_keeps_its_values_inline_and_long_ones_spill() {
        let lines = with_log(|log| {
            let session = tracing::info_span!(
                "session",
                id = %"#123456",
                peer = %"255.255.255.255:65535",
                transport = %"tcp",
                listener = %"127.0.0.1:7000",
                worker = 1usize,
            );
            assert_eq!(log.spilled_spans(), 0);
            let long = tracing::info_span!("long", text = %"x".repeat(200));
            assert_eq!(log.spilled_spans(), 1);
            session.in_scope(|| tracing::info!("in"));
            long.in_scope(|| tracing::info!("in"));
        });
        assert!(lines[0].contains(
            "session{id=#123456 peer=255.255.255.255:65535 transport=tcp listener=127.0.0.1:7000 worker=1}: in"
        ));
        assert!(lines[1].contains(&format!("long{{text={}}}: in", "x".repeat(200))));
    }

    #[test]
    fn values_recorded_past_the_inline_room_move_out_of_line_and_back_when_freed() {
        let lines = with_log(|log| {
            let span = tracing::info_span!("grows", a = %"x".repeat(40), b = tracing::field::Empty);
            assert_eq!(log.spilled_spans(), 0);
            span.record("b", "y".repeat(20));
            assert_eq!(log.spilled_spans(), 1);
            span.in_scope(|| tracing::info!("in"));
            drop(span);
            assert_eq!(
                log.spilled_spans(),
                0,
                "a freed slot keeps nothing out of line"
            );
            assert_eq!(log.live_spans(), 0);
        });
        let (a, b) = ("x".repeat(40), "y".repeat(20));
        assert_eq!(
            body(&lines[0]),
            format!(" INFO grows{{a={a} b=\"{b}\"}}: in")
        );
    }

    #[test]
    fn fields_past_the_seventh_and_unicode_text_read_back() {
        let lines = with_log(|_| {
            let span = tracing::info_span!(
                "wide", f0 = 0, f1 = 1, f2 = 2, f3 = 3, f4 = 4, f5 = 5, f6 = 6, f7 = 7, f8 = %"ü€𝄞"
            );
            span.in_scope(|| tracing::info!("in"));
        });
        assert_eq!(
            body(&lines[0]),
            " INFO wide{f0=0 f1=1 f2=2 f3=3 f4=4 f5=5 f6=6 f7=7 f8=ü€𝄞}: in"
        );
    }

    #[test]
    fn spans_past_a_full_metadata_table_keep_their_metadata_aside() {
        let mut slab = Slab::default();
        // A span has its metadata only while a subscriber takes it.
        let (mut first, mut later) = (None, None);
        with_log(|_| {
            first = tracing::info_span!("first").metadata();
            later = tracing::info_span!("later").metadata();
        });
        let (first, later) = (first.unwrap(), later.unwrap());
        slab.metas = vec![first; usize::from(META_ELSEWHERE) - 1];
        let index = slab.insert(later, 0, &[FIELD, b'v']);
        assert_eq!(slab.slot(index).meta, META_ELSEWHERE);
        assert_eq!(slab.meta(index).name(), "later");
        assert_eq!(slab.values(index), &[FIELD, b'v']);
        assert!(slab.release(index));
        assert!(slab.far_metas.is_empty());
    }

    #[test]
    fn spans_entered_on_other_threads_do_not_leak_into_this_one() {
        let lines = with_log(|_| {
            let span = tracing::info_span!("elsewhere");
            let dispatch = tracing::dispatcher::get_default(|d| d.clone());
            std::thread::scope(|s| {
                s.spawn(|| {
                    tracing::dispatcher::with_default(&dispatch, || {
                        let _e = span.enter();
                        tracing::info!("there");
                    })
                });
            });
            tracing::info!("here");
        });
        assert_eq!(body(&lines[0]), " INFO elsewhere: there");
        assert_eq!(body(&lines[1]), " INFO here");
    }
}
