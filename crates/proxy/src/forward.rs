//! One call through the proxy, from the client's stream to a host and back.
//!
//! 1. **Admit.** Past the cluster's `max_requests` or `max_pending_requests`
//!    the call is refused at once with UNAVAILABLE (circuit breaking).
//! 2. **Open.** Pick a host, lease its connection, open a stream with the
//!    request's headers. A failure here means the call never reached a host
//!    (connect failure, connection refusing new streams after GOAWAY), so the
//!    next host is tried, each host at most once.
//! 3. **Exchange.** Two pipes run side by side in the call's task: the request
//!    body (client to host) and the response (headers, body, trailers; host to
//!    client). Each moves DATA frames as they come, with HTTP/2 flow control on
//!    both sides, so a slow reader slows its writer instead of filling memory.
//!    Messages are never decoded.
//! 4. **Retry or commit.** Until the response head is forwarded, the request
//!    bytes sent so far are kept (up to `retry.buffer_limit`). If the host
//!    refused the stream (REFUSED_STREAM, or it was above a GOAWAY's last
//!    stream id), the attempt provably never reached the application and goes
//!    to another host, always. If the host reset or lost the stream, or
//!    answered UNAVAILABLE trailers-only, the attempt is retried elsewhere when
//!    `retry.retry_on` says so and the retry budget allows. Once a response
//!    byte is forwarded the call is committed to that host.
//! 5. **End.** Resets travel through: a client's RST_STREAM cancels the
//!    upstream stream; an upstream reset resets the client's stream. The
//!    deadline (`grpc-timeout`, capped by `request_timeout`) ends the call with
//!    DEADLINE_EXCEEDED, and `idle_timeout` ends a call with no frames.
//!
//! Each attempt is counted once in its host's statistics (from `grpc-status`
//! in headers *or* trailers) and reported to outlier detection; the call is
//! written once to the access log.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use h2fwd::{Head, Reason, StreamRef};
use rand::RngCore;
use smallvec::SmallVec;
use tokio::time::Instant;
use tokio_util::sync::WaitForCancellationFuture;

use crate::access_log::{AccessLog, Entry};
use crate::cluster::{Cluster, RequestGuard, Stat};
use crate::config::{RetryConfig, RetryOn};
use crate::grpc::{self, code};
use crate::histogram::Histogram;
use crate::outlier::{self, Verdict};
use crate::route::RouteTable;
use crate::trace::{self, Traces};
use crate::upstream::UpstreamError;

/// Per-listener statistics, named as Envoy names them under `http.<listener>.`.
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub downstream_cx_total: Stat,
    pub downstream_cx_active: Stat,
    pub downstream_cx_protocol_error: Stat,
    pub downstream_rq_total: Stat,
    pub downstream_rq_active: Stat,
    pub downstream_rq_2xx: Stat,
    pub downstream_rq_4xx: Stat,
    pub downstream_rq_5xx: Stat,
    pub downstream_rq_timeout: Stat,
    pub downstream_rq_rx_reset: Stat,
    /// Calls reset because the client kept its window shut while the proxy
    /// had bytes for it, for longer than `stream_stall_timeout`.
    pub downstream_rq_stalled: Stat,
    /// Requests the client reset before a host was asked: never sent upstream.
    pub downstream_rq_reset_before_upstream: Stat,
    /// Client connections closed for resetting most of their streams early
    /// (HTTP/2 rapid reset, CVE-2023-44487).
    pub downstream_cx_premature_reset: Stat,
    /// Client connections closed because they did not answer a PING.
    pub downstream_cx_keepalive_timeout: Stat,
    /// Requests that matched no route (answered UNIMPLEMENTED, or 404).
    pub no_route: Stat,
    /// Whole call time as the client sees it (`downstream_rq_time`).
    pub downstream_rq_time: Histogram,
    /// gRPC-Web, HTTP/1.1 and CORS (listeners with `grpc_web`).
    pub web: crate::grpc_web::WebStats,
}

impl ListenerStats {
    /// Counts an answer's `:status` in its class (none when none was sent).
    pub(crate) fn count_response(&self, status: u16) {
        match status {
            200..=299 => self.downstream_rq_2xx.inc(),
            400..=499 => self.downstream_rq_4xx.inc(),
            500..=599 => self.downstream_rq_5xx.inc(),
            _ => {}
        }
    }
}

/// A stream reset by its client within this long of its start is premature
/// (Envoy's `premature_reset_min_stream_lifetime_seconds`).
pub const PREMATURE_RESET_LIFETIME: Duration = Duration::from_secs(1);
/// The connection-level rapid-reset check starts once a client opened this
/// many streams (Envoy's `premature_reset_total_stream_count` is 500; lower
/// here, so that fewer of an attacker's resets reach the hosts).
pub const PREMATURE_RESET_MIN_STREAMS: u32 = 100;
/// How far a call reads a host's answer ahead of what its client has taken.
/// With the client's window shut this is what the call still holds once the
/// host has finished (the host's stream and the cluster's slot are free).
const STREAM_READ_AHEAD: usize = 64 * 1024;

/// What the calls of one client connection share, and what they are charged.
#[derive(Debug)]
pub struct ConnState {
    /// Bytes read from hosts and not yet taken by this client (all its calls).
    buffered: AtomicUsize,
    /// `per_connection_buffer_limit_bytes`.
    buffer_limit: usize,
    /// Streams this client opened, and how many it reset prematurely.
    streams: AtomicU32,
    premature_resets: AtomicU32,
    /// Where this connection's gRPC-Web calls go (opened on the first).
    pub(crate) bridge: crate::grpc_web::BridgeSlot,
}

impl ConnState {
    pub fn new(buffer_limit: usize) -> Self {
        ConnState {
            buffered: AtomicUsize::new(0),
            buffer_limit,
            streams: AtomicU32::new(0),
            premature_resets: AtomicU32::new(0),
            bridge: crate::grpc_web::BridgeSlot::default(),
        }
    }

    /// Whether the client resets most of its streams prematurely: the
    /// connection is then closed (Envoy's premature-reset rule).
    pub fn is_rapid_reset(&self) -> Option<(u32, u32)> {
        let streams = self.streams.load(Relaxed);
        let resets = self.premature_resets.load(Relaxed);
        (streams >= PREMATURE_RESET_MIN_STREAMS && resets * 2 >= streams)
            .then_some((resets, streams))
    }

    /// A stream of this connection began (gRPC-Web calls, which do not
    /// take [`handle`]'s path, say so themselves).
    pub(crate) fn stream_opened(&self) {
        self.streams.fetch_add(1, Relaxed);
    }

    /// The client reset a stream that began at `started`: premature when
    /// within [`PREMATURE_RESET_LIFETIME`].
    pub(crate) fn stream_reset(&self, started: Instant) {
        if started.elapsed() < PREMATURE_RESET_LIFETIME {
            self.premature_resets.fetch_add(1, Relaxed);
        }
    }

    fn has_room(&self) -> bool {
        self.buffered.load(Relaxed) < self.buffer_limit
    }
}

/// What a listener's connections and calls need: one version of the
/// listener's settings, read by each connection when it is accepted. The
/// routes are read by each call (they change on reload for calls already
/// on open connections too); the statistics outlive reloads.
#[derive(Debug)]
pub struct Ingress {
    pub listener: String,
    pub routes: Arc<ArcSwap<RouteTable>>,
    pub access_log: AccessLog,
    pub stats: Arc<ListenerStats>,
    /// Cancelled when the drain deadline passes: calls still running end with
    /// UNAVAILABLE instead of being cut without a word.
    pub cut: tokio_util::sync::CancellationToken,
    /// TLS termination, when the listener has a certificate.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// Add an `x-request-id` to requests that have none.
    pub generate_request_id: bool,
    /// Reset a call whose client keeps its window shut for this long while
    /// the proxy has bytes for it; `None`: never.
    pub stream_stall_timeout: Option<Duration>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS towards clients.
    pub max_concurrent_streams: u32,
    /// `per_connection_buffer_limit_bytes`.
    pub per_connection_buffer_limit: usize,
    /// PING client connections: interval and timeout.
    pub keepalive: Option<(Duration, Duration)>,
    /// Lines about protocol abuse (rapid reset, unanswered PINGs), at most
    /// one per interval for the whole listener.
    pub abuse_log: Arc<LogLimiter>,
    /// Span export, when `traces` is configured.
    pub traces: Option<Traces>,
    /// gRPC-Web (and HTTP/1.1) on this listener, when configured.
    pub web: Option<Arc<crate::grpc_web::WebSettings>>,
}

/// Lets a kind of log line through at most once per interval, counting what
/// it held back, so that an attack (thousands of connections a second) costs
/// one line every few seconds, not one per connection.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    held_back: AtomicU64,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            last: Mutex::new(None),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may go out now.
    pub fn allow(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.interval) {
            self.held_back.fetch_add(1, Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.held_back.swap(0, Relaxed))
    }
}

/// How one attempt (or the whole call) ended.
#[derive(Debug, Default)]
struct Outcome {
    /// `:status` sent to the client; 0 when none was sent.
    response_code: u16,
    /// `grpc-status` from the response headers or trailers.
    grpc_status: Option<u16>,
    flags: &'static str,
    /// The host failed the call: reset, connection lost.
    upstream_failed: bool,
    timed_out: bool,
    /// The client went away or cancelled.
    client_gone: bool,
    /// The client kept its window shut past `stream_stall_timeout`.
    stalled: bool,
}

impl Outcome {
    fn client_gone() -> Self {
        Outcome {
            flags: "DC",
            client_gone: true,
            ..Outcome::default()
        }
    }
}

/// The W3C trace context header.
const TRACEPARENT: &[u8] = b"traceparent";

/// Handles one client stream to the end: `head` is its request, `stream`
/// carries the request's body one way and the answer the other.
pub async fn handle(
    ingress: Arc<Ingress>,
    mut head: Box<Head>,
    stream: StreamRef,
    conn: &ConnState,
) {
    if let Some(web) = &ingress.web
        && let kind = crate::grpc_web::classify_head(&head)
        && kind != crate::grpc_web::Kind::Other
    {
        // A browser's call over HTTP/2: translated, then back through the
        // listener as gRPC (see crate::grpc_web).
        let web = Arc::clone(web);
        return Box::pin(crate::grpc_web::handle_h2(
            &ingress, &web, kind, head, stream, conn,
        ))
        .await;
    }
    let started = Instant::now();
    conn.streams.fetch_add(1, Relaxed);
    let start_time = SystemTime::now();
    let stats = Arc::clone(&ingress.stats);
    stats.downstream_rq_total.inc();
    stats.downstream_rq_active.inc();

    let fields = read_request_fields(&mut head, ingress.generate_request_id);
    let mut record = Record::default();
    let grpc = fields.grpc;
    let context = ingress.traces.as_ref().map(|_| {
        // The host is told the proxy's span, so its spans hang under it.
        let context = trace::Context::from_header(head.get(TRACEPARENT));
        head.remove(TRACEPARENT);
        head.append(TRACEPARENT, context.header().as_bytes());
        context
    });
    let table = ingress.routes.load_full();
    let Some(route) = table.find(&head) else {
        stats.no_route.inc();
        let message = format!("no route for {}", head.path_only());
        let outcome = local(&stream, grpc, code::UNIMPLEMENTED, &message, "NR", false);
        tracing::debug!(path = head.path_only(), "no route");
        let _ = finish(
            &ingress, &head, &outcome, &record, started, start_time, conn,
        );
        drain_request(&stream).await;
        return;
    };
    let cluster = route.pick();
    let grpc_deadline = fields.timeout.map(|timeout| started + timeout);
    let cap = route
        .timeout
        .unwrap_or(cluster.config.request_timeout)
        .map(|t| started + t);
    let deadline = match (grpc_deadline, cap) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };

    let mut call = Call {
        cluster,
        retry: route.retry.as_ref().unwrap_or(&cluster.config.retry),
        grpc,
        deadline,
        idle_timeout: cluster.config.idle_timeout,
        cut: &ingress.cut,
        started,
        stream: &stream,
        record: &mut record,
        conn,
        stall_timeout: ingress.stream_stall_timeout,
    };
    // Boxed: the call's state machine is large, and the connection's set of
    // calls holding it inline would copy it in and out. Boxed in a statement
    // of its own: a temporary lives to the end of its statement, so one
    // boxed where it is awaited would still take its whole size in this
    // future too (5.5 KB instead of 1.4 KB, copied into the set's box).
    let run = Box::pin(call.run(&head));
    let outcome = run.await;
    let elapsed = finish(
        &ingress, &head, &outcome, &record, started, start_time, conn,
    );
    cluster
        .methods
        .record(head.path_only(), outcome.grpc_status, elapsed);
    if let (Some(traces), Some(context)) = (&ingress.traces, context) {
        traces.record(trace::CallSpan {
            context,
            path: head.path_only().to_owned(),
            start: start_time,
            end: start_time + elapsed,
            listener: ingress.listener.clone(),
            cluster: cluster.name().to_owned(),
            host: record.upstream,
            grpc_status: outcome.grpc_status,
            http_status: outcome.response_code,
            retries: record.retries,
            flags: outcome.flags,
        });
    }
    drain_request(&stream).await;
}

/// Counts a finished call for its listener and writes its access-log line;
/// returns how long the call took.
#[must_use]
fn finish(
    ingress: &Ingress,
    head: &Head,
    outcome: &Outcome,
    record: &Record,
    started: Instant,
    start_time: SystemTime,
    conn: &ConnState,
) -> Duration {
    let elapsed = started.elapsed();
    let stats = &ingress.stats;
    stats.downstream_rq_time.record(elapsed);
    stats.count_response(outcome.response_code);
    if outcome.timed_out {
        stats.downstream_rq_timeout.inc();
    }
    if outcome.client_gone {
        stats.downstream_rq_rx_reset.inc();
        if record.upstream.is_none() {
            stats.downstream_rq_reset_before_upstream.inc();
        }
        if started.elapsed() < PREMATURE_RESET_LIFETIME {
            conn.premature_resets.fetch_add(1, Relaxed);
        }
    }
    if outcome.stalled {
        stats.downstream_rq_stalled.inc();
    }
    stats.downstream_rq_active.dec();
    if ingress.access_log.is_on() {
        let mut entry = Entry::new(start_time, head);
        entry.response_code = outcome.response_code;
        entry.flags = outcome.flags;
        entry.duration_ms = elapsed.as_millis() as u64;
        entry.upstream = record.upstream;
        entry.bytes_received = record.bytes_received;
        entry.bytes_sent = record.bytes_sent;
        entry.upstream_service_time_ms = record.upstream_service_time_ms;
        ingress.access_log.log(&entry);
    }
    elapsed
}

/// How much of a request [`drain_request`] reads after its response is complete.
const DRAIN_LIMIT: usize = 64 * 1024;
/// How long [`drain_request`] waits for the rest of a request.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads the rest of a request whose response is complete (answered before
/// the client finished sending: a local UNAVAILABLE, a host that answered
/// early), so that its stream closes cleanly instead of with a reset.
///
/// Dropped unread, the stream is reset, and the client's frames already on
/// the way arrive on a reset stream: ignored, but work for both ends, and a
/// client (or an intermediary) that counts resets may take them for abuse.
/// A client that sends more than [`DRAIN_LIMIT`] or stalls for
/// [`DRAIN_TIMEOUT`] is reset after all (NO_ERROR: its answer is complete).
async fn drain_request(stream: &StreamRef) {
    if stream.is_end_stream() {
        return;
    }
    let drain = async {
        let mut left = DRAIN_LIMIT;
        while let Some(chunk) = poll_fn(|cx| stream.poll_data(cx)).await {
            let Ok((chunk, _)) = chunk else { return };
            left = left.saturating_sub(chunk.len());
            if left == 0 {
                return;
            }
        }
        let _ = poll_fn(|cx| stream.poll_trailers(cx)).await;
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
}

/// What a call records for its access-log line as it goes (no allocation:
/// the line itself is only built when the access log is on).
#[derive(Debug, Default)]
struct Record {
    upstream: Option<SocketAddr>,
    bytes_received: u64,
    bytes_sent: u64,
    upstream_service_time_ms: Option<u64>,
    /// Attempts made again on another host.
    retries: u32,
}

/// Counts one attempt for its host: success or error, and outlier detection.
fn record(cluster: &Cluster, guard: &RequestGuard, outcome: &Outcome) {
    let (cs, host) = (&cluster.stats, &*guard.host);
    cs.upstream_rq_active.dec();
    if outcome.client_gone && !outcome.upstream_failed {
        return; // nobody's fault but the client's
    }
    let took = guard.started.elapsed();
    host.stats.rq_time.record(took);
    cs.upstream_rq_time.record(took);
    let failed = outcome.upstream_failed
        || outcome.timed_out
        || match outcome.grpc_status {
            Some(status) => grpc::is_server_error(status),
            None => outcome.response_code >= 500,
        };
    if outcome.timed_out {
        host.stats.rq_timeout.inc();
        cs.upstream_rq_timeout.inc();
    }
    if failed {
        host.stats.rq_error.inc();
        cs.upstream_rq_error.inc();
    } else {
        host.stats.rq_success.inc();
        cs.upstream_rq_success.inc();
    }
    // Only what says the host itself is in trouble counts against it: a lost
    // stream or connection, UNAVAILABLE, or a deadline that passed while the
    // host had the call (a frozen host answers nothing at all).
    let host_trouble = outcome.upstream_failed
        || outcome.timed_out
        || outcome.grpc_status == Some(code::UNAVAILABLE);
    outlier::record(
        cluster,
        host,
        if host_trouble {
            Verdict::Failure
        } else {
            Verdict::Success
        },
    );
}

/// What the proxy reads of a request's own fields.
#[derive(Debug, PartialEq)]
struct RequestFields {
    /// Whether its content type is gRPC's.
    grpc: bool,
    /// The client's `grpc-timeout`, when its first is valid.
    timeout: Option<Duration>,
}

/// Reads a request's content type and `grpc-timeout`, and keeps its
/// `x-request-id` (adding one when `generate_id`) marked never-indexed.
///
/// One pass over the fields, comparing names (a request carries a handful);
/// each reads the first value of its name.
fn read_request_fields(head: &mut Head, generate_id: bool) -> RequestFields {
    let mut content_type = None;
    let mut timeout = None;
    let mut has_id = false;
    for (name, value) in head.iter() {
        match name {
            b"content-type" => {
                content_type.get_or_insert(grpc::is_grpc_content_type(value));
            }
            b"grpc-timeout" => {
                timeout.get_or_insert_with(|| common::parse_grpc_timeout(value));
            }
            b"x-request-id" => has_id = true,
            _ => {}
        }
    }
    if has_id {
        head.set_sensitive(b"x-request-id");
    } else if generate_id {
        head.append_sensitive(b"x-request-id", &new_request_id());
    }
    RequestFields {
        grpc: content_type.unwrap_or(false),
        timeout: timeout.flatten(),
    }
}

/// A UUID v4, as Envoy generates for `x-request-id`. Sent as a never-indexed
/// literal: it is new on every call, and marked so an intermediary that
/// indexes does not fill its table with it either.
fn new_request_id() -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut id = [0u8; 36];
    let mut i = 0;
    for (n, byte) in b.iter().enumerate() {
        if matches!(n, 4 | 6 | 8 | 10) {
            id[i] = b'-';
            i += 1;
        }
        id[i] = HEX[usize::from(byte >> 4)];
        id[i + 1] = HEX[usize::from(byte & 0xf)];
        i += 2;
    }
    id
}

/// The request as the client has sent it so far, kept so that an attempt can
/// be replayed on another host until the call commits to one.
#[derive(Debug)]
struct Replay {
    chunks: SmallVec<[Bytes; 2]>,
    bytes: usize,
    limit: usize,
    /// The client finished its request (END_STREAM seen).
    ended: bool,
    trailers: Option<Head>,
    /// False once more than `limit` was sent or a response was forwarded:
    /// from then on nothing is kept and the call cannot be retried.
    kept: bool,
}

impl Replay {
    fn new(limit: usize, ended: bool) -> Self {
        Replay {
            chunks: SmallVec::new(),
            bytes: 0,
            limit,
            ended,
            trailers: None,
            kept: true,
        }
    }

    fn data(&mut self, data: &Bytes, end: bool) {
        if self.kept {
            if self.bytes + data.len() > self.limit {
                self.forget();
            } else {
                self.bytes += data.len();
                self.chunks.push(data.clone());
            }
        }
        self.ended |= end;
    }

    fn end(&mut self, trailers: Option<&Head>) {
        if self.kept {
            self.trailers = trailers.cloned();
        }
        self.ended = true;
    }

    fn forget(&mut self) {
        self.kept = false;
        self.chunks = SmallVec::new();
        self.trailers = None;
    }

    /// Whether the request headers alone are the whole request.
    fn headers_only(&self) -> bool {
        self.ended && self.chunks.is_empty() && self.trailers.is_none()
    }

    /// Sends what was kept on a fresh stream.
    fn replay(&self, send: &StreamRef) -> Result<(), h2fwd::Error> {
        for chunk in &self.chunks {
            send.send_data(chunk.clone(), false)?;
        }
        if self.ended && !self.headers_only() {
            match &self.trailers {
                Some(trailers) => send.send_trailers(trailers)?,
                None => send.send_data(Bytes::new(), true)?,
            }
        }
        Ok(())
    }
}

/// Why an attempt is worth trying again elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// The host refused the stream: it never reached the application.
    Refused,
    /// The stream or connection was lost before any response byte.
    Reset,
    /// UNAVAILABLE before any response byte was forwarded.
    Unavailable,
}

/// Decides, when a head arrives, whether a failed attempt may be retried.
struct RetryGate<'a> {
    cluster: &'a Cluster,
    policy: &'a RetryConfig,
    replay: &'a Mutex<Replay>,
    /// Hosts tried so far, this one included.
    tried: usize,
    /// Retries already made for `retry_on` conditions.
    retries: u32,
}

impl RetryGate<'_> {
    fn allows(&self, why: Retry) -> bool {
        if !self
            .replay
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .kept
        {
            return false;
        }
        let hosts = self.cluster.hosts().len();
        if self.tried >= hosts.min(MAX_ATTEMPTS) {
            return false;
        }
        if why == Retry::Refused {
            return true;
        }
        let policy = self.policy;
        let wanted = match why {
            Retry::Reset => RetryOn::Reset,
            _ => RetryOn::Unavailable,
        };
        if !policy.retry_on.contains(&wanted) {
            return false;
        }
        let stats = &self.cluster.stats;
        if self.retries >= policy.num_retries {
            stats.upstream_rq_retry_limit_exceeded.inc();
            return false;
        }
        // The budget: retries in flight stay a small share of the calls in flight.
        let budget = (stats.upstream_rq_active.get() as f64 * policy.budget_percent / 100.0)
            .max(f64::from(policy.min_retry_concurrency));
        if stats.upstream_rq_retry_active.get() as f64 >= budget {
            stats.upstream_rq_retry_overflow.inc();
            return false;
        }
        true
    }
}

/// At most this many hosts are tried for one call.
const MAX_ATTEMPTS: usize = 5;

/// The hosts a call has tried, kept inline (no allocation per call).
type Tried = SmallVec<[SocketAddr; MAX_ATTEMPTS]>;

/// Why no stream could be opened.
enum OpenError {
    /// No host at all (empty cluster).
    NoHost,
    /// Every host tried failed before the call reached it.
    Unreachable(UpstreamError),
    /// `max_pending_requests` calls are already waiting for a stream.
    Overflow,
}

struct Opened {
    guard: RequestGuard,
    /// The host's stream.
    upstream: StreamRef,
}

/// How one attempt ended.
enum Attempt {
    /// The call is over (committed to this host, or failed for good).
    Done(Outcome),
    /// Try another host; the outcome is this attempt's, for its host.
    Retry(Retry, Outcome),
}

/// Decrements a gauge when dropped, however the call ends.
struct GaugeSlot<'a>(&'a Stat);

/// What a call holds of its cluster and its current host: the
/// `max_requests` slot and the attempt's place on the host. Given back as
/// soon as the host has sent its whole answer, even while the client has not
/// yet read it, so that a client that stops reading holds only its own
/// buffered bytes (and its own stream), never the cluster's capacity.
struct Held<'a> {
    cluster: &'a Cluster,
    slots: Mutex<(Option<GaugeSlot<'a>>, Option<RequestGuard>)>,
}

impl<'a> Held<'a> {
    fn new(cluster: &'a Cluster, admitted: GaugeSlot<'a>) -> Self {
        Held {
            cluster,
            slots: Mutex::new((Some(admitted), None)),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, (Option<GaugeSlot<'a>>, Option<RequestGuard>)> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn start_attempt(&self, guard: RequestGuard) {
        self.slots().1 = Some(guard);
    }

    /// Counts the current attempt for its host (once) and lets go of the host.
    fn finish_attempt(&self, outcome: &Outcome) {
        let guard = self.slots().1.take();
        if let Some(guard) = guard {
            record(self.cluster, &guard, outcome);
        }
    }

    /// The host's answer began, `waited` after the request was sent.
    fn first_byte(&self, waited: Duration) {
        if let Some(guard) = &self.slots().1 {
            guard.host.stats.first_byte_time.record(waited);
            self.cluster
                .stats
                .upstream_rq_first_byte_time
                .record(waited);
        }
    }

    /// The host has answered in full: count it and free the cluster's slot.
    fn upstream_done(&self, outcome: &Outcome) {
        self.finish_attempt(outcome);
        self.slots().0 = None;
    }
}

impl Drop for GaugeSlot<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

struct Call<'a> {
    cluster: &'a Arc<Cluster>,
    /// The route's retry policy, or the cluster's.
    retry: &'a RetryConfig,
    grpc: bool,
    deadline: Option<Instant>,
    idle_timeout: Option<Duration>,
    cut: &'a tokio_util::sync::CancellationToken,
    started: Instant,
    /// The client's stream: the request comes in on it, the answer goes out.
    stream: &'a StreamRef,
    record: &'a mut Record,
    conn: &'a ConnState,
    stall_timeout: Option<Duration>,
}

impl Call<'_> {
    async fn run(&mut self, head: &Head) -> Outcome {
        let cluster = Arc::clone(self.cluster);
        let stats = &cluster.stats;
        let limits = cluster.config.circuit_breakers;
        if self.stream.peer_reset().is_some() {
            // HEADERS and RST_STREAM read together, as a rapid-reset client
            // sends them: never opened upstream, the reset stays with the client.
            return Outcome::client_gone();
        }
        // Reserve the slot atomically: a burst must not slip past the limit.
        if !stats.calls_admitted.inc_below(limits.max_requests) {
            stats.upstream_rq_pending_overflow.inc();
            let message = format!(
                "upstream overflow: cluster {} has its max_requests ({}) calls in flight",
                cluster.name(),
                limits.max_requests
            );
            return self.reply(code::UNAVAILABLE, &message, "UO", false);
        }
        let held = Held::new(&cluster, GaugeSlot(&stats.calls_admitted));

        let replay = Mutex::new(Replay::new(
            self.retry.buffer_limit,
            self.stream.is_end_stream(),
        ));
        let mut tried: Tried = SmallVec::new();
        let mut retries = 0u32;
        let mut retry_slot = None;
        let activity = Activity::new(self.idle_timeout.is_some());
        loop {
            let headers_only = replay
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .headers_only();
            let opened = tokio::select! {
                opened = self.open(head, headers_only, &mut tried) => opened,
                () = sleep_until(self.deadline) => {
                    return self.reply(code::DEADLINE_EXCEEDED, "deadline exceeded before a host was reached", "UT", true);
                }
                () = self.cut.cancelled() => {
                    return self.reply(code::UNAVAILABLE, "proxy shutting down", "LR", false);
                }
            };
            let Opened { guard, upstream } = match opened {
                Ok(opened) => opened,
                Err(OpenError::NoHost) => {
                    stats.upstream_cx_none_healthy.inc();
                    return self.reply(code::UNAVAILABLE, "no healthy upstream", "UH", false);
                }
                Err(OpenError::Overflow) => {
                    stats.upstream_rq_pending_overflow.inc();
                    let message = format!(
                        "upstream overflow: cluster {} has its max_pending_requests ({}) calls waiting for a connection",
                        cluster.name(),
                        limits.max_pending_requests
                    );
                    return self.reply(code::UNAVAILABLE, &message, "UO", false);
                }
                Err(OpenError::Unreachable(e)) => {
                    let message = format!(
                        "upstream connect error or disconnect/reset before headers. reset reason: {e}"
                    );
                    return self.reply(code::UNAVAILABLE, &message, "UF", false);
                }
            };
            let host = Arc::clone(&guard.host);
            held.start_attempt(guard);
            self.record.upstream = Some(host.addr);
            stats.upstream_rq_total.inc();
            stats.upstream_rq_active.inc();
            if !headers_only {
                let kept = replay.lock().unwrap_or_else(PoisonError::into_inner);
                if kept.replay(&upstream).is_err() {
                    // The fresh stream died at once; the response side will say how.
                    tracing::debug!(host = %host.addr, "could not replay the request");
                }
            }

            let gate = RetryGate {
                cluster: &cluster,
                policy: self.retry,
                replay: &replay,
                tried: tried.len(),
                retries,
            };
            let attempt = self.exchange(upstream, &gate, &activity, &held).await;
            match attempt {
                Attempt::Done(outcome) => {
                    held.finish_attempt(&outcome);
                    if retry_slot.is_some() && !outcome.upstream_failed && !outcome.client_gone {
                        stats.upstream_rq_retry_success.inc();
                    }
                    return outcome;
                }
                Attempt::Retry(why, outcome) => {
                    held.finish_attempt(&outcome);
                    if why != Retry::Refused {
                        retries += 1;
                    }
                    stats.upstream_rq_retry.inc();
                    self.record.retries += 1;
                    if retry_slot.is_none() {
                        stats.upstream_rq_retry_active.inc();
                        retry_slot = Some(GaugeSlot(&stats.upstream_rq_retry_active));
                    }
                    tracing::debug!(host = %host.addr, ?why, attempt = tried.len(), "retrying on another host");
                }
            }
        }
    }

    /// Picks hosts until one takes the stream; each host at most once.
    async fn open(
        &self,
        head: &Head,
        headers_only: bool,
        tried: &mut Tried,
    ) -> Result<Opened, OpenError> {
        let cluster = self.cluster;
        let stats = &cluster.stats;
        if !stats
            .upstream_rq_pending_active
            .inc_below(cluster.config.circuit_breakers.max_pending_requests)
        {
            return Err(OpenError::Overflow);
        }
        let _pending = GaugeSlot(&stats.upstream_rq_pending_active);
        let mut last = None;
        let timeout = cluster.config.connect_timeout;
        while tried.len() < MAX_ATTEMPTS {
            let Some(host) = cluster.pick(tried) else {
                break;
            };
            tried.push(host.addr);
            let lease = match host.conn.lease(timeout).await {
                Ok(lease) => lease,
                Err(e) => {
                    if matches!(
                        e,
                        UpstreamError::ConnectFailed(_) | UpstreamError::ConnectTimeout
                    ) {
                        outlier::record(cluster, &host, Verdict::Failure);
                    }
                    last = Some(e);
                    continue;
                }
            };
            // The request's block is encoded straight into the host
            // connection's output, with the proxy's `grpc-timeout` in place of
            // the client's.
            let grpc_timeout = self.grpc_timeout();
            let replace = grpc_timeout
                .as_deref()
                .map(|value| (&b"grpc-timeout"[..], value.as_bytes()));
            match lease.sender.send_request(head, replace, headers_only) {
                Ok(upstream) => {
                    return Ok(Opened {
                        guard: host.start_request(),
                        upstream,
                    });
                }
                Err(e) => {
                    host.conn.report_broken(lease.generation);
                    last = Some(UpstreamError::Refused(e.to_string().into()));
                }
            }
        }
        Err(last.map_or(OpenError::NoHost, OpenError::Unreachable))
    }

    /// The `grpc-timeout` sent upstream in place of the client's: the time
    /// left before the deadline (gRPC calls with a deadline only).
    fn grpc_timeout(&self) -> Option<String> {
        let deadline = self.deadline.filter(|_| self.grpc)?;
        let left = deadline.saturating_duration_since(Instant::now());
        Some(common::format_grpc_timeout(left))
    }

    /// Answers the call locally (no host answered).
    fn reply(&mut self, code: u16, message: &str, flags: &'static str, timed_out: bool) -> Outcome {
        tracing::debug!(flags, elapsed = ?self.started.elapsed(), "local reply: {message}");
        local(self.stream, self.grpc, code, message, flags, timed_out)
    }

    /// Runs one attempt: the request pipe and the response side together.
    async fn exchange(
        &mut self,
        upstream: StreamRef,
        gate: &RetryGate<'_>,
        activity: &Activity,
        held: &Held<'_>,
    ) -> Attempt {
        let replay = gate.replay;
        let client_done = replay.lock().unwrap_or_else(PoisonError::into_inner).ended;
        let mut timers = Timers {
            deadline: self.deadline,
            idle: self.idle_timeout,
            activity,
            cut: pin!(self.cut.cancelled()),
        };
        let mut bytes_received = 0;
        // Set once the host's head (or its failure) arrived: until then,
        // a call that ends leaves a stream the host may not have accepted.
        let mut answered = false;
        let attempt = {
            let mut request_pipe = pin!(pipe(self.stream, &upstream, Some(replay), activity, true));
            let mut request_done = client_done;
            let mut response_side = pin!(respond(
                self.stream,
                &upstream,
                &mut answered,
                self.grpc,
                &mut timers,
                gate,
                &mut *self.record,
                Downstream {
                    held,
                    conn: self.conn,
                    stall_timeout: self.stall_timeout,
                },
            ));
            loop {
                tokio::select! {
                    piped = &mut request_pipe, if !request_done => {
                        request_done = true;
                        match piped {
                            Ok(end) => bytes_received = end.bytes,
                            // The host stopped reading the request (it answered, or
                            // reset): the response side says how the attempt ends.
                            Err(PipeError::Dst(reason)) => {
                                tracing::trace!(?reason, "host stopped reading the request");
                            }
                            // Only the response pipe stalls.
                            Err(PipeError::Stalled(_)) => {}
                            // The client reset or vanished; the host's stream was reset too.
                            Err(PipeError::Src(_)) => break Attempt::Done(Outcome::client_gone()),
                        }
                    }
                    attempt = &mut response_side => break attempt,
                }
            }
        };
        self.record.bytes_received = self.record.bytes_received.max(bytes_received);
        // Past the drain deadline the proxy is closing every connection: no
        // point in holding a stream open.
        if !answered && !self.cut.is_cancelled() {
            cancel_unanswered(self.cluster, upstream);
        }
        attempt
    }
}

/// How long the host's stream of a call that ended before the host answered
/// it is kept open, at most, before it is reset.
const UNANSWERED_CANCEL_HOLD: Duration = Duration::from_secs(1);

/// Cancels the host's stream of a call that ended before the host answered
/// (its client reset or left, its deadline passed), without making the host
/// close the connection every client's calls share.
///
/// An h2 server (tonic, hyper) counts the streams reset before it accepted
/// them, and past 20 at once it closes the whole connection with
/// GOAWAY(ENHANCE_YOUR_CALM). Forwarded at once, one client that drops a
/// batch of calls it just made, or a host that stalls for a moment while
/// clients give up, is enough. So:
/// - a stream still waiting for a slot under the host's concurrency limit
///   was never written, and never will be (`upstream_rq_cancel_unsent`);
/// - any other is reset once the host has answered it (so it had accepted
///   it), or after [`UNANSWERED_CANCEL_HOLD`]. At most `max_requests` are
///   held like this per cluster (`upstream_rq_cancel_held`); past that they
///   are reset at once. Their `max_requests` slots are already given back.
fn cancel_unanswered(cluster: &Arc<Cluster>, upstream: StreamRef) {
    let stats = &cluster.stats;
    if upstream.is_pending_open() {
        stats.upstream_rq_cancel_unsent.inc();
        return;
    }
    if !stats
        .upstream_rq_cancel_held
        .inc_below(cluster.config.circuit_breakers.max_requests)
    {
        return;
    }
    let cluster = Arc::clone(cluster);
    tokio::spawn(async move {
        // The answer, if it comes, is dropped with the stream: RST_STREAM
        // (CANCEL) unless it had already ended.
        let answer = poll_fn(|cx| upstream.poll_response(cx));
        let _ = tokio::time::timeout(UNANSWERED_CANCEL_HOLD, answer).await;
        drop(upstream);
        cluster.stats.upstream_rq_cancel_held.dec();
    });
}

/// When a frame last passed, in either direction (for `idle_timeout`).
#[derive(Debug)]
struct Activity {
    base: Instant,
    nanos: AtomicU64,
    /// Off unless an `idle_timeout` is set: then no clock is read per frame.
    on: bool,
}

impl Activity {
    fn new(on: bool) -> Self {
        Activity {
            base: Instant::now(),
            nanos: AtomicU64::new(0),
            on,
        }
    }

    fn mark(&self) {
        if self.on {
            self.nanos
                .store(self.base.elapsed().as_nanos() as u64, Relaxed);
        }
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.nanos.load(Relaxed))
    }
}

/// The deadline and idle limits of a call.
struct Timers<'a, 'c> {
    deadline: Option<Instant>,
    idle: Option<Duration>,
    activity: &'a Activity,
    /// The proxy's drain deadline, waited for by one future for the whole
    /// attempt: each new wait registers with the token and each dropped one
    /// leaves it, under the token's lock (about 170 instructions a call more,
    /// measured, when the head and the body each made their own).
    cut: Pin<&'a mut WaitForCancellationFuture<'c>>,
}

/// Which limit passed.
enum Expired {
    Deadline,
    Idle,
    /// The proxy's drain deadline passed.
    Shutdown,
}

impl Timers<'_, '_> {
    /// Completes when the deadline passes or the call has been idle too long.
    async fn expired(&mut self) -> Expired {
        let (activity, idle) = (self.activity, self.idle);
        let idle = async move {
            let Some(limit) = idle else {
                return std::future::pending().await;
            };
            loop {
                let due = activity.last() + limit;
                if Instant::now() >= due {
                    return;
                }
                tokio::time::sleep_until(due).await;
            }
        };
        tokio::select! {
            () = sleep_until(self.deadline) => Expired::Deadline,
            () = idle => Expired::Idle,
            () = self.cut.as_mut() => Expired::Shutdown,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The response side: headers, then body and trailers, from host to client.
/// Returns [`Attempt::Retry`] only before anything was forwarded.
#[allow(clippy::too_many_arguments)]
async fn respond(
    downstream: &StreamRef,
    upstream: &StreamRef,
    answered: &mut bool,
    grpc: bool,
    timers: &mut Timers<'_, '_>,
    gate: &RetryGate<'_>,
    record: &mut Record,
    ctx: Downstream<'_, '_>,
) -> Attempt {
    let replay = gate.replay;
    let sent_at = Instant::now();
    // Wait for the head, watching for the client giving up meanwhile.
    let head = poll_fn(|cx| {
        if let Poll::Ready(r) = upstream.poll_response(cx) {
            return Poll::Ready(Ok(r));
        }
        if let Poll::Ready(r) = downstream.poll_reset(cx) {
            return Poll::Ready(Err(r));
        }
        Poll::Pending
    });
    let head = tokio::select! {
        head = head => head,
        expired = timers.expired() => {
            let (code, message, flags) = match expired {
                Expired::Deadline => (code::DEADLINE_EXCEEDED, "deadline exceeded", "UT"),
                Expired::Idle => (code::UNAVAILABLE, "stream idle timeout", "SI"),
                Expired::Shutdown => (code::UNAVAILABLE, "proxy shutting down", "LR"),
            };
            let timed_out = flags == "UT";
            let mut outcome = local(downstream, grpc, code, message, flags, timed_out);
            outcome.upstream_failed = flags == "SI";
            return Attempt::Done(outcome);
        }
    };
    let head = match head {
        Err(_) => return Attempt::Done(Outcome::client_gone()),
        Ok(Err(e)) => {
            *answered = true;
            let failed = Outcome {
                upstream_failed: true,
                flags: "UR",
                ..Outcome::default()
            };
            let refused = e.is_remote()
                && ((e.is_reset() && e.reason() == Some(Reason::REFUSED_STREAM)) || e.is_go_away());
            let why = if refused {
                Retry::Refused
            } else {
                Retry::Reset
            };
            if gate.allows(why) {
                return Attempt::Retry(why, failed);
            }
            // Nothing reached the client yet, so answer in gRPC form.
            let message = format!(
                "upstream connect error or disconnect/reset before headers. reset reason: {}",
                describe(&e)
            );
            let mut outcome = local(downstream, grpc, code::UNAVAILABLE, &message, "UR", false);
            outcome.upstream_failed = true;
            return Attempt::Done(outcome);
        }
        Ok(Ok(head)) => {
            *answered = true;
            head
        }
    };
    let waited = sent_at.elapsed();
    record.upstream_service_time_ms = Some(waited.as_millis() as u64);
    ctx.held.first_byte(waited);
    timers.activity.mark();

    let response_code = head.status();
    let header_status = grpc::status(&head);
    let end_of_stream = upstream.is_end_stream();
    if end_of_stream && header_status == Some(code::UNAVAILABLE) && gate.allows(Retry::Unavailable)
    {
        return Attempt::Retry(
            Retry::Unavailable,
            Outcome {
                response_code,
                grpc_status: header_status,
                ..Outcome::default()
            },
        );
    }
    // Committed: from here on this host's answer is the call's.
    replay
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .forget();
    if downstream.send_response(&head, end_of_stream).is_err() {
        return Attempt::Done(Outcome::client_gone());
    }
    let mut outcome = Outcome {
        response_code,
        grpc_status: header_status,
        ..Outcome::default()
    };
    if end_of_stream {
        return Attempt::Done(outcome);
    }
    let piped = tokio::select! {
        piped = pipe_response(upstream, downstream, timers.activity, &ctx, (response_code, header_status)) => piped,
        expired = timers.expired() => {
            // Headers are out: end with trailers; the host's stream is
            // cancelled when the attempt lets go of it.
            let (code, message) = match expired {
                Expired::Deadline => {
                    outcome.timed_out = true;
                    outcome.flags = "UT";
                    (code::DEADLINE_EXCEEDED, "deadline exceeded")
                }
                Expired::Idle => {
                    outcome.flags = "SI";
                    (code::UNAVAILABLE, "stream idle timeout")
                }
                Expired::Shutdown => {
                    outcome.flags = "LR";
                    (code::UNAVAILABLE, "proxy shutting down")
                }
            };
            if grpc {
                let _ = downstream.send_trailers(&grpc::trailers_head(code, message));
                outcome.grpc_status = Some(code);
            } else {
                downstream.send_reset(Reason::CANCEL);
            }
            return Attempt::Done(outcome);
        }
    };
    match piped {
        Ok(end) => {
            record.bytes_sent = end.bytes;
            if end.status.is_some() {
                outcome.grpc_status = end.status;
            }
        }
        Err(PipeError::Src(e)) => {
            outcome.upstream_failed = true;
            outcome.flags = "UR";
            match e.reason() {
                // The host reset the stream: the client's stream is reset alike.
                Some(reason) if e.is_reset() => downstream.send_reset(reason),
                // The connection to the host broke: end the call cleanly in gRPC
                // form so the client sees UNAVAILABLE rather than a bare reset.
                _ if grpc => {
                    let message = format!("upstream connection lost: {}", describe(&e));
                    let _ =
                        downstream.send_trailers(&grpc::trailers_head(code::UNAVAILABLE, &message));
                    outcome.grpc_status = Some(code::UNAVAILABLE);
                }
                _ => downstream.send_reset(Reason::INTERNAL_ERROR),
            }
        }
        Err(PipeError::Dst(_)) => {
            outcome.client_gone = true;
            outcome.flags = "DC";
        }
        Err(PipeError::Stalled(waited)) => {
            // Envoy's flag: its stream idle timeout also counts a stream
            // blocked on flow control as idle.
            outcome.stalled = true;
            outcome.flags = "SI";
            downstream.send_reset(Reason::CANCEL);
            tracing::debug!(
                stalled = %common::format_duration(waited),
                "client kept its window shut with an answer waiting; stream reset"
            );
        }
    }
    Attempt::Done(outcome)
}

/// Sends a local reply on a stream whose response has not started.
fn local(
    stream: &StreamRef,
    grpc: bool,
    code: u16,
    message: &str,
    flags: &'static str,
    timed_out: bool,
) -> Outcome {
    let head = grpc::local_head(grpc, code, message);
    let status = head.status();
    // gRPC answers are trailers-only; plain HTTP ones say what happened in the body.
    let sent = if grpc {
        stream.send_response(&head, true)
    } else {
        stream
            .send_response(&head, false)
            .and_then(|()| stream.send_data(Bytes::from(format!("{message}\n")), true))
    };
    match sent {
        Ok(()) => Outcome {
            response_code: status,
            grpc_status: grpc.then_some(code),
            flags,
            timed_out,
            ..Outcome::default()
        },
        Err(_) => Outcome::client_gone(),
    }
}

fn describe(e: &h2fwd::Error) -> String {
    match e.reason() {
        Some(reason) if e.is_reset() => format!("remote reset ({reason})"),
        Some(reason) if e.is_go_away() => format!("connection closed ({reason})"),
        _ => "connection failure".to_owned(),
    }
}

/// How a pipe ended early.
#[derive(Debug)]
enum PipeError {
    /// Reading failed: the sender reset the stream or its connection broke.
    Src(h2fwd::Error),
    /// Writing failed: the receiver reset the stream or went away.
    Dst(Option<Reason>),
    /// The client gave no room for this long while bytes waited for it.
    Stalled(Duration),
}

/// How a pipe ended normally.
#[derive(Debug)]
struct PipeEnd {
    bytes: u64,
    /// `grpc-status` from the trailers, if they had one.
    status: Option<u16>,
}

/// Sends one chunk of DATA on; the pipe's end (`bytes` passed in all) when
/// it was the last of the stream.
fn send_chunk(
    dst: &StreamRef,
    data: Bytes,
    end: bool,
    bytes: u64,
) -> Result<Option<PipeEnd>, PipeError> {
    dst.send_data(data, end)
        .map_err(|e| PipeError::Dst(e.reason()))?;
    Ok(end.then_some(PipeEnd {
        bytes,
        status: None,
    }))
}

enum Step {
    /// A chunk, its capacity already released, and whether it ends the stream.
    Data(Bytes, bool),
    End,
    SrcError(h2fwd::Error),
    DstGone(Option<Reason>),
}

/// `Ready` with how `dst` ended when it did.
fn dst_gone(dst: &StreamRef, cx: &mut std::task::Context<'_>) -> Poll<Option<Reason>> {
    match dst.poll_reset(cx) {
        Poll::Ready(Ok(reason)) => Poll::Ready(Some(reason)),
        Poll::Ready(Err(e)) => Poll::Ready(e.reason()),
        Poll::Pending => Poll::Pending,
    }
}

/// Moves DATA frames and trailers from `src` to `dst` until the end of the
/// stream, releasing `src`'s flow-control window only as `dst` takes the data.
///
/// What passes is also kept in `replay` (the request direction), and every
/// frame marks `activity`. With `reset_dst_on_src_error`, a failure to read
/// resets `dst` with the same reason (a client's cancel becomes the host's).
/// Cancel-safe: dropped at an await point, nothing read is lost.
async fn pipe(
    src: &StreamRef,
    dst: &StreamRef,
    replay: Option<&Mutex<Replay>>,
    activity: &Activity,
    reset_dst_on_src_error: bool,
) -> Result<PipeEnd, PipeError> {
    let mut bytes = 0u64;
    // The first chunk goes without waiting for flow-control capacity: a new
    // stream starts with the host's initial window, and what it does not
    // take waits in order. One chunk is at most one DATA frame of the
    // source, so this buffers at most that per stream.
    let mut first = true;
    loop {
        let step = poll_fn(|cx| {
            // Read no more until the receiver's window has room for a byte.
            if !first {
                match dst.poll_capacity(cx) {
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Step::DstGone(e.reason())),
                    Poll::Pending => return Poll::Pending,
                }
            }
            match src.poll_data(cx) {
                Poll::Ready(Some(Ok((data, end)))) => Poll::Ready(Step::Data(data, end)),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Step::SrcError(e)),
                Poll::Ready(None) => Poll::Ready(Step::End),
                Poll::Pending => dst_gone(dst, cx).map(Step::DstGone),
            }
        })
        .await;
        match step {
            Step::Data(data, end) => {
                first = false;
                activity.mark();
                bytes += data.len() as u64;
                if let Some(replay) = replay {
                    replay
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .data(&data, end);
                }
                if let Some(done) = send_chunk(dst, data, end, bytes)? {
                    return Ok(done);
                }
            }
            Step::End => {
                let trailers = poll_fn(|cx| match src.poll_trailers(cx) {
                    Poll::Ready(r) => Poll::Ready(Ok(r)),
                    Poll::Pending => dst_gone(dst, cx).map(Err),
                })
                .await
                .map_err(PipeError::Dst)?;
                activity.mark();
                return match trailers {
                    Ok(trailers) => {
                        if let Some(replay) = replay {
                            replay
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .end(trailers.as_deref());
                        }
                        let status = trailers.as_deref().and_then(grpc::status);
                        match &trailers {
                            Some(trailers) => dst.send_trailers(trailers),
                            None => dst.send_data(Bytes::new(), true),
                        }
                        .map_err(|e| PipeError::Dst(e.reason()))?;
                        Ok(PipeEnd { bytes, status })
                    }
                    Err(e) => {
                        if reset_dst_on_src_error {
                            dst.send_reset(e.reason().unwrap_or(Reason::CANCEL));
                        }
                        Err(PipeError::Src(e))
                    }
                };
            }
            Step::SrcError(e) => {
                if reset_dst_on_src_error {
                    dst.send_reset(
                        e.reason()
                            .filter(|_| e.is_reset())
                            .unwrap_or(Reason::CANCEL),
                    );
                }
                return Err(PipeError::Src(e));
            }
            Step::DstGone(reason) => return Err(PipeError::Dst(reason)),
        }
    }
}

/// What the response side needs of the call beyond its streams.
struct Downstream<'h, 'c> {
    held: &'h Held<'c>,
    conn: &'h ConnState,
    stall_timeout: Option<Duration>,
}

/// Bytes of an answer read from the host and queued for the client,
/// charged to the client's connection until they leave (or the call ends).
struct Charge<'a> {
    conn: &'a ConnState,
    bytes: usize,
}

impl Charge<'_> {
    fn add(&mut self, n: usize) {
        self.bytes += n;
        self.conn.buffered.fetch_add(n, Relaxed);
    }
    fn sub(&mut self, n: usize) {
        self.bytes -= n;
        self.conn.buffered.fetch_sub(n, Relaxed);
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.conn.buffered.fetch_sub(self.bytes, Relaxed);
        }
    }
}

/// What the response pipe waits for.
enum Wake {
    Room,
    /// A chunk, its capacity already released, and whether it ends the stream.
    Data(Bytes, bool),
    Trailers(Option<Box<Head>>),
    SrcError(h2fwd::Error),
    DstGone(Option<Reason>),
    Stalled,
}

/// Moves the host's answer (DATA, then trailers) to the client.
///
/// Unlike [`pipe`], it reads the host ahead of the client: up to
/// [`STREAM_READ_AHEAD`] per call while the client connection's buffered
/// total is under its `per_connection_buffer_limit_bytes`. So a host that has
/// answered in full is done with at once: `held` is given back (the cluster's
/// slot, the host's stream) and only the bytes queued here, charged to the
/// client's connection, wait for the client. A chunk goes to the client's
/// stream only once its window has room for at least one byte of it, so the
/// stream itself holds at most one chunk beyond the window. When bytes wait
/// and the client gives no room for `stall_timeout`, the pipe ends with
/// [`PipeError::Stalled`]: stalled, not idle. A stream with nothing to send is
/// never cut by this.
async fn pipe_response(
    src: &StreamRef,
    dst: &StreamRef,
    activity: &Activity,
    downstream: &Downstream<'_, '_>,
    (response_code, header_status): (u16, Option<u16>),
) -> Result<PipeEnd, PipeError> {
    let mut bytes = 0u64;
    let mut queue: std::collections::VecDeque<Bytes> = std::collections::VecDeque::new();
    let mut charge = Charge {
        conn: downstream.conn,
        bytes: 0,
    };
    // Some once the host finished: the trailers (None: it ended with DATA).
    let mut ended: Option<Option<Box<Head>>> = None;
    let mut data_done = false;
    let mut stall: Option<(Instant, std::pin::Pin<Box<tokio::time::Sleep>>)> = None;
    let upstream_done = |status: Option<u16>| {
        downstream.held.upstream_done(&Outcome {
            response_code,
            grpc_status: status.or(header_status),
            ..Outcome::default()
        });
    };
    loop {
        // Hand over what the client has room for.
        while !queue.is_empty() {
            if dst.capacity() == 0 {
                break;
            }
            let chunk = queue.pop_front().unwrap_or_default();
            charge.sub(chunk.len());
            stall = None;
            let end = queue.is_empty() && matches!(ended, Some(None));
            if let Some(done) = send_chunk(dst, chunk, end, bytes)? {
                return Ok(done);
            }
        }
        if queue.is_empty()
            && let Some(trailers) = ended.take()
        {
            let status = trailers.as_deref().and_then(grpc::status);
            match &trailers {
                Some(trailers) => dst.send_trailers(trailers),
                None => dst.send_data(Bytes::new(), true),
            }
            .map_err(|e| PipeError::Dst(e.reason()))?;
            return Ok(PipeEnd { bytes, status });
        }
        let waiting = !queue.is_empty();
        if waiting
            && stall.is_none()
            && let Some(limit) = downstream.stall_timeout
        {
            stall = Some((Instant::now(), Box::pin(tokio::time::sleep(limit))));
        }
        let read = ended.is_none()
            && (!waiting || (charge.bytes < STREAM_READ_AHEAD && downstream.conn.has_room()));
        let wake = poll_fn(|cx| {
            if waiting {
                match dst.poll_capacity(cx) {
                    Poll::Ready(Ok(_)) => return Poll::Ready(Wake::Room),
                    Poll::Ready(Err(e)) => return Poll::Ready(Wake::DstGone(e.reason())),
                    Poll::Pending => {}
                }
                if let Some((_, sleep)) = stall.as_mut()
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Wake::Stalled);
                }
            }
            if read {
                if !data_done {
                    match src.poll_data(cx) {
                        Poll::Ready(Some(Ok((data, end)))) => {
                            return Poll::Ready(Wake::Data(data, end));
                        }
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Wake::SrcError(e)),
                        Poll::Ready(None) => data_done = true,
                        Poll::Pending => {}
                    }
                }
                if data_done {
                    match src.poll_trailers(cx) {
                        Poll::Ready(Ok(t)) => return Poll::Ready(Wake::Trailers(t)),
                        Poll::Ready(Err(e)) => return Poll::Ready(Wake::SrcError(e)),
                        Poll::Pending => {}
                    }
                }
            }
            dst_gone(dst, cx).map(Wake::DstGone)
        })
        .await;
        match wake {
            Wake::Room => {}
            Wake::Data(data, end) => {
                activity.mark();
                let n = data.len();
                bytes += n as u64;
                if end {
                    ended = Some(None);
                    upstream_done(None);
                }
                if queue.is_empty() && dst.capacity() > 0 {
                    let end = ended.is_some();
                    if end {
                        ended = None;
                    }
                    if let Some(done) = send_chunk(dst, data, end, bytes)? {
                        return Ok(done);
                    }
                    continue;
                }
                charge.add(n);
                queue.push_back(data);
            }
            Wake::Trailers(trailers) => {
                activity.mark();
                upstream_done(trailers.as_deref().and_then(grpc::status));
                ended = Some(trailers);
            }
            Wake::SrcError(e) => return Err(PipeError::Src(e)),
            Wake::DstGone(reason) => return Err(PipeError::Dst(reason)),
            Wake::Stalled => {
                let since = stall.map_or(Instant::now(), |(since, _)| since);
                return Err(PipeError::Stalled(since.elapsed()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_rapid_reset_once_half_of_100_streams_were_reset_early() {
        let conn = ConnState::new(1 << 20);
        for i in 0..99 {
            conn.streams.fetch_add(1, Relaxed);
            if i % 2 == 0 {
                conn.premature_resets.fetch_add(1, Relaxed);
            }
        }
        assert_eq!(conn.is_rapid_reset(), None, "fewer than 100 streams");
        conn.streams.fetch_add(1, Relaxed);
        assert_eq!(conn.is_rapid_reset(), Some((50, 100)));
        conn.streams.fetch_add(1, Relaxed);
        assert_eq!(conn.is_rapid_reset(), None, "under half reset early");
    }

    #[test]
    fn the_log_limiter_lets_one_line_through_per_interval_and_counts_the_rest() {
        let limiter = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.held_back.load(Relaxed), 2);
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let id = new_request_id();
        let id = std::str::from_utf8(&id).unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(id.matches('-').count(), 4);
        assert_ne!(new_request_id(), new_request_id());
    }

    /// A request head with `fields`.
    fn request(fields: &[(&str, &str)]) -> Head {
        let mut head = Head::request(b"POST", b"http", b"proxy", b"/svc/Method");
        for (name, value) in fields {
            head.append(name.as_bytes(), value.as_bytes());
        }
        head
    }

    #[test]
    fn request_ids_are_kept_or_added_and_sent_never_indexed() {
        let mut head = request(&[]);
        read_request_fields(&mut head, true);
        let id = head.get(b"x-request-id").unwrap();
        assert_eq!(id.len(), 36);
        assert!(
            head.is_sensitive(b"x-request-id"),
            "a new id is a never-indexed literal"
        );

        let mut head = request(&[("x-request-id", "client-id")]);
        read_request_fields(&mut head, false);
        assert_eq!(
            head.get(b"x-request-id"),
            Some(&b"client-id"[..]),
            "the client's id is kept"
        );
        assert!(
            head.is_sensitive(b"x-request-id"),
            "and sent as a never-indexed literal"
        );

        let mut head = request(&[]);
        read_request_fields(&mut head, false);
        assert!(head.is_empty(), "none is made up when generation is off");
    }

    #[test]
    fn request_fields_read_the_first_value_of_each_name() {
        let mut head = request(&[
            ("content-type", "application/grpc+proto"),
            ("grpc-timeout", "250m"),
            ("grpc-timeout", "1S"),
            ("x-request-id", "first"),
            ("x-request-id", "second"),
        ]);
        let fields = read_request_fields(&mut head, true);
        assert_eq!(
            fields,
            RequestFields {
                grpc: true,
                timeout: Some(Duration::from_millis(250)),
            },
            "the first grpc-timeout counts"
        );
        let ids: Vec<_> = head.get_all(b"x-request-id").collect();
        assert_eq!(
            ids,
            [&b"first"[..], b"second"],
            "no id added beside the client's"
        );

        let mut head = request(&[
            ("content-type", "application/json"),
            ("grpc-timeout", "soon"),
        ]);
        let fields = read_request_fields(&mut head, false);
        assert_eq!(
            fields,
            RequestFields {
                grpc: false,
                timeout: None,
            },
            "not gRPC, and an invalid timeout is none"
        );
        assert!(!head.contains(b"x-request-id"));
    }

    #[test]
    fn replay_keeps_up_to_its_limit_and_forgets_on_commit() {
        let mut r = Replay::new(10, false);
        r.data(&Bytes::from_static(b"12345"), false);
        assert!(r.kept && r.bytes == 5);
        r.data(&Bytes::from_static(b"6789"), false);
        r.end(None);
        assert!(r.kept && r.ended && !r.headers_only());
        r.forget();
        assert!(!r.kept && r.chunks.is_empty());

        let mut r = Replay::new(4, false);
        r.data(&Bytes::from_static(b"12345"), true);
        assert!(!r.kept, "over the limit: cannot be replayed");
        assert!(r.ended);

        assert!(Replay::new(4, true).headers_only());
    }
}
