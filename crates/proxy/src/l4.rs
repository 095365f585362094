//! The L4 listener: a TCP balancer, like an AWS NLB or a Classic ELB in TCP
//! mode. Each *connection* goes to a host picked by the cluster's policy and
//! bytes are copied both ways; every call multiplexed on that connection
//! lands on the same host. It exists to show that skew side by side with L7
//! mode, against the same backends.

use std::net::SocketAddr;
use std::sync::Arc;

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
/// closes (they are owned by `tasks`).
pub async fn serve(
    listener: TcpListener,
    tcp: Arc<Tcp>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let name = tcp.listener.clone();
    crate::server::accept_loop(listener, &name, shutdown, |client, peer| {
        let span = tracing::debug_span!("tcp", listener = %tcp.listener, %peer);
        tasks.spawn(proxy(client, peer, Arc::clone(&tcp)).instrument(span));
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
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
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
