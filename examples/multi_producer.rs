//! Many producers, in threads and in processes, appending to one log at once; one consumer
//! checks that every message arrived exactly once and, for each producer, in order.
//!
//! ```text
//! cargo run --example multi_producer
//! ```
//!
//! The example starts copies of itself as the producer processes. Producers do not coordinate:
//! each claims room for its next message with one atomic add on the log's shared tail, so
//! their messages interleave in the log, while each producer's own stay in the order it
//! wrote them.

use bytemuck::{Pod, Zeroable};
use logbus::{Log, LogOptions, StartAt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Producer threads in this process.
const THREADS: u32 = 3;
/// Producer processes, each running one producer.
const PROCESSES: u32 = 3;
/// Messages each producer sends.
const PER_PRODUCER: u64 = 50_000;

/// Each message says who wrote it and which of that producer's messages it is.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct Stamp {
    producer: u32,
    pid: u32,
    sequence: u64,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        // A producer process: `multi_producer produce <dir> <producer id>`.
        [role, dir, id] if role == "produce" => Ok(produce(&Log::open(dir)?, id.parse()?)?),
        [] => run(),
        _ => Err("usage: multi_producer".into()),
    }
}

/// Sends this producer's messages, numbered from 0.
fn produce(log: &Log, producer: u32) -> logbus::Result<()> {
    // One `Producer` per thread: it is cheap, and holds a slot in the log's producer table.
    let mut writer = log.producer()?;
    let pid = std::process::id();
    for sequence in 0..PER_PRODUCER {
        writer.offer_pod(&Stamp {
            producer,
            pid,
            sequence,
        })?;
    }
    Ok(())
}

fn run() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("logbus-multi-")
        .tempdir_in(memory_backed_dir())?;
    // Small segments, so that the producers also cross several segment ends.
    let capacity = 1 << 20;
    let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(capacity))?;

    // From the log's first message: the consumer misses nothing, whenever producers start.
    let mut consumer = log.consumer(StartAt::Earliest)?;
    let began = Instant::now();

    // Producer ids 0..THREADS are threads of this process; the rest are child processes.
    let mut children = Vec::new();
    for id in THREADS..THREADS + PROCESSES {
        let child = Command::new(std::env::current_exe()?)
            .arg("produce")
            .arg(dir.path())
            .arg(id.to_string())
            .spawn()?;
        children.push(child);
    }

    std::thread::scope(|scope| -> Result<()> {
        let log = &log;
        let threads: Vec<_> = (0..THREADS)
            .map(|id| scope.spawn(move || produce(log, id)))
            .collect();

        let producers = (THREADS + PROCESSES) as usize;
        let total = producers as u64 * PER_PRODUCER;
        let mut next = vec![0u64; producers]; // the sequence expected next from each producer
        let mut pids = vec![0u32; producers];
        let mut switches = 0u64; // how often the log goes from one producer to another
        let mut previous = None;

        for _ in 0..total {
            let message = consumer
                .wait(Some(Duration::from_secs(10)))?
                .ok_or("no message for 10 s: did a producer fail?")?;
            // Single messages are 8-aligned: the stamp is read in place.
            let stamp: &Stamp = message.as_pod()?;
            let p = stamp.producer as usize;
            if p >= producers || stamp.sequence != next[p] {
                return Err(format!(
                    "at position {}: producer {p} message {}, but expected message {} from it",
                    message.position(),
                    stamp.sequence,
                    next.get(p).copied().unwrap_or_default()
                )
                .into());
            }
            next[p] += 1;
            pids[p] = stamp.pid;
            switches += u64::from(previous.is_some_and(|q| q != p));
            previous = Some(p);
        }
        let elapsed = began.elapsed();

        // Every producer must have finished cleanly, and sent nothing beyond what we counted.
        for thread in threads {
            thread.join().expect("producer thread panicked")?;
        }
        for mut child in children {
            let status = child.wait()?;
            if !status.success() {
                return Err(format!("a producer process failed: {status}").into());
            }
        }
        if consumer.poll()?.is_some() {
            return Err("a message beyond the expected ones".into());
        }

        println!(
            "{producers} producers ({THREADS} threads of process {}, {PROCESSES} processes) \
             wrote {total} messages in {elapsed:.2?}: {} bytes in {} segments of {capacity}",
            std::process::id(),
            log.tail(),
            log.tail().div_ceil(capacity)
        );
        for (p, (count, pid)) in next.iter().zip(&pids).enumerate() {
            let kind = if p < THREADS as usize {
                "thread"
            } else {
                "process"
            };
            println!("producer {p} ({kind} in pid {pid}): messages 0..{count} in order");
        }
        println!(
            "the consumer saw every message exactly once, in order per producer; \
             the log went from one producer to another {switches} times"
        );
        Ok(())
    })
}

/// A log under /dev/shm lives in memory only; elsewhere it is an ordinary directory on disk.
fn memory_backed_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}
