//! Codec encode/decode throughput (MB/s) for `Raw`, `Lines` and `Frames`, at 64-byte and
//! 4 KiB messages. `cargo bench -p switchboard-benches --bench codec`.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use switchboard_codec::{Frames, Lines, Raw};
use tokio_util::codec::{Decoder, Encoder};

/// Bytes of encoded messages per iteration: large enough to dwarf the per-iteration overhead.
const BATCH_BYTES: usize = 256 * 1024;

fn encoded<E, F>(mut codec: E, count: usize, mut item: F) -> BytesMut
where
    F: FnMut(&mut E, &mut BytesMut),
{
    let mut buf = BytesMut::new();
    for _ in 0..count {
        item(&mut codec, &mut buf);
    }
    buf
}

fn codecs(c: &mut Criterion) {
    for size in [64usize, 4096] {
        let count = BATCH_BYTES / size;
        let payload = Bytes::from(vec![b'x'; size]);
        // A line of `size` bytes on the wire: size - 1 characters and the newline.
        let line: String = "x".repeat(size - 1);
        let mut group = c.benchmark_group(format!("codec/{size}B"));
        group.throughput(Throughput::Bytes((count * size) as u64));

        group.bench_function("raw/encode", |b| {
            let mut buf = BytesMut::with_capacity(BATCH_BYTES + 64);
            b.iter(|| {
                buf.clear();
                for _ in 0..count {
                    Raw.encode(payload.clone(), &mut buf).expect("raw encode");
                }
                black_box(buf.len())
            })
        });
        // Raw yields whatever is buffered: one item per read, here one per `size`-byte read.
        group.bench_function("raw/decode", |b| {
            let wire = encoded(Raw, count, |c, buf| {
                c.encode(payload.clone(), buf).expect("raw encode")
            });
            b.iter_batched(
                || wire.clone(),
                |mut wire| {
                    let mut items = 0;
                    while !wire.is_empty() {
                        let mut chunk = wire.split_to(size);
                        while let Some(item) = Raw.decode(&mut chunk).expect("raw decode") {
                            black_box(item);
                            items += 1;
                        }
                    }
                    assert_eq!(items, count);
                },
                BatchSize::LargeInput,
            )
        });

        group.bench_function("lines/encode", |b| {
            let mut codec = Lines::new();
            let mut buf = BytesMut::with_capacity(BATCH_BYTES + 64);
            b.iter(|| {
                buf.clear();
                for _ in 0..count {
                    codec.encode(line.as_str(), &mut buf).expect("lines encode");
                }
                black_box(buf.len())
            })
        });
        group.bench_function("lines/decode", |b| {
            let wire = encoded(Lines::new(), count, |c, buf| {
                c.encode(line.as_str(), buf).expect("lines encode")
            });
            let mut codec = Lines::new();
            b.iter_batched(
                || wire.clone(),
                |mut wire| {
                    let mut items = 0;
                    while let Some(item) = codec.decode(&mut wire).expect("lines decode") {
                        black_box(item);
                        items += 1;
                    }
                    assert_eq!(items, count);
                },
                BatchSize::LargeInput,
            )
        });

        // A frame of `size` bytes on the wire: a 4-byte header and size - 4 payload bytes.
        let frame = &payload[..size - 4];
        group.bench_function("frames/encode", |b| {
            let mut codec = Frames::new();
            let mut buf = BytesMut::with_capacity(BATCH_BYTES + 64);
            b.iter(|| {
                buf.clear();
                for _ in 0..count {
                    codec.encode(frame, &mut buf).expect("frames encode");
                }
                black_box(buf.len())
            })
        });
        group.bench_function("frames/decode", |b| {
            let wire = encoded(Frames::new(), count, |c, buf| {
                c.encode(frame, buf).expect("frames encode")
            });
            let mut codec = Frames::new();
            b.iter_batched(
                || wire.clone(),
                |mut wire| {
                    let mut items = 0;
                    while let Some(item) = codec.decode(&mut wire).expect("frames decode") {
                        black_box(item);
                        items += 1;
                    }
                    assert_eq!(items, count);
                },
                BatchSize::LargeInput,
            )
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = codecs
}
criterion_main!(benches);
