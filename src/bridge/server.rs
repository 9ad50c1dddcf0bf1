//! The bridge server: serves every log under a root directory to subscribers over TCP,
//! sending the segment files' bytes with `sendfile(2)`.
//!
//! One thread accepts connections and hands each to one of a few worker threads, round
//! robin. A worker runs an epoll loop (through `mio`) over its subscribers' non-blocking
//! sockets: it reads requests and keepalives, and for each subscriber that can take bytes it
//! sends the next stretch of committed log bytes, at most a few MiB per turn, so that a fast
//! subscriber does not starve the others and a stuck one (its socket full) costs nothing but
//! its entry in the loop — until it is dropped after the stall timeout.
//!
//! What may be sent is found by walking frame words from the last place walked, per segment,
//! once per worker for all its subscribers of a log: a zero or negative frame word ends the
//! committed bytes (see `docs/FORMAT.md`, "Reading"). Segments end at frame ends, so a
//! segment's walk ends exactly at its end once it is full; data messages never cross it.
//! A worker with subscribers waiting at the end of a log looks again every `poll_interval`
//! (1 ms by default): new frames make no epoll event.

use super::protocol::{
    self, message_kind, request_flags, ErrorCode, Refusal, Request, Start, Welcome, KEEPALIVE_LEN,
    MAX_REQUEST_LEN, WELCOME_LEN,
};
use super::{BridgeError, Result};
use crate::format::{self, kind, FrameWord, FRAME_ALIGNMENT, FRAME_HEADER_LEN};
use crate::{Error, Log};
use memmap2::{Mmap, MmapOptions};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::cell::Cell;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the bridge moves bytes from a segment file to a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendMode {
    /// `sendfile(2)`: from the page cache to the socket, no copy through user space.
    Sendfile,
    /// `pread(2)` into a buffer, then `send(2)`: the ordinary path, kept to measure what
    /// `sendfile` saves (`logbus bridge bench`).
    Copy,
}

/// How a bridge serves. Make one with [`BridgeConfig::new`] and change what you need.
#[derive(Clone)]
#[non_exhaustive]
pub struct BridgeConfig {
    /// The directory whose subdirectories are the logs served, each by its name.
    pub root: PathBuf,
    /// Where to listen; `127.0.0.1:7410` by default (loopback: serving other hosts is a
    /// decision, so it must be asked for).
    pub listen: SocketAddr,
    /// Worker threads (2 by default); one more thread accepts connections.
    pub threads: usize,
    /// Subscribers served at once (1024 by default); one more is refused with
    /// [`ErrorCode::TooManySubscribers`].
    pub max_subscribers: usize,
    /// A subscriber whose socket takes no byte for this long while the bridge has bytes for
    /// it, or that sends no keepalive for this long, is dropped (30 s by default).
    pub stall_timeout: Duration,
    /// How often a heartbeat goes to each subscriber (1 s by default).
    pub heartbeat_interval: Duration,
    /// How long a new connection has to send its whole request (10 s by default).
    pub request_timeout: Duration,
    /// The token every request must present, if any.
    pub token: Option<Vec<u8>>,
    /// The largest data message (1 MiB by default); each is one header and one `sendfile`.
    pub max_chunk: u64,
    /// `sendfile` (the default) or the copying path.
    pub send_mode: SendMode,
    /// Whether to write one line to stderr per subscription and per closed connection (on
    /// by default).
    pub log_connections: bool,
    /// How often a worker looks for new frames while subscribers wait at a log's end (1 ms).
    pub poll_interval: Duration,
    /// How long a claim may stay uncommitted, with its producer alive, before the bridge
    /// pads it over as any reader of the log does (2 s, a consumer's default). A dead
    /// producer's claim is padded after 1 ms.
    pub claim_timeout: Duration,
}

impl std::fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("root", &self.root)
            .field("listen", &self.listen)
            .field("threads", &self.threads)
            .field("max_subscribers", &self.max_subscribers)
            .field("stall_timeout", &self.stall_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("request_timeout", &self.request_timeout)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .field("max_chunk", &self.max_chunk)
            .field("send_mode", &self.send_mode)
            .finish_non_exhaustive()
    }
}

/// The default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7410";

impl BridgeConfig {
    /// Serves the logs under `root`, with every other setting at its default.
    pub fn new(root: impl Into<PathBuf>) -> BridgeConfig {
        BridgeConfig {
            root: root.into(),
            listen: DEFAULT_LISTEN.parse().expect("a valid address"),
            threads: 2,
            max_subscribers: 1024,
            stall_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            token: None,
            max_chunk: 1 << 20,
            send_mode: SendMode::Sendfile,
            log_connections: true,
            poll_interval: Duration::from_millis(1),
            claim_timeout: crate::consumer::DEFAULT_CLAIM_TIMEOUT,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(BridgeError::Config(m));
        if !(1..=256).contains(&self.threads) {
            return bad(format!("{} worker threads; from 1 to 256", self.threads));
        }
        if self.max_subscribers == 0 {
            return bad("max_subscribers must be at least 1".into());
        }
        if self.heartbeat_interval.is_zero()
            || self.heartbeat_interval > Duration::from_millis(u32::MAX as u64)
        {
            return bad(format!(
                "heartbeat interval {:?} must be above zero",
                self.heartbeat_interval
            ));
        }
        if self.stall_timeout < self.heartbeat_interval * 2 {
            return bad(format!(
                "stall timeout {:?} must be at least twice the heartbeat interval {:?}, or live \
                 subscribers would be dropped between two keepalives",
                self.stall_timeout, self.heartbeat_interval
            ));
        }
        if !(FRAME_ALIGNMENT..=1 << 30).contains(&self.max_chunk) {
            return bad(format!("max chunk {} must be 8 B to 1 GiB", self.max_chunk));
        }
        if self.poll_interval.is_zero() {
            return bad("poll interval must be above zero".into());
        }
        if let Some(token) = &self.token {
            if token.is_empty() || token.len() > protocol::MAX_TOKEN_LEN {
                return bad(format!(
                    "a token of {} bytes; from 1 to {}",
                    token.len(),
                    protocol::MAX_TOKEN_LEN
                ));
            }
        }
        Ok(())
    }
}

/// Counters of a running bridge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Connections accepted.
    pub connections: u64,
    /// Requests answered with a welcome.
    pub subscriptions: u64,
    /// Connections refused with an error message.
    pub refused: u64,
    /// Subscribers dropped because they stalled or fell silent.
    pub dropped: u64,
    /// Subscribers (and connections still sending their request) now.
    pub active: usize,
    /// Log bytes sent (bodies of data messages).
    pub bytes_sent: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    subscriptions: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    active: AtomicUsize,
    closing: AtomicUsize,
    bytes_sent: AtomicU64,
}

struct Shared {
    config: BridgeConfig,
    stop: AtomicBool,
    counters: Counters,
}

impl Shared {
    fn log_line(&self, line: std::fmt::Arguments<'_>) {
        if self.config.log_connections {
            eprintln!("logbus bridge: {line}");
        }
    }
}

/// A running bridge. Dropping it (or [`Bridge::shutdown`]) stops every thread and closes
/// every connection; subscribers reconnect to the next bridge and resume.
///
/// ```no_run
/// use logbus::bridge::{Bridge, BridgeConfig};
/// let mut config = BridgeConfig::new("/dev/shm/logs");
/// config.listen = "127.0.0.1:0".parse().unwrap();
/// let bridge = Bridge::start(config)?;
/// println!("serving on {}", bridge.local_addr());
/// # Ok::<(), logbus::bridge::BridgeError>(())
/// ```
pub struct Bridge {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    wakers: Vec<Arc<Waker>>,
    threads: Vec<JoinHandle<()>>,
}

/// What the acceptor hands a worker.
struct Incoming {
    stream: TcpStream,
    peer: SocketAddr,
    refuse: Option<Refusal>,
}

const WAKER: Token = Token(usize::MAX);
const LISTENER: Token = Token(0);

impl Bridge {
    /// Binds `config.listen` and starts serving.
    pub fn start(config: BridgeConfig) -> Result<Bridge> {
        config.validate()?;
        if !config.root.is_dir() {
            return Err(BridgeError::Config(format!(
                "{}: not a directory",
                config.root.display()
            )));
        }
        let listen = config.listen;
        let std_listener = std::net::TcpListener::bind(listen)
            .map_err(|e| BridgeError::io(format!("binding {listen}"), e))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| BridgeError::io("making the listener non-blocking", e))?;
        let local_addr = std_listener
            .local_addr()
            .map_err(|e| BridgeError::io("reading the listener's address", e))?;
        let mut listener = TcpListener::from_std(std_listener);
        let shared = Arc::new(Shared {
            config,
            stop: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let mut bridge = Bridge {
            local_addr,
            shared: shared.clone(),
            wakers: Vec::new(),
            threads: Vec::new(),
        };
        let mut senders = Vec::new();
        for id in 0..shared.config.threads {
            let poll = Poll::new().map_err(|e| BridgeError::io("creating an epoll instance", e))?;
            let waker = Arc::new(
                Waker::new(poll.registry(), WAKER)
                    .map_err(|e| BridgeError::io("creating a waker", e))?,
            );
            let (sender, receiver) = mpsc::channel();
            let worker_shared = shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("logbus-bridge-{id}"))
                .spawn(move || Worker::new(id, poll, receiver, worker_shared).run())
                .map_err(|e| BridgeError::io("starting a worker thread", e))?;
            bridge.threads.push(thread);
            bridge.wakers.push(waker.clone());
            senders.push((sender, waker));
        }
        let poll = Poll::new().map_err(|e| BridgeError::io("creating an epoll instance", e))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| BridgeError::io("registering the listener", e))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER)
                .map_err(|e| BridgeError::io("creating a waker", e))?,
        );
        bridge.wakers.push(waker);
        let acceptor_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("logbus-bridge-accept".into())
            .spawn(move || accept_loop(listener, poll, acceptor_shared, senders))
            .map_err(|e| BridgeError::io("starting the accept thread", e))?;
        bridge.threads.push(thread);
        shared.log_line(format_args!(
            "serving the logs under {} on {local_addr} with {} worker threads ({:?})",
            shared.config.root.display(),
            shared.config.threads,
            shared.config.send_mode
        ));
        Ok(bridge)
    }

    /// The address the bridge listens on (with the port the system chose, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bridge's counters now.
    pub fn stats(&self) -> BridgeStats {
        let c = &self.shared.counters;
        BridgeStats {
            connections: c.connections.load(Ordering::Relaxed),
            subscriptions: c.subscriptions.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            active: c.active.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
        }
    }

    /// Stops serving: closes the listener and every connection, and joins the threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for waker in &self.wakers {
            let _ = waker.wake();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("local_addr", &self.local_addr)
            .field("config", &self.shared.config)
            .finish()
    }
}

fn accept_loop(
    mut listener: TcpListener,
    mut poll: Poll,
    shared: Arc<Shared>,
    workers: Vec<(Sender<Incoming>, Arc<Waker>)>,
) {
    let mut events = Events::with_capacity(16);
    let mut next = 0usize;
    let config = &shared.config;
    loop {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(500))) {
            if e.kind() != io::ErrorKind::Interrupted {
                shared.log_line(format_args!("accept loop: {e}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if shared.stop.load(Ordering::SeqCst) {
            let _ = poll.registry().deregister(&mut listener);
            return;
        }
        loop {
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, say: leave the rest in the backlog for a moment.
                    shared.log_line(format_args!("accepting a connection: {e}"));
                    std::thread::sleep(Duration::from_millis(20));
                    break;
                }
            };
            let counters = &shared.counters;
            counters.connections.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let refuse = if counters.active.load(Ordering::SeqCst) >= config.max_subscribers {
                if counters.closing.load(Ordering::SeqCst) >= config.max_subscribers {
                    // A flood: no resources even to say no politely.
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                }
                counters.closing.fetch_add(1, Ordering::SeqCst);
                Some(Refusal::new(
                    ErrorCode::TooManySubscribers,
                    format!(
                        "this bridge serves at most {} subscribers at once; try again later",
                        config.max_subscribers
                    ),
                ))
            } else {
                counters.active.fetch_add(1, Ordering::SeqCst);
                None
            };
            let (sender, waker) = &workers[next % workers.len()];
            next = next.wrapping_add(1);
            if sender
                .send(Incoming {
                    stream,
                    peer,
                    refuse,
                })
                .is_ok()
            {
                let _ = waker.wake();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A worker's view of the logs it serves.

/// One log, as a worker sees it: its handle and the segments its subscribers are in.
struct LogState {
    name: String,
    log: Log,
    capacity: u64,
    segments: RefCell<BTreeMap<u64, Rc<SegState>>>,
}

/// One segment file: the descriptor `sendfile` reads and a read-only mapping to walk its
/// frame words, with how far the walk has got.
struct SegState {
    index: u64,
    base: u64,
    capacity: u64,
    file: File,
    map: Mmap,
    /// Offset in the data area up to which every frame is committed.
    walked: Cell<u64>,
    /// Since when the walk has stopped at the same uncommitted frame with the tail past it.
    stall: Cell<Option<crate::verify::Stall>>,
}

impl LogState {
    fn open(root: &std::path::Path, name: &str) -> Result<LogState, Refusal> {
        let log = match Log::open(root.join(name)) {
            Ok(log) => log,
            Err(Error::NotALog { .. }) => {
                return Err(Refusal::new(
                    ErrorCode::UnknownLog,
                    format!("no log named '{name}' here"),
                ))
            }
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(Refusal::new(
                    ErrorCode::UnknownLog,
                    format!("no log named '{name}' here"),
                ))
            }
            Err(e) => {
                return Err(Refusal::new(
                    ErrorCode::LogUnreadable,
                    format!("log '{name}' cannot be opened: {e}"),
                ))
            }
        };
        let capacity = log.options().get_segment_capacity();
        Ok(LogState {
            name: name.to_string(),
            log,
            capacity,
            segments: RefCell::new(BTreeMap::new()),
        })
    }

    fn unreadable(&self, e: impl std::fmt::Display) -> Refusal {
        Refusal::new(
            ErrorCode::LogUnreadable,
            format!("log '{}': {e}", self.name),
        )
    }

    fn earliest(&self) -> Result<u64, Refusal> {
        self.log.earliest_position().map_err(|e| self.unreadable(e))
    }

    /// The segment with this index; `None` if its file does not exist (yet, or any more).
    fn segment(&self, index: u64) -> Result<Option<Rc<SegState>>, Refusal> {
        if let Some(segment) = self.segments.borrow().get(&index) {
            return Ok(Some(segment.clone()));
        }
        let base = index * self.capacity;
        let path = self.log.path().join(format::segment_file_name(base));
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.unreadable(Error::io(&path, e))),
        };
        // Kept in `SegState` with the file, so that retention deletes this segment rather than
        // recycling it while it is being sent.
        match crate::segment::lock_shared(&file, &path) {
            Ok(()) => {}
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(e) => return Err(self.unreadable(e)),
        }
        let header = crate::segment::read_header(&file, &path).map_err(|e| self.unreadable(e))?;
        if header.log_id != self.log.id()
            || header.capacity != self.capacity
            || header.base_position != base
        {
            return Err(self.unreadable(format!(
                "{} does not belong to this log (identity, capacity or base differs)",
                path.display()
            )));
        }
        // SAFETY: a read-only shared mapping of a segment file whose length read_header
        // checked. Producers append to it meanwhile: frame words are read with atomic loads
        // (`word_at`), and the bytes behind a frame word only once it says committed, after
        // which nobody writes them. MAP_POPULATE: the walk faults no page in one by one.
        let map = unsafe { MmapOptions::new().populate().map(&file) }
            .map_err(|e| self.unreadable(Error::io(&path, e)))?;
        let segment = Rc::new(SegState {
            index,
            base,
            capacity: self.capacity,
            file,
            map,
            walked: Cell::new(0),
            stall: Cell::new(None),
        });
        self.segments.borrow_mut().insert(index, segment.clone());
        Ok(Some(segment))
    }

    /// Finds where the data starts for a request, and the first position to deliver.
    fn resolve(&self, request: &Request) -> Result<(u64, u64), Refusal> {
        let earliest = self.earliest()?;
        // Past the tail, frames an exclusive producer committed before moving the tail (a
        // subscriber may have had them): a start there is valid, and `Latest` comes after them.
        let tail = self
            .log
            .shared
            .committed_end()
            .unwrap_or_else(|_| self.log.tail());
        let (mut start, mut first) = match request.start {
            Start::Earliest => (earliest, earliest),
            Start::Latest => (tail, tail),
            Start::Position(p) if request.flags & request_flags::SEGMENT_START != 0 => (p, p),
            Start::Position(p) => self.locate(p, earliest, tail)?,
        };
        if request.flags & request_flags::SEGMENT_START != 0 {
            start -= start % self.capacity;
            first = start;
        }
        if start < earliest {
            return Err(position_deleted(first.max(start), earliest));
        }
        if start > tail {
            return Err(Refusal::new(
                ErrorCode::InvalidPosition,
                format!("position {start} is beyond the tail of the log ({tail})"),
            ));
        }
        Ok((start, first))
    }

    /// Checks that `position` starts a message by walking its segment's frames from the
    /// start; returns the frame to send from and the position to deliver from.
    fn locate(&self, position: u64, earliest: u64, tail: u64) -> Result<(u64, u64), Refusal> {
        let invalid = |detail: String| {
            Err(Refusal::new(
                ErrorCode::InvalidPosition,
                format!("position {position} is not the start of a message: {detail}"),
            ))
        };
        if position < earliest {
            return Err(position_deleted(position, earliest));
        }
        if position > tail {
            return invalid(format!("it is beyond the tail of the log ({tail})"));
        }
        if position % 4 != 0 {
            return invalid("messages start at multiples of 4".into());
        }
        let target = position % self.capacity;
        if target == 0 || position == tail {
            return Ok((position, position));
        }
        let Some(segment) = self.segment(position / self.capacity)? else {
            return invalid("its segment file is missing".into());
        };
        let mut offset = 0;
        while offset < target {
            let word = segment.word_at(offset);
            let at = segment.base + offset;
            if word.length == 0 {
                return invalid(format!(
                    "the message at {at} before it is not committed yet; try again"
                ));
            }
            if word.length < 0 {
                return Err(self.unreadable(format!(
                    "corrupt frame at {at}: negative length {}",
                    word.length
                )));
            }
            let aligned = segment
                .check_frame(offset, word)
                .map_err(|e| self.unreadable(e))?;
            if offset + aligned > target {
                if word.kind == kind::BATCH {
                    let payload_start = offset + FRAME_HEADER_LEN;
                    let payload =
                        segment.bytes(payload_start, word.length as u64 - FRAME_HEADER_LEN);
                    for record in format::records(payload) {
                        match record {
                            Ok((record_offset, _))
                                if payload_start + record_offset as u64 == target =>
                            {
                                return Ok((at, position))
                            }
                            Ok(_) => {}
                            Err(detail) => {
                                return Err(self.unreadable(format!("at {at}: {detail}")))
                            }
                        }
                    }
                    return invalid(format!(
                        "it falls inside the message set at {at}, between its records"
                    ));
                }
                return invalid(format!("it falls inside the frame that starts at {at}"));
            }
            offset += aligned;
        }
        Ok((position, position))
    }
}

fn position_deleted(position: u64, earliest: u64) -> Refusal {
    Refusal::new(
        ErrorCode::PositionDeleted,
        format!("position {position} is no longer in the log; the earliest position is {earliest}"),
    )
}

impl SegState {
    fn data(&self) -> &[u8] {
        &self.map[format::SEGMENT_HEADER_LEN as usize..]
    }

    /// The frame word at `offset` (8-aligned, inside the data area).
    fn word_at(&self, offset: u64) -> FrameWord {
        debug_assert!(offset % FRAME_ALIGNMENT == 0 && offset + 8 <= self.capacity);
        // SAFETY: `offset` is 8-aligned inside the data area, which starts page-aligned in
        // the mapping (checked lengths: see `segment`), so this is an aligned u64 that lives
        // as long as `self`. Acquire pairs with the producer's Release commit.
        let word = unsafe {
            &*(self.data().as_ptr().add(offset as usize) as *const std::sync::atomic::AtomicU64)
        };
        FrameWord::unpack(word.load(Ordering::Acquire))
    }

    /// Committed bytes of a frame already walked past.
    fn bytes(&self, offset: u64, len: u64) -> &[u8] {
        &self.data()[offset as usize..(offset + len) as usize]
    }

    /// The aligned length of the committed frame `word` at `offset`, if it is possible.
    fn check_frame(&self, offset: u64, word: FrameWord) -> Result<u64, Error> {
        format::frame_extent(word, self.base + offset, self.base + self.capacity).map_err(
            |detail| Error::CorruptFrame {
                position: self.base + offset,
                detail,
            },
        )
    }

    /// Walks on from where the last walk stopped; returns the position up to which every
    /// frame is committed (the segment's end once it is full). A zero frame word ends the
    /// walk; a negative one is a corrupt frame (version 1 never writes one).
    fn committed_end(&self) -> Result<u64, Error> {
        let mut offset = self.walked.get();
        while offset < self.capacity {
            let word = self.word_at(offset);
            if word.length == 0 {
                break;
            }
            if word.length < 0 {
                return Err(Error::CorruptFrame {
                    position: self.base + offset,
                    detail: format!("negative length {}", word.length),
                });
            }
            offset += self.check_frame(offset, word)?;
        }
        self.walked.set(offset);
        Ok(self.base + offset)
    }
}

// ---------------------------------------------------------------------------------------------
// Subscribers.

enum Phase {
    /// Reading the request.
    Request,
    /// Sending data.
    Streaming(Streaming),
    /// An error message is going out; after it, the write side is shut and whatever the peer
    /// still sends is read and dropped until it closes or `deadline` passes (closing with
    /// unread bytes would reset the connection and could destroy the message on its way).
    Closing {
        deadline: Instant,
        shut: bool,
        drained: usize,
    },
}

struct Streaming {
    log: Rc<LogState>,
    segment: Option<Rc<SegState>>,
    /// The next log byte to send.
    position: u64,
    /// Bytes of the current data message still to send.
    body_left: u64,
}

struct Sub {
    stream: TcpStream,
    peer: SocketAddr,
    phase: Phase,
    counted: bool,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_at: usize,
    readable: bool,
    writable: bool,
    connected_at: Instant,
    last_heard: Instant,
    last_heartbeat: Instant,
    stalled_since: Option<Instant>,
    bytes_sent: u64,
    log_name: Option<String>,
    reason: String,
}

/// What a turn of a subscriber left.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Can send more right now: come back without sleeping.
    Busy,
    /// Waits for data at the end of the log: look again after `poll_interval`.
    Waiting,
    /// Waits for an event (its socket to take bytes, its request) or a timer.
    Parked,
    /// Done: drop it.
    Close,
}

/// Bytes one subscriber may send per turn before the others get theirs.
const TURN_BUDGET: u64 = 4 << 20;
/// Linux's cap on one `sendfile` call.
const MAX_SENDFILE: u64 = 0x7fff_f000;
/// How long a refused connection is kept to read the rest of its bytes after the error.
const LINGER: Duration = Duration::from_secs(2);
/// Bytes of a refused peer's leftover input read at most.
const LINGER_BYTES: usize = 1 << 20;

struct Worker {
    id: usize,
    poll: Poll,
    events: Events,
    incoming: Receiver<Incoming>,
    subs: Vec<Option<Sub>>,
    free: Vec<usize>,
    logs: HashMap<String, Rc<LogState>>,
    shared: Arc<Shared>,
    copy_buffer: Vec<u8>,
}

impl Worker {
    fn new(id: usize, poll: Poll, incoming: Receiver<Incoming>, shared: Arc<Shared>) -> Worker {
        Worker {
            id,
            poll,
            events: Events::with_capacity(1024),
            incoming,
            subs: Vec::new(),
            free: Vec::new(),
            logs: HashMap::new(),
            shared,
            copy_buffer: Vec::new(),
        }
    }

    fn run(mut self) {
        let mut timeout = None;
        let mut last_housekeeping = Instant::now();
        loop {
            if let Err(e) = self.poll.poll(&mut self.events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.shared
                        .log_line(format_args!("worker {}: epoll: {e}", self.id));
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            if self.shared.stop.load(Ordering::SeqCst) {
                for i in 0..self.subs.len() {
                    if let Some(mut sub) = self.subs[i].take() {
                        sub.reason = "the bridge is shutting down".into();
                        self.close(sub);
                    }
                }
                return;
            }
            for event in self.events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                if let Some(Some(sub)) = self.subs.get_mut(event.token().0) {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        sub.readable = true;
                    }
                    if event.is_writable() || event.is_write_closed() || event.is_error() {
                        sub.writable = true;
                    }
                }
            }
            self.take_incoming();
            let now = Instant::now();
            let (mut busy, mut waiting, mut any) = (false, false, false);
            for i in 0..self.subs.len() {
                let Some(mut sub) = self.subs[i].take() else {
                    continue;
                };
                any = true;
                match self.turn(&mut sub, now) {
                    Turn::Close => {
                        self.close(sub);
                        self.free.push(i);
                        continue;
                    }
                    Turn::Busy => busy = true,
                    Turn::Waiting => waiting = true,
                    Turn::Parked => {}
                }
                self.subs[i] = Some(sub);
            }
            if now.duration_since(last_housekeeping) >= Duration::from_secs(1) {
                last_housekeeping = now;
                self.housekeeping();
            }
            let config = &self.shared.config;
            timeout = if busy {
                Some(Duration::ZERO)
            } else if waiting {
                Some(config.poll_interval)
            } else if any {
                Some(Duration::from_millis(50).min(config.heartbeat_interval))
            } else {
                Some(Duration::from_millis(500))
            };
        }
    }

    fn take_incoming(&mut self) {
        while let Ok(Incoming {
            mut stream,
            peer,
            refuse,
        }) = self.incoming.try_recv()
        {
            let index = self.free.pop().unwrap_or_else(|| {
                self.subs.push(None);
                self.subs.len() - 1
            });
            let counted = refuse.is_none();
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(index),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                self.shared
                    .log_line(format_args!("{peer}: cannot watch the connection: {e}"));
                self.release_counts(counted);
                self.free.push(index);
                continue;
            }
            let now = Instant::now();
            let mut sub = Sub {
                stream,
                peer,
                phase: Phase::Request,
                counted,
                inbuf: Vec::new(),
                out: Vec::new(),
                out_at: 0,
                readable: true,
                writable: true,
                connected_at: now,
                last_heard: now,
                last_heartbeat: now,
                stalled_since: None,
                bytes_sent: 0,
                log_name: None,
                reason: String::new(),
            };
            if let Some(refusal) = refuse {
                self.shared.log_line(format_args!(
                    "{peer} refused: {} ({:?})",
                    refusal.message, refusal.code
                ));
                self.refuse(&mut sub, &refusal, 0, now);
            }
            self.subs[index] = Some(sub);
        }
    }

    fn release_counts(&self, counted: bool) {
        let counters = &self.shared.counters;
        if counted {
            counters.active.fetch_sub(1, Ordering::SeqCst);
        } else {
            counters.closing.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn close(&mut self, mut sub: Sub) {
        let _ = self.poll.registry().deregister(&mut sub.stream);
        self.release_counts(sub.counted);
        if sub.log_name.is_some() {
            let position = match &sub.phase {
                Phase::Streaming(s) => s.position.to_string(),
                _ => "-".into(),
            };
            self.shared.log_line(format_args!(
                "{} '{}' closed after {:.1} s, {} bytes sent, at position {position}: {}",
                sub.peer,
                sub.log_name.as_deref().unwrap_or("-"),
                sub.connected_at.elapsed().as_secs_f64(),
                sub.bytes_sent,
                sub.reason
            ));
        }
    }

    /// Queues `refusal` as the last thing this connection gets, then closes it. The caller
    /// writes the log line (a subscriber's close line says it, for one already subscribed).
    fn refuse(&mut self, sub: &mut Sub, refusal: &Refusal, position: u64, now: Instant) {
        self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
        sub.reason = format!("{} ({:?})", refusal.message, refusal.code);
        let body_in_flight = matches!(&sub.phase, Phase::Streaming(s) if s.body_left > 0);
        if body_in_flight {
            // Half-way through a data message's body nothing else can be said: just close.
            sub.out.clear();
        } else {
            // Whole messages still queued go first, then the error.
            sub.out.drain(..sub.out_at.min(sub.out.len()));
            sub.out
                .extend_from_slice(&protocol::encode_error(refusal, position));
        }
        sub.out_at = 0;
        sub.inbuf.clear();
        sub.phase = Phase::Closing {
            deadline: now + LINGER,
            shut: false,
            drained: 0,
        };
    }

    fn turn(&mut self, sub: &mut Sub, now: Instant) -> Turn {
        let shared = self.shared.clone();
        let config = &shared.config;
        match &sub.phase {
            Phase::Request => {
                if sub.readable {
                    if let Some(turn) = self.read_request(sub, now) {
                        return turn;
                    }
                }
                if matches!(sub.phase, Phase::Request) {
                    if now.duration_since(sub.connected_at) > config.request_timeout {
                        let refusal = Refusal::new(
                            ErrorCode::Timeout,
                            format!(
                                "no whole request within {:?} of connecting",
                                config.request_timeout
                            ),
                        );
                        self.shared.log_line(format_args!(
                            "{} refused: {} ({:?})",
                            sub.peer, refusal.message, refusal.code
                        ));
                        self.refuse(sub, &refusal, 0, now);
                    } else {
                        return Turn::Parked;
                    }
                }
                // The phase changed: serve the new one in this same turn.
                self.turn(sub, now)
            }
            Phase::Streaming(_) => self.stream_turn(sub, now),
            Phase::Closing { .. } => self.closing_turn(sub, now),
        }
    }

    /// Reads what the peer sent before its request is whole; `Some` ends the turn.
    fn read_request(&mut self, sub: &mut Sub, now: Instant) -> Option<Turn> {
        let mut chunk = [0u8; 1024];
        loop {
            let room = MAX_REQUEST_LEN + KEEPALIVE_LEN - sub.inbuf.len().min(MAX_REQUEST_LEN);
            match (&sub.stream).read(&mut chunk[..room.min(1024)]) {
                Ok(0) => {
                    sub.reason = "closed before sending a whole request".into();
                    return Some(Turn::Close);
                }
                Ok(n) => {
                    sub.inbuf.extend_from_slice(&chunk[..n]);
                    sub.last_heard = now;
                    match protocol::parse_request(&sub.inbuf) {
                        Ok(None) => continue,
                        Ok(Some((request, used))) => {
                            sub.inbuf.drain(..used);
                            self.subscribe(sub, request, now);
                            return None;
                        }
                        Err(refusal) => {
                            self.shared.log_line(format_args!(
                                "{} refused: {} ({:?})",
                                sub.peer, refusal.message, refusal.code
                            ));
                            self.refuse(sub, &refusal, 0, now);
                            return None;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sub.readable = false;
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    sub.reason = format!("reading the request: {e}");
                    return Some(Turn::Close);
                }
            }
        }
    }

    fn log_state(&mut self, name: &str) -> Result<Rc<LogState>, Refusal> {
        if let Some(log) = self.logs.get(name) {
            return Ok(log.clone());
        }
        let log = Rc::new(LogState::open(&self.shared.config.root, name)?);
        self.logs.insert(name.to_string(), log.clone());
        Ok(log)
    }

    fn subscribe(&mut self, sub: &mut Sub, request: Request, now: Instant) {
        let result = (|| {
            if let Some(expected) = &self.shared.config.token {
                if !protocol::token_matches(expected, &request.token) {
                    return Err(Refusal::new(
                        ErrorCode::Unauthorized,
                        if request.token.is_empty() {
                            "this bridge requires a token"
                        } else {
                            "wrong token"
                        },
                    ));
                }
            }
            let log = self.log_state(&request.log)?;
            let (start, first) = log.resolve(&request)?;
            Ok((log, start, first))
        })();
        let (log, start, first) = match result {
            Ok(resolved) => resolved,
            Err(refusal) => {
                let position = if refusal.code == ErrorCode::PositionDeleted {
                    self.logs
                        .get(&request.log)
                        .and_then(|l| l.earliest().ok())
                        .unwrap_or(0)
                } else {
                    0
                };
                self.shared.log_line(format_args!(
                    "{} refused a subscription to '{}' from {:?}: {} ({:?})",
                    sub.peer, request.log, request.start, refusal.message, refusal.code
                ));
                self.refuse(sub, &refusal, position, now);
                return;
            }
        };
        let meta = log.log.shared.meta.header();
        let welcome = Welcome {
            format_version: format::FORMAT_VERSION,
            reserved: 0,
            log_flags: meta.log_flags,
            log_id: meta.log_id,
            segment_capacity: meta.segment_capacity,
            created_ns: meta.created_ns,
            file_mode: meta.file_mode,
            heartbeat_ms: self.shared.config.heartbeat_interval.as_millis() as u32,
            earliest: log.earliest().unwrap_or(start),
            tail: log.log.tail(),
        };
        sub.out.extend_from_slice(&protocol::encode_header(
            message_kind::WELCOME,
            WELCOME_LEN as u32,
            start,
            first,
        ));
        sub.out.extend_from_slice(bytemuck::bytes_of(&welcome));
        sub.last_heartbeat = now;
        self.shared
            .counters
            .subscriptions
            .fetch_add(1, Ordering::Relaxed);
        self.shared.log_line(format_args!(
            "{} subscribed to '{}' from {:?}: data from position {start} (worker {})",
            sub.peer, request.log, request.start, self.id
        ));
        sub.log_name = Some(request.log);
        sub.phase = Phase::Streaming(Streaming {
            log,
            segment: None,
            position: start,
            body_left: 0,
        });
    }

    fn stream_turn(&mut self, sub: &mut Sub, now: Instant) -> Turn {
        let shared = self.shared.clone();
        let config = &shared.config;
        if sub.readable || !sub.inbuf.is_empty() {
            if let Err(turn) = self.read_keepalives(sub, now) {
                return turn;
            }
            if !matches!(sub.phase, Phase::Streaming(_)) {
                return self.turn(sub, now);
            }
        }
        if let Some(since) = sub.stalled_since {
            if now.duration_since(since) > config.stall_timeout {
                self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                sub.reason = format!(
                    "dropped: its connection took no byte for {:?}",
                    config.stall_timeout
                );
                return Turn::Close;
            }
        }
        if now.duration_since(sub.last_heard) > config.stall_timeout {
            self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            sub.reason = format!(
                "dropped: no keepalive for {:?} (a heartbeat goes out every {:?})",
                config.stall_timeout, config.heartbeat_interval
            );
            return Turn::Close;
        }
        if !sub.writable {
            return Turn::Parked;
        }
        match self.pump(sub, now) {
            Ok(turn) => turn,
            Err(Ok(refusal)) => {
                self.refuse(sub, &refusal, 0, now);
                self.turn(sub, now)
            }
            Err(Err(reason)) => {
                sub.reason = reason;
                Turn::Close
            }
        }
    }

    fn read_keepalives(&mut self, sub: &mut Sub, now: Instant) -> Result<(), Turn> {
        let mut chunk = [0u8; 256];
        loop {
            while sub.inbuf.len() >= KEEPALIVE_LEN {
                let bytes: [u8; KEEPALIVE_LEN] = sub.inbuf[..KEEPALIVE_LEN].try_into().unwrap();
                if let Err(refusal) = protocol::parse_keepalive(&bytes) {
                    self.refuse(sub, &refusal, 0, now);
                    return Ok(());
                }
                sub.inbuf.drain(..KEEPALIVE_LEN);
                sub.last_heard = now;
            }
            if !sub.readable {
                return Ok(());
            }
            match (&sub.stream).read(&mut chunk) {
                Ok(0) => {
                    sub.reason = "the subscriber closed the connection".into();
                    return Err(Turn::Close);
                }
                Ok(n) => sub.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => sub.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    sub.reason = format!("reading from the subscriber: {e}");
                    return Err(Turn::Close);
                }
            }
        }
    }

    /// Sends what there is to send, up to the turn's budget. `Err(Ok(refusal))`: tell the
    /// subscriber and close; `Err(Err(reason))`: close at once.
    fn pump(&mut self, sub: &mut Sub, now: Instant) -> Result<Turn, Result<Refusal, String>> {
        let shared = self.shared.clone();
        let config = &shared.config;
        let mut budget = TURN_BUDGET;
        let Phase::Streaming(streaming) = &mut sub.phase else {
            unreachable!("pump runs only while streaming");
        };
        loop {
            let sent = if sub.out_at < sub.out.len() {
                let more = streaming.body_left > 0;
                send_bytes(&sub.stream, &sub.out[sub.out_at..], more)
            } else if streaming.body_left > 0 {
                let segment = streaming
                    .segment
                    .as_ref()
                    .expect("a data message has a segment");
                let offset = format::SEGMENT_HEADER_LEN + (streaming.position - segment.base);
                let count = streaming.body_left.min(budget).min(MAX_SENDFILE);
                match config.send_mode {
                    SendMode::Sendfile => send_file(&sub.stream, &segment.file, offset, count),
                    SendMode::Copy => copy_file(
                        &sub.stream,
                        &segment.file,
                        offset,
                        count,
                        &mut self.copy_buffer,
                    ),
                }
            } else {
                // Nothing in flight: a heartbeat if one is due, else the next data message.
                sub.out.clear();
                sub.out_at = 0;
                if now.duration_since(sub.last_heartbeat) >= config.heartbeat_interval {
                    sub.last_heartbeat = now;
                    sub.out.extend_from_slice(&protocol::encode_header(
                        message_kind::HEARTBEAT,
                        0,
                        streaming.position,
                        streaming.log.log.tail(),
                    ));
                    continue;
                }
                let end = available(streaming, config.claim_timeout).map_err(Ok)?;
                if end <= streaming.position {
                    sub.stalled_since = None;
                    return Ok(Turn::Waiting);
                }
                let length = (end - streaming.position).min(config.max_chunk);
                sub.out.extend_from_slice(&protocol::encode_header(
                    message_kind::DATA,
                    length as u32,
                    streaming.position,
                    0,
                ));
                streaming.body_left = length;
                continue;
            };
            match sent {
                Ok(0) => return Err(Err("a segment file ended early (truncated?)".into())),
                Ok(n) => {
                    sub.stalled_since = None;
                    if sub.out_at < sub.out.len() {
                        sub.out_at += n;
                    } else {
                        let n = n as u64;
                        streaming.position += n;
                        streaming.body_left -= n;
                        sub.bytes_sent += n;
                        self.shared
                            .counters
                            .bytes_sent
                            .fetch_add(n, Ordering::Relaxed);
                        budget = budget.saturating_sub(n);
                        if budget == 0 {
                            return Ok(Turn::Busy);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sub.writable = false;
                    sub.stalled_since.get_or_insert(now);
                    return Ok(Turn::Parked);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Err(format!("sending: {e}"))),
            }
        }
    }

    fn closing_turn(&mut self, sub: &mut Sub, now: Instant) -> Turn {
        let Phase::Closing {
            deadline,
            shut,
            drained,
        } = &mut sub.phase
        else {
            unreachable!();
        };
        if now > *deadline {
            return Turn::Close;
        }
        while sub.writable && sub.out_at < sub.out.len() {
            match send_bytes(&sub.stream, &sub.out[sub.out_at..], false) {
                Ok(n) => sub.out_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => sub.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Turn::Close,
            }
        }
        if sub.out_at >= sub.out.len() && !*shut {
            *shut = true;
            let _ = sub.stream.shutdown(Shutdown::Write);
        }
        let mut chunk = [0u8; 4096];
        while sub.readable {
            match (&sub.stream).read(&mut chunk) {
                Ok(0) if *shut => return Turn::Close,
                Ok(0) => sub.readable = false,
                Ok(n) => {
                    // A peer that never stops sending is cut off.
                    *drained += n;
                    if *drained > LINGER_BYTES {
                        return Turn::Close;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => sub.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Turn::Close,
            }
        }
        Turn::Parked
    }

    /// Lets go of logs and segments that no subscriber of this worker is in any more.
    fn housekeeping(&mut self) {
        self.logs.retain(|_, log| {
            let mut segments = log.segments.borrow_mut();
            let last = segments.keys().next_back().copied();
            segments.retain(|&index, segment| Rc::strong_count(segment) > 1 || Some(index) == last);
            Rc::strong_count(log) > 1
        });
    }
}

/// Where the committed bytes after `streaming.position` end, inside its segment; moves to the
/// next segment at a segment's end.
fn available(streaming: &mut Streaming, claim_timeout: Duration) -> Result<u64, Refusal> {
    let log = streaming.log.clone();
    let index = streaming.position / log.capacity;
    if streaming.segment.as_ref().is_none_or(|s| s.index != index) {
        match log.segment(index)? {
            Some(segment) => streaming.segment = Some(segment),
            None => {
                let earliest = log.earliest()?;
                if streaming.position < earliest {
                    return Err(position_deleted(streaming.position, earliest));
                }
                // Not created yet: producers make it before they write in it.
                streaming.segment = None;
                return Ok(streaming.position);
            }
        }
    }
    let segment = streaming.segment.as_ref().expect("set above");
    let end = segment.committed_end().map_err(|e| log.unreadable(e))?;
    if end < segment.base + segment.capacity && end == streaming.position {
        // Nothing to send: a claim in flight, or the end of the log. If the tail is past it,
        // act as every reader of the log does and have a dead producer's claim (or one held
        // past the claim timeout) padded, so that nobody waits for it forever.
        if log.unblock_stall(segment, end, claim_timeout)? {
            return segment.committed_end().map_err(|e| log.unreadable(e));
        }
    }
    Ok(end)
}

impl LogState {
    /// Called when the walk of `segment` stopped at the uncommitted frame at `end`: after the
    /// grace period, with the tail past `end`, runs the protocol's `unblock`. True if the
    /// frame word changed.
    fn unblock_stall(
        &self,
        segment: &SegState,
        end: u64,
        claim_timeout: Duration,
    ) -> Result<bool, Refusal> {
        let mut stall = segment.stall.get();
        let unblocked =
            crate::verify::unblock_if_stalled(&self.log.shared, end, &mut stall, claim_timeout)
                .map_err(|e| self.unreadable(e));
        segment.stall.set(stall);
        unblocked
    }
}

fn send_bytes(stream: &TcpStream, bytes: &[u8], more: bool) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    // SAFETY: `bytes` is a live buffer of the length passed; the descriptor is open.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn send_file(stream: &TcpStream, file: &File, offset: u64, count: u64) -> io::Result<usize> {
    let mut off = offset as libc::off_t;
    // SAFETY: both descriptors are open for the call; `off` is a valid, writable off_t.
    let n = unsafe {
        libc::sendfile(
            stream.as_raw_fd(),
            file.as_raw_fd(),
            &mut off,
            count as usize,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn copy_file(
    stream: &TcpStream,
    file: &File,
    offset: u64,
    count: u64,
    buffer: &mut Vec<u8>,
) -> io::Result<usize> {
    const BUFFER: usize = 256 << 10;
    if buffer.len() < BUFFER {
        buffer.resize(BUFFER, 0);
    }
    let want = (count as usize).min(BUFFER);
    let read = file.read_at(&mut buffer[..want], offset)?;
    if read == 0 {
        return Ok(0);
    }
    // Bytes the socket does not take now are read again next time.
    send_bytes(stream, &buffer[..read], false)
}
