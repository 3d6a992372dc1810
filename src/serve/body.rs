//! The response body: literal bytes and ranges of a blob, streamed without holding a
//! whole blob in memory. File ranges are read in 256 KiB pieces with positioned reads
//! on the blocking pool, one piece at a time, only when hyper asks for more (so a slow
//! client holds at most one piece, not a thread). The access-log line is written when
//! hyper drops the body, with the bytes actually handed to the connection.

use super::range::Part;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::task::JoinHandle;

/// Bytes read from a blob file per step.
const PIECE: u64 = 256 << 10;

/// Where `Part::File` ranges are read from.
#[derive(Clone)]
pub enum Source {
    File(Arc<File>),
    Memory(Bytes),
}

/// What the access log records about a response; written on drop.
pub struct AccessLog {
    pub request: String,
    pub status: u16,
    pub start: Instant,
}

pub struct ServeBody {
    source: Option<Source>,
    parts: VecDeque<Part>,
    remaining: u64,
    pending: Option<JoinHandle<io::Result<Bytes>>>,
    sent: u64,
    log: Option<AccessLog>,
}

impl ServeBody {
    pub fn empty() -> ServeBody {
        ServeBody {
            source: None,
            parts: VecDeque::new(),
            remaining: 0,
            pending: None,
            sent: 0,
            log: None,
        }
    }

    pub fn bytes(b: impl Into<Bytes>) -> ServeBody {
        let b = b.into();
        let mut body = ServeBody::empty();
        body.remaining = b.len() as u64;
        body.parts.push_back(Part::Bytes(b));
        body
    }

    /// `parts` of `source`; every `Part::File` range must lie within it.
    pub fn parts(source: Source, parts: Vec<Part>) -> ServeBody {
        let mut body = ServeBody::empty();
        body.remaining = parts.iter().map(Part::len).sum();
        body.parts = parts.into();
        body.source = Some(source);
        body
    }

    /// The exact number of bytes this body will yield.
    pub fn content_length(&self) -> u64 {
        self.remaining
    }

    pub fn set_log(&mut self, log: AccessLog) {
        self.log = Some(log);
    }

    fn yielded(&mut self, b: Bytes) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.remaining -= b.len() as u64;
        self.sent += b.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(b))))
    }
}

fn read_piece(file: &File, offset: u64, len: u64) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)?;
    Ok(Bytes::from(buf))
}

impl Body for ServeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(pending) = this.pending.as_mut() {
                let result = match Pin::new(pending).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r,
                };
                this.pending = None;
                return match result {
                    Ok(Ok(b)) => this.yielded(b),
                    Ok(Err(e)) => Poll::Ready(Some(Err(e))),
                    Err(join) => Poll::Ready(Some(Err(io::Error::other(join)))),
                };
            }
            let Some(part) = this.parts.front_mut() else {
                return Poll::Ready(None);
            };
            match part {
                Part::Bytes(b) => {
                    let b = std::mem::take(b);
                    this.parts.pop_front();
                    if !b.is_empty() {
                        return this.yielded(b);
                    }
                }
                Part::File(r) => {
                    if r.is_empty() {
                        this.parts.pop_front();
                        continue;
                    }
                    let n = r.len().min(PIECE);
                    let offset = r.start;
                    r.start += n;
                    match this.source.as_ref() {
                        Some(Source::Memory(m)) => {
                            let b = m.slice(offset as usize..(offset + n) as usize);
                            return this.yielded(b);
                        }
                        Some(Source::File(f)) => {
                            let f = f.clone();
                            this.pending = Some(tokio::task::spawn_blocking(move || {
                                read_piece(&f, offset, n)
                            }));
                        }
                        None => {
                            return Poll::Ready(Some(Err(io::Error::other(
                                "a file range without a file",
                            ))))
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && self.pending.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

impl Drop for ServeBody {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            let ms = log.start.elapsed().as_secs_f64() * 1000.0;
            let aborted = if self.remaining > 0 { " aborted" } else { "" };
            eprintln!(
                "{} {} {} {ms:.1}ms{aborted}",
                log.request, log.status, self.sent
            );
        }
    }
}
