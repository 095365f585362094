//! DNS discovery with STRICT_DNS semantics: a name's address set changes under
//! the test's control (a DNS server it runs) while calls keep flowing; a new
//! address receives calls within the refresh interval, a removed one stops
//! receiving them, and no call fails.

#![allow(clippy::unwrap_used)] // Tests panic on purpose.

mod support;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::gateway::echo_service_client::EchoServiceClient;
use proxy::config::Mode;
use support::{TestDns, TestProxy, backends_on_one_port, config, echo};

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_and_in_follow_dns_without_a_failed_call() {
    let (port, _backends) = backends_on_one_port(3).await;
    let dns = TestDns::start("backends.test", vec![ip(1), ip(2)]).await;
    let refresh = Duration::from_millis(200);
    let mut config = config(&[format!("backends.test:{port}")], Mode::L7);
    config.dns_resolvers = vec![dns.addr];
    config.clusters[0].dns_refresh = refresh;
    let proxy = TestProxy::start(config).await;
    let channel = proxy.channel().await;

    // Steady calls from one connection, counting who answers and any failure.
    let seen: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let failures = Arc::new(Mutex::new(Vec::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let traffic = tokio::spawn({
        let (seen, failures, stop) = (seen.clone(), failures.clone(), stop.clone());
        let mut client = EchoServiceClient::new(channel);
        async move {
            while !stop.is_cancelled() {
                match echo(&mut client, "x").await {
                    Ok(id) => *seen.lock().unwrap().entry(id).or_default() += 1,
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let count = |id: &str| seen.lock().unwrap().get(id).copied().unwrap_or(0);

    support::eventually(
        "both first hosts answer",
        Duration::from_secs(10),
        || async { count("b0") > 10 && count("b1") > 10 },
    )
    .await;
    assert_eq!(count("b2"), 0, "b2 is not in DNS yet");

    // Scale out: the third address appears.
    dns.set(vec![ip(1), ip(2), ip(3)]);
    let added = Instant::now();
    support::eventually(
        "the new host receives calls",
        Duration::from_secs(10),
        || async { count("b2") > 10 },
    )
    .await;
    let took = added.elapsed();
    assert!(
        took < refresh * 5,
        "new host got traffic only after {took:?}"
    );

    // Scale in: the first address vanishes; its calls stop, none fails.
    dns.set(vec![ip(2), ip(3)]);
    let removed = format!("127.0.0.1:{port}");
    // Gone from /clusters means drained: its last calls have finished.
    support::eventually(
        "the removed host drains and leaves",
        Duration::from_secs(10),
        || async {
            let clusters = proxy.clusters().await;
            !clusters.contains_key(&(removed.clone(), "health_flags".into()))
        },
    )
    .await;
    let before = count("b0");
    support::eventually(
        "calls keep flowing to the rest",
        Duration::from_secs(10),
        || async { count("b1") > 200 && count("b2") > 200 },
    )
    .await;
    assert_eq!(count("b0"), before, "the removed host got no more calls");

    stop.cancel();
    traffic.await.unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "failed calls: {failures:?}");
    let clusters = proxy.clusters().await;
    assert_eq!(
        clusters[&(format!("127.0.0.3:{port}"), "hostname".into())],
        "backends.test"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_failed_lookup_keeps_the_hosts_it_had() {
    let (port, _backends) = backends_on_one_port(1).await;
    let dns = TestDns::start("backends.test", vec![ip(1)]).await;
    let mut config = config(&[format!("backends.test:{port}")], Mode::L7);
    config.dns_resolvers = vec![dns.addr];
    config.clusters[0].dns_refresh = Duration::from_millis(100);
    let proxy = TestProxy::start(config).await;
    let mut client = EchoServiceClient::new(proxy.channel().await);
    assert_eq!(echo(&mut client, "x").await.unwrap(), "b0");

    dns.set(Vec::new()); // an empty answer is a failed lookup
    support::eventually("a refresh has failed", Duration::from_secs(5), || async {
        let (_, stats) = proxy.admin_get("/stats").await;
        stats.contains("cluster.backend.update_failure: ")
            && !stats.contains("cluster.backend.update_failure: 0\n")
    })
    .await;
    assert_eq!(echo(&mut client, "x").await.unwrap(), "b0", "still served");
    proxy.stop().await;
}
