//! Recovery on open and `Log::verify`: a torn tail (a frame whose payload or frame word did
//! not reach the disk whole) is cut off and never served, without reusing a position; a claim
//! left by a dead producer is padded; verify names each problem with its position.

mod common;

use common::{env, report, Children};
use logbus::format::{segment_file_name, SEGMENT_HEADER_LEN};
use logbus::{Log, LogOptions, StartAt};
use std::path::Path;
use std::time::Duration;

const CAPACITY: u64 = 1 << 16;

fn options() -> LogOptions {
    LogOptions::new().segment_capacity(CAPACITY)
}

/// Child processes of these tests: re-executions of this binary with a role.
#[test]
#[ignore = "child process entry point; run by other tests"]
fn child_entry() {
    let Some(role) = common::child_role() else {
        return;
    };
    common::child_init();
    assert_eq!(role, "die_mid_claim");
    let log = Log::open(env("LOGBUS_TEST_LOG")).unwrap();
    let mut producer = log.producer().unwrap();
    let claim = producer.claim(40).unwrap();
    report(&[("position", claim.position().to_string())]);
    std::process::exit(0);
}

/// Writes `count` messages "message N" and drops every handle; returns their positions and
/// the tail.
fn write_closed_log(dir: &Path, count: u64) -> (Vec<u64>, u64) {
    let log = Log::create(dir, &options()).unwrap();
    let mut producer = log.producer().unwrap();
    let positions = (0..count)
        .map(|i| producer.offer(format!("message {i}").as_bytes()).unwrap())
        .collect();
    (positions, log.tail())
}

fn segment_path(dir: &Path, base: u64) -> std::path::PathBuf {
    dir.join(segment_file_name(base))
}

/// Changes bytes of a segment file in place, as a crash that wrote some pages and not
/// others would leave them.
fn patch(dir: &Path, position: u64, bytes: &[u8]) {
    let base = position / CAPACITY * CAPACITY;
    let path = segment_path(dir, base);
    let mut data = std::fs::read(&path).unwrap();
    let at = (SEGMENT_HEADER_LEN + position - base) as usize;
    data[at..at + bytes.len()].copy_from_slice(bytes);
    std::fs::write(&path, data).unwrap();
}

fn read_all(log: &Log) -> Vec<(u64, Vec<u8>)> {
    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    consumer.verify_checksums(true);
    let mut out = Vec::new();
    while let Some(message) = consumer.poll().unwrap() {
        out.push((message.position(), message.payload().to_vec()));
    }
    out
}

#[test]
fn a_torn_payload_at_the_tail_is_cut_off_on_open_and_never_served() {
    let dir = common::tempdir();
    let (positions, old_tail) = write_closed_log(dir.path(), 100);
    // The last message's payload lost a byte: its checksum no longer matches.
    let torn = positions[97];
    patch(dir.path(), torn + 24, b"X");

    let log = Log::open(dir.path()).unwrap();
    let recovery = log.recovery().expect("recovery ran: no producer is alive");
    let cut = recovery.cut.as_ref().expect("a torn tail was found");
    assert_eq!(cut.position, torn, "{cut}");
    assert!(cut.detail.contains("checksum"), "{cut}");
    assert_eq!(recovery.frames, 97);

    let read = read_all(&log);
    assert_eq!(
        read.len(),
        97,
        "only the messages before the torn one are served"
    );
    assert_eq!(read.last().unwrap().1, b"message 96");
    // Positions only grow: the log goes on in a fresh segment, past everything torn.
    assert_eq!(log.tail(), CAPACITY);
    assert!(log.tail() > old_tail);
    let next = log.producer().unwrap().offer(b"after recovery").unwrap();
    assert_eq!(next, CAPACITY);
    assert!(
        log.verify().unwrap().is_clean(),
        "{:?}",
        log.verify().unwrap()
    );
    let read = read_all(&log);
    assert_eq!(
        read.last().unwrap(),
        &(CAPACITY, b"after recovery".to_vec())
    );
}

#[test]
fn a_zeroed_frame_word_before_the_tail_is_a_torn_tail_too() {
    let dir = common::tempdir();
    let (positions, _) = write_closed_log(dir.path(), 10);
    patch(dir.path(), positions[8], &[0; 8]);

    let log = Log::open(dir.path()).unwrap();
    let cut = log.recovery().unwrap().cut.clone().expect("cut");
    assert_eq!(cut.position, positions[8]);
    assert_eq!(read_all(&log).len(), 8);
    assert!(log.verify().unwrap().is_clean());
}

#[test]
fn a_clean_log_is_recovered_without_a_cut_and_recovery_starts_where_it_ended() {
    let dir = common::tempdir();
    let (positions, _) = write_closed_log(dir.path(), 20);
    let log = Log::open(dir.path()).unwrap();
    let recovery = log.recovery().unwrap();
    assert_eq!(
        (recovery.from, recovery.frames, &recovery.cut),
        (0, 20, &None)
    );
    assert_eq!(read_all(&log).len(), 20);
    drop(log);
    // Nothing written since: the next open has nothing to check.
    assert!(Log::open(dir.path()).unwrap().recovery().is_none());
    assert_eq!(positions.len(), 20);
}

#[test]
fn a_dead_producers_claim_is_padded_on_open_and_the_messages_after_it_kept() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &options()).unwrap();
    let mut producer = log.producer().unwrap();
    producer.offer(b"before").unwrap();
    let mut children = Children::new();
    children.spawn(
        "dead",
        "die_mid_claim",
        &[("LOGBUS_TEST_LOG", dir.path().display().to_string())],
    );
    let dead: u64 = children
        .wait_all(Duration::from_secs(60))
        .pop()
        .unwrap()
        .result()["position"]
        .parse()
        .unwrap();
    producer.offer(b"after").unwrap();
    drop(producer);
    drop(log);

    let log = Log::open(dir.path()).unwrap();
    let recovery = log.recovery().unwrap();
    assert_eq!(recovery.dead_claims_padded, 1, "{recovery:?}");
    assert_eq!(recovery.cut, None, "{recovery:?}");
    assert!(recovery.dead_slots_freed >= 1, "{recovery:?}");
    assert!(log.producers().is_empty(), "{:?}", log.producers());
    let read: Vec<Vec<u8>> = read_all(&log).into_iter().map(|(_, p)| p).collect();
    assert_eq!(read, [b"before".to_vec(), b"after".to_vec()]);
    assert!(log.verify().unwrap().is_clean());
    assert!(dead > 0);
}

#[test]
fn verify_names_every_problem_with_its_position_and_reads_only() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &options()).unwrap();
    let mut producer = log.producer().unwrap();
    let good = producer.offer(b"good").unwrap();
    let damaged = producer.offer(b"damaged payload").unwrap();
    let set = producer
        .offer_batch(&[&b"one"[..], b"two", b"three"])
        .unwrap();
    let report = log.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!((report.messages, report.frames), (5, 3));
    assert_eq!(report.end, log.tail());

    patch(dir.path(), damaged + 24, b"D");
    let report = log.verify().unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].position, damaged);
    assert!(report.problems[0].detail.contains("checksum mismatch"));
    // Verify reads only: the damaged frame is still there for a consumer to report.
    let mut consumer = log.consumer(StartAt::Position(good)).unwrap();
    consumer.verify_checksums(true);
    assert_eq!(consumer.poll().unwrap().unwrap().payload(), b"good");
    assert!(consumer.poll().is_err());
    assert!(set > damaged);
}

/// A damaged meta file whose tail points far past the segment files (a flipped high byte)
/// must not make recovery create segment files up to it: the tail comes back to the end of
/// the last file, nothing written is lost, and producing goes on from there.
#[test]
fn a_tail_far_past_the_segment_files_creates_no_files_and_comes_back() {
    let dir = common::tempdir();
    let (_, tail) = write_closed_log(dir.path(), 30);
    let meta = dir.path().join(logbus::format::META_FILE_NAME);
    let bogus = tail + (1 << 40);
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&meta).unwrap();
        file.write_all_at(&bogus.to_le_bytes(), 128).unwrap();
    }
    let log = Log::open(dir.path()).unwrap();
    let files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count();
    assert_eq!(files, 1, "recovery created segment files");
    assert_eq!(log.tail(), CAPACITY);
    assert_eq!(read_all(&log).len(), 30);
    assert_eq!(log.producer().unwrap().offer(b"next").unwrap(), CAPACITY);
}

/// A process that dies (or exits) while its preparer thread makes a segment leaves that
/// segment's temporary file, which on a tmpfs holds a whole segment's memory. The next
/// process to use the log removes it — but only once it is old and its process is gone.
#[test]
fn temporary_files_of_processes_that_no_longer_run_are_removed() {
    let dir = common::tempdir();
    drop(Log::create(dir.path(), &LogOptions::new().segment_capacity(CAPACITY)).unwrap());
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    let make = |name: String, old: bool| {
        let path = dir.path().join(name);
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(CAPACITY).unwrap();
        if old {
            file.set_modified(long_ago).unwrap();
        }
        path
    };
    let stale = make(format!(".tmp-{dead}-0-{:020}.seg", CAPACITY), true);
    let recent = make(format!(".tmp-{dead}-1-{:020}.seg", 2 * CAPACITY), false);
    let live = make(
        format!(".tmp-{}-0-{:020}.seg", std::process::id(), 3 * CAPACITY),
        true,
    );

    let log = Log::open(dir.path()).unwrap();
    let mut producer = log.producer().unwrap(); // starts this process's preparer thread
    producer.offer(b"x").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stale.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stale file was never removed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(recent.exists(), "a recent temporary file was removed");
    assert!(
        live.exists(),
        "a running process's temporary file was removed"
    );
}
