//! The task side of a connection: writes what the streams put in the output
//! buffer, reads frames and hands each to its stream.
//!
//! The output is double-buffered: the driver swaps the connection's buffer
//! for its own empty one under the lock and writes outside it, so senders
//! never wait for a system call. Frames are read into one buffer and parsed
//! in place; all the frames of one read are handled under one lock, and the
//! wakers they trigger are woken after it is released. HPACK decoding is the
//! driver's own (only it reads), next to the streams' state.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::conn::{self, HEADER_TABLE_SIZE, Inner, READ_PAUSE, Shared, Stream, Wakers};
use crate::error::{Error, Initiator, Reason};
use crate::frame::{self, DEFAULT_MAX_FRAME_SIZE, Frame, FrameError, HEAD_LEN, MAX_WINDOW};
use crate::head::Head;
use crate::hpack::Kind;
use crate::hpack::decoder::{DecodeError, Decoder};

/// The client connection preface (RFC 9113 section 3.4).
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A DATA payload up to this size is copied out of the read buffer; a larger
/// one is split off it without a copy.
const COPY_AT_MOST: usize = 512;
/// How much a read asks for when the buffer is empty.
const READ_SIZE: usize = 16 << 10;
/// Reads a driver makes in one poll before it lets other tasks run.
const READS_PER_POLL: usize = 16;

/// A header block being assembled from HEADERS and CONTINUATION frames.
struct Partial {
    stream: u32,
    end_stream: bool,
    self_dependent: bool,
    block: Vec<u8>,
    frames: u32,
}

/// What one step of the driver did.
pub(crate) enum Step {
    /// It read or wrote something: call again.
    Progress,
    /// Nothing to do until woken.
    Idle,
    /// The connection is over.
    Done(Result<(), Error>),
}

pub(crate) struct Driver<T> {
    io: T,
    pub(crate) shared: Arc<Shared>,
    writing: BytesMut,
    reader: Reader,
    read_closed: bool,
    /// Written all and shut the socket down.
    finished: bool,
}

/// The connection's task is gone: every stream still open ends with an
/// error (their handles learn it at their next poll), nothing is left waiting.
impl<T> Drop for Driver<T> {
    fn drop(&mut self) {
        let mut wakers = Wakers::new();
        self.shared
            .lock()
            .fail(Error::Io("connection dropped".into()), &mut wakers);
        conn::wake_all(&mut wakers);
    }
}

enum ConnError {
    /// This end's error: GOAWAY with the reason.
    Local(Reason, &'static str),
}

impl From<FrameError> for ConnError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Connection(reason, why) => ConnError::Local(reason, why),
            // Callers handle stream errors themselves.
            FrameError::Stream(_, reason, why) => ConnError::Local(reason, why),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Driver<T> {
    pub(crate) fn new(io: T, shared: Arc<Shared>, is_server: bool) -> Self {
        Driver {
            io,
            shared,
            writing: BytesMut::new(),
            reader: Reader {
                read: BytesMut::new(),
                decoder: Decoder::new(HEADER_TABLE_SIZE as usize),
                partial: None,
                preface_left: if is_server { PREFACE.len() } else { 0 },
                got_settings: false,
            },
            read_closed: false,
            finished: false,
        }
    }

    /// One round: write what waits, read what came. Registers for wake-ups
    /// when it returns [`Step::Idle`].
    pub(crate) fn step(&mut self, cx: &mut Context<'_>) -> Step {
        let mut progress = false;
        match self.poll_write(cx) {
            Poll::Ready(Ok(wrote)) => progress |= wrote,
            Poll::Ready(Err(e)) => return self.io_failed(&e),
            Poll::Pending => {}
        }
        let (paused, failed, done) = {
            let mut inner = self.shared.lock();
            set_waker(&mut inner.io_waker, cx);
            let failed = inner.failed.is_some();
            (
                inner.out.len() + inner.writing > READ_PAUSE,
                failed,
                self.is_done(&inner),
            )
        };
        if done || (failed && self.writing.is_empty() && self.out_empty()) {
            return self.finish(cx);
        }
        if !paused && !failed && !self.read_closed {
            for _ in 0..READS_PER_POLL {
                match self.poll_read(cx) {
                    Poll::Ready(Ok(true)) => progress = true,
                    Poll::Ready(Ok(false)) => {
                        progress = true;
                        break;
                    }
                    Poll::Ready(Err(e)) => return self.io_failed(&e),
                    Poll::Pending => break,
                }
                if self.shared.lock().out.len() > READ_PAUSE {
                    break;
                }
            }
        }
        if progress { Step::Progress } else { Step::Idle }
    }

    fn out_empty(&self) -> bool {
        self.shared.lock().out.is_empty()
    }

    /// Whether the connection has nothing left to do.
    fn is_done(&self, inner: &Inner) -> bool {
        let no_streams = inner.streams.is_empty() && inner.accept.is_empty();
        if inner.is_server {
            // After a GOAWAY either way, once every stream finished.
            no_streams
                && ((inner.goaway_sent.is_some() && !inner.shutdown_pinged)
                    || inner.goaway_recv.is_some()
                    || self.read_closed)
        } else {
            no_streams
                && (inner.senders == 0
                    || self.read_closed
                    || (inner.goaway_recv.is_some() && inner.pending_open.is_empty()))
        }
    }

    /// Writes what is left, shuts the socket down, and ends.
    fn finish(&mut self, cx: &mut Context<'_>) -> Step {
        loop {
            match self.poll_write(cx) {
                Poll::Ready(Ok(true)) => continue,
                Poll::Ready(Ok(false)) => break,
                Poll::Ready(Err(_)) => break,
                Poll::Pending => return Step::Idle,
            }
        }
        if !self.finished {
            match Pin::new(&mut self.io).poll_shutdown(cx) {
                Poll::Pending => return Step::Idle,
                Poll::Ready(_) => self.finished = true,
            }
        }
        let failed = self.shared.lock().failed.clone();
        Step::Done(match failed {
            // Closed by this end after a GOAWAY of NO_ERROR, or cleanly.
            None | Some(Error::GoAway(Reason::NO_ERROR, _)) => Ok(()),
            Some(e) => Err(e),
        })
    }

    fn io_failed(&mut self, e: &std::io::Error) -> Step {
        let mut wakers = Wakers::new();
        let error = {
            let mut inner = self.shared.lock();
            inner.fail(Error::io(e), &mut wakers);
            inner.failed.clone()
        };
        conn::wake_all(&mut wakers);
        self.finished = true;
        Step::Done(Err(error.unwrap_or_else(|| Error::io(e))))
    }

    /// Writes the output buffer; `Ready(Ok(true))` when it wrote something.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        let mut wrote = false;
        loop {
            if self.writing.is_empty() {
                let mut inner = self.shared.lock();
                if inner.out.is_empty() {
                    inner.writing = 0;
                    let mut wakers = Wakers::new();
                    if wrote {
                        inner.wake_capacity_waiters(&mut wakers);
                        // An idle connection holds no buffer at all.
                        if inner.streams.is_empty() && self.reader.read.is_empty() {
                            self.writing = BytesMut::new();
                            self.reader.read = BytesMut::new();
                            inner.out = BytesMut::new();
                        }
                    }
                    drop(inner);
                    conn::wake_all(&mut wakers);
                    break;
                }
                std::mem::swap(&mut inner.out, &mut self.writing);
                inner.writing = self.writing.len();
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.writing) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    self.writing.advance(n);
                    wrote = true;
                    if !self.writing.is_empty() {
                        self.shared.lock().writing = self.writing.len();
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if wrote {
                        let _ = Pin::new(&mut self.io).poll_flush(cx);
                    }
                    return Poll::Pending;
                }
            }
        }
        if wrote {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
        }
        Poll::Ready(Ok(wrote))
    }

    /// Reads once and handles the complete frames. `Ready(Ok(false))` at
    /// the end of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        let read = &mut self.reader.read;
        if read.capacity() - read.len() < 1024 {
            read.reserve(READ_SIZE);
        }
        let n = match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, read) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.reader.read.is_empty() && self.shared.lock().streams.is_empty() {
                    self.reader.read = BytesMut::new();
                }
                return Poll::Pending;
            }
        };
        let mut wakers = Wakers::new();
        {
            let mut inner = self.shared.lock();
            if n == 0 {
                self.read_closed = true;
                let clean = inner.streams.is_empty() && self.reader.partial.is_none();
                if !clean {
                    inner.fail(Error::Io("connection closed by peer".into()), &mut wakers);
                }
            } else if let Err(ConnError::Local(reason, why)) =
                self.reader.frames(&mut inner, &mut wakers)
            {
                tracing::debug!(%reason, why, "HTTP/2 connection error");
                inner.go_away(reason, why, &mut wakers);
            }
            if let Some(w) = inner.io_wake() {
                // The driver itself is running: it writes right after this.
                drop(w);
            }
        }
        conn::wake_all(&mut wakers);
        Poll::Ready(Ok(n != 0))
    }
}

/// The reading half: the read buffer, HPACK's decoder, a header block being
/// assembled, and the checks of a connection's first bytes.
struct Reader {
    read: BytesMut,
    decoder: Decoder,
    partial: Option<Partial>,
    /// Bytes of the client preface still to check (server).
    preface_left: usize,
    /// The peer's first SETTINGS arrived.
    got_settings: bool,
}

impl Reader {
    /// Handles every complete frame in the read buffer.
    fn frames(&mut self, inner: &mut Inner, wakers: &mut Wakers) -> Result<(), ConnError> {
        if self.preface_left > 0 {
            let at = PREFACE.len() - self.preface_left;
            let n = self.preface_left.min(self.read.len());
            if self.read[..n] != PREFACE[at..at + n] {
                return Err(ConnError::Local(
                    Reason::PROTOCOL_ERROR,
                    "invalid connection preface",
                ));
            }
            self.read.advance(n);
            self.preface_left -= n;
            if self.preface_left > 0 {
                return Ok(());
            }
        }
        while self.read.len() >= HEAD_LEN {
            if inner.failed.is_some() {
                self.read.clear();
                return Ok(());
            }
            let head = frame::Head::parse(&self.read);
            if head.len > DEFAULT_MAX_FRAME_SIZE {
                return Err(ConnError::Local(
                    Reason::FRAME_SIZE_ERROR,
                    "frame larger than MAX_FRAME_SIZE",
                ));
            }
            let total = HEAD_LEN + head.len as usize;
            if self.read.len() < total {
                self.read.reserve(total - self.read.len());
                return Ok(());
            }
            if !self.got_settings {
                if head.kind != frame::kind::SETTINGS || head.flags & frame::flag::ACK != 0 {
                    return Err(ConnError::Local(
                        Reason::PROTOCOL_ERROR,
                        "first frame is not SETTINGS",
                    ));
                }
                self.got_settings = true;
            }
            if let Some(p) = &self.partial
                && (head.kind != frame::kind::CONTINUATION || head.stream != p.stream)
            {
                return Err(ConnError::Local(
                    Reason::PROTOCOL_ERROR,
                    "header block interrupted",
                ));
            }
            if head.kind == frame::kind::DATA && head.len as usize > COPY_AT_MOST {
                let bytes = self.read.split_to(total).freeze();
                let payload = &bytes[HEAD_LEN..];
                match frame::parse(head, payload) {
                    Ok(Frame::Data {
                        stream,
                        end_stream,
                        data,
                        flow_len,
                    }) => {
                        let data = bytes.slice_ref(data);
                        recv_data(inner, stream, end_stream, data, flow_len, wakers)?;
                    }
                    Ok(_) => {}
                    Err(e) => self.frame_error(inner, e, wakers)?,
                }
                continue;
            }
            let result = {
                let payload = &self.read[HEAD_LEN..total];
                match frame::parse(head, payload) {
                    Ok(f) => dispatch(inner, f, &mut self.decoder, &mut self.partial, wakers),
                    Err(e) => Err(DispatchError::Frame(e)),
                }
            };
            self.read.advance(total);
            match result {
                Ok(()) => {}
                Err(DispatchError::Frame(e)) => self.frame_error(inner, e, wakers)?,
                Err(DispatchError::Conn(e)) => return Err(e),
            }
        }
        Ok(())
    }

    fn frame_error(
        &self,
        inner: &mut Inner,
        e: FrameError,
        wakers: &mut Wakers,
    ) -> Result<(), ConnError> {
        match e {
            FrameError::Connection(reason, why) => Err(ConnError::Local(reason, why)),
            FrameError::Stream(id, reason, why) => {
                tracing::debug!(stream = id, %reason, why, "HTTP/2 stream error");
                stream_error(inner, id, reason, wakers)
            }
        }
    }
}

enum DispatchError {
    Frame(FrameError),
    Conn(ConnError),
}

impl From<FrameError> for DispatchError {
    fn from(e: FrameError) -> Self {
        DispatchError::Frame(e)
    }
}

impl From<ConnError> for DispatchError {
    fn from(e: ConnError) -> Self {
        DispatchError::Conn(e)
    }
}

fn set_waker(slot: &mut Option<std::task::Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// Resets stream `id` for an error of the peer's (RST_STREAM), counting it
/// against the peer's allowance.
fn stream_error(
    inner: &mut Inner,
    id: u32,
    reason: Reason,
    wakers: &mut Wakers,
) -> Result<(), ConnError> {
    inner.local_error_resets += 1;
    if inner.local_error_resets > inner.config.max_local_error_reset_streams {
        return Err(ConnError::Local(
            Reason::ENHANCE_YOUR_CALM,
            "too many stream errors",
        ));
    }
    match inner.ids.get(&id).copied() {
        Some(key) => inner.reset_local(key, reason, wakers),
        None => frame::put_rst(&mut inner.out, id, reason),
    }
    Ok(())
}

fn dispatch(
    inner: &mut Inner,
    f: Frame<'_>,
    decoder: &mut Decoder,
    partial: &mut Option<Partial>,
    wakers: &mut Wakers,
) -> Result<(), DispatchError> {
    match f {
        Frame::Data {
            stream,
            end_stream,
            data,
            flow_len,
        } => {
            let data = if data.is_empty() {
                Bytes::new()
            } else {
                Bytes::copy_from_slice(data)
            };
            recv_data(inner, stream, end_stream, data, flow_len, wakers)?;
        }
        Frame::Headers {
            stream,
            end_stream,
            end_headers,
            fragment,
            self_dependent,
        } => {
            if end_headers {
                on_block(
                    inner,
                    decoder,
                    stream,
                    end_stream,
                    self_dependent,
                    fragment,
                    wakers,
                )?;
            } else {
                let limit = block_limit(inner);
                if fragment.len() > limit {
                    return Err(ConnError::Local(
                        Reason::ENHANCE_YOUR_CALM,
                        "header block too large",
                    )
                    .into());
                }
                *partial = Some(Partial {
                    stream,
                    end_stream,
                    self_dependent,
                    block: fragment.to_vec(),
                    frames: 1,
                });
            }
        }
        Frame::Continuation {
            stream: _,
            end_headers,
            fragment,
        } => {
            let Some(p) = partial.as_mut() else {
                return Err(ConnError::Local(
                    Reason::PROTOCOL_ERROR,
                    "CONTINUATION without HEADERS",
                )
                .into());
            };
            p.frames += 1;
            p.block.extend_from_slice(fragment);
            let limit = block_limit(inner);
            // A block split into more frames than its size needs, or larger
            // than any header list accepted: a CONTINUATION flood.
            if p.block.len() > limit || p.frames as usize > 16 + limit / 1024 {
                *partial = None;
                return Err(
                    ConnError::Local(Reason::ENHANCE_YOUR_CALM, "CONTINUATION flood").into(),
                );
            }
            if end_headers {
                let Some(p) = partial.take() else {
                    return Ok(());
                };
                on_block(
                    inner,
                    decoder,
                    p.stream,
                    p.end_stream,
                    p.self_dependent,
                    &p.block,
                    wakers,
                )?;
            }
        }
        Frame::Priority | Frame::Unknown => {}
        Frame::RstStream { stream, reason } => recv_reset(inner, stream, reason, wakers)?,
        Frame::Settings { ack, settings } => {
            if !ack {
                recv_settings(inner, settings, wakers)?;
                frame::put_settings_ack(&mut inner.out);
            }
        }
        Frame::PushPromise { .. } => {
            return Err(
                ConnError::Local(Reason::PROTOCOL_ERROR, "PUSH_PROMISE not enabled").into(),
            );
        }
        Frame::Ping { ack, payload } => {
            if !ack {
                frame::put_ping(&mut inner.out, true, payload);
            } else if payload == conn::SHUTDOWN_PING && inner.shutdown_pinged {
                inner.shutdown_pinged = false;
                let last = inner.last_peer;
                frame::put_goaway(&mut inner.out, last, Reason::NO_ERROR, &[]);
                inner.goaway_sent = Some(last);
                // Streams above the last one can never be answered now.
                let above: Vec<usize> = inner
                    .accept
                    .iter()
                    .filter(|(_, k)| inner.streams[*k].id > last)
                    .map(|(_, k)| *k)
                    .collect();
                for key in above {
                    inner.reset_local(key, Reason::REFUSED_STREAM, wakers);
                }
            } else if payload == conn::USER_PING && inner.ping.sent {
                inner.ping.sent = false;
                inner.ping.answered = true;
                if let Some(w) = inner.ping.waker.take() {
                    wakers.push(w);
                }
            }
        }
        Frame::GoAway {
            last_stream,
            reason,
            debug,
        } => recv_goaway(inner, last_stream, reason, debug, wakers),
        Frame::WindowUpdate { stream, increment } => {
            recv_window_update(inner, stream, increment, wakers)?;
        }
    }
    Ok(())
}

/// How large a header block may grow while it is assembled: the largest list
/// accepted plus slack (a list's encoding is never much larger than its size,
/// so a block past this could only decode to one that is too large, and is
/// then refused on its stream rather than taking the connection down).
fn block_limit(inner: &Inner) -> usize {
    inner.config.max_header_list_size as usize + (16 << 10)
}

fn recv_data(
    inner: &mut Inner,
    id: u32,
    end_stream: bool,
    data: Bytes,
    flow_len: u32,
    wakers: &mut Wakers,
) -> Result<(), ConnError> {
    let flow = i64::from(flow_len);
    if flow > inner.recv_window {
        return Err(ConnError::Local(
            Reason::FLOW_CONTROL_ERROR,
            "DATA beyond the connection window",
        ));
    }
    inner.recv_window -= flow;
    let padding = flow_len - data.len() as u32;
    let Some(key) = inner.ids.get(&id).copied() else {
        // Not an open stream: the connection's window is given back at once.
        inner.release(None, flow_len);
        if !inner.is_past(id) {
            return Err(ConnError::Local(
                Reason::PROTOCOL_ERROR,
                "DATA on an idle stream",
            ));
        }
        let peer_initiated = (id % 2 == 1) == inner.is_server;
        if peer_initiated && inner.recently_closed(id) != Some(true) {
            // A stream the peer itself ended: its error.
            frame::put_rst(&mut inner.out, id, Reason::STREAM_CLOSED);
        }
        return Ok(());
    };
    let s = &mut inner.streams[key];
    if let Some(e) = &s.error {
        let reset_here = e.is_local();
        inner.release(None, flow_len);
        return after_reset(inner, id, reset_here);
    }
    if s.recv_closed {
        inner.release(None, flow_len);
        return stream_error(inner, id, Reason::STREAM_CLOSED, wakers);
    }
    if flow > s.recv_window {
        inner.release(None, flow_len);
        return stream_error(inner, id, Reason::FLOW_CONTROL_ERROR, wakers);
    }
    s.recv_window -= flow;
    if let Some(left) = s.content_left.as_mut() {
        let n = data.len() as u64;
        if n > *left || (end_stream && n != *left) {
            inner.release(None, flow_len);
            return stream_error(inner, id, Reason::PROTOCOL_ERROR, wakers);
        }
        *left -= n;
    }
    if !data.is_empty() {
        s.recv.push_back(data);
    }
    if end_stream {
        s.recv_closed = true;
    }
    s.wake(wakers);
    // Padding is nobody's to take: given back now.
    inner.release(Some(key), padding);
    if end_stream {
        inner.closed_now(key, false, wakers);
    }
    Ok(())
}

/// A frame on a stream that was reset: ignored when this end reset it (the
/// peer may have sent it before it knew, RFC 9113 section 5.1); the peer's
/// error (STREAM_CLOSED) when the peer itself had reset it.
fn after_reset(inner: &mut Inner, id: u32, reset_here: bool) -> Result<(), ConnError> {
    if reset_here {
        return Ok(());
    }
    inner.local_error_resets += 1;
    if inner.local_error_resets > inner.config.max_local_error_reset_streams {
        return Err(ConnError::Local(
            Reason::ENHANCE_YOUR_CALM,
            "too many stream errors",
        ));
    }
    frame::put_rst(&mut inner.out, id, Reason::STREAM_CLOSED);
    Ok(())
}

fn recv_reset(
    inner: &mut Inner,
    id: u32,
    reason: Reason,
    wakers: &mut Wakers,
) -> Result<(), ConnError> {
    let Some(key) = inner.ids.get(&id).copied() else {
        if !inner.is_past(id) {
            return Err(ConnError::Local(
                Reason::PROTOCOL_ERROR,
                "RST_STREAM on an idle stream",
            ));
        }
        return Ok(());
    };
    let s = &mut inner.streams[key];
    if s.error.is_some() {
        return Ok(());
    }
    if reason == Reason::NO_ERROR && s.recv_closed {
        // The peer's side is complete and it asks for no more of ours
        // (RFC 9113 section 8.1): what it sent stays readable.
        s.stopped = true;
        s.send_closed = true;
        s.send_ended = true;
        s.queued.clear();
        s.queued_trailers = None;
        s.wake(wakers);
        inner.closed_now(key, false, wakers);
        return Ok(());
    }
    s.error = Some(Error::Reset(reason, Initiator::Remote));
    if inner.is_server && inner.accept.iter().any(|(_, k)| *k == key) {
        // Reset before it was accepted: the rapid-reset pattern.
        inner.pending_accept_resets += 1;
        if inner.pending_accept_resets > inner.config.max_pending_accept_reset_streams {
            return Err(ConnError::Local(
                Reason::ENHANCE_YOUR_CALM,
                "too many streams reset before they were accepted",
            ));
        }
    }
    inner.ended(key, false, wakers);
    Ok(())
}

fn recv_settings(
    inner: &mut Inner,
    s: frame::Settings,
    wakers: &mut Wakers,
) -> Result<(), ConnError> {
    if let Some(true) = s.enable_push
        && !inner.is_server
    {
        return Err(ConnError::Local(
            Reason::PROTOCOL_ERROR,
            "server enabled push",
        ));
    }
    if let Some(size) = s.max_frame_size {
        inner.peer_max_frame_size = size;
    }
    if let Some(size) = s.header_table_size {
        // Our encoder keeps no table, but a peer that lowers its size expects
        // an update before the next block (RFC 7541 section 4.2).
        if size < inner.peer_table_size {
            inner.owed_table_size = Some(size);
        }
        inner.peer_table_size = size;
    }
    if let Some(max) = s.max_concurrent_streams {
        inner.peer_max_concurrent = max;
        inner.open_pending(wakers);
    }
    if let Some(window) = s.initial_window_size {
        let delta = i64::from(window) - i64::from(inner.peer_initial_window);
        inner.peer_initial_window = window;
        if delta != 0 {
            for (_, st) in inner.streams.iter_mut() {
                st.send_window += delta;
                if st.send_window > i64::from(MAX_WINDOW) {
                    return Err(ConnError::Local(
                        Reason::FLOW_CONTROL_ERROR,
                        "INITIAL_WINDOW_SIZE overflows a stream's window",
                    ));
                }
            }
            if delta > 0 {
                inner.window_opened(wakers);
            }
        }
    }
    Ok(())
}

fn recv_window_update(
    inner: &mut Inner,
    id: u32,
    increment: u32,
    wakers: &mut Wakers,
) -> Result<(), ConnError> {
    if id == 0 {
        inner.send_window += i64::from(increment);
        if inner.send_window > i64::from(MAX_WINDOW) {
            return Err(ConnError::Local(
                Reason::FLOW_CONTROL_ERROR,
                "connection window above 2^31-1",
            ));
        }
        inner.window_opened(wakers);
        return Ok(());
    }
    let Some(key) = inner.ids.get(&id).copied() else {
        if !inner.is_past(id) {
            return Err(ConnError::Local(
                Reason::PROTOCOL_ERROR,
                "WINDOW_UPDATE on an idle stream",
            ));
        }
        return Ok(());
    };
    let s = &mut inner.streams[key];
    if s.error.is_some() {
        return Ok(());
    }
    s.send_window += i64::from(increment);
    if s.send_window > i64::from(MAX_WINDOW) {
        return stream_error(inner, id, Reason::FLOW_CONTROL_ERROR, wakers);
    }
    if !s.queued.is_empty() || s.queued_trailers.is_some() {
        if !inner.flush_queued(key) {
            inner.blocked.retain(|&k| k != key);
        }
        inner.streams[key].wake(wakers);
        inner.closed_now(key, false, wakers);
    } else if s.wants_capacity {
        s.wants_capacity = false;
        s.wake(wakers);
    }
    Ok(())
}

fn recv_goaway(inner: &mut Inner, last: u32, reason: Reason, data: &[u8], wakers: &mut Wakers) {
    if !data.is_empty() {
        tracing::debug!(%reason, last, data = %String::from_utf8_lossy(data), "GOAWAY received");
    }
    inner.goaway_recv = Some((last, reason));
    // Streams of ours above `last` never reached the peer's application.
    let refused: Vec<usize> = inner
        .streams
        .iter()
        .filter(|(_, s)| s.local && (s.id > last || s.id == 0) && s.error.is_none())
        .map(|(k, _)| k)
        .collect();
    for key in refused {
        inner.streams[key].error = Some(Error::GoAway(reason, Initiator::Remote));
        inner.ended(key, false, wakers);
    }
    if reason != Reason::NO_ERROR {
        // The peer saw an error: the streams below `last` end with it too.
        inner.fail(Error::GoAway(reason, Initiator::Remote), wakers);
    }
}

/// A complete header block of stream `id`.
fn on_block(
    inner: &mut Inner,
    decoder: &mut Decoder,
    id: u32,
    end_stream: bool,
    self_dependent: bool,
    block: &[u8],
    wakers: &mut Wakers,
) -> Result<(), ConnError> {
    let max_list = inner.config.max_header_list_size as usize;
    let key = inner.ids.get(&id).copied();
    let kind = match key {
        None if inner.is_server => Kind::Request,
        None => Kind::Trailers,
        Some(key) => {
            let s = &inner.streams[key];
            if !inner.is_server && !s.got_head {
                Kind::Response
            } else {
                Kind::Trailers
            }
        }
    };
    let mut head = Box::<Head>::default();
    let decoded = decoder.decode(block, kind, max_list, &mut head);
    if let Err(DecodeError::Compression(why)) = decoded {
        return Err(ConnError::Local(Reason::COMPRESSION_ERROR, why));
    }
    let Some(key) = key else {
        return new_stream(inner, id, end_stream, self_dependent, head, decoded, wakers);
    };
    let s = &mut inner.streams[key];
    if let Some(e) = &s.error {
        let reset_here = e.is_local();
        return after_reset(inner, id, reset_here);
    }
    if s.recv_closed {
        return stream_error(inner, id, Reason::STREAM_CLOSED, wakers);
    }
    match decoded {
        Ok(()) => {}
        Err(DecodeError::TooLarge)
        | Err(DecodeError::Malformed(_))
        | Err(DecodeError::Compression(_)) => {
            return stream_error(inner, id, Reason::PROTOCOL_ERROR, wakers);
        }
    }
    if self_dependent {
        return stream_error(inner, id, Reason::PROTOCOL_ERROR, wakers);
    }
    if kind == Kind::Response {
        let status = head.status();
        if (100..200).contains(&status) {
            // Informational: a 101 is not allowed in HTTP/2, nor one that ends the stream.
            if status == 101 || end_stream {
                return stream_error(inner, id, Reason::PROTOCOL_ERROR, wakers);
            }
            return Ok(());
        }
        s.got_head = true;
        s.head = Some(head);
    } else {
        // Trailers: they end the stream (RFC 9113 section 8.1).
        if !end_stream {
            return stream_error(inner, id, Reason::PROTOCOL_ERROR, wakers);
        }
        if s.content_left.is_some_and(|left| left != 0) {
            return stream_error(inner, id, Reason::PROTOCOL_ERROR, wakers);
        }
        s.trailers = Some(head);
    }
    if end_stream {
        s.recv_closed = true;
    }
    s.wake(wakers);
    if end_stream {
        inner.closed_now(key, false, wakers);
    }
    Ok(())
}

/// A header block on a stream that is not open.
fn new_stream(
    inner: &mut Inner,
    id: u32,
    end_stream: bool,
    self_dependent: bool,
    head: Box<Head>,
    decoded: Result<(), DecodeError>,
    wakers: &mut Wakers,
) -> Result<(), ConnError> {
    if !inner.is_server {
        if id.is_multiple_of(2) {
            return Err(ConnError::Local(
                Reason::PROTOCOL_ERROR,
                "server-initiated stream",
            ));
        }
        if id < inner.next_local {
            return Ok(()); // a stream of ours that is gone: ignored
        }
        return Err(ConnError::Local(
            Reason::PROTOCOL_ERROR,
            "HEADERS on an idle stream",
        ));
    }
    if id.is_multiple_of(2) {
        return Err(ConnError::Local(
            Reason::PROTOCOL_ERROR,
            "even stream id from a client",
        ));
    }
    if id <= inner.last_peer {
        return match inner.recently_closed(id) {
            Some(true) => Ok(()),
            Some(false) => Err(ConnError::Local(
                Reason::STREAM_CLOSED,
                "HEADERS on a closed stream",
            )),
            None => Err(ConnError::Local(
                Reason::PROTOCOL_ERROR,
                "stream id lower than a previous one",
            )),
        };
    }
    inner.last_peer = id;
    if let Some(last) = inner.goaway_sent
        && id > last
    {
        return Ok(()); // after our GOAWAY: never processed
    }
    match decoded {
        Ok(()) => {}
        Err(DecodeError::TooLarge) => {
            // RFC 9113 section 10.5.1: answered 431 before anyone sees it;
            // the connection and its HPACK state carry on. A request still
            // open is asked to stop sending.
            let answer = Head::response(431);
            inner.write_block(id, true, |dst| {
                crate::hpack::encode(&answer, Kind::Response, None, dst);
            });
            if !end_stream {
                frame::put_rst(&mut inner.out, id, Reason::NO_ERROR);
            }
            inner.remember_closed(id, !end_stream);
            return Ok(());
        }
        Err(_) => {
            inner.remember_closed(id, true);
            return stream_error(inner, id, Reason::PROTOCOL_ERROR, wakers);
        }
    }
    if self_dependent || (end_stream && head.content_length().is_some_and(|n| n != 0)) {
        inner.remember_closed(id, true);
        return stream_error(inner, id, Reason::PROTOCOL_ERROR, wakers);
    }
    if inner.open_peer >= inner.config.max_concurrent_streams {
        frame::put_rst(&mut inner.out, id, Reason::REFUSED_STREAM);
        inner.remember_closed(id, true);
        return Ok(());
    }
    let mut s = Stream::new(
        id,
        false,
        inner.peer_initial_window,
        inner.config.initial_window_size,
    );
    s.recv_closed = end_stream;
    s.counted = true;
    s.content_left = head.content_length();
    let key = inner.streams.insert(s);
    inner.ids.insert(id, key);
    inner.open_peer += 1;
    inner.accept.push_back((head, key));
    if let Some(w) = inner.io_waker.take() {
        wakers.push(w);
    }
    Ok(())
}
