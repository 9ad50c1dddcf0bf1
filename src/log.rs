//! A log: a directory holding the meta file and the segment files.

use crate::consumer::{Consumer, StartAt};
use crate::format::{log_flags, MetaHeader, FORMAT_VERSION, FRAME_HEADER_LEN, META_MAGIC};
use crate::meta::{Meta, CONSUMER_SLOTS, PRODUCER_SLOTS};
use crate::preparer::Preparer;
use crate::producer::Producer;
use crate::protocol::Geometry;
use crate::segment::{self, Segment, SegmentSpec};
use crate::verify::{self, RecoveryReport, VerifyReport};
use crate::{clock, format, Error, Result};
use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

/// How a log is made. Options take effect only when a log is created; opening an existing
/// log uses the options it was created with (see [`Log::options`]).
///
/// ```
/// use logbus::LogOptions;
/// let options = LogOptions::new()
///     .segment_capacity(1 << 20)
///     .checksums(true)
///     .timestamps(false)
///     .file_mode(0o640);
/// assert_eq!(options.get_segment_capacity(), 1 << 20);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogOptions {
    segment_capacity: u64,
    checksums: bool,
    timestamps: bool,
    file_mode: u32,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_capacity: format::DEFAULT_SEGMENT_CAPACITY,
            checksums: true,
            timestamps: true,
            file_mode: 0o600,
        }
    }
}

impl LogOptions {
    /// 64 MiB segments, checksums and timestamps on, files readable by their owner only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of data per segment file: a power of two from 64 KiB to 1 GiB. The largest
    /// message is an eighth of this, less the 24-byte header.
    pub fn segment_capacity(mut self, bytes: u64) -> Self {
        self.segment_capacity = bytes;
        self
    }

    /// Whether producers write a CRC32C of each payload (on by default).
    pub fn checksums(mut self, on: bool) -> Self {
        self.checksums = on;
        self
    }

    /// Whether producers read the clock once per claim and stamp the frame (on by default).
    pub fn timestamps(mut self, on: bool) -> Self {
        self.timestamps = on;
        self
    }

    /// Permission bits of the log's files (0o600 by default); the directory, if created,
    /// gets the matching execute bits.
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.file_mode = mode;
        self
    }

    /// The segment capacity these options ask for.
    pub fn get_segment_capacity(&self) -> u64 {
        self.segment_capacity
    }

    /// Whether checksums are on.
    pub fn get_checksums(&self) -> bool {
        self.checksums
    }

    /// Whether timestamps are on.
    pub fn get_timestamps(&self) -> bool {
        self.timestamps
    }

    /// The file permission bits.
    pub fn get_file_mode(&self) -> u32 {
        self.file_mode
    }

    fn validate(&self) -> Result<()> {
        let capacity = self.segment_capacity;
        if !capacity.is_power_of_two()
            || !(format::MIN_SEGMENT_CAPACITY..=format::MAX_SEGMENT_CAPACITY).contains(&capacity)
        {
            return Err(Error::InvalidOption(format!(
                "segment capacity {capacity} must be a power of two from {} to {}",
                format::MIN_SEGMENT_CAPACITY,
                format::MAX_SEGMENT_CAPACITY
            )));
        }
        if self.file_mode & !0o777 != 0 || self.file_mode & 0o600 != 0o600 {
            return Err(Error::InvalidOption(format!(
                "file mode {:o} must be permission bits that include 0600",
                self.file_mode
            )));
        }
        Ok(())
    }

    fn log_flags(&self) -> u32 {
        (if self.checksums {
            log_flags::CHECKSUMS
        } else {
            0
        }) | (if self.timestamps {
            log_flags::TIMESTAMPS
        } else {
            0
        })
    }
}

/// A handle on an open log. Cheap to clone; every clone shares one mapping of the meta
/// file and one cache of mapped segments. Producers and consumers are made from it.
///
/// ```
/// use logbus::{Log, LogOptions, StartAt};
/// let dir = tempfile::tempdir()?;
/// let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(1 << 16))?;
/// let mut producer = log.producer()?;
/// let position = producer.offer(b"hello")?;
///
/// let reopened = Log::open(dir.path())?;
/// let mut consumer = reopened.consumer(StartAt::Earliest)?;
/// let message = consumer.poll()?.expect("committed");
/// assert_eq!(message.payload(), b"hello");
/// assert_eq!(message.position(), position);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Log {
    pub(crate) shared: Arc<Shared>,
}

/// What every handle, producer and consumer of one open log shares.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub meta: Meta,
    pub spec: SegmentSpec,
    pub geometry: Geometry,
    segments: Mutex<HashMap<u64, Weak<Segment>>>,
    preparer: Preparer,
    recovery: std::sync::OnceLock<RecoveryReport>,
}

impl Log {
    /// Creates a new log in `dir` (made if missing). Fails with [`Error::AlreadyExists`]
    /// if a log is there already.
    pub fn create(dir: impl AsRef<Path>, options: &LogOptions) -> Result<Log> {
        let dir = dir.as_ref();
        options.validate()?;
        let dir_mode = options.file_mode | ((options.file_mode & 0o444) >> 2);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(dir_mode)
            .create(dir)
            .map_err(|e| Error::io(dir, e))?;
        let mut header = MetaHeader {
            magic: META_MAGIC,
            version: FORMAT_VERSION,
            header_len: std::mem::size_of::<MetaHeader>() as u16,
            log_flags: options.log_flags(),
            log_id: random_log_id(),
            segment_capacity: options.segment_capacity,
            created_ns: clock::now_ns(),
            producer_slots: PRODUCER_SLOTS as u32,
            consumer_slots: CONSUMER_SLOTS as u32,
            file_mode: options.file_mode,
            header_checksum: 0,
            reserved: [0; 64],
        };
        header.header_checksum = header.compute_checksum();
        // Once the meta file is published the log exists; check first that no other log's
        // segments are here, or the new log would half-adopt them.
        let segments = list_segments(dir)?;
        if let Some(&first) = segments.first() {
            // A creator publishes its meta file before its first segment, so segments with a
            // meta file beside them are a log (perhaps one made a moment ago by a racing
            // process), not strays.
            if dir.join(format::META_FILE_NAME).exists() {
                return Err(Error::AlreadyExists { path: dir.into() });
            }
            return Err(Error::StraySegments {
                path: dir.join(format::segment_file_name(first)),
                count: segments.len(),
            });
        }
        Meta::create(dir, header)?;
        let log = Log::open(dir)?;
        log.shared.segment(0, true)?;
        Ok(log)
    }

    /// Opens the log in `dir`. A directory without a log gives [`Error::NotALog`]; a file of
    /// another kind or version gives an error naming the file and what is wrong with it.
    pub fn open(dir: impl AsRef<Path>) -> Result<Log> {
        let dir = dir.as_ref();
        let meta = Meta::open(dir)?;
        let header = *meta.header();
        let spec = SegmentSpec {
            log_id: header.log_id,
            capacity: header.segment_capacity,
            log_flags: header.log_flags,
            file_mode: header.file_mode,
        };
        let log = Log {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                meta,
                spec,
                geometry: Geometry::new(header.segment_capacity),
                segments: Mutex::new(HashMap::new()),
                preparer: Preparer::new(),
                recovery: std::sync::OnceLock::new(),
            }),
        };
        if let Some(report) = verify::recover(&log.shared)? {
            let _ = log.shared.recovery.set(report);
        }
        Ok(log)
    }

    /// Opens the log in `dir`, or creates it with `options` if there is none. Safe to call
    /// from many processes at once: exactly one creates, the others open what it made.
    pub fn open_or_create(dir: impl AsRef<Path>, options: &LogOptions) -> Result<Log> {
        let dir = dir.as_ref();
        match Log::open(dir) {
            Err(Error::NotALog { .. }) => {}
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        match Log::create(dir, options) {
            Err(Error::AlreadyExists { .. }) => Log::open(dir),
            other => other,
        }
    }

    /// A new producer: any number may exist, in any number of threads and processes.
    pub fn producer(&self) -> Result<Producer> {
        Producer::new(self.shared.clone())
    }

    /// A new consumer reading from `start`, with a position of its own.
    pub fn consumer(&self, start: StartAt) -> Result<Consumer> {
        Consumer::new(self.shared.clone(), start)
    }

    /// The directory of the log.
    pub fn path(&self) -> &Path {
        &self.shared.dir
    }

    /// The position the next claim will get: one past the end of everything claimed so far.
    pub fn tail(&self) -> u64 {
        self.shared.meta.tail().load(Ordering::Acquire)
    }

    /// The earliest position still in the log: the base of its oldest segment file.
    pub fn earliest_position(&self) -> Result<u64> {
        self.shared.earliest_position()
    }

    /// Checks every frame of every segment: lengths, checksums, message-set records, segment
    /// headers, and that nothing before the tail is left uncommitted. Reads only.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = logbus::Log::create(dir.path(), &logbus::LogOptions::new().segment_capacity(1 << 16))?;
    /// log.producer()?.offer(b"checked")?;
    /// let report = log.verify()?;
    /// assert!(report.is_clean(), "{:?}", report.problems);
    /// assert_eq!(report.messages, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn verify(&self) -> Result<VerifyReport> {
        verify::verify(&self.shared)
    }

    /// What recovery found when this handle opened the log, if it ran: it runs when no
    /// producer process is alive (after a crash, or a clean exit) and something was written
    /// since the last recovery. It pads claims that dead producers left, and cuts off a torn
    /// tail (frames whose checksum or length is wrong) so that it is never served.
    pub fn recovery(&self) -> Option<&RecoveryReport> {
        self.shared.recovery.get()
    }

    /// The producer slots in use, live or dead.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = logbus::Log::create(dir.path(), &logbus::LogOptions::new().segment_capacity(1 << 16))?;
    /// let producer = log.producer()?;
    /// let producers = log.producers();
    /// assert_eq!(producers.len(), 1);
    /// assert_eq!(producers[0].slot, producer.slot());
    /// assert_eq!(producers[0].pid, std::process::id());
    /// assert!(producers[0].alive);
    /// drop(producer);
    /// assert!(log.producers().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn producers(&self) -> Vec<crate::ProducerInfo> {
        self.shared.meta.producers_in_use()
    }

    /// The options the log was created with.
    pub fn options(&self) -> LogOptions {
        let spec = &self.shared.spec;
        LogOptions {
            segment_capacity: spec.capacity,
            checksums: spec.log_flags & log_flags::CHECKSUMS != 0,
            timestamps: spec.log_flags & log_flags::TIMESTAMPS != 0,
            file_mode: spec.file_mode,
        }
    }

    /// The largest payload one message (or one batch) may have in this log.
    pub fn max_payload_len(&self) -> usize {
        self.shared.max_payload_len()
    }

    /// The random identity of this log, written in the meta file and every segment.
    pub fn id(&self) -> [u8; 16] {
        self.shared.spec.log_id
    }
}

impl Shared {
    pub fn max_payload_len(&self) -> usize {
        (self.geometry.max_frame_len() - FRAME_HEADER_LEN) as usize
    }

    /// The mapped segment with this index, shared by every handle of this process. With
    /// `create`, a missing segment is created; without, a missing one is `None`.
    pub fn segment(&self, index: u64, create: bool) -> Result<Option<Arc<Segment>>> {
        let mut cache = self.segments.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(segment) = cache.get(&index).and_then(Weak::upgrade) {
            return Ok(Some(segment));
        }
        let base = index << self.geometry.capacity().trailing_zeros();
        let segment = if create {
            let (segment, _created) = segment::open_or_create(&self.dir, &self.spec, base)?;
            segment
        } else {
            match segment::open(&self.dir, &self.spec, base) {
                Ok(segment) => segment,
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
        };
        self.meta
            .segments_published()
            .fetch_max(index + 1, Ordering::AcqRel);
        let segment = Arc::new(segment);
        cache.retain(|_, weak| weak.strong_count() > 0);
        cache.insert(index, Arc::downgrade(&segment));
        Ok(Some(segment))
    }

    /// Asks this process's preparer thread to map segment `index` (creating it, with
    /// `create`) before a handle gets there.
    pub fn prepare_segment(self: &Arc<Self>, index: u64, create: bool) {
        self.preparer.prepare(self, index, create);
    }

    /// Lets go of a segment a handle has moved past, unmapping it off the caller's thread.
    pub fn retire_segment(&self, segment: Arc<Segment>) {
        self.preparer.retire(segment);
    }

    pub fn earliest_position(&self) -> Result<u64> {
        Ok(list_segments(&self.dir)?.first().copied().unwrap_or(0))
    }
}

/// The base positions of the segment files in `dir`, in log order.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut bases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(base) = entry
            .file_name()
            .to_str()
            .and_then(format::parse_segment_file_name)
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn random_log_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    // SAFETY: `id` is a writable buffer of the length passed.
    let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
    if n != id.len() as isize {
        // No entropy source: time and pid still tell two logs of one host apart.
        id[..8].copy_from_slice(&clock::now_ns().to_le_bytes());
        id[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    id
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("path", &self.shared.dir)
            .field("options", &self.options())
            .field("tail", &self.tail())
            .finish()
    }
}
