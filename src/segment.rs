//! Segment files: made under a temporary name, sized with `fallocate` (or recycled from a
//! segment retention retired), published with a rename that cannot overwrite, validated on
//! open, and mapped with their pages pre-faulted.
//!
//! # Recycling, and the lock that makes it safe
//!
//! On a tmpfs the memory a log grows into is its largest cost: the kernel allocates, zeroes
//! and maps every page of a new segment. A log with retention therefore turns the segment it
//! is about to delete into the next one instead: renamed to a temporary name, zeroed, given
//! its new header and published under its new name. Its pages stay allocated and warm.
//!
//! A process that still reads the old segment through a mapping must never see it change.
//! Every descriptor through which segment bytes are read holds a shared `flock` on the file
//! for as long as they are read ([`lock_shared`], taken by every opener in this crate); the
//! recycler takes an exclusive lock without waiting, and only if it gets it does it rename
//! the file away and write: otherwise the file is deleted as before, and its readers keep
//! their bytes. An opener that locked a file checks that its path still names that file
//! ([`still_named`]), so it never trusts a file that was renamed away (and perhaps recycled)
//! between its `open` and its lock. Only logs made with [`format::log_flags::RECYCLING`]
//! recycle, so that builds which predate the lock never read a log that does.
//!
//! A recycled segment is zeroed before it is published, since readers take a zero frame word
//! for "nothing here yet" — in whole, except in a single-producer log
//! ([`format::log_flags::SINGLE_PRODUCER`]), whose producer zeroes the word at the end of
//! each claim before it moves the tail there, so that only the segment's first word needs it.

use crate::format::{
    segment_file_name, SegmentHeader, FORMAT_VERSION, SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
};
use crate::{format, Error, Result};
use memmap2::{MmapOptions, MmapRaw};
use std::collections::VecDeque;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// What every segment of one log shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentSpec {
    pub log_id: [u8; 16],
    pub capacity: u64,
    pub log_flags: u32,
    pub file_mode: u32,
}

impl SegmentSpec {
    pub(crate) fn file_len(&self) -> u64 {
        SEGMENT_HEADER_LEN + self.capacity
    }
}

/// One mapped segment file. The mapping stays valid as long as this value lives, even if
/// the file is deleted meanwhile.
pub(crate) struct Segment {
    map: MmapRaw,
    /// Holds the shared lock that keeps recyclers away while this value lives.
    file: File,
    /// The descriptor the mapping was made from, opened afresh and never locked (a mapping
    /// keeps its file description, and with it any lock on it, until it is unmapped): so
    /// that closing `file` lets go of the lock while the mapping is kept (see [`Parking`]).
    /// `None` where it could not be opened; such a mapping is never parked.
    mapped_from: Option<File>,
    path: PathBuf,
    /// The most this process's page tables were filled for: 0 not at all, else a
    /// [`Prefault`] as `u8`. Behind a lock, so that a handle that needs the segment while
    /// the preparer is still filling them waits for that instead of doing it again.
    prefaulted: Mutex<u8>,
}

/// What a process will do with a mapped segment, so that its page tables can be filled for
/// that ahead of time (they are per process), at rotation, instead of one fault per page on
/// the hot path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prefault {
    /// Consumers: read faults on a shared file map 16 pages each ("fault-around"), so
    /// touching each page costs about 5 ms per 64 MiB here — a seventh of what
    /// `MAP_POPULATE` costs (it maps one page per fault). Fault-around maps only pages that
    /// hold data already: a segment no producer has touched yet (fresh from `fallocate`)
    /// faults page by page, as at the very start of a log.
    Read = 1,
    /// Producers: `MADV_POPULATE_WRITE` maps every page writable, about 18 ms per 64 MiB
    /// here (`MAP_POPULATE`: 34 ms; write faults as the producer gets there: 28 ms).
    Write = 2,
}

impl Segment {
    /// The file this mapping came from.
    #[allow(dead_code)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its index in the log: its base position over its capacity.
    pub fn index(&self) -> u64 {
        self.base_position() / (self.map.len() as u64 - SEGMENT_HEADER_LEN)
    }

    /// Log position of the first data byte, from the header (checked when it was opened).
    pub fn base_position(&self) -> u64 {
        // SAFETY: the mapping starts with the 64-byte header, page-aligned, and lives as
        // long as `self`; nobody writes a published segment's header.
        let header = unsafe { &*(self.map.as_ptr() as *const SegmentHeader) };
        header.base_position
    }

    /// Fills this process's page tables for the whole mapping for `use_`, unless that was
    /// done already (by this or another handle of the process). Advisory: a failure only
    /// leaves the faults for later.
    pub fn prefault(&self, use_: Prefault) {
        let mut prefaulted = self.prefaulted.lock().unwrap_or_else(|e| e.into_inner());
        if *prefaulted >= use_ as u8 {
            return;
        }
        let len = self.map.len();
        let populated = use_ == Prefault::Write && {
            // SAFETY: the range is exactly this mapping, which lives as long as `self`;
            // MADV_POPULATE_WRITE faults pages in as if written without changing their bytes.
            let rc = unsafe {
                libc::madvise(self.map.as_mut_ptr().cast(), len, libc::MADV_POPULATE_WRITE)
            };
            rc == 0
        };
        if !populated {
            // Kernels before 5.14 lack MADV_POPULATE_WRITE: at least map the pages for reading.
            for offset in (0..len).step_by(PAGE_SIZE) {
                // SAFETY: `offset` is inside the mapping, which lives as long as `self`; the
                // byte is read atomically, since another process may be writing it.
                let byte = unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU8) };
                byte.load(Ordering::Relaxed);
            }
        }
        *prefaulted = use_ as u8;
    }

    /// Start of the data area. Valid for `capacity` bytes while `self` lives; 4096-aligned.
    pub fn data_ptr(&self) -> *mut u8 {
        // SAFETY: the mapping is SEGMENT_HEADER_LEN + capacity bytes long (checked when it was
        // opened), so the offset stays inside it.
        unsafe { self.map.as_mut_ptr().add(SEGMENT_HEADER_LEN as usize) }
    }
}

/// Opens the segment at `base_position`, creating it if it does not exist yet: from the file
/// `retired` hands over (see [`retire_for_recycling`]), or else afresh. Returns the segment
/// and whether this call published it.
pub(crate) fn open_or_create(
    dir: &Path,
    spec: &SegmentSpec,
    base_position: u64,
    parking: &Parking,
    retired: impl FnOnce() -> Option<Retired>,
) -> Result<(Segment, bool)> {
    match open(dir, spec, base_position, parking) {
        Ok(segment) => return Ok((segment, false)),
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(other) => return Err(other),
    }
    let final_path = dir.join(segment_file_name(base_position));
    let recycled = retired().and_then(|retired| recycle(retired, spec, base_position, parking));
    let (temp_path, made) = match recycled {
        Some((temp_path, segment)) => (temp_path, Made::Recycled(segment)),
        None => {
            let temp_path = temporary_path(dir, &segment_file_name(base_position));
            let file = create_sized(&temp_path, spec.file_len(), spec.file_mode)?;
            let header = new_header(spec, base_position);
            // Nobody else can have it open yet: the lock is granted at once.
            let written = lock_where_supported(&file, libc::LOCK_SH)
                .and_then(|()| file.write_all_at(bytemuck::bytes_of(&header), 0))
                .map_err(|e| Error::io(&temp_path, e));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&temp_path);
                return Err(e);
            }
            (temp_path, Made::Fresh(file))
        }
    };
    match publish(&temp_path, &final_path) {
        Ok(()) => {
            sync_dir(dir);
            let segment = match made {
                Made::Recycled(mut segment) => {
                    segment.path = final_path;
                    segment
                }
                Made::Fresh(file) => map(file, final_path, spec, parking)?,
            };
            Ok((segment, true))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Another process published it first; theirs is as good as ours.
            let _ = std::fs::remove_file(&temp_path);
            Ok((open(dir, spec, base_position, parking)?, false))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temp_path);
            Err(Error::io(&final_path, e))
        }
    }
}

/// A segment file retention retired for recycling: renamed to a temporary name of this
/// process, and locked exclusively.
pub(crate) struct Retired {
    path: PathBuf,
    file: File,
}

/// Retires the segment at `doomed_base`, which retention has put below its floor, to be
/// recycled into the segment at `new_base`: locked exclusively without waiting, then renamed
/// to a temporary name. `None` if the file is gone, or if some process still has it open
/// under a lock: then it is deleted, as retention would, and its readers keep their bytes.
pub(crate) fn retire_for_recycling(dir: &Path, doomed_base: u64, new_base: u64) -> Option<Retired> {
    let doomed = dir.join(segment_file_name(doomed_base));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&doomed)
        .ok()?;
    // Without waiting: a reader may hold its shared lock for as long as it likes.
    if lock(&file, libc::LOCK_EX | libc::LOCK_NB).is_err() {
        let _ = std::fs::remove_file(&doomed);
        return None;
    }
    // Opened by the old name, locked now: if another process retired it meanwhile, it may be
    // someone's live segment by now, under another name. Let go at once (the lock goes with
    // the descriptor) and leave it alone: its old name is already gone.
    let ours = still_named(&file, &doomed).unwrap_or(false)
        && read_header(&file, &doomed).is_ok_and(|header| header.base_position == doomed_base);
    if !ours {
        return None;
    }
    // Renamed with the lock held: an opener that finds the old name locks after this, and
    // then sees the name no longer leads here (see `lock_shared`). The name is never made
    // again (below the floor), so if it is gone, another pass deleted this very file.
    let path = temporary_path(dir, &segment_file_name(new_base));
    std::fs::rename(&doomed, &path).ok()?;
    // Dated now: writes through a mapping leave the time of the segment's making, and
    // `remove_stale_temporaries` spares only temporary files younger than its bound.
    let _ = file.set_modified(std::time::SystemTime::now());
    Some(Retired { path, file })
}

/// A segment file made for publishing: new, or a retired one rewritten.
enum Made {
    Fresh(File),
    Recycled(Segment),
}

/// Turns a retired segment file into an empty segment at `base_position`, mapped with its
/// pages pre-faulted for writing; `None`, with the file deleted, if it is not what a segment
/// of this log is.
fn recycle(
    retired: Retired,
    spec: &SegmentSpec,
    base_position: u64,
    parking: &Parking,
) -> Option<(PathBuf, Segment)> {
    let Retired { path, file } = retired;
    let rewritten = (|| {
        if file.metadata().ok()?.len() != spec.file_len() {
            return None;
        }
        // Parked in this process if it was mapped here before, its page tables likely filled.
        let segment = map(file, path.clone(), spec, parking).ok()?;
        // Faulting the pages in first costs one system call instead of a trap per page.
        segment.prefault(Prefault::Write);
        // A single-producer log's producer keeps the frame word at the tail zero itself
        // (`protocol::claim_exclusive`), so only the word a reader entering the segment looks
        // at first must be: the rest is not written twice.
        let zeroed = if spec.log_flags & format::log_flags::SINGLE_PRODUCER != 0 {
            format::FRAME_ALIGNMENT
        } else {
            spec.capacity
        };
        // SAFETY: the mapping is file_len bytes long and writable, and this process holds the
        // file's only lock, exclusively, under a name only it uses: no other process reads
        // these bytes (every reader locks first) and no other thread of this one has the file.
        unsafe {
            std::ptr::write_bytes(segment.data_ptr(), 0, zeroed as usize);
            let header = new_header(spec, base_position);
            std::ptr::copy_nonoverlapping(
                bytemuck::bytes_of(&header).as_ptr(),
                segment.map.as_mut_ptr(),
                SEGMENT_HEADER_LEN as usize,
            );
        }
        // Downgraded before publishing, so that openers of the new name never wait for it.
        lock(&segment.file, libc::LOCK_SH).ok()?;
        Some(segment)
    })();
    match rewritten {
        Some(segment) => Some((path, segment)),
        None => {
            let _ = std::fs::remove_file(&path);
            None
        }
    }
}

/// Whether recycling retired segments pays, and is safe, in `dir`: on a tmpfs, where a new
/// segment's memory is most of what it costs and nothing outlives the machine. Not on a disk
/// file system: there a crash of the machine could leave a recycled file's old frames, their
/// checksums intact, on disk under the new name before its zeroes were written back, and
/// recovery would serve them as messages.
pub(crate) fn recycling_pays(dir: &Path) -> bool {
    const TMPFS_MAGIC: libc::c_long = 0x0102_1994;
    let Ok(c_dir) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct it is given; the path is NUL-terminated and
    // outlives the call.
    unsafe {
        let mut stats: libc::statfs = std::mem::zeroed();
        libc::statfs(c_dir.as_ptr(), &mut stats) == 0 && stats.f_type as libc::c_long == TMPFS_MAGIC
    }
}

/// `flock(2)` with `operation`, retried when a signal interrupts it.
fn lock(file: &File, operation: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock takes the open descriptor and a flag; no pointers.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// [`lock`], except that a file system without `flock` (some network and FUSE ones) counts
/// as locked: logs there never recycle (see [`recycling_pays`]), so there is nothing to keep
/// away.
fn lock_where_supported(file: &File, operation: libc::c_int) -> io::Result<()> {
    match lock(file, operation) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOLCK | libc::EOPNOTSUPP)) => Ok(()),
        other => other,
    }
}

/// Takes the shared lock every reader of segment bytes holds (see the module notes) on a
/// file just opened at `path`, and fails with `NotFound` if `path` no longer names that file:
/// it was deleted or retired between the open and the lock, and its bytes may not be the
/// ones the name promised.
pub(crate) fn lock_shared(file: &File, path: &Path) -> Result<()> {
    match lock_where_supported(file, libc::LOCK_SH | libc::LOCK_NB) {
        Ok(()) => {}
        // Held exclusively by a recycler: one retiring this very file, for as long as it
        // zeroes it (then the name check below says it is gone), or one that opened it under
        // an older name and is about to find it is not its own, for a system call or two.
        // Either way, waiting is short, and deciding without waiting could call a live
        // segment gone.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            lock_where_supported(file, libc::LOCK_SH).map_err(|e| Error::io(path, e))?
        }
        Err(e) => return Err(Error::io(path, e)),
    }
    if still_named(file, path).map_err(|e| Error::io(path, e))? {
        Ok(())
    } else {
        Err(Error::io(
            path,
            io::Error::new(
                io::ErrorKind::NotFound,
                "deleted or recycled by retention while being opened",
            ),
        ))
    }
}

/// Whether `path` names the file `file` has open.
fn still_named(file: &File, path: &Path) -> io::Result<bool> {
    let open = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(named) => Ok(named.dev() == open.dev() && named.ino() == open.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

pub(crate) fn open(
    dir: &Path,
    spec: &SegmentSpec,
    base_position: u64,
    parking: &Parking,
) -> Result<Segment> {
    let path = dir.join(segment_file_name(base_position));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    lock_shared(&file, &path)?;
    let header = read_header(&file, &path)?;
    let expect = |ok: bool, detail: String| -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(Error::CorruptHeader {
                path: path.clone(),
                detail,
            })
        }
    };
    expect(
        header.log_id == spec.log_id,
        "belongs to another log (log id differs from the meta file's)".into(),
    )?;
    expect(
        header.base_position == base_position,
        format!(
            "base position {} does not match its file name",
            header.base_position
        ),
    )?;
    expect(
        header.capacity == spec.capacity,
        format!(
            "capacity {} differs from the log's {}",
            header.capacity, spec.capacity
        ),
    )?;
    expect(
        header.log_flags == spec.log_flags,
        format!(
            "options {:#x} differ from the log's {:#x}",
            header.log_flags, spec.log_flags
        ),
    )?;
    map(file, path, spec, parking)
}

/// Reads and checks the header of one segment file on its own: magic, version, checksum,
/// capacity and the file's length. Used on open and by tools that inspect a single file.
pub fn read_header(file: &File, path: &Path) -> Result<SegmentHeader> {
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut header = SegmentHeader::default();
    let header_bytes = bytemuck::bytes_of_mut(&mut header);
    if len < header_bytes.len() as u64 {
        return Err(Error::Truncated {
            path: path.into(),
            actual: len,
            expected: SEGMENT_HEADER_LEN,
        });
    }
    file.read_exact_at(header_bytes, 0)
        .map_err(|e| Error::io(path, e))?;
    if header.magic != SEGMENT_MAGIC {
        return Err(Error::BadMagic {
            path: path.into(),
            kind: "segment",
            found: header.magic,
        });
    }
    if header.version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.into(),
            found: header.version,
            supported: FORMAT_VERSION,
        });
    }
    let corrupt = |detail: String| Error::CorruptHeader {
        path: path.into(),
        detail,
    };
    if header.header_checksum != header.compute_checksum() {
        return Err(corrupt(format!(
            "header checksum {:#010x} does not match its contents ({:#010x})",
            header.header_checksum,
            header.compute_checksum()
        )));
    }
    if u64::from(header.data_offset) != SEGMENT_HEADER_LEN {
        return Err(corrupt(format!("data offset {}", header.data_offset)));
    }
    if !header.capacity.is_power_of_two()
        || !(format::MIN_SEGMENT_CAPACITY..=format::MAX_SEGMENT_CAPACITY).contains(&header.capacity)
    {
        return Err(corrupt(format!("capacity {}", header.capacity)));
    }
    if header.base_position % header.capacity != 0 {
        return Err(corrupt(format!(
            "base position {} is not a multiple of the capacity {}",
            header.base_position, header.capacity
        )));
    }
    if header.log_flags & !format::log_flags::KNOWN != 0 {
        return Err(corrupt(format!(
            "unknown option bits {:#x}",
            header.log_flags
        )));
    }
    let expected = SEGMENT_HEADER_LEN + header.capacity;
    if len != expected {
        return Err(crate::meta::length_error(path, len, expected));
    }
    Ok(header)
}

fn new_header(spec: &SegmentSpec, base_position: u64) -> SegmentHeader {
    let mut header = SegmentHeader {
        magic: SEGMENT_MAGIC,
        version: FORMAT_VERSION,
        data_offset: SEGMENT_HEADER_LEN as u16,
        log_flags: spec.log_flags,
        log_id: spec.log_id,
        base_position,
        capacity: spec.capacity,
        created_ns: crate::clock::now_ns(),
        header_checksum: 0,
        reserved: 0,
    };
    header.header_checksum = header.compute_checksum();
    header
}

/// Maps a segment file. Its page tables are filled afterwards, by [`Segment::prefault`], for
/// the use the caller has in mind.
fn map(file: File, path: PathBuf, spec: &SegmentSpec, parking: &Parking) -> Result<Segment> {
    if let Some(parked) = parking.take(&file, spec.file_len()) {
        return Ok(Segment {
            map: parked.map,
            file,
            mapped_from: Some(parked.file),
            path,
            prefaulted: Mutex::new(parked.prefaulted),
        });
    }
    // A new description of the same file (opening the descriptor's /proc link does not share
    // the description, as dup would), unless the log does not park.
    let mapped_from = (parking.room > 0)
        .then(|| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
                .ok()
        })
        .flatten();
    let map = MmapOptions::new()
        .len(spec.file_len() as usize)
        .map_raw(mapped_from.as_ref().unwrap_or(&file))
        .map_err(|e| Error::io(&path, e))?;
    Ok(Segment {
        map,
        file,
        mapped_from,
        path,
        prefaulted: Mutex::new(0),
    })
}

/// Mappings of segment files that no handle of this process reads any more, kept with their
/// page tables for when their file comes back recycled as a new segment: mapping it again,
/// faulting its pages in and unmapping it once read would cost, on a tmpfs with 4 KiB pages,
/// about as much again as zeroing it. A parked mapping holds no lock (recyclers may take the
/// file) and is never read through: it is only ever handed to a segment whose file, opened
/// and locked anew, is the same file. Its lock went with the descriptor that held it (the
/// mapping was made from another: see `Segment::mapped_from`); releasing the lock by
/// `LOCK_UN` instead would release it for a forked child sharing that description too.
pub(crate) struct Parking {
    parked: Mutex<VecDeque<Parked>>,
    room: usize,
}

struct Parked {
    map: MmapRaw,
    /// The description it was mapped from, never locked: the file's identity, and whether
    /// it still has a name.
    file: File,
    prefaulted: u8,
}

/// Whether `file` still has a name (retention deletes rather than recycles some files).
fn linked(file: &File) -> bool {
    file.metadata().is_ok_and(|m| m.nlink() > 0)
}

impl Parking {
    /// A parking for up to `room` mappings (0: none are kept).
    pub fn new(room: usize) -> Parking {
        Parking {
            parked: Mutex::new(VecDeque::with_capacity(room)),
            room,
        }
    }

    /// Keeps `segment`'s mapping if this was its last reference (closing its locked
    /// descriptor), and lets go of every parked mapping whose file has been deleted (it
    /// would keep that file's memory allocated) and of the oldest beyond the room. Unmaps on
    /// the caller's thread.
    pub fn park(&self, segment: Arc<Segment>) {
        let mut gone = Vec::new();
        if let Ok(segment) = Arc::try_unwrap(segment) {
            let Segment {
                map,
                file,
                mapped_from,
                prefaulted,
                ..
            } = segment;
            // Closing the locked descriptor releases this process's hold on the file.
            drop(file);
            match mapped_from.filter(linked) {
                Some(file) => {
                    let prefaulted = prefaulted.into_inner().unwrap_or_else(|e| e.into_inner());
                    let mut parked = self.lock();
                    parked.push_back(Parked {
                        map,
                        file,
                        prefaulted,
                    });
                    while parked.len() > self.room {
                        gone.extend(parked.pop_front());
                    }
                }
                None => drop(map),
            }
        }
        let mut parked = self.lock();
        let mut i = 0;
        while i < parked.len() {
            if linked(&parked[i].file) {
                i += 1;
            } else {
                gone.extend(parked.remove(i));
            }
        }
        drop(parked);
        // Unmapped here, outside the lock.
        drop(gone);
    }

    /// The parked mapping of the file `file` has open, if there is one of `len` bytes.
    fn take(&self, file: &File, len: u64) -> Option<Parked> {
        if self.room == 0 {
            return None;
        }
        let wanted = file.metadata().ok()?;
        let mut parked = self.lock();
        let found = parked.iter().position(|p| {
            p.map.len() as u64 == len
                && p.file
                    .metadata()
                    .is_ok_and(|m| m.dev() == wanted.dev() && m.ino() == wanted.ino())
        })?;
        parked.remove(found)
    }

    /// Lets go of every parked mapping (a full file system wants its deleted files' memory).
    pub fn clear(&self) {
        let gone = std::mem::take(&mut *self.lock());
        drop(gone);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Parked>> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The smallest page size on the platforms this crate runs on: with larger pages the read
/// prefault touches some pages more than once, which costs little.
const PAGE_SIZE: usize = 4096;

/// A name no other process or thread uses, hidden from directory scans by its leading dot.
pub(crate) fn temporary_path(dir: &Path, final_name: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".tmp-{}-{n}-{final_name}", std::process::id()))
}

/// How old a temporary file of a process that no longer runs must be before it is removed:
/// far longer than making a file takes, so that a new process that got the same pid and is
/// making a file of the same name right now is never disturbed.
const STALE_TEMPORARY_AGE: std::time::Duration = std::time::Duration::from_secs(10);

/// Removes the temporary files (see [`temporary_path`]) that processes which no longer run
/// left in `dir` when they died or exited while making a segment or meta file: on a tmpfs each
/// holds a whole segment's memory, and nothing else would ever free it. Returns how many.
/// Best effort: a file that cannot be read or removed is left.
pub(crate) fn remove_stale_temporaries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(".tmp-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let old_enough = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age >= STALE_TEMPORARY_AGE);
        if old_enough
            && crate::clock::process_start_time(pid).is_none()
            && std::fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Creates `path` exclusively with exactly `mode` and reserves `len` bytes of real storage,
/// so that writing through a mapping later can never hit a full disk (no SIGBUS).
pub(crate) fn create_sized(path: &Path, len: u64, mode: u32) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let sized = (|| {
        // The umask may have cleared bits of `mode`; the log's mode is a promise.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        // SAFETY: the descriptor is open and owned by `file` for the duration of the call.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })();
    match sized {
        Ok(()) => Ok(file),
        Err(source) => {
            let _ = std::fs::remove_file(path);
            if source.raw_os_error() == Some(libc::ENOSPC) {
                Err(Error::NoSpace {
                    path: path.into(),
                    bytes: len,
                    source,
                })
            } else {
                Err(Error::io(path, source))
            }
        }
    }
}

/// Renames `from` to `to` unless `to` exists (then `AlreadyExists`), atomically.
pub(crate) fn publish(from: &Path, to: &Path) -> io::Result<()> {
    let c_from = CString::new(from.as_os_str().as_bytes())?;
    let c_to = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // File systems without RENAME_NOREPLACE: link() never overwrites either.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            std::fs::hard_link(from, to)?;
            let _ = std::fs::remove_file(from);
            Ok(())
        }
        _ => Err(err),
    }
}

/// Makes a rename durable on file systems that need it; nothing to do on tmpfs.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
