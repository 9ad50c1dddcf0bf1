//! Parsing and printing of sizes, counts, durations and rates, shared by the subcommands.

use std::time::Duration;

/// Parses a byte size: a plain number (`65536`) or one with a unit (`64KiB`, `64k`, `64MiB`,
/// `64M`, `1.5GiB`, `1G`). Every unit is a power of 1024, `MB` too; case, spaces, `_` between
/// digits and a trailing `B` do not matter. Used as a clap value parser.
pub fn parse_size(text: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(text.trim())
        .map_err(|e| match e {
            parse_size::Error::PosOverflow => format!("'{text}' is too large"),
            _ => format!(
                "'{text}' is not a size: expected a number of bytes such as 65536, or one with \
                 a unit, KiB, MiB or GiB (powers of 1024), such as 64MiB"
            ),
        })
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 message`, `10,000 messages`: a count with its noun, in the singular for one.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {noun}s", thousands(n))
    }
}

/// A byte count in the largest binary unit it fills: `64 MiB`, `1.5 GiB`, `512 bytes`.
pub fn binary_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration for people: `17.5 µs`, `812.3 ms`, `4.21 s`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1e-3 {
        format!("{:.1} µs", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.1} ms", secs * 1e3)
    } else {
        format!("{secs:.2} s")
    }
}

/// Events per second in millions, or `-` when no time passed: `11.76 M msg/s`.
pub fn mega_rate(count: u64, elapsed: Duration) -> String {
    match rate(count as f64, elapsed) {
        Some(r) => format!("{:.2} M msg/s", r / 1e6),
        None => "- msg/s".to_string(),
    }
}

/// Bytes per second in decimal megabytes, or `-` when no time passed: `376 MB/s`.
pub fn megabytes_rate(bytes: u64, elapsed: Duration) -> String {
    match rate(bytes as f64, elapsed) {
        Some(r) => format!("{:.0} MB/s", r / 1e6),
        None => "- MB/s".to_string(),
    }
}

fn rate(amount: f64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    (secs > 0.0).then(|| amount / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1_048_576"), Ok(1 << 20));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(
            parse_size("64MB"),
            Ok(64 << 20),
            "binary, as the segment sizes are"
        );
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("99999999999GiB").is_err());
    }

    #[test]
    fn printing() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(10_000_000), "10,000,000");
        assert_eq!(count(1, "message"), "1 message");
        assert_eq!(count(1000, "message"), "1,000 messages");
        assert_eq!(count(0, "message"), "0 messages");
        assert_eq!(binary_bytes(64 << 20), "64 MiB");
        assert_eq!(binary_bytes(65536), "64 KiB");
        assert_eq!(binary_bytes(1536 << 20), "1.5 GiB");
        assert_eq!(binary_bytes(100), "100 bytes");
        assert_eq!(duration(Duration::from_micros(812_345)), "812.3 ms");
        assert_eq!(duration(Duration::from_millis(4210)), "4.21 s");
        assert_eq!(duration(Duration::from_nanos(17_460)), "17.5 µs");
        assert_eq!(
            mega_rate(10_000_000, Duration::from_secs(2)),
            "5.00 M msg/s"
        );
        assert_eq!(mega_rate(5, Duration::ZERO), "- msg/s");
        assert_eq!(
            megabytes_rate(320_000_000, Duration::from_secs(1)),
            "320 MB/s"
        );
    }
}
