//! The backend's command line and its validated [`Config`].

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use common::parse_duration;

/// gRPC backend of the per-call balancing demo.
///
/// Serves gateway.AliveService, helloworld.Greeter, gateway.EchoService,
/// grpc.health.v1.Health and server reflection, and names itself in the
/// response metadata `x-backend-id` of every call.
#[derive(Debug, Parser)]
#[command(name = "backend", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask a running backend's health service; exit 0 when SERVING, 1 otherwise.
    ///
    /// For container HEALTHCHECKs in images that have no curl.
    Healthcheck(HealthcheckArgs),
}

/// Flags of the server (the default command).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on for gRPC (HTTP/2 cleartext).
    #[arg(long, env = "BACKEND_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Name sent as `x-backend-id` on every call [default: the hostname].
    #[arg(long, env = "BACKEND_ID")]
    pub id: Option<String>,
    /// Latency added to every AliveService, Greeter and Echo call, in milliseconds.
    #[arg(long, env = "BACKEND_DELAY_MS", default_value_t = 0)]
    pub delay_ms: u64,
    /// Share of AliveService, Greeter and Echo calls answered UNAVAILABLE (0.0-1.0).
    #[arg(long, env = "BACKEND_FAIL_RATE", default_value_t = 0.0)]
    pub fail_rate: f64,
    /// On SIGTERM or SIGINT, how long calls in flight may take to finish.
    #[arg(long, env = "BACKEND_GRACE_PERIOD", default_value = "10s", value_parser = parse_duration)]
    pub grace_period: Duration,
    /// Worker threads; 0 means one per CPU this process may run on. With one,
    /// the server runs single-threaded, which batches its writes.
    #[arg(long, env = "BACKEND_WORKERS", default_value_t = 0)]
    pub workers: usize,
}

/// Flags of `backend healthcheck`.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// Backend to ask [default: 127.0.0.1 at the port of --listen].
    #[arg(long, env = "BACKEND_HEALTHCHECK_ADDR")]
    pub addr: Option<String>,
    /// Service name to ask about; empty means the whole server.
    #[arg(long, env = "BACKEND_HEALTHCHECK_SERVICE", default_value = "")]
    pub service: String,
    /// How long to wait for the answer.
    #[arg(long, env = "BACKEND_HEALTHCHECK_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// What the server needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The name sent as `x-backend-id`.
    pub id: String,
    /// Latency added to every application call.
    pub delay: Duration,
    /// Share of application calls answered UNAVAILABLE.
    pub fail_rate: f64,
    /// Drain deadline after a shutdown signal.
    pub grace_period: Duration,
}

/// A configuration that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--fail-rate must be between 0.0 and 1.0, got {0}")]
    FailRate(f64),
    #[error("--id must be 1 to 128 visible ASCII characters (it is sent as a header), got {0:?}")]
    Id(String),
}

impl Config {
    /// A configuration with no added latency or failures, named `id`.
    pub fn named(id: impl Into<String>) -> Self {
        Config {
            id: id.into(),
            delay: Duration::ZERO,
            fail_rate: 0.0,
            grace_period: Duration::from_secs(10),
        }
    }

    /// Checks the flags and fills in defaults (the hostname for `--id`).
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let id = match &args.id {
            Some(id) => id.clone(),
            None => gethostname::gethostname().to_string_lossy().into_owned(),
        };
        let config = Config {
            id,
            delay: Duration::from_millis(args.delay_ms),
            fail_rate: args.fail_rate,
            grace_period: args.grace_period,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks values that the type system does not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.fail_rate) {
            return Err(ConfigError::FailRate(self.fail_rate));
        }
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 128
            && self.id.bytes().all(|b| b.is_ascii_graphic());
        if !id_ok {
            return Err(ConfigError::Id(self.id.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("backend").chain(args.iter().copied()))
            .expect("flags parse");
        Config::from_args(&cli.serve)
    }

    #[test]
    fn defaults_name_the_backend_after_the_host() {
        let config = parse(&[]).expect("defaults are valid");
        assert!(!config.id.is_empty());
        assert_eq!(config.fail_rate, 0.0);
        assert_eq!(config.grace_period, Duration::from_secs(10));
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let err = parse(&["--fail-rate", "1.5"]).unwrap_err();
        assert!(err.to_string().contains("--fail-rate"), "{err}");
        let err = parse(&["--id", "two words"]).unwrap_err();
        assert!(err.to_string().contains("--id"), "{err}");
    }

    #[test]
    fn durations_take_units() {
        let config = parse(&["--grace-period", "250ms", "--delay-ms", "7"]).expect("valid");
        assert_eq!(config.grace_period, Duration::from_millis(250));
        assert_eq!(config.delay, Duration::from_millis(7));
    }
}
