//! What runs, and how it changes: the live set of listeners and clusters
//! built from a [`Config`], and the reload that moves it to a new one without
//! a restart.
//!
//! Start-up and reload are the same step, [`Live::apply`], from nothing or
//! from the configuration in force:
//! 1. **Check** (before anything changes): the file is read and validated
//!    whole ([`Config::load`]); new listener sockets are bound and new
//!    certificates loaded. Any failure refuses the reload: one log line with
//!    every problem, `config.update_rejected`, and the running
//!    configuration keeps serving.
//! 2. **Warm**: a cluster that is new, or whose settings changed, is built
//!    beside the old one; its names are resolved and its hosts health-checked
//!    (or connected) before any route sends to it, for up to [`WARM_TIMEOUT`].
//!    Unchanged clusters are kept as they are, with their hosts, connections
//!    and statistics.
//! 3. **Swap**: each listener's route table and settings are replaced at
//!    once. A call reads its listener's table once, so calls in flight finish
//!    where they were sent, and new calls (on open connections too) follow
//!    the new routes. A connection keeps the settings it was accepted with.
//!    New listeners start accepting; removed ones stop and send GOAWAY, so
//!    their clients' calls in flight finish.
//! 4. **Retire**: clusters removed from the file (or replaced) drain: once their calls
//!    in flight are done (or after `drain_timeout`), their discovery and
//!    health checks stop and their host connections close.
//!
//! The admin interface reads the result as a [`Snapshot`]: the configuration
//! in force, its version and load time, and every cluster and listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::admin::ListenerInfo;
use crate::cluster::{Cluster, Stat};
use crate::config::{Config, ListenerConfig, ListenerTls, Mode};
use crate::discovery::{Discovery, Resolver};
use crate::forward::{Ingress, ListenerStats, LogLimiter};
use crate::route::RouteTable;
use crate::{Error, health, l4, outlier, server, tls};

/// How long a new cluster may take to resolve and pass its first health
/// checks before routes send to it anyway; at start-up, how long the first
/// DNS answers may take before the proxy serves anyway.
pub const WARM_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the configuration file (and certificates) are checked for changes.
pub const FILE_POLL: Duration = Duration::from_secs(1);
/// How often a retiring cluster is checked for calls still in flight.
const RETIRE_POLL: Duration = Duration::from_millis(100);
/// At most one log line about client protocol abuse per listener this often.
const ABUSE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Counters of reloads, in `/stats` as `config.*`.
#[derive(Debug, Default)]
pub struct ReloadStats {
    pub update_attempt: Stat,
    pub update_success: Stat,
    pub update_rejected: Stat,
    last: Mutex<Option<LastUpdate>>,
}

/// How the last reload went, for `/config_dump`.
#[derive(Debug, Clone)]
pub struct LastUpdate {
    pub success: bool,
    pub at: SystemTime,
    pub why: &'static str,
    pub problems: Vec<String>,
}

impl ReloadStats {
    pub fn last(&self) -> Option<LastUpdate> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, update: LastUpdate) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(update);
    }
}

/// The configuration in force and what it runs, as the admin interface
/// reports it. Replaced whole on every reload.
#[derive(Debug)]
pub struct Snapshot {
    /// 1 for the configuration the proxy started with, +1 per reload.
    pub version: u64,
    pub loaded_at: SystemTime,
    pub config: Config,
    /// In the configuration's order.
    pub clusters: Vec<Arc<Cluster>>,
    pub listeners: Vec<ListenerInfo>,
}

/// What stays for the life of the process, whatever the configuration.
#[derive(Debug, Clone)]
pub struct Shared {
    pub access_log: AccessLog,
    pub resolver: Resolver,
    /// Client connections and their calls (and the accept loops).
    pub calls: TaskTracker,
    /// Discovery, health checks, host connections, retiring clusters.
    pub background: TaskTracker,
    /// Cancelled when the proxy drains: every listener stops.
    pub stop_accepting: CancellationToken,
    /// Cancelled after the drain: every cluster stops.
    pub stop_background: CancellationToken,
    /// Cancelled when the drain deadline passes.
    pub cut: CancellationToken,
    /// Span export (restart-only), when configured.
    pub traces: Option<crate::trace::Traces>,
}

struct LiveCluster {
    cluster: Arc<Cluster>,
    stop: CancellationToken,
}

struct LiveListener {
    config: ListenerConfig,
    /// The bound address (differs from the configured one for port 0).
    address: SocketAddr,
    stop: CancellationToken,
    stats: Arc<ListenerStats>,
    kind: Kind,
}

enum Kind {
    L7 {
        current: Arc<ArcSwap<Ingress>>,
        routes: Arc<ArcSwap<RouteTable>>,
        abuse_log: Arc<LogLimiter>,
        tls: Option<Arc<tls::ServerTls>>,
    },
    L4 {
        current: Arc<ArcSwap<l4::Tcp>>,
    },
}

/// The listeners and clusters running now; owned by the reload task.
pub struct Live {
    shared: Shared,
    clusters: Vec<LiveCluster>,
    listeners: Vec<LiveListener>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub stats: Arc<ReloadStats>,
}

impl Live {
    /// Starts `config` on the sockets bound for it (one per listener, in order).
    pub async fn start(
        shared: Shared,
        config: Config,
        bound: Vec<TcpListener>,
    ) -> Result<Self, Error> {
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot {
            version: 0,
            loaded_at: SystemTime::now(),
            config: config.clone(),
            clusters: Vec::new(),
            listeners: Vec::new(),
        }));
        let mut live = Live {
            shared,
            clusters: Vec::new(),
            listeners: Vec::new(),
            snapshot,
            stats: Arc::new(ReloadStats::default()),
        };
        live.apply(config, Some(bound)).await?;
        Ok(live)
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Moves to `config` (validated): see the module's steps. `bound` holds
    /// the sockets of every listener at start-up; a reload binds what it adds.
    pub async fn apply(
        &mut self,
        config: Config,
        bound: Option<Vec<TcpListener>>,
    ) -> Result<(), Error> {
        // 1. Everything that can fail, before anything changes.
        let mut bound = bound.map(|b| b.into_iter().map(Some).collect::<Vec<_>>());
        let mut sockets = Vec::with_capacity(config.listeners.len());
        for (i, l) in config.listeners.iter().enumerate() {
            let kept = self.listeners.iter().any(|old| same_socket(&old.config, l));
            if kept {
                sockets.push(None);
                continue;
            }
            let socket = match bound
                .as_mut()
                .and_then(|b| b.get_mut(i))
                .and_then(Option::take)
            {
                Some(socket) => socket,
                None => TcpListener::bind(l.address)
                    .await
                    .map_err(|source| Error::Bind {
                        what: format!("listener {}", l.name),
                        addr: l.address,
                        source,
                    })?,
            };
            sockets.push(Some(socket));
        }
        let mut certificates = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            certificates.push(match (&l.tls, l.mode) {
                (Some(t), Mode::L7) => Some(self.certificate(&l.name, t)?),
                _ => None,
            });
        }
        let http2 = |name: &str| {
            config.listeners.iter().any(|l| {
                l.mode == Mode::L7
                    && l.effective_virtual_hosts().iter().any(|vh| {
                        vh.routes
                            .iter()
                            .any(|r| r.route.clusters().any(|c| c == name))
                    })
            })
        };
        let mut next_clusters = Vec::with_capacity(config.clusters.len());
        let mut fresh = Vec::new();
        for c in &config.clusters {
            let wanted_http2 = http2(&c.name);
            if let Some(old) = self
                .clusters
                .iter()
                .find(|old| old.cluster.config == *c && old.cluster.http2 == wanted_http2)
            {
                next_clusters.push(LiveCluster {
                    cluster: Arc::clone(&old.cluster),
                    stop: old.stop.clone(),
                });
                continue;
            }
            let client_tls = match &c.tls {
                Some(t) => Some(tls::ClientTls::new(&t.ca, t.server_name.clone()).map_err(
                    |source| Error::Tls {
                        what: format!("cluster {}", c.name),
                        source,
                    },
                )?),
                None => None,
            };
            fresh.push((c.clone(), wanted_http2, client_tls));
        }

        // 2. New clusters start resolving and checking, beside the old ones.
        // At start-up there is nothing else to serve with: only the names
        // are resolved first (hosts join as they pass their checks).
        let starting = self.snapshot.load().version == 0;
        let mut warming = Vec::new();
        for (c, wanted_http2, client_tls) in fresh {
            let cluster = Cluster::new(c, self.shared.background.clone(), wanted_http2, client_tls);
            let stop = self.shared.stop_background.child_token();
            let mut discovery = Discovery::new(Arc::clone(&cluster), self.shared.resolver.clone());
            let background = self.shared.background.clone();
            let task_stop = stop.clone();
            let warm = Arc::clone(&cluster);
            let deadline = tokio::time::Instant::now() + WARM_TIMEOUT;
            warming.push(async move {
                if tokio::time::timeout_at(deadline, discovery.refresh())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        cluster = warm.name(),
                        "first DNS resolution is slow; serving meanwhile"
                    );
                }
                background.spawn(discovery.run(task_stop.clone()));
                background.spawn(health::run(Arc::clone(&warm), task_stop.clone()));
                background.spawn(outlier::run(Arc::clone(&warm), task_stop));
                if starting {
                    return;
                }
                let ready = async {
                    while !warm.warmed() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                if tokio::time::timeout_at(deadline, ready).await.is_err() {
                    tracing::warn!(
                        cluster = warm.name(),
                        "cluster not warmed up within {}; routing to it anyway",
                        common::format_duration(WARM_TIMEOUT)
                    );
                }
            });
            next_clusters.push(LiveCluster { cluster, stop });
        }
        futures_util::future::join_all(warming).await;
        // Keep the configuration's order.
        next_clusters.sort_by_key(|lc| {
            config
                .clusters
                .iter()
                .position(|c| c.name == lc.cluster.name())
        });
        let find = |name: &str| {
            next_clusters
                .iter()
                .find(|lc| lc.cluster.name() == name)
                .map(|lc| Arc::clone(&lc.cluster))
        };

        // 3. Swap: every listener at once.
        let mut next_listeners = Vec::with_capacity(config.listeners.len());
        let mut infos = Vec::with_capacity(config.listeners.len());
        for ((l, socket), certificate) in config.listeners.iter().zip(sockets).zip(certificates) {
            let old = self
                .listeners
                .iter()
                .position(|old| same_socket(&old.config, l))
                .map(|i| self.listeners.swap_remove(i));
            let stats = old.as_ref().map_or_else(
                || {
                    // Statistics go by name: a listener that moved keeps its counts.
                    self.listeners
                        .iter()
                        .find(|o| o.config.name == l.name)
                        .map_or_else(Default::default, |o| Arc::clone(&o.stats))
                },
                |o| Arc::clone(&o.stats),
            );
            let live = match l.mode {
                Mode::L7 => {
                    let table = RouteTable::new(&l.effective_virtual_hosts(), find)
                        .expect("validated: every route's cluster is defined");
                    self.l7(l, old, socket, stats, table, certificate)
                }
                Mode::L4 => {
                    let cluster = l
                        .cluster
                        .as_deref()
                        .and_then(find)
                        .expect("validated: every listener's cluster is defined");
                    self.l4(l, old, socket, stats, cluster)
                }
            };
            infos.push(ListenerInfo {
                name: l.name.clone(),
                address: live.address,
                mode: l.mode,
                routes: describe(l),
                stats: Arc::clone(&live.stats),
                grpc_web: l.mode == Mode::L7 && l.grpc_web.is_some(),
                tls: l.tls.is_some(),
            });
            next_listeners.push(live);
        }
        for removed in std::mem::replace(&mut self.listeners, next_listeners) {
            tracing::info!(listener = %removed.config.name, addr = %removed.address, "listener removed: no new connections; open ones get GOAWAY and finish their calls");
            removed.stop.cancel();
        }

        // 4. Retire what the new configuration no longer has.
        let retired: Vec<LiveCluster> = std::mem::replace(&mut self.clusters, next_clusters)
            .into_iter()
            .filter(|old| {
                !self
                    .clusters
                    .iter()
                    .any(|n| Arc::ptr_eq(&n.cluster, &old.cluster))
            })
            .collect();
        for old in retired {
            let replaced = self
                .clusters
                .iter()
                .any(|n| n.cluster.name() == old.cluster.name());
            tracing::info!(
                cluster = old.cluster.name(),
                in_flight = old.cluster.in_flight(),
                "{}: draining the old one's calls in flight",
                if replaced {
                    "cluster settings changed; the new cluster takes new calls"
                } else {
                    "cluster removed"
                }
            );
            self.shared.background.spawn(retire(
                old,
                config.drain_timeout,
                self.shared.stop_background.clone(),
            ));
        }

        let previous = self.snapshot.load();
        let mut config = config;
        if previous.version > 0 {
            keep_restart_only(&previous.config, &mut config);
        }
        self.snapshot.store(Arc::new(Snapshot {
            version: previous.version + 1,
            loaded_at: SystemTime::now(),
            clusters: self
                .clusters
                .iter()
                .map(|c| Arc::clone(&c.cluster))
                .collect(),
            listeners: infos,
            config,
        }));
        Ok(())
    }

    /// The listener's certificate: the one loaded already when the files are
    /// the same (reloaded on SIGHUP or when they change), else loaded now.
    fn certificate(&self, name: &str, t: &ListenerTls) -> Result<Arc<tls::ServerTls>, Error> {
        let loaded = self.listeners.iter().find_map(|old| match &old.kind {
            Kind::L7 {
                tls: Some(cert), ..
            } if old.config.tls.as_ref() == Some(t) => Some(Arc::clone(cert)),
            _ => None,
        });
        match loaded {
            Some(cert) => Ok(cert),
            None => tls::ServerTls::load(&t.cert, &t.key)
                .map(Arc::new)
                .map_err(|source| Error::Tls {
                    what: format!("listener {name}"),
                    source,
                }),
        }
    }

    fn l7(
        &self,
        l: &ListenerConfig,
        old: Option<LiveListener>,
        socket: Option<TcpListener>,
        stats: Arc<ListenerStats>,
        table: RouteTable,
        tls: Option<Arc<tls::ServerTls>>,
    ) -> LiveListener {
        let ingress = |routes: &Arc<ArcSwap<RouteTable>>, abuse_log: &Arc<LogLimiter>| Ingress {
            listener: l.name.clone(),
            routes: Arc::clone(routes),
            access_log: self.shared.access_log.clone(),
            stats: Arc::clone(&stats),
            cut: self.shared.cut.clone(),
            tls: tls.clone(),
            generate_request_id: l.generate_request_id,
            stream_stall_timeout: l.stream_stall_timeout,
            max_concurrent_streams: l.max_concurrent_streams,
            per_connection_buffer_limit: l.per_connection_buffer_limit_bytes,
            keepalive: l.keepalive_interval.map(|i| (i, l.keepalive_timeout)),
            abuse_log: Arc::clone(abuse_log),
            traces: self.shared.traces.clone(),
            web: l
                .grpc_web
                .as_ref()
                .map(|w| Arc::new(crate::grpc_web::WebSettings::new(w))),
        };
        if let Some(old) = old
            && let Kind::L7 {
                current,
                routes,
                abuse_log,
                ..
            } = &old.kind
        {
            routes.store(Arc::new(table));
            current.store(Arc::new(ingress(routes, abuse_log)));
            let (current, routes, abuse_log) = (
                Arc::clone(current),
                Arc::clone(routes),
                Arc::clone(abuse_log),
            );
            return LiveListener {
                config: l.clone(),
                address: old.address,
                stop: old.stop,
                stats,
                kind: Kind::L7 {
                    current,
                    routes,
                    abuse_log,
                    tls,
                },
            };
        }
        let routes = Arc::new(ArcSwap::from_pointee(table));
        let abuse_log = Arc::new(LogLimiter::new(ABUSE_LOG_INTERVAL));
        let current = Arc::new(ArcSwap::from_pointee(ingress(&routes, &abuse_log)));
        let serving = Arc::clone(&current);
        let (address, stop) = self.start_accepting(l, socket, |socket, stop, tasks| {
            server::serve(socket, serving, stop, tasks)
        });
        LiveListener {
            config: l.clone(),
            address,
            stop,
            stats,
            kind: Kind::L7 {
                current,
                routes,
                abuse_log,
                tls,
            },
        }
    }

    fn l4(
        &self,
        l: &ListenerConfig,
        old: Option<LiveListener>,
        socket: Option<TcpListener>,
        stats: Arc<ListenerStats>,
        cluster: Arc<Cluster>,
    ) -> LiveListener {
        let tcp = l4::Tcp {
            listener: l.name.clone(),
            cluster,
            stats: Arc::clone(&stats),
            cut: self.shared.cut.clone(),
        };
        if let Some(old) = old
            && let Kind::L4 { current } = &old.kind
        {
            current.store(Arc::new(tcp));
            let current = Arc::clone(current);
            return LiveListener {
                config: l.clone(),
                address: old.address,
                stop: old.stop,
                stats,
                kind: Kind::L4 { current },
            };
        }
        let current = Arc::new(ArcSwap::from_pointee(tcp));
        let serving = Arc::clone(&current);
        let (address, stop) = self.start_accepting(l, socket, |socket, stop, tasks| {
            l4::serve(socket, serving, stop, tasks)
        });
        LiveListener {
            config: l.clone(),
            address,
            stop,
            stats,
            kind: Kind::L4 { current },
        }
    }

    /// Starts a new listener's accept loop on its socket, stopped by a token
    /// of its own (a child of the proxy's): its bound address and that token.
    fn start_accepting<F>(
        &self,
        l: &ListenerConfig,
        socket: Option<TcpListener>,
        serve: impl FnOnce(TcpListener, CancellationToken, TaskTracker) -> F,
    ) -> (SocketAddr, CancellationToken)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let socket = socket.expect("a listener that is not kept has a socket");
        let address = socket.local_addr().unwrap_or(l.address);
        let stop = self.shared.stop_accepting.child_token();
        tracing::info!(listener = %l.name, addr = %address, mode = %l.mode, routes = %describe(l), "listening");
        self.shared
            .calls
            .spawn(serve(socket, stop.clone(), self.shared.calls.clone()));
        (address, stop)
    }

    /// The certificates of the TLS listeners.
    fn certificates(&self) -> Vec<Arc<tls::ServerTls>> {
        self.listeners
            .iter()
            .filter_map(|l| match &l.kind {
                Kind::L7 { tls: Some(t), .. } => Some(Arc::clone(t)),
                _ => None,
            })
            .collect()
    }

    /// Reads the configuration file again and applies it; a bad one is
    /// refused, logged and counted, and changes nothing.
    pub async fn reload(&mut self, why: &'static str) {
        let snapshot = self.config();
        let Some(cli) = snapshot.config.source.as_ref().map(|s| s.cli.clone()) else {
            return;
        };
        let loaded = Config::load(&cli);
        if let Ok(config) = &loaded
            && same_file(&snapshot.config, config)
        {
            tracing::info!(
                version = snapshot.version,
                why,
                "configuration file unchanged; nothing to reload"
            );
            // A file put back as it was after a refused edit: the refusal is over.
            if self.stats.last().is_some_and(|u| !u.success) {
                self.stats.record(LastUpdate {
                    success: true,
                    at: SystemTime::now(),
                    why,
                    problems: Vec::new(),
                });
            }
            return;
        }
        self.stats.update_attempt.inc();
        let result = match loaded {
            Ok(config) => self
                .apply(config, None)
                .await
                .map_err(|e| vec![common::error_chain(&e)]),
            Err(crate::config::ConfigError::Invalid(problems)) => Err(problems),
            Err(e) => Err(vec![e.to_string()]),
        };
        let at = SystemTime::now();
        match result {
            Ok(()) => {
                self.stats.update_success.inc();
                let now = self.config();
                tracing::info!(
                    version = now.version,
                    why,
                    listeners = now.listeners.len(),
                    clusters = now.clusters.len(),
                    "configuration reloaded"
                );
                self.stats.record(LastUpdate {
                    success: true,
                    at,
                    why,
                    problems: Vec::new(),
                });
            }
            Err(problems) => {
                self.stats.update_rejected.inc();
                tracing::error!(
                    version = snapshot.version,
                    why,
                    "configuration reload rejected; keeping version {}: {}",
                    snapshot.version,
                    problems.join("; ")
                );
                self.stats.record(LastUpdate {
                    success: false,
                    at,
                    why,
                    problems,
                });
            }
        }
    }
}

/// Whether the old listener's socket can serve the new one: same address
/// and mode (a listener renamed in place keeps its socket; one that moves
/// is removed and added). Port 0 means "any port", so there the name says
/// which listener it is.
fn same_socket(old: &ListenerConfig, new: &ListenerConfig) -> bool {
    old.address == new.address
        && old.mode == new.mode
        && (old.address.port() != 0 || old.name == new.name)
}

/// Whether two configurations were read from the same file content.
fn same_file(a: &Config, b: &Config) -> bool {
    matches!((&a.source, &b.source), (Some(x), Some(y)) if x.fingerprint == y.fingerprint)
}

/// `cluster NAME`, or `N routes`, for the log.
fn describe(l: &ListenerConfig) -> String {
    l.only_cluster().map_or_else(
        || {
            let n: usize = l
                .effective_virtual_hosts()
                .iter()
                .map(|vh| vh.routes.len())
                .sum();
            format!("{n} routes")
        },
        |c| format!("cluster {c}"),
    )
}

/// Stops a cluster no route uses once its calls in flight are done, or when
/// `deadline` passed (its open host connections still finish their calls).
async fn retire(old: LiveCluster, deadline: Duration, stop: CancellationToken) {
    let drained = async {
        // A call that read the old route table just before the swap is
        // admitted in the same poll; give those a moment before counting.
        tokio::time::sleep(RETIRE_POLL).await;
        while old.cluster.in_flight() > 0 {
            tokio::time::sleep(RETIRE_POLL).await;
        }
    };
    tokio::select! {
        () = drained => {}
        () = tokio::time::sleep(deadline) => {
            tracing::warn!(cluster = old.cluster.name(), in_flight = old.cluster.in_flight(), "retired cluster still has calls after drain_timeout; closing its hosts' connections once those end");
        }
        () = stop.cancelled() => {}
    }
    old.stop.cancel();
    old.cluster.shut_down();
    tracing::debug!(cluster = old.cluster.name(), "retired cluster stopped");
}

/// Settings a reload cannot change: the running values stay in force (and in
/// `/config_dump`), and a file that changes them is answered with a WARN.
fn keep_restart_only(running: &Config, new: &mut Config) {
    let mut changed = Vec::new();
    if running.admin != new.admin {
        changed.push("admin");
        new.admin = running.admin;
    }
    if running.workers != new.workers {
        changed.push("workers");
        new.workers = running.workers;
    }
    if running.access_log != new.access_log {
        changed.push("access_log");
        new.access_log = running.access_log;
    }
    if running.access_log_format != new.access_log_format {
        changed.push("access_log_format");
        new.access_log_format = running.access_log_format;
    }
    if running.traces != new.traces {
        changed.push("traces");
        new.traces.clone_from(&running.traces);
    }
    if running.dns_resolvers != new.dns_resolvers {
        changed.push("dns");
        new.dns_resolvers.clone_from(&running.dns_resolvers);
    }
    if !changed.is_empty() {
        tracing::warn!(
            "configuration reloaded, but {} only change on a restart; the running values stay",
            changed.join(", ")
        );
    }
}

/// The fingerprint of a file's content now (`None` when unreadable).
fn fingerprint(path: &Path) -> Option<u64> {
    std::fs::read(path)
        .ok()
        .map(|b| crate::config::fingerprint(&b))
}

/// SIGHUP, caught from start-up on: before the watcher runs, a SIGHUP would
/// otherwise end the process (its default action).
pub struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    /// Catches SIGHUP from now on.
    pub fn install() -> Self {
        #[cfg(unix)]
        {
            let signal = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            {
                Ok(signal) => Some(signal),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGHUP; the configuration reloads only when its file changes");
                    None
                }
            };
            Hangup { signal }
        }
        #[cfg(not(unix))]
        Hangup {}
    }

    /// The next SIGHUP (never, where there is none).
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = self.signal.as_mut() {
            signal.recv().await;
            return;
        }
        std::future::pending().await
    }
}

/// Reloads on SIGHUP and when the configuration file changes (checked every
/// [`FILE_POLL`]); certificates are read again on SIGHUP and when their
/// files change. Ends on `stop`.
pub async fn watch(mut live: Live, mut hangup: Hangup, stop: CancellationToken) {
    let path: Option<PathBuf> = live.config().config.path().map(Path::to_path_buf);
    // The content the running configuration was read from: an edit made
    // while the proxy was starting is seen at the first check.
    let mut seen = live.config().config.source.as_ref().map(|s| s.fingerprint);
    let reload_certificate = |cert: &tls::ServerTls, why: &str| match cert.reload() {
        Ok(()) => {
            tracing::info!(cert = %cert.cert_path().display(), why, "TLS certificate reloaded")
        }
        Err(e) => {
            tracing::error!(error = %e, why, "TLS certificate reload failed; keeping the old one")
        }
    };
    loop {
        let hup = hangup.recv();
        let poll = path.is_some() || !live.certificates().is_empty();
        tokio::select! {
            () = hup => {
                if path.is_some() {
                    seen = path.as_deref().and_then(fingerprint);
                    live.reload("SIGHUP").await;
                } else {
                    tracing::info!("SIGHUP: no configuration file (flags only); reloading certificates only");
                }
                for cert in live.certificates() {
                    reload_certificate(&cert, "SIGHUP");
                }
            }
            () = tokio::time::sleep(FILE_POLL), if poll => {
                if let Some(p) = &path {
                    let now = fingerprint(p);
                    if now.is_some() && now != seen {
                        seen = now;
                        live.reload("file changed").await;
                    }
                }
                for cert in live.certificates() {
                    if cert.changed_on_disk() {
                        reload_certificate(&cert, "files changed");
                    }
                }
            }
            () = stop.cancelled() => return,
        }
    }
}
