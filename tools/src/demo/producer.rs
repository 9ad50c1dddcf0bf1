//! The demo's producer process (`logbus demo-producer`, hidden): opens the log, says
//! `ready`, waits for `go` on its standard input, sends its messages with
//! [`logbus::Producer::offer`] and reports `result sent=N elapsed_ns=T`.

use super::message;
use anyhow::{ensure, Context, Result};
use clap::Args;
use logbus::Log;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `logbus demo-producer`, which `logbus demo` passes.
#[derive(Args, Debug)]
pub struct ProducerArgs {
    /// The log directory.
    #[arg(long)]
    pub log: PathBuf,
    /// This producer's id, written in every message.
    #[arg(long)]
    pub id: u64,
    /// Messages to send: sequence numbers 0 up to this.
    #[arg(long)]
    pub messages: u64,
    /// Bytes per message.
    #[arg(long)]
    pub size: usize,
}

/// Runs one producer process.
pub fn run(args: &ProducerArgs) -> Result<()> {
    let who = format!("demo producer {}", args.id);
    ensure!(
        args.size >= message::HEADER_LEN,
        "{who}: --size {} is below {}",
        args.size,
        message::HEADER_LEN
    );
    let log = Log::open(&args.log).with_context(|| format!("{who}: opening the log"))?;
    let mut producer = log
        .producer()
        .with_context(|| format!("{who}: making a producer"))?;
    let mut buf = vec![0u8; args.size];
    // Write the first message once before the start, so that its page faults are not timed.
    message::fill(&mut buf, args.id, 0);

    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready slot={}", producer.slot()).with_context(|| who.clone())?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("{who}: waiting for the start"))?;
    ensure!(
        line.trim() == "go",
        "{who}: the demo went away before the start"
    );

    let start = Instant::now();
    for sequence in 0..args.messages {
        message::fill(&mut buf, args.id, sequence);
        producer
            .offer(&buf)
            .with_context(|| format!("{who}: sending message {sequence}"))?;
    }
    let elapsed = start.elapsed();
    drop(producer);
    writeln!(
        stdout,
        "result sent={} elapsed_ns={}",
        args.messages,
        elapsed.as_nanos()
    )
    .with_context(|| who.clone())?;
    Ok(())
}
