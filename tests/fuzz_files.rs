//! Property tests over random bytes for everything that reads files: the meta file, segment
//! headers, frames (consumers, the inspector, verify, recovery on open). Whatever the bytes,
//! every call returns — a value or an error — and never panics, loops for ever or reads out
//! of bounds. The number of cases is bounded for the normal test run; set `PROPTEST_CASES`
//! for a longer one.

mod common;

use logbus::format::{
    segment_file_name, MetaHeader, SegmentHeader, META_FILE_NAME, SEGMENT_HEADER_LEN,
};
use logbus::inspect::SegmentFile;
use logbus::{Log, LogOptions, StartAt};
use proptest::prelude::*;
use std::path::Path;

const CAPACITY: u64 = 1 << 16;

/// A closed log of a few dozen messages of every kind, recovered once (so that opening it
/// again does not repair what the test then damages).
fn small_log(dir: &Path) {
    let log = Log::create(dir, &LogOptions::new().segment_capacity(CAPACITY)).unwrap();
    let mut producer = log.producer().unwrap();
    for i in 0..40u32 {
        producer
            .offer(&i.to_le_bytes().repeat(i as usize % 9))
            .unwrap();
        if i % 7 == 0 {
            producer
                .offer_batch(&[&b"a"[..], &i.to_le_bytes(), b""])
                .unwrap();
        }
        if i % 11 == 0 {
            drop(producer.claim(i as usize).unwrap());
        }
    }
    drop(producer);
    drop(log);
    drop(Log::open(dir).unwrap());
}

/// Everything a user may do with a log that may be damaged; only errors are allowed.
fn exercise(dir: &Path) {
    if let Ok(log) = Log::open(dir) {
        let _ = log.verify();
        let _ = log.producers();
        for start in [StartAt::Earliest, StartAt::Latest, StartAt::Position(64)] {
            if let Ok(mut consumer) = log.consumer(start) {
                consumer.verify_checksums(true);
                for _ in 0..10_000 {
                    match consumer.poll() {
                        Ok(Some(message)) => {
                            let _ = message.as_pod::<u64>();
                            let _ = message.read_pod::<u32>();
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
    }
    if let Ok(file) = SegmentFile::open(dir.join(segment_file_name(0))) {
        for frame in file.frames().take(10_000) {
            let Ok(frame) = frame else { break };
            let _ = frame.checksum_ok();
            let _ = frame.records().count();
        }
    }
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random bytes over the meta file's header, with or without a matching checksum.
    #[test]
    fn a_random_meta_header_is_an_error_or_a_log(
        bytes in proptest::collection::vec(any::<u8>(), std::mem::size_of::<MetaHeader>()),
        fix_checksum in any::<bool>(),
    ) {
        let dir = common::tempdir();
        small_log(dir.path());
        let mut header: MetaHeader = bytemuck::pod_read_unaligned(&bytes);
        if fix_checksum {
            header.header_checksum = header.compute_checksum();
        }
        write_at(&dir.path().join(META_FILE_NAME), 0, bytemuck::bytes_of(&header));
        exercise(dir.path());
    }

    /// Random bytes over a segment header, with or without a matching checksum.
    #[test]
    fn a_random_segment_header_is_an_error_or_a_segment(
        bytes in proptest::collection::vec(any::<u8>(), std::mem::size_of::<SegmentHeader>()),
        fix_checksum in any::<bool>(),
    ) {
        let dir = common::tempdir();
        small_log(dir.path());
        let mut header: SegmentHeader = bytemuck::pod_read_unaligned(&bytes);
        if fix_checksum {
            header.header_checksum = header.compute_checksum();
        }
        write_at(&dir.path().join(segment_file_name(0)), 0, bytemuck::bytes_of(&header));
        exercise(dir.path());
    }

    /// Random bytes written over the frames, at random places: corrupt lengths, kinds,
    /// records and payloads in any combination.
    #[test]
    fn random_bytes_over_the_frames_are_errors_or_messages(
        patches in proptest::collection::vec(
            (0u64..4096, proptest::collection::vec(any::<u8>(), 1..48)),
            1..8,
        ),
    ) {
        let dir = common::tempdir();
        small_log(dir.path());
        let segment = dir.path().join(segment_file_name(0));
        for (offset, bytes) in &patches {
            write_at(&segment, SEGMENT_HEADER_LEN + offset, bytes);
        }
        exercise(dir.path());
        // And once more as a fresh log that recovery has not seen: it walks the damage too.
        let dir = common::tempdir();
        let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(CAPACITY)).unwrap();
        let mut producer = log.producer().unwrap();
        for i in 0..40u32 {
            producer.offer(&i.to_le_bytes().repeat(i as usize % 5)).unwrap();
        }
        drop((producer, log));
        let segment = dir.path().join(segment_file_name(0));
        for (offset, bytes) in &patches {
            write_at(&segment, SEGMENT_HEADER_LEN + offset, bytes);
        }
        exercise(dir.path());
    }

    /// Random bytes over the producer table: owners, start times and claim records that
    /// name anything. Stalled consumers and recovery read them.
    #[test]
    fn a_random_producer_table_is_harmless(
        bytes in proptest::collection::vec(any::<u8>(), 256..1024),
        offset in 0u64..4096,
    ) {
        let dir = common::tempdir();
        small_log(dir.path());
        // Make the log look unfinished, so that recovery and consumers consult the table.
        let log = Log::open(dir.path()).unwrap();
        let tail = log.tail();
        drop(log);
        write_at(&dir.path().join(META_FILE_NAME), 128, &(tail + 4096).to_le_bytes());
        write_at(&dir.path().join(META_FILE_NAME), 512 + offset, &bytes);
        exercise(dir.path());
    }
}
