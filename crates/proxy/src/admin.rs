//! The admin interface: Envoy's `/clusters`, `/stats`, `/stats/prometheus` and
//! `/ready`, and a page for people at `/`.
//!
//! The text formats follow Envoy's byte for byte where scripts depend on them
//! (`cluster::host:port::stat::value`), so tooling written for an Envoy front
//! proxy works unchanged against this one.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use arc_swap::ArcSwap;

use crate::cluster::{Cluster, health};
use crate::config::Mode;
use crate::forward::ListenerStats;
use crate::reload::{ReloadStats, Snapshot};

/// A listener, as the admin interface reports it.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub name: String,
    pub address: SocketAddr,
    pub mode: Mode,
    /// `cluster NAME` for one catch-all route, else `routes`.
    pub routes: String,
    pub stats: Arc<ListenerStats>,
    /// The listener serves gRPC-Web (and HTTP/1.1).
    pub grpc_web: bool,
    pub tls: bool,
}

/// What the admin interface reads.
#[derive(Debug)]
pub struct AdminState {
    /// The configuration in force, its clusters and listeners.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub reload: Arc<ReloadStats>,
    /// Span export counters, when traces are on.
    pub traces: Option<Arc<crate::trace::TraceStats>>,
    /// False once draining has begun (or before start-up finished).
    pub ready: Arc<AtomicBool>,
    pub started: Instant,
    pub access_log_dropped: Arc<crate::cluster::Stat>,
}

/// The admin router.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/clusters", get(clusters))
        .route("/config_dump", get(config_dump))
        .route("/listeners", get(listeners))
        .route("/stats", get(stats))
        .route("/stats/prometheus", get(prometheus))
        .route("/ready", get(ready))
        .route("/grpc-web", get(grpc_web_page))
        .route("/help", get(help))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct Format {
    format: Option<String>,
}

/// `/stats` options, as Envoy has them.
#[derive(Debug, Deserialize)]
struct StatsQuery {
    format: Option<String>,
    /// Only stats whose name matches this regular expression.
    filter: Option<String>,
    /// Only stats that were ever written (non-zero, or a histogram with values).
    usedonly: Option<String>,
    /// With `format=json`, each histogram's buckets too: `cumulative` (counts
    /// at or below each bound) or `disjoint` (counts within each bucket), so
    /// that a page can compute the percentiles of the last minutes from two
    /// readings.
    histogram_buckets: Option<String>,
}

impl Format {
    fn json(&self) -> bool {
        self.format.as_deref() == Some("json")
    }
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], body).into_response()
}

async fn index() -> Html<&'static str> {
    Html(include_str!("admin/index.html"))
}

/// A page that calls the backends from the browser with gRPC-Web, through
/// the first listener that serves it (`?target=` names another).
async fn grpc_web_page() -> Html<&'static str> {
    Html(include_str!("admin/grpc-web.html"))
}

async fn help() -> Response {
    text(
        "admin commands are:\n  \
         /: a page for people: per host its share of calls, calls/s and p50/p99 charts, health; per method calls/s, errors, p99; routes and their split\n  \
         /clusters: upstream cluster status (?format=json)\n  \
         /config_dump: the configuration in force (JSON), its version and load time, the last reload\n  \
         /grpc-web: a page that calls the backends from this browser with gRPC-Web, through the first listener that serves it (?target=URL)\n  \
         /listeners: print listener info (?format=json)\n  \
         /help: print out list of admin commands\n  \
         /ready: print server state, return 200 if LIVE, otherwise return 503\n  \
         /stats: print server stats (?format=json, ?filter=REGEX, ?usedonly, ?histogram_buckets=cumulative|disjoint)\n  \
         /stats/prometheus: print server stats in prometheus format\n"
            .to_owned(),
    )
}

async fn ready(State(state): State<Arc<AdminState>>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, text("LIVE\n".into())).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, text("DRAINING\n".into())).into_response()
    }
}

/// Host statistics in Envoy's order, with the counter/gauge distinction.
fn host_stats(host: &crate::cluster::Host) -> [(&'static str, u64, bool); 8] {
    let s = &host.stats;
    [
        ("cx_active", s.cx_active.get(), true),
        ("cx_connect_fail", s.cx_connect_fail.get(), false),
        ("cx_total", s.cx_total.get(), false),
        ("rq_active", s.rq_active.get(), true),
        ("rq_error", s.rq_error.get(), false),
        ("rq_success", s.rq_success.get(), false),
        ("rq_timeout", s.rq_timeout.get(), false),
        ("rq_total", s.rq_total.get(), false),
    ]
}

/// Envoy's `/clusters` text.
pub fn clusters_text(clusters: &[Arc<Cluster>]) -> String {
    let mut out = String::new();
    for cluster in clusters {
        let name = cluster.name();
        let cb = &cluster.config.circuit_breakers;
        let _ = writeln!(out, "{name}::observability_name::{name}");
        // Envoy prints its limits for both priorities; this proxy has one set.
        for priority in ["default_priority", "high_priority"] {
            let _ = writeln!(
                out,
                "{name}::{priority}::max_connections::{}",
                cb.max_connections
            );
            let _ = writeln!(
                out,
                "{name}::{priority}::max_pending_requests::{}",
                cb.max_pending_requests
            );
            let _ = writeln!(out, "{name}::{priority}::max_requests::{}", cb.max_requests);
            let _ = writeln!(
                out,
                "{name}::{priority}::max_retries::{}",
                cluster.config.retry.min_retry_concurrency
            );
        }
        let _ = writeln!(out, "{name}::added_via_api::false");
        for host in cluster.all_hosts() {
            let addr = host.addr;
            for (stat, value, _) in host_stats(&host) {
                let _ = writeln!(out, "{name}::{addr}::{stat}::{value}");
            }
            let _ = writeln!(out, "{name}::{addr}::hostname::{}", host.hostname);
            let _ = writeln!(
                out,
                "{name}::{addr}::health_flags::{}",
                health::describe(host.flags())
            );
            let _ = writeln!(out, "{name}::{addr}::weight::1");
            let _ = writeln!(out, "{name}::{addr}::region::");
            let _ = writeln!(out, "{name}::{addr}::zone::");
            let _ = writeln!(out, "{name}::{addr}::sub_zone::");
            let _ = writeln!(out, "{name}::{addr}::canary::false");
            let _ = writeln!(out, "{name}::{addr}::priority::0");
            let _ = writeln!(out, "{name}::{addr}::success_rate::-1");
            let _ = writeln!(out, "{name}::{addr}::local_origin_success_rate::-1");
        }
    }
    out
}

/// Envoy's `/clusters?format=json` shape.
pub fn clusters_json(clusters: &[Arc<Cluster>]) -> serde_json::Value {
    let statuses: Vec<_> = clusters
        .iter()
        .map(|cluster| {
            let hosts: Vec<_> = cluster
                .all_hosts()
                .iter()
                .map(|host| {
                    let stats: Vec<_> = host_stats(host)
                        .iter()
                        .map(|(name, value, gauge)| {
                            if *gauge {
                                json!({ "name": name, "type": "GAUGE", "value": value.to_string() })
                            } else {
                                json!({ "name": name, "value": value.to_string() })
                            }
                        })
                        .collect();
                    let flags = host.flags();
                    let mut health = json!({
                        "eds_health_status": if flags & health::PENDING_DYNAMIC_REMOVAL != 0 {
                            "DRAINING"
                        } else {
                            "HEALTHY"
                        }
                    });
                    if flags & health::FAILED_ACTIVE_HC != 0 {
                        health["failed_active_health_check"] = json!(true);
                    }
                    if flags & health::FAILED_OUTLIER_CHECK != 0 {
                        health["failed_outlier_check"] = json!(true);
                    }
                    if flags & health::PENDING_DYNAMIC_REMOVAL != 0 {
                        health["pending_dynamic_removal"] = json!(true);
                    }
                    json!({
                        "address": { "socket_address": {
                            "address": host.addr.ip().to_string(),
                            "port_value": host.addr.port(),
                        }},
                        "stats": stats,
                        "health_status": health,
                        "health_flags": health::describe(flags),
                        "weight": 1,
                        "hostname": host.hostname,
                        "locality": {},
                    })
                })
                .collect();
            json!({
                "name": cluster.name(),
                "observability_name": cluster.name(),
                "lb_policy": cluster.config.lb.to_string(),
                "added_via_api": false,
                "host_statuses": hosts,
            })
        })
        .collect();
    json!({ "cluster_statuses": statuses })
}

async fn clusters(State(state): State<Arc<AdminState>>, Query(format): Query<Format>) -> Response {
    let snapshot = state.snapshot.load();
    if format.json() {
        axum::Json(clusters_json(&snapshot.clusters)).into_response()
    } else {
        text(clusters_text(&snapshot.clusters))
    }
}

/// One statistic, with what both `/stats` and Prometheus need.
struct Sample {
    /// Envoy's dotted name, e.g. `cluster.backend.upstream_rq_total`.
    dotted: String,
    /// Prometheus family, e.g. `envoy_cluster_upstream_rq_total`.
    family: String,
    labels: Vec<(&'static str, String)>,
    counter: bool,
    help: &'static str,
    value: u64,
}

fn samples(state: &AdminState) -> Vec<Sample> {
    let snapshot = state.snapshot.load();
    let mut out = Vec::new();
    let mut push = |scope: &str,
                    prefix: &str,
                    labels: Vec<(&'static str, String)>,
                    stat: &str,
                    counter: bool,
                    help: &'static str,
                    value: u64| {
        // Prometheus reserves `_total` for counters: counters get it, and a
        // gauge that Envoy names `..._total` (membership_total) drops it.
        let family_stat = match (counter, stat.strip_suffix("_total")) {
            (true, None) => format!("{stat}_total"),
            (false, Some(stem)) => format!("{stem}_current"),
            _ => stat.to_owned(),
        };
        out.push(Sample {
            dotted: if prefix.is_empty() {
                format!("{scope}.{stat}")
            } else {
                format!("{scope}.{prefix}.{stat}")
            },
            family: format!("envoy_{scope}_{}", family_stat.replace('.', "_")),
            labels,
            counter,
            help,
            value,
        });
    };
    for cluster in &snapshot.clusters {
        let s = &cluster.stats;
        let name = cluster.name();
        let label = || vec![("envoy_cluster_name", name.to_owned())];
        let hosts = cluster.hosts();
        let healthy = hosts.iter().filter(|h| h.is_available()).count() as u64;
        for (stat, counter, help, value) in [
            (
                "membership_change",
                true,
                "Host set changes",
                s.membership_change.get(),
            ),
            ("membership_healthy", false, "Hosts in rotation", healthy),
            (
                "membership_total",
                false,
                "Hosts in the cluster",
                hosts.len() as u64,
            ),
            (
                "update_attempt",
                true,
                "DNS refreshes attempted",
                s.update_attempt.get(),
            ),
            (
                "update_failure",
                true,
                "DNS refreshes with a failed lookup",
                s.update_failure.get(),
            ),
            (
                "update_success",
                true,
                "DNS refreshes that succeeded",
                s.update_success.get(),
            ),
            (
                "upstream_cx_active",
                false,
                "Open upstream connections",
                s.upstream_cx_active.get(),
            ),
            (
                "upstream_cx_connect_fail",
                true,
                "Failed upstream connection attempts",
                s.upstream_cx_connect_fail.get(),
            ),
            (
                "upstream_cx_none_healthy",
                true,
                "Calls with no host to send to",
                s.upstream_cx_none_healthy.get(),
            ),
            (
                "upstream_cx_overflow",
                true,
                "Connections refused by the max_connections circuit breaker",
                s.upstream_cx_overflow.get(),
            ),
            (
                "upstream_cx_keepalive_timeout",
                true,
                "Host connections closed because a PING went unanswered",
                s.upstream_cx_keepalive_timeout.get(),
            ),
            (
                "upstream_rq_pending_active",
                false,
                "Calls waiting for a connection or stream",
                s.upstream_rq_pending_active.get(),
            ),
            (
                "upstream_rq_cancel_held",
                false,
                "Host streams of calls that ended before their host answered, kept open until it does (at most 1 s)",
                s.upstream_rq_cancel_held.get(),
            ),
            (
                "upstream_rq_cancel_unsent",
                true,
                "Calls that ended before their HEADERS were written to the host: never sent",
                s.upstream_rq_cancel_unsent.get(),
            ),
            (
                "upstream_rq_pending_overflow",
                true,
                "Calls refused by the max_requests or max_pending_requests circuit breakers",
                s.upstream_rq_pending_overflow.get(),
            ),
            (
                "upstream_rq_retry",
                true,
                "Attempts retried on another host",
                s.upstream_rq_retry.get(),
            ),
            (
                "upstream_rq_retry_success",
                true,
                "Retried calls that then succeeded",
                s.upstream_rq_retry_success.get(),
            ),
            (
                "upstream_rq_retry_overflow",
                true,
                "Retries refused by the retry budget",
                s.upstream_rq_retry_overflow.get(),
            ),
            (
                "upstream_rq_retry_limit_exceeded",
                true,
                "Retries refused because num_retries was reached",
                s.upstream_rq_retry_limit_exceeded.get(),
            ),
            (
                "health_check.attempt",
                true,
                "Active health checks made",
                s.health_check_attempt.get(),
            ),
            (
                "health_check.success",
                true,
                "Active health checks passed",
                s.health_check_success.get(),
            ),
            (
                "health_check.failure",
                true,
                "Active health checks failed",
                s.health_check_failure.get(),
            ),
            (
                "health_check.healthy",
                false,
                "Hosts passing active health checks",
                hosts
                    .iter()
                    .filter(|h| h.flags() & health::FAILED_ACTIVE_HC == 0)
                    .count() as u64,
            ),
            (
                "outlier_detection.ejections_active",
                false,
                "Hosts ejected now",
                s.outlier_ejections_active.get(),
            ),
            (
                "outlier_detection.ejections_enforced_total",
                true,
                "Ejections made",
                s.outlier_ejections_enforced_total.get(),
            ),
            (
                "outlier_detection.ejections_overflow",
                true,
                "Ejections refused by max_ejection_percent",
                s.outlier_ejections_overflow.get(),
            ),
            (
                "upstream_cx_total",
                true,
                "Upstream connections opened",
                s.upstream_cx_total.get(),
            ),
            (
                "upstream_rq_active",
                false,
                "Upstream calls in flight",
                s.upstream_rq_active.get(),
            ),
            (
                "upstream_rq_error",
                true,
                "Upstream calls that failed (5xx-class gRPC status, reset, timeout)",
                s.upstream_rq_error.get(),
            ),
            (
                "upstream_rq_success",
                true,
                "Upstream calls that succeeded",
                s.upstream_rq_success.get(),
            ),
            (
                "upstream_rq_timeout",
                true,
                "Upstream calls that passed their deadline",
                s.upstream_rq_timeout.get(),
            ),
            (
                "upstream_rq_total",
                true,
                "Upstream calls sent",
                s.upstream_rq_total.get(),
            ),
        ] {
            push("cluster", name, label(), stat, counter, help, value);
        }
    }
    for l in &snapshot.listeners {
        let s = &l.stats;
        let label = || vec![("envoy_http_conn_manager_prefix", l.name.clone())];
        for (stat, counter, help, value) in [
            (
                "downstream_cx_active",
                false,
                "Open client connections",
                s.downstream_cx_active.get(),
            ),
            (
                "downstream_cx_protocol_error",
                true,
                "Client connections refused or failed for protocol errors",
                s.downstream_cx_protocol_error.get(),
            ),
            (
                "downstream_cx_total",
                true,
                "Client connections accepted",
                s.downstream_cx_total.get(),
            ),
            (
                "downstream_rq_2xx",
                true,
                "Client requests answered 2xx",
                s.downstream_rq_2xx.get(),
            ),
            (
                "downstream_rq_4xx",
                true,
                "Client requests answered 4xx",
                s.downstream_rq_4xx.get(),
            ),
            (
                "downstream_rq_5xx",
                true,
                "Client requests answered 5xx",
                s.downstream_rq_5xx.get(),
            ),
            (
                "downstream_rq_active",
                false,
                "Client requests in flight",
                s.downstream_rq_active.get(),
            ),
            (
                "downstream_rq_rx_reset",
                true,
                "Client requests the client reset or abandoned",
                s.downstream_rq_rx_reset.get(),
            ),
            (
                "downstream_rq_timeout",
                true,
                "Client requests that passed their grpc-timeout",
                s.downstream_rq_timeout.get(),
            ),
            (
                "downstream_rq_stalled",
                true,
                "Client requests reset because the client gave no flow-control room for stream_stall_timeout",
                s.downstream_rq_stalled.get(),
            ),
            (
                "downstream_rq_reset_before_upstream",
                true,
                "Client requests reset by the client before any host was asked",
                s.downstream_rq_reset_before_upstream.get(),
            ),
            (
                "downstream_cx_premature_reset",
                true,
                "Client connections closed for resetting most of their streams within 1s (rapid reset)",
                s.downstream_cx_premature_reset.get(),
            ),
            (
                "downstream_cx_keepalive_timeout",
                true,
                "Client connections closed because a PING went unanswered",
                s.downstream_cx_keepalive_timeout.get(),
            ),
            (
                "downstream_rq_total",
                true,
                "Client requests received",
                s.downstream_rq_total.get(),
            ),
            (
                "no_route",
                true,
                "Client requests that matched no route (UNIMPLEMENTED, or 404)",
                s.no_route.get(),
            ),
            (
                "grpc_web.calls",
                true,
                "gRPC-Web calls received (HTTP/1.1 or HTTP/2)",
                s.web.calls.get(),
            ),
            (
                "grpc_web.text_calls",
                true,
                "gRPC-Web calls in the base64 text variant",
                s.web.text_calls.get(),
            ),
            (
                "grpc_web.malformed",
                true,
                "gRPC-Web requests refused as malformed (bad base64, bad frames): INTERNAL",
                s.web.malformed.get(),
            ),
            (
                "grpc_web.too_large",
                true,
                "gRPC-Web requests over max_request_bytes: RESOURCE_EXHAUSTED",
                s.web.too_large.get(),
            ),
            (
                "grpc_web.streaming_refused",
                true,
                "gRPC-Web requests with more than one message: UNIMPLEMENTED",
                s.web.streaming_refused.get(),
            ),
            (
                "grpc_web.bridges_active",
                false,
                "gRPC-Web bridges open (one per client connection with gRPC-Web calls, closed after 5s idle over HTTP/1.1)",
                s.web.bridges_active.get(),
            ),
            (
                "http1.requests",
                true,
                "HTTP/1.1 requests received",
                s.web.http1_requests.get(),
            ),
            (
                "http1.refused",
                true,
                "HTTP/1.1 requests that are not gRPC-Web, answered 415",
                s.web.http1_refused.get(),
            ),
            (
                "cors.preflight",
                true,
                "CORS preflights answered by the proxy",
                s.web.cors_preflight.get(),
            ),
            (
                "cors.origin_valid",
                true,
                "Cross-origin requests from an allowed origin",
                s.web.cors_origin_valid.get(),
            ),
            (
                "cors.origin_invalid",
                true,
                "Cross-origin requests refused (origin not allowed): 403",
                s.web.cors_origin_invalid.get(),
            ),
        ] {
            push("http", &l.name, label(), stat, counter, help, value);
        }
    }
    push(
        "server",
        "",
        Vec::new(),
        "live",
        false,
        "1 while serving, 0 while draining",
        u64::from(state.ready.load(Ordering::Relaxed)),
    );
    push(
        "server",
        "",
        Vec::new(),
        "uptime",
        false,
        "Seconds since start",
        state.started.elapsed().as_secs(),
    );
    let r = &state.reload;
    for (stat, counter, help, value) in [
        (
            "update_attempt",
            true,
            "Configuration reloads attempted (SIGHUP, file change)",
            r.update_attempt.get(),
        ),
        (
            "update_success",
            true,
            "Configuration reloads applied",
            r.update_success.get(),
        ),
        (
            "update_rejected",
            true,
            "Configuration reloads refused (invalid file; the running configuration stays)",
            r.update_rejected.get(),
        ),
        (
            "version",
            false,
            "Version of the configuration in force: 1 at start, +1 per applied reload",
            snapshot.version,
        ),
    ] {
        push("config", "", Vec::new(), stat, counter, help, value);
    }
    if let Some(t) = &state.traces {
        for (stat, help, value) in [
            (
                "spans_exported",
                "Spans the collector accepted",
                t.spans_exported.get(),
            ),
            (
                "spans_dropped",
                "Spans dropped: the queue was full (collector slow or away) or their export failed",
                t.spans_dropped.get(),
            ),
            (
                "export_failures",
                "Span exports that failed or timed out",
                t.export_failures.get(),
            ),
        ] {
            push("traces", "", Vec::new(), stat, true, help, value);
        }
    }
    push(
        "access_log",
        "",
        Vec::new(),
        "dropped",
        true,
        "Access log lines dropped because stdout could not keep up",
        state.access_log_dropped.get(),
    );
    for cluster in &snapshot.clusters {
        for (service, method, m) in cluster.methods.all() {
            let labels = || {
                vec![
                    ("envoy_cluster_name", cluster.name().to_owned()),
                    ("envoy_grpc_bridge_service", service.clone()),
                    ("envoy_grpc_bridge_method", method.clone()),
                ]
            };
            let dotted =
                |stat: &str| format!("cluster.{}.grpc.{service}.{method}.{stat}", cluster.name());
            for (stat, help, value) in [
                ("total", "gRPC calls per method", m.total.get()),
                (
                    "success",
                    "gRPC calls per method that ended with grpc-status 0",
                    m.success.get(),
                ),
                (
                    "failure",
                    "gRPC calls per method that ended with another grpc-status, or none",
                    m.failure.get(),
                ),
            ] {
                out.push(Sample {
                    dotted: dotted(stat),
                    family: if stat == "total" {
                        "envoy_cluster_grpc_total".into()
                    } else {
                        format!("envoy_cluster_grpc_{stat}_total")
                    },
                    labels: labels(),
                    counter: true,
                    help,
                    value,
                });
            }
            // Only the codes seen, as Envoy's gRPC statistics filter does.
            for (code, n) in m.status.iter().enumerate().filter(|(_, n)| n.get() > 0) {
                let mut labels = labels();
                labels.push(("grpc_status", code.to_string()));
                out.push(Sample {
                    dotted: dotted(&code.to_string()),
                    family: "envoy_cluster_grpc_status_total".into(),
                    labels,
                    counter: true,
                    help: "gRPC calls per method and grpc-status",
                    value: n.get(),
                });
            }
        }
    }
    out
}

/// A latency histogram, as `/stats` and `/stats/prometheus` report it.
struct HistogramSample {
    /// Envoy's dotted name, e.g. `cluster.backend.upstream_rq_time`.
    dotted: String,
    /// Prometheus family, e.g. `envoy_cluster_upstream_rq_time`.
    family: &'static str,
    labels: Vec<(&'static str, String)>,
    help: &'static str,
    values: crate::histogram::Snapshot,
}

fn histograms(state: &AdminState) -> Vec<HistogramSample> {
    let snapshot = state.snapshot.load();
    let mut out = Vec::new();
    for cluster in &snapshot.clusters {
        let name = cluster.name();
        let s = &cluster.stats;
        for (stat, family, help, h) in [
            (
                "upstream_rq_time",
                "envoy_cluster_upstream_rq_time",
                "Milliseconds from sending a call to a host to its complete answer",
                &s.upstream_rq_time,
            ),
            (
                "upstream_rq_first_byte_time",
                "envoy_cluster_upstream_rq_first_byte_time",
                "Milliseconds from sending a call to a host to its answer's first byte",
                &s.upstream_rq_first_byte_time,
            ),
        ] {
            out.push(HistogramSample {
                dotted: format!("cluster.{name}.{stat}"),
                family,
                labels: vec![("envoy_cluster_name", name.to_owned())],
                help,
                values: h.snapshot(),
            });
        }
        for host in cluster.all_hosts() {
            for (stat, family, help, h) in [
                (
                    "upstream_rq_time",
                    "envoy_cluster_host_upstream_rq_time",
                    "Milliseconds from sending a call to this host to its complete answer",
                    &host.stats.rq_time,
                ),
                (
                    "upstream_rq_first_byte_time",
                    "envoy_cluster_host_upstream_rq_first_byte_time",
                    "Milliseconds from sending a call to this host to its answer's first byte",
                    &host.stats.first_byte_time,
                ),
            ] {
                out.push(HistogramSample {
                    dotted: format!("cluster.{name}.host.{}.{stat}", host.addr),
                    family,
                    labels: vec![
                        ("envoy_cluster_name", name.to_owned()),
                        ("host", host.addr.to_string()),
                        ("hostname", host.hostname.clone()),
                    ],
                    help,
                    values: h.snapshot(),
                });
            }
        }
        for (service, method, m) in cluster.methods.all() {
            out.push(HistogramSample {
                dotted: format!("cluster.{name}.grpc.{service}.{method}.upstream_rq_time"),
                family: "envoy_cluster_grpc_upstream_rq_time",
                labels: vec![
                    ("envoy_cluster_name", name.to_owned()),
                    ("envoy_grpc_bridge_service", service),
                    ("envoy_grpc_bridge_method", method),
                ],
                help: "Milliseconds per gRPC call of a method, as the proxy saw it",
                values: m.rq_time.snapshot(),
            });
        }
    }
    for l in &snapshot.listeners {
        out.push(HistogramSample {
            dotted: format!("http.{}.downstream_rq_time", l.name),
            family: "envoy_http_downstream_rq_time",
            labels: vec![("envoy_http_conn_manager_prefix", l.name.clone())],
            help: "Milliseconds from a client's request to the end of its answer",
            values: l.stats.downstream_rq_time.snapshot(),
        });
    }
    out
}

/// Envoy's quantile text: `P0(nan,1.2) P25(nan,1.5) ...`, or `No recorded values`.
fn quantiles_text(h: &crate::histogram::Snapshot) -> String {
    if h.count() == 0 {
        return "No recorded values".into();
    }
    crate::histogram::QUANTILES
        .iter()
        .map(|&q| {
            let v = h.quantile_ms(q).unwrap_or(0.0);
            format!("P{}(nan,{})", trim(q * 100.0), trim(v))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A number without needless decimals: `25`, `99.9`, `1.05`.
fn trim(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() {
        "0".into()
    } else {
        s.to_owned()
    }
}

async fn stats(State(state): State<Arc<AdminState>>, Query(q): Query<StatsQuery>) -> Response {
    let filter = match q.filter.as_deref().filter(|f| !f.is_empty()) {
        Some(f) => match regex::Regex::new(f) {
            Ok(r) => Some(r),
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    text(format!("invalid filter regex {f:?}: {e}\n")),
                )
                    .into_response();
            }
        },
        None => None,
    };
    let used_only = q.usedonly.is_some();
    let keep = |name: &str, used: bool| {
        filter.as_ref().is_none_or(|r| r.is_match(name)) && (used || !used_only)
    };
    let mut all = samples(&state);
    all.retain(|s| keep(&s.dotted, s.value != 0));
    all.sort_by(|a, b| a.dotted.cmp(&b.dotted));
    let mut hists = histograms(&state);
    hists.retain(|h| keep(&h.dotted, h.values.count() > 0));
    hists.sort_by(|a, b| a.dotted.cmp(&b.dotted));
    if q.format.as_deref() == Some("json") {
        let buckets = match q.histogram_buckets.as_deref() {
            None => None,
            Some(kind @ ("cumulative" | "disjoint")) => Some(kind.to_owned()),
            Some(other) => {
                return (
                    StatusCode::BAD_REQUEST,
                    text(format!(
                        "histogram_buckets {other:?}: give cumulative or disjoint\n"
                    )),
                )
                    .into_response();
            }
        };
        let mut stats: Vec<_> = all
            .iter()
            .map(|s| json!({ "name": s.dotted, "value": s.value }))
            .collect();
        let computed: Vec<_> = hists
            .iter()
            .map(|h| {
                let values: Vec<_> = crate::histogram::QUANTILES
                    .iter()
                    .map(|&q| json!({ "interval": null, "cumulative": h.values.quantile_ms(q) }))
                    .collect();
                let mut entry =
                    json!({ "name": h.dotted, "values": values, "count": h.values.count() });
                if let Some(kind) = &buckets {
                    let mut running = 0;
                    let listed: Vec<_> = h
                        .values
                        .counts
                        .iter()
                        .enumerate()
                        .map(|(i, &n)| {
                            running += n;
                            let upper = crate::histogram::BOUNDS_US
                                .get(i)
                                .map(|&us| us as f64 / 1000.0);
                            let count = if kind == "cumulative" { running } else { n };
                            json!({ "upper_bound": upper, "count": count })
                        })
                        .collect();
                    entry["buckets"] = json!(listed);
                    entry["sum"] = json!(h.values.sum_us as f64 / 1000.0);
                }
                entry
            })
            .collect();
        let supported: Vec<f64> = crate::histogram::QUANTILES
            .iter()
            .map(|q| q * 100.0)
            .collect();
        stats.push(json!({ "histograms": {
            "supported_quantiles": supported,
            "computed_quantiles": computed,
        }}));
        return axum::Json(json!({ "stats": stats })).into_response();
    }
    let mut out = String::new();
    for s in all {
        let _ = writeln!(out, "{}: {}", s.dotted, s.value);
    }
    for h in hists {
        let _ = writeln!(out, "{}: {}", h.dotted, quantiles_text(&h.values));
    }
    text(out)
}

/// Escapes a Prometheus label value.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition format (0.0.4).
pub fn prometheus_text(state: &AdminState) -> String {
    let mut all = samples(state);
    for cluster in &state.snapshot.load().clusters {
        for host in cluster.all_hosts() {
            for (stat, value, gauge) in host_stats(&host) {
                let family = if gauge || stat.ends_with("_total") {
                    format!("envoy_cluster_host_{stat}")
                } else {
                    format!("envoy_cluster_host_{stat}_total")
                };
                all.push(Sample {
                    dotted: String::new(),
                    family,
                    labels: vec![
                        ("envoy_cluster_name", cluster.name().to_owned()),
                        ("host", host.addr.to_string()),
                        ("hostname", host.hostname.clone()),
                    ],
                    counter: !gauge,
                    help: "Per-host statistic, as in /clusters",
                    value,
                });
            }
        }
    }
    // Each family once, its samples together.
    all.sort_by(|a, b| a.family.cmp(&b.family));
    let mut out = String::new();
    let mut last = String::new();
    for s in &all {
        if s.family != last {
            let _ = writeln!(out, "# HELP {} {}", s.family, s.help);
            let _ = writeln!(
                out,
                "# TYPE {} {}",
                s.family,
                if s.counter { "counter" } else { "gauge" }
            );
            last.clone_from(&s.family);
        }
        out.push_str(&s.family);
        if !s.labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in s.labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{k}=\"{}\"", label_value(v));
            }
            out.push('}');
        }
        let _ = writeln!(out, " {}", s.value);
    }
    let mut hists = histograms(state);
    hists.sort_by(|a, b| a.family.cmp(b.family));
    let mut last = "";
    for h in &hists {
        if h.family != last {
            let _ = writeln!(out, "# HELP {} {}", h.family, h.help);
            let _ = writeln!(out, "# TYPE {} histogram", h.family);
            last = h.family;
        }
        let labels: String = h
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\",", label_value(v)))
            .collect();
        for (le, n) in h.values.prometheus_buckets() {
            let _ = writeln!(out, "{}_bucket{{{labels}le=\"{le}\"}} {n}", h.family);
        }
        let count = h.values.count();
        let _ = writeln!(out, "{}_bucket{{{labels}le=\"+Inf\"}} {count}", h.family);
        let labels = labels.trim_end_matches(',');
        let _ = writeln!(
            out,
            "{}_sum{{{labels}}} {}",
            h.family,
            h.values.sum_us as f64 / 1000.0
        );
        let _ = writeln!(out, "{}_count{{{labels}}} {count}", h.family);
    }
    out
}

async fn prometheus(State(state): State<Arc<AdminState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        prometheus_text(&state),
    )
        .into_response()
}

/// RFC 3339 in UTC, to the second.
fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `/config_dump`: the configuration in force (every key, defaults filled
/// in), its version and load time, and how the last reload went.
pub fn config_dump_json(state: &AdminState) -> serde_json::Value {
    let snapshot = state.snapshot.load();
    let last = state.reload.last().map(|u| {
        json!({
            "result": if u.success { "success" } else { "rejected" },
            "at": rfc3339(u.at),
            "trigger": u.why,
            "problems": u.problems,
        })
    });
    json!({
        "version": snapshot.version,
        "loaded_at": rfc3339(snapshot.loaded_at),
        "source": snapshot.config.path().map(|p| p.display().to_string()),
        "last_update": last,
        "config": serde_json::to_value(&snapshot.config).unwrap_or_default(),
    })
}

async fn config_dump(State(state): State<Arc<AdminState>>) -> Response {
    axum::Json(config_dump_json(&state)).into_response()
}

/// Envoy's `/listeners`: `name::address` per listener, or its JSON form.
async fn listeners(State(state): State<Arc<AdminState>>, Query(format): Query<Format>) -> Response {
    let snapshot = state.snapshot.load();
    if format.json() {
        let statuses: Vec<_> = snapshot
            .listeners
            .iter()
            .map(|l| {
                json!({
                    "name": l.name,
                    "local_address": {"socket_address": {
                        "address": l.address.ip().to_string(),
                        "port_value": l.address.port(),
                    }},
                    "mode": l.mode.to_string(),
                    "routes": l.routes,
                    "grpc_web": l.grpc_web,
                    "tls": l.tls,
                })
            })
            .collect();
        return axum::Json(json!({ "listener_statuses": statuses })).into_response();
    }
    let mut out = String::new();
    for l in &snapshot.listeners {
        let _ = writeln!(out, "{}::{}", l.name, l.address);
    }
    text(out)
}
