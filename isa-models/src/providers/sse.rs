//! Server-sent events read from a byte stream, as providers stream their answers.
//!
//! Lines may be split anywhere between chunks and may be very long (Gemini sends a whole
//! response per `data:` line, sometimes over 128 KiB), so the reader keeps what it has until a
//! line ends, bounded by [`MAX_EVENT_BYTES`] so a peer that never ends a line cannot use
//! unbounded memory.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes, BytesMut};
use futures::Stream;
use isa_core::{Error, Result};

/// The largest event accepted, in bytes.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// One event: its `event:` name (when given) and its `data:` lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field.
    pub event: Option<String>,
    /// The `data:` field.
    pub data: String,
}

/// Reads events from `bytes`; `service` names the peer in errors.
pub struct SseReader<S> {
    bytes: S,
    service: String,
    buffer: BytesMut,
    event: Option<String>,
    data: String,
    has_data: bool,
    finished: bool,
}

impl<S> SseReader<S> {
    /// A reader over a stream of byte chunks.
    pub fn new(service: impl Into<String>, bytes: S) -> Self {
        SseReader {
            bytes,
            service: service.into(),
            buffer: BytesMut::new(),
            event: None,
            data: String::new(),
            has_data: false,
            finished: false,
        }
    }

    fn error(&self, message: impl Into<String>, retryable: bool) -> Error {
        Error::Upstream {
            service: self.service.clone(),
            status: None,
            message: message.into(),
            retryable,
        }
    }

    /// Takes one complete line from the buffer, if there is one.
    fn next_line(&mut self) -> Option<Bytes> {
        let end = self.buffer.iter().position(|&b| b == b'\n' || b == b'\r')?;
        // A `\r` at the very end may be the first half of `\r\n`: wait for more.
        if self.buffer[end] == b'\r' && end + 1 == self.buffer.len() && !self.finished {
            return None;
        }
        let line = self.buffer.split_to(end).freeze();
        let terminator = if self.buffer.starts_with(b"\r\n") {
            2
        } else {
            1
        };
        self.buffer.advance(terminator);
        Some(line)
    }

    /// Applies one line; an empty line ends the event being read.
    fn apply(&mut self, line: &[u8]) -> Result<Option<SseEvent>> {
        if line.is_empty() {
            if !self.has_data {
                self.event = None;
                return Ok(None);
            }
            self.has_data = false;
            return Ok(Some(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
            }));
        }
        if line.starts_with(b":") {
            return Ok(None);
        }
        let line = std::str::from_utf8(line)
            .map_err(|_| self.error("event stream is not UTF-8", false))?;
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
                if self.data.len() > MAX_EVENT_BYTES {
                    return Err(self.error("event larger than 16 MiB", false));
                }
            }
            _ => {}
        }
        Ok(None)
    }
}

impl<S, E> Stream for SseReader<S>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<SseEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            while let Some(line) = this.next_line() {
                match this.apply(&line) {
                    Ok(Some(event)) => return Poll::Ready(Some(Ok(event))),
                    Ok(None) => {}
                    Err(e) => {
                        this.finished = true;
                        this.buffer.clear();
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            if this.finished {
                // A last event without its blank line still counts (Gemini ends that way).
                let rest = this.buffer.split().freeze();
                if !rest.is_empty()
                    && let Err(e) = this.apply(&rest)
                {
                    return Poll::Ready(Some(Err(e)));
                }
                return Poll::Ready(match this.apply(b"") {
                    Ok(Some(event)) => Some(Ok(event)),
                    _ => None,
                });
            }
            match Pin::new(&mut this.bytes).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    if this.buffer.len() + chunk.len() > MAX_EVENT_BYTES + 2 {
                        this.finished = true;
                        this.buffer.clear();
                        return Poll::Ready(Some(Err(
                            this.error("event larger than 16 MiB", false)
                        )));
                    }
                    this.buffer.extend_from_slice(&chunk);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.finished = true;
                    this.buffer.clear();
                    let message = format!("stream broke: {e}");
                    return Poll::Ready(Some(Err(this.error(message, true))));
                }
                Poll::Ready(None) => this.finished = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{StreamExt, stream};

    async fn read(chunks: &[&[u8]]) -> Vec<Result<SseEvent>> {
        let chunks: Vec<std::result::Result<Bytes, String>> = chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        SseReader::new("test", stream::iter(chunks)).collect().await
    }

    fn data(events: Vec<Result<SseEvent>>) -> Vec<String> {
        events.into_iter().map(|e| e.unwrap().data).collect()
    }

    #[tokio::test]
    async fn lines_split_anywhere_and_any_line_ending_make_the_same_events() {
        let whole = b"event: a\r\ndata: {\"x\":1}\r\n\r\n: comment\n\ndata: two\ndata: lines\n\n";
        let expected = vec!["{\"x\":1}".to_owned(), "two\nlines".to_owned()];
        assert_eq!(data(read(&[whole]).await), expected);
        for cut in 1..whole.len() {
            let events = read(&[&whole[..cut], &whole[cut..]]).await;
            assert_eq!(data(events), expected, "cut at {cut}");
        }
        let events = read(&[whole]).await;
        assert_eq!(events[0].as_ref().unwrap().event.as_deref(), Some("a"));
        assert_eq!(events[1].as_ref().unwrap().event, None);
    }

    #[tokio::test]
    async fn a_line_over_128_kib_and_a_last_event_without_its_blank_line_arrive() {
        let big = format!("data: {}\n\ndata: last", "x".repeat(200 * 1024));
        let chunks: Vec<&[u8]> = big.as_bytes().chunks(1000).collect();
        let events = data(read(&chunks).await);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].len(), 200 * 1024);
        assert_eq!(events[1], "last");
    }

    #[tokio::test]
    async fn an_endless_line_is_refused_without_holding_it_all() {
        let chunk = vec![b'x'; 1024 * 1024];
        let chunks: Vec<std::result::Result<Bytes, String>> =
            std::iter::once(Ok(Bytes::from_static(b"data: ")))
                .chain((0..40).map(|_| Ok(Bytes::from(chunk.clone()))))
                .collect();
        let events: Vec<_> = SseReader::new("test", stream::iter(chunks)).collect().await;
        assert_eq!(events.len(), 1);
        assert!(
            events[0]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("16 MiB")
        );
    }
}
