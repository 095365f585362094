//! The proxy's client-facing HTTP/2 server (`h2fwd::server` with
//! `proxy::server::h2_server_config`) reading arbitrary frames from a
//! client: the input is what the client sends after the connection preface,
//! which is prepended here.
//!
//! Every request is answered as a gRPC server would: its body read to the
//! end, then response headers, one small DATA frame and trailers
//! (`grpc-status: 0`). Errors are expected; a bug is a panic, a hang, a
//! livelock, unbounded memory, or an answer the server took (every send
//! returned `Ok`) that never reaches the client once its windows are open.
//!
//! The client sends its input in parts, each once the server has done all
//! it can with the one before: a frame of type `PAUSE` (which the server
//! never sees) ends a part, so that an input can answer what the server
//! sent (a WINDOW_UPDATE for an answer waiting on flow control, a
//! RST_STREAM after it, a CONTINUATION in a later read). After the last
//! part it opens the windows of the answers that have not ended, then
//! checks that each ended, then closes.

#![no_main]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use h2fwd::{Head, StreamRef};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface of HTTP/2 (RFC 9113 section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The proxy's default for `max_concurrent_streams`.
const MAX_CONCURRENT_STREAMS: u32 = 100;
/// A gRPC message: uncompressed, 2 bytes of protobuf.
const MESSAGE: &[u8] = &[0, 0, 0, 0, 2, 0x08, 0x01];
/// Polls of the whole session before it counts as a livelock. A session
/// takes a few per part of its input: h2fwd reads every frame it can in one
/// poll, and this IO is never pending while it has input.
const MAX_POLLS: u32 = 100_000;
/// The type of the frames that split the input into parts: unassigned
/// (RFC 9113 section 5.5), so a server that saw one would ignore it.
const PAUSE: u8 = 0xfa;
/// What the client adds to each window before it checks the answers: an
/// answer is 7 bytes, and a window that held one back is above -7.
const OPEN_WINDOW: u32 = 1 << 16;

// RFC 9113 section 6: the frame types and flags the client reads.
const HEAD_LEN: usize = 9;
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;

fuzz_target!(|frames: &[u8]| {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    });
    let client = Client::new(frames);
    runtime.block_on(Watchdog::new(session(client.clone()), client));
});

/// One client connection, served until `accept` says it is over.
async fn session(client: Client) {
    let config = proxy::server::h2_server_config(MAX_CONCURRENT_STREAMS);
    let mut conn = h2fwd::server::handshake(client.clone(), config);
    let mut calls = FuturesUnordered::new();
    loop {
        tokio::select! {
            // In order, not at random: an input must replay as it ran. Calls
            // first, as the proxy's `serve_h2` polls them.
            biased;
            Some(()) = calls.next(), if !calls.is_empty() => {}
            next = conn.accept() => match next {
                Some(Ok((head, stream))) => {
                    let client = client.clone();
                    calls.push(async move {
                        if answer(&head, &stream).await.is_ok() {
                            client.answered(stream.id());
                        }
                    });
                }
                Some(Err(_)) | None => break,
            },
        }
    }
    // Dropping the connection fails the calls still waiting on it.
    drop(conn);
    while calls.next().await.is_some() {}
}

/// Answers one call as a gRPC server does, once its request has ended.
async fn answer(_request: &Head, stream: &StreamRef) -> Result<(), h2fwd::Error> {
    while let Some(chunk) = poll_fn(|cx| stream.poll_data(cx)).await {
        chunk?;
    }
    poll_fn(|cx| stream.poll_trailers(cx)).await?;

    let mut response = Head::response(200);
    response.append(b"content-type", b"application/grpc");
    stream.send_response(&response, false)?;
    // Queued beyond the window if need be; h2fwd sends it as the client
    // allows.
    stream.send_data(Bytes::from_static(MESSAGE), false)?;
    let mut trailers = Head::trailers();
    trailers.append(b"grpc-status", b"0");
    stream.send_trailers(&trailers)
}

/// A frame's head (RFC 9113 section 4.1): length, type, flags, stream.
fn frame_head(b: &[u8]) -> Option<(usize, u8, u8, u32)> {
    let b = b.get(..HEAD_LEN)?;
    let len = usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]);
    let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff;
    Some((len, b[3], b[4], stream))
}

/// The client's side of the socket. It sends the preface and the input up
/// to its first `PAUSE` frame, then nothing until `idle` says the server
/// has done all it can, then the next part, and so on; then it opens the
/// windows of the answers still waiting, checks them, and closes. What the
/// server writes is kept, to check the answers.
#[derive(Clone)]
struct Client(Rc<RefCell<ClientState>>);

struct ClientState {
    /// The preface and the input without its `PAUSE` frames.
    input: Vec<u8>,
    read: usize,
    /// Where each part but the last ends in `input`, in order.
    pauses: VecDeque<usize>,
    /// The input ended on a frame boundary, so frames can follow it.
    whole: bool,
    /// Streams the client reset (it asks for nothing more on them).
    reset: Vec<u32>,
    phase: Phase,
    /// The server's read, waiting for more input.
    reader: Option<Waker>,
    /// What the server wrote.
    output: Vec<u8>,
    /// Streams whose answer the server took whole.
    answered: Vec<u32>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Sending the input.
    Input,
    /// Sent WINDOW_UPDATEs for the answers not ended.
    Opened,
    /// End of file.
    Closed,
}

impl Client {
    fn new(frames: &[u8]) -> Self {
        let mut input = Vec::with_capacity(PREFACE.len() + frames.len());
        input.extend_from_slice(PREFACE);
        let mut pauses = VecDeque::new();
        let mut reset = Vec::new();
        let mut rest = frames;
        // The frames the server will read, as it reads them; what does not
        // make a whole frame is sent as it is.
        while let Some((len, kind, _, stream)) = frame_head(rest) {
            let Some(frame) = rest.get(..HEAD_LEN + len) else {
                break;
            };
            match kind {
                PAUSE => pauses.push_back(input.len()),
                kind => {
                    if kind == RST_STREAM {
                        reset.push(stream);
                    }
                    input.extend_from_slice(frame);
                }
            }
            rest = &rest[frame.len()..];
        }
        input.extend_from_slice(rest);
        Self(Rc::new(RefCell::new(ClientState {
            input,
            read: 0,
            pauses,
            whole: rest.is_empty(),
            reset,
            phase: Phase::Input,
            reader: None,
            output: Vec::new(),
            answered: Vec::new(),
        })))
    }

    fn answered(&self, stream: u32) {
        self.0.borrow_mut().answered.push(stream);
    }

    /// The server has done all it can with what it read: the client sends
    /// what comes next and wakes the server's read. False if it has already
    /// closed, or if the server is not waiting to read.
    fn idle(&self) -> bool {
        let mut state = self.0.borrow_mut();
        if state.pauses.pop_front().is_none() {
            match state.phase {
                Phase::Input => {
                    let waiting = state.waiting();
                    if state.whole && !waiting.is_empty() {
                        // The connection's window too: rarely the one that
                        // holds answers back, but it can be.
                        for stream in std::iter::once(0).chain(waiting) {
                            state.input.extend_from_slice(&window_update(stream));
                        }
                        state.phase = Phase::Opened;
                    } else {
                        state.phase = Phase::Closed;
                    }
                }
                Phase::Opened => {
                    state.check_answers();
                    state.phase = Phase::Closed;
                }
                Phase::Closed => return false,
            }
        }
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

impl ClientState {
    /// What the server wrote, read as the client reads it: the streams it
    /// ended (END_STREAM or RST_STREAM), and whether it sent GOAWAY.
    fn ended(&self) -> (Vec<u32>, bool) {
        let mut ended = Vec::new();
        let mut goaway = false;
        let mut rest = &self.output[..];
        while let Some((len, kind, flags, stream)) = frame_head(rest) {
            match kind {
                DATA | HEADERS if flags & END_STREAM != 0 => ended.push(stream),
                RST_STREAM => ended.push(stream),
                GOAWAY => goaway = true,
                _ => {}
            }
            rest = rest.get(HEAD_LEN + len..).unwrap_or_default();
        }
        (ended, goaway)
    }

    /// The answered streams that the server has not ended and the client
    /// has not reset.
    fn waiting(&self) -> Vec<u32> {
        let (ended, _) = self.ended();
        self.answered
            .iter()
            .copied()
            .filter(|s| !ended.contains(s) && !self.reset.contains(s))
            .collect()
    }

    /// With the windows open, every answer the server took reached the
    /// client, unless the connection ended.
    fn check_answers(&self) {
        let (_, goaway) = self.ended();
        let lost = self.waiting();
        assert!(
            goaway || lost.is_empty(),
            "streams {lost:?}: the server took their answers (send_trailers returned Ok) \
             and their windows are open, but it wrote neither END_STREAM nor RST_STREAM \
             on them (answer lost); it wrote (type, flags, stream, length): {:?}",
            self.written()
        );
    }

    /// The frames the server wrote, for a failure message.
    fn written(&self) -> Vec<(u8, u8, u32, usize)> {
        let mut frames = Vec::new();
        let mut rest = &self.output[..];
        while let Some((len, kind, flags, stream)) = frame_head(rest) {
            frames.push((kind, flags, stream, len));
            rest = rest.get(HEAD_LEN + len..).unwrap_or_default();
        }
        frames
    }
}

/// WINDOW_UPDATE (RFC 9113 section 6.9) adding `OPEN_WINDOW` to `stream`'s
/// window (0: the connection's).
fn window_update(stream: u32) -> [u8; HEAD_LEN + 4] {
    let mut frame = [0; HEAD_LEN + 4];
    frame[2] = 4;
    frame[3] = WINDOW_UPDATE;
    frame[5..9].copy_from_slice(&stream.to_be_bytes());
    frame[9..].copy_from_slice(&OPEN_WINDOW.to_be_bytes());
    frame
}

impl AsyncRead for Client {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut state = self.0.borrow_mut();
        let end = state.pauses.front().copied().unwrap_or(state.input.len());
        let read = state.read;
        if read == end && state.phase != Phase::Closed {
            state.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        state.reader = None;
        let n = (end - read).min(buf.remaining());
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
        self.0.borrow_mut().output.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Moves the client on once the session is idle, and turns a hang into a
/// panic at once. Nothing outside the session can wake it (its IO is in
/// memory, no timers), so a poll that returns pending without waking the
/// session on the way is never followed by another: the server has done
/// all it can with what it read and waits to read more, and the client
/// sends the next part of its input, or closes. After the client has
/// closed, it is a connection stuck for good, which in the proxy would hold
/// its state until the client went away. A session that keeps waking
/// itself without ending is stopped after `MAX_POLLS`.
struct Watchdog<F> {
    session: Pin<Box<F>>,
    client: Client,
    polls: u32,
    /// One waker for every poll: a waker h2fwd (or `FuturesUnordered`) was
    /// given in an earlier poll and still holds must set the flag this poll
    /// reads.
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
                this.client.idle(),
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
