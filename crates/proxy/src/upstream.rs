//! Upstream HTTP/2 connections: one multiplexed connection per host, opened
//! ahead of the first call, kept open, and reopened with backoff when lost.
//!
//! A maintainer task per host owns the connection. It publishes the current
//! [`State`] in a `watch` channel; a call takes a cheap clone of the
//! connection's `SendRequest` (our HTTP/2 layer, `h2fwd`) from it and opens
//! its stream there. When a call finds the
//! connection refusing new streams (the host sent GOAWAY, or it closed), it
//! reports that and the maintainer opens a fresh connection at once while the
//! old one finishes the calls it carries. A host that cannot be reached is
//! marked `Down` between attempts, so calls fail over to another host
//! immediately instead of waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use h2fwd::client::SendRequest;
use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, Host};
use crate::tls::{ClientTls, Io};

/// Flow-control windows towards upstreams: large enough that one stream can
/// move data at loopback speed without waiting for WINDOW_UPDATEs.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;
/// The largest response header block accepted from an upstream.
const MAX_HEADER_LIST: u32 = 64 << 10;
/// A connection that lived at least this long is reopened without backoff.
const STABLE_AFTER: Duration = Duration::from_secs(1);

/// What a call can use right now.
#[derive(Clone, Debug)]
pub enum State {
    /// A connection attempt is under way.
    Connecting,
    /// Open; new streams go here.
    Ready {
        sender: SendRequest,
        generation: u64,
    },
    /// The last attempt failed; the next one comes after a backoff.
    Down { error: Arc<str> },
    /// The host left the cluster: no new calls.
    Closed,
}

/// Why a call could not get a stream on a host. The call never reached it,
/// so trying another host is always safe.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("connection failure: {0}")]
    ConnectFailed(Arc<str>),
    #[error("connection timeout")]
    ConnectTimeout,
    #[error("host removed")]
    Closed,
    #[error("connection refused new streams: {0}")]
    Refused(Arc<str>),
}

/// The connection slot of one host.
#[derive(Debug)]
pub struct Connection {
    state: watch::Sender<State>,
    /// Mirrors `state` being `Ready`, for the pick path (no lock).
    ready: std::sync::atomic::AtomicBool,
    broken: Notify,
    generation: AtomicU64,
}

/// A handle on the current connection, for opening one stream.
#[derive(Debug)]
pub struct Lease {
    pub sender: SendRequest,
    pub generation: u64,
}

impl Default for Connection {
    fn default() -> Self {
        Self::new()
    }
}

impl Connection {
    pub fn new() -> Self {
        Connection {
            state: watch::Sender::new(State::Connecting),
            ready: std::sync::atomic::AtomicBool::new(false),
            broken: Notify::new(),
            generation: AtomicU64::new(0),
        }
    }

    fn set(&self, state: State) {
        self.ready
            .store(matches!(state, State::Ready { .. }), Relaxed);
        self.state.send_replace(state);
    }

    /// Whether a connection is open and taking new streams, as far as known.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    /// The current state, for reports.
    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    /// A lease on the open connection, waiting at most `wait` while one is
    /// being opened. Fails at once when the host is down or removed.
    pub async fn lease(&self, wait: Duration) -> Result<Lease, UpstreamError> {
        if let Some(result) = Self::lease_now(&self.state.borrow()) {
            return result;
        }
        let mut rx = self.state.subscribe();
        let waiting = async {
            loop {
                if let Some(result) = Self::lease_now(&rx.borrow_and_update()) {
                    return result;
                }
                if rx.changed().await.is_err() {
                    return Err(UpstreamError::Closed);
                }
            }
        };
        tokio::time::timeout(wait, waiting)
            .await
            .unwrap_or(Err(UpstreamError::ConnectTimeout))
    }

    fn lease_now(state: &State) -> Option<Result<Lease, UpstreamError>> {
        match state {
            State::Ready { sender, generation } => Some(Ok(Lease {
                sender: sender.clone(),
                generation: *generation,
            })),
            State::Down { error } => Some(Err(UpstreamError::ConnectFailed(Arc::clone(error)))),
            State::Closed => Some(Err(UpstreamError::Closed)),
            State::Connecting => None,
        }
    }

    /// Reports that the connection of `generation` refuses new streams.
    pub fn report_broken(&self, generation: u64) {
        if generation != 0 && self.generation.load(Relaxed) == generation {
            // Wakes the maintainer only if it is waiting on this connection;
            // no permit is stored for a later one.
            self.broken.notify_waiters();
        }
    }
}

/// Exponential backoff with jitter: 100 ms doubling to 10 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(10);

    fn new() -> Self {
        Backoff { next: Self::BASE }
    }

    fn reset(&mut self) {
        self.next = Self::BASE;
    }

    fn next(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        // +-25 % so that many proxies do not reconnect in lockstep.
        base.mul_f64(rand::rng().random_range(0.75..1.25))
    }
}

/// The HTTP/2 settings of every upstream connection (push is off: a
/// client's SETTINGS say so, and the host may open no stream).
fn client_config() -> h2fwd::Config {
    h2fwd::Config {
        max_concurrent_streams: 0,
        initial_window_size: STREAM_WINDOW,
        connection_window_size: CONNECTION_WINDOW,
        max_header_list_size: MAX_HEADER_LIST,
        ..h2fwd::Config::default()
    }
}

/// Opens a TCP connection (with TLS when the cluster asks for it) and an
/// HTTP/2 session, within `timeout`.
async fn connect(
    host: &Host,
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Result<(SendRequest, h2fwd::client::Connection<Io>), String> {
    let attempt = async {
        let tcp = TcpStream::connect(host.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let io = match tls {
            Some(tls) => tls.connect(tcp, &host.hostname).await?,
            None => Io::Plain(tcp),
        };
        Ok(h2fwd::client::handshake(io, client_config()))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("no connection within {}", common::format_duration(timeout)))?
}

/// Why a host connection's driver stopped.
#[derive(Debug)]
enum DriveEnd {
    /// The connection ended (closed by the host, or an error).
    Closed(Option<h2fwd::Error>),
    /// A PING went unanswered (after earlier ones were, when the flag is
    /// set): the connection was closed by us.
    NoPong(Duration, bool),
    PingFailed(h2fwd::Error),
}

/// Drives one host connection, PINGing it every `interval` (when given) and
/// closing it when an answer takes longer than `timeout`: a frozen host (a
/// stopped process, a hung VM, a partition) sends no RST and no FIN, and
/// without this its connection would look open until TCP gave up, minutes
/// later. `alive` fires with the first PONG, or at once without keepalive: a
/// kernel completes the TCP handshake of a frozen process, so only an answer
/// from the HTTP/2 peer says that it is alive.
async fn drive(
    connection: h2fwd::client::Connection<Io>,
    ping_pong: Option<h2fwd::PingPong>,
    interval: Duration,
    timeout: Duration,
    alive: tokio::sync::oneshot::Sender<()>,
) -> DriveEnd {
    let mut alive = Some(alive);
    let keepalive = async {
        let Some(ping_pong) = ping_pong.as_ref() else {
            if let Some(alive) = alive.take() {
                let _ = alive.send(());
            }
            return std::future::pending().await;
        };
        loop {
            match tokio::time::timeout(timeout, ping_pong.ping()).await {
                Ok(Ok(_pong)) => {
                    if let Some(alive) = alive.take() {
                        let _ = alive.send(());
                    }
                }
                Ok(Err(e)) => return DriveEnd::PingFailed(e),
                Err(_) => return DriveEnd::NoPong(timeout, alive.is_none()),
            }
            tokio::time::sleep(interval).await;
        }
    };
    tokio::select! {
        ended = connection => DriveEnd::Closed(ended.err()),
        end = keepalive => end,
    }
}

/// Keeps `host` connected until `stop`, then lets its last connections finish
/// their calls and marks the host drained.
pub async fn maintain(cluster: Arc<Cluster>, host: Arc<Host>, stop: CancellationToken) {
    let conn = &host.conn;
    let mut backoff = Backoff::new();
    let mut drivers: JoinSet<()> = JoinSet::new();
    let mut generation = 0;
    let mut failing = false;
    'connect: loop {
        // Reports about the previous connection must not touch the next one.
        conn.generation.store(0, Relaxed);
        conn.set(State::Connecting);
        let max = cluster.config.circuit_breakers.max_connections;
        if cluster.stats.upstream_cx_active.get() >= max {
            cluster.stats.upstream_cx_overflow.inc();
            conn.set(State::Down {
                error: format!("circuit breaker: cluster has max_connections ({max}) open").into(),
            });
            tokio::select! {
                () = tokio::time::sleep(backoff.next()) => continue 'connect,
                () = stop.cancelled() => break 'connect,
            }
        }
        let attempt = tokio::select! {
            attempt = connect(&host, cluster.tls.as_ref(), cluster.config.connect_timeout) => attempt,
            () = stop.cancelled() => break 'connect,
        };
        let (sender, connection) = match attempt {
            Ok(pair) => pair,
            Err(error) => {
                host.stats.cx_connect_fail.inc();
                cluster.stats.upstream_cx_connect_fail.inc();
                if !failing {
                    tracing::warn!(cluster = cluster.name(), host = %host.addr, %error, "cannot connect to host; retrying with backoff");
                    failing = true;
                } else {
                    tracing::debug!(cluster = cluster.name(), host = %host.addr, %error, "connect attempt failed");
                }
                conn.set(State::Down {
                    error: error.into(),
                });
                tokio::select! {
                    () = tokio::time::sleep(backoff.next()) => continue 'connect,
                    () = stop.cancelled() => break 'connect,
                }
            }
        };
        let keepalive = cluster.config.keepalive_interval;
        let ping_pong = keepalive.map(|_| connection.ping_pong());
        let (alive_tx, alive_rx) = tokio::sync::oneshot::channel();
        generation += 1;
        conn.generation.store(generation, Relaxed);
        host.stats.cx_total.inc();
        host.stats.cx_active.inc();
        cluster.stats.upstream_cx_total.inc();
        cluster.stats.upstream_cx_active.inc();
        let opened = Instant::now();
        let current = {
            let host = Arc::clone(&host);
            let cluster = Arc::clone(&cluster);
            let interval = keepalive.unwrap_or(Duration::MAX);
            let timeout = cluster.config.keepalive_timeout;
            drivers
                .spawn(async move {
                    match drive(connection, ping_pong, interval, timeout, alive_tx).await {
                        DriveEnd::Closed(None) => {}
                        DriveEnd::Closed(Some(e)) => {
                            tracing::debug!(host = %host.addr, error = %e, "upstream connection ended with an error");
                        }
                        DriveEnd::NoPong(waited, was_alive) => {
                            cluster.stats.upstream_cx_keepalive_timeout.inc();
                            if was_alive {
                                tracing::warn!(cluster = cluster.name(), host = %host.addr, "host stopped answering: no PING answer within {}; connection closed, host out of rotation", common::format_duration(waited));
                            }
                        }
                        DriveEnd::PingFailed(e) => {
                            tracing::debug!(host = %host.addr, error = %e, "PING failed; connection closed");
                        }
                    }
                    host.stats.cx_active.dec();
                    cluster.stats.upstream_cx_active.dec();
                })
                .id()
        };
        // Calls go to the connection only once the host has answered on it.
        let answered = tokio::select! {
            answered = alive_rx => answered.is_ok(),
            () = stop.cancelled() => break 'connect,
        };
        if !answered {
            host.stats.cx_connect_fail.inc();
            cluster.stats.upstream_cx_connect_fail.inc();
            let error = format!(
                "connected, but no answer to a PING within {}",
                common::format_duration(cluster.config.keepalive_timeout)
            );
            if !failing {
                tracing::warn!(cluster = cluster.name(), host = %host.addr, %error, "host does not answer; out of rotation, retrying with backoff");
                failing = true;
            }
            conn.generation.store(0, Relaxed);
            conn.set(State::Down {
                error: error.into(),
            });
            tokio::select! {
                () = tokio::time::sleep(backoff.next()) => continue 'connect,
                () = stop.cancelled() => break 'connect,
            }
        }
        if failing {
            tracing::info!(cluster = cluster.name(), host = %host.addr, "connected to host again");
            failing = false;
        }
        conn.set(State::Ready { sender, generation });

        loop {
            tokio::select! {
                ended = drivers.join_next_with_id() => {
                    let ended = match ended {
                        Some(Ok((id, ()))) => Some(id),
                        Some(Err(e)) => Some(e.id()),
                        None => None,
                    };
                    if ended.is_some() && ended != Some(current) {
                        continue; // an older connection finished draining
                    }
                    tracing::debug!(host = %host.addr, "upstream connection closed; reconnecting");
                    conn.generation.store(0, Relaxed);
                    conn.set(State::Connecting);
                    if opened.elapsed() < STABLE_AFTER {
                        // It closed right away: do not hammer the host.
                        tokio::select! {
                            () = tokio::time::sleep(backoff.next()) => {}
                            () = stop.cancelled() => break 'connect,
                        }
                    } else {
                        backoff.reset();
                    }
                    continue 'connect;
                }
                () = conn.broken.notified() => {
                    tracing::debug!(host = %host.addr, "connection refuses new streams (GOAWAY); opening another");
                    continue 'connect;
                }
                () = stop.cancelled() => break 'connect,
            }
        }
    }
    conn.set(State::Closed);
    while drivers.join_next().await.is_some() {}
    cluster.host_drained(&host);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::future::poll_fn;

    /// The request encoded from a `Head` reaches a host (the h2 crate, an
    /// independent HPACK decoder) as the client sent it: pseudo-headers,
    /// every field and repeated value in order, the replacing field instead
    /// of the client's, and a block too large for one frame split into
    /// CONTINUATION frames.
    #[tokio::test]
    async fn a_request_from_a_head_reaches_an_h2_host_unchanged() {
        for value_len in [10, 40_000] {
            let mut head = h2fwd::Head::request(
                b"POST",
                b"https",
                b"greeter.example:8443",
                b"/helloworld.Greeter/SayHello?x=1",
            );
            head.append(b"content-type", b"application/grpc");
            head.append(b"te", b"trailers");
            head.append(b"grpc-timeout", b"5S");
            head.append(b"x-tag", b"one");
            head.append(b"x-tag", b"two");
            head.append_sensitive(b"authorization", b"Bearer abc");
            head.append(b"x-large", "v".repeat(value_len).as_bytes());

            let (near, far) = tokio::io::duplex(64 * 1024);
            let host = tokio::spawn(async move {
                let mut server = h2::server::Builder::new();
                server.max_header_list_size(1 << 20);
                let mut conn = server.handshake::<_, Bytes>(far).await.unwrap();
                let (request, mut respond) = conn.accept().await.unwrap().unwrap();
                respond
                    .send_response(http::Response::new(()), true)
                    .unwrap();
                tokio::spawn(async move { while conn.accept().await.is_some() {} });
                request.into_parts().0
            });
            let (sender, connection) = h2fwd::client::handshake(near, client_config());
            tokio::spawn(connection);
            let stream = sender
                .send_request(&head, Some((b"grpc-timeout", b"100m")), true)
                .unwrap();
            let response = poll_fn(|cx| stream.poll_response(cx)).await.unwrap();
            assert_eq!(response.status(), 200);
            let parts = host.await.unwrap();
            assert_eq!(parts.method, http::Method::POST);
            assert_eq!(
                parts.uri,
                "https://greeter.example:8443/helloworld.Greeter/SayHello?x=1"
            );
            let h = &parts.headers;
            assert_eq!(h["content-type"], "application/grpc");
            assert_eq!(h["te"], "trailers");
            assert_eq!(
                h.get_all("grpc-timeout").iter().collect::<Vec<_>>(),
                ["100m"],
                "the proxy's grpc-timeout replaces the client's"
            );
            assert_eq!(
                h.get_all("x-tag").iter().collect::<Vec<_>>(),
                ["one", "two"]
            );
            assert_eq!(h["x-large"].len(), value_len);
            assert_eq!(h.len(), 7, "{h:?}");
        }
    }
}
