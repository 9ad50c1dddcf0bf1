//! The producer's hot path, in one thread, with no consumer: nothing throttles the producer,
//! and every message lands in memory that is mapped and pre-faulted but not in the cache.
//!
//! Groups (each benchmark's time is per message unless its group says otherwise):
//!
//! * `offer/N`, `claim_commit/N`: one message of N bytes (8 to 4096), checksums and
//!   timestamps on (the default options).
//! * `store_floor/N`: the floor those two are measured against — the same bytes stored into
//!   the same kind of memory (a pre-faulted `/dev/shm` mapping, walked sequentially and so
//!   cold in the cache) by plain stores: an 8-byte frame word, 16 bytes of header, the
//!   payload. No atomic add, no checksum, no clock.
//! * `batch64`: 64 messages of 32 bytes as 64 `offer`s, as one `offer_batch`, and as one
//!   `batch` with 64 `push`es; the time is per message.
//! * `header_fields/N`: `offer` of N bytes with CRC32C and timestamps each on and off, so the
//!   price of each field is the difference.
//! * `rotation`: `offer` of 32 bytes into logs with 64 KiB and 1 MiB segments, so that the
//!   producer crosses a segment end every 1,170 or 18,724 messages (the preparer thread
//!   creates the next segment on the other core), beside the same offers with no rotation.
//! * `parts`: the pieces a message pays for, alone — reading `CLOCK_REALTIME` (what a
//!   timestamp costs now), `CLOCK_REALTIME_COARSE`, `Instant::now` (`CLOCK_MONOTONIC`),
//!   `rdtsc`, CRC32C of 32, 256 and 4096 bytes, and an uncontended atomic add.
//!
//! See `common/mod.rs` for how logs are replaced between timed chunks so that segment
//! creation stays out of every group but `rotation`.

mod common;

use common::{frame_bytes, set_bytes, FreshLog, ProducerBench, CAPACITY, SIZES};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use logbus::{Batch, LogOptions};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| i as u8).collect()
}

fn offer(c: &mut Criterion) {
    let mut group = c.benchmark_group("offer");
    for size in SIZES {
        let data = payload(size);
        let mut bench = ProducerBench::new(FreshLog::steady(true, true));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_custom(|iters| {
                bench.run(iters, frame_bytes(size), |p| {
                    black_box(p.offer(black_box(&data)).unwrap());
                })
            })
        });
    }
    group.finish();
}

fn claim_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("claim_commit");
    for size in SIZES {
        let data = payload(size);
        let mut bench = ProducerBench::new(FreshLog::steady(true, true));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_custom(|iters| {
                bench.run(iters, frame_bytes(size), |p| {
                    let mut claim = p.claim(size).unwrap();
                    claim.copy_from_slice(black_box(&data));
                    black_box(claim.commit().unwrap());
                })
            })
        });
    }
    group.finish();
}

/// A pre-faulted mapping of a file in /dev/shm, written frame after frame by plain stores.
struct Floor {
    map: memmap2::MmapMut,
    at: usize,
    _file: tempfile::NamedTempFile,
}

impl Floor {
    fn new() -> Self {
        let len = CAPACITY as usize / 2;
        let file = tempfile::Builder::new()
            .prefix("logbus-bench-floor-")
            .tempfile_in(common::base_dir())
            .expect("a file for the floor benchmark");
        file.as_file().set_len(len as u64).expect("sizing it");
        // SAFETY: the file is ours alone (a fresh temporary file) and outlives the mapping.
        let mut map = unsafe {
            memmap2::MmapOptions::new()
                .populate()
                .map_mut(file.as_file())
        }
        .expect("mapping it");
        // Allocate every page, as fallocate does for a segment, and leave it mapped writable.
        for page in map.chunks_mut(4096) {
            page[0] = 1;
        }
        Floor {
            map,
            at: 0,
            _file: file,
        }
    }

    /// Stores one frame of `data` the way a producer lays it out, with no protocol.
    #[inline(always)]
    fn store(&mut self, data: &[u8]) {
        let frame = frame_bytes(data.len()) as usize;
        if self.at + frame > self.map.len() {
            self.at = 0;
        }
        let base = self.map.as_mut_ptr();
        // SAFETY: [at, at + frame) lies inside the mapping (checked above), `at` is a multiple
        // of 8 in a page-aligned mapping, and nothing else aliases it.
        unsafe {
            let header = base.add(self.at);
            header.add(8).cast::<u32>().write(0x1234_5678);
            header.add(12).cast::<u32>().write(0);
            header.add(16).cast::<u64>().write(self.at as u64);
            std::ptr::copy_nonoverlapping(data.as_ptr(), header.add(24), data.len());
            (*header.cast::<AtomicU64>()).store((24 + data.len()) as u64, Ordering::Release);
        }
        self.at += frame;
    }
}

fn store_floor(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_floor");
    let mut floor = Floor::new();
    for size in SIZES {
        let data = payload(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| floor.store(black_box(&data)))
        });
    }
    group.finish();
}

fn batch64(c: &mut Criterion) {
    const COUNT: usize = 64;
    const SIZE: usize = 32;
    let data = payload(SIZE);
    let messages: Vec<Vec<u8>> = (0..COUNT).map(|_| data.clone()).collect();
    let mut group = c.benchmark_group("batch64");
    group.throughput(Throughput::Elements(COUNT as u64));

    let mut bench = ProducerBench::new(FreshLog::steady(true, true));
    group.bench_function("offer_x64", |b| {
        b.iter_custom(|iters| {
            bench.run(iters, COUNT as u64 * frame_bytes(SIZE), |p| {
                for message in &messages {
                    black_box(p.offer(black_box(message)).unwrap());
                }
            })
        })
    });

    let mut bench = ProducerBench::new(FreshLog::steady(true, true));
    group.bench_function("offer_batch", |b| {
        b.iter_custom(|iters| {
            bench.run(iters, set_bytes(COUNT, SIZE), |p| {
                black_box(p.offer_batch(black_box(&messages)).unwrap());
            })
        })
    });

    let mut bench = ProducerBench::new(FreshLog::steady(true, true));
    let needed = Batch::bytes_needed(std::iter::repeat_n(SIZE, COUNT));
    group.bench_function("batch_push", |b| {
        b.iter_custom(|iters| {
            bench.run(iters, set_bytes(COUNT, SIZE), |p| {
                let mut batch = p.batch(needed).unwrap();
                for _ in 0..COUNT {
                    batch.push(black_box(&data)).unwrap();
                }
                black_box(batch.commit().unwrap());
            })
        })
    });
    group.finish();
}

fn header_fields(c: &mut Criterion) {
    for size in [32usize, 1024] {
        let data = payload(size);
        let mut group = c.benchmark_group(format!("header_fields/{size}"));
        group.throughput(Throughput::Bytes(size as u64));
        for (name, checksums, timestamps) in [
            ("crc+ts", true, true),
            ("crc", true, false),
            ("ts", false, true),
            ("none", false, false),
        ] {
            let mut bench = ProducerBench::new(FreshLog::steady(checksums, timestamps));
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    bench.run(iters, frame_bytes(size), |p| {
                        black_box(p.offer(black_box(&data)).unwrap());
                    })
                })
            });
        }
        group.finish();
    }
}

/// Offers into logs with small segments: the chunk crosses many segment ends, each of which
/// pads, claims again and maps the next segment (created ahead by the preparer thread).
/// Logs are replaced once 128 MiB have been written, outside the timed part.
fn rotation(c: &mut Criterion) {
    const SIZE: usize = 32;
    let data = payload(SIZE);
    let mut group = c.benchmark_group("rotation");
    group.throughput(Throughput::Elements(1));
    for (name, capacity) in [("none", CAPACITY), ("1MiB", 1 << 20), ("64KiB", 1 << 16)] {
        let options = LogOptions::new().segment_capacity(capacity);
        let mut fresh = FreshLog::new(options);
        let mut producer = None;
        let budget = CAPACITY / 2;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let per_chunk = (budget / frame_bytes(SIZE)).max(1);
                let mut left = iters;
                let mut total = Duration::ZERO;
                while left > 0 {
                    let chunk = left.min(per_chunk);
                    let full = producer.is_none()
                        || fresh.log().tail() + chunk * frame_bytes(SIZE) > budget;
                    if full {
                        producer = None;
                        fresh.replace();
                        producer = Some(fresh.log().producer().unwrap());
                    }
                    let p = producer.as_mut().unwrap();
                    let start = Instant::now();
                    for _ in 0..chunk {
                        black_box(p.offer(black_box(&data)).unwrap());
                    }
                    total += start.elapsed();
                    left -= chunk;
                }
                total
            })
        });
    }
    group.finish();
}

fn parts(c: &mut Criterion) {
    let mut group = c.benchmark_group("parts");
    group.bench_function("clock_realtime", |b| {
        b.iter(|| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid, writable timespec.
            unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
            black_box(ts.tv_nsec)
        })
    });
    group.bench_function("clock_realtime_coarse", |b| {
        b.iter(|| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid, writable timespec.
            unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
            black_box(ts.tv_nsec)
        })
    });
    group.bench_function("instant_now", |b| b.iter(Instant::now));
    #[cfg(target_arch = "x86_64")]
    group.bench_function("rdtsc", |b| {
        // SAFETY: rdtsc has no preconditions on x86-64.
        b.iter(|| unsafe { core::arch::x86_64::_rdtsc() })
    });
    for size in [32usize, 256, 4096] {
        let data = payload(size);
        group.bench_function(BenchmarkId::new("crc32c", size), |b| {
            b.iter(|| logbus::format::checksum(black_box(&data)))
        });
    }
    let word = AtomicU64::new(0);
    group.bench_function("fetch_add", |b| {
        b.iter(|| black_box(&word).fetch_add(56, Ordering::Relaxed))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = offer, claim_commit, store_floor, batch64, header_fields, rotation, parts
}
criterion_main!(benches);
