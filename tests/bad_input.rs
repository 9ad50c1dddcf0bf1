//! Bad input gets a clear error that names what is wrong — never a panic, never a silent
//! skip: directories that are not logs, damaged or foreign meta and segment files, messages
//! too large, start positions that are not messages, full batches, bad options, and logs
//! created twice or by many processes at once.

mod common;

use common::{env, file_names, report, segment_path, Children};
use logbus::format::{
    MetaHeader, SegmentHeader, FORMAT_VERSION, FRAME_HEADER_LEN, META_FILE_NAME, SEGMENT_HEADER_LEN,
};
use logbus::{Error, Log, LogOptions, StartAt};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CAPACITY: u64 = 1 << 16;

fn options() -> LogOptions {
    LogOptions::new().segment_capacity(CAPACITY)
}

/// Asserts that the error's message contains every one of `needles`.
#[track_caller]
fn assert_says(err: &Error, needles: &[&str]) {
    let text = err.to_string();
    for needle in needles {
        assert!(
            text.contains(needle),
            "the message {text:?} does not mention {needle:?}"
        );
    }
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Writes messages of 100 bytes (the first 8 their index) until the tail is in segment
/// `segments`; returns the position of every message.
fn fill(log: &Log, segments: u64) -> Vec<u64> {
    let mut producer = log.producer().unwrap();
    let mut positions = Vec::new();
    let mut message = [0u8; 100];
    while log.tail() < segments * CAPACITY + 1000 {
        message[..8].copy_from_slice(&(positions.len() as u64).to_le_bytes());
        positions.push(producer.offer(&message).unwrap());
    }
    positions
}

/// A log of 64 KiB segments with messages in segments 0 to 3; every handle on it closed.
/// Returns the directory guard, the log path and the positions of the messages.
/// A log with 3 segments of messages, closed, and opened once more so that recovery has
/// checked it: damage done to it afterwards (bit rot in data already checked) is not seen by
/// recovery, which checks only what was written since it last ran, and is what a consumer
/// meets.
fn closed_log_with_segments() -> (tempfile::TempDir, PathBuf, Vec<u64>) {
    let dir = common::tempdir();
    let path = dir.path().join("log");
    let log = Log::create(&path, &options()).unwrap();
    let positions = fill(&log, 3);
    drop(log);
    let recovered = Log::open(&path).unwrap();
    assert_eq!(recovered.recovery().and_then(|r| r.cut.clone()), None);
    (dir, path, positions)
}

fn read_header<T: bytemuck::Pod>(path: &Path) -> T {
    let bytes = std::fs::read(path).unwrap();
    bytemuck::pod_read_unaligned(&bytes[..std::mem::size_of::<T>()])
}

fn write_header<T: bytemuck::Pod>(path: &Path, header: &T) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytemuck::bytes_of(header), 0).unwrap();
}

fn patch_meta(log: &Path, fix_checksum: bool, patch: impl FnOnce(&mut MetaHeader)) -> PathBuf {
    let path = log.join(META_FILE_NAME);
    let mut header: MetaHeader = read_header(&path);
    patch(&mut header);
    if fix_checksum {
        header.header_checksum = header.compute_checksum();
    }
    write_header(&path, &header);
    path
}

fn patch_segment(path: &Path, fix_checksum: bool, patch: impl FnOnce(&mut SegmentHeader)) {
    let mut header: SegmentHeader = read_header(path);
    patch(&mut header);
    if fix_checksum {
        header.header_checksum = header.compute_checksum();
    }
    write_header(path, &header);
}

/// Overwrites bytes of the log at `position` in its segment file.
fn write_at_position(log: &Path, position: u64, bytes: &[u8]) {
    let path = segment_path(log, position - position % CAPACITY);
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, SEGMENT_HEADER_LEN + position % CAPACITY)
        .unwrap();
}

fn read_at_position(log: &Path, position: u64, len: usize) -> Vec<u8> {
    let path = segment_path(log, position - position % CAPACITY);
    let file = std::fs::File::open(path).unwrap();
    let mut bytes = vec![0; len];
    file.read_exact_at(&mut bytes, SEGMENT_HEADER_LEN + position % CAPACITY)
        .unwrap();
    bytes
}

/// Reads from the start until an error; returns the positions read and the error.
fn read_until_error(log: &Log) -> (Vec<u64>, Error) {
    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    consumer.verify_checksums(true);
    let mut positions = Vec::new();
    loop {
        match consumer.poll() {
            Ok(Some(m)) => positions.push(m.position()),
            Ok(None) => panic!(
                "read to the end ({} messages) without an error; stopped at {}",
                positions.len(),
                consumer.position()
            ),
            Err(e) => {
                // The error stays: no skipping past what cannot be read.
                let position = consumer.position();
                let again = consumer.poll().expect_err("the error is reported again");
                assert_eq!(again.to_string(), e.to_string());
                assert_eq!(consumer.position(), position, "moved past an error");
                assert_poll_batch_reads_the_same(log, &positions, &e);
                return (positions, e);
            }
        }
    }
}

/// `poll_batch`, which takes runs of frames in a loop of its own, delivers the same messages
/// as `poll` before the same error, and stays at it; without checksums verified too, unless
/// the error is a checksum's.
fn assert_poll_batch_reads_the_same(log: &Log, positions: &[u64], error: &Error) {
    let verifying = if matches!(error, Error::ChecksumMismatch { .. }) {
        &[true][..]
    } else {
        &[true, false][..]
    };
    for &verify in verifying {
        let mut consumer = log.consumer(StartAt::Earliest).unwrap();
        consumer.verify_checksums(verify);
        let mut seen = Vec::new();
        let err = loop {
            match consumer.poll_batch(usize::MAX, |m| seen.push(m.position())) {
                Ok(0) => panic!("poll_batch read to the end without the error: {error}"),
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(seen, positions, "poll_batch delivered other messages");
        assert_eq!(err.to_string(), error.to_string());
        let position = consumer.position();
        let again = consumer.poll_batch(usize::MAX, |_| {}).unwrap_err();
        assert_eq!(again.to_string(), error.to_string());
        assert_eq!(
            consumer.position(),
            position,
            "poll_batch moved past an error"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Directories that are not logs.

#[test]
fn a_directory_without_a_log_is_not_a_log() {
    let dir = common::tempdir();
    std::fs::write(dir.path().join("notes.txt"), b"not a log").unwrap();
    let err = Log::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::NotALog { path } if path == dir.path()),
        "{err:?}"
    );
    assert_says(
        &err,
        &[&shown(dir.path()), "not a logbus log", META_FILE_NAME],
    );
    assert_eq!(file_names(dir.path()), ["notes.txt"], "open must not write");
}

#[test]
fn a_path_that_does_not_exist_is_an_io_error_naming_it() {
    let dir = common::tempdir();
    let missing = dir.path().join("no").join("such").join("log");
    let err = Log::open(&missing).unwrap_err();
    match &err {
        Error::Io { path, source } => {
            assert_eq!(path, &missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert_says(&err, &[&shown(&missing)]);
    assert!(!dir.path().join("no").exists(), "open must not create");
}

#[test]
fn a_regular_file_is_not_a_log_directory() {
    let dir = common::tempdir();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"hello").unwrap();
    let err = Log::open(&file).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path == &file),
        "{err:?}"
    );
    assert_says(&err, &[&shown(&file)]);
    let err = Log::open_or_create(&file, &options()).unwrap_err();
    assert!(matches!(&err, Error::Io { .. }), "{err:?}");
    assert_eq!(std::fs::read(&file).unwrap(), b"hello");
}

// ---------------------------------------------------------------------------------------------
// The meta file.

/// Opens a damaged log both ways: `open_or_create` must report the damage too, never make
/// a new log over it. Returns the error of `open`.
fn open_damaged(log: &Path) -> Error {
    let meta = std::fs::read(log.join(META_FILE_NAME)).unwrap();
    let err = Log::open(log).unwrap_err();
    let again = Log::open_or_create(log, &options()).unwrap_err();
    assert_eq!(again.to_string(), err.to_string());
    assert_eq!(
        std::fs::read(log.join(META_FILE_NAME)).unwrap(),
        meta,
        "the damaged meta file was changed"
    );
    err
}

#[test]
fn a_meta_file_with_the_wrong_magic_is_refused() {
    let (_dir, log, _) = closed_log_with_segments();
    let meta = patch_meta(&log, true, |h| h.magic = *b"NOTALOG!");
    let err = open_damaged(&log);
    match &err {
        Error::BadMagic { path, kind, found } => {
            assert_eq!(path, &meta);
            assert_eq!(*kind, "meta");
            assert_eq!(found, b"NOTALOG!");
        }
        other => panic!("expected BadMagic, got {other:?}"),
    }
    assert_says(&err, &[&shown(&meta), "not a logbus meta file"]);
}

#[test]
fn a_meta_file_of_another_version_is_refused() {
    let (_dir, log, _) = closed_log_with_segments();
    let version = FORMAT_VERSION + 1;
    let meta = patch_meta(&log, true, |h| h.version = version);
    let err = open_damaged(&log);
    match &err {
        Error::UnsupportedVersion {
            path,
            found,
            supported,
        } => {
            assert_eq!(path, &meta);
            assert_eq!(*found, version);
            assert_eq!(*supported, FORMAT_VERSION);
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    assert_says(
        &err,
        &[
            &shown(&meta),
            &format!("version {version}"),
            &format!("reads version {FORMAT_VERSION}"),
        ],
    );
}

#[test]
fn a_truncated_meta_file_is_refused() {
    let (_dir, log, _) = closed_log_with_segments();
    let meta = log.join(META_FILE_NAME);
    let full = std::fs::metadata(&meta).unwrap().len();
    let original = std::fs::read(&meta).unwrap();
    for len in [0, 7, 100, 128, full / 2, full - 1] {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&meta)
            .unwrap()
            .set_len(len)
            .unwrap();
        let err = Log::open(&log).unwrap_err();
        match &err {
            Error::Truncated {
                path,
                actual,
                expected,
            } => {
                assert_eq!(path, &meta);
                assert_eq!(*actual, len);
                assert_eq!(*expected, full);
            }
            other => panic!("length {len}: expected Truncated, got {other:?}"),
        }
        assert_says(&err, &[&shown(&meta), "truncated", &format!("{len} bytes")]);
        std::fs::write(&meta, &original).unwrap();
    }
    Log::open(&log).expect("the restored meta file opens again");
}

/// A meta file longer than it should be is refused too, naming the file and its length.
#[test]
fn a_meta_file_that_is_too_long_is_refused() {
    let (_dir, log, _) = closed_log_with_segments();
    let meta = log.join(META_FILE_NAME);
    let full = std::fs::metadata(&meta).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&meta)
        .unwrap()
        .set_len(full + 4096)
        .unwrap();
    let err = Log::open(&log).unwrap_err();
    assert!(
        matches!(&err, Error::WrongLength { path, actual, .. } if path == &meta && *actual == full + 4096),
        "{err:?}"
    );
    assert_says(&err, &[&shown(&meta), &(full + 4096).to_string()]);
}

/// A file longer than its header says is not "truncated": the error should say what is
/// wrong (`WrongLength`), for the meta file and for segment files alike.
#[test]

fn a_file_that_is_too_long_is_not_called_truncated() {
    let (_dir, log, _) = closed_log_with_segments();
    let meta = log.join(META_FILE_NAME);
    let full = std::fs::metadata(&meta).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&meta).unwrap();
    file.set_len(full + 4096).unwrap();
    let err = Log::open(&log).unwrap_err();
    assert!(!err.to_string().contains("truncated"), "{err}");
    file.set_len(full).unwrap();

    let segment = segment_path(&log, CAPACITY);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(SEGMENT_HEADER_LEN + CAPACITY + 8).unwrap();
    let (_, err) = read_until_error(&Log::open(&log).unwrap());
    assert_says(&err, &[&shown(&segment)]);
    assert!(!err.to_string().contains("truncated"), "{err}");
}

#[test]
fn a_meta_file_with_a_corrupt_header_is_refused() {
    let (_dir, log, _) = closed_log_with_segments();
    let meta = log.join(META_FILE_NAME);
    let original = std::fs::read(&meta).unwrap();
    // One flipped bit in the log id: only the header checksum can tell.
    patch_meta(&log, false, |h| h.log_id[3] ^= 0x10);
    let err = open_damaged(&log);
    assert!(
        matches!(&err, Error::CorruptHeader { path, .. } if path == &meta),
        "{err:?}"
    );
    assert_says(&err, &[&shown(&meta), "corrupt header", "checksum"]);

    // Values that cannot be, behind a valid checksum.
    type Patch = fn(&mut MetaHeader);
    let cases: [(&str, Patch); 4] = [
        ("segment capacity", |h| h.segment_capacity = 100_000),
        ("segment capacity", |h| h.segment_capacity = 1 << 40),
        ("unknown option bits", |h| h.log_flags |= 1 << 7),
        ("table sizes", |h| h.producer_slots = 7),
    ];
    for (says, patch) in cases {
        std::fs::write(&meta, &original).unwrap();
        patch_meta(&log, true, patch);
        let err = open_damaged(&log);
        assert!(
            matches!(&err, Error::CorruptHeader { path, .. } if path == &meta),
            "{says}: {err:?}"
        );
        assert_says(&err, &[&shown(&meta), says]);
    }
}

// ---------------------------------------------------------------------------------------------
// Segment files. `Log::open` reads only the meta file; a damaged segment is reported where it
// is first needed: by a consumer that reaches it, and by a producer whose tail lies in it.

/// Damages segment 1 of a closed log with `damage`, then reads from the start: every message
/// of segment 0 arrives, then the error, which must name segment 1's file.
fn reach_damaged_segment(damage: impl FnOnce(&Path, &Path)) -> (Error, PathBuf) {
    let (_dir, log, positions) = closed_log_with_segments();
    let segment = segment_path(&log, CAPACITY);
    damage(&log, &segment);
    let opened = Log::open(&log).expect("open reads only the meta file");
    let (read, err) = read_until_error(&opened);
    let before: Vec<u64> = positions
        .iter()
        .copied()
        .filter(|&p| p < CAPACITY)
        .collect();
    assert_eq!(read, before, "messages before the damaged segment");
    assert_says(&err, &[&shown(&segment)]);
    // A consumer asked to start inside the damaged segment reports it at once.
    let inside = *positions.iter().find(|&&p| p > CAPACITY).unwrap();
    let at_start = opened
        .consumer(StartAt::Position(inside))
        .expect_err("starting in a damaged segment");
    assert_eq!(at_start.to_string(), err.to_string());
    (err, segment)
}

#[test]
fn a_segment_with_the_wrong_magic_is_reported_when_reached() {
    let (err, segment) =
        reach_damaged_segment(|_, seg| patch_segment(seg, true, |h| h.magic = *b"GARBAGE!"));
    match &err {
        Error::BadMagic { path, kind, found } => {
            assert_eq!(path, &segment);
            assert_eq!(*kind, "segment");
            assert_eq!(found, b"GARBAGE!");
        }
        other => panic!("expected BadMagic, got {other:?}"),
    }
    assert_says(&err, &["not a logbus segment file"]);
}

#[test]
fn a_segment_of_another_version_is_reported_when_reached() {
    let version = FORMAT_VERSION + 7;
    let (err, segment) =
        reach_damaged_segment(|_, seg| patch_segment(seg, true, |h| h.version = version));
    match &err {
        Error::UnsupportedVersion {
            path,
            found,
            supported,
        } => {
            assert_eq!(path, &segment);
            assert_eq!(*found, version);
            assert_eq!(*supported, FORMAT_VERSION);
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    assert_says(&err, &[&format!("version {version}")]);
}

#[test]
fn a_truncated_segment_is_reported_when_reached() {
    let full = SEGMENT_HEADER_LEN + CAPACITY;
    for len in [0, 10, SEGMENT_HEADER_LEN, full / 2, full - 8] {
        let (err, segment) = reach_damaged_segment(|_, seg| {
            let file = std::fs::OpenOptions::new().write(true).open(seg).unwrap();
            file.set_len(len).unwrap();
        });
        match &err {
            Error::Truncated { path, actual, .. } => {
                assert_eq!(path, &segment);
                assert_eq!(*actual, len);
            }
            other => panic!("length {len}: expected Truncated, got {other:?}"),
        }
        assert_says(&err, &["truncated", &format!("{len} bytes")]);
    }
}

#[test]
fn a_segment_with_a_corrupt_header_is_reported_when_reached() {
    let (err, segment) =
        reach_damaged_segment(|_, seg| patch_segment(seg, false, |h| h.created_ns ^= 1 << 20));
    assert!(
        matches!(&err, Error::CorruptHeader { path, .. } if path == &segment),
        "{err:?}"
    );
    assert_says(&err, &["corrupt header", "checksum"]);
}

#[test]
fn a_segment_of_another_log_is_reported_when_reached() {
    let other_dir = common::tempdir();
    let other = Log::create(other_dir.path(), &options()).unwrap();
    fill(&other, 2);
    drop(other);
    let (err, segment) = reach_damaged_segment(|_, seg| {
        std::fs::copy(segment_path(other_dir.path(), CAPACITY), seg).unwrap();
    });
    assert!(
        matches!(&err, Error::CorruptHeader { path, .. } if path == &segment),
        "{err:?}"
    );
    assert_says(&err, &["another log"]);
}

#[test]
fn a_segment_under_another_segments_name_is_reported_when_reached() {
    let (err, segment) = reach_damaged_segment(|log, seg| {
        std::fs::copy(segment_path(log, 2 * CAPACITY), seg).unwrap();
    });
    assert!(
        matches!(&err, Error::CorruptHeader { path, .. } if path == &segment),
        "{err:?}"
    );
    assert_says(&err, &["does not match its file name"]);
}

#[test]
fn a_producer_whose_tail_segment_is_damaged_is_refused() {
    let (_dir, log, _) = closed_log_with_segments();
    let tail = Log::open(&log).unwrap().tail();
    let segment = segment_path(&log, tail - tail % CAPACITY);
    patch_segment(&segment, true, |h| h.magic = *b"GARBAGE!");
    let opened = Log::open(&log).unwrap();
    let err = opened.producer().unwrap_err();
    assert!(
        matches!(&err, Error::BadMagic { path, kind: "segment", .. } if path == &segment),
        "{err:?}"
    );
    assert_says(&err, &[&shown(&segment)]);
    assert_eq!(opened.tail(), tail, "a refused producer claimed nothing");
}

/// A segment missing from the middle of the log (deleted by hand, lost) must be an error for
/// a consumer that reaches it, not an endless wait with later messages never delivered.
#[test]

fn a_missing_middle_segment_is_an_error_not_a_stall() {
    let (_dir, log, positions) = closed_log_with_segments();
    std::fs::remove_file(segment_path(&log, CAPACITY)).unwrap();
    let opened = Log::open(&log).unwrap();
    let mut consumer = opened.consumer(StartAt::Earliest).unwrap();
    let mut read = 0;
    let result = loop {
        match consumer.poll() {
            Ok(Some(_)) => read += 1,
            other => break other.map(|m| m.map(|m| m.position())),
        }
    };
    assert_eq!(read, positions.iter().filter(|&&p| p < CAPACITY).count());
    let err = result.expect_err(&format!(
        "stopped silently at {} although the log goes on to {}",
        consumer.position(),
        opened.tail()
    ));
    assert_says(&err, &[&CAPACITY.to_string()]);
}

// ---------------------------------------------------------------------------------------------
// Frames.

#[test]
fn a_damaged_payload_is_a_checksum_mismatch_at_its_position() {
    let (_dir, log, positions) = closed_log_with_segments();
    let victim = positions[10];
    let byte = read_at_position(&log, victim + FRAME_HEADER_LEN + 50, 1)[0];
    write_at_position(&log, victim + FRAME_HEADER_LEN + 50, &[byte ^ 0xff]);
    let opened = Log::open(&log).unwrap();
    let (read, err) = read_until_error(&opened);
    assert_eq!(read, positions[..10]);
    assert!(
        matches!(&err, Error::ChecksumMismatch { position, .. } if *position == victim),
        "{err:?}"
    );
    assert_says(&err, &[&format!("position {victim}"), "checksum mismatch"]);
}

#[test]
fn a_frame_with_an_impossible_length_is_a_corrupt_frame() {
    let (_dir, log, positions) = closed_log_with_segments();
    let victim = positions[5];
    write_at_position(&log, victim, &(CAPACITY as i32).to_le_bytes());
    let (read, err) = read_until_error(&Log::open(&log).unwrap());
    assert_eq!(read, positions[..5]);
    assert!(
        matches!(&err, Error::CorruptFrame { position, .. } if *position == victim),
        "{err:?}"
    );
    assert_says(&err, &[&format!("position {victim}")]);
}

#[test]
fn a_data_frame_shorter_than_its_header_is_a_corrupt_frame() {
    // The readers' fast path takes a frame's payload length as its length less the header's:
    // a shorter frame must be refused before that, not read as a huge payload.
    for length in [1i32, 8, 16, 23] {
        let (_dir, log, positions) = closed_log_with_segments();
        let victim = positions[5];
        write_at_position(&log, victim, &length.to_le_bytes());
        let (read, err) = read_until_error(&Log::open(&log).unwrap());
        assert_eq!(read, positions[..5]);
        assert!(
            matches!(&err, Error::CorruptFrame { position, .. } if *position == victim),
            "{err:?}"
        );
        assert_says(
            &err,
            &[&format!("position {victim}"), &format!("length {length}")],
        );
    }
}

#[test]
fn a_frame_of_an_unknown_kind_is_a_corrupt_frame() {
    let (_dir, log, positions) = closed_log_with_segments();
    let victim = positions[7];
    write_at_position(&log, victim + 4, &[0x7f]);
    let (read, err) = read_until_error(&Log::open(&log).unwrap());
    assert_eq!(read, positions[..7]);
    assert!(
        matches!(&err, Error::CorruptFrame { position, .. } if *position == victim),
        "{err:?}"
    );
    assert_says(&err, &[&format!("position {victim}"), "kind"]);
}

#[test]
fn a_message_set_whose_records_overrun_it_is_a_corrupt_frame() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &options().checksums(false)).unwrap();
    let mut producer = log.producer().unwrap();
    producer.offer(b"before").unwrap();
    let set = producer
        .offer_batch(&[&b"one"[..], &b"two"[..], &b"three"[..]])
        .unwrap();
    drop((producer, log));
    // Recovery checks the set once; the damage comes after, where only consumers meet it.
    assert_eq!(Log::open(dir.path()).unwrap().recovery().unwrap().cut, None);
    // The second record's length prefix, at payload offset 8, now claims 1000 bytes.
    write_at_position(
        dir.path(),
        set + FRAME_HEADER_LEN + 8,
        &1000u32.to_le_bytes(),
    );
    let (read, err) = read_until_error(&Log::open(dir.path()).unwrap());
    assert_eq!(read, [0]);
    assert!(
        matches!(&err, Error::CorruptFrame { position, .. } if *position == set),
        "{err:?}"
    );
    assert_says(&err, &[&format!("position {set}"), "1000"]);
}

// ---------------------------------------------------------------------------------------------
// Messages too large, full batches.

#[test]
fn a_message_too_large_is_refused_by_every_way_in_and_the_producer_goes_on() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &options()).unwrap();
    let mut producer = log.producer().unwrap();
    let max = log.max_payload_len();
    assert_eq!(max, producer.max_payload_len());
    assert_eq!(max as u64, CAPACITY / 8 - FRAME_HEADER_LEN);
    let first = producer
        .offer(&vec![1u8; max])
        .expect("the largest message fits");
    let tail = log.tail();

    let check = |err: Error, len: usize| {
        match &err {
            Error::MessageTooLarge {
                len: l,
                max: m,
                segment_capacity,
            } => {
                assert_eq!((*l, *m, *segment_capacity), (len, max, CAPACITY));
            }
            other => panic!("{len} bytes: expected MessageTooLarge, got {other:?}"),
        }
        assert_says(&err, &[&len.to_string(), &max.to_string()]);
    };
    let big = vec![2u8; max + 1];
    check(producer.offer(&big).unwrap_err(), max + 1);
    check(producer.claim(max + 1).err().unwrap(), max + 1);
    check(producer.batch(max + 1).err().unwrap(), max + 1);
    check(producer.claim(usize::MAX).err().unwrap(), usize::MAX);
    check(producer.batch(usize::MAX).err().unwrap(), usize::MAX);
    check(producer.offer_pod(&[3u8; 9000]).unwrap_err(), 9000);
    // Records that are small on their own but too many for one message set.
    let records = vec![[4u8; 1000]; 9];
    check(producer.offer_batch(&records).unwrap_err(), 9 * 1004);
    assert_eq!(log.tail(), tail, "a refused message claims nothing");

    // The producer goes on, and consumers see only what was accepted.
    let second = producer.offer(b"after").unwrap();
    let mut claim = producer.claim(5).unwrap();
    claim.copy_from_slice(b"claim");
    claim.commit().unwrap();
    producer.offer_batch(&records[..8]).unwrap();
    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    consumer.verify_checksums(true);
    let mut seen = Vec::new();
    consumer
        .poll_batch(usize::MAX, |m| seen.push((m.position(), m.payload().len())))
        .unwrap();
    assert_eq!(seen.len(), 11);
    assert_eq!(seen[0], (first, max));
    assert_eq!(seen[1], (second, 5));
    assert_eq!(seen[2].1, 5);
    assert!(seen[3..].iter().all(|&(_, len)| len == 1000));
}

#[test]
fn pushing_past_a_batch_capacity_is_batch_full_and_the_batch_still_commits() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &options()).unwrap();
    let mut producer = log.producer().unwrap();
    let mut batch = producer.batch(16).unwrap();
    batch.push(b"12345678").unwrap(); // 4 + 8 = 12 bytes
    assert_eq!(batch.remaining(), 4);
    let err = batch.push(b"x").unwrap_err();
    match &err {
        Error::BatchFull {
            len,
            needed,
            remaining,
        } => assert_eq!((*len, *needed, *remaining), (1, 5, 4)),
        other => panic!("expected BatchFull, got {other:?}"),
    }
    assert_says(&err, &["batch full", "1-byte", "5 bytes", "4 are left"]);
    let err = batch.push(&[0u8; 1000]).unwrap_err();
    assert!(matches!(err, Error::BatchFull { len: 1000, .. }), "{err:?}");
    // Written in place: the same check, and the writer is not called when it does not fit.
    let err = batch
        .push_with(5, |_| panic!("called for a record that does not fit"))
        .unwrap_err();
    assert!(matches!(err, Error::BatchFull { len: 5, .. }), "{err:?}");
    batch
        .push(b"")
        .expect("an empty record needs only its length");
    assert_eq!(batch.remaining(), 0);
    let err = batch.push(b"").unwrap_err();
    assert!(
        matches!(
            err,
            Error::BatchFull {
                needed: 4,
                remaining: 0,
                ..
            }
        ),
        "{err:?}"
    );
    batch.commit().unwrap();

    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    consumer.verify_checksums(true);
    let mut seen: Vec<Vec<u8>> = Vec::new();
    consumer
        .poll_batch(10, |m| seen.push(m.payload().to_vec()))
        .unwrap();
    assert_eq!(seen, [b"12345678".to_vec(), Vec::new()]);
}

// ---------------------------------------------------------------------------------------------
// Start positions.

struct Layout {
    /// A 40-byte data message.
    data: u64,
    /// A message set of three records, and the positions of the records.
    set: u64,
    records: [u64; 3],
    /// A message after the set, and an aborted claim after that.
    after: u64,
    aborted: u64,
    last: u64,
}

/// Writes the layout in the current segment; payloads are their own descriptions.
fn write_layout(producer: &mut logbus::Producer) -> Layout {
    let data = producer.offer(&[b'd'; 40]).unwrap();
    let set = producer
        .offer_batch(&[&b"r0"[..], &b"record one"[..], &b"r2"[..]])
        .unwrap();
    // Records at payload offsets 0, 8 (4 + 2 aligned to 4) and 24 (8 + 4 + 10 aligned).
    let payload = set + FRAME_HEADER_LEN;
    let records = [payload, payload + 8, payload + 24];
    let after = producer.offer(b"after").unwrap();
    let aborted = producer.claim(64).unwrap().position();
    let last = producer.offer(b"last").unwrap();
    Layout {
        data,
        set,
        records,
        after,
        aborted,
        last,
    }
}

fn payloads_from(log: &Log, start: u64) -> Vec<Vec<u8>> {
    let mut consumer = log
        .consumer(StartAt::Position(start))
        .unwrap_or_else(|e| panic!("position {start} refused: {e}"));
    let mut seen = Vec::new();
    consumer
        .poll_batch(usize::MAX, |m| seen.push(m.payload().to_vec()))
        .unwrap();
    seen
}

#[track_caller]
fn assert_invalid(log: &Log, position: u64, says: &str) {
    let err = log.consumer(StartAt::Position(position)).unwrap_err();
    match &err {
        Error::InvalidPosition { position: p, .. } => assert_eq!(*p, position),
        other => panic!("position {position}: expected InvalidPosition, got {other:?}"),
    }
    assert_says(
        &err,
        &[
            &format!("position {position} is not the start of a message"),
            says,
        ],
    );
}

#[test]
fn start_positions_must_be_messages() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &options()).unwrap();
    let mut producer = log.producer().unwrap();
    let mut layouts = vec![write_layout(&mut producer)];
    fill(&log, 2);
    layouts.push(write_layout(&mut producer));
    assert!(
        layouts[1].data > 2 * CAPACITY,
        "the second layout is in segment 2"
    );

    for l in &layouts {
        let all = payloads_from(&log, l.data);
        let from_set = &all[1..];
        assert_eq!(all[0], [b'd'; 40]);
        // Frame starts and record starts are accepted, and reading resumes right there.
        assert_eq!(payloads_from(&log, l.set), from_set);
        assert_eq!(payloads_from(&log, l.records[0]), from_set);
        assert_eq!(payloads_from(&log, l.records[1]), &from_set[1..]);
        assert_eq!(payloads_from(&log, l.records[2]), &from_set[2..]);
        assert_eq!(from_set[1], b"record one");
        assert_eq!(payloads_from(&log, l.after)[0], b"after");
        assert_eq!(payloads_from(&log, l.aborted)[0], b"last");
        assert_eq!(payloads_from(&log, l.last)[0], b"last");
        let mut consumer = log.consumer(StartAt::Position(l.records[1])).unwrap();
        assert_eq!(consumer.position(), l.records[1]);
        assert_eq!(consumer.poll().unwrap().unwrap().position(), l.records[1]);

        // Anything else is refused, naming the position.
        for p in [l.data + 1, l.data + 2, l.data + 3, l.set + 5] {
            assert_invalid(&log, p, "multiples of 4");
        }
        for p in [l.data + 4, l.data + 8, l.data + 24, l.data + 40] {
            assert_invalid(
                &log,
                p,
                &format!("inside the frame that starts at {}", l.data),
            );
        }
        for p in [
            l.set + 8,
            l.records[0] + 4,
            l.records[1] + 4,
            l.records[2] + 4,
        ] {
            assert_invalid(&log, p, &format!("{}", l.set));
        }
        assert_invalid(&log, l.aborted + 8, &format!("{}", l.aborted));
    }

    // The tail is a valid start (the next message); beyond it is not.
    let tail = log.tail();
    let mut at_tail = log.consumer(StartAt::Position(tail)).unwrap();
    assert!(at_tail.poll().unwrap().is_none());
    for p in [tail + 8, tail + CAPACITY, u64::MAX - 7] {
        assert_invalid(&log, p, "beyond the tail");
    }
    producer.offer(b"new").unwrap();
    assert_eq!(at_tail.poll().unwrap().unwrap().payload(), b"new");
    // Segment starts are frame starts: reading from one gives the first message in it.
    let mut first_in_segment_1 = None;
    log.consumer(StartAt::Earliest)
        .unwrap()
        .poll_batch(usize::MAX, |m| {
            if m.position() >= CAPACITY && first_in_segment_1.is_none() {
                first_in_segment_1 = Some(m.position());
            }
        })
        .unwrap();
    let mut from_segment_1 = log.consumer(StartAt::Position(CAPACITY)).unwrap();
    assert_eq!(
        Some(from_segment_1.poll().unwrap().unwrap().position()),
        first_in_segment_1
    );
}

#[test]
fn a_position_in_a_deleted_segment_is_position_deleted() {
    let (_dir, log, positions) = closed_log_with_segments();
    let opened = Log::open(&log).unwrap();
    // Made before the deletion; they have not mapped segment 0 yet (a segment's start needs
    // no walk to check).
    let mut early = opened.consumer(StartAt::Position(0)).unwrap();
    let mut earliest_before = opened.consumer(StartAt::Earliest).unwrap();
    // Made through another handle, which maps segment 0 to check the position.
    let other_handle = Log::open(&log).unwrap();
    let mut mapped = other_handle
        .consumer(StartAt::Position(positions[3]))
        .unwrap();
    std::fs::remove_file(segment_path(&log, 0)).unwrap();
    assert_eq!(opened.earliest_position().unwrap(), CAPACITY);

    for position in [0, positions[3], CAPACITY - 8] {
        let err = opened.consumer(StartAt::Position(position)).unwrap_err();
        assert!(
            matches!(err, Error::PositionDeleted { position: p, earliest } if p == position && earliest == CAPACITY),
            "{err:?}"
        );
        assert_says(
            &err,
            &[
                &format!("position {position}"),
                &format!("earliest position is {CAPACITY}"),
            ],
        );
    }
    // The consumer made at a position before the deletion learns it when it reads.
    let err = early.poll().unwrap_err();
    assert!(
        matches!(err, Error::PositionDeleted { position: 0, earliest } if earliest == CAPACITY),
        "{err:?}"
    );
    assert_says(&err, &["position 0", &CAPACITY.to_string()]);
    // One made at Earliest that has read nothing asked for the earliest there is: it moves on.
    let first_retained = *positions.iter().find(|&&p| p >= CAPACITY).unwrap();
    assert_eq!(
        earliest_before.poll().unwrap().unwrap().position(),
        first_retained
    );
    // One that holds the mapping goes on reading it: the mapping outlives the file.
    assert_eq!(mapped.poll().unwrap().unwrap().position(), positions[3]);
    // Earliest now means the first retained message.
    let mut consumer = opened.consumer(StartAt::Earliest).unwrap();
    let first = consumer.poll().unwrap().unwrap().position();
    assert_eq!(
        first,
        *positions.iter().find(|&&p| p >= CAPACITY).unwrap(),
        "Earliest after the deletion"
    );
}

// ---------------------------------------------------------------------------------------------
// Options and creation.

#[test]
fn bad_options_are_refused_before_anything_is_made() {
    let dir = common::tempdir();
    let path = dir.path().join("log");
    for capacity in [0, 100_000, 3 << 16, 1 << 15, 1 << 31, 1 << 40, u64::MAX] {
        let options = LogOptions::new().segment_capacity(capacity);
        for err in [
            Log::create(&path, &options).unwrap_err(),
            Log::open_or_create(&path, &options).unwrap_err(),
        ] {
            assert!(
                matches!(err, Error::InvalidOption(_)),
                "{capacity}: {err:?}"
            );
            assert_says(&err, &["invalid option", &capacity.to_string()]);
        }
        assert!(!path.exists(), "capacity {capacity}: a directory was made");
    }
    for mode in [0o400, 0o1600, 0o200] {
        let err = Log::create(&path, &LogOptions::new().file_mode(mode)).unwrap_err();
        assert!(matches!(err, Error::InvalidOption(_)), "{mode:o}: {err:?}");
        assert_says(&err, &[&format!("{mode:o}")]);
        assert!(!path.exists());
    }
    // The smallest capacity and the next power of two are fine (the largest, 1 GiB, is not
    // tried: it would reserve a gigabyte of memory).
    for capacity in [1 << 16, 1 << 17] {
        let path = dir.path().join(format!("ok-{capacity}"));
        let log = Log::create(&path, &LogOptions::new().segment_capacity(capacity)).unwrap();
        assert_eq!(log.options().get_segment_capacity(), capacity);
    }
}

#[test]
fn creating_a_log_where_one_exists_is_already_exists() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &options()).unwrap();
    let id = log.id();
    log.producer().unwrap().offer(b"kept").unwrap();
    for other in [options(), LogOptions::new().segment_capacity(1 << 20)] {
        let err = Log::create(dir.path(), &other).unwrap_err();
        assert!(
            matches!(&err, Error::AlreadyExists { path } if path == dir.path()),
            "{err:?}"
        );
        assert_says(&err, &[&shown(dir.path()), "already exists"]);
    }
    drop(log);
    let reopened = Log::open(dir.path()).unwrap();
    assert_eq!(reopened.id(), id);
    assert_eq!(reopened.options().get_segment_capacity(), CAPACITY);
    let mut consumer = reopened.consumer(StartAt::Earliest).unwrap();
    assert_eq!(consumer.poll().unwrap().unwrap().payload(), b"kept");
    assert!(
        file_names(dir.path())
            .iter()
            .all(|n| !n.starts_with(".tmp")),
        "a refused create left a temporary file"
    );
}

/// `Log::create` in a directory that holds segment files but no meta file (another log's
/// leftovers) must fail without changing anything: a meta file left behind would make the
/// directory open as an empty log whose consumers silently see nothing.
#[test]

fn creating_a_log_over_stray_segment_files_changes_nothing() {
    let (_dir, log, _) = closed_log_with_segments();
    std::fs::remove_file(log.join(META_FILE_NAME)).unwrap();
    let before = file_names(&log);
    let err = Log::create(&log, &options()).unwrap_err();
    assert_says(&err, &[&shown(&segment_path(&log, 0))]);
    assert_eq!(
        file_names(&log),
        before,
        "a failed create left files behind"
    );
    let err = Log::open(&log).unwrap_err();
    assert!(matches!(err, Error::NotALog { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Many processes creating one log at once.

#[test]
#[ignore = "child process entry point; run by other tests"]
fn child_entry() {
    let Some(role) = common::child_role() else {
        return;
    };
    common::child_init();
    assert_eq!(role, "open_or_create");
    let index: u64 = common::env_parse("LOGBUS_TEST_INDEX");
    let sync = PathBuf::from(env("LOGBUS_TEST_SYNC"));
    common::rendezvous(&sync, &format!("child{index}"));
    let log = Log::open_or_create(env("LOGBUS_TEST_LOG"), &options()).expect("open_or_create");
    let position = log.producer().unwrap().offer_pod(&index).unwrap();
    let id: String = log.id().iter().map(|b| format!("{b:02x}")).collect();
    report(&[("id", id), ("position", position.to_string())]);
}

#[test]
fn processes_racing_to_open_or_create_share_one_log() {
    let processes = 4u64;
    for round in 0..3 {
        let root = common::tempdir();
        // The directory does not exist yet: its creation races too.
        let log_dir = root.path().join("a").join("log");
        let mut children = Children::new();
        let names: Vec<String> = (0..processes).map(|i| format!("child{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            children.spawn(
                name,
                "open_or_create",
                &[
                    ("LOGBUS_TEST_INDEX", i.to_string()),
                    ("LOGBUS_TEST_LOG", shown(&log_dir)),
                    ("LOGBUS_TEST_SYNC", shown(root.path())),
                ],
            );
        }
        children.start_together(root.path(), &names, Duration::from_secs(60));
        let results: Vec<_> = children
            .wait_all(Duration::from_secs(60))
            .iter()
            .map(|f| f.result())
            .collect();
        let log = Log::open(&log_dir).unwrap();
        let id: String = log.id().iter().map(|b| format!("{b:02x}")).collect();
        for r in &results {
            assert_eq!(
                r["id"], id,
                "round {round}: a process ended up on another log"
            );
        }
        let mut seen = Vec::new();
        log.consumer(StartAt::Earliest)
            .unwrap()
            .poll_batch(usize::MAX, |m| {
                seen.push(m.read_pod::<u64>().unwrap());
            })
            .unwrap();
        seen.sort_unstable();
        assert_eq!(seen, (0..processes).collect::<Vec<_>>(), "round {round}");
        assert_eq!(
            file_names(&log_dir),
            [
                logbus::format::segment_file_name(0),
                META_FILE_NAME.to_string()
            ],
            "round {round}: stray files"
        );
    }
}
