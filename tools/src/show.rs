//! How `dump`, `stat` and `sub` show things: payloads as escaped text or hex, timestamps in
//! RFC 3339, frame kinds and flags, and the payload fields of their JSON lines.

use logbus::format::{flags, kind};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch in RFC 3339, UTC, with nanoseconds:
/// `2026-11-22T15:04:05.123456789Z`.
pub fn rfc3339(ns: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_nanos(ns);
    humantime::format_rfc3339_nanos(time).to_string()
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Bytes as lowercase hex, two digits a byte, nothing between them.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Hex text (as [`hex`] writes it; upper case and whitespace allowed) back into bytes.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err(format!(
            "{} hex digits: an odd number, but every byte takes two",
            digits.len()
        ));
    }
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).unwrap_or("??");
            u8::from_str_radix(text, 16).map_err(|_| format!("'{text}' is not a hex byte"))
        })
        .collect()
}

/// Bytes as printable text: printable characters of valid UTF-8 as they are; `\n`, `\r`,
/// `\t`, `\0`, `\\` and `\"` escaped; every other byte (a control character, or a byte that
/// is not part of valid UTF-8) as `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\0' => out.push_str("\\0"),
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// How payloads are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PayloadStyle {
    /// Escaped text (what is not printable as `\n`, `\xNN`, ...); in JSON, the exact string.
    Text,
    /// Lowercase hex.
    Hex,
    /// Not at all.
    None,
}

/// The payload fields of a JSON line. `payload` is the payload as a JSON string (JSON's own
/// escapes make it exact) when it is valid UTF-8, else null; `payload_hex` is the payload in
/// hex. With [`PayloadStyle::Text`], `payload` is always there and `payload_hex` only when the
/// payload is not valid UTF-8; with [`PayloadStyle::Hex`], only `payload_hex`; with
/// [`PayloadStyle::None`], neither.
#[derive(Serialize, Debug, Default)]
pub struct JsonPayload {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_hex: Option<String>,
}

impl JsonPayload {
    /// The fields for `bytes` shown in `style`.
    pub fn new(bytes: &[u8], style: PayloadStyle) -> JsonPayload {
        match style {
            PayloadStyle::None => JsonPayload::default(),
            PayloadStyle::Hex => JsonPayload {
                payload: None,
                payload_hex: Some(hex(bytes)),
            },
            PayloadStyle::Text => match std::str::from_utf8(bytes) {
                Ok(text) => JsonPayload {
                    payload: Some(Some(text.to_string())),
                    payload_hex: None,
                },
                Err(_) => JsonPayload {
                    payload: Some(None),
                    payload_hex: Some(hex(bytes)),
                },
            },
        }
    }
}

/// A payload for a text listing: quoted escaped text or hex, cut after `limit` bytes
/// (0: never cut), with the number of bytes left out.
pub fn payload_text(bytes: &[u8], style: PayloadStyle, limit: usize) -> String {
    let (shown, rest) = if limit > 0 && bytes.len() > limit {
        (&bytes[..limit], bytes.len() - limit)
    } else {
        (bytes, 0)
    };
    let mut out = match style {
        PayloadStyle::None => return String::new(),
        PayloadStyle::Text => format!("\"{}\"", escape(shown)),
        PayloadStyle::Hex => hex(shown),
    };
    if rest > 0 {
        let _ = write!(out, "... ({rest} more bytes)");
    }
    out
}

/// The name of a frame kind, as dump shows it in text and JSON.
pub fn kind_name(code: u8) -> &'static str {
    match code {
        kind::DATA => "data",
        kind::PADDING => "padding",
        kind::BATCH => "message_set",
        _ => "unknown",
    }
}

/// Frame flags in two letters: `c` a checksum, `t` a timestamp, `-` for one that is not set;
/// unknown bits follow as `+0xNN`.
pub fn flags_text(bits: u8) -> String {
    let mut out = String::new();
    out.push(if bits & flags::CHECKSUM != 0 {
        'c'
    } else {
        '-'
    });
    out.push(if bits & flags::TIMESTAMP != 0 {
        't'
    } else {
        '-'
    });
    let unknown = bits & !(flags::CHECKSUM | flags::TIMESTAMP);
    if unknown != 0 {
        let _ = write!(out, "+{unknown:#04x}");
    }
    out
}

/// A log id as 32 hex digits.
pub fn log_id(id: &[u8; 16]) -> String {
    hex(id)
}

/// "on" or "off".
pub fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_printable_text_and_escapes_the_rest() {
        assert_eq!(escape(b"hello"), "hello");
        assert_eq!(escape(b"a\nb\tc\\d\"e\0"), "a\\nb\\tc\\\\d\\\"e\\0");
        assert_eq!(escape(&[0x01, 0x7f, 0xff, b'x']), "\\x01\\x7f\\xffx");
        assert_eq!(escape("grüß".as_bytes()), "grüß");
        // A C1 control character is escaped byte by byte.
        assert_eq!(escape("\u{85}".as_bytes()), "\\xc2\\x85");
    }

    #[test]
    fn hex_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(parse_hex(&hex(&all)).unwrap(), all);
        assert_eq!(hex(b"\x00\xab"), "00ab");
        assert_eq!(parse_hex("00 AB\n").unwrap(), [0, 0xab]);
        assert_eq!(parse_hex("").unwrap(), Vec::<u8>::new());
        assert!(parse_hex("abc").unwrap_err().contains("odd"));
        assert!(parse_hex("zz").unwrap_err().contains("'zz'"));
    }

    #[test]
    fn timestamps_are_rfc3339_with_nanoseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(1_779_462_245_123_456_789),
            "2026-05-22T15:04:05.123456789Z"
        );
    }

    #[test]
    fn payloads_for_listings_are_cut_at_the_limit() {
        assert_eq!(payload_text(b"hello", PayloadStyle::Text, 0), "\"hello\"");
        assert_eq!(
            payload_text(b"hello", PayloadStyle::Text, 2),
            "\"he\"... (3 more bytes)"
        );
        assert_eq!(payload_text(b"hi", PayloadStyle::Hex, 8), "6869");
        assert_eq!(payload_text(b"hi", PayloadStyle::None, 8), "");
    }

    #[test]
    fn json_payload_fields_follow_the_style() {
        let json =
            |bytes: &[u8], style| serde_json::to_string(&JsonPayload::new(bytes, style)).unwrap();
        assert_eq!(json(b"hi\n", PayloadStyle::Text), r#"{"payload":"hi\n"}"#);
        assert_eq!(
            json(b"\xff", PayloadStyle::Text),
            r#"{"payload":null,"payload_hex":"ff"}"#
        );
        assert_eq!(json(b"hi", PayloadStyle::Hex), r#"{"payload_hex":"6869"}"#);
        assert_eq!(json(b"hi", PayloadStyle::None), "{}");
    }

    #[test]
    fn flags_and_kinds_have_names() {
        assert_eq!(flags_text(3), "ct");
        assert_eq!(flags_text(0), "--");
        assert_eq!(flags_text(0x81), "c-+0x80");
        assert_eq!(kind_name(1), "data");
        assert_eq!(kind_name(3), "message_set");
        assert_eq!(kind_name(9), "unknown");
    }
}
