//! `logbus pub` and `logbus sub`: the built binary, run as producer and consumer processes
//! of real logs; payloads round-trip byte for byte.

mod support;

use logbus::{Log, LogOptions};
use serde_json::Value;
use support::*;

/// Payloads that a line-based tool would mangle: every byte value, newlines, NULs, an empty
/// one, lengths around the alignment, and the largest a 64 KiB-segment log takes.
fn awkward_payloads() -> Vec<Vec<u8>> {
    let mut payloads = vec![
        (0..=255u8).collect::<Vec<u8>>(),
        Vec::new(),
        b"\n".to_vec(),
        b"\r\n\r\n".to_vec(),
        vec![0u8; 7],
        b"plain text".to_vec(),
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for len in [1usize, 3, 4, 5, 8, 23, 24, 25, 100, 1000, 8168] {
        let bytes = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        payloads.push(bytes);
    }
    payloads
}

fn length_prefixed(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in payloads {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

#[test]
fn pub_binary_then_sub_hex_json_and_binary_round_trip_arbitrary_bytes() {
    let dir = tempdir();
    let path = dir.path().join("log");
    let path = path.to_str().unwrap();
    let payloads = awkward_payloads();
    let input = length_prefixed(&payloads);
    ok(&run(
        &[
            "pub",
            path,
            "--create",
            "--segment-capacity",
            "64KiB",
            "--binary",
        ],
        &input,
    ));

    let hex = ok(&run0(&["sub", path, "--format", "hex"]));
    let got: Vec<Vec<u8>> = hex.lines().map(unhex).collect();
    assert_eq!(got, payloads);

    let binary = run0(&["sub", path, "--format", "binary"]);
    assert!(binary.status.success());
    assert_eq!(
        binary.stdout, input,
        "sub --format binary gives back pub --binary's input"
    );

    let json = json_lines(&ok(&run0(&["sub", path, "--format", "json"])));
    assert_eq!(json.len(), payloads.len());
    for (line, payload) in json.iter().zip(&payloads) {
        assert_eq!(line["length"], payload.len());
        let bytes = match std::str::from_utf8(payload) {
            Ok(text) => {
                assert_eq!(line["payload"], text);
                text.as_bytes().to_vec()
            }
            Err(_) => {
                assert_eq!(line["payload"], Value::Null);
                unhex(line["payload_hex"].as_str().unwrap())
            }
        };
        assert_eq!(&bytes, payload);
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(line["producer"], 0);
    }

    // And the library reads the same bytes.
    let log = Log::open(path).unwrap();
    let mut consumer = log.consumer(logbus::StartAt::Earliest).unwrap();
    for payload in &payloads {
        assert_eq!(consumer.poll().unwrap().unwrap().payload(), &payload[..]);
    }
    assert!(consumer.poll().unwrap().is_none());

    // sub --format hex | pub --hex copies the log into another, exactly.
    let copy = dir.path().join("copy");
    let copy = copy.to_str().unwrap();
    ok(&run(
        &[
            "pub",
            copy,
            "--create",
            "--segment-capacity",
            "64KiB",
            "--hex",
        ],
        hex.as_bytes(),
    ));
    assert_eq!(ok(&run0(&["sub", copy, "--format", "hex"])), hex);
}

#[test]
fn lines_in_lines_out() {
    let dir = tempdir();
    let path = dir.path().join("log");
    let path = path.to_str().unwrap();
    let input = "first line\nzweite Zeile: grüß dich\n\ttabbed\r\n\nlast, no newline";
    let positions = ok(&run(
        &["pub", path, "--create", "--positions"],
        input.as_bytes(),
    ));
    let positions: Vec<u64> = positions.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(positions.len(), 5);
    assert_eq!(positions[0], 0);

    let out = ok(&run0(&["sub", path]));
    assert_eq!(out, format!("{input}\n"));

    // A second pub process appends to the same log.
    ok(&run(&["pub", path], b"appended\n"));
    let json = json_lines(&ok(&run0(&["sub", path, "--format", "json"])));
    assert_eq!(json.len(), 6);
    assert_eq!(json[5]["payload"], "appended");
    assert_eq!(json[3]["payload"], "");
    assert_eq!(json[2]["payload"], "\ttabbed\r");
    let found: Vec<u64> = json
        .iter()
        .map(|l| l["position"].as_u64().unwrap())
        .collect();
    assert_eq!(&found[..5], &positions[..]);
}

#[test]
fn sub_starts_where_asked_and_stops_after_count() {
    let dir = tempdir();
    let path = dir.path().join("log");
    let path = path.to_str().unwrap();
    let input: String = (0..10).map(|i| format!("m{i}\n")).collect();
    let positions: Vec<String> = ok(&run(
        &["pub", path, "--create", "--positions"],
        input.as_bytes(),
    ))
    .lines()
    .map(str::to_string)
    .collect();

    assert_eq!(
        ok(&run0(&[
            "sub",
            path,
            "--from",
            &positions[3],
            "--count",
            "2"
        ])),
        "m3\nm4\n"
    );
    assert_eq!(ok(&run0(&["sub", path, "--count", "1"])), "m0\n");
    assert_eq!(ok(&run0(&["sub", path, "--from", "latest"])), "");
    assert_eq!(
        ok(&run0(&["sub", path, "--from", "earliest"]))
            .lines()
            .count(),
        10
    );

    // A message set's records are messages with positions of their own.
    let log = Log::open(path).unwrap();
    let set = log
        .producer()
        .unwrap()
        .offer_batch(&[&b"r0"[..], b"r1", b"r2"])
        .unwrap();
    let second_record = (set + 24 + 8).to_string();
    assert_eq!(
        ok(&run0(&["sub", path, "--from", &second_record])),
        "r1\nr2\n"
    );

    // A durable cursor: the first sub prints two messages and commits; the next resumes.
    let all = ok(&run0(&["sub", path, "--from", "earliest"]));
    let lines: Vec<&str> = all.lines().collect();
    let first = ok(&run0(&["sub", path, "--from", "@billing", "--count", "2"]));
    assert_eq!(first, format!("{}\n{}\n", lines[0], lines[1]));
    let rest = ok(&run0(&["sub", path, "--from", "@billing"]));
    assert_eq!(rest.lines().collect::<Vec<_>>(), &lines[2..]);
    assert_eq!(ok(&run0(&["sub", path, "--from", "@billing"])), "");
    let inside = (positions[3].parse::<u64>().unwrap() + 4).to_string();
    fails_with(
        &run0(&["sub", path, "--from", &inside]),
        "not the start of a message",
    );
    fails_with(
        &run0(&["sub", path, "--from", "99999999"]),
        "beyond the tail",
    );
    let output = run0(&["sub", path, "--from", "soon"]);
    assert_eq!(output.status.code(), Some(2), "a usage error");
    assert!(text(&output).1.contains("earliest, latest"));
}

#[test]
fn sub_follow_prints_messages_that_pub_processes_send_later() {
    let dir = tempdir();
    let path = dir.path().join("log");
    let path = path.to_str().unwrap();
    ok(&run(
        &["pub", path, "--create", "--segment-capacity", "64KiB"],
        b"one\n",
    ));
    let mut sub = Running::start(&["sub", path, "--follow", "--format", "json"]);
    sub.until("the message sent before", |l| {
        l.contains(r#""payload":"one""#)
    });
    ok(&run(&["pub", path], b"two\nthree\n"));
    sub.until("a message sent later", |l| l.contains(r#""payload":"two""#));
    sub.until("the next one", |l| l.contains(r#""payload":"three""#));
    let (status, _) = sub.interrupt();
    assert!(
        status.success(),
        "Ctrl-C ends sub --follow cleanly: {status}"
    );

    // With --count, a follower exits by itself once it has its messages.
    // From the tail as it is now (a position, so that the start does not depend on when
    // the process gets to open the log, as `latest` would).
    let tail = Log::open(path).unwrap().tail().to_string();
    let mut counted = Running::start(&["sub", path, "--follow", "--from", &tail, "--count", "2"]);
    ok(&run(&["pub", path], b"four\nfive\nsix\n"));
    let (line, _) = counted.until("the first of them", |_| true);
    assert_eq!(line, "four");
    let (line, _) = counted.until("the second", |_| true);
    assert_eq!(line, "five");
    let status = counted.child.wait().unwrap();
    assert!(status.success());
}

#[test]
fn pub_create_takes_the_options_of_log_create() {
    let dir = tempdir();
    let path = dir.path().join("log");
    let path_text = path.to_str().unwrap();
    ok(&run(
        &[
            "pub",
            path_text,
            "--create",
            "--segment-capacity",
            "128KiB",
            "--no-checksums",
            "--no-timestamps",
            "--single-producer",
            "--file-mode",
            "640",
        ],
        b"x\n",
    ));
    let log = Log::open(&path).unwrap();
    let options = log.options();
    assert_eq!(
        options,
        LogOptions::new()
            .segment_capacity(128 * 1024)
            .checksums(false)
            .timestamps(false)
            .single_producer(true)
            .file_mode(0o640)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path.join("meta.logbus"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    let json = json_lines(&ok(&run0(&["sub", path_text, "--format", "json"])));
    assert_eq!(json[0]["timestamp"], Value::Null);

    // An existing log keeps its options, and pub says so.
    let output = run(
        &["pub", path_text, "--create", "--segment-capacity", "1MiB"],
        b"y\n",
    );
    let stderr = text(&output).1;
    assert!(output.status.success());
    assert!(
        stderr.contains("were not applied") && stderr.contains("128 KiB"),
        "{stderr}"
    );

    // Options need --create; a missing log needs --create.
    let output = run0(&["pub", path_text, "--no-checksums"]);
    assert_eq!(output.status.code(), Some(2));
    let missing = dir.path().join("missing");
    fails_with(
        &run(&["pub", missing.to_str().unwrap()], b"z\n"),
        "--create",
    );
    fails_with(
        &run(
            &[
                "pub",
                dir.path().join("bad").to_str().unwrap(),
                "--create",
                "--segment-capacity",
                "1000",
            ],
            b"",
        ),
        "power of two",
    );
}

#[test]
fn pub_reports_bad_input_with_where_it_is() {
    let dir = tempdir();
    let path = dir.path().join("log");
    let path = path.to_str().unwrap();
    // 64 KiB segments take at most 8168 bytes a message.
    let input = format!("fine\n{}\nnever sent\n", "y".repeat(9000));
    fails_with(
        &run(
            &["pub", path, "--create", "--segment-capacity", "64KiB"],
            input.as_bytes(),
        ),
        "line 2 of standard input",
    );
    assert_eq!(
        ok(&run0(&["sub", path])),
        "fine\n",
        "what came before is in the log"
    );

    let mut truncated = length_prefixed(&[b"whole".to_vec()]);
    truncated.extend_from_slice(&10u32.to_le_bytes());
    truncated.extend_from_slice(b"part");
    fails_with(
        &run(&["pub", path, "--binary"], &truncated),
        "ends after 4 of its 10 bytes",
    );
    fails_with(
        &run(&["pub", path, "--binary"], &[1, 0]),
        "inside its 4-byte length",
    );
    fails_with(
        &run(&["pub", path, "--binary"], b"this is text, not records"),
        "length-prefixed",
    );
    fails_with(
        &run(&["pub", path, "--hex"], b"abc\n"),
        "line 1 of standard input",
    );
    assert_eq!(ok(&run0(&["sub", path])), "fine\nwhole\n");
}

#[test]
fn every_new_subcommand_teaches_by_example() {
    for command in ["dump", "stat", "pub", "sub"] {
        let help = ok(&run0(&[command, "--help"]));
        assert!(help.contains("Examples:"), "{command} --help:\n{help}");
        assert!(
            help.contains(&format!("logbus {command} /dev/shm/orders")),
            "{command}:\n{help}"
        );
    }
    let top = ok(&run0(&["--help"]));
    for command in ["dump", "stat", "pub", "sub"] {
        assert!(top.contains(command), "{top}");
    }
}
