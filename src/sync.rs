//! The atomics facade: the one place that decides whether the concurrency protocol runs on
//! real atomics and a real futex, or on loom's models of them.
//!
//! Built normally, this re-exports `std`'s atomics and talks to the kernel. Built with
//! `RUSTFLAGS="--cfg loom"`, the same names are loom's, the futex is modelled with a loom
//! mutex and condition variable (the kernel also checks the futex word under a lock), and both
//! halves of the asymmetric barrier become `SeqCst` fences — the symmetric form whose
//! guarantee `membarrier(2)` provides asymmetrically (see [`light_barrier`]).

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicI32, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub use std::sync::atomic::{fence, AtomicI32, AtomicU32, AtomicU64, Ordering};

use std::time::Duration;

/// How a producer orders its commit store before its read of the waiter count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarrierKind {
    /// The process is registered for `MEMBARRIER_CMD_GLOBAL_EXPEDITED`: a compiler fence is
    /// enough, because a consumer that goes to sleep forces a full barrier on this process.
    Membarrier,
    /// A full `SeqCst` fence on every commit (the kernel lacks membarrier, or under loom).
    Fence,
}

/// The producer's half of the store→load barrier between "commit" and "is anyone asleep?".
#[inline(always)]
pub fn light_barrier(kind: BarrierKind) {
    #[cfg(loom)]
    {
        let _ = kind;
        fence(Ordering::SeqCst);
    }
    #[cfg(not(loom))]
    match kind {
        BarrierKind::Membarrier => std::sync::atomic::compiler_fence(Ordering::SeqCst),
        BarrierKind::Fence => fence(Ordering::SeqCst),
    }
}

/// The sleeper's half: after registering as a waiter and before re-checking for data.
///
/// Returns `false` when the kernel refused the membarrier although producers may rely on it;
/// the caller must then sleep in short slices so that a wake-up is late, never lost.
pub fn heavy_barrier() -> bool {
    fence(Ordering::SeqCst);
    #[cfg(loom)]
    {
        true
    }
    #[cfg(not(loom))]
    {
        if !membarrier_supported() {
            // No producer on this kernel can have registered, so every one uses a full fence.
            return true;
        }
        // SAFETY: membarrier takes no pointers; an error is reported through the return value.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_GLOBAL_EXPEDITED,
                0 as libc::c_uint,
                0 as libc::c_int,
            )
        };
        rc == 0
    }
}

/// Whether a reader's [`heavy_barrier`] orders its stores before its loads against every
/// producer: true where `membarrier` works for this process, or where the kernel has none (so
/// that every producer uses a full fence). False where the call is refused to this process
/// alone (a seccomp filter, say): a producer elsewhere may rely on it. A reader revokes a live
/// claim only when this holds — unlike a late wake-up, a lost race there is not bounded.
pub fn barrier_orders_producers() -> bool {
    #[cfg(loom)]
    {
        true
    }
    #[cfg(not(loom))]
    {
        membarrier_supported() || kernel_lacks_membarrier()
    }
}

#[cfg(not(loom))]
fn kernel_lacks_membarrier() -> bool {
    use std::sync::OnceLock;
    static LACKS: OnceLock<bool> = OnceLock::new();
    *LACKS.get_or_init(|| {
        // SAFETY: a query takes no pointers and only returns a bit mask or -1.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_QUERY,
                0 as libc::c_uint,
                0 as libc::c_int,
            )
        };
        rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS)
    })
}

#[cfg(not(loom))]
const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
#[cfg(not(loom))]
const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
#[cfg(not(loom))]
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

#[cfg(not(loom))]
fn membarrier_supported() -> bool {
    use std::sync::OnceLock;
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // SAFETY: a query takes no pointers and only returns a bit mask or -1.
        let mask = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_QUERY,
                0 as libc::c_uint,
                0 as libc::c_int,
            )
        };
        let needed =
            (MEMBARRIER_CMD_GLOBAL_EXPEDITED | MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) as i64;
        mask >= 0 && (mask as i64 & needed) == needed
    })
}

/// Registers this process so that sleeping consumers can order its commits with one
/// `membarrier` call; done once per process when its first producer is made.
pub fn producer_barrier_kind() -> BarrierKind {
    #[cfg(loom)]
    {
        BarrierKind::Fence
    }
    #[cfg(not(loom))]
    {
        use std::sync::OnceLock;
        static KIND: OnceLock<BarrierKind> = OnceLock::new();
        *KIND.get_or_init(|| {
            if !membarrier_supported() {
                return BarrierKind::Fence;
            }
            // SAFETY: registration takes no pointers; failure leaves the process unregistered.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_membarrier,
                    MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
                    0 as libc::c_uint,
                    0 as libc::c_int,
                )
            };
            if rc == 0 {
                BarrierKind::Membarrier
            } else {
                BarrierKind::Fence
            }
        })
    }
}

/// Sleeps while `word` still holds `expected`, at most `timeout`. Process-shared: no
/// `FUTEX_PRIVATE_FLAG`, because producers and consumers live in different processes.
#[cfg(not(loom))]
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let spec = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let spec_ptr = spec
        .as_ref()
        .map_or(std::ptr::null(), |s| s as *const libc::timespec);
    // SAFETY: `word` is a live, 4-byte aligned u32 for the duration of the call, and `spec_ptr`
    // is null or points at a timespec on this stack frame. EINTR, EAGAIN and ETIMEDOUT are all
    // fine: every caller re-checks its condition in a loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            spec_ptr,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every thread of every process sleeping on `word`.
#[cfg(not(loom))]
pub fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE only reads the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

#[cfg(loom)]
mod loom_futex {
    use loom::sync::{Condvar, Mutex};

    pub struct Futex {
        pub lock: Mutex<()>,
        pub sleepers: Condvar,
    }

    loom::lazy_static! {
        pub static ref FUTEX: Futex = Futex { lock: Mutex::new(()), sleepers: Condvar::new() };
    }
}

/// The loom model of `FUTEX_WAIT`: the value check and the going to sleep happen under the
/// lock that `futex_wake_all` takes, as in the kernel. A timeout is not modelled, so a lost
/// wake-up shows as a deadlock that loom reports.
#[cfg(loom)]
pub fn futex_wait(word: &AtomicU32, expected: u32, _timeout: Option<Duration>) {
    let guard = loom_futex::FUTEX.lock.lock().unwrap();
    if word.load(Ordering::SeqCst) != expected {
        return;
    }
    drop(loom_futex::FUTEX.sleepers.wait(guard).unwrap());
}

/// The loom model of `FUTEX_WAKE` for every sleeper.
#[cfg(loom)]
pub fn futex_wake_all(_word: &AtomicU32) {
    let _guard = loom_futex::FUTEX.lock.lock().unwrap();
    loom_futex::FUTEX.sleepers.notify_all();
}
