//! `logbus stat`: the built binary on a log with producers in this process and in others.

mod support;

use logbus::{Log, LogOptions};
use support::*;

#[test]
fn stat_once_json_reports_the_tail_and_the_producers() {
    let dir = tempdir();
    let path = dir.path().join("log");
    let log = Log::create(&path, &LogOptions::new().segment_capacity(64 * 1024)).unwrap();
    let mut producer = log.producer().unwrap();
    producer.offer(b"hello").unwrap();

    let output = run0(&[
        "stat",
        path.to_str().unwrap(),
        "--once",
        "--interval",
        "0",
        "--json",
    ]);
    let lines = json_lines(&ok(&output));
    assert_eq!(lines.len(), 1);
    let report = &lines[0];
    assert_eq!(report["tail"], log.tail());
    assert_eq!(report["earliest_position"], 0);
    assert_eq!(report["segment_capacity"], 64 * 1024);
    assert!(report["segment_files"].as_u64().unwrap() >= 1);
    assert_eq!(report["producers_live"], 1);
    assert_eq!(report["producers_dead"], 0);
    let producers = report["producers"].as_array().unwrap();
    assert_eq!(producers.len(), 1);
    assert_eq!(producers[0]["pid"], std::process::id());
    assert_eq!(producers[0]["slot"], producer.slot());
    assert_eq!(producers[0]["alive"], true);
    assert!(producers[0]["acquired"].as_str().unwrap().ends_with('Z'));
    assert_eq!(report["interval_s"], serde_json::Value::Null);
    assert_eq!(report["messages_per_s"], serde_json::Value::Null);
    assert_eq!(report["durable_cursors"], true);
    assert_eq!(report["consumers"], serde_json::json!([]));
    assert!(report["time"].as_str().unwrap().ends_with('Z'));

    // Rates over an interval: numbers (what they are depends on the machine).
    let output = run0(&[
        "stat",
        path.to_str().unwrap(),
        "--once",
        "--interval",
        "0.2",
        "--json",
    ]);
    let report = &json_lines(&ok(&output))[0];
    assert!(report["interval_s"].as_f64().unwrap() > 0.0);
    assert!(report["messages_per_s"].as_f64().unwrap() >= 0.0);
    assert!(report["tail_bytes_per_s"].as_f64().unwrap() >= 0.0);

    let text = ok(&run0(&[
        "stat",
        path.to_str().unwrap(),
        "--once",
        "--interval",
        "0",
    ]));
    assert!(
        text.contains(&format!("tail       {}", log.tail())),
        "{text}"
    );
    assert!(text.contains("producers  1 running, 0 dead"), "{text}");
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    assert!(text.contains("no durable cursors"));
    assert_eq!(report["exclusive_pid"], serde_json::Value::Null);

    // An exclusive producer is named, in both forms.
    drop(producer);
    let only = log.exclusive_producer().unwrap();
    let json = run0(&[
        "stat",
        path.to_str().unwrap(),
        "--once",
        "--interval",
        "0",
        "--json",
    ]);
    assert_eq!(
        json_lines(&ok(&json))[0]["exclusive_pid"],
        std::process::id()
    );
    let text = ok(&run0(&[
        "stat",
        path.to_str().unwrap(),
        "--once",
        "--interval",
        "0",
    ]));
    assert!(
        text.contains(&format!(
            "an exclusive producer, pid {}",
            std::process::id()
        )),
        "{text}"
    );
    drop(only);
}

#[test]
fn the_live_view_counts_what_producer_processes_send_and_stops_on_ctrl_c() {
    let dir = tempdir();
    let path = dir.path().join("log");
    let path_text = path.to_str().unwrap();
    ok(&run(
        &["pub", path_text, "--create", "--segment-capacity", "64KiB"],
        b"",
    ));
    let mut stat = Running::start(&["stat", path_text, "--json", "--interval", "0.2"]);
    stat.until("the first report", |l| l.contains(r#""tail":0"#));
    let input: String = (0..1000).map(|i| format!("message {i}\n")).collect();
    ok(&run(&["pub", path_text], input.as_bytes()));
    let tail = Log::open(&path).unwrap().tail();
    // Reports go on; the messages are counted once each, over the reports' intervals.
    let (line, mut reports) = stat.until("a report with the new tail", |l| {
        l.contains(&format!(r#""tail":{tail},"#))
    });
    reports.push(line);
    let (line, more) = stat.until("the report after it", |_| true);
    reports.extend(more);
    reports.push(line);
    let (status, rest) = stat.interrupt();
    assert!(status.success(), "Ctrl-C ends stat cleanly: {status}");
    reports.extend(rest);
    let counted: f64 = reports
        .iter()
        .map(|line| {
            let report: serde_json::Value = serde_json::from_str(line).unwrap();
            match (
                report["messages_per_s"].as_f64(),
                report["interval_s"].as_f64(),
            ) {
                (Some(rate), Some(interval)) => rate * interval,
                _ => 0.0,
            }
        })
        .sum();
    assert_eq!(counted.round(), 1000.0, "every message counted once");
}
