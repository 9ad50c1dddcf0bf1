//! Producers and consumers in threads of one process: many of each at once, across segment
//! ends; `StartAt::Latest`; wake-ups of sleeping consumers; aborted claims and batches.

mod common;

use common::{produce, read_all, Model, ReadMode, Summary};
use logbus::{Log, LogOptions, StartAt};
use std::sync::mpsc;
use std::time::Duration;

const SMALL_SEGMENTS: u64 = 1 << 16;
/// How long a reader may go without a message before the test calls it stalled.
const STALL: Duration = Duration::from_secs(30);

fn small_log(dir: &std::path::Path) -> Log {
    Log::create(dir, &LogOptions::new().segment_capacity(SMALL_SEGMENTS)).unwrap()
}

#[test]
fn threads_across_segments() {
    let dir = common::tempdir();
    let log = small_log(dir.path());
    let producers = 3u64;
    let per = 200_000u64;
    let mut handles = vec![];
    for p in 0..producers {
        let log = log.clone();
        handles.push(std::thread::spawn(move || {
            let mut prod = log.producer().unwrap();
            for i in 0..per {
                let mut buf = [0u8; 64];
                buf[..8].copy_from_slice(&p.to_le_bytes());
                buf[8..16].copy_from_slice(&i.to_le_bytes());
                let len = 16 + (i % 48) as usize;
                match i % 3 {
                    0 => {
                        prod.offer(&buf[..len]).unwrap();
                    }
                    1 => {
                        let mut c = prod.claim(len).unwrap();
                        c.copy_from_slice(&buf[..len]);
                        c.commit().unwrap();
                    }
                    _ => {
                        prod.offer_batch(&[&buf[..len]]).unwrap();
                    }
                }
            }
        }));
    }
    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    consumer.verify_checksums(true);
    let mut next = vec![0u64; producers as usize];
    let mut total = 0;
    while total < producers * per {
        let m = consumer
            .wait(Some(Duration::from_secs(5)))
            .unwrap()
            .expect("stalled");
        let p = u64::from_le_bytes(m.payload()[..8].try_into().unwrap()) as usize;
        let i = u64::from_le_bytes(m.payload()[8..16].try_into().unwrap());
        assert_eq!(i, next[p]);
        assert_eq!(m.payload().len(), 16 + (i % 48) as usize);
        next[p] += 1;
        total += 1;
    }
    for h in handles {
        h.join().unwrap();
    }
    assert!(consumer.poll().unwrap().is_none());
    assert!(
        log.tail() > 100 * SMALL_SEGMENTS,
        "the test should cross many segment ends"
    );
}

/// Three producers with every kind of write (and aborts) and six consumers of three kinds,
/// all at once, then one more consumer after the fact: every consumer sees every message
/// once, intact, in the same global order, and stops at the tail.
#[test]
fn many_consumer_threads_read_the_same_sequence() {
    let dir = common::tempdir();
    let log = small_log(dir.path());
    let model = Model::new(log.max_payload_len());
    let counts: Vec<(u32, u64)> = (0..3).map(|p| (p, 40_000 + 1_000 * u64::from(p))).collect();
    let modes = [ReadMode::Wait, ReadMode::WaitBatch, ReadMode::Poll];
    let consumers: Vec<_> = (0..6)
        .map(|i| {
            let (log, counts) = (log.clone(), counts.clone());
            std::thread::spawn(move || {
                read_all(&log, StartAt::Earliest, model, &counts, modes[i % 3], STALL)
            })
        })
        .collect();
    let producers: Vec<_> = counts
        .iter()
        .map(|&(p, count)| {
            let log = log.clone();
            std::thread::spawn(move || produce(&log, &model, p, count))
        })
        .collect();
    let produced: Vec<_> = producers.into_iter().map(|h| h.join().unwrap()).collect();
    let summaries: Vec<Summary> = consumers.into_iter().map(|h| h.join().unwrap()).collect();
    let late = read_all(
        &log,
        StartAt::Earliest,
        model,
        &counts,
        ReadMode::Poll,
        STALL,
    );

    let total: u64 = counts.iter().map(|&(_, c)| c).sum();
    assert_eq!(late.messages, total);
    assert_eq!(
        late.position,
        log.tail(),
        "a reader at the end is at the tail"
    );
    for (i, s) in summaries.iter().enumerate() {
        assert_eq!(s, &late, "consumer {i} saw another sequence");
    }
    assert!(produced
        .iter()
        .all(|p| p.aborted > 0 && p.batches > 0 && p.claims > 0));
    assert!(log.tail() > 100 * SMALL_SEGMENTS);
}

/// A consumer made with `StartAt::Latest` starts at the tail: it sees nothing written before
/// it was made and everything written after.
#[test]
fn latest_sees_only_later_messages() {
    let dir = common::tempdir();
    let log = small_log(dir.path());
    let mut producer = log.producer().unwrap();
    for i in 0u64..1000 {
        producer.offer(&i.to_le_bytes()).unwrap();
    }
    let tail = log.tail();
    let mut latest = log.consumer(StartAt::Latest).unwrap();
    assert_eq!(latest.position(), tail);
    assert!(latest.poll().unwrap().is_none());
    assert!(latest
        .wait(Some(Duration::from_millis(20)))
        .unwrap()
        .is_none());
    let first_new = producer.offer(&1000u64.to_le_bytes()).unwrap();
    assert_eq!(first_new, tail);
    for i in 1001u64..1500 {
        producer.offer(&i.to_le_bytes()).unwrap();
    }
    let mut seen = Vec::new();
    latest
        .poll_batch(usize::MAX, |m| {
            seen.push(u64::from_le_bytes(m.payload().try_into().unwrap()))
        })
        .unwrap();
    assert_eq!(seen, (1000..1500).collect::<Vec<_>>());
}

/// `StartAt::Latest` while producers are writing across segment ends: the consumer sees
/// exactly the messages at or after its start position, and nothing before it.
#[test]
fn latest_while_producing_sees_exactly_what_follows_its_start() {
    let dir = common::tempdir();
    let log = small_log(dir.path());
    let count = 200_000u64;
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut producer = log.producer().unwrap();
            for i in 0..count {
                let len = 8 + (i % 200) as usize;
                let mut claim = producer.claim(len).unwrap();
                claim[..8].copy_from_slice(&i.to_le_bytes());
                claim.commit().unwrap();
            }
        })
    };
    while log.tail() < 3 * SMALL_SEGMENTS + 1000 {
        std::thread::yield_now();
    }
    let mut latest = log.consumer(StartAt::Latest).unwrap();
    let start = latest.position();
    let mut seen = Vec::new();
    loop {
        let m = latest.wait(Some(STALL)).unwrap().expect("stalled");
        let value = u64::from_le_bytes(m.payload()[..8].try_into().unwrap());
        seen.push((m.position(), value));
        if value == count - 1 {
            break;
        }
    }
    writer.join().unwrap();

    let mut all = log.consumer(StartAt::Earliest).unwrap();
    let mut expected = Vec::new();
    all.poll_batch(usize::MAX, |m| {
        if m.position() >= start {
            expected.push((
                m.position(),
                u64::from_le_bytes(m.payload()[..8].try_into().unwrap()),
            ));
        }
    })
    .unwrap();
    assert!(
        expected.first().unwrap().1 > 0,
        "Latest should start after the first message"
    );
    assert_eq!(seen, expected);
}

/// Consumers asleep in `wait(None)` are woken by every commit, of every kind, made one at a
/// time with pauses long enough for them to fall asleep: a lost wake-up shows as a message
/// that is not acknowledged within 5 s.
#[test]
fn sleeping_consumers_are_woken_by_every_commit() {
    let dir = common::tempdir();
    let log = small_log(dir.path());
    let rounds = 1500u64;
    let sleepers = 3;
    let (ack_tx, ack_rx) = mpsc::channel::<(usize, u64)>();
    let threads: Vec<_> = (0..sleepers)
        .map(|id| {
            let (log, ack) = (log.clone(), ack_tx.clone());
            let mut consumer = log.consumer(StartAt::Earliest).unwrap();
            std::thread::spawn(move || loop {
                let m = consumer
                    .wait(None)
                    .unwrap()
                    .expect("wait(None) returns a message");
                let value = u64::from_le_bytes(m.payload().try_into().unwrap());
                if value == u64::MAX {
                    return;
                }
                ack.send((id, value)).unwrap();
            })
        })
        .collect();
    let mut producer = log.producer().unwrap();
    for i in 0..rounds {
        let pause = [0, 50, 200, 1000, 3000][(i / 5 % 5) as usize];
        std::thread::sleep(Duration::from_micros(pause));
        let bytes = i.to_le_bytes();
        match i % 5 {
            0 => {
                producer.offer(&bytes).unwrap();
            }
            1 => {
                let mut claim = producer.claim(8).unwrap();
                claim.copy_from_slice(&bytes);
                claim.commit().unwrap();
            }
            2 => {
                let mut batch = producer.batch(64).unwrap();
                batch.push(&bytes).unwrap();
                batch.commit().unwrap();
            }
            3 => {
                producer.offer_batch(&[bytes]).unwrap();
            }
            _ => {
                // An abort first: the wake it causes must not be the only one.
                drop(producer.claim(8).unwrap());
                std::thread::sleep(Duration::from_micros(500));
                producer.offer_pod(&i).unwrap();
            }
        }
        let mut acked = vec![false; sleepers];
        for _ in 0..sleepers {
            let (id, value) = ack_rx
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("message {i} not received within 5 s: lost wake-up"));
            assert_eq!(value, i, "consumer {id} received the wrong message");
            assert!(!std::mem::replace(&mut acked[id], true));
        }
    }
    producer.offer(&u64::MAX.to_le_bytes()).unwrap();
    for t in threads {
        t.join().unwrap();
    }
}

/// A claim or a batch dropped uncommitted is skipped by consumers, and so is an empty batch
/// committed; a start position at an aborted frame resumes at the next message.
#[test]
fn dropped_claims_and_batches_are_skipped() {
    let dir = common::tempdir();
    let log = small_log(dir.path());
    let mut producer = log.producer().unwrap();
    producer.offer(b"first").unwrap();
    let aborted_claim = {
        let mut claim = producer.claim(100).unwrap();
        claim[..7].copy_from_slice(b"aborted");
        claim.position()
    };
    {
        let mut batch = producer.batch(256).unwrap();
        batch.push(b"aborted record 1").unwrap();
        batch.push(b"aborted record 2").unwrap();
        drop(batch);
    }
    let empty_batch = producer.batch(128).unwrap().commit().unwrap();
    producer.offer(b"second").unwrap();
    let mut batch = producer.batch(256).unwrap();
    batch.push(b"third").unwrap();
    batch.push(b"fourth").unwrap();
    batch.commit().unwrap();
    drop(producer.claim(3000).unwrap());

    let read = |start| {
        let mut consumer = log.consumer(start).unwrap();
        consumer.verify_checksums(true);
        let mut seen: Vec<Vec<u8>> = Vec::new();
        consumer
            .poll_batch(usize::MAX, |m| seen.push(m.payload().to_vec()))
            .unwrap();
        assert_eq!(
            consumer.position(),
            log.tail(),
            "padding at the end is skipped"
        );
        seen
    };
    let everything: Vec<&[u8]> = vec![b"first", b"second", b"third", b"fourth"];
    assert_eq!(read(StartAt::Earliest), everything);
    assert_eq!(read(StartAt::Position(aborted_claim)), everything[1..]);
    assert_eq!(read(StartAt::Position(empty_batch)), everything[1..]);
}

/// A consumer that waits at a claim that is then dropped moves past it to the next commit;
/// it never returns the aborted bytes.
#[test]
fn a_consumer_waiting_at_an_aborted_claim_moves_on() {
    let dir = common::tempdir();
    let log = small_log(dir.path());
    let rounds = 40u64;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = {
        let mut consumer = log.consumer(StartAt::Earliest).unwrap();
        std::thread::spawn(move || {
            for _ in 0..rounds {
                let m = consumer
                    .wait(Some(Duration::from_secs(10)))
                    .unwrap()
                    .expect("a message after the abort");
                tx.send(m.payload().to_vec()).unwrap();
            }
        })
    };
    let mut producer = log.producer().unwrap();
    for i in 0..rounds {
        if i % 2 == 0 {
            let mut claim = producer.claim(16).unwrap();
            claim.copy_from_slice(b"must not be read");
            std::thread::sleep(Duration::from_millis(5));
            drop(claim);
        } else {
            let mut batch = producer.batch(64).unwrap();
            batch.push(b"must not be read").unwrap();
            std::thread::sleep(Duration::from_millis(5));
            drop(batch);
        }
        std::thread::sleep(Duration::from_millis(2));
        producer.offer(&i.to_le_bytes()).unwrap();
        let got = rx.recv_timeout(Duration::from_secs(10)).expect("delivered");
        assert_eq!(got, i.to_le_bytes());
    }
    reader.join().unwrap();
}
