//! gRPC-Web: browsers' calls, translated to gRPC and back.
//!
//! Browsers cannot read HTTP/2 trailers or frame a request themselves, so
//! gRPC-Web (PROTOCOL-WEB.md in grpc/grpc) puts the trailers into the body,
//! as a last length-prefixed frame with flag 0x80, and lets the body be
//! base64 text (`application/grpc-web-text`). A listener with `grpc_web`
//! accepts these calls over HTTP/1.1 ([`serve_http1`]) and HTTP/2 (from
//! [`crate::forward::handle`]), answers CORS preflights itself, and sends
//! each call on as ordinary gRPC.
//!
//! **The bridge.** A translated call goes through the listener's own call
//! path: an in-memory HTTP/2 connection per client connection (opened on its
//! first gRPC-Web call) is served by [`crate::server::serve_h2`] with the
//! listener's settings, exactly as a gRPC client's connection is, as Envoy's
//! internal listeners loop a connection back through its own filter chain.
//! So a browser's call gets the same routes, balancing, retries, deadlines,
//! limits, statistics and access-log line as any other call, and the plain
//! gRPC path carries none of this: it pays one branch per call, taken only
//! on listeners with `grpc_web`. A gRPC-Web call pays for a second HTTP/2
//! encoding instead, in memory.
//!
//! **Bounds.** A request body is read whole before it is sent (a gRPC-Web
//! request is one message), at most `max_request_bytes` decoded; its frames
//! are checked first. The answer streams: each chunk from the bridge is sent
//! on (as base64 for text) once the client took the previous one, so what
//! waits for a slow client is what the listener's flow control allows.

pub mod codec;

use std::convert::Infallible;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use h2::RecvStream;
use h2fwd::{Head, StreamRef};
use http::header::{self, HeaderName};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::access_log::Entry;
use crate::config::{CorsConfig, GrpcWebConfig, grpc_web::ALWAYS_EXPOSED};
use crate::forward::{ConnState, Ingress};
use crate::grpc::{self, code};
use codec::{Base64Encoder, BodyError, RequestBody};

/// A listener's gRPC-Web settings, with the CORS answers built once.
#[derive(Debug)]
pub struct WebSettings {
    pub max_request_bytes: usize,
    cors: Option<Cors>,
}

#[derive(Debug)]
struct Cors {
    config: CorsConfig,
    /// `None`: echo what the preflight asks for.
    allow_headers: Option<HeaderValue>,
    expose_headers: HeaderValue,
    max_age: HeaderValue,
}

impl WebSettings {
    pub fn new(config: &GrpcWebConfig) -> Self {
        WebSettings {
            max_request_bytes: config.max_request_bytes,
            cors: config.cors.as_ref().map(|c| Cors {
                allow_headers: (!c.allow_headers.is_empty())
                    .then(|| join(c.allow_headers.iter().map(String::as_str))),
                expose_headers: join(
                    ALWAYS_EXPOSED
                        .into_iter()
                        .chain(c.expose_headers.iter().map(String::as_str)),
                ),
                max_age: HeaderValue::from(c.max_age.as_secs()),
                config: c.clone(),
            }),
        }
    }
}

/// Header names as one comma-separated value (validated as names when the
/// configuration was checked).
fn join<'a>(names: impl Iterator<Item = &'a str>) -> HeaderValue {
    HeaderValue::from_str(&names.collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|_| HeaderValue::from_static("content-type"))
}

/// What a request on a gRPC-Web listener is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A gRPC-Web call; `text`: base64 (`application/grpc-web-text`).
    Call { text: bool },
    /// A browser's CORS preflight (OPTIONS with Origin and
    /// Access-Control-Request-Method).
    Preflight,
    /// Anything else: plain gRPC over HTTP/2, or a refusal over HTTP/1.1.
    Other,
}

/// Tells a gRPC-Web call or a preflight from anything else, by headers.
pub fn classify(parts: &Parts) -> Kind {
    kind(&parts.method, &parts.headers)
}

fn kind(method: &Method, headers: &HeaderMap) -> Kind {
    if let Some(text) = web_content_type(headers) {
        return Kind::Call { text };
    }
    if method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return Kind::Preflight;
    }
    Kind::Other
}

/// [`classify`] for a request of the call path (HTTP/2).
pub fn classify_head(head: &Head) -> Kind {
    if let Some(text) = head.get(b"content-type").and_then(web_type) {
        return Kind::Call { text };
    }
    if head.method() == b"OPTIONS"
        && head.contains(b"origin")
        && head.contains(b"access-control-request-method")
    {
        return Kind::Preflight;
    }
    Kind::Other
}

/// `Some(text)` for `application/grpc-web[-text][+subtype][;params]`.
fn web_content_type(headers: &HeaderMap) -> Option<bool> {
    web_type(headers.get(header::CONTENT_TYPE)?.as_bytes())
}

fn web_type(ct: &[u8]) -> Option<bool> {
    let rest = ct.strip_prefix(b"application/grpc-web")?;
    let (text, rest) = match rest.strip_prefix(b"-text") {
        // `-text-base64` names base64, the default text encoding, explicitly.
        Some(rest) => (true, rest.strip_prefix(b"-base64").unwrap_or(rest)),
        None => (false, rest),
    };
    matches!(rest.first(), None | Some(b'+' | b';')).then_some(text)
}

/// The `+subtype` of a gRPC or gRPC-Web content type (`+proto` when none).
fn subtype<'a>(ct: Option<&'a HeaderValue>, prefix: &[u8]) -> &'a [u8] {
    ct.and_then(|v| v.as_bytes().strip_prefix(prefix))
        .map(|rest| {
            let rest = rest.strip_prefix(b"-text").unwrap_or(rest);
            let rest = rest.strip_prefix(b"-base64").unwrap_or(rest);
            let end = rest.iter().position(|&b| b == b';').unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|s| s.starts_with(b"+"))
        .unwrap_or(b"+proto")
}

/// Counters of a listener's gRPC-Web side (`http.<listener>.grpc_web.*`,
/// `http1.*`, `cors.*`).
#[derive(Debug, Default)]
pub struct WebStats {
    pub calls: crate::cluster::Stat,
    pub text_calls: crate::cluster::Stat,
    pub malformed: crate::cluster::Stat,
    pub too_large: crate::cluster::Stat,
    pub streaming_refused: crate::cluster::Stat,
    pub http1_requests: crate::cluster::Stat,
    pub http1_refused: crate::cluster::Stat,
    pub cors_preflight: crate::cluster::Stat,
    pub cors_origin_valid: crate::cluster::Stat,
    pub cors_origin_invalid: crate::cluster::Stat,
    /// Bridges open (a gauge): one per client connection that made a
    /// gRPC-Web call and has not been idle for long.
    pub bridges_active: crate::cluster::Stat,
}

/// The in-memory connection's buffer each way.
const BRIDGE_BUFFER: usize = 64 << 10;
/// An HTTP/1.1 client connection's bridge is let go after this long without
/// a call, and opened again by the next. Idle, 200 such connections held
/// 57.9 KB of RSS each with their bridges, 40.8 KB once these were let go
/// (an h2c connection after a gRPC call: 22.0 KB; release build).
pub const BRIDGE_IDLE: Duration = Duration::from_secs(5);

/// Opens a bridge, the in-memory HTTP/2 connection a client connection's
/// gRPC-Web calls go through (see the module's documentation): the
/// listener's own HTTP/2 session on one end, served as a client connection
/// of `ingress`; a client handle on the other.
async fn open_bridge(
    ingress: &Arc<Ingress>,
    shutdown: &CancellationToken,
) -> Result<h2::client::SendRequest<Bytes>, String> {
    let (client, server) = tokio::io::duplex(BRIDGE_BUFFER);
    let peer = SocketAddr::from(([0, 0, 0, 0], 0));
    tokio::spawn(
        crate::server::serve_bridge(server, peer, Arc::clone(ingress), shutdown.clone())
            .in_current_span(),
    );
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .hpack_static_only(true)
        .handshake::<_, Bytes>(client)
        .await
        .map_err(|e| format!("gRPC-Web bridge failed to start: {e}"))?;
    let stats = Arc::clone(&ingress.stats);
    stats.web.bridges_active.inc();
    tokio::spawn(
        async move {
            // Ends once every handle is gone and its last call is done.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "gRPC-Web bridge ended");
            }
            stats.web.bridges_active.dec();
        }
        .in_current_span(),
    );
    Ok(send)
}

/// Where a client connection keeps its bridge: opened by its first
/// gRPC-Web call, and (over HTTP/1.1) let go when idle for [`BRIDGE_IDLE`].
/// Letting go drops only this handle: calls still running keep the bridge
/// until they are done.
#[derive(Debug, Default)]
pub struct BridgeSlot {
    slot: std::sync::Mutex<Option<Box<Held>>>,
}

/// A bridge's handle, and when a call last took it.
type Held = (h2::client::SendRequest<Bytes>, Instant);

impl BridgeSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Box<Held>>> {
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A handle on the bridge, marked used now.
    fn current(&self) -> Option<h2::client::SendRequest<Bytes>> {
        let mut slot = self.lock();
        let held = slot.as_mut()?;
        held.1 = Instant::now();
        Some(held.0.clone())
    }

    /// A handle on the bridge, opened when there is none.
    async fn handle(
        &self,
        ingress: &Arc<Ingress>,
        shutdown: &CancellationToken,
    ) -> Result<h2::client::SendRequest<Bytes>, String> {
        if let Some(send) = self.current() {
            return Ok(send);
        }
        let opened = open_bridge(ingress, shutdown).await?;
        // Two calls of one HTTP/2 client may race here: the first bridge
        // stays, the other is dropped unused (and its session ends).
        let mut slot = self.lock();
        let held = slot.get_or_insert_with(|| Box::new((opened, Instant::now())));
        held.1 = Instant::now();
        Ok(held.0.clone())
    }

    /// Lets go of the bridge if it has not been used for `idle`; returns
    /// when to look again.
    fn expire(&self, idle: Duration) -> Instant {
        let mut slot = self.lock();
        match slot.as_ref().map(|held| held.1 + idle) {
            Some(due) if due <= Instant::now() => {
                *slot = None;
                Instant::now() + idle
            }
            Some(due) => due,
            None => Instant::now() + idle,
        }
    }
}

/// A local answer: status, headers, and a small body.
#[derive(Debug)]
struct Local {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// For the access log: Envoy's flag, or empty.
    flags: &'static str,
}

impl Local {
    fn text(status: StatusCode, reason: &str) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        Local {
            status,
            headers,
            body: Bytes::from(format!("{reason}\n")),
            flags: "",
        }
    }

    /// A gRPC-Web error: trailers-only, the status in the HTTP headers.
    fn grpc(mode: Mode, code: u16, message: &str) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, mode.content_type(b"+proto"));
        headers.insert(grpc::header::GRPC_STATUS, HeaderValue::from(code));
        headers.insert(grpc::header::GRPC_MESSAGE, grpc::encode_message(message));
        Local {
            status: StatusCode::OK,
            headers,
            body: Bytes::new(),
            flags: "DPE",
        }
    }
}

/// How the answer is encoded: binary, or base64 text.
#[derive(Debug, Clone, Copy)]
struct Mode {
    text: bool,
}

impl Mode {
    fn content_type(self, subtype: &[u8]) -> HeaderValue {
        let base: &[u8] = if self.text {
            b"application/grpc-web-text"
        } else {
            b"application/grpc-web"
        };
        HeaderValue::from_bytes(&[base, subtype].concat())
            .unwrap_or_else(|_| HeaderValue::from_static("application/grpc-web+proto"))
    }
}

/// The answer's body: empty, small and local, or the bridge's stream.
#[derive(Debug)]
pub enum AnswerBody {
    Full(Option<Bytes>),
    Stream(WebBody),
}

impl AnswerBody {
    /// The next chunk for the client; `None` at the end.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        match self {
            AnswerBody::Full(bytes) => Poll::Ready(bytes.take().filter(|b| !b.is_empty())),
            AnswerBody::Stream(body) => body.poll_chunk(cx),
        }
    }
}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.poll_chunk(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, AnswerBody::Full(b) if b.as_ref().is_none_or(Bytes::is_empty))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            AnswerBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            AnswerBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// A gRPC answer from the bridge, as gRPC-Web: the messages as they come,
/// then the trailers as a frame; all of it base64 in text mode.
#[derive(Debug)]
pub struct WebBody {
    recv: RecvStream,
    text: Option<Base64Encoder>,
    data_done: bool,
    done: bool,
}

impl WebBody {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let (bytes, last) = if self.data_done {
                match self.recv.poll_trailers(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Some(trailers))) => (codec::trailers_frame(&trailers), true),
                    // Ended without trailers: not gRPC; nothing to add.
                    Poll::Ready(Ok(None)) => (Bytes::new(), true),
                    Poll::Ready(Err(e)) => (reset_trailers(&e), true),
                }
            } else {
                match self.recv.poll_data_released(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok((data, _)))) => (data, false),
                    Poll::Ready(Some(Err(e))) => (reset_trailers(&e), true),
                    Poll::Ready(None) => {
                        self.data_done = true;
                        continue;
                    }
                }
            };
            self.done = last;
            let chunk = match &mut self.text {
                Some(encoder) => encoder.encode(&bytes, last),
                None => bytes,
            };
            if !chunk.is_empty() {
                return Poll::Ready(Some(chunk));
            }
        }
    }
}

/// The trailers frame for an answer the bridge cut short, with the status a
/// gRPC client gives a reset stream (the gRPC spec's RST_STREAM mapping).
fn reset_trailers(e: &h2::Error) -> Bytes {
    let (status, message) = match e.reason() {
        Some(h2::Reason::CANCEL) => (code::CANCELLED, "call cancelled"),
        Some(h2::Reason::REFUSED_STREAM) => (code::UNAVAILABLE, "stream refused"),
        Some(h2::Reason::ENHANCE_YOUR_CALM) => (code::RESOURCE_EXHAUSTED, "enhance your calm"),
        _ if e.is_io() || e.is_go_away() => (code::UNAVAILABLE, "connection lost"),
        _ => (code::INTERNAL, "stream reset"),
    };
    codec::trailers_frame(&grpc::trailers(status, message))
}

/// Where a request's body comes from.
enum Source<'a> {
    Http1(&'a mut hyper::body::Incoming),
    H2(&'a StreamRef),
}

impl Source<'_> {
    /// The next chunk of the body; `None` at its end.
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        match self {
            Source::Http1(body) => loop {
                let frame = poll_fn(|cx| Pin::new(&mut **body).poll_frame(cx)).await?;
                match frame {
                    Ok(frame) => match frame.into_data() {
                        Ok(data) => return Some(Ok(data)),
                        Err(_trailers) => {}
                    },
                    Err(e) => return Some(Err(e.to_string())),
                }
            },
            Source::H2(stream) => {
                let data = poll_fn(|cx| stream.poll_data(cx)).await?;
                Some(data.map(|(data, _)| data).map_err(|e| e.to_string()))
            }
        }
    }
}

/// What one request on a gRPC-Web listener gets.
enum Answer {
    Local(Local),
    Forwarded(Response<()>, AnswerBody),
    /// The client went away while its request was read.
    Gone,
}

/// How long the whole of a request body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers one request on a gRPC-Web listener: a preflight, a call, or a
/// refusal, whatever HTTP version it came over.
async fn answer(
    ingress: &Arc<Ingress>,
    web: &WebSettings,
    bridge: &BridgeSlot,
    shutdown: &CancellationToken,
    parts: &Parts,
    kind: Kind,
    mut body: Source<'_>,
) -> Answer {
    let stats = &ingress.stats.web;
    let tls = ingress.tls.is_some();
    let origin = parts.headers.get(header::ORIGIN);
    let cors = match check_origin(web, parts, origin, tls) {
        Ok(cors) => {
            if cors.is_some() {
                stats.cors_origin_valid.inc();
            }
            cors
        }
        Err(refused) => {
            stats.cors_origin_invalid.inc();
            return Answer::Local(Local::text(StatusCode::FORBIDDEN, &refused));
        }
    };
    let text = match kind {
        Kind::Preflight => {
            stats.cors_preflight.inc();
            return Answer::Local(preflight(web, cors, &parts.headers));
        }
        Kind::Other => {
            stats.http1_refused.inc();
            let reason = if grpc::is_grpc(&parts.headers) {
                "gRPC needs HTTP/2 (prior knowledge, or h2 by ALPN); over HTTP/1.1 this port serves gRPC-Web: POST with content-type application/grpc-web or application/grpc-web-text"
            } else {
                "this port serves gRPC over HTTP/2 and gRPC-Web over HTTP/1.1 (POST with content-type application/grpc-web or application/grpc-web-text); nothing else"
            };
            return Answer::Local(Local::text(StatusCode::UNSUPPORTED_MEDIA_TYPE, reason));
        }
        Kind::Call { text } => text,
    };
    stats.calls.inc();
    if text {
        stats.text_calls.inc();
    }
    let mode = Mode {
        text: text || accepts_text(&parts.headers),
    };
    let with_cors = |mut local: Local| {
        add_cors(&mut local.headers, cors);
        Answer::Local(local)
    };
    if parts.method != Method::POST {
        let mut local = Local::grpc(mode, code::UNIMPLEMENTED, "gRPC-Web calls are POST");
        local.status = StatusCode::METHOD_NOT_ALLOWED;
        return with_cors(local);
    }

    // The request: read whole (it is one message), bounded, checked.
    let mut reader = RequestBody::new(text, web.max_request_bytes);
    let read = async {
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { return Ok(None) };
            reader.push(&chunk)?;
        }
        Ok(Some(()))
    };
    let read = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(read) => read,
        Err(_) => {
            return with_cors(Local::grpc(
                mode,
                code::DEADLINE_EXCEEDED,
                "gRPC-Web request body not received in full within 30s",
            ));
        }
    };
    let message = match read.and_then(|r| r.map(|()| reader.finish()).transpose()) {
        Ok(Some(message)) => message,
        Ok(None) => return Answer::Gone,
        Err(e) => {
            let (status, message) = match e {
                BodyError::Malformed(why) => {
                    stats.malformed.inc();
                    (code::INTERNAL, format!("malformed gRPC-Web request: {why}"))
                }
                BodyError::TooLarge(limit) => {
                    stats.too_large.inc();
                    (
                        code::RESOURCE_EXHAUSTED,
                        format!("gRPC-Web request larger than max_request_bytes ({limit})"),
                    )
                }
                BodyError::Streaming => {
                    stats.streaming_refused.inc();
                    (
                        code::UNIMPLEMENTED,
                        "gRPC-Web carries one request message: client-streaming and bidirectional calls are not supported".to_owned(),
                    )
                }
            };
            tracing::debug!(path = parts.uri.path(), "{message}");
            return with_cors(Local::grpc(mode, status, &message));
        }
    };

    // The call, through the bridge. A bridge that fails is not opened again
    // for this connection (it may have been closed for abuse): an HTTP/1.1
    // client is told to close, so that its next call gets a fresh one.
    let bridge_failed = |message: &str| {
        let mut local = Local::grpc(mode, code::UNAVAILABLE, message);
        if parts.version < Version::HTTP_2 {
            local
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        local
    };
    let send = match bridge.handle(ingress, shutdown).await {
        Ok(send) => send,
        Err(e) => return with_cors(bridge_failed(&e)),
    };
    let request = upstream_request(parts, tls);
    let sent = async {
        let mut send = send.ready().await?;
        let (response, mut stream) = send.send_request(request, message.is_empty())?;
        if !message.is_empty() {
            stream.send_data(message, true)?;
        }
        response.await
    };
    let response = match sent.await {
        Ok(response) => response,
        Err(e) => return with_cors(bridge_failed(&format!("gRPC-Web bridge: {e}"))),
    };
    let (mut head, recv) = response.into_parts();
    let upstream_type = head.headers.get(header::CONTENT_TYPE);
    if grpc::is_grpc(&head.headers) {
        let web_type = mode.content_type(subtype(upstream_type, b"application/grpc"));
        head.headers.insert(header::CONTENT_TYPE, web_type);
    }
    head.headers.remove(header::CONTENT_LENGTH);
    add_cors(&mut head.headers, cors);
    let body = if recv.is_end_stream() {
        // Trailers-only: the status is in these headers already.
        AnswerBody::Full(None)
    } else {
        AnswerBody::Stream(WebBody {
            recv,
            text: mode.text.then(Base64Encoder::default),
            data_done: false,
            done: false,
        })
    };
    Answer::Forwarded(Response::from_parts(head, ()), body)
}

/// Whether the client asked for a text answer to a binary request.
fn accepts_text(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc-web-text"))
}

/// The call as the bridge sends it: the client's headers without those of
/// HTTP/1.1's connection, gRPC's content type, `te: trailers`.
fn upstream_request(parts: &Parts, tls: bool) -> Request<()> {
    const HOP_BY_HOP: [HeaderName; 6] = [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::HOST,
    ];
    let mut headers = parts.headers.clone();
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(HeaderName::from_static("x-grpc-web"));
    headers.remove(header::ACCEPT);
    let subtype = subtype(
        parts.headers.get(header::CONTENT_TYPE),
        b"application/grpc-web",
    );
    if let Ok(ct) = HeaderValue::from_bytes(&[&b"application/grpc"[..], subtype].concat()) {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    let authority = authority(parts).unwrap_or("localhost");
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let scheme = if tls { "https" } else { "http" };
    let uri = format!("{scheme}://{authority}{path}")
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("http://localhost/"));
    let mut request = Request::new(());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_2;
    *request.headers_mut() = headers;
    request
}

/// What CORS adds to an allowed cross-origin answer.
#[derive(Debug, Clone, Copy)]
struct Allowed<'a> {
    cors: &'a Cors,
    origin: &'a HeaderValue,
}

/// `Ok(Some)`: a cross-origin request from an allowed page; `Ok(None)`: no
/// Origin or the same origin; `Err`: a page that may not call (403).
fn check_origin<'a>(
    web: &'a WebSettings,
    parts: &Parts,
    origin: Option<&'a HeaderValue>,
    tls: bool,
) -> Result<Option<Allowed<'a>>, String> {
    let Some(origin) = origin else {
        return Ok(None);
    };
    let origin_str = origin.to_str().unwrap_or_default();
    if let Some(cors) = &web.cors
        && cors.config.allows(origin_str)
    {
        return Ok(Some(Allowed { cors, origin }));
    }
    if same_origin(origin_str, parts, tls) {
        return Ok(None);
    }
    let reason = match &web.cors {
        None => format!(
            "cross-origin gRPC-Web call from {origin_str}: this listener allows none (configure grpc_web.cors.allow_origins)"
        ),
        Some(_) => format!(
            "cross-origin gRPC-Web call from {origin_str}: not in grpc_web.cors.allow_origins"
        ),
    };
    Err(reason)
}

/// The request's authority: HTTP/2's `:authority`, or HTTP/1.1's `Host`.
fn authority(parts: &Parts) -> Option<&str> {
    parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| parts.headers.get(header::HOST)?.to_str().ok())
}

/// Whether `origin` is the request's own scheme and authority.
fn same_origin(origin: &str, parts: &Parts, tls: bool) -> bool {
    let scheme = if tls { "https://" } else { "http://" };
    match (authority(parts), origin.strip_prefix(scheme)) {
        (Some(authority), Some(host)) => host.eq_ignore_ascii_case(authority),
        _ => false,
    }
}

/// The answer to a preflight: what the page may send, for how long.
fn preflight(web: &WebSettings, allowed: Option<Allowed<'_>>, request: &HeaderMap) -> Local {
    let Some(allowed) = allowed else {
        let reason = if web.cors.is_some() {
            "CORS preflight without a cross-origin Origin: nothing to allow"
        } else {
            "CORS preflight: this listener allows no cross-origin calls (configure grpc_web.cors.allow_origins)"
        };
        return Local::text(StatusCode::FORBIDDEN, reason);
    };
    let mut headers = HeaderMap::new();
    add_cors(&mut headers, Some(allowed));
    headers.remove(header::ACCESS_CONTROL_EXPOSE_HEADERS);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    let allow_headers = allowed.cors.allow_headers.clone().or_else(|| {
        // Echoed only when it is a list of header names.
        request
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .filter(|v| {
                v.to_str().is_ok_and(|list| {
                    list.split(',')
                        .all(|name| HeaderName::from_bytes(name.trim().as_bytes()).is_ok())
                })
            })
            .cloned()
    });
    if let Some(allow_headers) = allow_headers {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    }
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, allowed.cors.max_age.clone());
    Local {
        status: StatusCode::NO_CONTENT,
        headers,
        body: Bytes::new(),
        flags: "",
    }
}

/// Adds what an allowed page needs to read an answer.
fn add_cors(headers: &mut HeaderMap, allowed: Option<Allowed<'_>>) {
    let Some(Allowed { cors, origin }) = allowed else {
        return;
    };
    let any = cors.config.any_origin() && !cors.config.allow_credentials;
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        if any {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        },
    );
    if cors.config.allow_credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        cors.expose_headers.clone(),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

/// Counts and logs an answer the gRPC-Web side gave itself (forwarded calls
/// are counted and logged by the call path, through the bridge).
fn record_local(ingress: &Ingress, parts: &Parts, local: &Local, start: (Instant, SystemTime)) {
    let stats = &ingress.stats;
    stats.downstream_rq_total.inc();
    stats.count_response(local.status.as_u16());
    if ingress.access_log.is_on() {
        let mut entry = Entry::from_parts(start.1, parts);
        entry.response_code = local.status.as_u16();
        entry.flags = local.flags;
        entry.bytes_sent = local.body.len() as u64;
        entry.duration_ms = start.0.elapsed().as_millis() as u64;
        ingress.access_log.log(&entry);
    }
}

/// The request of the call path as `http` parts, for the gRPC-Web side
/// (which serves HTTP/1.1 too and works with the `http` types).
fn parts_of(head: &Head, tls: bool) -> Parts {
    let mut request = Request::new(());
    *request.method_mut() = Method::from_bytes(head.method()).unwrap_or(Method::POST);
    let scheme = if tls { "https" } else { "http" };
    let authority = head
        .authority()
        .and_then(|a| std::str::from_utf8(a).ok())
        .unwrap_or("localhost");
    let path = match head.path() {
        "" => "/",
        path => path,
    };
    *request.uri_mut() = format!("{scheme}://{authority}{path}")
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("http://localhost/"));
    *request.version_mut() = Version::HTTP_2;
    *request.headers_mut() = head.to_header_map();
    request.into_parts().0
}

/// An answer held as `http` types, as a head to send.
fn head_of(status: StatusCode, headers: &HeaderMap) -> Head {
    let mut head = Head::response(status.as_u16());
    head.extend_from_header_map(headers);
    head
}

/// A gRPC-Web call or preflight that came over a client's HTTP/2 connection
/// (from [`crate::forward::handle`], which classified it as `kind`); `web` is
/// the listener's settings.
pub async fn handle_h2(
    ingress: &Arc<Ingress>,
    web: &WebSettings,
    kind: Kind,
    head: Box<Head>,
    stream: StreamRef,
    conn: &ConnState,
) {
    let start = (Instant::now(), SystemTime::now());
    // Counted for the premature-reset rule as every stream is: a client
    // that resets its gRPC-Web streams at once is closed like any other.
    conn.stream_opened();
    let client_reset = || {
        ingress.stats.downstream_rq_rx_reset.inc();
        conn.stream_reset(start.0);
    };
    let parts = parts_of(&head, ingress.tls.is_some());
    let answer = answer(
        ingress,
        web,
        &conn.bridge,
        &ingress.cut,
        &parts,
        kind,
        Source::H2(&stream),
    )
    .await;
    let (head, mut body) = match answer {
        Answer::Gone => return client_reset(),
        Answer::Local(local) => {
            record_local(ingress, &parts, &local, start);
            (
                head_of(local.status, &local.headers),
                AnswerBody::Full(Some(local.body)),
            )
        }
        Answer::Forwarded(response, body) => (head_of(response.status(), response.headers()), body),
    };
    let end = body.is_end_stream();
    if stream.send_response(&head, end).is_err() {
        return client_reset();
    }
    if end {
        return;
    }
    let stall = ingress.stream_stall_timeout.unwrap_or(Duration::MAX);
    loop {
        let Some(chunk) = poll_fn(|cx| body.poll_chunk(cx)).await else {
            let _ = stream.send_data(Bytes::new(), true);
            return;
        };
        if stream.send_data(chunk, false).is_err() {
            return client_reset();
        }
        // Read on only once the client's window has taken this chunk.
        let room = poll_fn(|cx| match stream.poll_capacity(cx) {
            Poll::Ready(Ok(_)) => Poll::Ready(true),
            Poll::Ready(Err(_)) => Poll::Ready(false),
            Poll::Pending => Poll::Pending,
        });
        match tokio::time::timeout(stall, room).await {
            Ok(true) => {}
            Ok(false) => return client_reset(),
            Err(_) => {
                ingress.stats.downstream_rq_stalled.inc();
                stream.send_reset(h2fwd::Reason::CANCEL);
                return;
            }
        }
    }
}

/// Serves a client's HTTP/1.1 connection on a gRPC-Web listener (hyper's
/// HTTP/1 server): gRPC-Web calls and preflights; everything else is
/// answered 415. One request at a time, keep-alive, GOAWAY's equivalent
/// (`connection: close` after the current request) on shutdown.
pub async fn serve_http1<T>(
    io: T,
    peer: SocketAddr,
    ingress: Arc<Ingress>,
    shutdown: CancellationToken,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Only gRPC-Web listeners hand HTTP/1.1 connections over.
    let Some(web) = ingress.web.clone() else {
        return;
    };
    let state = Arc::new((ingress, web, BridgeSlot::default(), shutdown.clone()));
    let slot = Arc::clone(&state);
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let state = Arc::clone(&state);
        async move {
            let (ingress, web, bridge, shutdown) = &*state;
            let start = (Instant::now(), SystemTime::now());
            ingress.stats.web.http1_requests.inc();
            let (parts, mut body) = request.into_parts();
            let answer = answer(
                ingress,
                web,
                bridge,
                shutdown,
                &parts,
                classify(&parts),
                Source::Http1(&mut body),
            )
            .await;
            let response = match answer {
                Answer::Local(local) => {
                    record_local(ingress, &parts, &local, start);
                    let mut response = Response::new(AnswerBody::Full(Some(local.body)));
                    *response.status_mut() = local.status;
                    *response.headers_mut() = local.headers;
                    response
                }
                Answer::Forwarded(head, body) => head.map(|()| body),
                Answer::Gone => Response::new(AnswerBody::Full(None)),
            };
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Some(Duration::from_secs(10)))
        .max_buf_size(64 << 10)
        .keep_alive(true);
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let mut draining = false;
    let mut look = Instant::now() + BRIDGE_IDLE;
    let served = loop {
        tokio::select! {
            served = connection.as_mut() => break served,
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(look) => look = slot.2.expire(BRIDGE_IDLE),
        }
    };
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "HTTP/1.1 connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, headers: &[(&str, &str)]) -> Parts {
        let mut request = Request::builder()
            .method(method)
            .uri("/helloworld.Greeter/SayHello");
        for (n, v) in headers {
            request = request.header(*n, *v);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn content_types_tell_the_variants() {
        let kind = |ct: &str| classify(&parts(Method::POST, &[("content-type", ct)]));
        assert_eq!(kind("application/grpc-web"), Kind::Call { text: false });
        assert_eq!(
            kind("application/grpc-web+proto"),
            Kind::Call { text: false }
        );
        assert_eq!(kind("application/grpc-web-text"), Kind::Call { text: true });
        assert_eq!(
            kind("application/grpc-web-text+proto"),
            Kind::Call { text: true }
        );
        assert_eq!(kind("application/grpc"), Kind::Other);
        assert_eq!(kind("application/grpc-webby"), Kind::Other);
        let preflight = parts(
            Method::OPTIONS,
            &[
                ("origin", "http://a"),
                ("access-control-request-method", "POST"),
            ],
        );
        assert_eq!(classify(&preflight), Kind::Preflight);
        assert_eq!(classify(&parts(Method::OPTIONS, &[])), Kind::Other);
    }

    #[test]
    fn the_call_upstream_is_grpc_over_http2() {
        let p = parts(
            Method::POST,
            &[
                ("host", "front:8080"),
                ("content-type", "application/grpc-web-text+proto"),
                ("connection", "keep-alive"),
                ("content-length", "20"),
                ("x-grpc-web", "1"),
                ("x-custom", "kept"),
            ],
        );
        let up = upstream_request(&p, false);
        assert_eq!(up.uri(), "http://front:8080/helloworld.Greeter/SayHello");
        let h = up.headers();
        assert_eq!(h["content-type"], "application/grpc+proto");
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-custom"], "kept");
        for gone in ["connection", "content-length", "x-grpc-web", "host"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn origins_are_checked_and_answered() {
        let web = WebSettings::new(&GrpcWebConfig {
            cors: Some(CorsConfig::new(vec!["http://page:*".into()])),
            ..GrpcWebConfig::default()
        });
        let origin = HeaderValue::from_static("http://page:9901");
        let p = parts(Method::POST, &[("host", "front:8080")]);
        let allowed = check_origin(&web, &p, Some(&origin), false).unwrap();
        let mut headers = HeaderMap::new();
        add_cors(&mut headers, allowed);
        assert_eq!(headers["access-control-allow-origin"], "http://page:9901");
        assert_eq!(
            headers["access-control-expose-headers"],
            "grpc-status, grpc-message, x-backend-id"
        );
        let stranger = HeaderValue::from_static("http://evil:1");
        let refused = check_origin(&web, &p, Some(&stranger), false).unwrap_err();
        assert!(
            refused.contains("not in grpc_web.cors.allow_origins"),
            "{refused}"
        );
        let own = HeaderValue::from_static("http://front:8080");
        assert!(check_origin(&web, &p, Some(&own), false).unwrap().is_none());

        let mut asked = HeaderMap::new();
        asked.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("content-type,x-grpc-web,x-my-metadata"),
        );
        let answer = preflight(&web, allowed, &asked);
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
        assert_eq!(answer.headers["access-control-max-age"], "86400");
        assert_eq!(
            answer.headers["access-control-allow-headers"], "content-type,x-grpc-web,x-my-metadata",
            "what the preflight asked for"
        );
        asked.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("content-type, bad header"),
        );
        let answer = preflight(&web, allowed, &asked);
        assert!(!answer.headers.contains_key("access-control-allow-headers"));
    }
}
