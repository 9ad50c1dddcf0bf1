//! Helpers shared by the command-line tests: running the built `logbus` binary, temporary
//! log directories, JSON lines, and a child process whose output is read with a deadline.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long a test waits for a child to show something before it fails: generous, since the
/// machine may be busy; nothing here measures speed.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A fresh temporary directory under /dev/shm (else the system's), removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("logbus-cli-test-")
        .tempdir_in("/dev/shm")
        .or_else(|_| {
            tempfile::Builder::new()
                .prefix("logbus-cli-test-")
                .tempdir()
        })
        .expect("a temporary directory")
}

/// The built `logbus` program.
pub fn logbus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_logbus"))
}

/// Runs `logbus ARGS` with `stdin` as its standard input and waits for it.
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = logbus()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the logbus binary starts");
    let mut input = child.stdin.take().expect("piped");
    let stdin = stdin.to_vec();
    // Written from a thread, so that a child that does not read cannot block the test.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().expect("logbus runs");
    writer.join().expect("the writer thread");
    output
}

/// Runs `logbus ARGS` with empty input.
pub fn run0(args: &[&str]) -> Output {
    run(args, b"")
}

/// Standard output and error as text.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts that the command succeeded, showing what it said if not; returns its stdout.
pub fn ok(output: &Output) -> String {
    let (stdout, stderr) = text(output);
    assert!(
        output.status.success(),
        "logbus failed with {}\nstdout:\n{}\nstderr:\n{stderr}",
        output.status,
        shorten(&stdout)
    );
    stdout
}

/// Long output cut down to its start and end, for failure messages.
pub fn shorten(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= 40 {
        return text.to_string();
    }
    format!(
        "{}\n... ({} lines left out) ...\n{}",
        lines[..10].join("\n"),
        lines.len() - 30,
        lines[lines.len() - 20..].join("\n")
    )
}

/// Asserts that the command failed with status 1, cleanly (no panic), with an error line
/// that contains `expected`; returns its stderr.
pub fn fails_with(output: &Output, expected: &str) -> String {
    let (stdout, stderr) = text(output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit status 1\nstdout:\n{}\nstderr:\n{stderr}",
        shorten(&stdout)
    );
    assert!(!stderr.contains("panicked"), "a panic:\n{stderr}");
    assert!(
        stderr.starts_with("logbus: ") && stderr.contains(expected),
        "expected an error that says '{expected}', got:\n{stderr}"
    );
    stderr
}

/// Every line of `stdout` parsed as a JSON object.
pub fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

/// The JSON lines of one type.
pub fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == kind).collect()
}

/// The one JSON line of a type.
pub fn one<'a>(lines: &'a [Value], kind: &str) -> &'a Value {
    let found = of_type(lines, kind);
    assert_eq!(found.len(), 1, "expected one '{kind}' line in {lines:#?}");
    found[0]
}

/// Hex back to bytes.
pub fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len() % 2 == 0, "odd hex: {text}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The file offset of log position `position` in its segment file.
pub fn file_offset(position: u64, capacity: u64) -> usize {
    (4096 + position % capacity) as usize
}

/// The segment file that holds `position`.
pub fn segment_path(dir: &Path, position: u64, capacity: u64) -> std::path::PathBuf {
    dir.join(format!("{:020}.seg", position / capacity * capacity))
}

/// A `logbus` process that runs on (`--follow`), whose standard output the test reads line
/// by line with a deadline. Killed on drop if still running.
pub struct Running {
    pub child: Child,
    lines: Receiver<String>,
}

impl Running {
    pub fn start(args: &[&str]) -> Running {
        let mut child = logbus()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the logbus binary starts");
        let stdout = child.stdout.take().expect("piped");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// Lines until one for which `wanted` is true (returned, with those before it); fails
    /// if none comes within [`PATIENCE`].
    pub fn until(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> (String, Vec<String>) {
        let deadline = Instant::now() + PATIENCE;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return (line, before),
                Ok(line) => before.push(line),
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no line with {what} came; before it:\n{}",
                        before.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().expect("wait");
                    let mut stderr = String::new();
                    if let Some(mut e) = self.child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
                    }
                    panic!(
                        "logbus ended ({status}) before a line with {what}; it said:\n{}\nstderr:\n{stderr}",
                        before.join("\n")
                    )
                }
            }
        }
    }

    /// Sends SIGINT (Ctrl-C), waits for the exit, and returns the status and the lines
    /// written after those read so far.
    pub fn interrupt(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -INT failed");
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "logbus did not stop on Ctrl-C");
            std::thread::sleep(Duration::from_millis(10));
        };
        let rest = self.lines.iter().collect();
        (status, rest)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
