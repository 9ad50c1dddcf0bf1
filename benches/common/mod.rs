//! What the criterion benches share: their configuration, and logs that are fresh where the
//! timed part runs.
//!
//! # Steady state, and how rotation is kept out of it
//!
//! A log only grows, so a benchmark that writes for seconds needs gigabytes. Every bench that
//! writes therefore works in *chunks*: before a chunk is timed, [`FreshLog`] checks that the
//! chunk fits in the first eighth of segment 0 of a log with [`CAPACITY`]-byte segments, and
//! if it does not, deletes that log and creates a new one — outside the timed part. A chunk
//! thus never crosses the point an eighth into a log's first segment (where a producer asks the preparer
//! thread for the next segment) nor a segment end, and what is timed is the hot path of a log in steady
//! state: claim, write, commit into memory that is mapped and pre-faulted, cold in the cache
//! (as a log's next bytes always are) but with no page fault, no system call and no segment
//! creation. Creating a 256 MiB segment costs tens of milliseconds untimed, so a bench takes
//! several times its measurement time in wall-clock time.
//!
//! What rotation costs the hot path is measured on its own, by the `rotation` group of the
//! `produce` bench, with segments small enough that a chunk crosses many of them.
//!
//! Logs live in temporary directories under `/dev/shm` (the system's temporary directory if
//! there is none); each is deleted when it is replaced and when the bench ends.

#![allow(dead_code)] // Each bench binary uses part of this module.

use criterion::Criterion;
use logbus::format::{align_up, FRAME_ALIGNMENT, FRAME_HEADER_LEN};
use logbus::{Consumer, Log, LogOptions, Producer, StartAt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Segment capacity of the logs the steady-state benches write: 256 MiB, so 32 MiB can be
/// written before a producer asks for the next segment.
pub const CAPACITY: u64 = 256 << 20;

/// Payload sizes of the size sweeps.
pub const SIZES: [usize; 5] = [8, 32, 256, 1024, 4096];

/// Short runs, so that the whole suite takes a few minutes: 1 s of warm-up and 2 s of
/// measurement per benchmark. Command-line options (`-- --measurement-time 5`) override them.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

/// `/dev/shm` if there is one (logs then live in memory), else the system's temporary
/// directory.
pub fn base_dir() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// Bytes a message of `payload` bytes takes in the log when sent alone.
pub fn frame_bytes(payload: usize) -> u64 {
    align_up(FRAME_HEADER_LEN + payload as u64, FRAME_ALIGNMENT)
}

/// Bytes a message set of `count` records of `payload` bytes takes in the log.
pub fn set_bytes(count: usize, payload: usize) -> u64 {
    let record = align_up(4 + payload as u64, 4);
    align_up(FRAME_HEADER_LEN + record * count as u64, FRAME_ALIGNMENT)
}

/// A log that is replaced by a new, empty one whenever the next chunk would not fit in the
/// first eighth of its first segment (see the module documentation).
pub struct FreshLog {
    options: LogOptions,
    /// Declared before `dir` so that the log is closed before its directory is deleted.
    log: Option<Log>,
    dir: Option<tempfile::TempDir>,
    /// How many logs were made, for the curious.
    pub made: u64,
}

impl FreshLog {
    /// Logs with `options` (whose segment capacity should be [`CAPACITY`], unless rotation is
    /// what is measured).
    pub fn new(options: LogOptions) -> Self {
        FreshLog {
            options,
            log: None,
            dir: None,
            made: 0,
        }
    }

    /// Steady-state logs: [`CAPACITY`]-byte segments, checksums and timestamps as given.
    pub fn steady(checksums: bool, timestamps: bool) -> Self {
        FreshLog::new(
            LogOptions::new()
                .segment_capacity(CAPACITY)
                .checksums(checksums)
                .timestamps(timestamps),
        )
    }

    /// Bytes that can still be claimed before a producer asks for the next segment, an eighth
    /// into the first.
    pub fn room(&self) -> u64 {
        match &self.log {
            Some(log) => (self.options.get_segment_capacity() / 8).saturating_sub(log.tail()),
            None => 0,
        }
    }

    /// The largest number of chunk bytes a fresh log takes.
    pub fn max_chunk_bytes(&self) -> u64 {
        self.options.get_segment_capacity() / 8
    }

    /// The current log if `bytes` more fit in it; else a new, empty log. Returns whether the
    /// log is new, so that callers can remake their producers and consumers.
    pub fn ensure_room(&mut self, bytes: u64) -> bool {
        if self.log.is_some() && self.room() >= bytes {
            return false;
        }
        self.replace();
        true
    }

    /// Deletes the current log (if any) and makes a new one.
    pub fn replace(&mut self) {
        self.log = None;
        if let Some(dir) = self.dir.take() {
            delete(dir);
        }
        let dir = tempfile::Builder::new()
            .prefix("logbus-bench-")
            .tempdir_in(base_dir())
            .expect("a temporary directory for a benchmark log");
        let log = Log::create(dir.path(), &self.options).expect("creating a benchmark log");
        self.log = Some(log);
        self.dir = Some(dir);
        self.made += 1;
    }

    /// The current log; [`FreshLog::ensure_room`] must have been called.
    pub fn log(&self) -> &Log {
        self.log.as_ref().expect("ensure_room made a log")
    }
}

impl Drop for FreshLog {
    fn drop(&mut self) {
        self.log = None;
        if let Some(dir) = self.dir.take() {
            delete(dir);
        }
    }
}

/// Deletes a log's directory. Dropping the last handle waits for the preparer thread's
/// segment in the making; a directory that is not empty yet is still tried again, as a guard.
fn delete(dir: tempfile::TempDir) {
    let path = dir.keep();
    for attempt in 0.. {
        match std::fs::remove_dir_all(&path) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) if attempt < 200 => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                eprintln!("could not delete the benchmark log {}: {e}", path.display());
                return;
            }
        }
    }
}

/// A producer over fresh logs: [`ProducerBench::run`] times `iters` calls of a closure
/// that writes `bytes_per_iter` bytes of log, in chunks that each fit a fresh log, and
/// returns only the time spent inside the chunks.
pub struct ProducerBench {
    pub fresh: FreshLog,
    producer: Option<Producer>,
}

impl ProducerBench {
    pub fn new(fresh: FreshLog) -> Self {
        ProducerBench {
            fresh,
            producer: None,
        }
    }

    pub fn run(
        &mut self,
        iters: u64,
        bytes_per_iter: u64,
        mut write: impl FnMut(&mut Producer),
    ) -> Duration {
        let per_chunk = (self.fresh.max_chunk_bytes() / bytes_per_iter).max(1);
        let mut left = iters;
        let mut total = Duration::ZERO;
        while left > 0 {
            let chunk = left.min(per_chunk);
            if self.fresh.ensure_room(chunk * bytes_per_iter) || self.producer.is_none() {
                self.producer = None;
                self.producer = Some(self.fresh.log().producer().expect("a producer"));
            }
            let producer = self.producer.as_mut().expect("made above");
            let start = Instant::now();
            for _ in 0..chunk {
                write(producer);
            }
            total += start.elapsed();
            left -= chunk;
        }
        total
    }
}

/// A consumer over fresh logs: [`ConsumerBench::run`] first writes a chunk of messages
/// (untimed), then times the consumer reading them; repeated until `iters` messages were read.
///
/// Chunks are about [`CONSUMER_CHUNK_BYTES`] of log, so the consumer reads data that this
/// core has just written and that is still in its L2 cache: what is timed is the consumer's
/// own cost per message. The cost of fetching each line from the producer's core is in the
/// cross-process figures of `logbus bench`.
pub struct ConsumerBench {
    pub fresh: FreshLog,
    producer: Option<Producer>,
    consumer: Option<Consumer>,
    verify_checksums: bool,
}

/// Log bytes written and then read per timed chunk of the consumer benches.
pub const CONSUMER_CHUNK_BYTES: u64 = 256 << 10;

impl ConsumerBench {
    pub fn new(fresh: FreshLog, verify_checksums: bool) -> Self {
        ConsumerBench {
            fresh,
            producer: None,
            consumer: None,
            verify_checksums,
        }
    }

    /// `fill(producer, n)` writes `n` messages that take `bytes_per_message` each (messages
    /// of a set count one each); `read(consumer, n)` must read exactly `n` messages.
    pub fn run(
        &mut self,
        iters: u64,
        bytes_per_message: u64,
        mut fill: impl FnMut(&mut Producer, u64),
        mut read: impl FnMut(&mut Consumer, u64),
    ) -> Duration {
        let per_chunk = (CONSUMER_CHUNK_BYTES / bytes_per_message).max(1);
        let mut left = iters;
        let mut total = Duration::ZERO;
        while left > 0 {
            let chunk = left.min(per_chunk);
            // Room for a whole chunk even when sets round it up.
            let needed = per_chunk * bytes_per_message + (1 << 16);
            if self.fresh.ensure_room(needed) || self.producer.is_none() {
                self.consumer = None;
                self.producer = None;
                let log = self.fresh.log();
                self.producer = Some(log.producer().expect("a producer"));
                let mut consumer = log.consumer(StartAt::Earliest).expect("a consumer");
                consumer.verify_checksums(self.verify_checksums);
                self.consumer = Some(consumer);
            }
            fill(self.producer.as_mut().expect("made above"), chunk);
            let consumer = self.consumer.as_mut().expect("made above");
            let start = Instant::now();
            read(consumer, chunk);
            total += start.elapsed();
            left -= chunk;
        }
        total
    }
}
