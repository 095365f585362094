//! The L4 listener: a TCP balancer, like an AWS NLB or a Classic ELB in TCP
//! mode. Each *connection* goes to a host picked by the cluster's policy and
//! bytes are copied both ways; every call multiplexed on that connection
//! lands on the same host. It exists to show that skew side by side with L7
//! mode, against the same backends.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::cluster::Cluster;
use crate::forward::ListenerStats;

/// What an L4 listener needs.
#[derive(Debug)]
pub struct Tcp {
    pub listener: String,
    pub cluster: Arc<Cluster>,
    pub stats: Arc<ListenerStats>,
    /// Cancelled when the drain deadline passes: open connections close.
    pub cut: CancellationToken,
}

/// Accepts until `shutdown`; open connections keep copying until either side
/// closes (they are owned by `tasks`). Each connection goes to the cluster
/// `current` names when it is accepted (a reload may change it).
pub async fn serve(
    listener: TcpListener,
    current: Arc<ArcSwap<Tcp>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let name = current.load().listener.clone();
    crate::server::accept_loop(listener, &name, shutdown, |client, peer| {
        let tcp = current.load_full();
        let span = tracing::debug_span!("tcp", listener = %tcp.listener, %peer);
        tasks.spawn(proxy(client, peer, tcp).instrument(span));
    })
    .await;
}

async fn proxy(mut client: TcpStream, peer: SocketAddr, tcp: Arc<Tcp>) {
    tcp.stats.downstream_cx_total.inc();
    tcp.stats.downstream_cx_active.inc();
    let cluster = &tcp.cluster;
    let timeout = cluster.config.connect_timeout;
    let max = cluster.config.circuit_breakers.max_connections;
    if cluster.stats.upstream_cx_active.get() >= max {
        cluster.stats.upstream_cx_overflow.inc();
        tracing::warn!(%peer, max_connections = max, "circuit breaker open: closing the client connection");
        tcp.stats.downstream_cx_active.dec();
        return;
    }
    let mut tried = Vec::new();
    let (mut upstream, host) = loop {
        let Some(host) = cluster.pick(&tried) else {
            tracing::warn!(%peer, "no upstream host reachable; closing the client connection");
            cluster.stats.upstream_cx_none_healthy.inc();
            tcp.stats.downstream_cx_active.dec();
            return;
        };
        tried.push(host.addr);
        match tokio::time::timeout(timeout, TcpStream::connect(host.addr)).await {
            Ok(Ok(stream)) => break (stream, host),
            Ok(Err(e)) => {
                tracing::debug!(host = %host.addr, error = %e, "connect failed; trying another host");
            }
            Err(_) => tracing::debug!(host = %host.addr, "connect timed out; trying another host"),
        }
        host.stats.cx_connect_fail.inc();
        cluster.stats.upstream_cx_connect_fail.inc();
    };
    let _ = upstream.set_nodelay(true);
    for s in [&host.stats.cx_total, &host.stats.cx_active] {
        s.inc();
    }
    cluster.stats.upstream_cx_total.inc();
    cluster.stats.upstream_cx_active.inc();
    tracing::debug!(host = %host.addr, "connection balanced to host");

    // A TCP balancer cannot drain gracefully (it cannot see calls): on
    // shutdown its connections end when the drain deadline passes.
    tokio::select! {
        copied = splice(&mut client, &mut upstream) => {
            if let Err(e) = copied {
                tracing::debug!(error = %e, "TCP proxying ended with an error");
            }
        }
        () = tcp.cut.cancelled() => tracing::debug!("drain deadline passed; closing"),
    }
    host.stats.cx_active.dec();
    cluster.stats.upstream_cx_active.dec();
    tcp.stats.downstream_cx_active.dec();
}

/// Copies bytes both ways until both sides have finished sending; an end of
/// stream from one side is passed on as a half-close (`shutdown(SHUT_WR)`)
/// to the other.
///
/// Unlike `tokio::io::copy_bidirectional`, which gives every connection two
/// 8 KiB buffers for its whole life, a connection holds no buffer while it
/// idles: bytes are read into a per-thread scratch buffer and written on at
/// once, and only what the receiver cannot take right away is kept, until it
/// can (HAProxy allocates its buffers the same way). Nothing more is read
/// from a side while its bytes wait, so a slow receiver slows its sender.
async fn splice(a: &mut TcpStream, b: &mut TcpStream) -> io::Result<()> {
    let (mut a_read, mut a_write) = a.split();
    let (mut b_read, mut b_write) = b.split();
    tokio::try_join!(
        pump(&mut a_read, &mut b_write),
        pump(&mut b_read, &mut a_write)
    )?;
    Ok(())
}

/// One direction of [`splice`]: `from` to `to` until `from` ends.
async fn pump(from: &mut ReadHalf<'_>, to: &mut WriteHalf<'_>) -> io::Result<()> {
    let mut waiting: Vec<u8> = Vec::new();
    loop {
        if waiting.is_empty() {
            if !poll_fn(|cx| poll_move(cx, from, to, &mut waiting)).await? {
                break;
            }
        } else {
            to.writable().await?;
            let sent = write_now(to, &waiting)?;
            waiting.drain(..sent);
            if waiting.is_empty() {
                waiting = Vec::new(); // give the memory back while idle
            }
        }
    }
    to.shutdown().await
}

/// Bytes read at once by [`poll_move`].
const SCRATCH: usize = 16 * 1024;

thread_local! {
    static SCRATCH_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// Reads what `from` has into the scratch buffer and writes it to `to`
/// without waiting; what `to` cannot take now goes to `waiting`. Ready with
/// `false` at the end of `from`.
///
/// A poll rather than `try_read`: tokio's `poll_read` knows that a short
/// read emptied the socket and waits for the next readiness event, where
/// `try_read` would make one more `recv` just to see `EAGAIN`.
fn poll_move(
    cx: &mut Context<'_>,
    from: &mut ReadHalf<'_>,
    to: &WriteHalf<'_>,
    waiting: &mut Vec<u8>,
) -> Poll<io::Result<bool>> {
    SCRATCH_BUF.with_borrow_mut(|buf| {
        let mut read = ReadBuf::new(buf);
        ready!(Pin::new(from).poll_read(cx, &mut read))?;
        let data = read.filled();
        if data.is_empty() {
            return Poll::Ready(Ok(false));
        }
        let sent = write_now(to, data)?;
        waiting.extend_from_slice(&data[sent..]);
        Poll::Ready(Ok(true))
    })
}

/// Writes as much of `data` as `to` takes without waiting; how much it took.
fn write_now(to: &WriteHalf<'_>, data: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < data.len() {
        match to.try_write(&data[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}
