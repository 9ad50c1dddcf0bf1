//! Positions on the command line, and where `sub` starts (`--from`).

use anyhow::{Context, Result};
use logbus::{Consumer, Log, StartAt};

/// A log position: a decimal number, `_` or `,` allowed between digits, or hex after `0x`.
pub fn parse_position(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let parsed = match trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => trimmed
            .chars()
            .filter(|&c| c != '_' && c != ',')
            .collect::<String>()
            .parse(),
    };
    parsed.map_err(|_| {
        format!("'{text}' is not a position: expected a byte offset in the log, such as 4096")
    })
}

/// A count of at least one: a decimal number, `_` or `,` allowed between digits.
pub fn parse_count(text: &str) -> Result<u64, String> {
    let digits: String = text.chars().filter(|&c| c != '_' && c != ',').collect();
    match digits.parse::<u64>() {
        Ok(0) => Err("the count must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{text}' is not a whole number")),
    }
}

/// Where `sub` starts reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum From {
    /// The earliest message still in the log.
    Earliest,
    /// Only messages claimed from now on.
    Latest,
    /// The message at this position.
    Position(u64),
    /// The position saved under this durable cursor name.
    Cursor(String),
}

/// Parses `earliest`, `latest`, a position or `@NAME`.
pub fn parse_from(text: &str) -> Result<From, String> {
    match text.trim() {
        "earliest" | "start" | "beginning" => Ok(From::Earliest),
        "latest" | "end" | "tail" => Ok(From::Latest),
        other => match other.strip_prefix('@') {
            Some("") => Err("a cursor name must follow '@'".into()),
            Some(name) => Ok(From::Cursor(name.to_string())),
            None => parse_position(other).map(From::Position).map_err(|_| {
                format!("'{text}' is not a start: expected earliest, latest, a position (such as 4096) or @NAME")
            }),
        },
    }
}

impl From {
    /// A consumer of `log` from this start. `@NAME` is a durable cursor: it resumes where the
    /// last holder of that name committed (or, for a new name, at the earliest message).
    pub fn consumer(&self, log: &Log) -> Result<Consumer> {
        Ok(match self {
            From::Earliest => log.consumer(StartAt::Earliest)?,
            From::Latest => log.consumer(StartAt::Latest)?,
            From::Position(position) => log.consumer(StartAt::Position(*position))?,
            From::Cursor(name) => log
                .consumer_named(name)
                .with_context(|| format!("--from @{name}"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logbus::LogOptions;

    #[test]
    fn starts_parse() {
        assert_eq!(parse_from("earliest"), Ok(From::Earliest));
        assert_eq!(parse_from("latest"), Ok(From::Latest));
        assert_eq!(parse_from("4096"), Ok(From::Position(4096)));
        assert_eq!(parse_from("1_048_576"), Ok(From::Position(1 << 20)));
        assert_eq!(parse_from("0x1000"), Ok(From::Position(4096)));
        assert_eq!(parse_from("@billing"), Ok(From::Cursor("billing".into())));
        assert!(parse_from("@").is_err());
        assert!(parse_from("soon").unwrap_err().contains("earliest, latest"));
        assert!(parse_from("-5").is_err());
    }

    #[test]
    fn a_cursor_resumes_where_its_name_last_committed() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(1 << 16)).unwrap();
        let mut producer = log.producer().unwrap();
        for message in [&b"one"[..], b"two", b"three"] {
            producer.offer(message).unwrap();
        }
        let billing = From::Cursor("billing".into());
        let mut first = billing.consumer(&log).unwrap();
        assert_eq!(first.poll().unwrap().unwrap().payload(), b"one");
        first.commit_position().unwrap();
        drop(first);
        let mut again = billing.consumer(&log).unwrap();
        assert_eq!(again.poll().unwrap().unwrap().payload(), b"two");
        let mut earliest = From::Earliest.consumer(&log).unwrap();
        assert_eq!(earliest.poll().unwrap().unwrap().payload(), b"one");
    }

    #[test]
    fn counts_parse() {
        assert_eq!(parse_count("10,000"), Ok(10_000));
        assert!(parse_count("0").is_err());
        assert!(parse_count("x").is_err());
    }
}
