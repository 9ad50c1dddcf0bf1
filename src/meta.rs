//! The meta file: the tail, the wake-up line and the producer table, mapped by every process
//! of the log. Nothing in it is needed to read committed data.

use crate::clock;
use crate::format::{MetaHeader, FORMAT_VERSION, META_FILE_NAME, META_MAGIC};
use crate::protocol::{ClaimRecord, Claimed, ProducerView, WakeWord};
use crate::segment::{create_sized, publish, sync_dir, temporary_path};
use crate::{format, Error, Result};
use memmap2::{MmapOptions, MmapRaw};
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Entries in the producer table; a producer's slot number is written in its frames.
pub const PRODUCER_SLOTS: usize = 1024;
/// Entries in the consumer table (named durable cursors).
pub const CONSUMER_SLOTS: usize = 256;

/// One cache line, 128 bytes because the adjacent-line prefetcher pairs 64-byte lines.
/// Spelled out rather than `CachePadded`, whose size depends on the target: the file format
/// must not.
#[repr(C, align(128))]
struct Line<T>(T);

/// A producer's entry. `owner` packs pid (low half) and the low 32 bits of the process start
/// time, so that taking over a dead process's slot is one compare-and-swap on its identity.
/// 128 bytes: the claim record is written on every claim by its owner alone, and must not
/// share a line (or an adjacent-line pair) with another producer's.
#[repr(C)]
pub(crate) struct ProducerSlot {
    pub owner: AtomicU64,
    pub start_time: AtomicU64,
    pub acquired_ns: AtomicU64,
    _reserved: u64,
    pub claim: ClaimRecord,
    _padding: [u8; 80],
}

#[repr(C)]
struct WakeLine {
    wake: WakeWord,
    /// Count of segments ever published: consumers look here before trying to open one.
    segments_published: AtomicU64,
}

/// The whole meta file, as mapped.
#[repr(C)]
struct MetaLayout {
    header: MetaHeader,
    tail: Line<AtomicU64>,
    wake: Line<WakeLine>,
    /// Position up to which a recovery found every frame whole (see `verify.rs`).
    recovered_to: Line<AtomicU64>,
    producers: [ProducerSlot; PRODUCER_SLOTS],
    /// Reserved for the table of named durable cursors, 64 bytes an entry; zero.
    _consumers: [[u8; 64]; CONSUMER_SLOTS],
}

/// Size of the meta file in bytes.
pub const META_FILE_LEN: u64 = std::mem::size_of::<MetaLayout>() as u64;
const _: () = assert!(std::mem::offset_of!(MetaLayout, tail) == 128);
const _: () = assert!(std::mem::offset_of!(MetaLayout, wake) == 256);
const _: () = assert!(std::mem::offset_of!(MetaLayout, producers) == 512);
const _: () = assert!(std::mem::size_of::<ProducerSlot>() == 128);
const _: () = assert!(std::mem::offset_of!(ProducerSlot, claim) == 32);
const _: () = assert!(META_FILE_LEN == 512 + 128 * 1024 + 64 * 256);

/// The mapped meta file of one log.
pub(crate) struct Meta {
    map: MmapRaw,
    header: MetaHeader,
}

// SAFETY: all shared state behind the mapping is atomics; the header copy is plain data.
unsafe impl Send for Meta {}
// SAFETY: as above; `&Meta` only hands out `&` to atomics.
unsafe impl Sync for Meta {}

impl Meta {
    /// Writes a new meta file into `dir` and publishes it, unless one exists
    /// (`Error::AlreadyExists`). The publication is the moment the log comes to exist.
    pub fn create(dir: &Path, header: MetaHeader) -> Result<()> {
        let final_path = dir.join(META_FILE_NAME);
        let temp_path = temporary_path(dir, META_FILE_NAME);
        let file = create_sized(&temp_path, META_FILE_LEN, header.file_mode)?;
        let published = file
            .write_all_at(bytemuck::bytes_of(&header), 0)
            .and_then(|()| file.sync_all())
            .and_then(|()| publish(&temp_path, &final_path));
        match published {
            Ok(()) => {
                sync_dir(dir);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&temp_path);
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Err(Error::AlreadyExists { path: dir.into() })
                } else {
                    Err(Error::io(final_path, e))
                }
            }
        }
    }

    /// Maps and validates the meta file of the log in `dir`.
    pub fn open(dir: &Path) -> Result<Meta> {
        let path = dir.join(META_FILE_NAME);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir.is_dir() => {
                return Err(Error::NotALog { path: dir.into() })
            }
            Err(e) => return Err(Error::io(if dir.is_dir() { path } else { dir.into() }, e)),
        };
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let mut header = MetaHeader::default();
        if len < std::mem::size_of::<MetaHeader>() as u64 {
            return Err(Error::Truncated {
                path,
                actual: len,
                expected: META_FILE_LEN,
            });
        }
        file.read_exact_at(bytemuck::bytes_of_mut(&mut header), 0)
            .map_err(|e| Error::io(&path, e))?;
        validate_header(&header, &path, len)?;
        let map = MmapOptions::new()
            .len(META_FILE_LEN as usize)
            .populate()
            .map_raw(&file)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Meta { map, header })
    }

    fn layout(&self) -> &MetaLayout {
        // SAFETY: the mapping is META_FILE_LEN bytes, page-aligned (so aligned for the
        // 128-byte lines), shared and alive as long as `self`; every field of MetaLayout is an
        // integer, an atomic or a byte array, valid for any bit pattern; and other processes
        // only ever change the atomics.
        unsafe { &*(self.map.as_ptr() as *const MetaLayout) }
    }

    /// The header as read and checked when the file was opened.
    pub fn header(&self) -> &MetaHeader {
        &self.header
    }

    /// The position the next claim will get.
    pub fn tail(&self) -> &AtomicU64 {
        &self.layout().tail.0
    }

    /// The wake-up word and waiter count.
    pub fn wake(&self) -> &WakeWord {
        &self.layout().wake.0.wake
    }

    /// Position up to which the last recovery on open checked every frame.
    pub fn recovered_to(&self) -> &AtomicU64 {
        &self.layout().recovered_to.0
    }

    /// Count of segments published since the log was created.
    pub fn segments_published(&self) -> &AtomicU64 {
        &self.layout().wake.0.segments_published
    }

    /// The producer table.
    pub fn producers(&self) -> &[ProducerSlot; PRODUCER_SLOTS] {
        &self.layout().producers
    }

    /// Takes a free producer slot, or one whose owner process is dead, for this process.
    pub fn acquire_producer_slot(&self) -> Result<u16> {
        let (pid, start_time) = clock::this_process();
        let me = owner_word(pid, start_time);
        for (index, slot) in self.producers().iter().enumerate() {
            let owner = slot.owner.load(Ordering::Acquire);
            // A dead owner's slot is taken over only once no claim of its is in flight: its
            // record is what lets readers pad that claim.
            let claimable =
                owner == 0 || (!owner_alive(owner) && slot.claim.read() == Claimed::Idle);
            if claimable
                && slot
                    .owner
                    .compare_exchange(owner, me, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                slot.start_time.store(start_time, Ordering::Relaxed);
                slot.acquired_ns.store(clock::now_ns(), Ordering::Release);
                return Ok(index as u16);
            }
        }
        Err(Error::NoProducerSlot {
            slots: PRODUCER_SLOTS as u32,
        })
    }

    /// The slots in use, with whether their owner process still runs.
    pub fn producers_in_use(&self) -> Vec<ProducerInfo> {
        self.producers()
            .iter()
            .enumerate()
            .filter_map(|(slot, entry)| {
                let owner = entry.owner.load(Ordering::Acquire);
                if owner == 0 {
                    return None;
                }
                let (pid, _) = split_owner(owner);
                Some(ProducerInfo {
                    slot: slot as u16,
                    pid,
                    start_time: entry.start_time.load(Ordering::Acquire),
                    acquired_ns: entry.acquired_ns.load(Ordering::Acquire),
                    alive: owner_alive(owner),
                })
            })
            .collect()
    }

    /// The claim record of a slot.
    pub fn claim_record(&self, slot: u16) -> &ClaimRecord {
        &self.producers()[slot as usize].claim
    }

    /// Every slot that has an owner, as a stalled reader needs them: claim record and
    /// liveness. Slots of this process are alive without asking the kernel.
    pub fn producer_views(&self) -> Vec<ProducerView<'_>> {
        let (my_pid, my_start) = clock::this_process();
        let me = owner_word(my_pid, my_start);
        self.producers()
            .iter()
            .filter_map(|slot| {
                let owner = slot.owner.load(Ordering::Acquire);
                (owner != 0).then(|| ProducerView {
                    record: &slot.claim,
                    alive: owner == me || owner_alive(owner),
                })
            })
            .collect()
    }

    /// Gives back a slot taken by [`Meta::acquire_producer_slot`].
    pub fn release_producer_slot(&self, index: u16) {
        let (pid, start_time) = clock::this_process();
        let slot = &self.producers()[index as usize];
        let _ = slot.owner.compare_exchange(
            owner_word(pid, start_time),
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}

/// A producer slot in use, as the meta file shows it: see [`crate::Log::producers`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerInfo {
    /// The slot number, written in every frame the producer writes.
    pub slot: u16,
    /// The owner's process id.
    pub pid: u32,
    /// The owner's start time, in clock ticks since boot.
    pub start_time: u64,
    /// When the slot was taken, nanoseconds since the Unix epoch.
    pub acquired_ns: u64,
    /// Whether the owner process still runs (a reused pid with another start time does not
    /// count). A dead owner's slot is taken over by the next producer that needs one.
    pub alive: bool,
}

fn owner_word(pid: u32, start_time: u64) -> u64 {
    u64::from(pid) | (u64::from(start_time as u32) << 32)
}

fn split_owner(owner: u64) -> (u32, u32) {
    (owner as u32, (owner >> 32) as u32)
}

/// Whether the process an owner word names still runs: the pid exists and has the same
/// start time (so a reused pid is another process).
fn owner_alive(owner: u64) -> bool {
    let (pid, start_low) = split_owner(owner);
    clock::process_start_time(pid).is_some_and(|start| start as u32 == start_low)
}

fn validate_header(header: &MetaHeader, path: &Path, len: u64) -> Result<()> {
    if header.magic != META_MAGIC {
        return Err(Error::BadMagic {
            path: path.into(),
            kind: "meta",
            found: header.magic,
        });
    }
    if header.version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.into(),
            found: header.version,
            supported: FORMAT_VERSION,
        });
    }
    let corrupt = |detail: String| Error::CorruptHeader {
        path: path.into(),
        detail,
    };
    if header.header_checksum != header.compute_checksum() {
        return Err(corrupt(format!(
            "header checksum {:#010x} does not match its contents ({:#010x})",
            header.header_checksum,
            header.compute_checksum()
        )));
    }
    if header.header_len as usize != std::mem::size_of::<MetaHeader>()
        || header.producer_slots as usize != PRODUCER_SLOTS
        || header.consumer_slots as usize != CONSUMER_SLOTS
    {
        return Err(corrupt(format!(
            "table sizes {}/{}/{} differ from this version's",
            header.header_len, header.producer_slots, header.consumer_slots
        )));
    }
    let capacity = header.segment_capacity;
    if !capacity.is_power_of_two()
        || !(format::MIN_SEGMENT_CAPACITY..=format::MAX_SEGMENT_CAPACITY).contains(&capacity)
    {
        return Err(corrupt(format!("segment capacity {capacity}")));
    }
    if header.log_flags & !format::log_flags::KNOWN != 0 {
        return Err(corrupt(format!(
            "unknown option bits {:#x}",
            header.log_flags
        )));
    }
    if len != META_FILE_LEN {
        return Err(length_error(path, len, META_FILE_LEN));
    }
    Ok(())
}

/// The error for a file of `actual` bytes that must be `expected` bytes long.
pub(crate) fn length_error(path: &Path, actual: u64, expected: u64) -> Error {
    let path = path.into();
    if actual < expected {
        Error::Truncated {
            path,
            actual,
            expected,
        }
    } else {
        Error::WrongLength {
            path,
            actual,
            expected,
        }
    }
}
