//! `--mode l4`: balancing connections, not calls. One client connection puts
//! every call on one backend: the skew an NLB or a Classic ELB in TCP mode
//! shows with gRPC.

#![allow(clippy::unwrap_used)] // Tests panic on purpose.

mod support;

use std::collections::HashMap;

use proto::gateway::echo_service_client::EchoServiceClient;
use proxy::config::Mode;
use support::{TestProxy, backends, config, echo, upstreams};

#[tokio::test]
async fn one_connection_sends_every_call_to_one_backend() {
    let backends = backends(3).await;
    let proxy = TestProxy::start(config(&upstreams(&backends), Mode::L4)).await;

    let mut client = EchoServiceClient::new(proxy.channel().await);
    let mut seen: HashMap<String, u64> = HashMap::new();
    for _ in 0..300 {
        *seen
            .entry(echo(&mut client, "x").await.unwrap())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 1, "all calls on one backend: {seen:?}");
    assert_eq!(seen.values().sum::<u64>(), 300);

    // New connections are spread round robin: three clients, three backends.
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..2 {
        let mut other = EchoServiceClient::new(proxy.channel().await);
        firsts.insert(echo(&mut other, "x").await.unwrap());
        drop(other);
    }
    firsts.extend(seen.keys().cloned());
    assert_eq!(firsts.len(), 3, "connections are balanced: {firsts:?}");

    let clusters = proxy.clusters().await;
    let cx: u64 = backends
        .iter()
        .map(|b| {
            clusters[&(b.addr().to_string(), "cx_total".into())]
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(cx, 3, "one upstream connection per client connection");
    drop(client); // an L4 proxy can only drain when its clients hang up
    proxy.stop().await;
}
