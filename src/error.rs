//! Every way a logbus call can fail, each naming what is wrong and where.

use std::path::PathBuf;

/// The error type of every fallible logbus call.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let err = logbus::Log::open(dir.path()).unwrap_err();
/// assert!(matches!(err, logbus::Error::NotALog { .. }));
/// assert!(err.to_string().contains("not a logbus log"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on a file of the log failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The directory exists but holds no meta file.
    #[error("{}: not a logbus log (no {} in it)", path.display(), crate::format::META_FILE_NAME)]
    NotALog {
        /// The directory.
        path: PathBuf,
    },
    /// `Log::create` found a log already there.
    #[error("{}: a log already exists here", path.display())]
    AlreadyExists {
        /// The directory.
        path: PathBuf,
    },
    /// A file does not start with the magic bytes of its kind.
    #[error("{}: not a logbus {kind} file (magic bytes {found:02x?})", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// "meta" or "segment".
        kind: &'static str,
        /// The first bytes found.
        found: [u8; 8],
    },
    /// A file was written by a format version this build does not read.
    #[error("{}: format version {found}, but this build of logbus reads version {supported}", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u16,
        /// The version this build reads and writes.
        supported: u16,
    },
    /// A file is shorter than its header says it must be.
    #[error("{}: truncated: {actual} bytes, expected {expected}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length.
        actual: u64,
        /// The length its header requires.
        expected: u64,
    },
    /// A file is longer than its kind and header allow.
    #[error("{}: {actual} bytes, but this file must be exactly {expected}", path.display())]
    WrongLength {
        /// The file.
        path: PathBuf,
        /// Its length.
        actual: u64,
        /// The length its header requires.
        expected: u64,
    },
    /// A segment file that the log had published is gone, though later ones exist.
    #[error("{}: the segment file for position {position} is missing (deleted by hand?); the log cannot be read past it", path.display())]
    MissingSegment {
        /// The file that should be there.
        path: PathBuf,
        /// The position the consumer needs from it.
        position: u64,
    },
    /// `Log::create` found segment files without a meta file: another log's remains.
    #[error("{}: a segment file with no meta file beside it ({count} in the directory); will not create a log over another log's segments", path.display())]
    StraySegments {
        /// The first segment file found.
        path: PathBuf,
        /// How many segment files there are.
        count: usize,
    },
    /// A file header is inconsistent (bad checksum, impossible values, another log's id).
    #[error("{}: corrupt header: {detail}", path.display())]
    CorruptHeader {
        /// The file.
        path: PathBuf,
        /// What does not hold.
        detail: String,
    },
    /// A frame in a segment breaks the format.
    #[error("corrupt frame at position {position}: {detail}")]
    CorruptFrame {
        /// Its log position.
        position: u64,
        /// What does not hold.
        detail: String,
    },
    /// A payload's CRC32C does not match its header.
    #[error("checksum mismatch at position {position}: header says {expected:#010x}, payload has {actual:#010x}")]
    ChecksumMismatch {
        /// Log position of the frame.
        position: u64,
        /// Checksum in the header.
        expected: u32,
        /// Checksum of the payload as it lies.
        actual: u32,
    },
    /// A message is larger than this log takes.
    #[error("message of {len} bytes exceeds this log's limit of {max} bytes (an eighth of the {segment_capacity}-byte segment, less the header); create the log with larger segments")]
    MessageTooLarge {
        /// The size asked for.
        len: usize,
        /// The largest payload allowed.
        max: usize,
        /// The log's segment capacity.
        segment_capacity: u64,
    },
    /// A batch has no room for another record.
    #[error("batch full: a {len}-byte record needs {needed} bytes, {remaining} are left")]
    BatchFull {
        /// Payload size of the record refused.
        len: usize,
        /// Bytes the record would take with its length prefix and alignment.
        needed: usize,
        /// Bytes left in the batch.
        remaining: usize,
    },
    /// A start position that does not begin a message.
    #[error("position {position} is not the start of a message: {detail}")]
    InvalidPosition {
        /// The position asked for.
        position: u64,
        /// Why not.
        detail: String,
    },
    /// A position below the earliest one still in the log.
    #[error("position {position} is no longer in the log; the earliest position is {earliest}")]
    PositionDeleted {
        /// The position asked for.
        position: u64,
        /// The earliest position that exists.
        earliest: u64,
    },
    /// The file system has no room for a new segment.
    #[error("{}: no space left to create a segment of {bytes} bytes: {source}", path.display())]
    NoSpace {
        /// The segment file that could not be made.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// What the system said.
        source: std::io::Error,
    },
    /// A claim was held past the consumers' claim timeout, and they turned it into padding:
    /// the message was not published.
    #[error("the claim at position {position} was revoked: it was held past the consumers' claim timeout, so they skipped it; the message was not published")]
    ClaimRevoked {
        /// Position of the claim.
        position: u64,
    },
    /// An option out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// Every producer slot of the meta file is held by a live producer.
    #[error("all {slots} producer slots of this log are held by live producers")]
    NoProducerSlot {
        /// Size of the table.
        slots: u32,
    },
    /// The log has an exclusive producer ([`crate::Log::exclusive_producer`]), which no other
    /// producer may write beside while it lives.
    #[error("this log has an exclusive producer (process {pid}; every producer of a single-producer log is one): no other producer may write to it while that one lives")]
    ExclusiveProducer {
        /// The process holding it.
        pid: u32,
    },
    /// An exclusive producer was asked for while other producers live.
    #[error("an exclusive producer needs the log to itself, but {count} other producer(s) hold slots of it")]
    OtherProducers {
        /// How many.
        count: usize,
    },
    /// Every entry of the meta file's consumer table holds a durable cursor.
    #[error("all {slots} entries of this log's consumer table hold durable cursors; remove one with Log::remove_consumer")]
    NoConsumerSlot {
        /// Size of the table.
        slots: u32,
    },
    /// A durable cursor's name is empty, too long or has a NUL byte in it.
    #[error("{name:?} cannot name a durable consumer: {detail} (1 to 32 bytes of UTF-8, no NUL)")]
    InvalidConsumerName {
        /// The name asked for.
        name: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Another live consumer holds the durable cursor of that name.
    #[error("the durable consumer {name:?} is held by a live consumer in process {pid}; one holder at a time")]
    ConsumerInUse {
        /// The cursor's name.
        name: String,
        /// The holder's process id.
        pid: u32,
    },
    /// A position was committed through a consumer made without a name.
    #[error("this consumer has no durable cursor to commit to: make it with Log::consumer_named")]
    NotDurable,
    /// Bounded mode: the slowest live durable consumer is too far behind to produce more.
    /// Nothing was claimed; try again once consumers have committed further.
    #[error("back-pressure: the slowest live durable consumer is {behind} bytes behind the tail, more than this log's bound of {limit}")]
    Backpressure {
        /// How far behind the tail the slowest live durable consumer's committed position is.
        behind: u64,
        /// The log's bound ([`crate::LogOptions::bounded`]).
        limit: u64,
    },
    /// A payload cannot be viewed as the requested `Pod` type.
    #[error("payload of {len} bytes cannot be read in place as {type_name} (size {size}, alignment {align})")]
    PodMismatch {
        /// Payload length.
        len: usize,
        /// The type asked for.
        type_name: &'static str,
        /// Its size.
        size: usize,
        /// Its alignment.
        align: usize,
    },
}

/// Shorthand for results of logbus calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
