//! Producers: write frames in place into the mapped segments, through the claim protocol of
//! [`crate::protocol`].

use crate::format::{
    align_up, flags, frame_word, kind, log_flags, FrameHeader, FRAME_ALIGNMENT, FRAME_HEADER_LEN,
    RECORD_ALIGNMENT, RECORD_LENGTH_LEN,
};
use crate::log::Shared;
use crate::protocol::{self, ClaimRecord, FrameMemory, Geometry, WakeWord};
use crate::segment::{Prefault, Segment};
use crate::sync::{producer_barrier_kind, AtomicU64, BarrierKind};
use crate::{clock, format, Error, Result};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// Appends messages to a log. Make one per thread with [`crate::Log::producer`]: each holds
/// a slot in the log's producer table (its number is in every frame it writes) and its own
/// view of the mapped segments. The hot path — claim, write, commit — takes no lock, makes
/// no system call and allocates nothing.
///
/// ```
/// use logbus::{Log, LogOptions, StartAt};
/// let dir = tempfile::tempdir()?;
/// let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(1 << 16))?;
/// let mut producer = log.producer()?;
///
/// producer.offer(b"copied in")?;
///
/// let mut claim = producer.claim(5)?;     // written in place, in the mapping
/// claim.copy_from_slice(b"claim");
/// claim.commit()?;
///
/// drop(producer.claim(100)?);             // dropped uncommitted: aborted, readers skip it
///
/// let mut consumer = log.consumer(StartAt::Earliest)?;
/// assert_eq!(consumer.poll()?.unwrap().payload(), b"copied in");
/// assert_eq!(consumer.poll()?.unwrap().payload(), b"claim");
/// assert!(consumer.poll()?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Producer {
    shared: Arc<Shared>,
    memory: ProducerMemory,
    words: MetaWords,
    slot: u16,
    barrier: BarrierKind,
    frame_flags: u8,
    /// The flags and slot fields of every frame word this producer commits, packed once.
    frame_word_fields: u64,
    max_payload: usize,
    /// When a claim reaches this position, the next segment is mapped (and made if needed):
    /// see [`prepare_point`].
    prepare_next_at: u64,
    /// Bounded mode, off the hot path: the end of this producer's last claim (the tail as it
    /// last saw it), and the tail up to which it may claim without looking at the consumer
    /// table again (`u64::MAX` when the log is not bounded, so the check never fires).
    known_tail: u64,
    claim_until: u64,
    /// The log's bound, 0 if it has none.
    max_lag: u64,
    /// Where frame timestamps come from (read only when the log keeps them).
    clock: clock::FrameClock,
    /// The log's only producer while it lives (`Log::exclusive_producer`): it claims nothing,
    /// and moves the tail after each commit (`protocol::claim_exclusive`).
    exclusive: bool,
    /// Claims may land on old bytes: in a single-producer log, recycled segments are zeroed
    /// only in their first word. The producer then zeroes the alignment a frame or a record
    /// has after its payload, so that only bytes the caller was handed (and left unwritten)
    /// can carry an older message into a frame.
    old_bytes: bool,
}

/// The words of the meta file that every claim and commit touches, found once: reaching them
/// through `shared` on the hot path cost a chain of dependent loads and a bounds check of the
/// slot each time.
///
/// Invariant: the pointers point into the meta file's mapping of the `Shared` they were found
/// in, and a `MetaWords` lives only inside the `Producer` that holds that `Shared` (so the
/// mapping, which never moves, outlives it).
struct MetaWords {
    tail: *const AtomicU64,
    claim_record: *const ClaimRecord,
    wake: *const WakeWord,
}

impl MetaWords {
    fn new(shared: &Shared, slot: u16) -> MetaWords {
        MetaWords {
            tail: shared.meta.tail(),
            claim_record: shared.meta.claim_record(slot),
            wake: shared.meta.wake(),
        }
    }

    #[inline(always)]
    fn tail(&self) -> &AtomicU64 {
        // SAFETY: by the type's invariant, the mapping outlives `self`; the word is an atomic,
        // which any thread or process may use at once.
        unsafe { &*self.tail }
    }

    #[inline(always)]
    fn claim_record(&self) -> &ClaimRecord {
        // SAFETY: as for `tail`.
        unsafe { &*self.claim_record }
    }

    #[inline(always)]
    fn wake(&self) -> &WakeWord {
        // SAFETY: as for `tail`.
        unsafe { &*self.wake }
    }
}

/// This producer's mapping of the segment it writes in. The next one comes from the log's
/// segment cache, where the preparer thread put it.
struct ProducerMemory {
    shared: Arc<Shared>,
    geometry: Geometry,
    /// The index and data area of the segment claims go into, which every claim reads:
    /// plain fields, not behind the `Option`, so the hot path tests nothing but the index.
    /// `u64::MAX` (no such segment) until the first is mapped.
    current_index: u64,
    current_data: *mut u8,
    /// The line boundary up to which an exclusive producer has prefetched (see
    /// `prefetch_ahead`), and the claim position from which it prefetches more: that line
    /// less the distance, kept so that the hot path is one compare.
    prefetched_to: u64,
    prefetch_at: u64,
    /// Keeps `current_data` mapped.
    current: Option<Arc<Segment>>,
}

// SAFETY: the raw pointers point into mappings owned by the `Arc<Segment>` held beside them
// and by the `Arc<Shared>` (the meta file's, for `MetaWords`), which live as long as the
// producer wherever it goes; what they point at is shared memory that other threads and
// processes use at once anyway (the meta words are atomics); nothing thread-local is involved.
unsafe impl Send for Producer {}

impl Producer {
    pub(crate) fn new(shared: Arc<Shared>, exclusive: bool) -> Result<Producer> {
        let slot = shared.meta.acquire_producer_slot(exclusive)?;
        shared.start_preparer();
        let geometry = shared.geometry;
        let log_flags = shared.spec.log_flags;
        let frame_flags = (if log_flags & log_flags::CHECKSUMS != 0 {
            flags::CHECKSUM
        } else {
            0
        }) | (if log_flags & log_flags::TIMESTAMPS != 0 {
            flags::TIMESTAMP
        } else {
            0
        });
        let tail = shared
            .meta
            .tail()
            .load(std::sync::atomic::Ordering::Acquire);
        let mut producer = Producer {
            memory: ProducerMemory {
                shared: shared.clone(),
                geometry,
                current_index: u64::MAX,
                current_data: std::ptr::null_mut(),
                prefetched_to: 0,
                prefetch_at: 0,
                current: None,
            },
            words: MetaWords::new(&shared, slot),
            slot,
            barrier: producer_barrier_kind(),
            frame_flags,
            frame_word_fields: frame_word(0, 0, frame_flags, slot),
            max_payload: shared.max_payload_len(),
            prepare_next_at: 0,
            known_tail: tail,
            // Bounded: look at the consumer table before the first claim.
            claim_until: if shared.meta.policy().bounded_lag == 0 {
                u64::MAX
            } else {
                0
            },
            max_lag: shared.meta.policy().bounded_lag,
            clock: clock::FrameClock::new(),
            exclusive,
            old_bytes: log_flags & log_flags::SINGLE_PRODUCER != 0,
            shared,
        };
        // Map the segment the tail is in now, so the first offer does not pay for it; and
        // publish what an exclusive producer that died before moving the tail committed
        // there, before claiming over it.
        let mut tail = tail;
        loop {
            match producer.publish_committed().and_then(|published| {
                tail = published;
                producer.memory.data_ptr(tail)
            }) {
                Ok(_) => break,
                // Retention deleted that segment since the tail was read: it has moved on.
                Err(Error::PositionDeleted { .. }) => {
                    tail = producer
                        .shared
                        .meta
                        .tail()
                        .load(std::sync::atomic::Ordering::Acquire);
                    producer.known_tail = tail;
                }
                // Dropping `producer` releases its slot (and exclusivity).
                Err(e) => return Err(e),
            }
        }
        producer.prepare_next_at = prepare_point(geometry, tail);
        Ok(producer)
    }

    /// This producer's slot number, written in every frame it produces.
    pub fn slot(&self) -> u16 {
        self.slot
    }

    /// The largest payload one `offer`, `claim` or batch may carry.
    pub fn max_payload_len(&self) -> usize {
        self.max_payload
    }

    /// Copies `payload` into the log as one message and returns its position.
    ///
    /// Besides a message too large, this (like [`Producer::claim`] and [`Producer::batch`])
    /// fails with [`Error::NoSpace`] when the segment it needs cannot be made for lack of
    /// space (the next call tries again), and in a bounded log ([`crate::LogOptions::bounded`])
    /// with [`Error::Backpressure`] while the slowest live durable consumer is too far
    /// behind; in both cases nothing is published.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = logbus::Log::create(dir.path(), &logbus::LogOptions::new().segment_capacity(1 << 16))?;
    /// let mut producer = log.producer()?;
    /// let first = producer.offer(b"one")?;
    /// let second = producer.offer(b"two")?;
    /// assert!(second > first);
    /// assert!(producer.offer(&vec![0u8; 1 << 20]).is_err()); // larger than this log allows
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn offer(&mut self, payload: &[u8]) -> Result<u64> {
        let frame_len = self.frame_len(payload.len())?;
        // Checksum and clock before the claim: the window between claim and commit, in which
        // readers at this position wait, holds only the copy.
        let checksum = self.checksum(payload);
        let timestamp = self.timestamp();
        let position = self.claim_frame(frame_len)?;
        self.prefetch_after(position, frame_len);
        let header = self.memory.current_ptr(position);
        self.zero_old_alignment(header, frame_len, payload.len());
        // SAFETY: the claim gave this producer [position, position + frame_len), which lies
        // in the current segment (claims never cross a segment end) and which no other
        // process reads before the commit below. The header is 8-aligned, so the u32/u64
        // fields are aligned; the payload fits because frame_len >= header + payload.
        unsafe {
            write_header_tail(header, checksum, timestamp);
            std::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                header.add(FRAME_HEADER_LEN as usize),
                payload.len(),
            );
        }
        self.commit_frame(position, frame_len, header, payload.len(), kind::DATA)
    }

    /// Copies a plain-old-data value into the log as one message.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = logbus::Log::create(dir.path(), &logbus::LogOptions::new().segment_capacity(1 << 16))?;
    /// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    /// #[repr(C)]
    /// struct Tick { price: u64, quantity: u32, side: u32 }
    ///
    /// log.producer()?.offer_pod(&Tick { price: 101, quantity: 5, side: 1 })?;
    /// let mut consumer = log.consumer(logbus::StartAt::Earliest)?;
    /// let message = consumer.poll()?.unwrap();
    /// let tick: &Tick = message.as_pod()?; // read in place, no copy
    /// assert_eq!(tick.price, 101);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn offer_pod<T: bytemuck::NoUninit>(&mut self, value: &T) -> Result<u64> {
        self.offer(bytemuck::bytes_of(value))
    }

    /// Claims room for a `len`-byte payload in the mapping. Write it through the returned
    /// [`Claim`] (it derefs to `&mut [u8]`, zeroed) and [`Claim::commit`] it; dropping the
    /// claim uncommitted aborts it, and readers skip it as padding. In a single-producer log
    /// ([`crate::LogOptions::single_producer`]) the room is not zeroed: it may hold older
    /// bytes of the log, so write all of it.
    #[inline]
    pub fn claim(&mut self, len: usize) -> Result<Claim<'_>> {
        let frame_len = self.frame_len(len)?;
        let timestamp = self.timestamp();
        let position = self.claim_frame(frame_len)?;
        self.prefetch_after(position, frame_len);
        let header = self.memory.current_ptr(position);
        self.zero_old_alignment(header, frame_len, len);
        Ok(Claim {
            producer: self,
            position,
            frame_len,
            header,
            len,
            timestamp,
            done: false,
        })
    }

    /// Claims one region of up to `max_payload_bytes` for a message set: records pushed
    /// into the [`Batch`] become visible together on [`Batch::commit`], in one frame with one
    /// header and one checksum. Each record costs 4 bytes of length plus alignment to 4.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = logbus::Log::create(dir.path(), &logbus::LogOptions::new().segment_capacity(1 << 16))?;
    /// let mut producer = log.producer()?;
    /// let mut batch = producer.batch(1024)?;
    /// for i in 0u32..10 {
    ///     batch.push(&i.to_le_bytes())?;
    /// }
    /// batch.commit()?;
    ///
    /// let mut consumer = log.consumer(logbus::StartAt::Earliest)?;
    /// let mut seen = Vec::new();
    /// consumer.poll_batch(100, |m| seen.push(u32::from_le_bytes(m.payload().try_into().unwrap())))?;
    /// assert_eq!(seen, (0..10).collect::<Vec<_>>());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn batch(&mut self, max_payload_bytes: usize) -> Result<Batch<'_>> {
        let frame_len = self.frame_len(max_payload_bytes)?;
        let timestamp = self.timestamp();
        let position = self.claim_frame(frame_len)?;
        let header = self.memory.current_ptr(position);
        Ok(Batch {
            producer: self,
            position,
            frame_len,
            header,
            capacity: max_payload_bytes,
            used: 0,
            timestamp,
            done: false,
        })
    }

    /// Writes every message of `messages` as one message set and returns its position.
    pub fn offer_batch<M: AsRef<[u8]>>(&mut self, messages: &[M]) -> Result<u64> {
        let size = Batch::bytes_needed(messages.iter().map(|m| m.as_ref().len()));
        let mut batch = self.batch(size)?;
        for message in messages {
            batch.push(message.as_ref())?;
        }
        batch.commit()
    }

    #[inline(always)]
    fn frame_len(&self, payload_len: usize) -> Result<u64> {
        if payload_len > self.max_payload {
            return Err(Error::MessageTooLarge {
                len: payload_len,
                max: self.max_payload,
                segment_capacity: self.shared.spec.capacity,
            });
        }
        Ok(align_up(
            FRAME_HEADER_LEN + payload_len as u64,
            FRAME_ALIGNMENT,
        ))
    }

    /// Where the claim at `header` may hold old bytes and its payload of `payload_len` bytes
    /// ends inside the frame's last word, zeroes that word (before the payload is written over
    /// its start): a frame's alignment must not keep bytes of an older message.
    #[inline(always)]
    fn zero_old_alignment(&self, header: *mut u8, frame_len: u64, payload_len: usize) {
        if self.old_bytes && payload_len % FRAME_ALIGNMENT as usize != 0 {
            // SAFETY: `header` starts this producer's claim of `frame_len` (a multiple of 8,
            // more than the header) bytes in the current segment's mapping, as `claim_frame`
            // just returned it, which no reader touches before the commit.
            unsafe {
                header
                    .add((frame_len - FRAME_ALIGNMENT) as usize)
                    .cast::<u64>()
                    .write(0)
            };
        }
    }

    #[inline(always)]
    fn checksum(&self, payload: &[u8]) -> u32 {
        if self.frame_flags & flags::CHECKSUM != 0 {
            format::checksum(payload)
        } else {
            0
        }
    }

    #[inline(always)]
    fn timestamp(&mut self) -> u64 {
        if self.frame_flags & flags::TIMESTAMP != 0 {
            self.clock.now_ns()
        } else {
            0
        }
    }

    /// Moves the tail over frames committed past it (`protocol::publish_committed`), and
    /// returns it.
    fn publish_committed(&mut self) -> Result<u64> {
        let shared = self.shared.clone();
        protocol::publish_committed(
            shared.meta.tail(),
            shared.geometry,
            &mut self.memory,
            |position| shared.segment_file_exists(position),
        )
    }

    #[inline(always)]
    fn claim_frame(&mut self, frame_len: u64) -> Result<u64> {
        // Bounded mode costs the hot path one compare of two fields of this producer.
        if self.known_tail > self.claim_until {
            self.check_backpressure()?;
        }
        let position = if self.exclusive {
            protocol::claim_exclusive(
                self.words.tail(),
                self.memory.geometry,
                frame_len,
                &mut self.memory,
                self.words.wake(),
                self.barrier,
            )?
        } else {
            protocol::claim(
                self.words.tail(),
                self.memory.geometry,
                frame_len,
                self.words.claim_record(),
                &mut self.memory,
                self.words.wake(),
                self.barrier,
            )?
        };
        self.known_tail = position + frame_len;
        // Here, not after the commit: a result held across a call is copied through the stack,
        // and a load of it that spans the stores of its parts waits for the store buffer to
        // drain — the message's stores to the line the consumer polls included.
        self.after_claim(position);
        Ok(position)
    }

    /// For a single message's claim (not a set's: sets of 32-byte records ran 12% slower with
    /// it, 6 alternating pairs, the two more instructions a record costing more than the
    /// prefetch saved), see `ProducerMemory::prefetch_ahead`.
    #[inline(always)]
    fn prefetch_after(&mut self, position: u64, frame_len: u64) {
        if self.exclusive {
            self.memory.prefetch_ahead(position, frame_len);
        }
    }

    /// Bounded mode: reads the tail and the slowest live durable cursor, refuses if that
    /// cursor is more than the bound behind, and otherwise sets how far this producer may
    /// claim before it looks again: up to the bound, and at most an eighth of the bound
    /// further on, so that a durable consumer that appears (or comes back) meanwhile is seen.
    #[cold]
    #[inline(never)]
    fn check_backpressure(&mut self) -> Result<()> {
        let tail = self
            .shared
            .meta
            .tail()
            .load(std::sync::atomic::Ordering::Acquire);
        let limit = self.max_lag;
        let step = (limit / 8).max(FRAME_ALIGNMENT);
        let until = match self.shared.meta.slowest_live_cursor(tail, limit) {
            Some(slowest) if tail.saturating_sub(slowest) > limit => {
                return Err(Error::Backpressure {
                    behind: tail - slowest,
                    limit,
                })
            }
            Some(slowest) => (slowest + limit).min(tail + step),
            None => tail + step,
        };
        self.known_tail = tail;
        self.claim_until = until;
        Ok(())
    }

    /// Publishes the claimed frame at `position`, whose header the caller holds at `header`
    /// (the address it wrote the frame through: not derived again on the hot path), for a
    /// claim of `frame_len` bytes.
    #[inline(always)]
    fn commit_frame(
        &mut self,
        position: u64,
        frame_len: u64,
        header: *mut u8,
        payload_len: usize,
        frame_kind: u8,
    ) -> Result<u64> {
        let length = (FRAME_HEADER_LEN as usize + payload_len) as i32;
        let word = self.frame_word_fields | frame_word(length, frame_kind, 0, 0);
        // SAFETY: `header` is the 8-aligned start of this producer's claim, inside the
        // current segment's mapping, which `self.memory` keeps alive during this call.
        let frame = unsafe { &*(header as *const AtomicU64) };
        if self.exclusive {
            protocol::commit_exclusive(
                frame,
                word,
                self.words.tail(),
                position + frame_len,
                self.words.wake(),
                self.barrier,
            );
            return Ok(position);
        }
        let committed = protocol::commit(
            frame,
            word,
            self.words.claim_record(),
            self.words.wake(),
            self.barrier,
        );
        if committed {
            Ok(position)
        } else {
            Err(Error::ClaimRevoked { position })
        }
    }

    fn abort_frame(&mut self, position: u64, frame_len: u64) {
        if self.exclusive {
            protocol::abort_exclusive(
                self.memory.current_word(position),
                frame_len,
                self.words.tail(),
                position + frame_len,
                self.words.wake(),
                self.barrier,
            );
            return;
        }
        protocol::abort(
            self.memory.current_word(position),
            frame_len,
            self.words.claim_record(),
            self.words.wake(),
            self.barrier,
        );
    }

    /// Once a claim reaches the prepare point of its segment ([`prepare_point`]), asks the
    /// preparer thread to create and map the next one. If that fails (a full disk, say), the claim that needs the segment
    /// tries again itself and reports the error: it is not this message's.
    #[inline(always)]
    fn after_claim(&mut self, position: u64) {
        if position >= self.prepare_next_at {
            self.prepare_next(position);
        }
    }

    #[cold]
    #[inline(never)]
    fn prepare_next(&mut self, position: u64) {
        let geometry = self.shared.geometry;
        self.shared
            .prepare_segment(geometry.segment_index(position) + 1, true);
        self.prepare_next_at = prepare_point(geometry, geometry.segment_end(position));
    }
}

/// How far past its claims an exclusive producer prefetches (see
/// `ProducerMemory::prefetch_ahead`): a page. In alternating runs across processes (huge
/// pages, recycling, single-producer, fields off) 1 KiB and 4 KiB both beat no prefetch at
/// 256 bytes (medians 27.6 and 27.0 against 23.9 M/s), 4 KiB by more at 32 bytes.
const PREFETCH_DISTANCE: u64 = 4096;
const CACHE_LINE: u64 = 64;
/// The least a producer prefetches at once (see `ProducerMemory::prefetch_lines`).
const PREFETCH_BATCH: u64 = 8 * CACHE_LINE;

/// A hint that the line at `address` will be written soon: `prefetchw`, which fetches it
/// ready for writing. It never faults and changes nothing a program can observe; where the
/// instruction is not known it is a no-op.
#[inline(always)]
fn prefetch_for_write(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads and writes no memory architecturally, cannot fault whatever the
    // address, and touches no register but its input.
    unsafe {
        std::arch::asm!(
            "prefetchw [{0}]",
            in(reg) address,
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Where in the segment of `position` a producer asks for the next one: an eighth into the
/// log's first segment, so that a log of a few messages takes one segment's space; as it
/// enters any later one, so that the preparer has a whole segment's time — a 64 MiB segment
/// takes it about 40 ms here, more when the producer and consumer keep both cores busy.
fn prepare_point(geometry: Geometry, position: u64) -> u64 {
    let start = geometry.segment_end(position) - geometry.capacity();
    if start == 0 {
        geometry.capacity() / 8
    } else {
        start
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // A claim left unfinished by a failed mapping is still this producer's: pad it. If
        // that fails too (its segment still cannot be made: a full disk), hand the slot to
        // the readers as a dead producer's: they pad the claim as soon as they can make the
        // segment, without waiting for the claim timeout, and free the slot.
        let settled = protocol::settle(
            self.words.claim_record(),
            self.shared.geometry,
            &mut self.memory,
            self.words.wake(),
            self.barrier,
        );
        if settled.is_ok() {
            self.shared.meta.release_producer_slot(self.slot);
        } else {
            self.shared.meta.abandon_producer_slot(self.slot);
        }
        if self.exclusive {
            self.shared.meta.release_exclusivity();
        }
        // The next segment this producer asked for may be in the making: let it be finished,
        // so that a directory removed right after the last handle gets no file afterwards.
        self.shared.wait_for_preparer();
    }
}

/// Writes the checksum, reserved and timestamp fields behind a frame word.
///
/// # Safety
/// `header` must point at a claimed, 8-aligned frame header owned by the caller.
#[inline(always)]
unsafe fn write_header_tail(header: *mut u8, checksum: u32, timestamp: u64) {
    // SAFETY: by the contract above, offsets 8..24 are this claim's and aligned for their types.
    unsafe {
        header
            .add(std::mem::offset_of!(FrameHeader, checksum))
            .cast::<u32>()
            .write(checksum);
        header
            .add(std::mem::offset_of!(FrameHeader, reserved))
            .cast::<u32>()
            .write(0);
        header
            .add(std::mem::offset_of!(FrameHeader, timestamp))
            .cast::<u64>()
            .write(timestamp);
    }
}

impl ProducerMemory {
    /// The address of `position`, switching to its segment if it is not the current one.
    #[inline(always)]
    fn data_ptr(&mut self, position: u64) -> Result<*mut u8> {
        let index = self.geometry.segment_index(position);
        if index != self.current_index {
            self.switch_to(index)?;
        }
        Ok(self.current_ptr(position))
    }

    /// Asks the CPU for the lines [`PREFETCH_DISTANCE`] past the claim of `frame_len` bytes at
    /// `position` (in the current segment), for writing. An exclusive producer's claims are
    /// consecutive, so those are the lines it writes next; in a recycling log they were last
    /// written a whole ring of segments ago and are in no cache, and without this every
    /// payload copy waited for them, a line at a time, with the store buffer full (`perf
    /// annotate` of `offer` at 256 B). Shared producers do not: another producer's claim may
    /// take those lines first, and the prefetches would pull them from core to core.
    #[inline(always)]
    fn prefetch_ahead(&mut self, position: u64, frame_len: u64) {
        // One compare: small claims, which cross into a new line nearly every time, go on
        // only every few hundred bytes, once they come within the distance of the last line.
        if position >= self.prefetch_at {
            self.prefetch_lines(position, frame_len);
        }
    }

    /// The lines from where the last prefetch ended (or [`PREFETCH_DISTANCE`] past
    /// `position`, if further on) to [`PREFETCH_DISTANCE`] past the claim's end, and on for
    /// [`PREFETCH_BATCH`] bytes, in the segment of `position`.
    #[inline(never)]
    fn prefetch_lines(&mut self, position: u64, frame_len: u64) {
        let segment_end = self.geometry.segment_end(position);
        let mut line = self
            .prefetched_to
            .max((position + PREFETCH_DISTANCE) & !(CACHE_LINE - 1));
        let wanted = (position + frame_len + PREFETCH_DISTANCE)
            .max(line + PREFETCH_BATCH)
            .min(segment_end);
        while line < wanted {
            let offset = self.geometry.offset_in_segment(line);
            // SAFETY: `line` lies before `wanted`, at most the end of the segment of
            // `position` (the current one, which `current` keeps mapped), and after
            // `position`: `offset` is inside its data area.
            prefetch_for_write(unsafe { self.current_data.add(offset as usize) });
            line += CACHE_LINE;
        }
        self.prefetched_to = line;
        self.prefetch_at = line.saturating_sub(PREFETCH_DISTANCE);
    }

    /// The address of `position` in the current segment, where a claim just returned it.
    #[inline(always)]
    fn current_ptr(&self, position: u64) -> *mut u8 {
        debug_assert_eq!(self.current_index, self.geometry.segment_index(position));
        // SAFETY: claims return positions in the segment they last touched, which is current
        // (mapped at `current_data`); the offset is below the capacity.
        unsafe {
            self.current_data
                .add(self.geometry.offset_in_segment(position) as usize)
        }
    }

    #[inline(always)]
    fn current_word(&self, position: u64) -> &AtomicU64 {
        // SAFETY: frame starts are 8-aligned in a 4096-aligned data area, and the mapping is
        // kept alive by `self.current` for as long as the returned borrow of `self`.
        unsafe { &*(self.current_ptr(position) as *const AtomicU64) }
    }

    #[cold]
    #[inline(never)]
    fn switch_to(&mut self, index: u64) -> Result<()> {
        let segment = self
            .shared
            .segment(index, true, Prefault::Write)?
            .expect("segment() with create always returns one");
        self.current_index = index;
        self.current_data = segment.data_ptr();
        if let Some(old) = self.current.replace(segment) {
            self.shared.retire_segment(old);
        }
        Ok(())
    }
}

impl FrameMemory for ProducerMemory {
    #[inline(always)]
    fn frame_word(&mut self, position: u64) -> Result<&AtomicU64> {
        let ptr = self.data_ptr(position)?;
        // SAFETY: positions handed to the protocol are 8-aligned frame starts; the mapping
        // lives in `self.current` while the borrow of `self` lasts.
        Ok(unsafe { &*(ptr as *const AtomicU64) })
    }
}

/// A claimed, not yet visible message, written in place. Derefs to its payload bytes.
/// [`Claim::commit`] publishes it; dropping it aborts it (readers skip it as padding).
#[must_use = "a claim that is dropped is aborted"]
pub struct Claim<'a> {
    producer: &'a mut Producer,
    position: u64,
    frame_len: u64,
    header: *mut u8,
    len: usize,
    timestamp: u64,
    done: bool,
}

impl Claim<'_> {
    /// The position the message will have.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Makes the message visible to consumers and returns its position. Fails with
    /// [`Error::ClaimRevoked`] if the claim was held so long that consumers gave up on it.
    #[inline]
    pub fn commit(mut self) -> Result<u64> {
        let checksum = self.producer.checksum(&self[..]);
        // SAFETY: the header belongs to this claim until the commit below publishes it.
        unsafe { write_header_tail(self.header, checksum, self.timestamp) };
        self.done = true;
        self.producer.commit_frame(
            self.position,
            self.frame_len,
            self.header,
            self.len,
            kind::DATA,
        )
    }
}

impl Deref for Claim<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the payload area of a claim is this claim's alone until commit, lies inside
        // the current segment, and the mapping lives as long as the producer borrowed here.
        unsafe { std::slice::from_raw_parts(self.header.add(FRAME_HEADER_LEN as usize), self.len) }
    }
}

impl DerefMut for Claim<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only view.
        unsafe {
            std::slice::from_raw_parts_mut(self.header.add(FRAME_HEADER_LEN as usize), self.len)
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.producer.abort_frame(self.position, self.frame_len);
        }
    }
}

/// A message set being written: records pushed here become visible together on
/// [`Batch::commit`]. Dropping it uncommitted aborts it. Made by [`Producer::batch`].
#[must_use = "a batch that is dropped is aborted"]
pub struct Batch<'a> {
    producer: &'a mut Producer,
    position: u64,
    frame_len: u64,
    header: *mut u8,
    capacity: usize,
    used: usize,
    timestamp: u64,
    done: bool,
}

impl Batch<'_> {
    /// The `max_payload_bytes` to ask [`Producer::batch`] for, to hold records of these
    /// payload lengths: each takes a 4-byte length, and each but the first starts 4-aligned.
    ///
    /// ```
    /// use logbus::Batch;
    /// assert_eq!(Batch::bytes_needed([3, 2]), 4 + 3 + 1 + 4 + 2);
    /// assert_eq!(Batch::bytes_needed([]), 0);
    /// ```
    pub fn bytes_needed(record_lens: impl IntoIterator<Item = usize>) -> usize {
        let bytes = record_lens.into_iter().fold(0u64, |used, len| {
            align_up(used, RECORD_ALIGNMENT) + RECORD_LENGTH_LEN + len as u64
        });
        usize::try_from(bytes).unwrap_or(usize::MAX)
    }

    /// Payload bytes taken so far by the records pushed.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Appends a record; fails with [`Error::BatchFull`] if it does not fit.
    pub fn push(&mut self, record: &[u8]) -> Result<()> {
        self.push_with(record.len(), |room| room.copy_from_slice(record))
    }

    /// Appends a record of `len` bytes that `write` writes in place, in the mapping (given
    /// them zeroed, except in a single-producer log: see [`Producer::claim`]), with no copy:
    /// as [`Producer::claim`] does for a single message. Fails with [`Error::BatchFull`] if it
    /// does not fit; `write` is then not called.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = logbus::Log::create(dir.path(), &logbus::LogOptions::new().segment_capacity(1 << 16))?;
    /// let mut producer = log.producer()?;
    /// let mut batch = producer.batch(logbus::Batch::bytes_needed([8, 8]))?;
    /// for sequence in 0..2u64 {
    ///     batch.push_with(8, |room| room.copy_from_slice(&sequence.to_le_bytes()))?;
    /// }
    /// batch.commit()?;
    /// let mut consumer = log.consumer(logbus::StartAt::Earliest)?;
    /// let mut seen = Vec::new();
    /// consumer.poll_batch(10, |m| seen.push(m.payload().to_vec()))?;
    /// assert_eq!(seen, [0u64.to_le_bytes(), 1u64.to_le_bytes()]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push_with(&mut self, len: usize, write: impl FnOnce(&mut [u8])) -> Result<()> {
        let start = align_up(self.used as u64, RECORD_ALIGNMENT) as usize;
        let needed = start - self.used + RECORD_LENGTH_LEN as usize + len;
        if needed > self.capacity - self.used {
            return Err(Error::BatchFull {
                len,
                needed,
                remaining: self.capacity - self.used,
            });
        }
        // SAFETY: [start, start + 4 + len) lies inside this batch's claimed payload (checked
        // above), which is this producer's alone until commit and which nothing else
        // references meanwhile (the record is borrowed only for the call below); `start` is
        // 4-aligned in an 8-aligned payload, so the u32 stores are aligned. The bytes are
        // zero (a claim is made in memory never written since its segment was made or zeroed),
        // except in a single-producer log, where recycling leaves old bytes: there the 4-byte
        // word the record ends in is zeroed, so that its alignment keeps none (the word lies
        // in the claim, which ends 8-aligned).
        let room = unsafe {
            let payload = self.header.add(FRAME_HEADER_LEN as usize);
            payload.add(start).cast::<u32>().write((len as u32).to_le());
            let room = payload.add(start + RECORD_LENGTH_LEN as usize);
            if self.producer.old_bytes && len % RECORD_ALIGNMENT as usize != 0 {
                room.add(len & !(RECORD_ALIGNMENT as usize - 1))
                    .cast::<u32>()
                    .write(0);
            }
            std::slice::from_raw_parts_mut(room, len)
        };
        write(room);
        self.used = start + RECORD_LENGTH_LEN as usize + len;
        Ok(())
    }

    /// Appends a plain-old-data value as a record.
    pub fn push_pod<T: bytemuck::NoUninit>(&mut self, value: &T) -> Result<()> {
        self.push(bytemuck::bytes_of(value))
    }

    /// Bytes of payload still free.
    pub fn remaining(&self) -> usize {
        self.capacity - self.used
    }

    /// Publishes every record pushed, at once, and returns the position of the set (which is
    /// also the position of its first record's frame). Unused room becomes padding.
    #[inline]
    pub fn commit(mut self) -> Result<u64> {
        self.done = true;
        if self.used == 0 {
            self.producer.abort_frame(self.position, self.frame_len);
            return Ok(self.position);
        }
        let used_frame = align_up(FRAME_HEADER_LEN + self.used as u64, FRAME_ALIGNMENT);
        let records_end = align_up(self.used as u64, RECORD_ALIGNMENT);
        if self.producer.old_bytes && FRAME_HEADER_LEN + records_end < used_frame {
            // SAFETY: the 4 bytes from `records_end` lie before `used_frame`, inside the claim,
            // 4-aligned; the claim is ours until the commit below. They are the frame's
            // alignment after the last record (`push_with` zeroed the gap before them).
            unsafe {
                self.header
                    .add((FRAME_HEADER_LEN + records_end) as usize)
                    .cast::<u32>()
                    .write(0)
            };
        }
        if used_frame < self.frame_len {
            let rest = self
                .producer
                .memory
                .current_word(self.position + used_frame);
            protocol::pad_rest_of_claim(rest, self.frame_len - used_frame);
        }
        // SAFETY: the payload's first `used` bytes were written by `push`, and the claim is
        // this producer's until the commit below.
        let payload = unsafe {
            std::slice::from_raw_parts(self.header.add(FRAME_HEADER_LEN as usize), self.used)
        };
        let checksum = self.producer.checksum(payload);
        // SAFETY: as above.
        unsafe { write_header_tail(self.header, checksum, self.timestamp) };
        self.producer.commit_frame(
            self.position,
            self.frame_len,
            self.header,
            self.used,
            kind::BATCH,
        )
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.producer.abort_frame(self.position, self.frame_len);
        }
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("log", &self.shared.dir)
            .field("slot", &self.slot)
            .finish()
    }
}
