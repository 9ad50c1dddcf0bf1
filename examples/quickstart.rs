//! Quickstart: one producer process and one consumer process sharing a log.
//!
//! ```text
//! cargo run --example quickstart               # log in a temporary directory, removed after
//! cargo run --example quickstart -- /tmp/mylog # log kept in /tmp/mylog (run it twice!)
//! ```
//!
//! The example starts a second copy of itself as the consumer, so both sides run in separate
//! processes, as they would in a real deployment. They share nothing but the log directory.
//! (The temporary directory comes from the `tempfile` crate.)

use logbus::{Log, LogOptions, StartAt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How many messages the producer sends.
const COUNT: u64 = 1000;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        // The child: `quickstart consumer <dir> <start position>`.
        [role, dir, start] if role == "consumer" => consume(Path::new(dir), start.parse()?),
        // The parent, with a log of the user's choosing that outlives the run...
        [dir] => produce(Path::new(dir)),
        // ...or in a temporary directory that is removed when `temp` is dropped.
        [] => {
            let temp = tempfile::Builder::new()
                .prefix("logbus-quickstart-")
                .tempdir_in(memory_backed_dir())?;
            produce(temp.path())
        }
        _ => Err("usage: quickstart [LOG_DIR]".into()),
    }
}

/// A log under /dev/shm lives in memory only: the fastest place for IPC. Elsewhere it is an
/// ordinary directory and persists on disk.
fn memory_backed_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn produce(dir: &Path) -> Result<()> {
    // Creates the log, or opens it if one is there already (from an earlier run, or made by
    // another process at the same moment: exactly one of them creates it).
    let log = Log::open_or_create(dir, &LogOptions::new().segment_capacity(1 << 20))?;

    // Every message has a position: its byte offset in the log. The tail is where the next
    // one will go, so the consumer starts there and sees exactly what this run sends, even
    // if the log already holds messages from earlier runs.
    let start = log.tail();

    // The consumer process may start before or after we produce: the log is persistent, so
    // it reads from its start position whatever it missed. Nothing is lost either way.
    let mut consumer = Command::new(std::env::current_exe()?)
        .arg("consumer")
        .arg(dir)
        .arg(start.to_string())
        .spawn()?;

    let mut producer = log.producer()?;
    let began = Instant::now();
    for i in 0..COUNT {
        // `offer` copies the bytes into the shared mapping: one atomic add to claim room,
        // a copy, one store to commit. No lock, no system call.
        producer.offer(format!("hello {i}").as_bytes())?;
    }
    println!(
        "producer: sent {COUNT} messages in {:?} to {} (positions {start}..{})",
        began.elapsed(),
        dir.display(),
        log.tail()
    );

    let status = consumer.wait()?;
    if !status.success() {
        return Err(format!("the consumer process failed: {status}").into());
    }
    println!("producer: the consumer received everything");
    Ok(())
}

fn consume(dir: &Path, start: u64) -> Result<()> {
    let log = Log::open(dir)?;
    let mut consumer = log.consumer(StartAt::Position(start))?;

    for i in 0..COUNT {
        // `wait` spins briefly, then sleeps on a futex in the log until a producer commits.
        // The timeout only guards against a producer that never comes.
        let message = consumer
            .wait(Some(Duration::from_secs(10)))?
            .ok_or_else(|| format!("consumer: no message {i} after 10 s"))?;

        // The payload is borrowed from the mapping in place: nothing was copied to read it.
        let text = std::str::from_utf8(message.payload())?;
        if text != format!("hello {i}") {
            return Err(format!("consumer: message {i} is {text:?}").into());
        }
        if i == 0 || i == COUNT - 1 {
            println!("consumer: {text:?} at position {}", message.position());
        }
    }
    println!("consumer: received {COUNT} messages, in order");
    Ok(())
}
