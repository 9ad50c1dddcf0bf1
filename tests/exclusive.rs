//! Exclusive producers (`Log::exclusive_producer`): the log's only producer while it lives,
//! across processes, and free again once its process dies.

mod common;

use logbus::{Error, Log, LogOptions, StartAt};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

const HELD_MESSAGES: u64 = 1000;

#[test]
#[ignore = "child process entry point; run by other tests"]
fn child_entry() {
    let Some(role) = common::child_role() else {
        return;
    };
    common::child_init();
    assert_eq!(role, "exclusive_holder");
    let log = Log::open(common::env("LOGBUS_TEST_LOG")).expect("open the log");
    let mut producer = log.exclusive_producer().expect("an exclusive producer");
    for i in 0..HELD_MESSAGES {
        producer.offer(&i.to_le_bytes()).expect("offer");
    }
    println!("ready");
    // Held until the parent kills this process.
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A child process holding an exclusive producer of the log in `dir`, once it has written.
fn start_exclusive_holder(dir: &std::path::Path) -> std::process::Child {
    let mut child = common::child_command("exclusive_holder")
        .env("LOGBUS_TEST_LOG", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|line| line.unwrap().ends_with("ready")),
        "the child never got its exclusive producer"
    );
    child
}

#[test]
fn an_exclusive_producer_holds_the_log_across_processes_until_its_process_dies() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(1 << 16)).unwrap();
    let mut child = start_exclusive_holder(dir.path());

    // While it lives, no other producer of any kind, in any process.
    match log.producer() {
        Err(Error::ExclusiveProducer { pid }) => assert_eq!(pid, child.id()),
        other => panic!(
            "a producer beside an exclusive one: {:?}",
            other.map(|_| ())
        ),
    }
    assert!(matches!(
        log.exclusive_producer(),
        Err(Error::ExclusiveProducer { .. })
    ));

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // Its process is dead: the log is free, and what it committed is there, then ours.
    let mut producer = log.producer().expect("a producer once the holder is dead");
    match log.exclusive_producer() {
        Err(Error::OtherProducers { count }) => assert_eq!(count, 1),
        other => panic!(
            "an exclusive producer beside another: {:?}",
            other.map(|_| ())
        ),
    }
    producer.offer(b"shared").unwrap();
    drop(producer);
    let mut only = log
        .exclusive_producer()
        .expect("exclusive once alone again");
    only.offer(b"exclusive again").unwrap();

    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    for i in 0..HELD_MESSAGES {
        let message = consumer.poll().unwrap().expect("the dead holder's message");
        assert_eq!(message.payload(), i.to_le_bytes());
    }
    assert_eq!(consumer.poll().unwrap().unwrap().payload(), b"shared");
    assert_eq!(
        consumer.poll().unwrap().unwrap().payload(),
        b"exclusive again"
    );
    assert!(consumer.poll().unwrap().is_none());
    assert!(log.verify().unwrap().problems.is_empty());
}

/// Threads keep making exclusive and ordinary producers of one log at once; a producer, once
/// made, says so and then looks whether one of the other kind is there. The two checks are
/// made in opposite orders, so if two producers ever overlapped, one of them would see it.
#[test]
fn exclusive_and_ordinary_producers_never_overlap() {
    let dir = common::tempdir();
    let log =
        Arc::new(Log::create(dir.path(), &LogOptions::new().segment_capacity(1 << 20)).unwrap());
    let exclusive_live = Arc::new(AtomicBool::new(false));
    let ordinary_live = Arc::new(AtomicU32::new(0));
    let made = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
    let start = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..3)
        .map(|thread| {
            let (log, exclusive_live, ordinary_live, made, start) = (
                log.clone(),
                exclusive_live.clone(),
                ordinary_live.clone(),
                made.clone(),
                start.clone(),
            );
            std::thread::spawn(move || {
                start.wait();
                for round in 0..2000u32 {
                    if thread == 0 {
                        let Ok(mut producer) = log.exclusive_producer() else {
                            continue;
                        };
                        exclusive_live.store(true, Ordering::SeqCst);
                        assert_eq!(ordinary_live.load(Ordering::SeqCst), 0, "overlap");
                        producer.offer(&round.to_le_bytes()).unwrap();
                        exclusive_live.store(false, Ordering::SeqCst);
                        made[0].fetch_add(1, Ordering::Relaxed);
                    } else {
                        let Ok(mut producer) = log.producer() else {
                            continue;
                        };
                        ordinary_live.fetch_add(1, Ordering::SeqCst);
                        assert!(!exclusive_live.load(Ordering::SeqCst), "overlap");
                        producer.offer(&round.to_le_bytes()).unwrap();
                        ordinary_live.fetch_sub(1, Ordering::SeqCst);
                        made[1].fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    // Both kinds got their turns (else the test showed nothing).
    assert!(
        made[0].load(Ordering::Relaxed) > 0,
        "no exclusive producer was ever made"
    );
    assert!(
        made[1].load(Ordering::Relaxed) > 0,
        "no ordinary producer was ever made"
    );
    assert!(log.verify().unwrap().problems.is_empty());
}

/// An exclusive producer commits each frame before it moves the tail past it, so one killed
/// between the two leaves its last message committed at the tail. Readers may have had that
/// message: the next producer must not write over it, and recovery must count it in. (The
/// death is made by hand, at the offset docs/FORMAT.md gives for the tail, since no kill
/// lands reliably between two stores: the tail is set back over the child's last frame.)
#[test]
fn a_message_an_exclusive_producer_committed_but_never_passed_the_tail_over_is_kept() {
    let dir = common::tempdir();
    let options = LogOptions::new()
        .segment_capacity(1 << 16)
        .single_producer(true);
    // Opened before the death, so that the producer made below finds the tail as the child
    // left it (a log opened afterwards is recovered first: checked at the end).
    let log = Log::create(dir.path(), &options).unwrap();
    let mut child = start_exclusive_holder(dir.path());
    child.kill().unwrap();
    child.wait().unwrap();
    let tail = log.tail();
    let last_frame = 24 + 8; // the header and an 8-byte payload, already 8-aligned
    let meta = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join("meta.logbus"))
        .unwrap();
    meta.write_all_at(&(tail - last_frame).to_le_bytes(), 128)
        .unwrap();
    // Readers take the end of the log to be the end of what is committed.
    let latest = log.consumer(StartAt::Latest).unwrap();
    assert_eq!(latest.position(), tail);
    let mut seeking = log.consumer(StartAt::Earliest).unwrap();
    seeking.seek(StartAt::Position(tail)).unwrap();
    assert!(seeking.seek(StartAt::Position(tail + 8)).is_err());
    assert_eq!(Log::open(dir.path()).unwrap().tail(), tail, "recovery");
    meta.write_all_at(&(tail - last_frame).to_le_bytes(), 128)
        .unwrap();

    let after = log.producer().unwrap().offer(b"after").unwrap();
    assert_eq!(after, tail);
    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    let mut seen = Vec::new();
    consumer
        .poll_batch(usize::MAX, |m| seen.push(m.payload().to_vec()))
        .unwrap();
    let mut expected: Vec<Vec<u8>> = (0..HELD_MESSAGES)
        .map(|i| i.to_le_bytes().to_vec())
        .collect();
    expected.push(b"after".to_vec());
    assert_eq!(seen, expected);
}
