//! The consumer's hot path, in one thread: reading committed messages in place.
//!
//! Every timed chunk reads messages that were written (untimed) just before it, about
//! 256 KiB of log, so the data is in this core's cache and the figure is the consumer's own
//! cost per message — the frame word check, the header, handing out the borrowed payload.
//! Fetching each cache line from a producer on another core comes on top of it; that is in
//! the cross-process figures of `logbus bench`. No benchmark here ever polls an empty log
//! except `poll_empty`, which measures just that.
//!
//! Groups (time per message):
//!
//! * `poll/N`: one `poll` per message of N bytes, touching the payload's first byte.
//! * `poll_batch/N`: `poll_batch(4096, ..)` handing the messages to a closure.
//! * `poll_batch_verify/N`: the same, with `verify_checksums(true)` (CRC32C recomputed).
//! * `poll_batch_set64/32`: records of message sets of 64 messages of 32 bytes.
//! * `poll_empty`: a `poll` that finds nothing (one iteration of a spinning consumer).

mod common;

use common::{frame_bytes, set_bytes, ConsumerBench, FreshLog};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use logbus::{Consumer, Producer, StartAt};
use std::hint::black_box;

const SIZES: [usize; 3] = [32, 256, 4096];
const POLL_BATCH: usize = 4096;

fn fill(size: usize) -> impl FnMut(&mut Producer, u64) {
    let data: Vec<u8> = (0..size).map(|i| i as u8).collect();
    move |p: &mut Producer, n: u64| {
        for _ in 0..n {
            p.offer(&data).unwrap();
        }
    }
}

fn read_polling(consumer: &mut Consumer, n: u64) {
    for _ in 0..n {
        let message = consumer.poll().unwrap().expect("a committed message");
        black_box(message.payload()[0]);
    }
}

fn read_batches(consumer: &mut Consumer, n: u64) {
    let mut left = n as usize;
    while left > 0 {
        let read = consumer
            .poll_batch(left.min(POLL_BATCH), |m| {
                black_box(m.payload()[0]);
            })
            .unwrap();
        assert!(read > 0, "the chunk was written before it is read");
        left -= read;
    }
}

fn poll(c: &mut Criterion) {
    let mut group = c.benchmark_group("poll");
    group.throughput(Throughput::Elements(1));
    for size in SIZES {
        let mut bench = ConsumerBench::new(FreshLog::steady(true, true), false);
        let mut fill = fill(size);
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_custom(|iters| bench.run(iters, frame_bytes(size), &mut fill, read_polling))
        });
    }
    group.finish();
}

fn poll_batch(c: &mut Criterion) {
    for (name, verify) in [("poll_batch", false), ("poll_batch_verify", true)] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        for size in SIZES {
            let mut bench = ConsumerBench::new(FreshLog::steady(true, true), verify);
            let mut fill = fill(size);
            group.bench_function(BenchmarkId::from_parameter(size), |b| {
                b.iter_custom(|iters| bench.run(iters, frame_bytes(size), &mut fill, read_batches))
            });
        }
        group.finish();
    }
}

fn poll_batch_sets(c: &mut Criterion) {
    const SET: u64 = 64;
    const SIZE: usize = 32;
    let data = [7u8; SIZE];
    let mut group = c.benchmark_group("poll_batch_set64");
    group.throughput(Throughput::Elements(1));
    let mut bench = ConsumerBench::new(FreshLog::steady(true, true), false);
    let mut fill = |p: &mut Producer, n: u64| {
        let mut left = n;
        while left > 0 {
            let count = left.min(SET);
            let set: Vec<&[u8]> = (0..count).map(|_| &data[..]).collect();
            p.offer_batch(&set).unwrap();
            left -= count;
        }
    };
    let per_message = set_bytes(SET as usize, SIZE).div_ceil(SET);
    group.bench_function(BenchmarkId::from_parameter(SIZE), |b| {
        b.iter_custom(|iters| bench.run(iters, per_message, &mut fill, read_batches))
    });
    group.finish();
}

fn poll_empty(c: &mut Criterion) {
    let mut fresh = FreshLog::steady(true, true);
    fresh.replace();
    let mut consumer = fresh.log().consumer(StartAt::Latest).unwrap();
    c.bench_function("poll_empty", |b| {
        b.iter(|| black_box(consumer.poll().unwrap().is_none()))
    });
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = poll, poll_batch, poll_batch_sets, poll_empty
}
criterion_main!(benches);
