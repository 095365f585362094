//! The command line: flags for the common case (one listener, one cluster),
//! each with an environment variable, and the `healthcheck` subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use super::cluster::RetryOn;
use super::values::{AccessLogFormat, LbPolicy, Mode, Switch};

/// HTTP/2-aware balancing proxy for gRPC: every call goes to a backend picked
/// for that call, backends are found (and re-found) by DNS, and the admin
/// interface speaks Envoy's formats.
///
/// Flags configure one listener and one cluster; --config FILE describes any
/// number of each (flags then override the first listener and its cluster).
#[derive(Debug, Clone, Default, Parser)]
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
    /// Translate browsers' gRPC-Web calls (HTTP/1.1 or HTTP/2, binary or
    /// base64 text) to gRPC on the listener; same-origin pages only unless
    /// --cors-origin is given.
    #[arg(long, env = "PROXY_GRPC_WEB")]
    pub grpc_web: bool,
    /// Let pages of this origin call through gRPC-Web (CORS), e.g.
    /// https://app.example.com or http://localhost:*; repeat or separate
    /// with commas. Implies --grpc-web.
    #[arg(long = "cors-origin", env = "PROXY_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
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
    /// Export one span per call over OTLP/gRPC to this collector, e.g.
    /// http://otel-collector:4317 (the file's `traces:` has the other settings).
    #[arg(long, env = "PROXY_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// On SIGTERM or SIGINT, how long calls in flight may take to finish [default: 30s].
    #[arg(long, env = "PROXY_DRAIN_TIMEOUT", value_parser = common::parse_duration)]
    pub drain_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Subcommand)]
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
