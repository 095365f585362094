//! The state of one connection, shared by the task that reads and writes its
//! socket ([`crate::driver`]) and the handles of its streams
//! ([`crate::stream::StreamRef`]), under one lock.
//!
//! Whoever sends writes the frame straight into the connection's output
//! buffer, as long as flow control lets it: a HEADERS block is encoded there
//! from the caller's [`Head`], a DATA payload copied there. There is no
//! queue of frames per stream and no scheduler between the caller and the
//! socket; only data beyond the peer's window waits, per stream, and the
//! socket task writes the whole buffer when it next runs, so that what many
//! calls sent meanwhile leaves in one write.
//!
//! Streams live in a slab; a map from stream id to slot is kept for the
//! frames that arrive. A stream is freed once it is closed both ways (or
//! reset) and its handle is gone; a handle dropped before that resets it.

use std::collections::VecDeque;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use bytes::{Bytes, BytesMut};
use slab::Slab;
use smallvec::SmallVec;

use crate::error::{Error, Initiator, Reason};
use crate::frame::{self, DEFAULT_MAX_FRAME_SIZE, DEFAULT_WINDOW};
use crate::head::Head;
use crate::hpack;

/// What a connection allows its peer and how it behaves; the same for both
/// ends but for the role.
#[derive(Clone, Debug)]
pub struct Config {
    /// Streams the peer may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// Each stream's receive window (SETTINGS_INITIAL_WINDOW_SIZE).
    pub initial_window_size: u32,
    /// The connection's receive window.
    pub connection_window_size: u32,
    /// The largest header list accepted (SETTINGS_MAX_HEADER_LIST_SIZE).
    pub max_header_list_size: u32,
    /// Streams the peer may reset before they are accepted, at once, before
    /// the connection is closed with ENHANCE_YOUR_CALM (rapid reset).
    pub max_pending_accept_reset_streams: usize,
    /// Streams this end may reset because the peer got them wrong, before
    /// the connection is closed with ENHANCE_YOUR_CALM.
    pub max_local_error_reset_streams: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_concurrent_streams: 1024,
            initial_window_size: DEFAULT_WINDOW,
            connection_window_size: DEFAULT_WINDOW,
            max_header_list_size: 16 << 10,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
        }
    }
}

/// The decoder's table size (SETTINGS_HEADER_TABLE_SIZE, never changed).
pub(crate) const HEADER_TABLE_SIZE: u32 = 4096;
/// How many bytes waiting to be written a connection takes before it gives a
/// sender no more flow-control capacity: a peer that does not read holds
/// this much of the proxy's memory, not what its window would allow.
pub(crate) const OUT_BUDGET: usize = 64 << 10;
/// Past this much output waiting, the connection reads no more frames from
/// the peer (what it would have to answer would only pile up).
pub(crate) const READ_PAUSE: usize = 256 << 10;
/// Recently closed streams remembered, so that frames arriving late for them
/// are told apart from frames on streams that never existed.
const CLOSED_MEMORY: usize = 64;

/// A `u32` stream id hashed with one keyed multiply: ids are chosen by the
/// peer, but a map bounded by the streams open at once cannot be flooded
/// into long chains by them (and the key differs per process).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(id_key());
        }
    }
    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(id_key()).rotate_left(29);
    }
}

fn id_key() -> u64 {
    use std::sync::OnceLock;
    static KEY: OnceLock<u64> = OnceLock::new();
    *KEY.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x9e37_79b9_7f4a_7c15);
        h.finish() | 1
    })
}

use std::hash::BuildHasher;

pub(crate) type IdMap = std::collections::HashMap<u32, usize, BuildHasherDefault<IdHasher>>;

/// Wakers to wake once the lock is released.
pub(crate) type Wakers = SmallVec<[Waker; 8]>;

/// One stream.
pub(crate) struct Stream {
    /// 0 while a client stream waits for a concurrency slot.
    pub(crate) id: u32,
    /// Handles alive (0 or 1; a request waiting to be accepted counts one).
    pub(crate) refs: u8,
    /// Opened by this end.
    pub(crate) local: bool,
    /// This end's side is over: its END_STREAM is written (or the stream
    /// was reset).
    pub(crate) send_closed: bool,
    /// The handle ended this end's side; data and END_STREAM may still wait
    /// for the peer's window (then `send_closed` follows once written).
    pub(crate) send_ended: bool,
    pub(crate) recv_closed: bool,
    /// Counted in the open streams of its side.
    pub(crate) counted: bool,
    /// How it ended, if not cleanly.
    pub(crate) error: Option<Error>,
    /// Client: the response head, until taken.
    pub(crate) head: Option<Box<Head>>,
    /// Client: a final response head arrived.
    pub(crate) got_head: bool,
    pub(crate) recv: VecDeque<Bytes>,
    pub(crate) trailers: Option<Box<Head>>,
    /// What the peer may still send on this stream.
    pub(crate) recv_window: i64,
    /// Taken by the handle, not yet given back with WINDOW_UPDATE.
    pub(crate) recv_released: u32,
    pub(crate) content_left: Option<u64>,
    /// What this end may still send.
    pub(crate) send_window: i64,
    /// DATA beyond the window, in order; END_STREAM with the last when
    /// `queued_end`.
    pub(crate) queued: VecDeque<Bytes>,
    pub(crate) queued_end: bool,
    /// An encoded trailer block to send after `queued`.
    pub(crate) queued_trailers: Option<BytesMut>,
    /// Client: an encoded request block waiting for a concurrency slot.
    pub(crate) pending: Option<(BytesMut, bool)>,
    /// The peer ended its side, then reset the stream with NO_ERROR: it
    /// wants no more of ours, and what it sent is still to be read.
    pub(crate) stopped: bool,
    /// Asked for capacity and got none: woken when some comes.
    pub(crate) wants_capacity: bool,
    pub(crate) waker: Option<Waker>,
}

impl Stream {
    pub(crate) fn new(id: u32, local: bool, send_window: u32, recv_window: u32) -> Self {
        Stream {
            id,
            refs: 1,
            local,
            send_closed: false,
            send_ended: false,
            recv_closed: false,
            counted: false,
            error: None,
            head: None,
            got_head: false,
            recv: VecDeque::new(),
            trailers: None,
            recv_window: i64::from(recv_window),
            recv_released: 0,
            content_left: None,
            send_window: i64::from(send_window),
            queued: VecDeque::new(),
            queued_end: false,
            queued_trailers: None,
            pending: None,
            stopped: false,
            wants_capacity: false,
            waker: None,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.error.is_some() || (self.send_closed && self.recv_closed)
    }

    pub(crate) fn wake(&mut self, wakers: &mut Wakers) {
        if let Some(w) = self.waker.take() {
            wakers.push(w);
        }
    }

    pub(crate) fn set_waker(&mut self, waker: &Waker) {
        match &self.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => self.waker = Some(waker.clone()),
        }
    }
}

/// A user PING (keepalive) in flight.
#[derive(Default)]
pub(crate) struct UserPing {
    pub(crate) sent: bool,
    pub(crate) answered: bool,
    pub(crate) waker: Option<Waker>,
}

/// The payload of this end's PINGs: one for keepalive, one for the first
/// step of a graceful shutdown.
pub(crate) const USER_PING: [u8; 8] = *b"h2fwd-ka";
pub(crate) const SHUTDOWN_PING: [u8; 8] = *b"h2fwd-gs";

pub(crate) struct Inner {
    pub(crate) is_server: bool,
    pub(crate) config: Config,
    /// Frames waiting to be written.
    pub(crate) out: BytesMut,
    /// What the socket task took from `out` and has not written yet.
    pub(crate) writing: usize,
    pub(crate) io_waker: Option<Waker>,
    // The peer's settings.
    pub(crate) peer_max_frame_size: u32,
    pub(crate) peer_initial_window: u32,
    pub(crate) peer_max_concurrent: u32,
    pub(crate) peer_table_size: u32,
    /// A dynamic table size update owed at the start of the next block.
    pub(crate) owed_table_size: Option<u32>,
    // Connection flow control.
    pub(crate) send_window: i64,
    pub(crate) recv_window: i64,
    pub(crate) recv_released: u32,
    // Streams.
    pub(crate) streams: Slab<Stream>,
    pub(crate) ids: IdMap,
    pub(crate) next_local: u32,
    pub(crate) last_peer: u32,
    pub(crate) open_peer: u32,
    pub(crate) open_local: u32,
    /// Client: streams waiting for a concurrency slot, in order.
    pub(crate) pending_open: VecDeque<usize>,
    /// Server: requests received and not yet accepted.
    pub(crate) accept: VecDeque<(Box<Head>, usize)>,
    /// Streams whose data waits for the connection's window or budget.
    pub(crate) blocked: Vec<usize>,
    /// Recently closed peer streams, and whether this end reset them.
    pub(crate) closed: VecDeque<(u32, bool)>,
    pub(crate) pending_accept_resets: usize,
    pub(crate) local_error_resets: usize,
    // Lifecycle.
    /// The last stream id of the GOAWAY this end sent.
    pub(crate) goaway_sent: Option<u32>,
    /// A graceful shutdown waits for the answer to its PING.
    pub(crate) shutdown_pinged: bool,
    pub(crate) goaway_recv: Option<(u32, Reason)>,
    /// The connection is over: every stream ends with this.
    pub(crate) failed: Option<Error>,
    /// `SendRequest` handles alive (client).
    pub(crate) senders: usize,
    pub(crate) ping: UserPing,
}

impl Inner {
    pub(crate) fn new(is_server: bool, config: Config) -> Self {
        Inner {
            is_server,
            out: BytesMut::with_capacity(256),
            writing: 0,
            io_waker: None,
            peer_max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            peer_initial_window: DEFAULT_WINDOW,
            peer_max_concurrent: u32::MAX,
            peer_table_size: HEADER_TABLE_SIZE,
            owed_table_size: None,
            send_window: i64::from(DEFAULT_WINDOW),
            recv_window: i64::from(config.connection_window_size.max(DEFAULT_WINDOW)),
            recv_released: 0,
            streams: Slab::new(),
            ids: IdMap::default(),
            next_local: if is_server { 2 } else { 1 },
            last_peer: 0,
            open_peer: 0,
            open_local: 0,
            pending_open: VecDeque::new(),
            accept: VecDeque::new(),
            blocked: Vec::new(),
            closed: VecDeque::new(),
            pending_accept_resets: 0,
            local_error_resets: 0,
            goaway_sent: None,
            shutdown_pinged: false,
            goaway_recv: None,
            failed: None,
            senders: 0,
            ping: UserPing::default(),
            config,
        }
    }

    /// The socket task's waker, when there is something for it to write.
    pub(crate) fn io_wake(&mut self) -> Option<Waker> {
        if self.out.is_empty() {
            return None;
        }
        self.io_waker.take()
    }

    /// The SETTINGS (and connection WINDOW_UPDATE) this end opens with.
    pub(crate) fn write_preface_settings(&mut self) {
        let c = &self.config;
        let mut params: SmallVec<[(u16, u32); 5]> = SmallVec::new();
        if !self.is_server {
            params.push((frame::setting::ENABLE_PUSH, 0));
        }
        params.push((
            frame::setting::MAX_CONCURRENT_STREAMS,
            c.max_concurrent_streams,
        ));
        params.push((frame::setting::INITIAL_WINDOW_SIZE, c.initial_window_size));
        params.push((frame::setting::MAX_HEADER_LIST_SIZE, c.max_header_list_size));
        frame::put_settings(&mut self.out, &params);
        if c.connection_window_size > DEFAULT_WINDOW {
            frame::put_window_update(&mut self.out, 0, c.connection_window_size - DEFAULT_WINDOW);
        }
    }

    /// Flow-control capacity a stream may use now: its window, the
    /// connection's, and the output budget; 0 while data of it waits.
    pub(crate) fn capacity(&self, s: &Stream) -> usize {
        if !s.queued.is_empty() || s.pending.is_some() {
            return 0;
        }
        let budget = OUT_BUDGET.saturating_sub(self.out.len() + self.writing);
        s.send_window
            .min(self.send_window)
            .max(0)
            .min(budget as i64) as usize
    }

    /// Writes an encoded block (from `encode`) as HEADERS (+ CONTINUATION),
    /// with the dynamic table size update owed, if any, in front.
    pub(crate) fn write_block(
        &mut self,
        stream: u32,
        end_stream: bool,
        encode: impl FnOnce(&mut BytesMut),
    ) {
        let owed = self.owed_table_size.take();
        frame::put_headers(
            &mut self.out,
            stream,
            end_stream,
            self.peer_max_frame_size,
            |dst| {
                if let Some(size) = owed {
                    hpack::encoder::encode_size_update(size as usize, dst);
                }
                encode(dst);
            },
        );
    }

    /// Sends DATA of stream `key` as far as the windows allow, queueing the
    /// rest; `end` goes with the last byte.
    pub(crate) fn send_data(&mut self, key: usize, mut data: Bytes, end: bool) {
        let max_frame = self.peer_max_frame_size as usize;
        let s = &mut self.streams[key];
        if !s.queued.is_empty() || s.pending.is_some() {
            s.queued.push_back(data);
            s.queued_end |= end;
            return;
        }
        loop {
            let room = s.send_window.min(self.send_window).max(0) as usize;
            let n = data.len().min(room).min(max_frame);
            if n == data.len() {
                frame::put_data(&mut self.out, s.id, &data, end);
                s.send_window -= n as i64;
                self.send_window -= n as i64;
                if end {
                    s.send_closed = true;
                }
                return;
            }
            if n == 0 {
                s.queued.push_back(data);
                s.queued_end |= end;
                if !self.blocked.contains(&key) {
                    self.blocked.push(key);
                }
                return;
            }
            let head = data.split_to(n);
            frame::put_data(&mut self.out, s.id, &head, false);
            s.send_window -= n as i64;
            self.send_window -= n as i64;
        }
    }

    /// Sends what stream `key` has queued, as far as the windows allow now.
    /// Returns whether it still has data waiting.
    pub(crate) fn flush_queued(&mut self, key: usize) -> bool {
        let max_frame = self.peer_max_frame_size as usize;
        loop {
            let s = &mut self.streams[key];
            let queued = s.queued.len();
            let Some(front) = s.queued.front_mut() else {
                break;
            };
            let room = s.send_window.min(self.send_window).max(0) as usize;
            let n = front.len().min(room).min(max_frame);
            if n == 0 && !front.is_empty() {
                return true;
            }
            let last_of_all = n == front.len() && queued == 1;
            let chunk = if n == front.len() {
                s.queued.pop_front().unwrap_or_default()
            } else {
                front.split_to(n)
            };
            let end = last_of_all && s.queued_end && s.queued_trailers.is_none();
            frame::put_data(&mut self.out, s.id, &chunk, end);
            s.send_closed |= end;
            s.send_window -= n as i64;
            self.send_window -= n as i64;
        }
        let s = &mut self.streams[key];
        if let Some(block) = s.queued_trailers.take() {
            let id = s.id;
            s.send_closed = true;
            self.write_block(id, true, |dst| dst.extend_from_slice(&block));
        }
        false
    }

    /// After a window grew: sends what waited and wakes who wants capacity.
    pub(crate) fn window_opened(&mut self, wakers: &mut Wakers) {
        let mut blocked = std::mem::take(&mut self.blocked);
        let mut done: SmallVec<[usize; 8]> = SmallVec::new();
        blocked.retain(|&key| {
            let waits = self.streams.contains(key) && self.flush_queued(key);
            if !waits && self.streams.contains(key) {
                done.push(key);
            }
            waits
        });
        self.blocked = blocked;
        for key in done {
            self.streams[key].wake(wakers);
            self.closed_now(key, false, wakers);
        }
        self.wake_capacity_waiters(wakers);
    }

    pub(crate) fn wake_capacity_waiters(&mut self, wakers: &mut Wakers) {
        if self.send_window <= 0 || self.out.len() + self.writing >= OUT_BUDGET {
            return;
        }
        for (_, s) in self.streams.iter_mut() {
            if s.wants_capacity {
                s.wants_capacity = false;
                s.wake(wakers);
            }
        }
    }

    /// Gives back receive window for `n` bytes taken from stream `key` (or
    /// only the connection's, for data that went nowhere).
    pub(crate) fn release(&mut self, key: Option<usize>, n: u32) {
        if n == 0 {
            return;
        }
        self.recv_released += n;
        let conn_threshold = self.config.connection_window_size.max(DEFAULT_WINDOW) / 2;
        if self.recv_released >= conn_threshold {
            frame::put_window_update(&mut self.out, 0, self.recv_released);
            self.recv_window += i64::from(self.recv_released);
            self.recv_released = 0;
        }
        let Some(key) = key else { return };
        let threshold = self.config.initial_window_size / 2;
        let s = &mut self.streams[key];
        if s.recv_closed {
            return;
        }
        s.recv_released += n;
        if s.recv_released >= threshold {
            frame::put_window_update(&mut self.out, s.id, s.recv_released);
            s.recv_window += i64::from(s.recv_released);
            s.recv_released = 0;
        }
    }

    /// Remembers a closed peer stream (bounded).
    pub(crate) fn remember_closed(&mut self, id: u32, reset_here: bool) {
        if self.closed.len() == CLOSED_MEMORY {
            self.closed.pop_front();
        }
        self.closed.push_back((id, reset_here));
    }

    /// Whether `id` is a recently closed stream, and whether it was reset here.
    pub(crate) fn recently_closed(&self, id: u32) -> Option<bool> {
        self.closed
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|&(_, reset)| reset)
    }

    /// Whether `id` (not open) belongs to a stream that was opened and has
    /// closed, as opposed to one never opened (idle).
    pub(crate) fn is_past(&self, id: u32) -> bool {
        let peer_initiated = (id % 2 == 1) == self.is_server;
        if peer_initiated {
            id <= self.last_peer
        } else {
            id < self.next_local
        }
    }

    /// Resets stream `key` from this end: RST_STREAM (unless it was never
    /// written), its queues dropped, its handle told.
    pub(crate) fn reset_local(&mut self, key: usize, reason: Reason, wakers: &mut Wakers) {
        let s = &mut self.streams[key];
        if s.error.is_some() {
            return;
        }
        if s.id != 0 && !(s.send_closed && s.recv_closed) {
            frame::put_rst(&mut self.out, s.id, reason);
        }
        s.error = Some(Error::Reset(reason, Initiator::Local));
        self.ended(key, true, wakers);
    }

    /// A stream ended abnormally (reset either way, or its connection
    /// failed): data not taken goes back to the connection's window, queues
    /// go, the handle is told.
    pub(crate) fn ended(&mut self, key: usize, reset_here: bool, wakers: &mut Wakers) {
        let s = &mut self.streams[key];
        let unread: usize = s.recv.iter().map(Bytes::len).sum();
        s.recv.clear();
        s.queued.clear();
        s.queued_trailers = None;
        s.send_closed = true;
        s.send_ended = true;
        s.recv_closed = true;
        s.wake(wakers);
        if s.pending.take().is_some() {
            self.pending_open.retain(|&k| k != key);
        }
        self.release(None, unread as u32);
        self.closed_now(key, reset_here, wakers);
    }

    /// Bookkeeping once a stream may have closed: the concurrency counts, a
    /// waiting stream opened in its place, and the slot freed when no handle
    /// is left.
    pub(crate) fn closed_now(&mut self, key: usize, reset_here: bool, wakers: &mut Wakers) {
        let s = &mut self.streams[key];
        if !s.is_closed() {
            return;
        }
        if s.counted {
            s.counted = false;
            let (id, local) = (s.id, s.local);
            if local {
                self.open_local -= 1;
                self.open_pending(wakers);
            } else {
                self.open_peer -= 1;
                self.remember_closed(id, reset_here);
            }
        }
        self.free_if_unused(key);
    }

    pub(crate) fn free_if_unused(&mut self, key: usize) {
        let s = &self.streams[key];
        if s.refs == 0 && s.is_closed() {
            if s.id != 0 {
                self.ids.remove(&s.id);
            }
            self.streams.remove(key);
            self.blocked.retain(|&k| k != key);
        }
    }

    /// The handle of stream `key` is gone.
    pub(crate) fn drop_ref(&mut self, key: usize, wakers: &mut Wakers) {
        let s = &mut self.streams[key];
        s.refs -= 1;
        if s.refs > 0 {
            return;
        }
        if s.is_closed() {
            self.free_if_unused(key);
        } else if s.send_ended && !s.send_closed && s.recv_closed {
            // Its end is written, but for data waiting for the peer's
            // window: the stream lives on until that is sent, then goes.
        } else {
            // Nobody is left to read or write it. A server whose answer is
            // complete (or waits to be) asks the client to stop sending
            // (RFC 9113 section 8.1); anything else is cancelled.
            let reason = if s.send_ended {
                Reason::NO_ERROR
            } else {
                Reason::CANCEL
            };
            self.reset_local(key, reason, wakers);
        }
    }

    /// Client: gives stream `key` the next id and a concurrency slot, as its
    /// HEADERS are about to be written (so ids go out in order).
    pub(crate) fn open_local_stream(&mut self, key: usize, end_stream: bool) -> u32 {
        let id = self.next_local;
        self.next_local += 2;
        self.open_local += 1;
        let s = &mut self.streams[key];
        s.id = id;
        s.counted = true;
        s.send_closed = end_stream;
        self.ids.insert(id, key);
        id
    }

    /// Client: opens waiting streams while the peer's limit allows.
    pub(crate) fn open_pending(&mut self, _wakers: &mut Wakers) {
        while self.open_local < self.peer_max_concurrent && self.goaway_recv.is_none() {
            let Some(key) = self.pending_open.pop_front() else {
                break;
            };
            let Some((block, end_stream)) = self.streams[key].pending.take() else {
                continue;
            };
            let id = self.open_local_stream(key, end_stream);
            self.write_block(id, end_stream, |dst| dst.extend_from_slice(&block));
            if !self.streams[key].queued.is_empty() && self.flush_queued(key) {
                self.blocked.push(key);
            }
        }
    }

    /// Ends the connection: every stream with `error`, wakers told.
    pub(crate) fn fail(&mut self, error: Error, wakers: &mut Wakers) {
        if self.failed.is_some() {
            return;
        }
        self.failed = Some(error.clone());
        let keys: SmallVec<[usize; 32]> = self.streams.iter().map(|(k, _)| k).collect();
        for key in keys {
            let s = &mut self.streams[key];
            if !s.is_closed() {
                s.error = Some(error.clone());
                self.ended(key, false, wakers);
            }
        }
        self.accept.clear();
        if let Some(w) = self.ping.waker.take() {
            wakers.push(w);
        }
        if let Some(w) = self.io_waker.take() {
            wakers.push(w);
        }
    }

    /// A connection error of this end: GOAWAY with `reason`, then the end.
    pub(crate) fn go_away(&mut self, reason: Reason, debug: &str, wakers: &mut Wakers) {
        if self.failed.is_some() {
            return;
        }
        frame::put_goaway(&mut self.out, self.last_peer, reason, debug.as_bytes());
        self.goaway_sent = Some(self.last_peer);
        self.fail(Error::GoAway(reason, Initiator::Local), wakers);
    }
}

/// The lock around [`Inner`].
pub(crate) struct Shared {
    inner: Mutex<Inner>,
}

impl Shared {
    pub(crate) fn new(inner: Inner) -> Self {
        Shared {
            inner: Mutex::new(inner),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Wakes what a locked section collected, once the lock is gone (by
/// reference: moving the inline vector would copy all its slots).
#[inline]
pub(crate) fn wake_all(wakers: &mut Wakers) {
    for w in wakers.drain(..) {
        w.wake();
    }
}
