//! Read-only inspection of segment files, one file at a time: the frames as they lie, without
//! joining the log as a producer or consumer. `logbus dump`, log verification and the bridge
//! see the log through this.
//!
//! Nothing here trusts the file: every length is checked before it is used, and a frame that
//! breaks the format ends the walk with an error naming its position, never a panic.

use crate::format::{
    self, align_up, kind, FrameWord, SegmentHeader, FRAME_ALIGNMENT, FRAME_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};
use crate::{segment, Error, Result};
use memmap2::{Mmap, MmapOptions};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// One segment file opened read-only, its header checked.
///
/// ```
/// use logbus::{inspect::SegmentFile, Log, LogOptions};
/// let dir = tempfile::tempdir()?;
/// let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(1 << 16))?;
/// log.producer()?.offer(b"hello")?;
///
/// let file = SegmentFile::open(dir.path().join("00000000000000000000.seg"))?;
/// let frames = file.frames().collect::<Result<Vec<_>, _>>()?;
/// assert_eq!(frames.len(), 1);
/// assert_eq!(frames[0].payload(), b"hello");
/// assert_eq!(frames[0].checksum_ok(), Some(true));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SegmentFile {
    path: PathBuf,
    header: SegmentHeader,
    map: Mmap,
    /// Keeps the shared lock taken on opening (see `segment::lock_shared`).
    _locked: File,
}

impl SegmentFile {
    /// Opens and checks the segment file at `path` (magic, version, header checksum, length).
    pub fn open(path: impl AsRef<Path>) -> Result<SegmentFile> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // Held while the mapping lives, so that retention deletes this file rather than
        // recycling it under us.
        segment::lock_shared(&file, path)?;
        let header = segment::read_header(&file, path)?;
        // SAFETY: a read-only shared mapping of a file whose length read_header checked. Its
        // bytes may change under us (producers append): every read of a frame word below is
        // atomic, and everything behind a frame word is read only once the word says the
        // frame is committed, after which no writer touches it.
        let map = unsafe { MmapOptions::new().map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(SegmentFile {
            path: path.to_path_buf(),
            header,
            map,
            _locked: file,
        })
    }

    /// The file's header.
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Log position of the first data byte.
    pub fn base_position(&self) -> u64 {
        self.header.base_position
    }

    /// First position after this segment.
    pub fn end_position(&self) -> u64 {
        self.header.base_position + self.header.capacity
    }

    /// The frames from the segment's start, in order. The walk ends at the first zero frame
    /// word (nothing committed there yet: the end of the data, or a claim in flight), at the
    /// segment's end, or at an error.
    pub fn frames(&self) -> Frames<'_> {
        Frames {
            file: self,
            offset: 0,
            done: false,
        }
    }

    fn data(&self) -> &[u8] {
        &self.map[SEGMENT_HEADER_LEN as usize..]
    }

    fn frame_word(&self, offset: u64) -> u64 {
        let data = self.data();
        debug_assert!(offset % FRAME_ALIGNMENT == 0 && offset + 8 <= data.len() as u64);
        // SAFETY: `offset` is 8-aligned inside the data area (checked by the caller), and the
        // data area starts page-aligned, so this is an aligned u64 inside the mapping. A load
        // is what other processes' stores to this word pair with.
        let word = unsafe { &*(data.as_ptr().add(offset as usize) as *const AtomicU64) };
        word.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for SegmentFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentFile")
            .field("path", &self.path)
            .field("base_position", &self.header.base_position)
            .field("capacity", &self.header.capacity)
            .finish()
    }
}

/// One frame as it lies in a segment file.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    position: u64,
    word: FrameWord,
    checksum: u32,
    timestamp: u64,
    payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The frame's log position.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The frame kind byte (see [`format::kind`]); not checked against the known kinds.
    pub fn kind(&self) -> u8 {
        self.word.kind
    }

    /// The frame flags byte (see [`format::flags`]).
    pub fn flags(&self) -> u8 {
        self.word.flags
    }

    /// The producer slot of the writer.
    pub fn producer(&self) -> u16 {
        self.word.producer
    }

    /// Header plus payload bytes.
    pub fn length(&self) -> u32 {
        self.word.length as u32
    }

    /// Bytes the frame takes in the segment, aligned: the distance to the next frame.
    pub fn aligned_length(&self) -> u64 {
        align_up(u64::from(self.length()), FRAME_ALIGNMENT)
    }

    /// Nanoseconds since the Unix epoch, if the frame carries a timestamp.
    pub fn timestamp_ns(&self) -> Option<u64> {
        (self.word.kind != kind::PADDING && self.word.flags & format::flags::TIMESTAMP != 0)
            .then_some(self.timestamp)
    }

    /// The checksum in the header, if the frame carries one.
    pub fn checksum(&self) -> Option<u32> {
        (self.word.kind != kind::PADDING && self.word.flags & format::flags::CHECKSUM != 0)
            .then_some(self.checksum)
    }

    /// Whether the payload matches its checksum; `None` if the frame carries none.
    pub fn checksum_ok(&self) -> Option<bool> {
        self.checksum()
            .map(|expected| format::checksum(self.payload) == expected)
    }

    /// The payload of a data or message-set frame; empty for padding.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The records of a message set, as (log position, bytes); an `Err` where a record's
    /// length runs past the payload. Empty for other kinds.
    pub fn records(&self) -> impl Iterator<Item = Result<(u64, &'a [u8])>> + 'a {
        let payload_position = self.position + FRAME_HEADER_LEN;
        let frame_position = self.position;
        let payload = if self.word.kind == kind::BATCH {
            self.payload
        } else {
            &[]
        };
        format::records(payload).map(move |record| match record {
            Ok((offset, bytes)) => Ok((payload_position + offset as u64, bytes)),
            Err(detail) => Err(Error::CorruptFrame {
                position: frame_position,
                detail,
            }),
        })
    }
}

/// The frames of a [`SegmentFile`], in order; see [`SegmentFile::frames`].
pub struct Frames<'a> {
    file: &'a SegmentFile,
    offset: u64,
    done: bool,
}

impl Frames<'_> {
    /// The position the walk has reached: after the last frame returned. Once the walk has
    /// ended without an error, this is where the written data of the segment ends.
    pub fn next_position(&self) -> u64 {
        self.file.base_position() + self.offset
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let capacity = self.file.header.capacity;
        if self.done || self.offset >= capacity {
            return None;
        }
        let position = self.next_position();
        let word = FrameWord::unpack(self.file.frame_word(self.offset));
        if word.length == 0 {
            self.done = true;
            return None;
        }
        let length = word.length.max(0) as u64;
        let aligned = match format::frame_extent(word, position, self.file.end_position()) {
            Ok(aligned) => aligned,
            Err(detail) => {
                self.done = true;
                return Some(Err(Error::CorruptFrame { position, detail }));
            }
        };
        let start = self.offset as usize;
        let data = self.file.data();
        let (checksum, timestamp, payload) = if word.kind != kind::PADDING {
            let header = &data[start..start + FRAME_HEADER_LEN as usize];
            (
                u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")),
                u64::from_le_bytes(header[16..24].try_into().expect("8 bytes")),
                &data[start + FRAME_HEADER_LEN as usize..start + length as usize],
            )
        } else {
            (0, 0, &data[..0])
        };
        self.offset += aligned;
        Some(Ok(Frame {
            position,
            word,
            checksum,
            timestamp,
            payload,
        }))
    }
}

/// The meta file of a log, read-only with `pread`: never mapped, never written, and read
/// without opening the log — which would recover it (pad dead producers' claims, cut off a
/// torn tail) before anything could be shown. What `logbus dump` shows; needs read permission
/// only.
///
/// ```
/// use logbus::{inspect::MetaFile, Log, LogOptions};
/// let dir = tempfile::tempdir()?;
/// let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(1 << 16))?;
/// let producer = log.producer()?;
/// let position = log.consumer_named("billing")?.commit_position()?;
///
/// let meta = MetaFile::open(dir.path())?;
/// assert_eq!(meta.header().segment_capacity, 1 << 16);
/// assert_eq!(meta.producers()?[0].slot, producer.slot());
/// assert_eq!(meta.consumers()?[0].name, "billing");
/// assert_eq!(meta.consumers()?[0].position, position);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MetaFile {
    file: File,
    path: PathBuf,
    header: format::MetaHeader,
}

/// A producer slot in use, as [`MetaFile::producers`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotView {
    /// The slot number, written in every frame its producer writes.
    pub slot: u16,
    /// The owner's process id.
    pub pid: u32,
    /// The owner's start time, in clock ticks since boot.
    pub start_time: u64,
    /// When the slot was taken, ns since the Unix epoch.
    pub acquired_ns: u64,
    /// Whether the owner still runs: its pid exists with the start time the slot records.
    pub alive: bool,
    /// Its claim in flight, if any.
    pub claim: Option<ClaimView>,
}

/// A claim in flight, as a producer slot records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimView {
    /// The producer slot.
    pub slot: u16,
    /// Where the claim starts; `None` between its `fetch_add` and the store of its position.
    pub position: Option<u64>,
    /// Its aligned length.
    pub len: u64,
}

/// A durable cursor, as [`MetaFile::consumers`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CursorView {
    /// Its name.
    pub name: String,
    /// The committed position: where the next holder resumes.
    pub position: u64,
    /// The pid of the process holding it, if one does.
    pub holder: Option<u32>,
    /// When the position was last committed, ns since the Unix epoch.
    pub updated_ns: u64,
}

impl MetaFile {
    /// Opens and checks the meta file of the log in `dir`, with the same errors as
    /// [`crate::Log::open`]: not a log, another kind of file, another version, a corrupt
    /// header, a wrong length.
    pub fn open(dir: impl AsRef<Path>) -> Result<MetaFile> {
        use std::os::unix::fs::FileExt;
        let dir = dir.as_ref();
        let path = dir.join(format::META_FILE_NAME);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir.is_dir() => {
                return Err(Error::NotALog { path: dir.into() })
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let mut header = format::MetaHeader::default();
        if len < std::mem::size_of::<format::MetaHeader>() as u64 {
            return Err(crate::meta::length_error(
                &path,
                len,
                crate::meta::META_FILE_LEN,
            ));
        }
        file.read_exact_at(bytemuck::bytes_of_mut(&mut header), 0)
            .map_err(|e| Error::io(&path, e))?;
        crate::meta::validate_header(&header, &path, len)?;
        Ok(MetaFile { file, path, header })
    }

    /// The header, as checked on open.
    pub fn header(&self) -> &format::MetaHeader {
        &self.header
    }

    /// The tail: the position the next claim gets (an exclusive producer's frame may lie
    /// committed at it for a moment, or for good if that producer died before moving the
    /// tail: see docs/FORMAT.md, "Exclusive producers"). Read until two reads agree, since a
    /// read of the file is not atomic with a producer's claim.
    pub fn tail(&self) -> Result<u64> {
        let mut last = self.read_u64(crate::meta::offsets::TAIL)?;
        for _ in 0..8 {
            let again = self.read_u64(crate::meta::offsets::TAIL)?;
            if again == last {
                break;
            }
            last = again;
        }
        Ok(last)
    }

    /// The process whose exclusive producer ([`crate::Log::exclusive_producer`]) holds the
    /// log, as its pid and whether it still runs; `None` if no producer is exclusive.
    pub fn exclusive_holder(&self) -> Result<Option<(u32, bool)>> {
        let owner = self.read_u64(crate::meta::offsets::EXCLUSIVE)?;
        if owner == 0 {
            return Ok(None);
        }
        Ok(Some((
            crate::meta::split_owner(owner).0,
            crate::meta::owner_alive(owner),
        )))
    }

    /// The producer slots in use, live or dead, with their claims in flight.
    pub fn producers(&self) -> Result<Vec<SlotView>> {
        use crate::meta::offsets::*;
        let table = self.read(
            PRODUCERS,
            PRODUCER_SLOT * u64::from(self.header.producer_slots),
        )?;
        let mut found = Vec::new();
        for (index, slot) in table.chunks_exact(PRODUCER_SLOT as usize).enumerate() {
            let word = |at: usize| u64::from_le_bytes(slot[at..at + 8].try_into().expect("8"));
            let owner = word(SLOT_OWNER);
            if owner == 0 {
                continue;
            }
            let pid = crate::meta::split_owner(owner).0;
            let claim = match word(SLOT_CLAIM_STATE) {
                crate::protocol::ClaimRecord::IDLE => None,
                crate::protocol::ClaimRecord::UNRESOLVED => Some(None),
                state => Some(Some(
                    state & !(1 | crate::protocol::ClaimRecord::COMMITTING),
                )),
            }
            .map(|position| ClaimView {
                slot: index as u16,
                position,
                len: word(SLOT_CLAIM_LEN),
            });
            found.push(SlotView {
                slot: index as u16,
                pid,
                start_time: word(SLOT_START_TIME),
                acquired_ns: word(SLOT_ACQUIRED_NS),
                alive: crate::meta::owner_alive(owner),
                claim,
            });
        }
        Ok(found)
    }

    /// The durable cursors in use. Each entry is read as readers without the table's lock
    /// must (docs/FORMAT.md): state, fields, state again; an entry that changed meanwhile is
    /// read again.
    pub fn consumers(&self) -> Result<Vec<CursorView>> {
        use crate::meta::offsets::*;
        let mut found = Vec::new();
        for index in 0..u64::from(self.header.consumer_slots) {
            let at = CURSORS + index * CURSOR_ENTRY;
            for _ in 0..100 {
                let entry = self.read(at, CURSOR_ENTRY)?;
                let word = |at: usize| u64::from_le_bytes(entry[at..at + 8].try_into().expect("8"));
                let state = word(CURSOR_STATE);
                if state & 1 == 0 {
                    break;
                }
                if self.read_u64(at + CURSOR_STATE as u64)? != state {
                    continue;
                }
                let name = &entry[CURSOR_NAME..CURSOR_NAME + crate::meta::MAX_CONSUMER_NAME_LEN];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                let holder = word(CURSOR_HOLDER);
                found.push(CursorView {
                    name: String::from_utf8_lossy(name).into_owned(),
                    position: word(CURSOR_POSITION),
                    holder: (holder != 0).then_some(holder as u32),
                    updated_ns: word(CURSOR_UPDATED_NS),
                });
                break;
            }
        }
        Ok(found)
    }

    fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut bytes, offset)
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(bytes)
    }

    fn read_u64(&self, offset: u64) -> Result<u64> {
        let bytes = self.read(offset, 8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Log, LogOptions};

    #[test]
    fn a_meta_file_read_without_the_log_shows_what_the_library_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(1 << 16)).unwrap();
        let mut producer = log.producer().unwrap();
        producer.offer(b"hello").unwrap();
        let claim = producer.claim(10).unwrap();
        let held = claim.position();

        let meta = MetaFile::open(dir.path()).unwrap();
        assert_eq!(meta.header().log_id, log.id());
        assert_eq!(meta.tail().unwrap(), log.tail());
        let slots = meta.producers().unwrap();
        let library = log.producers();
        assert_eq!(slots.len(), library.len());
        assert_eq!(slots[0].slot, library[0].slot);
        assert_eq!(slots[0].pid, std::process::id());
        assert_eq!(slots[0].start_time, library[0].start_time);
        assert!(slots[0].alive);
        assert_eq!(
            slots[0].claim,
            Some(ClaimView {
                slot: slots[0].slot,
                position: Some(held),
                len: 40
            })
        );
        drop(claim);
        assert_eq!(meta.producers().unwrap()[0].claim, None);
        drop(producer);
        assert!(meta.producers().unwrap().is_empty());
    }

    #[test]
    fn a_meta_file_reader_refuses_what_is_not_a_meta_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = MetaFile::open(dir.path()).err().unwrap();
        assert!(matches!(err, Error::NotALog { .. }), "{err}");
        std::fs::write(dir.path().join(format::META_FILE_NAME), [7u8; 200]).unwrap();
        let err = MetaFile::open(dir.path()).err().unwrap();
        assert!(matches!(err, Error::BadMagic { .. }), "{err}");
    }

    #[test]
    fn a_walk_shows_data_sets_and_padding_and_ends_at_a_claim_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(1 << 16)).unwrap();
        let mut producer = log.producer().unwrap();
        producer.offer(b"one").unwrap();
        producer.offer_batch(&[&b"ab"[..], b"cde"]).unwrap();
        drop(producer.claim(10).unwrap());
        let claim = producer.claim(5).unwrap();
        let claimed_at = claim.position();

        let file = SegmentFile::open(dir.path().join(format::segment_file_name(0))).unwrap();
        let mut frames = file.frames();
        let all: Vec<Frame<'_>> = frames.by_ref().map(Result::unwrap).collect();
        let kinds: Vec<_> = all.iter().map(Frame::kind).collect();
        assert_eq!(kinds, [kind::DATA, kind::BATCH, kind::PADDING]);
        assert_eq!(all[0].payload(), b"one");
        let records: Vec<_> = all[1].records().map(Result::unwrap).collect();
        assert_eq!(records, [(32 + 24, &b"ab"[..]), (32 + 24 + 8, &b"cde"[..])]);
        assert_eq!(frames.next_position(), claimed_at);
        claim.commit().unwrap();
        assert_eq!(file.frames().count(), 4);
    }

    #[test]
    fn a_corrupt_length_ends_the_walk_with_an_error_naming_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(1 << 16)).unwrap();
        let mut producer = log.producer().unwrap();
        producer.offer(b"good").unwrap();
        let bad = producer.offer(b"to be broken").unwrap();
        let path = dir.path().join(format::segment_file_name(0));
        let mut bytes = std::fs::read(&path).unwrap();
        let at = (SEGMENT_HEADER_LEN + bad) as usize;
        bytes[at..at + 4].copy_from_slice(&12i32.to_le_bytes());
        std::fs::write(&path, bytes).unwrap();

        let file = SegmentFile::open(&path).unwrap();
        let results: Vec<_> = file.frames().collect();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].as_ref().unwrap().payload(), b"good");
        let err = results[1].as_ref().unwrap_err();
        assert!(
            matches!(err, Error::CorruptFrame { position, .. } if *position == bad),
            "{err}"
        );
    }
}
