//! Listeners as configured: address, mode, TLS, the limits that keep one
//! client from costing the others, and the routes of its calls.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::grpc_web::GrpcWebConfig;
use super::route::{self, RouteConfig, VirtualHostConfig};
use super::values::{Mode, duration, on_off, opt_duration, ser_duration, ser_opt_duration};

/// One listener: where it listens, how it balances, to which cluster.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    #[serde(default = "default_listener_name")]
    pub name: String,
    #[serde(default = "default_listen")]
    pub address: SocketAddr,
    #[serde(default)]
    pub mode: Mode,
    /// Every call to this cluster (one catch-all route). An L7 listener
    /// gives this, `routes` or `virtual_hosts`; with none, `backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Routes for every domain: one virtual host with domains `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// Virtual hosts, chosen by `:authority`, each with its routes. After
    /// loading, every L7 listener has these (from `cluster` or `routes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_hosts: Vec<VirtualHostConfig>,
    /// Terminate TLS (ALPN h2) on this listener; cleartext when absent.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Add an `x-request-id` to requests that have none (L7).
    #[serde(default = "default_true", deserialize_with = "on_off")]
    pub generate_request_id: bool,
    /// Streams one client connection may have open at once (L7): the most
    /// of a cluster's `max_requests` one connection can hold.
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// Bytes of answers one client connection may have waiting for it
    /// (read from hosts, not yet taken by the client), as Envoy's key.
    #[serde(default = "default_connection_buffer")]
    pub per_connection_buffer_limit_bytes: usize,
    /// A call whose client gives no flow-control room for this long while
    /// an answer waits for it is reset; `off`: never.
    #[serde(
        default = "default_stream_stall_timeout",
        deserialize_with = "opt_duration",
        serialize_with = "ser_opt_duration"
    )]
    pub stream_stall_timeout: Option<Duration>,
    /// PING each client connection this often; `off`: never.
    #[serde(
        default = "default_downstream_keepalive",
        deserialize_with = "opt_duration",
        serialize_with = "ser_opt_duration"
    )]
    pub keepalive_interval: Option<Duration>,
    /// A client connection that does not answer a PING in this long is closed.
    #[serde(
        default = "default_downstream_keepalive_timeout",
        deserialize_with = "duration",
        serialize_with = "ser_duration"
    )]
    pub keepalive_timeout: Duration,
    /// gRPC-Web (and HTTP/1.1, which browsers' calls come over) on this L7
    /// listener; off when absent.
    #[serde(
        default,
        deserialize_with = "super::grpc_web::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub grpc_web: Option<GrpcWebConfig>,
}

/// A listener's certificate chain and key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn default_max_concurrent_streams() -> u32 {
    100
}
fn default_connection_buffer() -> usize {
    1 << 20
}
fn default_stream_stall_timeout() -> Option<Duration> {
    Some(Duration::from_secs(30))
}
fn default_downstream_keepalive() -> Option<Duration> {
    Some(Duration::from_secs(60))
}
fn default_downstream_keepalive_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_listener_name() -> String {
    "ingress".into()
}
pub(super) fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8000))
}
fn default_true() -> bool {
    true
}

impl ListenerConfig {
    /// A listener named `ingress` on `address`, sending to `cluster`.
    pub fn new(address: SocketAddr, mode: Mode, cluster: &str) -> Self {
        ListenerConfig {
            name: default_listener_name(),
            address,
            mode,
            cluster: Some(cluster.into()),
            routes: Vec::new(),
            virtual_hosts: Vec::new(),
            tls: None,
            generate_request_id: true,
            max_concurrent_streams: default_max_concurrent_streams(),
            per_connection_buffer_limit_bytes: default_connection_buffer(),
            stream_stall_timeout: default_stream_stall_timeout(),
            keepalive_interval: default_downstream_keepalive(),
            keepalive_timeout: default_downstream_keepalive_timeout(),
            grpc_web: None,
        }
    }
}

impl ListenerConfig {
    /// The single cluster of a listener with one catch-all route (every L4
    /// listener, and an L7 listener given `cluster:`); `None` with routes.
    pub fn only_cluster(&self) -> Option<&str> {
        match self.virtual_hosts.as_slice() {
            [vh] if vh.domains == ["*"] => match vh.routes.as_slice() {
                [r] if r.matcher.path.is_none()
                    && r.matcher.headers.is_empty()
                    && r.matcher.prefix.as_deref().is_none_or(|p| p == "/") =>
                {
                    r.route.cluster.as_deref()
                }
                _ => None,
            },
            [] => self.cluster.as_deref(),
            _ => None,
        }
    }

    /// The listener's virtual hosts, also for a configuration built in code
    /// (not through [`super::Config::load`]) that gives only `cluster` or `routes`.
    pub fn effective_virtual_hosts(&self) -> std::borrow::Cow<'_, [VirtualHostConfig]> {
        if !self.virtual_hosts.is_empty() {
            return self.virtual_hosts.as_slice().into();
        }
        let routes = if self.routes.is_empty() {
            vec![RouteConfig::catch_all(
                self.cluster.as_deref().unwrap_or("backend"),
            )]
        } else {
            self.routes.clone()
        };
        vec![VirtualHostConfig {
            name: "default".into(),
            domains: vec!["*".into()],
            routes,
        }]
        .into()
    }

    /// Every cluster the listener may send calls to.
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        self.cluster.as_deref().into_iter().chain(
            self.virtual_hosts
                .iter()
                .flat_map(|vh| vh.routes.iter())
                .flat_map(|r| r.route.clusters()),
        )
    }

    /// Sends what went to cluster `from` to cluster `to` (`--cluster-name`).
    pub(super) fn rename_cluster(&mut self, from: &str, to: &str) {
        let rename = |c: &mut String| {
            if c == from {
                *c = to.to_owned();
            }
        };
        self.cluster.iter_mut().for_each(rename);
        for r in self
            .virtual_hosts
            .iter_mut()
            .flat_map(|vh| vh.routes.iter_mut())
        {
            r.route.cluster.iter_mut().for_each(rename);
            r.route
                .weighted_clusters
                .iter_mut()
                .for_each(|w| rename(&mut w.name));
        }
    }

    /// The cluster flags such as `--upstream` describe: the listener's only
    /// cluster, or the first its routes name.
    pub fn first_cluster(&self) -> Option<&str> {
        self.clusters().next()
    }
}

/// Turns `cluster:` and `routes:` into virtual hosts, so that every L7
/// listener has its routes in one shape; reports listeners that give more
/// than one of them, or routes on an L4 listener.
pub(super) fn normalize(listeners: &mut [ListenerConfig], problems: &mut Vec<String>) {
    for l in listeners {
        let given = [
            l.cluster.is_some(),
            !l.routes.is_empty(),
            !l.virtual_hosts.is_empty(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given > 1 {
            problems.push(format!(
                "listener {:?}: give one of `cluster`, `routes` and `virtual_hosts`",
                l.name
            ));
        }
        if l.mode == Mode::L4 {
            if !l.routes.is_empty() || !l.virtual_hosts.is_empty() {
                problems.push(format!(
                    "listener {:?}: an L4 listener sees no calls to route; give it `cluster:` only",
                    l.name
                ));
            }
            if l.cluster.is_none() {
                l.cluster = Some(super::cluster::default_cluster_name());
            }
            continue;
        }
        if given == 0 {
            l.cluster = Some(super::cluster::default_cluster_name());
        }
        if l.virtual_hosts.is_empty() {
            let routes = if l.routes.is_empty() {
                vec![RouteConfig::catch_all(
                    l.cluster.as_deref().unwrap_or_default(),
                )]
            } else {
                std::mem::take(&mut l.routes)
            };
            l.virtual_hosts = vec![VirtualHostConfig {
                name: "default".into(),
                domains: vec!["*".into()],
                routes,
            }];
        }
        // One shape, with the defaults written out (as /config_dump shows it).
        l.cluster = None;
        for r in l
            .virtual_hosts
            .iter_mut()
            .flat_map(|vh| vh.routes.iter_mut())
        {
            if r.matcher.prefix.is_none() && r.matcher.path.is_none() {
                r.matcher.prefix = Some("/".into());
            }
        }
    }
}

/// Everything wrong with the listeners; `clusters` are the names defined.
pub(super) fn problems(listeners: &[ListenerConfig], clusters: &HashSet<&str>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut listener_names = HashSet::new();
    let mut addrs = HashSet::new();
    for l in listeners {
        if !listener_names.insert(l.name.as_str()) {
            problems.push(format!("listener {:?} is defined twice", l.name));
        }
        if l.name.is_empty() || l.name.contains(char::is_whitespace) || l.name.contains('.') {
            problems.push(format!(
                "listener name {:?} must be non-empty, without spaces or dots",
                l.name
            ));
        }
        if l.address.port() != 0 && !addrs.insert(l.address) {
            problems.push(format!("two listeners use {}", l.address));
        }
        if let Some(tls) = &l.tls {
            if l.mode == Mode::L4 {
                problems.push(format!(
                    "listener {:?}: TLS needs mode l7 (an L4 listener passes TLS through untouched)",
                    l.name
                ));
            } else if let Err(e) = crate::tls::server_config(&tls.cert, &tls.key) {
                problems.push(format!("listener {:?}: {e}", l.name));
            }
        }
        if l.max_concurrent_streams == 0 {
            problems.push(format!(
                "listener {:?}: max_concurrent_streams must be at least 1",
                l.name
            ));
        }
        if l.per_connection_buffer_limit_bytes < 16 << 10 {
            problems.push(format!(
                "listener {:?}: per_connection_buffer_limit_bytes must be at least 16384",
                l.name
            ));
        }
        if let Some(web) = &l.grpc_web {
            if l.mode == Mode::L4 {
                problems.push(format!(
                    "listener {:?}: gRPC-Web needs mode l7 (an L4 listener sees no calls to translate)",
                    l.name
                ));
            }
            problems.extend(web.problems(&l.name));
        }
        if l.keepalive_timeout.is_zero() {
            problems.push(format!(
                "listener {:?}: keepalive_timeout must be more than zero",
                l.name
            ));
        }
        match l.mode {
            Mode::L4 => {
                if let Some(c) = &l.cluster
                    && !clusters.contains(c.as_str())
                {
                    problems.push(format!(
                        "listener {:?} routes to cluster {c:?}, which is not defined",
                        l.name
                    ));
                }
            }
            Mode::L7 => match l.only_cluster() {
                // Said in the words of a listener given `cluster:`.
                Some(c) if !clusters.contains(c) => problems.push(format!(
                    "listener {:?} routes to cluster {c:?}, which is not defined",
                    l.name
                )),
                _ => problems.extend(route::problems(&l.name, &l.virtual_hosts, clusters)),
            },
        }
    }
    problems
}

/// The `--validate` lines of the listeners.
pub(super) fn summary(listeners: &[ListenerConfig], out: &mut String) {
    for l in listeners {
        let mut details = l.mode.to_string();
        if let Some(t) = &l.tls {
            details.push_str(&format!(", TLS with {}", t.cert.display()));
        }
        if l.mode == Mode::L7 && !l.generate_request_id {
            details.push_str(", no generated x-request-id");
        }
        match l.only_cluster() {
            Some(cluster) => out.push_str(&format!(
                "listener {} on {} ({details}) -> cluster {cluster}\n",
                l.name, l.address
            )),
            None => {
                let n: usize = l.virtual_hosts.iter().map(|vh| vh.routes.len()).sum();
                out.push_str(&format!(
                    "listener {} on {} ({details}) -> {n} routes, first match wins\n",
                    l.name, l.address
                ));
                route::summary(&l.virtual_hosts, out);
            }
        }
        if l.mode == Mode::L7 {
            let off = || "off".to_owned();
            out.push_str(&format!(
                "  per client connection: {} streams, {} bytes of unread answers; stall timeout {}; PING every {} (timeout {})\n",
                l.max_concurrent_streams,
                l.per_connection_buffer_limit_bytes,
                l.stream_stall_timeout.map_or_else(off, common::format_duration),
                l.keepalive_interval.map_or_else(off, common::format_duration),
                common::format_duration(l.keepalive_timeout),
            ));
            if let Some(web) = &l.grpc_web {
                out.push_str(&format!("  {}\n", web.describe()));
            }
        }
    }
}
