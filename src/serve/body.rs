//! The response body: literal bytes and ranges of a blob, streamed without holding a
//! whole blob in memory. File ranges are read in pieces with positioned reads on the
//! blocking pool, one piece at a time, only when hyper asks for more (so a slow client
//! holds a piece or two, not a thread). The access-log line is written when hyper drops
//! the body, with the bytes actually handed to the connection.
//!
//! A piece lives until hyper has written its last byte to the socket, so a client that
//! stops reading holds one until the idle timeout. Full-size pieces
//! ([`limits::SERVE_PIECE`]) therefore come out of one [`Budget`] shared by every
//! response; once it is spent a response gets small pieces
//! ([`limits::SERVE_SMALL_PIECE`]), at most one in memory at a time. So however many
//! readers stall, pieces take at most the budget plus one small piece per connection.

use super::range::Part;
use crate::limits;
use atomic_waker::AtomicWaker;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// Bytes of full-size pieces that all responses may hold at once.
#[derive(Clone)]
pub struct Budget(Arc<Semaphore>);

impl Budget {
    pub fn new(bytes: usize) -> Budget {
        Budget(Arc::new(Semaphore::new(bytes)))
    }

    /// `n` bytes of it, if that much is left (never waits: past the budget a response
    /// goes on with small pieces instead).
    fn try_take(&self, n: u64) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(n).ok()?;
        self.0.clone().try_acquire_many_owned(n).ok()
    }
}

/// Where `Part::File` ranges are read from.
#[derive(Clone)]
pub enum Source {
    File(Arc<File>, Budget),
    Memory(Bytes),
}

/// A response's one small piece: taken when it is read, freed (waking the response)
/// when hyper drops it.
#[derive(Default)]
struct SmallSlot {
    taken: AtomicBool,
    waker: AtomicWaker,
}

impl SmallSlot {
    /// Takes the slot, or registers to be woken when it is freed.
    fn take(&self, cx: &mut Context<'_>) -> bool {
        if !self.taken.swap(true, Ordering::AcqRel) {
            return true;
        }
        self.waker.register(cx.waker());
        // Freed between the first look and the registration.
        !self.taken.swap(true, Ordering::AcqRel)
    }

    fn free(&self) {
        self.taken.store(false, Ordering::Release);
        self.waker.wake();
    }
}

/// What a piece holds while it exists.
enum Hold {
    // Never read: dropping it gives the bytes back to the budget.
    Budget(#[allow(dead_code)] OwnedSemaphorePermit),
    Small(Arc<SmallSlot>),
}

/// A piece read from a blob, handed to hyper as `Bytes` that own it: what it holds is
/// given back only when hyper has written it out and drops it.
struct Piece {
    buf: Vec<u8>,
    hold: Hold,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        if let Hold::Small(slot) = &self.hold {
            slot.free();
        }
    }
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
    small: Arc<SmallSlot>,
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
            small: Arc::default(),
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

/// Reads `len` bytes at `offset`; `hold` is given back if the read fails, else when
/// the piece is dropped.
fn read_piece(file: &File, offset: u64, len: u64, hold: Hold) -> io::Result<Bytes> {
    let mut piece = Piece {
        buf: vec![0u8; len as usize],
        hold,
    };
    file.read_exact_at(&mut piece.buf, offset)?;
    Ok(Bytes::from_owner(piece))
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
                    let offset = r.start;
                    match this.source.as_ref() {
                        Some(Source::Memory(m)) => {
                            let n = r.len().min(limits::SERVE_PIECE);
                            r.start += n;
                            let b = m.slice(offset as usize..(offset + n) as usize);
                            return this.yielded(b);
                        }
                        Some(Source::File(f, budget)) => {
                            let full = r.len().min(limits::SERVE_PIECE);
                            let (n, hold) = match budget.try_take(full) {
                                Some(permit) => (full, Hold::Budget(permit)),
                                // Over budget: small pieces, the next once the last
                                // is written out (the slot's waker says when).
                                None if this.small.take(cx) => (
                                    r.len().min(limits::SERVE_SMALL_PIECE),
                                    Hold::Small(this.small.clone()),
                                ),
                                None => return Poll::Pending,
                            };
                            r.start += n;
                            let f = f.clone();
                            this.pending = Some(tokio::task::spawn_blocking(move || {
                                read_piece(&f, offset, n, hold)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::range::ByteRange;
    use std::io::Write;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// Counts wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A body over the whole of a 1 MiB file of distinct bytes, and the bytes.
    fn blob_body(budget: &Budget) -> (ServeBody, Vec<u8>) {
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let range = ByteRange {
            start: 0,
            end: data.len() as u64,
        };
        let body = ServeBody::parts(
            Source::File(Arc::new(f), budget.clone()),
            vec![Part::File(range)],
        );
        (body, data)
    }

    async fn next(body: &mut ServeBody) -> Bytes {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
            .await
            .expect("a frame")
            .expect("no error");
        frame.into_data().expect("data")
    }

    fn left(budget: &Budget) -> usize {
        budget.0.available_permits()
    }

    #[tokio::test]
    async fn pieces_are_full_size_while_the_budget_lasts_and_give_it_back_when_dropped() {
        let full = limits::SERVE_PIECE as usize;
        let budget = Budget::new(2 * full);
        let (mut body, data) = blob_body(&budget);
        let a = next(&mut body).await;
        let b = next(&mut body).await;
        assert_eq!((a.len(), b.len()), (full, full));
        assert_eq!((&a[..], &b[..]), (&data[..full], &data[full..2 * full]));
        assert_eq!(
            left(&budget),
            0,
            "both pieces hold their bytes until dropped"
        );
        // Over budget: a small piece.
        let c = next(&mut body).await;
        assert_eq!(c.len(), limits::SERVE_SMALL_PIECE as usize);
        assert_eq!(&c[..], &data[2 * full..2 * full + c.len()]);
        drop(a);
        assert_eq!(left(&budget), full, "a written piece gives its bytes back");
        let d = next(&mut body).await;
        assert_eq!(d.len(), full, "full size again once the budget has room");
        drop((b, c, d));
        assert_eq!(left(&budget), 2 * full);
    }

    #[tokio::test]
    async fn over_budget_a_response_holds_one_small_piece_and_waits_for_it_to_be_written() {
        let small = limits::SERVE_SMALL_PIECE as usize;
        let budget = Budget::new(0);
        let (mut body, data) = blob_body(&budget);
        let first = next(&mut body).await;
        assert_eq!(&first[..], &data[..small]);
        // Until hyper drops the first piece there is no second one, and no read either.
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        assert!(body.pending.is_none(), "no read started");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        // A slice of the piece keeps it alive: it is dropped with the last reference.
        let tail = first.slice(small - 1..);
        drop(first);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        drop(tail);
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "freeing it wakes the body"
        );
        let second = next(&mut body).await;
        assert_eq!(&second[..], &data[small..2 * small]);
    }
}
