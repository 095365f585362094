//! A lightweight HTTP/2-aware balancing proxy for gRPC.
//!
//! A layer-4 balancer spreads connections, and gRPC multiplexes every call of
//! a client on one connection, so all of that client's calls land on one
//! backend. This proxy terminates HTTP/2 and picks a backend for every
//! request (call) instead, follows DNS as backends scale out, and reports what
//! it does in Envoy's admin formats.
//!
//! # Layout
//! - [`config`]: flags, the YAML file, validation.
//! - [`server`]: the L7 listener: preface check, HTTP/2 sessions with clients.
//! - [`forward`]: one call: pick, open the upstream stream, pipe both ways.
//! - [`balance`]: how a host is picked (round robin, least request, random).
//! - [`cluster`]: hosts, their state and statistics; membership changes.
//! - [`discovery`]: DNS resolution and refresh (STRICT_DNS semantics).
//! - [`upstream`]: one multiplexed HTTP/2 connection per host, kept open.
//! - [`health`]: active gRPC health checks (TCP connects for L4 clusters).
//! - [`outlier`]: passive ejection of hosts that keep failing.
//! - [`grpc`]: the gRPC knowledge the proxy needs (status, local replies).
//! - [`l4`]: the TCP (layer 4) mode, to show connection-level skew.
//! - [`tls`]: TLS termination (ALPN h2, reload) and TLS to upstreams.
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
pub mod health;
pub mod l4;
pub mod outlier;
pub mod server;
pub mod tls;
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
use crate::admin::{AdminState, ListenerInfo};
use crate::cluster::Cluster;
pub use crate::config::Config;
use crate::config::Mode;
use crate::discovery::{Discovery, Resolver};
use crate::forward::{ListenerStats, Route};

/// How long start-up waits for the first DNS answers before serving anyway.
const FIRST_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often certificate files are checked for changes.
const CERTIFICATE_POLL: Duration = Duration::from_secs(2);
/// At most one log line about client protocol abuse per listener this often.
const ABUSE_LOG_INTERVAL: Duration = Duration::from_secs(10);
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

/// Reloads listener certificates on SIGHUP, and when their files change.
async fn reload_certificates(certificates: Vec<Arc<tls::ServerTls>>, stop: CancellationToken) {
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; certificates reload only on file change");
            None
        }
    };
    let reload = |cert: &tls::ServerTls, why: &str| match cert.reload() {
        Ok(()) => {
            tracing::info!(cert = %cert.cert_path().display(), why, "TLS certificate reloaded")
        }
        Err(e) => {
            tracing::error!(error = %e, why, "TLS certificate reload failed; keeping the old one")
        }
    };
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<()>();
        tokio::select! {
            () = hup => {
                if certificates.is_empty() {
                    tracing::info!("SIGHUP: no TLS listener, nothing to reload");
                }
                for cert in &certificates {
                    reload(cert, "SIGHUP");
                }
            }
            () = tokio::time::sleep(CERTIFICATE_POLL), if !certificates.is_empty() => {
                for cert in &certificates {
                    if cert.changed_on_disk() {
                        reload(cert, "files changed");
                    }
                }
            }
            () = stop.cancelled() => return,
        }
    }
}

/// Calls in flight (L7) plus open connections (L4), for the drain's logs.
fn count_in_flight(clusters: &[Arc<Cluster>], listeners: &[(Mode, Arc<ListenerStats>)]) -> u64 {
    let calls: u64 = clusters
        .iter()
        .map(|c| c.stats.upstream_rq_active.get())
        .sum();
    let tcp: u64 = listeners
        .iter()
        .filter(|(mode, _)| *mode == Mode::L4)
        .map(|(_, stats)| stats.downstream_cx_active.get())
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

    // Clusters first: resolve once so the first calls find hosts.
    let resolver = Resolver::new(&config.dns_resolvers);
    let mut clusters = Vec::new();
    for cluster_config in &config.clusters {
        let http2 = config
            .listeners
            .iter()
            .any(|l| l.cluster == cluster_config.name && l.mode == Mode::L7);
        let tls = match &cluster_config.tls {
            Some(t) => Some(tls::ClientTls::new(&t.ca, t.server_name.clone()).map_err(
                |source| Error::Tls {
                    what: format!("cluster {}", cluster_config.name),
                    source,
                },
            )?),
            None => None,
        };
        let cluster = Cluster::new(cluster_config.clone(), background.clone(), http2, tls);
        let mut discovery = Discovery::new(Arc::clone(&cluster), resolver.clone());
        if tokio::time::timeout(FIRST_RESOLVE_TIMEOUT, discovery.refresh())
            .await
            .is_err()
        {
            tracing::warn!(
                cluster = cluster.name(),
                "first DNS resolution is slow; serving meanwhile"
            );
        }
        background.spawn(discovery.run(stop_background.clone()));
        background.spawn(health::run(Arc::clone(&cluster), stop_background.clone()));
        background.spawn(outlier::run(Arc::clone(&cluster), stop_background.clone()));
        clusters.push(cluster);
    }
    let cluster_named = |name: &str| {
        clusters
            .iter()
            .find(|c| c.name() == name)
            .cloned()
            .expect("validated: every listener's cluster exists")
    };

    let mut infos = Vec::new();
    let mut certificates = Vec::new();
    for (l, listener) in config.listeners.iter().zip(listeners.proxy) {
        let stats = Arc::new(ListenerStats::default());
        let cluster = cluster_named(&l.cluster);
        let addr = listener.local_addr().unwrap_or(l.address);
        infos.push(ListenerInfo {
            name: l.name.clone(),
            address: addr,
            mode: l.mode,
            cluster: l.cluster.clone(),
            stats: Arc::clone(&stats),
        });
        tracing::info!(listener = %l.name, %addr, mode = %l.mode, cluster = %l.cluster, "listening");
        match l.mode {
            Mode::L7 => {
                let tls = match &l.tls {
                    Some(t) => {
                        let loaded =
                            tls::ServerTls::load(&t.cert, &t.key).map_err(|source| Error::Tls {
                                what: format!("listener {}", l.name),
                                source,
                            })?;
                        let loaded = Arc::new(loaded);
                        certificates.push(Arc::clone(&loaded));
                        Some(loaded)
                    }
                    None => None,
                };
                let route = Arc::new(Route {
                    tls,
                    listener: l.name.clone(),
                    cluster,
                    access_log: access_log.clone(),
                    stats,
                    cut: cut.clone(),
                    generate_request_id: l.generate_request_id,
                    stream_stall_timeout: l.stream_stall_timeout,
                    max_concurrent_streams: l.max_concurrent_streams,
                    per_connection_buffer_limit: l.per_connection_buffer_limit_bytes,
                    keepalive: l.keepalive_interval.map(|i| (i, l.keepalive_timeout)),
                    abuse_log: forward::LogLimiter::new(ABUSE_LOG_INTERVAL),
                });
                calls.spawn(server::serve(
                    listener,
                    route,
                    stop_accepting.clone(),
                    calls.clone(),
                ));
            }
            Mode::L4 => {
                let tcp = Arc::new(l4::Tcp {
                    listener: l.name.clone(),
                    cluster,
                    stats,
                    cut: cut.clone(),
                });
                calls.spawn(l4::serve(
                    listener,
                    tcp,
                    stop_accepting.clone(),
                    calls.clone(),
                ));
            }
        }
    }

    let infos_for_drain: Vec<(Mode, Arc<ListenerStats>)> = infos
        .iter()
        .map(|i| (i.mode, Arc::clone(&i.stats)))
        .collect();
    let admin_stop = CancellationToken::new();
    let admin_task = listeners.admin.map(|admin| {
        match admin.local_addr() {
            Ok(addr) => tracing::info!(%addr, "admin interface listening"),
            Err(e) => tracing::warn!(error = %e, "admin interface listening on an unknown address"),
        }
        let state = Arc::new(AdminState {
            clusters: clusters.clone(),
            listeners: infos,
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

    background.spawn(reload_certificates(certificates, stop_background.clone()));
    ready.store(true, Ordering::Relaxed);
    tracing::info!(clusters = clusters.len(), "proxy ready");
    shutdown.await;

    // Stage 1: fail /ready, stop accepting, GOAWAY to every client.
    ready.store(false, Ordering::Relaxed);
    let in_flight = count_in_flight(&clusters, &infos_for_drain);
    tracing::info!(
        in_flight,
        drain_timeout = %common::format_duration(config.drain_timeout),
        "draining: /ready fails, GOAWAY sent to clients, calls (and L4 connections) in flight may finish"
    );
    stop_accepting.cancel();
    calls.close();
    // Stage 2: let calls in flight finish, up to the deadline.
    if tokio::time::timeout(config.drain_timeout, calls.wait())
        .await
        .is_err()
    {
        let left = count_in_flight(&clusters, &infos_for_drain);
        tracing::warn!(
            calls_cut = left,
            "drain timeout passed; ending what is left with UNAVAILABLE"
        );
        cut.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), calls.wait()).await;
    } else {
        tracing::info!("all calls finished");
    }
    // Stage 3: stop discovery and close upstream connections.
    stop_background.cancel();
    for cluster in &clusters {
        cluster.shut_down();
    }
    background.close();
    let _ = tokio::time::timeout(UPSTREAM_CLOSE_TIMEOUT, background.wait()).await;
    admin_stop.cancel();
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    drop(access_log);
    drop(clusters);
    if let Some(thread) = log_thread {
        // The writer ends once every call holding the log is gone; calls cut
        // at the drain deadline may still hold it, so do not wait forever.
        let joined = tokio::task::spawn_blocking(move || thread.join());
        let _ = tokio::time::timeout(Duration::from_secs(1), joined).await;
    }
    tracing::info!("proxy stopped");
    Ok(())
}
