//! Clusters and their hosts: membership, per-host state and statistics.
//!
//! A [`Cluster`] holds the current set of [`Host`]s in an `ArcSwap`, so the
//! per-call pick reads it without a lock while discovery replaces it. A host
//! that leaves the set (its address vanished from DNS) moves to a draining
//! list: it takes no new calls, its calls in flight finish on its open
//! connection, and it is forgotten once that connection has closed.

use std::net::SocketAddr;
use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed,
};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balance;
use crate::config::ClusterConfig;
use crate::histogram::Histogram;
use crate::methods::Methods;
use crate::upstream::{self, Connection};

/// A counter or gauge.
#[derive(Debug, Default)]
pub struct Stat(AtomicU64);

impl Stat {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
    /// Increments unless the value is already `limit` or more; says whether it did.
    pub fn inc_below(&self, limit: u64) -> bool {
        self.0
            .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1))
            .is_ok()
    }
}

/// Envoy's per-host statistics, as `/clusters` prints them.
#[derive(Debug, Default)]
pub struct HostStats {
    pub cx_active: Stat,
    pub cx_connect_fail: Stat,
    pub cx_total: Stat,
    pub rq_active: Stat,
    pub rq_error: Stat,
    pub rq_success: Stat,
    pub rq_timeout: Stat,
    pub rq_total: Stat,
    /// Request sent to answer complete (`upstream_rq_time`).
    pub rq_time: Histogram,
    /// Request sent to the answer's first byte (its headers).
    pub first_byte_time: Histogram,
}

/// Why a host is out of rotation: Envoy's `health_flags` bits.
pub mod health {
    /// Failed active health checking.
    pub const FAILED_ACTIVE_HC: u8 = 1;
    /// Ejected by outlier detection.
    pub const FAILED_OUTLIER_CHECK: u8 = 2;
    /// Removed from discovery; draining its calls in flight.
    pub const PENDING_DYNAMIC_REMOVAL: u8 = 4;

    /// Envoy's text form: `healthy`, or the flags joined as `/a/b`.
    pub fn describe(flags: u8) -> String {
        if flags == 0 {
            return "healthy".into();
        }
        let mut out = String::new();
        for (bit, name) in [
            (FAILED_ACTIVE_HC, "/failed_active_hc"),
            (FAILED_OUTLIER_CHECK, "/failed_outlier_check"),
            (PENDING_DYNAMIC_REMOVAL, "/pending_dynamic_removal"),
        ] {
            if flags & bit != 0 {
                out.push_str(name);
            }
        }
        out
    }
}

/// One upstream address of a cluster.
#[derive(Debug)]
pub struct Host {
    pub addr: SocketAddr,
    /// The name it was resolved from (the IP itself for a static host).
    pub hostname: String,
    pub stats: HostStats,
    flags: AtomicU8,
    /// The HTTP/2 connection, kept open (and reopened) by a maintainer task.
    pub conn: Connection,
    stop: CancellationToken,
    drained: AtomicBool,
    /// Outlier detection: failures in a row, times ejected, ejected until when.
    pub(crate) consecutive_failures: AtomicU32,
    pub(crate) ejections: AtomicU32,
    pub(crate) ejected_until: Mutex<Option<Instant>>,
    /// Active health checking: passes and failures in a row; whether checked yet.
    pub(crate) hc_passes: AtomicU32,
    pub(crate) hc_failures: AtomicU32,
    pub(crate) hc_checked: AtomicBool,
    /// Whether calls go over the maintained HTTP/2 connection (L7 clusters).
    http2: bool,
}

impl Host {
    fn new(addr: SocketAddr, hostname: String, http2: bool) -> Self {
        Host {
            http2,
            addr,
            hostname,
            stats: HostStats::default(),
            flags: AtomicU8::new(0),
            conn: Connection::new(),
            stop: CancellationToken::new(),
            drained: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: Mutex::new(None),
            hc_passes: AtomicU32::new(0),
            hc_failures: AtomicU32::new(0),
            hc_checked: AtomicBool::new(false),
        }
    }

    /// Whether the host is in rotation: healthy, not ejected, not draining.
    pub fn is_available(&self) -> bool {
        self.flags.load(Relaxed) == 0
    }

    /// In rotation and, for L7, with its connection open: a call sent here
    /// does not wait for a connection.
    pub fn is_ready(&self) -> bool {
        self.is_available() && (!self.http2 || self.conn.is_ready())
    }

    /// The `health_flags` bits.
    pub fn flags(&self) -> u8 {
        self.flags.load(Relaxed)
    }

    pub fn set_flag(&self, flag: u8) {
        self.flags.fetch_or(flag, Relaxed);
    }

    pub fn clear_flag(&self, flag: u8) {
        self.flags.fetch_and(!flag, Relaxed);
    }

    /// Whether outlier detection has ejected the host.
    pub fn is_ejected(&self) -> bool {
        self.flags() & health::FAILED_OUTLIER_CHECK != 0
    }

    /// Whether the host left discovery and its last connection has closed.
    pub fn is_drained(&self) -> bool {
        self.drained.load(Relaxed)
    }

    /// Counts a call sent to this host; the guard ends it.
    pub fn start_request(self: &Arc<Self>) -> RequestGuard {
        self.stats.rq_total.inc();
        self.stats.rq_active.inc();
        RequestGuard {
            host: Arc::clone(self),
            started: Instant::now(),
        }
    }
}

/// Keeps `rq_active` right however a call ends (even on panic or cancel).
#[derive(Debug)]
pub struct RequestGuard {
    pub host: Arc<Host>,
    /// When the call was sent to the host.
    pub started: Instant,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.host.stats.rq_active.dec();
    }
}

/// Cluster-wide statistics, named as Envoy names them under `cluster.<name>.`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Request sent to answer complete, every host together.
    pub upstream_rq_time: Histogram,
    /// Request sent to the answer's first byte, every host together.
    pub upstream_rq_first_byte_time: Histogram,
    pub upstream_rq_total: Stat,
    pub upstream_rq_active: Stat,
    pub upstream_rq_success: Stat,
    pub upstream_rq_error: Stat,
    pub upstream_rq_timeout: Stat,
    pub upstream_cx_total: Stat,
    pub upstream_cx_active: Stat,
    pub upstream_cx_connect_fail: Stat,
    pub upstream_cx_none_healthy: Stat,
    pub upstream_cx_overflow: Stat,
    pub upstream_cx_keepalive_timeout: Stat,
    pub upstream_rq_pending_active: Stat,
    /// Calls admitted by the `max_requests` circuit breaker and not yet done.
    pub calls_admitted: Stat,
    pub upstream_rq_pending_overflow: Stat,
    pub upstream_rq_retry: Stat,
    pub upstream_rq_retry_success: Stat,
    pub upstream_rq_retry_overflow: Stat,
    pub upstream_rq_retry_limit_exceeded: Stat,
    pub upstream_rq_retry_active: Stat,
    /// Host streams of calls that ended before their host answered, kept
    /// open until it does (or for 1 s) before they are reset.
    pub upstream_rq_cancel_held: Stat,
    /// Calls that ended before their HEADERS were written to the host: the
    /// host never heard of them.
    pub upstream_rq_cancel_unsent: Stat,
    pub health_check_attempt: Stat,
    pub health_check_success: Stat,
    pub health_check_failure: Stat,
    pub outlier_ejections_active: Stat,
    pub outlier_ejections_enforced_total: Stat,
    pub outlier_ejections_overflow: Stat,
    pub membership_change: Stat,
    pub update_attempt: Stat,
    pub update_success: Stat,
    pub update_failure: Stat,
}

/// A named set of hosts that calls are balanced over.
#[derive(Debug)]
pub struct Cluster {
    pub config: ClusterConfig,
    hosts: ArcSwap<Vec<Arc<Host>>>,
    draining: Mutex<Vec<Arc<Host>>>,
    rr: AtomicUsize,
    pub stats: ClusterStats,
    /// Owns every host's connection maintainer.
    tasks: TaskTracker,
    /// Whether HTTP/2 connections are kept to each host (an L7 listener uses
    /// the cluster); an L4-only cluster opens one TCP connection per client.
    pub http2: bool,
    /// Woken when hosts join, so that the health checker sees them at once.
    pub(crate) hosts_added: Notify,
    /// TLS towards the hosts, if configured.
    pub tls: Option<crate::tls::ClientTls>,
    /// Calls, statuses and times per gRPC method.
    pub methods: Methods,
}

impl Cluster {
    /// A cluster with no hosts yet. With `http2`, each host gets a maintained
    /// HTTP/2 connection (for L7 listeners).
    pub fn new(
        config: ClusterConfig,
        tasks: TaskTracker,
        http2: bool,
        tls: Option<crate::tls::ClientTls>,
    ) -> Arc<Self> {
        Arc::new(Cluster {
            config,
            hosts: ArcSwap::from_pointee(Vec::new()),
            draining: Mutex::new(Vec::new()),
            rr: AtomicUsize::new(0),
            stats: ClusterStats::default(),
            tasks,
            http2,
            hosts_added: Notify::new(),
            tls,
            methods: Methods::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The current members, in address order.
    pub fn hosts(&self) -> Arc<Vec<Arc<Host>>> {
        self.hosts.load_full()
    }

    /// Members and hosts still draining, for reports.
    pub fn all_hosts(&self) -> Vec<Arc<Host>> {
        let mut all: Vec<Arc<Host>> = self.hosts.load().iter().cloned().collect();
        let mut draining = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        draining.retain(|h| !h.is_drained());
        all.extend(draining.iter().cloned());
        all
    }

    /// Picks a host for one call, skipping the addresses in `exclude`.
    pub fn pick(&self, exclude: &[SocketAddr]) -> Option<Arc<Host>> {
        let hosts = self.hosts.load();
        balance::pick(self.config.lb, &hosts, &self.rr, exclude)
    }

    /// Replaces the membership with `wanted` (address, hostname), in place:
    /// hosts already known keep their connection and statistics, new ones
    /// start connecting, and vanished ones drain.
    pub fn update(self: &Arc<Self>, wanted: &[(SocketAddr, String)]) -> Changes {
        let current = self.hosts.load_full();
        let mut next: Vec<Arc<Host>> = Vec::with_capacity(wanted.len());
        let mut changes = Changes::default();
        for (addr, hostname) in wanted {
            if next.iter().any(|h| h.addr == *addr) {
                continue;
            }
            match current.iter().find(|h| h.addr == *addr) {
                Some(host) => next.push(Arc::clone(host)),
                None => {
                    let host = Arc::new(Host::new(*addr, hostname.clone(), self.http2));
                    if self.config.health_check.is_some() {
                        // Like Envoy: a new host takes calls once it passed a check.
                        host.set_flag(health::FAILED_ACTIVE_HC);
                    }
                    if self.http2 {
                        self.tasks.spawn(upstream::maintain(
                            Arc::clone(self),
                            Arc::clone(&host),
                            host.stop.clone(),
                        ));
                    }
                    changes.added.push(*addr);
                    next.push(host);
                }
            }
        }
        next.sort_by_key(|h| h.addr);
        let removed: Vec<Arc<Host>> = current
            .iter()
            .filter(|h| !next.iter().any(|n| n.addr == h.addr))
            .cloned()
            .collect();
        if changes.added.is_empty() && removed.is_empty() {
            return changes;
        }
        self.hosts.store(Arc::new(next));
        self.stats.membership_change.inc();
        if !changes.added.is_empty() {
            self.hosts_added.notify_one();
        }
        let mut draining = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        for host in removed {
            host.set_flag(health::PENDING_DYNAMIC_REMOVAL);
            host.stop.cancel();
            if !self.http2 {
                // No maintained connection to wait for.
                self.host_drained(&host);
            }
            changes.removed.push(host.addr);
            draining.push(host);
        }
        changes
    }

    /// Calls admitted to this cluster and not yet answered in full.
    pub fn in_flight(&self) -> u64 {
        self.stats.calls_admitted.get()
    }

    /// Whether a new cluster is ready for calls: its names resolved once, and
    /// every host checked once (with health checks) or, without them, a
    /// host connection open. A reload routes to a cluster only once it is
    /// (or once the warm-up time is over).
    pub fn warmed(&self) -> bool {
        if self.stats.update_attempt.get() == 0
            && self.config.upstreams.iter().any(|u| u.ip().is_none())
        {
            return false;
        }
        let hosts = self.hosts.load();
        if hosts.is_empty() {
            return true;
        }
        if self.config.health_check.is_some() {
            hosts.iter().all(|h| h.hc_checked.load(Relaxed))
        } else {
            !self.http2 || hosts.iter().any(|h| h.conn.is_ready())
        }
    }

    /// Stops every host's maintainer: no reconnects; open connections close
    /// once their calls finish.
    pub fn shut_down(&self) {
        for host in self.hosts.load().iter() {
            host.stop.cancel();
        }
    }

    /// Called by a host's maintainer when its last connection has closed.
    pub(crate) fn host_drained(&self, host: &Host) {
        host.drained.store(true, Relaxed);
    }
}

/// What an update changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<SocketAddr>,
    pub removed: Vec<SocketAddr>,
}

/// A host at `10.0.0.<i>:8080` with no maintainer, for unit tests.
#[cfg(test)]
pub(crate) fn test_host(i: u8) -> Arc<Host> {
    Arc::new(Host::new(
        SocketAddr::from(([10, 0, 0, i], 8080)),
        format!("host{i}"),
        false,
    ))
}
