//! Per-call balancing: one client connection, many calls, every backend gets
//! its share, counted by the backends' own `x-backend-id`, not by the proxy.

#![allow(clippy::unwrap_used)] // Tests panic on purpose.

mod support;

use std::collections::HashMap;

use proto::gateway::echo_service_client::EchoServiceClient;
use proxy::config::{LbPolicy, Mode};
use support::{TestProxy, backends, config, echo, upstreams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_one_connections_calls_evenly_and_clusters_agrees() {
    let backends = backends(3).await;
    let proxy = TestProxy::start(config(&upstreams(&backends), Mode::L7)).await;
    // One channel: one HTTP/2 connection, as the gateway has.
    let mut client = EchoServiceClient::new(proxy.channel().await);

    let mut seen: HashMap<String, u64> = HashMap::new();
    for i in 0..3000 {
        let id = echo(&mut client, &format!("call {i}")).await.unwrap();
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (id, n) in &seen {
        assert!(
            (980..=1020).contains(n),
            "{id} got {n} of 3000 calls: {seen:?}"
        );
    }
    // The proxy's own count per host is exactly what the backends answered.
    for (i, b) in backends.iter().enumerate() {
        let saw = seen[&format!("b{i}")];
        assert_eq!(proxy.rq_total(b.addr()).await, saw, "host {}", b.addr());
    }
    let clusters = proxy.clusters().await;
    for b in &backends {
        let host = b.addr().to_string();
        assert_eq!(clusters[&(host.clone(), "rq_error".into())], "0");
        assert_eq!(clusters[&(host.clone(), "rq_active".into())], "0");
        assert_eq!(clusters[&(host.clone(), "health_flags".into())], "healthy");
        assert_eq!(
            clusters[&(host.clone(), "cx_total".into())],
            "1",
            "one connection per host, reused"
        );
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_and_random_reach_every_backend() {
    let backends = backends(3).await;
    for lb in [LbPolicy::LeastRequest, LbPolicy::Random] {
        let mut config = config(&upstreams(&backends), Mode::L7);
        config.clusters[0].lb = lb;
        let proxy = TestProxy::start(config).await;
        let mut client = EchoServiceClient::new(proxy.channel().await);
        let mut seen: HashMap<String, u64> = HashMap::new();
        for _ in 0..600 {
            *seen
                .entry(echo(&mut client, "x").await.unwrap())
                .or_default() += 1;
        }
        assert_eq!(seen.len(), 3, "{lb}: {seen:?}");
        for n in seen.values() {
            assert!(*n > 100, "{lb}: {seen:?}");
        }
        proxy.stop().await;
    }
}
