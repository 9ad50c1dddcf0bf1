//! Typed messages: a plain-old-data struct is its own wire format. It is written straight into
//! the log and read in place by consumers, with no encoding, decoding or copy.
//!
//! ```text
//! cargo run --example typed
//! ```
//!
//! The struct derives `bytemuck::Pod`; add `bytemuck = { version = "1", features = ["derive"] }`
//! to your own Cargo.toml to do the same (and `tempfile`, for the scratch directory used here).

use bytemuck::{Pod, Zeroable};
use logbus::{Log, LogOptions, StartAt};
use std::path::{Path, PathBuf};

/// A market data tick, exactly as it lies in the log.
///
/// `#[repr(C)]` fixes the field order and offsets. `Pod` promises that any bytes of the right
/// size are a valid `Tick`: the derive refuses padding bytes between fields, and fields such as
/// `bool`, enums, references or `String`. So prices are fixed-point integers, sides are plain
/// numbers, and the fields are ordered so that none needs padding (32 bytes, aligned to 8).
/// Fields are in the host's byte order, which every process on one host shares.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Tick {
    instrument: u32,
    side: u32,
    /// In ten-thousandths: 1_012_500 is 101.25.
    price: i64,
    quantity: u64,
    exchange_time_ns: u64,
}

const BUY: u32 = 0;
const SELL: u32 = 1;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("logbus-typed-")
        .tempdir_in(memory_backed_dir())?;
    let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(1 << 20))?;
    let mut producer = log.producer()?;
    let mut consumer = log.consumer(StartAt::Earliest)?;
    let mut sent = Vec::new();

    // 1. `offer_pod` copies a value you already have into the log, like `offer` does bytes.
    for i in 0..3 {
        let tick = Tick {
            instrument: 7,
            side: BUY,
            price: 1_012_500 + i * 100,
            quantity: 100,
            exchange_time_ns: 1_700_000_000_000_000_000 + i as u64,
        };
        producer.offer_pod(&tick)?;
        sent.push(tick);
    }

    // 2. `claim` hands out the message's bytes in the shared mapping: build the value right
    //    there, not on the stack first. The bytes start zeroed, and a single message's payload
    //    is 8-aligned, so `from_bytes_mut` can view them as a `Tick` (it panics on a size or
    //    alignment mismatch; `try_from_bytes_mut` returns an error instead).
    for i in 0..3 {
        let mut claim = producer.claim(size_of::<Tick>())?;
        let tick: &mut Tick = bytemuck::from_bytes_mut(&mut claim);
        tick.instrument = 9;
        tick.side = SELL;
        tick.price = 995_000 - i * 50;
        tick.quantity = 10 * (i as u64 + 1);
        tick.exchange_time_ns = 1_700_000_000_000_001_000 + i as u64;
        sent.push(*tick);
        // Nobody sees the tick until this commit; dropping the claim instead would abort it.
        claim.commit()?;
    }

    // Read in place: `as_pod` checks the size and alignment and returns a reference into the
    // mapping. The tick is never copied out of the log.
    let mut received = 0;
    while let Some(message) = consumer.poll()? {
        let tick: &Tick = message.as_pod()?;
        assert!(
            std::ptr::eq(tick as *const Tick as *const u8, message.payload().as_ptr()),
            "as_pod must view the payload in place"
        );
        assert_eq!(
            *tick, sent[received],
            "tick {received} differs from what was sent"
        );
        println!("position {:>3}: {}", message.position(), describe(tick));
        received += 1;
    }
    assert_eq!(received, 6, "expected the 6 ticks just sent");

    // 3. Pod values in a message set: `push_pod` writes them as records. Records inside a set
    //    are only 4-aligned, so read them with `read_pod`, which copies the (small) value out
    //    whatever its alignment; `as_pod` refuses records of any type aligned to more than 4.
    let burst: Vec<Tick> = (0..4)
        .map(|i| Tick {
            instrument: 7,
            side: SELL,
            price: 1_013_000 + i * 100,
            quantity: 5 + i as u64,
            exchange_time_ns: 1_700_000_000_000_002_000,
        })
        .collect();
    // Each record takes a 4-byte length before it (and alignment to 4), one header for all.
    let mut batch = producer.batch(burst.len() * (4 + size_of::<Tick>()))?;
    for tick in &burst {
        batch.push_pod(tick)?;
    }
    batch.commit()?;
    for sent in &burst {
        let message = consumer.poll()?.expect("every record of the committed set");
        let tick: Tick = message.read_pod()?;
        assert_eq!(tick, *sent, "a record of the set differs");
    }
    println!("message set: read back {} ticks with read_pod", burst.len());

    // A payload of another size is an error naming both sizes, never a misread.
    producer.offer(b"not a tick")?;
    let message = consumer.poll()?.expect("the message just offered");
    let error = message
        .as_pod::<Tick>()
        .expect_err("10 bytes are not a Tick");
    println!("as_pod on a 10-byte payload: {error}");

    Ok(())
}

fn describe(tick: &Tick) -> String {
    format!(
        "instrument {} {} {:>3} @ {}.{:04}",
        tick.instrument,
        if tick.side == BUY { "buy " } else { "sell" },
        tick.quantity,
        tick.price / 10_000,
        tick.price % 10_000
    )
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
