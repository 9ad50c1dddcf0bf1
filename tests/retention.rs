//! Retention: whole old segments deleted by size, count or age, on rotation and on demand;
//! never the tail's segment, one with a live claim in flight, or one a durable cursor still
//! needs (up to the hard limit); a deleted position is an error naming the earliest one; a
//! mapped segment that was deleted stays readable, and its space comes back when unmapped.

mod common;

use logbus::{Error, Log, LogOptions, StartAt};
use std::path::Path;
use std::time::{Duration, Instant};

const SEGMENT: u64 = 1 << 16;
const FILE_LEN: u64 = 4096 + SEGMENT;

fn options() -> LogOptions {
    LogOptions::new().segment_capacity(SEGMENT)
}

/// The base positions of the segment files in `dir`, in order.
fn segments(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// A 1000-byte message that carries its sequence number.
fn message(seq: u64) -> Vec<u8> {
    common::sequenced(seq, 1000)
}

fn seq_of(payload: &[u8]) -> u64 {
    common::sequence_of(payload, message)
}

/// Offers numbered messages from `*seq` on until the tail reaches `tail`; returns the
/// position of each.
fn produce_until(log: &Log, producer: &mut logbus::Producer, seq: &mut u64, tail: u64) -> Vec<u64> {
    let mut positions = Vec::new();
    while log.tail() < tail {
        positions.push(producer.offer(&message(*seq)).unwrap());
        *seq += 1;
    }
    positions
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn retention_by_count_runs_on_rotation_and_on_demand() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &options().retain_segments(3)).unwrap();
    let mut producer = log.producer().unwrap();
    let mut seq = 0;
    let positions = produce_until(&log, &mut producer, &mut seq, 12 * SEGMENT);
    // Dropping the producer waits for its preparer thread, which may still be making (and
    // retiring for) the segment after the tail's, so that the log holds still from here on.
    drop(producer);
    // On rotation: the preparer thread deletes as it makes each new segment.
    wait_for("retention on rotation", Duration::from_secs(5), || {
        segments(dir.path()).len() <= 4
    });
    let mut report = log.apply_retention().unwrap();
    wait_for("three files", Duration::from_secs(5), || {
        report = log.apply_retention().unwrap();
        segments(dir.path()).len() <= 3
    });
    let files = segments(dir.path());
    assert!(report.earliest <= files[0], "{report:?} {files:?}");
    assert_eq!(log.earliest_position().unwrap(), files[0]);
    assert!(files[0] > 0 && files[0] <= log.tail());
    // Never the segment of the tail: that of the last message is there.
    assert!(
        files.contains(&((log.tail() - 1) / SEGMENT * SEGMENT)),
        "{files:?}"
    );

    // The earliest messages still there are whole, and a deleted one is an error naming the
    // earliest position.
    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    let first = seq_of(consumer.poll().unwrap().unwrap().payload());
    assert_eq!(positions[first as usize] / SEGMENT, files[0] / SEGMENT);
    match log.consumer(StartAt::Position(positions[0])) {
        Err(Error::PositionDeleted { position, earliest }) => {
            assert_eq!((position, earliest), (positions[0], files[0]));
        }
        other => panic!("{other:?}"),
    }
    let err = log.consumer(StartAt::Position(positions[3])).unwrap_err();
    assert!(err.to_string().contains(&files[0].to_string()), "{err}");
    assert_eq!(log.verify().unwrap().problems.len(), 0);
}

#[test]
fn retention_by_size_counts_whole_files() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &options().retain_bytes(5 * FILE_LEN)).unwrap();
    assert_eq!(Log::open(dir.path()).unwrap().options(), log.options());
    let mut producer = log.producer().unwrap();
    let mut seq = 0;
    produce_until(&log, &mut producer, &mut seq, 10 * SEGMENT);
    // (The preparer thread may still be making the segment after the tail's, and deleting
    // on rotation: passes on demand until the files settle.)
    wait_for("five files", Duration::from_secs(5), || {
        let report = log.apply_retention().unwrap();
        assert_eq!(report.bytes_freed, report.deleted.len() as u64 * FILE_LEN);
        segments(dir.path()).len() <= 5
    });
    assert!(segments(dir.path()).len() >= 2);
}

#[test]
fn retention_by_age_deletes_segments_whose_newest_message_is_old() {
    let dir = common::tempdir();
    let age = Duration::from_millis(400);
    let log = Log::create(dir.path(), &options().retain_age(age)).unwrap();
    let mut producer = log.producer().unwrap();
    let mut seq = 0;
    produce_until(&log, &mut producer, &mut seq, 4 * SEGMENT + SEGMENT / 4);
    // Once in segment 4, the producer's preparer makes segment 5: its creation
    // time bounds the age of every message in segment 3. Let it be made before the pause.
    wait_for("segment 5", Duration::from_secs(5), || {
        segments(dir.path()).contains(&(5 * SEGMENT))
    });
    std::thread::sleep(age + Duration::from_millis(100));
    let young = produce_until(&log, &mut producer, &mut seq, 7 * SEGMENT + SEGMENT / 4);
    // On rotation (the segments made after the pause) or now: segments 0 to 3 were full
    // before the pause, and segment 4 takes messages from both sides of it.
    let report = log.apply_retention().unwrap();
    assert_eq!(report.earliest, 4 * SEGMENT, "{report:?}");
    assert_eq!(segments(dir.path())[0], 4 * SEGMENT);
    assert!(log.earliest_position().unwrap() <= young[0]);
    let mut consumer = log.consumer(StartAt::Position(young[0])).unwrap();
    assert_eq!(
        seq_of(consumer.poll().unwrap().unwrap().payload()),
        seq - young.len() as u64
    );

    // An idle log: once everything is old, all goes but the tail's segment and what follows.
    std::thread::sleep(age + Duration::from_millis(100));
    log.apply_retention().unwrap();
    assert_eq!(
        log.earliest_position().unwrap(),
        log.tail() / SEGMENT * SEGMENT,
        "{:?}",
        segments(dir.path())
    );
}

#[test]
fn a_durable_cursor_holds_retention_back_up_to_the_hard_limit() {
    let dir = common::tempdir();
    let options = options().retain_segments(2).cursor_hold_limit(8 * SEGMENT);
    let log = Log::create(dir.path(), &options).unwrap();
    let mut billing = log.consumer_named("billing").unwrap();
    let mut producer = log.producer().unwrap();
    let mut seq = 0;
    produce_until(&log, &mut producer, &mut seq, 6 * SEGMENT);

    let report = log.apply_retention().unwrap();
    assert!(report.deleted.is_empty(), "{report:?}");
    assert!(report.held_by_cursors >= 3, "{report:?}");
    assert_eq!(log.earliest_position().unwrap(), 0);

    // Committed into segment 3: segments 0 to 2 may go.
    while billing.position() < 3 * SEGMENT + 100 {
        billing.poll().unwrap().unwrap();
    }
    let committed = billing.commit_position().unwrap();
    let report = log.apply_retention().unwrap();
    // Retention on rotation (the preparer thread) may have deleted some of them first.
    assert_eq!(report.earliest, 3 * SEGMENT, "{report:?}");
    assert_eq!(segments(dir.path()).first(), Some(&(3 * SEGMENT)));
    drop(billing);

    // More than the hard limit behind: the cursor is passed over, and its next holder is
    // told where the log now starts.
    produce_until(&log, &mut producer, &mut seq, committed + 12 * SEGMENT);
    let report = log.apply_retention().unwrap();
    let earliest = report.earliest;
    assert!(earliest > committed, "{report:?}");
    assert!(log.tail() - earliest <= 9 * SEGMENT, "{report:?}");
    let mut billing = log.consumer_named("billing").unwrap();
    assert_eq!(billing.position(), committed);
    // (Retention on rotation may still be finishing: the earliest can only have moved on.)
    let earliest = match billing.poll() {
        Err(Error::PositionDeleted {
            position,
            earliest: e,
        }) => {
            assert_eq!(position, committed);
            assert!(e >= earliest, "{e} < {earliest}");
            e
        }
        other => panic!("{other:?}"),
    };
    billing.seek(StartAt::Position(earliest)).unwrap();
    assert_eq!(billing.poll().unwrap().unwrap().position(), earliest);
    billing.commit_position().unwrap();

    // A removed cursor holds nothing back.
    drop(billing);
    assert!(log.remove_consumer("billing").unwrap());
    log.apply_retention().unwrap();
    assert!(segments(dir.path()).len() <= 2);
}

#[test]
fn a_live_claim_in_flight_keeps_its_segment() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &options().retain_segments(1)).unwrap();
    let mut slow = log.producer().unwrap();
    let claim = slow.claim(100).unwrap();
    let claimed_at = claim.position();
    let mut producer = log.producer().unwrap();
    let mut seq = 0;
    produce_until(&log, &mut producer, &mut seq, 5 * SEGMENT);
    // Dropping it waits for the preparer thread (which may be making the next segment, and
    // would recycle segment 0 into it if it got there only after the commit below).
    drop(producer);
    let report = log.apply_retention().unwrap();
    assert!(report.deleted.is_empty(), "{report:?}");
    assert_eq!(log.earliest_position().unwrap(), 0);
    claim.commit().unwrap();
    let mut consumer = log.consumer(StartAt::Position(claimed_at)).unwrap();
    assert_eq!(consumer.poll().unwrap().unwrap().payload(), &[0u8; 100][..]);
    drop(consumer);
    let report = log.apply_retention().unwrap();
    assert!(report.deleted.contains(&0), "{report:?}");
}

/// The lines of `/proc/self/maps` that map a file of `dir`.
fn mappings_of(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|line| line.contains(&dir))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_consumer_holding_a_deleted_segment_reads_on_and_its_space_comes_back_once_unmapped() {
    let dir = common::tempdir();
    // On a file system of our own, if we may mount one, the space can be measured too.
    let tmpfs = common::Tmpfs::mount(&dir.path().join("mnt"), "16m");
    let log_dir = match &tmpfs {
        Some(mount) => mount.path.join("log"),
        None => dir.path().join("log"),
    };
    let log = Log::create(&log_dir, &options().retain_segments(2)).unwrap();
    let mut producer = log.producer().unwrap();
    let mut seq = 0;
    produce_until(&log, &mut producer, &mut seq, SEGMENT / 4);
    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    assert_eq!(seq_of(consumer.poll().unwrap().unwrap().payload()), 0);
    produce_until(&log, &mut producer, &mut seq, 6 * SEGMENT);
    // Rotation may have deleted them already; this pass deletes whatever is left.
    let report = log.apply_retention().unwrap();
    assert!(report.earliest >= 2 * SEGMENT, "{report:?}");
    let first_segment = log_dir.join("00000000000000000000.seg");
    assert!(!first_segment.exists());
    let mapped = mappings_of(&log_dir);
    assert!(
        mapped
            .iter()
            .any(|m| m.contains("00000000000000000000.seg (deleted)")),
        "{mapped:#?}"
    );
    drop(producer);
    if let Some(mount) = &tmpfs {
        // The file system still holds the deleted segment the consumer has mapped.
        wait_for(
            "the space of a mapped deleted file",
            Duration::from_secs(5),
            || mount.held_by_deleted_files() >= FILE_LEN,
        );
    }

    // The consumer reads the rest of the deleted segment it has mapped, in order...
    let mut expected = 1;
    loop {
        match consumer.poll() {
            Ok(Some(m)) => {
                assert_eq!(seq_of(m.payload()), expected);
                assert!(m.position() < SEGMENT);
                expected += 1;
            }
            // ...and is told at the next segment, which it had not mapped, where the log
            // now starts.
            Err(Error::PositionDeleted { position, earliest }) => {
                // (Rotation may have gone on deleting since the pass above.)
                assert_eq!(position, SEGMENT);
                assert!(earliest >= report.earliest, "{earliest} {report:?}");
                assert!(earliest <= log.earliest_position().unwrap());
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(expected > 50);
    drop(consumer);
    wait_for(
        "the deleted segments to be unmapped",
        Duration::from_secs(5),
        || {
            !mappings_of(&log_dir)
                .iter()
                .any(|m| m.contains("(deleted)"))
        },
    );
    match &tmpfs {
        Some(mount) => wait_for("the space to come back", Duration::from_secs(5), || {
            mount.held_by_deleted_files() < FILE_LEN
        }),
        None => println!("not measuring space: could not mount a tmpfs of our own"),
    }
}

#[test]
fn the_policy_is_kept_in_the_meta_header_and_checked() {
    let dir = common::tempdir();
    let options = options()
        .retain_bytes(10 << 20)
        .retain_segments(7)
        .retain_age(Duration::from_secs(3600))
        .cursor_hold_limit(1 << 30)
        .bounded(32 << 20);
    let log = Log::create(dir.path().join("a"), &options).unwrap();
    assert_eq!(log.options(), options);
    drop(log);
    assert_eq!(Log::open(dir.path().join("a")).unwrap().options(), options);

    // The policy's bytes have a checksum of their own.
    let meta = dir.path().join("a").join("meta.logbus");
    let mut bytes = std::fs::read(&meta).unwrap();
    bytes[64] ^= 1;
    std::fs::write(&meta, &bytes).unwrap();
    let err = Log::open(dir.path().join("a")).unwrap_err();
    assert!(
        matches!(&err, Error::CorruptHeader { detail, .. } if detail.contains("policy")),
        "{err}"
    );

    // Without a policy those bytes are zero, as in logs made before policies existed.
    drop(
        Log::create(
            dir.path().join("b"),
            &LogOptions::new().segment_capacity(SEGMENT),
        )
        .unwrap(),
    );
    let bytes = std::fs::read(dir.path().join("b").join("meta.logbus")).unwrap();
    assert!(bytes[64..128].iter().all(|&b| b == 0));

    // A hold limit with nothing to hold back is a mistake.
    let err = Log::create(
        dir.path().join("c"),
        &LogOptions::new().cursor_hold_limit(1 << 20),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err}");
}

#[test]
fn many_producers_and_rotation_retention_lose_nothing_a_durable_cursor_has_not_committed() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &options().retain_segments(2)).unwrap();
    let mut billing = log.consumer_named("billing").unwrap();
    let total = 4 * 3000u64;
    std::thread::scope(|s| {
        for p in 0..4u64 {
            let log = log.clone();
            s.spawn(move || {
                let mut producer = log.producer().unwrap();
                for i in 0..3000u64 {
                    producer.offer(&message(p * 1_000_000 + i)).unwrap();
                }
            });
        }
        let mut next = [0u64; 4];
        let mut read = 0;
        let mut progress = Instant::now();
        while read < total {
            let n = billing
                .poll_batch(100, |m| {
                    let seq = seq_of(m.payload());
                    let p = (seq / 1_000_000) as usize;
                    assert_eq!(seq % 1_000_000, next[p], "producer {p}");
                    next[p] += 1;
                })
                .unwrap();
            read += n as u64;
            billing.commit_position().unwrap();
            if n > 0 {
                progress = Instant::now();
            }
            assert!(
                progress.elapsed() < Duration::from_secs(20),
                "stuck after {read} of {total} messages"
            );
            if n == 0 {
                std::thread::yield_now();
            }
        }
    });
    log.apply_retention().unwrap();
    assert!(segments(dir.path()).len() <= 3);
}

// ---------------------------------------------------------------------------------------------
impl common::Tmpfs {
    /// Bytes the file system holds beyond what the files still in it take: the space of
    /// deleted files that are still mapped (or open).
    fn held_by_deleted_files(&self) -> u64 {
        let path = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs fills the struct it is given; the path is NUL-terminated.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut stat) }, 0);
        let used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize;
        (used as u64).saturating_sub(allocated_bytes(&self.path))
    }
}

/// Bytes allocated to the files under `dir`, recursively.
fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| match entry.metadata() {
                    Ok(m) if m.is_dir() => allocated_bytes(&entry.path()) + m.blocks() * 512,
                    Ok(m) => m.blocks() * 512,
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A consumer started at the earliest position that has read nothing yet follows retention:
/// if the segment it was to start in is deleted before its first read, it starts at the new
/// earliest position ("earliest" is what it asked for). (A consumer that has read and then
/// reaches a deleted segment gets PositionDeleted: the tests above show it.)
#[test]
fn a_consumer_at_earliest_follows_retention_until_it_has_read() {
    let dir = common::tempdir();
    let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(SEGMENT)).unwrap();
    let mut producer = log.producer().unwrap();
    let mut seq = 0;
    let positions = produce_until(&log, &mut producer, &mut seq, 3 * SEGMENT);
    // Its own handle: segments mapped through one handle stay readable to all its consumers.
    let mut waiting = Log::open(dir.path())
        .unwrap()
        .consumer(StartAt::Earliest)
        .unwrap();
    let mut reading = log.consumer(StartAt::Earliest).unwrap();
    assert_eq!(seq_of(reading.poll().unwrap().unwrap().payload()), 0);
    // What retention does to the oldest segment, by hand.
    std::fs::remove_file(dir.path().join(logbus::format::segment_file_name(0))).unwrap();
    drop(log);

    let first_kept = positions.iter().position(|&p| p >= SEGMENT).unwrap() as u64;
    let message = waiting
        .poll()
        .unwrap()
        .expect("the first message still there");
    assert_eq!(seq_of(message.payload()), first_kept);
    // `reading` has segment 0 mapped: it reads on (a deleted segment stays readable to whoever
    // has it mapped), from message 1.
    assert_eq!(seq_of(reading.poll().unwrap().unwrap().payload()), 1);
}
