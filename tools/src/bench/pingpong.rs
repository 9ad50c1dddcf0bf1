//! `logbus bench pingpong`: round trips between two processes, through two logs and then
//! through one Unix stream socket.
//!
//! The ping process stamps a sequence number into a message, reads the clock, offers the
//! message into the first log (or writes it to the socket), waits for the pong process to
//! send it back through the second log (or the socket), reads the clock again and records
//! the difference in an HDR histogram (3 significant digits). Pong checks that each message
//! is the one due and sends its payload straight back (from its mapping into the other
//! log's, with one `offer`). The first `--warmup` round trips are not recorded.
//!
//! With `--wait spin` both sides busy-poll (`Consumer::poll_batch`, non-blocking socket
//! reads); with `--wait futex` they use `Consumer::wait_batch` (which spins briefly, then
//! sleeps on the log's futex) and blocking socket reads. Each side reports the share of the
//! time it was on a CPU (from `getrusage`), so the report shows whether it actually slept.
//!
//! Child protocol (hidden subcommand `bench pingpong-peer`): both sides say `ready`; ping
//! waits for `go`, then prints one `bucket value=V count=C` line per histogram bucket and
//! `result iterations=N cpu=C timer_ns=T`; pong prints `result cpu=C` (C: CPU time over
//! wall time, from ping's start or pong's first message to the end).

use super::socket::{self, FrameReader};
use super::{
    cores, cores_note, cpu_time, load_average, median, parse_count, parse_payload_size, plot,
    ratio, ratio_text, CommonArgs, Transport, Wait,
};
use crate::child::Worker;
use crate::units::{self, thousands};
use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use logbus::{Consumer, Log, StartAt};
use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a child may take to start and say it is ready.
const STARTUP: Duration = Duration::from_secs(30);
/// The largest round trip the histogram holds: an hour, in nanoseconds.
const HIGHEST_NS: u64 = 3_600_000_000_000;

/// Arguments of `logbus bench pingpong`.
#[derive(Args, Debug)]
pub struct PingpongArgs {
    /// Bytes per message (at least 8: each carries its sequence number).
    #[arg(long, default_value = "32", value_parser = parse_payload_size)]
    pub size: usize,

    /// Round trips timed (after the warm-up), per run and transport.
    #[arg(long, default_value = "100000", value_parser = parse_count)]
    pub iterations: u64,

    /// Round trips made before timing starts.
    #[arg(long, default_value_t = 10_000)]
    pub warmup: u64,

    /// How each side waits for the other's message: spin (busy-poll) or futex
    /// (Consumer::wait_batch: a brief spin, then sleep on the futex; blocking socket reads).
    #[arg(long, value_enum, default_value_t = Wait::Spin)]
    pub wait: Wait,

    /// Microseconds ping waits (spinning) after each round trip before the next one. With
    /// --wait futex, a gap longer than Consumer::wait's spin (a few µs) makes pong fall
    /// asleep before every message, so the figures include the futex wake-up; without it,
    /// both sides usually catch the message while still spinning.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 0)]
    pub gap: u64,

    /// Also draw the round-trip percentile distribution (log scales) of logbus beside the
    /// socket into FILE, an SVG image.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Which side of the ping-pong a peer process plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Ping,
    Pong,
}

/// Arguments of `logbus bench pingpong-peer`, which `logbus bench pingpong` passes.
#[derive(Args, Debug)]
pub struct PeerArgs {
    #[arg(long, value_enum)]
    pub role: Role,
    #[arg(long, value_enum)]
    pub transport: Transport,
    /// logbus: the ping log (ping to pong), then the pong log; socket: the socket path.
    #[arg(long, required = true)]
    pub path: Vec<PathBuf>,
    #[arg(long)]
    pub size: usize,
    #[arg(long)]
    pub iterations: u64,
    #[arg(long)]
    pub warmup: u64,
    #[arg(long, value_enum)]
    pub wait: Wait,
    /// Microseconds ping waits between round trips.
    #[arg(long, default_value_t = 0)]
    pub gap: u64,
    /// Make the producer with Log::exclusive_producer.
    #[arg(long)]
    pub exclusive: bool,
}

/// The percentiles reported, as (name in tables, name in JSON, quantile).
const PERCENTILES: [(&str, &str, f64); 5] = [
    ("p50", "p50_ns", 0.50),
    ("p90", "p90_ns", 0.90),
    ("p99", "p99_ns", 0.99),
    ("p99.9", "p999_ns", 0.999),
    ("p99.99", "p9999_ns", 0.9999),
];

/// What one run of one transport gave.
struct RunOutcome {
    histogram: Histogram<u64>,
    /// The share of the time ping and pong were on a CPU.
    ping_cpu: f64,
    pong_cpu: f64,
    timer_ns: u64,
}

impl RunOutcome {
    /// The reported figures in table order: the percentiles, max, mean.
    fn figures(&self) -> Vec<f64> {
        let h = &self.histogram;
        let mut figures: Vec<f64> = PERCENTILES
            .iter()
            .map(|&(_, _, q)| h.value_at_quantile(q) as f64)
            .collect();
        figures.push(h.max() as f64);
        figures.push(h.mean());
        figures
    }
}

fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIGHEST_NS, 3).map_err(|e| anyhow!("making a histogram: {e}"))
}

/// Runs `logbus bench pingpong`.
pub fn run(args: &PingpongArgs) -> Result<()> {
    crate::signals::catch_interrupts()?;
    let deadline = Instant::now() + Duration::from_secs(args.common.timeout);
    let mut out = std::io::stdout();
    if !args.common.json {
        header(args, &mut out)?;
    }
    let mut outcomes: Vec<(Transport, Vec<RunOutcome>)> = args
        .common
        .transport
        .list()
        .iter()
        .map(|&t| (t, Vec::new()))
        .collect();
    for run in 1..=args.common.runs {
        for (transport, runs) in &mut outcomes {
            let outcome = run_once(args, *transport, deadline)
                .map_err(|e| crate::child::explain_stop(e, deadline, args.common.timeout))?;
            if !args.common.json {
                let h = &outcome.histogram;
                writeln!(
                    out,
                    "run {run}/{}:    {:<12} p50 {:>9}   p99.9 {:>9}   max {:>9}",
                    args.common.runs,
                    transport.name(),
                    nanos(h.value_at_quantile(0.5) as f64),
                    nanos(h.value_at_quantile(0.999) as f64),
                    nanos(h.max() as f64),
                )?;
            }
            runs.push(outcome);
        }
    }
    summary(args, &outcomes, &mut out)?;
    if let Some(path) = &args.plot {
        let mut series = Vec::new();
        for (transport, runs) in &outcomes {
            let mut merged = new_histogram()?;
            for run in runs {
                merged
                    .add(&run.histogram)
                    .map_err(|e| anyhow!("merging histograms: {e}"))?;
            }
            series.push((transport.name().to_string(), merged));
        }
        let gap = if args.gap > 0 {
            format!(" --gap {}", args.gap)
        } else {
            String::new()
        };
        let title = format!(
            "round trip, {}-byte messages, --wait {}{gap} ({} runs of {} round trips each; {} cores)",
            args.size,
            args.wait.name(),
            args.common.runs,
            thousands(args.iterations),
            cores()
        );
        plot::percentiles(path, &title, &series)
            .with_context(|| format!("drawing {}", path.display()))?;
        if !args.common.json {
            writeln!(out, "plot:       {}", path.display())?;
        }
    }
    Ok(())
}

fn header(args: &PingpongArgs, out: &mut impl Write) -> Result<()> {
    writeln!(
        out,
        "logbus bench pingpong: {}-byte messages, {} round trips timed after {} untimed, {}",
        args.size,
        thousands(args.iterations),
        thousands(args.warmup),
        match args.wait {
            Wait::Spin => "both sides busy-poll (--wait spin)",
            Wait::Futex => "both sides spin briefly, then sleep (--wait futex)",
        }
    )?;
    if args.gap > 0 {
        writeln!(
            out,
            "gap:        ping waits {} µs after each round trip before the next",
            args.gap
        )?;
    }
    writeln!(
        out,
        "logbus:     two logs in {}{}",
        args.common.describe_logs(),
        if args.common.exclusive {
            ", exclusive producers"
        } else {
            ""
        },
    )?;
    writeln!(
        out,
        "socket:     one Unix stream socket, a 4-byte length before each message, one write each; {}",
        match args.wait {
            Wait::Spin => "non-blocking reads in a loop",
            Wait::Futex => "blocking reads",
        }
    )?;
    writeln!(out, "cores:      {}", cores_note(2))?;
    if let Some(load) = load_average() {
        writeln!(out, "load:       {load} (load average at the start)")?;
    }
    Ok(())
}

/// `812 ns`, `4.31 µs`, `1.20 ms`.
fn nanos(ns: f64) -> String {
    if !ns.is_finite() {
        "-".into()
    } else if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// One transport's figures over all runs.
struct Summary {
    transport: Transport,
    /// The median over runs of each figure of [`RunOutcome::figures`].
    figures: Vec<f64>,
    ping_cpu: f64,
    pong_cpu: f64,
    timer: f64,
    /// Each run's p50.
    p50s: Vec<f64>,
}

fn summary(
    args: &PingpongArgs,
    outcomes: &[(Transport, Vec<RunOutcome>)],
    out: &mut impl Write,
) -> Result<()> {
    // For each transport, each figure's median over the runs.
    let medians: Vec<Summary> = outcomes
        .iter()
        .map(|(t, runs)| {
            let per_run: Vec<Vec<f64>> = runs.iter().map(RunOutcome::figures).collect();
            let columns = per_run.first().map_or(0, Vec::len);
            let figures = (0..columns)
                .map(|c| median(&per_run.iter().map(|f| f[c]).collect::<Vec<_>>()))
                .collect();
            let ping_cpu = median(&runs.iter().map(|r| r.ping_cpu).collect::<Vec<_>>());
            let pong_cpu = median(&runs.iter().map(|r| r.pong_cpu).collect::<Vec<_>>());
            let timer = median(&runs.iter().map(|r| r.timer_ns as f64).collect::<Vec<_>>());
            Summary {
                transport: *t,
                figures,
                ping_cpu,
                pong_cpu,
                timer,
                p50s: per_run.iter().map(|f| f[0]).collect(),
            }
        })
        .collect();
    let figures_of = |t: Transport| {
        medians
            .iter()
            .find(|m| m.transport == t)
            .map(|m| m.figures.clone())
    };
    let ratios: Option<Vec<Option<f64>>> =
        match (figures_of(Transport::Logbus), figures_of(Transport::Socket)) {
            (Some(l), Some(s)) => Some(l.iter().zip(&s).map(|(&a, &b)| ratio(a, b)).collect()),
            _ => None,
        };

    if args.common.json {
        let options = args.common.log_options();
        for Summary {
            transport,
            figures,
            ping_cpu,
            pong_cpu,
            timer,
            p50s,
        } in &medians
        {
            let logbus = *transport == Transport::Logbus;
            let mut object = serde_json::json!({
                "bench": "pingpong",
                "transport": transport.name(),
                "size": args.size,
                "iterations": args.iterations,
                "warmup": args.warmup,
                "wait": args.wait.name(),
                "gap_us": args.gap,
                "runs": args.common.runs,
                "cores": cores(),
                "processes": 2,
                "checksums": logbus.then_some(options.get_checksums()),
                "timestamps": logbus.then_some(options.get_timestamps()),
                "segment_capacity": logbus.then_some(options.get_segment_capacity()),
                "exclusive": logbus.then_some(args.common.exclusive),
                "retain_segments": logbus.then_some(args.common.retain_segments),
                "filesystem": logbus.then(|| super::filesystem(&args.common.base_dir())),
                "max_ns": figures[PERCENTILES.len()],
                "mean_ns": figures[PERCENTILES.len() + 1],
                "p50_ns_runs": p50s,
                "timer_ns": timer,
                "ping_cpu": ping_cpu,
                "pong_cpu": pong_cpu,
                "ratio_p50_to_socket": ratios.as_ref().filter(|_| logbus).and_then(|r| r[0]),
                "ratio_p999_to_socket": ratios.as_ref().filter(|_| logbus).and_then(|r| r[3]),
            });
            for (i, &(_, key, _)) in PERCENTILES.iter().enumerate() {
                object[key] = serde_json::json!(figures[i]);
            }
            writeln!(out, "{object}")?;
        }
        return Ok(());
    }

    write!(out, "\n{:<15}", "round trip")?;
    for (name, _, _) in PERCENTILES {
        write!(out, "{name:>10}")?;
    }
    writeln!(
        out,
        "{:>10}{:>10}{:>10}{:>10}",
        "max", "mean", "ping CPU", "pong CPU"
    )?;
    for summary in &medians {
        write!(out, "{:<15}", summary.transport.name())?;
        for &figure in &summary.figures {
            write!(out, "{:>10}", nanos(figure))?;
        }
        writeln!(
            out,
            "{:>9.0}%{:>9.0}%",
            summary.ping_cpu * 100.0,
            summary.pong_cpu * 100.0
        )?;
    }
    if let Some(ratios) = &ratios {
        write!(out, "{:<15}", "logbus/socket")?;
        for &r in ratios {
            write!(out, "{:>10}", ratio_text(r))?;
        }
        writeln!(out, "   (lower is better for logbus)")?;
    }
    writeln!(
        out,
        "(each figure the median of {} runs; CPU: the share of the time a side was on a CPU, \
         100% when it spins, less when it sleeps)",
        args.common.runs
    )?;
    if let Some(summary) = medians.first() {
        writeln!(
            out,
            "timer:      reading the clock costs about {:.0} ns here; each round trip includes it once",
            summary.timer
        )?;
    }
    writeln!(out, "cores:      {}", cores_note(2))?;
    Ok(())
}

/// One run of one transport: fresh logs (or a fresh socket) in a fresh directory; pong, then
/// ping; every child reaped or killed before this returns, and the directory deleted.
fn run_once(args: &PingpongArgs, transport: Transport, deadline: Instant) -> Result<RunOutcome> {
    let dir = args.common.temp_dir("logbus-bench-")?;
    let startup = deadline.min(Instant::now() + STARTUP);
    let paths: Vec<PathBuf> = match transport {
        Transport::Logbus => {
            let paths = vec![dir.path().join("ping"), dir.path().join("pong")];
            for path in &paths {
                let log = Log::create(path, &args.common.log_options())
                    .with_context(|| format!("creating a log in {}", path.display()))?;
                ensure!(
                    args.size <= log.max_payload_len(),
                    "--size {} is larger than a log with {} segments takes ({} bytes at most)",
                    args.size,
                    units::binary_bytes(args.common.segment_capacity),
                    log.max_payload_len()
                );
            }
            paths
        }
        Transport::Socket => vec![dir.path().join("pingpong.sock")],
    };
    let spawn = |role: Role| -> Result<Worker> {
        let role_name = match role {
            Role::Ping => "ping",
            Role::Pong => "pong",
        };
        let mut child_args: Vec<OsString> = vec![
            "bench".into(),
            "pingpong-peer".into(),
            "--role".into(),
            role_name.into(),
            "--transport".into(),
            transport.arg().into(),
            "--size".into(),
            args.size.to_string().into(),
            "--iterations".into(),
            args.iterations.to_string().into(),
            "--warmup".into(),
            args.warmup.to_string().into(),
            "--wait".into(),
            args.wait.name().into(),
            "--gap".into(),
            args.gap.to_string().into(),
        ];
        for path in &paths {
            child_args.push("--path".into());
            child_args.push(path.into());
        }
        if args.common.exclusive {
            child_args.push("--exclusive".into());
        }
        Worker::spawn(format!("{} {role_name}", transport.name()), &child_args)
    };
    let mut pong = spawn(Role::Pong)?;
    pong.expect("ready", startup, |_| {})?;
    let mut ping = spawn(Role::Ping)?;
    ping.expect("ready", startup, |_| {})?;
    ping.send("go")?;

    let mut buckets = Vec::new();
    let result = ping.expect("result", deadline, |line| {
        if line.tag == "bucket" {
            buckets.push(line.clone());
        }
    })?;
    ping.wait_success(deadline)?;
    let pong_result = pong.expect("result", deadline, |_| {})?;
    pong.wait_success(deadline)?;

    let mut histogram = new_histogram()?;
    for bucket in &buckets {
        histogram
            .record_n(bucket.get("value")?, bucket.get::<u64>("count")?)
            .map_err(|e| anyhow!("a round trip out of the histogram's range: {e}"))?;
    }
    let iterations: u64 = result.get("iterations")?;
    ensure!(
        histogram.len() == iterations,
        "ping reported {iterations} round trips but {} in its histogram",
        histogram.len()
    );
    Ok(RunOutcome {
        histogram,
        ping_cpu: result.get("cpu")?,
        pong_cpu: pong_result.get("cpu")?,
        timer_ns: result.get("timer_ns")?,
    })
}

/// Runs one side of a ping-pong.
pub fn run_peer(args: &PeerArgs) -> Result<()> {
    let who = format!(
        "bench {} ({})",
        match args.role {
            Role::Ping => "ping",
            Role::Pong => "pong",
        },
        args.transport.name()
    );
    ensure!(args.size >= 8, "{who}: --size {} is below 8", args.size);
    let mut out = std::io::stdout();
    let mut histogram = new_histogram()?;
    let timer_ns = Timer::new().cost();
    let mut meter = Meter::default();
    match args.transport {
        Transport::Logbus => peer_log(args, &mut histogram, &mut meter, &mut out),
        Transport::Socket => peer_socket(args, &mut histogram, &mut meter, &mut out),
    }
    .with_context(|| who.clone())?;
    let cpu = meter.cpu_share();
    if args.role == Role::Ping {
        for bucket in histogram.iter_recorded() {
            writeln!(
                out,
                "bucket value={} count={}",
                bucket.value_iterated_to(),
                bucket.count_at_value()
            )?;
        }
        writeln!(
            out,
            "result iterations={} cpu={cpu} timer_ns={timer_ns}",
            histogram.len(),
        )?;
    } else {
        writeln!(out, "result cpu={cpu}")?;
    }
    Ok(())
}

/// The wall-clock and CPU time from [`Meter::start`] on.
#[derive(Default)]
struct Meter {
    start: Option<(Instant, Duration)>,
}

impl Meter {
    fn start(&mut self) {
        self.start = Some((Instant::now(), cpu_time()));
    }

    /// CPU time over wall-clock time since the start; NaN if it never started.
    fn cpu_share(&self) -> f64 {
        match self.start {
            Some((wall, cpu)) => {
                let wall = wall.elapsed().as_secs_f64();
                let cpu = cpu_time().saturating_sub(cpu).as_secs_f64();
                if wall > 0.0 {
                    cpu / wall
                } else {
                    f64::NAN
                }
            }
            None => f64::NAN,
        }
    }
}

/// The round-trip timer: the TSC through `quanta` (calibrated once per process), about 11 ns a
/// reading here against 30 ns for `clock_gettime`, so less of what is timed is the timer.
struct Timer(quanta::Clock);

impl Timer {
    fn new() -> Timer {
        Timer(quanta::Clock::new())
    }

    #[inline(always)]
    fn start(&self) -> u64 {
        self.0.raw()
    }

    /// Nanoseconds since `start`.
    #[inline(always)]
    fn since(&self, start: u64) -> u64 {
        self.0.delta_as_nanos(start, self.0.raw())
    }

    /// What one reading costs here: the median gap between two consecutive readings.
    fn cost(&self) -> u64 {
        let mut gaps: Vec<u64> = (0..1001)
            .map(|_| {
                let a = self.0.raw();
                let b = self.0.raw();
                self.0.delta_as_nanos(a, b)
            })
            .collect();
        gaps.sort_unstable();
        gaps[gaps.len() / 2]
    }
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

/// Spins for `gap` (nothing when it is zero).
fn pause(gap: Duration) {
    if gap.is_zero() {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < gap {
        std::hint::spin_loop();
    }
}

fn sequence_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.get(..8)?.try_into().ok()?))
}

/// Reads the next message with `consumer`, as `wait` says, and hands it to `handle`.
#[inline(always)]
fn receive(
    consumer: &mut Consumer,
    wait: Wait,
    mut handle: impl FnMut(logbus::Message<'_>),
) -> Result<()> {
    loop {
        let n = match wait {
            Wait::Spin => consumer.poll_batch(1, &mut handle)?,
            Wait::Futex => consumer.wait_batch(1, None, &mut handle)?,
        };
        if n > 0 {
            return Ok(());
        }
        std::hint::spin_loop();
    }
}

fn peer_log(
    args: &PeerArgs,
    histogram: &mut Histogram<u64>,
    meter: &mut Meter,
    out: &mut impl Write,
) -> Result<()> {
    ensure!(args.path.len() == 2, "two log paths are needed");
    let (send_path, receive_path) = match args.role {
        Role::Ping => (&args.path[0], &args.path[1]),
        Role::Pong => (&args.path[1], &args.path[0]),
    };
    let send_log = Log::open(send_path).context("opening the log to send into")?;
    let receive_log = Log::open(receive_path).context("opening the log to read")?;
    let mut producer = if args.exclusive {
        send_log.exclusive_producer()
    } else {
        send_log.producer()
    }
    .context("making a producer")?;
    let mut consumer = receive_log
        .consumer(StartAt::Earliest)
        .context("making a consumer")?;
    writeln!(out, "ready")?;
    let total = args.warmup + args.iterations;
    match args.role {
        Role::Ping => {
            let timer = Timer::new();
            wait_for_go()?;
            meter.start();
            let mut buf = vec![0x5Au8; args.size];
            let gap = Duration::from_micros(args.gap);
            for i in 0..total {
                buf[..8].copy_from_slice(&i.to_le_bytes());
                pause(gap);
                let sent = timer.start();
                producer.offer(&buf).context("sending")?;
                let mut got = None;
                receive(&mut consumer, args.wait, |m| got = sequence_of(m.payload()))?;
                let round_trip = timer.since(sent);
                ensure!(got == Some(i), "message {i} came back as {got:?}");
                if i >= args.warmup {
                    histogram.saturating_record(round_trip);
                }
            }
        }
        Role::Pong => {
            for i in 0..total {
                let mut got = None;
                let mut sent = Ok(0);
                receive(&mut consumer, args.wait, |m| {
                    got = sequence_of(m.payload());
                    sent = producer.offer(m.payload());
                })?;
                sent.context("sending back")?;
                ensure!(got == Some(i), "message {got:?} arrived where {i} was due");
                if i == 0 {
                    meter.start();
                }
            }
        }
    }
    Ok(())
}

fn peer_socket(
    args: &PeerArgs,
    histogram: &mut Histogram<u64>,
    meter: &mut Meter,
    out: &mut impl Write,
) -> Result<()> {
    let path = args.path.first().context("no socket path")?;
    let stream = match args.role {
        Role::Ping => {
            let stream = UnixStream::connect(path)
                .with_context(|| format!("connecting to {}", path.display()))?;
            writeln!(out, "ready")?;
            stream
        }
        Role::Pong => {
            let listener = UnixListener::bind(path)
                .with_context(|| format!("listening at {}", path.display()))?;
            writeln!(out, "ready")?;
            listener.accept().context("accepting ping")?.0
        }
    };
    if args.wait == Wait::Spin {
        stream.set_nonblocking(true)?;
    }
    let mut writer = stream.try_clone()?;
    let mut reader = FrameReader::new(stream);
    let mut scratch = Vec::with_capacity(args.size + socket::PREFIX_LEN);
    let total = args.warmup + args.iterations;
    match args.role {
        Role::Ping => {
            let timer = Timer::new();
            wait_for_go()?;
            meter.start();
            let mut buf = vec![0x5Au8; args.size];
            let gap = Duration::from_micros(args.gap);
            for i in 0..total {
                buf[..8].copy_from_slice(&i.to_le_bytes());
                pause(gap);
                let sent = timer.start();
                socket::send_frame(&mut writer, &mut scratch, &buf).context("sending")?;
                let got = loop {
                    if let Some(frame) = reader.next_frame()? {
                        break sequence_of(frame);
                    }
                    fill(&mut reader)?;
                };
                let round_trip = timer.since(sent);
                ensure!(got == Some(i), "message {i} came back as {got:?}");
                if i >= args.warmup {
                    histogram.saturating_record(round_trip);
                }
            }
        }
        Role::Pong => {
            for i in 0..total {
                loop {
                    if let Some(frame) = reader.next_frame()? {
                        let got = sequence_of(frame);
                        ensure!(got == Some(i), "message {got:?} arrived where {i} was due");
                        socket::send_frame(&mut writer, &mut scratch, frame)
                            .context("sending back")?;
                        if i == 0 {
                            meter.start();
                        }
                        break;
                    }
                    fill(&mut reader)?;
                }
            }
        }
    }
    Ok(())
}

/// Reads more into `reader`: waits in the kernel on a blocking socket, returns at once on
/// a non-blocking one.
fn fill(reader: &mut FrameReader) -> Result<()> {
    match reader.fill() {
        Ok(0) => bail!("the other side closed the socket"),
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ) =>
        {
            std::hint::spin_loop();
            Ok(())
        }
        Err(e) => Err(e).context("reading the socket"),
    }
}
