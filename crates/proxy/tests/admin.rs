//! The admin interface: Envoy's formats, readiness, the page, and the access
//! log line of a real call.

#![allow(clippy::unwrap_used)] // Tests panic on purpose.

mod support;

use proto::gateway::echo_service_client::EchoServiceClient;
use proxy::config::Mode;
use support::{TestProxy, backends, config, echo, upstreams};

#[tokio::test]
async fn clusters_text_and_json_follow_envoy() {
    let backends = backends(2).await;
    let proxy = TestProxy::start(config(&upstreams(&backends), Mode::L7)).await;
    let mut client = EchoServiceClient::new(proxy.channel().await);
    for _ in 0..4 {
        echo(&mut client, "x").await.unwrap();
    }

    let (status, text) = proxy.admin_get("/clusters").await;
    assert_eq!(status, 200);
    let host = backends[0].addr();
    let expected = [
        "cx_active::1",
        "cx_connect_fail::0",
        "cx_total::1",
        "rq_active::0",
        "rq_error::0",
        "rq_success::2",
        "rq_timeout::0",
        "rq_total::2",
        "hostname::127.0.0.1",
        "health_flags::healthy",
        "weight::1",
    ];
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("backend::{host}::")))
        .collect();
    for (line, want) in lines.iter().zip(expected) {
        assert_eq!(*line, format!("backend::{host}::{want}"));
    }
    assert!(text.contains("backend::added_via_api::false"));
    for line in text.lines() {
        assert!(
            line.starts_with("backend::"),
            "every line is cluster-scoped: {line}"
        );
    }

    let (status, json) = proxy.admin_get("/clusters?format=json").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let cluster = &json["cluster_statuses"][0];
    assert_eq!(cluster["name"], "backend");
    let hosts = cluster["host_statuses"].as_array().unwrap();
    assert_eq!(hosts.len(), 2);
    let first = hosts
        .iter()
        .find(|h| h["address"]["socket_address"]["port_value"] == host.port())
        .unwrap();
    assert_eq!(first["address"]["socket_address"]["address"], "127.0.0.1");
    let rq_total = first["stats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "rq_total")
        .unwrap();
    assert_eq!(rq_total["value"], "2");
    assert_eq!(first["health_status"]["eds_health_status"], "HEALTHY");
    proxy.stop().await;
}

#[tokio::test]
async fn stats_prometheus_ready_and_the_page() {
    let backends = backends(1).await;
    let proxy = TestProxy::start(config(&upstreams(&backends), Mode::L7)).await;
    let mut client = EchoServiceClient::new(proxy.channel().await);
    echo(&mut client, "x").await.unwrap();

    let (status, stats) = proxy.admin_get("/stats").await;
    assert_eq!(status, 200);
    assert!(
        stats.contains("cluster.backend.upstream_rq_total: 1\n"),
        "{stats}"
    );
    assert!(
        stats.contains("cluster.backend.membership_healthy: 1\n"),
        "{stats}"
    );
    assert!(
        stats.contains("http.ingress.downstream_rq_total: 1\n"),
        "{stats}"
    );
    // Counters and gauges sorted, then the histograms sorted, as Envoy prints them.
    let (histograms, counters): (Vec<&str>, Vec<&str>) = stats
        .lines()
        .partition(|l| l.contains(" P0(") || l.ends_with("No recorded values"));
    for lines in [&counters, &histograms] {
        let names: Vec<&str> = lines
            .iter()
            .map(|l| l.split(": ").next().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "sorted like Envoy's");
    }
    assert!(
        stats.ends_with(&format!("{}\n", histograms.last().unwrap())),
        "histograms last"
    );
    for name in [
        "cluster.backend.upstream_rq_time",
        "cluster.backend.upstream_rq_first_byte_time",
        "http.ingress.downstream_rq_time",
        "cluster.backend.grpc.gateway.EchoService.Echo.upstream_rq_time",
    ] {
        let line = histograms
            .iter()
            .find(|l| l.starts_with(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {stats}"));
        assert!(
            line.contains(" P50(nan,") && line.contains(" P99.9(nan,"),
            "{line}"
        );
    }
    assert!(
        stats.contains("cluster.backend.grpc.gateway.EchoService.Echo.total: 1\n")
            && stats.contains("cluster.backend.grpc.gateway.EchoService.Echo.0: 1\n"),
        "{stats}"
    );
    let (_, filtered) = proxy
        .admin_get("/stats?filter=upstream_rq_t&usedonly")
        .await;
    let filtered: Vec<&str> = filtered
        .lines()
        .map(|l| l.split(": ").next().unwrap())
        .collect();
    assert!(
        filtered.contains(&"cluster.backend.upstream_rq_total"),
        "{filtered:?}"
    );
    assert!(
        filtered.contains(&"cluster.backend.upstream_rq_time"),
        "{filtered:?}"
    );
    assert!(
        !filtered.contains(&"cluster.backend.upstream_rq_timeout"),
        "unused: {filtered:?}"
    );
    assert!(
        filtered.iter().all(|n| n.contains("upstream_rq_t")),
        "{filtered:?}"
    );
    let (status, _) = proxy.admin_get("/stats?filter=(").await;
    assert_eq!(status, 400, "a bad regex is a clear error");
    let (_, json) = proxy
        .admin_get("/stats?format=json&filter=downstream_rq_t")
        .await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let computed =
        &json["stats"].as_array().unwrap().last().unwrap()["histograms"]["computed_quantiles"];
    assert_eq!(computed[0]["name"], "http.ingress.downstream_rq_time");
    assert_eq!(computed[0]["count"], 1);
    let (_, json) = proxy
        .admin_get("/stats?format=json&filter=downstream_rq_t&histogram_buckets=disjoint")
        .await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let h =
        &json["stats"].as_array().unwrap().last().unwrap()["histograms"]["computed_quantiles"][0];
    let buckets = h["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 97, "every bucket, the overflow last");
    assert_eq!(buckets[0]["upper_bound"], 0.1);
    assert!(buckets[96]["upper_bound"].is_null());
    let counted: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 1);

    let (status, prom) = proxy.admin_get("/stats/prometheus").await;
    assert_eq!(status, 200);
    assert!(
        prom.contains("# TYPE envoy_cluster_upstream_rq_total counter\n"),
        "{prom}"
    );
    assert!(
        prom.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"backend\"} 1\n"),
        "{prom}"
    );
    assert!(prom.contains(&format!(
        "envoy_cluster_host_rq_total{{envoy_cluster_name=\"backend\",host=\"{}\",hostname=\"127.0.0.1\"}} 1\n",
        backends[0].addr()
    )));
    assert!(
        prom.contains("# TYPE envoy_cluster_upstream_rq_time histogram\n"),
        "{prom}"
    );
    assert!(
        prom.contains(
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=\"+Inf\"} 1\n"
        ) && prom
            .contains("envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"backend\"} 1\n"),
        "{prom}"
    );
    assert!(
        prom.contains("envoy_cluster_grpc_total{envoy_cluster_name=\"backend\",envoy_grpc_bridge_service=\"gateway.EchoService\",envoy_grpc_bridge_method=\"Echo\"} 1\n"),
        "{prom}"
    );
    promtool_accepts(&prom);

    assert_eq!(proxy.admin_get("/ready").await, (200, "LIVE\n".to_owned()));
    let (status, page) = proxy.admin_get("/").await;
    assert_eq!(status, 200);
    assert!(page.contains("/clusters?format=json") && page.contains("fairness"));
    let (status, help) = proxy.admin_get("/help").await;
    assert_eq!(status, 200);
    assert!(help.contains("/stats/prometheus"));
    proxy.stop().await;
}

/// Runs `promtool check metrics` on the text. promtool is installed by
/// scripts/test; in CI its absence is a failure, elsewhere a note.
fn promtool_accepts(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is required in CI: {e}"
            );
            eprintln!("note: promtool not installed; Prometheus format checked by assertions only");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejected the metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_access_log_has_one_envoy_line_per_call() {
    let backends = backends(1).await;
    let proxy = TestProxy::start(config(&upstreams(&backends), Mode::L7)).await;
    let mut client = EchoServiceClient::new(proxy.channel().await);
    echo(&mut client, "hello").await.unwrap();
    let log = proxy.log.clone();
    let addr = proxy.addr;
    proxy.stop().await;

    let lines = log.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    // [2026-11-23T19:10:16.123Z] "POST /gateway.EchoService/Echo HTTP/2" 200 - 12 19 1 0 "-" "tonic/0.14.x" "<uuid>" "127.0.0.1:port" "127.0.0.1:port"
    let re_time = line.starts_with('[') && line.as_bytes()[24] == b'Z' && &line[25..27] == "] ";
    assert!(re_time, "{line}");
    let rest = &line[27..];
    assert!(
        rest.starts_with("\"POST /gateway.EchoService/Echo HTTP/2\" 200 - "),
        "{line}"
    );
    let fields: Vec<&str> = rest.split('"').collect();
    // fields: ["", request, " 200 - rx tx dur svc ", xff, " ", ua, " ", id, " ", authority, " ", upstream, ""]
    let numbers: Vec<&str> = fields[2].split_whitespace().collect();
    assert_eq!(numbers[0], "200");
    assert_eq!(numbers[1], "-");
    assert!(numbers[2].parse::<u64>().unwrap() > 0, "bytes received");
    assert!(numbers[3].parse::<u64>().unwrap() > 0, "bytes sent");
    numbers[4].parse::<u64>().unwrap();
    numbers[5].parse::<u64>().unwrap();
    assert_eq!(fields[3], "-");
    assert!(fields[5].starts_with("tonic/"), "{line}");
    assert_eq!(fields[7].len(), 36, "generated request id: {line}");
    assert_eq!(fields[9], addr.to_string());
    assert_eq!(fields[11], backends[0].addr().to_string());
}

#[tokio::test]
async fn the_healthcheck_subcommand_follows_ready() {
    let backends = backends(1).await;
    let mut proxy = TestProxy::start(config(&upstreams(&backends), Mode::L7)).await;
    let admin = proxy.admin.to_string();
    let run = move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_proxy"))
            .args(["healthcheck", "--admin", &admin])
            .output()
            .unwrap()
    };
    let live = tokio::task::spawn_blocking(run.clone()).await.unwrap();
    assert!(live.status.success(), "{live:?}");
    assert_eq!(String::from_utf8_lossy(&live.stdout).trim(), "LIVE");

    // Draining (a call in flight keeps the proxy from finishing): /ready fails.
    let mut client = EchoServiceClient::new(proxy.channel().await);
    let slow = tokio::spawn(async move {
        client
            .echo(proto::gateway::EchoRequest {
                delay_ms: 1000,
                ..Default::default()
            })
            .await
    });
    support::eventually(
        "the slow call is in flight",
        std::time::Duration::from_secs(5),
        || async {
            proxy.clusters().await[&(backends[0].addr().to_string(), "rq_active".into())] == "1"
        },
    )
    .await;
    proxy.begin_shutdown();
    support::eventually(
        "/ready fails while draining",
        std::time::Duration::from_secs(5),
        || async { proxy.admin_get("/ready").await.0 == 503 },
    )
    .await;
    let draining = tokio::task::spawn_blocking(run).await.unwrap();
    assert_eq!(draining.status.code(), Some(1), "{draining:?}");
    assert!(slow.await.unwrap().is_ok(), "the call in flight finished");
}
