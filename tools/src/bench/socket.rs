//! The baseline's wire format: a Unix domain stream socket carrying messages as a 4-byte
//! little-endian length followed by the payload. Writers buffer ([`WRITE_BUFFER`] bytes,
//! `BufWriter`); readers read as much as the socket holds into a buffer of their own and
//! take whole messages out of it, so neither side makes a system call per message when
//! messages queue up.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

/// Bytes a writer gathers before it writes to the socket (flushing earlier when told to).
pub const WRITE_BUFFER: usize = 64 << 10;
/// Bytes a reader asks the socket for at once (more when one message is larger).
pub const READ_BUFFER: usize = 64 << 10;

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Takes length-prefixed messages out of what a socket delivers.
pub struct FrameReader {
    stream: UnixStream,
    buf: Vec<u8>,
    /// The first byte not yet handed out.
    start: usize,
    /// One past the last byte read.
    end: usize,
}

impl FrameReader {
    pub fn new(stream: UnixStream) -> Self {
        FrameReader {
            stream,
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
        }
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// The next whole message in the buffer, if there is one. Fails on a length that
    /// cannot be a message of this benchmark.
    #[inline]
    pub fn next_frame(&mut self) -> io::Result<Option<&[u8]>> {
        let available = self.end - self.start;
        if available < PREFIX_LEN {
            return Ok(None);
        }
        let len = self.pending_len()?;
        if available < PREFIX_LEN + len {
            return Ok(None);
        }
        let body = self.start + PREFIX_LEN;
        self.start = body + len;
        Ok(Some(&self.buf[body..body + len]))
    }

    fn pending_len(&self) -> io::Result<usize> {
        let prefix: [u8; PREFIX_LEN] = self.buf[self.start..self.start + PREFIX_LEN]
            .try_into()
            .expect("4 bytes");
        let len = u32::from_le_bytes(prefix) as usize;
        if len > 1 << 30 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a message length of {len} bytes is not one this benchmark sends"),
            ));
        }
        Ok(len)
    }

    /// Reads what the socket has (blocking or not, as the socket is set) after the bytes
    /// not handed out yet. `Ok(0)` is the end of the stream.
    pub fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end < self.buf.len() / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end - self.start >= PREFIX_LEN {
            let needed = self.start + PREFIX_LEN + self.pending_len()?;
            if needed > self.buf.len() {
                self.buf.resize(needed, 0);
            }
        }
        if self.end == self.buf.len() {
            // Whole messages are still waiting: a read into no room would look like the end.
            let len = self.buf.len();
            self.buf.resize(2 * len, 0);
        }
        let n = self.stream.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Whether bytes that do not make a whole message are left (after the end of stream,
    /// that is a truncated message).
    pub fn has_partial(&self) -> bool {
        self.end > self.start
    }
}

/// Writes one message (prefix and payload) through a buffered writer.
#[inline]
pub fn write_frame(writer: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    writer.write_all(&(payload.len() as u32).to_le_bytes())?;
    writer.write_all(payload)
}

/// Writes one message at once (one `write` system call for it, normally) and retries if a
/// non-blocking socket is full. `scratch` is reused between calls.
pub fn send_frame(
    stream: &mut UnixStream,
    scratch: &mut Vec<u8>,
    payload: &[u8],
) -> io::Result<()> {
    scratch.clear();
    scratch.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    scratch.extend_from_slice(payload);
    let mut written = 0;
    while written < scratch.len() {
        match stream.write(&scratch[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits until at least one of `streams` has something to read (or is closed).
pub fn poll_readable(streams: &[&UnixStream]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut fds: Vec<libc::pollfd> = streams
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the whole call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufWriter;

    #[test]
    fn messages_of_every_size_come_out_whole_and_in_order() {
        let (a, b) = UnixStream::pair().unwrap();
        let sizes = [0usize, 1, 8, 100, READ_BUFFER - 3, 3 * READ_BUFFER, 7];
        let writer = std::thread::spawn(move || {
            let mut w = BufWriter::with_capacity(WRITE_BUFFER, a);
            for (i, &size) in sizes.iter().enumerate() {
                write_frame(&mut w, &vec![i as u8; size]).unwrap();
            }
            w.flush().unwrap();
        });
        let mut reader = FrameReader::new(b);
        let mut seen = Vec::new();
        loop {
            while let Some(frame) = reader.next_frame().unwrap() {
                assert!(frame.iter().all(|&x| x == seen.len() as u8));
                seen.push(frame.len());
            }
            if reader.fill().unwrap() == 0 {
                break;
            }
        }
        writer.join().unwrap();
        assert!(!reader.has_partial());
        assert_eq!(seen, sizes);
    }

    #[test]
    fn send_frame_writes_prefix_and_payload() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut scratch = Vec::new();
        send_frame(&mut a, &mut scratch, b"ping").unwrap();
        drop(a);
        let mut reader = FrameReader::new(b);
        reader.fill().unwrap();
        assert_eq!(reader.next_frame().unwrap(), Some(&b"ping"[..]));
    }
}
