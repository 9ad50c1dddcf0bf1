//! `logbus bridge`: serve logs to other hosts (`serve`), read or mirror a remote log
//! (`subscribe`), and measure the bridge (`bench`).

pub mod bench;

use crate::signals;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use logbus::bridge::{
    Bridge, BridgeConfig, Mirror, RemoteConsumer, RemoteOptions, SendMode, Start,
};
use logbus::Message;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Subcommand, Debug)]
pub enum BridgeCommand {
    /// Serve every log under a directory to subscribers over TCP, with sendfile.
    ///
    /// Each subdirectory of --root that holds a log is served under its name. Subscribers
    /// get the log's committed bytes exactly as they lie in its segment files, sent from the
    /// page cache with sendfile(2). The bridge listens on loopback unless --listen names
    /// another address, takes only read requests, checks the token in --token-file if given
    /// (in constant time), and writes one line per subscription and per closed connection to
    /// standard error. It runs until Ctrl-C or SIGTERM. The protocol is docs/BRIDGE.md.
    #[command(after_help = "\
Examples:
  logbus bridge serve --root /dev/shm
  logbus bridge serve --root /var/lib/logs --listen 0.0.0.0:7410 --token-file /etc/logbus/token")]
    Serve(ServeArgs),

    /// Read a remote log through a bridge: print its messages, or mirror it into a replica.
    ///
    /// Without --mirror, prints each message of LOG (served by the bridge at ADDR) on a line
    /// of its own, in --format, with every CRC checked, until Ctrl-C, --count messages or
    /// --idle-exit. With --mirror DIR, writes what arrives into a local replica log in DIR
    /// (made if missing, resumed where it ends if not) that local consumers read with the
    /// ordinary API and that another bridge can serve. Either way a lost connection is
    /// re-established and the stream resumes where it stopped, with no gap or duplicate.
    #[command(after_help = "\
Examples:
  logbus bridge subscribe 127.0.0.1:7410 orders --from earliest --format json
  logbus bridge subscribe 10.0.0.5:7410 orders --mirror /dev/shm/orders-replica
  logbus bridge subscribe 127.0.0.1:7410 orders --from 65536 --count 10 --format hex")]
    Subscribe(SubscribeArgs),

    /// Measure the bridge: delivered GB/s and the bridge's CPU seconds per GB, with sendfile
    /// and with read-into-a-buffer-and-write, in the same run.
    #[command(after_help = "\
Examples:
  logbus bridge bench --subscribers 4
  logbus bridge bench --subscribers 16 --size 1GiB --message-size 4KiB")]
    Bench(bench::BenchArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The directory whose subdirectories are the logs to serve.
    #[arg(long)]
    pub root: PathBuf,
    /// The address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:7410")]
    pub listen: SocketAddr,
    /// A file holding the token every subscriber must present (trailing newline ignored).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Subscribers served at once; more are refused.
    #[arg(long, default_value_t = 1024)]
    pub max_subscribers: usize,
    /// Drop a subscriber whose connection takes no byte (or that sends no keepalive) this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub stall_timeout: Duration,
    /// How often each subscriber gets a heartbeat.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// Largest data message (each is one header and one sendfile).
    #[arg(long, default_value = "1MiB", value_parser = crate::units::parse_size)]
    pub max_chunk: u64,
    /// How bytes leave the segment files: sendfile, or copy (read into a buffer and write;
    /// for measurements).
    #[arg(long, value_enum, default_value_t = Mode::Sendfile)]
    pub send_mode: Mode,
    /// Do not write a line per connection.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// sendfile(2) from the page cache.
    Sendfile,
    /// pread(2) into a buffer, then send(2).
    Copy,
}

#[derive(Args, Debug)]
pub struct SubscribeArgs {
    /// The bridge's address, HOST:PORT.
    pub addr: String,
    /// The log's name on the bridge.
    pub log: String,
    /// Where to start: earliest, latest, or a position (a mirror starts at the first byte of
    /// the segment that holds it).
    #[arg(long, default_value = "earliest", value_parser = parse_start)]
    pub from: Start,
    /// Mirror into a replica log in this directory instead of printing.
    #[arg(long)]
    pub mirror: Option<PathBuf>,
    /// How to print each message.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// A file holding the token to present.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Stop after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop when nothing arrives for this long.
    #[arg(long, value_parser = parse_duration)]
    pub idle_exit: Option<Duration>,
    /// Do not check CRCs.
    #[arg(long)]
    pub no_verify: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The payload as text (invalid UTF-8 replaced), one message a line.
    Text,
    /// Position, then the payload in hex.
    Hex,
    /// One JSON object a line: position, producer, timestamp, length, payload.
    Json,
    /// Each payload as a 4-byte little-endian length and the bytes.
    Binary,
    /// Position, producer, length and timestamp; no payload.
    Summary,
}

pub fn run(command: &BridgeCommand) -> Result<()> {
    match command {
        BridgeCommand::Serve(args) => serve(args),
        BridgeCommand::Subscribe(args) => subscribe(args),
        BridgeCommand::Bench(args) => bench::run(args),
    }
}

fn serve(args: &ServeArgs) -> Result<()> {
    signals::catch_interrupts()?;
    let mut config = BridgeConfig::new(&args.root);
    config.listen = args.listen;
    config.threads = args.threads;
    config.max_subscribers = args.max_subscribers;
    config.stall_timeout = args.stall_timeout;
    config.heartbeat_interval = args.heartbeat;
    config.max_chunk = args.max_chunk;
    config.log_connections = !args.quiet;
    config.send_mode = match args.send_mode {
        Mode::Sendfile => SendMode::Sendfile,
        Mode::Copy => SendMode::Copy,
    };
    if let Some(path) = &args.token_file {
        config.token = Some(read_token(path)?);
    }
    let bridge = Bridge::start(config).context("starting the bridge")?;
    println!("listening on {}", bridge.local_addr());
    std::io::stdout().flush()?;
    while !signals::interrupted() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = bridge.stats();
    bridge.shutdown();
    eprintln!(
        "logbus bridge: stopped after {} connections, {} subscriptions, {} refused, {} dropped, {} bytes sent",
        stats.connections, stats.subscriptions, stats.refused, stats.dropped, stats.bytes_sent
    );
    Ok(())
}

fn read_token(path: &PathBuf) -> Result<Vec<u8>> {
    let mut token = std::fs::read(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    while token.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
        token.pop();
    }
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(token)
}

fn subscribe(args: &SubscribeArgs) -> Result<()> {
    signals::catch_interrupts()?;
    let mut options = RemoteOptions::new()
        .verify_checksums(!args.no_verify)
        .reconnect_window(None);
    if let Some(path) = &args.token_file {
        options = options.token(read_token(path)?);
    }
    if let Some(dir) = &args.mirror {
        if args.count.is_some() {
            bail!("--count counts printed messages; a mirror prints none (use --idle-exit)");
        }
        return mirror(args, dir, options);
    }
    let mut remote = RemoteConsumer::connect(args.addr.as_str(), &args.log, args.from, options)
        .with_context(|| format!("subscribing to '{}' at {}", args.log, args.addr))?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut printed = 0u64;
    let mut last_message = Instant::now();
    while args.count.is_none_or(|c| printed < c) && !signals::interrupted() {
        let wait = Duration::from_millis(100);
        let mut failed = None;
        let want = args
            .count
            .map_or(1024, |c| (c - printed).min(1024) as usize);
        let n = remote.wait_batch(want, Some(wait), |m| {
            if failed.is_none() {
                failed = print_message(&mut out, &m, args.format).err();
            }
        })?;
        if let Some(e) = failed {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e).context("writing to standard output");
        }
        printed += n as u64;
        if n > 0 {
            last_message = Instant::now();
        } else {
            match out.flush() {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                other => other.context("writing to standard output")?,
            }
            if args
                .idle_exit
                .is_some_and(|idle| last_message.elapsed() >= idle)
            {
                break;
            }
        }
    }
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to standard output"),
    }
}

fn mirror(args: &SubscribeArgs, dir: &PathBuf, options: RemoteOptions) -> Result<()> {
    let mut mirror = Mirror::open(args.addr.as_str(), &args.log, dir, args.from, options)
        .with_context(|| {
            format!(
                "mirroring '{}' at {} into {}",
                args.log,
                args.addr,
                dir.display()
            )
        })?;
    eprintln!(
        "logbus bridge: mirroring '{}' at {} into {} from position {}",
        args.log,
        args.addr,
        dir.display(),
        mirror.position()
    );
    let mut last_data = Instant::now();
    let mut last_report = Instant::now();
    let mut reported_at = mirror.position();
    while !signals::interrupted() {
        let n = mirror.step(Some(Duration::from_millis(100)))?;
        let now = Instant::now();
        if n > 0 {
            last_data = now;
        } else if args
            .idle_exit
            .is_some_and(|idle| last_data.elapsed() >= idle)
        {
            break;
        }
        if now - last_report >= Duration::from_secs(1) {
            let position = mirror.position();
            if position != reported_at {
                eprintln!(
                    "logbus bridge: replica at position {position} ({}/s)",
                    crate::units::binary_bytes(
                        ((position - reported_at) as f64 / (now - last_report).as_secs_f64())
                            as u64
                    )
                );
            }
            reported_at = position;
            last_report = now;
        }
    }
    eprintln!(
        "logbus bridge: replica {} ends at position {}",
        dir.display(),
        mirror.position()
    );
    Ok(())
}

fn print_message(out: &mut impl Write, m: &Message<'_>, format: Format) -> std::io::Result<()> {
    let payload = m.payload();
    match format {
        Format::Text => {
            out.write_all(String::from_utf8_lossy(payload).as_bytes())?;
            out.write_all(b"\n")
        }
        Format::Hex => {
            write!(out, "{}:", m.position())?;
            for b in payload {
                write!(out, " {b:02x}")?;
            }
            out.write_all(b"\n")
        }
        Format::Json => {
            write!(
                out,
                "{{\"position\":{},\"producer\":{},\"timestamp_ns\":{},\"len\":{},",
                m.position(),
                m.producer(),
                m.timestamp_ns()
                    .map_or("null".to_string(), |t| t.to_string()),
                payload.len()
            )?;
            match std::str::from_utf8(payload) {
                Ok(text) => write!(out, "\"text\":{}}}", json_string(text))?,
                Err(_) => {
                    out.write_all(b"\"hex\":\"")?;
                    for b in payload {
                        write!(out, "{b:02x}")?;
                    }
                    out.write_all(b"\"}")?;
                }
            }
            out.write_all(b"\n")
        }
        Format::Binary => {
            out.write_all(&(payload.len() as u32).to_le_bytes())?;
            out.write_all(payload)
        }
        Format::Summary => writeln!(
            out,
            "position={} producer={} len={} timestamp_ns={}",
            m.position(),
            m.producer(),
            payload.len(),
            m.timestamp_ns().map_or("-".to_string(), |t| t.to_string())
        ),
    }
}

fn json_string(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('"');
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// `earliest`, `latest` or a position.
pub fn parse_start(text: &str) -> Result<Start, String> {
    match text {
        "earliest" => Ok(Start::Earliest),
        "latest" => Ok(Start::Latest),
        other => other
            .parse()
            .map(Start::Position)
            .map_err(|_| format!("'{other}': expected earliest, latest or a position (a number)")),
    }
}

/// `250ms`, `30s`, `2m`, `1h`, or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}': expected a duration such as 500ms, 30s or 2m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("'{text}': unknown unit '{other}' (ms, s, m or h)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("'{text}': not a duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_and_durations_parse() {
        assert_eq!(parse_start("earliest"), Ok(Start::Earliest));
        assert_eq!(parse_start("latest"), Ok(Start::Latest));
        assert_eq!(parse_start("65536"), Ok(Start::Position(65536)));
        assert!(parse_start("soon").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }
}
