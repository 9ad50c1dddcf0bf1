//! The segment preparer: one helper thread per open log in each process that creates and maps
//! segments before producers and consumers reach them, and unmaps the ones they leave behind.
//!
//! It also applies the log's retention policy each time it makes a segment for a producer
//! (rotation), so that deleting old segments costs producers nothing either.
//!
//! Creating a segment (`fallocate` of its whole capacity) and pre-faulting a mapping of it
//! cost milliseconds for large segments, and unmapping one costs about as much again; done
//! by the producer or consumer that enters or leaves a segment, that is a stall on
//! its hot path. Here it happens on a thread of its own. The work is advisory: whoever needs
//! a segment that is not ready yet maps it itself, so a slow, failed or absent preparer costs
//! time, never correctness.

use crate::log::Shared;
use crate::segment::{Prefault, Segment};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

/// Prepared segments kept mapped until a handle picks them up: enough for a producer and a
/// consumer of the same process asking for different segments at once (in a log that
/// recycles, only those less than two behind the latest request: see `run`).
const HELD_SEGMENTS: usize = 4;

pub(crate) struct Preparer {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    work: Condvar,
    /// Signalled each time the thread finishes a request (see [`Preparer::wait_idle`]).
    idle: Condvar,
}

#[derive(Default)]
struct State {
    /// Segments to map, and whether to create them if they do not exist.
    requests: VecDeque<(u64, bool)>,
    /// Segments a handle has left; dropping the last reference unmaps them.
    retired: Vec<Arc<Segment>>,
    /// The segments prepared last, kept mapped so that the handle that asked finds them.
    held: VecDeque<Arc<Segment>>,
    /// The process the thread was started in; a forked child has no such thread.
    thread_pid: Option<u32>,
    /// Whether the log recycles its segments: then prepared segments well behind the
    /// handles are let go early (see `run`).
    recycles: bool,
    /// A request taken and not finished yet.
    working: bool,
    shutdown: bool,
}

/// How long dropping a handle waits at most for the preparer's work in flight.
const IDLE_WAIT: Duration = Duration::from_secs(5);

impl Preparer {
    pub fn new() -> Self {
        Preparer {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                idle: Condvar::new(),
            }),
        }
    }

    /// Starts this process's preparer thread if it is not running yet, so that the first
    /// request on a hot path neither spawns a thread nor allocates.
    pub fn start(&self, shared: &Arc<Shared>) {
        let mut state = self.lock();
        self.ensure_thread(&mut state, shared);
    }

    /// Asks for segment `index` to be mapped (and, with `create`, created) soon.
    pub fn prepare(&self, shared: &Arc<Shared>, index: u64, create: bool) {
        let mut state = self.lock();
        if !self.ensure_thread(&mut state, shared) {
            return; // Nobody to hand it to: the caller maps the segment when it gets there.
        }
        if !state.requests.contains(&(index, create)) {
            state.requests.push_back((index, create));
        }
        drop(state);
        self.inner.work.notify_one();
    }

    /// Waits until this process's preparer thread has no request in flight or queued, so that
    /// once the last handle has gone, no file of the log is being made: the directory can be
    /// removed at once. Bounded (a few seconds at most), so a stuck file system cannot hang
    /// a drop.
    pub fn wait_idle(&self) {
        let mut state = self.lock();
        if state.thread_pid != Some(std::process::id()) {
            return;
        }
        let deadline = Instant::now() + IDLE_WAIT;
        while state.working || !state.requests.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            state = self
                .inner
                .idle
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Hands over a segment reference that a handle no longer needs, so that the unmapping
    /// (if it is the last reference) happens on the preparer's thread.
    pub fn retire(&self, shared: &Arc<Shared>, segment: Arc<Segment>) {
        let mut state = self.lock();
        // A consumer-only process may never have asked for a segment ahead; it still should
        // not unmap on its reading thread.
        if !self.ensure_thread(&mut state, shared) {
            drop(state);
            drop(segment); // No thread to do it: unmap now.
            return;
        }
        state.retired.push(segment);
        drop(state);
        self.inner.work.notify_one();
    }

    /// Hands back, now, the prepared segments below `retained_from` (retention deleted or
    /// retired them) and those waiting to be unmapped, so that the caller can let go of them
    /// at once: a producer that found the file system full retries right after, and a
    /// recycler needs this process's mappings of the file it retires parked.
    pub fn forget_below(&self, retained_from: u64) -> Vec<Arc<Segment>> {
        let mut state = self.lock();
        let (mut gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut state.held)
            .into_iter()
            .partition(|segment| segment.base_position() < retained_from);
        state.held = kept.into();
        // Drained, not taken: the vector keeps its room for later hand-overs.
        gone.append(&mut state.retired);
        gone
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the thread on first use in this process; false if it cannot run.
    fn ensure_thread(&self, state: &mut State, shared: &Arc<Shared>) -> bool {
        let pid = std::process::id();
        if state.thread_pid == Some(pid) {
            return true;
        }
        let inner = self.inner.clone();
        let log = Arc::downgrade(shared);
        let spawned = std::thread::Builder::new()
            .name("logbus-prepare".into())
            .spawn(move || run(&inner, &log));
        // Clear what a parent process queued before a fork: its thread is not here.
        *state = State::default();
        if spawned.is_ok() {
            state.thread_pid = Some(pid);
            state.recycles = shared.recycles;
            // Room for the few requests and retirements in flight at a time, so that
            // handing one over allocates nothing.
            state.requests.reserve(2 * HELD_SEGMENTS);
            state.retired.reserve(2 * HELD_SEGMENTS);
        }
        spawned.is_ok()
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        // No join: the last reference to the log may be dropped on the preparer thread itself.
        self.lock().shutdown = true;
        self.inner.work.notify_one();
    }
}

/// Marks the request in flight finished, for [`Preparer::wait_idle`].
fn finished(inner: &Inner) {
    let mut state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
    state.working = false;
    inner.idle.notify_all();
}

fn run(inner: &Inner, log: &Weak<Shared>) {
    // Once per process and log, off every handle's path: what dead creators left behind.
    if let Some(shared) = log.upgrade() {
        crate::segment::remove_stale_temporaries(&shared.dir);
    }
    // Swapped with the shared list, so that both keep their room and a hand-over allocates
    // nothing.
    let mut retired = Vec::with_capacity(2 * HELD_SEGMENTS);
    let mut state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        while state.requests.is_empty() && state.retired.is_empty() && !state.shutdown {
            state = inner.work.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.shutdown {
            return;
        }
        std::mem::swap(&mut retired, &mut state.retired);
        let request = state.requests.pop_front();
        if let Some((index, _)) = request.filter(|_| state.recycles) {
            // A handle asks for the segment after the one it has entered: those two or more
            // before it were picked up long since, or passed by (or are for a handle of this
            // process far behind the one asking, which then maps its own), and a mapping kept
            // of them here would keep retention from recycling them (see `segment`).
            let mut i = 0;
            while i < state.held.len() {
                if state.held[i].index() + 2 <= index {
                    retired.extend(state.held.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        state.working = request.is_some();
        drop(state);
        // Parked (or unmapped) where this was their last reference.
        match log.upgrade() {
            Some(shared) if !retired.is_empty() => {
                for segment in retired.drain(..) {
                    shared.parking.park(segment);
                }
            }
            _ => retired.clear(),
        }
        if let Some((index, create)) = request {
            // Hold the log only while working: a preparer waiting with a strong reference
            // would keep a dropped log alive forever.
            let Some(shared) = log.upgrade() else {
                finished(inner);
                return;
            };
            // A failure (a full disk, say) is left for the claim that needs the segment to
            // report; this is only the early attempt.
            // A segment made ahead is for a producer (or mirror) of this process to write in.
            let prefault = if create {
                Prefault::Write
            } else {
                Prefault::Read
            };
            let prepared = shared.segment(index, create, prefault).ok().flatten();
            if create && shared.meta.policy().retains() {
                // Rotation: a new segment is made (or was made by another process) as the
                // tail enters the one before. Like the creation, a failure is
                // left for the next pass (or `Log::apply_retention`) to meet again.
                let _ = shared.apply_retention();
            }
            drop(shared);
            state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            state.working = false;
            inner.idle.notify_all();
            if let Some(segment) = prepared {
                if state.held.len() == HELD_SEGMENTS {
                    let oldest = state.held.pop_front();
                    state.retired.extend(oldest);
                }
                state.held.push_back(segment);
            }
        } else {
            state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
        }
    }
}
