//! `logbus`: the command-line program of the logbus IPC log. One module per subcommand;
//! `main` parses the command line, runs the subcommand, and prints any error as
//! `logbus: <error>` with a non-zero exit status.

mod bench;
mod bridge;
mod child;
mod demo;
mod dump;
mod logdir;
mod publish;
mod show;
mod signals;
mod start;
mod stat;
mod sub;
mod units;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// A lock-free, persistent, memory-mapped log that processes on one host share.
///
/// Producers in any number of processes append messages to a log, a directory of
/// memory-mapped segment files (put it under /dev/shm to keep it in memory); consumers in
/// any number of processes read those messages in place, in order, without copying. Start
/// with `logbus demo`.
#[derive(Parser, Debug)]
#[command(name = "logbus", version, propagate_version = true)]
#[command(after_help = "\
Quickstart:
  logbus demo
From a shell:
  echo hello | logbus pub /dev/shm/orders --create
  logbus sub /dev/shm/orders --follow
  logbus dump /dev/shm/orders --verify
  logbus stat /dev/shm/orders")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run producer processes and a consumer process over a fresh log, and check every message.
    ///
    /// The quickstart. `logbus demo` creates a log in a new temporary directory under
    /// /dev/shm (or the system's temporary directory if there is no /dev/shm), starts a
    /// consumer process that reads the log from its start, then 2 producer processes that
    /// together send 10 million 32-byte messages. The consumer reads in batches and checks
    /// that every message arrived exactly once, in the order its producer sent it, with a
    /// good CRC32C, the right size and the bytes that were sent. The demo prints the
    /// consumer's throughput (from its first message to its last) and each producer's rate,
    /// deletes the log, and exits with status 0 only if nothing was lost, duplicated,
    /// reordered or corrupted; otherwise it lists the first problems with their positions.
    #[command(after_help = "\
Examples:
  logbus demo
  logbus demo --producers 4 --messages 1000000 --size 100
  logbus demo --messages 200000 --segment-capacity 64KiB --keep")]
    Demo(demo::DemoArgs),

    /// Show a log or one segment file as it lies: meta file, segments, frames; --verify checks it.
    ///
    /// `logbus dump PATH` reads a log directory (its meta file, then every segment file in
    /// order) or a single segment file, without joining the log: it takes no producer slot
    /// and writes nothing. It lists the log's format, options, tail and producers, then
    /// each segment and every frame in it, and reports on lines of their own every problem
    /// it finds (with its position) and every claim still in flight. It exits with status
    /// 1 if it found a problem, and with a clear error if PATH is not a log or a segment.
    #[command(after_long_help = dump::AFTER_LONG_HELP)]
    Dump(dump::DumpArgs),

    /// Live view of a log: tail, messages/s and MB/s, producers, consumers.
    ///
    /// `logbus stat PATH` prints a report every second until Ctrl-C: the tail position, the
    /// rate of messages and bytes, and the producers with whether each still runs. With
    /// --once it prints one report and exits; with --json each report is one JSON line.
    #[command(after_long_help = stat::AFTER_LONG_HELP)]
    Stat(stat::StatArgs),

    /// Append each line of standard input to a log as a message (--binary: length-prefixed).
    ///
    /// `logbus pub PATH` becomes one producer of the log and offers each line it reads as
    /// one message, until the end of its input. --create makes the log first if it is not
    /// there, with the options given.
    #[command(name = "pub", after_long_help = publish::AFTER_LONG_HELP)]
    Pub(publish::PubArgs),

    /// Print the messages of a log, one a line, as text, hex, JSON or length-prefixed binary.
    ///
    /// `logbus sub PATH` reads the log with a consumer of its own from --from (earliest by
    /// default), prints every committed message and exits; with --follow it then waits for
    /// more, until Ctrl-C or --count messages.
    #[command(after_long_help = sub::AFTER_LONG_HELP)]
    Sub(sub::SubArgs),

    /// Serve logs to other hosts, subscribe to a remote log, mirror it, or measure the bridge.
    ///
    /// `logbus bridge serve` serves every log under a directory over TCP, sending the
    /// segment files' bytes with sendfile; `logbus bridge subscribe` prints a remote log's
    /// messages or mirrors it into a local replica; `logbus bridge bench` measures delivered
    /// GB/s and the bridge's CPU per GB, with sendfile and with read+write.
    #[command(subcommand)]
    Bridge(bridge::BridgeCommand),

    /// One producer process of `logbus demo` (started by it, not by hand).
    #[command(hide = true)]
    DemoProducer(demo::ProducerArgs),

    /// The consumer process of `logbus demo` (started by it, not by hand).
    #[command(hide = true)]
    DemoConsumer(demo::ConsumerArgs),

    /// Measure logbus across processes, beside a Unix socket in the same run: throughput,
    /// pingpong.
    #[command(after_help = "\
Examples:
  logbus bench throughput --size 32 --batch 64
  logbus bench pingpong --wait futex --plot latency.svg")]
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Bridge(command) => bridge::run(command),
        Command::Dump(args) => dump::run(args),
        Command::Stat(args) => stat::run(args),
        Command::Pub(args) => publish::run(args),
        Command::Sub(args) => sub::run(args),
        Command::DemoProducer(args) => demo::run_producer(args),
        Command::DemoConsumer(args) => demo::run_consumer(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("logbus: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, `creating the log: /dev/shm/x: Permission denied`, as
/// anyhow's alternate form (`{:#}`) prints them, except that a cause is left out when the
/// message before it already says it: a `logbus::Error::Io` prints its `std::io::Error` and
/// also hands it on as its source, and so does tempfile's "<error> at path <path>", which
/// `{:#}` would print twice.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    let mut previous = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !previous.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        previous = text;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn errors_print_their_causes_once_on_one_line() {
        let denied = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let io = logbus::Error::Io {
            path: "/dev/shm/x".into(),
            source: denied(),
        };
        let e = anyhow::Error::new(io).context("creating the log");
        assert_eq!(
            one_line(&e),
            format!("creating the log: /dev/shm/x: {}", denied())
        );

        let r: Result<(), _> = Err(denied());
        let e = anyhow::Context::context(r, "opening the log").unwrap_err();
        let e = e.context("demo consumer");
        assert_eq!(
            one_line(&e),
            format!("demo consumer: opening the log: {}", denied())
        );
    }

    #[test]
    fn hidden_subcommands_stay_out_of_help() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("demo"));
        assert!(!help.contains("demo-producer"));
        assert!(!help.contains("demo-consumer"));
    }
}
