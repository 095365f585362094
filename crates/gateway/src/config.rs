//! The gateway's command line and its validated [`Config`].

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use common::parse_duration;
use http::Uri;

/// REST gateway of the per-call balancing demo.
///
/// `GET /alive` calls gateway.AliveService/GetStatus over one shared gRPC
/// channel (one HTTP/2 connection) and answers {"status":true} with the
/// answering backend's name in the `x-backend-id` header.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Address to listen on for HTTP/1.1.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "0.0.0.0:3000")]
    pub listen: SocketAddr,
    /// The gRPC server to call: the balancing proxy, or a backend directly.
    #[arg(
        long,
        env = "GATEWAY_UPSTREAM",
        default_value = "http://front-proxy:8000"
    )]
    pub upstream: String,
    /// Deadline of each call, sent upstream as grpc-timeout.
    #[arg(long, env = "GATEWAY_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// On SIGTERM or SIGINT, how long requests in flight may take to finish.
    #[arg(long, env = "GATEWAY_GRACE_PERIOD", default_value = "10s", value_parser = parse_duration)]
    pub grace_period: Duration,
    /// Worker threads; 0 means one per CPU this process may run on, 1 a
    /// single-threaded runtime.
    #[arg(long, env = "GATEWAY_WORKERS", default_value_t = 0)]
    pub workers: usize,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask a running gateway's `/healthz`; exit 0 when it answers 200, 1 otherwise.
    ///
    /// For container HEALTHCHECKs in images that have no curl. Asks
    /// 127.0.0.1 at the port of --listen.
    Healthcheck {
        /// How long to wait for the answer.
        #[arg(long, env = "GATEWAY_HEALTHCHECK_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

/// What the gateway needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// `http://host:port` of the gRPC server.
    pub upstream: Uri,
    /// Deadline of each upstream call.
    pub timeout: Duration,
    /// Drain deadline after a shutdown signal.
    pub grace_period: Duration,
}

/// A configuration that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--upstream must look like http://host:port, got {0:?}")]
    Upstream(String),
    #[error("--timeout must be more than zero")]
    Timeout,
}

impl Config {
    /// A configuration calling `upstream` with the default deadlines.
    pub fn new(upstream: &str) -> Result<Self, ConfigError> {
        Self::from_parts(upstream, Duration::from_secs(1), Duration::from_secs(10))
    }

    /// Checks the flags.
    pub fn from_args(cli: &Cli) -> Result<Self, ConfigError> {
        Self::from_parts(&cli.upstream, cli.timeout, cli.grace_period)
    }

    fn from_parts(
        upstream: &str,
        timeout: Duration,
        grace_period: Duration,
    ) -> Result<Self, ConfigError> {
        let uri: Uri = upstream
            .parse()
            .map_err(|_| ConfigError::Upstream(upstream.to_owned()))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(ConfigError::Upstream(upstream.to_owned()));
        }
        if timeout.is_zero() {
            return Err(ConfigError::Timeout);
        }
        Ok(Config {
            upstream: uri,
            timeout,
            grace_period,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("gateway").chain(args.iter().copied()))
            .expect("flags parse");
        Config::from_args(&cli)
    }

    #[test]
    fn defaults_point_at_the_front_proxy() {
        let config = parse(&[]).expect("defaults are valid");
        assert_eq!(config.upstream, "http://front-proxy:8000");
        assert_eq!(config.timeout, Duration::from_secs(1));
    }

    #[test]
    fn bad_upstreams_and_timeouts_are_refused() {
        assert!(matches!(
            parse(&["--upstream", "front-proxy:8000"]),
            Err(ConfigError::Upstream(_))
        ));
        assert!(matches!(
            parse(&["--upstream", "ftp://x:1"]),
            Err(ConfigError::Upstream(_))
        ));
        assert!(matches!(
            parse(&["--timeout", "0s"]),
            Err(ConfigError::Timeout)
        ));
    }
}
