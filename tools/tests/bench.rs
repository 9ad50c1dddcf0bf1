//! Runs the built `logbus bench` with tiny workloads and checks the shape of what it prints:
//! the table's rows, and with `--json` one parseable object per transport with the
//! documented fields. No assertion here depends on how fast anything ran.

use serde_json::Value;
use std::process::{Command, Output};

fn logbus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_logbus"))
        .args(args)
        .output()
        .expect("the logbus binary runs")
}

/// Standard output of a run that must succeed.
fn success(args: &[&str]) -> String {
    let output = logbus(args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "logbus {} failed with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        args.join(" "),
        output.status
    );
    stdout
}

/// Every line of `stdout` as a JSON object.
fn objects(stdout: &str) -> Vec<serde_json::Map<String, Value>> {
    stdout
        .lines()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(map)) => map,
            other => panic!("not a JSON object: {line} ({other:?})"),
        })
        .collect()
}

fn number(object: &serde_json::Map<String, Value>, key: &str) -> f64 {
    object
        .get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number '{key}' in {object:?}"))
}

fn text<'a>(object: &'a serde_json::Map<String, Value>, key: &str) -> &'a str {
    object
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string '{key}' in {object:?}"))
}

#[test]
fn throughput_prints_a_table_with_both_transports_and_their_ratio() {
    let stdout = success(&[
        "bench",
        "throughput",
        "--messages",
        "20000",
        "--runs",
        "2",
        "--segment-capacity",
        "64KiB",
    ]);
    for expected in [
        "logbus bench throughput: 1 producer process -> 1 consumer process, 20,000 messages of 32 bytes",
        "cores:",
        "run 1/2:",
        "run 2/2:",
        "msg/s (median)",
        "logbus/socket",
        "verified:   every consumer got all 20,000 messages",
    ] {
        assert!(stdout.contains(expected), "no '{expected}' in:\n{stdout}");
    }
    // The summary's rows: the name padded to a column, then the median.
    let rows = |name: &str| {
        stdout
            .lines()
            .filter(|l| l.starts_with(&format!("{name:<15}")))
            .count()
    };
    assert_eq!(rows("logbus"), 1, "{stdout}");
    assert_eq!(rows("unix-socket"), 1, "{stdout}");
    assert_eq!(rows("logbus/socket"), 1, "{stdout}");
}

#[test]
fn throughput_json_has_one_object_per_transport_with_the_documented_fields() {
    let stdout = success(&[
        "bench",
        "throughput",
        "--messages",
        "3001",
        "--size",
        "100",
        "--producers",
        "2",
        "--consumers",
        "2",
        "--batch",
        "7",
        "--warmup",
        "1000",
        "--runs",
        "1",
        "--json",
    ]);
    let objects = objects(&stdout);
    assert_eq!(objects.len(), 2, "{stdout}");
    assert_eq!(text(&objects[0], "transport"), "logbus");
    assert_eq!(text(&objects[1], "transport"), "unix-socket");
    for object in &objects {
        assert_eq!(text(object, "bench"), "throughput");
        assert_eq!(text(object, "wait"), "spin");
        assert_eq!(number(object, "size"), 100.0);
        assert_eq!(number(object, "messages"), 3001.0);
        assert_eq!(number(object, "warmup"), 1000.0);
        assert_eq!(number(object, "producers"), 2.0);
        assert_eq!(number(object, "consumers"), 2.0);
        assert_eq!(number(object, "batch"), 7.0);
        assert_eq!(number(object, "runs"), 1.0);
        assert_eq!(number(object, "processes"), 4.0);
        assert!(number(object, "cores") >= 1.0);
        assert_eq!(object.get("verified"), Some(&Value::Bool(true)));
        for key in ["msgs_per_sec", "mb_per_sec", "producer_msgs_per_sec"] {
            assert!(object.contains_key(key), "no '{key}' in {object:?}");
        }
        let runs = object["msgs_per_sec_runs"].as_array().expect("an array");
        assert_eq!(runs.len(), 1);
    }
    assert_eq!(objects[0]["checksums"], Value::Bool(true));
    assert_eq!(objects[1]["checksums"], Value::Null);
    assert_eq!(number(&objects[0], "trail"), 0.0);
    assert_eq!(objects[1]["trail"], Value::Null);
    assert!(objects[0].contains_key("ratio_to_socket"));
    assert_eq!(objects[1]["ratio_to_socket"], Value::Null);
}

/// Runs `logbus bench throughput` over a log alone with `options`, once, and returns its one
/// JSON object, which must say that every message was verified.
fn logbus_throughput(options: &[&str]) -> serde_json::Map<String, Value> {
    let mut args = vec!["bench", "throughput"];
    args.extend_from_slice(options);
    args.extend_from_slice(&["--runs", "1", "--transport", "logbus", "--json"]);
    let stdout = success(&args);
    let mut objects = objects(&stdout);
    assert_eq!(objects.len(), 1, "{stdout}");
    let object = objects.remove(0);
    assert_eq!(object["verified"], Value::Bool(true));
    assert_eq!(object["ratio_to_socket"], Value::Null);
    object
}

#[test]
fn throughput_with_trailing_consumers_verifies_every_message() {
    let object = logbus_throughput(&[
        "--messages",
        "200000",
        "--consumers",
        "2",
        "--trail",
        "4KiB",
    ]);
    assert_eq!(number(&object, "trail"), 4096.0);
}

#[test]
fn throughput_with_futex_waits_verifies_every_message() {
    let object = logbus_throughput(&["--messages", "5000", "--wait", "futex"]);
    assert_eq!(text(&object, "wait"), "futex");
}

#[test]
fn pingpong_prints_percentiles_and_draws_the_plot() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("latency.svg");
    let stdout = success(&[
        "bench",
        "pingpong",
        "--iterations",
        "300",
        "--warmup",
        "30",
        "--runs",
        "1",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    for expected in [
        "logbus bench pingpong: 32-byte messages, 300 round trips timed after 30 untimed",
        "p50",
        "p99.99",
        "pong CPU",
        "logbus/socket",
        "timer:",
        "cores:",
        "plot:",
    ] {
        assert!(stdout.contains(expected), "no '{expected}' in:\n{stdout}");
    }
    let svg = std::fs::read_to_string(&plot).expect("the plot was written");
    assert!(svg.starts_with("<svg"));
    assert!(svg.contains("logbus") && svg.contains("unix-socket"));
}

#[test]
fn pingpong_json_has_the_documented_fields_for_futex_waits() {
    let stdout = success(&[
        "bench",
        "pingpong",
        "--iterations",
        "200",
        "--warmup",
        "20",
        "--wait",
        "futex",
        "--gap",
        "20",
        "--size",
        "64",
        "--runs",
        "2",
        "--json",
    ]);
    let objects = objects(&stdout);
    assert_eq!(objects.len(), 2, "{stdout}");
    assert_eq!(text(&objects[0], "transport"), "logbus");
    assert_eq!(text(&objects[1], "transport"), "unix-socket");
    for object in &objects {
        assert_eq!(text(object, "bench"), "pingpong");
        assert_eq!(text(object, "wait"), "futex");
        assert_eq!(number(object, "size"), 64.0);
        assert_eq!(number(object, "iterations"), 200.0);
        assert_eq!(number(object, "warmup"), 20.0);
        assert_eq!(number(object, "gap_us"), 20.0);
        assert_eq!(number(object, "runs"), 2.0);
        let p50 = number(object, "p50_ns");
        let p999 = number(object, "p999_ns");
        let max = number(object, "max_ns");
        assert!(p50 > 0.0 && p50 <= p999 && p999 <= max, "{object:?}");
        for key in ["p90_ns", "p99_ns", "p9999_ns", "mean_ns", "timer_ns"] {
            number(object, key);
        }
        for key in ["ping_cpu", "pong_cpu"] {
            assert!(number(object, key) >= 0.0, "{object:?}");
        }
        assert_eq!(object["p50_ns_runs"].as_array().map(Vec::len), Some(2));
    }
    assert!(objects[0].contains_key("ratio_p50_to_socket"));
    assert_eq!(objects[1]["ratio_p999_to_socket"], Value::Null);
}

#[test]
fn bad_arguments_get_clear_errors() {
    let output = logbus(&["bench", "throughput", "--size", "4"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("too small"), "{stderr}");

    let output = logbus(&[
        "bench",
        "throughput",
        "--size",
        "16KiB",
        "--segment-capacity",
        "64KiB",
        "--messages",
        "10",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("larger than a log"), "{stderr}");

    let output = logbus(&["bench", "throughput", "--messages", "10", "--warmup", "10"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("leaves nothing to time"), "{stderr}");
}

#[test]
fn the_child_subcommands_stay_out_of_help() {
    let help = success(&["bench", "--help"]);
    assert!(help.contains("throughput") && help.contains("pingpong"));
    assert!(!help.contains("throughput-producer"), "{help}");
    assert!(!help.contains("pingpong-peer"), "{help}");
}
