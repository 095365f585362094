//! `--mode l4`: balancing connections, not calls. One client connection puts
//! every call on one backend: the skew an NLB or a Classic ELB in TCP mode
//! shows with gRPC.

#![allow(clippy::unwrap_used)] // Tests panic on purpose.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use proto::gateway::echo_service_client::EchoServiceClient;
use proxy::config::Mode;
use support::{TestProxy, backends, config, echo, upstreams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP server that answers each connection with `answer(bytes it read)`
/// once the client has finished sending (half-closed), then closes.
async fn tcp_server(answer: fn(Vec<u8>) -> Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                tcp.read_to_end(&mut got).await.unwrap();
                tcp.write_all(&answer(got)).await.unwrap();
                tcp.shutdown().await.unwrap();
            });
        }
    });
    addr.to_string()
}

/// A TCP server that sends back every byte as it arrives.
async fn echo_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr.to_string()
}

/// 8 MiB that differ byte by byte from any shifted copy of themselves.
fn pattern() -> Vec<u8> {
    (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_pass_both_ways_intact_when_the_reader_is_slower_than_the_writer() {
    let proxy = TestProxy::start(config(&[echo_server().await], Mode::L4)).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut r, mut w) = tcp.into_split();
    let sent = pattern();
    let expected = sent.clone();
    // The writer sends all 8 MiB at once; the reader takes 1 KiB per read,
    // so the echo server, then the proxy, have to hold back the writer.
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::with_capacity(expected.len());
    let mut chunk = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), r.read(&mut chunk))
            .await
            .expect("the echo stalled")
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    writer.await.unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the bytes came back changed or reordered");
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_sending_still_gets_its_answer() {
    let upstream = tcp_server(|got| format!("read {} bytes", got.len()).into_bytes()).await;
    let proxy = TestProxy::start(config(&[upstream], Mode::L4)).await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(&[7u8; 100_000]).await.unwrap();
    // The half-close must reach the server, or it never answers.
    tcp.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut answer))
        .await
        .expect("no answer: the half-close did not reach the server")
        .unwrap();
    assert_eq!(answer, "read 100000 bytes");
    proxy.stop().await;
}

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
