//! A log: a directory holding the meta file and the segment files.

use crate::consumer::{Consumer, StartAt};
use crate::format::{log_flags, MetaHeader, FORMAT_VERSION, FRAME_HEADER_LEN, META_MAGIC};
use crate::meta::{Meta, Policy, CONSUMER_SLOTS, PRODUCER_SLOTS};
use crate::preparer::Preparer;
use crate::producer::Producer;
use crate::protocol::{self, Geometry};
use crate::segment::{self, Parking, Prefault, Segment, SegmentSpec};
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
    single_producer: bool,
    file_mode: u32,
    /// Retention and bounded mode, as stored in the meta header (0 = no limit / off).
    policy: Policy,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_capacity: format::DEFAULT_SEGMENT_CAPACITY,
            checksums: true,
            timestamps: true,
            single_producer: false,
            file_mode: 0o600,
            policy: Policy::default(),
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

    /// Whether only one producer at a time writes the log (off by default). Every producer of
    /// such a log is exclusive ([`Log::producer`] makes the same producer as
    /// [`Log::exclusive_producer`]), so a second one, in any process, is refused while the
    /// first lives. In return, where the log recycles its segments (retention on a tmpfs),
    /// a recycled segment is not zeroed in whole before it is used, only in its first frame
    /// word: the producer keeps the word past each frame zero itself. Zeroing is a second write of
    /// every byte the log carries, on the producer's side of the machine (README,
    /// "Performance", for what leaving it out gains). The price: the room a
    /// [`Producer::claim`] or [`crate::Batch::push_with`] hands out is not zeroed either, and
    /// may hold older bytes of the log, so write all of it; and padding frames keep older
    /// bytes, which a dump or a bridge subscriber may see (never as messages).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let options = logbus::LogOptions::new().single_producer(true).retain_segments(4);
    /// let log = logbus::Log::create(dir.path(), &options)?;
    /// assert!(log.options().get_single_producer());
    /// let mut producer = log.producer()?; // exclusive: the log's only one while it lives
    /// assert!(matches!(log.producer(), Err(logbus::Error::ExclusiveProducer { .. })));
    /// producer.offer(b"one writer")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn single_producer(mut self, on: bool) -> Self {
        self.single_producer = on;
        self
    }

    /// Permission bits of the log's files (0o600 by default); the directory, if created,
    /// gets the matching execute bits.
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.file_mode = mode;
        self
    }

    /// Retention by size: the oldest segments are deleted while the log's segment files
    /// take more than `bytes` (each file is its capacity plus a 4096-byte header page). Off
    /// by default. See [`Log::apply_retention`] for when it runs and what it never deletes.
    ///
    /// ```
    /// use logbus::{Log, LogOptions};
    /// let dir = tempfile::tempdir()?;
    /// let options = LogOptions::new().segment_capacity(1 << 16).retain_bytes(4 << 20);
    /// let log = Log::create(dir.path(), &options)?;
    /// assert_eq!(Log::open(dir.path())?.options().get_retain_bytes(), Some(4 << 20));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn retain_bytes(mut self, bytes: u64) -> Self {
        self.policy.retain_bytes = bytes;
        self
    }

    /// Retention by count: the oldest segments are deleted while there are more than
    /// `segments` segment files (the one made ahead of the tail counts). Off by default.
    ///
    /// Any retention (by count, size or age) on a tmpfs such as `/dev/shm` also makes the
    /// log recycle: the segment retention would delete becomes the next one, so the log
    /// stops growing into fresh memory, which there is most of what writing costs (1.3–6×
    /// faster across processes, README "Performance"). A segment any process still reads is
    /// deleted instead, and reads on intact (docs/FORMAT.md, "Recycling").
    ///
    /// ```
    /// let options = logbus::LogOptions::new().retain_segments(8);
    /// assert_eq!(options.get_retain_segments(), Some(8));
    /// ```
    pub fn retain_segments(mut self, segments: u64) -> Self {
        self.policy.retain_segments = segments;
        self
    }

    /// Retention by age: a segment is deleted once its newest message was claimed more than
    /// `age` ago. Off by default. A segment's newest claim time is taken, conservatively,
    /// as the creation time of a segment two or more after it (made only once the tail had
    /// left it); for the segment just before the tail's, which has no such successor, from
    /// the timestamps of its messages (a log without timestamps keeps it until the tail moves
    /// on).
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = logbus::LogOptions::new().retain_age(Duration::from_secs(3600));
    /// assert_eq!(options.get_retain_age(), Some(Duration::from_secs(3600)));
    /// ```
    pub fn retain_age(mut self, age: std::time::Duration) -> Self {
        self.policy.retain_age_ns = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
        self
    }

    /// The hard limit on what durable cursors hold back: retention keeps the segments a
    /// durable cursor has not committed past only while that cursor is at most `bytes`
    /// behind the tail; a cursor further behind is passed over, and its holder meets
    /// [`Error::PositionDeleted`]. No limit by default: durable cursors hold retention back
    /// for as long as they exist ([`Log::remove_consumer`] removes one).
    ///
    /// ```
    /// let options = logbus::LogOptions::new().retain_segments(4).cursor_hold_limit(1 << 30);
    /// assert_eq!(options.get_cursor_hold_limit(), Some(1 << 30));
    /// ```
    pub fn cursor_hold_limit(mut self, bytes: u64) -> Self {
        self.policy.cursor_hold_bytes = bytes;
        self
    }

    /// Bounded mode: `offer`, `claim` and `batch` fail with [`Error::Backpressure`] instead
    /// of growing the log while the slowest *live* durable consumer (one a running process
    /// holds) has committed a position more than `max_lag` bytes behind the tail. Durable
    /// consumers nobody holds, and unnamed consumers, hold nobody back. Off by default.
    ///
    /// With retention by count on a tmpfs, where the log recycles its retired segments, keep
    /// `max_lag` at most `(retain_segments - 2) * segment_capacity` (which needs
    /// `retain_segments(3)` or more; `bounded(0)` is off): `retain_segments(4)` with
    /// `bounded(2 * capacity)`, say. The next segment is made, from the oldest retained one,
    /// as the tail enters the segment before it. With a bound one segment larger, a live
    /// durable consumer held at the bound may still be reading that oldest segment then, and
    /// a segment some process reads is not recycled: the log grows into a fresh file instead,
    /// each time, whenever its durable consumers are the slower side. (Consumers without a
    /// durable cursor are never bounded, and may be anywhere.)
    ///
    /// Each producer checks against a bound it computed the last time it looked at the
    /// consumer table, and looks again only when its claims pass that bound (or have gone
    /// an eighth of `max_lag` since): a claim costs nothing more when the consumers keep up.
    /// Because the producers' looks race, the tail may pass the bound by up to one message
    /// per producer.
    ///
    /// ```
    /// let options = logbus::LogOptions::new().bounded(64 << 20);
    /// assert_eq!(options.get_bounded(), Some(64 << 20));
    /// ```
    pub fn bounded(mut self, max_lag: u64) -> Self {
        self.policy.bounded_lag = max_lag;
        self
    }

    /// The size limit of retention, if any.
    ///
    /// ```
    /// let options = logbus::LogOptions::new();
    /// assert_eq!(options.get_retain_bytes(), None);
    /// assert_eq!(options.retain_bytes(1 << 30).get_retain_bytes(), Some(1 << 30));
    /// ```
    pub fn get_retain_bytes(&self) -> Option<u64> {
        non_zero(self.policy.retain_bytes)
    }

    /// The count limit of retention, if any.
    ///
    /// ```
    /// let options = logbus::LogOptions::new();
    /// assert_eq!(options.get_retain_segments(), None);
    /// assert_eq!(options.retain_segments(3).get_retain_segments(), Some(3));
    /// ```
    pub fn get_retain_segments(&self) -> Option<u64> {
        non_zero(self.policy.retain_segments)
    }

    /// The age limit of retention, if any.
    ///
    /// ```
    /// let options = logbus::LogOptions::new();
    /// assert_eq!(options.get_retain_age(), None);
    /// assert_eq!(options.retain_age(std::time::Duration::from_secs(60)).get_retain_age(), Some(std::time::Duration::from_secs(60)));
    /// ```
    pub fn get_retain_age(&self) -> Option<std::time::Duration> {
        non_zero(self.policy.retain_age_ns).map(std::time::Duration::from_nanos)
    }

    /// The hard limit on what durable cursors hold back, if any.
    ///
    /// ```
    /// let options = logbus::LogOptions::new();
    /// assert_eq!(options.get_cursor_hold_limit(), None);
    /// assert_eq!(options.retain_segments(3).cursor_hold_limit(1 << 30).get_cursor_hold_limit(), Some(1 << 30));
    /// ```
    pub fn get_cursor_hold_limit(&self) -> Option<u64> {
        non_zero(self.policy.cursor_hold_bytes)
    }

    /// The bound of bounded mode, if it is on.
    ///
    /// ```
    /// let options = logbus::LogOptions::new();
    /// assert_eq!(options.get_bounded(), None);
    /// assert_eq!(options.bounded(1 << 20).get_bounded(), Some(1 << 20));
    /// ```
    pub fn get_bounded(&self) -> Option<u64> {
        non_zero(self.policy.bounded_lag)
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

    /// Whether the log takes one (exclusive) producer at a time: see
    /// [`LogOptions::single_producer`].
    pub fn get_single_producer(&self) -> bool {
        self.single_producer
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
        if self.policy.retain_age_ns == 0
            && self.policy.retain_bytes == 0
            && self.policy.retain_segments == 0
            && self.policy.cursor_hold_bytes != 0
        {
            return Err(Error::InvalidOption(
                "a cursor hold limit needs a retention limit (size, count or age) to hold back"
                    .into(),
            ));
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
        }) | (if self.single_producer {
            log_flags::SINGLE_PRODUCER
        } else {
            0
        })
    }
}

fn non_zero(value: u64) -> Option<u64> {
    (value != 0).then_some(value)
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
    /// Held while this process makes a segment file, so that a handle that needs the segment
    /// the preparer is making waits for it instead of making (and `fallocate`ing) a second
    /// copy — which on a nearly full file system could fail where the first succeeds.
    creating: Mutex<()>,
    preparer: Preparer,
    recovery: std::sync::OnceLock<RecoveryReport>,
    /// Whether segments retention retires are recycled into new ones: see
    /// `segment::recycling_pays`.
    pub recycles: bool,
    /// Mappings kept for segment files that may come back recycled (none if they do not).
    pub parking: Parking,
}

/// Dropping a handle waits (at most a few seconds) for the segment this process's preparer
/// thread may be making, so that a directory removed right after its last handle has gone
/// gets no file made in it afterwards.
impl Drop for Log {
    fn drop(&mut self) {
        self.shared.wait_for_preparer();
    }
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
            log_flags: options.log_flags()
                | if options.policy.retains() && segment::recycling_pays(dir) {
                    log_flags::RECYCLING
                } else {
                    0
                },
            log_id: random_log_id(),
            segment_capacity: options.segment_capacity,
            created_ns: clock::now_ns(),
            producer_slots: PRODUCER_SLOTS as u32,
            consumer_slots: CONSUMER_SLOTS as u32,
            file_mode: options.file_mode,
            header_checksum: 0,
            reserved: options.policy.to_header_bytes(),
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
        // Made now, so that a full disk is reported here; mapped (and pre-faulted) by the
        // first handle that uses it, not here, where nothing would keep the mapping.
        log.shared.map_segment(0, true)?;
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
        // A log made without the flag may have readers that do not lock (older builds).
        // (A bridge replica carries its source's flags, but no retention of its own.)
        let recycles = header.log_flags & log_flags::RECYCLING != 0
            && meta.policy().retains()
            && segment::recycling_pays(dir);
        let parking_room = if recycles {
            parking_room(meta.policy(), spec.file_len())
        } else {
            0
        };
        let log = Log {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                meta,
                spec,
                geometry: Geometry::new(header.segment_capacity),
                segments: Mutex::new(HashMap::new()),
                creating: Mutex::new(()),
                preparer: Preparer::new(),
                recovery: std::sync::OnceLock::new(),
                recycles,
                parking: Parking::new(parking_room),
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

    /// A new producer: any number may exist, in any number of threads and processes (unless
    /// an exclusive producer holds the log: then [`Error::ExclusiveProducer`]). In a
    /// single-producer log ([`LogOptions::single_producer`]) this is
    /// [`Log::exclusive_producer`].
    pub fn producer(&self) -> Result<Producer> {
        let single = self.shared.spec.log_flags & log_flags::SINGLE_PRODUCER != 0;
        Producer::new(self.shared.clone(), single)
    }

    /// A producer that has the log to itself for as long as it lives: no other producer, in
    /// this process or another, can be made meanwhile ([`Error::ExclusiveProducer`]), and it
    /// cannot be made while another lives ([`Error::OtherProducers`]). In return it claims
    /// nothing: it writes each frame at the tail, commits it, then moves the tail past it
    /// with a plain store — no atomic add (as Aeron's exclusive publications) and no claim
    /// record. Everything else — crash safety, consumers, the format — is as for any
    /// producer; if its process dies, the log is free again, and a message it committed
    /// without moving the tail past it is kept.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = logbus::Log::create(dir.path(), &logbus::LogOptions::new().segment_capacity(1 << 16))?;
    /// let mut only = log.exclusive_producer()?;
    /// only.offer(b"fast path")?;
    /// assert!(matches!(log.producer(), Err(logbus::Error::ExclusiveProducer { .. })));
    /// drop(only);
    /// let mut shared = log.producer()?;                 // free again
    /// assert!(matches!(log.exclusive_producer(), Err(logbus::Error::OtherProducers { count: 1 })));
    /// shared.offer(b"any number of these")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exclusive_producer(&self) -> Result<Producer> {
        Producer::new(self.shared.clone(), true)
    }

    /// A new consumer reading from `start`, with a position of its own.
    pub fn consumer(&self, start: StartAt) -> Result<Consumer> {
        Consumer::new(self.shared.clone(), start)
    }

    /// The directory of the log.
    pub fn path(&self) -> &Path {
        &self.shared.dir
    }

    /// The end of everything claimed so far: the position the next claim gets. (An exclusive
    /// producer's message counts from just after its commit, when the producer moves the
    /// tail past it.)
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

    /// The pid of the process whose exclusive producer ([`Log::exclusive_producer`]) holds the
    /// log now, or `None` (no exclusive producer, or its process has died).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = logbus::Log::create(dir.path(), &logbus::LogOptions::new().segment_capacity(1 << 16))?;
    /// assert_eq!(log.exclusive_holder(), None);
    /// let only = log.exclusive_producer()?;
    /// assert_eq!(log.exclusive_holder(), Some(std::process::id()));
    /// drop(only);
    /// assert_eq!(log.exclusive_holder(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exclusive_holder(&self) -> Option<u32> {
        self.shared.meta.exclusive_holder()
    }

    /// A consumer with a durable cursor named `name`: it resumes where the last holder of
    /// that name committed its position, across restarts of any process, and a new name
    /// starts at the earliest message. One consumer holds a name at a time (a second one
    /// gets [`Error::ConsumerInUse`] while the first lives); a holder that dies without
    /// dropping it is taken over. Delivery is at-least-once: commit with
    /// [`Consumer::commit_position`] after processing, and what came after the last commit
    /// is read again by the next holder.
    ///
    /// If retention has deleted the committed position meanwhile (past the
    /// [`LogOptions::cursor_hold_limit`]), the consumer is made there, and its first read
    /// fails with [`Error::PositionDeleted`] naming the earliest position, to
    /// [`Consumer::seek`] to.
    ///
    /// ```
    /// use logbus::{Log, LogOptions};
    /// let dir = tempfile::tempdir()?;
    /// let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(1 << 16))?;
    /// let mut producer = log.producer()?;
    /// for m in [&b"one"[..], b"two", b"three"] {
    ///     producer.offer(m)?;
    /// }
    ///
    /// let mut billing = log.consumer_named("billing")?;
    /// assert_eq!(billing.poll()?.unwrap().payload(), b"one");
    /// billing.commit_position()?;              // "one" is done
    /// assert_eq!(billing.poll()?.unwrap().payload(), b"two");
    /// drop(billing);                           // crashed before committing "two"
    ///
    /// let mut billing = Log::open(dir.path())?.consumer_named("billing")?;
    /// assert_eq!(billing.poll()?.unwrap().payload(), b"two"); // at-least-once
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn consumer_named(&self, name: &str) -> Result<Consumer> {
        Consumer::named(self.shared.clone(), name, StartAt::Earliest)
    }

    /// Like [`Log::consumer_named`], but a name not seen before starts at `start` instead
    /// of the earliest message. For a name that exists, `start` is ignored.
    ///
    /// ```
    /// use logbus::{Log, LogOptions, StartAt};
    /// let dir = tempfile::tempdir()?;
    /// let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(1 << 16))?;
    /// log.producer()?.offer(b"before")?;
    /// let mut audit = log.consumer_named_from("audit", StartAt::Latest)?;
    /// assert!(audit.poll()?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn consumer_named_from(&self, name: &str, start: StartAt) -> Result<Consumer> {
        Consumer::named(self.shared.clone(), name, start)
    }

    /// The durable cursors of the log, with their committed position, lag and holder.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = logbus::Log::create(dir.path(), &logbus::LogOptions::new().segment_capacity(1 << 16))?;
    /// let mut billing = log.consumer_named("billing")?;
    /// log.producer()?.offer(b"an invoice")?;
    /// let cursors = log.consumers();
    /// assert_eq!(cursors.len(), 1);
    /// assert_eq!(cursors[0].name, "billing");
    /// assert_eq!(cursors[0].lag, log.tail() - cursors[0].position);
    /// assert!(cursors[0].alive);
    /// billing.poll()?;
    /// billing.commit_position()?;
    /// assert_eq!(log.consumers()[0].lag, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn consumers(&self) -> Vec<ConsumerInfo> {
        let tail = self.tail();
        self.shared
            .meta
            .cursors()
            .into_iter()
            .map(|cursor| ConsumerInfo {
                name: cursor.name,
                position: cursor.position,
                lag: tail.saturating_sub(cursor.position),
                holder: cursor.holder,
                alive: cursor.alive,
                committed_ns: cursor.updated_ns,
            })
            .collect()
    }

    /// Deletes the durable cursor `name`, so that it no longer holds retention or producers
    /// back; false if there was none. Fails with [`Error::ConsumerInUse`] while a live
    /// consumer holds it.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = logbus::Log::create(dir.path(), &logbus::LogOptions::new().segment_capacity(1 << 16))?;
    /// let billing = log.consumer_named("billing")?;
    /// assert!(log.remove_consumer("billing").is_err()); // held
    /// drop(billing);
    /// assert!(log.remove_consumer("billing")?);
    /// assert!(log.consumers().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove_consumer(&self, name: &str) -> Result<bool> {
        self.shared.meta.remove_cursor(name)
    }

    /// Applies the log's retention policy now, and reports what it deleted. It also runs by
    /// itself whenever a producer's process makes a new segment, and when a segment cannot
    /// be made for lack of space.
    ///
    /// Whole segments are deleted, oldest first, while the policy's size, count or age limit
    /// says so, except: the segment holding the tail and everything after it; a segment in
    /// which a live producer's claim is still in flight; and a segment a durable cursor has
    /// not committed past (unless that cursor is more than the
    /// [`LogOptions::cursor_hold_limit`] behind the tail). A process that has a deleted
    /// segment mapped goes on reading it; its space is released when the last mapping goes.
    /// A consumer asking for a deleted position gets [`Error::PositionDeleted`], which names
    /// the earliest position still there.
    ///
    /// ```
    /// use logbus::{Error, Log, LogOptions, StartAt};
    /// let dir = tempfile::tempdir()?;
    /// let options = LogOptions::new().segment_capacity(1 << 16).retain_segments(2);
    /// let log = Log::create(dir.path(), &options)?;
    /// let mut producer = log.producer()?;
    /// let first = producer.offer(b"old")?;
    /// while log.tail() < 4 << 16 {
    ///     producer.offer(&[7; 4000])?;
    /// }
    /// log.apply_retention()?;
    /// let earliest = log.earliest_position()?;
    /// assert!(earliest > first);
    /// match log.consumer(StartAt::Position(first)) {
    ///     Err(Error::PositionDeleted { earliest: e, .. }) => assert_eq!(e, earliest),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_retention(&self) -> Result<RetentionReport> {
        self.shared.apply_retention()
    }

    /// The options the log was created with.
    pub fn options(&self) -> LogOptions {
        let spec = &self.shared.spec;
        LogOptions {
            segment_capacity: spec.capacity,
            checksums: spec.log_flags & log_flags::CHECKSUMS != 0,
            timestamps: spec.log_flags & log_flags::TIMESTAMPS != 0,
            single_producer: spec.log_flags & log_flags::SINGLE_PRODUCER != 0,
            file_mode: spec.file_mode,
            policy: Policy {
                checksum: 0,
                ..*self.shared.meta.policy()
            },
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

    /// The path of the segment file holding `position`.
    pub fn segment_file_path(&self, position: u64) -> PathBuf {
        let base = position - self.geometry.offset_in_segment(position);
        self.dir.join(format::segment_file_name(base))
    }

    /// Whether the segment file holding `position` exists: one `stat`, nothing mapped.
    pub fn segment_file_exists(&self, position: u64) -> bool {
        self.segment_file_path(position).exists()
    }

    /// The end of what is committed: the tail, or past it the frames an exclusive producer
    /// committed before moving the tail over them (`protocol::committed_end`). Where a
    /// position must not lie past what exists, this is the bound, not the tail.
    pub fn committed_end(self: &Arc<Shared>) -> Result<u64> {
        let tail = self.meta.tail().load(Ordering::Acquire);
        protocol::committed_end(
            tail,
            self.geometry,
            &mut verify::SegmentWords::new(self),
            |position| self.segment_file_exists(position),
        )
    }

    /// The mapped segment with this index, shared by every handle of this process, its page
    /// tables filled for `prefault` (a producer's writing, or reading). With `create`, a
    /// missing segment is created; without, a missing one is `None`.
    ///
    /// The cache's lock is held only to look up and insert: creating and mapping a segment
    /// take milliseconds, and a handle of this process switching to a segment that is ready
    /// must not wait for the preparer making the next one.
    pub fn segment(
        &self,
        index: u64,
        create: bool,
        prefault: Prefault,
    ) -> Result<Option<Arc<Segment>>> {
        let segment = match self.cached_segment(index) {
            Some(segment) => segment,
            None => {
                // Making a segment: one at a time in this process, and looked up again once
                // it is this caller's turn (the maker before it may have made this very one).
                let _making =
                    create.then(|| self.creating.lock().unwrap_or_else(|e| e.into_inner()));
                let made_meanwhile = create.then(|| self.cached_segment(index)).flatten();
                match made_meanwhile {
                    Some(segment) => segment,
                    None => match self.map_segment(index, create)? {
                        Some(mapped) => self.cache(index, mapped),
                        None => return Ok(None),
                    },
                }
            }
        };
        segment.prefault(prefault);
        Ok(Some(segment))
    }

    /// Puts a segment this thread mapped into the cache, unless another thread of this
    /// process cached one meanwhile: then that one is used (one mapping per process, so that
    /// its page tables are filled once) and this one unmapped.
    fn cache(&self, index: u64, mapped: Segment) -> Arc<Segment> {
        let mut cache = self.segments.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(theirs) = cache.get(&index).and_then(Weak::upgrade) {
            return theirs;
        }
        let mapped = Arc::new(mapped);
        cache.retain(|_, weak| weak.strong_count() > 0);
        cache.insert(index, Arc::downgrade(&mapped));
        mapped
    }

    fn cached_segment(&self, index: u64) -> Option<Arc<Segment>> {
        let cache = self.segments.lock().unwrap_or_else(|e| e.into_inner());
        // Mapped in this process: readable, even if retention has deleted the file since.
        cache.get(&index).and_then(Weak::upgrade)
    }

    /// Opens (with `create`, makes if missing) and maps segment `index`, without the cache.
    fn map_segment(&self, index: u64, create: bool) -> Result<Option<Segment>> {
        let base = index << self.geometry.capacity().trailing_zeros();
        // Below the floor, retention deleted it: it is not opened again (a file left by a
        // pass that stopped half-way included), and never made again.
        let retained_from = self.meta.retained_from().load(Ordering::Acquire);
        if base < retained_from {
            return if create {
                Err(Error::PositionDeleted {
                    position: base,
                    earliest: retained_from,
                })
            } else {
                Ok(None)
            };
        }
        let segment = if create {
            let make = || {
                segment::open_or_create(&self.dir, &self.spec, base, &self.parking, || {
                    self.retire_for_recycling(base)
                })
            };
            let made = match make() {
                // A full file system: if retention may free some, let it, and try once more.
                Err(full @ Error::NoSpace { .. }) if self.meta.policy().retains() => {
                    let freed = self
                        .apply_retention()
                        .is_ok_and(|report| !report.deleted.is_empty());
                    // Parked mappings of deleted files would hold their memory.
                    self.parking.clear();
                    if freed {
                        // A deleted file's space comes back when its last mapping goes, and
                        // another process may be a moment from letting go of one.
                        let mut made = make();
                        for _ in 0..10 {
                            if !matches!(made, Err(Error::NoSpace { .. })) {
                                break;
                            }
                            std::thread::sleep(std::time::Duration::from_millis(1));
                            made = make();
                        }
                        made
                    } else {
                        Err(full)
                    }
                }
                other => other,
            };
            let (segment, created) = made?;
            // A retention pass that moved the floor past this segment while it was being
            // made deletes it after publishing the floor; this check after publishing the
            // file catches the other order (both are SeqCst).
            let retained_from = self.meta.retained_from().load(Ordering::SeqCst);
            if created && base < retained_from {
                let _ = std::fs::remove_file(self.dir.join(format::segment_file_name(base)));
                return Err(Error::PositionDeleted {
                    position: base,
                    earliest: retained_from,
                });
            }
            segment
        } else {
            match segment::open(&self.dir, &self.spec, base, &self.parking) {
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
        Ok(Some(segment))
    }

    /// Waits for the segment work this process's preparer thread has in flight or queued.
    pub fn wait_for_preparer(&self) {
        self.preparer.wait_idle();
    }

    /// Starts this process's preparer thread, if it is not running, before a handle needs it.
    pub fn start_preparer(self: &Arc<Self>) {
        self.preparer.start(self);
    }

    /// Asks this process's preparer thread to map segment `index` (creating it, with
    /// `create`) before a handle gets there.
    pub fn prepare_segment(self: &Arc<Self>, index: u64, create: bool) {
        self.preparer.prepare(self, index, create);
    }

    /// Lets go of a segment a handle has moved past, unmapping it off the caller's thread.
    pub fn retire_segment(self: &Arc<Self>, segment: Arc<Segment>) {
        self.preparer.retire(self, segment);
    }

    /// The earliest position still in the log: the oldest segment file's base, or where
    /// retention has deleted up to, whichever is later (a pass that stopped half-way may
    /// leave files below that).
    pub fn earliest_position(&self) -> Result<u64> {
        let retained_from = self.meta.retained_from().load(Ordering::Acquire);
        let first = list_segments(&self.dir)?.first().copied().unwrap_or(0);
        Ok(first.max(retained_from))
    }

    /// One retention pass: see [`Log::apply_retention`].
    pub fn apply_retention(&self) -> Result<RetentionReport> {
        let RetentionPlan {
            mut report,
            doomed,
            new_floor,
        } = self.plan_retention(None)?;
        if doomed.is_empty() {
            report.earliest = self.earliest_position()?;
            return Ok(report);
        }
        let file_len = self.spec.file_len();
        // First the floor, then the files: a process that makes a segment checks the floor
        // after publishing it (see `segment`), so no deleted segment comes back.
        self.meta
            .retained_from()
            .fetch_max(new_floor, Ordering::SeqCst);
        for &base in &doomed {
            let path = self.dir.join(format::segment_file_name(base));
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    report.deleted.push(base);
                    report.bytes_freed += file_len;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        segment::sync_dir(&self.dir);
        let retained_from = self.meta.retained_from().load(Ordering::Acquire);
        self.meta.forget_dead_claims_below(retained_from);
        self.let_go_below(retained_from);
        report.earliest = self.earliest_position()?;
        Ok(report)
    }

    /// For making segment `base`: the oldest segment retention would delete once `base`
    /// exists, retired for `segment::open_or_create` to recycle. `None` where nothing is
    /// due, or where recycling does not pay (see `segment::recycling_pays`).
    fn retire_for_recycling(&self, base: u64) -> Option<segment::Retired> {
        if !self.recycles {
            return None;
        }
        let plan = self.plan_retention(Some(base)).ok()?;
        let &oldest = plan.doomed.first()?;
        let end = oldest + self.geometry.capacity();
        // As in `apply_retention`: the floor first, so that nobody opens it anew.
        self.meta.retained_from().fetch_max(end, Ordering::SeqCst);
        // This process's own prepared mapping of it would refuse the recycler its lock; parked,
        // it serves the recycling instead.
        self.let_go_below(end);
        segment::retire_for_recycling(&self.dir, oldest, base)
    }

    /// Lets go of this process's prepared segments below `floor` and of those waiting to be
    /// unmapped: parked, where this was their last reference (see `segment::Parking`).
    fn let_go_below(&self, floor: u64) {
        for segment in self.preparer.forget_below(floor) {
            self.parking.park(segment);
        }
    }

    /// What a retention pass would delete, once the segment at `upcoming` (if any) exists.
    fn plan_retention(&self, upcoming: Option<u64>) -> Result<RetentionPlan> {
        let policy = *self.meta.policy();
        let capacity = self.geometry.capacity();
        let file_len = self.spec.file_len();
        let floor = self.meta.retained_from().load(Ordering::Acquire);
        // The tail before the records: every claim below it was announced in a record
        // before it was made (see `protocol::unblock`), so the scan below sees it.
        let tail = self.meta.tail().load(Ordering::Acquire);
        let bases = list_segments(&self.dir)?;
        let mut report = RetentionReport::default();
        // Never the tail's segment or a later one, nor one holding a live claim in flight.
        let mut limit = self.geometry.segment_index(tail) * capacity;
        match self.meta.lowest_live_claim() {
            Ok(Some(claim)) => limit = limit.min(claim),
            Ok(None) => {}
            Err(()) => {
                report.deferred = true;
                limit = floor;
            }
        }
        let hold = policy.cursor_hold_bytes;
        let cursor_bound = self
            .meta
            .cursor_positions()
            .map(|position| match hold {
                0 => position,
                hold => position.max(tail.saturating_sub(hold)),
            })
            .min()
            .unwrap_or(u64::MAX);
        let now = clock::now_ns();
        // (Another process may have published it since its maker looked.)
        let upcoming = upcoming.is_some_and(|base| !bases.contains(&base));
        let mut count =
            bases.iter().filter(|&&base| base >= floor).count() as u64 + u64::from(upcoming);
        let mut bytes = count * file_len;
        let mut new_floor = floor;
        let mut doomed = Vec::new();
        for (i, &base) in bases.iter().enumerate() {
            let end = base + capacity;
            if end <= floor {
                doomed.push(base); // left by a pass that stopped before deleting it
                continue;
            }
            let wanted = policy.retains()
                && ((policy.retain_segments != 0 && count > policy.retain_segments)
                    || (policy.retain_bytes != 0 && bytes > policy.retain_bytes)
                    || (policy.retain_age_ns != 0
                        && self.newest_claim_ns(&bases, i).is_some_and(|newest| {
                            newest.saturating_add(policy.retain_age_ns) <= now
                        })));
            if !wanted || end > limit {
                break;
            }
            if end > cursor_bound {
                report.held_by_cursors += 1;
                count -= 1;
                bytes -= file_len;
                continue;
            }
            if report.held_by_cursors > 0 {
                break; // only a prefix of the log is ever deleted
            }
            doomed.push(base);
            new_floor = end;
            count -= 1;
            bytes -= file_len;
        }
        Ok(RetentionPlan {
            report,
            doomed,
            new_floor,
        })
    }

    /// An upper bound of the claim times of the messages in segment `bases[i]`, or `None`
    /// if it cannot be known yet. A segment two or more after it was made only once the tail
    /// had entered the one before, so after every claim in this one; without
    /// such a segment, the newest timestamp of its messages (all of them committed or
    /// padded, else unknown).
    fn newest_claim_ns(&self, bases: &[u64], i: usize) -> Option<u64> {
        let capacity = self.geometry.capacity();
        let base = bases[i];
        if let Some(&later) = bases[i + 1..].iter().find(|&&b| b >= base + 2 * capacity) {
            let path = self.dir.join(format::segment_file_name(later));
            let file = std::fs::File::open(&path).ok()?;
            segment::lock_shared(&file, &path).ok()?;
            return segment::read_header(&file, &path)
                .ok()
                .map(|header| header.created_ns);
        }
        if self.spec.log_flags & log_flags::TIMESTAMPS == 0 {
            return None;
        }
        let path = self.dir.join(format::segment_file_name(base));
        let file = crate::inspect::SegmentFile::open(&path).ok()?;
        let mut newest = file.header().created_ns;
        let mut frames = file.frames();
        for frame in frames.by_ref() {
            if let Some(ns) = frame.ok()?.timestamp_ns() {
                newest = newest.max(ns);
            }
        }
        (frames.next_position() == base + capacity).then_some(newest)
    }
}

/// A durable cursor, as [`Log::consumers`] lists it.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let log = logbus::Log::create(dir.path(), &logbus::LogOptions::new().segment_capacity(1 << 16))?;
/// drop(log.consumer_named("billing")?);
/// log.producer()?.offer(b"unread")?;
/// let info = &log.consumers()[0];
/// assert_eq!((info.name.as_str(), info.position, info.lag), ("billing", 0, log.tail()));
/// assert_eq!((info.holder, info.alive), (None, false));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerInfo {
    /// Its name.
    pub name: String,
    /// The committed position: where the next holder resumes.
    pub position: u64,
    /// How far behind the tail the committed position is, in bytes.
    pub lag: u64,
    /// The process id of the consumer holding it, if one does (perhaps a dead one that has
    /// not been taken over yet: see `alive`).
    pub holder: Option<u32>,
    /// Whether a running process holds it.
    pub alive: bool,
    /// When the position was last committed, nanoseconds since the Unix epoch, to within the
    /// system clock's tick (a few milliseconds: commits read the coarse clock, which costs a
    /// quarter of the precise one).
    pub committed_ns: u64,
}

/// What a retention pass did: see [`Log::apply_retention`].
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let options = logbus::LogOptions::new().segment_capacity(1 << 16).retain_segments(1);
/// let log = logbus::Log::create(dir.path(), &options)?;
/// let report = log.apply_retention()?;
/// assert!(report.deleted.is_empty()); // never the segment of the tail
/// assert_eq!((report.earliest, report.bytes_freed), (0, 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionReport {
    /// Base positions of the segment files deleted, oldest first.
    pub deleted: Vec<u64>,
    /// Bytes of segment files deleted.
    pub bytes_freed: u64,
    /// The earliest position still in the log afterwards.
    pub earliest: u64,
    /// Segments the policy would have deleted but kept because a durable cursor still
    /// needs them.
    pub held_by_cursors: u64,
    /// True if a live producer was caught between claiming and recording where, so that
    /// nothing was deleted this time (it is two instructions away; the next pass goes on).
    pub deferred: bool,
}

/// What a retention pass is to do: see `Shared::plan_retention`.
struct RetentionPlan {
    report: RetentionReport,
    /// Base positions of the segment files to delete, oldest first.
    doomed: Vec<u64>,
    /// The retention floor once they are gone.
    new_floor: u64,
}

/// How many mappings of retired segments a process keeps for their files' return (see
/// `segment::Parking`): as many as the log retains segments (the file recycled next is the
/// oldest), at most 16; 4 where only age bounds it. A parked mapping of a file that still
/// has a name costs address space and page tables (a 500th of its size with 4 KiB pages);
/// one whose file was deleted holds the file's memory until the process's next segment
/// change lets it go, so the bound is also one of memory.
fn parking_room(policy: &crate::meta::Policy, file_len: u64) -> usize {
    let by_count = non_zero(policy.retain_segments);
    let by_size = non_zero(policy.retain_bytes).map(|bytes| (bytes / file_len).max(1));
    [by_count, by_size]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(4)
        .min(16) as usize
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
