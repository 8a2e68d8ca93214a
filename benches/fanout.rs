//! Proves the fan-out design: a broadcast encoded once and shared (`Bytes` clones) costs far
//! less than encoding it per member, and queueing it for 10 / 100 / 1,000 members stays cheap.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use partyflow::outbox::Outbox;

/// Each sink's bound (never reached: the benches drain every round).
const LIMIT: usize = 1 << 20;
use partyflow::ws::{encode_data, DataKind};

const MESSAGE: &[u8] = br#"{"type":"WORD_RESULT","roomId":"ABC234","timestamp":1707695253050,"version":"1.0","broadcast":"all","payload":{"wordId":"word_42","action":"guessed","teamId":"team_1","pointsAwarded":1,"newScore":12,"state":"ROUND_ACTIVE","stateVersion":6},"sequenceId":18}"#;

fn sinks(n: usize) -> Vec<Outbox> {
    (0..n).map(|_| Outbox::default()).collect()
}

fn drain(sinks: &mut [Outbox]) {
    for s in sinks {
        let n = s.queued_bytes();
        s.advance(n);
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for members in [10usize, 100, 1000] {
        group.throughput(Throughput::Elements(members as u64));
        let mut outboxes = sinks(members);
        group.bench_with_input(BenchmarkId::new("encode_once_share", members), &members, |b, _| {
            b.iter(|| {
                let frame = encode_data(DataKind::Text, black_box(MESSAGE));
                for s in outboxes.iter_mut() {
                    let _ = s.push(frame.clone(), LIMIT);
                }
                drain(&mut outboxes);
            })
        });
        group.bench_with_input(BenchmarkId::new("encode_per_member", members), &members, |b, _| {
            b.iter(|| {
                for s in outboxes.iter_mut() {
                    let _ = s.push(encode_data(DataKind::Text, black_box(MESSAGE)), LIMIT);
                }
                drain(&mut outboxes);
            })
        });
    }
    group.finish();
    c.bench_function("encode_frame_260B", |b| b.iter(|| encode_data(DataKind::Text, black_box(MESSAGE))));
    let frame: Bytes = encode_data(DataKind::Text, MESSAGE);
    c.bench_function("gather_16_frames", |b| {
        let mut q = Outbox::default();
        b.iter(|| {
            for _ in 0..16 {
                let _ = q.push(frame.clone(), LIMIT);
            }
            let mut slices = [std::io::IoSlice::new(&[]); 64];
            let n = q.gather(&mut slices);
            black_box(n);
            let total = q.queued_bytes();
            q.advance(total);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
