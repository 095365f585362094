//! The client side: streams opened on a connection to a host, and the task
//! that drives it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::conn::{Config, Inner, Shared, Stream};
use crate::driver::{Driver, PREFACE, Step};
use crate::error::Error;
use crate::frame::MAX_WINDOW;
use crate::head::Head;
use crate::hpack::{Kind, encoder};
use crate::stream::{PingPong, StreamRef};

/// Opens streams on a connection; cheap to clone.
pub struct SendRequest {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SendRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendRequest")
    }
}

/// Drives a connection to a host: a future that reads and writes its socket
/// until the connection is over.
pub struct Connection<T> {
    driver: Driver<T>,
}

impl<T> std::fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("client::Connection")
    }
}

/// Starts a connection on `io`: the preface and this end's SETTINGS go out
/// with the first write.
pub fn handshake<T: AsyncRead + AsyncWrite + Unpin>(
    io: T,
    config: Config,
) -> (SendRequest, Connection<T>) {
    let mut inner = Inner::new(false, config);
    inner.out.extend_from_slice(PREFACE);
    inner.write_preface_settings();
    inner.senders = 1;
    let shared = Arc::new(Shared::new(inner));
    (
        SendRequest {
            shared: Arc::clone(&shared),
        },
        Connection {
            driver: Driver::new(io, shared, false),
        },
    )
}

impl SendRequest {
    /// Opens a stream with `head` as its request. `replace` is a field sent
    /// in place of every field of its name (the proxy's own `grpc-timeout`).
    /// Beyond the host's concurrency limit the stream waits for a slot, its
    /// block encoded; it is written, and gets its id, when one frees.
    pub fn send_request(
        &self,
        head: &Head,
        replace: Option<(&[u8], &[u8])>,
        end_stream: bool,
    ) -> Result<StreamRef, Error> {
        let io = {
            let mut inner = self.shared.lock();
            if let Some(e) = &inner.failed {
                return Err(e.clone());
            }
            if let Some((_, reason)) = inner.goaway_recv {
                return Err(Error::GoAway(reason, crate::Initiator::Remote));
            }
            if inner.next_local > MAX_WINDOW {
                return Err(Error::User("stream ids exhausted; open another connection"));
            }
            let mut s = Stream::new(
                0,
                true,
                inner.peer_initial_window,
                inner.config.initial_window_size,
            );
            s.send_ended = end_stream;
            let key = inner.streams.insert(s);
            if inner.open_local < inner.peer_max_concurrent && inner.pending_open.is_empty() {
                let id = inner.open_local_stream(key, end_stream);
                inner.write_block(id, end_stream, |dst| {
                    encoder::encode(head, Kind::Request, replace, dst);
                });
            } else {
                let mut block = BytesMut::new();
                encoder::encode(head, Kind::Request, replace, &mut block);
                inner.streams[key].pending = Some((block, end_stream));
                inner.pending_open.push_back(key);
            }
            drop(inner);
            let stream = StreamRef {
                shared: Arc::clone(&self.shared),
                key,
            };
            let io = self.shared.lock().io_wake();
            (stream, io)
        };
        let (stream, io) = io;
        if let Some(w) = io {
            w.wake();
        }
        Ok(stream)
    }

    /// PINGs on this connection (keepalive).
    pub fn ping_pong(&self) -> PingPong {
        PingPong {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Whether new streams can be opened (no GOAWAY, not failed).
    pub fn is_ready(&self) -> bool {
        let inner = self.shared.lock();
        inner.failed.is_none() && inner.goaway_recv.is_none()
    }

    /// Why the connection takes no new streams, if it does not.
    pub fn closed_reason(&self) -> Option<Error> {
        let inner = self.shared.lock();
        if let Some(e) = &inner.failed {
            return Some(e.clone());
        }
        inner
            .goaway_recv
            .map(|(_, reason)| Error::GoAway(reason, crate::Initiator::Remote))
    }
}

impl Clone for SendRequest {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        SendRequest {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for SendRequest {
    fn drop(&mut self) {
        let io = {
            let mut inner = self.shared.lock();
            inner.senders -= 1;
            if inner.senders == 0 {
                inner.io_waker.take()
            } else {
                None
            }
        };
        if let Some(w) = io {
            w.wake();
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Connection<T> {
    /// PINGs on this connection (keepalive).
    pub fn ping_pong(&self) -> PingPong {
        PingPong {
            shared: Arc::clone(&self.driver.shared),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Future for Connection<T> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        for _ in 0..32 {
            match this.driver.step(cx) {
                Step::Progress => {}
                Step::Idle => return Poll::Pending,
                Step::Done(result) => return Poll::Ready(result),
            }
        }
        // Busy: let other tasks run, then carry on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
