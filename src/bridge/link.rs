//! The client end of one subscription: connecting, the request and the welcome, and then a
//! stream of log bytes gathered into one contiguous buffer, with heartbeats answered and a
//! dead bridge noticed. [`RemoteConsumer`](super::RemoteConsumer) and
//! [`Mirror`](super::Mirror) read frames out of that buffer.

use super::protocol::{
    self, message_kind, ErrorCode, MessageHeader, Request, Start, Welcome, MAX_ERROR_LEN,
    MESSAGE_HEADER_LEN, WELCOME_LEN,
};
use super::{BridgeError, Result};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a bridge is: a fixed address, or a function asked again before every connection
/// attempt (for a bridge that may come back elsewhere).
#[derive(Clone)]
pub struct Endpoint(Arc<dyn Fn() -> io::Result<Vec<SocketAddr>> + Send + Sync>);

impl Endpoint {
    /// A fixed address, resolved again at every connection attempt.
    pub fn new<A: ToSocketAddrs + Send + Sync + 'static>(address: A) -> Endpoint {
        Endpoint(Arc::new(move || Ok(address.to_socket_addrs()?.collect())))
    }

    /// An address that `resolve` gives anew before every connection attempt.
    pub fn dynamic(
        resolve: impl Fn() -> io::Result<SocketAddr> + Send + Sync + 'static,
    ) -> Endpoint {
        Endpoint(Arc::new(move || Ok(vec![resolve()?])))
    }

    fn addresses(&self) -> io::Result<Vec<SocketAddr>> {
        (self.0)()
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.addresses() {
            Ok(addresses) => write!(f, "Endpoint({addresses:?})"),
            Err(e) => write!(f, "Endpoint(unresolved: {e})"),
        }
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(address: SocketAddr) -> Endpoint {
        Endpoint::new(address)
    }
}

impl From<&str> for Endpoint {
    fn from(address: &str) -> Endpoint {
        Endpoint::new(address.to_string())
    }
}

impl From<String> for Endpoint {
    fn from(address: String) -> Endpoint {
        Endpoint::new(address)
    }
}

/// How a [`RemoteConsumer`](super::RemoteConsumer) or [`Mirror`](super::Mirror) talks to its
/// bridge.
#[derive(Clone)]
#[non_exhaustive]
pub struct RemoteOptions {
    /// The token to present, if the bridge wants one.
    pub token: Option<Vec<u8>>,
    /// How long one connection attempt may take (5 s).
    pub connect_timeout: Duration,
    /// Whether to reconnect, and resume, when the connection is lost (on by default).
    pub reconnect: bool,
    /// How long to keep trying to reconnect before giving up with
    /// [`BridgeError::Disconnected`] (`None`: forever; 60 s by default).
    pub reconnect_window: Option<Duration>,
    /// The bridge counts as gone when nothing arrives for this long (`None`: three heartbeat
    /// intervals and 2 s more).
    pub dead_after: Option<Duration>,
    /// Whether to check every payload's CRC32C (on by default).
    pub verify_checksums: bool,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            token: None,
            connect_timeout: Duration::from_secs(5),
            reconnect: true,
            reconnect_window: Some(Duration::from_secs(60)),
            dead_after: None,
            verify_checksums: true,
        }
    }
}

impl RemoteOptions {
    /// The defaults.
    pub fn new() -> RemoteOptions {
        RemoteOptions::default()
    }

    /// Presents `token` to the bridge.
    pub fn token(mut self, token: impl Into<Vec<u8>>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Reconnects (or not) when the connection is lost.
    pub fn reconnect(mut self, on: bool) -> Self {
        self.reconnect = on;
        self
    }

    /// Gives up reconnecting after `window` (`None`: never).
    pub fn reconnect_window(mut self, window: Option<Duration>) -> Self {
        self.reconnect_window = window;
        self
    }

    /// Counts the bridge as gone after `after` without a byte from it.
    pub fn dead_after(mut self, after: Duration) -> Self {
        self.dead_after = Some(after);
        self
    }

    /// Checks CRCs (or not).
    pub fn verify_checksums(mut self, on: bool) -> Self {
        self.verify_checksums = on;
        self
    }
}

impl std::fmt::Debug for RemoteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteOptions")
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect", &self.reconnect)
            .field("reconnect_window", &self.reconnect_window)
            .field("dead_after", &self.dead_after)
            .field("verify_checksums", &self.verify_checksums)
            .finish()
    }
}

/// A remote log's identity and shape, from the bridge's welcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogInfo {
    /// The log's random identity.
    pub log_id: [u8; 16],
    /// Bytes of data per segment.
    pub segment_capacity: u64,
    /// The log's option bits (`format::log_flags`).
    pub log_flags: u32,
    /// When the log was created, nanoseconds since the Unix epoch.
    pub created_ns: u64,
    /// Permission bits of the log's files.
    pub file_mode: u32,
    /// How often the bridge sends a heartbeat.
    pub heartbeat: Duration,
    /// The earliest position when the last connection was made.
    pub earliest: u64,
    /// The tail when the last connection was made.
    pub tail: u64,
}

impl LogInfo {
    fn from_welcome(w: &Welcome) -> LogInfo {
        LogInfo {
            log_id: w.log_id,
            segment_capacity: w.segment_capacity,
            log_flags: w.log_flags,
            created_ns: w.created_ns,
            file_mode: w.file_mode,
            heartbeat: Duration::from_millis(u64::from(w.heartbeat_ms)),
            earliest: w.earliest,
            tail: w.tail,
        }
    }

    /// The largest frame the log can hold: an eighth of a segment (`docs/FORMAT.md`).
    pub fn max_frame_len(&self) -> u64 {
        (self.segment_capacity / 8).min(1 << 30)
    }
}

/// Why a link stopped.
pub(crate) enum LinkError {
    /// The connection is gone (or the bridge said "later"): reconnecting may help.
    Lost(String),
    /// Reconnecting will not help.
    Fatal(BridgeError),
}

impl From<BridgeError> for LinkError {
    fn from(e: BridgeError) -> Self {
        LinkError::Fatal(e)
    }
}

/// What [`Link::fill`] got.
pub(crate) enum Fill {
    /// More log bytes are in the buffer.
    Data,
    /// The deadline passed first.
    Timeout,
}

/// The header of a message being received, and how much of its body is in.
struct Body {
    header: MessageHeader,
    have: usize,
}

pub(crate) struct Link {
    endpoint: Endpoint,
    log: String,
    pub options: RemoteOptions,
    stream: Option<TcpStream>,
    /// From the first welcome; every later connection must be to the same log.
    pub info: Option<LogInfo>,
    header: [u8; MESSAGE_HEADER_LEN],
    header_have: usize,
    body: Option<Body>,
    small: Vec<u8>,
    /// Log bytes, 8-aligned storage so that frames in it keep their alignment.
    buf: Vec<u64>,
    /// Position of `buf`'s first byte (a multiple of 8).
    base: u64,
    /// Bytes of `buf` filled.
    len: usize,
    /// Bytes of `buf` the reader is done with.
    consumed: usize,
    last_rx: Instant,
    out: Vec<u8>,
    /// When the connection was lost, if it is.
    lost: Option<(Instant, String)>,
    next_attempt: Instant,
    attempts: u32,
    /// Connections made so far (1 + reconnections).
    pub connections: u64,
}

const INITIAL_BUFFER: usize = 1 << 20;

impl Link {
    pub fn new(endpoint: Endpoint, log: &str, options: RemoteOptions) -> Result<Link> {
        protocol::check_name(log.as_bytes()).map_err(|r| BridgeError::Config(r.message))?;
        if options
            .token
            .as_ref()
            .is_some_and(|t| t.len() > protocol::MAX_TOKEN_LEN)
        {
            return Err(BridgeError::Config(format!(
                "a token of more than {} bytes",
                protocol::MAX_TOKEN_LEN
            )));
        }
        Ok(Link {
            endpoint,
            log: log.to_string(),
            options,
            stream: None,
            info: None,
            header: [0; MESSAGE_HEADER_LEN],
            header_have: 0,
            body: None,
            small: Vec::new(),
            buf: Vec::new(),
            base: 0,
            len: 0,
            consumed: 0,
            last_rx: Instant::now(),
            out: Vec::new(),
            lost: None,
            next_attempt: Instant::now(),
            attempts: 0,
            connections: 0,
        })
    }

    pub fn log_name(&self) -> &str {
        &self.log
    }

    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// The bytes received and not yet taken, starting at [`Link::data_position`].
    pub fn data(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.buf)[self.consumed..self.len]
    }

    /// All the buffer's bytes (for messages borrowed from bytes already taken).
    pub fn buffer(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.buf)[..self.len]
    }

    /// Offset in [`Link::buffer`] of the first byte of [`Link::data`].
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// The log position of `data()[0]`.
    pub fn data_position(&self) -> u64 {
        self.base + self.consumed as u64
    }

    /// Marks `n` bytes of `data()` as taken. They stay where they are until the next `fill`.
    pub fn release(&mut self, n: usize) {
        debug_assert!(self.consumed + n <= self.len);
        self.consumed += n;
    }

    /// Connects and subscribes from `start`; on success the buffer starts at the welcome's
    /// position and the first position to deliver is returned.
    fn connect(&mut self, start: Start, flags: u8) -> Result<u64, LinkError> {
        self.stream = None;
        let addresses = self
            .endpoint
            .addresses()
            .map_err(|e| LinkError::Lost(format!("resolving the bridge's address: {e}")))?;
        let mut last_error = String::from("no address to connect to");
        let mut connected = None;
        for address in &addresses {
            match TcpStream::connect_timeout(address, self.options.connect_timeout) {
                Ok(stream) => {
                    connected = Some((stream, *address));
                    break;
                }
                Err(e) => last_error = format!("connecting to {address}: {e}"),
            }
        }
        let Some((mut stream, address)) = connected else {
            return Err(LinkError::Lost(last_error));
        };
        let lost = |what: &str, e: io::Error| LinkError::Lost(format!("{what} {address}: {e}"));
        let _ = stream.set_nodelay(true);
        let request = protocol::encode_request(&Request {
            log: self.log.clone(),
            start,
            flags,
            token: self.options.token.clone().unwrap_or_default(),
        })
        .map_err(|r| LinkError::Fatal(BridgeError::Config(r.message)))?;
        let timeout = Some(self.options.connect_timeout);
        stream
            .set_write_timeout(timeout)
            .and_then(|()| stream.set_read_timeout(timeout))
            .and_then(|()| stream.write_all(&request))
            .map_err(|e| lost("sending the request to", e))?;
        let mut header = [0u8; MESSAGE_HEADER_LEN];
        stream
            .read_exact(&mut header)
            .map_err(|e| lost("reading the answer of", e))?;
        let header: MessageHeader = bytemuck::pod_read_unaligned(&header);
        match header.kind {
            message_kind::WELCOME if header.length as usize == WELCOME_LEN => {}
            message_kind::ERROR if header.length as usize <= MAX_ERROR_LEN => {
                let mut text = vec![0u8; header.length as usize];
                stream
                    .read_exact(&mut text)
                    .map_err(|e| lost("reading the error message of", e))?;
                return Err(refusal(&header, &text));
            }
            _ => {
                return Err(LinkError::Fatal(BridgeError::Protocol(format!(
                "{address} answered with a message of kind {} and {} bytes instead of a welcome",
                header.kind, header.length
            ))))
            }
        }
        let mut welcome = Welcome::default();
        stream
            .read_exact(bytemuck::bytes_of_mut(&mut welcome))
            .map_err(|e| lost("reading the welcome of", e))?;
        let info = LogInfo::from_welcome(&welcome);
        if welcome.format_version != crate::format::FORMAT_VERSION {
            return Err(LinkError::Fatal(BridgeError::Protocol(format!(
                "the log's bytes are in format version {}, but this build reads version {}",
                welcome.format_version,
                crate::format::FORMAT_VERSION
            ))));
        }
        let capacity = info.segment_capacity;
        if !capacity.is_power_of_two()
            || !(crate::format::MIN_SEGMENT_CAPACITY..=crate::format::MAX_SEGMENT_CAPACITY)
                .contains(&capacity)
            || header.position % 8 != 0
            || header.value < header.position
        {
            return Err(LinkError::Fatal(BridgeError::Protocol(format!(
                "a welcome with segment capacity {capacity}, data from {} and first message at {}",
                header.position, header.value
            ))));
        }
        if let Some(known) = &self.info {
            if known.log_id != info.log_id
                || known.segment_capacity != info.segment_capacity
                // A replica serves its source's bytes without the single-producer bit.
                || super::mirror::replica_flags(known.log_flags)
                    != super::mirror::replica_flags(info.log_flags)
            {
                return Err(LinkError::Fatal(BridgeError::Protocol(format!(
                    "'{}' at {address} is another log than before (its identity changed): \
                     it was replaced, so resuming would be wrong",
                    self.log
                ))));
            }
        }
        stream
            .set_nonblocking(true)
            .map_err(|e| lost("configuring the connection to", e))?;
        self.info = Some(info);
        self.stream = Some(stream);
        self.header_have = 0;
        self.body = None;
        self.base = header.position;
        self.len = 0;
        self.consumed = 0;
        self.out.clear();
        self.last_rx = Instant::now();
        self.lost = None;
        self.attempts = 0;
        self.connections += 1;
        Ok(header.value)
    }

    /// The first connection: errors are returned, not retried.
    pub fn connect_first(&mut self, start: Start, flags: u8) -> Result<u64> {
        match self.connect(start, flags) {
            Ok(first) => Ok(first),
            Err(LinkError::Fatal(e)) => Err(e),
            Err(LinkError::Lost(why)) => Err(BridgeError::Disconnected(why)),
        }
    }

    /// Drops the connection after `why`; the next [`Link::reconnect`] makes a new one.
    pub fn lose(&mut self, why: String) {
        self.stream = None;
        if self.lost.is_none() {
            self.lost = Some((Instant::now(), why));
        }
    }

    /// Tries to reconnect, from `resume`, until `deadline`: `Ok(Some(first))` once connected,
    /// `Ok(None)` if the deadline came first. Gives up (with an error) when reconnecting is off
    /// or the reconnect window has passed.
    pub fn reconnect(
        &mut self,
        resume: Start,
        flags: u8,
        deadline: Option<Instant>,
    ) -> Result<Option<u64>> {
        loop {
            let (since, why) = self
                .lost
                .clone()
                .unwrap_or_else(|| (Instant::now(), "not connected".into()));
            if !self.options.reconnect {
                return Err(BridgeError::Disconnected(why));
            }
            if let Some(window) = self.options.reconnect_window {
                if since.elapsed() > window {
                    return Err(BridgeError::Disconnected(format!(
                        "{why}; no connection for {window:?}"
                    )));
                }
            }
            let now = Instant::now();
            if now < self.next_attempt {
                let wake = deadline.map_or(self.next_attempt, |d| d.min(self.next_attempt));
                if deadline.is_some_and(|d| d <= now) {
                    return Ok(None);
                }
                std::thread::sleep(wake.saturating_duration_since(now));
                if deadline.is_some_and(|d| Instant::now() >= d)
                    && Instant::now() < self.next_attempt
                {
                    return Ok(None);
                }
                continue;
            }
            match self.connect(resume, flags) {
                Ok(first) => return Ok(Some(first)),
                Err(LinkError::Fatal(e)) => return Err(e),
                Err(LinkError::Lost(why)) => {
                    self.attempts = self.attempts.saturating_add(1);
                    let backoff = Duration::from_millis(20)
                        .saturating_mul(1 << self.attempts.min(6))
                        .min(Duration::from_secs(1));
                    self.next_attempt = Instant::now() + backoff;
                    self.lost = Some((since, why));
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn dead_after(&self) -> Duration {
        self.options.dead_after.unwrap_or_else(|| {
            let heartbeat = self.info.map_or(Duration::from_secs(1), |i| i.heartbeat);
            heartbeat * 3 + Duration::from_secs(2)
        })
    }

    /// Makes room for `need` bytes from `data_position()` on: moves what is not taken to the
    /// buffer's start, growing it if it is too small.
    fn make_room(&mut self, need: usize) {
        let bytes = |words: usize| words * 8;
        let want = need.max(INITIAL_BUFFER).next_multiple_of(8);
        if bytes(self.buf.len()) < want {
            // Growing: move what is kept to the front at the same time.
            let mut bigger = vec![0u64; want / 8];
            let kept = self.len - self.consumed;
            bytemuck::cast_slice_mut::<u64, u8>(&mut bigger)[..kept].copy_from_slice(self.data());
            self.buf = bigger;
            self.base += self.consumed as u64;
            self.len = kept;
            self.consumed = 0;
            return;
        }
        let capacity = bytes(self.buf.len());
        // Compact when the bytes still needed would not fit after `consumed`, or when a
        // quarter of the buffer or less is left at its end. What moves is what was not
        // taken: less than one frame, as readers ask for more only when a frame is partial.
        if self.consumed > 0
            && (capacity - self.consumed < need || capacity - self.len < capacity / 4)
        {
            let (consumed, len) = (self.consumed, self.len);
            bytemuck::cast_slice_mut::<u64, u8>(&mut self.buf).copy_within(consumed..len, 0);
            self.base += consumed as u64;
            self.len -= consumed;
            self.consumed = 0;
        }
    }

    /// Receives until at least one more log byte is in the buffer (with room made for `need`
    /// bytes of data in all), or `deadline` passes. Heartbeats are answered on the way.
    pub fn fill(&mut self, need: usize, deadline: Option<Instant>) -> Result<Fill, LinkError> {
        if self.stream.is_none() {
            return Err(LinkError::Lost("not connected".into()));
        }
        debug_assert_eq!(self.consumed % 8, 0);
        self.make_room(need);
        loop {
            self.flush_out()?;
            match self.receive()? {
                Some(true) => return Ok(Fill::Data),
                Some(false) => continue,
                None => {}
            }
            // Nothing to read now: wait for bytes, the deadline or the peer's death.
            let now = Instant::now();
            let dead_at = self.last_rx + self.dead_after();
            if now >= dead_at {
                return Err(LinkError::Lost(format!(
                    "nothing from the bridge for {:?}",
                    self.dead_after()
                )));
            }
            if deadline.is_some_and(|d| now >= d) {
                return Ok(Fill::Timeout);
            }
            let until = deadline.map_or(dead_at, |d| d.min(dead_at));
            self.wait_readable(until.saturating_duration_since(now))?;
        }
    }

    /// One read. `Some(true)`: data arrived; `Some(false)`: something else did (a header, a
    /// heartbeat); `None`: nothing to read now.
    fn receive(&mut self) -> Result<Option<bool>, LinkError> {
        let stream = self.stream.as_mut().expect("connected");
        let result = if let Some(body) = &self.body {
            let left = body.header.length as usize - body.have;
            if body.header.kind == message_kind::DATA {
                let room = self.buf.len() * 8 - self.len;
                let take = left.min(room);
                if take == 0 {
                    return Err(LinkError::Fatal(BridgeError::Protocol(
                        "receive buffer full (a frame larger than the log allows?)".into(),
                    )));
                }
                let start = self.len;
                stream.read(
                    &mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.buf)[start..start + take],
                )
            } else {
                let have = body.have;
                stream.read(&mut self.small[have..have + left])
            }
        } else {
            stream.read(&mut self.header[self.header_have..])
        };
        let n = match result {
            Ok(0) => return Err(LinkError::Lost("the bridge closed the connection".into())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Some(false)),
            Err(e) => return Err(LinkError::Lost(format!("reading from the bridge: {e}"))),
        };
        self.last_rx = Instant::now();
        if let Some(body) = &mut self.body {
            body.have += n;
            let is_data = body.header.kind == message_kind::DATA;
            if is_data {
                self.len += n;
            }
            if body.have == body.header.length as usize {
                let body = self.body.take().expect("a body");
                if body.header.kind == message_kind::ERROR {
                    return Err(refusal(&body.header, &self.small));
                }
            }
            return Ok(Some(is_data));
        }
        self.header_have += n;
        if self.header_have < MESSAGE_HEADER_LEN {
            return Ok(Some(false));
        }
        self.header_have = 0;
        let header: MessageHeader = bytemuck::pod_read_unaligned(&self.header);
        let protocol_error = |m: String| Err(LinkError::Fatal(BridgeError::Protocol(m)));
        match header.kind {
            message_kind::DATA => {
                let expected = self.base + self.len as u64;
                if header.position != expected {
                    return protocol_error(format!(
                        "data for position {} where {expected} was next",
                        header.position
                    ));
                }
                if header.length == 0 {
                    return protocol_error(format!("an empty data message at {expected}"));
                }
                let capacity = self.info.map_or(0, |i| i.segment_capacity);
                if capacity == 0 || header.position % capacity + u64::from(header.length) > capacity
                {
                    return protocol_error(format!(
                        "data of {} bytes at {} crosses a segment end",
                        header.length, header.position
                    ));
                }
                self.body = Some(Body { header, have: 0 });
            }
            message_kind::HEARTBEAT => {
                if header.length != 0 {
                    return protocol_error("a heartbeat with a body".into());
                }
                self.out
                    .extend_from_slice(&protocol::encode_keepalive(self.data_position()));
            }
            message_kind::ERROR => {
                if header.length as usize > MAX_ERROR_LEN {
                    return protocol_error(format!("an error message of {} bytes", header.length));
                }
                self.small.clear();
                self.small.resize(header.length as usize, 0);
                if header.length == 0 {
                    return Err(refusal(&header, &[]));
                }
                self.body = Some(Body { header, have: 0 });
            }
            other => {
                return protocol_error(format!("a message of unknown kind {other}"));
            }
        }
        Ok(Some(false))
    }

    fn flush_out(&mut self) -> Result<(), LinkError> {
        while !self.out.is_empty() {
            let stream = self.stream.as_mut().expect("connected");
            match stream.write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LinkError::Lost(format!("writing to the bridge: {e}"))),
            }
        }
        Ok(())
    }

    fn wait_readable(&self, timeout: Duration) -> Result<(), LinkError> {
        let stream = self.stream.as_ref().expect("connected");
        let mut events = libc::POLLIN;
        if !self.out.is_empty() {
            events |= libc::POLLOUT;
        }
        let mut fd = libc::pollfd {
            fd: stream.as_raw_fd(),
            events,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // Round up so that a wait of 0.4 ms does not become a busy loop.
        let ms = if ms == 0 && !timeout.is_zero() { 1 } else { ms };
        // SAFETY: `fd` is one valid pollfd, and the count passed is 1.
        let rc = unsafe { libc::poll(&mut fd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(LinkError::Lost(format!("waiting for the bridge: {e}")));
            }
        }
        Ok(())
    }
}

fn refusal(header: &MessageHeader, text: &[u8]) -> LinkError {
    let message = String::from_utf8_lossy(text).into_owned();
    let code = ErrorCode::from_u32(header.value as u32);
    match code {
        Some(ErrorCode::TooManySubscribers | ErrorCode::ShuttingDown | ErrorCode::Timeout) => {
            LinkError::Lost(format!("the bridge said: {message}"))
        }
        Some(code) => LinkError::Fatal(BridgeError::Refused {
            code,
            position: header.position,
            message,
        }),
        None => LinkError::Fatal(BridgeError::Protocol(format!(
            "an error of unknown code {}: {message}",
            header.value
        ))),
    }
}
