//! What passes through the proxy unchanged: all four call kinds, trailers,
//! non-OK statuses with their messages, deadlines, and `x-request-id`.

#![allow(clippy::unwrap_used)] // Tests panic on purpose.

mod support;

use std::time::{Duration, Instant};

use proto::gateway::echo_service_client::EchoServiceClient;
use proto::gateway::{EchoRequest, ExpandRequest};
use proxy::config::Mode;
use support::{TestProxy, backends, config, read_body, upstreams};
use tonic::Code;

fn req(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn all_four_call_kinds_pass_with_their_trailers() {
    let backends = backends(2).await;
    let proxy = TestProxy::start(config(&upstreams(&backends), Mode::L7)).await;
    let mut client = EchoServiceClient::new(proxy.channel().await);

    // Unary.
    let reply = client.echo(req("one")).await.unwrap();
    assert_eq!(reply.get_ref().message, "one");

    // Client streaming: the messages arrive in order and are joined.
    let parts = ["a", "b", "c", "d"].map(req);
    let reply = client.collect(tokio_stream::iter(parts)).await.unwrap();
    assert_eq!(reply.get_ref().message, "abcd");

    // Server streaming, ending with a custom trailer.
    let mut stream = client
        .expand(ExpandRequest {
            message: "s".into(),
            count: 50,
            trailer: "server-trailer".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(reply) = stream.message().await.unwrap() {
        seqs.push(reply.seq);
    }
    assert_eq!(seqs, (0..50).collect::<Vec<_>>());
    let trailers = stream.trailers().await.unwrap().unwrap();
    assert_eq!(trailers.get("x-echo-trailer").unwrap(), "server-trailer");

    // Bidirectional: one reply per request, in order, then the trailer.
    let mut requests: Vec<EchoRequest> = (0..20).map(|i| req(&format!("m{i}"))).collect();
    requests[5].trailer = "bidi-trailer".into();
    let mut replies = client
        .chat(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(r) = replies.message().await.unwrap() {
        got.push(r.message);
    }
    assert_eq!(got, (0..20).map(|i| format!("m{i}")).collect::<Vec<_>>());
    let trailers = replies.trailers().await.unwrap().unwrap();
    assert_eq!(trailers.get("x-echo-trailer").unwrap(), "bidi-trailer");
    proxy.stop().await;
}

#[tokio::test]
async fn large_messages_stream_through_with_flow_control() {
    let backends = backends(1).await;
    let proxy = TestProxy::start(config(&upstreams(&backends), Mode::L7)).await;
    let mut client = EchoServiceClient::new(proxy.channel().await);
    // 3 MiB each way: more than every flow-control window on the path.
    let big = "x".repeat(3 << 20);
    let reply = client.echo(req(&big)).await.unwrap();
    assert_eq!(reply.get_ref().message.len(), big.len());
    let chunks: Vec<EchoRequest> = (0..12).map(|_| req(&"y".repeat(256 << 10))).collect();
    let reply = client.collect(tokio_stream::iter(chunks)).await.unwrap();
    assert_eq!(reply.get_ref().message.len(), 12 * (256 << 10));
    proxy.stop().await;
}

#[tokio::test]
async fn non_ok_statuses_keep_their_code_message_and_trailer() {
    let backends = backends(1).await;
    let proxy = TestProxy::start(config(&upstreams(&backends), Mode::L7)).await;
    let mut client = EchoServiceClient::new(proxy.channel().await);

    // Trailers-only error on a unary call.
    let err = client
        .echo(EchoRequest {
            status_code: Code::FailedPrecondition as i32,
            status_message: "not now: 100% busy é".into(),
            trailer: "t-unary".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "not now: 100% busy é");
    assert_eq!(err.metadata().get("x-echo-trailer").unwrap(), "t-unary");

    // An error after streamed messages arrives in real trailers.
    let mut stream = client
        .expand(ExpandRequest {
            message: "e".into(),
            count: 3,
            status_code: Code::ResourceExhausted as i32,
            status_message: "quota gone".into(),
            trailer: "t-stream".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        assert!(stream.message().await.unwrap().is_some());
    }
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(err.message(), "quota gone");
    assert_eq!(err.metadata().get("x-echo-trailer").unwrap(), "t-stream");

    // An empty client stream is a valid call too.
    let reply = client
        .collect(tokio_stream::iter(Vec::<EchoRequest>::new()))
        .await
        .unwrap();
    assert_eq!(reply.get_ref().message, "");
    proxy.stop().await;
}

#[tokio::test]
async fn a_deadline_is_forwarded_and_enforced() {
    let backends = backends(1).await;
    let proxy = TestProxy::start(config(&upstreams(&backends), Mode::L7)).await;
    let mut client = EchoServiceClient::new(proxy.channel().await);

    // Within the deadline: fine.
    let mut request = tonic::Request::new(EchoRequest {
        delay_ms: 10,
        ..req("on time")
    });
    request.set_timeout(Duration::from_secs(5));
    client.echo(request).await.unwrap();

    // Past it: the call ends at the deadline, not after the backend's delay.
    let mut request = tonic::Request::new(EchoRequest {
        delay_ms: 5000,
        ..req("late")
    });
    request.set_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let err = client.echo(request).await.unwrap_err();
    let took = started.elapsed();
    // tonic's client reports its own expiry as CANCELLED "Timeout expired".
    let deadline_hit = err.code() == Code::DeadlineExceeded
        || (err.code() == Code::Cancelled && err.message() == "Timeout expired");
    assert!(deadline_hit, "{err:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn the_proxy_answers_deadline_exceeded_itself_when_the_client_does_not_enforce_it() {
    use http::Request;
    let backends = backends(1).await;
    let proxy = TestProxy::start(config(&upstreams(&backends), Mode::L7)).await;

    // A raw HTTP/2 client that sends grpc-timeout but never times out by itself.
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    // An Echo request with delay_ms = 3000 (field 4, varint), gRPC-framed.
    let message = [0x20, 0xb8, 0x17];
    let mut body = vec![0u8, 0, 0, 0, message.len() as u8];
    body.extend_from_slice(&message);
    let request = Request::post(format!("http://{}/gateway.EchoService/Echo", proxy.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .body(())
        .unwrap();
    let started = Instant::now();
    let (response, mut send) = client.send_request(request, false).unwrap();
    send.send_data(body.into(), true).unwrap();
    let response = response.await.unwrap();
    let (head, mut body) = response.into_parts();
    let status = match head.headers.get("grpc-status") {
        Some(s) => s.clone(),
        None => {
            while body.data().await.is_some() {}
            body.trailers().await.unwrap().unwrap()["grpc-status"].clone()
        }
    };
    assert_eq!(status, "4", "DEADLINE_EXCEEDED");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    proxy.stop().await;
}

#[tokio::test]
async fn x_request_id_is_generated_when_absent_and_kept_when_present() {
    let backends = backends(1).await;
    let proxy = TestProxy::start(config(&upstreams(&backends), Mode::L7)).await;
    let mut client = EchoServiceClient::new(proxy.channel().await);

    let reply = client.echo(req("no id")).await.unwrap();
    let generated = reply
        .metadata()
        .get("x-echo-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");

    let mut request = tonic::Request::new(req("with id"));
    request
        .metadata_mut()
        .insert("x-request-id", "my-id-42".parse().unwrap());
    let reply = client.echo(request).await.unwrap();
    assert_eq!(
        reply.metadata().get("x-echo-request-id").unwrap(),
        "my-id-42"
    );

    let log = proxy.log.clone();
    proxy.stop().await;
    // The access log names the same ids, one line per call.
    let lines = log.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains(&format!("\"{generated}\"")),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("\"my-id-42\""), "{}", lines[1]);
}

#[tokio::test]
async fn with_request_id_generation_off_only_the_clients_own_id_travels() {
    let backends = backends(1).await;
    let mut config = config(&upstreams(&backends), Mode::L7);
    config.listeners[0].generate_request_id = false;
    let proxy = TestProxy::start(config).await;
    let mut client = EchoServiceClient::new(proxy.channel().await);

    let reply = client.echo(req("no id")).await.unwrap();
    assert_eq!(reply.metadata().get("x-echo-request-id"), None);

    let mut request = tonic::Request::new(req("with id"));
    request
        .metadata_mut()
        .insert("x-request-id", "my-id-43".parse().unwrap());
    let reply = client.echo(request).await.unwrap();
    assert_eq!(
        reply.metadata().get("x-echo-request-id").unwrap(),
        "my-id-43"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn traceparent_is_propagated_and_logged_in_the_trace_format() {
    let backends = backends(1).await;
    let mut config = config(&upstreams(&backends), Mode::L7);
    config.access_log_format = proxy::config::AccessLogFormat::EnvoyTrace;
    let proxy = TestProxy::start(config).await;
    let mut client = EchoServiceClient::new(proxy.channel().await);

    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut request = tonic::Request::new(req("traced"));
    request
        .metadata_mut()
        .insert("traceparent", trace.parse().unwrap());
    request
        .metadata_mut()
        .insert("x-request-id", "req-7".parse().unwrap());
    let reply = client.echo(request).await.unwrap();
    assert_eq!(reply.metadata().get("x-echo-traceparent").unwrap(), trace);
    client.echo(req("untraced")).await.unwrap();

    let log = proxy.log.clone();
    proxy.stop().await;
    let lines = log.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].ends_with(&format!(
            "\"req-7\" \"{}\" \"{}\" \"{trace}\"",
            proxy_authority(&lines[0]),
            backends[0].addr()
        )),
        "{}",
        lines[0]
    );
    assert!(lines[1].ends_with(" \"-\""), "{}", lines[1]);
}

/// The authority field of an access-log line (the 4th quoted field from the end).
fn proxy_authority(line: &str) -> String {
    let quoted: Vec<&str> = line.split('"').collect();
    quoted[quoted.len() - 6].to_owned()
}

/// A host with a 1,000-byte stream window: the first DATA frame of a request
/// is larger than that, and must still arrive whole, as the host opens its
/// window bit by bit.
#[tokio::test]
async fn a_first_chunk_larger_than_the_hosts_window_arrives_whole() {
    use bytes::Bytes;
    use tokio::net::{TcpListener, TcpStream};

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::Builder::new()
            .initial_window_size(1_000)
            .handshake::<_, Bytes>(tcp)
            .await
            .unwrap();
        while let Some(Ok((request, mut respond))) = conn.accept().await {
            tokio::spawn(async move {
                // Echo the body back, opening the window as it is read.
                let got = read_body(&mut request.into_body()).await;
                let response = http::Response::builder()
                    .header("content-type", "application/grpc")
                    .body(())
                    .unwrap();
                let mut send = respond.send_response(response, false).unwrap();
                send.send_data(Bytes::from(got), false).unwrap();
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                send.send_trailers(trailers).unwrap();
            });
        }
    });
    let proxy = TestProxy::start(config(&[host.to_string()], Mode::L7)).await;

    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (sender, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut sender = sender.ready().await.unwrap();
    // One gRPC message of 12,000 bytes: a single DATA frame, 12x the host's window.
    let mut message = vec![0u8, 0, 0, 0x2e, 0xe0];
    message.extend((0..12_000u32).map(|i| (i % 251) as u8));
    let request = http::Request::post(format!("{}/gateway.EchoService/Echo", proxy.uri()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut send) = sender.send_request(request, false).unwrap();
    send.send_data(Bytes::from(message.clone()), true).unwrap();

    let mut body = response.await.unwrap().into_body();
    let echoed = read_body(&mut body).await;
    assert_eq!(
        echoed, message,
        "the host got the request as the client sent it"
    );
    let trailers = body.trailers().await.unwrap().unwrap();
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    proxy.stop().await;
}
