//! Configuration: the command line, the YAML file, and the validated [`Config`].
//!
//! Flags cover the common case (one listener, one cluster); the YAML file
//! (`--config`) describes the whole. When both are given, flags override the
//! file's first listener and the cluster it routes to. Everything is checked
//! before anything binds, and every problem is reported at once. The same
//! load runs again on a live reload ([`crate::reload`]).
//!
//! Each section has its file: [`cli`] (flags), [`listener`], [`route`]
//! (what a route matches and where it sends), [`cluster`], and [`values`]
//! (modes, policies, durations).

pub mod cli;
pub mod cluster;
pub mod grpc_web;
pub mod listener;
pub mod route;
pub mod traces;
pub mod values;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use cli::{Cli, Command};
pub use cluster::{
    CircuitBreakers, ClusterConfig, HealthCheckConfig, OutlierConfig, RetryConfig, RetryOn,
    UpstreamTls,
};
pub use grpc_web::{CorsConfig, GrpcWebConfig};
pub use listener::{ListenerConfig, ListenerTls};
pub use route::{
    HeaderMatch, RouteAction, RouteConfig, RouteMatch, VirtualHostConfig, WeightedCluster,
};
pub use traces::TraceConfig;
pub use values::{AccessLogFormat, LbPolicy, Mode, Switch, Upstream};

use values::{duration, on_off, ser_duration};

/// The whole validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Admin interface, or `None` when turned off.
    pub admin: Option<SocketAddr>,
    /// Whether the access log goes to stdout.
    pub access_log: bool,
    pub access_log_format: AccessLogFormat,
    pub listeners: Vec<ListenerConfig>,
    pub clusters: Vec<ClusterConfig>,
    /// DNS servers to ask; empty means the system resolver (getaddrinfo).
    /// Written as the file has it: `dns: {resolvers: [...]}`.
    #[serde(rename = "dns", serialize_with = "ser_dns")]
    pub dns_resolvers: Vec<SocketAddr>,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Drain deadline after a shutdown signal.
    #[serde(serialize_with = "ser_duration")]
    pub drain_timeout: Duration,
    /// One span per call over OTLP; off when `None`.
    pub traces: Option<TraceConfig>,
    /// The command line and file this came from, when it named a file:
    /// what a reload reads again.
    #[serde(skip)]
    pub source: Option<Source>,
}

/// Where a configuration loaded from a file came from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The command line (its flags apply over the file on every reload).
    pub cli: Cli,
    /// A fingerprint of the file's content as read: a reload is due when
    /// the file no longer has it.
    pub fingerprint: u64,
}

/// A fingerprint of a configuration file's content.
pub fn fingerprint(text: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

fn ser_dns<S: serde::Serializer>(resolvers: &[SocketAddr], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(1))?;
    map.serialize_entry("resolvers", resolvers)?;
    map.end()
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8001))
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_true() -> bool {
    true
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
    #[serde(default)]
    traces: Option<TraceConfig>,
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
        let mut read = None;
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                read = Some(fingerprint(text.as_bytes()));
                let file: FileConfig =
                    serde_norway::from_str(&text).map_err(|e| ConfigError::Parse {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                Some(file)
            }
            None => None,
        };
        let mut config = Self::merge(file, cli)?;
        config.source = read.map(|fingerprint| Source {
            cli: cli.clone(),
            fingerprint,
        });
        Ok(config)
    }

    /// The file a reload reads, if the configuration came from one.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.source.as_ref().and_then(|s| s.cli.config.as_deref())
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
            traces: None,
        });
        let mut listeners = file.listeners;
        let mut clusters = file.clusters;

        // Flags describe the first listener and the cluster it routes to.
        if listeners.is_empty() {
            let cluster = cli
                .cluster_name
                .clone()
                .or_else(|| clusters.first().map(|c| c.name.clone()))
                .unwrap_or_else(cluster::default_cluster_name);
            listeners.push(ListenerConfig::new(
                listener::default_listen(),
                Mode::L7,
                &cluster,
            ));
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
            if cli.grpc_web || !cli.cors_origins.is_empty() {
                let web = first.grpc_web.get_or_insert_with(GrpcWebConfig::default);
                if !cli.cors_origins.is_empty() {
                    web.cors = Some(CorsConfig::new(cli.cors_origins.clone()));
                }
            }
        }
        listener::normalize(&mut listeners, &mut problems);
        let target = listeners[0]
            .first_cluster()
            .map_or_else(cluster::default_cluster_name, str::to_owned);
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
                listeners[0].rename_cluster(&target, name);
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
            traces: match (&cli.otlp_endpoint, file.traces) {
                (Some(endpoint), Some(mut t)) => {
                    t.otlp_endpoint.clone_from(endpoint);
                    Some(t)
                }
                (Some(endpoint), None) => Some(TraceConfig::new(endpoint)),
                (None, t) => t,
            },
            source: None,
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
        let mut names = HashSet::new();
        problems.extend(cluster::problems(&self.clusters, from_file, &mut names));
        problems.extend(listener::problems(&self.listeners, &names));
        if let Some(admin) = self.admin
            && admin.port() != 0
            && self.listeners.iter().any(|l| l.address == admin)
        {
            problems.push(format!(
                "the admin interface and a listener both use {admin}"
            ));
        }
        if let Some(t) = &self.traces {
            problems.extend(t.problems());
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
        listener::summary(&self.listeners, &mut out);
        cluster::summary(&self.clusters, &mut out);
        if let Some(t) = &self.traces {
            out.push_str(&t.summary());
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
    use clap::Parser;

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
        assert_eq!(config.listeners[0].address, listener::default_listen());
        assert_eq!(config.listeners[0].only_cluster(), Some("backend"));
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
    fn traces_are_off_unless_configured_and_checked_when_they_are() {
        let config = from_yaml("clusters: [{upstreams: [b:1]}]", &[]).unwrap();
        assert_eq!(config.traces, None);
        let yaml =
            "traces: {otlp_endpoint: 'http://collector:4317'}\nclusters: [{upstreams: [b:1]}]\n";
        let t = from_yaml(yaml, &[]).unwrap().traces.unwrap();
        assert_eq!(t.max_queue_size, 2048);
        assert_eq!(t.scheduled_delay, Duration::from_secs(1));
        let t = from_yaml(yaml, &["--otlp-endpoint", "http://other:4317"])
            .unwrap()
            .traces
            .unwrap();
        assert_eq!(t.otlp_endpoint, "http://other:4317");
        let bad = "traces: {otlp_endpoint: 'collector:4317', max_queue_size: 4, max_export_batch_size: 8}\nclusters: [{upstreams: [b:1]}]\n";
        let err = from_yaml(bad, &[]).unwrap_err().to_string();
        assert!(err.contains("http://HOST:PORT"), "{err}");
        assert!(err.contains("must not exceed max_queue_size"), "{err}");
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
