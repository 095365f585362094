//! Configuration: the command line, the YAML file, and the validated [`Config`].
//!
//! Flags cover the common case (one listener, one cluster); the YAML file
//! (`--config`) describes the whole. When both are given, flags override the
//! file's first listener and the cluster it routes to. Everything is checked
//! before anything binds, and every problem is reported at once.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Deserializer};

/// HTTP/2-aware balancing proxy for gRPC: every call goes to a backend picked
/// for that call, backends are found (and re-found) by DNS, and the admin
/// interface speaks Envoy's formats.
///
/// Flags configure one listener and one cluster; --config FILE describes any
/// number of each (flags then override the first listener and its cluster).
#[derive(Debug, Default, Parser)]
#[command(name = "proxy", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// YAML configuration file (see docs/proxy.md).
    #[arg(long, short = 'c', env = "PROXY_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Load and check the configuration, print a summary, and exit (0 when valid).
    #[arg(long, env = "PROXY_VALIDATE")]
    pub validate: bool,
    /// Address of the proxy listener [default: 0.0.0.0:8000].
    #[arg(long, env = "PROXY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// `l7` balances every HTTP/2 request (call); `l4` balances TCP connections [default: l7].
    #[arg(long, env = "PROXY_MODE")]
    pub mode: Option<Mode>,
    /// Upstream HOST:PORT; a name is resolved to all its addresses, each a host. Repeatable.
    #[arg(
        long = "upstream",
        short = 'u',
        env = "PROXY_UPSTREAM",
        value_delimiter = ','
    )]
    pub upstreams: Vec<String>,
    /// Name of the cluster, as shown in /clusters and stats [default: backend].
    #[arg(long, env = "PROXY_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// How a host is picked for each call [default: least_request].
    #[arg(long, env = "PROXY_LB")]
    pub lb: Option<LbPolicy>,
    /// How often host names are resolved again [default: 5s].
    #[arg(long, env = "PROXY_DNS_REFRESH", value_parser = common::parse_duration)]
    pub dns_refresh: Option<Duration>,
    /// DNS server IP[:PORT] to ask instead of the system resolver. Repeatable.
    #[arg(
        long = "dns-resolver",
        env = "PROXY_DNS_RESOLVER",
        value_delimiter = ','
    )]
    pub dns_resolvers: Vec<String>,
    /// Deadline for opening a connection to a host [default: 1s].
    #[arg(long, env = "PROXY_CONNECT_TIMEOUT", value_parser = common::parse_duration)]
    pub connect_timeout: Option<Duration>,
    /// Turn on gRPC health checks at this interval (thresholds 2/2, timeout 1s).
    #[arg(long, env = "PROXY_HEALTH_CHECK_INTERVAL", value_parser = common::parse_duration)]
    pub health_check_interval: Option<Duration>,
    /// Turn on outlier detection: eject a host after this many consecutive failures.
    #[arg(long, env = "PROXY_OUTLIER_CONSECUTIVE_FAILURES")]
    pub outlier_consecutive_failures: Option<u32>,
    /// Retry on another host on: `reset`, `unavailable` (comma-separated).
    #[arg(long, env = "PROXY_RETRY_ON", value_delimiter = ',')]
    pub retry_on: Vec<RetryOn>,
    /// Certificate chain (PEM) for TLS on the listener; needs --tls-key.
    #[arg(long, env = "PROXY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "PROXY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) to verify the upstreams with: turns on TLS to them.
    #[arg(long, env = "PROXY_UPSTREAM_TLS_CA")]
    pub upstream_tls_ca: Option<PathBuf>,
    /// Name to verify the upstreams' certificates against [default: the upstream host].
    #[arg(
        long,
        env = "PROXY_UPSTREAM_TLS_SERVER_NAME",
        requires = "upstream_tls_ca"
    )]
    pub upstream_tls_server_name: Option<String>,
    /// Admin interface address, or `off` [default: 127.0.0.1:8001].
    #[arg(long, env = "PROXY_ADMIN", global = true)]
    pub admin: Option<String>,
    /// Access log to stdout: `on` or `off` [default: on].
    #[arg(long, env = "PROXY_ACCESS_LOG")]
    pub access_log: Option<Switch>,
    /// Access-log line format: `envoy` (Envoy's default) or `envoy_trace`
    /// (the same plus the W3C traceparent) [default: envoy].
    #[arg(long, env = "PROXY_ACCESS_LOG_FORMAT")]
    pub access_log_format: Option<AccessLogFormat>,
    /// Add an `x-request-id` (a UUID v4) to requests that have none, as
    /// Envoy does: `on` or `off` [default: on]. A client's own id is kept either way.
    #[arg(long, env = "PROXY_GENERATE_REQUEST_ID")]
    pub generate_request_id: Option<Switch>,
    /// Worker threads; 0 means one per CPU core [default: 0].
    #[arg(long, env = "PROXY_WORKERS")]
    pub workers: Option<usize>,
    /// On SIGTERM or SIGINT, how long calls in flight may take to finish [default: 30s].
    #[arg(long, env = "PROXY_DRAIN_TIMEOUT", value_parser = common::parse_duration)]
    pub drain_timeout: Option<Duration>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask a running proxy's admin `/ready`; exit 0 when it answers 200 (LIVE), 1 otherwise.
    ///
    /// For container HEALTHCHECKs in images that have no curl. The address
    /// comes from --admin / PROXY_ADMIN (or the config file) as usual.
    Healthcheck {
        /// How long to wait for the answer.
        #[arg(long, env = "PROXY_HEALTHCHECK_TIMEOUT", default_value = "2s", value_parser = common::parse_duration)]
        timeout: Duration,
    },
}

/// What a listener balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// HTTP/2 requests: each call goes to its own pick.
    #[default]
    L7,
    /// TCP connections: bytes are copied, every call of a connection lands on one host.
    L4,
}

/// How a host is picked. See [`crate::balance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum LbPolicy {
    RoundRobin,
    #[default]
    LeastRequest,
    Random,
}

/// The access log's line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// Envoy's default format, byte for byte.
    #[default]
    Envoy,
    /// Envoy's default format plus ` "%REQ(TRACEPARENT)%"` at the end.
    EnvoyTrace,
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl fmt::Display for LbPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LbPolicy::RoundRobin => "round_robin",
            LbPolicy::LeastRequest => "least_request",
            LbPolicy::Random => "random",
        })
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::L7 => "l7",
            Mode::L4 => "l4",
        })
    }
}

/// An upstream as configured: a name or an IP literal, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
}

impl Upstream {
    /// The address, when the host is an IP literal (a static host, never resolved).
    pub fn ip(&self) -> Option<SocketAddr> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl std::str::FromStr for Upstream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("upstream {s:?} must be HOST:PORT, e.g. backend:8080 or 10.0.0.5:8080");
        let (host, port) = s.trim().rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let valid_name = !host.is_empty()
            && host.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '[' | ']' | ':')
            });
        if !valid_name || port == 0 {
            return Err(bad());
        }
        Ok(Upstream {
            host: host.to_owned(),
            port,
        })
    }
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Admin interface, or `None` when turned off.
    pub admin: Option<SocketAddr>,
    /// Whether the access log goes to stdout.
    pub access_log: bool,
    pub access_log_format: AccessLogFormat,
    pub listeners: Vec<ListenerConfig>,
    pub clusters: Vec<ClusterConfig>,
    /// DNS servers to ask; empty means the system resolver (getaddrinfo).
    pub dns_resolvers: Vec<SocketAddr>,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Drain deadline after a shutdown signal.
    pub drain_timeout: Duration,
}

/// One listener: where it listens, how it balances, to which cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    #[serde(default = "default_listener_name")]
    pub name: String,
    #[serde(default = "default_listen")]
    pub address: SocketAddr,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default = "default_cluster_name")]
    pub cluster: String,
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
        deserialize_with = "opt_duration"
    )]
    pub stream_stall_timeout: Option<Duration>,
    /// PING each client connection this often; `off`: never.
    #[serde(
        default = "default_downstream_keepalive",
        deserialize_with = "opt_duration"
    )]
    pub keepalive_interval: Option<Duration>,
    /// A client connection that does not answer a PING in this long is closed.
    #[serde(
        default = "default_downstream_keepalive_timeout",
        deserialize_with = "duration"
    )]
    pub keepalive_timeout: Duration,
}

/// A listener's certificate chain and key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// TLS towards a cluster's hosts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    #[serde(default = "default_cluster_name")]
    pub name: String,
    #[serde(default)]
    pub upstreams: Vec<Upstream>,
    #[serde(default)]
    pub lb: LbPolicy,
    #[serde(default = "default_dns_refresh", deserialize_with = "duration")]
    pub dns_refresh: Duration,
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
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
    #[serde(default, deserialize_with = "opt_duration")]
    pub request_timeout: Option<Duration>,
    /// A call with no frame in either direction for this long is ended.
    /// None by default.
    #[serde(default, deserialize_with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// TLS to the hosts; cleartext HTTP/2 when absent.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// PING every host connection this often (Envoy's `connection_keepalive`);
    /// `off`: never. A new connection takes calls only once it answered one.
    #[serde(
        default = "default_upstream_keepalive",
        deserialize_with = "opt_duration"
    )]
    pub keepalive_interval: Option<Duration>,
    /// A host connection that does not answer a PING in this long is closed
    /// and its host leaves the rotation until a new connection answers.
    #[serde(
        default = "default_upstream_keepalive_timeout",
        deserialize_with = "duration"
    )]
    pub keepalive_timeout: Duration,
}

/// Active health checking with `grpc.health.v1.Health/Check` (L7), or a TCP
/// connect (L4-only clusters).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    #[serde(default = "default_hc_interval", deserialize_with = "duration")]
    pub interval: Duration,
    #[serde(default = "default_hc_timeout", deserialize_with = "duration")]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive UNAVAILABLE answers, resets or connection failures that eject.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// First ejection time; the n-th ejection lasts n times as long.
    #[serde(default = "default_base_ejection", deserialize_with = "duration")]
    pub base_ejection_time: Duration,
    #[serde(default = "default_max_ejection", deserialize_with = "duration")]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The host's connection or stream was lost before any response byte.
    Reset,
    /// The host answered UNAVAILABLE before any response byte was forwarded.
    Unavailable,
}

/// Retries. Attempts that provably never reached a host (connect failure,
/// REFUSED_STREAM, a stream above a GOAWAY's last stream id) are always
/// retried on another host, whatever this says.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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

/// `true`/`false`, or `on`/`off` as the flag spells it.
fn on_off<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OnOff {
        Bool(bool),
        Text(String),
    }
    match OnOff::deserialize(d)? {
        OnOff::Bool(b) => Ok(b),
        OnOff::Text(t) => match t.trim() {
            "on" | "true" | "yes" => Ok(true),
            "off" | "false" | "no" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "expected on or off, got {other:?}"
            ))),
        },
    }
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    match s.as_deref().map(str::trim) {
        None | Some("") | Some("off") | Some("none") => Ok(None),
        Some(s) => common::parse_duration(s)
            .map(|d| (!d.is_zero()).then_some(d))
            .map_err(serde::de::Error::custom),
    }
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
fn default_upstream_keepalive() -> Option<Duration> {
    Some(Duration::from_millis(500))
}
fn default_upstream_keepalive_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_listener_name() -> String {
    "ingress".into()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8000))
}
fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8001))
}
fn default_cluster_name() -> String {
    "backend".into()
}
fn default_dns_refresh() -> Duration {
    Duration::from_secs(5)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_true() -> bool {
    true
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    common::parse_duration(&s).map_err(serde::de::Error::custom)
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

impl ListenerConfig {
    /// A listener named `ingress` on `address`, sending to `cluster`.
    pub fn new(address: SocketAddr, mode: Mode, cluster: &str) -> Self {
        ListenerConfig {
            name: default_listener_name(),
            address,
            mode,
            cluster: cluster.into(),
            tls: None,
            generate_request_id: true,
            max_concurrent_streams: default_max_concurrent_streams(),
            per_connection_buffer_limit_bytes: default_connection_buffer(),
            stream_stall_timeout: default_stream_stall_timeout(),
            keepalive_interval: default_downstream_keepalive(),
            keepalive_timeout: default_downstream_keepalive_timeout(),
        }
    }
}

/// The file as written; turned into a [`Config`] by [`Config::load`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    admin: Option<String>,
    #[serde(default = "default_true", deserialize_with = "on_off")]
    access_log: bool,
    #[serde(default)]
    access_log_format: AccessLogFormat,
    #[serde(default)]
    listeners: Vec<ListenerConfig>,
    #[serde(default)]
    clusters: Vec<ClusterConfig>,
    #[serde(default)]
    dns: DnsFile,
    #[serde(default)]
    workers: usize,
    #[serde(default = "default_drain_timeout", deserialize_with = "duration")]
    drain_timeout: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsFile {
    #[serde(default)]
    resolvers: Vec<String>,
}

/// Everything wrong with a configuration, one problem per line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Reads `--config` if given, applies the flags over it, and validates.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let file: FileConfig =
                    serde_norway::from_str(&text).map_err(|e| ConfigError::Parse {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                Some(file)
            }
            None => None,
        };
        Self::merge(file, cli)
    }

    fn merge(file: Option<FileConfig>, cli: &Cli) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let from_file = file.is_some();
        let file = file.unwrap_or(FileConfig {
            admin: None,
            access_log: true,
            access_log_format: AccessLogFormat::default(),
            listeners: Vec::new(),
            clusters: Vec::new(),
            dns: DnsFile::default(),
            workers: 0,
            drain_timeout: default_drain_timeout(),
        });
        let mut listeners = file.listeners;
        let mut clusters = file.clusters;

        // Flags describe the first listener and the cluster it routes to.
        if listeners.is_empty() {
            let cluster = cli
                .cluster_name
                .clone()
                .or_else(|| clusters.first().map(|c| c.name.clone()))
                .unwrap_or_else(default_cluster_name);
            listeners.push(ListenerConfig::new(default_listen(), Mode::L7, &cluster));
        }
        if let Some(first) = listeners.first_mut() {
            if let Some(addr) = cli.listen {
                first.address = addr;
            }
            if let Some(mode) = cli.mode {
                first.mode = mode;
            }
            if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
                first.tls = Some(ListenerTls {
                    cert: cert.clone(),
                    key: key.clone(),
                });
            }
            if let Some(switch) = cli.generate_request_id {
                first.generate_request_id = switch == Switch::On;
            }
        }
        let target = listeners[0].cluster.clone();
        let flags_touch_cluster = !cli.upstreams.is_empty()
            || cli.upstream_tls_ca.is_some()
            || cli.health_check_interval.is_some()
            || cli.outlier_consecutive_failures.is_some()
            || !cli.retry_on.is_empty()
            || cli.lb.is_some()
            || cli.dns_refresh.is_some()
            || cli.connect_timeout.is_some()
            || cli.cluster_name.is_some();
        if flags_touch_cluster || clusters.is_empty() {
            let index = match clusters.iter().position(|c| c.name == target) {
                Some(i) => i,
                None => {
                    clusters.push(ClusterConfig::new(&target, Vec::new()));
                    clusters.len() - 1
                }
            };
            let cluster = &mut clusters[index];
            if let Some(name) = &cli.cluster_name {
                cluster.name = name.clone();
                listeners[0].cluster = name.clone();
            }
            if !cli.upstreams.is_empty() {
                cluster.upstreams.clear();
                for u in &cli.upstreams {
                    match u.parse() {
                        Ok(u) => cluster.upstreams.push(u),
                        Err(e) => problems.push(format!("--upstream: {e}")),
                    }
                }
            }
            if let Some(lb) = cli.lb {
                cluster.lb = lb;
            }
            if let Some(d) = cli.dns_refresh {
                cluster.dns_refresh = d;
            }
            if let Some(d) = cli.connect_timeout {
                cluster.connect_timeout = d;
            }
            if let Some(interval) = cli.health_check_interval {
                let hc = cluster
                    .health_check
                    .get_or_insert_with(HealthCheckConfig::default);
                hc.interval = interval;
            }
            if let Some(n) = cli.outlier_consecutive_failures {
                let od = cluster
                    .outlier_detection
                    .get_or_insert_with(OutlierConfig::default);
                od.consecutive_failures = n;
            }
            if !cli.retry_on.is_empty() {
                cluster.retry.retry_on = cli.retry_on.clone();
            }
            if let Some(ca) = &cli.upstream_tls_ca {
                cluster.tls = Some(UpstreamTls {
                    ca: ca.clone(),
                    server_name: cli.upstream_tls_server_name.clone(),
                });
            }
        }

        let admin_text = cli.admin.clone().or(file.admin);
        let admin = match admin_text.as_deref().map(str::trim) {
            None => Some(default_admin()),
            Some("off") | Some("none") | Some("") => None,
            Some(text) => match text.parse() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    problems.push(format!(
                        "admin address {text:?} must be IP:PORT (e.g. 127.0.0.1:8001) or `off`"
                    ));
                    None
                }
            },
        };

        let resolver_texts = if cli.dns_resolvers.is_empty() {
            file.dns.resolvers
        } else {
            cli.dns_resolvers.clone()
        };
        let mut dns_resolvers = Vec::new();
        for r in &resolver_texts {
            match parse_resolver(r) {
                Some(addr) => dns_resolvers.push(addr),
                None => problems.push(format!(
                    "DNS resolver {r:?} must be IP or IP:PORT (e.g. 10.0.0.2 or 127.0.0.1:5353)"
                )),
            }
        }

        let config = Config {
            admin,
            access_log: match cli.access_log {
                Some(Switch::On) => true,
                Some(Switch::Off) => false,
                None => file.access_log,
            },
            access_log_format: cli.access_log_format.unwrap_or(file.access_log_format),
            listeners,
            clusters,
            dns_resolvers,
            workers: cli.workers.unwrap_or(file.workers),
            drain_timeout: cli.drain_timeout.unwrap_or(file.drain_timeout),
        };
        problems.extend(config.problems(from_file));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Checks what serde and clap could not; returns every problem found.
    fn problems(&self, from_file: bool) -> Vec<String> {
        let mut problems = Vec::new();
        let mut names = std::collections::HashSet::new();
        for c in &self.clusters {
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
            if !(0.0..=100.0).contains(&c.retry.budget_percent) {
                problems.push(format!(
                    "cluster {:?}: retry.budget_percent must be 0-100",
                    c.name
                ));
            }
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
        let mut listener_names = std::collections::HashSet::new();
        let mut addrs = std::collections::HashSet::new();
        for l in &self.listeners {
            if !listener_names.insert(l.name.as_str()) {
                problems.push(format!("listener {:?} is defined twice", l.name));
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
            if l.keepalive_timeout.is_zero() {
                problems.push(format!(
                    "listener {:?}: keepalive_timeout must be more than zero",
                    l.name
                ));
            }
            if !names.contains(l.cluster.as_str()) {
                problems.push(format!(
                    "listener {:?} routes to cluster {:?}, which is not defined",
                    l.name, l.cluster
                ));
            }
        }
        if let Some(admin) = self.admin
            && admin.port() != 0
            && addrs.contains(&admin)
        {
            problems.push(format!(
                "the admin interface and a listener both use {admin}"
            ));
        }
        if self.drain_timeout.is_zero() {
            problems.push("drain_timeout must be more than zero".into());
        }
        problems
    }

    /// The cluster named `name`.
    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// A human summary, printed by `--validate`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for l in &self.listeners {
            let mut details = l.mode.to_string();
            if let Some(t) = &l.tls {
                details.push_str(&format!(", TLS with {}", t.cert.display()));
            }
            if l.mode == Mode::L7 && !l.generate_request_id {
                details.push_str(", no generated x-request-id");
            }
            out.push_str(&format!(
                "listener {} on {} ({details}) -> cluster {}\n",
                l.name, l.address, l.cluster
            ));
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
            }
        }
        for c in &self.clusters {
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
            let on: Vec<String> = c
                .retry
                .retry_on
                .iter()
                .map(|r| format!("{r:?}").to_lowercase())
                .collect();
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
        match self.admin {
            Some(a) => out.push_str(&format!("admin on {a}\n")),
            None => out.push_str("admin off\n"),
        }
        out.push_str(&format!(
            "access log {}, DNS {}, workers {}, drain timeout {}\n",
            if self.access_log { "on" } else { "off" },
            if self.dns_resolvers.is_empty() {
                "system resolver".to_owned()
            } else {
                self.dns_resolvers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            if self.workers == 0 {
                "one per core".to_owned()
            } else {
                self.workers.to_string()
            },
            common::format_duration(self.drain_timeout)
        ));
        out
    }
}

/// `IP` (port 53) or `IP:PORT`.
fn parse_resolver(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("proxy").chain(args.iter().copied())).expect("flags")
    }

    fn from_yaml(yaml: &str, args: &[&str]) -> Result<Config, ConfigError> {
        let file: FileConfig = serde_norway::from_str(yaml).map_err(|e| ConfigError::Parse {
            path: "test.yaml".into(),
            message: e.to_string(),
        })?;
        Config::merge(Some(file), &cli(args))
    }

    #[test]
    fn flags_alone_make_one_listener_and_one_cluster() {
        let config = Config::load(&cli(&[
            "--upstream",
            "backend:8080",
            "--lb",
            "least_request",
        ]))
        .expect("valid");
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].address, default_listen());
        assert_eq!(config.listeners[0].cluster, "backend");
        let cluster = config.cluster("backend").expect("cluster");
        assert_eq!(cluster.upstreams[0].host, "backend");
        assert_eq!(cluster.lb, LbPolicy::LeastRequest);
        assert_eq!(cluster.dns_refresh, Duration::from_secs(5));
        assert_eq!(config.admin, Some(default_admin()));
        assert!(config.access_log);
    }

    #[test]
    fn no_upstream_is_a_clear_error() {
        let err = Config::load(&cli(&[])).unwrap_err().to_string();
        assert!(err.contains("has no upstreams"), "{err}");
        assert!(err.contains("--upstream"), "{err}");
    }

    #[test]
    fn the_file_describes_everything_and_flags_override_it() {
        let yaml = r#"
admin: 0.0.0.0:9901
access_log: false
dns:
  resolvers: [127.0.0.1:5353]
listeners:
  - name: grpc
    address: 0.0.0.0:8000
    cluster: backend
  - name: tcp
    address: 0.0.0.0:8002
    mode: l4
    cluster: backend
clusters:
  - name: backend
    upstreams: [backend:8080, 10.0.0.9:8080]
    lb: random
    dns_refresh: 2s
"#;
        let config = from_yaml(yaml, &["--listen", "127.0.0.1:7000"]).expect("valid");
        assert_eq!(config.admin, Some("0.0.0.0:9901".parse().unwrap()));
        assert!(!config.access_log);
        assert_eq!(
            config.listeners[0].address,
            "127.0.0.1:7000".parse().unwrap()
        );
        assert_eq!(config.listeners[1].mode, Mode::L4);
        let cluster = config.cluster("backend").unwrap();
        assert_eq!(cluster.lb, LbPolicy::Random);
        assert_eq!(cluster.dns_refresh, Duration::from_secs(2));
        assert_eq!(
            cluster.upstreams[1].ip(),
            Some("10.0.0.9:8080".parse().unwrap())
        );
        assert_eq!(config.dns_resolvers, ["127.0.0.1:5353".parse().unwrap()]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let yaml = r#"
admin: nowhere
listeners:
  - name: a
    cluster: missing
clusters:
  - name: backend
    upstreams: []
    dns_refresh: 1ms
"#;
        let err = from_yaml(yaml, &[]).unwrap_err().to_string();
        for needle in [
            "admin address",
            "not defined",
            "no upstreams",
            "dns_refresh",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
    }

    #[test]
    fn failure_isolation_limits_have_safe_defaults_and_are_checked() {
        let config = from_yaml("clusters: [{upstreams: [b:1]}]", &[]).unwrap();
        let (l, c) = (&config.listeners[0], &config.clusters[0]);
        assert_eq!(l.max_concurrent_streams, 100);
        assert_eq!(l.per_connection_buffer_limit_bytes, 1 << 20);
        assert_eq!(l.stream_stall_timeout, Some(Duration::from_secs(30)));
        assert_eq!(l.keepalive_interval, Some(Duration::from_secs(60)));
        assert_eq!(c.lb, LbPolicy::LeastRequest);
        assert_eq!(c.keepalive_interval, Some(Duration::from_millis(500)));
        assert_eq!(c.keepalive_timeout, Duration::from_secs(1));
        let summary = config.summary();
        assert!(summary.contains("100 streams"), "{summary}");
        assert!(
            summary.contains("PING every 500ms (timeout 1s)"),
            "{summary}"
        );

        let yaml = r#"
listeners:
  - max_concurrent_streams: 7
    stream_stall_timeout: off
    keepalive_interval: off
clusters:
  - upstreams: [b:1]
    keepalive_interval: off
"#;
        let config = from_yaml(yaml, &[]).unwrap();
        assert_eq!(config.listeners[0].max_concurrent_streams, 7);
        assert_eq!(config.listeners[0].stream_stall_timeout, None);
        assert_eq!(config.listeners[0].keepalive_interval, None);
        assert_eq!(config.clusters[0].keepalive_interval, None);

        let yaml = r#"
listeners:
  - max_concurrent_streams: 0
    per_connection_buffer_limit_bytes: 10
clusters:
  - upstreams: [b:1]
    keepalive_timeout: 0s
"#;
        let err = from_yaml(yaml, &[]).unwrap_err().to_string();
        for needle in [
            "max_concurrent_streams",
            "per_connection_buffer_limit_bytes",
            "keepalive_timeout",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
    }

    #[test]
    fn typos_and_bad_values_name_the_place() {
        let err = from_yaml("clusters:\n  - name: b\n    upstrems: [x:1]\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstrems"), "{err}");
        let err = from_yaml("clusters:\n  - name: b\n    upstreams: [nohost]\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HOST:PORT"), "{err}");
        let err = from_yaml("clusters:\n  - name: b\n    lb: fastest\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("fastest"), "{err}");
    }

    #[test]
    fn access_log_takes_on_and_off_as_well_as_booleans() {
        let yaml = "access_log: off\nclusters:\n  - upstreams: [b:1]\n";
        assert!(!from_yaml(yaml, &[]).unwrap().access_log);
        let yaml = "access_log: true\nclusters:\n  - upstreams: [b:1]\n";
        assert!(from_yaml(yaml, &[]).unwrap().access_log);
        let err = from_yaml("access_log: maybe\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected on or off"), "{err}");
    }

    #[test]
    fn request_id_generation_is_on_unless_a_listener_or_the_flag_turns_it_off() {
        let yaml = "listeners:\n  - name: a\n  - name: b\n    address: 0.0.0.0:8001\n    generate_request_id: off\nclusters:\n  - upstreams: [b:1]\n";
        let config = from_yaml(yaml, &[]).unwrap();
        let generated: Vec<bool> = config
            .listeners
            .iter()
            .map(|l| l.generate_request_id)
            .collect();
        assert_eq!(generated, [true, false]);
        assert!(
            !config
                .summary()
                .contains("listener a on 0.0.0.0:8000 (l7, no")
        );
        assert!(
            config
                .summary()
                .contains("listener b on 0.0.0.0:8001 (l7, no generated x-request-id)"),
            "{}",
            config.summary()
        );
        let config = from_yaml(yaml, &["--generate-request-id", "off"]).unwrap();
        assert!(!config.listeners[0].generate_request_id);
        let config =
            Config::load(&cli(&["--upstream", "b:1", "--generate-request-id", "off"])).unwrap();
        assert!(!config.listeners[0].generate_request_id);
        assert!(Cli::try_parse_from(["proxy", "--generate-request-id", "maybe"]).is_err());
    }

    #[test]
    fn upstreams_parse_names_and_literals() {
        let u: Upstream = "backend:8080".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port, u.ip()), ("backend", 8080, None));
        let u: Upstream = "[::1]:9".parse().unwrap();
        assert_eq!(u.ip(), Some("[::1]:9".parse().unwrap()));
        assert!("backend".parse::<Upstream>().is_err());
        assert!("backend:0".parse::<Upstream>().is_err());
        assert!("a b:1".parse::<Upstream>().is_err());
    }
}
