//! The proxy's client-facing HTTP/2 server (`proxy::server::h2_server_builder`,
//! our h2 fork) reading arbitrary frames from a client: the input is what
//! the client sends after the connection preface, which is prepended here.
//!
//! Every request is answered as a gRPC server would: its body read to the
//! end, then response headers, one small DATA frame and trailers
//! (`grpc-status: 0`). The client closes its side once the server has done
//! all it can with the input: h2 hands out no request that arrived in the
//! same read as the end of the stream. Errors are expected; a panic, a hang
//! or unbounded memory is a bug.

#![no_main]

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use h2::RecvStream;
use h2::server::SendResponse;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Request, Response};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface of HTTP/2 (RFC 9113 section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The proxy's default for `max_concurrent_streams`.
const MAX_CONCURRENT_STREAMS: u32 = 100;
/// A gRPC message: uncompressed, 2 bytes of protobuf.
const MESSAGE: &[u8] = &[0, 0, 0, 0, 2, 0x08, 0x01];
/// Polls of the whole session before it counts as a livelock. A session
/// takes a handful: h2 reads every frame it can in one poll, and this IO is
/// never pending while it has input.
const MAX_POLLS: u32 = 100_000;

fuzz_target!(|frames: &[u8]| {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    });
    let mut input = Vec::with_capacity(PREFACE.len() + frames.len());
    input.extend_from_slice(PREFACE);
    input.extend_from_slice(frames);
    let client = Client::new(input);
    runtime.block_on(Watchdog::new(session(client.clone()), client));
});

/// One client connection, served until it ends.
async fn session(io: Client) {
    let builder = proxy::server::h2_server_builder(MAX_CONCURRENT_STREAMS);
    let Ok(mut conn) = builder.handshake::<_, Bytes>(io).await else {
        return;
    };
    let mut calls = FuturesUnordered::new();
    loop {
        tokio::select! {
            // In order, not at random: an input must replay as it ran.
            biased;
            next = conn.accept() => match next {
                Some(Ok((request, respond))) => calls.push(answer(request, respond)),
                Some(Err(_)) | None => break,
            },
            Some(_) = calls.next(), if !calls.is_empty() => {}
        }
    }
    // Dropping the connection fails the calls still waiting on it.
    drop(conn);
    while calls.next().await.is_some() {}
}

/// Answers one call as a gRPC server does, once its request has ended.
async fn answer(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> Result<(), h2::Error> {
    let mut body = request.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        body.flow_control().release_capacity(chunk.len())?;
    }
    body.trailers().await?;

    let mut response = Response::new(());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    let mut send = respond.send_response(response, false)?;
    // Queued beyond the window if need be; h2 sends it as the client allows.
    send.send_data(Bytes::from_static(MESSAGE), false)?;
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    send.send_trailers(trailers)
}

/// The client's side of the socket: the preface and the fuzzer's bytes, then
/// nothing until `close`, then end of file. What the server writes is dropped.
#[derive(Clone)]
struct Client(Rc<RefCell<ClientState>>);

struct ClientState {
    input: Vec<u8>,
    read: usize,
    closed: bool,
    /// The server's read, waiting for more input.
    reader: Option<Waker>,
}

impl Client {
    fn new(input: Vec<u8>) -> Self {
        Self(Rc::new(RefCell::new(ClientState {
            input,
            read: 0,
            closed: false,
            reader: None,
        })))
    }

    /// Ends the stream, waking the server's read; false if it has already
    /// ended, or if the server is not waiting to read.
    fn close(&self) -> bool {
        let mut state = self.0.borrow_mut();
        if state.closed {
            return false;
        }
        state.closed = true;
        let reader = state.reader.take();
        drop(state);
        match reader {
            Some(reader) => {
                reader.wake();
                true
            }
            None => false,
        }
    }
}

impl AsyncRead for Client {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut state = self.0.borrow_mut();
        let read = state.read;
        if read == state.input.len() && !state.closed {
            state.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        state.reader = None;
        let n = (state.input.len() - read).min(buf.remaining());
        buf.put_slice(&state.input[read..read + n]);
        state.read += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Client {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Closes the client once the session is idle, and turns a hang into a
/// panic at once. Nothing outside the session can wake it (its IO is in
/// memory, no timers), so a poll that returns pending without waking the
/// session on the way is never followed by another. The first time, the
/// server has done all it can with the input and waits to read more: the
/// client closes. After that it is a connection stuck for good, which in
/// the proxy would hold its state until the client went away. A session
/// that keeps waking itself without ending is stopped after `MAX_POLLS`.
struct Watchdog<F> {
    session: Pin<Box<F>>,
    client: Client,
    polls: u32,
    /// One waker for every poll: h2 keeps the wakers of earlier polls.
    woken: Option<Arc<Woken>>,
}

impl<F: Future> Watchdog<F> {
    fn new(session: F, client: Client) -> Self {
        Self {
            session: Box::pin(session),
            client,
            polls: 0,
            woken: None,
        }
    }
}

impl<F: Future> Future for Watchdog<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        this.polls += 1;
        assert!(
            this.polls <= MAX_POLLS,
            "the session did not end after {MAX_POLLS} polls (livelock)"
        );
        let woken = match &this.woken {
            Some(woken) if woken.runtime.will_wake(cx.waker()) => woken.clone(),
            _ => {
                let woken = Arc::new(Woken {
                    flag: AtomicBool::new(false),
                    runtime: cx.waker().clone(),
                });
                this.woken = Some(woken.clone());
                woken
            }
        };
        woken.flag.store(false, Ordering::Relaxed);
        let waker = Waker::from(woken.clone());
        let done = this.session.as_mut().poll(&mut Context::from_waker(&waker));
        if done.is_pending() && !woken.flag.load(Ordering::Relaxed) {
            assert!(
                this.client.close(),
                "the session is pending with nothing left to wake it (hang)"
            );
        }
        done
    }
}

/// Records that the session was woken, and passes the wake to the runtime.
struct Woken {
    flag: AtomicBool,
    runtime: Waker,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.flag.store(true, Ordering::Relaxed);
        self.runtime.wake_by_ref();
    }
}
