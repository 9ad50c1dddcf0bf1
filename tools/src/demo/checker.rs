//! The demo consumer's verification: every message of every producer exactly once, in the
//! order it was sent, with the right size and the right bytes.
//!
//! A [`Checker`] is fed the messages in the order the consumer reads them. For each producer
//! it keeps the sequence numbers seen (one bit each) and one past the highest, so it can tell
//! a gap (a message skipped), a duplicate (seen before), and a reordering (a message that
//! arrives after a later one of the same producer) apart; [`Checker::finish`] then counts the
//! messages that never came.

use super::message::{self, HEADER_LEN};
use crate::units::{self, thousands};
use std::fmt;

/// How many problems are kept, with their positions, for the report; more are only counted.
pub const KEPT_PROBLEMS: usize = 10;

/// What is wrong with one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// Too short to hold a producer id and sequence number.
    TooShort {
        /// Its length.
        len: usize,
    },
    /// A producer id that no producer of this run has.
    UnknownProducer {
        /// The id found.
        producer: u64,
    },
    /// A sequence number the producer never sends.
    SequenceOutOfRange {
        /// The producer id.
        producer: u64,
        /// The sequence number found.
        sequence: u64,
        /// How many messages this producer sends.
        count: u64,
    },
    /// A message seen before.
    Duplicate {
        /// The producer id.
        producer: u64,
        /// Its sequence number.
        sequence: u64,
    },
    /// A message that came after a later message of the same producer.
    Reordered {
        /// The producer id.
        producer: u64,
        /// Its sequence number.
        sequence: u64,
        /// The highest sequence number seen before it.
        after: u64,
    },
    /// Messages skipped: `got` came when `expected` was due.
    Gap {
        /// The producer id.
        producer: u64,
        /// The sequence number that was due.
        expected: u64,
        /// The one that came.
        got: u64,
    },
    /// The right producer and sequence, but the wrong length.
    WrongSize {
        /// The producer id.
        producer: u64,
        /// Its sequence number.
        sequence: u64,
        /// Its length.
        len: usize,
        /// The length sent.
        expected: usize,
    },
    /// The right producer, sequence and length, but other bytes than were sent.
    BadContent {
        /// The producer id.
        producer: u64,
        /// Its sequence number.
        sequence: u64,
        /// Offset of the first wrong byte in the payload.
        offset: usize,
    },
}

/// One problem: what, and where in the stream it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The message's index in the order read (0 = first message read).
    pub index: u64,
    /// The message's log position.
    pub position: u64,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "message #{} at position {}: ", self.index, self.position)?;
        match &self.kind {
            ProblemKind::TooShort { len } => write!(
                f,
                "{len} bytes, too short for a producer id and sequence number ({HEADER_LEN})"
            ),
            ProblemKind::UnknownProducer { producer } => {
                write!(f, "unknown producer id {producer}")
            }
            ProblemKind::SequenceOutOfRange {
                producer,
                sequence,
                count,
            } => write!(
                f,
                "producer {producer} sequence {sequence}, but it sends only 0..{count}"
            ),
            ProblemKind::Duplicate { producer, sequence } => {
                write!(
                    f,
                    "producer {producer} sequence {sequence} again (a duplicate)"
                )
            }
            ProblemKind::Reordered {
                producer,
                sequence,
                after,
            } => write!(
                f,
                "producer {producer} sequence {sequence} after sequence {after} (out of order)"
            ),
            ProblemKind::Gap {
                producer,
                expected,
                got,
            } => write!(
                f,
                "producer {producer} sequence {got} where {expected} was due ({} skipped)",
                got - expected
            ),
            ProblemKind::WrongSize {
                producer,
                sequence,
                len,
                expected,
            } => write!(
                f,
                "producer {producer} sequence {sequence} has {len} bytes, {expected} were sent"
            ),
            ProblemKind::BadContent {
                producer,
                sequence,
                offset,
            } => write!(
                f,
                "producer {producer} sequence {sequence}: wrong byte at offset {offset}"
            ),
        }
    }
}

/// What one producer's messages came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerSummary {
    /// Messages it sends.
    pub expected: u64,
    /// Messages that named it (duplicates included).
    pub received: u64,
    /// Distinct sequence numbers in `0..expected` that never came.
    pub missing: u64,
    /// The lowest of those.
    pub first_missing: Option<u64>,
}

/// The verdict on a whole stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Messages read.
    pub received: u64,
    /// Per producer id.
    pub producers: Vec<ProducerSummary>,
    /// Problems found in messages that came (not counting missing ones).
    pub problem_count: u64,
    /// The first [`KEPT_PROBLEMS`] of them.
    pub problems: Vec<Problem>,
}

impl Summary {
    /// Messages that never came, over all producers.
    pub fn missing(&self) -> u64 {
        self.producers.iter().map(|p| p.missing).sum()
    }

    /// One line per producer with messages missing: "producer 1: 3 messages never
    /// arrived (the first is sequence 17)".
    pub fn missing_lines(&self) -> Vec<String> {
        self.producers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.missing > 0)
            .map(|(id, p)| {
                format!(
                    "producer {id}: {} of {} never arrived (the first is sequence {})",
                    units::count(p.missing, "message"),
                    thousands(p.expected),
                    p.first_missing.unwrap_or(0)
                )
            })
            .collect()
    }
}

struct Track {
    expected: u64,
    received: u64,
    /// One bit per sequence number in `0..expected`.
    seen: Vec<u64>,
    /// One past the highest sequence number seen.
    next: u64,
}

/// Checks a stream of demo messages; see the module documentation.
pub struct Checker {
    size: usize,
    tracks: Vec<Track>,
    received: u64,
    problem_count: u64,
    problems: Vec<Problem>,
    filler: Vec<u8>,
}

impl Checker {
    /// A checker for messages of `size` bytes from producers `0..counts.len()`, producer `p`
    /// sending sequence numbers `0..counts[p]`.
    pub fn new(size: usize, counts: &[u64]) -> Checker {
        Checker {
            size,
            tracks: counts
                .iter()
                .map(|&expected| Track {
                    expected,
                    received: 0,
                    seen: vec![0; expected.div_ceil(64) as usize],
                    next: 0,
                })
                .collect(),
            received: 0,
            problem_count: 0,
            problems: Vec::new(),
            filler: vec![0; size.saturating_sub(HEADER_LEN)],
        }
    }

    /// Checks the next message read, found at log `position`.
    #[inline]
    pub fn check(&mut self, position: u64, payload: &[u8]) {
        let index = self.received;
        self.received += 1;
        if let Some(kind) = self.classify(payload) {
            self.problem_count += 1;
            if self.problems.len() < KEPT_PROBLEMS {
                self.problems.push(Problem {
                    index,
                    position,
                    kind,
                });
            }
        }
    }

    #[inline]
    fn classify(&mut self, payload: &[u8]) -> Option<ProblemKind> {
        let Some((producer, sequence)) = message::parse(payload) else {
            return Some(ProblemKind::TooShort { len: payload.len() });
        };
        let Some(track) = self.tracks.get_mut(producer as usize) else {
            return Some(ProblemKind::UnknownProducer { producer });
        };
        track.received += 1;
        if sequence >= track.expected {
            return Some(ProblemKind::SequenceOutOfRange {
                producer,
                sequence,
                count: track.expected,
            });
        }
        let (word, bit) = ((sequence / 64) as usize, 1u64 << (sequence % 64));
        if track.seen[word] & bit != 0 {
            return Some(ProblemKind::Duplicate { producer, sequence });
        }
        track.seen[word] |= bit;
        let order = if sequence < track.next {
            Some(ProblemKind::Reordered {
                producer,
                sequence,
                after: track.next - 1,
            })
        } else if sequence > track.next {
            Some(ProblemKind::Gap {
                producer,
                expected: track.next,
                got: sequence,
            })
        } else {
            None
        };
        track.next = track.next.max(sequence + 1);
        if order.is_some() {
            return order;
        }
        if payload.len() != self.size {
            return Some(ProblemKind::WrongSize {
                producer,
                sequence,
                len: payload.len(),
                expected: self.size,
            });
        }
        message::fill_filler(&mut self.filler, producer, sequence);
        let filler = &payload[HEADER_LEN..];
        if filler != self.filler.as_slice() {
            let offset = filler
                .iter()
                .zip(&self.filler)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Some(ProblemKind::BadContent {
                producer,
                sequence,
                offset: HEADER_LEN + offset,
            });
        }
        None
    }

    /// The verdict, counting the messages that never came.
    pub fn finish(self) -> Summary {
        let producers = self
            .tracks
            .iter()
            .map(|track| {
                let seen: u64 = track.seen.iter().map(|w| u64::from(w.count_ones())).sum();
                let first_missing = track
                    .seen
                    .iter()
                    .enumerate()
                    .find(|(_, &w)| w != u64::MAX)
                    .map(|(i, &w)| i as u64 * 64 + u64::from((!w).trailing_zeros()))
                    .filter(|&s| s < track.expected);
                ProducerSummary {
                    expected: track.expected,
                    received: track.received,
                    missing: track.expected - seen,
                    first_missing,
                }
            })
            .collect();
        Summary {
            received: self.received,
            producers,
            problem_count: self.problem_count,
            problems: self.problems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::message::fill;

    const SIZE: usize = 32;

    fn msg(producer: u64, sequence: u64) -> Vec<u8> {
        let mut buf = vec![0; SIZE];
        fill(&mut buf, producer, sequence);
        buf
    }

    /// Feeds `(producer, sequence)` pairs as well-formed messages at positions 0, 56, ...
    fn run(counts: &[u64], stream: &[(u64, u64)]) -> Summary {
        let mut checker = Checker::new(SIZE, counts);
        for (i, &(p, s)) in stream.iter().enumerate() {
            checker.check(i as u64 * 56, &msg(p, s));
        }
        checker.finish()
    }

    /// Every message came exactly once, in order, intact, and nothing else came.
    fn ok(summary: &Summary) -> bool {
        summary.problem_count == 0 && summary.missing() == 0
    }

    fn kinds(summary: &Summary) -> Vec<ProblemKind> {
        summary.problems.iter().map(|p| p.kind.clone()).collect()
    }

    #[test]
    fn interleaved_in_order_streams_pass() {
        let stream = [(0, 0), (1, 0), (1, 1), (0, 1), (0, 2), (1, 2), (2, 0)];
        let summary = run(&[3, 3, 1], &stream);
        assert!(ok(&summary), "{summary:?}");
        assert_eq!(summary.received, 7);
        assert_eq!(summary.missing(), 0);
        assert!(summary.missing_lines().is_empty());
        assert_eq!(summary.producers[1].received, 3);
    }

    #[test]
    fn a_producer_with_no_messages_passes() {
        let summary = run(&[2, 0], &[(0, 0), (0, 1)]);
        assert!(ok(&summary), "{summary:?}");
    }

    #[test]
    fn a_lost_message_is_a_gap_and_missing() {
        let summary = run(&[4], &[(0, 0), (0, 1), (0, 3)]);
        assert!(!ok(&summary));
        assert_eq!(
            kinds(&summary),
            [ProblemKind::Gap {
                producer: 0,
                expected: 2,
                got: 3
            }]
        );
        assert_eq!(summary.problems[0].index, 2);
        assert_eq!(summary.problems[0].position, 112);
        assert_eq!(summary.missing(), 1);
        assert_eq!(summary.producers[0].first_missing, Some(2));
        let text = summary.problems[0].to_string();
        assert_eq!(
            text,
            "message #2 at position 112: producer 0 sequence 3 where 2 was due (1 skipped)"
        );
    }

    #[test]
    fn lost_last_messages_are_missing() {
        let summary = run(&[3, 100], &[(0, 0), (1, 0), (0, 1)]);
        assert!(!ok(&summary));
        assert_eq!(summary.problem_count, 0, "nothing wrong with what came");
        assert_eq!(summary.missing(), 1 + 99);
        assert_eq!(summary.producers[0].first_missing, Some(2));
        assert_eq!(summary.producers[1].first_missing, Some(1));
        assert_eq!(
            summary.missing_lines(),
            [
                "producer 0: 1 message of 3 never arrived (the first is sequence 2)",
                "producer 1: 99 messages of 100 never arrived (the first is sequence 1)"
            ]
        );
    }

    #[test]
    fn nothing_at_all_is_all_missing() {
        let summary = run(&[64, 65], &[]);
        assert!(!ok(&summary));
        assert_eq!(summary.missing(), 129);
        assert_eq!(summary.producers[0].first_missing, Some(0));
    }

    #[test]
    fn a_duplicate_is_found() {
        let summary = run(&[3], &[(0, 0), (0, 1), (0, 1), (0, 2)]);
        assert!(!ok(&summary));
        assert_eq!(
            kinds(&summary),
            [ProblemKind::Duplicate {
                producer: 0,
                sequence: 1
            }]
        );
        assert_eq!(summary.missing(), 0);
        assert_eq!(summary.producers[0].received, 4);
    }

    #[test]
    fn an_old_message_again_is_a_duplicate_not_a_reorder() {
        let summary = run(&[3], &[(0, 0), (0, 1), (0, 2), (0, 0)]);
        assert_eq!(
            kinds(&summary),
            [ProblemKind::Duplicate {
                producer: 0,
                sequence: 0
            }]
        );
    }

    #[test]
    fn a_swap_is_a_gap_then_a_reorder() {
        let summary = run(&[4], &[(0, 0), (0, 2), (0, 1), (0, 3)]);
        assert!(!ok(&summary));
        assert_eq!(
            kinds(&summary),
            [
                ProblemKind::Gap {
                    producer: 0,
                    expected: 1,
                    got: 2
                },
                ProblemKind::Reordered {
                    producer: 0,
                    sequence: 1,
                    after: 2
                }
            ]
        );
        assert_eq!(summary.missing(), 0, "everything came, just not in order");
    }

    #[test]
    fn reordering_across_producers_is_fine_but_within_one_is_not() {
        assert!(ok(&run(&[2, 2], &[(1, 0), (1, 1), (0, 0), (0, 1)])));
        assert!(!ok(&run(&[2, 2], &[(1, 1), (1, 0), (0, 0), (0, 1)])));
    }

    #[test]
    fn unknown_producers_and_sequences_are_found() {
        let summary = run(&[2], &[(0, 0), (7, 0), (0, 2), (0, 1)]);
        assert_eq!(
            kinds(&summary),
            [
                ProblemKind::UnknownProducer { producer: 7 },
                ProblemKind::SequenceOutOfRange {
                    producer: 0,
                    sequence: 2,
                    count: 2
                }
            ]
        );
        assert_eq!(summary.missing(), 0);
    }

    #[test]
    fn wrong_sizes_are_found() {
        let mut checker = Checker::new(SIZE, &[3]);
        checker.check(0, &msg(0, 0));
        let mut long = vec![0; SIZE + 8];
        fill(&mut long, 0, 1);
        checker.check(56, &long);
        checker.check(120, &msg(0, 2)[..HEADER_LEN]);
        checker.check(160, &[1, 2, 3]);
        let summary = checker.finish();
        assert_eq!(
            kinds(&summary),
            [
                ProblemKind::WrongSize {
                    producer: 0,
                    sequence: 1,
                    len: SIZE + 8,
                    expected: SIZE
                },
                ProblemKind::WrongSize {
                    producer: 0,
                    sequence: 2,
                    len: HEADER_LEN,
                    expected: SIZE
                },
                ProblemKind::TooShort { len: 3 }
            ]
        );
        assert_eq!(summary.problems[2].position, 160);
    }

    #[test]
    fn every_corrupted_filler_byte_is_found() {
        for offset in HEADER_LEN..SIZE {
            let mut checker = Checker::new(SIZE, &[2]);
            checker.check(0, &msg(0, 0));
            let mut bad = msg(0, 1);
            bad[offset] ^= 0x01;
            checker.check(56, &bad);
            let summary = checker.finish();
            assert_eq!(
                kinds(&summary),
                [ProblemKind::BadContent {
                    producer: 0,
                    sequence: 1,
                    offset
                }],
                "offset {offset}"
            );
        }
    }

    #[test]
    fn another_messages_filler_is_bad_content() {
        // Producer 1's header on producer 0's bytes: the filler gives it away.
        let mut bad = msg(0, 0);
        bad[..8].copy_from_slice(&1u64.to_le_bytes());
        let mut checker = Checker::new(SIZE, &[1, 1]);
        checker.check(0, &msg(0, 0));
        checker.check(56, &bad);
        let summary = checker.finish();
        assert!(matches!(
            summary.problems[..],
            [Problem {
                kind: ProblemKind::BadContent { producer: 1, .. },
                ..
            }]
        ));
    }

    #[test]
    fn only_the_first_problems_are_kept_but_all_are_counted() {
        let stream: Vec<_> = std::iter::repeat_n((0, 0), 50).collect();
        let summary = run(&[1], &stream);
        assert_eq!(summary.problem_count, 49);
        assert_eq!(summary.problems.len(), KEPT_PROBLEMS);
        assert_eq!(summary.problems[0].index, 1);
    }

    #[test]
    fn sizes_without_filler_work() {
        let mut checker = Checker::new(HEADER_LEN, &[2]);
        let mut buf = [0u8; HEADER_LEN];
        fill(&mut buf, 0, 0);
        checker.check(0, &buf);
        fill(&mut buf, 0, 1);
        checker.check(40, &buf);
        assert!(ok(&checker.finish()));
    }
}
