//! Routes as configured: which calls of an L7 listener go to which cluster.
//!
//! Envoy's `virtual_hosts` and `routes` are the model, with its names where
//! they fit: a listener has virtual hosts (chosen by `:authority`), each with
//! routes tried in order (first match wins), each sending to one cluster or
//! to weighted clusters. How a call is matched at run time is in
//! [`crate::route`]; this file says what can be written and checks it.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::cluster::RetryConfig;
use super::values::{opt_duration, ser_opt_duration};

/// A set of domains (`:authority` values) and the routes for them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHostConfig {
    #[serde(default = "default_vhost_name")]
    pub name: String,
    /// `api.example.com` (exact), `*.example.com` (suffix), `api.*` (prefix)
    /// or `*` (any). Matched without the port unless the domain has one.
    #[serde(default = "any_domain")]
    pub domains: Vec<String>,
    pub routes: Vec<RouteConfig>,
}

/// One route: what it matches, and where matching calls go.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Every call when absent.
    #[serde(default, rename = "match")]
    pub matcher: RouteMatch,
    pub route: RouteAction,
}

/// What a route matches: the `:path` (the gRPC `/package.Service/Method`)
/// and request headers, all of which must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// `:path` starts with this, e.g. `/helloworld.Greeter/` for a service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// `:path` is exactly this, e.g. `/helloworld.Greeter/SayHello`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

/// A request header that must be present with a value (`exact`), present
/// (`present: true`), or absent (`present: false`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// Where a route sends its calls, and how.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAction {
    /// One cluster for every call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Each call to one of these, at random in proportion to the weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weighted_clusters: Vec<WeightedCluster>,
    /// Upper bound on the call's duration, instead of the cluster's
    /// `request_timeout` (`off`: none); a shorter `grpc-timeout` still wins.
    #[serde(
        default,
        deserialize_with = "some_opt_duration",
        serialize_with = "ser_route_timeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Option<Duration>>,
    /// Replaces the cluster's `retry` for calls of this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryConfig>,
}

/// A cluster and its share of a route's calls.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedCluster {
    pub name: String,
    pub weight: u32,
}

fn default_vhost_name() -> String {
    "default".into()
}

fn any_domain() -> Vec<String> {
    vec!["*".into()]
}

fn some_opt_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<Duration>>, D::Error> {
    opt_duration(d).map(Some)
}

fn ser_route_timeout<S: serde::Serializer>(
    v: &Option<Option<Duration>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    ser_opt_duration(&v.flatten(), s)
}

impl RouteConfig {
    /// A route sending every call to `cluster`.
    pub fn catch_all(cluster: &str) -> Self {
        RouteConfig {
            matcher: RouteMatch::default(),
            route: RouteAction {
                cluster: Some(cluster.into()),
                ..RouteAction::default()
            },
        }
    }
}

impl RouteAction {
    /// Every cluster this action may send to.
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        self.cluster
            .iter()
            .map(String::as_str)
            .chain(self.weighted_clusters.iter().map(|w| w.name.as_str()))
    }

    /// `cluster X`, or `X 90%, Y 10%`.
    pub fn describe(&self) -> String {
        if let Some(c) = &self.cluster {
            return format!("cluster {c}");
        }
        let total: u64 = self
            .weighted_clusters
            .iter()
            .map(|w| u64::from(w.weight))
            .sum();
        self.weighted_clusters
            .iter()
            .map(|w| {
                let share = if total == 0 {
                    0.0
                } else {
                    100.0 * f64::from(w.weight) / total as f64
                };
                format!("{} {}%", w.name, trim_float(share))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn trim_float(x: f64) -> String {
    let s = format!("{x:.1}");
    s.strip_suffix(".0").map_or(s.clone(), str::to_owned)
}

impl RouteMatch {
    /// `prefix /a/`, `path /a/B`, plus the header conditions.
    pub fn describe(&self) -> String {
        let mut out = match (&self.path, &self.prefix) {
            (Some(p), _) => format!("path {p}"),
            (None, Some(p)) => format!("prefix {p}"),
            (None, None) => "prefix /".to_owned(),
        };
        for h in &self.headers {
            match (&h.exact, h.present) {
                (Some(v), _) => out.push_str(&format!(", header {}={v:?}", h.name)),
                (None, Some(false)) => out.push_str(&format!(", no header {}", h.name)),
                (None, _) => out.push_str(&format!(", header {} present", h.name)),
            }
        }
        out
    }
}

/// Everything wrong with a listener's virtual hosts; `clusters` are the
/// names defined.
pub(super) fn problems(
    listener: &str,
    vhosts: &[VirtualHostConfig],
    clusters: &HashSet<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut names = HashSet::new();
    let mut domains = HashSet::new();
    for vh in vhosts {
        let at = format!("listener {listener:?}, virtual host {:?}", vh.name);
        if !names.insert(vh.name.as_str()) {
            problems.push(format!(
                "listener {listener:?}: virtual host {:?} is defined twice",
                vh.name
            ));
        }
        if vh.domains.is_empty() {
            problems.push(format!("{at}: domains must not be empty (`*` for any)"));
        }
        for d in &vh.domains {
            let lower = d.to_ascii_lowercase();
            if !domains.insert(lower.clone()) {
                problems.push(format!(
                    "listener {listener:?}: domain {d:?} is in two virtual hosts"
                ));
            }
            let stars = d.matches('*').count();
            let shape_ok = d == "*"
                || stars == 0
                || (stars == 1 && (d.starts_with('*') || d.ends_with('*')) && d.len() > 1);
            if d.is_empty() || !shape_ok || d.contains(char::is_whitespace) {
                problems.push(format!(
                    "{at}: domain {d:?} must be a name, `*.suffix`, `prefix.*` or `*`"
                ));
            }
        }
        if vh.routes.is_empty() {
            problems.push(format!("{at}: has no routes"));
        }
        for (i, r) in vh.routes.iter().enumerate() {
            let at = format!("{at}, route {}", i + 1);
            problems.extend(route_problems(&at, r, clusters));
        }
    }
    problems
}

fn route_problems(at: &str, r: &RouteConfig, clusters: &HashSet<&str>) -> Vec<String> {
    let mut problems = Vec::new();
    let m = &r.matcher;
    if m.prefix.is_some() && m.path.is_some() {
        problems.push(format!("{at}: match has both prefix and path; give one"));
    }
    for p in m.prefix.iter().chain(&m.path) {
        if !p.starts_with('/') {
            problems.push(format!(
                "{at}: {p:?} must start with `/` (gRPC paths are /package.Service/Method)"
            ));
        }
    }
    for h in &m.headers {
        if http::HeaderName::from_bytes(h.name.as_bytes()).is_err()
            || h.name.bytes().any(|b| b.is_ascii_uppercase())
        {
            problems.push(format!(
                "{at}: header name {:?} must be a lowercase HTTP/2 header name",
                h.name
            ));
        }
        if h.name.starts_with(':') {
            problems.push(format!(
                "{at}: header {:?}: match pseudo-headers with prefix, path or domains",
                h.name
            ));
        }
        match (&h.exact, h.present) {
            (Some(v), present) => {
                if present == Some(false) {
                    problems.push(format!(
                        "{at}: header {:?} cannot be both absent and equal to a value",
                        h.name
                    ));
                }
                if http::HeaderValue::from_str(v).is_err() {
                    problems.push(format!(
                        "{at}: header {:?}: {v:?} is not a valid header value",
                        h.name
                    ));
                }
            }
            (None, None) => problems.push(format!(
                "{at}: header {:?} needs `exact: VALUE`, `present: true` or `present: false`",
                h.name
            )),
            (None, Some(_)) => {}
        }
    }
    let a = &r.route;
    match (&a.cluster, a.weighted_clusters.is_empty()) {
        (Some(_), false) => problems.push(format!(
            "{at}: route has both cluster and weighted_clusters; give one"
        )),
        (None, true) => problems.push(format!(
            "{at}: route needs `cluster: NAME` or `weighted_clusters: [{{name, weight}}, ...]`"
        )),
        _ => {}
    }
    if !a.weighted_clusters.is_empty() {
        let total: u64 = a
            .weighted_clusters
            .iter()
            .map(|w| u64::from(w.weight))
            .sum();
        if total == 0 {
            problems.push(format!("{at}: weighted_clusters weights add up to 0"));
        }
        let mut seen = HashSet::new();
        for w in &a.weighted_clusters {
            if !seen.insert(w.name.as_str()) {
                problems.push(format!(
                    "{at}: cluster {:?} is twice in weighted_clusters",
                    w.name
                ));
            }
        }
        if total > u64::from(u32::MAX) {
            problems.push(format!("{at}: weighted_clusters weights are too large"));
        }
    }
    for c in a.clusters() {
        if !clusters.contains(c) {
            problems.push(format!(
                "{at}: sends to cluster {c:?}, which is not defined"
            ));
        }
    }
    if let Some(retry) = &a.retry_policy {
        problems.extend(
            super::cluster::retry_problems(retry)
                .into_iter()
                .map(|p| format!("{at}: retry_policy.{p}")),
        );
    }
    problems
}

/// The `--validate` lines of a listener's routes, indented by `indent`.
pub(super) fn summary(vhosts: &[VirtualHostConfig], out: &mut String) {
    let single = vhosts.len() == 1 && vhosts[0].domains == any_domain();
    for vh in vhosts {
        let indent = if single {
            "  "
        } else {
            out.push_str(&format!(
                "  virtual host {} [{}]\n",
                vh.name,
                vh.domains.join(", ")
            ));
            "    "
        };
        for r in &vh.routes {
            let mut extra = String::new();
            if let Some(t) = r.route.timeout {
                extra.push_str(&format!(
                    "; timeout {}",
                    t.map_or_else(|| "off".to_owned(), common::format_duration)
                ));
            }
            if let Some(p) = &r.route.retry_policy {
                let on: Vec<String> = p.retry_on.iter().map(ToString::to_string).collect();
                extra.push_str(&format!(
                    "; retries on {} (up to {})",
                    if on.is_empty() {
                        "refused streams only".to_owned()
                    } else {
                        on.join(", ")
                    },
                    p.num_retries
                ));
            }
            out.push_str(&format!(
                "{indent}route {} -> {}{extra}\n",
                r.matcher.describe(),
                r.route.describe()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Vec<String> {
        let vhosts: Vec<VirtualHostConfig> = serde_norway::from_str(yaml).expect("yaml");
        problems("l", &vhosts, &HashSet::from(["a", "b"]))
    }

    #[test]
    fn a_good_table_has_no_problems_and_describes_itself() {
        let yaml = r#"
- domains: ["*"]
  routes:
    - match: { prefix: /helloworld.Greeter/ }
      route: { cluster: a, timeout: 2s }
    - match: { path: /x.Y/Z, headers: [{name: x-canary, exact: "1"}, {name: x-no, present: false}] }
      route: { cluster: b, retry_policy: { retry_on: [unavailable], num_retries: 1 } }
    - route:
        weighted_clusters: [{name: a, weight: 90}, {name: b, weight: 10}]
"#;
        assert_eq!(check(yaml), Vec::<String>::new());
        let vhosts: Vec<VirtualHostConfig> = serde_norway::from_str(yaml).unwrap();
        let mut out = String::new();
        summary(&vhosts, &mut out);
        assert_eq!(
            out,
            "  route prefix /helloworld.Greeter/ -> cluster a; timeout 2s\n  \
             route path /x.Y/Z, header x-canary=\"1\", no header x-no -> cluster b; retries on unavailable (up to 1)\n  \
             route prefix / -> a 90%, b 10%\n"
        );
    }

    #[test]
    fn every_mistake_is_named_with_its_place() {
        let yaml = r#"
- name: v
  domains: ["*.a.*", "ok.com"]
  routes:
    - match: { prefix: nope, path: /x }
      route: { cluster: missing, weighted_clusters: [{name: a, weight: 0}] }
    - match: { headers: [{name: X-Up}, {name: y, exact: "1", present: false}] }
      route: {}
    - route: { weighted_clusters: [{name: a, weight: 0}, {name: a, weight: 0}] }
- name: v
  domains: [ok.com]
  routes: []
"#;
        let all = check(yaml).join("\n");
        for needle in [
            "domain \"*.a.*\" must be",
            "both prefix and path",
            "\"nope\" must start with `/`",
            "both cluster and weighted_clusters",
            "cluster \"missing\", which is not defined",
            "\"X-Up\" must be a lowercase",
            "needs `exact: VALUE`",
            "both absent and equal",
            "needs `cluster: NAME`",
            "weights add up to 0",
            "\"a\" is twice",
            "virtual host \"v\" is defined twice",
            "\"ok.com\" is in two virtual hosts",
            "has no routes",
            "virtual host \"v\", route 2",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
    }
}
