//! The bridge: a log's committed bytes, sent unchanged with `sendfile(2)` from the page cache
//! to subscribers on other hosts, and the client side that reads them.
//!
//! * [`Bridge`] serves every log under a root directory over TCP: a subscriber asks for a log
//!   by name and a start, optionally with a token; the bridge answers with the log's identity
//!   and streams the bytes of its segment files exactly as they lie, never past the last
//!   committed frame. A few threads serve many subscribers over non-blocking sockets; a slow
//!   one holds up nobody else.
//! * [`RemoteConsumer`] iterates the messages of a remote log, as the ordinary
//!   [`Message`](crate::Message) type, with every CRC checked.
//! * [`Mirror`] writes what arrives into a local replica log whose segment data areas are
//!   byte for byte the source's: local consumers read it with the ordinary API, and another
//!   bridge can serve it in turn.
//!
//! Both clients reconnect by themselves when the bridge goes away and resume where they left
//! off, with no gap and no duplicate. `docs/BRIDGE.md` describes the protocol byte by byte.
//!
//! ```no_run
//! use logbus::bridge::{Bridge, BridgeConfig, RemoteConsumer, RemoteOptions, Start};
//! let bridge = Bridge::start(BridgeConfig::new("/dev/shm/logs"))?;
//! let mut remote = RemoteConsumer::connect(
//!     bridge.local_addr(),
//!     "orders",
//!     Start::Earliest,
//!     RemoteOptions::new(),
//! )?;
//! while let Some(message) = remote.wait(Some(std::time::Duration::from_secs(1)))? {
//!     println!("{} bytes at {}", message.payload().len(), message.position());
//! }
//! # Ok::<(), logbus::bridge::BridgeError>(())
//! ```

mod client;
mod link;
mod mirror;
pub mod protocol;
mod server;

pub use client::RemoteConsumer;
pub use link::{Endpoint, LogInfo, RemoteOptions};
pub use mirror::Mirror;
pub use protocol::{ErrorCode, Start};
pub use server::{Bridge, BridgeConfig, BridgeStats, SendMode};

/// Everything a bridge call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// A call on a local log (the bridge's source, a mirror's replica) failed.
    #[error(transparent)]
    Log(#[from] crate::Error),
    /// A network or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The bridge refused the request or ended the subscription, saying why.
    #[error("the bridge refused: {message} ({code:?})")]
    Refused {
        /// The kind of refusal.
        code: ErrorCode,
        /// For [`ErrorCode::PositionDeleted`], the earliest position in the log.
        position: u64,
        /// The bridge's explanation.
        message: String,
    },
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The bridge could not be reached or went away, and reconnecting is off or gave up.
    #[error("lost the bridge: {0}")]
    Disconnected(String),
    /// A configuration value out of range.
    #[error("invalid bridge configuration: {0}")]
    Config(String),
    /// A mirror's replica does not fit the log it mirrors.
    #[error("replica {}: {detail}", path.display())]
    Replica {
        /// The replica's directory.
        path: std::path::PathBuf,
        /// What does not fit.
        detail: String,
    },
}

impl BridgeError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> BridgeError {
        BridgeError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand for results of bridge calls.
pub type Result<T, E = BridgeError> = std::result::Result<T, E>;
