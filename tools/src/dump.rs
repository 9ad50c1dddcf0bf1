//! `logbus dump`: a log, or one segment file of it, as it lies: the meta file, each segment,
//! every frame and record, with problems and claims in flight reported on lines of their own.
//! `--verify` shows only those and the summary; `--json` writes one JSON object per line;
//! `--follow` goes on printing as producers append.
//!
//! Segments are read through `logbus::inspect`, the meta file through
//! [`logbus::inspect::MetaFile`]: neither joins the log, so dump takes no producer slot and no
//! consumer position, never writes, and never lets `Log::open` recover the log first — a
//! crashed or corrupt log is shown as it lies.

use crate::logdir::{self, Target};
use crate::show::{self, JsonPayload, PayloadStyle};
use crate::signals;
use crate::start::{parse_count, parse_position};
use crate::units;
use anyhow::{bail, Result};
use clap::Args;
use logbus::format::{self, flags, kind, log_flags};
use logbus::inspect::MetaFile;
use logbus::inspect::{Frame, SegmentFile};
use serde::Serialize;
use std::collections::HashSet;
use std::io::{BufWriter, Stdout, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The long help's examples and the JSON fields, shown by `logbus dump --help`.
pub const AFTER_LONG_HELP: &str = "\
Examples:
  logbus dump /dev/shm/orders                  the meta file, every segment, every frame
  logbus dump /dev/shm/orders --verify         only problems and a summary; exit 1 if any
  logbus dump /dev/shm/orders/00000000000067108864.seg      one segment file on its own
  logbus dump /dev/shm/orders --from 4096 --count 10        ten frames from position 4096
  logbus dump /dev/shm/orders --payload hex --max-payload 0 whole payloads in hex
  logbus dump /dev/shm/orders --follow         like tail -f: new frames as they commit
  logbus dump /dev/shm/orders --json | jq 'select(.type == \"problem\")'

The listing: one line per committed frame with its position, kind (data, set for a message
set, padding), length (header + payload bytes, before alignment to 8), flags (c = CRC32C,
t = timestamp), producer slot, timestamp (RFC 3339, UTC), crc (ok, BAD, or - without one)
and payload; the records of a message set follow it, indented. Each segment ends with a
line of what it holds. Where the frames stop below the tail, bytes are claimed and not yet
committed: an 'in flight' line says so, and whether any producer still runs. That is not a
problem by itself. Positions are byte offsets in the log: give one to `logbus sub --from`.

Problems (every one is listed with its position, and dump then exits with status 1, with or
without --verify): a payload whose CRC32C does not match its header; a frame length that does
not fit its segment (the rest of that segment cannot be walked); a message set whose record
lengths run past its payload; a padding frame with flags or a producer; an unknown frame
kind; frame flags that disagree with the log's options; a segment file that is not one, or
whose header disagrees with the log (identity, capacity, options, base position); a missing
segment file; data past the tail.

JSON (--json): one object per line, its kind in \"type\"; these field names are stable.
  log          path, format_version, log_id (32 hex digits), created, created_ns,
               segment_capacity, checksums, timestamps, recycling (true: retired segments
               become new ones, and every reader locks; see docs/FORMAT.md),
               single_producer (true: one exclusive producer at a time, and recycled
               segments are not zeroed ahead),
               file_mode (octal text, \"0600\"), tail,
               earliest_position, segment_files, producer_slots, consumer_slots,
               producers_in_use, exclusive_pid (the process named as holding the log with an
               exclusive producer, or null), exclusive_alive (whether it still runs, or null),
               durable_cursors (true: consumer lines follow)
  producer     slot, pid, alive, start_time (clock ticks since boot), acquired, acquired_ns,
               claim_position, claim_length (its claim in flight; null if none)
  consumer     name, position (committed), lag (tail - position), holder (pid or null),
               updated, updated_ns
  segment      path, base_position, end_position, capacity, format_version, log_id,
               checksums, timestamps, created, created_ns
  frame        position, kind (data | message_set | padding | unknown), kind_code, length,
               aligned_length, flags, producer, timestamp, timestamp_ns, checksum, crc_ok,
               payload_length, records, and the payload fields
  record       position, frame_position, index, length, and the payload fields
  segment_end  base_position, walked_to, stopped (end_of_data | segment_end |
               corrupt_frame | limit), used_bytes (walked_to - base_position), frames,
               data_frames, message_sets, records, padding_frames, in_flight
  in_flight    position, length, claimed_to (the tail), producer, producer_pid,
               producer_alive (null where no slot records the claim), producers_running,
               detail
  problem      problem (checksum_mismatch | corrupt_frame | bad_record | bad_padding |
               unknown_kind | bad_flags | segment_header | missing_segment | past_tail),
               position, file, detail
  summary      segments, frames, messages, data_frames, message_sets, records,
               padding_frames, in_flight, problems, end_position (the last segment's
               walked_to)
Times are RFC 3339 strings in UTC with nanoseconds, beside the same instant in *_ns
(nanoseconds since the Unix epoch); a field that does not apply is null. The payload fields:
with --payload text (the default), \"payload\" is the payload as a JSON string if it is valid
UTF-8, else null and \"payload_hex\" holds it in hex; with --payload hex only \"payload_hex\";
with --payload none neither. JSON lines always carry whole payloads (--max-payload is for
the text listing).";

/// Arguments of `logbus dump`.
#[derive(Args, Debug)]
pub struct DumpArgs {
    /// A log directory, or one segment file of a log (`NNNNNNNNNNNNNNNNNNNN.seg`).
    pub path: PathBuf,

    /// How to show payloads: escaped text (what is not printable as \n, \xNN, ...), hex, or
    /// not at all.
    #[arg(long, value_enum, default_value = "text")]
    pub payload: PayloadStyle,

    /// Show at most this many bytes of each payload in the listing (0: all of it).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub max_payload: usize,

    /// Start at the frame that holds position POS (earlier frames are neither shown nor
    /// checked).
    #[arg(long, value_name = "POS", value_parser = parse_position)]
    pub from: Option<u64>,

    /// Stop before position POS.
    #[arg(long, value_name = "POS", value_parser = parse_position)]
    pub to: Option<u64>,

    /// Stop after N frames.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub count: Option<u64>,

    /// Keep printing new frames as producers commit them, until Ctrl-C.
    #[arg(long)]
    pub follow: bool,

    /// One JSON object per line (fields below) instead of the listing.
    #[arg(long)]
    pub json: bool,

    /// Show only problems, claims in flight and the summary: check every frame (CRC,
    /// lengths, records, padding) and every segment header; exit 1 if there is a problem.
    #[arg(long)]
    pub verify: bool,
}

/// Runs `logbus dump`.
pub fn run(args: &DumpArgs) -> Result<()> {
    if args.follow {
        signals::catch_interrupts()?;
    }
    let mut dump = Dump::new(args);
    let result = match logdir::target(&args.path)? {
        Target::Log(dir) => dump.log(&dir),
        Target::Segment(path) => dump.segment_file(&path),
    };
    let result = result.and_then(|()| dump.summary());
    match result {
        Err(e) if is_broken_pipe(&e) => return Ok(()),
        other => other?,
    }
    let problems = dump.totals.problems;
    if problems > 0 {
        bail!(
            "{} found in {} (each is listed above with its position)",
            units::count(problems, "problem"),
            args.path.display()
        );
    }
    Ok(())
}

/// True if `e` is a write to a closed pipe (`logbus dump ... | head`): not worth a message.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

// ----- the lines dump writes ---------------------------------------------------------------

/// One line of output: in JSON, an object whose "type" is the variant's name.
#[derive(Serialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Log(LogLine),
    Producer(ProducerLine),
    Consumer(ConsumerLine),
    Segment(SegmentLine),
    Frame(FrameLine),
    Record(RecordLine),
    SegmentEnd(SegmentEndLine),
    InFlight(InFlightLine),
    Problem(ProblemLine),
    Summary(SummaryLine),
}

#[derive(Serialize, Debug)]
struct LogLine {
    path: String,
    format_version: u16,
    log_id: String,
    created: String,
    created_ns: u64,
    segment_capacity: u64,
    checksums: bool,
    timestamps: bool,
    recycling: bool,
    single_producer: bool,
    file_mode: String,
    tail: u64,
    earliest_position: u64,
    segment_files: usize,
    producer_slots: u32,
    consumer_slots: u32,
    producers_in_use: usize,
    exclusive_pid: Option<u32>,
    exclusive_alive: Option<bool>,
    durable_cursors: bool,
}

#[derive(Serialize, Debug)]
struct ProducerLine {
    slot: u16,
    pid: u32,
    alive: bool,
    start_time: u64,
    acquired: String,
    acquired_ns: u64,
    claim_position: Option<u64>,
    claim_length: Option<u64>,
}

#[derive(Serialize, Debug)]
struct ConsumerLine {
    name: String,
    position: u64,
    lag: u64,
    holder: Option<u32>,
    updated: String,
    updated_ns: u64,
}

#[derive(Serialize, Debug)]
struct SegmentLine {
    path: String,
    base_position: u64,
    end_position: u64,
    capacity: u64,
    format_version: u16,
    log_id: String,
    checksums: bool,
    timestamps: bool,
    created: String,
    created_ns: u64,
}

#[derive(Serialize, Debug)]
struct FrameLine {
    position: u64,
    kind: &'static str,
    kind_code: u8,
    length: u32,
    aligned_length: u64,
    flags: u8,
    producer: u16,
    timestamp: Option<String>,
    timestamp_ns: Option<u64>,
    checksum: Option<u32>,
    crc_ok: Option<bool>,
    payload_length: Option<usize>,
    records: Option<usize>,
    #[serde(flatten)]
    payload: JsonPayload,
    /// The payload again, for the text listing.
    #[serde(skip)]
    text: String,
}

#[derive(Serialize, Debug)]
struct RecordLine {
    position: u64,
    frame_position: u64,
    index: usize,
    length: usize,
    #[serde(flatten)]
    payload: JsonPayload,
    #[serde(skip)]
    text: String,
}

#[derive(Serialize, Debug, Default, Clone)]
struct SegmentEndLine {
    base_position: u64,
    walked_to: u64,
    stopped: &'static str,
    used_bytes: u64,
    frames: u64,
    data_frames: u64,
    message_sets: u64,
    records: u64,
    padding_frames: u64,
    in_flight: u64,
    #[serde(skip)]
    capacity: u64,
}

#[derive(Serialize, Debug)]
struct InFlightLine {
    position: u64,
    length: u64,
    claimed_to: u64,
    producer: Option<u16>,
    producer_pid: Option<u32>,
    producer_alive: Option<bool>,
    producers_running: usize,
    detail: String,
}

#[derive(Serialize, Debug)]
struct ProblemLine {
    problem: &'static str,
    position: Option<u64>,
    file: Option<String>,
    detail: String,
}

#[derive(Serialize, Debug, Default, Clone)]
struct SummaryLine {
    segments: u64,
    frames: u64,
    messages: u64,
    data_frames: u64,
    message_sets: u64,
    records: u64,
    padding_frames: u64,
    in_flight: u64,
    problems: u64,
    end_position: Option<u64>,
}

// ----- writing them ------------------------------------------------------------------------

struct Out {
    json: bool,
    /// A single segment file, not a log: its lines say more about it.
    standalone: bool,
    verify: bool,
    payload: PayloadStyle,
    max_payload: usize,
    writer: BufWriter<Stdout>,
}

impl Out {
    fn emit(&mut self, line: &Line) -> Result<()> {
        if self.verify
            && !matches!(
                line,
                Line::Problem(_) | Line::InFlight(_) | Line::Summary(_)
            )
        {
            return Ok(());
        }
        if self.json {
            serde_json::to_writer(&mut self.writer, line)?;
            writeln!(self.writer)?;
        } else {
            self.text(line)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.writer.flush()?;
        Ok(())
    }

    fn text(&mut self, line: &Line) -> Result<()> {
        let w = &mut self.writer;
        match line {
            Line::Log(l) => {
                writeln!(w, "log        {}", l.path)?;
                writeln!(
                    w,
                    "format     version {}, log id {}, created {}",
                    l.format_version, l.log_id, l.created
                )?;
                writeln!(
                    w,
                    "options    {} segments ({} bytes), checksums {}, timestamps {}, file mode {}{}{}",
                    units::binary_bytes(l.segment_capacity),
                    l.segment_capacity,
                    show::on_off(l.checksums),
                    show::on_off(l.timestamps),
                    l.file_mode,
                    if l.recycling {
                        ", retired segments recycled"
                    } else {
                        ""
                    },
                    if l.single_producer {
                        ", single producer"
                    } else {
                        ""
                    }
                )?;
                writeln!(
                    w,
                    "tail       {} (earliest position {}; {})",
                    l.tail,
                    l.earliest_position,
                    units::count(l.segment_files as u64, "segment file")
                )?;
                writeln!(
                    w,
                    "producers  {} of {} slots in use{}",
                    l.producers_in_use,
                    l.producer_slots,
                    match (l.exclusive_pid, l.exclusive_alive) {
                        (Some(pid), Some(true)) =>
                            format!("; exclusive to the producer of pid {pid}"),
                        (Some(pid), _) => format!(
                            "; held exclusive by pid {pid}, which no longer runs (the next \
                             producer takes the log over)"
                        ),
                        _ => String::new(),
                    }
                )?;
            }
            Line::Producer(p) => {
                let claim = match (p.claim_position, p.claim_length) {
                    (Some(position), Some(len)) => {
                        format!(", a claim of {len} bytes in flight at {position}")
                    }
                    (None, Some(len)) => format!(", a claim of {len} bytes being made"),
                    _ => String::new(),
                };
                writeln!(
                    w,
                    "  slot {:<5} pid {:<8} {:<8} since {}{claim}",
                    p.slot,
                    p.pid,
                    if p.alive { "running" } else { "dead" },
                    p.acquired
                )?
            }
            Line::Consumer(c) => writeln!(
                w,
                "consumer   {:<16} at {:<14} lag {:<14} {}, committed {}",
                c.name,
                c.position,
                c.lag,
                c.holder
                    .map_or_else(|| "not held".to_string(), |pid| format!("held by pid {pid}")),
                c.updated
            )?,
            Line::Segment(s) => {
                writeln!(w)?;
                if self.standalone {
                    writeln!(
                        w,
                        "segment    {}: positions {} to {} ({})",
                        s.path,
                        s.base_position,
                        s.end_position,
                        units::binary_bytes(s.capacity)
                    )?;
                    writeln!(
                        w,
                        "           format version {}, log id {}, checksums {}, timestamps {}",
                        s.format_version,
                        s.log_id,
                        show::on_off(s.checksums),
                        show::on_off(s.timestamps),
                    )?;
                    writeln!(w, "           created {}", s.created)?;
                } else {
                    let name = Path::new(&s.path)
                        .file_name()
                        .map_or_else(|| s.path.clone(), |n| n.to_string_lossy().into_owned());
                    writeln!(
                        w,
                        "segment    {name}: positions {} to {}, created {}",
                        s.base_position, s.end_position, s.created
                    )?;
                }
                writeln!(
                    w,
                    "{:>14}  {:<11} {:>8}  {:<5} {:>8}  {:<30}  {:<4} payload",
                    "position", "kind", "length", "flags", "producer", "timestamp", "crc"
                )?;
            }
            Line::Frame(f) => {
                let crc = match f.crc_ok {
                    Some(true) => "ok",
                    Some(false) => "BAD",
                    None => "-",
                };
                let payload = match f.records {
                    Some(n) => units::count(n as u64, "record"),
                    None => f.text.clone(),
                };
                let kind = short_kind(f.kind_code);
                let line = format!(
                    "{:>14}  {:<11} {:>8}  {:<5} {:>8}  {:<30}  {:<4} {}",
                    f.position,
                    kind,
                    f.length,
                    show::flags_text(f.flags),
                    f.producer,
                    f.timestamp.as_deref().unwrap_or("-"),
                    crc,
                    payload
                );
                writeln!(w, "{}", line.trim_end())?;
            }
            Line::Record(r) => {
                let line = format!(
                    "{:>14}    {:<9} {:>8}  {:<5} {:>8}  {:<30}  {:<4} {}",
                    r.position, "record", r.length, "", "", "", "", r.text
                );
                writeln!(w, "{}", line.trim_end())?;
            }
            Line::SegmentEnd(e) => writeln!(
                w,
                "end        {} {}: {} of {} bytes used; {}: {} data, {} ({}), {} padding, {} in flight",
                match e.stopped {
                    "end_of_data" | "segment_end" => "written to",
                    "corrupt_frame" => "unreadable from",
                    _ => "stopped at",
                },
                e.walked_to,
                e.used_bytes,
                e.capacity,
                units::count(e.frames, "frame"),
                units::thousands(e.data_frames),
                units::count(e.message_sets, "message set"),
                units::count(e.records, "record"),
                units::thousands(e.padding_frames),
                units::thousands(e.in_flight)
            )?,
            Line::InFlight(i) => writeln!(w, "in flight  at position {}: {}", i.position, i.detail)?,
            Line::Problem(p) => {
                let at = match (p.position, &p.file) {
                    (Some(position), Some(file)) => format!("at position {position} ({file})"),
                    (Some(position), None) => format!("at position {position}"),
                    (None, Some(file)) => format!("in {file}"),
                    (None, None) => String::new(),
                };
                writeln!(w, "PROBLEM    {at}: {}", p.detail)?;
            }
            Line::Summary(s) => {
                if !self.verify {
                    writeln!(w)?;
                }
                let verdict = if s.problems == 0 {
                    "no problems".to_string()
                } else {
                    units::count(s.problems, "problem")
                };
                writeln!(
                    w,
                    "{}   {}, {} ({} data, {}, {} padding), {}, {} in flight{}: {verdict}",
                    if self.verify { "verified" } else { "summary " },
                    units::count(s.segments, "segment"),
                    units::count(s.frames, "frame"),
                    units::thousands(s.data_frames),
                    units::count(s.message_sets, "message set"),
                    units::thousands(s.padding_frames),
                    units::count(s.messages, "message"),
                    units::thousands(s.in_flight),
                    s.end_position
                        .map(|end| format!(", written to {end}"))
                        .unwrap_or_default(),
                )?;
            }
        }
        Ok(())
    }
}

fn short_kind(code: u8) -> String {
    match code {
        kind::DATA => "data".into(),
        kind::PADDING => "padding".into(),
        kind::BATCH => "set".into(),
        other => format!("kind {other}"),
    }
}

// ----- walking -----------------------------------------------------------------------------

/// Why a walk of a segment stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// At a frame word that is still zero: nothing written there yet.
    Unwritten,
    /// At the segment's end.
    SegmentEnd,
    /// At a frame that breaks the format: the rest of the segment cannot be walked.
    Corrupt,
    /// At --to or --count.
    Limit,
}

struct Walked {
    /// The position the walk reached: where to resume.
    next: u64,
    stop: Stop,
    /// Frames shown by this walk.
    shown: u64,
}

/// What the log says the files and frames must agree with.
struct Expect {
    log_id: [u8; 16],
    capacity: u64,
    log_flags: u32,
}

struct Dump<'a> {
    args: &'a DumpArgs,
    out: Out,
    totals: SummaryLine,
    /// Frames shown so far, for --count.
    shown: u64,
    /// Walk errors already reported (a follower meets the same one on every walk).
    reported: HashSet<u64>,
    /// The written end of the last segment walked.
    end_position: Option<u64>,
}

impl<'a> Dump<'a> {
    fn new(args: &'a DumpArgs) -> Dump<'a> {
        Dump {
            args,
            out: Out {
                json: args.json,
                standalone: false,
                verify: args.verify,
                payload: args.payload,
                max_payload: args.max_payload,
                writer: BufWriter::new(std::io::stdout()),
            },
            totals: SummaryLine::default(),
            shown: 0,
            reported: HashSet::new(),
            end_position: None,
        }
    }

    fn from(&self) -> u64 {
        self.args.from.unwrap_or(0)
    }

    /// --count reached.
    fn done(&self) -> bool {
        self.args.count.is_some_and(|count| self.shown >= count)
    }

    fn problem(
        &mut self,
        problem: &'static str,
        position: Option<u64>,
        file: Option<&Path>,
        detail: String,
    ) -> Result<()> {
        self.totals.problems += 1;
        self.out.emit(&Line::Problem(ProblemLine {
            problem,
            position,
            file: file.map(|f| f.display().to_string()),
            detail,
        }))
    }

    fn summary(&mut self) -> Result<()> {
        self.totals.end_position = self.end_position;
        self.out.emit(&Line::Summary(self.totals.clone()))?;
        self.out.flush()
    }

    // ----- one segment file on its own ----------------------------------------------------

    fn segment_file(&mut self, path: &Path) -> Result<()> {
        let file = SegmentFile::open(path)?;
        self.out.standalone = true;
        let header = *file.header();
        self.segment_line(&file)?;
        let expected_flags = frame_flags(header.log_flags);
        if !self.args.follow {
            if file.end_position() > self.from()
                && self.args.to.is_none_or(|to| file.base_position() < to)
            {
                self.totals.segments += 1;
                let mut counts = self.segment_counts(&file);
                let walked = self.walk(&file, file.base_position(), expected_flags, &mut counts)?;
                self.segment_end(counts, walked.next, walked.stop)?;
            }
            return Ok(());
        }
        self.totals.segments += 1;
        let mut counts = self.segment_counts(&file);
        let mut resume = file.base_position();
        let mut idle = Idle::new();
        let mut stop = Stop::Unwritten;
        while !signals::interrupted() {
            let walked = self.walk(&file, resume, expected_flags, &mut counts)?;
            resume = walked.next;
            stop = walked.stop;
            self.out.flush()?;
            match walked.stop {
                Stop::SegmentEnd | Stop::Corrupt | Stop::Limit => break,
                Stop::Unwritten => idle.wait(walked.shown > 0),
            }
        }
        self.segment_end(counts, resume, stop)
    }

    // ----- a log directory ----------------------------------------------------------------

    fn log(&mut self, dir: &Path) -> Result<()> {
        // Not `Log::open`: it may recover the log (pad dead producers' claims, cut off a torn
        // tail) before dump could show it as it lies.
        let meta = MetaFile::open(dir)?;
        let header = *meta.header();
        let files = logdir::segment_files(dir)?;
        let producers = meta.producers()?;
        let tail = meta.tail()?;
        let exclusive = meta.exclusive_holder()?;
        self.out.emit(&Line::Log(LogLine {
            path: dir.display().to_string(),
            format_version: header.version,
            log_id: show::log_id(&header.log_id),
            created: show::rfc3339(header.created_ns),
            created_ns: header.created_ns,
            segment_capacity: header.segment_capacity,
            checksums: header.log_flags & log_flags::CHECKSUMS != 0,
            timestamps: header.log_flags & log_flags::TIMESTAMPS != 0,
            recycling: header.log_flags & log_flags::RECYCLING != 0,
            single_producer: header.log_flags & log_flags::SINGLE_PRODUCER != 0,
            file_mode: format!("{:04o}", header.file_mode),
            tail,
            earliest_position: files.first().map_or(0, |(base, _)| *base),
            segment_files: files.len(),
            producer_slots: header.producer_slots,
            consumer_slots: header.consumer_slots,
            producers_in_use: producers.len(),
            exclusive_pid: exclusive.map(|(pid, _)| pid),
            exclusive_alive: exclusive.map(|(_, alive)| alive),
            durable_cursors: true,
        }))?;
        for p in &producers {
            let claim = p.claim;
            self.out.emit(&Line::Producer(ProducerLine {
                slot: p.slot,
                pid: p.pid,
                alive: p.alive,
                start_time: p.start_time,
                acquired: show::rfc3339(p.acquired_ns),
                acquired_ns: p.acquired_ns,
                claim_position: claim.and_then(|c| c.position),
                claim_length: claim.map(|c| c.len),
            }))?;
        }
        let consumers = meta.consumers()?;
        if consumers.is_empty() && !self.out.json && !self.out.verify {
            writeln!(self.out.writer, "consumers  no durable cursors")?;
        }
        for c in consumers {
            self.out.emit(&Line::Consumer(ConsumerLine {
                lag: tail.saturating_sub(c.position),
                name: c.name,
                position: c.position,
                holder: c.holder,
                updated: show::rfc3339(c.updated_ns),
                updated_ns: c.updated_ns,
            }))?;
        }
        let expect = Expect {
            log_id: header.log_id,
            capacity: header.segment_capacity,
            log_flags: header.log_flags,
        };
        if self.args.follow {
            self.follow_log(dir, &expect, &files)
        } else {
            self.walk_log(dir, &meta, &expect, &files)
        }
    }

    /// Every segment file once, in order, with the checks that need the whole log: gaps
    /// between files, headers against the meta file, and the written data against the tail.
    fn walk_log(
        &mut self,
        dir: &Path,
        log: &MetaFile,
        expect: &Expect,
        files: &[(u64, PathBuf)],
    ) -> Result<()> {
        let capacity = expect.capacity;
        let from = self.from();
        let to = self.args.to;
        let in_range = |start: u64, end: u64| end > from && to.is_none_or(|to| start < to);
        let mut previous_end: Option<u64> = None;
        let mut limited = false;
        for (base, path) in files {
            let base = *base;
            if self.done() {
                limited = true;
                break;
            }
            if base % capacity != 0 {
                self.problem(
                    "segment_header",
                    Some(base),
                    Some(path),
                    format!(
                        "the file name says position {base}, which is not a multiple of the segment capacity {capacity}"
                    ),
                )?;
                continue;
            }
            let end = base + capacity;
            if let Some(previous) = previous_end {
                if base > previous && in_range(previous, base) {
                    self.problem(
                        "missing_segment",
                        Some(previous),
                        None,
                        format!(
                            "no segment file for positions {previous} to {base} (deleted by hand?): readers cannot get past position {previous}"
                        ),
                    )?;
                }
            }
            previous_end = Some(end);
            if !in_range(base, end) {
                continue;
            }
            let tail_before = log.tail()?;
            let Some(file) = self.open_segment(path, base, expect)? else {
                continue;
            };
            self.totals.segments += 1;
            let mut counts = self.segment_counts(&file);
            let walked = self.walk(&file, base, frame_flags(expect.log_flags), &mut counts)?;
            self.segment_end(counts, walked.next, walked.stop)?;
            if walked.stop == Stop::Limit {
                limited = true;
                break;
            }
            if walked.stop == Stop::Unwritten {
                let claimed_to = tail_before.clamp(base, end);
                if walked.next < claimed_to {
                    self.unwritten(log, &file, walked.next, tail_before)?;
                }
            }
            let tail_after = log.tail()?;
            if walked.next > base && walked.next > tail_after {
                self.problem(
                    "past_tail",
                    Some(tail_after),
                    Some(path),
                    format!(
                        "frames are committed up to position {}, past the tail {tail_after} that the meta file gives (what an exclusive producer that died between a commit and its store of the tail leaves: the next producer, or the next Log::open, moves the tail over them)",
                        walked.next
                    ),
                )?;
            }
        }
        // The tail's own segment must exist once anything is claimed in it.
        let tail = log.tail()?;
        if !limited && to.is_none() && tail > 0 {
            let tail_base = (tail - 1) / capacity * capacity;
            // Looked for now, not in the listing made at the start: producers may have made
            // it since.
            let missing = !dir.join(format::segment_file_name(tail_base)).exists();
            if missing && tail_base + capacity > from {
                self.tail_segment_missing(log, tail, tail_base)?;
            }
        }
        Ok(())
    }

    /// Claims reach into a segment whose file is not there.
    fn tail_segment_missing(&mut self, log: &MetaFile, tail: u64, tail_base: u64) -> Result<()> {
        let detail = format!(
            "the tail is at {tail}, in the segment for positions {tail_base} to {}, which has no file",
            tail_base + log.header().segment_capacity
        );
        let running = log.producers()?.iter().filter(|p| p.alive).count();
        if running > 0 {
            self.totals.in_flight += 1;
            self.out.emit(&Line::InFlight(InFlightLine {
                position: tail_base,
                length: tail - tail_base,
                claimed_to: tail,
                producer: None,
                producer_pid: None,
                producer_alive: None,
                producers_running: running,
                detail: format!("{detail} yet: a producer is making it"),
            }))
        } else {
            self.problem(
                "missing_segment",
                Some(tail_base),
                None,
                format!("{detail}, and no producer is running to make it"),
            )
        }
    }

    /// The walk of `file` stopped at `at`, where nothing is committed, below the tail: a
    /// claim in flight. Not a problem by itself: a running producer commits it, and a claim
    /// whose producer died is padded by the readers that reach it. Says whose claim it is
    /// when the meta file's producer table records it.
    fn unwritten(&mut self, log: &MetaFile, file: &SegmentFile, at: u64, tail: u64) -> Result<()> {
        let claimed_to = tail.min(file.end_position());
        let producers = log.producers()?;
        let running = producers.iter().filter(|p| p.alive).count();
        let covering = producers.iter().filter_map(|p| p.claim).find(|c| {
            c.position
                .is_some_and(|position| position <= at && at < position + c.len)
        });
        let mut line = InFlightLine {
            position: at,
            length: claimed_to - at,
            claimed_to: tail,
            producer: None,
            producer_pid: None,
            producer_alive: None,
            producers_running: running,
            detail: String::new(),
        };
        line.detail = match covering {
            Some(claim) => {
                let position = claim.position.unwrap_or(at);
                line.length = claim.len.min(file.end_position() - position);
                line.position = position;
                line.producer = Some(claim.slot);
                let owner = producers.iter().find(|p| p.slot == claim.slot);
                line.producer_pid = owner.map(|p| p.pid);
                line.producer_alive = owner.map(|p| p.alive);
                match owner {
                    Some(p) if p.alive => format!(
                        "{} bytes claimed by producer slot {} (pid {}, running), not committed yet",
                        claim.len, claim.slot, p.pid
                    ),
                    Some(p) => format!(
                        "{} bytes claimed by producer slot {} (pid {}, no longer running): never to be committed; readers pad it when they reach it",
                        claim.len, claim.slot, p.pid
                    ),
                    None => format!(
                        "{} bytes claimed by producer slot {}, which no process holds now; readers pad it when they reach it",
                        claim.len, claim.slot
                    ),
                }
            }
            None if running > 0 => format!(
                "nothing committed here yet, though claims reach position {tail}: a claim in flight, with {} running",
                units::count(running as u64, "producer")
            ),
            None => format!(
                "nothing committed here, though claims reach position {tail}, and no producer is running: a claim left by a producer that died before recording it; readers pad it when they reach it"
            ),
        };
        self.totals.in_flight += 1;
        self.out.emit(&Line::InFlight(line))
    }

    /// Follows the log from the first segment in range, resuming where each walk stopped,
    /// and waiting when nothing new is there.
    fn follow_log(&mut self, dir: &Path, expect: &Expect, files: &[(u64, PathBuf)]) -> Result<()> {
        let capacity = expect.capacity;
        let earliest = files.first().map_or(0, |(base, _)| *base);
        let start = self.from().max(earliest);
        let mut base = start - start % capacity;
        let mut resume = base;
        let mut current: Option<(SegmentFile, SegmentEndLine)> = None;
        let mut idle = Idle::new();
        let expected_flags = frame_flags(expect.log_flags);
        let mut last_stop = Stop::Unwritten;
        while !signals::interrupted() && !self.done() && self.args.to.is_none_or(|to| resume < to) {
            if current.is_none() {
                let path = dir.join(format::segment_file_name(base));
                if path.exists() {
                    match self.open_segment(&path, base, expect)? {
                        Some(file) => {
                            self.totals.segments += 1;
                            let counts = self.segment_counts(&file);
                            current = Some((file, counts));
                        }
                        None => {
                            base += capacity;
                            resume = base;
                        }
                    }
                    continue;
                }
                let later = logdir::segment_files(dir)?
                    .into_iter()
                    .map(|(b, _)| b)
                    .find(|&b| b > base && b % capacity == 0);
                if let Some(later) = later {
                    self.problem(
                        "missing_segment",
                        Some(base),
                        None,
                        format!(
                            "no segment file for positions {base} to {later} (deleted by retention before dump reached it, or by hand): going on at {later}"
                        ),
                    )?;
                    base = later;
                    resume = base;
                    continue;
                }
                self.out.flush()?;
                idle.wait(false);
                continue;
            }
            // No shortcut on the tail: an exclusive producer commits a frame before it moves
            // the tail past it (and may die in between), and looking costs one read.
            let (file, counts) = current.as_mut().expect("opened above");
            let walked = self.walk(file, resume, expected_flags, counts)?;
            resume = walked.next;
            last_stop = walked.stop;
            match walked.stop {
                Stop::SegmentEnd | Stop::Corrupt => {
                    let (_, counts) = current.take().expect("opened above");
                    self.segment_end(counts, resume, walked.stop)?;
                    base += capacity;
                    resume = base;
                }
                Stop::Limit => break,
                Stop::Unwritten => {
                    self.out.flush()?;
                    idle.wait(walked.shown > 0);
                }
            }
        }
        if let Some((_, counts)) = current.take() {
            self.segment_end(counts, resume, last_stop)?;
        }
        Ok(())
    }

    /// Opens a segment file of the log and checks its header against the meta file; a file
    /// that cannot be read as this log's segment is a problem, and `None`.
    fn open_segment(
        &mut self,
        path: &Path,
        base: u64,
        expect: &Expect,
    ) -> Result<Option<SegmentFile>> {
        let file = match SegmentFile::open(path) {
            Ok(file) => file,
            // Gone since the directory was listed: deleted by retention, not broken.
            Err(logbus::Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None)
            }
            Err(e) => {
                self.problem("segment_header", Some(base), Some(path), e.to_string())?;
                return Ok(None);
            }
        };
        let header = *file.header();
        let mut readable = true;
        let mut wrong = Vec::new();
        if header.log_id != expect.log_id {
            wrong.push(format!(
                "it belongs to another log (log id {}, this log's is {})",
                show::log_id(&header.log_id),
                show::log_id(&expect.log_id)
            ));
        }
        if header.capacity != expect.capacity {
            readable = false;
            wrong.push(format!(
                "its capacity is {}, the log's is {}",
                header.capacity, expect.capacity
            ));
        }
        if header.log_flags != expect.log_flags {
            wrong.push(format!(
                "its options {:#x} differ from the log's {:#x}",
                header.log_flags, expect.log_flags
            ));
        }
        if header.base_position != base {
            readable = false;
            wrong.push(format!(
                "its header says position {}, its name says {base}",
                header.base_position
            ));
        }
        for detail in wrong {
            self.problem("segment_header", Some(base), Some(path), detail)?;
        }
        if !readable {
            return Ok(None);
        }
        self.segment_line(&file)?;
        Ok(Some(file))
    }

    fn segment_line(&mut self, file: &SegmentFile) -> Result<()> {
        let header = file.header();
        self.out.emit(&Line::Segment(SegmentLine {
            path: file.path().display().to_string(),
            base_position: file.base_position(),
            end_position: file.end_position(),
            capacity: header.capacity,
            format_version: header.version,
            log_id: show::log_id(&header.log_id),
            checksums: header.log_flags & log_flags::CHECKSUMS != 0,
            timestamps: header.log_flags & log_flags::TIMESTAMPS != 0,
            created: show::rfc3339(header.created_ns),
            created_ns: header.created_ns,
        }))
    }

    fn segment_counts(&self, file: &SegmentFile) -> SegmentEndLine {
        SegmentEndLine {
            base_position: file.base_position(),
            capacity: file.header().capacity,
            ..Default::default()
        }
    }

    fn segment_end(
        &mut self,
        mut counts: SegmentEndLine,
        walked_to: u64,
        stop: Stop,
    ) -> Result<()> {
        counts.walked_to = walked_to;
        counts.stopped = match stop {
            Stop::Unwritten => "end_of_data",
            Stop::SegmentEnd => "segment_end",
            Stop::Corrupt => "corrupt_frame",
            Stop::Limit => "limit",
        };
        counts.used_bytes = walked_to - counts.base_position;
        self.end_position = Some(walked_to);
        self.out.emit(&Line::SegmentEnd(counts))
    }

    /// Walks `file` from its start, showing and checking the frames from `resume` on that
    /// lie in the range asked for. The walk ends where nothing is committed yet (the end of
    /// the data, or a claim in flight), at the segment's end, or at a corrupt frame.
    fn walk(
        &mut self,
        file: &SegmentFile,
        resume: u64,
        expected_flags: u8,
        counts: &mut SegmentEndLine,
    ) -> Result<Walked> {
        let from = self.from();
        let mut shown = 0;
        let mut frames = file.frames();
        let mut stop = None;
        for item in frames.by_ref() {
            let frame = match item {
                Ok(frame) => frame,
                Err(e) => {
                    let position = match &e {
                        logbus::Error::CorruptFrame { position, .. } => *position,
                        _ => file.base_position(),
                    };
                    if position >= resume && self.reported.insert(position) {
                        self.problem(
                            "corrupt_frame",
                            Some(position),
                            Some(file.path()),
                            format!(
                                "{e}; the rest of this segment, up to position {}, cannot be walked",
                                file.end_position()
                            ),
                        )?;
                    }
                    stop = Some(Stop::Corrupt);
                    break;
                }
            };
            let position = frame.position();
            if position < resume {
                continue;
            }
            if self.args.to.is_some_and(|to| position >= to) || self.done() {
                return Ok(Walked {
                    next: position,
                    stop: Stop::Limit,
                    shown,
                });
            }
            if position + frame.aligned_length() <= from {
                continue;
            }
            self.frame(&frame, file, expected_flags, counts)?;
            self.shown += 1;
            shown += 1;
        }
        let next = frames.next_position();
        let stop = stop.unwrap_or(if next >= file.end_position() {
            Stop::SegmentEnd
        } else {
            Stop::Unwritten
        });
        Ok(Walked { next, stop, shown })
    }

    /// Shows one frame (and its records), counts it and checks it.
    fn frame(
        &mut self,
        frame: &Frame<'_>,
        file: &SegmentFile,
        expected_flags: u8,
        counts: &mut SegmentEndLine,
    ) -> Result<()> {
        let position = frame.position();
        counts.frames += 1;
        self.totals.frames += 1;
        let is_set = frame.kind() == kind::BATCH;
        let is_data = frame.kind() != kind::PADDING && !is_set;
        let records: Vec<_> = frame.records().collect();
        let good_records = records.iter().filter(|r| r.is_ok()).count();
        if frame.kind() == kind::PADDING {
            counts.padding_frames += 1;
            self.totals.padding_frames += 1;
        } else if is_set {
            counts.message_sets += 1;
            counts.records += good_records as u64;
            self.totals.message_sets += 1;
            self.totals.records += good_records as u64;
            self.totals.messages += good_records as u64;
        } else {
            counts.data_frames += 1;
            self.totals.data_frames += 1;
            self.totals.messages += 1;
        }

        let payload = frame.payload();
        let (json_payload, text) = if is_data {
            (
                JsonPayload::new(payload, self.out.payload),
                show::payload_text(payload, self.out.payload, self.out.max_payload),
            )
        } else {
            (JsonPayload::default(), String::new())
        };
        self.out.emit(&Line::Frame(FrameLine {
            position,
            kind: show::kind_name(frame.kind()),
            kind_code: frame.kind(),
            length: frame.length(),
            aligned_length: frame.aligned_length(),
            flags: frame.flags(),
            producer: frame.producer(),
            timestamp: frame.timestamp_ns().map(show::rfc3339),
            timestamp_ns: frame.timestamp_ns(),
            checksum: frame.checksum(),
            crc_ok: frame.checksum_ok(),
            payload_length: (frame.kind() != kind::PADDING).then_some(payload.len()),
            records: is_set.then_some(good_records),
            payload: json_payload,
            text,
        }))?;
        for (index, record) in records.iter().enumerate() {
            match record {
                Ok((record_position, bytes)) => self.out.emit(&Line::Record(RecordLine {
                    position: *record_position,
                    frame_position: position,
                    index,
                    length: bytes.len(),
                    payload: JsonPayload::new(bytes, self.out.payload),
                    text: show::payload_text(bytes, self.out.payload, self.out.max_payload),
                }))?,
                Err(e) => self.problem(
                    "bad_record",
                    Some(position),
                    Some(file.path()),
                    format!("message set: {e}"),
                )?,
            }
        }

        if let Some(false) = frame.checksum_ok() {
            let expected = frame.checksum().unwrap_or(0);
            self.problem(
                "checksum_mismatch",
                Some(position),
                Some(file.path()),
                format!(
                    "checksum mismatch: the header says {expected:#010x}, the {}-byte payload has {:#010x}",
                    payload.len(),
                    format::checksum(payload)
                ),
            )?;
        }
        match frame.kind() {
            kind::PADDING => {
                if frame.flags() != 0 || frame.producer() != 0 {
                    self.problem(
                        "bad_padding",
                        Some(position),
                        Some(file.path()),
                        format!(
                            "padding frame with flags {:#04x} and producer {}, where both must be 0",
                            frame.flags(),
                            frame.producer()
                        ),
                    )?;
                }
            }
            kind::DATA | kind::BATCH => {
                if frame.flags() != expected_flags {
                    self.problem(
                        "bad_flags",
                        Some(position),
                        Some(file.path()),
                        format!(
                            "frame flags {} ({:#04x}) disagree with the log's options, which give {} ({:#04x})",
                            show::flags_text(frame.flags()),
                            frame.flags(),
                            show::flags_text(expected_flags),
                            expected_flags
                        ),
                    )?;
                }
            }
            other => self.problem(
                "unknown_kind",
                Some(position),
                Some(file.path()),
                format!(
                    "unknown frame kind {other} (known: 1 data, 2 padding, 3 message set); a reader stops here"
                ),
            )?,
        }
        Ok(())
    }
}

/// The frame flags that producers of a log with these options write.
fn frame_flags(options: u32) -> u8 {
    (if options & log_flags::CHECKSUMS != 0 {
        flags::CHECKSUM
    } else {
        0
    }) | (if options & log_flags::TIMESTAMPS != 0 {
        flags::TIMESTAMP
    } else {
        0
    })
}

/// The pause of a follower with nothing new: 1 ms after new data, doubling to 20 ms while
/// nothing comes.
struct Idle {
    sleep: Duration,
}

impl Idle {
    const MIN: Duration = Duration::from_millis(1);
    const MAX: Duration = Duration::from_millis(20);

    fn new() -> Idle {
        Idle { sleep: Idle::MIN }
    }

    fn wait(&mut self, progressed: bool) {
        if progressed {
            self.sleep = Idle::MIN;
            return;
        }
        std::thread::sleep(self.sleep);
        self.sleep = (self.sleep * 2).min(Idle::MAX);
    }
}
