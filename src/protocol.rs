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
//! * An exclusive producer — the log's only one while it lives — claims nothing: it writes
//!   its frame at the tail, commits it, and only then moves the tail past it (see
//!   [`claim_exclusive`]). It never leaves an uncommitted frame behind the tail, so it needs
//!   no claim record, and readers never wait on it for a claim.
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

use crate::format::{align_up, padding_word, FrameWord, FRAME_ALIGNMENT};
use crate::sync::{
    barrier_orders_producers, futex_wait, futex_wake_all, heavy_barrier, light_barrier, AtomicU32,
    AtomicU64, BarrierKind, Ordering,
};
use crate::Error;
use std::time::{Duration, Instant};

/// The shape of the position space: segments of `1 << capacity_shift` bytes each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    capacity_shift: u32,
    /// `capacity - 1`, kept because every claim and commit asks for an offset or an end.
    offset_mask: u64,
}

impl Geometry {
    /// Geometry for segments of `capacity` bytes (a power of two).
    pub fn new(capacity: u64) -> Self {
        debug_assert!(capacity.is_power_of_two());
        let capacity_shift = capacity.trailing_zeros();
        Geometry {
            capacity_shift,
            offset_mask: (1u64 << capacity_shift) - 1,
        }
    }

    /// Bytes in each segment's data area.
    #[inline(always)]
    pub fn capacity(self) -> u64 {
        self.offset_mask + 1
    }

    /// Index of the segment that holds `position`.
    #[inline(always)]
    pub fn segment_index(self, position: u64) -> u64 {
        position >> self.capacity_shift
    }

    /// Offset of `position` inside its segment's data area.
    #[inline(always)]
    pub fn offset_in_segment(self, position: u64) -> u64 {
        position & self.offset_mask
    }

    /// First position after the segment that holds `position`.
    #[inline(always)]
    pub fn segment_end(self, position: u64) -> u64 {
        // Wrapping, as the shift it replaces did: only a damaged claim record gets there.
        (position | self.offset_mask).wrapping_add(1)
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
    /// Zero: nothing committed here yet (the range may be claimed: claims are recorded in
    /// the claimer's [`ClaimRecord`], not in the frame).
    Empty,
    /// Committed: the header fields and payload may be read.
    Committed(FrameWord),
    /// A negative length, which no writer of this format version produces.
    Invalid(FrameWord),
}

/// Reads the frame word at a position. `Acquire` pairs with the `Release` of [`commit`] and
/// of padding, so a `Committed` result makes the header and payload behind it readable.
#[inline(always)]
pub fn read_frame(word: &AtomicU64) -> FrameState {
    let fields = FrameWord::unpack(word.load(Ordering::Acquire));
    if fields.length > 0 {
        FrameState::Committed(fields)
    } else if fields.length == 0 {
        FrameState::Empty
    } else {
        FrameState::Invalid(fields)
    }
}

/// A producer's record of its claim in flight, in its slot of the meta file: what a stalled
/// reader needs to know whose claim holds it up, how long it is, and whether its owner
/// might still commit it — including for the instant between the `fetch_add` and the first
/// store after it, which no frame word could cover.
#[repr(C)]
#[derive(Default)]
pub struct ClaimRecord {
    /// [`ClaimRecord::IDLE`], [`ClaimRecord::UNRESOLVED`], or `position | 1` once the claim's
    /// position is known.
    pub state: AtomicU64,
    /// Aligned length of the claim; meaningful when `state` is not idle.
    pub len: AtomicU64,
    /// `position | 1` of the last claim of this producer that a reader set out to revoke.
    /// Written only by readers, read by the producer on each commit (see [`commit`]).
    pub revoked: AtomicU64,
}

/// A [`ClaimRecord`] as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claimed {
    /// No claim in flight.
    Idle,
    /// About to claim, or claimed and not yet stored where: the claim, if made, is somewhere
    /// behind the tail, with a zero frame word.
    Unresolved,
    /// Claimed `[position, position + len)`, not yet committed or aborted.
    At {
        /// Start of the claim.
        position: u64,
        /// Its aligned length.
        len: u64,
    },
}

impl ClaimRecord {
    /// The state of a slot with no claim in flight.
    pub const IDLE: u64 = 0;
    /// The state between announcing a claim and storing its position.
    pub const UNRESOLVED: u64 = 2;
    /// Set on a resolved state (`position | 1 | COMMITTING`) by the producer about to
    /// publish its claim: a reader that sees it does not revoke the claim.
    pub const COMMITTING: u64 = 4;

    /// Reads the record. `Acquire`: pairs with the producer's `Release` stores, so a record
    /// seen resolved or idle comes with everything the producer did before.
    pub fn read(&self) -> Claimed {
        let state = self.state.load(Ordering::Acquire);
        match state {
            Self::IDLE => Claimed::Idle,
            Self::UNRESOLVED => Claimed::Unresolved,
            _ => Claimed::At {
                position: state & !(1 | Self::COMMITTING),
                len: self.len.load(Ordering::Acquire),
            },
        }
    }
}

/// Claims `frame_len` bytes (a multiple of 8, at most [`Geometry::max_frame_len`]) and
/// records the claim in `record`. Returns the claim's position.
///
/// One `fetch_add`, and no retry unless the range would cross a segment end: then both sides
/// are padded (and waiters woken, since one may wait at either side) and the claim is made
/// again in the next segment. The range is this claimer's until it commits or aborts, or a
/// reader revokes it (see [`unblock`]).
///
/// If a claim could not be finished (its segment could not be mapped), the record keeps it,
/// and the next call first settles it (pads it) before claiming anew: the log never keeps a
/// hole that nobody owns.
#[inline(always)]
pub fn claim<M: FrameMemory>(
    tail: &AtomicU64,
    geometry: Geometry,
    frame_len: u64,
    record: &ClaimRecord,
    memory: &mut M,
    wake: &WakeWord,
    barrier: BarrierKind,
) -> Result<u64, Error> {
    debug_assert!(frame_len % FRAME_ALIGNMENT == 0 && frame_len <= geometry.max_frame_len());
    // Inline, the common case: nothing left over from an earlier call, and a claim that ends
    // inside its segment. Everything else goes to `claim_again`, out of the hot path.
    if record.state.load(Ordering::Relaxed) == ClaimRecord::IDLE {
        let (position, fits) = claim_once(tail, geometry, frame_len, record);
        if fits {
            // Map the claim's segment for the caller to write into. If that fails, the
            // record keeps the claim, and the next call (or a reader) pads it.
            memory.frame_word(position)?;
            return Ok(position);
        }
    }
    claim_again(tail, geometry, frame_len, record, memory, wake, barrier)
}

/// One claim, announced, made and resolved in `record`: its position, and whether it ends
/// inside its segment (if not, it must be settled and made again).
#[inline(always)]
fn claim_once(
    tail: &AtomicU64,
    geometry: Geometry,
    frame_len: u64,
    record: &ClaimRecord,
) -> (u64, bool) {
    announce(record, frame_len);
    let position = reserve(tail, frame_len);
    resolve(record, position);
    (
        position,
        position + frame_len <= geometry.segment_end(position),
    )
}

/// The rest of [`claim`]: settles what the record holds — a claim left unfinished by an
/// earlier call, or the one just made across a segment end — and claims until a claim fits.
#[cold]
#[inline(never)]
fn claim_again<M: FrameMemory>(
    tail: &AtomicU64,
    geometry: Geometry,
    frame_len: u64,
    record: &ClaimRecord,
    memory: &mut M,
    wake: &WakeWord,
    barrier: BarrierKind,
) -> Result<u64, Error> {
    loop {
        settle(record, geometry, memory, wake, barrier)?;
        let (position, fits) = claim_once(tail, geometry, frame_len, record);
        if fits {
            memory.frame_word(position)?;
            return Ok(position);
        }
    }
}

/// The first step of a claim: the record says a claim of `frame_len` bytes is coming.
#[inline(always)]
pub fn announce(record: &ClaimRecord, frame_len: u64) {
    record.len.store(frame_len, Ordering::Relaxed);
    record
        .state
        .store(ClaimRecord::UNRESOLVED, Ordering::Relaxed);
}

/// The second step: the one `fetch_add` that takes the range. `Release`: a reader that sees
/// the tail past this claim (`Acquire`) also sees the announcement (or what followed it), so
/// it can never take this claim for nobody's.
#[inline(always)]
pub fn reserve(tail: &AtomicU64, frame_len: u64) -> u64 {
    tail.fetch_add(frame_len, Ordering::Release)
}

/// An exclusive producer's room for a frame of `frame_len` bytes (as for [`claim`]): at the
/// tail, which it alone moves. Returns the position; the tail stays there until
/// [`commit_exclusive`] or [`abort_exclusive`] moves it past the frame.
///
/// Nothing is recorded: the frame is committed before the tail passes it, so no reader ever
/// finds an uncommitted frame of this producer behind the tail, and there is nothing a
/// reader would wait for, revoke or pad. So: no claim record, no locked instruction, and one
/// store to the tail's line a message. Before handing the room out, it stores zero into the
/// frame word just past it (unless that word begins a segment): readers reach that word only
/// through this frame, after its commit, and so find it zero until the next frame commits
/// there, even in memory never zeroed — a single-producer log's recycled segments are zeroed
/// only in their first word. Only the log's only producer can do this, as nobody else can
/// have committed that word already.
///
/// A frame that would cross the segment end is preceded by padding to that end, published
/// (committed, then the tail moved past it) before the frame is placed at the next segment's
/// start. Fails only when a segment cannot be mapped, with nothing half-done: the next call
/// starts again from the tail.
///
/// A producer that dies between a commit and its store of the tail leaves committed frames
/// at the tail: [`publish_committed`] moves the tail over them before anyone writes there.
#[inline(always)]
pub fn claim_exclusive<M: FrameMemory>(
    tail: &AtomicU64,
    geometry: Geometry,
    frame_len: u64,
    memory: &mut M,
    wake: &WakeWord,
    barrier: BarrierKind,
) -> Result<u64, Error> {
    debug_assert!(frame_len % FRAME_ALIGNMENT == 0 && frame_len <= geometry.max_frame_len());
    // Relaxed: this producer made the last store to the tail.
    let position = tail.load(Ordering::Relaxed);
    if position + frame_len > geometry.segment_end(position) {
        return claim_exclusive_in_next_segment(tail, geometry, frame_len, memory, wake, barrier);
    }
    place(position, frame_len, geometry, memory)?;
    Ok(position)
}

/// The rest of [`claim_exclusive`]: a frame that does not fit in what is left of the tail's
/// segment. Pads that rest and publishes the padding, then places the frame in the next
/// segment, at whose start it always fits.
#[cold]
#[inline(never)]
fn claim_exclusive_in_next_segment<M: FrameMemory>(
    tail: &AtomicU64,
    geometry: Geometry,
    frame_len: u64,
    memory: &mut M,
    wake: &WakeWord,
    barrier: BarrierKind,
) -> Result<u64, Error> {
    let position = tail.load(Ordering::Relaxed);
    let next_segment = geometry.segment_end(position);
    abort_exclusive(
        memory.frame_word(position)?,
        next_segment - position,
        tail,
        next_segment,
        wake,
        barrier,
    );
    place(next_segment, frame_len, geometry, memory)?;
    Ok(next_segment)
}

/// Maps the segment of a frame of `frame_len` bytes at `position` (which fits in it), and
/// stores zero into the frame word at its end unless that word starts a segment (segments
/// are made, and recycled, with a zero first word). One segment lookup: the end lies in the
/// frame's segment unless it is that segment's end.
#[inline(always)]
fn place<M: FrameMemory>(
    position: u64,
    frame_len: u64,
    geometry: Geometry,
    memory: &mut M,
) -> Result<(), Error> {
    let end = position + frame_len;
    if geometry.offset_in_segment(end) != 0 {
        memory.frame_word(end)?.store(0, Ordering::Relaxed);
    } else {
        memory.frame_word(position)?;
    }
    Ok(())
}

/// Publishes an exclusive producer's frame, placed by [`claim_exclusive`] at `word`: commits
/// it (`Release`, as [`commit`] does), then moves the tail to `end`, the end of the room it
/// was given, and wakes sleeping consumers if there are any. Nobody can revoke it.
///
/// `Release` on the tail too: a reader that sees the tail at `end` (`Acquire`) sees the
/// frame committed, so the tail never runs ahead of what is committed.
#[inline(always)]
pub fn commit_exclusive(
    word: &AtomicU64,
    committed_word: u64,
    tail: &AtomicU64,
    end: u64,
    wake: &WakeWord,
    barrier: BarrierKind,
) {
    word.store(committed_word, Ordering::Release);
    tail.store(end, Ordering::Release);
    wake.wake_waiters(barrier);
}

/// Gives up an exclusive producer's room of `frame_len` bytes at `word` (a claim dropped
/// uncommitted): it becomes padding, published as a frame would be, so that readers skip
/// whatever was written into it.
pub fn abort_exclusive(
    word: &AtomicU64,
    frame_len: u64,
    tail: &AtomicU64,
    end: u64,
    wake: &WakeWord,
    barrier: BarrierKind,
) {
    commit_exclusive(word, padding_word(frame_len), tail, end, wake, barrier);
}

/// Moves the tail past frames committed at and after it — what an exclusive producer that
/// died between a commit and its store of the tail left — and returns the tail. For a
/// producer before its first claim, and for recovery: the dead producer can no longer
/// write, so what is committed past the tail now is all it left. A frame committed at or
/// past the tail is never a `fetch_add` claimer's (its `fetch_add` moved the tail past it
/// first), so the walk takes nothing from a live producer; and it moves the tail by a
/// compare-and-swap from the value it walked from, so that a claim made meanwhile makes it
/// look again from the new tail. `segment_exists` as for [`committed_end`].
pub fn publish_committed<M: FrameMemory>(
    tail: &AtomicU64,
    geometry: Geometry,
    memory: &mut M,
    segment_exists: impl Fn(u64) -> bool,
) -> Result<u64, Error> {
    let mut from = tail.load(Ordering::Acquire);
    loop {
        let end = committed_end(from, geometry, memory, &segment_exists)?;
        if end == from {
            return Ok(from);
        }
        match tail.compare_exchange(from, end, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(end),
            Err(now) => from = now,
        }
    }
}

/// The end of the frames committed one after another from `from` (a frame start, the tail):
/// the first position whose frame word is not a committed frame's. Past the tail, only an
/// exclusive producer commits (see [`claim_exclusive`]): this is the tail as it will be
/// once that producer stores it, or as [`publish_committed`] will set it if it died first.
///
/// `segment_exists` says whether the segment that holds a position has been made: the walk
/// never makes one (a damaged tail may point far past every segment file), and stops where
/// there is none. It also stops at a frame that would overrun its segment, which no producer
/// commits.
pub fn committed_end<M: FrameMemory>(
    from: u64,
    geometry: Geometry,
    memory: &mut M,
    segment_exists: impl Fn(u64) -> bool,
) -> Result<u64, Error> {
    let mut end = from;
    let mut known_to_exist = None;
    loop {
        let index = geometry.segment_index(end);
        if known_to_exist != Some(index) {
            if !segment_exists(end) {
                return Ok(end);
            }
            known_to_exist = Some(index);
        }
        let FrameState::Committed(frame) = read_frame(memory.frame_word(end)?) else {
            return Ok(end);
        };
        let aligned = align_up(frame.length as u64, FRAME_ALIGNMENT);
        if end + aligned > geometry.segment_end(end) {
            return Ok(end);
        }
        end += aligned;
    }
}

/// The third step: the record says where the claim is. Between `reserve` and this store a
/// producer that dies leaves a claim no record names; [`unblock`] handles exactly that.
#[inline(always)]
pub fn resolve(record: &ClaimRecord, position: u64) {
    record.state.store(position | 1, Ordering::Release);
}

/// Pads what is left of the claim in `record`, if any, and marks the record idle. A piece
/// that is not zero any more was padded by a reader already.
pub fn settle<M: FrameMemory>(
    record: &ClaimRecord,
    geometry: Geometry,
    memory: &mut M,
    wake: &WakeWord,
    barrier: BarrierKind,
) -> Result<(), Error> {
    let Claimed::At { position, len } = record.read() else {
        record.state.store(ClaimRecord::IDLE, Ordering::Release);
        return Ok(());
    };
    if len == 0 || len % FRAME_ALIGNMENT != 0 || len > geometry.max_frame_len() {
        // Not a claim this code could have made (a damaged meta file): nothing to pad.
        record.state.store(ClaimRecord::IDLE, Ordering::Release);
        return Ok(());
    }
    let end = position.saturating_add(len);
    let segment_end = geometry.segment_end(position);
    // The piece in the next segment first: while the first piece is unpadded, no reader can
    // be past it, so none can be waiting at the second.
    if end > segment_end {
        pad_if_empty(memory.frame_word(segment_end)?, end - segment_end);
    }
    pad_if_empty(
        memory.frame_word(position)?,
        end.min(segment_end) - position,
    );
    record.state.store(ClaimRecord::IDLE, Ordering::Release);
    wake.wake_waiters(barrier);
    Ok(())
}

fn pad_if_empty(word: &AtomicU64, len: u64) -> bool {
    word.compare_exchange(0, padding_word(len), Ordering::Release, Ordering::Relaxed)
        .is_ok()
}

/// Makes a claimed frame visible, then wakes sleeping consumers if, and only if, there are
/// any. Fails (returns false) if a reader revoked the claim: the frame is padding then, and no
/// reader will ever deliver it.
///
/// A commit and a revocation must never both win, or readers that skipped the padding would
/// disagree with readers that see the message. They meet in the producer's claim record, as
/// in Dekker's algorithm: the producer stores `COMMITTING` into `state`, then reads
/// `revoked`; a reader stores the claim into `revoked`, then reads `state` (and takes it with
/// a compare-and-swap, see [`unblock`]). The store→load order each side needs is the
/// asymmetric barrier that also guards the wake-up: the producer's half costs a compiler
/// fence, the reader's half is a `membarrier` system call, paid only on a revocation, after
/// the claim timeout. So at least one of the two sees the other: the producer stores the frame
/// word only if it saw no revocation (and then the reader sees `COMMITTING` and backs off);
/// otherwise it pads its own claim, which the reader may have padded already.
///
/// The commit thus takes no locked instruction. A locked instruction (a compare-and-swap
/// here, before) waits for the store buffer to drain, and the store buffer holds this
/// message's stores to the line the consumer is polling, so it waited for that line to come
/// back from the consumer's core on every message.
#[inline(always)]
pub fn commit(
    word: &AtomicU64,
    committed_word: u64,
    record: &ClaimRecord,
    wake: &WakeWord,
    barrier: BarrierKind,
) -> bool {
    let claimed = record.state.load(Ordering::Relaxed);
    if claimed & 1 == 0 {
        // A reader revoked the claim and set the record idle: the frame is its padding.
        return false;
    }
    record
        .state
        .store(claimed | ClaimRecord::COMMITTING, Ordering::Relaxed);
    light_barrier(barrier);
    if record.revoked.load(Ordering::Relaxed) == claimed {
        // A reader is revoking this claim (and backs off only if it saw `COMMITTING` first):
        // either way the frame must not carry the message. Padding it is idempotent.
        pad_if_empty(word, record.len.load(Ordering::Relaxed));
        record.state.store(ClaimRecord::IDLE, Ordering::Release);
        wake.wake_waiters(barrier);
        return false;
    }
    word.store(committed_word, Ordering::Release);
    record.state.store(ClaimRecord::IDLE, Ordering::Release);
    wake.wake_waiters(barrier);
    true
}

/// Marks the claim at `start` of `record`'s producer as being revoked (the first step of
/// [`revoke`]). The mark only grows: a reader that read an earlier claim of this producer and
/// marks it late leaves a later reader's mark of the claim in flight as it is.
pub fn mark_revoked(record: &ClaimRecord, start: u64) {
    record.revoked.fetch_max(start | 1, Ordering::Relaxed);
}

/// A reader's half of the race in [`commit`]: marks the claim at `start` revoked, orders that
/// store before its next load with the heavy barrier, then takes the record if the producer
/// has not started committing. True if the claim is the reader's to pad.
///
/// The mark only ever grows (`fetch_max`: a slot's claims only move forward), so that a slow
/// reader marking an earlier claim of the same producer cannot hide a later reader's mark of
/// the claim in flight. A claim already seen committing is left alone, and so is every claim
/// where the barrier cannot order this reader against producers.
pub fn revoke(record: &ClaimRecord, start: u64) -> bool {
    if !barrier_orders_producers() || record.state.load(Ordering::Acquire) != start | 1 {
        return false;
    }
    mark_revoked(record, start);
    if !heavy_barrier() {
        // The call failed after all: the producer may or may not see the mark (and abort its
        // commit if it does); this reader does not pad either way.
        return false;
    }
    record
        .state
        .compare_exchange(
            start | 1,
            ClaimRecord::IDLE,
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_ok()
}

/// Aborts a claim: its whole range becomes padding (unless a reader revoked it already).
#[inline]
pub fn abort(
    word: &AtomicU64,
    frame_len: u64,
    record: &ClaimRecord,
    wake: &WakeWord,
    barrier: BarrierKind,
) {
    pad_if_empty(word, frame_len);
    record.state.store(ClaimRecord::IDLE, Ordering::Release);
    wake.wake_waiters(barrier);
}

/// Turns the unused end of a claimed range (`rest_len` bytes at `rest`) into padding, before
/// the frame at the range's start is committed: a message set that came out shorter than
/// its claim. No wake-up of its own: a reader reaches the padding only through that frame,
/// whose commit also publishes this store, and whose wake-up covers both.
///
/// A plain store, not a swap from zero: the word lies inside this producer's claim, where no
/// reader ever writes (one that revokes the claim pads it from its start, in one frame), and
/// it need not be zero (a single-producer log's recycled segments are not zeroed).
#[inline]
pub fn pad_rest_of_claim(rest: &AtomicU64, rest_len: u64) {
    rest.store(padding_word(rest_len), Ordering::Relaxed);
}

/// A producer slot as a stalled reader sees it: the claim record and whether the owner
/// process runs. Dead is for good; alive may be stale, which only makes the reader wait.
pub struct ProducerView<'a> {
    /// The slot's claim record.
    pub record: &'a ClaimRecord,
    /// Whether the owning process runs.
    pub alive: bool,
}

/// What a reader stalled at the empty frame word at `position` (with the tail past it) can
/// do about it. Returns true if the frame word is not empty any more (padded here, or
/// committed meanwhile), false if the reader has to keep waiting.
///
/// * The claim covering `position` is in a record: if its owner is dead, or `revoke_live`
///   (the owner is alive but has held the claim past the reader's timeout), its piece in
///   this segment is padded, with a compare-and-swap from zero (a dead producer may have
///   committed it just before dying; a revoked one pads its claim itself too). A live claim
///   is revoked only by winning the race described at [`commit`], where its producer learns
///   it.
/// * No record covers it: its claimer has not stored its position yet (or died before it
///   could). If no producer in that state is alive, everything from `position` to the next
///   non-zero word (or the next claim a record names, or the tail, or the segment end) was
///   claimed by dead producers — a live producer's claim there would be in a record, or
///   would make it unresolved — and is padded as one frame. If such a producer is alive, the
///   reader waits for it to store its position: that is two instructions away, unless the
///   process is stopped exactly there.
pub fn unblock<'a, M: FrameMemory>(
    position: u64,
    tail: &AtomicU64,
    geometry: Geometry,
    producers: impl IntoIterator<Item = ProducerView<'a>>,
    revoke_live: bool,
    memory: &mut M,
    wake: &WakeWord,
) -> Result<bool, Error> {
    // A reader pads on a cold path: the full fence costs nothing that matters here.
    let barrier = BarrierKind::Fence;
    // The tail first: every claim below it was recorded (as unresolved at least) before it
    // was made, so the records read next account for every one of them.
    let tail = tail.load(Ordering::Acquire);
    if tail <= position {
        return Ok(false);
    }
    let segment_end = geometry.segment_end(position);
    let mut end = tail.min(segment_end);
    let mut unresolved_alive = false;
    let mut unresolved_dead = false;
    for producer in producers {
        let claimed = match producer.record.read() {
            // A record that cannot be a claim (a damaged meta file) names nothing.
            Claimed::At { len, .. }
                if len == 0 || len % FRAME_ALIGNMENT != 0 || len > geometry.max_frame_len() =>
            {
                Claimed::Idle
            }
            claimed => claimed,
        };
        match claimed {
            Claimed::Idle => {}
            Claimed::Unresolved if producer.alive => unresolved_alive = true,
            Claimed::Unresolved => unresolved_dead = true,
            Claimed::At {
                position: start,
                len,
            } if start <= position && position < start.saturating_add(len) => {
                // Map first: a reader that won the record and then could not pad (a full disk)
                // would leave a claim that no record names and nobody pads.
                let word = memory.frame_word(position)?;
                // A claim across a segment end is never committed: its producer only pads
                // its pieces (it stays recorded only when that failed), so a reader pads them
                // too without taking the record, which must keep naming the other piece.
                let crossing = start.saturating_add(len) > geometry.segment_end(start);
                if producer.alive {
                    // A live claim is revoked only through its record, against the producer's
                    // commit (see [`commit`]): one of the two wins, never both.
                    let revoked = revoke_live && (crossing || revoke(producer.record, start));
                    if !revoked {
                        return Ok(false);
                    }
                }
                let piece_end = start.saturating_add(len).min(segment_end);
                let padded = pad_if_empty(word, piece_end - position);
                if padded && !producer.alive && piece_end == start.saturating_add(len) {
                    // The whole claim is padding now: the dead owner's slot may be reused.
                    // (A dead producer writes nothing more, committing or not.)
                    producer
                        .record
                        .state
                        .store(ClaimRecord::IDLE, Ordering::Release);
                }
                wake.wake_waiters(barrier);
                return Ok(true);
            }
            Claimed::At {
                position: start, ..
            } => {
                if start > position {
                    end = end.min(start);
                }
            }
        }
    }
    if unresolved_alive || !unresolved_dead {
        return Ok(!read_frame_is_empty(memory.frame_word(position)?));
    }
    let mut next = position + FRAME_ALIGNMENT;
    while next < end && read_frame_is_empty(memory.frame_word(next)?) {
        next += FRAME_ALIGNMENT;
    }
    pad_if_empty(memory.frame_word(position)?, next.min(end) - position);
    wake.wake_waiters(barrier);
    Ok(true)
}

fn read_frame_is_empty(word: &AtomicU64) -> bool {
    word.load(Ordering::Acquire) == 0
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
