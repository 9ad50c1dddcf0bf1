//! Segment supply: what this machine's file system charges for the fresh memory a log grows
//! into. A log without retention never reuses its bytes, so every byte a producer writes
//! was first allocated and zeroed by the kernel (`fallocate`) and mapped into the page tables
//! of every process that touches it; and when its segment is left behind, unmapped again.
//! (A log with retention on a tmpfs recycles its segments instead: the `fill_*` pair below.) The preparer
//! thread of each process does this off the hot path — but on the same cores.
//!
//! Groups (throughput is in bytes of segment, so criterion prints the supply rate):
//!
//! * `supply/create_for_writing`: `Log::create` of a log with 64 MiB segments and its first
//!   producer: the meta file, then the first segment made (`fallocate`) and published, then
//!   mapped and pre-faulted for the producer (`MADV_POPULATE_WRITE`) — what a producer
//!   process's preparer pays per segment, plus the meta file.
//! * `supply/map_for_reading`: a consumer on a second handle of such a log, polling once,
//!   maps the segment and pre-faults it for reading (one touch per page) — what a
//!   consumer-only process pays per segment.
//!
//! Unmapping a left segment costs each process a few milliseconds more per 64 MiB (on its
//! preparer thread, asynchronously, so not timed here).
//!
//! * `supply/fill_growing` and `supply/fill_recycling`: one producer writing whole segments
//!   of the largest messages (8 per segment) into a log that grows, and into one that keeps 3
//!   segments and so recycles them (on a tmpfs; see `docs/FORMAT.md`, "Recycling"), warmed
//!   up first. Each message is one 8 MiB copy; the difference between the two is what a
//!   fresh segment costs over a recycled one (zeroed by the preparer, its mapping kept), with
//!   the preparer working on the other core as it does in use.
//!
//! Directory: `/dev/shm` (else the system's temporary directory), or `LOGBUS_BENCH_DIR`, to
//! compare file systems — for example a tmpfs mounted with `huge=within_size`, whose 2 MiB
//! pages cut the per-page work by 512.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use logbus::{Log, LogOptions, Producer, StartAt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SEGMENT: u64 = 64 << 20;

fn dir() -> PathBuf {
    std::env::var_os("LOGBUS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(common::base_dir)
}

fn options() -> LogOptions {
    LogOptions::new().segment_capacity(SEGMENT)
}

/// A log made in a fresh temporary directory with a producer, and the time that took.
fn create() -> (tempfile::TempDir, Log, Producer, Duration) {
    let dir = tempfile::Builder::new()
        .prefix("logbus-supply-")
        .tempdir_in(dir())
        .expect("a temporary directory for a benchmark log");
    let start = Instant::now();
    let log = Log::create(dir.path(), &options()).expect("creating a benchmark log");
    let producer = log.producer().expect("a producer");
    (dir, log, producer, start.elapsed())
}

fn supply(c: &mut Criterion) {
    let mut group = c.benchmark_group("supply");
    group.throughput(Throughput::Bytes(SEGMENT));
    group.sample_size(10);

    group.bench_function("create_for_writing", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let (dir, log, producer, took) = create();
                timed += took;
                drop((producer, log));
                drop(dir);
            }
            timed
        })
    });

    group.bench_function("map_for_reading", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let (dir, log, producer, _) = create();
                let start = Instant::now();
                let reader = Log::open(dir.path()).expect("a second handle");
                let mut consumer = reader.consumer(StartAt::Earliest).expect("a consumer");
                // The first poll maps the segment (there is nothing to read).
                assert!(consumer.poll().expect("a poll").is_none());
                timed += start.elapsed();
                drop((consumer, reader, producer, log));
                drop(dir);
            }
            timed
        })
    });

    for (name, retain) in [("fill_growing", 0), ("fill_recycling", 3)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::Builder::new()
                    .prefix("logbus-supply-")
                    .tempdir_in(dir())
                    .expect("a temporary directory for a benchmark log");
                let options = options().retain_segments(retain);
                let log = Log::create(dir.path(), &options).expect("creating a benchmark log");
                let mut producer = log.producer().expect("a producer");
                let payload = vec![0x5a_u8; producer.max_payload_len()];
                let mut fill = |segments: u64| {
                    let end = log.tail() + segments * SEGMENT;
                    while log.tail() < end {
                        producer.offer(&payload).expect("an offer");
                    }
                };
                fill(6); // a recycling log reuses its files from the fourth segment on
                let start = Instant::now();
                fill(iters);
                let took = start.elapsed();
                drop((producer, log));
                drop(dir);
                took
            })
        });
    }

    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = supply
}
criterion_main!(benches);
