//! Message sets: many small records written as one frame, with one header and one checksum,
//! made visible to consumers all at once.
//!
//! ```text
//! cargo run --example batch
//! ```
//!
//! Every single message pays a 24-byte frame header (length and commit state, kind, producer,
//! checksum, timestamp) and is padded to 8 bytes. A record in a message set pays a 4-byte
//! length instead. For small messages that is most of the log, the page cache and the network
//! saved, as Kafka's record batches do.

use logbus::{Batch, Log, LogOptions, StartAt};
use std::path::{Path, PathBuf};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("logbus-batch-")
        .tempdir_in(memory_backed_dir())?;
    let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(1 << 20))?;
    let mut producer = log.producer()?;
    let mut consumer = log.consumer(StartAt::Earliest)?;

    // 1. Build a set record by record. `batch` claims room for the whole set up front (each
    //    record takes a 4-byte length plus its bytes, 4-aligned); room left unused at commit
    //    becomes padding, so ask `Batch::bytes_needed` for what the records will take.
    let orders: Vec<String> = (0..100).map(|i| format!("order {i}")).collect();
    let room = Batch::bytes_needed(orders.iter().map(String::len));
    let mut batch = producer.batch(room)?;
    for order in &orders {
        batch.push(order.as_bytes())?;
    }

    // Pushed, not committed: consumers see none of it yet (not even the first records).
    assert!(
        consumer.poll()?.is_none(),
        "records of an uncommitted set must not be visible"
    );
    println!("before commit: the consumer sees nothing");

    // One commit publishes all 100 records at once.
    let set_position = batch.commit()?;
    let mut positions = Vec::new();
    let delivered = consumer.poll_batch(usize::MAX, |message| {
        assert_eq!(message.payload(), orders[positions.len()].as_bytes());
        positions.push(message.position());
    })?;
    assert_eq!(
        delivered,
        orders.len(),
        "all records appear with the commit"
    );
    println!(
        "after commit: one poll_batch delivers all {delivered} records of the set at position {set_position}"
    );

    // Each record has a position of its own, inside the set's frame (past its 24-byte
    // header), and a consumer can start at any of them.
    println!(
        "record positions: {:?} ... {}",
        &positions[..4],
        positions[positions.len() - 1]
    );
    let mut from_middle = log.consumer(StartAt::Position(positions[50]))?;
    let message = from_middle.poll()?.expect("record 50");
    assert_eq!(message.payload(), b"order 50");
    println!(
        "a consumer started at position {} reads {:?} first",
        positions[50],
        std::str::from_utf8(message.payload())?
    );

    // 2. When the records are at hand, `offer_batch` sizes, fills and commits the set at once.
    let position = producer.offer_batch(&["cancel 3", "cancel 17", "amend 42"])?;
    let mut cancels = Vec::new();
    consumer.poll_batch(usize::MAX, |message| {
        cancels.push(String::from_utf8_lossy(message.payload()).into_owned())
    })?;
    assert_eq!(cancels, ["cancel 3", "cancel 17", "amend 42"]);
    println!("offer_batch at position {position}: {cancels:?}");

    // 3. What it saves: the same 1000 16-byte messages, as single offers and as sets of 100.
    //    The tail moves by the bytes each way takes in the log (and on disk, and on the wire).
    let events: Vec<String> = (0..1000).map(|i| format!("event {i:010}")).collect();

    let before = log.tail();
    for event in &events {
        producer.offer(event.as_bytes())?;
    }
    let single = (log.tail() - before) as f64 / events.len() as f64;

    let before = log.tail();
    for set in events.chunks(100) {
        producer.offer_batch(set)?;
    }
    let batched = (log.tail() - before) as f64 / events.len() as f64;

    // Both ways delivered the same 2000 messages, in order.
    let mut read = Vec::new();
    while consumer.poll_batch(usize::MAX, |m| read.push(m.payload().to_vec()))? > 0 {}
    assert_eq!(read.len(), 2 * events.len());
    assert!(read
        .iter()
        .zip(events.iter().chain(&events))
        .all(|(r, e)| r == e.as_bytes()));

    println!(
        "bytes in the log per 16-byte message: single offers {single:.2}, sets of 100 {batched:.2}"
    );
    assert!(
        batched < single,
        "message sets should take less room per message"
    );
    Ok(())
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
