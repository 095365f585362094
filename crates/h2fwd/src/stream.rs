//! The handle of one stream: what a call sends on it and reads from it, and
//! how it learns that the peer reset it.
//!
//! One handle per stream, its methods on `&self`, so that the two halves of
//! a call (the request going one way, the answer the other) can use it side
//! by side. Every method takes the connection's lock once. Dropping the
//! handle of a stream that is not closed both ways resets it (CANCEL, or
//! NO_ERROR once this end's answer is complete: RFC 9113 section 8.1).

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};

use crate::conn::{self, Shared, Wakers};
use crate::error::{Error, Initiator, Reason};
use crate::head::Head;
use crate::hpack::{Kind, encoder};

/// A stream of a connection, client or server side.
pub struct StreamRef {
    pub(crate) shared: Arc<Shared>,
    pub(crate) key: usize,
}

impl std::fmt::Debug for StreamRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRef").field("id", &self.id()).finish()
    }
}

/// Wakes the connection's task if something was written for it, and what a
/// locked section collected.
#[inline]
fn after(io: Option<std::task::Waker>, wakers: &mut Wakers) {
    if let Some(w) = io {
        w.wake();
    }
    conn::wake_all(wakers);
}

impl StreamRef {
    /// The stream id; 0 while a client stream waits for a concurrency slot.
    pub fn id(&self) -> u32 {
        self.shared.lock().streams[self.key].id
    }

    /// Whether a client stream has not been written yet (it waits for a
    /// concurrency slot): dropped now, nothing of it ever reaches the peer.
    pub fn is_pending_open(&self) -> bool {
        self.shared.lock().streams[self.key].pending.is_some()
    }

    /// The reason the peer reset the stream with, if it did. Unlike
    /// [`StreamRef::poll_reset`] it registers nothing.
    pub fn peer_reset(&self) -> Option<Reason> {
        match &self.shared.lock().streams[self.key].error {
            Some(Error::Reset(reason, Initiator::Remote)) => Some(*reason),
            _ => None,
        }
    }

    /// Client: the response head (informational ones are skipped).
    pub fn poll_response(&self, cx: &mut Context<'_>) -> Poll<Result<Box<Head>, Error>> {
        let mut inner = self.shared.lock();
        let s = &mut inner.streams[self.key];
        if let Some(head) = s.head.take() {
            return Poll::Ready(Ok(head));
        }
        if let Some(e) = &s.error {
            return Poll::Ready(Err(e.clone()));
        }
        s.set_waker(cx.waker());
        Poll::Pending
    }

    /// The next DATA payload and whether it ends the stream, its flow-control
    /// window already given back; `None` once the data is over (trailers may
    /// follow).
    pub fn poll_data(&self, cx: &mut Context<'_>) -> Poll<Option<Result<(Bytes, bool), Error>>> {
        let mut inner = self.shared.lock();
        let s = &mut inner.streams[self.key];
        if let Some(chunk) = s.recv.pop_front() {
            let end =
                s.recv.is_empty() && s.recv_closed && s.trailers.is_none() && s.error.is_none();
            let n = chunk.len() as u32;
            inner.release(Some(self.key), n);
            let io = inner.io_wake();
            drop(inner);
            after(io, &mut Wakers::new());
            return Poll::Ready(Some(Ok((chunk, end))));
        }
        if let Some(e) = &s.error {
            return Poll::Ready(Some(Err(e.clone())));
        }
        if s.recv_closed {
            return Poll::Ready(None);
        }
        s.set_waker(cx.waker());
        Poll::Pending
    }

    /// The trailers, once the data is over: `None` when the stream ended
    /// with DATA.
    pub fn poll_trailers(&self, cx: &mut Context<'_>) -> Poll<Result<Option<Box<Head>>, Error>> {
        let mut inner = self.shared.lock();
        let s = &mut inner.streams[self.key];
        if let Some(trailers) = s.trailers.take() {
            return Poll::Ready(Ok(Some(trailers)));
        }
        if let Some(e) = &s.error {
            return Poll::Ready(Err(e.clone()));
        }
        if s.recv_closed && s.recv.is_empty() {
            return Poll::Ready(Ok(None));
        }
        s.set_waker(cx.waker());
        Poll::Pending
    }

    /// Whether the peer's side has ended and everything was read.
    pub fn is_end_stream(&self) -> bool {
        let inner = self.shared.lock();
        let s = &inner.streams[self.key];
        s.recv_closed && s.recv.is_empty() && s.trailers.is_none() && s.error.is_none()
    }

    /// Server: sends the response head.
    pub fn send_response(&self, head: &Head, end_stream: bool) -> Result<(), Error> {
        let mut wakers = Wakers::new();
        let io = {
            let mut inner = self.shared.lock();
            let s = &inner.streams[self.key];
            check_send(s)?;
            let id = s.id;
            inner.write_block(id, end_stream, |dst| {
                encoder::encode(head, Kind::Response, None, dst);
            });
            if end_stream {
                let s = &mut inner.streams[self.key];
                s.send_ended = true;
                s.send_closed = true;
                inner.closed_now(self.key, false, &mut wakers);
            }
            inner.io_wake()
        };
        after(io, &mut wakers);
        Ok(())
    }

    /// Sends DATA; what the peer's window does not take yet waits in order
    /// (see [`StreamRef::capacity`] to send no more than it takes).
    pub fn send_data(&self, data: Bytes, end_stream: bool) -> Result<(), Error> {
        let mut wakers = Wakers::new();
        let io = {
            let mut inner = self.shared.lock();
            let s = &mut inner.streams[self.key];
            check_send(s)?;
            s.send_ended = end_stream;
            inner.send_data(self.key, data, end_stream);
            if end_stream {
                inner.closed_now(self.key, false, &mut wakers);
            }
            inner.io_wake()
        };
        after(io, &mut wakers);
        Ok(())
    }

    /// Sends trailers, which end the stream.
    pub fn send_trailers(&self, trailers: &Head) -> Result<(), Error> {
        let mut wakers = Wakers::new();
        let io = {
            let mut inner = self.shared.lock();
            let s = &mut inner.streams[self.key];
            check_send(s)?;
            s.send_ended = true;
            if !s.queued.is_empty() || s.pending.is_some() {
                let mut block = BytesMut::new();
                encoder::encode(trailers, Kind::Trailers, None, &mut block);
                s.queued_trailers = Some(block);
            } else {
                let id = s.id;
                s.send_closed = true;
                inner.write_block(id, true, |dst| {
                    encoder::encode(trailers, Kind::Trailers, None, dst);
                });
                inner.closed_now(self.key, false, &mut wakers);
            }
            inner.io_wake()
        };
        after(io, &mut wakers);
        Ok(())
    }

    /// Resets the stream (RST_STREAM), unless it already ended.
    pub fn send_reset(&self, reason: Reason) {
        let mut wakers = Wakers::new();
        let io = {
            let mut inner = self.shared.lock();
            if inner.streams[self.key].error.is_none() {
                inner.reset_local(self.key, reason, &mut wakers);
            }
            inner.io_wake()
        };
        after(io, &mut wakers);
    }

    /// How many bytes may be sent now without waiting: the smaller of the
    /// stream's and the connection's windows and the connection's output
    /// budget; 0 while earlier data of this stream waits.
    pub fn capacity(&self) -> usize {
        let inner = self.shared.lock();
        let s = &inner.streams[self.key];
        if s.error.is_some() || s.send_ended {
            return 0;
        }
        inner.capacity(s)
    }

    /// Waits until [`StreamRef::capacity`] is above 0.
    pub fn poll_capacity(&self, cx: &mut Context<'_>) -> Poll<Result<usize, Error>> {
        let mut inner = self.shared.lock();
        let s = &inner.streams[self.key];
        if let Some(e) = &s.error {
            return Poll::Ready(Err(e.clone()));
        }
        if s.stopped {
            return Poll::Ready(Err(Error::Reset(Reason::NO_ERROR, Initiator::Remote)));
        }
        if s.send_ended {
            return Poll::Ready(Err(Error::User("stream already ended")));
        }
        let n = inner.capacity(s);
        if n > 0 {
            return Poll::Ready(Ok(n));
        }
        let s = &mut inner.streams[self.key];
        s.wants_capacity = true;
        s.set_waker(cx.waker());
        Poll::Pending
    }

    /// Completes when the stream ends abnormally: `Ok(reason)` when the peer
    /// reset it, `Err` when this end did or the connection failed.
    pub fn poll_reset(&self, cx: &mut Context<'_>) -> Poll<Result<Reason, Error>> {
        let mut inner = self.shared.lock();
        let s = &mut inner.streams[self.key];
        match &s.error {
            Some(Error::Reset(reason, Initiator::Remote)) => Poll::Ready(Ok(*reason)),
            Some(e) => Poll::Ready(Err(e.clone())),
            None if s.stopped => Poll::Ready(Ok(Reason::NO_ERROR)),
            None => {
                s.set_waker(cx.waker());
                Poll::Pending
            }
        }
    }
}

fn check_send(s: &conn::Stream) -> Result<(), Error> {
    if let Some(e) = &s.error {
        return Err(e.clone());
    }
    if s.stopped {
        return Err(Error::Reset(Reason::NO_ERROR, Initiator::Remote));
    }
    if s.send_ended {
        return Err(Error::User("stream already ended"));
    }
    Ok(())
}

impl Drop for StreamRef {
    fn drop(&mut self) {
        let mut wakers = Wakers::new();
        let io = {
            let mut inner = self.shared.lock();
            inner.drop_ref(self.key, &mut wakers);
            inner.io_wake()
        };
        after(io, &mut wakers);
    }
}

/// PINGs of this end (keepalive), one in flight at a time.
pub struct PingPong {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for PingPong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PingPong")
    }
}

impl PingPong {
    /// Sends a PING and waits for its answer.
    pub async fn ping(&self) -> Result<(), Error> {
        let io = {
            let mut inner = self.shared.lock();
            if let Some(e) = &inner.failed {
                return Err(e.clone());
            }
            crate::frame::put_ping(&mut inner.out, false, conn::USER_PING);
            inner.ping.sent = true;
            inner.ping.answered = false;
            inner.io_wake()
        };
        after(io, &mut Wakers::new());
        std::future::poll_fn(|cx| {
            let mut inner = self.shared.lock();
            if inner.ping.answered {
                inner.ping.answered = false;
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &inner.failed {
                return Poll::Ready(Err(e.clone()));
            }
            match &inner.ping.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => inner.ping.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}
