#![cfg(loom)]
//! Loom models of the concurrency protocol in `logbus::protocol`, run on the library's own
//! code: `claim`, `commit`, `abort`, `unblock`, `read_frame` and `WakeWord` come from
//! `logbus`, built with
//! `--cfg loom` so that their atomics are loom's and their futex is loom's mutex and condition
//! variable (a lost wake-up therefore shows up as a deadlock that loom reports).
//!
//! What the models provide is only what the library leaves to its callers: the memory frames
//! live in, and the sequence a producer or consumer follows around the protocol calls.
//!
//! * Memory is a window of a tiny log (segments of 256 bytes) in which every 8-byte word has
//!   two views: a loom `AtomicU64`, used when the word is a frame word, and a loom
//!   `UnsafeCell<u64>`, used for the other header words and the payload, which the real
//!   producer writes with plain stores into the mapping. Loom reports any read of such a cell
//!   that is not ordered after its write, so a missing `Release`/`Acquire` pair in the
//!   protocol fails a model even when the value read happens to be right.
//! * Every message is one 32-byte frame (the largest a 256-byte segment takes): the 24-byte
//!   header and one 8-byte payload word, each word holding a value that names its producer.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p logbus-loom-tests --release --target-dir
//! target/loom`. `LOOM_MAX_PREEMPTIONS=n` overrides the bound each model sets for itself.

use logbus::format::{
    align_up, frame_word, kind, padding_word, FrameWord, FRAME_ALIGNMENT, FRAME_HEADER_LEN,
};
use logbus::protocol::{
    abort, abort_exclusive, announce, claim, claim_exclusive, commit, commit_exclusive,
    mark_revoked, pad_rest_of_claim, publish_committed, read_frame, reserve, unblock, ClaimRecord,
    Claimed, FrameMemory, FrameState, Geometry, ProducerView, WakeWord,
};
use logbus::sync::{producer_barrier_kind, AtomicU64, Ordering};
use logbus::Error;
use loom::cell::UnsafeCell;
use loom::thread;
// `std`'s Arc, not loom's: it only shares the model's memory between threads, and loom's
// would abort the whole test binary when it is dropped while a failed model unwinds.
use std::sync::Arc;

/// Producer slots in the model's producer table (slot numbers run below this).
const SLOTS: usize = 8;
/// Bytes in each segment of the model log.
const CAPACITY: u64 = 256;
/// Bytes of every message frame: header plus one payload word, aligned.
const FRAME_LEN: u64 = 32;
/// Bytes of a message's payload.
const PAYLOAD_LEN: u64 = FRAME_LEN - FRAME_HEADER_LEN;
/// Where the first segment ends, and the second begins.
const SEGMENT_END: u64 = CAPACITY;
/// A tail 16 bytes before the segment end: the first 32-byte claim from here must cross it.
const TAIL_BEFORE_SEGMENT_END: u64 = SEGMENT_END - 16;
/// Tails from which the first 32-byte claim ends exactly at the segment end (and must not be
/// moved), or crosses it with 24, 16 or 8 bytes before it and 8, 16 or 24 after it (8 bytes:
/// the smallest padding frame).
const TAILS_NEAR_SEGMENT_END: [u64; 4] = [
    SEGMENT_END - 32,
    SEGMENT_END - 24,
    SEGMENT_END - 16,
    SEGMENT_END - 8,
];
/// A tail with room for several frames before the segment end: no claim crosses it.
const TAIL_INSIDE_SEGMENT: u64 = 64;

fn geometry() -> Geometry {
    let geometry = Geometry::new(CAPACITY);
    assert!(
        FRAME_LEN <= geometry.max_frame_len(),
        "the model's frames must be claimable in its segments"
    );
    geometry
}

/// The producer slot named by the old frames of [`ModelLog::with_old_bytes`]: no model
/// producer uses it, so a consumer that delivers one of its messages took old bytes for new.
const OLD_SLOT: u16 = 6;

/// The producer slot that claims room for two frames and commits a message set of one, as
/// `Batch::commit` does when fewer records were pushed than room was claimed for.
const SHRINKING_SLOT: u16 = 7;

/// Bytes a producer in `slot` claims for each message.
fn claim_len(slot: u16) -> u64 {
    if slot == SHRINKING_SLOT {
        2 * FRAME_LEN
    } else {
        FRAME_LEN
    }
}

/// The frame word a producer in `slot` writes when it commits a message: the length is the
/// unaligned header-plus-payload length, as `Producer::commit_frame` writes it.
fn committed_word(slot: u16) -> u64 {
    frame_word((FRAME_HEADER_LEN + PAYLOAD_LEN) as i32, kind::DATA, 0, slot)
}

/// The value a producer in `slot` writes into word `index` (1 = checksum and reserved,
/// 2 = timestamp, 3 = payload) of its frame: distinct per producer and per word, so that a
/// word read from the wrong frame or before it was written is caught.
fn content_word(slot: u16, index: u64) -> u64 {
    0xC0DE_0000_0000_0000 | (u64::from(slot) << 16) | index
}

/// Words of a frame after its frame word: the rest of the header, then the payload.
const CONTENT_WORDS: std::ops::Range<u64> = 1..FRAME_LEN / 8;

/// A window `[base, base + 8 * words)` of a log's positions, with the log's tail and wake-up
/// word: what the meta file and the mapped segment files are to the real producers.
struct ModelLog {
    geometry: Geometry,
    tail: AtomicU64,
    wake: WakeWord,
    /// The claim record of each producer slot, as the meta file's producer table holds them.
    records: Vec<ClaimRecord>,
    base: u64,
    /// The atomic view of each word: used where the word is a frame word.
    frame_words: Vec<AtomicU64>,
    /// The plain view of each word: used where it is header or payload behind a frame word.
    plain_words: Vec<PlainWord>,
}

/// The plain (non-atomic) view of one word, shared between threads as a mapping is: the
/// protocol decides who may touch it (a claim gives it to one producer, a commit hands it on
/// to readers), and loom checks every access against that.
struct PlainWord(UnsafeCell<u64>);

// SAFETY: every access goes through loom's `UnsafeCell::with` or `with_mut`, which fail the
// model on any two accesses, one of them a write, that happens-before does not order: that
// is, on any access the protocol did not make exclusive.
unsafe impl Sync for PlainWord {}

impl ModelLog {
    /// A log whose tail is at `tail`, with memory for `frames` message frames from there (and
    /// for the frame word just after them, where a reader stops).
    fn new(tail: u64, frames: u64) -> Arc<ModelLog> {
        ModelLog::filled(tail, frames, false)
    }

    /// As [`ModelLog::new`], but in memory that held older frames, as a single-producer log's
    /// recycled segments do: every word past the tail looks like a committed message of
    /// [`OLD_SLOT`], a producer that never writes here, except the first word of the second
    /// segment, which recycling zeroes. The word at the tail is zero, as the producer before
    /// left it.
    fn with_old_bytes(tail: u64, frames: u64) -> Arc<ModelLog> {
        ModelLog::filled(tail, frames, true)
    }

    /// [`ModelLog::new`] (zeroed memory) or [`ModelLog::with_old_bytes`].
    fn filled(tail: u64, frames: u64, old_bytes: bool) -> Arc<ModelLog> {
        let words = (frames * FRAME_LEN / 8 + 1) as usize;
        let old = |index: usize| {
            let position = tail + 8 * index as u64;
            old_bytes && index > 0 && position != SEGMENT_END
        };
        Arc::new(ModelLog {
            geometry: geometry(),
            tail: AtomicU64::new(tail),
            wake: WakeWord::default(),
            records: (0..SLOTS).map(|_| ClaimRecord::default()).collect(),
            base: tail,
            frame_words: (0..words)
                .map(|i| AtomicU64::new(if old(i) { committed_word(OLD_SLOT) } else { 0 }))
                .collect(),
            plain_words: (0..words)
                .map(|i| {
                    let value = if old(i) {
                        content_word(OLD_SLOT, i as u64 % 4)
                    } else {
                        0
                    };
                    PlainWord(UnsafeCell::new(value))
                })
                .collect(),
        })
    }

    fn index(&self, position: u64) -> usize {
        assert!(
            position % 8 == 0 && position >= self.base,
            "position {position} is not an aligned position of this model"
        );
        let index = ((position - self.base) / 8) as usize;
        assert!(
            index < self.frame_words.len(),
            "position {position} is past the model's memory: more was claimed than the model allows"
        );
        index
    }

    fn frame_word(&self, position: u64) -> &AtomicU64 {
        &self.frame_words[self.index(position)]
    }

    /// What the producer writes between claim and commit: the header behind the frame word
    /// and the payload, with plain stores.
    fn write_content(&self, position: u64, slot: u16) {
        for index in CONTENT_WORDS {
            let word = &self.plain_words[self.index(position + 8 * index)].0;
            // SAFETY: the claim made [position, position + FRAME_LEN) this producer's alone;
            // loom checks that no reader touches it before the commit publishes it.
            word.with_mut(|word| unsafe { *word = content_word(slot, index) });
        }
    }

    /// What a consumer reads behind a committed frame word: it must be exactly what the
    /// producer named in the frame word wrote.
    fn check_content(&self, position: u64, slot: u16) {
        for index in CONTENT_WORDS {
            let word = &self.plain_words[self.index(position + 8 * index)].0;
            // SAFETY: only read after `read_frame` returned this frame committed; loom reports
            // the read if that `Acquire` does not order it after the producer's writes.
            let value = word.with(|word| unsafe { *word });
            assert_eq!(
                value,
                content_word(slot, index),
                "word {index} of the message at {position} is not what producer {slot} wrote"
            );
        }
    }
}

/// The producers' view of the memory: the model has it all mapped already, where a real
/// producer maps (and creates) segments on demand.
impl FrameMemory for &ModelLog {
    fn frame_word(&mut self, position: u64) -> Result<&AtomicU64, Error> {
        Ok(ModelLog::frame_word(self, position))
    }
}

/// A producer in one slot of the producer table: the sequence `Producer::offer`,
/// `Producer::claim` and `Claim::drop` follow around the protocol calls.
struct ModelProducer {
    log: Arc<ModelLog>,
    slot: u16,
    /// The log's only producer: it claims nothing, and moves the tail after each commit.
    exclusive: bool,
}

impl ModelProducer {
    fn new(log: &Arc<ModelLog>, slot: u16) -> ModelProducer {
        ModelProducer {
            log: log.clone(),
            slot,
            exclusive: false,
        }
    }

    fn exclusive(log: &Arc<ModelLog>, slot: u16) -> ModelProducer {
        ModelProducer {
            exclusive: true,
            ..ModelProducer::new(log, slot)
        }
    }

    fn record(&self) -> &ClaimRecord {
        &self.log.records[usize::from(self.slot)]
    }

    /// Claims one message frame and returns its position.
    fn claim(&self) -> u64 {
        let log = &*self.log;
        let mut memory = log;
        if self.exclusive {
            claim_exclusive(
                &log.tail,
                log.geometry,
                claim_len(self.slot),
                &mut memory,
                &log.wake,
                producer_barrier_kind(),
            )
        } else {
            claim(
                &log.tail,
                log.geometry,
                claim_len(self.slot),
                self.record(),
                &mut memory,
                &log.wake,
                producer_barrier_kind(),
            )
        }
        .expect("the model's memory cannot fail to map")
    }

    /// Commits the claim at `position`, as `Producer::commit_frame` does.
    fn commit(&self, position: u64) {
        let word = self.log.frame_word(position);
        if self.exclusive {
            let end = position + claim_len(self.slot);
            let (tail, wake) = (&self.log.tail, &self.log.wake);
            commit_exclusive(
                word,
                committed_word(self.slot),
                tail,
                end,
                wake,
                producer_barrier_kind(),
            );
            return;
        }
        let committed = commit(
            word,
            committed_word(self.slot),
            self.record(),
            &self.log.wake,
            producer_barrier_kind(),
        );
        assert!(committed, "nobody revokes claims in this model");
    }

    /// Claims, writes and commits one message; returns its position.
    fn offer(&self) -> u64 {
        let position = self.claim();
        self.log.write_content(position, self.slot);
        self.commit(position);
        position
    }

    /// Claims room for two frames, writes one message into the first, pads the rest of the
    /// claim and commits: `Batch::commit` for a set that came out shorter than its claim.
    fn offer_shrunk(&self) -> u64 {
        let position = self.claim();
        self.log.write_content(position, self.slot);
        pad_rest_of_claim(self.log.frame_word(position + FRAME_LEN), FRAME_LEN);
        self.commit(position);
        position
    }

    /// Claims a frame, writes into it, and drops it uncommitted: it becomes padding, and what
    /// was written in it must never reach a consumer.
    fn abort(&self) -> u64 {
        let position = self.claim();
        self.log.write_content(position, self.slot);
        let word = self.log.frame_word(position);
        if self.exclusive {
            let end = position + FRAME_LEN;
            let (tail, wake) = (&self.log.tail, &self.log.wake);
            abort_exclusive(word, FRAME_LEN, tail, end, wake, producer_barrier_kind());
        } else {
            abort(
                word,
                FRAME_LEN,
                self.record(),
                &self.log.wake,
                producer_barrier_kind(),
            );
        }
        position
    }
}

/// A message as a consumer received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Delivered {
    position: u64,
    producer: u16,
}

/// A consumer at a position of its own: the walk `Consumer::advance_to_message` makes, with
/// every check on what it finds turned into an assertion.
struct ModelConsumer {
    log: Arc<ModelLog>,
    position: u64,
}

impl ModelConsumer {
    fn new(log: &Arc<ModelLog>, position: u64) -> ModelConsumer {
        ModelConsumer {
            log: log.clone(),
            position,
        }
    }

    /// The state of the frame at the consumer's position.
    fn frame_here(&self) -> FrameState {
        read_frame(self.log.frame_word(self.position))
    }

    /// The next committed message, skipping padding and crossing segment ends; `None` when
    /// the consumer has to wait. Checks that the message is intact and that no frame, padding
    /// or not, runs past the end of its segment.
    fn poll(&mut self) -> Option<Delivered> {
        loop {
            let position = self.position;
            let frame = match self.frame_here() {
                FrameState::Empty => return None,
                FrameState::Invalid(frame) => panic!("invalid frame word {frame:?} at {position}"),
                FrameState::Committed(frame) => frame,
            };
            let aligned = align_up(frame.length as u64, FRAME_ALIGNMENT);
            let segment_end = self.log.geometry.segment_end(position);
            assert!(
                position + aligned <= segment_end,
                "the frame at {position} ({frame:?}) runs past the segment end at {segment_end}"
            );
            self.position += aligned;
            match frame.kind {
                kind::PADDING => assert!(
                    frame.length as u64 >= FRAME_ALIGNMENT
                        && frame.length as u64 % FRAME_ALIGNMENT == 0,
                    "padding at {position} has length {}",
                    frame.length
                ),
                kind::DATA => {
                    assert_eq!(
                        frame,
                        FrameWord::unpack(committed_word(frame.producer)),
                        "the message at {position} has another frame word than its commit"
                    );
                    self.log.check_content(position, frame.producer);
                    return Some(Delivered {
                        position,
                        producer: frame.producer,
                    });
                }
                other => panic!("frame of unknown kind {other} at {position}"),
            }
        }
    }

    /// Polls until `count` messages have arrived, yielding to the other threads in between
    /// (loom's way of modelling a spin loop without exploring it forever).
    fn receive(&mut self, count: usize) -> Vec<Delivered> {
        let mut received = Vec::new();
        while received.len() < count {
            match self.poll() {
                Some(message) => received.push(message),
                None => thread::yield_now(),
            }
        }
        received
    }

    /// Everything readable now, up to the first frame that is not committed.
    fn drain(&mut self) -> Vec<Delivered> {
        std::iter::from_fn(|| self.poll()).collect()
    }
}

/// The delivered messages, checked to be exactly the ones `offered` (producer, position),
/// each once, in log order.
fn assert_delivered_exactly(received: &[Delivered], offered: &[(u16, u64)]) {
    let mut expected: Vec<Delivered> = offered
        .iter()
        .map(|&(producer, position)| Delivered { position, producer })
        .collect();
    expected.sort_by_key(|message| message.position);
    assert_eq!(
        received, expected,
        "consumer did not receive every committed message exactly once, in log order"
    );
}

/// Runs `model` under loom, exploring schedules with at most `preemptions` preemptions
/// (unless `LOOM_MAX_PREEMPTIONS` says otherwise); `None` explores every schedule.
fn check(preemptions: Option<usize>, model: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = preemptions;
    }
    builder.check(model);
}

/// Two producers race for the end of a segment with 32-byte messages, from each tail in
/// [`TAILS_NEAR_SEGMENT_END`]. After both commit, a consumer walking from the old tail
/// receives both messages exactly once, intact, in log order; no frame runs past the segment
/// end (the segment ends exactly at a frame end); the walk ends exactly at the tail, so a
/// claim that crossed the end and was made again left no hole that would block consumers;
/// and a claim that fits before the end is not moved past it.
#[test]
fn claims_racing_for_a_segment_end_leave_no_frame_across_it_and_no_hole() {
    for start in TAILS_NEAR_SEGMENT_END {
        check(None, move || {
            let log = ModelLog::new(start, 3);
            let offered = offer_concurrently(&log, [1, 2])
                .into_iter()
                .map(|producer| producer.join().unwrap())
                .collect::<Vec<_>>();
            let first = offered.iter().map(|&(_, position)| position).min();
            if start + FRAME_LEN <= SEGMENT_END {
                assert_eq!(
                    first,
                    Some(start),
                    "a claim that fit was moved: {offered:?}"
                );
            } else {
                assert!(
                    first >= Some(SEGMENT_END),
                    "a message was placed where it does not fit: {offered:?}"
                );
            }

            let mut consumer = ModelConsumer::new(&log, start);
            assert_delivered_exactly(&consumer.drain(), &offered);
            assert_eq!(
                consumer.position,
                log.tail.load(Ordering::Relaxed),
                "the walk over everything claimed stopped short of the tail"
            );
            assert_eq!(consumer.frame_here(), FrameState::Empty);
        });
    }
}

/// The same race for a segment end, from each tail in [`TAILS_NEAR_SEGMENT_END`], with the
/// consumer reading while the producers claim, pad and commit. Whenever the consumer finds a
/// frame committed, the header and payload behind it must already be visible (this is what
/// fails if a commit is not `Release` or a read not `Acquire`); it never takes a claimed or
/// half-padded range for a message; and it receives both messages exactly once, in log order.
#[test]
fn a_consumer_reading_during_claims_across_a_segment_end_sees_only_whole_messages() {
    for start in TAILS_NEAR_SEGMENT_END {
        check(Some(4), move || {
            let log = ModelLog::new(start, 3);
            let producers = offer_concurrently(&log, [1, 2]);

            let mut consumer = ModelConsumer::new(&log, start);
            let received = consumer.receive(2);

            let offered = producers
                .into_iter()
                .map(|producer| producer.join().unwrap())
                .collect::<Vec<_>>();
            assert_delivered_exactly(&received, &offered);
            assert_eq!(consumer.position, log.tail.load(Ordering::Relaxed));
        });
    }
}

/// An exclusive producer (plain stores to the tail) offers two messages from each tail in
/// [`TAILS_NEAR_SEGMENT_END`], so that one of them crosses the segment end, while a consumer
/// reads: whenever the consumer finds a frame committed, the message behind it is whole, and
/// it receives both, exactly once, in order, ending at the tail. The same in memory that held
/// older frames (a single-producer log's recycled segment, zeroed only in its first word):
/// the consumer never takes an old frame for a message, because the exclusive producer zeroes
/// the word past each claim before it moves the tail there.
#[test]
fn a_consumer_reading_an_exclusive_producers_claims_across_a_segment_end_sees_whole_messages() {
    for (start, old_bytes) in TAILS_NEAR_SEGMENT_END
        .into_iter()
        .flat_map(|start| [(start, false), (start, true)])
    {
        check(Some(4), move || {
            let log = ModelLog::filled(start, 3, old_bytes);
            let producer = ModelProducer::exclusive(&log, 1);
            let producing =
                thread::spawn(move || vec![(1, producer.offer()), (1, producer.offer())]);

            let mut consumer = ModelConsumer::new(&log, start);
            let received = consumer.receive(2);

            let offered = producing.join().unwrap();
            assert_delivered_exactly(&received, &offered);
            assert_eq!(consumer.position, log.tail.load(Ordering::Relaxed));
            assert_eq!(consumer.frame_here(), FrameState::Empty);
        });
    }
}

/// Starts one thread per slot that offers one message; each returns (slot, position).
fn offer_concurrently(log: &Arc<ModelLog>, slots: [u16; 2]) -> Vec<thread::JoinHandle<(u16, u64)>> {
    slots
        .into_iter()
        .map(|slot| {
            let producer = ModelProducer::new(log, slot);
            thread::spawn(move || (slot, producer.offer()))
        })
        .collect()
}

/// One producer and one consumer inside a segment, every schedule explored (no preemption
/// bound): the consumer polls once while the producer runs and once after it has finished.
/// Whichever poll finds the frame committed must find the whole message behind it, and
/// exactly one of the two delivers it.
#[test]
fn a_committed_frame_publishes_its_header_and_payload_in_every_schedule() {
    check(None, || {
        let log = ModelLog::new(TAIL_INSIDE_SEGMENT, 1);
        let producer = ModelProducer::new(&log, 7);
        let producing = thread::spawn(move || producer.offer());

        let mut consumer = ModelConsumer::new(&log, TAIL_INSIDE_SEGMENT);
        let early = consumer.poll();
        let position = producing.join().unwrap();
        let late = consumer.poll();

        let expected = Delivered {
            position,
            producer: 7,
        };
        match early {
            Some(message) => {
                assert_eq!(message, expected);
                assert_eq!(late, None, "a message was delivered twice");
            }
            None => assert_eq!(late, Some(expected), "a joined producer's commit is lost"),
        }
    });
}

/// A producer claims and then aborts (its claim becomes padding) while another commits a
/// message, and a consumer reads meanwhile: it skips the aborted frame, never delivers it,
/// and receives the other message exactly once.
#[test]
fn an_aborted_claim_is_skipped_and_the_message_after_it_delivered() {
    check(Some(4), || {
        let log = ModelLog::new(TAIL_INSIDE_SEGMENT, 2);
        let aborting = ModelProducer::new(&log, 1);
        let aborting = thread::spawn(move || aborting.abort());
        let offering = ModelProducer::new(&log, 2);
        let offering = thread::spawn(move || offering.offer());

        let mut consumer = ModelConsumer::new(&log, TAIL_INSIDE_SEGMENT);
        let received = consumer.receive(1);

        let offered = offering.join().unwrap();
        let aborted = aborting.join().unwrap();
        assert_delivered_exactly(&received, &[(2, offered)]);
        // The consumer may have stopped before the aborted frame if it comes last; once the
        // abort is done, the rest of the log is readable and holds nothing more.
        assert_eq!(consumer.drain(), []);
        assert_eq!(consumer.position, log.tail.load(Ordering::Relaxed));
        assert_eq!(
            read_frame(log.frame_word(aborted)),
            FrameState::Committed(FrameWord::unpack(padding_word(FRAME_LEN))),
            "an aborted claim must become padding of the whole claimed length"
        );
    });
}

/// A message set committed short of its claim, racing another producer's message: the
/// unused end of the claim is padded before the commit publishes the set, so a consumer that
/// sees the set always finds padding (never an empty word, which would stall it) behind it,
/// receives both messages exactly once, and walks exactly to the tail.
#[test]
fn a_claim_committed_short_pads_its_rest_before_a_reader_can_reach_it() {
    check(Some(4), || {
        let log = ModelLog::new(TAIL_INSIDE_SEGMENT, 3);
        let shrinking = ModelProducer::new(&log, SHRINKING_SLOT);
        let shrinking = thread::spawn(move || shrinking.offer_shrunk());
        let offering = ModelProducer::new(&log, 2);
        let offering = thread::spawn(move || offering.offer());

        let mut consumer = ModelConsumer::new(&log, TAIL_INSIDE_SEGMENT);
        let received = consumer.receive(2);

        let shrunk = shrinking.join().unwrap();
        let offered = offering.join().unwrap();
        assert_delivered_exactly(&received, &[(SHRINKING_SLOT, shrunk), (2, offered)]);
        assert_eq!(consumer.drain(), []);
        assert_eq!(consumer.position, log.tail.load(Ordering::Relaxed));
    });
}

/// A consumer that finds nothing sleeps with `WakeWord::wait_until` while a producer
/// commits. The consumer registers, fences and re-checks; the producer commits, fences and
/// reads the waiter count: one of them must see the other. If neither did, the consumer
/// would sleep forever on the loom futex and loom would report a deadlock.
#[test]
fn a_sleeping_consumer_is_woken_by_a_commit() {
    check(None, || {
        let log = ModelLog::new(TAIL_INSIDE_SEGMENT, 1);
        let producer = ModelProducer::new(&log, 3);
        let producing = thread::spawn(move || producer.offer());

        let mut consumer = ModelConsumer::new(&log, TAIL_INSIDE_SEGMENT);
        let mut received = None;
        let ready = log.wake.wait_until(
            || {
                received = consumer.poll();
                received.is_some()
            },
            None,
        );

        let position = producing.join().unwrap();
        assert!(ready, "wait_until without a deadline returned unready");
        assert_eq!(
            received,
            Some(Delivered {
                position,
                producer: 3
            })
        );
        assert_eq!(log.wake.waiters.load(Ordering::Relaxed), 0);
    });
}

/// A consumer sleeps at a frame whose claim is then aborted: the padding written by `abort`
/// must wake it (else it would sleep at a frame that will never be committed), and it then
/// finds padding of the claimed length, with nothing after it.
#[test]
fn a_sleeping_consumer_is_woken_by_an_aborted_claim() {
    check(None, || {
        let log = ModelLog::new(TAIL_INSIDE_SEGMENT, 1);
        let producer = ModelProducer::new(&log, 4);
        let aborting = thread::spawn(move || producer.abort());

        let mut consumer = ModelConsumer::new(&log, TAIL_INSIDE_SEGMENT);
        let ready = log.wake.wait_until(
            || matches!(consumer.frame_here(), FrameState::Committed(_)),
            None,
        );

        let position = aborting.join().unwrap();
        assert!(ready);
        assert_eq!(position, TAIL_INSIDE_SEGMENT);
        match consumer.frame_here() {
            FrameState::Committed(frame) => {
                assert_eq!(
                    (frame.kind, frame.length),
                    (kind::PADDING, FRAME_LEN as i32)
                )
            }
            other => panic!("the aborted frame reads as {other:?}"),
        }
        assert_eq!(consumer.poll(), None, "an aborted claim was delivered");
        assert_eq!(consumer.position, TAIL_INSIDE_SEGMENT + FRAME_LEN);
    });
}

/// A consumer sleeps at the last bytes of a segment while a producer's claim crosses the
/// segment end and the producer then holds its new claim, uncommitted. The padding that
/// `claim` writes on both sides of the end must wake the consumer (`claim` promises it, as
/// one may wait at either side), which then moves into the next segment and stops at the
/// claimed frame, without delivering it.
#[test]
fn a_sleeping_consumer_is_woken_by_the_padding_of_a_claim_across_a_segment_end() {
    check(None, || {
        let log = ModelLog::new(TAIL_BEFORE_SEGMENT_END, 2);
        let producer = ModelProducer::new(&log, 5);
        let claiming = thread::spawn(move || producer.claim());

        let mut consumer = ModelConsumer::new(&log, TAIL_BEFORE_SEGMENT_END);
        let ready = log.wake.wait_until(
            || {
                assert_eq!(consumer.poll(), None, "an uncommitted claim was delivered");
                consumer.position > SEGMENT_END
            },
            None,
        );

        let claimed = claiming.join().unwrap();
        assert!(ready);
        // The claim's first try padded [old tail, segment end) and [segment end, old tail +
        // FRAME_LEN); the retry comes right after that second padding.
        assert_eq!(claimed, TAIL_BEFORE_SEGMENT_END + FRAME_LEN);
        assert_eq!(consumer.position, claimed);
        assert_eq!(consumer.frame_here(), FrameState::Empty);
        assert_eq!(
            log.records[5].read(),
            Claimed::At {
                position: claimed,
                len: FRAME_LEN
            },
            "the held claim is in its producer's record, so a stalled reader can find its owner"
        );
    });
}

/// Two consumers sleep while one producer commits: the wake-up reaches both, not just one.
#[test]
fn every_sleeping_consumer_is_woken() {
    check(Some(4), || {
        let log = ModelLog::new(TAIL_INSIDE_SEGMENT, 1);
        let sleepers: Vec<_> = (0..2)
            .map(|_| {
                let log = log.clone();
                thread::spawn(move || {
                    let mut consumer = ModelConsumer::new(&log, TAIL_INSIDE_SEGMENT);
                    let mut received = None;
                    let ready = log.wake.wait_until(
                        || {
                            received = consumer.poll();
                            received.is_some()
                        },
                        None,
                    );
                    assert!(ready);
                    received.unwrap()
                })
            })
            .collect();

        let position = ModelProducer::new(&log, 6).offer();
        for sleeper in sleepers {
            assert_eq!(
                sleeper.join().unwrap(),
                Delivered {
                    position,
                    producer: 6
                }
            );
        }
    });
}

/// A stalled reader's view of the model's producer table: every slot's record, with the
/// given slots dead and the rest alive.
fn producer_views<'a>(log: &'a ModelLog, dead: &[u16]) -> Vec<ProducerView<'a>> {
    log.records
        .iter()
        .enumerate()
        .map(|(slot, record)| ProducerView {
            record,
            alive: !dead.contains(&(slot as u16)),
        })
        .collect()
}

impl ModelConsumer {
    /// Polls until `count` messages have arrived and the consumer stands at the tail, calling
    /// `unblock` whenever it has to wait, as `Consumer` does once a stall has lasted.
    fn receive_unblocking(
        &mut self,
        count: usize,
        dead: &[u16],
        revoke_live: bool,
    ) -> Vec<Delivered> {
        let mut received = Vec::new();
        loop {
            match self.poll() {
                Some(message) => received.push(message),
                None if (received.len() == count || count == usize::MAX)
                    && self.position == self.log.tail.load(Ordering::Acquire)
                    && self.position > self.log.base =>
                {
                    return received
                }
                None => {
                    let log = &*self.log;
                    let mut memory = log;
                    unblock(
                        self.position,
                        &log.tail,
                        log.geometry,
                        producer_views(log, dead),
                        revoke_live,
                        &mut memory,
                        &log.wake,
                    )
                    .expect("the model's memory cannot fail to map");
                    thread::yield_now();
                }
            }
        }
    }
}

/// A producer claims and dies before committing, while a live producer offers a message. A
/// reader stalled at the dead claim pads it (the owner is in its record, and dead), and then
/// receives the live message exactly once; the dead slot's record is idle again, so the slot
/// can be reused; the padding has exactly the dead claim's length.
#[test]
fn a_dead_producers_claim_is_padded_and_the_message_after_it_delivered() {
    check(Some(3), || {
        let log = ModelLog::new(TAIL_INSIDE_SEGMENT, 2);
        let dying = ModelProducer::new(&log, 1);
        let dead_claim = thread::spawn(move || dying.claim()).join().unwrap();
        let live = ModelProducer::new(&log, 2);
        let offering = thread::spawn(move || live.offer());

        let mut consumer = ModelConsumer::new(&log, TAIL_INSIDE_SEGMENT);
        let received = consumer.receive_unblocking(1, &[1], false);

        let offered = offering.join().unwrap();
        assert_delivered_exactly(&received, &[(2, offered)]);
        assert_eq!(
            read_frame(log.frame_word(dead_claim)),
            FrameState::Committed(FrameWord::unpack(padding_word(FRAME_LEN)))
        );
        assert_eq!(log.records[1].read(), Claimed::Idle);
    });
}

/// An exclusive producer, in memory that held older frames, commits a message and dies
/// before it moves the tail past it; the next producer publishes what is committed past the
/// tail before its own message, while a reader reads. The reader gets both messages, exactly
/// once and in order, and nothing old: the dead producer's message is never written over,
/// and the walk stops at the word the dead producer zeroed past its frame.
#[test]
fn a_message_committed_by_an_exclusive_producer_that_died_before_the_tail_moved_is_kept() {
    check(Some(3), || {
        let log = ModelLog::with_old_bytes(TAIL_INSIDE_SEGMENT, 3);
        let dying = ModelProducer::exclusive(&log, 1);
        let dead_message = thread::spawn(move || {
            // `offer` up to the commit's frame word store; then the process is gone.
            let position = dying.claim();
            dying.log.write_content(position, 1);
            let word = dying.log.frame_word(position);
            word.store(committed_word(1), Ordering::Release);
            position
        })
        .join()
        .unwrap();
        let next = ModelProducer::exclusive(&log, 2);
        let offering = thread::spawn(move || {
            let mut memory = &*next.log;
            publish_committed(&next.log.tail, next.log.geometry, &mut memory, |_| true)
                .expect("the model's memory cannot fail to map");
            next.offer()
        });

        let mut consumer = ModelConsumer::new(&log, TAIL_INSIDE_SEGMENT);
        let received = consumer.receive(2);

        let offered = offering.join().unwrap();
        assert_eq!(dead_message, TAIL_INSIDE_SEGMENT);
        assert_delivered_exactly(&received, &[(1, dead_message), (2, offered)]);
        assert_eq!(consumer.position, log.tail.load(Ordering::Relaxed));
        assert_eq!(consumer.frame_here(), FrameState::Empty);
    });
}

/// A producer is killed between its `fetch_add` and the store of its position: its claim has
/// a zero frame word and no record names it. A live producer offers at the same time, before
/// or after it. The reader pads only the dead claim — never the live producer's, whatever the
/// interleaving — and receives the live message exactly once, ending at the tail.
#[test]
fn a_producer_killed_between_its_fetch_add_and_its_record_never_costs_a_live_message() {
    check(Some(3), || {
        let log = ModelLog::new(TAIL_INSIDE_SEGMENT, 2);
        let live = ModelProducer::new(&log, 2);
        let offering = thread::spawn(move || live.offer());
        let dying = log.clone();
        thread::spawn(move || {
            // The library's own first two steps of `claim`, and then the process is gone.
            announce(&dying.records[1], FRAME_LEN);
            reserve(&dying.tail, FRAME_LEN);
        })
        .join()
        .unwrap();

        let mut consumer = ModelConsumer::new(&log, TAIL_INSIDE_SEGMENT);
        let received = consumer.receive_unblocking(1, &[1], false);

        let offered = offering.join().unwrap();
        assert_delivered_exactly(&received, &[(2, offered)]);
        assert_eq!(consumer.position, TAIL_INSIDE_SEGMENT + 2 * FRAME_LEN);
    });
}

/// A live producer holds its claim past the reader's timeout, and the reader revokes it while
/// the producer commits. Exactly one wins: either the commit succeeds and the message is
/// delivered, or the commit reports the revocation and the message is skipped as padding —
/// and a second reader walking the log afterwards sees the same.
#[test]
fn a_live_claim_revoked_after_the_timeout_is_either_committed_or_skipped_never_both() {
    check(None, || {
        let log = ModelLog::new(TAIL_INSIDE_SEGMENT, 1);
        let producer_log = log.clone();
        let producing = thread::spawn(move || {
            let producer = ModelProducer::new(&producer_log, 3);
            let position = producer.claim();
            producer_log.write_content(position, 3);
            let committed = commit(
                producer_log.frame_word(position),
                committed_word(3),
                producer.record(),
                &producer_log.wake,
                producer_barrier_kind(),
            );
            (position, committed)
        });

        let mut consumer = ModelConsumer::new(&log, TAIL_INSIDE_SEGMENT);
        let received = consumer.receive_unblocking(usize::MAX, &[], true);
        let (position, committed) = producing.join().unwrap();
        let expected: &[(u16, u64)] = if committed { &[(3, position)] } else { &[] };
        assert_delivered_exactly(&received, expected);
        let mut second = ModelConsumer::new(&log, TAIL_INSIDE_SEGMENT);
        assert_delivered_exactly(&second.drain(), expected);
        assert_eq!(log.records[3].read(), Claimed::Idle);
    });
}

/// As above, with a second, slow reader that read an earlier claim of the same producer and
/// marks it revoked only now, while the first reader revokes the claim in flight. The slow
/// mark must not hide the first: the message is still either committed or skipped, never
/// both (a plain store of the mark let the producer publish over the first reader's padding).
#[test]
fn a_late_mark_of_an_earlier_claim_never_hides_the_revocation_of_the_claim_in_flight() {
    check(Some(3), || {
        let log = ModelLog::new(TAIL_INSIDE_SEGMENT, 1);
        let producer_log = log.clone();
        let producing = thread::spawn(move || {
            let producer = ModelProducer::new(&producer_log, 3);
            let position = producer.claim();
            producer_log.write_content(position, 3);
            let committed = commit(
                producer_log.frame_word(position),
                committed_word(3),
                producer.record(),
                &producer_log.wake,
                producer_barrier_kind(),
            );
            (position, committed)
        });
        let stale_log = log.clone();
        let stale = thread::spawn(move || {
            // An earlier claim of slot 3, one frame before this one.
            mark_revoked(&stale_log.records[3], TAIL_INSIDE_SEGMENT - FRAME_LEN);
        });

        let mut consumer = ModelConsumer::new(&log, TAIL_INSIDE_SEGMENT);
        let received = consumer.receive_unblocking(usize::MAX, &[], true);
        stale.join().unwrap();
        let (position, committed) = producing.join().unwrap();
        let expected: &[(u16, u64)] = if committed { &[(3, position)] } else { &[] };
        assert_delivered_exactly(&received, expected);
        let mut second = ModelConsumer::new(&log, TAIL_INSIDE_SEGMENT);
        assert_delivered_exactly(&second.drain(), expected);
    });
}
