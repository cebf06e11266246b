//! Property-style round trips: random messages are encoded, concatenated, cut at
//! random points, decoded, and compared with what was sent.
//!
//! A fixed-seed xorshift generator keeps every run the same, with no extra
//! dependency. A failure prints the iteration, so it can be replayed.

use bytes::{Bytes, BytesMut};
use switchboard_codec::{CodecError, Frames, Lines, Raw};
use tokio_util::codec::{Decoder, Encoder};

const ITERATIONS: usize = 3000;

/// xorshift64*: small, fast, and good enough to pick lengths and cut points.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`; `n` must not be 0.
    fn below(&mut self, n: usize) -> usize {
        let n64 = u64::try_from(n).unwrap();
        usize::try_from(self.next_u64() % n64).unwrap()
    }

    /// A number in `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn byte(&mut self) -> u8 {
        self.next_u64().to_be_bytes()[0]
    }
}

/// Cuts `wire` at random points, sometimes into single bytes, sometimes not at all.
fn random_chunks<'a>(rng: &mut XorShift, wire: &'a [u8]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = wire;
    let max_chunk = match rng.below(3) {
        0 => 1,
        1 => 8,
        _ => wire.len().max(1),
    };
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rng.between(0, max_chunk.min(rest.len())));
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

/// Feeds `chunks` to `codec`, decoding after each, then drains with `decode_eof`.
///
/// Errors are kept as their message. With `stop_on_error` the first error ends the
/// stream, as `FramedRead` does; without it decoding goes on, to check recovery.
fn decode_all<D>(
    codec: &mut D,
    chunks: &[&[u8]],
    stop_on_error: bool,
) -> Vec<Result<D::Item, String>>
where
    D: Decoder<Error = CodecError>,
{
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(item)) => out.push(Ok(item)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    if stop_on_error {
                        return out;
                    }
                }
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(item)) => out.push(Ok(item)),
            Ok(None) => break,
            Err(e) => {
                out.push(Err(e.to_string()));
                if stop_on_error {
                    return out;
                }
            }
        }
    }
    assert!(buf.is_empty(), "decode_eof gave None but left {buf:?}");
    out
}

/// Counts how often each case came up, so a generator that stops producing one fails.
#[derive(Default)]
struct Tally {
    items: usize,
    at_limit: usize,
    over_limit: usize,
    other_errors: usize,
}

impl Tally {
    fn check(&self, what: &str) {
        let Tally {
            items,
            at_limit,
            over_limit,
            other_errors,
        } = *self;
        assert!(
            items > ITERATIONS && at_limit > 100 && over_limit > 100 && other_errors > 100,
            "{what}: too few cases: {items} items, {at_limit} at the limit, \
             {over_limit} over it, {other_errors} other errors"
        );
    }
}

#[test]
fn raw_round_trips_random_chunks() {
    let mut rng = XorShift::new(0x5EED_0001);
    for iteration in 0..ITERATIONS {
        let mut codec = Raw;
        let mut wire = BytesMut::new();
        let mut sent = Vec::new();
        for _ in 0..rng.below(10) {
            let message: Vec<u8> = (0..rng.below(50)).map(|_| rng.byte()).collect();
            sent.extend_from_slice(&message);
            match rng.below(4) {
                0 => codec.encode(Bytes::from(message), &mut wire).unwrap(),
                1 => codec
                    .encode(BytesMut::from(&message[..]), &mut wire)
                    .unwrap(),
                2 => codec.encode(&message[..], &mut wire).unwrap(),
                _ => codec.encode(message, &mut wire).unwrap(),
            }
        }
        assert_eq!(&wire[..], &sent[..], "iteration {iteration}: encoding");

        let chunks = random_chunks(&mut rng, &wire);
        let got = decode_all(&mut codec, &chunks, true);
        // One item per non-empty read, exactly as it arrived.
        let expected: Vec<Result<Bytes, String>> = chunks
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        assert_eq!(got, expected, "iteration {iteration}");
    }
}

/// A random UTF-8 line of at most `max` bytes, with no `\n` and no final `\r`.
fn random_line(rng: &mut XorShift, max: usize) -> String {
    const CHARS: &[char] = &['a', 'Z', '0', ' ', '\t', '\r', '\0', 'é', '€', '𝄞', '~'];
    let target = if rng.chance(4) {
        max
    } else {
        rng.between(0, max)
    };
    let mut line = String::new();
    loop {
        let c = CHARS[rng.below(CHARS.len())];
        if line.len() + c.len_utf8() > target {
            break;
        }
        line.push(c);
    }
    while line.ends_with('\r') {
        line.pop();
    }
    line
}

#[test]
fn lines_round_trip_random_messages_with_bad_lines_between() {
    let mut rng = XorShift::new(0x5EED_0002);
    let mut tally = Tally::default();
    for iteration in 0..ITERATIONS {
        let max = rng.between(0, 40);
        let mut codec = Lines::with_max_length(max);
        let mut wire = BytesMut::new();
        let mut expected = Vec::new();
        let count = rng.below(12);
        for i in 0..count {
            let last = i + 1 == count;
            match rng.below(10) {
                // A line over the limit, written by hand: the decoder reports it once.
                0 => {
                    let len = rng.between(max + 1, 3 * max + 10);
                    wire.extend((0..len).map(|_| b'x'));
                    if !last || rng.chance(2) {
                        wire.extend_from_slice(if rng.chance(2) { b"\n" } else { b"\r\n" });
                    }
                    expected.push(Err(CodecError::LineTooLong { limit: max }.to_string()));
                    tally.over_limit += 1;
                }
                // A line that is not UTF-8: reported, then skipped.
                1 if max > 0 => {
                    let mut line = random_line(&mut rng, max - 1).into_bytes();
                    let at = rng.between(0, line.len());
                    line.insert(at, 0xFF);
                    let valid_up_to = std::str::from_utf8(&line).unwrap_err().valid_up_to();
                    wire.extend_from_slice(&line);
                    if !last || rng.chance(2) {
                        wire.extend_from_slice(b"\n");
                    }
                    expected.push(Err(CodecError::InvalidUtf8 { valid_up_to }.to_string()));
                    tally.other_errors += 1;
                }
                // A line with a `\n` inside: the encoder refuses it and writes nothing.
                2 if max > 0 => {
                    let line = format!("{}\n", random_line(&mut rng, max - 1));
                    let err = codec.encode(line.as_str(), &mut wire).unwrap_err();
                    assert!(
                        matches!(err, CodecError::NewlineInLine),
                        "iteration {iteration}: {err:?}"
                    );
                }
                // A line too long to send: the encoder refuses it and writes nothing.
                3 => {
                    let line = "y".repeat(max + 1);
                    let err = codec.encode(line, &mut wire).unwrap_err();
                    assert!(
                        matches!(err, CodecError::LineTooLong { .. }),
                        "iteration {iteration}"
                    );
                }
                // A good line, through one of the three encoders.
                _ => {
                    let line = random_line(&mut rng, max);
                    match rng.below(3) {
                        0 => codec.encode(line.clone(), &mut wire).unwrap(),
                        1 => codec.encode(line.as_str(), &mut wire).unwrap(),
                        _ => codec.encode(Bytes::from(line.clone()), &mut wire).unwrap(),
                    }
                    // A last line may come without its `\n`; `decode_eof` returns it.
                    if last && !line.is_empty() && rng.chance(2) {
                        wire.truncate(wire.len() - 1);
                    }
                    tally.items += 1;
                    tally.at_limit += usize::from(line.len() == max);
                    expected.push(Ok(line));
                }
            }
        }

        let chunks = random_chunks(&mut rng, &wire);
        let got = decode_all(&mut codec, &chunks, false);
        assert_eq!(
            got, expected,
            "iteration {iteration} (max {max}, wire {wire:?})"
        );
    }
    tally.check("lines");
}

#[test]
fn frames_round_trip_random_messages_and_bad_endings() {
    let mut rng = XorShift::new(0x5EED_0003);
    let mut tally = Tally::default();
    for iteration in 0..ITERATIONS {
        let max = rng.between(0, 64);
        let mut codec = Frames::with_max_frame_length(max);
        let mut wire = BytesMut::new();
        let mut expected = Vec::new();
        for _ in 0..rng.below(12) {
            if rng.chance(8) {
                let payload = vec![b'y'; max + 1];
                let err = codec.encode(payload, &mut wire).unwrap_err();
                assert!(
                    matches!(err, CodecError::FrameTooLong { len, limit } if limit == max && len == u64::try_from(max + 1).unwrap()),
                    "iteration {iteration}: {err:?}"
                );
                continue;
            }
            let len = if rng.chance(4) {
                max
            } else {
                rng.between(0, max)
            };
            let payload: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            match rng.below(4) {
                0 => codec
                    .encode(Bytes::from(payload.clone()), &mut wire)
                    .unwrap(),
                1 => codec
                    .encode(BytesMut::from(&payload[..]), &mut wire)
                    .unwrap(),
                2 => codec.encode(&payload[..], &mut wire).unwrap(),
                _ => codec.encode(payload.clone(), &mut wire).unwrap(),
            }
            tally.items += 1;
            tally.at_limit += usize::from(payload.len() == max);
            expected.push(Ok(Bytes::from(payload)));
        }
        match rng.below(4) {
            // A header over the limit: the stream ends with that error.
            0 => {
                let declared = rng.between(max + 1, max + 1000);
                wire.extend_from_slice(&u32::try_from(declared).unwrap().to_be_bytes());
                wire.extend((0..rng.below(8)).map(|_| b'z'));
                let len = u64::try_from(declared).unwrap();
                expected.push(Err(CodecError::FrameTooLong { len, limit: max }.to_string()));
                tally.over_limit += 1;
            }
            // The stream ends inside a frame.
            1 => {
                let mut frame = BytesMut::new();
                let payload: Vec<u8> = (0..max).map(|_| rng.byte()).collect();
                codec.encode(payload, &mut frame).unwrap();
                let buffered = rng.between(1, frame.len() - 1);
                wire.extend_from_slice(&frame[..buffered]);
                expected.push(Err(CodecError::Truncated { buffered }.to_string()));
                tally.other_errors += 1;
            }
            // The stream ends at a frame boundary.
            _ => {}
        }

        let chunks = random_chunks(&mut rng, &wire);
        let got = decode_all(&mut codec, &chunks, true);
        assert_eq!(got, expected, "iteration {iteration} (max {max})");
    }
    tally.check("frames");
}
