//! `logbus bridge bench`: how fast the bridge delivers, and what it costs in CPU, with
//! `sendfile` and with the ordinary read-into-a-buffer-and-write path, measured in the same
//! run on the same log, so that the zero-copy claim is shown rather than asserted.
//!
//! The log is made and filled first (in /dev/shm by default, so it is all in the page
//! cache). Then, for each mode, a `logbus bridge serve` child process serves it and N
//! subscriber threads of this process each read the whole log from the start over loopback
//! TCP, discarding the bytes. Delivered GB/s is all subscribers' bytes over the wall time
//! from the first connection to the last byte; the bridge's CPU time is read from
//! /proc/PID/stat (user + system, all its threads) before and after.

use crate::units::{binary_bytes, parse_size};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use logbus::bridge::protocol::{
    self, message_kind, Request, Start, MESSAGE_HEADER_LEN, WELCOME_LEN,
};
use logbus::{Log, LogOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Subscribers reading the whole log at the same time.
    #[arg(long, default_value_t = 4)]
    pub subscribers: usize,
    /// Bytes of log each subscriber reads.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub size: u64,
    /// Payload bytes of each message in the log.
    #[arg(long, default_value = "16KiB", value_parser = parse_size)]
    pub message_size: u64,
    /// The bridge's worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Segment capacity of the log.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub segment_capacity: u64,
    /// Runs of each mode, alternating; every run is reported.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Where to make the log (default: /dev/shm, else the temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

struct Run {
    mode: &'static str,
    delivered: u64,
    elapsed: Duration,
    bridge_cpu: f64,
    subscriber_cpu: f64,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.subscribers == 0 || args.rounds == 0 {
        bail!("--subscribers and --rounds must be at least 1");
    }
    let base = args.dir.clone().unwrap_or_else(|| {
        if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        }
    });
    let root = tempfile::Builder::new()
        .prefix("logbus-bridge-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("making a directory in {}", base.display()))?;
    let log = Log::create(
        root.path().join("bench"),
        &LogOptions::new().segment_capacity(args.segment_capacity),
    )
    .context("creating the log")?;
    let payload_len = (args.message_size as usize).min(log.max_payload_len());
    let payload: Vec<u8> = (0..payload_len).map(|i| (i * 31 % 251) as u8).collect();
    let mut producer = log.producer()?;
    while log.tail() < args.size {
        producer.offer(&payload)?;
    }
    drop(producer);
    let end = log.tail();
    println!(
        "logbus bridge bench: {} subscribers each read {} ({} messages of {} B) over loopback TCP",
        args.subscribers,
        binary_bytes(end),
        end / (payload_len as u64 + 24).next_multiple_of(8),
        payload_len
    );
    println!(
        "log:     {} ({} segments), in {}",
        root.path().join("bench").display(),
        binary_bytes(args.segment_capacity),
        base.display()
    );
    println!(
        "bridge:  a `logbus bridge serve` child process with {} worker threads; {} cores here",
        args.threads,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("(after one untimed run of each mode)");
    println!();
    println!(
        "{:<12} {:>12} {:>9} {:>10} {:>14} {:>16} {:>20}",
        "mode",
        "delivered",
        "seconds",
        "GB/s",
        "bridge CPU s",
        "bridge CPU s/GB",
        "subscriber CPU s/GB"
    );
    // One untimed run of each mode first: the first connections of a run pay for the socket
    // memory and page tables that later ones find ready.
    for (mode, flag) in [("sendfile", "sendfile"), ("read+write", "copy")] {
        measure(args, root.path(), end, mode, flag)?;
    }
    let mut runs = Vec::new();
    for _ in 0..args.rounds {
        for (mode, flag) in [("sendfile", "sendfile"), ("read+write", "copy")] {
            let run = measure(args, root.path(), end, mode, flag)?;
            let gb = run.delivered as f64 / 1e9;
            println!(
                "{:<12} {:>10.2}GB {:>9.3} {:>10.2} {:>14.3} {:>16.3} {:>20.3}",
                run.mode,
                gb,
                run.elapsed.as_secs_f64(),
                gb / run.elapsed.as_secs_f64(),
                run.bridge_cpu,
                run.bridge_cpu / gb,
                run.subscriber_cpu / gb
            );
            runs.push(run);
        }
    }
    let per_gb = |mode: &str| {
        let (cpu, gb) = runs
            .iter()
            .filter(|r| r.mode == mode)
            .fold((0.0, 0.0), |(c, g), r| {
                (c + r.bridge_cpu, g + r.delivered as f64 / 1e9)
            });
        cpu / gb
    };
    let rate = |mode: &str| {
        let (bytes, secs) = runs
            .iter()
            .filter(|r| r.mode == mode)
            .fold((0.0, 0.0), |(b, s), r| {
                (b + r.delivered as f64, s + r.elapsed.as_secs_f64())
            });
        bytes / secs / 1e9
    };
    println!();
    println!(
        "all runs: sendfile {:.2} GB/s at {:.3} bridge CPU s/GB; read+write {:.2} GB/s at {:.3} \
         bridge CPU s/GB: sendfile costs the bridge {:.1}x less CPU per GB",
        rate("sendfile"),
        per_gb("sendfile"),
        rate("read+write"),
        per_gb("read+write"),
        per_gb("read+write") / per_gb("sendfile")
    );
    println!(
        "(subscribers run in this process on the same cores and pay a copy out of their socket \
         each; on loopback the receiving side is most of the work)"
    );
    Ok(())
}

/// The bridge child; killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn measure(args: &BenchArgs, root: &Path, end: u64, mode: &'static str, flag: &str) -> Result<Run> {
    let exe = std::env::current_exe().context("finding this program")?;
    let mut child = Command::new(exe)
        .args([
            "bridge",
            "serve",
            "--quiet",
            "--listen",
            "127.0.0.1:0",
            "--send-mode",
            flag,
        ])
        .arg("--root")
        .arg(root)
        .args(["--threads", &args.threads.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the bridge")?;
    let stdout = child.stdout.take().expect("piped");
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the bridge's address")?;
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow!("the bridge said '{}'", line.trim()))?
        .parse()?;
    let pid = server.0.id();
    let cpu_before = process_cpu(pid)?;
    let self_before = self_cpu();
    let started = Instant::now();
    let threads: Vec<_> = (0..args.subscribers)
        .map(|_| std::thread::spawn(move || drain(addr, end)))
        .collect();
    let mut delivered = 0;
    for thread in threads {
        delivered += thread
            .join()
            .map_err(|_| anyhow!("a subscriber thread panicked"))??;
    }
    let elapsed = started.elapsed();
    let bridge_cpu = process_cpu(pid)? - cpu_before;
    let subscriber_cpu = self_cpu() - self_before;
    drop(server);
    Ok(Run {
        mode,
        delivered,
        elapsed,
        bridge_cpu,
        subscriber_cpu,
    })
}

/// Reads the log from the start to `end` through the bridge, discarding the bytes; returns
/// how many log bytes arrived.
fn drain(addr: SocketAddr, end: u64) -> Result<u64> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let request = protocol::encode_request(&Request {
        log: "bench".into(),
        start: Start::Earliest,
        flags: 0,
        token: Vec::new(),
    })
    .map_err(|r| anyhow!(r.message))?;
    stream.write_all(&request)?;
    let mut header = [0u8; MESSAGE_HEADER_LEN];
    stream.read_exact(&mut header)?;
    let welcome = protocol::decode_header(&header);
    if welcome.kind != message_kind::WELCOME {
        bail!(
            "the bridge refused the subscription (message kind {})",
            welcome.kind
        );
    }
    let mut body = [0u8; WELCOME_LEN];
    stream.read_exact(&mut body)?;
    let mut position = welcome.position;
    let mut buf = vec![0u8; 1 << 20];
    while position < end {
        stream.read_exact(&mut header)?;
        let h = protocol::decode_header(&header);
        match h.kind {
            message_kind::DATA => {
                let mut left = h.length as usize;
                while left > 0 {
                    let n = stream.read(&mut buf[..left.min(1 << 20)])?;
                    if n == 0 {
                        bail!("the bridge closed the connection at {position}");
                    }
                    left -= n;
                }
                position += u64::from(h.length);
            }
            message_kind::HEARTBEAT => {
                stream.write_all(&protocol::encode_keepalive(position))?;
            }
            other => bail!("unexpected message of kind {other} at {position}"),
        }
    }
    Ok(position - welcome.position)
}

/// CPU seconds (user + system, every thread) process `pid` has used.
fn process_cpu(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let after_name = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the file (utime, stime); field 3 is the first after the name.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf takes a constant and no pointers.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / per_second)
}

/// CPU seconds this process has used (the subscriber threads, while they run).
fn self_cpu() -> f64 {
    // SAFETY: `usage` is a valid, writable rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
