//! Consumers: read committed frames in place, in log order, each at a position of its own.
//!
//! Two paths read frames. The fast one takes what most reads are: a committed data frame that
//! lies whole in the mapped segment (`PlainFrames::at`, shared by `poll` and `poll_batch`), and
//! the next record of a set already checked (`take_records`). It only ever declines. The other,
//! `advance_to_message`, handles the rest: switching and preparing segments, padding, entering
//! sets, stalled claims, and every error, which it reports at the frame's position without
//! moving past it.

use crate::format::{
    align_up, flags, kind, FrameHeader, FrameWord, FRAME_ALIGNMENT, FRAME_HEADER_LEN,
    RECORD_ALIGNMENT, RECORD_LENGTH_LEN,
};
use crate::log::Shared;
use crate::protocol::{read_frame, FrameState, Geometry};
use crate::segment::{Prefault, Segment};
use crate::sync::{AtomicU64, Ordering};
use crate::verify::{unblock_if_stalled, Stall};
use crate::{clock, format, Error, Result};
use crossbeam_utils::Backoff;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Where a new consumer starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The earliest message still in the log.
    Earliest,
    /// The tail: only messages claimed after the consumer is made.
    Latest,
    /// A given position, which must be the start of a message (a frame, or a record inside a
    /// message set); anything else is [`Error::InvalidPosition`].
    Position(u64),
}

/// One message, borrowed in place from the mapped segment: no copy is made.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    payload: &'a [u8],
    position: u64,
    timestamp_ns: u64,
    producer: u16,
    frame_flags: u8,
    /// The alignment the format promises for this payload: 8 for a frame's payload, 4 for a
    /// record in a message set. `as_pod` goes by the promise, not by where this payload
    /// happens to lie, so that it does not work for one record and fail for the next.
    promised_alignment: u8,
}

impl<'a> Message<'a> {
    /// A message over bytes that lie elsewhere than a mapped segment (the bridge client's
    /// receive buffer), with the fields its frame gave it.
    #[allow(dead_code)]
    pub(crate) fn from_parts(
        payload: &'a [u8],
        position: u64,
        timestamp_ns: u64,
        producer: u16,
        frame_flags: u8,
        promised_alignment: u8,
    ) -> Message<'a> {
        Message {
            payload,
            position,
            timestamp_ns,
            producer,
            frame_flags,
            promised_alignment,
        }
    }

    /// The payload, exactly as the producer wrote it.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The message's position in the log: its identity, and where to start to read it again.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Nanoseconds since the Unix epoch at the producer's claim, if the log keeps timestamps.
    pub fn timestamp_ns(&self) -> Option<u64> {
        (self.frame_flags & flags::TIMESTAMP != 0).then_some(self.timestamp_ns)
    }

    /// The producer's claim time, if the log keeps timestamps.
    pub fn timestamp(&self) -> Option<SystemTime> {
        self.timestamp_ns()
            .map(|ns| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns))
    }

    /// The slot number of the producer that wrote it.
    pub fn producer(&self) -> u16 {
        self.producer
    }

    /// Views the payload as a `Pod` value in place. Fails if the size differs, or if `T`
    /// needs more alignment than the format promises here: single messages are 8-aligned,
    /// records in a message set only 4-aligned — use [`Message::read_pod`] for those.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = logbus::Log::create(dir.path(), &logbus::LogOptions::new().segment_capacity(1 << 16))?;
    /// let mut producer = log.producer()?;
    /// producer.offer_pod(&7u64)?;
    /// producer.offer_batch(&[8u64.to_le_bytes(), 9u64.to_le_bytes()])?;
    ///
    /// let mut consumer = log.consumer(logbus::StartAt::Earliest)?;
    /// assert_eq!(*consumer.poll()?.unwrap().as_pod::<u64>()?, 7);
    /// for expected in [8u64, 9] {
    ///     let record = consumer.poll()?.unwrap();
    ///     assert!(record.as_pod::<u64>().is_err()); // every record, whatever its address
    ///     assert_eq!(record.read_pod::<u64>()?, expected);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn as_pod<T: bytemuck::AnyBitPattern>(&self) -> Result<&'a T> {
        if std::mem::align_of::<T>() > usize::from(self.promised_alignment) {
            return Err(self.pod_mismatch::<T>());
        }
        bytemuck::try_from_bytes(self.payload).map_err(|_| self.pod_mismatch::<T>())
    }

    /// Copies the payload out as a `Pod` value, whatever its alignment.
    pub fn read_pod<T: bytemuck::AnyBitPattern>(&self) -> Result<T> {
        bytemuck::try_pod_read_unaligned(self.payload).map_err(|_| self.pod_mismatch::<T>())
    }

    fn pod_mismatch<T>(&self) -> Error {
        Error::PodMismatch {
            len: self.payload.len(),
            type_name: std::any::type_name::<T>(),
            size: std::mem::size_of::<T>(),
            align: std::mem::align_of::<T>(),
        }
    }
}

/// Reads a log from a position of its own. Many consumers, in any processes, read the same
/// log without disturbing one another or the producers: a consumer writes nothing shared
/// while there is data, and learns that data is there from the frame it is at alone.
///
/// ```
/// use logbus::{Log, LogOptions, StartAt};
/// use std::time::Duration;
/// let dir = tempfile::tempdir()?;
/// let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(1 << 16))?;
/// let mut consumer = log.consumer(StartAt::Latest)?;
/// assert!(consumer.poll()?.is_none());
///
/// log.producer()?.offer(b"ping")?;
/// let message = consumer.wait(Some(Duration::from_secs(1)))?.expect("arrives");
/// assert_eq!(message.payload(), b"ping");
/// assert!(message.timestamp().is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Consumer {
    shared: Arc<Shared>,
    geometry: Geometry,
    /// The frame the consumer is at (inside a message set: the set's frame).
    position: u64,
    current: Option<MappedSegment>,
    /// When `position` reaches this, the preparer is asked to map the next segment.
    prepare_next_at: u64,
    /// Set while inside a message set: the records not yet delivered.
    batch: Option<BatchCursor>,
    verify_checksums: bool,
    /// Where the consumer found an uncommitted claim behind the tail, and since when.
    stall: Option<Stall>,
    /// Empty polls since the last message or the last look at the tail for a stall.
    empty_polls: u32,
    claim_timeout: Duration,
    /// Set by [`Consumer::set_trail`]: how `poll_batch` keeps behind busy producers.
    trail: Option<Trail>,
    /// The durable cursor this consumer holds, if it was made by name.
    durable: Option<Durable>,
    /// Set when a durable cursor resumed at a position retention had deleted: the next
    /// read fails with `PositionDeleted` until the consumer seeks. Looked at only when a
    /// segment is mapped, off the hot path.
    resume_deleted: bool,
    /// Where `StartAt::Earliest` put the consumer. While it is still there (it has read
    /// nothing), a segment deleted by retention meanwhile moves it to the new earliest
    /// position: that is what "earliest" asked for. Once it has moved, a deleted position is
    /// an error, never a silent skip.
    started_at_earliest: Option<u64>,
}

/// A durable cursor held by a consumer: its entry in the meta file's consumer table.
struct Durable {
    index: usize,
    name: Box<str>,
}

/// How a consumer in [`Consumer::set_trail`]'s mode keeps its distance: frames from `hold_at`
/// on are held back, until a look at the tail moves that point on.
///
/// Why: a consumer that keeps up reads each line of the log right after the producer wrote
/// part of it, and the producer then has to take the line back to write the rest (the
/// consumer's hardware prefetcher, running ahead of its reads, takes further lines the
/// producer prefetched for writing). Each line crosses between the cores two or three times
/// instead of once. Across processes (32-byte messages, one producer and one consumer on a
/// core each, huge pages, fields off), holding 4 KiB back took the consumer from 41 to 70 M/s.
struct Trail {
    /// The distance asked for.
    bytes: u64,
    /// Where the last look put the hold. Below it the consumer reads without looking again.
    hold_at: u64,
    /// Where polls stop until the next look, once at `hold_at`: `hold_at` itself, 0 to hold
    /// back, or `u64::MAX` to read all (the producers paused).
    until_next_look: u64,
    /// The tail at the last look, and when that look was (nanoseconds since `epoch`).
    seen_tail: u64,
    looked_at: u64,
    /// A tail seen at least [`TRAIL_MAX_HOLD_NS`] ago (and less than twice that): everything
    /// below it was claimed that long ago, and is read whatever the distance. So no message
    /// waits much longer than twice that, however slowly the producers write.
    aged_tail: u64,
    /// The tail that becomes `aged_tail` next, and when it was seen.
    ageing_tail: u64,
    ageing_since: u64,
    clock: quanta::Clock,
    /// The raw reading of `clock` that times count from.
    epoch: u64,
}

/// A consumer at its hold point looks at the tail at most this often: each look takes the
/// tail's line from the producer, whose next claim then waits for it.
const TRAIL_LOOK_INTERVAL_NS: u64 = 250;
/// How long a trailing consumer may leave a message it could read before it reads it anyway
/// (see `Trail::aged_tail`): the latency it adds is at most twice this, plus two look
/// intervals.
const TRAIL_MAX_HOLD_NS: u64 = 2_000;

impl Trail {
    fn new(bytes: u64) -> Trail {
        let clock = clock::ticks();
        Trail {
            bytes,
            hold_at: 0,
            until_next_look: 0,
            seen_tail: 0,
            // Never: the first look is due at once (see `nanos_since`).
            looked_at: u64::MAX,
            aged_tail: 0,
            ageing_tail: 0,
            ageing_since: u64::MAX,
            epoch: clock.raw(),
            clock,
        }
    }

    /// Where a poll from `position` stops: the first position it leaves alone (`u64::MAX`
    /// for none). Touches no shared memory until the consumer reaches `hold_at`.
    #[inline(always)]
    fn stop_for(&mut self, position: u64, tail: &AtomicU64) -> u64 {
        if position < self.hold_at {
            self.hold_at
        } else {
            self.look(position, tail)
        }
    }

    /// At the hold point: reads the tail, no more often than [`TRAIL_LOOK_INTERVAL_NS`], and
    /// stops `bytes` short of it — or at `aged_tail`, if that is further — holding back
    /// entirely while neither is ahead of the consumer. A tail that did not move between two
    /// looks means the producers paused: everything is read then.
    #[inline(never)]
    fn look(&mut self, position: u64, tail: &AtomicU64) -> u64 {
        // A clock that went backwards reads as the epoch, before the last look.
        let now = self.clock.delta_as_nanos(self.epoch, self.clock.raw()) + 1;
        self.look_at(position, || tail.load(Ordering::Relaxed), now)
    }

    /// [`Trail::look`] at `now` (nanoseconds since `epoch`, from 1), reading the tail with
    /// `tail` if a look is due. Relaxed is enough: the tail only says where to stop; frames
    /// are read through their own `Acquire` loads.
    fn look_at(&mut self, position: u64, tail: impl FnOnce() -> u64, now: u64) -> u64 {
        if self.nanos_since(self.looked_at, now) < TRAIL_LOOK_INTERVAL_NS {
            return self.until_next_look;
        }
        let tail = tail();
        let moved = tail != self.seen_tail;
        self.seen_tail = tail;
        self.looked_at = now;
        if self.nanos_since(self.ageing_since, now) >= TRAIL_MAX_HOLD_NS {
            self.aged_tail = self.ageing_tail;
            self.ageing_tail = tail;
            self.ageing_since = now;
        }
        let stop = tail.saturating_sub(self.bytes).max(self.aged_tail);
        self.until_next_look = if !moved {
            u64::MAX
        } else if stop > position {
            self.hold_at = stop;
            stop
        } else {
            0
        };
        self.until_next_look
    }

    /// Nanoseconds from `earlier` to `now`; a clock that went backwards (another core's TSC,
    /// a resumed host) counts as long ago, so that it ends a hold, never prolongs one.
    fn nanos_since(&self, earlier: u64, now: u64) -> u64 {
        now.checked_sub(earlier).unwrap_or(u64::MAX)
    }
}

/// Empty polls in a row (with no message between them) before a look at the tail from `poll`
/// (the hot path reads no shared counter; a consumer stuck at one position may, now and
/// then). In a row: a look takes the tail's line from the producers, whose next claim then
/// waits for it, and a consumer that keeps up finds nothing new between most messages, tens
/// of millions of times a second; while a stalled claim delivers nothing at all.
const POLLS_BETWEEN_STALL_CHECKS: u32 = 256;
/// How long a sleeping consumer sleeps at most while it waits behind an uncommitted claim,
/// and while it waits at the tail: a producer that dies wakes nobody, so the consumer must
/// look by itself.
const STALLED_SLEEP: Duration = Duration::from_millis(10);
const IDLE_SLEEP: Duration = Duration::from_millis(50);
/// Default for [`Consumer::set_claim_timeout`].
///
/// ```
/// assert_eq!(logbus::DEFAULT_CLAIM_TIMEOUT, std::time::Duration::from_secs(2));
/// ```
pub const DEFAULT_CLAIM_TIMEOUT: Duration = Duration::from_secs(2);

struct MappedSegment {
    index: u64,
    data: *const u8,
    segment: Arc<Segment>,
}

/// The undelivered rest of a message set.
#[derive(Clone, Copy)]
struct BatchCursor {
    payload: *const u8,
    payload_len: usize,
    /// Offset of the next record's length prefix in the payload.
    next: usize,
    timestamp_ns: u64,
    producer: u16,
    frame_flags: u8,
    /// Position of the payload's first byte.
    payload_position: u64,
}

/// The stretch of the mapped segment where single messages can be taken one after another
/// with no look at anything but their frames: up to the segment end, or to the point where the
/// next segment is to be prepared if that comes first. This is the consumer's fast path; an
/// empty word there ends a poll at once (but for the periodic look for a stalled claim), and
/// everything else — padding, a message set, a frame that fails its checks or its checksum —
/// is left to `advance_to_message`.
struct PlainFrames {
    data: *const u8,
    geometry: Geometry,
    segment_end: u64,
    stop: u64,
    verify_checksums: bool,
}

/// What [`PlainFrames::at`] finds at a position.
enum PlainFrame {
    /// A committed data frame that lies whole in the segment and passes its checksum when
    /// verifying: its header, word and aligned length.
    Data(*const u8, FrameWord, u64),
    /// Nothing committed yet.
    Empty,
    /// Anything else, for `advance_to_message` to deal with (and report).
    Other,
}

impl PlainFrames {
    /// What is at `position`.
    #[inline(always)]
    fn at(&self, position: u64) -> PlainFrame {
        if position >= self.stop {
            return PlainFrame::Other;
        }
        // SAFETY: `position` is an 8-aligned frame start below `segment_end`, so the frame word
        // is an aligned u64 inside the mapping, which the consumer keeps alive while it uses
        // this.
        let header = unsafe {
            self.data
                .add(self.geometry.offset_in_segment(position) as usize)
        };
        // SAFETY: as above.
        let frame = match read_frame(unsafe { &*(header as *const AtomicU64) }) {
            FrameState::Committed(frame) => frame,
            FrameState::Empty => return PlainFrame::Empty,
            FrameState::Invalid(_) => return PlainFrame::Other,
        };
        let aligned = align_up(frame.length as u64, FRAME_ALIGNMENT);
        if frame.kind != kind::DATA
            || (frame.length as u64) < FRAME_HEADER_LEN
            || position + aligned > self.segment_end
        {
            return PlainFrame::Other;
        }
        if self.verify_checksums && frame.flags & flags::CHECKSUM != 0 {
            // SAFETY: the frame is committed (Acquire above) and lies whole in the mapping
            // (checked above).
            let (expected, actual) = unsafe { stored_and_computed_checksums(header, frame) };
            if actual != expected {
                return PlainFrame::Other;
            }
        }
        PlainFrame::Data(header, frame, aligned)
    }
}

impl BatchCursor {
    /// The record whose length prefix is at `offset` of the payload, and the offset after it.
    ///
    /// # Safety
    ///
    /// `offset` must be the offset of a record of this set, checked by `enter_batch_at`
    /// (which checks that whole records tile the committed payload), and the returned
    /// message must not outlive the mapping the payload lies in (the consumer's `current`
    /// segment, which the borrow of the consumer that every message carries keeps alive).
    #[inline(always)]
    unsafe fn record_at<'a>(&self, offset: usize) -> (Message<'a>, usize) {
        // SAFETY: the caller's promise: a length prefix lies at `offset`, 4-aligned in the
        // 8-aligned payload; committed bytes are never written again.
        let len = u32::from_le(unsafe { self.payload.add(offset).cast::<u32>().read() }) as usize;
        let body = offset + RECORD_LENGTH_LEN as usize;
        let message = Message {
            // SAFETY: as above, the record's `len` bytes follow its prefix.
            payload: unsafe { std::slice::from_raw_parts(self.payload.add(body), len) },
            position: self.payload_position + offset as u64,
            timestamp_ns: self.timestamp_ns,
            producer: self.producer,
            frame_flags: self.frame_flags,
            promised_alignment: RECORD_ALIGNMENT as u8,
        };
        (message, format::next_record_offset(offset, len))
    }
}

// SAFETY: the raw pointers point into mappings owned by the `Arc<Segment>` held beside them
// (the batch cursor's into `current`), which are Send.
unsafe impl Send for Consumer {}

impl Consumer {
    pub(crate) fn new(shared: Arc<Shared>, start: StartAt) -> Result<Consumer> {
        shared.start_preparer();
        let mut consumer = Consumer::unstarted(shared);
        consumer.seek(start)?;
        Ok(consumer)
    }

    fn unstarted(shared: Arc<Shared>) -> Consumer {
        let geometry = shared.geometry;
        Consumer {
            shared,
            geometry,
            position: 0,
            current: None,
            prepare_next_at: 0,
            batch: None,
            verify_checksums: false,
            stall: None,
            empty_polls: 0,
            claim_timeout: DEFAULT_CLAIM_TIMEOUT,
            trail: None,
            durable: None,
            resume_deleted: false,
            started_at_earliest: None,
        }
    }

    /// The consumer of the durable cursor `name`: see [`crate::Log::consumer_named`].
    pub(crate) fn named(shared: Arc<Shared>, name: &str, start: StartAt) -> Result<Consumer> {
        // A new entry holds everything back until the consumer knows where it starts.
        let taken = shared
            .meta
            .take_cursor(name, || shared.earliest_position())?;
        let mut consumer = Consumer::unstarted(shared.clone());
        let started = if taken.created {
            consumer.seek(start)
        } else {
            match consumer.seek(StartAt::Position(taken.position)) {
                // Retention went past the committed position: the first read says so, and
                // names the earliest position to seek to.
                Err(Error::PositionDeleted { .. }) => {
                    consumer.jump_to(taken.position);
                    consumer.resume_deleted = true;
                    Ok(())
                }
                other => other,
            }
        };
        if let Err(e) = started {
            if taken.created {
                shared.meta.drop_new_cursor(taken.index);
            } else {
                shared.meta.release_cursor(taken.index);
            }
            return Err(e);
        }
        if taken.created {
            shared.meta.commit_cursor(taken.index, consumer.position());
        }
        consumer.durable = Some(Durable {
            index: taken.index,
            name: name.into(),
        });
        Ok(consumer)
    }

    /// Moves the consumer to `start`, as if it had just been made there: after
    /// [`Error::PositionDeleted`], say, to the earliest position that error names. A durable
    /// consumer's committed position does not change until it commits.
    ///
    /// ```
    /// use logbus::{Log, LogOptions, StartAt};
    /// let dir = tempfile::tempdir()?;
    /// let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(1 << 16))?;
    /// let first = log.producer()?.offer(b"again")?;
    /// let mut consumer = log.consumer(StartAt::Earliest)?;
    /// assert_eq!(consumer.poll()?.unwrap().payload(), b"again");
    /// consumer.seek(StartAt::Position(first))?;
    /// assert_eq!(consumer.poll()?.unwrap().payload(), b"again");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn seek(&mut self, start: StartAt) -> Result<()> {
        self.resume_deleted = false;
        let (position, record) = match start {
            StartAt::Earliest => (self.shared.earliest_position()?, None),
            StartAt::Latest => (self.shared.committed_end()?, None),
            StartAt::Position(position) => self.locate(position)?,
        };
        self.jump_to(position);
        self.stall = None;
        self.started_at_earliest = (start == StartAt::Earliest).then_some(position);
        if let Some(record_offset) = record {
            // `locate` saw this message set committed; enter it at the record asked for.
            self.enter_batch_at(record_offset)?;
        }
        Ok(())
    }

    /// The name of this consumer's durable cursor, if it was made by
    /// [`crate::Log::consumer_named`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = logbus::Log::create(dir.path(), &logbus::LogOptions::new().segment_capacity(1 << 16))?;
    /// assert_eq!(log.consumer_named("billing")?.name(), Some("billing"));
    /// assert_eq!(log.consumer(logbus::StartAt::Earliest)?.name(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.durable.as_ref().map(|durable| &*durable.name)
    }

    /// Commits this consumer's position (that of the next message it will read) to its
    /// durable cursor: the next holder of the name resumes there. Call it once the messages
    /// read so far are processed; those read after it are read again by the next holder if
    /// this one dies first (at-least-once). Two stores to the meta file: no lock, no system
    /// call. Fails with [`Error::NotDurable`] for a consumer made without a name.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = logbus::Log::create(dir.path(), &logbus::LogOptions::new().segment_capacity(1 << 16))?;
    /// log.producer()?.offer(b"invoice")?;
    /// let mut billing = log.consumer_named("billing")?;
    /// billing.poll()?.expect("the invoice");
    /// let committed = billing.commit_position()?;
    /// assert_eq!(committed, log.tail());
    /// assert_eq!(log.consumers()[0].position, committed);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn commit_position(&self) -> Result<u64> {
        let Some(durable) = &self.durable else {
            return Err(Error::NotDurable);
        };
        let position = self.position();
        self.shared.meta.commit_cursor(durable.index, position);
        Ok(position)
    }

    /// Commits a given position to this consumer's durable cursor: where the next holder
    /// resumes. It must be the position of a message this consumer has read (every message
    /// from it on is read again), or its own [`Consumer::position`]; a position past that is
    /// [`Error::InvalidPosition`]. For processing that finishes messages out of step with
    /// reading them.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = logbus::Log::create(dir.path(), &logbus::LogOptions::new().segment_capacity(1 << 16))?;
    /// let mut producer = log.producer()?;
    /// producer.offer(b"one")?;
    /// let second = producer.offer(b"two")?;
    /// let mut billing = log.consumer_named("billing")?;
    /// billing.poll_batch(10, |_| {})?;
    /// billing.commit_position_at(second)?; // "two" is not processed yet
    /// drop(billing);
    /// let mut billing = log.consumer_named("billing")?;
    /// assert_eq!(billing.poll()?.unwrap().payload(), b"two");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit_position_at(&self, position: u64) -> Result<()> {
        let Some(durable) = &self.durable else {
            return Err(Error::NotDurable);
        };
        if position > self.position() || position % RECORD_ALIGNMENT != 0 {
            return Err(Error::InvalidPosition {
                position,
                detail: format!(
                    "a consumer commits the position of a message it has read, or its own \
                     position ({})",
                    self.position()
                ),
            });
        }
        self.shared.meta.commit_cursor(durable.index, position);
        Ok(())
    }

    /// Checks the CRC32C of every payload before handing it out (off by default: producers
    /// in shared memory cannot tear a committed frame). A mismatch is
    /// [`Error::ChecksumMismatch`], and the consumer stays at that message.
    pub fn verify_checksums(&mut self, on: bool) -> &mut Self {
        self.verify_checksums = on;
        self
    }

    /// How long a claim of a live producer may stay uncommitted before this consumer turns
    /// it into padding and moves on (default [`DEFAULT_CLAIM_TIMEOUT`]); that producer's
    /// commit then fails with [`Error::ClaimRevoked`]. A claim of a dead producer is padded
    /// as soon as the consumer notices, within about 10 ms when it waits.
    pub fn set_claim_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.claim_timeout = timeout;
        self
    }

    /// Throughput mode for a consumer that busy-polls with [`Consumer::poll_batch`]: while
    /// the producers are writing, stay about `bytes` behind the tail (4096 is a good start;
    /// 0, the default, turns it off). It holds no message back more than about 4.5 µs after
    /// its claim, and none once the producers pause, so every message is still
    /// delivered, in order; what it saves is the cache lines the consumer would otherwise
    /// take from the producer while it is still writing them. Across processes on a 2-core
    /// host, 32-byte messages went from about 41 to 70 million/s. Not for a consumer that waits for single
    /// messages ([`Consumer::poll`], [`Consumer::wait`] and [`Consumer::wait_batch`] ignore
    /// it): the hold is added latency.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = logbus::Log::create(dir.path(), &logbus::LogOptions::new().segment_capacity(1 << 16))?;
    /// let mut consumer = log.consumer(logbus::StartAt::Earliest)?;
    /// consumer.set_trail(4096);
    /// log.producer()?.offer(b"last word")?;
    /// // The producer has paused: what is there comes out (after a poll or two).
    /// let mut seen = Vec::new();
    /// while seen.is_empty() {
    ///     consumer.poll_batch(64, |m| seen.push(m.payload().to_vec()))?;
    /// }
    /// assert_eq!(seen, [b"last word".to_vec()]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_trail(&mut self, bytes: u64) -> &mut Self {
        self.trail = (bytes > 0).then(|| Trail::new(bytes));
        self
    }

    /// The position of the next message this consumer will read (or of the frame it waits at).
    pub fn position(&self) -> u64 {
        match &self.batch {
            Some(batch) => batch.payload_position + batch.next as u64,
            None => self.position,
        }
    }

    /// The next committed message, or `None` if there is none yet. Never blocks.
    #[inline]
    pub fn poll(&mut self) -> Result<Option<Message<'_>>> {
        match self
            .plain_frames()
            .map_or(PlainFrame::Other, |frames| frames.at(self.position))
        {
            PlainFrame::Data(header, frame, aligned) => {
                let position = self.position;
                self.position += aligned;
                self.empty_polls = 0;
                // SAFETY: `at` found a committed data frame, whole inside the segment that
                // `self.current` keeps mapped for as long as the borrow of `self`.
                return Ok(Some(unsafe { frame_message(header, frame, position) }));
            }
            PlainFrame::Empty if self.quiet_empty_poll() => return Ok(None),
            _ => {}
        }
        if self.poll_ready()? {
            Ok(Some(self.take_message()))
        } else {
            Ok(None)
        }
    }

    /// Counts an empty poll that the fast path saw (nothing committed at the position, in the
    /// mapped segment, before its prepare point): true if that is all it needs, false when
    /// the look for a stalled claim is due, which `poll_ready` takes.
    #[inline(always)]
    fn quiet_empty_poll(&mut self) -> bool {
        if self.empty_polls + 1 < POLLS_BETWEEN_STALL_CHECKS {
            self.empty_polls += 1;
            true
        } else {
            false
        }
    }

    /// `advance_to_message`, plus, every few hundred empty polls, a look for a claim that
    /// stays uncommitted (its producer dead or stuck).
    #[inline]
    fn poll_ready(&mut self) -> Result<bool> {
        if self.advance_to_message()? {
            self.empty_polls = 0;
            return Ok(true);
        }
        self.empty_polls += 1;
        if self.empty_polls < POLLS_BETWEEN_STALL_CHECKS {
            return Ok(false);
        }
        self.empty_polls = 0;
        Ok(self.unblock_stall()? && self.advance_to_message()?)
    }

    /// Hands up to `max` committed messages to `handler`, in order, and returns how many.
    /// Reads one linear stretch of the mapping, with no call per message.
    /// With [`Consumer::set_trail`], it may hold back messages the producers wrote last.
    #[inline]
    pub fn poll_batch(&mut self, max: usize, handler: impl FnMut(Message<'_>)) -> Result<usize> {
        let stop = match &mut self.trail {
            Some(trail) => trail.stop_for(self.position, self.shared.meta.tail()),
            None => u64::MAX,
        };
        self.poll_batch_before(stop, max, handler)
    }

    /// `poll_batch`, taking no frame at or past `stop`.
    #[inline(always)]
    fn poll_batch_before(
        &mut self,
        stop: u64,
        max: usize,
        mut handler: impl FnMut(Message<'_>),
    ) -> Result<usize> {
        let mut delivered = 0;
        while delivered < max {
            if self.batch.is_some() {
                delivered += self.take_records(max - delivered, &mut handler);
                continue;
            }
            if self.position >= stop {
                break;
            }
            let (taken, at_empty) = self.take_frames(stop, max - delivered, &mut handler);
            delivered += taken;
            if delivered == max
                || self.position >= stop
                || (at_empty && self.quiet_empty_poll())
                || !self.poll_ready()?
            {
                break;
            }
            if self.batch.is_none() {
                handler(self.take_message());
                delivered += 1;
            }
        }
        if delivered > 0 {
            self.empty_polls = 0;
        }
        Ok(delivered)
    }

    /// Hands the committed data frames that follow one another in the mapped segment to
    /// `handler`, up to `max`, and returns how many, and whether it stopped where nothing is
    /// committed yet: the loop single messages go through (see [`PlainFrames`]). Whatever
    /// else ends it is left for `advance_to_message` to deal with (and report) as a `poll`
    /// would.
    #[inline]
    fn take_frames(
        &mut self,
        stop: u64,
        max: usize,
        handler: &mut impl FnMut(Message<'_>),
    ) -> (usize, bool) {
        let Some(mut frames) = self.plain_frames() else {
            return (0, false);
        };
        frames.stop = frames.stop.min(stop);
        let mut taken = 0;
        while taken < max {
            let position = self.position;
            let (header, frame, aligned) = match frames.at(position) {
                PlainFrame::Data(header, frame, aligned) => (header, frame, aligned),
                PlainFrame::Empty => return (taken, true),
                PlainFrame::Other => break,
            };
            // Past the message before the handler has it, as `poll` is: a handler that
            // panics is not handed it again.
            self.position = position + aligned;
            // SAFETY: `at` found a committed data frame, whole inside the segment that
            // `self.current` keeps mapped for as long as the borrow of `self`.
            handler(unsafe { frame_message(header, frame, position) });
            taken += 1;
        }
        (taken, false)
    }

    /// Where plain frames may be taken from the consumer's position on, or `None` if it is
    /// inside a set or its segment is not the one mapped.
    #[inline(always)]
    fn plain_frames(&self) -> Option<PlainFrames> {
        let current = self.current.as_ref()?;
        if self.batch.is_some() || current.index != self.geometry.segment_index(self.position) {
            return None;
        }
        let segment_end = self.geometry.segment_end(self.position);
        Some(PlainFrames {
            data: current.data,
            geometry: self.geometry,
            segment_end,
            stop: segment_end.min(self.prepare_next_at),
            verify_checksums: self.verify_checksums,
        })
    }

    /// Hands up to `max` records of the message set being read to `handler`, and returns how
    /// many. The loop a set's records go through: one length read, one compare and one call
    /// each, with no look at the frame or segment in between (`enter_batch_at` checked them
    /// all before the first was handed out).
    #[inline]
    fn take_records(&mut self, max: usize, handler: &mut impl FnMut(Message<'_>)) -> usize {
        let Some(set) = self.batch else {
            return 0;
        };
        let mut offset = set.next;
        let mut taken = 0;
        while taken < max && offset < set.payload_len {
            // SAFETY: `enter_batch_at` checked the set's records, and `offset` is one of them.
            let (message, next) = unsafe { set.record_at(offset) };
            // Past the record before the handler has it, as in `take_frames`.
            self.move_in_set_to(next);
            handler(message);
            offset = next;
            taken += 1;
        }
        taken
    }

    /// Moves the set being read on to its record at `next`, or out of it past its end.
    #[inline(always)]
    fn move_in_set_to(&mut self, next: usize) {
        match &mut self.batch {
            Some(batch) if next < batch.payload_len => batch.next = next,
            _ => self.batch = None,
        }
    }

    /// The next message, waiting for it if there is none: first spinning briefly, then
    /// sleeping on the log's futex until a producer commits. `None` if `timeout` passes.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Option<Message<'_>>> {
        if self.wait_for_message(timeout)? {
            Ok(Some(self.take_message()))
        } else {
            Ok(None)
        }
    }

    /// Like [`Consumer::poll_batch`], but first waits (as [`Consumer::wait`]) until at least
    /// one message is there. Returns 0 only if `timeout` passed.
    pub fn wait_batch(
        &mut self,
        max: usize,
        timeout: Option<Duration>,
        handler: impl FnMut(Message<'_>),
    ) -> Result<usize> {
        if max == 0 || !self.wait_for_message(timeout)? {
            return Ok(0);
        }
        self.poll_batch_before(u64::MAX, max, handler)
    }

    fn wait_for_message(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let backoff = Backoff::new();
        while !backoff.is_completed() {
            if self.advance_to_message()? {
                return Ok(true);
            }
            backoff.snooze();
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let shared = self.shared.clone();
        loop {
            if self.unblock_stall()? && self.advance_to_message()? {
                return Ok(true);
            }
            let slice = if self.stall.is_some() {
                STALLED_SLEEP
            } else {
                IDLE_SLEEP
            };
            let wake_at = Instant::now() + slice;
            let slice_end = deadline.map_or(wake_at, |deadline| deadline.min(wake_at));
            let mut failure = None;
            let ready = shared.meta.wake().wait_until(
                || match self.advance_to_message() {
                    Ok(ready) => ready,
                    Err(e) => {
                        failure = Some(e);
                        true
                    }
                },
                Some(slice_end),
            );
            if let Some(e) = failure {
                return Err(e);
            }
            if ready {
                return Ok(true);
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Ok(false);
            }
        }
    }

    /// Called with nothing to read: if the consumer waits behind the tail at a claim that has
    /// stayed uncommitted past the grace period, asks the protocol to pad it when its owner
    /// is dead (or has held it past the claim timeout). True if the frame word changed.
    #[cold]
    fn unblock_stall(&mut self) -> Result<bool> {
        if self.batch.is_some() {
            self.stall = None;
            return Ok(false);
        }
        unblock_if_stalled(
            &self.shared,
            self.position,
            &mut self.stall,
            self.claim_timeout,
        )
    }

    /// Moves over padding and segment ends until a message is ready to take; false if the
    /// consumer must wait. Touches only the frame it is at (and, once a segment, the count of
    /// segments published).
    #[inline]
    fn advance_to_message(&mut self) -> Result<bool> {
        if self.batch.is_some() {
            return Ok(true);
        }
        loop {
            let Some(word) = self.word_at_position()? else {
                return Ok(false);
            };
            let frame = match read_frame(word) {
                FrameState::Committed(frame) => frame,
                FrameState::Empty => return Ok(false),
                FrameState::Invalid(frame) => {
                    return Err(Error::CorruptFrame {
                        position: self.position,
                        detail: format!("negative length {}", frame.length),
                    })
                }
            };
            let frame_len = self.check_frame(frame)?;
            match frame.kind {
                kind::DATA => {
                    if self.verify_checksums && frame.flags & flags::CHECKSUM != 0 {
                        self.verify_frame_checksum(frame)?;
                    }
                    return Ok(true);
                }
                kind::PADDING => self.position += frame_len,
                kind::BATCH => {
                    self.enter_batch_at(0)?;
                    if self.batch.is_some() {
                        return Ok(true);
                    }
                }
                other => {
                    return Err(Error::CorruptFrame {
                        position: self.position,
                        detail: format!("unknown frame kind {other}"),
                    })
                }
            }
        }
    }

    /// Delivers the message `advance_to_message` found, and moves past it.
    #[inline]
    fn take_message(&mut self) -> Message<'_> {
        if let Some(batch) = &self.batch {
            // SAFETY: `enter_batch_at` checked the set's records, and the previous takes left
            // `next` at one of them.
            let (message, next) = unsafe { batch.record_at(batch.next) };
            self.move_in_set_to(next);
            return message;
        }
        let header = self.frame_ptr();
        // SAFETY: `advance_to_message` saw this frame committed (Acquire) and checked that it
        // lies inside the segment; a committed frame is never written again, and the mapping
        // lives in `self.current` for as long as the returned borrow of `self`.
        let word = unsafe { (*(header as *const AtomicU64)).load(Ordering::Relaxed) };
        let frame = FrameWord::unpack(word);
        // SAFETY: as above.
        let message = unsafe { frame_message(header, frame, self.position) };
        self.position += align_up(frame.length as u64, FRAME_ALIGNMENT);
        message
    }

    /// The frame word at `position`, mapping its segment if needed; `None` while that
    /// segment has not been published yet.
    #[inline(always)]
    fn word_at_position(&mut self) -> Result<Option<&AtomicU64>> {
        let index = self.geometry.segment_index(self.position);
        if self.current.as_ref().is_none_or(|c| c.index != index) && !self.switch_to(index)? {
            return Ok(None);
        }
        if self.position >= self.prepare_next_at {
            self.prepare_next();
        }
        // SAFETY: frame starts are 8-aligned in a 4096-aligned data area, and the mapping
        // is kept alive by `self.current` for as long as the borrow of `self`.
        Ok(Some(unsafe { &*(self.frame_ptr() as *const AtomicU64) }))
    }

    #[inline(always)]
    fn frame_ptr(&self) -> *const u8 {
        let current = self.current.as_ref().expect("mapped by word_at_position");
        // SAFETY: the offset is below the capacity, inside the mapped data area.
        unsafe {
            current
                .data
                .add(self.geometry.offset_in_segment(self.position) as usize)
        }
    }

    /// Checks that a frame's length is possible and that it ends inside its segment; returns
    /// its aligned length.
    #[inline(always)]
    fn check_frame(&self, frame: FrameWord) -> Result<u64> {
        format::frame_extent(
            frame,
            self.position,
            self.geometry.segment_end(self.position),
        )
        .map_err(|detail| Error::CorruptFrame {
            position: self.position,
            detail,
        })
    }

    fn verify_frame_checksum(&self, frame: FrameWord) -> Result<()> {
        // SAFETY: the frame is committed and lies inside the mapped segment (check_frame).
        let (expected, actual) = unsafe { stored_and_computed_checksums(self.frame_ptr(), frame) };
        if actual != expected {
            return Err(Error::ChecksumMismatch {
                position: self.position,
                expected,
                actual,
            });
        }
        Ok(())
    }

    /// Enters the committed message set at `position`, at the record `record_offset` bytes
    /// into its payload, after checking every record's length (and the set's checksum).
    fn enter_batch_at(&mut self, record_offset: usize) -> Result<()> {
        let Some(word) = self.word_at_position()? else {
            unreachable!("called at a committed frame");
        };
        let FrameState::Committed(frame) = read_frame(word) else {
            unreachable!("called at a committed frame");
        };
        if self.verify_checksums && frame.flags & flags::CHECKSUM != 0 {
            self.verify_frame_checksum(frame)?;
        }
        let header = self.frame_ptr();
        let payload_len = frame.length as usize - FRAME_HEADER_LEN as usize;
        // SAFETY: the frame is committed and lies inside the mapped segment (check_frame).
        let payload = unsafe {
            std::slice::from_raw_parts(header.add(FRAME_HEADER_LEN as usize), payload_len)
        };
        if let Err(detail) = format::check_records(payload) {
            return Err(Error::CorruptFrame {
                position: self.position,
                detail,
            });
        }
        let batch = BatchCursor {
            payload: payload.as_ptr(),
            payload_len,
            next: record_offset,
            // SAFETY: as above.
            timestamp_ns: unsafe { read_header_tail(header).1 },
            producer: frame.producer,
            frame_flags: frame.flags,
            payload_position: self.position + FRAME_HEADER_LEN,
        };
        self.position += align_up(frame.length as u64, FRAME_ALIGNMENT);
        self.batch = (record_offset < payload_len).then_some(batch);
        Ok(())
    }

    fn jump_to(&mut self, position: u64) {
        self.position = position;
        self.batch = None;
        self.prepare_next_at = position;
    }

    /// Makes segment `index` current; false if it is not published yet.
    #[cold]
    #[inline(never)]
    fn switch_to(&mut self, index: u64) -> Result<bool> {
        if self.resume_deleted {
            return Err(Error::PositionDeleted {
                position: self.position,
                earliest: self.shared.earliest_position()?,
            });
        }
        if self
            .shared
            .meta
            .segments_published()
            .load(Ordering::Acquire)
            <= index
        {
            return Ok(false);
        }
        let Some(segment) = self.shared.segment(index, false, Prefault::Read)? else {
            // Published once, gone now: deleted by retention if it lies before the earliest
            // segment, else lost — either way waiting would never end.
            let earliest = self.shared.earliest_position()?;
            if self.position < earliest && self.started_at_earliest == Some(self.position) {
                self.jump_to(earliest);
                self.started_at_earliest = Some(earliest);
                return self.switch_to(self.geometry.segment_index(earliest));
            }
            if self.position < earliest {
                return Err(Error::PositionDeleted {
                    position: self.position,
                    earliest,
                });
            }
            return Err(Error::MissingSegment {
                path: self
                    .shared
                    .dir
                    .join(format::segment_file_name(index * self.geometry.capacity())),
                position: self.position,
            });
        };
        let old = self.current.replace(MappedSegment {
            index,
            data: segment.data_ptr(),
            segment,
        });
        if let Some(old) = old {
            self.shared.retire_segment(old.segment);
        }
        // Ask for the next segment at once: its producer made it as it entered this one.
        self.prepare_next_at = self.position;
        Ok(true)
    }

    /// Asks the preparer to map the next segment ahead of need once it has been published;
    /// until it is, looks again every sixteenth of a segment (a consumer right behind the
    /// producers gets there about when their preparer publishes it).
    #[cold]
    #[inline(never)]
    fn prepare_next(&mut self) {
        let next_index = self.geometry.segment_index(self.position) + 1;
        let segment_end = self.geometry.segment_end(self.position);
        let published = self
            .shared
            .meta
            .segments_published()
            .load(Ordering::Acquire);
        if published > next_index {
            self.shared.prepare_segment(next_index, false);
            self.prepare_next_at = segment_end;
        } else {
            self.prepare_next_at = (self.position + self.geometry.capacity() / 16).min(segment_end);
        }
    }

    /// Checks that `position` starts a message, by walking the frames of its segment from
    /// the segment's start. Returns the frame to start at and, for a record inside a message
    /// set, the record's offset in the set's payload.
    fn locate(&mut self, position: u64) -> Result<(u64, Option<usize>)> {
        let invalid = |detail: String| Error::InvalidPosition { position, detail };
        let earliest = self.shared.earliest_position()?;
        if position < earliest {
            return Err(Error::PositionDeleted { position, earliest });
        }
        let mut tail = self.shared.meta.tail().load(Ordering::Acquire);
        if position > tail {
            tail = self.shared.committed_end()?;
        }
        if position > tail {
            return Err(invalid(format!(
                "it is beyond the tail of the log ({tail})"
            )));
        }
        if position % RECORD_ALIGNMENT != 0 {
            return Err(invalid("messages start at multiples of 4".into()));
        }
        if position == tail || self.geometry.offset_in_segment(position) == 0 {
            return Ok((position, None));
        }
        self.jump_to(position - self.geometry.offset_in_segment(position));
        let mut frame_start = self.position;
        while self.position < position {
            let Some(word) = self.word_at_position()? else {
                return Err(invalid("its segment is missing".into()));
            };
            let frame = match read_frame(word) {
                FrameState::Committed(frame) => frame,
                FrameState::Empty | FrameState::Invalid(_) => {
                    return Err(invalid(format!(
                        "the claim at {} before it is not committed yet; try again",
                        self.position
                    )))
                }
            };
            frame_start = self.position;
            let frame_len = self.check_frame(frame)?;
            if frame.kind == kind::BATCH && position < frame_start + frame_len {
                let payload_start = frame_start + FRAME_HEADER_LEN;
                let wanted = position.checked_sub(payload_start);
                self.enter_batch_at(0)?;
                if let (Some(batch), Some(wanted)) = (self.batch, wanted) {
                    let mut offset = 0u64;
                    while offset < batch.payload_len as u64 {
                        if offset == wanted {
                            return Ok((frame_start, Some(offset as usize)));
                        }
                        // SAFETY: check_records validated every record of this committed set,
                        // which stays mapped by `self.current`.
                        let len =
                            unsafe { batch.payload.add(offset as usize).cast::<u32>().read() };
                        offset =
                            format::next_record_offset(offset as usize, u32::from_le(len) as usize)
                                as u64;
                    }
                }
                return Err(invalid(format!(
                    "it falls inside the message set at {frame_start}, between its records"
                )));
            }
            self.position = frame_start + frame_len;
        }
        if self.position != position {
            return Err(invalid(format!(
                "it falls inside the frame that starts at {frame_start}"
            )));
        }
        Ok((position, None))
    }
}

/// The checksum a committed frame's header holds, and the one its payload has.
///
/// # Safety
///
/// `header` must point at a committed frame (its word seen with `Acquire`) of `frame.length`
/// bytes, at least a header's, that lies whole inside a mapping.
unsafe fn stored_and_computed_checksums(header: *const u8, frame: FrameWord) -> (u32, u32) {
    // SAFETY: the caller's promise; committed bytes are never written again.
    let (stored, payload) = unsafe {
        (
            read_header_tail(header).0,
            std::slice::from_raw_parts(
                header.add(FRAME_HEADER_LEN as usize),
                frame.length as usize - FRAME_HEADER_LEN as usize,
            ),
        )
    };
    (stored, format::checksum(payload))
}

/// The message in the committed data frame at `header`, whose frame word is `frame` and
/// which lies at `position`.
///
/// # Safety
///
/// `header` must point at a committed data frame (its word seen with `Acquire`) that lies
/// whole inside a mapping, with `frame.length` at least the header's length, and the message
/// must not outlive that mapping.
#[inline(always)]
unsafe fn frame_message<'a>(header: *const u8, frame: FrameWord, position: u64) -> Message<'a> {
    let payload_len = frame.length as usize - FRAME_HEADER_LEN as usize;
    Message {
        // SAFETY: the caller's promise: the payload follows the header inside the mapping,
        // and committed bytes are never written again.
        payload: unsafe {
            std::slice::from_raw_parts(header.add(FRAME_HEADER_LEN as usize), payload_len)
        },
        position,
        // SAFETY: as above; the header's tail is readable and aligned.
        timestamp_ns: unsafe { read_header_tail(header).1 },
        producer: frame.producer,
        frame_flags: frame.flags,
        promised_alignment: FRAME_ALIGNMENT as u8,
    }
}

/// Reads the checksum and timestamp behind a frame word.
///
/// # Safety
/// `header` must point at a committed, 8-aligned frame header inside a live mapping.
#[inline(always)]
unsafe fn read_header_tail(header: *const u8) -> (u32, u64) {
    // SAFETY: by the contract above, offsets 8..24 are readable and aligned for their types.
    unsafe {
        (
            header
                .add(std::mem::offset_of!(FrameHeader, checksum))
                .cast::<u32>()
                .read(),
            header
                .add(std::mem::offset_of!(FrameHeader, timestamp))
                .cast::<u64>()
                .read(),
        )
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(durable) = &self.durable {
            // The entry and its committed position stay: only the hold is let go.
            self.shared.meta.release_cursor(durable.index);
        }
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("log", &self.shared.dir)
            .field("position", &self.position())
            .field("name", &self.name())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A producer writes a 56-byte frame every `step_ns` while a consumer with a trail far
    /// longer than everything written polls every `poll_ns`, reading up to where each poll
    /// stops. Returns the longest time any frame waited between its claim and its reading (or
    /// the end, for frames not read).
    fn longest_wait(step_ns: u64, poll_ns: u64, duration_ns: u64) -> u64 {
        let mut trail = Trail::new(1 << 40);
        let (mut tail, mut position, mut worst) = (0u64, 0u64, 0u64);
        let mut claimed = std::collections::VecDeque::new();
        let mut now = 1;
        while now < duration_ns {
            now += poll_ns;
            while tail / 56 * step_ns < now {
                claimed.push_back((tail, tail / 56 * step_ns));
                tail += 56;
            }
            let stop = trail.look_at(position, || tail, now);
            position = position.max(stop.min(tail));
            while claimed.front().is_some_and(|&(at, _)| at < position) {
                let (_, when) = claimed.pop_front().unwrap();
                worst = worst.max(now - when);
            }
        }
        // And the oldest frame not read yet has waited this long so far.
        claimed
            .front()
            .map_or(worst, |&(_, when)| worst.max(now - when))
    }

    /// However far behind it asked to stay, a trailing consumer reads each frame within about
    /// twice `TRAIL_MAX_HOLD_NS` (plus two look intervals and a poll) of its claim, at any rate
    /// of writing: it never waits for the producers to get that far ahead.
    #[test]
    fn a_trail_holds_no_frame_much_longer_than_twice_the_longest_hold() {
        let bound = 2 * (TRAIL_MAX_HOLD_NS + TRAIL_LOOK_INTERVAL_NS);
        for (step_ns, poll_ns) in [(10, 30), (50, 30), (100, 300), (1_000, 30), (20, 1_000)] {
            let worst = longest_wait(step_ns, poll_ns, 10_000_000);
            assert!(
                worst <= bound + poll_ns + step_ns,
                "a frame every {step_ns} ns, a poll every {poll_ns} ns: one waited {worst} ns"
            );
        }
    }

    /// While producers write fast, a trailing consumer stops `bytes` short of the tail (it
    /// does not read the frames being written); when they stop, it reads to the tail.
    #[test]
    fn a_trail_keeps_its_distance_from_a_fast_producer_and_catches_up_when_it_stops() {
        let mut trail = Trail::new(4096);
        let mut now = 1;
        let mut tail = 0;
        let mut position = 0;
        for _ in 0..1_000 {
            now += 300;
            tail += 56 * 20;
            position = position.max(trail.look_at(position, || tail, now).min(tail));
            assert!(
                tail - position >= 4096 - 56 || position == 0,
                "{position} of {tail}"
            );
        }
        now += 300;
        let stop = trail.look_at(position, || tail, now);
        assert_eq!(stop, u64::MAX, "the tail stood still: read everything");
    }
}
