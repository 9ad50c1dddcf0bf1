//! `logbus pub`: appends each line of standard input to a log as one message (or each
//! length-prefixed record with `--binary`, or each line of hex with `--hex`), creating the
//! log first if asked.

use crate::show;
use crate::units;
use anyhow::{bail, Context, Result};
use clap::Args;
use logbus::{Log, LogOptions, Producer};
use std::io::{BufRead, BufWriter, Read, Write};
use std::path::PathBuf;

/// The long help's examples, shown by `logbus pub --help`.
pub const AFTER_LONG_HELP: &str = "\
Examples:
  echo hello | logbus pub /dev/shm/orders --create       make the log, send one message
  logbus pub /dev/shm/orders < orders.txt                 one message per line
  logbus pub /dev/shm/orders --create --segment-capacity 1MiB --no-timestamps < lines.txt
  logbus pub /dev/shm/orders --positions < lines.txt      print where each message went
  logbus sub /dev/shm/a --format binary | logbus pub /dev/shm/b --binary --create
                                                          copy every message of one log to another

Input:
  lines (the default)  each line is one message, without its newline (a carriage return
                       before it is kept); an empty line is an empty message; a last line
                       without a newline is a message too.
  --binary             records back to back, each a 4-byte length (u32, little-endian) and
                       then that many bytes: any bytes at all, as `logbus sub --format binary`
                       writes them. Input that ends inside a record is an error.
  --hex                each line is one message written in hex (whitespace ignored), as
                       `logbus sub --format hex` writes them.

The log must exist unless --create is given; with --create, the options apply only if the
log is made now (an existing log keeps its own, and pub says so if they differ). A message
larger than the log takes (an eighth of a segment, less 24 bytes) stops pub with an error
naming it; the messages before it are in the log.";

/// Arguments of `logbus pub`.
#[derive(Args, Debug)]
pub struct PubArgs {
    /// The log directory.
    pub path: PathBuf,

    /// Read length-prefixed records (a u32 little-endian length, then the bytes) instead
    /// of lines.
    #[arg(long, conflicts_with = "hex")]
    pub binary: bool,

    /// Read lines of hex digits, one message each.
    #[arg(long)]
    pub hex: bool,

    /// Create the log if there is none.
    #[arg(long)]
    pub create: bool,

    /// With --create: bytes of data per segment file, a power of two from 64KiB to 1GiB
    /// [default: 64MiB].
    #[arg(long, value_name = "BYTES", value_parser = units::parse_size, requires = "create")]
    pub segment_capacity: Option<u64>,

    /// With --create: do not write a CRC32C of each payload.
    #[arg(long, requires = "create")]
    pub no_checksums: bool,

    /// With --create: do not stamp messages with the time.
    #[arg(long, requires = "create")]
    pub no_timestamps: bool,

    /// With --create: a single-producer log (LogOptions::single_producer): one producer at a
    /// time, in any process, which claims with no atomic add; where the log recycles its
    /// segments, they are not zeroed in whole.
    #[arg(long, requires = "create")]
    pub single_producer: bool,

    /// With --create: permission bits of the log's files, in octal, including 600
    /// [default: 600].
    #[arg(long, value_name = "MODE", value_parser = parse_mode, requires = "create")]
    pub file_mode: Option<u32>,

    /// Print the position of each message sent, one per line.
    #[arg(long)]
    pub positions: bool,
}

fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim().trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| {
            format!("'{text}' is not a file mode: expected octal permission bits such as 640")
        })
}

/// Runs `logbus pub`.
pub fn run(args: &PubArgs) -> Result<()> {
    let log = open(args)?;
    let mut producer = log.producer().context("becoming a producer of the log")?;
    let mut positions = BufWriter::new(std::io::stdout());
    let mut input = std::io::stdin().lock();
    let result = if args.binary {
        send_binary(&mut producer, &mut input, args.positions, &mut positions)
    } else {
        send_lines(&mut producer, &mut input, args, &mut positions)
    };
    let flushed = positions.flush().map_err(anyhow::Error::from);
    match result.and(flushed) {
        Err(e) if crate::dump::is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn open(args: &PubArgs) -> Result<Log> {
    if !args.create {
        return Log::open(&args.path).map_err(|e| match e {
            logbus::Error::NotALog { .. } => {
                anyhow::Error::new(e).context("use --create to make a log there")
            }
            logbus::Error::Io { ref source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                anyhow::Error::new(e).context("no log there: use --create to make one")
            }
            e => e.into(),
        });
    }
    let mut options = LogOptions::new()
        .checksums(!args.no_checksums)
        .timestamps(!args.no_timestamps)
        .single_producer(args.single_producer);
    if let Some(capacity) = args.segment_capacity {
        options = options.segment_capacity(capacity);
    }
    if let Some(mode) = args.file_mode {
        options = options.file_mode(mode);
    }
    let log = Log::open_or_create(&args.path, &options)?;
    let actual = log.options();
    let mut differ = Vec::new();
    if args
        .segment_capacity
        .is_some_and(|c| c != actual.get_segment_capacity())
    {
        differ.push(format!(
            "{} segments",
            units::binary_bytes(actual.get_segment_capacity())
        ));
    }
    if args.no_checksums && actual.get_checksums() {
        differ.push("checksums on".into());
    }
    if args.no_timestamps && actual.get_timestamps() {
        differ.push("timestamps on".into());
    }
    if args.single_producer && !actual.get_single_producer() {
        differ.push("several producers allowed".into());
    }
    if args.file_mode.is_some_and(|m| m != actual.get_file_mode()) {
        differ.push(format!("file mode {:04o}", actual.get_file_mode()));
    }
    if !differ.is_empty() {
        eprintln!(
            "logbus: note: {} is a log already, made with {}; the options given were not applied",
            args.path.display(),
            differ.join(", ")
        );
    }
    Ok(log)
}

fn send(producer: &mut Producer, payload: &[u8], positions: Option<&mut impl Write>) -> Result<()> {
    let position = producer.offer(payload)?;
    if let Some(out) = positions {
        writeln!(out, "{position}")?;
    }
    Ok(())
}

fn send_lines(
    producer: &mut Producer,
    input: &mut impl BufRead,
    args: &PubArgs,
    positions: &mut impl Write,
) -> Result<()> {
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .context("reading standard input")?;
        if n == 0 {
            return Ok(());
        }
        number += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let sent = if args.hex {
            let text = String::from_utf8_lossy(&line);
            show::parse_hex(&text)
                .map_err(anyhow::Error::msg)
                .and_then(|bytes| send(producer, &bytes, args.positions.then_some(&mut *positions)))
        } else {
            send(producer, &line, args.positions.then_some(&mut *positions))
        };
        sent.with_context(|| format!("line {number} of standard input"))?;
    }
}

fn send_binary(
    producer: &mut Producer,
    input: &mut impl Read,
    print_positions: bool,
    positions: &mut impl Write,
) -> Result<()> {
    let max = producer.max_payload_len();
    let mut payload = Vec::new();
    let mut offset = 0u64;
    let mut number = 0u64;
    loop {
        let mut prefix = [0u8; 4];
        let got = read_full(input, &mut prefix)?;
        if got == 0 {
            return Ok(());
        }
        number += 1;
        if got < prefix.len() {
            bail!(
                "record {number} at byte {offset} of standard input: the input ends inside its 4-byte length"
            );
        }
        let len = u32::from_le_bytes(prefix) as usize;
        if len > max {
            bail!(
                "record {number} at byte {offset} of standard input: {len} bytes, but this log takes at most {max} bytes a message (is the input really length-prefixed, u32 little-endian?)"
            );
        }
        payload.resize(len, 0);
        let got = read_full(input, &mut payload)?;
        if got < len {
            bail!(
                "record {number} at byte {offset} of standard input: the input ends after {got} of its {len} bytes"
            );
        }
        send(
            producer,
            &payload,
            print_positions.then_some(&mut *positions),
        )
        .with_context(|| format!("record {number} at byte {offset} of standard input"))?;
        offset += 4 + len as u64;
    }
}

/// Reads until `buf` is full or the input ends; returns how much it read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading standard input"),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_octal() {
        assert_eq!(parse_mode("640"), Ok(0o640));
        assert_eq!(parse_mode("0640"), Ok(0o640));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert!(parse_mode("999").is_err());
        assert!(parse_mode("1777").is_err());
    }
}
