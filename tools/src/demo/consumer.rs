//! The demo's consumer process (`logbus demo-consumer`, hidden): opens the log at its
//! earliest position, says `ready`, reads in batches and checks every message with a
//! [`Checker`] until its standard input closes (the parent's sign that every producer has
//! exited) and nothing is left to read. It reports `problem <text>` lines, then
//! `result received=N elapsed_ns=T problems=P missing=M`.

use super::checker::Checker;
use anyhow::{Context, Result};
use clap::Args;
use logbus::{Log, Message, StartAt};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most messages handed over by one `poll_batch`/`wait_batch` call.
const BATCH: usize = 4096;
/// How long one wait for data lasts before the consumer looks whether the producers are done.
const IDLE: Duration = Duration::from_millis(50);

/// Arguments of `logbus demo-consumer`, which `logbus demo` passes.
#[derive(Args, Debug)]
pub struct ConsumerArgs {
    /// The log directory.
    #[arg(long)]
    pub log: PathBuf,
    /// Producers in the run (ids 0 up to this).
    #[arg(long)]
    pub producers: u32,
    /// Messages sent in all.
    #[arg(long)]
    pub messages: u64,
    /// Bytes per message.
    #[arg(long)]
    pub size: usize,
}

/// Runs the consumer process.
pub fn run(args: &ConsumerArgs) -> Result<()> {
    let who = "demo consumer";
    let log = Log::open(&args.log).with_context(|| format!("{who}: opening the log"))?;
    let mut consumer = log
        .consumer(StartAt::Earliest)
        .with_context(|| format!("{who}: making a consumer"))?;
    consumer.verify_checksums(true);
    let counts: Vec<u64> = (0..u64::from(args.producers))
        .map(|id| super::share(args.messages, args.producers, id))
        .collect();
    let mut checker = Checker::new(args.size, &counts);

    // End of input means that every producer has exited: what they wrote is all there.
    let producers_done = Arc::new(AtomicBool::new(false));
    {
        let done = producers_done.clone();
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
                done.store(true, Ordering::Release);
            })
            .with_context(|| format!("{who}: starting a thread"))?;
    }

    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready").context(who)?;

    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    let mut handle = |m: Message<'_>| {
        if first.is_none() {
            first = Some(Instant::now());
        }
        checker.check(m.position(), m.payload());
    };
    let read = read_until_done(&mut consumer, &producers_done, &mut last, &mut handle)
        .with_context(|| format!("{who}: reading at position {}", consumer.position()));

    let elapsed = match (first, last) {
        (Some(first), Some(last)) => last.saturating_duration_since(first),
        _ => Duration::ZERO,
    };
    let summary = checker.finish();
    for problem in &summary.problems {
        writeln!(stdout, "problem {problem}").context(who)?;
    }
    // A read error ends the run here, after the problems found so far have been reported
    // (messages not read yet are not "missing": the consumer stopped before them).
    read?;
    for line in summary.missing_lines() {
        writeln!(stdout, "problem {line}").context(who)?;
    }
    writeln!(
        stdout,
        "result received={} elapsed_ns={} problems={} missing={}",
        summary.received,
        elapsed.as_nanos(),
        summary.problem_count,
        summary.missing()
    )
    .context(who)?;
    Ok(())
}

/// Reads batches into `handle` until `producers_done` is set and nothing is left, noting the
/// time of each non-empty batch in `last`.
fn read_until_done(
    consumer: &mut logbus::Consumer,
    producers_done: &AtomicBool,
    last: &mut Option<Instant>,
    mut handle: impl FnMut(Message<'_>),
) -> logbus::Result<()> {
    loop {
        if consumer.wait_batch(BATCH, Some(IDLE), &mut handle)? > 0 {
            *last = Some(Instant::now());
        } else if producers_done.load(Ordering::Acquire) {
            // Every producer has exited, so every message is committed: read to the end.
            while consumer.poll_batch(BATCH, &mut handle)? > 0 {
                *last = Some(Instant::now());
            }
            return Ok(());
        }
    }
}
