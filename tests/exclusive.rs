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

/// An exclusive producer names its claim in its record before it moves the tail, so one
/// killed between the two leaves a record of a claim it never made, at the tail. The next
/// producer claims at that same position: a reader stalled there must wait for that claim,
/// not pad it with the dead record's length. (The dead producer's state is written into the
/// meta file by hand, at the offsets docs/FORMAT.md gives, since no kill lands reliably
/// between two stores; the log handle was opened before the death, so no recovery on open
/// cleans it up first.)
#[test]
fn a_claim_an_exclusive_producer_named_but_never_made_does_not_cover_the_next_ones() {
    let dir = common::tempdir();
    let options = LogOptions::new()
        .segment_capacity(1 << 16)
        .single_producer(true);
    let log = Log::create(dir.path(), &options).unwrap();
    let mut child = start_exclusive_holder(dir.path());
    let slot = log
        .producers()
        .into_iter()
        .find(|p| p.pid == child.id())
        .expect("the child's slot")
        .slot;
    child.kill().unwrap();
    child.wait().unwrap();

    // The child "dies" with its next claim named but the tail not moved: 64 bytes at the tail.
    let tail = log.tail();
    let meta = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join("meta.logbus"))
        .unwrap();
    let record = 512 + 128 * u64::from(slot) + 32;
    meta.write_all_at(&(tail | 1).to_le_bytes(), record)
        .unwrap();
    meta.write_all_at(&64u64.to_le_bytes(), record + 8).unwrap();

    let mut consumer = log.consumer(StartAt::Latest).unwrap();
    let mut producer = log.producer().unwrap();
    let mut claim = producer.claim(100).unwrap();
    assert_eq!(claim.position(), tail);
    // Long past the 1 ms after which a stalled reader looks at the records, well short of the
    // claim timeout after which it would revoke a live claim.
    let until = std::time::Instant::now() + Duration::from_millis(200);
    while std::time::Instant::now() < until {
        assert!(consumer.poll().unwrap().is_none());
    }
    claim.copy_from_slice(&[7; 100]);
    claim.commit().unwrap();
    let message = consumer
        .poll()
        .unwrap()
        .expect("the claim the reader waited for");
    assert_eq!(message.position(), tail);
    assert_eq!(message.payload(), &[7; 100][..]);
}
