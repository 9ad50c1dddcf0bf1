//! Durable cursors (`Log::consumer_named`) and bounded mode: a named consumer resumes where
//! the last holder of its name committed, across handles, reopenings and processes killed
//! with SIGKILL, and misses nothing (at-least-once); `Log::consumers` lists the cursors with
//! their lag; in a bounded log, producers are refused while the slowest live durable consumer
//! is too far behind.

mod common;

use common::{child_init, child_role, env, mix};
use logbus::{Error, Log, LogOptions, StartAt};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const SEGMENT: u64 = 1 << 16;

fn options() -> LogOptions {
    LogOptions::new().segment_capacity(SEGMENT)
}

/// A message that carries its sequence number, padded to a length that varies with it.
fn message(seq: u64) -> Vec<u8> {
    common::sequenced(seq, 8 + (mix(seq) % 120) as usize)
}

fn seq_of(payload: &[u8]) -> u64 {
    common::sequence_of(payload, message)
}

#[test]
fn a_named_consumer_resumes_after_its_last_commit_across_reopening() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &options()).unwrap();
    let mut producer = log.producer().unwrap();
    for seq in 0..100 {
        producer.offer(&message(seq)).unwrap();
    }

    let mut billing = log.consumer_named("billing").unwrap();
    assert_eq!(billing.name(), Some("billing"));
    for expected in 0..40 {
        assert_eq!(seq_of(billing.poll().unwrap().unwrap().payload()), expected);
    }
    let committed = billing.commit_position().unwrap();
    for expected in 40..60 {
        // Read but not committed: the next holder reads these again.
        assert_eq!(seq_of(billing.poll().unwrap().unwrap().payload()), expected);
    }
    drop(billing);
    drop((producer, log));

    let log = Log::open(dir.path()).unwrap();
    let cursors = log.consumers();
    assert_eq!(cursors.len(), 1);
    assert_eq!(cursors[0].name, "billing");
    assert_eq!(cursors[0].position, committed);
    assert_eq!(cursors[0].lag, log.tail() - committed);
    assert_eq!(cursors[0].holder, None);
    assert!(!cursors[0].alive);

    let mut billing = log.consumer_named("billing").unwrap();
    assert_eq!(billing.position(), committed);
    let mut seen = Vec::new();
    billing
        .poll_batch(1000, |m| seen.push(seq_of(m.payload())))
        .unwrap();
    assert_eq!(seen, (40..100).collect::<Vec<_>>());
    billing.commit_position().unwrap();
    let listed = &log.consumers()[0];
    assert_eq!((listed.lag, listed.holder), (0, Some(std::process::id())));
    assert!(listed.alive);

    // Another name is another cursor, from the earliest message.
    let mut audit = log.consumer_named("audit").unwrap();
    assert_eq!(seq_of(audit.poll().unwrap().unwrap().payload()), 0);
    let names: Vec<String> = log.consumers().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["billing", "audit"]);
}

#[test]
fn a_cursor_resumes_inside_a_message_set_and_at_a_given_position() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &options()).unwrap();
    let mut producer = log.producer().unwrap();
    producer.offer(&message(0)).unwrap();
    let batch: Vec<Vec<u8>> = (1..6).map(message).collect();
    producer.offer_batch(&batch).unwrap();
    producer.offer(&message(6)).unwrap();

    let mut billing = log.consumer_named("billing").unwrap();
    let mut third = 0;
    for expected in 0..4 {
        let m = billing.poll().unwrap().unwrap();
        assert_eq!(seq_of(m.payload()), expected);
        if expected == 2 {
            third = m.position();
        }
    }
    // Inside the set, after record 3: the committed position is that of record 4.
    billing.commit_position().unwrap();
    drop(billing);
    let mut billing = log.consumer_named("billing").unwrap();
    assert_eq!(seq_of(billing.poll().unwrap().unwrap().payload()), 4);

    // A given position: a message it has read.
    billing.commit_position_at(third).unwrap();
    let beyond = billing.position() + 4;
    assert!(matches!(
        billing.commit_position_at(beyond),
        Err(Error::InvalidPosition { position, .. }) if position == beyond
    ));
    drop(billing);
    let mut billing = log.consumer_named("billing").unwrap();
    assert_eq!(seq_of(billing.poll().unwrap().unwrap().payload()), 2);

    // An unnamed consumer has nothing to commit to.
    let plain = log.consumer(StartAt::Earliest).unwrap();
    assert!(matches!(plain.commit_position(), Err(Error::NotDurable)));
}

#[test]
fn a_new_name_starts_where_asked_and_an_old_one_ignores_the_start() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &options()).unwrap();
    let mut producer = log.producer().unwrap();
    producer.offer(&message(0)).unwrap();
    let mut late = log.consumer_named_from("late", StartAt::Latest).unwrap();
    assert!(late.poll().unwrap().is_none());
    assert_eq!(log.consumers()[0].lag, 0);
    producer.offer(&message(1)).unwrap();
    assert_eq!(seq_of(late.poll().unwrap().unwrap().payload()), 1);
    drop(late);
    let mut again = log.consumer_named_from("late", StartAt::Earliest).unwrap();
    // Never committed: back where it was made, not at the earliest.
    assert_eq!(seq_of(again.poll().unwrap().unwrap().payload()), 1);

    // A start that is not a message leaves no cursor behind.
    let err = log
        .consumer_named_from("bad", StartAt::Position(3))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidPosition { .. }), "{err}");
    assert!(log.consumers().iter().all(|c| c.name != "bad"));
}

#[test]
fn one_holder_at_a_time_names_are_checked_and_cursors_can_be_removed() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &options()).unwrap();
    let billing = log.consumer_named("billing").unwrap();
    let err = Log::open(dir.path())
        .unwrap()
        .consumer_named("billing")
        .unwrap_err();
    match &err {
        Error::ConsumerInUse { name, pid } => {
            assert_eq!((name.as_str(), *pid), ("billing", std::process::id()))
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("billing"), "{err}");
    assert!(matches!(
        log.remove_consumer("billing"),
        Err(Error::ConsumerInUse { .. })
    ));
    drop(billing);
    assert!(log.remove_consumer("billing").unwrap());
    assert!(!log.remove_consumer("billing").unwrap());
    assert!(log.consumers().is_empty());

    for (name, why) in [
        ("", "empty"),
        ("a-name-that-is-longer-than-32-bytes", "longer than 32"),
        ("nul\0inside", "NUL"),
    ] {
        match log.consumer_named(name) {
            Err(Error::InvalidConsumerName { detail, .. }) => {
                assert!(detail.contains(why), "{name:?}: {detail}")
            }
            other => panic!("{name:?}: {other:?}"),
        }
    }
    let longest = "é".repeat(16);
    assert_eq!(longest.len(), 32);
    drop(log.consumer_named(&longest).unwrap());
    assert_eq!(log.consumers()[0].name, longest);
}

#[test]
fn the_table_holds_256_cursors_and_then_says_so() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &options()).unwrap();
    for i in 0..256 {
        drop(log.consumer_named(&format!("c{i}")).unwrap());
    }
    match log.consumer_named("one-more") {
        Err(Error::NoConsumerSlot { slots: 256 }) => {}
        other => panic!("{other:?}"),
    }
    assert!(log.remove_consumer("c17").unwrap());
    drop(log.consumer_named("one-more").unwrap());
    assert_eq!(log.consumers().len(), 256);
}

#[test]
fn threads_racing_for_one_name_make_one_cursor() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &options()).unwrap();
    let barrier = std::sync::Barrier::new(8);
    let won = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let log = Log::open(dir.path()).unwrap();
                barrier.wait();
                match log.consumer_named("contended") {
                    Ok(consumer) => {
                        won.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        drop(consumer);
                    }
                    Err(Error::ConsumerInUse { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            });
        }
    });
    assert!(won.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert_eq!(log.consumers().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Consumer processes killed and restarted.

#[test]
#[ignore = "child process entry point; run by other tests"]
fn child_entry() {
    let Some(role) = child_role() else {
        return;
    };
    child_init();
    match role.as_str() {
        "billing" => billing_child(),
        "hold" => hold_child(),
        other => panic!("unknown child role {other}"),
    }
}

/// Marks the start of a run in the file of sequence numbers seen.
const RUN_START: u64 = u64::MAX;

/// Reads with the durable cursor "billing" until production is over (the file
/// `LOGBUS_TEST_PRODUCED` exists) and it has read everything: each batch's sequence numbers
/// are appended to the file `LOGBUS_TEST_SEEN` (one `write`) and only then committed, so that
/// a kill at any moment loses no processed message.
fn billing_child() {
    let log = Log::open(env("LOGBUS_TEST_LOG")).expect("open the log");
    let produced = PathBuf::from(env("LOGBUS_TEST_PRODUCED"));
    let mut seen = std::fs::OpenOptions::new()
        .append(true)
        .open(env("LOGBUS_TEST_SEEN"))
        .expect("open the file of messages seen");
    // The previous holder may have been killed a moment ago, or be dying still.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut consumer = loop {
        match log.consumer_named("billing") {
            Ok(consumer) => break consumer,
            Err(Error::ConsumerInUse { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("take the cursor: {e}"),
        }
    };
    seen.write_all(&RUN_START.to_le_bytes()).unwrap();
    let mut bytes = Vec::with_capacity(64 * 8);
    loop {
        bytes.clear();
        let finished = produced.exists();
        consumer
            .wait_batch(64, Some(Duration::from_millis(20)), |m| {
                bytes.extend_from_slice(&seq_of(m.payload()).to_le_bytes());
            })
            .expect("read");
        if !bytes.is_empty() {
            seen.write_all(&bytes).unwrap();
            // Processed but not yet committed: a kill here means reading them again.
            std::thread::sleep(Duration::from_micros(300));
            consumer.commit_position().unwrap();
        } else if finished && consumer.position() == log.tail() {
            return;
        }
    }
}

/// Holds the durable cursor "slow" (never committing) until killed.
fn hold_child() {
    let log = Log::open(env("LOGBUS_TEST_LOG")).expect("open the log");
    let _slow = log.consumer_named("slow").expect("take the cursor");
    std::fs::write(env("LOGBUS_TEST_READY"), b"").unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

fn spawn_child(role: &str, envs: &[(&str, String)]) -> std::process::Child {
    let mut command = common::child_command(role);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in envs {
        command.env(key, value);
    }
    command.spawn().expect("spawn a child")
}

#[test]
fn consumer_processes_killed_and_restarted_with_a_durable_cursor_miss_nothing() {
    const MESSAGES: u64 = 40_000;
    const KILLS: usize = 40;
    let dir = common::tempdir();
    let log_path = dir.path().join("log");
    let seen_path = dir.path().join("seen");
    let produced = dir.path().join("produced");
    std::fs::write(&seen_path, b"").unwrap();
    let log = Log::create(&log_path, &options()).unwrap();
    let envs = [
        ("LOGBUS_TEST_LOG", log_path.display().to_string()),
        ("LOGBUS_TEST_SEEN", seen_path.display().to_string()),
        ("LOGBUS_TEST_PRODUCED", produced.display().to_string()),
    ];

    // Producing goes on while consumers are killed: single messages and message sets.
    let producing = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut producer = log.producer().unwrap();
            let mut seq = 0;
            while seq < MESSAGES {
                if seq % 7 == 0 && seq + 5 <= MESSAGES {
                    let set: Vec<Vec<u8>> = (seq..seq + 5).map(message).collect();
                    producer.offer_batch(&set).unwrap();
                    seq += 5;
                } else {
                    producer.offer(&message(seq)).unwrap();
                    seq += 1;
                }
                if seq % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };

    let mut rng = mix(Instant::now().elapsed().as_nanos() as u64 ^ u64::from(std::process::id()));
    for _ in 0..KILLS {
        let mut child = spawn_child("billing", &envs);
        rng = mix(rng);
        // Some kills come while the child starts or takes the cursor, most while it reads.
        let after = if rng % 4 == 0 {
            rng % 15
        } else {
            20 + rng % 100
        };
        std::thread::sleep(Duration::from_millis(after));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            status.code().is_none() || status.success(),
            "a billing child failed: {status}: {}",
            child_stderr(&mut child)
        );
    }
    producing.join().unwrap();
    std::fs::write(&produced, b"").unwrap();
    let mut last = spawn_child("billing", &envs);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = last.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = last.kill();
            let _ = last.wait();
            panic!(
                "the last billing child did not finish: {}\n{:?}",
                child_stderr(&mut last),
                log.consumers()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}: {}", child_stderr(&mut last));

    // Every run started at or before the first message no run had committed yet, and read
    // on in order without a gap: so every message was seen, some twice.
    let bytes = std::fs::read(&seen_path).unwrap();
    let mut runs: Vec<Vec<u64>> = Vec::new();
    for word in bytes.chunks_exact(8) {
        let value = u64::from_le_bytes(word.try_into().unwrap());
        if value == RUN_START {
            runs.push(Vec::new());
        } else {
            runs.last_mut()
                .expect("a run starts with its mark")
                .push(value);
        }
    }
    let mut next_unseen = 0u64;
    let mut duplicates = 0u64;
    for (i, run) in runs.iter().enumerate() {
        let Some(&first) = run.first() else { continue };
        assert!(
            first <= next_unseen,
            "run {i} started at message {first}, but message {next_unseen} was never seen"
        );
        for pair in run.windows(2) {
            assert_eq!(
                pair[1],
                pair[0] + 1,
                "run {i} skipped or repeated a message"
            );
        }
        let end = run.last().unwrap() + 1;
        duplicates += next_unseen.min(end) - first;
        next_unseen = next_unseen.max(end);
    }
    assert_eq!(next_unseen, MESSAGES, "not every message was seen");
    let cursor = &log.consumers()[0];
    assert_eq!((cursor.lag, cursor.alive), (0, false));
    println!(
        "{} runs ({KILLS} killed), {MESSAGES} messages, {duplicates} read again after a kill",
        runs.len()
    );
}

fn child_stderr(child: &mut std::process::Child) -> String {
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Bounded mode.

fn bounded_log(dir: &Path, max_lag: u64) -> Log {
    Log::create(dir, &options().bounded(max_lag)).unwrap()
}

/// Offers messages until the producer is refused; returns the error and how many went in.
fn offer_until_refused(producer: &mut logbus::Producer, limit: u64) -> (u64, u64, u64) {
    for n in 0..1_000_000u64 {
        match producer.offer(&[1u8; 100]) {
            Ok(_) => {}
            Err(Error::Backpressure { behind, limit: l }) => return (n, behind, l),
            Err(e) => panic!("{e}"),
        }
        assert!(n * 128 < limit * 4, "never refused");
    }
    unreachable!()
}

#[test]
fn a_bounded_log_refuses_producers_while_the_slowest_live_durable_consumer_is_behind() {
    const LIMIT: u64 = 256 * 1024;
    let dir = common::tempdir();
    let log = bounded_log(dir.path(), LIMIT);
    assert_eq!(log.options().get_bounded(), Some(LIMIT));
    let mut slow = log.consumer_named("slow").unwrap();
    let start = slow.position();
    let mut producer = log.producer().unwrap();
    let (accepted, behind, limit) = offer_until_refused(&mut producer, LIMIT);
    assert_eq!(limit, LIMIT);
    assert!(behind > LIMIT, "{behind}");
    // The tail passed the bound by one message at most (one producer).
    assert!(log.tail() - start <= LIMIT + 128, "{}", log.tail() - start);
    assert!(accepted * 128 >= LIMIT - 128);
    // Refused again and again, and nothing is claimed meanwhile.
    let tail = log.tail();
    for _ in 0..100 {
        assert!(matches!(
            producer.claim(10),
            Err(Error::Backpressure { .. })
        ));
        assert!(matches!(
            producer.batch(100),
            Err(Error::Backpressure { .. })
        ));
    }
    assert_eq!(log.tail(), tail);
    let err = producer.offer(b"x").unwrap_err();
    assert!(err.to_string().contains("back-pressure"), "{err}");

    // Reading without committing does not help; committing does.
    let mut read = 0;
    while read < accepted / 2 {
        read += slow.poll_batch(1000, |_| {}).unwrap() as u64;
    }
    assert!(producer.offer(b"x").is_err());
    slow.commit_position().unwrap();
    producer.offer(b"x").unwrap();

    // A fast consumer that commits keeps the log open: no refusal over many bounds' worth.
    let mut fast = log.consumer_named("fast").unwrap();
    drop(slow); // no longer held: holds nobody back
    for i in 0..50_000u64 {
        loop {
            match producer.offer(&i.to_le_bytes()) {
                Ok(_) => break,
                Err(Error::Backpressure { .. }) => {
                    fast.poll_batch(usize::MAX, |_| {}).unwrap();
                    fast.commit_position().unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(log.tail() > 4 * LIMIT);
    let lags: BTreeMap<String, u64> = log
        .consumers()
        .into_iter()
        .map(|c| (c.name, c.lag))
        .collect();
    assert!(lags["slow"] > LIMIT, "{lags:?}");
    assert!(lags["fast"] <= LIMIT + 128, "{lags:?}");
}

#[test]
fn a_dead_holder_or_an_unbounded_log_holds_nobody_back() {
    const LIMIT: u64 = 128 * 1024;
    let dir = common::tempdir();
    let log_path = dir.path().join("log");
    let log = bounded_log(&log_path, LIMIT);
    let ready = dir.path().join("ready");
    let mut child = spawn_child(
        "hold",
        &[
            ("LOGBUS_TEST_LOG", log_path.display().to_string()),
            ("LOGBUS_TEST_READY", ready.display().to_string()),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "{}", child_stderr(&mut child));
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut producer = log.producer().unwrap();
    offer_until_refused(&mut producer, LIMIT);
    assert!(log.consumers()[0].alive);
    child.kill().unwrap();
    child.wait().unwrap();
    // The holder is dead: its cursor still exists (and still holds retention), but it is
    // not a live consumer, and producing goes on.
    assert!(!log.consumers()[0].alive);
    for _ in 0..10_000 {
        producer.offer(&[2u8; 100]).unwrap();
    }
    assert!(log.consumers()[0].lag > 4 * LIMIT);

    // Without the option, a durable consumer never holds producers back.
    let free = Log::create(dir.path().join("free"), &options()).unwrap();
    let _slow = free.consumer_named("slow").unwrap();
    let mut producer = free.producer().unwrap();
    for _ in 0..20_000 {
        producer.offer(&[3u8; 100]).unwrap();
    }
}

#[test]
fn bounded_producers_in_threads_stay_within_one_message_each_of_the_bound() {
    const LIMIT: u64 = 512 * 1024;
    let dir = common::tempdir();
    let log = bounded_log(dir.path(), LIMIT);
    let slow = log.consumer_named("slow").unwrap();
    let start = slow.position();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let mut producer = log.producer().unwrap();
                offer_until_refused(&mut producer, LIMIT);
            });
        }
    });
    let over = (log.tail() - start).saturating_sub(LIMIT);
    assert!(over <= 4 * 128, "the tail passed the bound by {over} bytes");
}
