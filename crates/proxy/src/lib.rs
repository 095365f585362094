//! A lightweight HTTP/2-aware balancing proxy for gRPC.
//!
//! A layer-4 balancer spreads connections, and gRPC multiplexes every call of
//! a client on one connection, so all of that client's calls land on one
//! backend. This proxy terminates HTTP/2 and picks a backend for every
//! request (call) instead, follows DNS as backends scale out, and reports what
//! it does in Envoy's admin formats.
//!
//! # Layout
//! - [`config`]: flags, the YAML file, validation, one file per section.
//! - [`reload`]: what runs (listeners, clusters) and how a new configuration
//!   replaces it live (SIGHUP, file change) without dropping a connection.
//! - [`server`]: the L7 listener: preface check, HTTP/2 sessions with clients.
//! - [`forward`]: one call: route, pick, open the upstream stream, pipe both ways.
//! - [`route`]: how a call finds its cluster (virtual hosts, routes, weights).
//! - [`balance`]: how a host is picked (round robin, least request, random).
//! - [`cluster`]: hosts, their state and statistics; membership changes.
//! - [`discovery`]: DNS resolution and refresh (STRICT_DNS semantics).
//! - [`upstream`]: one multiplexed HTTP/2 connection per host, kept open.
//! - [`health`]: active gRPC health checks (TCP connects for L4 clusters).
//! - [`outlier`]: passive ejection of hosts that keep failing.
//! - [`histogram`]: latency histograms (atomic buckets, no lock).
//! - [`methods`]: per-method gRPC statistics of a cluster, bounded.
//! - [`grpc_web`]: browsers' gRPC-Web calls (HTTP/1.1 or HTTP/2, CORS) to gRPC.
//! - [`grpc`]: the gRPC knowledge the proxy needs (status, local replies).
//! - [`l4`]: the TCP (layer 4) mode, to show connection-level skew.
//! - [`tls`]: TLS termination (ALPN h2, reload) and TLS to upstreams.
//! - [`trace`]: one span per call over OTLP, batched, bounded, never waited for.
//! - [`admin`]: `/clusters`, `/stats`, `/stats/prometheus`, `/ready`, `/`.
//! - [`access_log`]: one line per request in Envoy's default format.
//! - [`run`]: wires it together and drains on shutdown.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod cluster;
pub mod config;
pub mod discovery;
pub mod forward;
pub mod grpc;
pub mod grpc_web;
pub mod health;
pub mod histogram;
pub mod l4;
pub mod methods;
pub mod outlier;
pub mod reload;
pub mod route;
pub mod server;
pub mod tls;
pub mod trace;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::admin::AdminState;
pub use crate::config::Config;
use crate::config::Mode;
use crate::discovery::Resolver;

/// How long upstream connections get to close after the last call finished.
const UPSTREAM_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the proxy could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Tls {
        what: String,
        #[source]
        source: tls::TlsError,
    },
    #[error("cannot start trace export: {what}")]
    Traces { what: String },
    #[error("cannot listen on {addr} ({what})")]
    Bind {
        what: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The sockets the proxy serves on, bound before [`run`] so that tests can
/// use port 0 and read the addresses.
#[derive(Debug)]
pub struct Listeners {
    /// One per `config.listeners`, in the same order.
    pub proxy: Vec<TcpListener>,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds every listener of `config`.
    pub async fn bind(config: &Config) -> Result<Self, Error> {
        let mut proxy = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let listener = TcpListener::bind(l.address)
                .await
                .map_err(|source| Error::Bind {
                    what: format!("listener {}", l.name),
                    addr: l.address,
                    source,
                })?;
            proxy.push(listener);
        }
        let admin = match config.admin {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::Bind {
                        what: "admin".into(),
                        addr,
                        source,
                    })?,
            ),
            None => None,
        };
        Ok(Listeners { proxy, admin })
    }

    /// The bound address of listener `i`.
    pub fn proxy_addr(&self, i: usize) -> Option<SocketAddr> {
        self.proxy.get(i).and_then(|l| l.local_addr().ok())
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// Calls in flight (L7) plus open connections (L4), for the drain's logs.
fn count_in_flight(snapshot: &reload::Snapshot) -> u64 {
    let calls: u64 = snapshot
        .clusters
        .iter()
        .map(|c| c.stats.upstream_rq_active.get())
        .sum();
    let tcp: u64 = snapshot
        .listeners
        .iter()
        .filter(|l| l.mode == Mode::L4)
        .map(|l| l.stats.downstream_cx_active.get())
        .sum();
    calls + tcp
}

/// Serves until `shutdown`, writing the access log (if on) to stdout.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    run_with_log(config, listeners, shutdown, Box::new(std::io::stdout())).await
}

/// [`run`], with the access log written to `log`.
pub async fn run_with_log(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    log: Box<dyn std::io::Write + Send>,
) -> Result<(), Error> {
    let started = Instant::now();
    // Client connections and their calls; drained on shutdown.
    let calls = TaskTracker::new();
    // Discovery and upstream connection maintainers; stopped after the drain.
    let background = TaskTracker::new();
    let stop_accepting = CancellationToken::new();
    let stop_background = CancellationToken::new();
    // Cancelled when the drain deadline passes: calls still running are ended.
    let cut = CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));

    let (access_log, log_thread) = if config.access_log {
        let (log, thread) = AccessLog::start(log, config.access_log_format);
        (log, Some(thread))
    } else {
        (AccessLog::off(), None)
    };

    let hangup = reload::Hangup::install();
    // Stopped after the drain, with a last export of what is queued.
    let stop_traces = CancellationToken::new();
    let traces = match &config.traces {
        Some(t) => {
            let started = trace::Traces::start(t, stop_traces.clone())
                .map_err(|what| Error::Traces { what })?;
            tracing::info!(endpoint = %t.otlp_endpoint, "exporting one span per call over OTLP");
            Some(started)
        }
        None => None,
    };
    let trace_stats = traces.as_ref().map(|t| Arc::clone(&t.stats));
    let shared = reload::Shared {
        access_log: access_log.clone(),
        resolver: Resolver::new(&config.dns_resolvers),
        calls: calls.clone(),
        background: background.clone(),
        stop_accepting: stop_accepting.clone(),
        stop_background: stop_background.clone(),
        cut: cut.clone(),
        traces,
    };
    let live = reload::Live::start(shared, config, listeners.proxy).await?;
    let snapshot = Arc::clone(&live.snapshot);
    let reload_stats = Arc::clone(&live.stats);
    let admin_stop = CancellationToken::new();
    let admin_task = listeners.admin.map(|admin| {
        match admin.local_addr() {
            Ok(addr) => tracing::info!(%addr, "admin interface listening"),
            Err(e) => tracing::warn!(error = %e, "admin interface listening on an unknown address"),
        }
        let state = Arc::new(AdminState {
            snapshot: Arc::clone(&snapshot),
            reload: Arc::clone(&reload_stats),
            traces: trace_stats.clone(),
            ready: Arc::clone(&ready),
            started,
            access_log_dropped: Arc::clone(&access_log.dropped),
        });
        let stop = admin_stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(admin, admin::router(state))
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "admin interface failed");
            }
        })
    });

    let watching = tokio::spawn(reload::watch(live, hangup, stop_accepting.clone()));
    ready.store(true, Ordering::Relaxed);
    tracing::info!(clusters = snapshot.load().clusters.len(), "proxy ready");
    shutdown.await;

    // Stage 1: fail /ready, stop accepting, GOAWAY to every client.
    ready.store(false, Ordering::Relaxed);
    let in_force = snapshot.load_full();
    let drain_timeout = in_force.config.drain_timeout;
    let in_flight = count_in_flight(&in_force);
    tracing::info!(
        in_flight,
        drain_timeout = %common::format_duration(drain_timeout),
        "draining: /ready fails, GOAWAY sent to clients, calls (and L4 connections) in flight may finish"
    );
    stop_accepting.cancel();
    // A reload in progress finishes first: what it starts is drained too.
    let _ = watching.await;
    let in_force = snapshot.load_full();
    calls.close();
    // Stage 2: let calls in flight finish, up to the deadline.
    if tokio::time::timeout(drain_timeout, calls.wait())
        .await
        .is_err()
    {
        let left = count_in_flight(&in_force);
        tracing::warn!(
            calls_cut = left,
            "drain timeout passed; ending what is left with UNAVAILABLE"
        );
        cut.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), calls.wait()).await;
    } else {
        tracing::info!("all calls finished");
    }
    // Stage 3: stop discovery and close upstream connections; export the
    // last spans.
    stop_background.cancel();
    stop_traces.cancel();
    for cluster in &in_force.clusters {
        cluster.shut_down();
    }
    background.close();
    let _ = tokio::time::timeout(UPSTREAM_CLOSE_TIMEOUT, background.wait()).await;
    admin_stop.cancel();
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    drop(access_log);
    drop(in_force);
    drop(snapshot);
    if let Some(thread) = log_thread {
        // The writer ends once every call holding the log is gone; calls cut
        // at the drain deadline may still hold it, so do not wait forever.
        let joined = tokio::task::spawn_blocking(move || thread.join());
        let _ = tokio::time::timeout(Duration::from_secs(1), joined).await;
    }
    tracing::info!("proxy stopped");
    Ok(())
}
