//! Runs the built `logbus` binary's `demo` as a user would, and checks what it says and what
//! it leaves behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn logbus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_logbus"))
        .args(args)
        .output()
        .expect("the logbus binary runs")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The log directory the report names on its `log:` line.
fn log_path(stdout: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("log:"))
        .unwrap_or_else(|| panic!("no 'log:' line in the report:\n{stdout}"));
    PathBuf::from(line.trim())
}

/// The number of segment files on the report's `log size:` line.
fn segment_files(stdout: &str) -> u64 {
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("log size:"))
        .unwrap_or_else(|| panic!("no 'log size:' line in the report:\n{stdout}"));
    let before = line.split(" segment file").next().expect("a segment count");
    before
        .rsplit(' ')
        .next()
        .expect("a number")
        .replace(',', "")
        .parse()
        .unwrap_or_else(|e| panic!("segment count in '{line}': {e}"))
}

#[test]
fn demo_verifies_every_message_across_many_segment_ends_and_deletes_the_log() {
    let output = logbus(&[
        "demo",
        "--messages",
        "200000",
        "--segment-capacity",
        "65536",
    ]);
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "demo failed with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("all 200,000 messages verified"),
        "the report does not say every message was verified:\n{stdout}"
    );
    // 200,000 messages of 56 bytes in 64 KiB segments: well over a hundred segment ends.
    assert!(segment_files(&stdout) > 100, "{stdout}");

    let log = log_path(&stdout);
    let name = log.file_name().and_then(|n| n.to_str()).unwrap_or("");
    assert!(name.starts_with("logbus-demo-"), "log at {}", log.display());
    if Path::new("/dev/shm").is_dir() {
        assert!(
            log.starts_with("/dev/shm"),
            "the log should be in /dev/shm, not {}",
            log.display()
        );
    }
    assert!(
        !log.exists(),
        "the demo left its log behind at {}",
        log.display()
    );
}

#[test]
fn keep_leaves_a_log_that_holds_every_message() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().to_str().unwrap();
    let output = logbus(&[
        "demo",
        "--producers",
        "3",
        "--messages",
        "30001",
        "--size",
        "100",
        "--segment-capacity",
        "64KiB",
        "--dir",
        dir,
        "--keep",
    ]);
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("all 30,001 messages verified"), "{stdout}");
    let log = log_path(&stdout);
    assert!(log.starts_with(parent.path()), "log at {}", log.display());
    assert!(stdout.contains(&format!("kept:       {}", log.display())));

    let log = logbus::Log::open(&log).expect("the kept log opens");
    assert_eq!(log.options().get_segment_capacity(), 64 * 1024);
    let mut consumer = log.consumer(logbus::StartAt::Earliest).unwrap();
    consumer.verify_checksums(true);
    let mut count = 0u64;
    while consumer
        .poll_batch(1000, |m| {
            assert_eq!(m.payload().len(), 100);
            count += 1;
        })
        .unwrap()
        > 0
    {}
    assert_eq!(count, 30_001);
}

#[test]
fn bad_options_fail_cleanly_and_leave_nothing() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().to_str().unwrap();

    let output = logbus(&[
        "demo",
        "--segment-capacity",
        "100000",
        "--dir",
        dir,
        "--messages",
        "10",
    ]);
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "stdout:\n{stdout}");
    assert!(
        stderr.starts_with("logbus: ") && stderr.contains("power of two"),
        "stderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "stderr:\n{stderr}");

    let output = logbus(&[
        "demo",
        "--size",
        "9000",
        "--segment-capacity",
        "64KiB",
        "--dir",
        dir,
        "--messages",
        "10",
    ]);
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(
        stderr.starts_with("logbus: --size 9000 is larger"),
        "stderr:\n{stderr}"
    );

    // Too small for a producer id and sequence number: refused by the argument parser.
    let output = logbus(&["demo", "--size", "15", "--dir", dir]);
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(stderr.contains("too small"), "stderr:\n{stderr}");

    let left: Vec<_> = std::fs::read_dir(parent.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn help_teaches_the_demo_and_hides_the_children() {
    let output = logbus(&["--help"]);
    let (stdout, _) = text(&output);
    assert!(output.status.success());
    assert!(stdout.contains("demo"), "{stdout}");
    assert!(stdout.contains("logbus demo"), "{stdout}");
    assert!(!stdout.contains("demo-producer"), "{stdout}");
    assert!(!stdout.contains("demo-consumer"), "{stdout}");

    let output = logbus(&["demo", "--help"]);
    let (stdout, _) = text(&output);
    assert!(output.status.success());
    assert!(stdout.contains("exactly once"), "{stdout}");
    assert!(stdout.contains("Examples:"), "{stdout}");
    assert!(stdout.contains("--segment-capacity"), "{stdout}");
}
