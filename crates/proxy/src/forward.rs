//! One call through the proxy, from the client's stream to a host and back.
//!
//! 1. **Open.** Pick a host, lease its connection, open a stream with the
//!    request's headers. A failure here means the call never reached a host
//!    (connect failure, connection refusing new streams after GOAWAY), so the
//!    next host is tried, up to one try per host.
//! 2. **Exchange.** Two pipes run side by side in the call's task: the request
//!    body (client to host) and the response (headers, body, trailers; host to
//!    client). Each moves DATA frames as they come, with HTTP/2 flow control on
//!    both sides, so a slow reader slows its writer instead of filling memory.
//!    Messages are never decoded.
//! 3. **End.** Resets travel through: a client's RST_STREAM cancels the
//!    upstream stream; an upstream reset resets the client's stream. A
//!    `grpc-timeout` is enforced here too: when it passes the call ends with
//!    DEADLINE_EXCEEDED and the upstream stream is cancelled.
//!
//! Whatever happens, the call is counted once in the host's and cluster's
//! statistics (from `grpc-status` in headers *or* trailers) and written once
//! to the access log.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::SystemTime;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::request::Parts;
use http::{HeaderValue, Request, Response};
use rand::RngCore;
use tokio::time::Instant;

use crate::access_log::{AccessLog, Entry};
use crate::cluster::{Cluster, Host, RequestGuard, Stat};
use crate::grpc::{self, code};
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
}

/// What a listener's calls need.
#[derive(Debug)]
pub struct Route {
    pub listener: String,
    pub cluster: Arc<Cluster>,
    pub access_log: AccessLog,
    pub stats: Arc<ListenerStats>,
}

/// How one call ended, for statistics and the access log.
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
}

/// Handles one client stream to the end.
pub async fn handle(route: Arc<Route>, request: Request<RecvStream>, respond: SendResponse<Bytes>) {
    let started = Instant::now();
    let start_time = SystemTime::now();
    let stats = Arc::clone(&route.stats);
    stats.downstream_rq_total.inc();
    stats.downstream_rq_active.inc();

    let (mut parts, body) = request.into_parts();
    if !parts.headers.contains_key("x-request-id") {
        parts.headers.insert("x-request-id", new_request_id());
    }
    let mut entry = Entry::new(start_time, &parts);
    let grpc = grpc::is_grpc(&parts.headers);
    let deadline = parts
        .headers
        .get("grpc-timeout")
        .and_then(|v| common::parse_grpc_timeout(v.as_bytes()))
        .map(|timeout| started + timeout);

    let mut call = Call {
        cluster: &route.cluster,
        grpc,
        deadline,
        started,
        respond,
        entry: &mut entry,
    };
    let (outcome, host) = call.run(parts, body).await;

    // Count the call once, wherever it ended.
    match outcome.response_code {
        200..=299 => stats.downstream_rq_2xx.inc(),
        400..=499 => stats.downstream_rq_4xx.inc(),
        500..=599 => stats.downstream_rq_5xx.inc(),
        _ => {}
    }
    if outcome.timed_out {
        stats.downstream_rq_timeout.inc();
    }
    if outcome.client_gone {
        stats.downstream_rq_rx_reset.inc();
    }
    if let Some(guard) = host {
        record(&route.cluster, &guard.host, &outcome);
    }
    stats.downstream_rq_active.dec();
    entry.response_code = outcome.response_code;
    entry.flags = outcome.flags;
    entry.duration_ms = started.elapsed().as_millis() as u64;
    route.access_log.log(&entry);
}

/// Success or error for the host that took the call.
fn record(cluster: &Cluster, host: &Host, outcome: &Outcome) {
    let cs = &cluster.stats;
    cs.upstream_rq_active.dec();
    if outcome.client_gone && !outcome.upstream_failed {
        return; // nobody's fault but the client's
    }
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
}

/// A UUID v4, as Envoy generates for `x-request-id`.
fn new_request_id() -> HeaderValue {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex =
        |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    let id = format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    );
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Why no stream could be opened.
enum OpenError {
    /// No host at all (empty cluster).
    NoHost,
    /// Every host tried failed before the call reached it.
    Unreachable(UpstreamError),
}

struct Opened {
    guard: RequestGuard,
    response: h2::client::ResponseFuture,
    send: SendStream<Bytes>,
}

struct Call<'a> {
    cluster: &'a Arc<Cluster>,
    grpc: bool,
    deadline: Option<Instant>,
    started: Instant,
    respond: SendResponse<Bytes>,
    entry: &'a mut Entry,
}

impl Call<'_> {
    async fn run(&mut self, parts: Parts, mut body: RecvStream) -> (Outcome, Option<RequestGuard>) {
        let end_of_stream = body.is_end_stream();
        let opened = tokio::select! {
            opened = self.open(&parts, end_of_stream) => opened,
            () = sleep_until(self.deadline) => {
                return (self.reply(code::DEADLINE_EXCEEDED, "deadline exceeded before a host was reached", "UT", true), None);
            }
        };
        let Opened {
            guard,
            response,
            mut send,
        } = match opened {
            Ok(opened) => opened,
            Err(OpenError::NoHost) => {
                self.cluster.stats.upstream_cx_none_healthy.inc();
                return (
                    self.reply(code::UNAVAILABLE, "no healthy upstream", "UH", false),
                    None,
                );
            }
            Err(OpenError::Unreachable(e)) => {
                let message = format!(
                    "upstream connect error or disconnect/reset before headers. reset reason: {e}"
                );
                return (self.reply(code::UNAVAILABLE, &message, "UF", false), None);
            }
        };
        self.entry.upstream = Some(guard.host.addr);
        self.cluster.stats.upstream_rq_total.inc();
        self.cluster.stats.upstream_rq_active.inc();
        let sent_at = Instant::now();

        let (mut outcome, bytes_received, bytes_sent) = {
            let mut request_pipe = pin!(pipe(&mut body, &mut send, true));
            let mut request_done = end_of_stream;
            let mut response_side = pin!(respond(
                &mut self.respond,
                response,
                self.grpc,
                self.deadline,
                sent_at,
                &mut self.entry.upstream_service_time_ms,
            ));
            let mut bytes_received = 0;
            loop {
                tokio::select! {
                    piped = &mut request_pipe, if !request_done => {
                        request_done = true;
                        match piped {
                            Ok(end) => bytes_received = end.bytes,
                            // The host stopped reading the request (it answered, or
                            // reset): the response side says how the call ends.
                            Err(PipeError::Dst(reason)) => {
                                tracing::trace!(?reason, "host stopped reading the request");
                            }
                            // The client reset or vanished; the host's stream was reset too.
                            Err(PipeError::Src(_)) => break (Outcome {
                                flags: "DC",
                                client_gone: true,
                                ..Outcome::default()
                            }, bytes_received, 0),
                        }
                    }
                    (outcome, sent) = &mut response_side => break (outcome, bytes_received, sent),
                }
            }
        };
        if outcome.response_code == 0 && outcome.client_gone {
            outcome.flags = "DC";
        }
        self.entry.bytes_received = bytes_received;
        self.entry.bytes_sent = bytes_sent;
        (outcome, Some(guard))
    }

    /// Picks hosts until one takes the stream; each host at most once.
    async fn open(&self, parts: &Parts, end_of_stream: bool) -> Result<Opened, OpenError> {
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut last = None;
        let timeout = self.cluster.config.connect_timeout;
        while let Some(host) = self.cluster.pick(&tried) {
            tried.push(host.addr);
            let lease = match host.conn.lease(timeout).await {
                Ok(lease) => lease,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let sender = match lease.sender.ready().await {
                Ok(sender) => sender,
                Err(e) => {
                    host.conn.report_broken(lease.generation);
                    last = Some(UpstreamError::Refused(e.to_string().into()));
                    continue;
                }
            };
            let mut sender = sender;
            let request = self.upstream_request(parts);
            match sender.send_request(request, end_of_stream) {
                Ok((response, send)) => {
                    return Ok(Opened {
                        guard: host.start_request(),
                        response,
                        send,
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

    /// The request as sent upstream: the client's, with `grpc-timeout` reduced
    /// by the time already spent here.
    fn upstream_request(&self, parts: &Parts) -> Request<()> {
        let mut request = Request::new(());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.headers_mut() = parts.headers.clone();
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Ok(value) = HeaderValue::from_str(&common::format_grpc_timeout(left)) {
                request.headers_mut().insert("grpc-timeout", value);
            }
        }
        request
    }

    /// Answers the call locally (no host answered).
    fn reply(&mut self, code: u16, message: &str, flags: &'static str, timed_out: bool) -> Outcome {
        tracing::debug!(flags, elapsed = ?self.started.elapsed(), "local reply: {message}");
        local(
            &mut self.respond,
            self.grpc,
            code,
            message,
            flags,
            timed_out,
        )
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The response side: headers, then body and trailers, from host to client.
/// Returns how the call ended and the response body bytes sent.
async fn respond(
    respond: &mut SendResponse<Bytes>,
    mut response: h2::client::ResponseFuture,
    grpc: bool,
    deadline: Option<Instant>,
    sent_at: Instant,
    service_time: &mut Option<u64>,
) -> (Outcome, u64) {
    // Wait for the head, watching for the client giving up meanwhile.
    let head = poll_fn(|cx| {
        if let Poll::Ready(r) = std::pin::Pin::new(&mut response).poll(cx) {
            return Poll::Ready(Ok(r));
        }
        if let Poll::Ready(r) = respond.poll_reset(cx) {
            return Poll::Ready(Err(r));
        }
        Poll::Pending
    });
    let head = tokio::select! {
        head = head => head,
        () = sleep_until(deadline) => {
            return (local(respond, grpc, code::DEADLINE_EXCEEDED, "deadline exceeded", "UT", true), 0);
        }
    };
    let upstream = match head {
        Err(_) => {
            return (
                Outcome {
                    flags: "DC",
                    client_gone: true,
                    ..Outcome::default()
                },
                0,
            );
        }
        Ok(Err(e)) => {
            // The host reset the stream or the connection dropped before any
            // response: nothing reached the client yet, so answer in gRPC form.
            let mut outcome = local(
                respond,
                grpc,
                code::UNAVAILABLE,
                &format!(
                    "upstream connect error or disconnect/reset before headers. reset reason: {}",
                    describe(&e)
                ),
                "UR",
                false,
            );
            outcome.upstream_failed = true;
            return (outcome, 0);
        }
        Ok(Ok(response)) => response,
    };
    *service_time = Some(sent_at.elapsed().as_millis() as u64);

    let (head, mut body) = upstream.into_parts();
    let response_code = head.status.as_u16();
    let header_status = grpc::status(&head.headers);
    let end_of_stream = body.is_end_stream();
    let mut down = match respond.send_response(Response::from_parts(head, ()), end_of_stream) {
        Ok(down) => down,
        Err(_) => {
            return (
                Outcome {
                    flags: "DC",
                    client_gone: true,
                    ..Outcome::default()
                },
                0,
            );
        }
    };
    let mut outcome = Outcome {
        response_code,
        grpc_status: header_status,
        ..Outcome::default()
    };
    if end_of_stream {
        return (outcome, 0);
    }
    let piped = tokio::select! {
        piped = pipe(&mut body, &mut down, false) => piped,
        () = sleep_until(deadline) => {
            // Headers are out: end with trailers, and cancel the host's stream
            // (dropping `body` does that).
            if grpc {
                let _ = down.send_trailers(grpc::trailers(code::DEADLINE_EXCEEDED, "deadline exceeded"));
                outcome.grpc_status = Some(code::DEADLINE_EXCEEDED);
            } else {
                down.send_reset(Reason::CANCEL);
            }
            outcome.timed_out = true;
            outcome.flags = "UT";
            return (outcome, 0);
        }
    };
    match piped {
        Ok(end) => {
            if end.status.is_some() {
                outcome.grpc_status = end.status;
            }
            (outcome, end.bytes)
        }
        Err(PipeError::Src(e)) => {
            outcome.upstream_failed = true;
            outcome.flags = "UR";
            match e.reason() {
                // The host reset the stream: the client's stream is reset alike.
                Some(reason) if e.is_reset() => down.send_reset(reason),
                // The connection to the host broke: end the call cleanly in gRPC
                // form so the client sees UNAVAILABLE rather than a bare reset.
                _ if grpc => {
                    let message = format!("upstream connection lost: {}", describe(&e));
                    let _ = down.send_trailers(grpc::trailers(code::UNAVAILABLE, &message));
                    outcome.grpc_status = Some(code::UNAVAILABLE);
                }
                _ => down.send_reset(Reason::INTERNAL_ERROR),
            }
            (outcome, 0)
        }
        Err(PipeError::Dst(_)) => {
            outcome.client_gone = true;
            outcome.flags = "DC";
            (outcome, 0)
        }
    }
}

/// Sends a local reply on a stream whose response has not started.
fn local(
    respond: &mut SendResponse<Bytes>,
    grpc: bool,
    code: u16,
    message: &str,
    flags: &'static str,
    timed_out: bool,
) -> Outcome {
    let response = grpc::local_reply(grpc, code, message);
    let status = response.status().as_u16();
    match respond.send_response(response, true) {
        Ok(_) => Outcome {
            response_code: status,
            grpc_status: grpc.then_some(code),
            flags,
            timed_out,
            ..Outcome::default()
        },
        Err(_) => Outcome {
            flags: "DC",
            client_gone: true,
            ..Outcome::default()
        },
    }
}

fn describe(e: &h2::Error) -> String {
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
    Src(h2::Error),
    /// Writing failed: the receiver reset the stream or went away.
    Dst(Option<Reason>),
}

/// How a pipe ended normally.
#[derive(Debug)]
struct PipeEnd {
    bytes: u64,
    /// `grpc-status` from the trailers, if they had one.
    status: Option<u16>,
}

enum Step {
    Data(Bytes),
    End,
    SrcError(h2::Error),
    DstGone(Option<Reason>),
}

/// Moves DATA frames and trailers from `src` to `dst` until the end of the
/// stream, releasing `src`'s flow-control window only as `dst` takes the data.
///
/// With `reset_dst_on_src_error`, a failure to read resets `dst` with the
/// same reason (a client's cancel becomes the host's cancel).
async fn pipe(
    src: &mut RecvStream,
    dst: &mut SendStream<Bytes>,
    reset_dst_on_src_error: bool,
) -> Result<PipeEnd, PipeError> {
    let mut bytes = 0u64;
    loop {
        // Ask for room for at least one more byte beyond what is buffered:
        // until the receiver's window has taken the last chunk we read no more.
        dst.reserve_capacity(1);
        let step = poll_fn(|cx| {
            while dst.capacity() == 0 {
                match dst.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Step::DstGone(e.reason())),
                    Poll::Ready(None) => return Poll::Ready(Step::DstGone(None)),
                    Poll::Pending => {
                        return match dst.poll_reset(cx) {
                            Poll::Ready(Ok(reason)) => Poll::Ready(Step::DstGone(Some(reason))),
                            Poll::Ready(Err(e)) => Poll::Ready(Step::DstGone(e.reason())),
                            Poll::Pending => Poll::Pending,
                        };
                    }
                }
            }
            match src.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => Poll::Ready(Step::Data(data)),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Step::SrcError(e)),
                Poll::Ready(None) => Poll::Ready(Step::End),
                Poll::Pending => match dst.poll_reset(cx) {
                    Poll::Ready(Ok(reason)) => Poll::Ready(Step::DstGone(Some(reason))),
                    Poll::Ready(Err(e)) => Poll::Ready(Step::DstGone(e.reason())),
                    Poll::Pending => Poll::Pending,
                },
            }
        })
        .await;
        match step {
            Step::Data(data) => {
                let n = data.len();
                let _ = src.flow_control().release_capacity(n);
                bytes += n as u64;
                let end = src.is_end_stream();
                dst.send_data(data, end)
                    .map_err(|e| PipeError::Dst(e.reason()))?;
                if end {
                    return Ok(PipeEnd {
                        bytes,
                        status: None,
                    });
                }
            }
            Step::End => {
                let trailers = poll_fn(|cx| match src.poll_trailers(cx) {
                    Poll::Ready(r) => Poll::Ready(Ok(r)),
                    Poll::Pending => match dst.poll_reset(cx) {
                        Poll::Ready(Ok(reason)) => Poll::Ready(Err(Some(reason))),
                        Poll::Ready(Err(e)) => Poll::Ready(Err(e.reason())),
                        Poll::Pending => Poll::Pending,
                    },
                })
                .await
                .map_err(PipeError::Dst)?;
                return match trailers {
                    Ok(Some(trailers)) => {
                        let status = grpc::status(&trailers);
                        dst.send_trailers(trailers)
                            .map_err(|e| PipeError::Dst(e.reason()))?;
                        Ok(PipeEnd { bytes, status })
                    }
                    Ok(None) => {
                        dst.send_data(Bytes::new(), true)
                            .map_err(|e| PipeError::Dst(e.reason()))?;
                        Ok(PipeEnd {
                            bytes,
                            status: None,
                        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v4() {
        let id = new_request_id();
        let id = id.to_str().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(new_request_id(), new_request_id());
    }
}
