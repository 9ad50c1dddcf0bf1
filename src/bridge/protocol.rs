//! The bridge's wire protocol, version 1: the subscriber's request, its keepalives, and the
//! bridge's messages (welcome, data, heartbeat, error). `docs/BRIDGE.md` is the contract;
//! this module is its executable form and the two change together.
//!
//! Every multi-byte integer is little-endian. The parser never trusts its input: it looks at
//! a field only once the bytes are there, checks every length against a fixed limit before
//! it waits for more, and reports what is wrong with an [`ErrorCode`] and a message the
//! bridge sends back before it closes the connection.

use bytemuck::{Pod, Zeroable};

/// The protocol version this build speaks. A request of another version is refused with
/// [`ErrorCode::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u16 = 1;
/// First bytes of every request.
pub const REQUEST_MAGIC: [u8; 8] = *b"LBBRIDGE";
/// Bytes of the fixed part of a request; the log name and the token follow it.
pub const REQUEST_HEADER_LEN: usize = 32;
/// The longest log name (one directory name under the bridge's root).
pub const MAX_NAME_LEN: usize = 255;
/// The longest token.
pub const MAX_TOKEN_LEN: usize = 256;
/// The longest request there can be: anything longer is refused as oversized.
pub const MAX_REQUEST_LEN: usize = REQUEST_HEADER_LEN + MAX_NAME_LEN + MAX_TOKEN_LEN;
/// Bytes of a subscriber's keepalive.
pub const KEEPALIVE_LEN: usize = 16;
/// Bytes of the header in front of every message from the bridge.
pub const MESSAGE_HEADER_LEN: usize = 24;
/// Bytes of a welcome's body.
pub const WELCOME_LEN: usize = 64;
/// The longest error text the bridge sends.
pub const MAX_ERROR_LEN: usize = 4096;

/// Request kinds. The bridge serves reads only: every other kind is refused.
pub mod request_kind {
    /// Stream the log's committed bytes from a start position on.
    pub const SUBSCRIBE: u16 = 1;
}

/// Start kinds (byte 12 of a request).
pub mod start_kind {
    /// The earliest position still in the log.
    pub const EARLIEST: u8 = 0;
    /// The tail: only what is claimed after the request arrives.
    pub const LATEST: u8 = 1;
    /// The position in the request, which must start a message (a frame, or a record of a
    /// message set).
    pub const POSITION: u8 = 2;
}

/// Request flags (byte 13 of a request).
pub mod request_flags {
    /// Start at the first byte of the segment that holds the start position instead (what a
    /// mirror asks for, so that its replica's segments are whole).
    pub const SEGMENT_START: u8 = 1 << 0;
    /// Every flag this version knows.
    pub const KNOWN: u8 = SEGMENT_START;
}

/// Kinds of message from the bridge (the first field of [`MessageHeader`]).
pub mod message_kind {
    /// The answer to a request: the log's identity and where the data starts.
    pub const WELCOME: u32 = 1;
    /// Log bytes exactly as they lie in a segment, from `position` on.
    pub const DATA: u32 = 2;
    /// Sent every heartbeat interval; the subscriber answers with a keepalive.
    pub const HEARTBEAT: u32 = 3;
    /// What the bridge cannot serve, as UTF-8 text; the bridge closes the connection after it.
    pub const ERROR: u32 = 4;
}

/// The kind of a subscriber's keepalive.
pub const KEEPALIVE_KIND: u32 = 1;

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The earliest position still in the log.
    Earliest,
    /// The tail.
    Latest,
    /// A position that starts a message.
    Position(u64),
}

/// A parsed request.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// The log's name: one directory under the bridge's root.
    pub log: String,
    /// Where to start.
    pub start: Start,
    /// Bits of [`request_flags`].
    pub flags: u8,
    /// The token presented, possibly empty.
    pub token: Vec<u8>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in a log line.
        f.debug_struct("Request")
            .field("log", &self.log)
            .field("start", &self.start)
            .field("flags", &self.flags)
            .field("token_len", &self.token.len())
            .finish()
    }
}

/// Why the bridge refuses a request or ends a subscription. The number travels in the
/// `value` field of an error message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    /// The bytes are not a well-formed request or keepalive.
    Malformed = 1,
    /// A protocol version this bridge does not speak.
    UnsupportedVersion = 2,
    /// A name or token longer than the protocol allows.
    TooLarge = 3,
    /// The token is missing or wrong.
    Unauthorized = 4,
    /// A request other than a read.
    NotARead = 5,
    /// No log of that name under the bridge's root.
    UnknownLog = 6,
    /// The position was deleted by retention; the message names the earliest one and the
    /// header's `position` holds it.
    PositionDeleted = 7,
    /// The position does not start a message, or lies beyond the tail.
    InvalidPosition = 8,
    /// The bridge serves as many subscribers as it was told to.
    TooManySubscribers = 9,
    /// The request did not arrive in time.
    Timeout = 10,
    /// The log cannot be read (a corrupt file, a missing segment, an I/O error).
    LogUnreadable = 11,
    /// The bridge is shutting down.
    ShuttingDown = 12,
}

impl ErrorCode {
    /// The code for a number read off the wire, if this version knows it.
    pub fn from_u32(value: u32) -> Option<ErrorCode> {
        use ErrorCode::*;
        Some(match value {
            1 => Malformed,
            2 => UnsupportedVersion,
            3 => TooLarge,
            4 => Unauthorized,
            5 => NotARead,
            6 => UnknownLog,
            7 => PositionDeleted,
            8 => InvalidPosition,
            9 => TooManySubscribers,
            10 => Timeout,
            11 => LogUnreadable,
            12 => ShuttingDown,
            _ => return None,
        })
    }
}

/// A refusal: the code and a message naming what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of problem.
    pub code: ErrorCode,
    /// What exactly, for a person.
    pub message: String,
}

impl Refusal {
    /// A refusal with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// The fixed part of a request, as it lies on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RequestHeader {
    /// [`REQUEST_MAGIC`].
    pub magic: [u8; 8],
    /// [`PROTOCOL_VERSION`].
    pub version: u16,
    /// One of [`request_kind`].
    pub kind: u16,
    /// One of [`start_kind`].
    pub start: u8,
    /// Bits of [`request_flags`].
    pub flags: u8,
    /// Bytes of the log name that follow the header.
    pub name_len: u16,
    /// The start position, for [`start_kind::POSITION`]; else 0.
    pub position: u64,
    /// Bytes of the token that follow the name.
    pub token_len: u16,
    /// Zero.
    pub reserved: [u8; 6],
}
const _: () = assert!(std::mem::size_of::<RequestHeader>() == REQUEST_HEADER_LEN);

/// The header in front of every message from the bridge.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MessageHeader {
    /// One of [`message_kind`].
    pub kind: u32,
    /// Bytes of body that follow.
    pub length: u32,
    /// Welcome: where the data starts. Data: the log position of the body's first byte.
    /// Heartbeat: the next position the bridge will send. Error: for
    /// [`ErrorCode::PositionDeleted`], the earliest position; else 0.
    pub position: u64,
    /// Welcome: the first position the subscriber should deliver. Heartbeat: the log's tail.
    /// Error: the [`ErrorCode`]. Data: 0.
    pub value: u64,
}
const _: () = assert!(std::mem::size_of::<MessageHeader>() == MESSAGE_HEADER_LEN);

/// The body of a welcome: what a subscriber needs to read the log's bytes, or to make a
/// replica of the log.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Welcome {
    /// The log format version of the bytes that will follow (`docs/FORMAT.md`).
    pub format_version: u16,
    /// Zero.
    pub reserved: u16,
    /// The log's option bits (`format::log_flags`).
    pub log_flags: u32,
    /// The log's random identity.
    pub log_id: [u8; 16],
    /// Bytes in each segment's data area.
    pub segment_capacity: u64,
    /// When the log was created, nanoseconds since the Unix epoch.
    pub created_ns: u64,
    /// Permission bits of the log's files.
    pub file_mode: u32,
    /// How often the bridge sends a heartbeat, in milliseconds.
    pub heartbeat_ms: u32,
    /// The earliest position in the log when the request was served.
    pub earliest: u64,
    /// The log's tail when the request was served.
    pub tail: u64,
}
const _: () = assert!(std::mem::size_of::<Welcome>() == WELCOME_LEN);

/// A subscriber's keepalive, its answer to a heartbeat.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Keepalive {
    /// [`KEEPALIVE_KIND`].
    pub kind: u32,
    /// Zero.
    pub reserved: u32,
    /// The position up to which the subscriber has taken the data (informational).
    pub position: u64,
}
const _: () = assert!(std::mem::size_of::<Keepalive>() == KEEPALIVE_LEN);

/// Encodes a request. Fails if the name or token is too long for the protocol, or the name is
/// not one a bridge would serve.
pub fn encode_request(request: &Request) -> Result<Vec<u8>, Refusal> {
    check_name(request.log.as_bytes())?;
    if request.token.len() > MAX_TOKEN_LEN {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!(
                "token of {} bytes; the limit is {MAX_TOKEN_LEN}",
                request.token.len()
            ),
        ));
    }
    let (start, position) = match request.start {
        Start::Earliest => (start_kind::EARLIEST, 0),
        Start::Latest => (start_kind::LATEST, 0),
        Start::Position(p) => (start_kind::POSITION, p),
    };
    let header = RequestHeader {
        magic: REQUEST_MAGIC,
        version: PROTOCOL_VERSION,
        kind: request_kind::SUBSCRIBE,
        start,
        flags: request.flags,
        name_len: request.log.len() as u16,
        position,
        token_len: request.token.len() as u16,
        reserved: [0; 6],
    };
    let mut bytes = bytemuck::bytes_of(&header).to_vec();
    bytes.extend_from_slice(request.log.as_bytes());
    bytes.extend_from_slice(&request.token);
    Ok(bytes)
}

/// Parses a request from the bytes received so far. `Ok(None)`: well-formed so far, more
/// bytes are needed (never more than [`MAX_REQUEST_LEN`] in all). `Ok(Some((request, n)))`:
/// a whole request, `n` bytes long. `Err`: what is wrong, as soon as the bytes show it.
pub fn parse_request(bytes: &[u8]) -> Result<Option<(Request, usize)>, Refusal> {
    let have = bytes.len().min(REQUEST_MAGIC.len());
    if bytes[..have] != REQUEST_MAGIC[..have] {
        return Err(Refusal::new(
            ErrorCode::Malformed,
            "not a logbus bridge request (it must start with the bytes \"LBBRIDGE\")",
        ));
    }
    if bytes.len() < 10 {
        return Ok(None);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != PROTOCOL_VERSION {
        return Err(Refusal::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {version}, but this bridge speaks version {PROTOCOL_VERSION}"
            ),
        ));
    }
    if bytes.len() < REQUEST_HEADER_LEN {
        return Ok(None);
    }
    let header: RequestHeader = bytemuck::pod_read_unaligned(&bytes[..REQUEST_HEADER_LEN]);
    let malformed = |message: String| Err(Refusal::new(ErrorCode::Malformed, message));
    if header.kind != request_kind::SUBSCRIBE {
        return Err(Refusal::new(
            ErrorCode::NotARead,
            format!(
                "request kind {}: this bridge serves only subscriptions (kind {}), it takes no writes",
                header.kind,
                request_kind::SUBSCRIBE
            ),
        ));
    }
    let name_len = usize::from(header.name_len);
    let token_len = usize::from(header.token_len);
    if name_len > MAX_NAME_LEN {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!("log name of {name_len} bytes; the limit is {MAX_NAME_LEN}"),
        ));
    }
    if token_len > MAX_TOKEN_LEN {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!("token of {token_len} bytes; the limit is {MAX_TOKEN_LEN}"),
        ));
    }
    let start = match header.start {
        start_kind::EARLIEST => Start::Earliest,
        start_kind::LATEST => Start::Latest,
        start_kind::POSITION => Start::Position(header.position),
        other => return malformed(format!("unknown start kind {other}")),
    };
    if header.start != start_kind::POSITION && header.position != 0 {
        return malformed("a position given with a start other than a position".into());
    }
    if header.flags & !request_flags::KNOWN != 0 {
        return malformed(format!("unknown flag bits {:#04x}", header.flags));
    }
    if header.reserved != [0; 6] {
        return malformed("reserved bytes are not zero".into());
    }
    let total = REQUEST_HEADER_LEN + name_len + token_len;
    if bytes.len() < total {
        return Ok(None);
    }
    let name = &bytes[REQUEST_HEADER_LEN..REQUEST_HEADER_LEN + name_len];
    check_name(name)?;
    let log = std::str::from_utf8(name)
        .expect("checked by check_name")
        .to_string();
    Ok(Some((
        Request {
            log,
            start,
            flags: header.flags,
            token: bytes[REQUEST_HEADER_LEN + name_len..total].to_vec(),
        },
        total,
    )))
}

/// A log name is one directory name under the bridge's root: 1 to 255 bytes of UTF-8, no
/// `/`, no NUL, no control characters, and not starting with a dot (no `..`, no hidden or
/// temporary files).
pub fn check_name(name: &[u8]) -> Result<(), Refusal> {
    let bad = |why: &str| {
        Err(Refusal::new(
            ErrorCode::Malformed,
            format!(
                "log name {:?} {why}",
                String::from_utf8_lossy(&name[..name.len().min(64)])
            ),
        ))
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!(
                "log name of {} bytes; the limit is {MAX_NAME_LEN}",
                name.len()
            ),
        ));
    }
    let Ok(text) = std::str::from_utf8(name) else {
        return bad("is not UTF-8");
    };
    if text.starts_with('.') {
        return bad("starts with a dot");
    }
    if text.chars().any(|c| c == '/' || c.is_control()) {
        return bad("holds a '/' or a control character: it must be one directory name");
    }
    Ok(())
}

/// Encodes a keepalive.
pub fn encode_keepalive(position: u64) -> [u8; KEEPALIVE_LEN] {
    let keepalive = Keepalive {
        kind: KEEPALIVE_KIND,
        reserved: 0,
        position,
    };
    bytemuck::cast(keepalive)
}

/// Parses a keepalive, the only thing a subscriber may send after its request.
pub fn parse_keepalive(bytes: &[u8; KEEPALIVE_LEN]) -> Result<Keepalive, Refusal> {
    let keepalive: Keepalive = bytemuck::pod_read_unaligned(bytes);
    if keepalive.kind != KEEPALIVE_KIND || keepalive.reserved != 0 {
        return Err(Refusal::new(
            ErrorCode::Malformed,
            format!(
                "after its request a subscriber may send only keepalives (kind {KEEPALIVE_KIND}); got kind {}",
                keepalive.kind
            ),
        ));
    }
    Ok(keepalive)
}

/// Encodes a message header.
pub fn encode_header(kind: u32, length: u32, position: u64, value: u64) -> [u8; 24] {
    bytemuck::cast(MessageHeader {
        kind,
        length,
        position,
        value,
    })
}

/// Decodes a message header.
pub fn decode_header(bytes: &[u8; MESSAGE_HEADER_LEN]) -> MessageHeader {
    bytemuck::pod_read_unaligned(bytes)
}

/// Encodes a whole error message (header and text), the text cut to [`MAX_ERROR_LEN`] bytes.
pub fn encode_error(refusal: &Refusal, position: u64) -> Vec<u8> {
    let mut text = refusal.message.as_bytes();
    if text.len() > MAX_ERROR_LEN {
        let mut cut = MAX_ERROR_LEN;
        while !refusal.message.is_char_boundary(cut) {
            cut -= 1;
        }
        text = &text[..cut];
    }
    let mut bytes = encode_header(
        message_kind::ERROR,
        text.len() as u32,
        position,
        refusal.code as u64,
    )
    .to_vec();
    bytes.extend_from_slice(text);
    bytes
}

/// Whether `offered` equals `expected`, in time that depends on neither's contents nor on
/// where they first differ: both are padded to [`MAX_TOKEN_LEN`] bytes and compared whole
/// with `subtle`, whose comparison the optimiser cannot turn into an early exit; the
/// lengths are compared the same way. Only whether the offered token was longer than the
/// limit (refused before this, by the parser) is visible.
pub fn token_matches(expected: &[u8], offered: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    if expected.len() > MAX_TOKEN_LEN || offered.len() > MAX_TOKEN_LEN {
        return false;
    }
    let mut a = [0u8; MAX_TOKEN_LEN];
    let mut b = [0u8; MAX_TOKEN_LEN];
    a[..expected.len()].copy_from_slice(expected);
    b[..offered.len()].copy_from_slice(offered);
    let same_bytes = a.ct_eq(&b);
    let same_len = (expected.len() as u32).ct_eq(&(offered.len() as u32));
    bool::from(same_bytes & same_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            log: "orders".into(),
            start: Start::Position(4096),
            flags: request_flags::SEGMENT_START,
            token: b"s3cret".to_vec(),
        }
    }

    #[test]
    fn a_request_round_trips_and_every_prefix_asks_for_more() {
        let bytes = encode_request(&request()).unwrap();
        assert_eq!(bytes.len(), REQUEST_HEADER_LEN + 6 + 6);
        let (parsed, used) = parse_request(&bytes).unwrap().unwrap();
        assert_eq!(parsed, request());
        assert_eq!(used, bytes.len());
        for cut in 0..bytes.len() {
            assert_eq!(parse_request(&bytes[..cut]), Ok(None), "prefix of {cut}");
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&encode_keepalive(7));
        assert_eq!(parse_request(&longer).unwrap().unwrap().1, bytes.len());
    }

    #[test]
    fn bad_requests_are_refused_with_the_right_code_as_soon_as_it_shows() {
        let good = encode_request(&request()).unwrap();
        let code = |bytes: &[u8]| parse_request(bytes).unwrap_err().code;
        assert_eq!(code(b"GET / HTTP/1.1\r\n"), ErrorCode::Malformed);
        assert_eq!(code(b"LBX"), ErrorCode::Malformed);
        let mut v2 = good.clone();
        v2[8] = 2;
        assert_eq!(code(&v2[..10]), ErrorCode::UnsupportedVersion);
        let mut write = good.clone();
        write[10] = 2;
        assert_eq!(code(&write[..32]), ErrorCode::NotARead);
        let mut long_name = good.clone();
        long_name[14..16].copy_from_slice(&1000u16.to_le_bytes());
        assert_eq!(code(&long_name[..32]), ErrorCode::TooLarge);
        let mut long_token = good.clone();
        long_token[24..26].copy_from_slice(&257u16.to_le_bytes());
        assert_eq!(code(&long_token[..32]), ErrorCode::TooLarge);
        let mut start = good.clone();
        start[12] = 9;
        assert_eq!(code(&start), ErrorCode::Malformed);
        let mut reserved = good.clone();
        reserved[31] = 1;
        assert_eq!(code(&reserved), ErrorCode::Malformed);
        for name in ["", "..", ".hidden", "a/b", "nul\0"] {
            let r = Request {
                log: name.into(),
                ..request()
            };
            assert_eq!(encode_request(&r).unwrap_err().code, ErrorCode::Malformed);
        }
    }

    #[test]
    fn keepalives_and_errors_encode_as_documented() {
        let k = encode_keepalive(99);
        assert_eq!(parse_keepalive(&k).unwrap().position, 99);
        let mut bad = k;
        bad[0] = 7;
        assert_eq!(
            parse_keepalive(&bad).unwrap_err().code,
            ErrorCode::Malformed
        );
        let e = encode_error(&Refusal::new(ErrorCode::PositionDeleted, "gone"), 65536);
        let header: MessageHeader = bytemuck::pod_read_unaligned(&e[..24]);
        assert_eq!(header.kind, message_kind::ERROR);
        assert_eq!(header.length, 4);
        assert_eq!(header.position, 65536);
        assert_eq!(
            ErrorCode::from_u32(header.value as u32),
            Some(ErrorCode::PositionDeleted)
        );
        assert_eq!(&e[24..], b"gone");
        let long = "é".repeat(MAX_ERROR_LEN);
        let e = encode_error(&Refusal::new(ErrorCode::Malformed, long), 0);
        assert!(e.len() - 24 <= MAX_ERROR_LEN);
        assert!(std::str::from_utf8(&e[24..]).is_ok());
    }

    #[test]
    fn the_worked_example_of_bridge_md_is_what_the_code_sends() {
        let request = encode_request(&Request {
            log: "orders".into(),
            start: Start::Earliest,
            flags: 0,
            token: b"s3cret".to_vec(),
        })
        .unwrap();
        let mut expected = b"LBBRIDGE".to_vec();
        expected.extend_from_slice(&[1, 0, 1, 0, 0, 0, 6, 0]);
        expected.extend_from_slice(&[0; 8]);
        expected.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(b"orderss3cret");
        assert_eq!(request, expected);
        let error = encode_error(&Refusal::new(ErrorCode::Unauthorized, "wrong token"), 0);
        let mut expected = vec![4, 0, 0, 0, 11, 0, 0, 0];
        expected.extend_from_slice(&[0; 8]);
        expected.extend_from_slice(&[4, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(b"wrong token");
        assert_eq!(error, expected);
        assert_eq!(
            encode_keepalive(32),
            [1, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(token_matches(b"abc", b"abc"));
        assert!(token_matches(b"", b""));
        assert!(!token_matches(b"abc", b"abd"));
        assert!(!token_matches(b"abc", b"abc\0"));
        assert!(!token_matches(b"abc", b""));
        assert!(!token_matches(b"abc", &[b'a'; 300]));
    }
}
