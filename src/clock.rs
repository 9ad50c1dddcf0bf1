//! Wall-clock timestamps and process identities (pid plus start time).

use std::sync::OnceLock;

/// Nanoseconds since the Unix epoch from `CLOCK_REALTIME`, read through the vDSO: no system
/// call where the clock source is the TSC, as it is on this class of machine.
#[inline]
pub fn now_ns() -> u64 {
    realtime_ns(libc::CLOCK_REALTIME)
}

/// Nanoseconds since the Unix epoch from `CLOCK_REALTIME_COARSE`: the time of the last clock
/// tick (a few milliseconds' resolution), read from the vDSO's data without the TSC, at about
/// a quarter of [`now_ns`]'s price. For times that only a person reads, stamped often.
#[inline]
pub fn coarse_now_ns() -> u64 {
    realtime_ns(libc::CLOCK_REALTIME_COARSE)
}

/// Nanoseconds since the Unix epoch from `clock`, one of the realtime clocks.
#[inline(always)]
fn realtime_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both realtime clocks exist on Linux, and a
    // failure would leave `ts` zero, not undefined.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// How long a [`FrameClock`] extrapolates from the TSC before it reads `CLOCK_REALTIME`
/// again: a millisecond keeps it within a fraction of a microsecond of the system clock
/// (even with the TSC's rate off by 100 ppm), for one 30 ns read per millisecond.
const REANCHOR_NS: u64 = 1_000_000;

/// The producers' clock for frame timestamps: nanoseconds since the Unix epoch, like
/// [`now_ns`], at about a third of its price.
///
/// On this class of machine `clock_gettime` through the vDSO costs about 30 ns (an ordered TSC
/// read, a sequence lock, a scaling) — as much as the rest of an `offer` together. This clock
/// reads the TSC unordered through `quanta` (which calibrates it once per process, and falls
/// back to the monotonic clock where the TSC is not invariant), about 11 ns, and adds the
/// scaled ticks since its anchor, a `CLOCK_REALTIME` reading it takes again every
/// millisecond. Timestamps therefore follow the system clock, adjustments included, to
/// within the TSC's drift over one millisecond; like `CLOCK_REALTIME` itself they are not
/// promised to be monotonic.
pub(crate) struct FrameClock {
    ticks: quanta::Clock,
    anchor_ticks: u64,
    anchor_ns: u64,
}

/// The process's TSC clock, calibrated once (by `quanta`, on first use): raw readings of
/// about 11 ns, for measuring short intervals on hot paths.
pub(crate) fn ticks() -> quanta::Clock {
    static TICKS: OnceLock<quanta::Clock> = OnceLock::new();
    TICKS.get_or_init(quanta::Clock::new).clone()
}

impl FrameClock {
    pub fn new() -> FrameClock {
        let mut clock = FrameClock {
            ticks: ticks(),
            anchor_ticks: 0,
            anchor_ns: 0,
        };
        clock.reanchor();
        clock
    }

    /// Nanoseconds since the Unix epoch.
    #[inline(always)]
    pub fn now_ns(&mut self) -> u64 {
        let raw = self.ticks.raw();
        let elapsed = self.ticks.delta_as_nanos(self.anchor_ticks, raw);
        // A count behind the anchor (another CPU's TSC, a resume) would read as no time at
        // all, for as long as it stays behind: take a new anchor instead.
        if elapsed >= REANCHOR_NS || raw < self.anchor_ticks {
            return self.reanchor();
        }
        self.anchor_ns + elapsed
    }

    #[cold]
    #[inline(never)]
    fn reanchor(&mut self) -> u64 {
        self.anchor_ticks = self.ticks.raw();
        self.anchor_ns = now_ns();
        self.anchor_ns
    }
}

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), or `None` if there is no such process. With the pid it names one
/// process for good: a reused pid comes with another start time.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; it ends at the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 on; the start time is field 22.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// This process's pid and start time, read once per process: a child made by `fork` has a
/// pid of its own, and must not act under its parent's identity (release its slots, say).
pub fn this_process() -> (u32, u64) {
    static ME: std::sync::Mutex<Option<(u32, u64)>> = std::sync::Mutex::new(None);
    let pid = std::process::id();
    let mut me = ME.lock().unwrap_or_else(|e| e.into_inner());
    match *me {
        Some((known, start)) if known == pid => (known, start),
        _ => {
            let found = (pid, process_start_time(pid).unwrap_or(0));
            *me = Some(found);
            found
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_clock_follows_the_system_clock() {
        let mut clock = FrameClock::new();
        for _ in 0..50 {
            let before = now_ns();
            let frame = clock.now_ns();
            let after = now_ns();
            // Within the extrapolation's error (well under 100 µs) of the readings around it.
            let slack = 100_000;
            assert!(
                frame + slack >= before && frame <= after + slack,
                "frame clock {frame} outside [{before}, {after}] by more than {slack} ns"
            );
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
    }

    #[test]
    fn the_coarse_clock_is_the_system_clock_to_within_its_tick() {
        for _ in 0..20 {
            let before = now_ns();
            let coarse = coarse_now_ns();
            let after = now_ns();
            // The last tick: not after the reading that follows, and at most a tick (4 ms at
            // HZ=250, the coarsest common setting; 50 ms of slack for a preempted test) before.
            assert!(coarse <= after, "coarse {coarse} after {after}");
            assert!(
                coarse + 50_000_000 >= before,
                "coarse {coarse} far before {before}"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn start_time_names_a_live_process_and_a_reaped_child_has_none() {
        let (pid, start) = this_process();
        assert!(start > 0);
        assert_eq!(process_start_time(pid), Some(start));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let child_pid = child.id();
        child.wait().unwrap();
        assert!(process_start_time(child_pid).is_none());
    }
}
