//! Runs each example in `examples/` as a user would, and checks that it succeeds and prints
//! what it is meant to show.
//!
//! `cargo test` and `cargo nextest run` compile the examples but do not run them; these tests
//! do. They run the compiled example binaries found beside this test's own binary
//! (`target/<profile>/examples/<name>`). Selecting this test alone (`--test examples`) does
//! not build the examples: run `cargo build --examples` first (plain `cargo test` builds them).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// An example that runs longer than this is taken to hang.
const TIME_LIMIT: Duration = Duration::from_secs(60);

#[test]
fn quickstart() {
    let out = run_example("quickstart", &[]);
    out.expect_line("consumer: \"hello 0\" at position 0");
    out.expect_line("consumer: \"hello 999\" at position ");
    out.expect_line("consumer: received 1000 messages, in order");
    out.expect_line("producer: the consumer received everything");

    // With no directory given, the log lives in a temporary directory removed at the end.
    let line = out.expect_line("producer: sent 1000 messages in ");
    let dir = line
        .split(" to ")
        .nth(1)
        .and_then(|rest| rest.split(" (positions").next())
        .unwrap_or_else(|| panic!("no log directory in {line:?}"));
    assert!(
        !Path::new(dir).exists(),
        "the temporary log {dir} was not removed"
    );
}

#[test]
fn quickstart_keeps_the_log_it_is_given() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("log");
    let dir_arg = dir.to_str().unwrap();

    let first = run_example("quickstart", &[dir_arg]);
    first.expect_line("consumer: \"hello 0\" at position 0");
    assert!(dir.join("meta.logbus").exists(), "the log was not kept");

    // A second run appends to the same log; its consumer starts where the first run ended.
    let second = run_example("quickstart", &[dir_arg]);
    second.expect_line("consumer: received 1000 messages, in order");
    let line = second.expect_line("consumer: \"hello 0\" at position ");
    assert!(
        !line.ends_with("position 0"),
        "the second run should start past the first run's messages: {line}"
    );
}

#[test]
fn typed() {
    let out = run_example("typed", &[]);
    assert_eq!(
        out.lines_starting("position ").len(),
        6,
        "six ticks read in place\n{out}"
    );
    out.expect_line("position   0: instrument 7 buy  100 @ 101.2500");
    out.expect_line("message set: read back 4 ticks with read_pod");
    out.expect_line("as_pod on a 10-byte payload: ");
}

#[test]
fn batch() {
    let out = run_example("batch", &[]);
    out.expect_line("before commit: the consumer sees nothing");
    out.expect_line("after commit: one poll_batch delivers all 100 records of the set");
    out.expect_line("a consumer started at position ");
    out.expect_line("offer_batch at position ");

    // The point of message sets: fewer bytes per message.
    let line = out.expect_line("bytes in the log per 16-byte message: ");
    let figures: Vec<f64> = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|word| word.parse().ok())
        .collect();
    let [_, single, _, batched] = figures[..] else {
        panic!("unexpected figures in {line:?}");
    };
    assert!(
        batched < single,
        "a message set should take fewer bytes per message: {line}"
    );
}

#[test]
fn multi_producer() {
    let out = run_example("multi_producer", &[]);
    out.expect_line("6 producers (3 threads of process ");
    let producers = out.lines_starting("producer ");
    assert_eq!(producers.len(), 6, "one line per producer\n{out}");
    for line in producers {
        assert!(line.ends_with(": messages 0..50000 in order"), "{line}");
    }
    out.expect_line("the consumer saw every message exactly once, in order per producer");
}

/// What an example printed.
struct Output {
    name: String,
    stdout: String,
    stderr: String,
}

impl Output {
    /// The first line that starts with `prefix`; the test fails if there is none.
    fn expect_line(&self, prefix: &str) -> &str {
        self.lines_starting(prefix)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("{} printed no line starting {prefix:?}\n{self}", self.name))
    }

    fn lines_starting(&self, prefix: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|line| line.starts_with(prefix))
            .collect()
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- stdout of {}:\n{}--- stderr:\n{}",
            self.name, self.stdout, self.stderr
        )
    }
}

/// Runs the compiled example `name` with `args`, and fails the test unless it exits with
/// success within the time limit.
fn run_example(name: &str, args: &[&str]) -> Output {
    let path = example_binary(name);
    let mut child = Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));

    // Read both pipes on threads, so that a full pipe cannot stall the example.
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));

    let deadline = Instant::now() + TIME_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("example {name} did not finish within {TIME_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let output = Output {
        name: name.to_owned(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    assert!(
        status.success(),
        "example {name} {args:?} failed: {status}\n{output}"
    );
    output
}

/// The example's binary, beside this test's: this test is `target/<profile>/deps/examples-*`,
/// examples are `target/<profile>/examples/<name>`. It must exist and be newer than its
/// sources, or the test would pass or fail on the strength of old code.
fn example_binary(name: &str) -> PathBuf {
    let test_binary = std::env::current_exe().expect("the path of this test binary");
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let path = profile_dir
        .join("examples")
        .join(name)
        .with_extension(std::env::consts::EXE_EXTENSION);
    let how = "run `cargo build --examples` (with the same profile as the tests) first, \
               or plain `cargo test`, which builds the examples: \
               selecting `--test examples` alone does not";

    let built = match std::fs::metadata(&path).and_then(|m| m.modified()) {
        Ok(built) => built,
        Err(_) => panic!("example {name} is not built at {}: {how}", path.display()),
    };
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = manifest_dir.join("examples").join(format!("{name}.rs"));
    if let Some(newer) = std::iter::once(source)
        .chain(rust_files(&manifest_dir.join("src")))
        .find(|file| modified(file).is_some_and(|changed| changed > built))
    {
        panic!(
            "example {name} at {} is older than {}: {how}",
            path.display(),
            newer.display()
        );
    }
    path
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}
