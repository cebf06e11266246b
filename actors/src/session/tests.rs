//! The session's state machine over an in-memory duplex (no socket), one test per row of the
//! table in `mod.rs`: Open reads and answers; the peer's FIN ends reading (`read_finished`),
//! then the session flushes and closes; Closing answers what was read, flushes, shuts the
//! write side and lingers, discarding, until the peer's FIN; Abort ends at once; a pause stops
//! delivery; answers that fill the write buffer hold frames; a half-close from this side keeps
//! reading.

use std::time::Duration;

use bytes::Bytes;
use switchboard_codec::Lines;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, DuplexStream},
    sync::mpsc,
};

use super::launch::start_in_memory;
use super::{
    Abort, Conn, DisconnectFromHost, DisconnectReason, GetInfo, PauseReading, ResumeReading,
    SessionHandler, SessionInfo, ShutdownWrite,
};
use crate::SessionConfig;

#[derive(Debug, PartialEq)]
enum Seen {
    Line(String),
    ReadFinished,
    Ended(String),
}

/// Echoes each line (unless `quiet`), reports what happens.
struct Probe {
    seen: mpsc::UnboundedSender<Seen>,
    quiet: bool,
}

impl SessionHandler<Lines> for Probe {
    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        if !self.quiet {
            conn.write(line.clone()).expect("an answer is taken");
        }
        let _ = self.seen.send(Seen::Line(line));
    }
    fn read_finished(&mut self, _: &mut Conn<'_, Lines, Self>) {
        let _ = self.seen.send(Seen::ReadFinished);
    }
    fn disconnected(&mut self, reason: &DisconnectReason, _: &SessionInfo) {
        let _ = self.seen.send(Seen::Ended(format!("{reason:?}")));
    }
}

const LIMIT: Duration = Duration::from_secs(5);

async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(LIMIT, seen.recv())
        .await
        .expect("an event in time")
        .expect("the session reports")
}

fn start(
    config: SessionConfig,
    quiet: bool,
) -> (
    actix::Addr<super::Session<Lines, Probe>>,
    DuplexStream,
    mpsc::UnboundedReceiver<Seen>,
) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (tx, rx) = mpsc::unbounded_channel();
    let session = start_in_memory(ours, Lines::new(), Probe { seen: tx, quiet }, config);
    (session, theirs, rx)
}

async fn read_all(peer: &mut DuplexStream) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::time::timeout(LIMIT, peer.read_to_end(&mut all))
        .await
        .expect("EOF in time")
        .expect("a clean read");
    all
}

#[actix_rt::test]
async fn open_reads_and_answers_then_the_peers_fin_finishes_reading_and_closes() {
    let (_session, mut peer, mut seen) = start(SessionConfig::default(), false);
    peer.write_all(b"one\ntwo\n").await.unwrap();
    assert_eq!(next(&mut seen).await, Seen::Line("one".into()));
    assert_eq!(next(&mut seen).await, Seen::Line("two".into()));
    peer.shutdown().await.unwrap();
    assert_eq!(next(&mut seen).await, Seen::ReadFinished);
    // The answers are flushed, then our FIN: the peer reads to EOF.
    assert_eq!(read_all(&mut peer).await, b"one\ntwo\n");
    assert_eq!(next(&mut seen).await, Seen::Ended("PeerClosed".into()));
}

#[actix_rt::test]
async fn closing_answers_what_was_read_flushes_then_lingers_discarding_until_the_fin() {
    let (session, mut peer, mut seen) = start(SessionConfig::default(), false);
    peer.write_all(b"last\n").await.unwrap();
    assert_eq!(next(&mut seen).await, Seen::Line("last".into()));
    session.send(DisconnectFromHost).await.unwrap();
    // Our side is shut after the answer...
    let mut answer = Vec::new();
    tokio::time::timeout(LIMIT, peer.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, b"last\n");
    // ...and the session lingers: what the peer sends now is discarded, not delivered.
    peer.write_all(b"ignored\n").await.unwrap();
    // No event says bytes were discarded: ask, a bounded number of times.
    let mut info = session.send(GetInfo).await.unwrap();
    for _ in 0..1000 {
        if info.bytes_discarded > 0 {
            break;
        }
        tokio::task::yield_now().await;
        info = session.send(GetInfo).await.unwrap();
    }
    assert_eq!(info.bytes_discarded, 8);
    assert_eq!(info.frames_in, 1);
    peer.shutdown().await.unwrap();
    assert_eq!(next(&mut seen).await, Seen::Ended("Closed".into()));
}

#[actix_rt::test]
async fn abort_closes_at_once() {
    let (session, mut peer, mut seen) = start(SessionConfig::default(), false);
    session.send(Abort).await.unwrap();
    assert_eq!(next(&mut seen).await, Seen::Ended("Aborted".into()));
    assert!(read_all(&mut peer).await.is_empty());
}

#[actix_rt::test]
async fn a_paused_session_delivers_nothing_until_resumed() {
    let (session, mut peer, mut seen) = start(SessionConfig::default(), true);
    session.send(PauseReading).await.unwrap();
    peer.write_all(b"held\n").await.unwrap();
    // A round trip through the mailbox after the write: the session has had its turns.
    for _ in 0..10 {
        let info = session.send(GetInfo).await.unwrap();
        assert_eq!(info.frames_in, 0, "delivered while paused");
        tokio::task::yield_now().await;
    }
    assert!(seen.try_recv().is_err());
    session.send(ResumeReading).await.unwrap();
    assert_eq!(next(&mut seen).await, Seen::Line("held".into()));
}

#[actix_rt::test]
async fn answers_that_fill_the_write_buffer_hold_frames_until_it_drains() {
    // A tiny pipe and tiny watermarks: the peer not reading fills them at once.
    let (ours, peer) = tokio::io::duplex(64);
    let (mut peer_read, mut peer_write) = tokio::io::split(peer);
    let (tx, mut seen) = mpsc::unbounded_channel();
    let config = SessionConfig::default().with_write_watermarks(16, 64);
    let session = start_in_memory(
        ours,
        Lines::new(),
        Probe {
            seen: tx,
            quiet: false,
        },
        config,
    );
    let line = "x".repeat(40);
    let burst: String = (0..20).map(|_| format!("{line}\n")).collect();
    let writer = tokio::spawn(async move {
        peer_write.write_all(burst.as_bytes()).await.unwrap();
    });
    // Some frames are answered, then the rest wait: the answers filled the buffer.
    assert_eq!(next(&mut seen).await, Seen::Line(line.clone()));
    let mut held = None;
    for _ in 0..50 {
        let info = session.send(GetInfo).await.unwrap();
        if info.read_paused {
            held = Some(info);
            break;
        }
        tokio::task::yield_now().await;
    }
    let held = held.expect("frames held back while answers wait");
    assert!(held.frames_in < 20, "{held:?}");
    assert!(held.bytes_to_write <= 2 * 64 + 41, "{held:?}");
    // The peer reads: everything is answered (and the writer, held back meanwhile, finishes).
    let mut got = vec![0u8; 20 * 41];
    tokio::time::timeout(LIMIT, peer_read.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(LIMIT, writer).await.unwrap().unwrap();
    assert_eq!(got.len(), 20 * 41);
    let info = session.send(GetInfo).await.unwrap();
    assert_eq!(info.frames_in, 20);
}

#[actix_rt::test]
async fn a_half_close_from_this_side_keeps_reading_until_the_peer_is_done() {
    let (session, mut peer, mut seen) = start(SessionConfig::default(), true);
    session.send(ShutdownWrite).await.unwrap();
    // Our FIN reaches the peer...
    assert!(read_all(&mut peer).await.is_empty());
    // ...which can still send.
    peer.write_all(b"after your FIN\n").await.unwrap();
    assert_eq!(next(&mut seen).await, Seen::Line("after your FIN".into()));
    let refused = session
        .send(super::Write(Bytes::from_static(b"late")))
        .await
        .unwrap();
    assert!(refused.is_err(), "a write after the half-close");
    peer.shutdown().await.unwrap();
    assert_eq!(next(&mut seen).await, Seen::ReadFinished);
    assert_eq!(next(&mut seen).await, Seen::Ended("Closed".into()));
}

/// Reports the size of each raw frame: with [`Raw`](switchboard_codec::Raw), one per read.
struct ReadSizes(mpsc::UnboundedSender<usize>);

impl SessionHandler<switchboard_codec::Raw> for ReadSizes {
    fn ready_read(&mut self, bytes: Bytes, _: &mut Conn<'_, switchboard_codec::Raw, Self>) {
        let _ = self.0.send(bytes.len());
    }
}

/// The read sizes the session reports, in KiB, until they add up to `kib`.
async fn reads_adding_up_to(reads: &mut mpsc::UnboundedReceiver<usize>, kib: usize) -> Vec<usize> {
    let mut got = Vec::new();
    while got.iter().sum::<usize>() < kib {
        let Ok(read) = tokio::time::timeout(LIMIT, reads.recv()).await else {
            panic!("no read in time; reads so far: {got:?}")
        };
        got.push(read.expect("the session reports") / 1024);
    }
    got
}

#[actix_rt::test]
async fn reads_grow_while_they_fill_and_shrink_when_they_come_back_small() {
    const KIB: usize = 1024;
    let (ours, mut peer) = tokio::io::duplex(2 * 1024 * KIB);
    // Everything is waiting before the first read: each read gets all the room it asks for.
    peer.write_all(&vec![1u8; 1024 * KIB]).await.unwrap();
    let (tx, mut sizes) = mpsc::unbounded_channel();
    let _session = start_in_memory(
        ours,
        switchboard_codec::Raw,
        ReadSizes(tx),
        SessionConfig::default(),
    );
    // 64 KiB first, doubled by each full read up to the 256 KiB cap; the last read finds only
    // a quarter of its room...
    assert_eq!(
        reads_adding_up_to(&mut sizes, 1024).await,
        [64, 128, 256, 256, 256, 64]
    );
    // ...so the next asks half as much, fills it, and the one after asks the cap again.
    peer.write_all(&vec![2u8; 200 * KIB]).await.unwrap();
    assert_eq!(reads_adding_up_to(&mut sizes, 200).await, [128, 72]);
}

#[derive(Debug, PartialEq)]
enum Watermark {
    Full,
    Drained,
}

/// Answers every line with `answer` bytes, reports the watermark callbacks.
struct BigAnswers {
    answer: usize,
    seen: mpsc::UnboundedSender<Watermark>,
}

impl SessionHandler<Lines> for BigAnswers {
    fn ready_read(&mut self, _: String, conn: &mut Conn<'_, Lines, Self>) {
        conn.write("a".repeat(self.answer - 1))
            .expect("an answer is taken");
    }
    fn write_buffer_full(&mut self, _: &mut Conn<'_, Lines, Self>) {
        let _ = self.seen.send(Watermark::Full);
    }
    fn write_buffer_drained(&mut self, _: &mut Conn<'_, Lines, Self>) {
        let _ = self.seen.send(Watermark::Drained);
    }
}

#[actix_rt::test]
async fn an_answer_held_below_the_high_watermark_is_reported_full() {
    const KIB: usize = 1024;
    // The peer's pipe takes 24 KiB of a 48 KiB answer: 24 KiB stay, under the 32 KiB mark and
    // over the 16 KiB one, and the session waits with its frames held.
    let (ours, mut peer) = tokio::io::duplex(24 * KIB);
    let (tx, mut seen) = mpsc::unbounded_channel();
    let session = start_in_memory(
        ours,
        Lines::new(),
        BigAnswers {
            answer: 48 * KIB,
            seen: tx,
        },
        SessionConfig::default().with_write_watermarks(16 * KIB, 32 * KIB),
    );
    peer.write_all(b"first\nsecond\n").await.unwrap();
    let event = tokio::time::timeout(LIMIT, seen.recv()).await;
    assert_eq!(event.expect("an event in time"), Some(Watermark::Full));
    let info = session.send(GetInfo).await.unwrap();
    assert!(info.read_paused, "{info:?}");
    assert_eq!((info.frames_in, info.bytes_to_write), (1, 24 * KIB));
    // The peer reads: drained, and the second line is answered too.
    let mut answers = vec![0u8; 2 * 48 * KIB];
    let read = tokio::time::timeout(LIMIT, peer.read_exact(&mut answers)).await;
    read.expect("both answers in time").unwrap();
    let event = tokio::time::timeout(LIMIT, seen.recv()).await;
    assert_eq!(event.expect("an event in time"), Some(Watermark::Drained));
}

/// A codec whose one frame is `total` bytes: until they are all in, every decode sees a
/// partial frame and records how much the last read added.
struct OneLongFrame {
    total: usize,
    seen: usize,
    reads: mpsc::UnboundedSender<usize>,
}

impl tokio_util::codec::Decoder for OneLongFrame {
    type Item = Bytes;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut bytes::BytesMut) -> Result<Option<Bytes>, std::io::Error> {
        if buf.len() > self.seen {
            let _ = self.reads.send(buf.len() - self.seen);
            self.seen = buf.len();
        }
        Ok((buf.len() >= self.total).then(|| buf.split_to(self.total).freeze()))
    }
}

impl tokio_util::codec::Encoder<Bytes> for OneLongFrame {
    type Error = std::io::Error;

    fn encode(&mut self, item: Bytes, buf: &mut bytes::BytesMut) -> Result<(), std::io::Error> {
        buf.extend_from_slice(&item);
        Ok(())
    }
}

/// Takes the frame, says nothing.
struct Sink;

impl SessionHandler<OneLongFrame> for Sink {
    fn ready_read(&mut self, _: Bytes, _: &mut Conn<'_, OneLongFrame, Self>) {}
}

#[actix_rt::test]
async fn a_partial_frame_in_the_buffer_does_not_make_reads_larger_than_the_largest() {
    const KIB: usize = 1024;
    let (ours, mut peer) = tokio::io::duplex(2 * 1024 * KIB);
    // The frame's start stays in the read buffer, whose allocation grows like a `Vec`'s: the
    // room past it outgrows the largest read, which must still be the most one read takes.
    peer.write_all(&vec![3u8; 1536 * KIB]).await.unwrap();
    let (tx, mut reads) = mpsc::unbounded_channel();
    let codec = OneLongFrame {
        total: 2048 * KIB,
        seen: 0,
        reads: tx,
    };
    let _session = start_in_memory(ours, codec, Sink, SessionConfig::default());
    assert_eq!(
        reads_adding_up_to(&mut reads, 1536).await,
        [64, 128, 256, 256, 256, 256, 256, 64]
    );
}

/// What a session holds in buffers: its read and its write buffer's capacity.
#[derive(actix::Message)]
#[rtype(result = "(usize, usize)")]
struct HeldBuffers;

impl<C: super::SessionCodec, H: SessionHandler<C>> actix::Handler<HeldBuffers>
    for super::Session<C, H>
{
    type Result = actix::MessageResult<HeldBuffers>;

    fn handle(&mut self, _: HeldBuffers, _: &mut actix::Context<Self>) -> Self::Result {
        actix::MessageResult((
            self.core.read_buf.capacity(),
            self.core.write_buf.capacity(),
        ))
    }
}

/// On tokio's paused clock (it moves only when every task waits on time), so the session's
/// timeout clock ticks when the test says and the bounds below are exact, not a race with a
/// loaded machine.
#[test]
fn a_session_that_only_writes_gives_its_read_buffer_back_in_the_second_tick_without_a_read() {
    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a paused runtime")
    });
    system.block_on(async {
        // A tick every 100 ms (a quarter of the idle timeout); writes count as activity, so
        // the session never idles out. The in-memory stream, like TLS, reports readable at
        // every poll: only the tick frees the buffer of a session that keeps one between
        // reads.
        let config = SessionConfig::default()
            .with_idle_timeout(Some(Duration::from_millis(400)))
            .with_frame_timeout(None);
        let period = config.tick().expect("timeouts tick");
        let (session, mut peer, mut seen) = start(config, false);
        peer.write_all(b"hello\n").await.unwrap();
        assert_eq!(next(&mut seen).await, Seen::Line("hello".into()));
        let (read, _) = session.send(HeldBuffers).await.unwrap();
        assert!(read > 0, "a session that just read holds a read buffer");
        let last_read = tokio::time::Instant::now();
        let pace = period / 5;
        let mut answer = [0u8; 64];
        loop {
            // Only writes from here on, `pace` apart on the paused clock; the peer reads each.
            session
                .send(super::Write("update".to_string()))
                .await
                .unwrap()
                .expect("the write is taken");
            let n = tokio::time::timeout(LIMIT, peer.read(&mut answer))
                .await
                .expect("the write arrives in time")
                .unwrap();
            assert!(n > 0, "the session is still open");
            let (read, write) = session.send(HeldBuffers).await.unwrap();
            let quiet_for = last_read.elapsed();
            if read == 0 {
                assert!(write > 0, "a session still writing keeps its write buffer");
                // The first tick after the read sees it and keeps the buffer; the next one,
                // a whole period without a read, gives it back.
                assert!(
                    quiet_for > period && quiet_for <= 2 * period + pace,
                    "given back after {quiet_for:?} without a read (ticks every {period:?})"
                );
                break;
            }
            assert!(
                quiet_for <= 2 * period + pace,
                "the read buffer ({read} B) is still held after {quiet_for:?} without a read"
            );
            tokio::time::sleep(pace).await;
        }
    });
}

/// Writes bytes past the codec between encoded lines, and reports each write's result.
struct PastTheCodec {
    results: mpsc::UnboundedSender<WriteResult>,
}

type WriteResult = Result<(), crate::SessionError>;

/// Larger than the duplex's buffer and twice the high watermark: most of it waits unsent.
const HELD_BYTES: usize = 1 << 20;

impl SessionHandler<Lines> for PastTheCodec {
    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        let results = match line.as_str() {
            "order" => vec![
                conn.write_bytes(Bytes::from_static(b"first\n")),
                conn.write("second".to_string()),
                conn.write_bytes(Bytes::from_static(b"third\n")),
            ],
            "big" => vec![
                conn.write_bytes(pattern(HELD_BYTES)),
                conn.write_bytes(Bytes::from_static(b"refused\n")),
            ],
            // Static bytes share their memory: held while the socket takes them, copied once
            // it blocks (a 5-byte duplex blocks at once). What the copy frees is checked in
            // `buffer.rs`; here, that the bytes arrive whole and in order through it.
            "split" => vec![
                conn.write_bytes(Bytes::from_static(b"abcdefgh")),
                conn.write("ijk".to_string()),
            ],
            _ => vec![conn.write_bytes(Bytes::from_static(b"end\n"))],
        };
        for result in results {
            let _ = self.results.send(result);
        }
    }
}

/// Bytes that show an offset error: no two neighbouring windows of a few bytes alike.
fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn start_past_the_codec(
    duplex_capacity: usize,
) -> (
    actix::Addr<super::Session<Lines, PastTheCodec>>,
    DuplexStream,
    mpsc::UnboundedReceiver<WriteResult>,
) {
    let (ours, theirs) = tokio::io::duplex(duplex_capacity);
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = PastTheCodec { results: tx };
    let session = start_in_memory(ours, Lines::new(), handler, SessionConfig::default());
    (session, theirs, rx)
}

async fn next_result(results: &mut mpsc::UnboundedReceiver<WriteResult>) -> WriteResult {
    tokio::time::timeout(LIMIT, results.recv())
        .await
        .expect("a write result in time")
        .expect("the handler reports")
}

/// The next `len` bytes the session sent.
async fn read_exactly(peer: &mut DuplexStream, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    tokio::time::timeout(LIMIT, peer.read_exact(&mut bytes))
        .await
        .expect("the bytes in time")
        .expect("a clean read");
    bytes
}

#[actix_rt::test]
async fn bytes_written_as_they_are_keep_their_place_among_encoded_writes() {
    let (session, mut peer, mut results) = start_past_the_codec(64 * 1024);
    peer.write_all(b"order\n").await.unwrap();
    for _ in 0..3 {
        next_result(&mut results)
            .await
            .expect("each write is taken");
    }
    let answer = read_exactly(&mut peer, b"first\nsecond\nthird\n".len()).await;
    assert_eq!(answer, b"first\nsecond\nthird\n");
    let info = session.send(GetInfo).await.unwrap();
    assert_eq!(info.frames_out, 3, "each write is one frame out");
    assert_eq!(info.bytes_out, answer.len() as u64);
}

#[actix_rt::test]
async fn bytes_held_by_reference_are_not_copied_and_count_against_the_watermarks() {
    let (session, mut peer, mut results) = start_past_the_codec(64 * 1024);
    peer.write_all(b"big\n").await.unwrap();
    next_result(&mut results)
        .await
        .expect("the answer is taken");
    match next_result(&mut results).await {
        Err(crate::SessionError::WriteBufferFull { buffered, .. }) => {
            assert_eq!(buffered, HELD_BYTES, "held bytes count as buffered")
        }
        other => panic!("a write past twice the high watermark was not refused: {other:?}"),
    }
    // The peer reads nothing yet: the session holds what the duplex did not take.
    let info = session.send(GetInfo).await.unwrap();
    assert!(
        info.bytes_to_write > HELD_BYTES / 2,
        "{} bytes to write",
        info.bytes_to_write
    );
    let (_, write_capacity) = session.send(HeldBuffers).await.unwrap();
    assert_eq!(
        write_capacity, 0,
        "the held bytes were copied into the write buffer"
    );
    let all = read_exactly(&mut peer, HELD_BYTES).await;
    assert!(
        all == pattern(HELD_BYTES),
        "the held bytes came back changed"
    );
    // Drained, the session takes writes again.
    peer.write_all(b"again\n").await.unwrap();
    next_result(&mut results).await.expect("taken once drained");
    assert_eq!(read_exactly(&mut peer, 4).await, b"end\n");
}

#[actix_rt::test]
async fn held_bytes_written_in_pieces_through_a_blocking_socket_arrive_whole_and_in_order() {
    // Five bytes at a time: writes end inside the held part, then inside the encoded one, and
    // the socket blocks between them.
    let (session, mut peer, mut results) = start_past_the_codec(5);
    peer.write_all(b"split\n").await.unwrap();
    next_result(&mut results)
        .await
        .expect("the held bytes are taken");
    next_result(&mut results)
        .await
        .expect("the line behind them is taken");
    let answer = read_exactly(&mut peer, b"abcdefghijk\n".len()).await;
    assert_eq!(answer, b"abcdefghijk\n");
    let info = session.send(GetInfo).await.unwrap();
    assert_eq!((info.bytes_out, info.bytes_to_write), (12, 0));
}

#[actix_rt::test]
async fn the_write_bytes_message_sends_as_they_are_and_is_refused_once_the_write_side_is_shut() {
    let (session, mut peer, _results) = start_past_the_codec(64 * 1024);
    session
        .send(super::WriteBytes(Bytes::from_static(b"from outside\n")))
        .await
        .unwrap()
        .expect("taken");
    let line = read_exactly(&mut peer, b"from outside\n".len()).await;
    assert_eq!(line, b"from outside\n");
    session.send(ShutdownWrite).await.unwrap();
    match session
        .send(super::WriteBytes(Bytes::from_static(b"late\n")))
        .await
        .unwrap()
    {
        Err(crate::SessionError::Closing) => {}
        other => panic!("a write after the write side was shut: {other:?}"),
    }
    // The shut write side ends the peer's reading: nothing else came.
    assert!(read_all(&mut peer).await.is_empty());
}
