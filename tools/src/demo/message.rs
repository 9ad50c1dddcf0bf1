//! The demo's message: who sent it, its sequence number, and filler bytes that are a
//! function of both, so that a consumer can check every byte.
//!
//! ```text
//! bytes 0..8    producer id, u64 little-endian
//! bytes 8..16   sequence number (0, 1, 2, ... per producer), u64 little-endian
//! bytes 16..    filler: 8-byte words derived from (producer, sequence, word index)
//! ```

/// Bytes of the id and sequence number at the front of every message: the smallest size.
pub const HEADER_LEN: usize = 16;

/// Writes message `sequence` of `producer` into the whole of `buf` (at least [`HEADER_LEN`]
/// bytes long).
#[inline]
pub fn fill(buf: &mut [u8], producer: u64, sequence: u64) {
    buf[..8].copy_from_slice(&producer.to_le_bytes());
    buf[8..HEADER_LEN].copy_from_slice(&sequence.to_le_bytes());
    fill_filler(&mut buf[HEADER_LEN..], producer, sequence);
}

/// Writes the filler of message `sequence` of `producer` into `filler`.
#[inline]
pub fn fill_filler(filler: &mut [u8], producer: u64, sequence: u64) {
    let key = mix(sequence ^ producer.wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
    let mut chunks = filler.chunks_exact_mut(8);
    let mut word = key;
    for chunk in &mut chunks {
        chunk.copy_from_slice(&word.to_le_bytes());
        word = word.wrapping_add(0x9E37_79B9_7F4A_7C15);
    }
    let rest = chunks.into_remainder();
    let n = rest.len();
    rest.copy_from_slice(&word.to_le_bytes()[..n]);
}

/// The producer id and sequence number at the front of `payload`, if it is long enough.
#[inline]
pub fn parse(payload: &[u8]) -> Option<(u64, u64)> {
    let producer = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let sequence = u64::from_le_bytes(payload.get(8..HEADER_LEN)?.try_into().ok()?);
    Some((producer, sequence))
}

/// The splitmix64 finalizer: neighbouring inputs give unrelated outputs.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_distinct_fillers() {
        let mut a = [0u8; 37];
        let mut b = [0u8; 37];
        fill(&mut a, 1, 41);
        assert_eq!(parse(&a), Some((1, 41)));
        fill(&mut b, 1, 42);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
        fill(&mut b, 0, 41);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
        // Deterministic, and a shorter message is a prefix of a longer one.
        let mut c = [0u8; 20];
        fill(&mut c, 1, 41);
        assert_eq!(c[..], a[..20]);
        assert_eq!(parse(&a[..15]), None);
    }
}
