//! `logbus stat`: a live view of a log, refreshed every interval: the tail, messages and
//! bytes a second, the producers live and dead, and (once durable cursors exist) each named
//! consumer's position and lag. `--once --json` prints one report for scripts.
//!
//! The rates come from a consumer of stat's own that starts at the tail and counts what
//! is committed after it; that consumer takes no slot and writes nothing in the log.

use crate::logdir;
use crate::show;
use crate::signals;
use crate::units;
use anyhow::Result;
use clap::Args;
use logbus::{Consumer, Log, StartAt};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The long help's examples and JSON fields, shown by `logbus stat --help`.
pub const AFTER_LONG_HELP: &str = "\
Examples:
  logbus stat /dev/shm/orders                     refreshed every second, until Ctrl-C
  logbus stat /dev/shm/orders --interval 5        every 5 seconds, rates over 5 seconds
  logbus stat /dev/shm/orders --once              one report (rates over one interval)
  logbus stat /dev/shm/orders --once --interval 0 --json     at once, without rates
  logbus stat /dev/shm/orders --json              one JSON line every second

The rates: messages/s and MB/s of payload count the messages committed during the interval
(read by a consumer of stat's own, from the tail it saw at the start); 'the tail moves' is
the bytes claimed per second, headers, padding and claims in flight included. A producer
is running if its process (pid and start time) still exists; a dead producer's slot is
taken over by the next producer that needs one.

JSON (--json): one object per report, on one line, with these stable fields:
  time, time_ns             when the report was made (RFC 3339 UTC, and ns since the epoch)
  path, log_id, segment_capacity, checksums, timestamps
  tail                      the position the next claim gets
  earliest_position         the base of the oldest segment file
  segment_files, segment_bytes     the segment files and their size on disk
  interval_s                the interval the rates are measured over; null without rates
  messages_per_s, payload_bytes_per_s, tail_bytes_per_s      null without rates
  rate_error                why the rates stopped (a corrupt frame, say), else null
  producers_live, producers_dead
  exclusive_pid             the process whose exclusive producer holds the log, or null
  producers                 [{slot, pid, alive, start_time, acquired, acquired_ns}]
  durable_cursors           true: this version keeps durable cursors
  consumers                 [{name, position, lag, pid}]: each durable cursor, its committed
                            position, how far behind the tail that is, and the pid holding it";

/// Arguments of `logbus stat`.
#[derive(Args, Debug)]
pub struct StatArgs {
    /// The log directory.
    pub path: PathBuf,

    /// Print one report and exit; its rates are measured over one --interval (none if 0).
    #[arg(long)]
    pub once: bool,

    /// One JSON object per report (fields below) instead of the text view.
    #[arg(long)]
    pub json: bool,

    /// Seconds between reports, and the window the rates are measured over.
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_interval)]
    pub interval: Duration,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("'{text}' is not a number of seconds from 0 to 86400"))
}

#[derive(Serialize, Debug)]
struct Report {
    time: String,
    time_ns: u64,
    path: String,
    log_id: String,
    segment_capacity: u64,
    checksums: bool,
    timestamps: bool,
    tail: u64,
    earliest_position: u64,
    segment_files: usize,
    segment_bytes: u64,
    interval_s: Option<f64>,
    messages_per_s: Option<f64>,
    payload_bytes_per_s: Option<f64>,
    tail_bytes_per_s: Option<f64>,
    rate_error: Option<String>,
    producers_live: usize,
    producers_dead: usize,
    exclusive_pid: Option<u32>,
    producers: Vec<ProducerRow>,
    durable_cursors: bool,
    consumers: Vec<ConsumerRow>,
}

#[derive(Serialize, Debug)]
struct ProducerRow {
    slot: u16,
    pid: u32,
    alive: bool,
    start_time: u64,
    acquired: String,
    acquired_ns: u64,
}

/// A named durable cursor, from `Log::consumers`.
#[derive(Serialize, Debug)]
struct ConsumerRow {
    name: String,
    position: u64,
    lag: u64,
    pid: Option<u32>,
}

/// What the rates are measured from: stat's own consumer and the tail it saw last.
struct Meter {
    consumer: Option<Consumer>,
    error: Option<String>,
    tail: u64,
    at: Instant,
}

impl Meter {
    fn new(log: &Log) -> Meter {
        let tail = log.tail();
        let (mut consumer, error) = match log.consumer(StartAt::Position(tail)) {
            Ok(consumer) => (Some(consumer), None),
            Err(_) => match log.consumer(StartAt::Latest) {
                Ok(consumer) => (Some(consumer), None),
                Err(e) => (None, Some(e.to_string())),
            },
        };
        // An observer must not revoke a slow live producer's claim (its commit would fail);
        // a dead producer's claim it pads as every consumer does.
        if let Some(consumer) = consumer.as_mut() {
            consumer.set_claim_timeout(Duration::MAX);
        }
        Meter {
            consumer,
            error,
            tail,
            at: Instant::now(),
        }
    }

    /// Messages and payload bytes committed since the last call, the tail's advance and the
    /// time that passed.
    fn sample(&mut self, log: &Log) -> (u64, u64, u64, Duration) {
        let tail = log.tail();
        let now = Instant::now();
        let (mut messages, mut bytes) = (0u64, 0u64);
        if let Some(consumer) = self.consumer.as_mut() {
            // Up to the tail seen now, so that a fast log cannot keep stat reading forever.
            while consumer.position() < tail {
                match consumer.poll_batch(4096, |m| {
                    messages += 1;
                    bytes += m.payload().len() as u64;
                }) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        self.error = Some(format!("{e}"));
                        self.consumer = None;
                        break;
                    }
                }
            }
        }
        let advance = tail.saturating_sub(self.tail);
        let elapsed = now - self.at;
        self.tail = tail;
        self.at = now;
        (messages, bytes, advance, elapsed)
    }
}

/// Runs `logbus stat`.
pub fn run(args: &StatArgs) -> Result<()> {
    signals::catch_interrupts()?;
    let log = Log::open(&args.path)?;
    let mut meter = Meter::new(&log);
    let mut out = std::io::stdout().lock();
    let live_screen = !args.once && !args.json && std::io::stdout().is_terminal();
    let interval = args.interval;
    if args.once {
        let rates = if interval.is_zero() {
            None
        } else {
            if !sleep_unless_interrupted(interval) {
                return Ok(());
            }
            Some(meter.sample(&log))
        };
        let report = report(args, &log, rates, meter.error.clone())?;
        return print(&mut out, &report, args, None, false);
    }
    // A live view: the first report at once, without rates; then one every interval (every
    // second, without rates, if the interval is 0).
    let pause = if interval.is_zero() {
        Duration::from_secs(1)
    } else {
        interval
    };
    let mut rates = None;
    loop {
        let report = report(args, &log, rates, meter.error.clone())?;
        print(&mut out, &report, args, Some(pause), live_screen)?;
        if !sleep_unless_interrupted(pause) {
            return Ok(());
        }
        rates = (!interval.is_zero()).then(|| meter.sample(&log));
    }
}

/// Writes one report; a closed pipe (`logbus stat ... | head`) ends stat quietly.
fn print(
    out: &mut impl Write,
    report: &Report,
    args: &StatArgs,
    every: Option<Duration>,
    live_screen: bool,
) -> Result<()> {
    let written = if args.json {
        serde_json::to_writer(&mut *out, report)
            .map_err(anyhow::Error::from)
            .and_then(|()| writeln!(out).map_err(anyhow::Error::from))
    } else {
        text(out, report, every, live_screen, args.interval.is_zero())
    };
    match written.and_then(|()| out.flush().map_err(anyhow::Error::from)) {
        Err(e) if crate::dump::is_broken_pipe(&e) => std::process::exit(0),
        other => other,
    }
}

/// Sleeps for `d`, in short steps so that Ctrl-C is noticed; false if it was pressed.
fn sleep_unless_interrupted(d: Duration) -> bool {
    let end = Instant::now() + d;
    loop {
        if signals::interrupted() {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

fn report(
    args: &StatArgs,
    log: &Log,
    rates: Option<(u64, u64, u64, Duration)>,
    rate_error: Option<String>,
) -> Result<Report> {
    let now = show::now_ns();
    let options = log.options();
    let files = logdir::segment_files(log.path())?;
    let producers: Vec<ProducerRow> = log
        .producers()
        .into_iter()
        .map(|p| ProducerRow {
            slot: p.slot,
            pid: p.pid,
            alive: p.alive,
            start_time: p.start_time,
            acquired: show::rfc3339(p.acquired_ns),
            acquired_ns: p.acquired_ns,
        })
        .collect();
    let live = producers.iter().filter(|p| p.alive).count();
    let per_second = |amount: u64, elapsed: Duration| {
        let secs = elapsed.as_secs_f64();
        (secs > 0.0).then(|| amount as f64 / secs)
    };
    let (interval_s, messages_per_s, payload_bytes_per_s, tail_bytes_per_s) = match rates {
        Some((messages, bytes, advance, elapsed)) => (
            Some(elapsed.as_secs_f64()),
            per_second(messages, elapsed).filter(|_| rate_error.is_none()),
            per_second(bytes, elapsed).filter(|_| rate_error.is_none()),
            per_second(advance, elapsed),
        ),
        None => (None, None, None, None),
    };
    Ok(Report {
        time: show::rfc3339(now),
        time_ns: now,
        path: args.path.display().to_string(),
        log_id: show::log_id(&log.id()),
        segment_capacity: options.get_segment_capacity(),
        checksums: options.get_checksums(),
        timestamps: options.get_timestamps(),
        tail: log.tail(),
        earliest_position: files.first().map_or(0, |(base, _)| *base),
        segment_files: files.len(),
        segment_bytes: files.len() as u64
            * (logbus::format::SEGMENT_HEADER_LEN + options.get_segment_capacity()),
        interval_s,
        messages_per_s,
        payload_bytes_per_s,
        tail_bytes_per_s,
        rate_error,
        producers_live: live,
        producers_dead: producers.len() - live,
        exclusive_pid: log.exclusive_holder(),
        producers,
        durable_cursors: true,
        consumers: log
            .consumers()
            .into_iter()
            .map(|cursor| ConsumerRow {
                name: cursor.name,
                position: cursor.position,
                lag: cursor.lag,
                pid: cursor.holder,
            })
            .collect(),
    })
}

fn text(
    out: &mut impl Write,
    r: &Report,
    every: Option<Duration>,
    live_screen: bool,
    no_rates: bool,
) -> Result<()> {
    if live_screen {
        // Home the cursor and clear the screen: the view is redrawn in place.
        write!(out, "\x1b[H\x1b[2J")?;
    } else if every.is_some() {
        writeln!(out)?;
    }
    let every_text = every
        .map(|d| format!("  (every {}; Ctrl-C stops)", units::duration(d)))
        .unwrap_or_default();
    writeln!(out, "logbus stat {}  {}{every_text}", r.path, r.time)?;
    writeln!(
        out,
        "tail       {} (earliest position {}; {} of {}, {} in all)",
        r.tail,
        r.earliest_position,
        units::count(r.segment_files as u64, "segment file"),
        units::binary_bytes(r.segment_capacity),
        units::binary_bytes(r.segment_bytes)
    )?;
    match (r.messages_per_s, r.payload_bytes_per_s, r.tail_bytes_per_s) {
        (Some(messages), Some(bytes), Some(tail)) => writeln!(
            out,
            "rate       {}, {} of payload; the tail moves {}",
            message_rate(messages),
            byte_rate(bytes),
            byte_rate(tail)
        )?,
        (_, _, Some(tail)) => writeln!(
            out,
            "rate       the tail moves {}; messages not counted: {}",
            byte_rate(tail),
            r.rate_error.as_deref().unwrap_or("no reader")
        )?,
        _ if every.is_some() && !no_rates => {
            writeln!(out, "rate       - (measured from the next report on)")?
        }
        _ => writeln!(out, "rate       - (not measured: --interval 0)")?,
    }
    writeln!(
        out,
        "producers  {} running, {} dead{}",
        r.producers_live,
        r.producers_dead,
        r.exclusive_pid.map_or(String::new(), |pid| format!(
            " (an exclusive producer, pid {pid}: no other may write)"
        ))
    )?;
    for p in &r.producers {
        writeln!(
            out,
            "  slot {:<5} pid {:<8} {:<8} since {}",
            p.slot,
            p.pid,
            if p.alive { "running" } else { "dead" },
            p.acquired
        )?;
    }
    if r.consumers.is_empty() {
        writeln!(out, "consumers  no durable cursors")?;
    }
    for c in &r.consumers {
        writeln!(
            out,
            "consumer   {:<16} at {:<14} lag {:<14} {}",
            c.name,
            c.position,
            c.lag,
            c.pid.map_or_else(
                || "not held".to_string(),
                |pid| format!("held by pid {pid}")
            )
        )?;
    }
    Ok(())
}

/// `812 msg/s`, `12,345 msg/s`, `7.05 M msg/s`.
fn message_rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2} M msg/s", per_second / 1e6)
    } else {
        format!("{} msg/s", units::thousands(per_second.round() as u64))
    }
}

/// `0 B/s`, `12.3 kB/s`, `226 MB/s` (decimal units, as the demo prints).
fn byte_rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.0} MB/s", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.1} kB/s", per_second / 1e3)
    } else {
        format!("{:.0} B/s", per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_well() {
        assert_eq!(message_rate(812.4), "812 msg/s");
        assert_eq!(message_rate(12_345.0), "12,345 msg/s");
        assert_eq!(message_rate(7_050_000.0), "7.05 M msg/s");
        assert_eq!(byte_rate(0.0), "0 B/s");
        assert_eq!(byte_rate(12_345.0), "12.3 kB/s");
        assert_eq!(byte_rate(226e6), "226 MB/s");
    }

    #[test]
    fn intervals_parse() {
        assert_eq!(parse_interval("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("0"), Ok(Duration::ZERO));
        assert!(parse_interval("-1").is_err());
        assert!(parse_interval("soon").is_err());
    }
}
