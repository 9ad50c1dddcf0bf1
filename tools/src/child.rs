//! Child processes that run this same program with a hidden subcommand, and the line
//! protocol they answer in.
//!
//! A child writes one line per event to its standard output: a tag, then `key=value` fields
//! (`result sent=5000000 elapsed_ns=812345678`). The parent reads those lines through a
//! thread per child, so it can wait on several children with deadlines. A [`Worker`] that is
//! dropped before it was reaped is killed and reaped: no child outlives an error.

use crate::signals;
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// One line of a child's report: `tag key=value key=value ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The first word.
    pub tag: String,
    /// Everything after the tag, as written.
    pub rest: String,
}

impl Line {
    /// Splits a line into its tag and the rest.
    pub fn parse(line: &str) -> Line {
        let line = line.trim_end_matches(['\n', '\r']);
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        Line {
            tag: tag.to_string(),
            rest: rest.to_string(),
        }
    }

    /// The value of field `key`, parsed.
    pub fn get<T: FromStr>(&self, key: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let value = self
            .rest
            .split_whitespace()
            .find_map(|field| field.strip_prefix(key)?.strip_prefix('='))
            .with_context(|| {
                format!("no field '{key}' in the line '{} {}'", self.tag, self.rest)
            })?;
        value
            .parse()
            .map_err(|e| anyhow!("field '{key}={value}': {e}"))
    }
}

/// How often a wait looks whether Ctrl-C was pressed.
const LOOK_AGAIN: Duration = Duration::from_millis(100);

/// A child process running this program, with its standard input and output piped to us and
/// its standard error shared with ours.
pub struct Worker {
    name: String,
    child: Option<Child>,
    pid: u32,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Worker {
    /// Starts this program again with `args`; `name` names it in messages ("producer 1").
    pub fn spawn(name: impl Into<String>, args: &[OsString]) -> Result<Worker> {
        let name = name.into();
        let exe = std::env::current_exe().context("finding this program's own executable")?;
        let mut child = Command::new(&exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {name} ({})", exe.display()))?;
        let stdout = child.stdout.take().expect("stdout was piped");
        let stdin = child.stdin.take();
        let pid = child.id();
        let (sender, lines) = mpsc::channel();
        // The thread ends when the child closes its standard output (at exit, at the latest).
        let reader = std::thread::Builder::new()
            .name(format!("{name} output"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
        if let Err(e) = reader {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e)
                .with_context(|| format!("starting a thread to read the output of {name}"));
        }
        Ok(Worker {
            name,
            child: Some(child),
            pid,
            stdin,
            lines,
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Writes one line to the child's standard input.
    pub fn send(&mut self, line: &str) -> Result<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            bail!("{}: its input is already closed", self.name);
        };
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("writing to {}", self.name))
    }

    /// Closes the child's standard input: it reads end-of-file.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next line the child writes, or `None` once it has closed its output (exited).
    /// Fails if `deadline` passes first.
    /// Fails too on Ctrl-C (see [`crate::signals`]).
    pub fn next_line(&mut self, deadline: Instant) -> Result<Option<Line>> {
        loop {
            if signals::interrupted() {
                bail!("interrupted");
            }
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(LOOK_AGAIN);
            match self.lines.recv_timeout(wait) {
                Ok(line) => return Ok(Some(Line::parse(&line))),
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
                Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                    bail!("{} did not answer in time", self.name)
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Reads lines until one tagged `tag`, handing the others to `other`. A child that exits
    /// first is an error that says how it exited.
    pub fn expect(
        &mut self,
        tag: &str,
        deadline: Instant,
        mut other: impl FnMut(&Line),
    ) -> Result<Line> {
        loop {
            match self.next_line(deadline)? {
                Some(line) if line.tag == tag => return Ok(line),
                Some(line) => other(&line),
                None => {
                    let status = self.wait(deadline)?;
                    bail!(
                        "{} ended without reporting '{tag}' ({})",
                        self.name,
                        describe(status)
                    );
                }
            }
        }
    }

    /// Waits for the child to exit and reaps it; kills it if `deadline` passes first, or on
    /// Ctrl-C.
    pub fn wait(&mut self, deadline: Instant) -> Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            bail!("{} was already reaped", self.name);
        };
        loop {
            if let Some(status) = child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.name))?
            {
                self.child = None;
                return Ok(status);
            }
            let late = Instant::now() >= deadline;
            if late || signals::interrupted() {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                if late {
                    bail!("{} did not finish in time and was killed", self.name);
                }
                bail!("interrupted");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the child to exit; anything but a status of 0 is an error.
    pub fn wait_success(&mut self, deadline: Instant) -> Result<()> {
        let status = self.wait(deadline)?;
        ensure!(
            status.success(),
            "{} failed ({})",
            self.name,
            describe(status)
        );
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// "exit status 1", "killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Says why a run of child processes failed, when the cause was not the children's: an
/// interrupt (Ctrl-C, SIGTERM) or the `--timeout` of `timeout_s` seconds running out.
pub fn explain_stop(error: anyhow::Error, deadline: Instant, timeout_s: u64) -> anyhow::Error {
    if crate::signals::interrupted() {
        anyhow::anyhow!("interrupted: every process was stopped")
    } else if Instant::now() >= deadline {
        error.context(format!(
            "the --timeout of {timeout_s} s passed; every process was stopped"
        ))
    } else {
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_tag_and_fields() {
        let line = Line::parse("result sent=5000000 elapsed_ns=812 name=x\n");
        assert_eq!(line.tag, "result");
        assert_eq!(line.get::<u64>("sent").unwrap(), 5_000_000);
        assert_eq!(line.get::<u64>("elapsed_ns").unwrap(), 812);
        assert_eq!(line.get::<String>("name").unwrap(), "x");
        assert!(line.get::<u64>("missing").is_err());
        assert!(line.get::<u64>("name").is_err());
        // A key that is a prefix of another does not match it.
        assert!(line.get::<u64>("elapsed").is_err());

        let bare = Line::parse("ready");
        assert_eq!(bare.tag, "ready");
        assert_eq!(bare.rest, "");
    }
}
