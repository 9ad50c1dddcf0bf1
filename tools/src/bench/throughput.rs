//! `logbus bench throughput`: producer processes send `--messages` messages in all to every
//! one of the consumer processes, first through a log, then through Unix stream sockets.
//!
//! Every message carries its sequence number (per producer) in its first 8 bytes; the rest
//! of it is filler. Each consumer checks every message it gets: the size, and that each
//! producer's messages arrive in order, none missing or repeated; at the end the parent
//! checks that each consumer got exactly each producer's share. The producer is known by
//! the frame's producer slot in a log, and by the connection it came on over a socket.
//!
//! Timing: the parent releases the producers together (a `go` line), and each consumer
//! notes the time after its first batch (the first past `--warmup`, if given),
//! after every 4096 messages and after its last. A consumer's rate is the messages after that
//! first batch divided by the time from it to its last, so neither process start-up nor the
//! wait for the first message counts; the run's figure is its slowest consumer's rate. The
//! producers report their own time from `go` to their last message.
//!
//! Child processes (hidden subcommands, one line per event on standard output):
//! * `bench throughput-consumer` says `ready`, reads until it has every message (or its
//!   input closes — the parent's sign that every producer has exited — and nothing is
//!   left), then says `problem <text>` for the first problems and
//!   `result received=N timed=T elapsed_ns=E errors=X streams=key:count,...`.
//! * `bench throughput-producer` says `ready key=K` (its slot in the log, or its id on the
//!   socket), waits for `go`, sends, and says `result sent=N elapsed_ns=E`.

use super::socket::{self, FrameReader, WRITE_BUFFER};
use super::{
    cores, cores_note, load_average, median, parse_count, parse_payload_size, ratio, ratio_text,
    CommonArgs, Transport, Wait,
};
use crate::child::{Line, Worker};
use crate::units::{self, thousands};
use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use logbus::{Batch, Log, StartAt};
use std::ffi::OsString;
use std::io::{BufRead, BufWriter, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a child may take to start and say it is ready.
const STARTUP: Duration = Duration::from_secs(30);
/// Most messages one `poll_batch` hands over.
const POLL_BATCH: usize = 4096;
/// How long a futex-waiting consumer sleeps at most before it looks whether the producers
/// are done.
const IDLE: Duration = Duration::from_millis(50);
/// Producer keys a consumer can tell apart: the log's producer slots.
const MAX_KEYS: usize = 1024;
/// Problems a consumer describes; it counts the rest.
const MAX_PROBLEMS: usize = 10;

/// Arguments of `logbus bench throughput`.
#[derive(Args, Debug)]
pub struct ThroughputArgs {
    /// Bytes per message (at least 8: each carries its sequence number).
    #[arg(long, default_value = "32", value_parser = parse_payload_size)]
    pub size: usize,

    /// Messages to send in all, shared evenly among the producers; every consumer gets all.
    #[arg(long, default_value = "10000000", value_parser = parse_count)]
    pub messages: u64,

    /// Messages each consumer reads before it starts its clock: its rate is over the rest.
    /// A log with --retain-segments starts in fresh memory (nothing is old enough to recycle
    /// yet), so a warm-up of a few segments' worth measures the steady state it settles in.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub warmup: u64,

    /// Producer processes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub producers: u32,

    /// Consumer processes; each reads every message.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub consumers: u32,

    /// Messages per message set: 1 offers each message alone; K > 1 sends sets of K
    /// messages (one header and one CRC each, visible together), each record written in
    /// place in the log (Batch::push_with). The socket baseline is buffered either way.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch: u32,

    /// With --batch: copy each record into the set from a buffer the producer has just
    /// written it in (Batch::push) instead of writing it in place. A copy that reads bytes
    /// stored a moment before waits for those stores to reach the cache: compare.
    #[arg(long)]
    pub copy: bool,

    /// How consumers wait for data: spin (busy-poll) or futex (Consumer::wait_batch: a
    /// brief spin, then sleep; poll(2) on the sockets).
    #[arg(long, value_enum, default_value_t = Wait::Spin)]
    pub wait: Wait,

    /// With --wait spin: consumers stay about BYTES behind the producers while they write
    /// (Consumer::set_trail), holding the newest messages back for a few microseconds at
    /// most, so that they do not take cache lines the producer is still writing. 4096 is
    /// the setting the README's table uses; 0 (the default) reads everything at once.
    #[arg(long, value_name = "BYTES", default_value = "0", value_parser = parse_trail)]
    pub trail: u64,

    #[command(flatten)]
    pub common: CommonArgs,
}

fn parse_trail(text: &str) -> std::result::Result<u64, String> {
    units::parse_size(text)
}

/// Arguments of `logbus bench throughput-consumer`, which `logbus bench throughput` passes.
#[derive(Args, Debug)]
pub struct ConsumerArgs {
    #[arg(long, value_enum)]
    pub transport: Transport,
    /// The log directory, or the socket path to listen at.
    #[arg(long)]
    pub path: PathBuf,
    /// Producers that will connect (socket).
    #[arg(long)]
    pub producers: u32,
    /// Messages in all.
    #[arg(long)]
    pub messages: u64,
    /// Messages read before the clock starts.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Bytes per message.
    #[arg(long)]
    pub size: usize,
    #[arg(long, value_enum)]
    pub wait: Wait,
    /// Consumer::set_trail, in bytes (0: off).
    #[arg(long, default_value_t = 0)]
    pub trail: u64,
}

/// Arguments of `logbus bench throughput-producer`, which `logbus bench throughput` passes.
#[derive(Args, Debug)]
pub struct ProducerArgs {
    #[arg(long, value_enum)]
    pub transport: Transport,
    /// The log directory, or (once per consumer) a consumer's socket path.
    #[arg(long, required = true)]
    pub path: Vec<PathBuf>,
    /// This producer's number.
    #[arg(long)]
    pub id: u32,
    /// Messages this producer sends.
    #[arg(long)]
    pub messages: u64,
    /// Bytes per message.
    #[arg(long)]
    pub size: usize,
    /// Messages per message set (logbus).
    #[arg(long, default_value_t = 1)]
    pub batch: u32,
    /// Copy records into sets (Batch::push) instead of writing them in place.
    #[arg(long)]
    pub copy: bool,
    /// Make the producer with Log::exclusive_producer.
    #[arg(long)]
    pub exclusive: bool,
}

/// How many of `messages` producer `id` of `producers` sends.
fn share(messages: u64, producers: u32, id: u32) -> u64 {
    let producers = u64::from(producers);
    messages / producers + u64::from(u64::from(id) < messages % producers)
}

/// What one run of one transport gave.
struct RunOutcome {
    /// Messages per second of each consumer.
    consumer_rates: Vec<f64>,
    /// All messages divided by the slowest producer's time.
    producer_rate: f64,
}

/// Runs `logbus bench throughput`.
pub fn run(args: &ThroughputArgs) -> Result<()> {
    crate::signals::catch_interrupts()?;
    let deadline = Instant::now() + Duration::from_secs(args.common.timeout);
    let transports = args.common.transport.list();
    let mut out = std::io::stdout();
    let processes = (args.producers + args.consumers) as usize;
    ensure!(
        !args.common.exclusive || args.producers == 1,
        "--exclusive needs --producers 1: an exclusive producer is its log's only one"
    );
    ensure!(
        args.trail == 0 || args.wait == Wait::Spin,
        "--trail is for busy-polling consumers (--wait spin): a sleeping consumer ignores it"
    );
    ensure!(
        !args.copy || args.batch > 1,
        "--copy is about the records of message sets: give --batch K with K > 1 too"
    );
    ensure!(
        args.warmup < args.messages,
        "--warmup {} leaves nothing to time of --messages {}",
        args.warmup,
        args.messages
    );
    if !args.common.json {
        header(args, processes, &mut out)?;
    }

    let mut outcomes: Vec<(Transport, Vec<RunOutcome>)> =
        transports.iter().map(|&t| (t, Vec::new())).collect();
    for run in 1..=args.common.runs {
        for (transport, runs) in &mut outcomes {
            let outcome = run_once(args, *transport, deadline)
                .map_err(|e| crate::child::explain_stop(e, deadline, args.common.timeout))?;
            if !args.common.json {
                let slowest = slowest(&outcome);
                writeln!(
                    out,
                    "run {run}/{}:    {:<12} {:>9} msg/s {:>9}   (producers {} msg/s)",
                    args.common.runs,
                    transport.name(),
                    mega(slowest),
                    units::megabytes_rate(
                        (slowest * args.size as f64) as u64,
                        Duration::from_secs(1)
                    ),
                    mega(outcome.producer_rate),
                )?;
            }
            runs.push(outcome);
        }
    }
    summary(args, processes, &outcomes, &mut out)
}

/// Fails if a message (or a set of `--batch` of them) does not fit `log`.
fn check_sizes(args: &ThroughputArgs, log: &Log) -> Result<()> {
    let max = log.max_payload_len();
    let capacity = units::binary_bytes(args.common.segment_capacity);
    ensure!(
        args.size <= max,
        "--size {} is larger than a log with {capacity} segments takes ({max} bytes at most)",
        args.size
    );
    let set = Batch::bytes_needed(std::iter::repeat_n(args.size, args.batch as usize));
    ensure!(
        args.batch == 1 || set <= max,
        "a set of --batch {} messages of {} bytes takes {set} bytes, more than a log with \
         {capacity} segments takes ({max} bytes at most): use a larger --segment-capacity",
        args.batch,
        args.size
    );
    Ok(())
}

fn header(args: &ThroughputArgs, processes: usize, out: &mut impl Write) -> Result<()> {
    let plural = |n: u32| if n == 1 { "" } else { "es" };
    writeln!(
        out,
        "logbus bench throughput: {} producer process{} -> {} consumer process{}, {} messages of {} bytes, {}",
        args.producers,
        plural(args.producers),
        args.consumers,
        plural(args.consumers),
        thousands(args.messages),
        args.size,
        match (args.batch, args.copy) {
            (1, _) => "each offered alone".to_string(),
            (k, false) => format!("in message sets of {k}, each record written in place"),
            (k, true) => format!("in message sets of {k}, each record copied in (--copy)"),
        }
    )?;
    if args.warmup > 0 {
        writeln!(
            out,
            "timed:      after each consumer's first {} messages (--warmup)",
            thousands(args.warmup)
        )?;
    }
    writeln!(
        out,
        "logbus:     a log in {}{}; consumers {}",
        args.common.describe_logs(),
        if args.common.exclusive {
            ", an exclusive producer"
        } else {
            ""
        },
        match (args.wait, args.trail) {
            (Wait::Spin, 0) => "busy-poll (--wait spin)".to_string(),
            (Wait::Spin, bytes) => format!(
                "busy-poll (--wait spin), staying {} behind busy producers (--trail)",
                units::binary_bytes(bytes)
            ),
            (Wait::Futex, _) => "spin briefly, then sleep on the futex (--wait futex)".into(),
        }
    )?;
    writeln!(
        out,
        "socket:     a Unix stream socket from each producer to each consumer, a 4-byte length \
         before each message,\n            {} KiB write buffers; consumers {}",
        WRITE_BUFFER >> 10,
        match args.wait {
            Wait::Spin => "read non-blocking in a loop",
            Wait::Futex => "sleep in poll(2)",
        }
    )?;
    writeln!(out, "cores:      {}", cores_note(processes))?;
    if let Some(load) = load_average() {
        writeln!(out, "load:       {load} (load average at the start)")?;
    }
    Ok(())
}

fn slowest(outcome: &RunOutcome) -> f64 {
    outcome
        .consumer_rates
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
}

fn mega(rate: f64) -> String {
    if rate.is_finite() && rate > 0.0 {
        format!("{:.2} M", rate / 1e6)
    } else {
        "-".into()
    }
}

fn summary(
    args: &ThroughputArgs,
    processes: usize,
    outcomes: &[(Transport, Vec<RunOutcome>)],
    out: &mut impl Write,
) -> Result<()> {
    let medians: Vec<(Transport, f64, f64, Vec<f64>)> = outcomes
        .iter()
        .map(|(t, runs)| {
            let rates: Vec<f64> = runs.iter().map(slowest).collect();
            let producers: Vec<f64> = runs.iter().map(|r| r.producer_rate).collect();
            (*t, median(&rates), median(&producers), rates)
        })
        .collect();
    let rate_of = |t: Transport| medians.iter().find(|m| m.0 == t).map(|m| m.1);
    let logbus_ratio = match (rate_of(Transport::Logbus), rate_of(Transport::Socket)) {
        (Some(l), Some(s)) => ratio(l, s),
        _ => None,
    };

    if args.common.json {
        for (transport, rate, producer_rate, rates) in &medians {
            let logbus = *transport == Transport::Logbus;
            let options = args.common.log_options();
            let object = serde_json::json!({
                "bench": "throughput",
                "transport": transport.name(),
                "size": args.size,
                "messages": args.messages,
                "warmup": args.warmup,
                "producers": args.producers,
                "consumers": args.consumers,
                "batch": args.batch,
                "copy": logbus.then_some(args.copy),
                "wait": args.wait.name(),
                "trail": logbus.then_some(args.trail),
                "runs": args.common.runs,
                "cores": cores(),
                "processes": processes,
                "checksums": logbus.then_some(options.get_checksums()),
                "timestamps": logbus.then_some(options.get_timestamps()),
                "segment_capacity": logbus.then_some(options.get_segment_capacity()),
                "exclusive": logbus.then_some(args.common.exclusive),
                "retain_segments": logbus.then_some(args.common.retain_segments),
                "filesystem": logbus.then(|| super::filesystem(&args.common.base_dir())),
                "msgs_per_sec": finite(*rate),
                "mb_per_sec": finite(rate * args.size as f64 / 1e6),
                "msgs_per_sec_runs": rates.iter().map(|&r| finite(r)).collect::<Vec<_>>(),
                "producer_msgs_per_sec": finite(*producer_rate),
                "verified": true,
                "ratio_to_socket": if logbus { logbus_ratio } else { None },
            });
            writeln!(out, "{object}")?;
        }
        return Ok(());
    }

    writeln!(
        out,
        "\n{:<15}{:>16}{:>10}   {:<32}{:>16}",
        "", "msg/s (median)", "MB/s", "every run, msg/s", "producers msg/s"
    )?;
    for (transport, rate, producer_rate, rates) in &medians {
        let runs: Vec<String> = rates.iter().map(|&r| mega(r)).collect();
        writeln!(
            out,
            "{:<15}{:>16}{:>10.0}   {:<32}{:>16}",
            transport.name(),
            mega(*rate),
            rate * args.size as f64 / 1e6,
            runs.join("  "),
            mega(*producer_rate),
        )?;
    }
    if medians.len() == 2 {
        writeln!(
            out,
            "{:<15}{:>16}   (higher is better for logbus)",
            "logbus/socket",
            ratio_text(logbus_ratio)
        )?;
    }
    writeln!(
        out,
        "cores:      {}\nverified:   every consumer got all {} messages, each producer's in order, none \
         missing or repeated, in each of the {} runs",
        cores_note(processes),
        thousands(args.messages),
        outcomes.iter().map(|(_, r)| r.len()).sum::<usize>()
    )?;
    Ok(())
}

/// A number for JSON: `null` when it is not finite.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// One run of one transport: a fresh log (or fresh sockets) in a fresh directory, the
/// consumers, then the producers released together; every child reaped or killed before
/// this returns, and the directory deleted.
fn run_once(args: &ThroughputArgs, transport: Transport, deadline: Instant) -> Result<RunOutcome> {
    let dir = args.common.temp_dir("logbus-bench-")?;
    let startup = deadline.min(Instant::now() + STARTUP);
    let consumer_paths: Vec<PathBuf> = match transport {
        Transport::Logbus => {
            let log = Log::create(dir.path(), &args.common.log_options())
                .with_context(|| format!("creating a log in {}", dir.path().display()))?;
            check_sizes(args, &log)?;
            vec![dir.path().to_path_buf(); args.consumers as usize]
        }
        Transport::Socket => (0..args.consumers)
            .map(|i| dir.path().join(format!("consumer-{i}.sock")))
            .collect(),
    };
    let producer_paths: Vec<PathBuf> = match transport {
        Transport::Logbus => vec![dir.path().to_path_buf()],
        Transport::Socket => consumer_paths.clone(),
    };

    let mut consumers = Vec::new();
    for (i, path) in consumer_paths.iter().enumerate() {
        let mut worker = Worker::spawn(
            format!("{} consumer {i}", transport.name()),
            &[
                "bench".into(),
                "throughput-consumer".into(),
                "--transport".into(),
                transport.arg().into(),
                "--path".into(),
                path.into(),
                "--producers".into(),
                args.producers.to_string().into(),
                "--messages".into(),
                args.messages.to_string().into(),
                "--warmup".into(),
                args.warmup.to_string().into(),
                "--size".into(),
                args.size.to_string().into(),
                "--wait".into(),
                args.wait.name().into(),
                "--trail".into(),
                args.trail.to_string().into(),
            ],
        )?;
        worker.expect("ready", startup, |_| {})?;
        consumers.push(worker);
    }

    let mut producers = Vec::new();
    let mut keys = Vec::new();
    for id in 0..args.producers {
        let mut child_args: Vec<OsString> = vec![
            "bench".into(),
            "throughput-producer".into(),
            "--transport".into(),
            transport.arg().into(),
            "--id".into(),
            id.to_string().into(),
            "--messages".into(),
            share(args.messages, args.producers, id).to_string().into(),
            "--size".into(),
            args.size.to_string().into(),
            "--batch".into(),
            args.batch.to_string().into(),
        ];
        for path in &producer_paths {
            child_args.push("--path".into());
            child_args.push(path.into());
        }
        if args.common.exclusive {
            child_args.push("--exclusive".into());
        }
        if args.copy {
            child_args.push("--copy".into());
        }
        producers.push(Worker::spawn(
            format!("{} producer {id}", transport.name()),
            &child_args,
        )?);
    }
    for producer in &mut producers {
        let line = producer.expect("ready", startup, |_| {})?;
        keys.push(line.get::<usize>("key")?);
    }
    for producer in &mut producers {
        producer.send("go")?;
    }

    let mut slowest_producer = Duration::ZERO;
    for producer in &mut producers {
        let line = producer.expect("result", deadline, |_| {})?;
        producer.wait_success(deadline)?;
        slowest_producer = slowest_producer.max(Duration::from_nanos(line.get("elapsed_ns")?));
    }

    let mut consumer_rates = Vec::new();
    for (i, consumer) in consumers.iter_mut().enumerate() {
        consumer.close_stdin();
        let mut problems = Vec::new();
        let line = consumer.expect("result", deadline, |line: &Line| {
            if line.tag == "problem" {
                problems.push(line.rest.clone());
            }
        })?;
        consumer.wait_success(deadline)?;
        let who = format!("{} consumer {i}", transport.name());
        verify(args, &line, &keys, &problems).with_context(|| who.clone())?;
        let timed: u64 = line.get("timed")?;
        let elapsed = Duration::from_nanos(line.get("elapsed_ns")?);
        consumer_rates.push(if elapsed.is_zero() {
            f64::NAN
        } else {
            timed as f64 / elapsed.as_secs_f64()
        });
    }
    let producer_rate = if slowest_producer.is_zero() {
        f64::NAN
    } else {
        args.messages as f64 / slowest_producer.as_secs_f64()
    };
    Ok(RunOutcome {
        consumer_rates,
        producer_rate,
    })
}

/// Checks a consumer's result line: every message, each producer's share, no error.
fn verify(args: &ThroughputArgs, line: &Line, keys: &[usize], problems: &[String]) -> Result<()> {
    let received: u64 = line.get("received")?;
    let errors: u64 = line.get("errors")?;
    let streams: String = line.get("streams")?;
    let mut counts = std::collections::BTreeMap::new();
    for field in streams.split(',').filter(|f| !f.is_empty()) {
        let (key, count) = field
            .split_once(':')
            .with_context(|| format!("a malformed stream count '{field}'"))?;
        counts.insert(key.parse::<usize>()?, count.parse::<u64>()?);
    }
    let mut wrong = Vec::new();
    if errors > 0 {
        wrong.push(format!(
            "{} out of order, repeated or of the wrong size",
            units::count(errors, "message")
        ));
    }
    for (id, key) in keys.iter().enumerate() {
        let expected = share(args.messages, args.producers, id as u32);
        let got = counts.remove(key).unwrap_or(0);
        if got != expected {
            wrong.push(format!(
                "{got} of producer {id}'s {expected} messages arrived"
            ));
        }
    }
    for (key, count) in counts {
        wrong.push(format!("{count} messages from an unknown producer {key}"));
    }
    if received != args.messages && wrong.is_empty() {
        wrong.push(format!("{received} of {} messages arrived", args.messages));
    }
    if wrong.is_empty() {
        return Ok(());
    }
    let mut text = format!("verification failed: {}", wrong.join("; "));
    for problem in problems {
        text.push_str("\n  ");
        text.push_str(problem);
    }
    bail!(text)
}

/// Checks each message: its size, and its producer's sequence.
struct Checker {
    size: usize,
    next: Vec<u64>,
    counts: Vec<u64>,
    received: u64,
    errors: u64,
    problems: Vec<String>,
}

impl Checker {
    fn new(size: usize) -> Self {
        Checker {
            size,
            next: vec![0; MAX_KEYS],
            counts: vec![0; MAX_KEYS],
            received: 0,
            errors: 0,
            problems: Vec::new(),
        }
    }

    #[inline]
    fn check(&mut self, key: usize, payload: &[u8]) {
        self.received += 1;
        if payload.len() != self.size || key >= MAX_KEYS {
            let size = self.size;
            self.error(|| {
                format!(
                    "a message of {} bytes from producer {key}, where {size} bytes were sent",
                    payload.len(),
                )
            });
            return;
        }
        let seq = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
        let next = self.next[key];
        if seq != next {
            self.error(|| {
                format!("producer {key}: message {seq} arrived where message {next} was due")
            });
        }
        self.next[key] = seq.wrapping_add(1);
        self.counts[key] += 1;
    }

    #[cold]
    fn error(&mut self, describe: impl FnOnce() -> String) {
        self.errors += 1;
        if self.problems.len() < MAX_PROBLEMS {
            let text = describe();
            self.problems.push(text);
        }
    }

    fn streams(&self) -> String {
        let fields: Vec<String> = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(key, c)| format!("{key}:{c}"))
            .collect();
        fields.join(",")
    }
}

/// Messages a consumer reads between two looks at the clock. A clock read (`Instant::now`,
/// 20-30 ns here) costs more than handing out a message, and a consumer that keeps up reads
/// batches of one or two; the time and count noted stay a consistent pair either way.
const MESSAGES_PER_CLOCK_READ: u64 = 4096;

/// Messages a consumer of a log with retention reads between two commits of its durable
/// cursor (it also commits whenever it finds nothing new). Far less than a segment, so
/// bounded producers are never held back by a commit not yet made.
const MESSAGES_PER_CURSOR_COMMIT: u64 = 1 << 16;

/// When a consumer read its first and last batches.
#[derive(Default)]
struct Timing {
    /// Messages to receive before the first time is noted.
    warmup: u64,
    first: Option<Instant>,
    /// Messages received when the first batch had been read.
    first_received: u64,
    last: Option<Instant>,
    last_received: u64,
}

impl Timing {
    /// Notes a batch read, `received` messages in all so far; reads the clock for the first
    /// batch and then once every [`MESSAGES_PER_CLOCK_READ`] messages. `last` says this is
    /// the final batch, whose time is always read.
    #[inline]
    fn batch_read(&mut self, received: u64, last: bool) {
        if received < self.warmup && !last {
            return;
        }
        if self.first.is_some() && !last && received - self.last_received < MESSAGES_PER_CLOCK_READ
        {
            return;
        }
        let now = Instant::now();
        if self.first.is_none() {
            self.first = Some(now);
            self.first_received = received;
        }
        self.last = Some(now);
        self.last_received = received;
    }

    /// Messages timed, and the time they took.
    fn result(&self) -> (u64, Duration) {
        match (self.first, self.last) {
            (Some(first), Some(last)) => (
                self.last_received - self.first_received,
                last.saturating_duration_since(first),
            ),
            _ => (0, Duration::ZERO),
        }
    }
}

/// Runs a consumer process.
pub fn run_consumer(args: &ConsumerArgs) -> Result<()> {
    let who = format!("bench consumer ({})", args.transport.name());
    let mut checker = Checker::new(args.size);
    let mut timing = Timing {
        warmup: args.warmup,
        ..Timing::default()
    };
    let mut out = std::io::stdout();
    match args.transport {
        Transport::Logbus => consume_log(args, &mut checker, &mut timing, &mut out),
        Transport::Socket => consume_socket(args, &mut checker, &mut timing, &mut out),
    }
    .with_context(|| who.clone())?;
    for problem in &checker.problems {
        writeln!(out, "problem {problem}").context(who.clone())?;
    }
    let (timed, elapsed) = timing.result();
    writeln!(
        out,
        "result received={} timed={timed} elapsed_ns={} errors={} streams={}",
        checker.received,
        elapsed.as_nanos(),
        checker.errors,
        checker.streams()
    )
    .context(who)?;
    Ok(())
}

/// A flag set once this process's standard input closes.
fn input_closed() -> Result<Arc<AtomicBool>> {
    let closed = Arc::new(AtomicBool::new(false));
    let flag = closed.clone();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            flag.store(true, Ordering::Release);
        })
        .context("starting a thread")?;
    Ok(closed)
}

fn consume_log(
    args: &ConsumerArgs,
    checker: &mut Checker,
    timing: &mut Timing,
    out: &mut impl Write,
) -> Result<()> {
    let log = Log::open(&args.path).context("opening the log")?;
    // In a log with retention, a durable cursor: retention then never deletes what this
    // consumer has not read, and bounded mode (see `CommonArgs::log_options`) holds the
    // producers back instead.
    let retains = log.options().get_retain_segments().is_some();
    let mut consumer = if retains {
        log.consumer_named(&format!("bench-consumer-{}", std::process::id()))
    } else {
        log.consumer(StartAt::Earliest)
    }
    .context("making a consumer")?;
    consumer.set_trail(args.trail);
    let producers_done = input_closed()?;
    writeln!(out, "ready")?;
    let mut handle = |m: logbus::Message<'_>| checker.check(usize::from(m.producer()), m.payload());
    let mut received = 0u64;
    let mut committed = 0u64;
    loop {
        let n = match args.wait {
            Wait::Spin => consumer.poll_batch(POLL_BATCH, &mut handle)?,
            Wait::Futex => consumer.wait_batch(POLL_BATCH, Some(IDLE), &mut handle)?,
        };
        if retains
            && received > committed
            && (n == 0 || received - committed >= MESSAGES_PER_CURSOR_COMMIT)
        {
            consumer
                .commit_position()
                .context("committing the cursor")?;
            committed = received;
        }
        if n > 0 {
            received += n as u64;
            let done = received >= args.messages;
            timing.batch_read(received, done);
            if done {
                return Ok(());
            }
        } else if producers_done.load(Ordering::Acquire) {
            // Every producer has exited, so every message is committed: read what is left.
            loop {
                let n = consumer.poll_batch(POLL_BATCH, &mut handle)?;
                if n == 0 {
                    return Ok(());
                }
                received += n as u64;
                timing.batch_read(received, true);
            }
        } else {
            std::hint::spin_loop();
        }
    }
}

fn consume_socket(
    args: &ConsumerArgs,
    checker: &mut Checker,
    timing: &mut Timing,
    out: &mut impl Write,
) -> Result<()> {
    let listener = UnixListener::bind(&args.path)
        .with_context(|| format!("listening at {}", args.path.display()))?;
    writeln!(out, "ready")?;
    struct Source {
        key: usize,
        reader: FrameReader,
        open: bool,
    }
    let mut sources = Vec::new();
    for _ in 0..args.producers {
        let (mut stream, _) = listener.accept().context("accepting a producer")?;
        let mut hello = [0u8; 4];
        stream
            .read_exact(&mut hello)
            .context("reading a producer's number")?;
        stream.set_nonblocking(true)?;
        sources.push(Source {
            key: u32::from_le_bytes(hello) as usize,
            reader: FrameReader::new(stream),
            open: true,
        });
    }
    let mut open = sources.len();
    while open > 0 {
        let mut progress = false;
        for source in sources.iter_mut().filter(|s| s.open) {
            match source.reader.fill() {
                Ok(0) => {
                    source.open = false;
                    open -= 1;
                    if source.reader.has_partial() {
                        let key = source.key;
                        checker.error(|| format!("producer {key}: its last message was cut off"));
                    }
                }
                Ok(_) => {
                    progress = true;
                    while let Some(frame) = source.reader.next_frame()? {
                        checker.check(source.key, frame);
                    }
                    timing.batch_read(checker.received, checker.received >= args.messages);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading a socket"),
            }
        }
        if !progress && open > 0 {
            match args.wait {
                Wait::Spin => std::hint::spin_loop(),
                Wait::Futex => {
                    let streams: Vec<&UnixStream> = sources
                        .iter()
                        .filter(|s| s.open)
                        .map(|s| s.reader.stream())
                        .collect();
                    socket::poll_readable(&streams)?;
                }
            }
        }
    }
    Ok(())
}

/// Runs a producer process.
pub fn run_producer(args: &ProducerArgs) -> Result<()> {
    let who = format!("bench producer {} ({})", args.id, args.transport.name());
    let mut out = std::io::stdout();
    ensure!(args.size >= 8, "{who}: --size {} is below 8", args.size);
    let mut buf = vec![0x5Au8; args.size];
    let elapsed = match args.transport {
        Transport::Logbus => produce_log(args, &mut buf, &mut out),
        Transport::Socket => produce_socket(args, &mut buf, &mut out),
    }
    .with_context(|| who.clone())?;
    writeln!(
        out,
        "result sent={} elapsed_ns={}",
        args.messages,
        elapsed.as_nanos()
    )
    .context(who)?;
    Ok(())
}

fn wait_for_go() -> Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("waiting for the start")?;
    ensure!(
        line.trim() == "go",
        "the benchmark went away before the start"
    );
    Ok(())
}

#[inline(always)]
fn stamp(buf: &mut [u8], sequence: u64) {
    buf[..8].copy_from_slice(&sequence.to_le_bytes());
}

/// Copies a record's filler bytes (the same in every record) as a program writing a small
/// fixed-size record in place would: up to 32 bytes with two overlapping 16-byte (or 8-byte)
/// moves, not a `memcpy` call, whose cost for the length known only at run time was a sixth of
/// the samples of a set run with 32-byte records (`perf record -a`), all of it the bench's.
#[inline(always)]
fn copy_filler(room: &mut [u8], filler: &[u8]) {
    let n = filler.len();
    if (16..=32).contains(&n) {
        room[..16].copy_from_slice(&filler[..16]);
        room[n - 16..].copy_from_slice(&filler[n - 16..]);
    } else if (8..16).contains(&n) {
        room[..8].copy_from_slice(&filler[..8]);
        room[n - 8..].copy_from_slice(&filler[n - 8..]);
    } else {
        room.copy_from_slice(filler);
    }
}

fn produce_log(args: &ProducerArgs, buf: &mut [u8], out: &mut impl Write) -> Result<Duration> {
    let path = args.path.first().context("no log path")?;
    let log = Log::open(path).context("opening the log")?;
    let mut producer = if args.exclusive {
        log.exclusive_producer()
    } else {
        log.producer()
    }
    .context("making a producer")?;
    writeln!(out, "ready key={}", producer.slot())?;
    wait_for_go()?;
    let start = Instant::now();
    if args.batch <= 1 {
        for sequence in 0..args.messages {
            stamp(buf, sequence);
            loop {
                let offered = producer.offer(buf);
                if !held_back(&offered) {
                    offered.with_context(|| format!("offering message {sequence}"))?;
                    break;
                }
            }
        }
    } else {
        let mut sequence = 0;
        while sequence < args.messages {
            let count = (args.messages - sequence).min(u64::from(args.batch));
            let needed = Batch::bytes_needed(std::iter::repeat_n(buf.len(), count as usize));
            let mut batch = loop {
                let claimed = producer.batch(needed);
                if !held_back(&claimed) {
                    break claimed
                        .with_context(|| format!("claiming a set at message {sequence}"))?;
                }
            };
            for _ in 0..count {
                if args.copy {
                    stamp(buf, sequence);
                    batch.push(buf)?;
                } else {
                    // The same bytes, the sequence number straight from a register.
                    batch.push_with(buf.len(), |room| {
                        room[..8].copy_from_slice(&sequence.to_le_bytes());
                        copy_filler(&mut room[8..], &buf[8..]);
                    })?;
                }
                sequence += 1;
            }
            batch
                .commit()
                .with_context(|| format!("committing the set before message {sequence}"))?;
        }
    }
    Ok(start.elapsed())
}

/// Whether bounded mode held a producer call back (after a pause; the caller tries again).
fn held_back<T>(result: &logbus::Result<T>) -> bool {
    let held = matches!(result, Err(logbus::Error::Backpressure { .. }));
    if held {
        std::hint::spin_loop();
    }
    held
}

fn produce_socket(args: &ProducerArgs, buf: &mut [u8], out: &mut impl Write) -> Result<Duration> {
    let mut writers = Vec::new();
    for path in &args.path {
        let stream = UnixStream::connect(path)
            .with_context(|| format!("connecting to {}", path.display()))?;
        let mut writer = BufWriter::with_capacity(WRITE_BUFFER, stream);
        writer.write_all(&args.id.to_le_bytes())?;
        writer.flush()?;
        writers.push(writer);
    }
    writeln!(out, "ready key={}", args.id)?;
    wait_for_go()?;
    let start = Instant::now();
    for sequence in 0..args.messages {
        stamp(buf, sequence);
        for writer in &mut writers {
            socket::write_frame(writer, buf)
                .with_context(|| format!("sending message {sequence}"))?;
        }
    }
    for writer in &mut writers {
        writer.flush().context("sending the last messages")?;
        writer.get_ref().shutdown(std::net::Shutdown::Write)?;
    }
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (messages, producers) in [(10, 3), (1, 4), (5, 1)] {
            let total: u64 = (0..producers)
                .map(|id| share(messages, producers, id))
                .sum();
            assert_eq!(total, messages);
        }
    }

    #[test]
    fn the_checker_finds_gaps_repeats_and_wrong_sizes() {
        let mut checker = Checker::new(8);
        for seq in [0u64, 1, 2, 2, 5] {
            checker.check(3, &seq.to_le_bytes());
        }
        checker.check(4, &[0u8; 9]);
        assert_eq!(checker.received, 6);
        assert_eq!(checker.errors, 3, "{:?}", checker.problems);
        assert_eq!(checker.streams(), "3:5");

        let mut good = Checker::new(8);
        for key in [1usize, 7] {
            for seq in 0u64..4 {
                good.check(key, &seq.to_le_bytes());
            }
        }
        assert_eq!(good.errors, 0);
        assert_eq!(good.streams(), "1:4,7:4");
    }

    #[test]
    fn copy_filler_copies_every_length_exactly() {
        let filler: Vec<u8> = (1..=80).collect();
        for n in 0..=80 {
            let mut room = vec![0u8; n];
            copy_filler(&mut room, &filler[..n]);
            assert_eq!(room, filler[..n], "length {n}");
        }
    }
}
