//! `RemoteConsumer`: the messages of a log served by a bridge, as the ordinary
//! [`Message`] type, every CRC checked.

use super::link::{Endpoint, Fill, Link, LinkError, LogInfo, RemoteOptions};
use super::protocol::Start;
use super::{BridgeError, Result};
use crate::format::{
    self, flags, kind, FrameWord, FRAME_ALIGNMENT, FRAME_HEADER_LEN, RECORD_ALIGNMENT,
    RECORD_LENGTH_LEN,
};
use crate::{Error, Message};
use std::time::{Duration, Instant};

/// Reads a remote log through a bridge, message by message, like a local
/// [`Consumer`](crate::Consumer): the same [`Message`] type, borrowed from this consumer's
/// receive buffer until the next call. Every payload's CRC32C is checked (unless turned off
/// in [`RemoteOptions`]), and every frame's shape.
///
/// If the connection is lost (the bridge restarted, the network failed, nothing arrived for
/// a while), the consumer reconnects by itself and asks for the position after the last
/// message it delivered: no message is lost or delivered twice.
///
/// ```no_run
/// use logbus::bridge::{RemoteConsumer, RemoteOptions, Start};
/// use std::time::Duration;
/// let mut remote = RemoteConsumer::connect("127.0.0.1:7410", "orders", Start::Earliest,
///     RemoteOptions::new())?;
/// while let Some(message) = remote.wait(Some(Duration::from_secs(5)))? {
///     println!("{} at {}", String::from_utf8_lossy(message.payload()), message.position());
/// }
/// # Ok::<(), logbus::bridge::BridgeError>(())
/// ```
pub struct RemoteConsumer {
    link: Link,
    /// Messages before this position are not delivered: the start asked for, or the resume
    /// point, which may lie inside a message set whose frame is sent whole.
    deliver_from: u64,
    /// The data frame found by `advance`, still to be taken.
    ready: Option<Ready>,
    /// The message set being delivered.
    batch: Option<BatchCursor>,
    /// Bytes of a padding frame still to skip as they arrive.
    skip: u64,
    /// Bytes of data needed before the next frame can be read.
    need: usize,
    verify: bool,
}

#[derive(Clone, Copy)]
struct Ready {
    /// Offset of the frame in the link's data.
    length: usize,
    aligned: usize,
    position: u64,
    word: FrameWord,
    timestamp: u64,
}

#[derive(Clone, Copy)]
struct BatchCursor {
    /// Offset of the payload in the link's buffer.
    payload_offset: usize,
    payload_len: usize,
    next: usize,
    payload_position: u64,
    word: FrameWord,
    timestamp: u64,
}

impl RemoteConsumer {
    /// Connects to the bridge at `endpoint` and subscribes to `log` from `start`. A failure of
    /// this first connection is returned at once; later ones are retried (see
    /// [`RemoteOptions`]).
    pub fn connect(
        endpoint: impl Into<Endpoint>,
        log: &str,
        start: Start,
        options: RemoteOptions,
    ) -> Result<RemoteConsumer> {
        let verify = options.verify_checksums;
        let mut link = Link::new(endpoint.into(), log, options)?;
        let first = link.connect_first(start, 0)?;
        Ok(RemoteConsumer {
            link,
            deliver_from: first,
            ready: None,
            batch: None,
            skip: 0,
            need: 8,
            verify,
        })
    }

    /// The remote log's identity and shape, from the bridge's last welcome.
    pub fn info(&self) -> LogInfo {
        self.link.info.expect("connected once")
    }

    /// The position of the next message this consumer will deliver: where it resumes.
    pub fn position(&self) -> u64 {
        let here = if let Some(batch) = &self.batch {
            batch.payload_position + batch.next as u64
        } else if let Some(ready) = &self.ready {
            ready.position
        } else {
            self.link.data_position() + self.skip
        };
        here.max(self.deliver_from)
    }

    /// How many connections this consumer has made: 1, plus one per reconnection.
    pub fn connections(&self) -> u64 {
        self.link.connections
    }

    /// Whether the consumer is connected now (it reconnects by itself when it is not).
    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// The next message if one is already here or arrives without waiting; never blocks
    /// (but may try once to reconnect).
    pub fn poll(&mut self) -> Result<Option<Message<'_>>> {
        if self.next_message(Some(Instant::now()))? {
            Ok(Some(self.take_message()))
        } else {
            Ok(None)
        }
    }

    /// The next message, waiting up to `timeout` for it (`None`: as long as it takes).
    /// `Ok(None)` when the time is up. Reconnects on the way if the connection was lost.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Option<Message<'_>>> {
        if self.next_message(timeout.map(|t| Instant::now() + t))? {
            Ok(Some(self.take_message()))
        } else {
            Ok(None)
        }
    }

    /// Hands up to `max` messages that are here already to `handler`, then, if there were
    /// none, waits up to `timeout` for one. Returns how many were handed over.
    pub fn wait_batch(
        &mut self,
        max: usize,
        timeout: Option<Duration>,
        mut handler: impl FnMut(Message<'_>),
    ) -> Result<usize> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut delivered = 0;
        while delivered < max {
            let ready = if delivered == 0 {
                self.next_message(deadline)?
            } else {
                self.advance()?
            };
            if !ready {
                break;
            }
            handler(self.take_message());
            delivered += 1;
        }
        Ok(delivered)
    }

    fn next_message(&mut self, deadline: Option<Instant>) -> Result<bool> {
        loop {
            if self.advance()? {
                return Ok(true);
            }
            if !self.link.is_connected() {
                let resume = self.position();
                match self.link.reconnect(Start::Position(resume), 0, deadline)? {
                    Some(first) => {
                        self.deliver_from = first.max(resume);
                        self.ready = None;
                        self.batch = None;
                        self.skip = 0;
                        self.need = 8;
                        continue;
                    }
                    None => return Ok(false),
                }
            }
            match self.link.fill(self.need, deadline) {
                Ok(Fill::Data) => {}
                Ok(Fill::Timeout) => return Ok(false),
                Err(LinkError::Lost(why)) => self.link.lose(why),
                Err(LinkError::Fatal(e)) => return Err(e),
            }
        }
    }

    /// Moves over padding and messages before `deliver_from` until a message is ready to
    /// take; false if more bytes must arrive first.
    fn advance(&mut self) -> Result<bool> {
        loop {
            if let Some(batch) = &mut self.batch {
                let buffer = self.link.buffer();
                while batch.next < batch.payload_len {
                    let at = batch.payload_offset + batch.next;
                    let len = u32::from_le_bytes(buffer[at..at + 4].try_into().expect("4 bytes"));
                    if batch.payload_position + batch.next as u64 >= self.deliver_from {
                        return Ok(true);
                    }
                    batch.next = format::next_record_offset(batch.next, len as usize);
                }
                self.batch = None;
            }
            if self.ready.is_some() {
                return Ok(true);
            }
            if self.skip > 0 {
                // In whole 8-byte steps, so that what stays in the buffer keeps its alignment
                // (the skip is a multiple of 8, the bytes that have arrived need not be).
                let n = (self.skip as usize).min(self.link.data().len() & !7);
                self.link.release(n);
                self.skip -= n as u64;
                if self.skip > 0 {
                    self.need = FRAME_ALIGNMENT as usize;
                    return Ok(false);
                }
            }
            let data = self.link.data();
            let position = self.link.data_position();
            if data.len() < FRAME_ALIGNMENT as usize {
                self.need = FRAME_ALIGNMENT as usize;
                return Ok(false);
            }
            let word = FrameWord::unpack(u64::from_le_bytes(data[..8].try_into().expect("8")));
            let info = self.link.info.expect("connected once");
            let corrupt =
                |detail: String| Err(BridgeError::Log(Error::CorruptFrame { position, detail }));
            if word.length <= 0 {
                return corrupt(format!(
                    "the bridge sent a frame that is not committed (length {})",
                    word.length
                ));
            }
            let segment_end = (position / info.segment_capacity + 1) * info.segment_capacity;
            let aligned = match format::frame_extent(word, position, segment_end) {
                Ok(aligned) => aligned,
                Err(detail) => return corrupt(detail),
            };
            let length = word.length as u64;
            if word.kind == kind::PADDING {
                self.skip = aligned;
                continue;
            }
            if aligned > info.max_frame_len() {
                return corrupt(format!(
                    "a frame of {aligned} bytes, more than this log's largest ({})",
                    info.max_frame_len()
                ));
            }
            if data.len() < aligned as usize {
                self.need = aligned as usize;
                return Ok(false);
            }
            let frame = &data[..length as usize];
            let checksum = u32::from_le_bytes(frame[8..12].try_into().expect("4"));
            let timestamp = u64::from_le_bytes(frame[16..24].try_into().expect("8"));
            let payload = &frame[FRAME_HEADER_LEN as usize..];
            if self.verify && word.flags & flags::CHECKSUM != 0 {
                let actual = format::checksum(payload);
                if actual != checksum {
                    return Err(BridgeError::Log(Error::ChecksumMismatch {
                        position,
                        expected: checksum,
                        actual,
                    }));
                }
            }
            match word.kind {
                kind::DATA => {
                    if position < self.deliver_from {
                        self.link.release(aligned as usize);
                        continue;
                    }
                    self.ready = Some(Ready {
                        length: length as usize,
                        aligned: aligned as usize,
                        position,
                        word,
                        timestamp,
                    });
                    return Ok(true);
                }
                kind::BATCH => {
                    if let Err(detail) = format::check_records(payload) {
                        return corrupt(detail);
                    }
                    let payload_offset = self.link.consumed() + FRAME_HEADER_LEN as usize;
                    self.batch = (!payload.is_empty()).then_some(BatchCursor {
                        payload_offset,
                        payload_len: payload.len(),
                        next: 0,
                        payload_position: position + FRAME_HEADER_LEN,
                        word,
                        timestamp,
                    });
                    // The set's bytes stay in the buffer until the next fill, which waits
                    // until every record of it has been taken.
                    self.link.release(aligned as usize);
                }
                other => return corrupt(format!("unknown frame kind {other}")),
            }
        }
    }

    /// Delivers the message `advance` found.
    fn take_message(&mut self) -> Message<'_> {
        if let Some(batch) = &mut self.batch {
            let offset = batch.next;
            let at = batch.payload_offset + offset;
            let buffer = self.link.buffer();
            let len = u32::from_le_bytes(buffer[at..at + 4].try_into().expect("4")) as usize;
            let body = at + RECORD_LENGTH_LEN as usize;
            let (position, word, timestamp) = (
                batch.payload_position + offset as u64,
                batch.word,
                batch.timestamp,
            );
            batch.next = format::next_record_offset(offset, len);
            if batch.next >= batch.payload_len {
                self.batch = None;
            }
            return Message::from_parts(
                &self.link.buffer()[body..body + len],
                position,
                timestamp,
                word.producer,
                word.flags,
                RECORD_ALIGNMENT as u8,
            );
        }
        let ready = self.ready.take().expect("advance found a message");
        let start = self.link.consumed() + FRAME_HEADER_LEN as usize;
        let end = self.link.consumed() + ready.length;
        self.link.release(ready.aligned);
        Message::from_parts(
            &self.link.buffer()[start..end],
            ready.position,
            ready.timestamp,
            ready.word.producer,
            ready.word.flags,
            FRAME_ALIGNMENT as u8,
        )
    }
}

impl std::fmt::Debug for RemoteConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConsumer")
            .field("log", &self.link.log_name())
            .field("position", &self.position())
            .field("connected", &self.is_connected())
            .finish()
    }
}
