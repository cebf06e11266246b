//! Registry count / ids / list / broadcast with 10,000 and 100,000 entries (and 1,000,000 when
//! `SWITCHBOARD_BENCH_1M=1`). Entries are placeholders (`Registry::register_placeholder`): the
//! registry's own cost, with no session behind it, so broadcast here is the fan-out loop into
//! each entry's outbound queue without the session's wake-up (the end-to-end `e2e` scale
//! scenario times that with real sessions). `cargo bench -p switchboard-benches --bench registry`.

use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use switchboard::{Registry, SlowConsumerPolicy};

fn sizes() -> Vec<usize> {
    let mut sizes = vec![10_000, 100_000];
    if std::env::var_os("SWITCHBOARD_BENCH_1M").is_some_and(|v| v == "1") {
        sizes.push(1_000_000);
    }
    sizes
}

fn registry(c: &mut Criterion) {
    let local: SocketAddr = "127.0.0.1:7000".parse().expect("address");
    for entries in sizes() {
        let registry = Registry::new();
        let held: Vec<_> = (0..entries)
            .map(|i| {
                let peer = SocketAddr::from(([127, 0, (i >> 16) as u8, (i >> 8) as u8], i as u16));
                registry.register_placeholder(peer, local)
            })
            .collect();
        assert_eq!(registry.count(), entries);

        let mut group = c.benchmark_group(format!("registry/{entries}"));
        group.sample_size(10);
        group.bench_function("count", |b| b.iter(|| black_box(registry.count())));
        group.throughput(Throughput::Elements(entries as u64));
        group.bench_function("ids", |b| b.iter(|| black_box(registry.ids()).len()));
        group.bench_function("list", |b| b.iter(|| black_box(registry.list()).len()));
        let message = Bytes::from_static(&[b'x'; 64]);
        group.bench_function("broadcast", |b| {
            // Timed: the fan-out into every entry's outbound queue. Not timed: emptying the
            // queues again, as the sessions would, so every round finds room.
            b.iter_custom(|rounds| {
                let mut spent = std::time::Duration::ZERO;
                for _ in 0..rounds {
                    let start = std::time::Instant::now();
                    let report = registry
                        .broadcast(message.clone(), None, SlowConsumerPolicy::Drop)
                        .report();
                    spent += start.elapsed();
                    assert_eq!(report.delivered, entries);
                    held.iter().for_each(|p| {
                        p.take_queued();
                    });
                }
                spent
            })
        });
        group.finish();
        drop(held);
        assert_eq!(registry.count(), 0);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = registry
}
criterion_main!(benches);
