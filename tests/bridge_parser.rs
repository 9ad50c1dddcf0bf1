//! Property tests of the bridge's request parser: whatever bytes arrive, in whatever pieces,
//! it never panics, never asks for more than the protocol's limit, and reads back exactly
//! what was encoded. A bounded number of cases runs with the normal test suite;
//! `PROPTEST_CASES=100000 cargo test --test bridge_parser` runs more.

use logbus::bridge::protocol::{
    self, encode_request, parse_keepalive, parse_request, request_flags, ErrorCode, Request, Start,
    KEEPALIVE_LEN, MAX_NAME_LEN, MAX_REQUEST_LEN, MAX_TOKEN_LEN, REQUEST_HEADER_LEN,
};
use proptest::prelude::*;

fn start() -> impl Strategy<Value = Start> {
    prop_oneof![
        Just(Start::Earliest),
        Just(Start::Latest),
        any::<u64>().prop_map(Start::Position),
    ]
}

fn name() -> impl Strategy<Value = String> {
    // Valid names: no dot first, no '/', no control characters; some multi-byte characters.
    "[a-zA-Z0-9_é€-][a-zA-Z0-9_.é€ -]{0,60}"
}

fn request() -> impl Strategy<Value = Request> {
    (
        name(),
        start(),
        0..=request_flags::KNOWN,
        proptest::collection::vec(any::<u8>(), 0..=MAX_TOKEN_LEN),
    )
        .prop_map(|(log, start, flags, token)| Request {
            log,
            start,
            flags,
            token,
        })
}

/// Feeds `bytes` to the parser the way the bridge does: growing prefixes, as pieces arrive.
fn feed(bytes: &[u8], cuts: &[usize]) -> Result<Option<(Request, usize)>, protocol::Refusal> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.push(bytes.len());
    cuts.sort_unstable();
    for cut in cuts {
        match parse_request(&bytes[..cut])? {
            None => {
                assert!(cut <= MAX_REQUEST_LEN, "asked for more after {cut} bytes");
            }
            Some(done) => return Ok(Some(done)),
        }
    }
    Ok(None)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic_and_never_need_more_than_the_limit(
        valid_start in any::<bool>(),
        rest in proptest::collection::vec(any::<u8>(), 0..1200),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        // Half the cases start like a request (magic, version 1, a subscription), so that
        // the parser's later checks see random input too.
        let mut bytes = Vec::new();
        if valid_start {
            bytes.extend_from_slice(&protocol::REQUEST_MAGIC);
            bytes.extend_from_slice(&protocol::PROTOCOL_VERSION.to_le_bytes());
            bytes.extend_from_slice(&1u16.to_le_bytes());
        }
        bytes.extend_from_slice(&rest);
        if let Ok(Some((request, used))) = feed(&bytes, &cuts) {
            prop_assert!(used <= MAX_REQUEST_LEN);
            prop_assert!(used > REQUEST_HEADER_LEN);
            prop_assert_eq!(encode_request(&request).unwrap(), bytes[..used].to_vec());
        }
        if bytes.len() >= KEEPALIVE_LEN {
            let _ = parse_keepalive(bytes[..KEEPALIVE_LEN].try_into().unwrap());
        }
    }

    #[test]
    fn encoded_requests_parse_back_whole_from_any_pieces(
        request in request(),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
        trailing in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let bytes = encode_request(&request).unwrap();
        let mut with_more = bytes.clone();
        with_more.extend_from_slice(&trailing);
        let (parsed, used) = feed(&with_more, &cuts).unwrap().expect("a whole request");
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(parsed, request);
    }

    #[test]
    fn a_corrupted_request_is_refused_or_reads_as_another_valid_request(
        request in request(),
        at in any::<usize>(),
        xor in 1u8..,
    ) {
        let mut bytes = encode_request(&request).unwrap();
        let at = at % bytes.len();
        bytes[at] ^= xor;
        match parse_request(&bytes) {
            Err(refusal) => {
                prop_assert!(!refusal.message.is_empty());
                if at < 8 {
                    prop_assert_eq!(refusal.code, ErrorCode::Malformed);
                } else if at < 10 {
                    prop_assert_eq!(refusal.code, ErrorCode::UnsupportedVersion);
                }
            }
            Ok(None) => prop_assert!(bytes.len() < MAX_REQUEST_LEN),
            Ok(Some((parsed, used))) => {
                prop_assert!(used <= MAX_REQUEST_LEN);
                prop_assert!(parsed.log.len() <= MAX_NAME_LEN);
                prop_assert!(parsed.token.len() <= MAX_TOKEN_LEN);
                prop_assert_eq!(encode_request(&parsed).unwrap(), bytes[..used].to_vec());
            }
        }
    }
}
