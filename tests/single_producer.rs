//! Single-producer logs (`LogOptions::single_producer`): one exclusive producer at a time,
//! and recycled segments zeroed only in their first frame word, the producer keeping the word
//! at the tail zero itself. Old bytes then lie ahead of every claim; no consumer may ever take
//! them for a message, not even after the producer is killed in the middle of one, and none
//! stay in the alignment after a payload or a set's record.

mod common;

use logbus::{Error, Log, LogOptions, StartAt};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const SEGMENT: u64 = 1 << 16;
/// The byte the filler messages are made of: what old bytes ahead of the tail look like.
const OLD: u8 = 0xEE;

/// The bytes of the segment file that holds `position`, from `position` to the segment end.
fn file_bytes_from(dir: &Path, position: u64) -> Vec<u8> {
    let base = position - position % SEGMENT;
    let file = std::fs::read(common::segment_path(dir, base)).unwrap();
    let header = logbus::format::SEGMENT_HEADER_LEN as usize;
    file[header + (position - base) as usize..].to_vec()
}

#[test]
fn frames_written_over_old_bytes_keep_none_in_their_alignment() {
    let Some(root) = common::tmpfs_tempdir() else {
        return;
    };
    let dir = root.path().join("log");
    let options = LogOptions::new()
        .segment_capacity(SEGMENT)
        .retain_segments(3)
        .single_producer(true);
    let log = Log::create(&dir, &options).unwrap();
    let mut producer = log.producer().unwrap();
    // Fill segments with messages made of OLD until the tail's segment is a recycled one,
    // which shows its old bytes past the tail: it was not zeroed in whole.
    let filler = vec![OLD; 1000];
    let mut segments_filled = 0;
    loop {
        let segment = log.tail() / SEGMENT;
        // Not stopping at a segment end: the next segment may not be made yet.
        while log.tail() / SEGMENT == segment || log.tail() % SEGMENT == 0 {
            producer.offer(&filler).unwrap();
        }
        segments_filled += 1;
        if file_bytes_from(&dir, log.tail()).contains(&OLD) {
            break;
        }
        assert!(
            segments_filled < 40,
            "no segment after {segments_filled} showed old bytes past the tail: recycled \
             segments are zeroed in whole, or never recycled"
        );
    }
    let start = log.tail();

    let mut claim = producer.claim(13).unwrap();
    claim.copy_from_slice(b"claimed room!");
    let claimed_at = claim.commit().unwrap();

    let mut batch = producer.batch(logbus::Batch::bytes_needed([5, 6])).unwrap();
    for (len, text) in [(5, &b"first"[..]), (6, &b"second"[..])] {
        batch
            .push_with(len, |room| room.copy_from_slice(text))
            .unwrap();
    }
    let set_at = batch.commit().unwrap();
    // Records: length 5 at 0, bytes 4..9, alignment 9..12; length 6 at 12, bytes 16..22,
    // then the frame's alignment 22..24 (24 + 22 bytes, aligned to 48).
    let set = file_bytes_from(&dir, set_at);
    assert_eq!(
        &set[24..48],
        b"\x05\0\0\0first\0\0\0\x06\0\0\0second\0\0",
        "the set at {set_at} keeps old bytes between or after its records"
    );
    // One 8-byte record: 12 bytes, then the frame's alignment 12..16.
    let mut batch = producer.batch(logbus::Batch::bytes_needed([8])).unwrap();
    batch.push(b"eight by").unwrap();
    let short_set_at = batch.commit().unwrap();
    let set = file_bytes_from(&dir, short_set_at);
    assert_eq!(
        &set[24..40],
        b"\x08\0\0\0eight by\0\0\0\0",
        "the set at {short_set_at} keeps old bytes after its record"
    );
    // A set given more room than it used: the rest becomes padding over the old bytes.
    let mut roomy = producer.batch(400).unwrap();
    roomy.push(b"roomy").unwrap();
    roomy.commit().unwrap();

    // 24-byte header + 13 bytes: the frame's last 3 bytes are alignment.
    let offered_at = producer.offer(b"offered bytes").unwrap();
    for frame_at in [claimed_at, offered_at] {
        let frame = file_bytes_from(&dir, frame_at);
        assert_eq!(
            &frame[24 + 13..40],
            &[0, 0, 0],
            "the frame at {frame_at} keeps old bytes after its payload"
        );
    }

    let mut consumer = log.consumer(StartAt::Position(start)).unwrap();
    let mut seen = Vec::new();
    consumer
        .poll_batch(100, |m| seen.push(m.payload().to_vec()))
        .unwrap();
    assert_eq!(
        seen,
        [
            &b"claimed room!"[..],
            b"first",
            b"second",
            b"eight by",
            b"roomy",
            b"offered bytes"
        ]
    );
    assert_eq!(consumer.position(), log.tail());
    let report = log.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[test]
fn a_single_producer_log_keeps_its_option_and_admits_one_producer_at_a_time() {
    let dir = common::tempdir();
    let options = LogOptions::new().single_producer(true);
    let log = Log::create(dir.path().join("log"), &options).unwrap();
    let first = log.exclusive_producer().unwrap();
    assert!(matches!(
        log.producer(),
        Err(Error::ExclusiveProducer { .. })
    ));
    drop(first);
    let reopened = Log::open(dir.path().join("log")).unwrap();
    assert!(reopened.options().get_single_producer());
    // `producer` makes the exclusive kind here, which holds the log to itself.
    let _only = reopened.producer().unwrap();
    assert!(matches!(
        log.exclusive_producer(),
        Err(Error::ExclusiveProducer { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Producers killed in a recycling single-producer log.

/// Producer generations killed, one after another.
const KILLS: usize = 40;
/// What a consumer may wait at a dead producer's claim, at the most (loose: a shared machine,
/// debug builds).
const STALL_BOUND: Duration = Duration::from_secs(10);

#[test]
#[ignore = "child process entry point; run by other tests"]
fn child_entry() {
    let Some(role) = common::child_role() else {
        return;
    };
    common::child_init();
    assert_eq!(role, "append");
    let generation: u32 = common::env_parse("LOGBUS_TEST_ID");
    let log = Log::open(common::env("LOGBUS_TEST_LOG")).unwrap();
    let progress = common::map_progress(&common::env("LOGBUS_TEST_PROGRESS"), None);
    // The generation before was killed and reaped: its process is gone, so the log is free.
    let mut producer = log
        .producer()
        .expect("the log is free once its producer died");
    let mut buf = vec![0u8; MAX_LEN];
    let mut seq = 0u64;
    let mut turn = 0u64;
    // Bounded mode refuses claims while the consumer is behind: wait and retry.
    let retry = |result: logbus::Result<u64>| match result {
        Err(Error::Backpressure { .. }) => {
            std::thread::yield_now();
            false
        }
        other => {
            other.unwrap();
            true
        }
    };
    loop {
        turn += 1;
        let len = fill(&mut buf, generation, seq);
        let buf = &buf[..len];
        let sent = match turn % 4 {
            0 => retry(producer.offer(buf)),
            1 => retry(producer.claim(len).and_then(|mut claim| {
                claim.copy_from_slice(buf);
                claim.commit()
            })),
            2 => retry(producer.offer_batch(&[buf])),
            _ => {
                // A claim dropped uncommitted, holding the next message: it becomes padding
                // over whatever bytes were there, and must never be delivered.
                match producer.claim(len) {
                    Ok(mut claim) => claim.copy_from_slice(buf),
                    Err(Error::Backpressure { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
                false
            }
        };
        if sent {
            seq += 1;
            // Only now has the call returned success: this message must be delivered.
            common::progress_counter(&progress, generation.into()).store(seq, Ordering::Release);
        }
    }
}

const MAX_LEN: usize = 12 + 300;

/// Writes message `seq` of producer generation `generation` into `buf` and returns its
/// length: both numbers, then bytes made from them; 12 to 311 bytes, most not a multiple of 8.
fn fill(buf: &mut [u8], generation: u32, seq: u64) -> usize {
    let mixed = common::mix(u64::from(generation) << 40 ^ seq);
    let len = 12 + (mixed % 300) as usize;
    buf[..4].copy_from_slice(&generation.to_le_bytes());
    buf[4..12].copy_from_slice(&seq.to_le_bytes());
    for (i, byte) in buf[12..len].iter_mut().enumerate() {
        *byte = (mixed >> (i % 7 * 8)) as u8 ^ i as u8;
    }
    len
}

#[test]
fn producers_killed_in_a_recycling_single_producer_log_leave_only_whole_messages() {
    let Some(root) = common::tmpfs_tempdir() else {
        return;
    };
    let dir = root.path().join("log");
    // Bounded two segments short of retention, so that the producer waits for the durable
    // consumer below instead of losing messages to retention, and recycles.
    let options = LogOptions::new()
        .segment_capacity(SEGMENT)
        .retain_segments(4)
        .bounded(2 * SEGMENT)
        .single_producer(true);
    let log = Log::create(&dir, &options).unwrap();
    let progress_path = root.path().join("progress");
    let progress = common::map_progress(&progress_path.display().to_string(), Some(KILLS));
    let mut consumer = log.consumer_named("checker").unwrap();
    consumer.verify_checksums(true);
    // Messages delivered of each generation; generations follow one another in the log.
    let mut next = vec![0u64; KILLS];
    let mut inodes = HashMap::new();
    let mut read = |consumer: &mut logbus::Consumer| -> usize {
        let mut failure = None;
        let mut expected = vec![0u8; MAX_LEN];
        let n = consumer
            .poll_batch(1000, |m| {
                let payload = m.payload();
                let generation = payload
                    .get(..4)
                    .map_or(u32::MAX, |tag| u32::from_le_bytes(tag.try_into().unwrap()));
                let Some(due) = next.get_mut(generation as usize) else {
                    failure.get_or_insert(format!(
                        "at {}: not a message: {payload:02x?}",
                        m.position()
                    ));
                    return;
                };
                let len = fill(&mut expected, generation, *due);
                if payload != &expected[..len] && failure.is_none() {
                    failure = Some(format!(
                        "at {}: generation {generation}'s message {due} is {payload:02x?}",
                        m.position()
                    ));
                }
                *due += 1;
            })
            .unwrap_or_else(|e| panic!("poll_batch at {}: {e}", consumer.position()));
        if let Some(failure) = failure {
            panic!("{failure}");
        }
        consumer.commit_position().unwrap();
        n
    };

    let mut rng = common::mix(0x5eed ^ u64::from(std::process::id()));
    for generation in 0..KILLS {
        let mut child: Child = common::child_command("append")
            .env("LOGBUS_TEST_ID", generation.to_string())
            .env("LOGBUS_TEST_LOG", dir.display().to_string())
            .env("LOGBUS_TEST_PROGRESS", progress_path.display().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // Let it write for a random moment (2-20 ms after it got going), reading meanwhile.
        let started = Instant::now();
        while common::progress_counter(&progress, generation as u64).load(Ordering::Acquire) == 0 {
            read(&mut consumer);
            if let Some(status) = child.try_wait().unwrap() {
                panic!("producer {generation} exited by itself ({status})");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "producer {generation} never wrote"
            );
        }
        rng = common::mix(rng);
        let until = Instant::now() + Duration::from_micros(2000 + rng % 18_000);
        while Instant::now() < until {
            read(&mut consumer);
            common::note_inodes(&dir, &mut inodes);
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "producer {generation} exited by itself ({status})"
        );
    }
    // Everything is dead: the consumer must get to the tail, padding the dead claims.
    let mut last_move = (consumer.position(), Instant::now());
    while consumer.position() < log.tail() {
        read(&mut consumer);
        if consumer.position() != last_move.0 {
            last_move = (consumer.position(), Instant::now());
        }
        assert!(
            last_move.1.elapsed() < STALL_BOUND,
            "the consumer stays at {} with the tail at {}",
            consumer.position(),
            log.tail()
        );
    }
    for generation in 0..KILLS as u32 {
        let succeeded =
            common::progress_counter(&progress, generation.into()).load(Ordering::Acquire);
        let delivered = next[generation as usize];
        // The call the kill interrupted may have committed its message unrecorded.
        assert!(
            delivered >= succeeded && delivered <= succeeded + 1,
            "producer {generation}: {succeeded} messages returned success, {delivered} delivered"
        );
    }
    let recycled = common::recycled(&inodes);
    assert!(
        recycled.len() >= 5,
        "only {} of {} segments were seen to be recycled files: the test did not run over \
         old bytes",
        recycled.len(),
        log.tail() / SEGMENT
    );
    let report = log.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    println!(
        "{KILLS} producers killed; {} messages delivered intact; {} recycled segments seen of {}",
        next.iter().sum::<u64>(),
        recycled.len(),
        log.tail() / SEGMENT
    );
}
