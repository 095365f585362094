//! Discovery: which hosts a cluster has, following DNS as it changes.
//!
//! Envoy's STRICT_DNS semantics: every upstream name is resolved to *all* its
//! addresses and each address is a host. Names are resolved again every
//! `dns_refresh`; addresses that appear join at once, addresses that vanish
//! leave (they drain, see [`crate::cluster`]). This is what makes
//! `docker-compose up --scale grpc=5` work with no restart: Docker's DNS
//! answers the service alias with one A record per replica.
//!
//! When a lookup fails, the name keeps the addresses it last had: a DNS hiccup
//! must not empty a cluster. IP literals are static hosts, never resolved.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::config::Upstream;

/// Where names are looked up.
#[derive(Clone)]
pub enum Resolver {
    /// The system's resolver (getaddrinfo): /etc/hosts, /etc/resolv.conf,
    /// Docker's embedded DNS in a container.
    System,
    /// Named DNS servers, asked directly, without caching.
    Servers(Arc<TokioResolver>),
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resolver::System => f.write_str("System"),
            Resolver::Servers(_) => f.write_str("Servers"),
        }
    }
}

/// A failed lookup.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {name}: {reason}")]
pub struct ResolveError {
    pub name: String,
    pub reason: String,
}

impl Resolver {
    /// The system resolver when `servers` is empty, else those servers.
    pub fn new(servers: &[SocketAddr]) -> Self {
        if servers.is_empty() {
            return Resolver::System;
        }
        let mut config = ResolverConfig::new();
        for server in servers {
            config.add_name_server(NameServerConfig::new(*server, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(*server, Protocol::Tcp));
        }
        let mut opts = ResolverOpts::default();
        // Every refresh must see the current answer: no cache, no search list.
        opts.cache_size = 0;
        opts.ndots = 0;
        // A dead server must not stretch a refresh much past its interval.
        opts.timeout = std::time::Duration::from_secs(1);
        opts.attempts = 1;
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(opts)
                .build();
        Resolver::Servers(Arc::new(resolver))
    }

    /// Every address of `name`, with `port`, sorted.
    pub async fn resolve(&self, name: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let error = |reason: String| ResolveError {
            name: name.to_owned(),
            reason,
        };
        let mut addrs: Vec<SocketAddr> = match self {
            Resolver::System => tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| error(e.to_string()))?
                .collect(),
            Resolver::Servers(resolver) => {
                // A trailing dot: the name is absolute, no search domains.
                let fqdn = if name.ends_with('.') {
                    name.to_owned()
                } else {
                    format!("{name}.")
                };
                resolver
                    .lookup_ip(fqdn)
                    .await
                    .map_err(|e| error(e.to_string()))?
                    .iter()
                    .map(|ip: IpAddr| SocketAddr::new(ip, port))
                    .collect()
            }
        };
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(error("no addresses".into()));
        }
        Ok(addrs)
    }
}

/// Resolves a cluster's upstreams, remembering each name's last good answer.
#[derive(Debug)]
pub struct Discovery {
    cluster: Arc<Cluster>,
    resolver: Resolver,
    last_good: HashMap<String, Vec<SocketAddr>>,
    /// Names whose last lookup failed (warned once, not every refresh).
    failing: std::collections::HashSet<String>,
}

impl Discovery {
    pub fn new(cluster: Arc<Cluster>, resolver: Resolver) -> Self {
        Discovery {
            cluster,
            resolver,
            last_good: HashMap::new(),
            failing: std::collections::HashSet::new(),
        }
    }

    /// Resolves every upstream once and updates the cluster.
    pub async fn refresh(&mut self) {
        let cluster = Arc::clone(&self.cluster);
        let stats = &cluster.stats;
        stats.update_attempt.inc();
        let mut wanted: Vec<(SocketAddr, String)> = Vec::new();
        let mut failed = false;
        for upstream in &cluster.config.upstreams {
            if let Some(addr) = upstream.ip() {
                wanted.push((addr, addr.ip().to_string()));
                continue;
            }
            let key = upstream.to_string();
            match self.resolver.resolve(&upstream.host, upstream.port).await {
                Ok(addrs) => {
                    if self.failing.remove(&key) {
                        tracing::info!(cluster = cluster.name(), upstream = %key, "DNS lookups work again");
                    }
                    if self.last_good.get(&key) != Some(&addrs) {
                        tracing::debug!(cluster = cluster.name(), upstream = %key, ?addrs, "resolved");
                    }
                    wanted.extend(addrs.iter().map(|a| (*a, upstream.host.clone())));
                    self.last_good.insert(key, addrs);
                }
                Err(e) => {
                    failed = true;
                    let kept = self.last_good.get(&key).cloned().unwrap_or_default();
                    if self.failing.insert(key.clone()) {
                        tracing::warn!(cluster = cluster.name(), error = %e, kept = kept.len(),
                            "DNS lookup failed; keeping the hosts it had (logged once until it works again)");
                    } else {
                        tracing::debug!(cluster = cluster.name(), error = %e, "DNS lookup failed again");
                    }
                    wanted.extend(kept.into_iter().map(|a| (a, upstream.host.clone())));
                }
            }
        }
        if failed {
            stats.update_failure.inc();
        } else {
            stats.update_success.inc();
        }
        let changes = cluster.update(&wanted);
        if !changes.added.is_empty() || !changes.removed.is_empty() {
            tracing::info!(
                cluster = cluster.name(),
                added = ?changes.added,
                removed = ?changes.removed,
                hosts = cluster.hosts().len(),
                "cluster membership changed"
            );
        }
    }

    /// Refreshes every `dns_refresh` until `stop`. Static-only clusters are
    /// resolved once.
    pub async fn run(mut self, stop: CancellationToken) {
        let dynamic = self
            .cluster
            .config
            .upstreams
            .iter()
            .any(|u: &Upstream| u.ip().is_none());
        if !dynamic {
            return;
        }
        let every = self.cluster.config.dns_refresh;
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => self.refresh().await,
                () = stop.cancelled() => return,
            }
        }
    }
}
