//! `Mirror`: a local replica of a remote log, written with the bytes the bridge sends.

use super::link::{Endpoint, Fill, Link, LinkError, LogInfo, RemoteOptions};
use super::protocol::{request_flags, Start};
use super::{BridgeError, Result};
use crate::format::{
    self, flags, kind, FrameWord, MetaHeader, FORMAT_VERSION, FRAME_ALIGNMENT, FRAME_HEADER_LEN,
    META_FILE_NAME, META_MAGIC,
};
use crate::inspect::SegmentFile;
use crate::meta::{Meta, CONSUMER_SLOTS, PRODUCER_SLOTS};
use crate::segment::{Prefault, Segment};
use crate::sync::{producer_barrier_kind, BarrierKind};
use crate::{Error, Log};
use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keeps a local replica of a remote log up to date: every byte the bridge sends is written
/// at the same position in the replica's segments, so the replica's data areas are byte for
/// byte the source's (from the segment the mirror started in). Local consumers read the
/// replica with the ordinary API while it grows — frames become visible exactly as a
/// producer's commit makes them visible — and another bridge can serve it in turn.
///
/// The replica has the source's identity (log id, capacity, options). Nothing but its mirror
/// may write it: no producer may be made on a replica. One mirror at a time holds it (an
/// exclusive `flock` on its meta file). Opening an existing replica resumes from its end.
///
/// ```no_run
/// use logbus::bridge::{Mirror, RemoteOptions, Start};
/// use std::time::Duration;
/// let mut mirror = Mirror::open("10.0.0.5:7410", "orders", "/dev/shm/orders-replica",
///     Start::Earliest, RemoteOptions::new())?;
/// loop {
///     mirror.step(Some(Duration::from_secs(1)))?;
/// }
/// # Ok::<(), logbus::bridge::BridgeError>(())
/// ```
pub struct Mirror {
    link: Link,
    replica: Log,
    dir: PathBuf,
    /// Holds the exclusive lock on the replica.
    _lock: File,
    /// The replica's end: the next byte to write.
    position: u64,
    current: Option<(u64, Arc<Segment>)>,
    /// The segment last asked to be prepared ahead of need.
    prepared_next: u64,
    barrier: BarrierKind,
    need: usize,
    verify: bool,
}

impl Mirror {
    /// Opens (or creates) the replica in `dir` and subscribes to `log` at `endpoint`. A new
    /// replica starts at the first byte of the segment that holds `start` (so that its
    /// segments are whole); an existing one resumes where it ends, and must be a replica of
    /// the same log.
    pub fn open(
        endpoint: impl Into<Endpoint>,
        log: &str,
        dir: impl AsRef<Path>,
        start: Start,
        options: RemoteOptions,
    ) -> Result<Mirror> {
        let dir = dir.as_ref().to_path_buf();
        let verify = options.verify_checksums;
        let mut link = Link::new(endpoint.into(), log, options)?;
        let (replica, lock) = if dir.join(META_FILE_NAME).exists() {
            let replica = Log::open(&dir)?;
            let lock = lock(&dir)?;
            let end = replica_end(&replica)?;
            link.connect_first(Start::Position(end), 0)?;
            check_identity(&dir, &replica, &link.info.expect("welcomed"))?;
            if link.data_position() != end {
                return Err(BridgeError::Protocol(format!(
                    "asked to resume at {end}, the bridge starts at {}",
                    link.data_position()
                )));
            }
            (replica, lock)
        } else {
            link.connect_first(start, request_flags::SEGMENT_START)?;
            let info = link.info.expect("welcomed");
            let replica = create_replica(&dir, &info, link.data_position())?;
            (replica, lock(&dir)?)
        };
        let position = link.data_position();
        let mut mirror = Mirror {
            link,
            replica,
            dir,
            _lock: lock,
            position,
            current: None,
            prepared_next: 0,
            barrier: producer_barrier_kind(),
            need: FRAME_ALIGNMENT as usize,
            verify,
        };
        mirror.map_segment(position)?;
        Ok(mirror)
    }

    /// The replica, for local consumers (or to hand to a bridge).
    pub fn replica(&self) -> &Log {
        &self.replica
    }

    /// The replica's end: everything before it is written.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The remote log's identity and shape.
    pub fn info(&self) -> LogInfo {
        self.link.info.expect("connected once")
    }

    /// How many connections this mirror has made: 1, plus one per reconnection.
    pub fn connections(&self) -> u64 {
        self.link.connections
    }

    /// Whether the mirror is connected now (it reconnects by itself when it is not).
    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// Writes whatever whole frames have arrived into the replica, waiting up to `timeout`
    /// (`None`: as long as it takes) for some; returns the bytes written (0: none came in
    /// time). Reconnects if the connection was lost.
    pub fn step(&mut self, timeout: Option<Duration>) -> Result<u64> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let written = self.write_available()?;
            if written > 0 {
                return Ok(written);
            }
            if !self.link.is_connected() {
                let resume = self.position;
                match self.link.reconnect(Start::Position(resume), 0, deadline)? {
                    Some(_) => {
                        if self.link.data_position() != resume {
                            return Err(BridgeError::Protocol(format!(
                                "asked to resume at {resume}, the bridge starts at {}",
                                self.link.data_position()
                            )));
                        }
                        self.need = FRAME_ALIGNMENT as usize;
                        continue;
                    }
                    None => return Ok(0),
                }
            }
            match self.link.fill(self.need, deadline) {
                Ok(Fill::Data) => {}
                Ok(Fill::Timeout) => return Ok(0),
                Err(LinkError::Lost(why)) => self.link.lose(why),
                Err(LinkError::Fatal(e)) => return Err(e),
            }
        }
    }

    /// Mirrors until the replica reaches `position` or `timeout` passes; true if it did.
    pub fn run_until(&mut self, position: u64, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        while self.position < position {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            self.step(Some(left))?;
        }
        Ok(true)
    }

    /// Checks the whole frames at the front of the received bytes (as far as the current
    /// segment's end) and writes them into the replica.
    fn write_available(&mut self) -> Result<u64> {
        let info = self.link.info.expect("connected once");
        let capacity = info.segment_capacity;
        let data = self.link.data();
        let position = self.link.data_position();
        debug_assert_eq!(position, self.position);
        let segment_end = (position / capacity + 1) * capacity;
        let mut offset = 0usize;
        self.need = FRAME_ALIGNMENT as usize;
        while offset + FRAME_ALIGNMENT as usize <= data.len() {
            let at = position + offset as u64;
            let word = FrameWord::unpack(u64::from_le_bytes(
                data[offset..offset + 8].try_into().expect("8 bytes"),
            ));
            let corrupt = |detail: String| {
                Err(BridgeError::Log(Error::CorruptFrame {
                    position: at,
                    detail,
                }))
            };
            if word.length <= 0 {
                return corrupt(format!(
                    "the bridge sent a frame that is not committed (length {})",
                    word.length
                ));
            }
            let aligned = match format::frame_extent(word, at, segment_end) {
                Ok(aligned) => aligned,
                Err(detail) => return corrupt(detail),
            };
            let length = word.length as u64;
            if offset + aligned as usize > data.len() {
                self.need = (offset + aligned as usize).max(FRAME_ALIGNMENT as usize);
                break;
            }
            let frame = &data[offset..offset + length as usize];
            if word.kind != kind::PADDING {
                let payload = &frame[FRAME_HEADER_LEN as usize..];
                if self.verify && word.flags & flags::CHECKSUM != 0 {
                    let expected = u32::from_le_bytes(frame[8..12].try_into().expect("4"));
                    let actual = format::checksum(payload);
                    if actual != expected {
                        return Err(BridgeError::Log(Error::ChecksumMismatch {
                            position: at,
                            expected,
                            actual,
                        }));
                    }
                }
                match word.kind {
                    kind::DATA => {}
                    kind::BATCH => {
                        if let Err(detail) = format::check_records(payload) {
                            return corrupt(detail);
                        }
                    }
                    other => return corrupt(format!("unknown frame kind {other}")),
                }
            }
            offset += aligned as usize;
            if at + aligned == segment_end {
                break;
            }
        }
        if offset == 0 {
            return Ok(0);
        }
        self.write_frames(position, offset)?;
        Ok(offset as u64)
    }

    /// Writes the `len` bytes of whole, checked frames at the front of the received data to
    /// `position` in the replica, committing them the way a producer does: everything but
    /// the first frame word with plain stores, then that word with a Release store. A local
    /// reader waits at that word, so it sees all of the bytes or none; the frames behind it
    /// it reaches only through it.
    fn write_frames(&mut self, position: u64, len: usize) -> Result<()> {
        self.map_segment(position)?;
        let capacity = self.info().segment_capacity;
        let (_, segment) = self.current.as_ref().expect("mapped");
        let data = &self.link.data()[..len];
        let first_word = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
        let offset = (position % capacity) as usize;
        debug_assert!(offset + len <= capacity as usize);
        // SAFETY: `[offset, offset + len)` lies inside the mapped data area (the frames were
        // checked to end inside this segment). Only this mirror writes the replica (it holds
        // the replica's lock, and no producer may be made on a replica), and no reader reads
        // past the first frame word, which is zero until the Release store below; `data` is
        // the link's buffer, which does not overlap the mapping.
        unsafe {
            let dst = segment.data_ptr().add(offset);
            std::ptr::copy_nonoverlapping(data.as_ptr().add(8), dst.add(8), len - 8);
            // The data area is page-aligned and frames 8-aligned: an aligned u64.
            (*(dst as *const AtomicU64)).store(first_word, Ordering::Release);
        }
        let shared = &self.replica.shared;
        shared
            .meta
            .tail()
            .fetch_max(position + len as u64, Ordering::AcqRel);
        shared.meta.wake().wake_waiters(self.barrier);
        self.link.release(len);
        self.position = position + len as u64;
        // An eighth into a segment, have the next one made and mapped off this thread, as a
        // producer does, so that crossing into it does not stall the mirror.
        let index = position / capacity;
        if self.position % capacity > capacity / 8 && self.prepared_next != index + 1 {
            self.prepared_next = index + 1;
            self.replica.shared.prepare_segment(index + 1, true);
        }
        Ok(())
    }

    /// Maps (creating it if needed) the replica's segment that holds `position`.
    fn map_segment(&mut self, position: u64) -> Result<()> {
        let capacity = self.replica.options().get_segment_capacity();
        let index = position / capacity;
        if self.current.as_ref().is_some_and(|(i, _)| *i == index) {
            return Ok(());
        }
        let segment = self
            .replica
            .shared
            .segment(index, true, Prefault::Write)?
            .expect("created if missing");
        if let Some((_, old)) = self.current.replace((index, segment)) {
            self.replica.shared.retire_segment(old);
        }
        Ok(())
    }
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("log", &self.link.log_name())
            .field("replica", &self.dir)
            .field("position", &self.position)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// Where the replica's written bytes end: its tail, or further if frames were written after
/// the tail was last stored (a mirror stopped between the two). Walks the tail's segment, and
/// the next ones while they are full.
fn replica_end(replica: &Log) -> Result<u64> {
    let capacity = replica.options().get_segment_capacity();
    let tail = replica.tail();
    let mut base = tail - tail % capacity;
    let mut end = tail;
    loop {
        let path = replica.path().join(format::segment_file_name(base));
        if !path.exists() {
            return Ok(end);
        }
        let file = SegmentFile::open(&path)?;
        let mut walked = base;
        for frame in file.frames() {
            match frame {
                Ok(frame) => {
                    walked = frame.position() + frame.aligned_length();
                }
                _ => break,
            }
        }
        end = end.max(walked);
        if walked < base + capacity {
            return Ok(end);
        }
        base += capacity;
    }
}

fn check_identity(dir: &Path, replica: &Log, info: &LogInfo) -> Result<()> {
    let options = replica.options();
    let header = replica.shared.meta.header();
    if replica.id() != info.log_id
        || options.get_segment_capacity() != info.segment_capacity
        || header.log_flags != replica_flags(info.log_flags)
    {
        return Err(BridgeError::Replica {
            path: dir.to_path_buf(),
            detail: "it is a replica of another log (log id, capacity or options differ)".into(),
        });
    }
    Ok(())
}

/// The source's log flags, as its replica keeps them: without single-producer, since no
/// producer writes a replica (its mirror copies frames in), and a recycled segment of one must
/// therefore be zeroed in whole.
pub(super) fn replica_flags(source_flags: u32) -> u32 {
    source_flags & !format::log_flags::SINGLE_PRODUCER
}

/// Makes a log in `dir` with the source's identity and options, ending (empty) at `start`.
fn create_replica(dir: &Path, info: &LogInfo, start: u64) -> Result<Log> {
    let mode = info.file_mode;
    let dir_mode = mode | ((mode & 0o444) >> 2);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(dir_mode)
        .create(dir)
        .map_err(|e| Error::io(dir, e))?;
    let has_segments = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|entry| entry.ok())
        .any(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(format::parse_segment_file_name)
                .is_some()
        });
    if has_segments {
        return Err(BridgeError::Replica {
            path: dir.to_path_buf(),
            detail: "segment files without a meta file are here; will not write over them".into(),
        });
    }
    let mut header = MetaHeader {
        magic: META_MAGIC,
        version: FORMAT_VERSION,
        header_len: std::mem::size_of::<MetaHeader>() as u16,
        log_flags: replica_flags(info.log_flags),
        log_id: info.log_id,
        segment_capacity: info.segment_capacity,
        created_ns: info.created_ns,
        producer_slots: PRODUCER_SLOTS as u32,
        consumer_slots: CONSUMER_SLOTS as u32,
        file_mode: mode,
        header_checksum: 0,
        reserved: [0; 64],
    };
    header.header_checksum = header.compute_checksum();
    match Meta::create(dir, header) {
        Ok(()) => {}
        Err(Error::AlreadyExists { .. }) => {
            return Err(BridgeError::Replica {
                path: dir.to_path_buf(),
                detail: "another process made a log here meanwhile".into(),
            })
        }
        Err(e) => return Err(e.into()),
    }
    let replica = Log::open(dir)?;
    replica.shared.meta.tail().store(start, Ordering::Release);
    let capacity = info.segment_capacity;
    replica
        .shared
        .segment(start / capacity, true, Prefault::Write)?;
    Ok(replica)
}

/// Takes the replica's lock: an exclusive `flock` on its meta file, held while the mirror
/// lives.
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(META_FILE_NAME);
    let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
    // SAFETY: flock takes the open descriptor and a flag; no pointers.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(BridgeError::Replica {
            path: dir.to_path_buf(),
            detail: format!("another mirror is writing it ({e})"),
        });
    }
    Ok(file)
}
