//! Several producer threads offering 32-byte messages into one log at once, with no
//! consumer: what contention on the tail's cache line (one atomic add per message from each
//! thread) costs.
//!
//! `threads/offer32/T` is the time per message of all T threads together (wall-clock time
//! from the first thread's start to the last thread's end, divided by the messages of all
//! threads), so 1 thread is the baseline and a figure below it is a gain. The machine this
//! was written on has 2 cores: 2 threads take one each, 4 threads share them, and a thread
//! descheduled between its claim and its commit delays nobody here (no consumer waits).
//!
//! Each timed chunk runs in a fresh log, with the threads started and their producers made
//! before it (see `common/mod.rs`); the threads then meet at a barrier and run. Waking the
//! threads from the barrier takes tens of microseconds, and they do not all start at once,
//! so every timed run sends at least [`MIN_RUN`] messages (the time is scaled to the
//! messages criterion asked for): the start then weighs well under 1%.

mod common;

use common::{frame_bytes, FreshLog};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

const SIZE: usize = 32;
/// The fewest messages one timed run sends, all threads together.
const MIN_RUN: u64 = 1_000_000;

fn threads(c: &mut Criterion) {
    let data = vec![5u8; SIZE];
    let mut group = c.benchmark_group("threads/offer32");
    group.throughput(Throughput::Elements(1));
    // Samples of at least MIN_RUN messages take tens of milliseconds each.
    group.sample_size(20);
    for threads in [1u64, 2, 4] {
        let mut fresh = FreshLog::steady(true, true);
        group.bench_function(BenchmarkId::from_parameter(threads), |b| {
            b.iter_custom(|iters| {
                let messages = iters.max(MIN_RUN);
                let per_chunk = (fresh.max_chunk_bytes() / frame_bytes(SIZE)).max(threads);
                let mut left = messages;
                let mut total = Duration::ZERO;
                while left > 0 {
                    let chunk = left.min(per_chunk);
                    fresh.ensure_room(chunk * frame_bytes(SIZE));
                    total += run_chunk(fresh.log(), threads, chunk, &data);
                    left -= chunk;
                }
                total.mul_f64(iters as f64 / messages as f64)
            })
        });
    }
    group.finish();
}

/// `messages` offers shared among `threads` threads; the time from the first start to the
/// last end.
fn run_chunk(log: &logbus::Log, threads: u64, messages: u64, data: &[u8]) -> Duration {
    let barrier = Barrier::new(threads as usize);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let share = messages / threads + u64::from(t < messages % threads);
                let mut producer = log.producer().expect("a producer");
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..share {
                        black_box(producer.offer(black_box(data)).unwrap());
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let first = spans.iter().map(|s| s.0).min().expect("a thread");
    let last = spans.iter().map(|s| s.1).max().expect("a thread");
    last - first
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = threads
}
criterion_main!(benches);
