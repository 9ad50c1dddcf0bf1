//! Positions on the command line, and where `sub` starts (`--from`).

use anyhow::{bail, Result};
use logbus::StartAt;

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
    /// The consumer's start. Durable cursors do not exist in this version of logbus, so
    /// `@NAME` is an error that says so.
    pub fn start_at(&self) -> Result<StartAt> {
        Ok(match self {
            From::Earliest => StartAt::Earliest,
            From::Latest => StartAt::Latest,
            From::Position(position) => StartAt::Position(*position),
            From::Cursor(name) => bail!(
                "--from @{name}: durable cursors are not available in this version of logbus; \
                 start from earliest, latest or a position"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn cursors_say_they_are_not_there_yet() {
        let err = From::Cursor("billing".into()).start_at().unwrap_err();
        assert!(err
            .to_string()
            .contains("durable cursors are not available in this version"));
        assert_eq!(From::Position(8).start_at().unwrap(), StartAt::Position(8));
    }

    #[test]
    fn counts_parse() {
        assert_eq!(parse_count("10,000"), Ok(10_000));
        assert!(parse_count("0").is_err());
        assert!(parse_count("x").is_err());
    }
}
