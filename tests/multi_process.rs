//! Real OS processes on one log: several producer processes and several consumer processes
//! at once, across hundreds of segment ends; a fresh process reopening the log afterwards;
//! and wake-ups that cross process boundaries.
//!
//! Children are this test binary run again with only `child_entry` selected and
//! `LOGBUS_TEST_CHILD` naming their role; that works under `cargo test` and cargo-nextest.

mod common;

use common::{
    env, env_parse, produce, read_all, read_until_done, report, Children, Model, ReadMode, Summary,
    Tracker,
};
use logbus::{Log, LogOptions, StartAt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SEGMENT_CAPACITY: u64 = 64 * 1024;
/// How long a reader may go without a message before it calls the log stalled.
const STALL: Duration = Duration::from_secs(60);
/// Upper bound for any group of children; they are killed if it passes.
const CHILDREN_TIMEOUT: Duration = Duration::from_secs(300);

/// Messages per producer process: two million in all in debug builds (about 6,500 segment
/// ends, some 20 s on two cores), four million in release builds. `LOGBUS_TEST_MESSAGES`
/// overrides the total.
fn messages_per_producer(producers: u64) -> u64 {
    let total = std::env::var("LOGBUS_TEST_MESSAGES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            2_000_000
        } else {
            4_000_000
        });
    total / producers
}

fn counts_from_env() -> Vec<(u32, u64)> {
    env("LOGBUS_TEST_COUNTS")
        .split(',')
        .enumerate()
        .map(|(p, c)| (p as u32, c.parse().expect("a count")))
        .collect()
}

fn counts_to_env(counts: &[(u32, u64)]) -> String {
    counts
        .iter()
        .map(|(_, c)| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
#[ignore = "child process entry point; run by other tests"]
fn child_entry() {
    let Some(role) = common::child_role() else {
        return;
    };
    common::child_init();
    match role.as_str() {
        "producer" => producer_child(),
        "consumer" => consumer_child(),
        "reopen" => reopen_child(),
        "echo" => echo_child(),
        "die_mid_claim" => die_mid_claim_child(),
        other => panic!("unknown child role {other}"),
    }
}

fn producer_child() {
    let dir = PathBuf::from(env("LOGBUS_TEST_LOG"));
    let id: u32 = env_parse("LOGBUS_TEST_ID");
    let count = counts_from_env()[id as usize].1;
    let log = Log::open(&dir).expect("open the log");
    let model = Model::new(log.max_payload_len());
    common::rendezvous(
        Path::new(&env("LOGBUS_TEST_SYNC")),
        &format!("producer{id}"),
    );
    let done = produce(&log, &model, id, count);
    report(&[
        ("first", done.first.to_string()),
        ("last", done.last.to_string()),
        ("aborted", done.aborted.to_string()),
        ("batches", done.batches.to_string()),
        ("claims", done.claims.to_string()),
    ]);
}

/// Reads everything from `Earliest` while the producers write; with
/// `LOGBUS_TEST_EXTRA_THREAD=1` a second consumer in a thread of this process reads too.
fn consumer_child() {
    let dir = PathBuf::from(env("LOGBUS_TEST_LOG"));
    let id: u32 = env_parse("LOGBUS_TEST_ID");
    let mode: ReadMode = env_parse("LOGBUS_TEST_MODE");
    let counts = counts_from_env();
    let log = Log::open(&dir).expect("open the log");
    let model = Model::new(log.max_payload_len());
    let extra = env("LOGBUS_TEST_EXTRA_THREAD") == "1";
    common::rendezvous(
        Path::new(&env("LOGBUS_TEST_SYNC")),
        &format!("consumer{id}"),
    );
    let thread = extra.then(|| {
        let (log, counts) = (log.clone(), counts.clone());
        std::thread::spawn(move || {
            read_all(
                &log,
                StartAt::Earliest,
                model,
                &counts,
                ReadMode::Poll,
                STALL,
            )
        })
    });
    let summary = read_all(&log, StartAt::Earliest, model, &counts, mode, STALL);
    report(&summary.to_pairs(&format!("consumer{id}")));
    if let Some(thread) = thread {
        let summary = thread.join().expect("the extra consumer thread");
        report(&summary.to_pairs(&format!("consumer{id}-thread")));
    }
    report(&[("tail", log.tail().to_string())]);
}

/// A fresh process after all the others have exited: reads the whole log again and must see
/// what the consumers saw; then appends as one more producer, after the old tail.
fn reopen_child() {
    let dir = PathBuf::from(env("LOGBUS_TEST_LOG"));
    let counts = counts_from_env();
    let expected = Summary {
        hash: u64::from_str_radix(&env("LOGBUS_TEST_HASH"), 16).unwrap(),
        messages: env_parse("LOGBUS_TEST_MESSAGES_SEEN"),
        position: env_parse("LOGBUS_TEST_POSITION"),
    };
    let log = Log::open(&dir).expect("reopen the log");
    let old_tail = log.tail();
    assert_eq!(old_tail, expected.position, "the tail after reopening");
    let model = Model::new(log.max_payload_len());
    let reread = read_all(
        &log,
        StartAt::Earliest,
        model,
        &counts,
        ReadMode::Poll,
        STALL,
    );
    assert_eq!(reread, expected, "reopened log reads another sequence");

    let new_id = counts.len() as u32;
    let new_count = 5_000;
    let done = produce(&log, &model, new_id, new_count);
    assert!(
        done.first >= old_tail,
        "first message after reopening at {} is not after the old tail {old_tail}",
        done.first
    );
    if old_tail % SEGMENT_CAPACITY != 0 {
        // The hello is tiny: unless the old tail was at a segment end, it goes right there.
        assert_eq!(done.first, old_tail, "a gap after the old tail");
    }
    // From the old tail: exactly the new producer's messages.
    let appended = read_all(
        &log,
        StartAt::Position(old_tail),
        model,
        &[(new_id, new_count)],
        ReadMode::Wait,
        STALL,
    );
    assert_eq!(appended.position, log.tail());
    // From the start: the old messages untouched, then the new ones.
    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    consumer.verify_checksums(true);
    let mut old = Tracker::new(model, &counts);
    read_until_done(&mut consumer, &mut old, ReadMode::Wait, STALL);
    assert_eq!(
        old.hash, expected.hash,
        "old messages changed by the append"
    );
    let mut new = Tracker::new(model, &[(new_id, new_count)]);
    read_until_done(&mut consumer, &mut new, ReadMode::Wait, STALL);
    assert_eq!(new.hash, appended.hash);
    assert!(consumer.poll().unwrap().is_none());
    report(&[
        ("old_tail", old_tail.to_string()),
        ("first_new", done.first.to_string()),
        ("new_tail", log.tail().to_string()),
        ("new_hash", format!("{:016x}", appended.hash)),
    ]);
}

/// Three producer processes (every way of writing, aborts included) and two consumer
/// processes, one of them with a second consumer thread, all at once on a log of 64 KiB
/// segments; then a fresh process reopens the log, reads it again and appends to it.
#[test]
fn producer_and_consumer_processes_share_one_log() {
    let started = Instant::now();
    let root = common::tempdir();
    let log_dir = root.path().join("log");
    let log = Log::create(
        &log_dir,
        &LogOptions::new().segment_capacity(SEGMENT_CAPACITY),
    )
    .unwrap();
    let max_payload = log.max_payload_len();
    drop(log);
    let producers = 3u64;
    let per = messages_per_producer(producers);
    let counts: Vec<(u32, u64)> = (0..producers as u32)
        .map(|p| (p, per + 101 * u64::from(p)))
        .collect();
    let total: u64 = counts.iter().map(|&(_, c)| c).sum();
    let common_env = vec![
        ("LOGBUS_TEST_LOG", log_dir.display().to_string()),
        ("LOGBUS_TEST_SYNC", root.path().display().to_string()),
        ("LOGBUS_TEST_COUNTS", counts_to_env(&counts)),
    ];
    let with = |extra: &[(&'static str, String)]| {
        let mut envs = common_env.clone();
        envs.extend_from_slice(extra);
        envs
    };

    let mut children = Children::new();
    let mut names = Vec::new();
    for (id, mode, extra) in [(0, "wait", "1"), (1, "batch", "0")] {
        let name = format!("consumer{id}");
        children.spawn(
            &name,
            "consumer",
            &with(&[
                ("LOGBUS_TEST_ID", id.to_string()),
                ("LOGBUS_TEST_MODE", mode.to_string()),
                ("LOGBUS_TEST_EXTRA_THREAD", extra.to_string()),
            ]),
        );
        names.push(name);
    }
    for id in 0..producers {
        let name = format!("producer{id}");
        children.spawn(
            &name,
            "producer",
            &with(&[("LOGBUS_TEST_ID", id.to_string())]),
        );
        names.push(name);
    }
    children.start_together(root.path(), &names, Duration::from_secs(60));
    let finished = children.wait_all(CHILDREN_TIMEOUT);
    let concurrent = started.elapsed();

    // Every reader — two processes and a thread — saw the same sequence: all messages.
    let mut summaries = Vec::new();
    let mut tails = Vec::new();
    for f in finished.iter().filter(|f| f.name.starts_with("consumer")) {
        for r in f.results() {
            match r.get("who") {
                Some(who) => summaries.push((who.clone(), Summary::from_result(&r))),
                None => tails.push(r["tail"].parse::<u64>().unwrap()),
            }
        }
    }
    assert_eq!(summaries.len(), 3, "two consumer processes and one thread");
    let reference = summaries[0].1.clone();
    assert_eq!(reference.messages, total);
    for (who, s) in &summaries {
        assert_eq!(
            s, &reference,
            "{who} saw another sequence than {}",
            summaries[0].0
        );
    }
    // Every consumer stopped at the tail, and the tail is past hundreds of segment ends.
    for tail in &tails {
        assert_eq!(*tail, reference.position);
    }
    assert!(
        reference.position / SEGMENT_CAPACITY >= 200,
        "only {} segments were filled",
        reference.position / SEGMENT_CAPACITY
    );
    // Every producer used every way in, aborts included; some messages were near the limit.
    for f in finished.iter().filter(|f| f.name.starts_with("producer")) {
        let r = f.result();
        for key in ["aborted", "batches", "claims"] {
            assert!(r[key].parse::<u64>().unwrap() > 0, "{}: no {key}", f.name);
        }
    }
    assert!(max_payload > 8000);

    // A fresh process reopens the log: same sequence, then appends after the old tail.
    let mut children = Children::new();
    children.spawn(
        "reopen",
        "reopen",
        &with(&[
            ("LOGBUS_TEST_HASH", format!("{:016x}", reference.hash)),
            ("LOGBUS_TEST_MESSAGES_SEEN", reference.messages.to_string()),
            ("LOGBUS_TEST_POSITION", reference.position.to_string()),
        ]),
    );
    let reopened = children.wait_all(CHILDREN_TIMEOUT).pop().unwrap().result();
    let first_new: u64 = reopened["first_new"].parse().unwrap();
    assert!(first_new >= reference.position);

    // And once more in this process, after the appending process has exited.
    let log = Log::open(&log_dir).unwrap();
    assert_eq!(
        log.tail().to_string(),
        reopened["new_tail"],
        "tail after reopening"
    );
    let model = Model::new(max_payload);
    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    consumer.verify_checksums(true);
    let mut old = Tracker::new(model, &counts);
    read_until_done(&mut consumer, &mut old, ReadMode::Wait, STALL);
    assert_eq!(old.hash, reference.hash);
    let appended = read_all(
        &log,
        StartAt::Position(first_new),
        model,
        &[(producers as u32, 5_000)],
        ReadMode::Poll,
        STALL,
    );
    assert_eq!(format!("{:016x}", appended.hash), reopened["new_hash"]);
    println!(
        "{total} messages, {} segments, {:.1} s with all processes at once, {:.1} s in all",
        log.tail() / SEGMENT_CAPACITY,
        concurrent.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Reads requests and echoes each back on the reply log, sleeping in `wait(None)` between.
fn echo_child() {
    let requests = Log::open(env("LOGBUS_TEST_REQUESTS")).unwrap();
    let replies = Log::open(env("LOGBUS_TEST_REPLIES")).unwrap();
    let mut consumer = requests.consumer(StartAt::Earliest).unwrap();
    let mut producer = replies.producer().unwrap();
    common::rendezvous(Path::new(&env("LOGBUS_TEST_SYNC")), "echo");
    let mut echoed = 0u64;
    loop {
        let message = consumer
            .wait(None)
            .unwrap()
            .expect("wait(None) returns one");
        let value: u64 = message.read_pod().unwrap();
        if value == u64::MAX {
            break;
        }
        producer.offer_pod(&value).unwrap();
        echoed += 1;
    }
    report(&[("echoed", echoed.to_string())]);
}

/// Ping-pong between processes, one message at a time, with pauses long enough for the other
/// side to fall asleep on the futex: every commit (offer, claim, batch, after an abort) wakes
/// a consumer of another process. A lost wake-up shows as a reply missing for 5 s.
#[test]
fn a_consumer_asleep_in_another_process_is_woken_by_each_commit() {
    let root = common::tempdir();
    let options = LogOptions::new().segment_capacity(SEGMENT_CAPACITY);
    let requests = Log::create(root.path().join("requests"), &options).unwrap();
    let replies = Log::create(root.path().join("replies"), &options).unwrap();
    let mut children = Children::new();
    children.spawn(
        "echo",
        "echo",
        &[
            (
                "LOGBUS_TEST_REQUESTS",
                requests.path().display().to_string(),
            ),
            ("LOGBUS_TEST_REPLIES", replies.path().display().to_string()),
            ("LOGBUS_TEST_SYNC", root.path().display().to_string()),
        ],
    );
    let mut producer = requests.producer().unwrap();
    let mut consumer = replies.consumer(StartAt::Earliest).unwrap();
    children.start_together(root.path(), &["echo".to_string()], Duration::from_secs(60));
    let rounds = 1000u64;
    for i in 0..rounds {
        let pause = [0, 30, 300, 1000, 2500][(i / 4 % 5) as usize];
        std::thread::sleep(Duration::from_micros(pause));
        match i % 4 {
            0 => {
                producer.offer_pod(&i).unwrap();
            }
            1 => {
                let mut claim = producer.claim(8).unwrap();
                claim.copy_from_slice(&i.to_le_bytes());
                claim.commit().unwrap();
            }
            2 => {
                let mut batch = producer.batch(32).unwrap();
                batch.push_pod(&i).unwrap();
                batch.commit().unwrap();
            }
            _ => {
                drop(producer.claim(8).unwrap());
                std::thread::sleep(Duration::from_micros(300));
                producer.offer_batch(&[i.to_le_bytes()]).unwrap();
            }
        }
        let reply = consumer
            .wait(Some(Duration::from_secs(5)))
            .unwrap()
            .unwrap_or_else(|| panic!("no echo of message {i} within 5 s: a lost wake-up"));
        assert_eq!(reply.read_pod::<u64>().unwrap(), i);
    }
    producer.offer_pod(&u64::MAX).unwrap();
    let echo = children.wait_all(CHILDREN_TIMEOUT).pop().unwrap().result();
    assert_eq!(echo["echoed"], rounds.to_string());
    assert!(consumer.poll().unwrap().is_none());
}

/// Claims a frame, half writes it, and exits without committing or aborting it (no
/// destructor runs): a producer killed between its claim and its commit.
fn die_mid_claim_child() {
    let log = Log::open(env("LOGBUS_TEST_LOG")).unwrap();
    let mut producer = log.producer().unwrap();
    let mut claim = producer.claim(64).unwrap();
    claim[..4].copy_from_slice(b"dead");
    report(&[("position", claim.position().to_string())]);
    std::process::exit(0);
}

/// DESIGN, recovery: a producer killed at any instruction must not block consumers for
/// longer than a timeout, nor make them misread: the claim of a process that died is padded
/// by the consumer that waits at it, and the messages committed after it arrive.
#[test]

fn a_producer_killed_mid_claim_does_not_block_consumers_for_ever() {
    let root = common::tempdir();
    let log = Log::create(
        root.path().join("log"),
        &LogOptions::new().segment_capacity(SEGMENT_CAPACITY),
    )
    .unwrap();
    let mut producer = log.producer().unwrap();
    let before = producer.offer(b"before").unwrap();
    let mut children = Children::new();
    children.spawn(
        "dead",
        "die_mid_claim",
        &[("LOGBUS_TEST_LOG", log.path().display().to_string())],
    );
    let dead: u64 = children.wait_all(CHILDREN_TIMEOUT).pop().unwrap().result()["position"]
        .parse()
        .unwrap();
    assert!(dead > before);
    let after = producer.offer(b"after").unwrap();
    assert!(after > dead);
    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    assert_eq!(consumer.poll().unwrap().unwrap().payload(), b"before");
    let next = consumer
        .wait(Some(Duration::from_secs(20)))
        .unwrap()
        .map(|m| (m.position(), m.payload().to_vec()));
    assert_eq!(
        next,
        Some((after, b"after".to_vec())),
        "the consumer is still blocked at the dead producer's claim at {dead}"
    );
}
