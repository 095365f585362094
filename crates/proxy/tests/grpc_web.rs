//! gRPC-Web through the real `run()`: browsers' calls over HTTP/1.1 and
//! HTTP/2, binary and base64 text, unary and server-streaming, balanced per
//! call like any other call; CORS answered by the proxy; malformed bodies
//! refused with gRPC errors while the listener keeps serving.

#![allow(clippy::unwrap_used)] // Tests panic on purpose.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use proto::gateway::echo_service_client::EchoServiceClient;
use proto::gateway::{EchoReply, ExpandRequest};
use proto::helloworld::{HelloReply, HelloRequest};
use proxy::config::{CorsConfig, GrpcWebConfig, LbPolicy, Mode};
use support::{TestProxy, backends, config, echo, upstreams};
use tokio::net::TcpStream;

const SAY_HELLO: &str = "/helloworld.Greeter/SayHello";
const EXPAND: &str = "/gateway.EchoService/Expand";

/// A round-robin proxy in front of `upstreams` with gRPC-Web on, CORS for
/// `http://page.test:*`, requests up to `max` bytes.
fn web_config(upstreams: &[String], max: usize) -> proxy::Config {
    let mut config = config(upstreams, Mode::L7);
    config.clusters[0].lb = LbPolicy::RoundRobin;
    config.listeners[0].grpc_web = Some(GrpcWebConfig {
        max_request_bytes: max,
        cors: Some(CorsConfig::new(vec!["http://page.test:*".into()])),
    });
    config
}

/// Waits until the proxy has a connection open to each of its `n` hosts: a
/// host still connecting is passed over, which would skew an exact spread.
async fn connected(proxy: &TestProxy, n: usize) {
    support::eventually(
        "every host connected",
        std::time::Duration::from_secs(10),
        || async {
            let clusters = proxy.clusters().await;
            clusters
                .iter()
                .filter(|((_, stat), value)| stat == "cx_active" && *value != "0")
                .count()
                == n
        },
    )
    .await;
}

/// One gRPC-Web frame around `message`.
fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// A gRPC-Web answer's body, split: its messages and its trailers.
#[derive(Debug, Default)]
struct WebAnswer {
    messages: Vec<Bytes>,
    trailers: HashMap<String, String>,
}

fn parse(mut body: Bytes) -> WebAnswer {
    let mut answer = WebAnswer::default();
    while body.has_remaining() {
        let flag = body.get_u8();
        let len = body.get_u32() as usize;
        let payload = body.split_to(len);
        if flag & 0x80 != 0 {
            for line in String::from_utf8(payload.to_vec()).unwrap().split("\r\n") {
                if let Some((name, value)) = line.split_once(": ") {
                    answer.trailers.insert(name.into(), value.into());
                }
            }
            assert!(body.is_empty(), "the trailers frame is the last");
        } else {
            answer.messages.push(payload);
        }
    }
    answer
}

/// An HTTP/1.1 client connection to the proxy.
async fn http1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// What came back: status, headers, the body's chunks as they arrived.
struct Reply {
    status: u16,
    headers: http::HeaderMap,
    chunks: Vec<Bytes>,
}

impl Reply {
    fn body(&self) -> Bytes {
        self.chunks.concat().into()
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

async fn post(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
    content_type: &str,
    extra: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let mut request = http::Request::post(path)
        .header("host", "front.test")
        .header("content-type", content_type)
        .header("x-grpc-web", "1");
    for (n, v) in extra {
        request = request.header(*n, *v);
    }
    let request = request.body(Full::new(Bytes::from(body))).unwrap();
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (head, mut body) = response.into_parts();
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            chunks.push(data);
        }
    }
    Reply {
        status: head.status.as_u16(),
        headers: head.headers,
        chunks,
    }
}

/// A `grpc-message` as sent (percent-encoded), read back.
fn unpercent(s: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex: String = bytes.by_ref().take(2).map(char::from).collect();
            out.push(u8::from_str_radix(&hex, 16).unwrap());
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).unwrap()
}

fn hello(name: &str) -> Vec<u8> {
    frame(&HelloRequest { name: name.into() }.encode_to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_calls_over_http1_are_translated_and_balanced_per_call() {
    let backends = backends(3).await;
    let proxy = TestProxy::start(web_config(&upstreams(&backends), 4 << 20)).await;
    connected(&proxy, 3).await;
    let mut client = http1(proxy.addr).await;
    let mut seen: HashMap<String, u32> = HashMap::new();
    for i in 0..30 {
        let reply = post(
            &mut client,
            SAY_HELLO,
            "application/grpc-web+proto",
            &[],
            hello(&format!("web{i}")),
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), "application/grpc-web+proto");
        let answer = parse(reply.body());
        assert_eq!(answer.trailers["grpc-status"], "0", "{:?}", answer.trailers);
        assert_eq!(answer.messages.len(), 1);
        let hello = HelloReply::decode(answer.messages[0].clone()).unwrap();
        assert!(
            hello.message.contains(&format!("web{i}")),
            "{}",
            hello.message
        );
        *seen
            .entry(reply.header("x-backend-id").to_owned())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|n| *n == 10), "round robin: {seen:?}");

    let (_, stats) = proxy.admin_get("/stats").await;
    assert!(
        stats.contains("http.ingress.downstream_cx_total: 1\n"),
        "one keep-alive connection:\n{stats}"
    );
    assert!(
        stats.contains("http.ingress.grpc_web.calls: 30\n"),
        "{stats}"
    );
    assert!(
        stats.contains("cluster.backend.upstream_rq_total: 30\n"),
        "{stats}"
    );
    // The calls are in the access log like any other.
    let lines = proxy.log.lines();
    assert_eq!(
        lines.iter().filter(|l| l.contains(SAY_HELLO)).count(),
        30,
        "{lines:?}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_mode_streams_a_server_streaming_call_as_it_comes() {
    let backends = backends(1).await;
    let proxy = TestProxy::start(web_config(&upstreams(&backends), 4 << 20)).await;
    let mut client = http1(proxy.addr).await;
    let request = ExpandRequest {
        message: "tick".into(),
        count: 5,
        interval_ms: 30,
        trailer: "end-of-ticks".into(),
        ..Default::default()
    };
    let body = STANDARD.encode(frame(&request.encode_to_vec()));
    let reply = post(
        &mut client,
        EXPAND,
        "application/grpc-web-text",
        &[],
        body.into_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        "application/grpc-web-text+proto"
    );
    assert!(
        reply.chunks.len() >= 5,
        "messages leave as the backend sends them, {} chunks",
        reply.chunks.len()
    );
    let text = reply.body();
    assert!(
        !text[..text.len() - 4].contains(&b'='),
        "padded only at the end"
    );
    let answer = parse(STANDARD.decode(&text).unwrap().into());
    let seqs: Vec<u32> = answer
        .messages
        .iter()
        .map(|m| EchoReply::decode(m.clone()).unwrap().seq)
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4]);
    assert_eq!(answer.trailers["grpc-status"], "0");
    assert!(
        answer.trailers.values().any(|v| v == "end-of-ticks"),
        "the backend's own trailer: {:?}",
        answer.trailers
    );

    // A stream that ends in an error: the status in the trailers frame.
    let failing = ExpandRequest {
        status_code: 5,
        status_message: "no such ticks".into(),
        ..request
    };
    let reply = post(
        &mut client,
        EXPAND,
        "application/grpc-web+proto",
        &[],
        frame(&failing.encode_to_vec()),
    )
    .await;
    let answer = parse(reply.body());
    assert_eq!(answer.messages.len(), 5);
    assert_eq!(answer.trailers["grpc-status"], "5");
    assert_eq!(unpercent(&answer.trailers["grpc-message"]), "no such ticks");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_over_http2_and_plain_grpc_share_the_listener() {
    let backends = backends(2).await;
    let proxy = TestProxy::start(web_config(&upstreams(&backends), 4 << 20)).await;
    connected(&proxy, 2).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut ids = Vec::new();
    for _ in 0..4 {
        let request = http::Request::post(format!("http://{}{SAY_HELLO}", proxy.addr))
            .header("content-type", "application/grpc-web")
            .body(())
            .unwrap();
        let (response, mut send) = h2
            .clone()
            .ready()
            .await
            .unwrap()
            .send_request(request, false)
            .unwrap();
        send.send_data(hello("h2").into(), true).unwrap();
        let (head, mut body) = response.await.unwrap().into_parts();
        assert_eq!(head.status, 200);
        let answer = parse(support::read_body(&mut body).await.into());
        assert_eq!(answer.trailers["grpc-status"], "0");
        assert_eq!(
            body.trailers().await.unwrap(),
            None,
            "no HTTP/2 trailers: they are in the body"
        );
        ids.push(head.headers["x-backend-id"].to_str().unwrap().to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2, "balanced per call: {ids:?}");

    let mut grpc = EchoServiceClient::new(proxy.channel().await);
    for _ in 0..4 {
        echo(&mut grpc, "plain").await.unwrap();
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_grpc_errors_and_the_listener_keeps_serving() {
    let backends = backends(1).await;
    let proxy = TestProxy::start(web_config(&upstreams(&backends), 1024)).await;
    let mut grpc = EchoServiceClient::new(proxy.channel().await);
    let mut client = http1(proxy.addr).await;
    let mut two = hello("a");
    two.extend_from_slice(&hello("b"));
    let cases: [(&str, Vec<u8>, &str, &str); 6] = [
        (
            "application/grpc-web-text",
            b"AA!A".to_vec(),
            "13",
            "bad base64",
        ),
        (
            "application/grpc-web-text",
            b"AAAAA".to_vec(),
            "13",
            "4-character group",
        ),
        (
            "application/grpc-web",
            vec![0, 0, 0, 0, 200, 1, 2],
            "13",
            "declares 200 bytes",
        ),
        ("application/grpc-web", vec![0, 0, 0], "13", "frame header"),
        (
            "application/grpc-web",
            frame(&[0; 2000]),
            "8",
            "max_request_bytes (1024)",
        ),
        ("application/grpc-web", two, "12", "client-streaming"),
    ];
    for (content_type, body, status, says) in cases {
        // Each on a fresh connection: the proxy may stop reading a body it
        // refused, and then closes that connection.
        let mut fresh = http1(proxy.addr).await;
        let reply = post(&mut fresh, SAY_HELLO, content_type, &[], body).await;
        assert_eq!(reply.status, 200, "{says}");
        assert_eq!(reply.header("grpc-status"), status, "{says}");
        let message = unpercent(reply.header("grpc-message"));
        assert!(message.contains(says), "{says}: {message}");
        assert!(reply.body().is_empty(), "trailers-only");
        // Plain gRPC on the same listener is not disturbed.
        echo(&mut grpc, "still fine").await.unwrap();
    }

    // Not gRPC-Web at all over HTTP/1.1: 415 with a reason.
    let reply = post(&mut client, "/", "application/json", &[], b"{}".to_vec()).await;
    assert_eq!(reply.status, 415);
    assert!(String::from_utf8_lossy(&reply.body()).contains("gRPC-Web"));
    let reply = post(&mut client, SAY_HELLO, "application/grpc", &[], hello("x")).await;
    assert_eq!(reply.status, 415);
    assert!(String::from_utf8_lossy(&reply.body()).contains("gRPC needs HTTP/2"));
    // And a good call on the same keep-alive connection after both.
    let reply = post(
        &mut client,
        SAY_HELLO,
        "application/grpc-web",
        &[],
        hello("ok"),
    )
    .await;
    assert_eq!(parse(reply.body()).trailers["grpc-status"], "0");

    let (_, stats) = proxy.admin_get("/stats").await;
    for line in [
        "grpc_web.malformed: 4",
        "grpc_web.too_large: 1",
        "grpc_web.streaming_refused: 1",
        "grpc_web.text_calls: 2",
        "http1.refused: 2",
    ] {
        assert!(
            stats.contains(&format!("http.ingress.{line}\n")),
            "{line}:\n{stats}"
        );
    }
    assert!(
        stats.contains("cluster.backend.upstream_rq_total: 7\n"),
        "6 echoes and 1 good web call:\n{stats}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_answered_by_the_proxy_and_strangers_are_refused() {
    let backends = backends(1).await;
    let proxy = TestProxy::start(web_config(&upstreams(&backends), 4 << 20)).await;
    let mut client = http1(proxy.addr).await;
    let preflight = |origin: &'static str| {
        http::Request::options(SAY_HELLO)
            .header("host", "front.test")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-grpc-web")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    client.ready().await.unwrap();
    let ok = client
        .send_request(preflight("http://page.test:9901"))
        .await
        .unwrap();
    assert_eq!(ok.status(), 204);
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "http://page.test:9901");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("x-grpc-web")
    );
    assert_eq!(h["access-control-max-age"], "86400");
    client.ready().await.unwrap();
    let refused = client
        .send_request(preflight("http://evil.test"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("not in grpc_web.cors.allow_origins"));

    // A call from the allowed page can read the status and the backend.
    let reply = post(
        &mut client,
        SAY_HELLO,
        "application/grpc-web",
        &[("origin", "http://page.test:9901")],
        hello("page"),
    )
    .await;
    assert_eq!(
        reply.header("access-control-allow-origin"),
        "http://page.test:9901"
    );
    assert_eq!(
        reply.header("access-control-expose-headers"),
        "grpc-status, grpc-message, x-backend-id"
    );
    // A call from another page is refused before it reaches a host.
    let reply = post(
        &mut client,
        SAY_HELLO,
        "application/grpc-web",
        &[("origin", "http://evil.test")],
        hello("evil"),
    )
    .await;
    assert_eq!(reply.status, 403);

    let (_, stats) = proxy.admin_get("/stats").await;
    assert!(
        stats.contains("cluster.backend.upstream_rq_total: 1\n"),
        "only the allowed call reached a host:\n{stats}"
    );
    for line in [
        "cors.preflight: 1",
        "cors.origin_valid: 2",
        "cors.origin_invalid: 2",
    ] {
        assert!(
            stats.contains(&format!("http.ingress.{line}\n")),
            "{line}:\n{stats}"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn without_grpc_web_http1_is_still_refused_with_505() {
    let backends = backends(1).await;
    let proxy = TestProxy::start(config(&upstreams(&backends), Mode::L7)).await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"POST /helloworld.Greeter/SayHello HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc-web\r\ncontent-length: 0\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    let _ = tcp.read_to_end(&mut reply).await;
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 505"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browsers_deadline_is_kept_and_local_answers_are_logged() {
    let backends = backends(1).await;
    let proxy = TestProxy::start(web_config(&upstreams(&backends), 4 << 20)).await;
    let mut client = http1(proxy.addr).await;
    let slow = proto::gateway::EchoRequest {
        message: "slow".into(),
        delay_ms: 5000,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let reply = post(
        &mut client,
        "/gateway.EchoService/Echo",
        "application/grpc-web+proto",
        &[("grpc-timeout", "200m")],
        frame(&slow.encode_to_vec()),
    )
    .await;
    assert_eq!(reply.header("grpc-status"), "4", "DEADLINE_EXCEEDED");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "the call ended at its deadline, not the backend's answer"
    );

    // The proxy's own answers have their access-log lines too.
    let reply = post(&mut client, "/", "text/plain", &[], b"hi".to_vec()).await;
    assert_eq!(reply.status, 415);
    support::eventually(
        "the 415 is logged",
        std::time::Duration::from_secs(5),
        || {
            let lines = proxy.log.lines();
            async move { lines.iter().any(|l| l.contains("\"POST / HTTP/1.1\" 415")) }
        },
    )
    .await;
    // The call itself went through the bridge like any call: its deadline
    // reached the backend as grpc-timeout (which of the two ended it first
    // is a race; the client's answer is DEADLINE_EXCEEDED either way).
    let lines = proxy.log.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"POST /gateway.EchoService/Echo HTTP/2\"")),
        "{lines:?}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http1_connection_lets_go_of_its_bridge_and_gets_a_new_one() {
    let backends = backends(1).await;
    let proxy = TestProxy::start(web_config(&upstreams(&backends), 4 << 20)).await;
    let mut client = http1(proxy.addr).await;
    let gauge = |stats: &str| {
        stats
            .lines()
            .find_map(|l| l.strip_prefix("http.ingress.grpc_web.bridges_active: "))
            .map(|v| v.parse::<u64>().unwrap())
    };
    let reply = post(
        &mut client,
        SAY_HELLO,
        "application/grpc-web",
        &[],
        hello("idle"),
    )
    .await;
    assert_eq!(parse(reply.body()).trailers["grpc-status"], "0");
    let (_, stats) = proxy.admin_get("/stats").await;
    assert_eq!(gauge(&stats), Some(1), "{stats}");

    // Idle past BRIDGE_IDLE (5 s): the bridge goes, the client's connection stays.
    support::eventually(
        "the idle bridge is let go",
        std::time::Duration::from_secs(20),
        || async { gauge(&proxy.admin_get("/stats").await.1) == Some(0) },
    )
    .await;
    let reply = post(
        &mut client,
        SAY_HELLO,
        "application/grpc-web",
        &[],
        hello("again"),
    )
    .await;
    assert_eq!(parse(reply.body()).trailers["grpc-status"], "0");
    let (_, stats) = proxy.admin_get("/stats").await;
    assert_eq!(gauge(&stats), Some(1), "a new bridge for the next call");
    assert!(
        stats.contains("http.ingress.downstream_cx_total: 1\n"),
        "on the same client connection:\n{stats}"
    );
    proxy.stop().await;
}
