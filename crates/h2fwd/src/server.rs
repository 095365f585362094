//! The server side: a client's connection, its requests accepted one by one.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::conn::{self, Config, Inner, Shared, Wakers};
use crate::driver::{Driver, Step};
use crate::error::{Error, Reason};
use crate::frame::{self, MAX_WINDOW};
use crate::head::Head;
use crate::stream::{PingPong, StreamRef};

/// A request: its head (boxed: it is moved on, not copied) and its stream.
pub type Request = (Box<Head>, StreamRef);

/// Rounds of reading a connection makes, at most, before it hands out the
/// requests it read.
const STEPS_BEFORE_ACCEPT: usize = 16;

/// A client's connection. Poll [`Connection::accept`] to drive it: it reads
/// and writes the socket, and returns each request as it arrives.
pub struct Connection<T> {
    driver: Driver<T>,
    done: bool,
}

impl<T> std::fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("server::Connection")
    }
}

/// Starts serving `io`, whose first bytes are the client's preface. This
/// end's SETTINGS go out with the first write.
pub fn handshake<T: AsyncRead + AsyncWrite + Unpin>(io: T, config: Config) -> Connection<T> {
    let mut inner = Inner::new(true, config);
    inner.write_preface_settings();
    let shared = Arc::new(Shared::new(inner));
    Connection {
        driver: Driver::new(io, shared, true),
        done: false,
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Connection<T> {
    /// The next request: its head (boxed: it is moved on, not copied) and
    /// its stream. `None` once the connection
    /// is over (closed by the client, or after a GOAWAY every stream ended).
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Request, Error>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            if let Some(next) = self.next_accepted() {
                return Poll::Ready(Some(Ok(next)));
            }
            // Nothing waits: read everything there is before handing any
            // request out, so that a burst of requests is counted against
            // the stream limit together (as a peer that sent them at once
            // expects), and what their calls write leaves in fewer writes.
            for _ in 0..STEPS_BEFORE_ACCEPT {
                match self.driver.step(cx) {
                    Step::Progress => {}
                    Step::Idle => {
                        return match self.next_accepted() {
                            Some(next) => Poll::Ready(Some(Ok(next))),
                            None => Poll::Pending,
                        };
                    }
                    Step::Done(result) => {
                        self.done = true;
                        return Poll::Ready(result.err().map(Err));
                    }
                }
            }
        }
    }

    pub async fn accept(&mut self) -> Option<Result<Request, Error>> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    fn next_accepted(&mut self) -> Option<Request> {
        let mut inner = self.driver.shared.lock();
        let (head, key) = inner.accept.pop_front()?;
        if inner.streams[key].error.is_some() {
            inner.pending_accept_resets = inner.pending_accept_resets.saturating_sub(1);
        }
        drop(inner);
        Some((
            head,
            StreamRef {
                shared: Arc::clone(&self.driver.shared),
                key,
            },
        ))
    }

    /// Starts a graceful shutdown (RFC 9113 section 6.8): GOAWAY with the
    /// highest stream id, and a PING; once it is answered, GOAWAY with the
    /// last stream id really received. Streams up to it finish, then
    /// [`Connection::accept`] returns `None`.
    pub fn graceful_shutdown(&mut self) {
        let io = {
            let mut inner = self.driver.shared.lock();
            if inner.goaway_sent.is_some() || inner.failed.is_some() {
                return;
            }
            frame::put_goaway(&mut inner.out, MAX_WINDOW, Reason::NO_ERROR, &[]);
            frame::put_ping(&mut inner.out, false, conn::SHUTDOWN_PING);
            inner.goaway_sent = Some(MAX_WINDOW);
            inner.shutdown_pinged = true;
            inner.io_waker.take()
        };
        if let Some(w) = io {
            w.wake();
        }
    }

    /// Closes at once: GOAWAY with `reason`; every stream ends.
    pub fn abrupt_shutdown(&mut self, reason: Reason) {
        let mut wakers = Wakers::new();
        {
            let mut inner = self.driver.shared.lock();
            inner.go_away(reason, "", &mut wakers);
        }
        conn::wake_all(&mut wakers);
    }

    /// PINGs on this connection (keepalive).
    pub fn ping_pong(&self) -> PingPong {
        PingPong {
            shared: Arc::clone(&self.driver.shared),
        }
    }
}
