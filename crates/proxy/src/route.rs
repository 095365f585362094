//! How a call finds its cluster, as [`crate::balance`] says how it then
//! finds its host.
//!
//! A listener's [`RouteTable`] is built from its configured virtual hosts
//! with the clusters resolved to live [`Cluster`]s, and is swapped whole on a
//! reload: each call reads the table once, so a call is routed by one
//! version, and changed routes apply to new calls only.
//!
//! 1. **Virtual host**, by `:authority` (Envoy's order): an exact domain,
//!    then the longest `*.suffix`, then the longest `prefix.*`, then `*`. A
//!    domain without a port matches the authority with any port.
//! 2. **Route**, in order, first match: `:path` prefix or exact path (the
//!    gRPC `/package.Service/Method`), and every header condition.
//! 3. **Cluster**: the route's one cluster, or one of its weighted clusters
//!    picked at random in proportion to the weights.
//!
//! A table with one catch-all route (a listener given `cluster:`) answers
//! with no comparison at all: the common case pays nothing for routing.

use std::sync::Arc;
use std::time::Duration;

use h2fwd::Head;
use http::{HeaderName, HeaderValue};
use rand::Rng;

use crate::cluster::Cluster;
use crate::config::{RetryConfig, RouteConfig, VirtualHostConfig};

/// A listener's routes with their clusters, as one version of the
/// configuration has them.
#[derive(Debug)]
pub struct RouteTable {
    vhosts: Vec<VirtualHost>,
    /// Set when the table is one catch-all route: the fast path.
    only: Option<Arc<Route>>,
    /// Index of the `*` virtual host, if any.
    any: Option<usize>,
}

#[derive(Debug)]
struct VirtualHost {
    domains: Vec<Domain>,
    routes: Vec<Arc<Route>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Domain {
    Any,
    /// Lowercase; with a port only if written with one.
    Exact(String),
    /// `*.example.com`: the part after `*`, lowercase (`.example.com`).
    Suffix(String),
    /// `api.*`: the part before `*`, lowercase (`api.`).
    Prefix(String),
}

/// One route: what it matches, where its calls go, and its overrides.
#[derive(Debug)]
pub struct Route {
    path: PathMatch,
    headers: Vec<HeaderCondition>,
    target: Target,
    /// Replaces the cluster's `request_timeout` (`Some(None)`: no cap).
    pub timeout: Option<Option<Duration>>,
    /// Replaces the cluster's retry policy.
    pub retry: Option<RetryConfig>,
}

#[derive(Debug)]
enum PathMatch {
    Prefix(String),
    Exact(String),
}

#[derive(Debug)]
struct HeaderCondition {
    name: HeaderName,
    /// `Some(value)`: equal to it; `None`: see `present`.
    exact: Option<HeaderValue>,
    present: bool,
}

#[derive(Debug)]
enum Target {
    One(Arc<Cluster>),
    /// Clusters with the running sum of the weights up to and including each.
    Weighted(Vec<(Arc<Cluster>, u32)>, u32),
}

/// A route's config named a cluster that `clusters` does not have.
#[derive(Debug, thiserror::Error)]
#[error("route to cluster {0:?}, which does not exist")]
pub struct MissingCluster(pub String);

impl RouteTable {
    /// Builds the table of `vhosts` (validated), looking clusters up by name.
    pub fn new(
        vhosts: &[VirtualHostConfig],
        cluster: impl Fn(&str) -> Option<Arc<Cluster>>,
    ) -> Result<Self, MissingCluster> {
        let mut built = Vec::with_capacity(vhosts.len());
        for vh in vhosts {
            let routes = vh
                .routes
                .iter()
                .map(|r| Route::new(r, &cluster).map(Arc::new))
                .collect::<Result<Vec<_>, _>>()?;
            built.push(VirtualHost {
                domains: vh.domains.iter().map(|d| Domain::parse(d)).collect(),
                routes,
            });
        }
        let any = built
            .iter()
            .position(|vh| vh.domains.contains(&Domain::Any));
        let only = match built.as_slice() {
            [vh] if vh.domains == [Domain::Any] => match vh.routes.as_slice() {
                [r] if r.matches_everything() => Some(Arc::clone(r)),
                _ => None,
            },
            _ => None,
        };
        Ok(RouteTable {
            vhosts: built,
            only,
            any,
        })
    }

    /// The route for a request, or `None` when nothing matches.
    pub fn find(&self, head: &Head) -> Option<&Route> {
        if let Some(only) = &self.only {
            return Some(only);
        }
        let vh = self.virtual_host(authority(head))?;
        let path = head.path_only();
        vh.routes
            .iter()
            .find(|r| r.matches(path, head))
            .map(|r| &**r)
    }

    fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        if self.vhosts.len() == 1 && self.any == Some(0) {
            return self.vhosts.first();
        }
        let authority = authority.to_ascii_lowercase();
        let host = strip_port(&authority);
        // Exact, then the longest suffix, then the longest prefix, then `*`.
        let mut best: Option<(u8, usize, &VirtualHost)> = None;
        for vh in &self.vhosts {
            for d in &vh.domains {
                let rank = match d {
                    Domain::Exact(e) if *e == authority || e == host => (3, e.len()),
                    // A wildcard written with a port matches the authority with it.
                    Domain::Suffix(s)
                        if [host, authority.as_str()]
                            .iter()
                            .any(|a| a.ends_with(s.as_str()) && a.len() > s.len()) =>
                    {
                        (2, s.len())
                    }
                    Domain::Prefix(p)
                        if [host, authority.as_str()]
                            .iter()
                            .any(|a| a.starts_with(p.as_str()) && a.len() > p.len()) =>
                    {
                        (1, p.len())
                    }
                    _ => continue,
                };
                if best.is_none_or(|(r, l, _)| (rank.0, rank.1) > (r, l)) {
                    best = Some((rank.0, rank.1, vh));
                }
            }
        }
        best.map(|(_, _, vh)| vh)
            .or_else(|| self.any.map(|i| &self.vhosts[i]))
    }

    /// Every cluster the table may send to (each once).
    pub fn clusters(&self) -> Vec<Arc<Cluster>> {
        let mut out: Vec<Arc<Cluster>> = Vec::new();
        for r in self.vhosts.iter().flat_map(|vh| vh.routes.iter()) {
            for c in r.clusters() {
                if !out.iter().any(|o| Arc::ptr_eq(o, c)) {
                    out.push(Arc::clone(c));
                }
            }
        }
        out
    }
}

impl Route {
    fn new(
        config: &RouteConfig,
        cluster: &impl Fn(&str) -> Option<Arc<Cluster>>,
    ) -> Result<Self, MissingCluster> {
        let get = |name: &str| cluster(name).ok_or_else(|| MissingCluster(name.to_owned()));
        let m = &config.matcher;
        let path = match (&m.path, &m.prefix) {
            (Some(p), _) => PathMatch::Exact(p.clone()),
            (None, Some(p)) => PathMatch::Prefix(p.clone()),
            (None, None) => PathMatch::Prefix("/".into()),
        };
        let headers = m
            .headers
            .iter()
            .filter_map(|h| {
                // Validated: names and values parse.
                Some(HeaderCondition {
                    name: HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                    exact: h
                        .exact
                        .as_deref()
                        .and_then(|v| HeaderValue::from_str(v).ok()),
                    present: h.present.unwrap_or(true),
                })
            })
            .collect();
        let a = &config.route;
        let target = match &a.cluster {
            Some(name) => Target::One(get(name)?),
            None => {
                let mut sum = 0u32;
                let mut clusters = Vec::with_capacity(a.weighted_clusters.len());
                for w in &a.weighted_clusters {
                    if w.weight == 0 {
                        continue;
                    }
                    sum = sum.saturating_add(w.weight);
                    clusters.push((get(&w.name)?, sum));
                }
                match clusters.as_slice() {
                    [(one, _)] => Target::One(Arc::clone(one)),
                    _ => Target::Weighted(clusters, sum),
                }
            }
        };
        Ok(Route {
            path,
            headers,
            target,
            timeout: a.timeout,
            retry: a.retry_policy.clone(),
        })
    }

    fn matches_everything(&self) -> bool {
        matches!(&self.path, PathMatch::Prefix(p) if p == "/") && self.headers.is_empty()
    }

    fn matches(&self, path: &str, head: &Head) -> bool {
        let path_ok = match &self.path {
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Exact(p) => path == p,
        };
        path_ok
            && self.headers.iter().all(|h| {
                let mut values = head.get_all(h.name.as_str().as_bytes());
                match &h.exact {
                    Some(want) => values.any(|v| v == want.as_bytes()),
                    None => values.next().is_some() == h.present,
                }
            })
    }

    /// The cluster for one call.
    pub fn pick(&self) -> &Arc<Cluster> {
        match &self.target {
            Target::One(c) => c,
            Target::Weighted(clusters, total) => {
                let n = rand::rng().random_range(0..*total);
                let i = clusters.partition_point(|(_, upto)| *upto <= n);
                &clusters[i.min(clusters.len() - 1)].0
            }
        }
    }

    fn clusters(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        let (one, many) = match &self.target {
            Target::One(c) => (Some(c), &[][..]),
            Target::Weighted(cs, _) => (None, cs.as_slice()),
        };
        one.into_iter().chain(many.iter().map(|(c, _)| c))
    }
}

impl Domain {
    fn parse(d: &str) -> Self {
        let d = d.to_ascii_lowercase();
        if d == "*" {
            Domain::Any
        } else if let Some(suffix) = d.strip_prefix('*') {
            Domain::Suffix(suffix.to_owned())
        } else if let Some(prefix) = d.strip_suffix('*') {
            Domain::Prefix(prefix.to_owned())
        } else {
            Domain::Exact(d)
        }
    }
}

/// `:authority`, or the `host` header of a request that has none.
fn authority(head: &Head) -> &str {
    head.authority()
        .or_else(|| head.get(b"host"))
        .and_then(|a| std::str::from_utf8(a).ok())
        .unwrap_or("")
}

/// `example.com:8000` -> `example.com`; `[::1]:80` -> `[::1]`.
fn strip_port(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;
    use std::collections::HashMap;

    fn clusters(names: &[&str]) -> HashMap<String, Arc<Cluster>> {
        names
            .iter()
            .map(|n| {
                let c = Cluster::new(
                    ClusterConfig::new(n, Vec::new()),
                    tokio_util::task::TaskTracker::new(),
                    true,
                    None,
                );
                ((*n).to_owned(), c)
            })
            .collect()
    }

    fn table(yaml: &str, names: &[&str]) -> RouteTable {
        let vhosts: Vec<VirtualHostConfig> = serde_norway::from_str(yaml).expect("yaml");
        let clusters = clusters(names);
        RouteTable::new(&vhosts, |n| clusters.get(n).cloned()).expect("table")
    }

    fn request(authority: &str, path: &str, headers: &[(&str, &str)]) -> Head {
        let mut head = Head::request(b"POST", b"http", authority.as_bytes(), path.as_bytes());
        for (k, v) in headers {
            head.append(k.as_bytes(), v.as_bytes());
        }
        head
    }

    fn routed(t: &RouteTable, authority: &str, path: &str, headers: &[(&str, &str)]) -> String {
        t.find(&request(authority, path, headers))
            .map_or_else(|| "none".into(), |r| r.pick().name().to_owned())
    }

    #[test]
    fn a_catch_all_table_takes_the_fast_path() {
        let t = table("[{routes: [{route: {cluster: a}}]}]", &["a"]);
        assert!(t.only.is_some());
        assert_eq!(routed(&t, "x", "/any.Thing/Call", &[]), "a");
    }

    #[test]
    fn routes_match_in_order_on_path_and_headers() {
        let yaml = r#"
- routes:
    - match: { path: /helloworld.Greeter/SayHello, headers: [{name: x-canary, exact: "yes"}] }
      route: { cluster: canary }
    - match: { prefix: /helloworld.Greeter/ }
      route: { cluster: greeter }
    - match: { prefix: /, headers: [{name: x-debug, present: true}, {name: x-skip, present: false}] }
      route: { cluster: debug }
    - match: { prefix: /gateway. }
      route: { cluster: backend }
"#;
        let t = table(yaml, &["canary", "greeter", "debug", "backend"]);
        assert!(t.only.is_none());
        let hello = "/helloworld.Greeter/SayHello";
        assert_eq!(routed(&t, "a", hello, &[("x-canary", "yes")]), "canary");
        assert_eq!(routed(&t, "a", hello, &[("x-canary", "no")]), "greeter");
        assert_eq!(routed(&t, "a", "/helloworld.Greeter/Other", &[]), "greeter");
        assert_eq!(routed(&t, "a", "/x.Y/Z", &[("x-debug", "")]), "debug");
        assert_eq!(
            routed(&t, "a", "/x.Y/Z", &[("x-debug", "1"), ("x-skip", "1")]),
            "none"
        );
        assert_eq!(
            routed(&t, "a", "/gateway.AliveService/GetStatus", &[]),
            "backend"
        );
        assert_eq!(
            routed(&t, "a", "/helloworld.GreeterX/SayHello", &[]),
            "none"
        );
    }

    #[test]
    fn virtual_hosts_follow_envoys_order() {
        let yaml = r#"
- { name: any, domains: ["*"], routes: [{route: {cluster: any}}] }
- { name: exact, domains: [api.example.com], routes: [{route: {cluster: exact}}] }
- { name: suffix, domains: ["*.example.com"], routes: [{route: {cluster: suffix}}] }
- { name: longer, domains: ["*.eu.example.com"], routes: [{route: {cluster: longer}}] }
- { name: prefix, domains: ["api.*"], routes: [{route: {cluster: prefix}}] }
- { name: port, domains: ["local:9000"], routes: [{route: {cluster: port}}] }
- { name: suffix_port, domains: ["*.example.org:8443"], routes: [{route: {cluster: suffix_port}}] }
"#;
        let t = table(
            yaml,
            &[
                "any",
                "exact",
                "suffix",
                "longer",
                "prefix",
                "port",
                "suffix_port",
            ],
        );
        for (authority, want) in [
            ("api.example.com", "exact"),
            ("API.Example.com:8000", "exact"),
            ("www.example.com", "suffix"),
            ("a.eu.example.com", "longer"),
            ("api.other.org", "prefix"),
            ("local:9000", "port"),
            ("local:9001", "any"),
            ("x.example.org:8443", "suffix_port"),
            ("x.example.org", "any"),
            ("example.com", "any"),
        ] {
            assert_eq!(routed(&t, authority, "/a/b", &[]), want, "{authority}");
        }
        let none = table(
            "[{domains: [a.com], routes: [{route: {cluster: x}}]}]",
            &["x"],
        );
        assert_eq!(routed(&none, "b.com", "/a/b", &[]), "none");
    }

    #[test]
    fn weighted_clusters_split_in_proportion() {
        let yaml = "[{routes: [{route: {weighted_clusters: [{name: a, weight: 90}, {name: b, weight: 10}, {name: c, weight: 0}]}}]}]";
        let t = table(yaml, &["a", "b", "c"]);
        let route = t.find(&request("x", "/s/m", &[])).unwrap();
        let mut a = 0;
        for _ in 0..10_000 {
            match route.pick().name() {
                "a" => a += 1,
                "b" => {}
                other => panic!("weight 0 cluster {other} picked"),
            }
        }
        assert!((8_800..=9_200).contains(&a), "a got {a} of 10000");
        assert_eq!(t.clusters().len(), 2);
    }

    #[test]
    fn ports_are_stripped_but_ipv6_literals_kept() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("a.com"), "a.com");
    }
}
