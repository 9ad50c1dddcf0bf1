//! Full file systems, for real: a small tmpfs mounted by the test (skipped, with a message,
//! where this process may not mount one). Making a segment on a full file system is a clean
//! `Error::NoSpace` from the producer's call — never a SIGBUS, never a half-made segment;
//! consumers wait at the claim that failed instead of failing or stalling for good; once
//! space is freed, producing goes on and nothing committed is lost, also when the producer
//! whose claim failed was dropped while the file system was still full.

mod common;

use logbus::{Consumer, Error, Log, LogOptions, StartAt};
use std::path::Path;
use std::time::{Duration, Instant};

const SEGMENT: u64 = 1 << 16;

fn options() -> LogOptions {
    LogOptions::new().segment_capacity(SEGMENT)
}

/// A message that carries its sequence number.
fn message(seq: u64) -> Vec<u8> {
    common::sequenced(seq, 8 + (seq % 300) as usize)
}

fn seq_of(payload: &[u8]) -> u64 {
    common::sequence_of(payload, message)
}

/// Offers messages from `*seq` on until the file system is full; returns that error.
fn offer_until_full(producer: &mut logbus::Producer, seq: &mut u64) -> Error {
    loop {
        match producer.offer(&message(*seq)) {
            Ok(_) => *seq += 1,
            Err(e) => return e,
        }
        assert!(*seq < 1_000_000, "the file system never filled up");
    }
}

/// Reads every message there is now, checking that they come in order from `*next` on; waits
/// up to `patience` for more before it returns.
fn read_on(consumer: &mut Consumer, next: &mut u64, patience: Duration) {
    while let Some(m) = consumer.wait(Some(patience)).unwrap() {
        assert_eq!(seq_of(m.payload()), *next);
        *next += 1;
    }
}

fn temporary_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with(".tmp-"))
        .collect()
}

/// Fills `path` with a file of `bytes` bytes: space to free later.
fn ballast(path: &Path, bytes: usize) {
    std::fs::write(path, vec![1u8; bytes]).unwrap();
}

#[test]
fn a_full_file_system_is_a_clean_error_and_producing_resumes_once_space_is_freed() {
    let dir = common::tempdir();
    let Some(fs) = common::Tmpfs::mount(&dir.path().join("mnt"), "2m") else {
        return;
    };
    let ballast_path = fs.path.join("ballast");
    ballast(&ballast_path, 512 * 1024);
    let log_dir = fs.path.join("log");
    let log = Log::create(&log_dir, &options()).unwrap();
    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    let mut producer = log.producer().unwrap();
    let mut seq = 0;
    let mut next = 0;

    let err = offer_until_full(&mut producer, &mut seq);
    match &err {
        Error::NoSpace { path, bytes, .. } => {
            assert_eq!(*bytes, 4096 + SEGMENT);
            assert!(path.starts_with(&log_dir), "{}", path.display());
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("no space left"), "{err}");
    assert!(seq > 10, "only {seq} messages fit");
    // Every call fails the same way while the file system is full, and none leaves a
    // half-made segment behind.
    for _ in 0..10 {
        assert!(matches!(
            producer.offer(&message(seq)),
            Err(Error::NoSpace { .. })
        ));
        assert!(matches!(producer.claim(10), Err(Error::NoSpace { .. })));
    }
    assert_eq!(temporary_files(&log_dir), Vec::<String>::new());

    // The consumer gets every committed message, then waits: no error, no message lost —
    // also past its claim timeout, when it tries to pad the failed claim itself and cannot
    // make its segment either.
    consumer.set_claim_timeout(Duration::from_millis(20));
    read_on(&mut consumer, &mut next, Duration::from_millis(300));
    assert_eq!(next, seq);

    // Space is freed: the same producer goes on, and the consumer gets the rest in order.
    std::fs::remove_file(&ballast_path).unwrap();
    let resumed = seq;
    for _ in 0..2000 {
        producer.offer(&message(seq)).unwrap();
        seq += 1;
    }
    read_on(&mut consumer, &mut next, Duration::from_millis(300));
    assert_eq!(next, seq, "resumed at {resumed}");
    assert!(log.verify().unwrap().is_clean());
}

#[test]
fn a_producer_dropped_while_the_file_system_is_full_blocks_nobody_once_space_is_freed() {
    let dir = common::tempdir();
    let Some(fs) = common::Tmpfs::mount(&dir.path().join("mnt"), "2m") else {
        return;
    };
    let ballast_path = fs.path.join("ballast");
    ballast(&ballast_path, 512 * 1024);
    let log_dir = fs.path.join("log");
    let log = Log::create(&log_dir, &options()).unwrap();
    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    let mut seq = 0;
    let mut next = 0;
    let mut producer = log.producer().unwrap();
    let failed_slot = producer.slot();
    assert!(matches!(
        offer_until_full(&mut producer, &mut seq),
        Error::NoSpace { .. }
    ));
    read_on(&mut consumer, &mut next, Duration::from_millis(100));
    assert_eq!(next, seq);
    // Dropped with its failed claim unsettled: the slot is handed to the readers.
    drop(producer);
    let slots = log.producers();
    assert_eq!(slots.len(), 1, "{slots:?}");
    assert!(!slots[0].alive, "{slots:?}");
    read_on(&mut consumer, &mut next, Duration::from_millis(100));

    std::fs::remove_file(&ballast_path).unwrap();
    let mut producer = log.producer().unwrap();
    assert_ne!(
        producer.slot(),
        failed_slot,
        "that slot's claim is not padded yet"
    );
    let first_after = producer.offer(&message(seq)).unwrap();
    seq += 1;
    // The consumer pads the abandoned claim at once (its owner counts as dead: no claim
    // timeout to wait for) and reads on.
    let started = Instant::now();
    let m = consumer
        .wait(Some(Duration::from_secs(5)))
        .unwrap()
        .expect("the consumer moved past the abandoned claim");
    assert_eq!((m.position(), seq_of(m.payload())), (first_after, next));
    next += 1;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(1), "waited {waited:?}");
    for _ in 0..500 {
        producer.offer(&message(seq)).unwrap();
        seq += 1;
    }
    read_on(&mut consumer, &mut next, Duration::from_millis(200));
    assert_eq!(next, seq);
    // And the abandoned slot, its claim padded, is the first free one again.
    assert_eq!(log.producer().unwrap().slot(), failed_slot);
    assert!(log.verify().unwrap().is_clean());
}

#[test]
fn retention_makes_room_when_a_segment_cannot_be_made() {
    let dir = common::tempdir();
    let Some(fs) = common::Tmpfs::mount(&dir.path().join("mnt"), "2m") else {
        return;
    };
    let log = Log::create(fs.path.join("log"), &options().retain_segments(2)).unwrap();
    let mut producer = log.producer().unwrap();
    // A durable consumer that has committed nothing holds every segment back, so the file
    // system fills up.
    let mut reader = log.consumer_named("reader").unwrap();
    let mut seq = 0;
    let mut next = 0;
    let err = offer_until_full(&mut producer, &mut seq);
    assert!(matches!(err, Error::NoSpace { .. }), "{err}");
    let catch_up = |reader: &mut Consumer, next: &mut u64| {
        while let Some(m) = reader.poll().unwrap() {
            assert_eq!(seq_of(m.payload()), *next);
            *next += 1;
        }
        reader.commit_position().unwrap();
    };
    catch_up(&mut reader, &mut next);
    // Once it has committed, the next segment that cannot be made for lack of space makes
    // retention run first: producing goes on, far past what the file system holds.
    for _ in 0..40_000 {
        producer
            .offer(&message(seq))
            .unwrap_or_else(|e| panic!("message {seq}: {e}"));
        seq += 1;
        if seq % 100 == 0 {
            catch_up(&mut reader, &mut next);
        }
    }
    catch_up(&mut reader, &mut next);
    assert_eq!(next, seq);
    assert!(log.tail() > 4 << 20);
}

// ---------------------------------------------------------------------------------------------
