//! Wall-clock timestamps and process identities (pid plus start time).

/// Nanoseconds since the Unix epoch from `CLOCK_REALTIME`, read through the vDSO: no system
/// call where the clock source is the TSC, as it is on this class of machine.
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
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

/// This process's pid and start time, read once.
pub fn this_process() -> (u32, u64) {
    use std::sync::OnceLock;
    static ME: OnceLock<(u32, u64)> = OnceLock::new();
    *ME.get_or_init(|| {
        let pid = std::process::id();
        (pid, process_start_time(pid).unwrap_or(0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
