//! `logbus dump`: runs the built binary on logs written by producer processes (`logbus pub`)
//! and by this test process through the library, and checks what it lists, the JSON it
//! writes, what `--verify` finds in logs this test corrupted, and `--follow`.

mod support;

use logbus::{Log, LogOptions};
use serde_json::Value;
use support::*;

const CAPACITY: u64 = 64 * 1024;

/// A log with 64 KiB segments in `dir/log`, made by a `logbus pub --create` process that
/// sends `lines`; returns the positions it printed.
fn log_from_pub(dir: &std::path::Path, lines: &str) -> Vec<u64> {
    let path = dir.join("log");
    let stdout = ok(&run(
        &[
            "pub",
            path.to_str().unwrap(),
            "--create",
            "--segment-capacity",
            "64KiB",
            "--positions",
        ],
        lines.as_bytes(),
    ));
    stdout
        .lines()
        .map(|l| l.parse().expect("a position"))
        .collect()
}

fn frames(lines: &[Value]) -> Vec<&Value> {
    of_type(lines, "frame")
}

#[test]
fn dump_lists_the_meta_file_segments_frames_and_records() {
    let dir = tempdir();
    let positions = log_from_pub(dir.path(), "hello\nworld\n");
    assert_eq!(positions, [0, 32]);
    let path = dir.path().join("log");
    let log = Log::open(&path).unwrap();
    let mut producer = log.producer().unwrap();
    let set = producer.offer_batch(&[&b"abc"[..], b"de"]).unwrap();
    drop(producer.claim(100).unwrap()); // aborted: padding
    let last = producer.offer(&[0xff, b'\n', 0]).unwrap();
    drop(producer);

    let output = run0(&["dump", path.to_str().unwrap(), "--json"]);
    let lines = json_lines(&ok(&output));
    let head = one(&lines, "log");
    assert_eq!(head["format_version"], 1);
    assert_eq!(head["segment_capacity"], CAPACITY);
    assert_eq!(head["checksums"], true);
    assert_eq!(head["timestamps"], true);
    assert_eq!(head["file_mode"], "0600");
    assert_eq!(head["tail"], log.tail());
    assert_eq!(head["earliest_position"], 0);
    assert_eq!(head["segment_files"], 1);
    assert_eq!(head["durable_cursors"], true);
    assert_eq!(head["log_id"].as_str().unwrap().len(), 32);
    assert!(head["created"].as_str().unwrap().ends_with('Z'));

    let segment = one(&lines, "segment");
    assert_eq!(segment["base_position"], 0);
    assert_eq!(segment["end_position"], CAPACITY);
    assert_eq!(segment["log_id"], head["log_id"]);

    let frames = frames(&lines);
    let summary: Vec<(u64, &str)> = frames
        .iter()
        .map(|f| (f["position"].as_u64().unwrap(), f["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            (0, "data"),
            (32, "data"),
            (set, "message_set"),
            (set + 40, "padding"),
            (last, "data")
        ]
    );
    assert_eq!(frames[0]["payload"], "hello");
    assert_eq!(frames[0]["length"], 24 + 5);
    assert_eq!(frames[0]["aligned_length"], 32);
    assert_eq!(frames[0]["crc_ok"], true);
    assert_eq!(frames[0]["flags"], 3);
    assert!(frames[0]["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(frames[0]["timestamp_ns"].as_u64().unwrap() > 0);
    assert_eq!(frames[2]["records"], 2);
    assert_eq!(frames[3]["aligned_length"], 128);
    assert_eq!(frames[3]["crc_ok"], Value::Null);
    // Not UTF-8: the payload is null and comes in hex.
    assert_eq!(frames[4]["payload"], Value::Null);
    assert_eq!(frames[4]["payload_hex"], "ff0a00");

    let records = of_type(&lines, "record");
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["position"], set + 24);
    assert_eq!(records[0]["frame_position"], set);
    assert_eq!(records[0]["payload"], "abc");
    assert_eq!(records[1]["position"], set + 32);
    assert_eq!(records[1]["payload"], "de");

    let end = one(&lines, "segment_end");
    assert_eq!(end["walked_to"], log.tail());
    assert_eq!(end["stopped"], "end_of_data");
    assert_eq!(end["frames"], 5);
    assert_eq!(end["data_frames"], 3);
    assert_eq!(end["message_sets"], 1);
    assert_eq!(end["records"], 2);
    assert_eq!(end["padding_frames"], 1);
    let totals = one(&lines, "summary");
    assert_eq!(totals["messages"], 5);
    assert_eq!(totals["problems"], 0);
    assert_eq!(totals["in_flight"], 0);
    assert!(of_type(&lines, "problem").is_empty());

    // The text listing shows the same, payloads escaped.
    let listing = ok(&run0(&["dump", path.to_str().unwrap()]));
    assert!(listing.contains("consumers  no durable cursors"));
    let row = |position: u64| {
        listing
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&position.to_string()))
            .unwrap_or_else(|| panic!("no row for position {position} in:\n{listing}"))
            .to_string()
    };
    assert!(
        row(0).contains("\"hello\"") && row(0).contains(" ok "),
        "{}",
        row(0)
    );
    assert!(row(set).contains("set") && row(set).contains("2 records"));
    assert!(row(set + 24).contains("record") && row(set + 24).contains("\"abc\""));
    assert!(row(set + 40).contains("padding"));
    assert!(row(last).contains(r#""\xff\n\0""#), "{}", row(last));
    assert!(listing.contains("no problems"), "{listing}");

    // Hex payloads, and none.
    let hex = json_lines(&ok(&run0(&[
        "dump",
        path.to_str().unwrap(),
        "--json",
        "--payload",
        "hex",
    ])));
    assert_eq!(frames_of(&hex)[0]["payload_hex"], "68656c6c6f");
    assert!(frames_of(&hex)[0].get("payload").is_none());
    let none = json_lines(&ok(&run0(&[
        "dump",
        path.to_str().unwrap(),
        "--json",
        "--payload",
        "none",
    ])));
    assert!(frames_of(&none)[0].get("payload").is_none());
    assert!(frames_of(&none)[0].get("payload_hex").is_none());
}

fn frames_of(lines: &[Value]) -> Vec<&Value> {
    of_type(lines, "frame")
}

#[test]
fn from_to_and_count_choose_the_frames() {
    let dir = tempdir();
    let input: String = (0..10).map(|i| format!("message {i}\n")).collect();
    let positions = log_from_pub(dir.path(), &input);
    let path = dir.path().join("log");
    let shown = |extra: &[&str]| -> Vec<u64> {
        let mut args = vec!["dump", path.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        frames(&json_lines(&ok(&run0(&args))))
            .iter()
            .map(|f| f["position"].as_u64().unwrap())
            .collect()
    };
    let from = positions[3].to_string();
    let to = positions[6].to_string();
    assert_eq!(shown(&["--from", &from, "--to", &to]), &positions[3..6]);
    assert_eq!(shown(&["--from", &from, "--count", "2"]), &positions[3..5]);
    // A position inside a frame starts at that frame.
    let inside = (positions[3] + 8).to_string();
    assert_eq!(
        shown(&["--from", &inside, "--count", "1"]),
        &positions[3..4]
    );
    assert_eq!(shown(&["--count", "1"]), &positions[..1]);
}

#[test]
fn dump_walks_every_segment_of_a_log_written_by_two_producer_processes() {
    let dir = tempdir();
    let path = dir.path().join("log");
    let path_text = path.to_str().unwrap().to_string();
    ok(&run(
        &["pub", &path_text, "--create", "--segment-capacity", "64KiB"],
        b"",
    ));
    // Two producer processes at once, 2,000 messages of 100 bytes each: about 8 segments.
    let senders: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let path = path_text.clone();
            std::thread::spawn(move || {
                let input: String = (0..2000).map(|i| format!("{name} {i:096}\n")).collect();
                ok(&run(&["pub", &path], input.as_bytes()));
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    // Published segment files only: a `pub` process that exits while its preparer thread is
    // making the next segment leaves that segment's hidden temporary file behind.
    let files = std::fs::read_dir(&path)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.ends_with(".seg") && !name.starts_with('.')
        })
        .count();
    assert!(files >= 5, "{files} segment files");

    let lines = json_lines(&ok(&run0(&["dump", &path_text, "--json"])));
    assert_eq!(of_type(&lines, "segment").len(), files);
    let segments: Vec<u64> = of_type(&lines, "segment")
        .iter()
        .map(|s| s["base_position"].as_u64().unwrap())
        .collect();
    assert!(segments.windows(2).all(|w| w[1] == w[0] + CAPACITY));
    let mut next = [0u64; 2];
    let mut last_position = None;
    for frame in frames(&lines) {
        let position = frame["position"].as_u64().unwrap();
        assert!(last_position < Some(position), "positions go up");
        last_position = Some(position);
        if frame["kind"] != "data" {
            continue;
        }
        let payload = frame["payload"].as_str().unwrap();
        let (name, number) = payload.split_once(' ').unwrap();
        let producer = usize::from(name == "b");
        assert_eq!(
            number.parse::<u64>().unwrap(),
            next[producer],
            "in order per producer"
        );
        next[producer] += 1;
    }
    assert_eq!(next, [2000, 2000]);
    let totals = one(&lines, "summary");
    assert_eq!(totals["messages"], 4000);
    assert_eq!(totals["segments"], files);

    let verify = run0(&["dump", &path_text, "--verify"]);
    let stdout = ok(&verify);
    assert!(stdout.contains("no problems"), "{stdout}");
    assert_eq!(
        stdout.lines().count(),
        1,
        "--verify prints only the verdict: {stdout}"
    );
}

/// A log of ten messages in segment 0, then fillers, then one message in segment 1.
struct Written {
    path: std::path::PathBuf,
    /// The eleven messages' positions.
    positions: Vec<u64>,
    /// A producer left running: while one lives, opening the log does not recover it (a
    /// recovery would cut off the frames this test corrupts before `sub` could see them).
    _producer: logbus::Producer,
}

fn ten_messages(dir: &std::path::Path) -> Written {
    let path = dir.join("log");
    let log = Log::create(&path, &LogOptions::new().segment_capacity(CAPACITY)).unwrap();
    let mut producer = log.producer().unwrap();
    let mut positions = Vec::new();
    for i in 0..10u32 {
        let payload = if i == 5 {
            vec![b'x'; 8000]
        } else {
            format!("message number {i}").into_bytes()
        };
        positions.push(producer.offer(&payload).unwrap());
    }
    // Fill segment 0 so the last messages land in segment 1.
    while log.tail() < CAPACITY {
        producer.offer(&[b'f'; 8000]).unwrap();
    }
    positions.push(producer.offer(b"in the second segment").unwrap());
    assert!(positions[10] >= CAPACITY);
    // Claims in segment 1 have the preparer make segment 2: let it
    // finish, so that every command below sees the same files.
    let third = segment_path(&path, 2 * CAPACITY, CAPACITY);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !third.exists() {
        assert!(std::time::Instant::now() < deadline, "segment 2 never made");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Written {
        path,
        positions,
        _producer: producer,
    }
}

/// Overwrites `bytes` at `at` bytes into the frame at `position`, in place (the file keeps
/// its length: it may be mapped by a producer of this process).
fn corrupt(path: &std::path::Path, position: u64, at: usize, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment_path(path, position, CAPACITY))
        .unwrap();
    let offset = file_offset(position, CAPACITY) + at;
    file.write_all_at(bytes, offset as u64).unwrap();
}

#[test]
fn verify_is_clean_on_a_good_log_and_finds_each_corruption_at_its_position() {
    let dir = tempdir();
    let written = ten_messages(dir.path());
    let (path, positions) = (&written.path, &written.positions);
    let path_text = path.to_str().unwrap();
    let clean = json_lines(&ok(&run0(&["dump", path_text, "--verify", "--json"])));
    assert_eq!(clean.len(), 1, "{clean:?}");
    assert_eq!(clean[0]["type"], "summary");
    assert_eq!(clean[0]["problems"], 0);
    // Two segments hold the messages, and the producer has made the next one ahead (see
    // `ten_messages`).
    let files = 3;
    assert_eq!(clean[0]["segments"], files);

    // Flip a payload byte of message 2: a CRC mismatch there.
    let flipped = positions[2];
    corrupt(path, flipped, 24 + 3, b"X");
    // Smash the length of message 7: a corrupt frame there, and the rest of segment 0 is
    // unreadable; segment 1 is still checked.
    let smashed = positions[7];
    corrupt(path, smashed, 0, &0x7fff_0000u32.to_le_bytes());

    let output = run0(&["dump", path_text, "--verify", "--json"]);
    let stderr = fails_with(&output, "2 problems found");
    assert!(stderr.contains(path_text), "{stderr}");
    let lines = json_lines(&text(&output).0);
    let problems: Vec<(&str, u64)> = of_type(&lines, "problem")
        .iter()
        .map(|p| {
            (
                p["problem"].as_str().unwrap(),
                p["position"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        [("checksum_mismatch", flipped), ("corrupt_frame", smashed)]
    );
    let first = of_type(&lines, "problem")[0];
    assert!(first["file"]
        .as_str()
        .unwrap()
        .ends_with("00000000000000000000.seg"));
    assert!(first["detail"]
        .as_str()
        .unwrap()
        .contains("checksum mismatch"));
    let totals = one(&lines, "summary");
    assert_eq!(totals["problems"], 2);
    assert_eq!(totals["segments"], files);

    // The text form names the positions too.
    let output = run0(&["dump", path_text, "--verify"]);
    fails_with(&output, "2 problems found");
    let stdout = text(&output).0;
    assert!(
        stdout.contains(&format!("PROBLEM    at position {flipped} ")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("PROBLEM    at position {smashed} ")),
        "{stdout}"
    );
    assert!(stdout.contains("2 problems"), "{stdout}");

    // A plain dump lists the frames, marks the bad CRC and fails as well.
    let output = run0(&["dump", path_text]);
    fails_with(&output, "2 problems found");
    let stdout = text(&output).0;
    let row = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&flipped.to_string()))
        .unwrap();
    assert!(row.contains("BAD"), "{row}");

    // `logbus sub` refuses the corrupt message with its position.
    let output = run0(&["sub", path_text]);
    fails_with(&output, &format!("checksum mismatch at position {flipped}"));
    assert_eq!(text(&output).0, "message number 0\nmessage number 1\n");
}

#[test]
fn a_bad_message_set_and_a_foreign_segment_in_the_log_are_problems() {
    let dir = tempdir();
    let path = dir.path().join("log");
    let log = Log::create(
        &path,
        &LogOptions::new()
            .segment_capacity(CAPACITY)
            .checksums(false),
    )
    .unwrap();
    let mut producer = log.producer().unwrap();
    let set = producer.offer_batch(&[&b"one"[..], b"two"]).unwrap();
    // Fill segment 0, then one message in segment 1.
    while log.tail() < CAPACITY {
        producer.offer(&[b'f'; 8000]).unwrap();
    }
    producer.offer(b"later").unwrap();
    drop(producer);
    drop(log);
    // The first record's length runs past the payload (no CRC to catch it first).
    corrupt(&path, set, 24, &200u32.to_le_bytes());
    // Segment 1 replaced by a segment of another log.
    let other = dir.path().join("other");
    let other_log = Log::create(&other, &LogOptions::new().segment_capacity(CAPACITY)).unwrap();
    drop(other_log);
    std::fs::copy(
        other.join("00000000000000000000.seg"),
        path.join(format!("{CAPACITY:020}.seg")),
    )
    .unwrap();

    let output = run0(&["dump", path.to_str().unwrap(), "--verify", "--json"]);
    fails_with(&output, "problems found");
    let lines = json_lines(&text(&output).0);
    let problems: Vec<(&str, u64)> = of_type(&lines, "problem")
        .iter()
        .map(|p| {
            (
                p["problem"].as_str().unwrap(),
                p["position"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(problems.contains(&("bad_record", set)), "{problems:?}");
    assert!(
        problems.contains(&("segment_header", CAPACITY)),
        "{problems:?}"
    );
    let header = of_type(&lines, "problem")
        .into_iter()
        .find(|p| p["problem"] == "segment_header")
        .unwrap();
    assert!(header["detail"].as_str().unwrap().contains("another log"));
}

#[test]
fn one_segment_file_dumps_and_verifies_on_its_own() {
    let dir = tempdir();
    let written = ten_messages(dir.path());
    let (path, positions) = (&written.path, &written.positions);
    let segment = path.join("00000000000000000000.seg");
    let lines = json_lines(&ok(&run0(&["dump", segment.to_str().unwrap(), "--json"])));
    assert!(of_type(&lines, "log").is_empty());
    assert_eq!(one(&lines, "segment")["base_position"], 0);
    let data: Vec<u64> = frames(&lines)
        .iter()
        .filter(|f| f["kind"] == "data")
        .map(|f| f["position"].as_u64().unwrap())
        .collect();
    assert_eq!(&data[..10], &positions[..10]);
    let text_dump = ok(&run0(&["dump", segment.to_str().unwrap()]));
    assert!(text_dump.contains("format version 1"), "{text_dump}");

    corrupt(path, positions[4], 24, b"?");
    let output = run0(&["dump", segment.to_str().unwrap(), "--verify", "--json"]);
    fails_with(&output, "1 problem found");
    let lines = json_lines(&text(&output).0);
    let problem = one(&lines, "problem");
    assert_eq!(problem["problem"], "checksum_mismatch");
    assert_eq!(problem["position"], positions[4]);
}

#[test]
fn foreign_broken_and_missing_files_get_a_clear_error_and_no_panic() {
    let dir = tempdir();
    let foreign = dir.path().join("notes.txt");
    std::fs::write(
        &foreign,
        "these are not the frames you are looking for\n".repeat(200),
    )
    .unwrap();
    fails_with(
        &run0(&["dump", foreign.to_str().unwrap()]),
        "not a logbus segment file",
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for command in ["dump", "stat", "sub"] {
        let mut args = vec![command, empty.to_str().unwrap()];
        if command == "stat" {
            args.push("--once");
        }
        fails_with(&run0(&args), "not a logbus log");
    }
    fails_with(
        &run0(&["dump", dir.path().join("nothing").to_str().unwrap()]),
        "nothing",
    );

    let written = ten_messages(dir.path());
    let path = &written.path;
    let segment = path.join("00000000000000000000.seg");
    let short = dir.path().join("00000000000000000000.seg");
    let bytes = std::fs::read(&segment).unwrap();
    std::fs::write(&short, &bytes[..10_000]).unwrap();
    fails_with(&run0(&["dump", short.to_str().unwrap()]), "10000 bytes");
    std::fs::write(&short, &bytes[..20]).unwrap();
    fails_with(&run0(&["dump", short.to_str().unwrap()]), "truncated");

    // A broken meta file: the log cannot be opened, and dump says why.
    use std::os::unix::fs::FileExt;
    let meta = std::fs::OpenOptions::new()
        .write(true)
        .open(path.join("meta.logbus"))
        .unwrap();
    meta.write_all_at(b"X", 0).unwrap();
    fails_with(
        &run0(&["dump", path.to_str().unwrap()]),
        "not a logbus meta file",
    );
}

#[test]
fn a_claim_in_flight_is_reported_and_is_not_a_problem() {
    let dir = tempdir();
    let path = dir.path().join("log");
    let log = Log::create(&path, &LogOptions::new().segment_capacity(CAPACITY)).unwrap();
    let mut first = log.producer().unwrap();
    let mut second = log.producer().unwrap();
    first.offer(b"before").unwrap();
    let slot = first.slot();
    let claim = first.claim(10).unwrap();
    let held = claim.position();
    second.offer(b"after the claim").unwrap();

    let output = run0(&["dump", path.to_str().unwrap(), "--verify", "--json"]);
    let lines = json_lines(&ok(&output));
    let flight = one(&lines, "in_flight");
    assert_eq!(flight["position"], held);
    assert_eq!(flight["claimed_to"], log.tail());
    assert_eq!(flight["producers_running"], 2);
    assert_eq!(flight["producer"], slot);
    assert_eq!(flight["producer_pid"], std::process::id());
    assert_eq!(flight["producer_alive"], true);
    assert_eq!(flight["length"], 40, "24 + 10 bytes, aligned");
    assert_eq!(one(&lines, "summary")["problems"], 0);
    let listed = json_lines(&ok(&run0(&["dump", path.to_str().unwrap(), "--json"])));
    let holder = of_type(&listed, "producer")
        .into_iter()
        .find(|p| p["slot"] == slot)
        .unwrap();
    assert_eq!(holder["claim_position"], held);
    assert_eq!(holder["claim_length"], 40);

    // `sub` prints what is committed before the claim and says where it stopped.
    let output = run0(&["sub", path.to_str().unwrap()]);
    assert_eq!(ok(&output), "before\n");
    assert!(text(&output)
        .1
        .contains(&format!("stopped at position {held}")));

    let listing = ok(&run0(&["dump", path.to_str().unwrap()]));
    assert!(
        listing.contains(&format!(
            "in flight  at position {held}: 40 bytes claimed by producer slot {slot}"
        )),
        "{listing}"
    );

    drop(claim); // aborted: padding, and everything after it is readable
    let lines = json_lines(&ok(&run0(&["dump", path.to_str().unwrap(), "--json"])));
    assert!(of_type(&lines, "in_flight").is_empty());
    let kinds: Vec<&str> = frames(&lines)
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["data", "padding", "data"]);
}

#[test]
fn follow_prints_frames_committed_after_it_started() {
    let dir = tempdir();
    let path = dir.path().join("log");
    let log = Log::create(&path, &LogOptions::new().segment_capacity(CAPACITY)).unwrap();
    let mut producer = log.producer().unwrap();
    producer.offer(b"before").unwrap();

    let mut follower = Running::start(&["dump", path.to_str().unwrap(), "--follow", "--json"]);
    follower.until("the frame written before", |l| {
        l.contains(r#""payload":"before""#)
    });
    producer.offer(b"after one").unwrap();
    follower.until("the first new frame", |l| {
        l.contains(r#""payload":"after one""#)
    });
    // Across a segment end, into a segment made after the follower started.
    while log.tail() < CAPACITY {
        producer.offer(&[b'f'; 8000]).unwrap();
    }
    let late = producer.offer(b"in the next segment").unwrap();
    let (line, before) = follower.until("the frame in the next segment", |l| {
        l.contains(r#""payload":"in the next segment""#)
    });
    let frame: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(frame["position"], late);
    assert!(
        before.iter().any(|l| l.contains(r#""type":"segment""#)
            && l.contains(&format!(r#""base_position":{CAPACITY}"#))),
        "{before:#?}"
    );

    let (status, rest) = follower.interrupt();
    assert!(status.success(), "Ctrl-C ends a follower cleanly: {status}");
    assert!(
        rest.iter().any(|l| l.contains(r#""type":"summary""#)),
        "a summary at the end: {rest:?}"
    );
}

/// Durable cursors appear in the listing with their committed position and lag.
#[test]
fn dump_lists_durable_cursors_with_their_lag() {
    let dir = support::tempdir();
    let path = dir.path().join("log");
    let log = Log::create(&path, &LogOptions::new().segment_capacity(1 << 16)).unwrap();
    let mut producer = log.producer().unwrap();
    for message in [&b"one"[..], b"two", b"three"] {
        producer.offer(message).unwrap();
    }
    let mut billing = log.consumer_named("billing").unwrap();
    billing.poll().unwrap().unwrap();
    let committed = billing.commit_position().unwrap();
    drop(billing);
    let path = path.display().to_string();
    let lines = json_lines(&ok(&run0(&["dump", &path, "--json", "--payload", "none"])));
    let cursor = one(&lines, "consumer");
    assert_eq!(cursor["name"], "billing");
    assert_eq!(cursor["position"], committed);
    assert_eq!(cursor["lag"], log.tail() - committed);
    assert_eq!(cursor["holder"], serde_json::Value::Null);
    let text = ok(&run0(&["dump", &path, "--payload", "none"]));
    assert!(text.contains("consumer   billing"), "{text}");
}

#[test]
fn an_exclusive_producer_is_named_by_its_process() {
    let dir = tempdir();
    let path = dir.path().join("log");
    let log = Log::create(&path, &LogOptions::new().segment_capacity(CAPACITY)).unwrap();
    let path_text = path.to_str().unwrap();
    let before = json_lines(&ok(&run0(&["dump", path_text, "--json"])));
    assert_eq!(one(&before, "log")["exclusive_pid"], Value::Null);

    let mut only = log.exclusive_producer().unwrap();
    only.offer(b"alone").unwrap();
    let held = json_lines(&ok(&run0(&["dump", path_text, "--json"])));
    assert_eq!(one(&held, "log")["exclusive_pid"], std::process::id());
    assert_eq!(one(&held, "log")["exclusive_alive"], true);
    let (stdout, _) = text(&run0(&["dump", path_text]));
    assert!(
        stdout.contains(&format!(
            "exclusive to the producer of pid {}",
            std::process::id()
        )),
        "{stdout}"
    );

    drop(only);
    let after = json_lines(&ok(&run0(&["dump", path_text, "--json"])));
    assert_eq!(one(&after, "log")["exclusive_pid"], Value::Null);
}
