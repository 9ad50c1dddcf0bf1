//! The ways of reading agree: `poll_batch` in pieces of any size, mixed with single `poll`s,
//! hands out exactly the messages that were written, in order, with the positions, header
//! fields and bytes that `wait` (which takes none of the fast paths) gives them; across single
//! messages, message sets of every size, aborted claims, segment ends and starts part-way
//! into a set, with checksums verified or not. A handler that panics is not handed its message
//! again. And the record check every consumer runs over a set before its first record agrees
//! with the record-by-record walk that `dump` and the bridge use.

mod common;

use logbus::format::{check_records, records};
use logbus::{Log, LogOptions, StartAt};
use proptest::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

/// What a reader can observe of one message.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    position: u64,
    payload: Vec<u8>,
    producer: u16,
    timestamp_ns: Option<u64>,
}

fn seen(m: logbus::Message<'_>) -> Seen {
    Seen {
        position: m.position(),
        payload: m.payload().to_vec(),
        producer: m.producer(),
        timestamp_ns: m.timestamp_ns(),
    }
}

/// An entry of [`write`]'s shape that aborts a claim (readers skip it as padding) instead of
/// writing a message or a set.
const ABORTED: usize = 64;

/// Writes `shape` into a fresh log of 64 KiB segments and returns what it wrote, in order:
/// each entry is a single message (0), a message set of that many records, or an aborted
/// claim ([`ABORTED`]). Lengths derive from the message's number and stay below 100 bytes, so
/// that a set of 63 fits the largest frame, an eighth of a segment.
fn write(dir: &std::path::Path, shape: &[usize]) -> (Log, Vec<Vec<u8>>) {
    let log = Log::create(dir, &LogOptions::new().segment_capacity(1 << 16)).unwrap();
    let mut producer = log.producer().unwrap();
    let mut written = Vec::new();
    let next = |written: &mut Vec<Vec<u8>>| {
        let n = written.len() + 1;
        let message = vec![(n % 251) as u8; n * 7 % 100];
        written.push(message.clone());
        message
    };
    for &records in shape {
        match records {
            0 => {
                producer.offer(&next(&mut written)).unwrap();
            }
            ABORTED => drop(producer.claim(40).unwrap()),
            _ => {
                let set: Vec<Vec<u8>> = (0..records).map(|_| next(&mut written)).collect();
                producer.offer_batch(&set).unwrap();
            }
        }
    }
    (log, written)
}

/// Every message from `start` on, read with `wait`, which goes through none of the fast paths.
fn read_slowly(log: &Log, start: StartAt, verify: bool) -> Vec<Seen> {
    let mut consumer = log.consumer(start).unwrap();
    consumer.verify_checksums(verify);
    let mut all = Vec::new();
    while let Some(m) = consumer.wait(Some(Duration::ZERO)).unwrap() {
        all.push(seen(m));
    }
    all
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn poll_batch_in_any_pieces_hands_out_what_was_written(
        shape in proptest::collection::vec(0usize..=ABORTED, 1..120),
        pieces in proptest::collection::vec(0usize..100, 1..40),
        start in any::<prop::sample::Index>(),
        verify in any::<bool>(),
    ) {
        let dir = common::tempdir();
        let (log, written) = write(dir.path(), &shape);
        let all = read_slowly(&log, StartAt::Earliest, verify);
        let payloads: Vec<&Vec<u8>> = all.iter().map(|m| &m.payload).collect();
        prop_assert_eq!(payloads, written.iter().collect::<Vec<_>>());

        // Every claim aborted (or every set empty): nothing to start from.
        if all.is_empty() {
            return Ok(());
        }
        // From any message on: the first, one inside a set, or any other.
        let skip = start.index(all.len());
        let expected = &all[skip..];
        prop_assert_eq!(read_slowly(&log, StartAt::Position(all[skip].position), verify), expected);

        // A piece of 0 is one `poll`; any other, a `poll_batch` of at most that many.
        let mut in_pieces = Vec::new();
        let mut consumer = log.consumer(StartAt::Position(all[skip].position)).unwrap();
        consumer.verify_checksums(verify);
        for &piece in pieces.iter().cycle() {
            if piece == 0 {
                match consumer.poll().unwrap() {
                    Some(m) => in_pieces.push(seen(m)),
                    None => break,
                }
            } else {
                let got = consumer.poll_batch(piece, |m| in_pieces.push(seen(m))).unwrap();
                prop_assert!(got <= piece);
                if got == 0 {
                    break;
                }
            }
            // Between two messages (before any padding the next poll will move over).
            let next = expected.get(in_pieces.len()).map_or(log.tail(), |m| m.position);
            let last = in_pieces.last().map_or(0, |m: &Seen| m.position + 1);
            prop_assert!((last..=next).contains(&consumer.position()));
        }
        prop_assert_eq!(&in_pieces[..], expected);
    }

    #[test]
    fn the_set_check_agrees_with_the_record_walk(
        lens in proptest::collection::vec(0u32..20, 0..8),
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 0..6),
    ) {
        // Whole records, then cut anywhere and followed by stray bytes: most end inside a
        // record or its length, some end whole.
        let mut payload = set_payload(&lens);
        payload.truncate(cut.index(payload.len() + 1));
        payload.extend_from_slice(&extra);

        let walked_whole = records(&payload).all(|record| record.is_ok());
        prop_assert_eq!(check_records(&payload).is_ok(), walked_whole);
    }

    #[test]
    fn the_set_check_agrees_with_the_record_walk_on_records_of_one_length(
        len in 0u32..20,
        count in 1usize..10,
        odd_one in any::<prop::sample::Index>(),
        odd_len in prop::option::of(0u32..24),
        cut in prop::option::of(any::<prop::sample::Index>()),
        extra in proptest::collection::vec(any::<u8>(), 0..6),
    ) {
        // The sets `check_records` takes without a walk, whole, and then with one record of
        // another length, cut short, or followed by stray bytes.
        let mut lens = vec![len; count];
        if let Some(odd_len) = odd_len {
            lens[odd_one.index(count)] = odd_len;
        }
        let mut payload = set_payload(&lens);
        if let Some(cut) = cut {
            payload.truncate(cut.index(payload.len() + 1));
        }
        payload.extend_from_slice(&extra);

        let walked_whole = records(&payload).all(|record| record.is_ok());
        prop_assert_eq!(check_records(&payload).is_ok(), walked_whole);
    }
}

/// The payload of a message set with records of these lengths.
fn set_payload(lens: &[u32]) -> Vec<u8> {
    let mut payload = Vec::new();
    for &len in lens {
        while payload.len() % 4 != 0 {
            payload.push(0);
        }
        payload.extend_from_slice(&len.to_le_bytes());
        payload.extend(std::iter::repeat_n(7u8, len as usize));
    }
    payload
}

#[test]
fn a_handler_that_panics_is_not_handed_its_message_again() {
    let dir = common::tempdir();
    // Single messages, then one set of 10 records.
    let mut shape = vec![0; 10];
    shape.push(10);
    let (log, written) = write(dir.path(), &shape);
    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    let mut handed = Vec::new();
    // A handler that fails on every third message it is handed, in either kind of run. A
    // consumer that handed a message out again would never get to the end: give up after as
    // many calls as there are messages.
    for _ in 0..written.len() {
        let mut count = 0;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            consumer.poll_batch(usize::MAX, |m| {
                handed.push(m.payload().to_vec());
                count += 1;
                if count == 3 {
                    panic!("the handler fails");
                }
            })
        }));
        if let Ok(read) = outcome {
            if read.unwrap() == 0 {
                break;
            }
        }
    }
    assert_eq!(handed, written, "each message handed out once, in order");
}

/// A trailing consumer (`Consumer::set_trail`) leaves the newest bytes of a log that is being
/// written for a later poll, and reads them once the producer pauses: every message, in
/// order. `wait_batch` ignores the trail.
#[test]
fn a_trailing_consumer_holds_back_only_the_newest_bytes_and_then_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(1 << 20)).unwrap();
    let mut producer = log.producer().unwrap();
    let mut trailing = log.consumer(StartAt::Earliest).unwrap();
    trailing.set_trail(4096);
    let mut waiting = log.consumer(StartAt::Earliest).unwrap();
    waiting.set_trail(4096);
    let written: Vec<u32> = (0..1000).collect();
    for i in &written {
        producer.offer(&i.to_le_bytes()).unwrap();
    }
    let hold_at = log.tail() - 4096;

    let mut got = Vec::new();
    let mut last_position = 0;
    let first = trailing
        .poll_batch(usize::MAX, |m| {
            got.push(u32::from_le_bytes(m.payload().try_into().unwrap()));
            last_position = m.position();
        })
        .unwrap();
    assert!(first > 0 && first < written.len(), "{first} at first");
    assert!(
        last_position < hold_at,
        "{last_position} read, hold at {hold_at}"
    );
    assert!(
        trailing.position() >= hold_at,
        "stopped at {}",
        trailing.position()
    );

    // The producer has paused: the rest comes within a few polls.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let read_rest = |consumer: &mut logbus::Consumer, got: &mut Vec<u32>, len: usize| {
        while got.len() < len {
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {len}",
                got.len()
            );
            consumer
                .poll_batch(usize::MAX, |m| {
                    got.push(u32::from_le_bytes(m.payload().try_into().unwrap()))
                })
                .unwrap();
        }
    };
    read_rest(&mut trailing, &mut got, written.len());
    assert_eq!(got, written);
    producer.offer(&1000u32.to_le_bytes()).unwrap();
    read_rest(&mut trailing, &mut got, written.len() + 1);
    assert_eq!(got.last(), Some(&1000));

    let all = waiting
        .wait_batch(usize::MAX, Some(Duration::from_secs(1)), |_| {})
        .unwrap();
    assert_eq!(all, written.len() + 1);
}
