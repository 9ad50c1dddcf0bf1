//! `logbus sub`: prints the messages of a log, as text, hex, JSON or length-prefixed
//! binary, from where it is asked to start; exits once it has printed every committed
//! message, or waits for more with `--follow`.

use crate::show::{self, JsonPayload, PayloadStyle};
use crate::signals;
use crate::start::{parse_count, parse_from, From};
use anyhow::{Context, Result};
use clap::Args;
use logbus::{Log, Message};
use serde::Serialize;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

/// The long help's examples, shown by `logbus sub --help`.
pub const AFTER_LONG_HELP: &str = "\
Examples:
  logbus sub /dev/shm/orders                      every message there is now, one a line
  logbus sub /dev/shm/orders --follow             then wait for more, until Ctrl-C
  logbus sub /dev/shm/orders --from latest --follow        only what comes from now on
  logbus sub /dev/shm/orders --from 4096 --count 1         the message at position 4096
  logbus sub /dev/shm/orders --format json | jq -r .payload
  logbus sub /dev/shm/orders --format hex         binary payloads, exactly, one a line

Formats:
  text    each payload as it is, then a newline (a payload that holds newlines or other
          binary bytes is written as it is: use hex, json or binary for those)
  hex     each payload in lowercase hex, then a newline; `logbus pub --hex` reads it back
  json    one object per line, with these stable fields: position, producer, timestamp
          (RFC 3339, UTC, nanoseconds; null if the log has no timestamps), timestamp_ns,
          length, and payload: the payload as a JSON string if it is valid UTF-8, else null
          with payload_hex holding it in hex
  binary  each payload as a 4-byte length (u32, little-endian) and the bytes, as
          `logbus pub --binary` reads them

--from takes earliest (the default), latest (only messages claimed from now on), a position
(as dump, json or pub --positions show them: a message's byte offset in the log), or @NAME,
a durable cursor, which this version does not have yet. Payload CRCs are checked: a mismatch
stops sub with an error naming the position (--no-verify skips the check).";

/// How `sub` writes each message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The payload as it is, then a newline.
    Text,
    /// The payload in hex, then a newline.
    Hex,
    /// One JSON object per line.
    Json,
    /// A u32 little-endian length, then the payload.
    Binary,
}

/// Arguments of `logbus sub`.
#[derive(Args, Debug)]
pub struct SubArgs {
    /// The log directory.
    pub path: PathBuf,

    /// Where to start: earliest, latest, a position, or @NAME (a durable cursor).
    #[arg(long, value_name = "START", default_value = "earliest", value_parser = parse_from)]
    pub from: From,

    /// Stop after N messages.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub count: Option<u64>,

    /// How to write each message.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,

    /// Once every committed message is printed, wait for more (until Ctrl-C or --count).
    #[arg(long)]
    pub follow: bool,

    /// Do not check payloads against their CRC32C.
    #[arg(long)]
    pub no_verify: bool,
}

/// One message in `--format json`.
#[derive(Serialize)]
struct JsonMessage {
    position: u64,
    producer: u16,
    timestamp: Option<String>,
    timestamp_ns: Option<u64>,
    length: usize,
    #[serde(flatten)]
    payload: JsonPayload,
}

/// How long one wait lasts before sub looks whether Ctrl-C was pressed.
const LOOK_AGAIN: Duration = Duration::from_millis(100);

/// Runs `logbus sub`.
pub fn run(args: &SubArgs) -> Result<()> {
    let log = Log::open(&args.path)?;
    if args.follow {
        signals::catch_interrupts()?;
    }
    let mut consumer = args.from.consumer(&log)?;
    consumer.verify_checksums(!args.no_verify);
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut printed = 0u64;
    let result = (|| -> Result<()> {
        while args.count.is_none_or(|count| printed < count) {
            let position = consumer.position();
            let message = consumer
                .poll()
                .with_context(|| format!("reading at position {position}"))?;
            if let Some(message) = message {
                write(&mut out, &message, args.format)?;
                printed += 1;
                continue;
            }
            if !args.follow {
                break;
            }
            out.flush()?;
            commit_cursor(&consumer)?;
            loop {
                if signals::interrupted() {
                    return Ok(());
                }
                let message = consumer
                    .wait(Some(LOOK_AGAIN))
                    .with_context(|| format!("reading at position {position}"))?;
                if let Some(message) = message {
                    write(&mut out, &message, args.format)?;
                    printed += 1;
                    break;
                }
            }
        }
        Ok(())
    })();
    let result = result
        .and_then(|()| out.flush().map_err(anyhow::Error::from))
        .and_then(|()| commit_cursor(&consumer));
    match result {
        Err(e) if crate::dump::is_broken_pipe(&e) => return Ok(()),
        other => other?,
    }
    if !args.follow && args.count.is_none_or(|count| printed < count) {
        let tail = log.tail();
        let position = consumer.position();
        if position < tail {
            eprintln!(
                "logbus: note: stopped at position {position}: a message claimed there is not committed yet (claims reach {tail}); --follow waits for it"
            );
        }
    }
    Ok(())
}

/// Commits a durable cursor (`--from @NAME`) at what has been printed and flushed: at least
/// once — a sub killed before this prints those messages again next time.
fn commit_cursor(consumer: &logbus::Consumer) -> Result<()> {
    if consumer.name().is_some() {
        consumer.commit_position()?;
    }
    Ok(())
}

fn write(out: &mut impl Write, message: &Message<'_>, format: Format) -> Result<()> {
    let payload = message.payload();
    match format {
        Format::Text => {
            out.write_all(payload)?;
            out.write_all(b"\n")?;
        }
        Format::Hex => writeln!(out, "{}", show::hex(payload))?,
        Format::Binary => {
            let len = u32::try_from(payload.len()).context("a payload over 4 GiB")?;
            out.write_all(&len.to_le_bytes())?;
            out.write_all(payload)?;
        }
        Format::Json => {
            let line = JsonMessage {
                position: message.position(),
                producer: message.producer(),
                timestamp: message.timestamp_ns().map(show::rfc3339),
                timestamp_ns: message.timestamp_ns(),
                length: payload.len(),
                payload: JsonPayload::new(payload, PayloadStyle::Text),
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}
