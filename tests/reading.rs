//! The ways of reading agree: `poll_batch` in pieces of any size, mixed with single `poll`s,
//! hands out exactly the messages `poll` does, one by one, with the same positions, bytes and
//! header fields, across single messages, message sets of every size and segment ends. And the
//! record check every consumer runs over a set before its first record agrees with the
//! record-by-record walk that `dump` and the bridge use.

mod common;

use logbus::format::{check_records, records};
use logbus::{Log, LogOptions, StartAt};
use proptest::prelude::*;

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

/// Writes `shape` into a fresh log of 64 KiB segments: each entry is a single message (0) or
/// a message set of that many records, of lengths derived from their number (below 100 bytes,
/// so that a set of 63 fits the largest frame, an eighth of a segment).
fn write(dir: &std::path::Path, shape: &[usize]) -> Log {
    let log = Log::create(dir, &LogOptions::new().segment_capacity(1 << 16)).unwrap();
    let mut producer = log.producer().unwrap();
    let mut n = 0usize;
    let mut next = || {
        n += 1;
        vec![(n % 251) as u8; n * 7 % 100]
    };
    for &records in shape {
        if records == 0 {
            producer.offer(&next()).unwrap();
        } else {
            let set: Vec<Vec<u8>> = (0..records).map(|_| next()).collect();
            producer.offer_batch(&set).unwrap();
        }
    }
    log
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn poll_batch_in_any_pieces_hands_out_what_poll_does(
        shape in proptest::collection::vec(0usize..64, 1..120),
        pieces in proptest::collection::vec(0usize..100, 1..40),
    ) {
        let dir = common::tempdir();
        let log = write(dir.path(), &shape);

        let mut one_by_one = Vec::new();
        let mut consumer = log.consumer(StartAt::Earliest).unwrap();
        while let Some(m) = consumer.poll().unwrap() {
            one_by_one.push(seen(m));
        }
        let expected: usize = shape.iter().map(|&records| records.max(1)).sum();
        prop_assert_eq!(one_by_one.len(), expected);

        // A piece of 0 is one `poll`; any other, a `poll_batch` of at most that many.
        let mut in_pieces = Vec::new();
        let mut consumer = log.consumer(StartAt::Earliest).unwrap();
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
            let next = one_by_one.get(in_pieces.len()).map_or(log.tail(), |m| m.position);
            let last = in_pieces.last().map_or(0, |m: &Seen| m.position + 1);
            prop_assert!((last..=next).contains(&consumer.position()));
        }
        prop_assert_eq!(in_pieces, one_by_one);
    }

    #[test]
    fn the_set_check_agrees_with_the_record_walk(
        lens in proptest::collection::vec(0u32..20, 0..8),
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 0..6),
    ) {
        // Whole records, then cut anywhere and followed by stray bytes: most end inside a
        // record or its length, some end whole.
        let mut payload = Vec::new();
        for len in lens {
            while payload.len() % 4 != 0 {
                payload.push(0);
            }
            payload.extend_from_slice(&len.to_le_bytes());
            payload.extend(std::iter::repeat_n(7u8, len as usize));
        }
        payload.truncate(cut.index(payload.len() + 1));
        payload.extend_from_slice(&extra);

        let walked_whole = records(&payload).all(|record| record.is_ok());
        let checked = check_records(&payload);
        prop_assert_eq!(checked.is_ok(), walked_whole);
        if let Err(detail) = checked {
            let first = records(&payload).find_map(|record| record.err()).unwrap();
            prop_assert_eq!(detail, first);
        }
    }
}
