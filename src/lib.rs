//! logbus: a lock-free IPC bus for processes on one host.
//!
//! Producers in many processes append to one shared, memory-mapped, persistent log by
//! claiming space with a single atomic add; consumers in many processes read messages in
//! place, without copying. A log is a directory: a meta file and segment files whose byte
//! format (`docs/FORMAT.md`) is the same in memory, on disk and on the wire.
//!
//! ```
//! use logbus::{Log, LogOptions, StartAt};
//! let dir = tempfile::tempdir()?;
//! let log = Log::open_or_create(dir.path(), &LogOptions::new())?;
//!
//! let mut producer = log.producer()?;
//! producer.offer(b"hello, bus")?;
//!
//! let mut consumer = log.consumer(StartAt::Earliest)?;
//! let message = consumer.poll()?.expect("a committed message");
//! assert_eq!(message.payload(), b"hello, bus");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod error;
pub mod format;
#[doc(hidden)]
pub mod protocol;
#[doc(hidden)]
pub mod sync;

#[cfg(not(loom))]
pub mod bridge;
#[cfg(not(loom))]
mod clock;
#[cfg(not(loom))]
mod consumer;
#[cfg(not(loom))]
pub mod inspect;
#[cfg(not(loom))]
mod log;
#[cfg(not(loom))]
mod meta;
#[cfg(not(loom))]
mod preparer;
#[cfg(not(loom))]
mod producer;
#[cfg(not(loom))]
mod segment;
#[cfg(not(loom))]
mod verify;

#[cfg(not(loom))]
pub use consumer::{Consumer, Message, StartAt, DEFAULT_CLAIM_TIMEOUT};
pub use error::{Error, Result};
#[cfg(not(loom))]
pub use log::{ConsumerInfo, Log, LogOptions, RetentionReport};
#[cfg(not(loom))]
pub use meta::ProducerInfo;
#[cfg(not(loom))]
pub use producer::{Batch, Claim, Producer};
#[cfg(not(loom))]
pub use verify::{Problem, RecoveryReport, VerifyReport};
