//! `logbus demo`: the quickstart. Producer processes and a consumer process move messages
//! through a fresh log while the consumer checks every one of them; the parent prints what
//! it saw, and fails unless every message arrived exactly once, in order, intact.
//!
//! The parent starts this same program again as hidden subcommands (`demo-producer`,
//! `demo-consumer`) and talks to them through their standard input and output: see
//! [`crate::child`].

mod checker;
mod consumer;
mod message;
mod producer;

pub use consumer::{run as run_consumer, ConsumerArgs};
pub use producer::{run as run_producer, ProducerArgs};

use crate::child::{Line, Worker};
use crate::units::{self, thousands};
use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Args;
use logbus::{Log, LogOptions};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a child may take to open the log and say it is ready.
const STARTUP: Duration = Duration::from_secs(30);

/// Arguments of `logbus demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Producer processes to start.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub producers: u32,

    /// Messages to send in all, shared evenly among the producers.
    #[arg(long, default_value = "10000000", value_parser = parse_count)]
    pub messages: u64,

    /// Bytes per message; at least 16, which carry the producer id and sequence number.
    #[arg(long, default_value_t = 32, value_parser = parse_message_size)]
    pub size: usize,

    /// Bytes of data per segment file: a power of two from 64KiB to 1GiB.
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = units::parse_size)]
    pub segment_capacity: u64,

    /// Leave the log in place at the end (its path is printed) instead of deleting it.
    #[arg(long)]
    pub keep: bool,

    /// Make the log's temporary directory in DIR [default: /dev/shm, else the system's
    /// temporary directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Stop every process and fail if the demo takes longer than this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub timeout: u64,
}

/// How many of `messages` producer `id` of `producers` sends: an even share, the first
/// producers taking one more when it does not divide.
pub fn share(messages: u64, producers: u32, id: u64) -> u64 {
    let producers = u64::from(producers);
    messages / producers + u64::from(id < messages % producers)
}

fn parse_count(text: &str) -> Result<u64, String> {
    let digits: String = text.chars().filter(|&c| c != '_' && c != ',').collect();
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a whole number"))?;
    if n == 0 {
        return Err("at least one message is needed".into());
    }
    Ok(n)
}

fn parse_message_size(text: &str) -> Result<usize, String> {
    let size = units::parse_size(text)?;
    if size < message::HEADER_LEN as u64 {
        return Err(format!(
            "{size} is too small: a demo message carries a producer id and a sequence number in its first {} bytes",
            message::HEADER_LEN
        ));
    }
    usize::try_from(size).map_err(|_| format!("{size} is too large"))
}

/// What one producer reported.
struct ProducerResult {
    sent: u64,
    elapsed: Duration,
}

/// What the consumer reported.
struct ConsumerResult {
    received: u64,
    elapsed: Duration,
    problems: u64,
    missing: u64,
    /// The first problems, as the consumer described them.
    details: Vec<String>,
}

/// Runs `logbus demo`.
pub fn run(args: &DemoArgs) -> Result<()> {
    // Ctrl-C then ends the children and this process deletes the log before it exits.
    crate::signals::catch_interrupts()?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut out = std::io::stdout();
    let (base, note) = match &args.dir {
        Some(dir) => (dir.clone(), None),
        None => default_base(),
    };
    // Dropped on every way out of this function, which deletes the log (unless --keep).
    let dir = tempfile::Builder::new()
        .prefix("logbus-demo-")
        .tempdir_in(&base)
        .with_context(|| format!("making a temporary directory in {}", base.display()))?;
    let options = LogOptions::new().segment_capacity(args.segment_capacity);
    let log = Log::create(dir.path(), &options)
        .with_context(|| format!("creating a log in {}", dir.path().display()))?;
    ensure!(
        args.size <= log.max_payload_len(),
        "--size {} is larger than a log with {} segments takes ({} bytes at most): use --segment-capacity {}",
        args.size,
        units::binary_bytes(args.segment_capacity),
        log.max_payload_len(),
        (args.size as u64 * 8).next_power_of_two()
    );

    writeln!(
        out,
        "logbus demo: {} producer process{} -> 1 consumer process, {} messages of {} bytes",
        args.producers,
        if args.producers == 1 { "" } else { "es" },
        thousands(args.messages),
        args.size
    )?;
    writeln!(out, "log:        {}", dir.path().display())?;
    writeln!(
        out,
        "            {} segments, CRC32C on every message; {}",
        units::binary_bytes(args.segment_capacity),
        if args.keep {
            "kept at the end (--keep)"
        } else {
            "deleted at the end (--keep leaves it)"
        }
    )?;
    if let Some(note) = note {
        writeln!(out, "note:       {note}")?;
    }

    let outcome = transfer(args, &log, deadline, &mut out)
        .map_err(|e| crate::child::explain_stop(e, deadline, args.timeout));
    let tail = log.tail();
    drop(log);

    if let Ok(results) = &outcome {
        report(args, tail, results, &mut out)?;
    }
    if args.keep {
        let path = dir.keep();
        writeln!(out, "kept:       {}", path.display())?;
    } else {
        let path = dir.path().to_path_buf();
        dir.close()
            .with_context(|| format!("deleting the log {}", path.display()))?;
        writeln!(out, "deleted:    {}", path.display())?;
    }

    let (_, consumer) = outcome?;
    if consumer.problems > 0 || consumer.missing > 0 || consumer.received != args.messages {
        let mut what = Vec::new();
        if consumer.missing > 0 {
            what.push(format!(
                "{} lost",
                units::count(consumer.missing, "message")
            ));
        }
        if consumer.problems > 0 {
            what.push(format!(
                "{} duplicated, out of order or corrupt",
                units::count(consumer.problems, "message")
            ));
        }
        if what.is_empty() {
            what.push(format!(
                "{} received, {} sent",
                units::count(consumer.received, "message"),
                thousands(args.messages)
            ));
        }
        bail!("demo failed: {}", what.join(", "));
    }
    Ok(())
}

/// /dev/shm if it is there (the log then lives in memory), else the system temp directory,
/// with a note that says so.
fn default_base() -> (PathBuf, Option<String>) {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        (shm.to_path_buf(), None)
    } else {
        let temp = std::env::temp_dir();
        let note = format!(
            "/dev/shm is missing, so the log is in {} (if that is on disk, expect lower figures)",
            temp.display()
        );
        (temp, Some(note))
    }
}

/// Starts the consumer, then the producers; releases the producers together; collects what
/// every child reports. Any child that fails fails the whole; every child is reaped or
/// killed before this returns.
fn transfer(
    args: &DemoArgs,
    log: &Log,
    deadline: Instant,
    out: &mut impl Write,
) -> Result<(Vec<ProducerResult>, ConsumerResult)> {
    let path: OsString = log.path().as_os_str().to_owned();
    let startup = deadline.min(Instant::now() + STARTUP);

    // The consumer first, at the earliest position: it will see every message.
    let mut consumer = Worker::spawn(
        "the consumer",
        &[
            "demo-consumer".into(),
            "--log".into(),
            path.clone(),
            "--producers".into(),
            args.producers.to_string().into(),
            "--messages".into(),
            args.messages.to_string().into(),
            "--size".into(),
            args.size.to_string().into(),
        ],
    )?;
    consumer.expect("ready", startup, |_| {})?;

    let mut producers = Vec::new();
    for id in 0..u64::from(args.producers) {
        producers.push(Worker::spawn(
            format!("producer {id}"),
            &[
                "demo-producer".into(),
                "--log".into(),
                path.clone(),
                "--id".into(),
                id.to_string().into(),
                "--messages".into(),
                share(args.messages, args.producers, id).to_string().into(),
                "--size".into(),
                args.size.to_string().into(),
            ],
        )?);
    }
    for producer in &mut producers {
        producer.expect("ready", startup, |_| {})?;
    }
    let pids: Vec<String> = producers.iter().map(|p| p.pid().to_string()).collect();
    writeln!(
        out,
        "started:    consumer (pid {}) reading from the start of the log,\n            then {} {}) released together",
        consumer.pid(),
        if producers.len() == 1 { "producer (pid" } else { "producers (pids" },
        pids.join(", ")
    )?;
    for producer in &mut producers {
        producer.send("go")?;
    }

    let mut producer_results = Vec::new();
    for producer in &mut producers {
        let line = producer.expect("result", deadline, |_| {})?;
        producer.wait_success(deadline)?;
        producer_results.push(ProducerResult {
            sent: line.get("sent")?,
            elapsed: Duration::from_nanos(line.get("elapsed_ns")?),
        });
    }

    // Every producer has exited: end of input tells the consumer to read what is left.
    consumer.close_stdin();
    let mut details = Vec::new();
    let line = consumer.expect("result", deadline, |line: &Line| {
        if line.tag == "problem" {
            details.push(line.rest.clone());
        }
    });
    let line = match line {
        Ok(line) => line,
        Err(e) => return Err(with_details(e, &details)),
    };
    consumer.wait_success(deadline)?;
    Ok((
        producer_results,
        ConsumerResult {
            received: line.get("received")?,
            elapsed: Duration::from_nanos(line.get("elapsed_ns")?),
            problems: line.get("problems")?,
            missing: line.get("missing")?,
            details,
        },
    ))
}

/// An error with the problems the consumer had found before it, one per line.
fn with_details(e: anyhow::Error, details: &[String]) -> anyhow::Error {
    if details.is_empty() {
        return e;
    }
    let mut text = crate::one_line(&e);
    text.push_str("; problems found before that:");
    for detail in details {
        text.push_str("\n  ");
        text.push_str(detail);
    }
    anyhow!(text)
}

fn report(
    args: &DemoArgs,
    tail: u64,
    (producers, consumer): &(Vec<ProducerResult>, ConsumerResult),
    out: &mut impl Write,
) -> Result<()> {
    let width = thousands(args.messages).len();
    let size = args.size as u64;
    for (id, p) in producers.iter().enumerate() {
        writeln!(
            out,
            "{:<12}{:>width$} messages in {:>9} = {:>14}, {:>9}",
            format!("producer {id}:"),
            thousands(p.sent),
            units::duration(p.elapsed),
            units::mega_rate(p.sent, p.elapsed),
            units::megabytes_rate(p.sent * size, p.elapsed),
        )?;
    }
    writeln!(
        out,
        "consumer:   {:>width$} messages in {:>9} = {:>14}, {:>9} of payload\n            \
         (from its first message to its last)",
        thousands(consumer.received),
        units::duration(consumer.elapsed),
        units::mega_rate(consumer.received, consumer.elapsed),
        units::megabytes_rate(consumer.received * size, consumer.elapsed),
    )?;
    let segments = tail.div_ceil(args.segment_capacity);
    writeln!(
        out,
        "log size:   {} in {} segment file{} ({} bytes a message with its header and alignment)",
        units::binary_bytes(tail),
        thousands(segments),
        if segments == 1 { "" } else { "s" },
        tail / args.messages.max(1),
    )?;

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let processes = args.producers as usize + 1;
    if cores < processes {
        writeln!(
            out,
            "cores:      this machine has {cores} core{} for {processes} processes, so they share CPUs:\n            \
             expect lower and noisier figures than with a core each",
            if cores == 1 { "" } else { "s" }
        )?;
    } else {
        writeln!(
            out,
            "cores:      this machine has {cores} cores: each of the {processes} processes can have one"
        )?;
    }

    let ok = consumer.problems == 0 && consumer.missing == 0 && consumer.received == args.messages;
    if ok {
        writeln!(
            out,
            "verified:   all {} messages verified: each arrived exactly once, in order per producer,\n            \
             with a good CRC, the right size and the bytes that were sent",
            thousands(args.messages)
        )?;
    } else {
        writeln!(
            out,
            "FAILED:     {} of {} messages received; {} lost; {} duplicated, out of order or corrupt",
            thousands(consumer.received),
            thousands(args.messages),
            thousands(consumer.missing),
            thousands(consumer.problems)
        )?;
        for detail in &consumer.details {
            writeln!(out, "            {detail}")?;
        }
        let shown = consumer
            .details
            .iter()
            .filter(|d| d.starts_with("message #"))
            .count() as u64;
        if consumer.problems > shown {
            writeln!(
                out,
                "            ... and {} more",
                thousands(consumer.problems - shown)
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (messages, producers) in [(10_000_000, 2), (7, 3), (1, 4), (5, 1)] {
            let total: u64 = (0..u64::from(producers))
                .map(|id| share(messages, producers, id))
                .sum();
            assert_eq!(total, messages);
        }
        assert_eq!(share(7, 3, 0), 3);
        assert_eq!(share(7, 3, 2), 2);
    }

    #[test]
    fn counts_and_sizes_parse() {
        assert_eq!(parse_count("10_000_000"), Ok(10_000_000));
        assert_eq!(parse_count("10,000"), Ok(10_000));
        assert!(parse_count("0").is_err());
        assert!(parse_count("lots").is_err());
        assert_eq!(parse_message_size("32"), Ok(32));
        assert_eq!(parse_message_size("1KiB"), Ok(1024));
        assert!(parse_message_size("15").unwrap_err().contains("too small"));
    }
}
