//! The hot path allocates nothing in steady state: after a warm-up that maps the segment,
//! `offer`, `offer_pod`, `claim` + commit, batches, aborts, and every way of reading while
//! data is there make no heap allocation at all.
//!
//! A counting global allocator counts only on a thread that has switched counting on, so the
//! test harness's other threads (and other tests running at the same time) do not interfere.

mod common;

use logbus::{Log, LogOptions, StartAt};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: the thread-locals are gone while a thread is being torn down.
    let counting = COUNTING.try_with(Cell::get).unwrap_or(false);
    if counting {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every call is forwarded to `System` unchanged; the bookkeeping touches only
// const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` with counting on for this thread; returns its result and the allocations
/// (allocs, zeroed allocs and reallocs) it made.
fn count_allocations<R>(f: impl FnOnce() -> R) -> (R, u64) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let result = f();
    COUNTING.with(|c| c.set(false));
    (result, ALLOCATIONS.with(Cell::get))
}

/// Segments this large are not rotated within the counted sections (a producer maps the
/// next segment when it passes the middle of one, which may allocate: that is off the hot
/// path, and the test keeps well below it).
const CAPACITY: u64 = 64 << 20;
const OPS: u64 = 100_000;

fn big_log(dir: &std::path::Path) -> Log {
    Log::create(dir, &LogOptions::new().segment_capacity(CAPACITY)).unwrap()
}

#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Tick {
    price: u64,
    quantity: u32,
    side: u32,
}

#[test]
fn the_counter_counts() {
    let (v, n) = count_allocations(|| vec![1u8; 100]);
    assert!(n >= 1, "an allocation in a counted section was not counted");
    drop(v);
    let (_, n) = count_allocations(|| {
        let mut v: Vec<u64> = Vec::with_capacity(1);
        v.extend(0..1000);
        v.len()
    });
    assert!(n >= 2, "a reallocation was not counted: {n}");
    let (_, quiet) = count_allocations(|| 1 + 1);
    assert_eq!(quiet, 0, "nothing allocated, yet something was counted");
    // The library's own allocations are seen: a first read maps a segment, off the hot path.
    let dir = common::tempdir();
    let log = big_log(dir.path());
    log.producer().unwrap().offer(b"x").unwrap();
    let (_, n) = count_allocations(|| {
        let mut consumer = log.consumer(StartAt::Earliest).unwrap();
        consumer.poll().unwrap().is_some()
    });
    assert!(
        n >= 1,
        "mapping a segment allocated nothing that was counted"
    );
}

#[test]
fn producing_allocates_nothing() {
    let dir = common::tempdir();
    let log = big_log(dir.path());
    let mut producer = log.producer().unwrap();
    let payload = [7u8; 40];
    let tick = Tick {
        price: 1,
        quantity: 2,
        side: 3,
    };
    let records = [[1u8; 12], [2u8; 12], [3u8; 12]];
    // Warm-up: every path once.
    producer.offer(&payload).unwrap();
    producer.offer_pod(&tick).unwrap();
    producer.claim(40).unwrap().commit().unwrap();
    producer.offer_batch(&records).unwrap();

    let ((), n) = count_allocations(|| {
        for i in 0..OPS {
            producer.offer(&payload[..(i % 40) as usize]).unwrap();
        }
    });
    assert_eq!(n, 0, "offer allocated");

    let ((), n) = count_allocations(|| {
        for i in 0..OPS {
            producer
                .offer_pod(&Tick {
                    price: i,
                    quantity: 5,
                    side: 1,
                })
                .unwrap();
        }
    });
    assert_eq!(n, 0, "offer_pod allocated");

    let ((), n) = count_allocations(|| {
        for i in 0..OPS {
            let mut claim = producer.claim(16).unwrap();
            claim[..8].copy_from_slice(&i.to_le_bytes());
            claim.commit().unwrap();
        }
    });
    assert_eq!(n, 0, "claim + commit allocated");

    let ((), n) = count_allocations(|| {
        for i in 0..OPS / 10 {
            let mut batch = producer.batch(256).unwrap();
            for k in 0..10u64 {
                batch.push(&(i * 10 + k).to_le_bytes()).unwrap();
            }
            batch.push_pod(&tick).unwrap();
            batch.commit().unwrap();
        }
    });
    assert_eq!(n, 0, "batch + push + commit allocated");

    let ((), n) = count_allocations(|| {
        for _ in 0..OPS / 10 {
            producer.offer_batch(&records).unwrap();
        }
    });
    assert_eq!(n, 0, "offer_batch allocated");

    let ((), n) = count_allocations(|| {
        for _ in 0..OPS / 10 {
            drop(producer.claim(32).unwrap());
            let mut batch = producer.batch(64).unwrap();
            batch.push(b"dropped").unwrap();
            drop(batch);
        }
    });
    assert_eq!(n, 0, "aborting a claim or a batch allocated");

    assert!(
        log.tail() < CAPACITY / 2,
        "the counted section must stay within one segment, before the next is prepared"
    );
}

#[test]
fn consuming_allocates_nothing() {
    let dir = common::tempdir();
    let log = big_log(dir.path());
    let mut producer = log.producer().unwrap();
    // Single messages, then message sets, all written before the counted sections.
    for i in 0..3 * OPS {
        producer.offer(&i.to_le_bytes()).unwrap();
    }
    for i in 0..OPS / 10 {
        let mut batch = producer.batch(128).unwrap();
        for k in 0..10u64 {
            batch.push(&(3 * OPS + i * 10 + k).to_le_bytes()).unwrap();
        }
        batch.commit().unwrap();
    }
    let total = 4 * OPS;
    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    consumer.verify_checksums(true);
    // Warm-up: maps the segment.
    assert_eq!(
        consumer.poll().unwrap().unwrap().read_pod::<u64>().unwrap(),
        0
    );

    let mut next = 1u64;
    let mut sum = 0u64;
    let ((), n) = count_allocations(|| {
        for _ in 0..OPS - 1 {
            let m = consumer.poll().unwrap().unwrap();
            sum = sum.wrapping_add(m.read_pod::<u64>().unwrap());
            sum = sum.wrapping_add(*m.as_pod::<u64>().unwrap());
            sum = sum.wrapping_add(m.timestamp_ns().unwrap());
            let _ = m.timestamp();
            assert_eq!(m.payload().len(), 8);
        }
    });
    assert_eq!(n, 0, "poll allocated");
    next += OPS - 1;

    let ((), n) = count_allocations(|| {
        let mut delivered = 0;
        while delivered < OPS {
            delivered += consumer
                .poll_batch(1000, |m| {
                    assert_eq!(m.read_pod::<u64>().unwrap(), next);
                    next += 1;
                })
                .unwrap() as u64;
        }
    });
    assert_eq!(n, 0, "poll_batch allocated");

    let ((), n) = count_allocations(|| {
        for _ in 0..OPS / 2 {
            let m = consumer
                .wait(Some(Duration::from_secs(5)))
                .unwrap()
                .unwrap();
            assert_eq!(m.read_pod::<u64>().unwrap(), next);
            next += 1;
        }
        for _ in 0..OPS / 2 {
            let m = consumer.wait(None).unwrap().unwrap();
            assert_eq!(m.read_pod::<u64>().unwrap(), next);
            next += 1;
        }
    });
    assert_eq!(n, 0, "wait with data present allocated");

    // Message sets: records read one by one and in batches.
    let ((), n) = count_allocations(|| {
        for _ in 0..OPS / 2 {
            let m = consumer.poll().unwrap().unwrap();
            assert_eq!(m.read_pod::<u64>().unwrap(), next);
            next += 1;
        }
        while next < total {
            consumer
                .wait_batch(333, Some(Duration::from_secs(5)), |m| {
                    assert_eq!(m.read_pod::<u64>().unwrap(), next);
                    next += 1;
                })
                .unwrap();
        }
    });
    assert_eq!(n, 0, "reading message sets allocated");
    assert_eq!(next, total);
    assert!(sum > 0);

    // At the end, with nothing to read: polling and a short wait allocate nothing either.
    let ((), n) = count_allocations(|| {
        for _ in 0..1000 {
            assert!(consumer.poll().unwrap().is_none());
        }
        assert!(consumer
            .wait(Some(Duration::from_millis(5)))
            .unwrap()
            .is_none());
    });
    assert_eq!(n, 0, "an idle poll or wait allocated");
}

/// Commits while a consumer sleeps on the futex take the wake path (a system call), which
/// must not allocate either; and the woken consumer allocates nothing to read.
#[test]
fn waking_a_sleeping_consumer_allocates_nothing() {
    let dir = common::tempdir();
    let log = big_log(dir.path());
    let mut producer = log.producer().unwrap();
    producer.offer(&0u64.to_le_bytes()).unwrap();
    let rounds = 300u64;
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = {
        let mut consumer = log.consumer(StartAt::Earliest).unwrap();
        std::thread::spawn(move || {
            assert_eq!(
                consumer.poll().unwrap().unwrap().read_pod::<u64>().unwrap(),
                0
            );
            let mut allocations = 0;
            for i in 1..=rounds {
                let (value, n) = count_allocations(|| {
                    let m = consumer.wait(None).unwrap().unwrap();
                    m.read_pod::<u64>().unwrap()
                });
                assert_eq!(value, i);
                allocations += n;
                tx.send(()).unwrap();
            }
            allocations
        })
    };
    let mut allocations = 0;
    for i in 1..=rounds {
        std::thread::sleep(Duration::from_micros(if i % 2 == 0 { 200 } else { 1000 }));
        let ((), n) = count_allocations(|| {
            producer.offer_pod(&i).unwrap();
        });
        allocations += n;
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the consumer was woken");
    }
    assert_eq!(
        allocations, 0,
        "committing with a sleeping consumer allocated"
    );
    assert_eq!(reader.join().unwrap(), 0, "waking up and reading allocated");
}
