//! Clusters as configured: upstreams, balancing, health checks, outlier
//! detection, retries, limits and timeouts, each cluster on its own.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use super::values::{LbPolicy, Upstream, duration, opt_duration, ser_duration, ser_opt_duration};

/// TLS towards a cluster's hosts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM file of the CA certificates that sign the hosts' certificates.
    pub ca: PathBuf,
    /// The name the hosts' certificates are checked against (and sent as SNI);
    /// the upstream's host name when absent.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// One cluster: its upstreams and how calls are spread over their hosts.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    #[serde(default = "default_cluster_name")]
    pub name: String,
    #[serde(default)]
    pub upstreams: Vec<Upstream>,
    #[serde(default)]
    pub lb: LbPolicy,
    #[serde(
        default = "default_dns_refresh",
        deserialize_with = "duration",
        serialize_with = "ser_duration"
    )]
    pub dns_refresh: Duration,
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "duration",
        serialize_with = "ser_duration"
    )]
    pub connect_timeout: Duration,
    /// Active gRPC health checking; off when absent.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Passive ejection of failing hosts; off when absent.
    #[serde(default)]
    pub outlier_detection: Option<OutlierConfig>,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub circuit_breakers: CircuitBreakers,
    /// Upper bound on any call's duration (a shorter `grpc-timeout` wins).
    /// None by default: long-lived streams are never cut by a default.
    #[serde(
        default,
        deserialize_with = "opt_duration",
        serialize_with = "ser_opt_duration"
    )]
    pub request_timeout: Option<Duration>,
    /// A call with no frame in either direction for this long is ended.
    /// None by default.
    #[serde(
        default,
        deserialize_with = "opt_duration",
        serialize_with = "ser_opt_duration"
    )]
    pub idle_timeout: Option<Duration>,
    /// TLS to the hosts; cleartext HTTP/2 when absent.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// PING every host connection this often (Envoy's `connection_keepalive`);
    /// `off`: never. A new connection takes calls only once it answered one.
    #[serde(
        default = "default_upstream_keepalive",
        deserialize_with = "opt_duration",
        serialize_with = "ser_opt_duration"
    )]
    pub keepalive_interval: Option<Duration>,
    /// A host connection that does not answer a PING in this long is closed
    /// and its host leaves the rotation until a new connection answers.
    #[serde(
        default = "default_upstream_keepalive_timeout",
        deserialize_with = "duration",
        serialize_with = "ser_duration"
    )]
    pub keepalive_timeout: Duration,
}

/// Active health checking with `grpc.health.v1.Health/Check` (L7), or a TCP
/// connect (L4-only clusters).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    #[serde(
        default = "default_hc_interval",
        deserialize_with = "duration",
        serialize_with = "ser_duration"
    )]
    pub interval: Duration,
    #[serde(
        default = "default_hc_timeout",
        deserialize_with = "duration",
        serialize_with = "ser_duration"
    )]
    pub timeout: Duration,
    /// Consecutive passes that bring an unhealthy host back.
    #[serde(default = "default_two")]
    pub healthy_threshold: u32,
    /// Consecutive failures that take a healthy host out.
    #[serde(default = "default_two")]
    pub unhealthy_threshold: u32,
    /// The service name asked about; empty means the whole server.
    #[serde(default)]
    pub service: String,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            interval: default_hc_interval(),
            timeout: default_hc_timeout(),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            service: String::new(),
        }
    }
}

/// Passive outlier detection: consecutive failures eject a host.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive UNAVAILABLE answers, resets or connection failures that eject.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// First ejection time; the n-th ejection lasts n times as long.
    #[serde(
        default = "default_base_ejection",
        deserialize_with = "duration",
        serialize_with = "ser_duration"
    )]
    pub base_ejection_time: Duration,
    #[serde(
        default = "default_max_ejection",
        deserialize_with = "duration",
        serialize_with = "ser_duration"
    )]
    pub max_ejection_time: Duration,
    /// At most this share of the cluster is ejected at once (at least one host may be).
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: default_consecutive_failures(),
            base_ejection_time: default_base_ejection(),
            max_ejection_time: default_max_ejection(),
            max_ejection_percent: default_max_ejection_percent(),
        }
    }
}

/// When a failed attempt may be tried again on another host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The host's connection or stream was lost before any response byte.
    Reset,
    /// The host answered UNAVAILABLE before any response byte was forwarded.
    Unavailable,
}

impl fmt::Display for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RetryOn::Reset => "reset",
            RetryOn::Unavailable => "unavailable",
        })
    }
}

/// What is wrong with a retry policy (a cluster's `retry` or a route's
/// `retry_policy`), each line starting with the key.
pub(super) fn retry_problems(retry: &RetryConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if !(0.0..=100.0).contains(&retry.budget_percent) {
        problems.push("budget_percent must be 0-100".to_owned());
    }
    problems
}

/// Retries. Attempts that provably never reached a host (connect failure,
/// REFUSED_STREAM, a stream above a GOAWAY's last stream id) are always
/// retried on another host, whatever this says.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default)]
    pub retry_on: Vec<RetryOn>,
    /// Retries per call for the `retry_on` conditions.
    #[serde(default = "default_two")]
    pub num_retries: u32,
    /// Request bytes kept for replay; a call that sent more is never retried.
    #[serde(default = "default_retry_buffer")]
    pub buffer_limit: usize,
    /// Retries in flight may be at most this share of the calls in flight...
    #[serde(default = "default_budget_percent")]
    pub budget_percent: f64,
    /// ...or this many, whichever is larger.
    #[serde(default = "default_min_retry_concurrency")]
    pub min_retry_concurrency: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            retry_on: Vec::new(),
            num_retries: 2,
            buffer_limit: default_retry_buffer(),
            budget_percent: default_budget_percent(),
            min_retry_concurrency: default_min_retry_concurrency(),
        }
    }
}

/// Envoy's circuit breakers: past a limit, calls fail at once with
/// UNAVAILABLE instead of queueing without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    #[serde(default = "default_limit")]
    pub max_connections: u64,
    #[serde(default = "default_limit")]
    pub max_pending_requests: u64,
    #[serde(default = "default_limit")]
    pub max_requests: u64,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers {
            max_connections: default_limit(),
            max_pending_requests: default_limit(),
            max_requests: default_limit(),
        }
    }
}

fn default_hc_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_hc_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_two() -> u32 {
    2
}
fn default_consecutive_failures() -> u32 {
    5
}
fn default_base_ejection() -> Duration {
    Duration::from_secs(30)
}
fn default_max_ejection() -> Duration {
    Duration::from_secs(300)
}
fn default_max_ejection_percent() -> u32 {
    50
}
fn default_retry_buffer() -> usize {
    64 << 10
}
fn default_budget_percent() -> f64 {
    20.0
}
fn default_min_retry_concurrency() -> u32 {
    // Envoy uses 3; a crashed host fails every call it carries at once, and
    // each of those deserves its retry, so the floor is higher here.
    10
}
fn default_limit() -> u64 {
    1024
}

fn default_upstream_keepalive() -> Option<Duration> {
    Some(Duration::from_millis(500))
}
fn default_upstream_keepalive_timeout() -> Duration {
    Duration::from_secs(1)
}

pub(super) fn default_cluster_name() -> String {
    "backend".into()
}
fn default_dns_refresh() -> Duration {
    Duration::from_secs(5)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(1)
}

impl ClusterConfig {
    /// A cluster named `name` over `upstreams`, everything else default.
    pub fn new(name: &str, upstreams: Vec<Upstream>) -> Self {
        ClusterConfig {
            name: name.into(),
            upstreams,
            lb: LbPolicy::default(),
            dns_refresh: default_dns_refresh(),
            connect_timeout: default_connect_timeout(),
            health_check: None,
            outlier_detection: None,
            retry: RetryConfig::default(),
            circuit_breakers: CircuitBreakers::default(),
            request_timeout: None,
            idle_timeout: None,
            tls: None,
            keepalive_interval: default_upstream_keepalive(),
            keepalive_timeout: default_upstream_keepalive_timeout(),
        }
    }
}

/// Everything wrong with the clusters; `from_file` picks the hint for a
/// cluster without upstreams. Adds every name to `names`.
pub(super) fn problems<'a>(
    clusters: &'a [ClusterConfig],
    from_file: bool,
    names: &mut HashSet<&'a str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for c in clusters {
        if !names.insert(c.name.as_str()) {
            problems.push(format!("cluster {:?} is defined twice", c.name));
        }
        if c.name.is_empty() || c.name.contains("::") || c.name.contains(char::is_whitespace) {
            problems.push(format!(
                "cluster name {:?} must be non-empty, without spaces or `::`",
                c.name
            ));
        }
        if c.upstreams.is_empty() {
            let hint = if from_file {
                "list them under `upstreams:`"
            } else {
                "give --upstream HOST:PORT (or a config file with --config)"
            };
            problems.push(format!("cluster {:?} has no upstreams: {hint}", c.name));
        }
        if c.dns_refresh < Duration::from_millis(100) {
            problems.push(format!(
                "cluster {:?}: dns_refresh must be at least 100ms",
                c.name
            ));
        }
        if c.connect_timeout.is_zero() {
            problems.push(format!(
                "cluster {:?}: connect_timeout must be more than zero",
                c.name
            ));
        }
        if let Some(hc) = &c.health_check {
            if hc.interval < Duration::from_millis(10) || hc.timeout.is_zero() {
                problems.push(format!(
                        "cluster {:?}: health_check interval must be at least 10ms and timeout more than zero",
                        c.name
                    ));
            }
            if hc.healthy_threshold == 0 || hc.unhealthy_threshold == 0 {
                problems.push(format!(
                    "cluster {:?}: health_check thresholds must be at least 1",
                    c.name
                ));
            }
        }
        if let Some(od) = &c.outlier_detection {
            if od.consecutive_failures == 0 {
                problems.push(format!(
                    "cluster {:?}: outlier_detection.consecutive_failures must be at least 1",
                    c.name
                ));
            }
            if od.base_ejection_time.is_zero() || od.max_ejection_time < od.base_ejection_time {
                problems.push(format!(
                        "cluster {:?}: outlier_detection needs 0 < base_ejection_time <= max_ejection_time",
                        c.name
                    ));
            }
            if od.max_ejection_percent > 100 {
                problems.push(format!(
                    "cluster {:?}: outlier_detection.max_ejection_percent must be 0-100",
                    c.name
                ));
            }
        }
        problems.extend(
            retry_problems(&c.retry)
                .into_iter()
                .map(|p| format!("cluster {:?}: retry.{p}", c.name)),
        );
        if let Some(tls) = &c.tls {
            if let Err(e) = crate::tls::client_config(&tls.ca) {
                problems.push(format!("cluster {:?}: upstream TLS: {e}", c.name));
            }
            if let Some(name) = &tls.server_name
                && rustls::pki_types::ServerName::try_from(name.as_str()).is_err()
            {
                problems.push(format!(
                    "cluster {:?}: upstream TLS server_name {name:?} is not a valid name",
                    c.name
                ));
            }
        }
        if c.keepalive_timeout.is_zero() {
            problems.push(format!(
                "cluster {:?}: keepalive_timeout must be more than zero",
                c.name
            ));
        }
        let cb = &c.circuit_breakers;
        if cb.max_connections == 0 || cb.max_pending_requests == 0 || cb.max_requests == 0 {
            problems.push(format!(
                "cluster {:?}: circuit_breakers limits must be at least 1",
                c.name
            ));
        }
    }
    problems
}

/// The `--validate` lines of the clusters.
pub(super) fn summary(clusters: &[ClusterConfig], out: &mut String) {
    for c in clusters {
        let ups: Vec<String> = c
            .upstreams
            .iter()
            .map(|u| {
                if u.ip().is_some() {
                    format!("{u} (static)")
                } else {
                    format!("{u} (DNS every {})", common::format_duration(c.dns_refresh))
                }
            })
            .collect();
        out.push_str(&format!(
            "cluster {}: {}, lb {}, connect timeout {}\n",
            c.name,
            ups.join(", "),
            c.lb,
            common::format_duration(c.connect_timeout)
        ));
        if let Some(tls) = &c.tls {
            out.push_str(&format!(
                "  TLS to hosts, CA {}{}\n",
                tls.ca.display(),
                tls.server_name
                    .as_ref()
                    .map_or_else(String::new, |n| format!(", server name {n}"))
            ));
        }
        match &c.health_check {
            Some(hc) => out.push_str(&format!(
                "  health checks every {} (timeout {}, unhealthy after {}, healthy after {}{})\n",
                common::format_duration(hc.interval),
                common::format_duration(hc.timeout),
                hc.unhealthy_threshold,
                hc.healthy_threshold,
                if hc.service.is_empty() {
                    String::new()
                } else {
                    format!(", service {}", hc.service)
                }
            )),
            None => out.push_str("  health checks off\n"),
        }
        match &c.outlier_detection {
                Some(od) => out.push_str(&format!(
                    "  outlier detection: eject after {} failures for {} (max {}, at most {}% of hosts)\n",
                    od.consecutive_failures,
                    common::format_duration(od.base_ejection_time),
                    common::format_duration(od.max_ejection_time),
                    od.max_ejection_percent
                )),
                None => out.push_str("  outlier detection off\n"),
            }
        let on: Vec<String> = c.retry.retry_on.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
                "  retries: refused streams always; {} (up to {}, buffer {} bytes, budget {}% / min {})\n",
                if on.is_empty() {
                    "nothing else".to_owned()
                } else {
                    on.join(", ")
                },
                c.retry.num_retries,
                c.retry.buffer_limit,
                c.retry.budget_percent,
                c.retry.min_retry_concurrency
            ));
        let cb = &c.circuit_breakers;
        out.push_str(&format!(
                "  limits: {} connections, {} pending, {} requests; request timeout {}, idle timeout {}\n",
                cb.max_connections,
                cb.max_pending_requests,
                cb.max_requests,
                c.request_timeout
                    .map_or_else(|| "none".to_owned(), common::format_duration),
                c.idle_timeout
                    .map_or_else(|| "none".to_owned(), common::format_duration),
            ));
        out.push_str(&match c.keepalive_interval {
            Some(i) => format!(
                "  host connections: PING every {} (timeout {})\n",
                common::format_duration(i),
                common::format_duration(c.keepalive_timeout)
            ),
            None => "  host connections: no PING\n".to_owned(),
        });
    }
}
