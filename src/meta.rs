//! The meta file: the tail, the wake-up line and the producer table, mapped by every process
//! of the log. Nothing in it is needed to read committed data.

use crate::clock;
use crate::format::{MetaHeader, FORMAT_VERSION, META_FILE_NAME, META_MAGIC};
use crate::protocol::{ClaimRecord, Claimed, ProducerView, WakeWord};
use crate::segment::{create_sized, publish, sync_dir, temporary_path};
use crate::{format, Error, Result};
use memmap2::{MmapOptions, MmapRaw};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

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
    _padding: [u8; 72],
}

#[repr(C)]
struct TailLine {
    /// The position the next claim will get.
    tail: AtomicU64,
    /// Owner word (as in a producer slot) of the process whose exclusive producer has the
    /// log to itself, 0 if none. Read only when a producer is made.
    exclusive: AtomicU64,
}

#[repr(C)]
struct WakeLine {
    wake: WakeWord,
    /// Count of segments ever published: consumers look here before trying to open one.
    segments_published: AtomicU64,
    /// Positions below this were deleted by retention; no segment below it is made again.
    retained_from: AtomicU64,
}

/// The whole meta file, as mapped.
#[repr(C)]
struct MetaLayout {
    header: MetaHeader,
    tail: Line<TailLine>,
    wake: Line<WakeLine>,
    /// Position up to which a recovery found every frame whole (see `verify.rs`).
    recovered_to: Line<AtomicU64>,
    producers: [ProducerSlot; PRODUCER_SLOTS],
    /// The table of named durable cursors.
    cursors: [CursorEntry; CONSUMER_SLOTS],
}

/// Size of the meta file in bytes.
pub const META_FILE_LEN: u64 = std::mem::size_of::<MetaLayout>() as u64;
/// Where things lie in the meta file, for readers that do not map it (`inspect::MetaFile`).
pub(crate) mod offsets {
    use super::{CursorEntry, MetaLayout, ProducerSlot};
    use std::mem::{offset_of, size_of};
    pub const TAIL: u64 = offset_of!(MetaLayout, tail) as u64;
    pub const EXCLUSIVE: u64 = TAIL + std::mem::offset_of!(super::TailLine, exclusive) as u64;
    pub const PRODUCERS: u64 = offset_of!(MetaLayout, producers) as u64;
    pub const PRODUCER_SLOT: u64 = size_of::<ProducerSlot>() as u64;
    pub const SLOT_OWNER: usize = offset_of!(ProducerSlot, owner);
    pub const SLOT_START_TIME: usize = offset_of!(ProducerSlot, start_time);
    pub const SLOT_ACQUIRED_NS: usize = offset_of!(ProducerSlot, acquired_ns);
    pub const SLOT_CLAIM_STATE: usize = offset_of!(ProducerSlot, claim);
    pub const SLOT_CLAIM_LEN: usize = SLOT_CLAIM_STATE + 8;
    pub const CURSORS: u64 = offset_of!(MetaLayout, cursors) as u64;
    pub const CURSOR_ENTRY: u64 = size_of::<CursorEntry>() as u64;
    pub const CURSOR_STATE: usize = offset_of!(CursorEntry, state);
    pub const CURSOR_POSITION: usize = offset_of!(CursorEntry, position);
    pub const CURSOR_HOLDER: usize = offset_of!(CursorEntry, holder);
    pub const CURSOR_UPDATED_NS: usize = offset_of!(CursorEntry, updated_ns);
    pub const CURSOR_NAME: usize = offset_of!(CursorEntry, name);
}

const _: () = assert!(std::mem::offset_of!(MetaLayout, tail) == 128);
const _: () = assert!(std::mem::offset_of!(MetaLayout, wake) == 256);
const _: () = assert!(std::mem::offset_of!(MetaLayout, producers) == 512);
const _: () = assert!(std::mem::size_of::<ProducerSlot>() == 128);
const _: () = assert!(std::mem::offset_of!(ProducerSlot, claim) == 32);
const _: () = assert!(META_FILE_LEN == 512 + 128 * 1024 + 64 * 256);
const _: () = assert!(std::mem::offset_of!(MetaLayout, cursors) == 512 + 128 * 1024);
const _: () = assert!(std::mem::size_of::<CursorEntry>() == 64);
const _: () = assert!(std::mem::offset_of!(WakeLine, retained_from) == 16);

/// The mapped meta file of one log.
pub(crate) struct Meta {
    map: MmapRaw,
    header: MetaHeader,
    path: std::path::PathBuf,
    policy: Policy,
    /// The open meta file: `flock` on it serialises changes to the consumer table between
    /// processes (the kernel drops the lock of a process that dies).
    file: File,
    /// Serialises them between the threads of this process, which share `file`'s lock.
    table_lock: Mutex<()>,
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
        let policy = Policy::from_header(&header).map_err(|detail| Error::CorruptHeader {
            path: path.clone(),
            detail,
        })?;
        let map = MmapOptions::new()
            .len(META_FILE_LEN as usize)
            .populate()
            .map_raw(&file)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Meta {
            map,
            header,
            path: path.clone(),
            policy,
            file,
            table_lock: Mutex::new(()),
        })
    }

    /// The retention and back-pressure policy the log was created with.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Positions below this were deleted by retention.
    pub fn retained_from(&self) -> &AtomicU64 {
        &self.layout().wake.0.retained_from
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
        &self.layout().tail.0.tail
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

    /// Takes a free producer slot, or one whose owner process is dead, for this process; with
    /// `exclusive`, also the log itself, for that slot's producer alone (see
    /// [`Meta::claim_exclusivity`]).
    pub fn acquire_producer_slot(&self, exclusive: bool) -> Result<u16> {
        let slot = self.take_producer_slot()?;
        match self.claim_exclusivity(slot, exclusive) {
            Ok(()) => Ok(slot),
            Err(e) => {
                self.release_producer_slot(slot);
                Err(e)
            }
        }
    }

    /// Checks, for a producer that has just taken `slot`, that no exclusive producer holds
    /// the log; with `exclusive`, makes this producer the log's exclusive one, which requires
    /// that no other slot is held by a live producer.
    ///
    /// The two kinds check each other in opposite orders — a producer takes its slot, then
    /// reads the exclusive word; an exclusive one takes the word, then reads every slot — all
    /// sequentially consistent, so of two racing, at least one sees the other and fails.
    /// A dead holder's word is taken over (pids are paired with start times, as in slots).
    fn claim_exclusivity(&self, slot: u16, exclusive: bool) -> Result<()> {
        let word = &self.layout().tail.0.exclusive;
        let (pid, start_time) = clock::this_process();
        let me = owner_word(pid, start_time);
        let mut current = word.load(Ordering::SeqCst);
        loop {
            if current != 0 && owner_alive(current) {
                return Err(Error::ExclusiveProducer {
                    pid: split_owner(current).0,
                });
            }
            let next = if exclusive { me } else { 0 };
            if current == next {
                break;
            }
            match word.compare_exchange(current, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        if !exclusive {
            return Ok(());
        }
        let others = self
            .producers()
            .iter()
            .enumerate()
            .filter(|&(index, other)| {
                let owner = other.owner.load(Ordering::SeqCst);
                index != usize::from(slot) && owner != 0 && owner_alive(owner)
            })
            .count();
        if others > 0 {
            self.release_exclusivity();
            return Err(Error::OtherProducers { count: others });
        }
        Ok(())
    }

    /// The pid of the live process whose exclusive producer holds the log, if any.
    pub fn exclusive_holder(&self) -> Option<u32> {
        let owner = self.layout().tail.0.exclusive.load(Ordering::Acquire);
        (owner != 0 && owner_alive(owner)).then(|| split_owner(owner).0)
    }

    /// Lets go of the log's exclusivity, if this process holds it.
    pub fn release_exclusivity(&self) {
        let (pid, start_time) = clock::this_process();
        let _ = self.layout().tail.0.exclusive.compare_exchange(
            owner_word(pid, start_time),
            0,
            Ordering::SeqCst,
            Ordering::Relaxed,
        );
    }

    fn take_producer_slot(&self) -> Result<u16> {
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
                    // SeqCst: ordered before the read of the exclusive word that follows.
                    .compare_exchange(owner, me, Ordering::SeqCst, Ordering::Relaxed)
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

    /// Gives up a slot whose claim could not be settled (its segment cannot be made: a full
    /// disk) by handing it to the readers as a dead producer's: the owner becomes
    /// [`ABANDONED`], a process that never runs, so a reader pads the claim as soon as it
    /// can map the claim's segment, without waiting for the claim timeout, marks the record
    /// idle, and the slot can be taken again. Only for a producer that will never write again.
    pub fn abandon_producer_slot(&self, index: u16) {
        let (pid, start_time) = clock::this_process();
        let slot = &self.producers()[index as usize];
        let _ = slot.owner.compare_exchange(
            owner_word(pid, start_time),
            ABANDONED,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// Frees the slots of dead producers, whatever their claim records say; returns how many.
    /// Only for recovery, once it has walked every frame up to the tail with no producer
    /// alive: every claim below the tail is then committed or padded, so no record of a dead
    /// producer names anything a reader still needs — including the unresolved records of
    /// producers killed between their `fetch_add` and storing its position, which nothing
    /// else can ever clear.
    pub fn free_dead_producer_slots(&self) -> usize {
        let mut freed = 0;
        for slot in self.producers() {
            let owner = slot.owner.load(Ordering::Acquire);
            if owner == 0 || owner_alive(owner) {
                continue;
            }
            slot.claim.state.store(ClaimRecord::IDLE, Ordering::Release);
            if slot
                .owner
                .compare_exchange(owner, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                freed += 1;
            }
        }
        freed
    }

    /// Marks idle the claim records of dead producers whose claims lie wholly below
    /// `retained_from`: retention deleted their segments, so no reader will ever pad them,
    /// and an idle record is what lets the slot be taken again.
    pub fn forget_dead_claims_below(&self, retained_from: u64) {
        self.forget_dead_claims(|position, len| position + len <= retained_from);
    }

    /// Marks idle the claim record of every dead producer whose claim (`position`, `len`)
    /// `forget` picks, unless the record changed meanwhile.
    fn forget_dead_claims(&self, forget: impl Fn(u64, u64) -> bool) {
        for slot in self.producers() {
            let owner = slot.owner.load(Ordering::Acquire);
            if owner == 0 {
                continue;
            }
            if let Claimed::At { position, len } = slot.claim.read() {
                if forget(position, len) && !owner_alive(owner) {
                    let _ = slot.claim.state.compare_exchange(
                        position | 1,
                        ClaimRecord::IDLE,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                }
            }
        }
    }

    /// What retention must not delete for the producers' sake: the lowest position of a
    /// claim in flight of a live producer, `Ok(None)` if there is none, and `Err(())` if a
    /// live producer has claimed but not yet recorded where (its claim could lie anywhere
    /// below the tail: retention waits for the next pass). Dead producers hold nothing back:
    /// what they left is padding-to-be, which nobody needs once deleted.
    pub fn lowest_live_claim(&self) -> std::result::Result<Option<u64>, ()> {
        let mut lowest = None;
        for slot in self.producers() {
            let owner = slot.owner.load(Ordering::Acquire);
            if owner == 0 {
                continue;
            }
            let mut claimed = slot.claim.read();
            // Unresolved lasts two instructions in a running producer: look again briefly.
            for _ in 0..100 {
                if claimed != Claimed::Unresolved {
                    break;
                }
                std::thread::yield_now();
                claimed = slot.claim.read();
            }
            match claimed {
                Claimed::Idle => {}
                Claimed::Unresolved => {
                    if self.is_me_or_alive(owner) {
                        return Err(());
                    }
                }
                Claimed::At { position, .. } => {
                    if self.is_me_or_alive(owner) {
                        lowest = Some(lowest.map_or(position, |l: u64| l.min(position)));
                    }
                }
            }
        }
        Ok(lowest)
    }

    fn is_me_or_alive(&self, owner: u64) -> bool {
        let (pid, start_time) = clock::this_process();
        owner == owner_word(pid, start_time) || owner_alive(owner)
    }

    // ---------------------------------------------------------------------------------------
    // The consumer table: named durable cursors.

    fn cursor_entries(&self) -> &[CursorEntry; CONSUMER_SLOTS] {
        &self.layout().cursors
    }

    /// Takes the table lock: this process's mutex, then an exclusive `flock` on the meta
    /// file, which the kernel releases if the process dies holding it.
    fn lock_table(&self) -> Result<TableLock<'_>> {
        let guard = self.table_lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            // SAFETY: flock takes an open descriptor (owned by `self.file`) and a flag.
            let rc = unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(TableLock {
                    file: &self.file,
                    _guard: guard,
                });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Error::io(&self.path, e));
            }
        }
    }

    /// Takes the durable cursor `name` for this process: the existing entry of that name,
    /// or a new one starting at `start()`. Fails if a live process holds it already.
    pub fn take_cursor(
        &self,
        name: &str,
        start: impl FnOnce() -> Result<u64>,
    ) -> Result<TakenCursor> {
        check_cursor_name(name)?;
        let wanted = name_words(name);
        let _lock = self.lock_table()?;
        let me = {
            let (pid, start_time) = clock::this_process();
            owner_word(pid, start_time)
        };
        let entries = self.cursor_entries();
        // Under the lock no entry's name or state changes: plain reads are consistent.
        let found = entries.iter().position(|entry| {
            entry.state.load(Ordering::Acquire) & 1 == 1 && entry.name_words() == wanted
        });
        if let Some(index) = found {
            let entry = &entries[index];
            let holder = entry.holder.load(Ordering::Acquire);
            if holder != 0 && (holder == me || owner_alive(holder)) {
                return Err(Error::ConsumerInUse {
                    name: name.to_string(),
                    pid: split_owner(holder).0,
                });
            }
            // Taking over from nobody, or from a dead holder; releases race only from `me`.
            if entry
                .holder
                .compare_exchange(holder, me, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return Err(Error::ConsumerInUse {
                    name: name.to_string(),
                    pid: split_owner(entry.holder.load(Ordering::Acquire)).0,
                });
            }
            return Ok(TakenCursor {
                index,
                position: entry.position.load(Ordering::Acquire),
                created: false,
            });
        }
        let Some(index) = entries
            .iter()
            .position(|entry| entry.state.load(Ordering::Acquire) & 1 == 0)
        else {
            return Err(Error::NoConsumerSlot {
                slots: CONSUMER_SLOTS as u32,
            });
        };
        let position = start()?;
        let entry = &entries[index];
        for (word, value) in entry.name.iter().zip(wanted) {
            word.store(value, Ordering::Relaxed);
        }
        entry.position.store(position, Ordering::Relaxed);
        entry.holder.store(me, Ordering::Relaxed);
        entry.updated_ns.store(clock::now_ns(), Ordering::Relaxed);
        let state = entry.state.load(Ordering::Relaxed);
        entry
            .state
            .store(((state >> 1) + 1) << 1 | 1, Ordering::Release);
        Ok(TakenCursor {
            index,
            position,
            created: true,
        })
    }

    /// Records `position` as where the cursor at `index` resumes: two plain stores, no
    /// lock and no system call.
    #[inline]
    pub fn commit_cursor(&self, index: usize, position: u64) {
        let entry = &self.cursor_entries()[index];
        entry.position.store(position, Ordering::Release);
        // The coarse clock: a consumer may commit after every batch, and this time is only
        // shown to people (`CursorInfo::committed_ns`, `logbus dump`).
        entry
            .updated_ns
            .store(clock::coarse_now_ns(), Ordering::Relaxed);
    }

    /// Lets go of a cursor this process holds; its entry and position stay.
    pub fn release_cursor(&self, index: usize) {
        let (pid, start_time) = clock::this_process();
        let _ = self.cursor_entries()[index].holder.compare_exchange(
            owner_word(pid, start_time),
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// Deletes the entry at `index`, which this process holds (a cursor made a moment ago
    /// whose start turned out invalid).
    pub fn drop_new_cursor(&self, index: usize) {
        if let Ok(_lock) = self.lock_table() {
            let entry = &self.cursor_entries()[index];
            let state = entry.state.load(Ordering::Relaxed);
            entry
                .state
                .store(((state >> 1) + 1) << 1, Ordering::Release);
            entry.holder.store(0, Ordering::Release);
        }
    }

    /// Deletes the durable cursor `name`; false if there is none. Fails if a live process
    /// holds it.
    pub fn remove_cursor(&self, name: &str) -> Result<bool> {
        check_cursor_name(name)?;
        let wanted = name_words(name);
        let _lock = self.lock_table()?;
        let Some(entry) = self.cursor_entries().iter().find(|entry| {
            entry.state.load(Ordering::Acquire) & 1 == 1 && entry.name_words() == wanted
        }) else {
            return Ok(false);
        };
        let holder = entry.holder.load(Ordering::Acquire);
        if holder != 0 && self.is_me_or_alive(holder) {
            return Err(Error::ConsumerInUse {
                name: name.to_string(),
                pid: split_owner(holder).0,
            });
        }
        let state = entry.state.load(Ordering::Relaxed);
        entry
            .state
            .store(((state >> 1) + 1) << 1, Ordering::Release);
        entry.holder.store(0, Ordering::Release);
        Ok(true)
    }

    /// Every durable cursor, as the table shows it now.
    pub fn cursors(&self) -> Vec<CursorView> {
        let mut views = Vec::new();
        for (index, entry) in self.cursor_entries().iter().enumerate() {
            // A seqlock read: the name is valid if the state did not change around it.
            for _ in 0..16 {
                let before = entry.state.load(Ordering::Acquire);
                if before & 1 == 0 {
                    break;
                }
                let words = entry.name_words();
                let position = entry.position.load(Ordering::Acquire);
                let holder = entry.holder.load(Ordering::Acquire);
                let updated_ns = entry.updated_ns.load(Ordering::Acquire);
                fence(Ordering::Acquire);
                if entry.state.load(Ordering::Relaxed) != before {
                    continue;
                }
                let bytes: [u8; MAX_CONSUMER_NAME_LEN] = bytemuck::cast(words);
                let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                views.push(CursorView {
                    index,
                    name: String::from_utf8_lossy(&bytes[..len]).into_owned(),
                    position,
                    holder: (holder != 0).then(|| split_owner(holder).0),
                    alive: holder != 0 && self.is_me_or_alive(holder),
                    updated_ns,
                });
                break;
            }
        }
        views
    }

    /// The committed positions of every durable cursor, for retention: no allocation, no
    /// system call.
    pub fn cursor_positions(&self) -> impl Iterator<Item = u64> + '_ {
        self.cursor_entries()
            .iter()
            .filter(|entry| entry.state.load(Ordering::Acquire) & 1 == 1)
            .map(|entry| entry.position.load(Ordering::Acquire))
    }

    /// The lowest committed position of a durable cursor that a live process holds, for
    /// bounded mode. Only cursors more than `limit` bytes behind `tail` (the ones that would
    /// hold producers back) are checked for a live holder, with one read of `/proc` each;
    /// the others count as they are, which can only make the producer look again sooner.
    pub fn slowest_live_cursor(&self, tail: u64, limit: u64) -> Option<u64> {
        let mut slowest: Option<u64> = None;
        for entry in self.cursor_entries() {
            if entry.state.load(Ordering::Acquire) & 1 == 0 {
                continue;
            }
            let holder = entry.holder.load(Ordering::Acquire);
            if holder == 0 {
                continue;
            }
            let position = entry.position.load(Ordering::Acquire);
            if slowest.is_some_and(|s| s <= position) {
                continue;
            }
            if tail.saturating_sub(position) > limit && !self.is_me_or_alive(holder) {
                continue;
            }
            slowest = Some(position);
        }
        slowest
    }
}

/// The lock on the consumer table; unlocks on drop.
struct TableLock<'a> {
    file: &'a File,
    _guard: MutexGuard<'a, ()>,
}

impl Drop for TableLock<'_> {
    fn drop(&mut self) {
        // SAFETY: as in `lock_table`.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The owner word of a slot handed to readers by [`Meta::abandon_producer_slot`]: pid 0,
/// which no user process has, so it is never alive.
const ABANDONED: u64 = 1 << 32;

/// Longest name of a durable cursor, in bytes of UTF-8.
pub const MAX_CONSUMER_NAME_LEN: usize = 32;

/// One entry of the consumer table: a named durable cursor. 64 bytes; see `docs/FORMAT.md`.
#[repr(C)]
pub(crate) struct CursorEntry {
    /// Bit 0: in use (the name is valid). The bits above count the entry's changes, so that a
    /// reader without the table lock can tell that the name changed while it read it.
    state: AtomicU64,
    /// The committed position: where the next holder of the name resumes.
    position: AtomicU64,
    /// Owner word (as in a producer slot) of the process whose consumer holds the cursor, or
    /// 0 if none does.
    holder: AtomicU64,
    /// When the position was last committed, nanoseconds since the Unix epoch.
    updated_ns: AtomicU64,
    /// The name: UTF-8 bytes, zero-padded to 32.
    name: [AtomicU64; 4],
}

impl CursorEntry {
    fn name_words(&self) -> [u64; 4] {
        [0, 1, 2, 3].map(|i| self.name[i].load(Ordering::Relaxed))
    }
}

/// A durable cursor just taken by [`Meta::take_cursor`].
pub(crate) struct TakenCursor {
    pub index: usize,
    pub position: u64,
    pub created: bool,
}

/// A durable cursor as [`Meta::cursors`] read it.
pub(crate) struct CursorView {
    #[allow(dead_code)]
    pub index: usize,
    pub name: String,
    pub position: u64,
    pub holder: Option<u32>,
    pub alive: bool,
    pub updated_ns: u64,
}

fn check_cursor_name(name: &str) -> Result<()> {
    let invalid = |detail: &str| Error::InvalidConsumerName {
        name: name.to_string(),
        detail: detail.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_CONSUMER_NAME_LEN {
        return Err(invalid("it is longer than 32 bytes"));
    }
    if name.bytes().any(|b| b == 0) {
        return Err(invalid("it contains a NUL byte"));
    }
    Ok(())
}

/// A name as the table stores it: zero-padded to 32 bytes, as four words whose bytes in
/// memory are the name's.
fn name_words(name: &str) -> [u64; 4] {
    let mut bytes = [0u8; MAX_CONSUMER_NAME_LEN];
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    bytemuck::cast(bytes)
}

/// The retention and back-pressure policy of a log, kept in the last 64 bytes of the meta
/// header (its `reserved` field) with a checksum of its own, since the header's checksum
/// covers bytes 0..60 only. All zero: no policy, which is what logs made before policies
/// existed hold. A field of zero is "no limit" (or, for `bounded_lag`, "off").
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Policy {
    /// Delete the oldest segments while the segment files take more bytes than this.
    pub retain_bytes: u64,
    /// Delete the oldest segments while there are more segment files than this.
    pub retain_segments: u64,
    /// Delete segments whose newest message is older than this, in nanoseconds.
    pub retain_age_ns: u64,
    /// Durable cursors hold retention back only while they are at most this many bytes
    /// behind the tail.
    pub cursor_hold_bytes: u64,
    /// Bounded mode: producers are refused while the slowest live durable cursor is more
    /// than this many bytes behind the tail.
    pub bounded_lag: u64,
    /// Zero.
    pub reserved: [u8; 20],
    /// CRC32C of the 60 bytes before it; 0 when every other byte is 0.
    pub checksum: u32,
}
const _: () = assert!(std::mem::size_of::<Policy>() == 64);

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let limit = |value: u64| (value != 0).then_some(value);
        f.debug_struct("Policy")
            .field("retain_bytes", &limit(self.retain_bytes))
            .field("retain_segments", &limit(self.retain_segments))
            .field(
                "retain_age",
                &limit(self.retain_age_ns).map(std::time::Duration::from_nanos),
            )
            .field("cursor_hold_limit", &limit(self.cursor_hold_bytes))
            .field("bounded", &limit(self.bounded_lag))
            .finish()
    }
}

impl Policy {
    fn compute_checksum(&self) -> u32 {
        format::checksum(&bytemuck::bytes_of(self)[..60])
    }

    /// The policy in a header's reserved bytes, checked.
    pub fn from_header(header: &MetaHeader) -> std::result::Result<Policy, String> {
        let policy: Policy = bytemuck::cast(header.reserved);
        if policy == Policy::default() {
            return Ok(policy);
        }
        if policy.checksum != policy.compute_checksum() {
            return Err(format!(
                "policy checksum {:#010x} does not match its contents ({:#010x})",
                policy.checksum,
                policy.compute_checksum()
            ));
        }
        if policy.reserved != [0; 20] {
            return Err("the policy has fields this version does not know".into());
        }
        Ok(policy)
    }

    /// The 64 bytes to store in a header's reserved field, checksum included.
    pub fn to_header_bytes(mut self) -> [u8; 64] {
        self.checksum = 0;
        if self != Policy::default() {
            self.checksum = self.compute_checksum();
        }
        bytemuck::cast(self)
    }

    /// Whether any retention limit is set.
    pub fn retains(&self) -> bool {
        self.retain_bytes != 0 || self.retain_segments != 0 || self.retain_age_ns != 0
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

pub(crate) fn split_owner(owner: u64) -> (u32, u32) {
    (owner as u32, (owner >> 32) as u32)
}

/// Whether the process an owner word names still runs: the pid exists and has the same
/// start time (so a reused pid is another process).
pub(crate) fn owner_alive(owner: u64) -> bool {
    let (pid, start_low) = split_owner(owner);
    clock::process_start_time(pid).is_some_and(|start| start as u32 == start_low)
}

pub(crate) fn validate_header(header: &MetaHeader, path: &Path, len: u64) -> Result<()> {
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
