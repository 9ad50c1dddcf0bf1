//! The concurrency protocol, all of it: claim, commit, abort, pad, read, wait and wake.
//!
//! This module is written over the atomics facade in [`crate::sync`] so that `loom-tests/`
//! model-checks this very code. It never touches files: where frames live is abstracted by
//! [`FrameMemory`], which the producer implements over mapped segment files and a loom model
//! implements over an array of loom atomics.
//!
//! The rules it keeps (the argument is written out in `docs/FORMAT.md`):
//!
//! * A claim is one `fetch_add` on the tail. The range it returns belongs to the claimer
//!   alone, so no two writers ever store to the same frame word.
//! * A frame becomes visible by a `Release` store of its whole frame word with a positive
//!   length; a reader loads that word with `Acquire` and touches the header fields and payload
//!   only after seeing it positive. Nothing else is shared between writer and reader.
//! * A claim that would cross a segment end is turned into two padding frames, one on each
//!   side of the end, and claimed again; so every segment ends exactly at a frame end.
//! * A consumer about to sleep registers in `waiters`, then runs the heavy barrier, then
//!   re-checks; a producer commits, runs the light barrier, then reads `waiters`. One of the
//!   two always sees the other, so no wake-up is lost.
//!
//! Not a stable API: it is public only so that the loom models outside this crate can run it.

use crate::format::{padding_word, FrameWord, FRAME_ALIGNMENT};
use crate::sync::{
    futex_wait, futex_wake_all, heavy_barrier, light_barrier, AtomicU32, AtomicU64, BarrierKind,
    Ordering,
};
use crate::Error;
use std::time::{Duration, Instant};

/// The shape of the position space: segments of `1 << capacity_shift` bytes each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    capacity_shift: u32,
}

impl Geometry {
    /// Geometry for segments of `capacity` bytes (a power of two).
    pub fn new(capacity: u64) -> Self {
        debug_assert!(capacity.is_power_of_two());
        Geometry {
            capacity_shift: capacity.trailing_zeros(),
        }
    }

    /// Bytes in each segment's data area.
    #[inline(always)]
    pub fn capacity(self) -> u64 {
        1 << self.capacity_shift
    }

    /// Index of the segment that holds `position`.
    #[inline(always)]
    pub fn segment_index(self, position: u64) -> u64 {
        position >> self.capacity_shift
    }

    /// Offset of `position` inside its segment's data area.
    #[inline(always)]
    pub fn offset_in_segment(self, position: u64) -> u64 {
        position & (self.capacity() - 1)
    }

    /// First position after the segment that holds `position`.
    #[inline(always)]
    pub fn segment_end(self, position: u64) -> u64 {
        (self.segment_index(position) + 1) << self.capacity_shift
    }

    /// The largest frame (header and payload, aligned) a claim may ask for: an eighth of a
    /// segment, so that padding at a segment end wastes at most 12.5% of it.
    #[inline(always)]
    pub fn max_frame_len(self) -> u64 {
        (self.capacity() / 8).min(1 << 30)
    }
}

/// Where frame words live. Positions handed in are 8-aligned and inside a claimed range.
pub trait FrameMemory {
    /// The frame word at `position`, mapping (and, for a producer, creating) its segment if
    /// needed. Fails only when the segment cannot be made or mapped.
    fn frame_word(&mut self, position: u64) -> Result<&AtomicU64, Error>;
}

/// What a reader finds at a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameState {
    /// Zero: nothing claimed here yet, or claimed and the claimer has not written yet.
    Empty,
    /// Claimed but not committed; the (positive) length the claim will have.
    Claimed(FrameWord),
    /// Committed: the header fields and payload may be read.
    Committed(FrameWord),
}

/// Reads the frame word at a position. `Acquire` pairs with the `Release` of [`commit`] and
/// of padding, so a `Committed` result makes the header and payload behind it readable.
#[inline(always)]
pub fn read_frame(word: &AtomicU64) -> FrameState {
    let raw = word.load(Ordering::Acquire);
    let fields = FrameWord::unpack(raw);
    if fields.length > 0 {
        FrameState::Committed(fields)
    } else if fields.length < 0 {
        FrameState::Claimed(FrameWord {
            length: fields.length.wrapping_neg(),
            ..fields
        })
    } else {
        FrameState::Empty
    }
}

/// Claims `frame_len` bytes (a multiple of 8, at most [`Geometry::max_frame_len`]) and marks
/// them claimed with `claimed_word` (a frame word with a negative length). Returns the
/// position of the claimed frame.
///
/// One `fetch_add`, and no retry unless the range would cross a segment end: then both sides
/// are padded (and waiters woken, since one may wait at either side) and the claim is made
/// again in the next segment. Once the claim is returned the range is this claimer's alone.
pub fn claim<M: FrameMemory>(
    tail: &AtomicU64,
    geometry: Geometry,
    frame_len: u64,
    claimed_word: u64,
    memory: &mut M,
    wake: &WakeWord,
    barrier: BarrierKind,
) -> Result<u64, Error> {
    debug_assert!(frame_len % FRAME_ALIGNMENT == 0 && frame_len <= geometry.max_frame_len());
    loop {
        // Relaxed: the add only has to hand out disjoint ranges, which an RMW always does;
        // what is written into the range is published by the commit's Release.
        let position = tail.fetch_add(frame_len, Ordering::Relaxed);
        let end = position + frame_len;
        let segment_end = geometry.segment_end(position);
        if end <= segment_end {
            memory
                .frame_word(position)?
                .store(claimed_word, Ordering::Relaxed);
            return Ok(position);
        }
        // Both pieces are at least 8 bytes: every length here is a multiple of 8.
        memory
            .frame_word(position)?
            .store(padding_word(segment_end - position), Ordering::Release);
        memory
            .frame_word(segment_end)?
            .store(padding_word(end - segment_end), Ordering::Release);
        wake.wake_waiters(barrier);
    }
}

/// Makes a claimed frame visible: one `Release` store of the whole frame word, then a wake
/// if, and only if, some consumer sleeps.
#[inline(always)]
pub fn commit(word: &AtomicU64, committed_word: u64, wake: &WakeWord, barrier: BarrierKind) {
    word.store(committed_word, Ordering::Release);
    wake.wake_waiters(barrier);
}

/// Turns a claimed range of `frame_len` bytes into padding, so readers skip it: the abort of
/// a claim that is dropped.
#[inline]
pub fn pad(word: &AtomicU64, frame_len: u64, wake: &WakeWord, barrier: BarrierKind) {
    word.store(padding_word(frame_len), Ordering::Release);
    wake.wake_waiters(barrier);
}

/// Turns the unused end of a claimed range (`rest_len` bytes at `rest`) into padding, before
/// the frame at the range's start is committed: a message set that came out shorter than
/// its claim. No wake-up of its own: a reader reaches the padding only through that frame,
/// whose commit `Release` also publishes this store, and whose wake-up covers both.
#[inline]
pub fn pad_rest_of_claim(rest: &AtomicU64, rest_len: u64) {
    rest.store(padding_word(rest_len), Ordering::Relaxed);
}

/// The wake-up word and the waiter count, on a cache line of their own in the meta file.
/// Producers read `waiters` on every commit, and consumers write it only when they go to
/// sleep or wake up, so in steady state the line stays shared and costs no miss.
#[repr(C)]
#[derive(Default)]
pub struct WakeWord {
    /// Bumped by a producer before each wake system call; the futex word.
    pub sequence: AtomicU32,
    /// Number of consumers between registering to sleep and leaving the sleep.
    pub waiters: AtomicU32,
}

/// How long a sleeper waits at most per sleep when the kernel refused its membarrier.
const UNORDERED_SLEEP_SLICE: Duration = Duration::from_millis(1);

impl WakeWord {
    /// Called by a producer after a store that may make a frame readable.
    #[inline(always)]
    pub fn wake_waiters(&self, barrier: BarrierKind) {
        light_barrier(barrier);
        if self.waiters.load(Ordering::Relaxed) != 0 {
            self.wake_all();
        }
    }

    #[cold]
    #[inline(never)]
    fn wake_all(&self) {
        // Release: a sleeper that reads the new sequence also sees what was committed.
        self.sequence.fetch_add(1, Ordering::Release);
        futex_wake_all(&self.sequence);
    }

    /// Sleeps until `ready()` returns true or `deadline` passes; returns what `ready` last
    /// returned. `ready` reads shared memory (the frame word the caller waits at) and may move
    /// the caller's own state on (past padding, say), but must not write shared memory.
    pub fn wait_until(&self, mut ready: impl FnMut() -> bool, deadline: Option<Instant>) -> bool {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let ordered = heavy_barrier();
        let result = loop {
            // Read the sequence before checking: a wake between the check and the sleep
            // changes it, and the futex then refuses to sleep.
            let sequence = self.sequence.load(Ordering::Acquire);
            if ready() {
                break true;
            }
            let mut timeout = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => break false,
                },
                None => None,
            };
            if !ordered {
                timeout =
                    Some(timeout.map_or(UNORDERED_SLEEP_SLICE, |t| t.min(UNORDERED_SLEEP_SLICE)));
            }
            futex_wait(&self.sequence, sequence, timeout);
        };
        self.waiters.fetch_sub(1, Ordering::Release);
        result
    }
}
