//! Checking a whole log ([`crate::Log::verify`]), and recovering it when it is opened with no
//! producer process alive: after every process of it was killed, or the machine crashed.
//!
//! Recovery walks the frames written since the last recovery. A claim left uncommitted by a
//! dead producer is padded through the protocol's own [`protocol::unblock`], as a consumer
//! would. Anything else that breaks the format — a checksum that does not match, a length
//! that does not fit, a zero frame word no dead producer's record accounts for: the torn
//! tail of a machine crash, where the last pages of a segment reached the disk without the
//! pages before them — is cut off: padded to the end of its segment, with every later
//! segment padded whole and the tail moved past them, so that it is never served and no
//! position is ever reused. Like Kafka's log recovery, it keeps everything before the first
//! bad frame and nothing after it.

use crate::format::{self, kind, FrameHeader, FRAME_HEADER_LEN};
use crate::inspect::SegmentFile;
use crate::log::{list_segments, Shared};
use crate::protocol::{self, read_frame, FrameMemory, FrameState};
use crate::segment::{Prefault, Segment};
use crate::sync::{AtomicU64, Ordering};
use crate::{Error, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A problem [`crate::Log::verify`] found, at a position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where: the frame, record or segment concerned.
    pub position: u64,
    /// What is wrong.
    pub detail: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "position {}: {}", self.position, self.detail)
    }
}

/// What [`crate::Log::verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: usize,
    /// Frames walked (data, message sets and padding).
    pub frames: u64,
    /// Messages in them (a message set counts its records).
    pub messages: u64,
    /// Where the committed frames end.
    pub end: u64,
    /// The log's tail when the check began.
    pub tail: u64,
    /// Everything wrong, in log order.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What recovery on open found and did; see [`crate::Log::recovery`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Where the walk started: where the previous recovery ended.
    pub from: u64,
    /// Frames found whole.
    pub frames: u64,
    /// Claims of dead producers turned into padding.
    pub dead_claims_padded: u64,
    /// Where the torn tail began, and why, if there was one.
    pub cut: Option<Problem>,
    /// Where recovery had to stop without cutting, and why: a segment file it cannot open (a
    /// consumer that gets there meets the same error). The next open tries again from there.
    pub halted: Option<Problem>,
    /// The tail after recovery (past the cut, if any).
    pub tail: u64,
    /// Producer slots of dead processes given back once every claim below the tail was
    /// settled (including those of producers killed between claiming and recording where).
    pub dead_slots_freed: usize,
}

pub(crate) fn verify(shared: &Shared) -> Result<VerifyReport> {
    let capacity = shared.geometry.capacity();
    let mut report = VerifyReport {
        tail: shared.meta.tail().load(Ordering::Acquire),
        ..VerifyReport::default()
    };
    let bases = list_segments(&shared.dir)?;
    let mut expected = bases.first().copied().unwrap_or(0);
    report.end = expected;
    for base in bases {
        let mut problem = |position: u64, detail: String| {
            report.problems.push(Problem { position, detail });
        };
        if base != expected {
            problem(
                expected,
                format!("the segment files for positions {expected} to {base} are missing"),
            );
        }
        expected = base + capacity;
        let path = shared.dir.join(format::segment_file_name(base));
        let file = match SegmentFile::open(&path) {
            Ok(file) => file,
            Err(e) => {
                problem(base, e.to_string());
                continue;
            }
        };
        let header = file.header();
        if header.log_id != shared.spec.log_id
            || header.capacity != capacity
            || header.log_flags != shared.spec.log_flags
        {
            problem(
                base,
                format!(
                    "{}: belongs to another log, or has other options",
                    path.display()
                ),
            );
            continue;
        }
        report.segments += 1;
        let mut frames = file.frames();
        for frame in frames.by_ref() {
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => {
                    problem(error_position(&e, base), e.to_string());
                    break;
                }
            };
            report.frames += 1;
            match frame.kind() {
                kind::PADDING => {}
                kind::DATA | kind::BATCH => {
                    if frame.checksum_ok() == Some(false) {
                        problem(
                            frame.position(),
                            format!(
                                "checksum mismatch: header says {:#010x}, payload has {:#010x}",
                                frame.checksum().unwrap_or(0),
                                format::checksum(frame.payload())
                            ),
                        );
                    }
                    if frame.kind() == kind::DATA {
                        report.messages += 1;
                    }
                    for record in frame.records() {
                        match record {
                            Ok(_) => report.messages += 1,
                            Err(e) => problem(frame.position(), e.to_string()),
                        }
                    }
                }
                other => problem(frame.position(), format!("unknown frame kind {other}")),
            }
        }
        let end = frames.next_position();
        report.end = end;
        let uncommitted_to = report.tail.min(file.end_position());
        if end < uncommitted_to {
            problem(
                end,
                format!(
                    "the claims from {end} to {uncommitted_to} are not committed (in flight, or \
                     left by dead producers that no consumer has padded yet)"
                ),
            );
        }
    }
    Ok(report)
}

fn error_position(error: &Error, fallback: u64) -> u64 {
    match error {
        Error::CorruptFrame { position, .. } | Error::ChecksumMismatch { position, .. } => {
            *position
        }
        _ => fallback,
    }
}

/// The frame word at `position` as its segment file holds it, read without mapping the file;
/// `None` if there is no such file or it cannot be read.
fn word_in_file(shared: &Shared, position: u64) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let offset = shared.geometry.offset_in_segment(position);
    let mut word = [0u8; 8];
    std::fs::File::open(shared.segment_file_path(position))
        .ok()?
        .read_exact_at(&mut word, format::SEGMENT_HEADER_LEN + offset)
        .ok()?;
    Some(u64::from_le_bytes(word))
}

/// Recovers the log if no producer process is alive; `None` if one is (it may be writing, and
/// the log is not at rest) or if nothing was written since the last recovery.
pub(crate) fn recover(shared: &Arc<Shared>) -> Result<Option<RecoveryReport>> {
    if shared.meta.producers_in_use().iter().any(|p| p.alive) {
        return Ok(None);
    }
    // Frames an exclusive producer committed but died before moving the tail over belong to
    // the log (readers may have had them): the tail moves past them first. The word at the
    // tail is read from the file first, so that opening a log at rest maps nothing.
    let geometry = shared.geometry;
    let mut tail = shared.meta.tail().load(Ordering::Acquire);
    if word_in_file(shared, tail).is_some_and(|word| word != 0) {
        tail = protocol::publish_committed(
            shared.meta.tail(),
            geometry,
            &mut SegmentWords::new(shared),
            |position| shared.segment_file_exists(position),
        )?;
    }
    let earliest = shared.earliest_position()?;
    let from = shared
        .meta
        .recovered_to()
        .load(Ordering::Acquire)
        .max(earliest);
    if from >= tail {
        return Ok(None);
    }
    let mut report = RecoveryReport {
        from,
        tail,
        ..RecoveryReport::default()
    };
    let mut memory = SegmentWords::new(shared);
    let mut position = from;
    let cut = loop {
        if position >= tail {
            break None;
        }
        let word = match memory.existing_word(position) {
            Ok(Some(word)) => word,
            Ok(None) => {
                break Some(format!(
                    "the segment file for position {position} is missing"
                ))
            }
            Err(e) => {
                report.halted = Some(Problem {
                    position,
                    detail: e.to_string(),
                });
                break None;
            }
        };
        match read_frame(word) {
            FrameState::Committed(frame) => {
                let aligned =
                    match format::frame_extent(frame, position, geometry.segment_end(position)) {
                        Ok(aligned) => aligned,
                        Err(detail) => break Some(detail),
                    };
                if frame.kind != kind::PADDING {
                    if let Some(problem) = check_payload(&mut memory, position, frame)? {
                        break Some(problem);
                    }
                }
                report.frames += 1;
                position += aligned;
            }
            FrameState::Invalid(frame) => break Some(format!("negative length {}", frame.length)),
            FrameState::Empty => {
                // Every producer is dead: unblock pads a claim its record accounts for.
                let padded = protocol::unblock(
                    position,
                    shared.meta.tail(),
                    geometry,
                    shared.meta.producer_views(),
                    true,
                    &mut memory,
                    shared.meta.wake(),
                )?;
                if !padded {
                    break Some(
                        "an uncommitted frame no dead producer's record accounts for (a torn tail)"
                            .to_string(),
                    );
                }
                report.dead_claims_padded += 1;
            }
        }
    };
    if let Some(detail) = cut {
        report.tail = cut_off(shared, &mut memory, position)?;
        report.cut = Some(Problem { position, detail });
        position = report.tail;
    }
    if report.halted.is_none() && position >= shared.meta.tail().load(Ordering::Acquire) {
        report.dead_slots_freed = shared.meta.free_dead_producer_slots();
    }
    shared
        .meta
        .recovered_to()
        .store(position, Ordering::Release);
    Ok(Some(report))
}

/// Checks the checksum (and, for a message set, the records) of the committed frame at
/// `position`; the problem, if any.
fn check_payload(
    memory: &mut SegmentWords<'_>,
    position: u64,
    frame: format::FrameWord,
) -> Result<Option<String>> {
    let word = memory.frame_word(position)?;
    let header = word as *const AtomicU64 as *const u8;
    let payload_len = frame.length as usize - FRAME_HEADER_LEN as usize;
    // SAFETY: the frame is committed (its word was read with Acquire), its length was checked
    // to end inside the segment, and the mapping lives in `memory` while this borrow does;
    // no live producer can write it (recovery runs only when none is alive).
    let (checksum, payload) = unsafe {
        (
            header
                .add(std::mem::offset_of!(FrameHeader, checksum))
                .cast::<u32>()
                .read(),
            std::slice::from_raw_parts(header.add(FRAME_HEADER_LEN as usize), payload_len),
        )
    };
    if frame.flags & format::flags::CHECKSUM != 0 && format::checksum(payload) != checksum {
        return Ok(Some("checksum mismatch".to_string()));
    }
    if frame.kind == kind::BATCH {
        if let Err(detail) = format::check_records(payload) {
            return Ok(Some(detail));
        }
    }
    if frame.kind != kind::DATA && frame.kind != kind::BATCH {
        return Ok(Some(format!("unknown frame kind {}", frame.kind)));
    }
    Ok(None)
}

/// Pads everything from `cut` to the end of its segment, and every later segment file whole;
/// returns the new tail: the end of the last segment file, where a fresh segment begins.
/// Nothing torn is ever handed out again. No segment is created past the last file (only a
/// missing one between files, to pad it): a tail beyond the files names positions no file
/// ever held — a damaged meta file, or claims into a segment nobody lived to create — so the
/// tail comes back to the files' end, and only positions never written anywhere are reused.
fn cut_off(shared: &Arc<Shared>, memory: &mut SegmentWords<'_>, cut: u64) -> Result<u64> {
    let geometry = shared.geometry;
    let last_file_end = list_segments(&shared.dir)?
        .last()
        .map_or(0, |base| base + geometry.capacity());
    let new_tail = last_file_end;
    let mut position = cut;
    while position < new_tail {
        let end = geometry.segment_end(position);
        // A plain store: what lies here is garbage, not a frame anybody may still commit.
        memory
            .frame_word(position)?
            .store(format::padding_word(end - position), Ordering::Release);
        position = end;
    }
    shared.meta.tail().store(new_tail, Ordering::Release);
    Ok(new_tail)
}

/// How long a claim may stay uncommitted before a reader looks at who holds it; a live
/// producer commits in far less, so below this no slot table is read and no process checked.
const STALL_GRACE: Duration = Duration::from_millis(1);

/// A reader's memory of a stall: where it waits, since when, and when it may next look at the
/// producer table (at most once per [`STALL_GRACE`]: each look reads `/proc` for every live
/// producer, and a reader may be asked again every few microseconds).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stall {
    position: u64,
    since: Instant,
    next_look: Instant,
}

/// Called by a reader (a consumer, the bridge) that found nothing committed at `position`:
/// if the tail is past it and the claim there has stayed uncommitted past the grace period,
/// asks the protocol to pad it when its owner is dead (or has held it past `claim_timeout`).
/// `stall` is the reader's memory of where and since when it has waited. True if the frame
/// word changed.
pub(crate) fn unblock_if_stalled(
    shared: &Arc<Shared>,
    position: u64,
    stall: &mut Option<Stall>,
    claim_timeout: Duration,
) -> Result<bool> {
    if shared.meta.tail().load(Ordering::Acquire) <= position {
        *stall = None;
        return Ok(false);
    }
    let now = Instant::now();
    let current = match *stall {
        Some(current) if current.position == position => current,
        _ => {
            let new = Stall {
                position,
                since: now,
                next_look: now + STALL_GRACE,
            };
            *stall = Some(new);
            new
        }
    };
    if now < current.next_look {
        return Ok(false);
    }
    *stall = Some(Stall {
        next_look: now + STALL_GRACE,
        ..current
    });
    let stalled = now - current.since;
    let unblocked = match protocol::unblock(
        position,
        shared.meta.tail(),
        shared.geometry,
        shared.meta.producer_views(),
        stalled >= claim_timeout,
        &mut SegmentWords::new(shared),
        shared.meta.wake(),
    ) {
        Ok(unblocked) => unblocked,
        // The claim's segment cannot be made (a full disk): there is nothing to read past it
        // either, since no producer can write there. Wait on; once space is freed, its
        // producer or this reader pads it.
        Err(Error::NoSpace { .. }) => false,
        Err(e) => return Err(e),
    };
    if unblocked {
        *stall = None;
    }
    Ok(unblocked)
}

/// Frame words of the log's segments, for the cold paths that pad (a stalled consumer,
/// recovery): one segment mapped at a time, created if the producer that should have made it
/// died first.
pub(crate) struct SegmentWords<'a> {
    shared: &'a Arc<Shared>,
    mapped: Option<(u64, Arc<Segment>)>,
}

impl<'a> SegmentWords<'a> {
    pub fn new(shared: &'a Arc<Shared>) -> Self {
        SegmentWords {
            shared,
            mapped: None,
        }
    }

    /// The frame word at `position` if its segment file exists.
    fn existing_word(&mut self, position: u64) -> Result<Option<&AtomicU64>> {
        let index = self.shared.geometry.segment_index(position);
        if self
            .mapped
            .as_ref()
            .is_none_or(|(mapped, _)| *mapped != index)
        {
            match self.shared.segment(index, false, Prefault::Read)? {
                Some(segment) => self.mapped = Some((index, segment)),
                None => return Ok(None),
            }
        }
        self.frame_word(position).map(Some)
    }
}

impl FrameMemory for SegmentWords<'_> {
    fn frame_word(&mut self, position: u64) -> Result<&AtomicU64> {
        let geometry = self.shared.geometry;
        let index = geometry.segment_index(position);
        if self
            .mapped
            .as_ref()
            .is_none_or(|(mapped, _)| *mapped != index)
        {
            // Readers that pad (recovery, a stalled consumer) write a word now and then: the
            // page tables are filled for reading, not for a producer's stream of writes.
            let segment = self
                .shared
                .segment(index, true, Prefault::Read)?
                .expect("segment() with create always returns one");
            self.mapped = Some((index, segment));
        }
        let (_, segment) = self.mapped.as_ref().expect("mapped above");
        // SAFETY: positions here are 8-aligned frame starts inside the segment just mapped,
        // which `self.mapped` keeps alive for the borrow of `self`.
        Ok(unsafe {
            &*(segment
                .data_ptr()
                .add(geometry.offset_in_segment(position) as usize)
                as *const AtomicU64)
        })
    }
}
