//! Recycling: on a tmpfs, a log with retention turns the segment files retention retires into
//! its new segments (same inode, zeroed, new header), so that it stops growing into fresh
//! memory; and never one that any process still reads, which keeps every byte it had.

mod common;

use logbus::{Error, Log, LogOptions, StartAt};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;

const SEGMENT: u64 = 1 << 16;

/// A 500-byte message that carries its sequence number in every byte pattern.
fn message(seq: u64) -> Vec<u8> {
    common::sequenced(seq, 500)
}

fn seq_of(payload: &[u8]) -> u64 {
    common::sequence_of(payload, message)
}

#[test]
#[ignore = "child process entry point; run by other tests"]
fn child_entry() {
    let Some(role) = common::child_role() else {
        return;
    };
    common::child_init();
    match role.as_str() {
        "slow_reader" => slow_reader_child(),
        "producer" => producer_child(),
        "cursor_reader" => cursor_reader_child(),
        other => panic!("unknown child role {other}"),
    }
}

fn producer_child() {
    let log = Log::open(common::env("LOGBUS_TEST_LOG")).expect("open the log");
    let id: u32 = common::env_parse("LOGBUS_TEST_ID");
    let count: u64 = common::env_parse("LOGBUS_TEST_COUNT");
    let model = common::Model::new(log.max_payload_len());
    common::rendezvous(
        Path::new(&common::env("LOGBUS_TEST_SYNC")),
        &format!("producer{id}"),
    );
    common::produce(&log, &model, id, count);
    common::report(&[("done", "1".into())]);
}

/// Reads every message through a durable cursor, which holds retention (and so recycling)
/// back until this reader has committed past a segment.
fn cursor_reader_child() {
    let log = Log::open(common::env("LOGBUS_TEST_LOG")).expect("open the log");
    let id: u32 = common::env_parse("LOGBUS_TEST_ID");
    let count: u64 = common::env_parse("LOGBUS_TEST_COUNT");
    let model = common::Model::new(log.max_payload_len());
    let mut consumer = log
        .consumer_named(&format!("reader{id}"))
        .expect("a durable consumer");
    consumer.verify_checksums(true);
    common::rendezvous(
        Path::new(&common::env("LOGBUS_TEST_SYNC")),
        &format!("reader{id}"),
    );
    let mut tracker = common::Tracker::new(model, &[(0, count), (1, count)]);
    let started = std::time::Instant::now();
    while !tracker.done() {
        let mut failure = None;
        let n = consumer
            .poll_batch(64, |m| {
                if failure.is_none() {
                    failure = tracker.observe(&m).err();
                }
            })
            .unwrap_or_else(|e| panic!("poll_batch at {}: {e}", consumer.position()));
        if let Some(e) = failure {
            panic!("{e} ({})", tracker.progress());
        }
        if n == 0 {
            std::thread::yield_now();
        } else {
            consumer.commit_position().expect("commit the cursor");
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "stalled: {}",
            tracker.progress()
        );
    }
    common::report(&[
        ("hash", format!("{:016x}", tracker.hash)),
        ("messages", tracker.messages.to_string()),
    ]);
}

fn slow_reader_child() {
    let log = Log::open(common::env("LOGBUS_TEST_LOG")).expect("open the log");
    let mut consumer = log.consumer(StartAt::Earliest).expect("a consumer");
    let first = seq_of(consumer.poll().expect("poll").expect("a message").payload());
    assert_eq!(first, 0);
    println!("ready");
    let mut go = String::new();
    std::io::stdin()
        .read_line(&mut go)
        .expect("the parent's go");
    // On through every segment this process has mapped (segment 0, and the next one if its
    // preparer mapped it ahead), then told where the log went on without it.
    let mut expected = 1;
    let deleted_at = loop {
        match consumer.poll() {
            Ok(Some(m)) => {
                assert_eq!(seq_of(m.payload()), expected, "at {}", m.position());
                expected += 1;
            }
            Err(Error::PositionDeleted { position, .. }) => break position,
            other => panic!("{other:?}"),
        }
    };
    println!("read {expected} up to {deleted_at}");
}

#[test]
fn retired_segments_become_new_ones_and_every_message_reads_back_intact() {
    let Some(dir) = common::tmpfs_tempdir() else {
        return;
    };
    let options = LogOptions::new()
        .segment_capacity(SEGMENT)
        .retain_segments(3);
    let log = Log::create(dir.path(), &options).unwrap();
    let mut producer = log.producer().unwrap();
    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    let mut inodes = HashMap::new();
    let (mut sent, mut read) = (0, 0);
    while log.tail() < 40 * SEGMENT {
        // A few messages ahead, then read them all back: the consumer follows closely, so
        // that it never holds a segment retention wants, and reads every new segment from
        // its start, where a recycled file's old frames would show if they were left.
        for _ in 0..20 {
            producer.offer(&message(sent)).unwrap();
            sent += 1;
        }
        while let Some(m) = consumer.poll().unwrap() {
            assert_eq!(seq_of(m.payload()), read, "at {}", m.position());
            read += 1;
        }
        common::note_inodes(dir.path(), &mut inodes);
    }
    assert_eq!(read, sent);
    let recycled = common::recycled(&inodes);
    // Each segment from the fourth on could be a recycled one; the preparer makes them
    // ahead, so a few are always made while the reader still holds the one they would reuse.
    assert!(
        recycled.len() >= 10,
        "only {} of 40 segments were recycled files: {recycled:?}",
        recycled.len()
    );
    // Retention still keeps its promise: at most three segments (and the one in the making).
    let files = common::file_names(dir.path())
        .into_iter()
        .filter(|name| name.ends_with(".seg"))
        .count();
    assert!(files <= 4, "{files} segment files");
    // A log opened afresh reads what is retained, in order.
    drop((producer, consumer));
    let reopened = Log::open(dir.path()).unwrap();
    let mut consumer = reopened.consumer(StartAt::Earliest).unwrap();
    let mut previous = None;
    while let Some(m) = consumer.poll().unwrap() {
        let seq = seq_of(m.payload());
        assert!(previous.is_none_or(|p| p + 1 == seq));
        previous = Some(seq);
    }
    assert_eq!(previous, Some(sent - 1));
}

#[test]
fn a_segment_another_process_reads_is_deleted_not_recycled_and_reads_on_intact() {
    let Some(dir) = common::tmpfs_tempdir() else {
        return;
    };
    let options = LogOptions::new()
        .segment_capacity(SEGMENT)
        .retain_segments(2);
    let log = Log::create(dir.path(), &options).unwrap();
    let mut producer = log.producer().unwrap();
    let mut sent = 0;
    while log.tail() < SEGMENT / 4 {
        producer.offer(&message(sent)).unwrap();
        sent += 1;
    }
    let first_inode = std::fs::metadata(common::segment_path(dir.path(), 0))
        .unwrap()
        .ino();
    let mut child = common::child_command("slow_reader")
        .env("LOGBUS_TEST_LOG", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|line| line.unwrap().ends_with("ready")),
        "the reader never started"
    );

    // The reader has segment 0 mapped and is one message into it; fill it and go on far past.
    let mut in_first = 0;
    let mut inodes = HashMap::new();
    while log.tail() < 12 * SEGMENT {
        let position = producer.offer(&message(sent)).unwrap();
        if position < SEGMENT {
            in_first = sent + 1;
        }
        sent += 1;
        common::note_inodes(dir.path(), &mut inodes);
    }
    log.apply_retention().unwrap();
    assert!(!common::segment_path(dir.path(), 0).exists());
    // Other retired files were recycled meanwhile, the one the reader holds never.
    assert!(
        !common::recycled(&inodes).is_empty(),
        "nothing recycled: {inodes:?}"
    );
    assert!(
        inodes
            .iter()
            .all(|(&base, &ino)| base == 0 || ino != first_inode),
        "segment 0's file, which a reader holds, was recycled: {inodes:?}"
    );

    writeln!(child.stdin.take().unwrap(), "go").unwrap();
    // All of its output, so that it never writes into a closed pipe.
    let rest: Vec<String> = lines.map(|line| line.unwrap()).collect();
    let report = rest
        .iter()
        .find(|line| line.starts_with("read "))
        .unwrap_or_else(|| panic!("the reader failed: {:?}", child.wait()));
    assert!(child.wait().unwrap().success());
    let (read, deleted_at) = report
        .strip_prefix("read ")
        .and_then(|rest| rest.split_once(" up to "))
        .map(|(read, at)| (read.parse::<u64>().unwrap(), at.parse::<u64>().unwrap()))
        .unwrap();
    // Every message of segment 0, in order and intact (the reader checked each).
    assert!(read >= in_first, "{report}: segment 0 holds {in_first}");
    assert!(
        deleted_at >= SEGMENT && deleted_at % SEGMENT == 0,
        "{report}"
    );
}

/// Minor page faults of this process so far.
fn minor_faults() -> i64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    usage.ru_minflt
}

#[test]
fn once_warm_a_recycling_log_writes_and_reads_without_page_faults() {
    let Some(dir) = common::tmpfs_tempdir() else {
        return;
    };
    let options = LogOptions::new()
        .segment_capacity(SEGMENT)
        .retain_segments(4);
    let log = Log::create(dir.path(), &options).unwrap();
    let mut producer = log.producer().unwrap();
    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    let payload = [7u8; 500];
    let mut pass = |segments: u64| {
        let end = log.tail() + segments * SEGMENT;
        while log.tail() < end {
            for _ in 0..20 {
                producer.offer(&payload).unwrap();
            }
            while let Some(m) = consumer.poll().unwrap() {
                assert_eq!(m.payload(), &payload[..]);
            }
        }
    };
    // Until the files retention retires come back as new segments, and their mappings with
    // them (kept by the process that had them: `segment::Parking`).
    pass(12);
    let before = minor_faults();
    pass(30);
    let faults = minor_faults() - before;
    // 30 segments of 16 pages each, written and read: 480 pages a fresh log would fault in
    // (at least) once in each of the two processes' page tables.
    assert!(faults < 100, "{faults} page faults for 30 segments");
}

#[test]
fn only_a_log_with_retention_on_a_tmpfs_is_made_to_recycle_and_says_so() {
    let flags = |dir: &Path| {
        logbus::inspect::MetaFile::open(dir)
            .unwrap()
            .header()
            .log_flags
    };
    let recycling = logbus::format::log_flags::RECYCLING;
    let shm = common::tempdir();
    let with = shm.path().join("with");
    let without = shm.path().join("without");
    let options = LogOptions::new().segment_capacity(SEGMENT);
    Log::create(&with, &options.clone().retain_segments(2)).unwrap();
    Log::create(&without, &options).unwrap();
    assert_eq!(flags(&without) & recycling, 0);
    if shm.path().starts_with("/dev/shm") {
        assert_ne!(flags(&with) & recycling, 0);
    }
    // Not on a disk file system (/tmp is one here unless it is a tmpfs too).
    let disk = tempfile::tempdir().unwrap();
    if !is_tmpfs(disk.path()) {
        let log = disk.path().join("log");
        Log::create(&log, &options.retain_segments(2)).unwrap();
        assert_eq!(flags(&log) & recycling, 0);
    }
}

fn is_tmpfs(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let dir = std::fs::canonicalize(dir).unwrap();
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() > 2 && dir.starts_with(fields[1])).then(|| (fields[1].len(), fields[2]))
        })
        .max()
        .is_some_and(|(_, kind)| kind == "tmpfs")
}

#[test]
fn a_reader_waits_out_an_exclusive_lock_on_a_live_segment() {
    // A recycler that opened a file by a name retention has since moved past may lock it
    // exclusively for a moment after another process made it a live segment; it then lets go.
    // A reader meeting that lock must wait, not call the segment gone.
    let dir = common::tempdir();
    let options = LogOptions::new()
        .segment_capacity(SEGMENT)
        .retain_segments(8);
    let log = Log::create(dir.path(), &options).unwrap();
    let mut producer = log.producer().unwrap();
    let mut sent = 0;
    while log.tail() < 2 * SEGMENT + SEGMENT / 2 {
        producer.offer(&message(sent)).unwrap();
        sent += 1;
    }
    drop(producer);
    let locked = std::fs::File::open(common::segment_path(dir.path(), SEGMENT)).unwrap();
    // SAFETY: flock takes an open descriptor and a flag.
    let rc = unsafe {
        libc::flock(
            std::os::unix::io::AsRawFd::as_raw_fd(&locked),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    assert_eq!(rc, 0, "nothing else may hold segment 1 here");
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(locked);
    });
    let reader = Log::open(dir.path()).unwrap();
    let mut consumer = reader.consumer(StartAt::Earliest).unwrap();
    let mut read = 0;
    while let Some(m) = consumer.poll().unwrap() {
        assert_eq!(seq_of(m.payload()), read);
        read += 1;
    }
    assert_eq!(read, sent);
    holder.join().unwrap();
}

#[test]
fn processes_that_write_and_read_through_recycled_segments_lose_nothing() {
    let Some(root) = common::tmpfs_tempdir() else {
        return;
    };
    let log_dir = root.path().join("log");
    let options = LogOptions::new()
        .segment_capacity(SEGMENT)
        .retain_segments(3);
    let log = Log::create(&log_dir, &options).unwrap();
    // Cursors made before anything is written: retention waits for both readers.
    for id in 0..2 {
        drop(log.consumer_named(&format!("reader{id}")).unwrap());
    }
    let count: u64 = if cfg!(debug_assertions) {
        40_000
    } else {
        150_000
    };
    let mut children = common::Children::new();
    let mut names = Vec::new();
    for (role, name_prefix) in [("producer", "producer"), ("cursor_reader", "reader")] {
        for id in 0..2 {
            let name = format!("{name_prefix}{id}");
            children.spawn(
                &name,
                role,
                &[
                    ("LOGBUS_TEST_LOG", log_dir.display().to_string()),
                    ("LOGBUS_TEST_SYNC", root.path().display().to_string()),
                    ("LOGBUS_TEST_ID", id.to_string()),
                    ("LOGBUS_TEST_COUNT", count.to_string()),
                ],
            );
            names.push(name);
        }
    }
    // Watch the directory meanwhile: which files come back under new names.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (dir, watching) = (log_dir.clone(), watching.clone());
        std::thread::spawn(move || {
            let mut inodes = HashMap::new();
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                common::note_inodes(&dir, &mut inodes);
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            inodes
        })
    };
    children.start_together(root.path(), &names, std::time::Duration::from_secs(60));
    let finished = children.wait_all(std::time::Duration::from_secs(300));
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let inodes = watcher.join().unwrap();

    let readers: Vec<_> = finished
        .iter()
        .filter(|f| f.name.starts_with("reader"))
        .map(|f| f.result())
        .collect();
    assert_eq!(readers.len(), 2);
    assert_eq!(
        readers[0]["hash"], readers[1]["hash"],
        "the readers disagree"
    );
    assert_eq!(readers[0]["messages"], (2 * count).to_string());
    // The watcher sees only some of the files (segments come and go in a fraction of a
    // millisecond), and a file a reader still holds is deleted rather than recycled; enough
    // that recycling was part of the run.
    let segments = log.tail() / SEGMENT;
    let recycled = common::recycled(&inodes);
    assert!(
        recycled.len() >= 10,
        "only {} of {segments} segments were seen to be recycled files",
        recycled.len()
    );
}
