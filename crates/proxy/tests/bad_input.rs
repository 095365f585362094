//! Clients that do not speak HTTP/2 (or speak it badly) get a clear refusal
//! and are dropped, while a well-behaved client on another connection keeps
//! being served without a single failure.

#![allow(clippy::unwrap_used)] // Tests panic on purpose.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proto::gateway::echo_service_client::EchoServiceClient;
use proxy::config::Mode;
use support::{TestProxy, backends, config, echo, upstreams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes `bytes`, then reads until the proxy closes the connection.
async fn exchange(proxy: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection")
        .ok();
    out
}

/// The types of the HTTP/2 frames in `bytes`.
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_are_refused_while_a_good_one_keeps_working() {
    let backends = backends(2).await;
    let proxy = TestProxy::start(config(&upstreams(&backends), Mode::L7)).await;

    // A well-behaved client, calling all along.
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let good = tokio::spawn({
        let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
        let mut client = EchoServiceClient::new(proxy.channel().await);
        async move {
            while !stop.is_cancelled() {
                match echo(&mut client, "still here").await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
    });

    // A client that connects and says nothing does not hold anyone up.
    let _silent = TcpStream::connect(proxy.addr).await.unwrap();

    // HTTP/1.1 gets a plain answer saying what this port speaks.
    let reply = exchange(proxy.addr, b"GET /alive HTTP/1.1\r\nHost: proxy\r\n\r\n").await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 505 "), "{reply}");
    assert!(reply.contains("HTTP/2 with prior knowledge"), "{reply}");

    // Garbage (here the start of a TLS ClientHello) gets SETTINGS + GOAWAY(PROTOCOL_ERROR).
    let reply = exchange(
        proxy.addr,
        &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc],
    )
    .await;
    assert!(reply.len() >= 18 + 8, "{reply:?}");
    assert_eq!(reply[3], 0x4, "a SETTINGS frame first");
    assert_eq!(reply[12], 0x7, "then GOAWAY");
    assert_eq!(&reply[22..26], &[0, 0, 0, 1], "PROTOCOL_ERROR");
    assert!(String::from_utf8_lossy(&reply[26..]).contains("preface"));

    // h2spec 3.5 #2: an invalid preface in capitals is not HTTP/1.x either:
    // GOAWAY(PROTOCOL_ERROR) then close (RFC 9113 section 3.4).
    let reply = exchange(proxy.addr, b"INVALID CONNECTION PREFACE\r\n\r\n").await;
    assert_eq!(
        frame_types(&reply),
        [0x4, 0x7],
        "SETTINGS, GOAWAY: {reply:?}"
    );
    assert_eq!(&reply[22..26], &[0, 0, 0, 1], "PROTOCOL_ERROR");
    // An HTTP/1.x method cut at the first mismatch is still recognised.
    let reply = exchange(proxy.addr, b"POST /x HTTP/1.1\r\n\r\n").await;
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 505 "));

    // A valid preface followed by junk frames: h2 answers GOAWAY and closes.
    let mut junk = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    junk.extend_from_slice(&[0xff; 64]);
    let reply = exchange(proxy.addr, &junk).await;
    assert!(
        frame_types(&reply).contains(&0x7),
        "GOAWAY before the close: {reply:?}"
    );

    // Random bytes of every length never crash it.
    for len in [1usize, 7, 23, 24, 25, 100, 4096] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 131 + 7) as u8).collect();
        let _ = exchange(proxy.addr, &bytes).await;
    }

    // Oversized headers are refused for that stream only.
    {
        let tcp = TcpStream::connect(proxy.addr).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let mut client = client.ready().await.unwrap();
        let request =
            http::Request::post(format!("http://{}/gateway.EchoService/Echo", proxy.addr))
                .header("content-type", "application/grpc")
                .header("x-huge", "h".repeat(100 << 10))
                .body(())
                .unwrap();
        match client.send_request(request, true) {
            Ok((response, _)) => match response.await {
                Ok(response) => assert_eq!(response.status(), 431, "{response:?}"),
                Err(e) => assert!(e.reason().is_some(), "refused with a reason: {e}"),
            },
            Err(e) => panic!("the client could not even send: {e}"),
        }
    }

    // The good client never noticed.
    let before = ok.load(Ordering::Relaxed);
    support::eventually(
        "the good client keeps being served",
        Duration::from_secs(5),
        || {
            let ok = ok.clone();
            async move { ok.load(Ordering::Relaxed) > before + 50 }
        },
    )
    .await;
    stop.cancel();
    good.await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    let (_, stats) = proxy.admin_get("/stats").await;
    assert!(
        !stats.contains("http.ingress.downstream_cx_protocol_error: 0\n"),
        "{stats}"
    );
    proxy.stop().await;
}
