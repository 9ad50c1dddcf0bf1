//! `logbus bridge serve` and `logbus bridge subscribe` as a person runs them: a bridge
//! process on loopback (port 0), subscribers that print in each format, a mirror, a wrong
//! token, and a clean stop on SIGTERM. Temporary directories only; the bridge process is
//! killed if the test fails.

use logbus::{Log, LogOptions, StartAt};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("logbus-bridge-cli-")
        .tempdir_in("/dev/shm")
        .or_else(|_| {
            tempfile::Builder::new()
                .prefix("logbus-bridge-cli-")
                .tempdir()
        })
        .unwrap()
}

fn logbus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_logbus"))
}

/// The bridge process; killed on drop unless it was stopped.
struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run(args: &[&str]) -> Output {
    logbus().args(args).stdin(Stdio::null()).output().unwrap()
}

#[test]
fn serve_subscribe_in_every_format_mirror_and_stop() {
    let root = tempdir();
    let replica = tempdir();
    let log = Log::create(
        root.path().join("orders"),
        &LogOptions::new().segment_capacity(1 << 16),
    )
    .unwrap();
    let mut producer = log.producer().unwrap();
    producer.offer(b"hello").unwrap();
    producer.offer("w\u{f6}rld \"quoted\"".as_bytes()).unwrap();
    producer.offer_batch(&[&b"a"[..], b"b"]).unwrap();
    let token = root.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let token = token.to_str().unwrap();

    let mut child = logbus()
        .args([
            "bridge",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            token,
        ])
        .arg("--root")
        .arg(root.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut server = Server(Some(child));
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    let line = receiver.recv_timeout(Duration::from_secs(60)).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_string();
    let err_lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });

    let subscribe = |extra: &[&str]| {
        let mut args = vec!["bridge", "subscribe", addr.as_str(), "orders"];
        args.extend_from_slice(extra);
        run(&args)
    };
    let out = subscribe(&[
        "--token-file",
        token,
        "--format",
        "text",
        "--idle-exit",
        "1s",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "hello\nw\u{f6}rld \"quoted\"\na\nb\n"
    );

    let out = subscribe(&["--token-file", token, "--format", "json", "--count", "2"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("{\"position\":0,\"producer\":"),
        "{text}"
    );
    assert!(
        lines[0].ends_with("\"len\":5,\"text\":\"hello\"}"),
        "{text}"
    );
    assert!(
        lines[1].contains("\"text\":\"w\u{f6}rld \\\"quoted\\\"\""),
        "{text}"
    );

    let out = subscribe(&[
        "--token-file",
        token,
        "--format",
        "hex",
        "--from",
        "32",
        "--count",
        "1",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("32: 77 c3 b6 72"), "{text}");

    let dir = replica.path().join("copy");
    let dir_arg = dir.to_str().unwrap();
    let out = subscribe(&[
        "--token-file",
        token,
        "--mirror",
        dir_arg,
        "--idle-exit",
        "1s",
    ]);
    assert!(out.status.success(), "{out:?}");
    let copy = Log::open(&dir).unwrap();
    assert_eq!(copy.id(), log.id());
    let mut consumer = copy.consumer(StartAt::Earliest).unwrap();
    let mut payloads = Vec::new();
    while let Some(m) = consumer.poll().unwrap() {
        payloads.push(m.payload().to_vec());
    }
    assert_eq!(payloads.len(), 4);
    assert_eq!(payloads[3], b"b");

    let out = subscribe(&["--format", "text", "--idle-exit", "1s"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("requires a token"), "{err}");
    let out = run(&[
        "bridge",
        "subscribe",
        addr.as_str(),
        "nope",
        "--token-file",
        token,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no log named 'nope'"), "{err}");

    // SIGTERM: a clean stop, with a summary line.
    let mut child = server.0.take().unwrap();
    // SAFETY: kill takes a pid and a signal number, no pointers.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let err_lines = err_lines.join().unwrap();
    assert!(
        err_lines
            .iter()
            .any(|l| l.contains("subscribed to 'orders'")),
        "{err_lines:#?}"
    );
    assert!(
        err_lines
            .iter()
            .any(|l| l.contains("refused") && l.contains("Unauthorized")),
        "{err_lines:#?}"
    );
    assert!(
        err_lines.last().unwrap().contains("stopped after"),
        "{err_lines:#?}"
    );
}
