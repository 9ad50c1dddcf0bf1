//! What `dump` and `stat` need of a log directory beyond `Log`: its segment files by name,
//! the meta file's header as it lies, and whether a path names a log or one segment file.

use anyhow::{Context, Result};
use logbus::format::{self, MetaHeader};
use std::path::{Path, PathBuf};

/// What a path given to `dump` names.
#[derive(Debug)]
pub enum Target {
    /// A log directory.
    Log(PathBuf),
    /// One segment file.
    Segment(PathBuf),
}

/// A directory is a log; a meta file stands for its directory; any other file is taken as a
/// segment file (opening it says clearly if it is not one).
pub fn target(path: &Path) -> Result<Target> {
    let metadata = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if metadata.is_dir() {
        return Ok(Target::Log(path.to_path_buf()));
    }
    if path.file_name().and_then(|n| n.to_str()) == Some(format::META_FILE_NAME) {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        return Ok(Target::Log(dir));
    }
    Ok(Target::Segment(path.to_path_buf()))
}

/// The segment files of a log directory, as (base position named by the file, path), in log
/// order. Temporary files (`.tmp-...`) and other names are left out.
pub fn segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        if let Some(base) = name.to_str().and_then(format::parse_segment_file_name) {
            files.push((base, entry.path()));
        }
    }
    files.sort_unstable_by_key(|(base, _)| *base);
    Ok(files)
}

/// A claim in flight, as a producer slot of the meta file records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimRecord {
    /// The producer slot.
    pub slot: u16,
    /// Where the claim starts; `None` between the claim's `fetch_add` and the store of its
    /// position (the record says a claim is coming, not yet where).
    pub position: Option<u64>,
    /// Its aligned length.
    pub len: u64,
}

/// A producer slot in use, as the meta file shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The slot number, written in every frame its producer writes.
    pub slot: u16,
    /// The owner's process id.
    pub pid: u32,
    /// The owner's start time, in clock ticks since boot.
    pub start_time: u64,
    /// When the slot was taken, ns since the Unix epoch.
    pub acquired_ns: u64,
    /// Whether the owner still runs: its pid exists with the start time the slot records.
    pub alive: bool,
    /// Its claim in flight, if any.
    pub claim: Option<ClaimRecord>,
}

/// The meta file of a log, read without mapping it and without opening the log: `dump`
/// must show a log as it lies, and `Log::open` may recover it (pad dead producers' claims,
/// cut off a torn tail) before anything could be shown. Everything is read with `pread`,
/// as docs/FORMAT.md lays the file out: the header at 0, the tail at 128, the producer
/// table from 512 (128-byte slots: owner at +0, start time at +8, acquired at +16, the
/// claim record's state at +32 and length at +40), then the consumer table.
pub struct MetaView {
    file: std::fs::File,
    path: PathBuf,
    header: MetaHeader,
}

const TAIL_OFFSET: u64 = 128;
const TABLE_OFFSET: u64 = 512;
const SLOT_LEN: u64 = 128;
const CONSUMER_ENTRY_LEN: u64 = 64;

impl MetaView {
    /// Opens and checks the meta file of the log in `dir` (read-only), with the library's
    /// errors: not a log, another kind of file, another version, a corrupt header, a
    /// length the header's tables do not give.
    pub fn open(dir: &Path) -> Result<MetaView> {
        use logbus::Error;
        use std::os::unix::fs::FileExt;
        let path = dir.join(format::META_FILE_NAME);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir.is_dir() => {
                return Err(Error::NotALog { path: dir.into() }.into())
            }
            Err(e) => return Err(Error::Io { path, source: e }.into()),
        };
        let io = |e| Error::Io {
            path: path.clone(),
            source: e,
        };
        let len = file.metadata().map_err(io)?.len();
        let mut header = MetaHeader::default();
        let header_len = std::mem::size_of::<MetaHeader>() as u64;
        if len < header_len {
            return Err(Error::Truncated {
                path,
                actual: len,
                expected: header_len,
            }
            .into());
        }
        file.read_exact_at(bytemuck::bytes_of_mut(&mut header), 0)
            .map_err(io)?;
        if header.magic != format::META_MAGIC {
            return Err(Error::BadMagic {
                path,
                kind: "meta",
                found: header.magic,
            }
            .into());
        }
        if header.version != format::FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                path,
                found: header.version,
                supported: format::FORMAT_VERSION,
            }
            .into());
        }
        let corrupt = |detail: String| Error::CorruptHeader {
            path: path.clone(),
            detail,
        };
        if header.header_checksum != header.compute_checksum() {
            return Err(corrupt(format!(
                "header checksum {:#010x} does not match its contents ({:#010x})",
                header.header_checksum,
                header.compute_checksum()
            ))
            .into());
        }
        let capacity = header.segment_capacity;
        if u64::from(header.header_len) != header_len
            || !capacity.is_power_of_two()
            || !(format::MIN_SEGMENT_CAPACITY..=format::MAX_SEGMENT_CAPACITY).contains(&capacity)
            || header.log_flags & !format::log_flags::KNOWN != 0
            || header.producer_slots == 0
            || header.producer_slots > u32::from(u16::MAX) + 1
        {
            return Err(corrupt(format!(
                "impossible values: header length {}, segment capacity {capacity}, options {:#x}, {} producer slots",
                header.header_len, header.log_flags, header.producer_slots
            ))
            .into());
        }
        let expected = TABLE_OFFSET
            + u64::from(header.producer_slots) * SLOT_LEN
            + u64::from(header.consumer_slots) * CONSUMER_ENTRY_LEN;
        if len != expected {
            return Err(if len < expected {
                Error::Truncated {
                    path,
                    actual: len,
                    expected,
                }
            } else {
                Error::WrongLength {
                    path,
                    actual: len,
                    expected,
                }
            }
            .into());
        }
        Ok(MetaView { file, path, header })
    }

    /// The header.
    pub fn header(&self) -> &MetaHeader {
        &self.header
    }

    /// The tail: the position the next claim gets. Read until two reads agree, so that a
    /// read torn by a concurrent claim is not shown.
    pub fn tail(&self) -> Result<u64> {
        let mut last = self.read_u64(TAIL_OFFSET)?;
        for _ in 0..8 {
            let again = self.read_u64(TAIL_OFFSET)?;
            if again == last {
                break;
            }
            last = again;
        }
        Ok(last)
    }

    fn read_u64(&self, offset: u64) -> Result<u64> {
        use std::os::unix::fs::FileExt;
        let mut bytes = [0u8; 8];
        self.file
            .read_exact_at(&mut bytes, offset)
            .with_context(|| format!("reading {}", self.path.display()))?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// The producer slots in use, live or dead, with their claims in flight.
    pub fn producers(&self) -> Result<Vec<Slot>> {
        use std::os::unix::fs::FileExt;
        let slots = u64::from(self.header.producer_slots);
        let mut table = vec![0u8; (slots * SLOT_LEN) as usize];
        self.file
            .read_exact_at(&mut table, TABLE_OFFSET)
            .with_context(|| format!("reading the producer table of {}", self.path.display()))?;
        let word = |slot: &[u8], at: usize| {
            u64::from_le_bytes(slot[at..at + 8].try_into().expect("8 bytes"))
        };
        let mut found = Vec::new();
        for (index, slot) in table.chunks_exact(SLOT_LEN as usize).enumerate() {
            let owner = word(slot, 0);
            if owner == 0 {
                continue;
            }
            let (pid, start_low) = (owner as u32, (owner >> 32) as u32);
            let (state, len) = (word(slot, 32), word(slot, 40));
            let claim = match state {
                0 => None,
                2 => Some(None),
                s if s & 1 == 1 => Some(Some(s & !1)),
                _ => None,
            }
            .map(|position| ClaimRecord {
                slot: index as u16,
                position,
                len,
            });
            found.push(Slot {
                slot: index as u16,
                pid,
                start_time: word(slot, 8),
                acquired_ns: word(slot, 16),
                alive: process_start_time(pid).is_some_and(|start| start as u32 == start_low),
                claim,
            });
        }
        Ok(found)
    }
}

/// A durable cursor, as the meta file's consumer table shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Its name.
    pub name: String,
    /// The committed position: where the next holder resumes.
    pub position: u64,
    /// The pid of the process holding it, if one does.
    pub holder: Option<u32>,
    /// When the position was last committed, ns since the Unix epoch.
    pub updated_ns: u64,
}

impl MetaView {
    /// The durable cursors in use. Each entry is read as docs/FORMAT.md says readers without
    /// the lock must: state, fields, state again; an entry that changed meanwhile is read again.
    pub fn consumers(&self) -> Result<Vec<Cursor>> {
        use std::os::unix::fs::FileExt;
        let table = TABLE_OFFSET + u64::from(self.header.producer_slots) * SLOT_LEN;
        let mut found = Vec::new();
        for index in 0..u64::from(self.header.consumer_slots) {
            let at = table + index * CONSUMER_ENTRY_LEN;
            for _ in 0..100 {
                let state = self.read_u64(at)?;
                if state & 1 == 0 {
                    break;
                }
                let mut entry = [0u8; CONSUMER_ENTRY_LEN as usize];
                self.file
                    .read_exact_at(&mut entry, at)
                    .with_context(|| format!("reading {}", self.path.display()))?;
                if self.read_u64(at)? != state {
                    continue;
                }
                let word = |at: usize| u64::from_le_bytes(entry[at..at + 8].try_into().expect("8"));
                let name = &entry[32..64];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                let holder = word(16);
                found.push(Cursor {
                    name: String::from_utf8_lossy(name).into_owned(),
                    position: word(8),
                    holder: (holder != 0).then_some(holder as u32),
                    updated_ns: word(24),
                });
                break;
            }
        }
        Ok(found)
    }
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat` field 22), if it runs.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; it ends at the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meta_view_sees_what_the_library_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let options = logbus::LogOptions::new().segment_capacity(1 << 16);
        let log = logbus::Log::create(dir.path(), &options).unwrap();
        let mut producer = log.producer().unwrap();
        producer.offer(b"hello").unwrap();
        let claim = producer.claim(10).unwrap();
        let held = claim.position();

        let view = MetaView::open(dir.path()).unwrap();
        assert_eq!(view.header().log_id, log.id());
        assert_eq!(view.header().segment_capacity, 1 << 16);
        assert_eq!(view.tail().unwrap(), log.tail());
        let slots = view.producers().unwrap();
        let library = log.producers();
        assert_eq!(slots.len(), library.len());
        assert_eq!(slots[0].slot, library[0].slot);
        assert_eq!(slots[0].pid, std::process::id());
        assert_eq!(slots[0].start_time, library[0].start_time);
        assert!(slots[0].alive);
        assert_eq!(
            slots[0].claim,
            Some(ClaimRecord {
                slot: slots[0].slot,
                position: Some(held),
                len: 40
            })
        );
        drop(claim);
        assert_eq!(view.producers().unwrap()[0].claim, None);
        drop(producer);
        assert!(view.producers().unwrap().is_empty());
    }

    #[test]
    fn a_meta_view_refuses_what_is_not_a_meta_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = MetaView::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("not a logbus log"), "{err}");
        std::fs::write(dir.path().join(format::META_FILE_NAME), [7u8; 200]).unwrap();
        let err = MetaView::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("not a logbus meta file"), "{err}");
    }
}
