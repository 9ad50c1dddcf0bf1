//! The floor under any log of this design, without logbus: one thread writes 56-byte frames
//! (a 32-byte message with a 24-byte header) into shared memory and publishes each by a
//! Release store of its first word; another thread, on the other core, polls the next
//! frame's first word and reads the frame once it is non-zero. Time is per message.
//!
//! * `handoff/locked_add`: each frame is claimed with an atomic add on a shared tail, as a
//!   logbus producer claims (a locked instruction, which waits for the store buffer — and so
//!   for the frame line the consumer took away — to drain).
//! * `handoff/plain_store`: the tail moved by a plain store, as an exclusive producer does.
//! * `handoff/locked_add_consumer_backs_off`: as the first, but the consumer, finding nothing,
//!   waits 64 `pause`s before it looks again, so it takes the line being written less often.
//!
//! The memory is reused from run to run (and zeroed, untimed, in between), so no page is
//! fresh: what is left is the cost of handing cache lines from one core to the other. Logbus
//! adds to this its claim records, checksums, timestamps and segment supply.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FRAME: usize = 56;
/// Messages per timed chunk; the memory holds exactly this many frames.
const CHUNK: u64 = 1 << 20;

#[derive(Clone, Copy)]
enum Variant {
    LockedAdd,
    PlainStore,
    LockedAddBackoff,
}

struct Ring {
    words: Vec<AtomicU64>,
}

impl Ring {
    fn new() -> Arc<Ring> {
        let len = (CHUNK as usize * FRAME) / 8 + 1;
        Arc::new(Ring {
            words: (0..len).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    fn clear(&self) {
        for word in &self.words {
            word.store(0, Ordering::Relaxed);
        }
    }
}

/// Hands `messages` frames from this thread to a consumer thread; returns the time from the
/// first claim to the consumer's last read.
fn handoff(ring: &Arc<Ring>, messages: u64, variant: Variant) -> Duration {
    ring.clear();
    let tail = Arc::new(AtomicU64::new(0));
    let reader = ring.clone();
    let backoff = matches!(variant, Variant::LockedAddBackoff);
    let consumer = std::thread::spawn(move || {
        let mut position = 0usize;
        let mut sum = 0u64;
        for _ in 0..messages {
            loop {
                let first = reader.words[position / 8].load(Ordering::Acquire);
                if first != 0 {
                    break;
                }
                for _ in 0..if backoff { 64 } else { 1 } {
                    std::hint::spin_loop();
                }
            }
            for word in 1..FRAME / 8 {
                sum = sum.wrapping_add(reader.words[position / 8 + word].load(Ordering::Relaxed));
            }
            position += FRAME;
        }
        (Instant::now(), sum)
    });
    let start = Instant::now();
    let mut local_tail = 0u64;
    for sequence in 1..=messages {
        let position = match variant {
            Variant::PlainStore => {
                let position = local_tail;
                local_tail += FRAME as u64;
                tail.store(local_tail, Ordering::Release);
                position
            }
            _ => tail.fetch_add(FRAME as u64, Ordering::Release),
        } as usize;
        for word in 1..FRAME / 8 {
            ring.words[position / 8 + word].store(sequence, Ordering::Relaxed);
        }
        ring.words[position / 8].store(sequence, Ordering::Release);
    }
    let (end, sum) = consumer.join().expect("the consumer thread");
    std::hint::black_box(sum);
    end - start
}

fn floor(c: &mut Criterion) {
    let ring = Ring::new();
    let mut group = c.benchmark_group("handoff");
    group.throughput(Throughput::Elements(1));
    for (name, variant) in [
        ("locked_add", Variant::LockedAdd),
        ("plain_store", Variant::PlainStore),
        ("locked_add_consumer_backs_off", Variant::LockedAddBackoff),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let chunk = left.min(CHUNK);
                    timed += handoff(&ring, chunk, variant);
                    left -= chunk;
                }
                timed
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = floor
}
criterion_main!(benches);
