//! The byte format shared by producers, the files, consumers and (later) the wire.
//! `docs/FORMAT.md` is the contract; this module is its executable form and the two change
//! together.

use bytemuck::{Pod, Zeroable};

/// The version written in every file header; readers refuse any other.
pub const FORMAT_VERSION: u16 = 1;
/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"LOGBUSSG";
/// First bytes of the meta file.
pub const META_MAGIC: [u8; 8] = *b"LOGBUSMT";
/// Name of the meta file inside a log directory.
pub const META_FILE_NAME: &str = "meta.logbus";
/// Suffix of segment files; the stem is the base position in 20 decimal digits.
pub const SEGMENT_SUFFIX: &str = ".seg";

/// Every frame starts at a multiple of this, so the frame word is an aligned `u64` and a
/// payload is aligned for any `Pod` type of alignment 8 or less.
pub const FRAME_ALIGNMENT: u64 = 8;
/// Bytes before the data area of a segment file: the header, then zeros up to one page, so
/// that log positions and file pages line up.
pub const SEGMENT_HEADER_LEN: u64 = 4096;
/// Smallest and largest segment capacity accepted at creation.
pub const MIN_SEGMENT_CAPACITY: u64 = 64 * 1024;
/// Largest segment capacity (1 GiB).
pub const MAX_SEGMENT_CAPACITY: u64 = 1 << 30;
/// Capacity used when the options do not name one.
pub const DEFAULT_SEGMENT_CAPACITY: u64 = 64 * 1024 * 1024;

/// Frame kinds (byte 4 of a frame).
pub mod kind {
    /// One message: the payload is the message.
    pub const DATA: u8 = 1;
    /// Filler that consumers skip; only its first 8 bytes are defined.
    pub const PADDING: u8 = 2;
    /// A message set: records of `u32` length + bytes, each at a 4-byte boundary of the
    /// payload, sharing the frame's timestamp, producer and checksum.
    pub const BATCH: u8 = 3;
}

/// Frame flags (byte 5 of a frame).
pub mod flags {
    /// The checksum field holds the CRC32C of the payload.
    pub const CHECKSUM: u8 = 1 << 0;
    /// The timestamp field holds nanoseconds since the Unix epoch.
    pub const TIMESTAMP: u8 = 1 << 1;
}

/// Log-wide option bits, stored in the meta and every segment header.
pub mod log_flags {
    /// Producers compute a CRC32C of every payload.
    pub const CHECKSUMS: u32 = 1 << 0;
    /// Producers read the clock once per claim.
    pub const TIMESTAMPS: u32 = 1 << 1;
    /// Segments retention retires may be recycled into new ones, so every reader holds a
    /// shared `flock` on a segment file while it reads it (FORMAT.md, "Recycling"). Set at
    /// creation for a log with retention on a tmpfs; builds that predate the rule do not
    /// know the bit and refuse the log, rather than read it unlocked.
    pub const RECYCLING: u32 = 1 << 2;
    /// Only exclusive producers write the log, one at a time, each keeping the frame word at
    /// the tail zero before it moves the tail there; so a segment recycled for it is zeroed
    /// only in its first frame word, not in whole (FORMAT.md, "Single-producer logs").
    /// Builds that predate the rule refuse the log, rather than claim into such a segment
    /// with an atomic add.
    pub const SINGLE_PRODUCER: u32 = 1 << 3;
    /// Every flag this version knows; any other bit set makes a file unreadable to it.
    pub const KNOWN: u32 = CHECKSUMS | TIMESTAMPS | RECYCLING | SINGLE_PRODUCER;
}

/// The header in front of every payload. The first 8 bytes (length, kind, flags, producer)
/// form the *frame word*, read and written as one atomic `u64`; the commit state lives in the
/// sign of `length`. A padding frame is just a frame word, so any 8-byte gap can be padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FrameHeader {
    /// Header plus payload length in bytes, unaligned: 0 = nothing yet, negative = claimed
    /// but not committed, positive = committed. The next frame starts at the length rounded
    /// up to [`FRAME_ALIGNMENT`].
    pub length: i32,
    /// One of [`kind`].
    pub kind: u8,
    /// Bits of [`flags`].
    pub flags: u8,
    /// The producer slot (in the meta file) of the writer.
    pub producer: u16,
    /// CRC32C (Castagnoli) of the payload when [`flags::CHECKSUM`] is set, else 0.
    pub checksum: u32,
    /// Zero; reserved for a later version.
    pub reserved: u32,
    /// Nanoseconds since the Unix epoch when [`flags::TIMESTAMP`] is set, else 0.
    pub timestamp: u64,
}

/// Bytes in a [`FrameHeader`]: the fields above need 20, and payloads start 8-aligned.
pub const FRAME_HEADER_LEN: u64 = std::mem::size_of::<FrameHeader>() as u64;
const _: () = assert!(FRAME_HEADER_LEN == 24);

/// Bytes of the length prefix of a record inside a batch frame.
pub const RECORD_LENGTH_LEN: u64 = 4;
/// Records inside a batch payload start at multiples of this.
pub const RECORD_ALIGNMENT: u64 = 4;

/// The self-describing header at offset 0 of every segment file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SegmentHeader {
    /// [`SEGMENT_MAGIC`].
    pub magic: [u8; 8],
    /// [`FORMAT_VERSION`].
    pub version: u16,
    /// Offset of the data area in the file, [`SEGMENT_HEADER_LEN`].
    pub data_offset: u16,
    /// Bits of [`log_flags`].
    pub log_flags: u32,
    /// Random identity of the log, the same in the meta file and every segment.
    pub log_id: [u8; 16],
    /// Log position of the first data byte; also the file's name.
    pub base_position: u64,
    /// Bytes in the data area, a power of two.
    pub capacity: u64,
    /// Creation time of this segment, nanoseconds since the Unix epoch.
    pub created_ns: u64,
    /// CRC32C of the 56 bytes before this field.
    pub header_checksum: u32,
    /// Zero.
    pub reserved: u32,
}
const _: () = assert!(std::mem::size_of::<SegmentHeader>() == 64);

/// The header at offset 0 of the meta file.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct MetaHeader {
    /// [`META_MAGIC`].
    pub magic: [u8; 8],
    /// [`FORMAT_VERSION`].
    pub version: u16,
    /// Size of this header, 128.
    pub header_len: u16,
    /// Bits of [`log_flags`].
    pub log_flags: u32,
    /// Random identity of the log.
    pub log_id: [u8; 16],
    /// Bytes in each segment's data area, a power of two.
    pub segment_capacity: u64,
    /// Creation time of the log, nanoseconds since the Unix epoch.
    pub created_ns: u64,
    /// Entries in the producer table.
    pub producer_slots: u32,
    /// Entries in the consumer table.
    pub consumer_slots: u32,
    /// Permission bits of the files of this log.
    pub file_mode: u32,
    /// CRC32C of the bytes before this field.
    pub header_checksum: u32,
    /// The retention and bounded-mode policy, with a checksum of its own (all zero: none);
    /// laid out in `docs/FORMAT.md` and read by the meta module.
    pub reserved: [u8; 64],
}
const _: () = assert!(std::mem::size_of::<MetaHeader>() == 128);

impl Default for MetaHeader {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

/// Rounds `n` up to a multiple of `to` (a power of two).
#[inline(always)]
pub const fn align_up(n: u64, to: u64) -> u64 {
    (n + to - 1) & !(to - 1)
}

/// Packs the frame word: the first 8 bytes of a frame as one little-endian `u64`.
#[inline(always)]
pub const fn frame_word(length: i32, kind: u8, flags: u8, producer: u16) -> u64 {
    (length as u32 as u64)
        | ((kind as u64) << 32)
        | ((flags as u64) << 40)
        | ((producer as u64) << 48)
}

/// The frame word of a padding frame of `length` bytes.
#[inline(always)]
pub const fn padding_word(length: u64) -> u64 {
    frame_word(length as i32, kind::PADDING, 0, 0)
}

/// The fields of a frame word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameWord {
    /// See [`FrameHeader::length`].
    pub length: i32,
    /// See [`FrameHeader::kind`].
    pub kind: u8,
    /// See [`FrameHeader::flags`].
    pub flags: u8,
    /// See [`FrameHeader::producer`].
    pub producer: u16,
}

impl FrameWord {
    /// Unpacks a frame word read from memory.
    #[inline(always)]
    pub const fn unpack(word: u64) -> Self {
        FrameWord {
            length: word as u32 as i32,
            kind: (word >> 32) as u8,
            flags: (word >> 40) as u8,
            producer: (word >> 48) as u16,
        }
    }
}

/// The bytes a committed frame takes (its length rounded up to 8), if its frame word's length
/// is possible at `position` in a segment that ends at `segment_end`: at least a frame word
/// for padding, a whole header for any other kind, and no further than the segment end.
/// Otherwise, what is wrong. Every reader of frames checks a length with this before using it.
pub fn frame_extent(word: FrameWord, position: u64, segment_end: u64) -> Result<u64, String> {
    let min = if word.kind == kind::PADDING {
        FRAME_ALIGNMENT
    } else {
        FRAME_HEADER_LEN
    };
    let aligned = align_up(word.length.max(0) as u64, FRAME_ALIGNMENT);
    if (word.length as i64) < min as i64 || position + aligned > segment_end {
        return Err(format!(
            "length {} does not fit between {min} and the segment end at {segment_end}",
            word.length
        ));
    }
    Ok(aligned)
}

/// Offset, in a message set's payload, of the record after the one at `offset` whose own
/// payload is `len` bytes.
#[inline(always)]
pub fn next_record_offset(offset: usize, len: usize) -> usize {
    align_up(
        (offset + RECORD_LENGTH_LEN as usize + len) as u64,
        RECORD_ALIGNMENT,
    ) as usize
}

/// The records of a message set's payload, as (offset in the payload, record bytes); an
/// `Err` (and the end) where a record's length runs past the payload.
pub fn records(payload: &[u8]) -> impl Iterator<Item = Result<(usize, &[u8]), String>> + '_ {
    let mut offset = 0usize;
    std::iter::from_fn(move || {
        if offset >= payload.len() {
            return None;
        }
        let at = offset;
        let Some(prefix) = payload.get(at..at + RECORD_LENGTH_LEN as usize) else {
            offset = payload.len();
            return Some(Err(format!(
                "record at offset {at} has no room for its length"
            )));
        };
        let len = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
        let body = at + RECORD_LENGTH_LEN as usize;
        let Some(bytes) = payload.get(body..body.saturating_add(len)) else {
            offset = payload.len();
            return Some(Err(format!(
                "record at offset {at} of {len} bytes runs past the payload's {} bytes",
                payload.len()
            )));
        };
        offset = next_record_offset(at, len);
        Some(Ok((at, bytes)))
    })
}

/// Checks that the records of a message set exactly tile its payload.
///
/// Consumers run this over every set before handing out its first record, so the walk that
/// succeeds is a bare loop over the length prefixes; only a failing set is walked again by
/// [`records`], for the message. A set whose records all have one length, as most do, is
/// checked first without the walk (see [`records_of_one_length`]).
#[inline]
pub fn check_records(payload: &[u8]) -> Result<(), String> {
    if records_of_one_length(payload) {
        return Ok(());
    }
    let len = payload.len();
    let prefix = RECORD_LENGTH_LEN as usize;
    let mut offset = 0usize;
    while offset + prefix <= len {
        let at = &payload[offset..offset + prefix];
        let record_len = u32::from_le_bytes([at[0], at[1], at[2], at[3]]) as usize;
        if offset + prefix + record_len > len {
            break;
        }
        offset = next_record_offset(offset, record_len);
    }
    if offset >= len {
        return Ok(());
    }
    records(payload).try_for_each(|record| record.map(|_| ()))
}

/// Whether `payload` is records that all have the length of its first, tiling it exactly. The
/// walk in [`check_records`] finds each record's offset from the length before it, so each of
/// its loads waits for the one before; here every offset is known up front, and the loads of
/// the lengths run side by side. True only where that walk succeeds too; false sends a set to
/// it.
#[inline]
fn records_of_one_length(payload: &[u8]) -> bool {
    let Some(first) = payload.first_chunk::<4>() else {
        return false;
    };
    let record_len = u32::from_le_bytes(*first) as usize;
    let stride = next_record_offset(0, record_len);
    // The last record starts at a multiple of the stride and ends the payload.
    let Some(last_start) = payload
        .len()
        .checked_sub(RECORD_LENGTH_LEN as usize + record_len)
    else {
        return false;
    };
    if last_start % stride != 0 {
        return false;
    }
    // One chunk a record (the last one without the padding after it).
    let mut same = true;
    for record in payload.chunks(stride) {
        same &= record
            .first_chunk::<4>()
            .is_some_and(|prefix| u32::from_le_bytes(*prefix) as usize == record_len);
    }
    same
}

/// CRC32C of `bytes`, using the CPU's instruction where there is one.
#[inline]
pub fn checksum(bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() < SHORT_CHECKSUM_LIMIT && std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE4.2, checked just above.
        return unsafe { short_checksum(bytes) };
    }
    crc32c::crc32c(bytes)
}

/// Below this many bytes, `checksum` runs its own loop instead of the `crc32c` crate's, which
/// only from here on runs three streams of the instruction at once. Under it, the crate takes
/// the bytes up to the first 8-aligned address one at a time (a dependent instruction each),
/// then words, then the last bytes one at a time again: 10.9 ns for 32 aligned bytes and
/// 14.8 unaligned, 37.5 for 256, against 5.5, 8.6 and 21.1 for one unaligned word load per
/// instruction (criterion, 2026-11-22; the figures are in README "Performance").
#[cfg(target_arch = "x86_64")]
const SHORT_CHECKSUM_LIMIT: usize = 768;

/// CRC32C of a short `bytes`: 8 bytes per instruction, read unaligned, then at most one 4-,
/// 2- and 1-byte step.
///
/// # Safety
///
/// The CPU must have SSE4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn short_checksum(bytes: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};
    let mut crc = u64::from(u32::MAX);
    let mut rest = bytes;
    while let Some((word, after)) = rest.split_first_chunk::<8>() {
        crc = _mm_crc32_u64(crc, u64::from_le_bytes(*word));
        rest = after;
    }
    let mut crc = crc as u32;
    if let Some((word, after)) = rest.split_first_chunk::<4>() {
        crc = _mm_crc32_u32(crc, u32::from_le_bytes(*word));
        rest = after;
    }
    if let Some((half, after)) = rest.split_first_chunk::<2>() {
        crc = _mm_crc32_u16(crc, u16::from_le_bytes(*half));
        rest = after;
    }
    if let Some(&byte) = rest.first() {
        crc = _mm_crc32_u8(crc, byte);
    }
    !crc
}

/// The name of the segment file whose data starts at `base_position`.
pub fn segment_file_name(base_position: u64) -> String {
    format!("{base_position:020}{SEGMENT_SUFFIX}")
}

/// The base position named by a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

impl SegmentHeader {
    /// The checksum over every field before `header_checksum`.
    pub fn compute_checksum(&self) -> u32 {
        checksum(&bytemuck::bytes_of(self)[..56])
    }
}

impl MetaHeader {
    /// The checksum over every field before `header_checksum`.
    pub fn compute_checksum(&self) -> u32 {
        checksum(&bytemuck::bytes_of(self)[..60])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_word_round_trips_and_puts_length_in_the_first_four_bytes() {
        let word = frame_word(-40, kind::DATA, flags::CHECKSUM, 513);
        let unpacked = FrameWord::unpack(word);
        assert_eq!(unpacked.length, -40);
        assert_eq!(unpacked.kind, kind::DATA);
        assert_eq!(unpacked.flags, flags::CHECKSUM);
        assert_eq!(unpacked.producer, 513);
        let bytes = word.to_le_bytes();
        assert_eq!(i32::from_le_bytes(bytes[..4].try_into().unwrap()), -40);
        let header = FrameHeader {
            length: -40,
            kind: kind::DATA,
            flags: flags::CHECKSUM,
            producer: 513,
            ..Default::default()
        };
        assert_eq!(&bytemuck::bytes_of(&header)[..8], &bytes);
    }

    #[test]
    fn checksums_of_every_length_and_alignment_agree_with_the_crc32c_crate() {
        let bytes: Vec<u8> = (0..1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..8 {
            for len in 0..(1000 - start) {
                let slice = &bytes[start..start + len];
                assert_eq!(
                    checksum(slice),
                    crc32c::crc32c(slice),
                    "{len} bytes at {start}"
                );
            }
        }
        // The standard check value of CRC-32C.
        assert_eq!(checksum(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn segment_names_sort_by_position_and_parse_back() {
        let name = segment_file_name(1 << 26);
        assert_eq!(name, "00000000000067108864.seg");
        assert_eq!(parse_segment_file_name(&name), Some(1 << 26));
        assert_eq!(parse_segment_file_name("67108864.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000006710886x.seg"), None);
        assert!(segment_file_name(9) < segment_file_name(10));
    }

    #[test]
    fn records_tile_a_payload_and_a_bad_length_is_an_error() {
        let mut payload = Vec::new();
        for record in [&b"abc"[..], b"", b"defgh"] {
            while payload.len() % 4 != 0 {
                payload.push(0);
            }
            payload.extend_from_slice(&(record.len() as u32).to_le_bytes());
            payload.extend_from_slice(record);
        }
        let found: Vec<_> = records(&payload).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            found,
            vec![(0, &b"abc"[..]), (8, &b""[..]), (12, &b"defgh"[..])]
        );
        assert!(check_records(&payload).is_ok());
        payload[12] = 200;
        assert!(check_records(&payload).unwrap_err().contains("offset 12"));
        assert!(check_records(&payload[..2])
            .unwrap_err()
            .contains("no room"));
    }

    #[test]
    fn header_checksums_cover_the_fields_before_them() {
        let mut header = SegmentHeader {
            magic: SEGMENT_MAGIC,
            capacity: 1 << 16,
            ..Default::default()
        };
        let before = header.compute_checksum();
        header.base_position = 1 << 16;
        assert_ne!(before, header.compute_checksum());
        let mut meta = MetaHeader::default();
        let before = meta.compute_checksum();
        meta.file_mode = 0o600;
        assert_ne!(before, meta.compute_checksum());
    }
}
