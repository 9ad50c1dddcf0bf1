//! Ctrl-C (SIGINT) and SIGTERM as a flag that long waits look at, so that a subcommand that
//! is interrupted still stops its child processes and deletes what it made (a demo log in
//! /dev/shm holds hundreds of MiB of memory until it is deleted).

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// From now on SIGINT and SIGTERM set the flag that [`interrupted`] reads, instead of
/// ending the process. signal-hook installs its handler with SA_RESTART, so interrupted
/// system calls are restarted; child processes started later get the default behaviour back
/// at exec.
pub fn catch_interrupts() -> Result<()> {
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, &INTERRUPTED)
            .with_context(|| format!("catching signal {signal}"))?;
    }
    Ok(())
}

/// True once SIGINT or SIGTERM has arrived (after [`catch_interrupts`]).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
