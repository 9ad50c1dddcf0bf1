//! `logbus bench`: cross-process benchmarks of logbus, each beside the same workload over a
//! Unix domain stream socket in the same invocation, so that no figure goes without its
//! baseline.
//!
//! * `logbus bench throughput`: producer processes offer messages into a log that consumer
//!   processes read and check (count, and order per producer); then the same messages go
//!   over Unix stream sockets, length-prefixed behind 64 KiB buffers. See [`throughput`].
//! * `logbus bench pingpong`: two processes bounce a message through two logs, then through
//!   a socket, and the round-trip times go into HDR histograms. See [`pingpong`].
//!
//! Like `logbus demo`, the parent starts this same program again as hidden subcommands
//! (`bench throughput-producer`, `bench throughput-consumer`, `bench pingpong-peer`) and
//! talks to them through [`crate::child`]. Every figure is repeated `--runs` times (3 by
//! default), logbus and socket runs alternating, and the median is reported with the
//! spread.
//!
//! `--json` prints one JSON object per line, one per transport, after all runs; the fields
//! are documented in [`THROUGHPUT_HELP`] and [`PINGPONG_HELP`], which `--help` prints.

pub mod pingpong;
pub mod plot;
pub mod socket;
pub mod throughput;

use crate::units;
use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

/// What `logbus bench throughput --help` prints after the options.
pub const THROUGHPUT_HELP: &str = "\
Examples:
  logbus bench throughput
  logbus bench throughput --size 32 --batch 64
  logbus bench throughput --size 4KiB --messages 1000000
  logbus bench throughput --trail 4KiB   (consumers keep 4 KiB behind busy producers)
  logbus bench throughput --producers 2 --consumers 2 --json

With --json, one object per line, one per transport (logbus, then unix-socket):
  bench                  \"throughput\"
  transport              \"logbus\" or \"unix-socket\"
  size                   payload bytes per message
  messages               messages sent in all; every consumer gets all of them
  producers, consumers   processes of each kind
  batch                  messages per message set (1 = each offered alone)
  copy                   true: set records copied in (--copy); false: written in place
                         (null for the socket)
  wait                   how consumers wait: \"spin\" or \"futex\"
  trail                  bytes consumers stay behind busy producers (--trail; 0: off;
                         null for the socket)
  runs                   runs of each transport; the figures are medians over them
  cores                  CPUs this process may use
  processes              benchmark processes running at once (producers + consumers)
  checksums, timestamps  the log's options (null for the socket)
  segment_capacity       the log's segment size in bytes (null for the socket)
  exclusive              true: single-producer logs, the producer an exclusive one (null
                         for the socket)
  retain_segments        segments each log keeps (0: all; null for the socket)
  filesystem             what the log's directory is on, e.g. \"tmpfs, 4 KiB pages\"
  msgs_per_sec           messages per second the slowest consumer saw, from its first
                         batch to its last (median over runs)
  mb_per_sec             the same in 10^6 bytes of payload per second
  msgs_per_sec_runs      msgs_per_sec of every run, in order
  producer_msgs_per_sec  all messages / the slowest producer's time (median over runs)
  verified               true: every consumer got every message, in order per producer
                         (a run that fails the check fails the command)
  ratio_to_socket        logbus's msgs_per_sec / the socket's (null on the socket's line,
                         or when only one transport ran); higher is better for logbus";

/// What `logbus bench pingpong --help` prints after the options.
pub const PINGPONG_HELP: &str = "\
Examples:
  logbus bench pingpong
  logbus bench pingpong --wait futex --iterations 50000
  logbus bench pingpong --size 256 --plot latency.svg
  logbus bench pingpong --wait futex --gap 100 --iterations 20000   (pong sleeps each time)

With --json, one object per line, one per transport (logbus, then unix-socket):
  bench                  \"pingpong\"
  transport              \"logbus\" or \"unix-socket\"
  size                   payload bytes per message
  iterations, warmup     round trips timed per run, and untimed before them
  wait                   how both sides wait: \"spin\" or \"futex\"
  gap_us                 microseconds ping waited between round trips (--gap)
  runs                   runs of each transport; the figures are medians over them
  cores, processes       CPUs this process may use; benchmark processes (2)
  checksums, timestamps, segment_capacity   the logs' options (null for the socket)
  exclusive, filesystem  single-producer logs (exclusive producers) or not; what the
                         logs' directory is on
  retain_segments        segments each log keeps (0: all; null for the socket)
  p50_ns, p90_ns, p99_ns, p999_ns, p9999_ns, max_ns, mean_ns
                         round-trip time in nanoseconds at that percentile (p999 is
                         99.9%), the largest and the mean: each the median over runs
  p50_ns_runs            p50_ns of every run, in order
  timer_ns               what reading the clock costs; every round trip includes it once
  ping_cpu, pong_cpu      the share of the time each side was on a CPU while it ran the
                         round trips: about 1 for a side that spins, less for one that
                         sleeps while it waits
  ratio_p50_to_socket, ratio_p999_to_socket
                         logbus's p50 (p99.9) / the socket's (null on the socket's line,
                         or when only one transport ran); lower is better for logbus";

/// Arguments of `logbus bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The benchmarks, and the hidden child processes they start.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Messages per second from producer processes to consumer processes, every message
    /// checked, beside Unix stream sockets.
    ///
    /// Starts the consumer processes, then the producer processes, releases the producers
    /// together, and reports what the slowest consumer saw from its first batch to its
    /// last. Consumers busy-poll by default (--wait spin). Then the same messages go over
    /// Unix domain stream sockets (each producer to each consumer, a 4-byte length before
    /// each message, 64 KiB write buffers), and the ratio logbus/socket is printed. Each
    /// transport runs --runs times, alternating; medians are reported.
    #[command(
        after_help = "Examples:\n  logbus bench throughput --size 32 --batch 64\n\
                            (--help lists the fields of --json)"
    )]
    #[command(after_long_help = THROUGHPUT_HELP)]
    Throughput(throughput::ThroughputArgs),

    /// Round-trip latency between two processes through two logs, beside a Unix socket.
    ///
    /// A ping process offers a message into one log; a pong process reads it and offers it
    /// back through a second log; ping times the round trip. After --warmup untimed round
    /// trips, --iterations are recorded in an HDR histogram and reported as percentiles.
    /// Then the same over one Unix domain stream socket. With --wait spin both sides
    /// busy-poll; with --wait futex they use Consumer::wait (a brief spin, then sleep on
    /// the log's futex) and blocking socket reads.
    #[command(
        after_help = "Examples:\n  logbus bench pingpong --wait futex --plot latency.svg\n\
                            (--help lists the fields of --json)"
    )]
    #[command(after_long_help = PINGPONG_HELP)]
    Pingpong(pingpong::PingpongArgs),

    /// The bridge's fan-out to N subscribers: delivered GB/s and the bridge's CPU seconds
    /// per GB with sendfile, beside read-into-a-buffer-and-write in the same run. The same
    /// as `logbus bridge bench`.
    #[command(after_help = "Examples:\n  logbus bench bridge --subscribers 16")]
    Bridge(crate::bridge::bench::BenchArgs),

    /// A producer process of `logbus bench throughput` (started by it, not by hand).
    #[command(hide = true)]
    ThroughputProducer(throughput::ProducerArgs),

    /// A consumer process of `logbus bench throughput` (started by it, not by hand).
    #[command(hide = true)]
    ThroughputConsumer(throughput::ConsumerArgs),

    /// One side of `logbus bench pingpong` (started by it, not by hand).
    #[command(hide = true)]
    PingpongPeer(pingpong::PeerArgs),
}

/// Runs `logbus bench ...`.
pub fn run(args: &BenchArgs) -> Result<()> {
    match &args.command {
        BenchCommand::Throughput(args) => throughput::run(args),
        BenchCommand::Pingpong(args) => pingpong::run(args),
        BenchCommand::Bridge(args) => crate::bridge::bench::run(args),
        BenchCommand::ThroughputProducer(args) => throughput::run_producer(args),
        BenchCommand::ThroughputConsumer(args) => throughput::run_consumer(args),
        BenchCommand::PingpongPeer(args) => pingpong::run_peer(args),
    }
}

/// The two ways messages travel in a benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// A logbus log in /dev/shm.
    Logbus,
    /// A Unix domain stream socket, length-prefixed and buffered.
    Socket,
}

impl Transport {
    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Logbus => "logbus",
            Transport::Socket => "unix-socket",
        }
    }

    /// The argument value for child processes.
    pub fn arg(self) -> &'static str {
        match self {
            Transport::Logbus => "logbus",
            Transport::Socket => "socket",
        }
    }
}

/// Which transports a benchmark runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Transports {
    /// logbus, then the socket baseline, alternating run by run.
    Both,
    /// logbus alone (no ratio), for profiling.
    Logbus,
    /// The socket alone.
    Socket,
}

impl Transports {
    pub fn list(self) -> &'static [Transport] {
        match self {
            Transports::Both => &[Transport::Logbus, Transport::Socket],
            Transports::Logbus => &[Transport::Logbus],
            Transports::Socket => &[Transport::Socket],
        }
    }
}

/// How a receiver waits for the next message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Wait {
    /// Busy-poll: `Consumer::poll`, non-blocking socket reads in a loop.
    Spin,
    /// `Consumer::wait` (a brief spin, then sleep on the log's futex); blocking socket reads.
    Futex,
}

impl Wait {
    pub fn name(self) -> &'static str {
        match self {
            Wait::Spin => "spin",
            Wait::Futex => "futex",
        }
    }
}

/// Options every benchmark takes.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Runs of each transport (alternating logbus and socket); medians are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,

    /// Which transports to run: both (logbus and the socket baseline), logbus or socket.
    #[arg(long, value_enum, default_value_t = Transports::Both)]
    pub transport: Transports,

    /// Bytes of data per segment file of the benchmark's logs: a power of two from 64KiB
    /// to 1GiB.
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = units::parse_size)]
    pub segment_capacity: u64,

    /// Create the logs without CRC32C checksums.
    #[arg(long)]
    pub no_checksums: bool,

    /// Create the logs without timestamps.
    #[arg(long)]
    pub no_timestamps: bool,

    /// Keep only the newest N segments of each log (retention by count; 0 keeps all). On a
    /// tmpfs such a log recycles the segments retention retires into new ones, so it no
    /// longer grows into fresh memory: compare with and without. Throughput consumers then
    /// read through durable cursors (committed every 65536 messages and whenever they find
    /// nothing new), which retention waits for, and the log is bounded to N - 2 segments of
    /// lag (at least 1; LogOptions::bounded), so a producer faster than its consumers waits
    /// instead of losing messages to retention, and a consumer at that bound is not in the
    /// segment being recycled (N >= 3 for that; with several producers the tail may pass the
    /// bound by a message each).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retain_segments: u64,

    /// Make the logs single-producer (LogOptions::single_producer): each producer is an
    /// exclusive one, its log's only producer, whose claims take no locked instruction, and
    /// segments recycled for it (with --retain-segments on a tmpfs) are not zeroed in whole
    /// ahead of it (throughput: with --producers 1 only).
    #[arg(long)]
    pub exclusive: bool,

    /// Print one JSON object per line, one per transport, instead of a table (--help lists
    /// the fields).
    #[arg(long)]
    pub json: bool,

    /// Make the benchmark's temporary directories in DIR [default: /dev/shm, else the
    /// system's temporary directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Stop every process and fail if the benchmark takes longer than this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub timeout: u64,
}

impl CommonArgs {
    /// The options of the benchmark's logs.
    pub fn log_options(&self) -> logbus::LogOptions {
        logbus::LogOptions::new()
            .segment_capacity(self.segment_capacity)
            .checksums(!self.no_checksums)
            .timestamps(!self.no_timestamps)
            .single_producer(self.exclusive)
            .retain_segments(self.retain_segments)
            // Consumers of a retaining log read through durable cursors, which retention
            // waits for; bounded mode makes producers wait for them in turn, so that the log
            // keeps to its segments (and recycles) however far ahead a producer could run.
            // Two segments short of retention: a consumer one segment further behind could
            // still be reading the segment due for recycling as the next one is made, and
            // the log would grow into fresh memory whenever the consumer is the slower side
            // (see `LogOptions::bounded`).
            .bounded(match self.retain_segments {
                0 => 0, // off
                n => n.saturating_sub(2).max(1) * self.segment_capacity,
            })
    }

    /// Where the benchmark's logs go: `--dir`, else [`default_base`].
    pub fn base_dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(default_base)
    }

    /// The logs' place and options, for the headers: "/dev/shm (tmpfs, 4 KiB pages), 64 MiB
    /// segments, CRC32C on, timestamps on".
    pub fn describe_logs(&self) -> String {
        let on = |off: bool| if off { "off" } else { "on" };
        let base = self.base_dir();
        let retention = match self.retain_segments {
            0 => String::new(),
            n => format!(", the newest {n} segments kept (retired ones recycled on tmpfs)"),
        };
        format!(
            "{} ({}), {} segments, CRC32C {}, timestamps {}{retention}",
            base.display(),
            filesystem(&base),
            units::binary_bytes(self.segment_capacity),
            on(self.no_checksums),
            on(self.no_timestamps),
        )
    }

    /// A new temporary directory for one run, deleted when dropped.
    pub fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir> {
        use anyhow::Context;
        let base = self.base_dir();
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&base)
            .with_context(|| format!("making a temporary directory in {}", base.display()))
    }
}

/// What a directory's logs live on, for the header of a benchmark: the file system type and,
/// for tmpfs, whether its files get huge pages (its `huge=` mount option) — making and
/// mapping 4 KiB pages costs about ten times as much per byte, and bounds what a log can
/// take in (see `benches/supply.rs`).
pub fn filesystem(dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    // The mount point that is the longest prefix of the directory is the one it is on.
    let found = mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 4 && dir.starts_with(fields[1]))
                .then(|| (fields[1], fields[2], fields[3]))
        })
        .max_by_key(|(point, _, _)| point.len());
    match found {
        Some((_, "tmpfs", options)) => {
            let huge = options
                .split(',')
                .find_map(|option| option.strip_prefix("huge="))
                .unwrap_or("never");
            if huge == "never" {
                "tmpfs, 4 KiB pages".to_string()
            } else {
                format!("tmpfs, huge={huge} (2 MiB pages)")
            }
        }
        Some((_, kind, _)) => kind.to_string(),
        None => "unknown file system".to_string(),
    }
}

/// /dev/shm if it is there (logs then live in memory), else the system's temporary directory.
pub fn default_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// A count such as `10000000`, `10_000_000` or `10,000,000`; at least 1.
pub fn parse_count(text: &str) -> Result<u64, String> {
    let digits: String = text.chars().filter(|&c| c != '_' && c != ',').collect();
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a whole number"))?;
    if n == 0 {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

/// A payload size: at least 8 bytes, which carry the message's sequence number.
pub fn parse_payload_size(text: &str) -> Result<usize, String> {
    let size = units::parse_size(text)?;
    if size < 8 {
        return Err(format!(
            "{size} is too small: every message carries its 8-byte sequence number"
        ));
    }
    usize::try_from(size).map_err(|_| format!("{size} is too large"))
}

/// The median of `values` (the mean of the middle two for an even count); 0 if empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The line printed beside every figure: how many cores there are for how many busy
/// processes.
pub fn cores_note(processes: usize) -> String {
    let cores = cores();
    if cores >= processes {
        format!(
            "this machine has {cores} core{}: each of the {processes} benchmark processes can have one \
             (the parent waits, idle)",
            if cores == 1 { "" } else { "s" }
        )
    } else {
        format!(
            "this machine has {cores} core{} for {processes} busy processes, so they take turns: \
             expect lower and noisier figures than with a core each",
            if cores == 1 { "" } else { "s" }
        )
    }
}

/// CPU time (user and system) this process has used so far.
pub fn cpu_time() -> std::time::Duration {
    // SAFETY: an all-zero rusage is a valid value, and getrusage writes only into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    std::time::Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// `ratio` as `0.42x`, or `-` when there is none.
pub fn ratio_text(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) if r.is_finite() => format!("{r:.2}x"),
        _ => "-".into(),
    }
}

/// `a / b` when both are positive and finite.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && a > 0.0 && b > 0.0).then(|| a / b)
}

/// The current load average, as `uptime` prints it, for the report's header.
pub fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    (fields.len() == 3).then(|| fields.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn counts_sizes_and_ratios_parse_and_print() {
        assert_eq!(parse_count("10_000"), Ok(10_000));
        assert!(parse_count("0").is_err());
        assert_eq!(parse_payload_size("4KiB"), Ok(4096));
        assert!(parse_payload_size("7").unwrap_err().contains("too small"));
        assert_eq!(ratio(2.0, 4.0), Some(0.5));
        assert_eq!(ratio(2.0, 0.0), None);
        assert_eq!(ratio_text(Some(0.5)), "0.50x");
        assert_eq!(ratio_text(None), "-");
    }
}
