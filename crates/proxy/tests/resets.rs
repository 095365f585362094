//! Resets travel through the proxy both ways, observed on raw HTTP/2 at each
//! end: a client's RST_STREAM reaches the host, a host's reaches the client.

#![allow(clippy::unwrap_used)] // Tests panic on purpose.

mod support;

use std::future::poll_fn;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use h2::Reason;
use http::{Request, Response};
use proxy::config::Mode;
use support::{TestProxy, config, eventually};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A raw HTTP/2 host. On `/cancel-me` it answers headers and one DATA frame,
/// then reports how the stream was reset. On `/reset-me` it answers headers and
/// one DATA frame, waits for a DATA frame from the client (proof that the
/// response head went out), then resets the stream with INTERNAL_ERROR.
async fn raw_host() -> (SocketAddr, mpsc::UnboundedReceiver<Reason>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(tcp).await.unwrap();
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let response = Response::builder()
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let mut send = respond.send_response(response, false).unwrap();
                        send.send_data(Bytes::from_static(b"\0\0\0\0\0"), false)
                            .unwrap();
                        if request.uri().path() == "/reset-me" {
                            let _ = request.into_body().data().await;
                            send.send_reset(Reason::INTERNAL_ERROR);
                        } else {
                            let reason = poll_fn(|cx| send.poll_reset(cx)).await.unwrap();
                            let _ = tx.send(reason);
                        }
                    });
                }
            });
        }
    });
    (addr, rx)
}

async fn raw_client(proxy: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    client.ready().await.unwrap()
}

fn call(proxy: SocketAddr, path: &str) -> Request<()> {
    Request::post(format!("http://{proxy}{path}"))
        .header("content-type", "application/grpc")
        .body(())
        .unwrap()
}

#[tokio::test]
async fn a_client_cancel_reaches_the_host() {
    let (host, mut resets) = raw_host().await;
    let proxy = TestProxy::start(config(&[host.to_string()], Mode::L7)).await;
    let mut client = raw_client(proxy.addr).await;

    let (response, mut send) = client
        .send_request(call(proxy.addr, "/cancel-me"), false)
        .unwrap();
    let mut body = response.await.unwrap().into_body();
    assert!(
        body.data().await.unwrap().is_ok(),
        "first DATA frame arrives"
    );
    send.send_reset(Reason::CANCEL);

    let reason = tokio::time::timeout(Duration::from_secs(5), resets.recv())
        .await
        .expect("the host saw the reset")
        .unwrap();
    assert_eq!(reason, Reason::CANCEL);
    eventually(
        "the call is no longer active",
        Duration::from_secs(5),
        || async { proxy.clusters().await[&(host.to_string(), "rq_active".into())] == "0" },
    )
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_host_reset_reaches_the_client_with_its_reason() {
    let (host, _resets) = raw_host().await;
    let proxy = TestProxy::start(config(&[host.to_string()], Mode::L7)).await;
    let mut client = raw_client(proxy.addr).await;

    let (response, mut send) = client
        .send_request(call(proxy.addr, "/reset-me"), false)
        .unwrap();
    let mut body = response.await.unwrap().into_body();
    send.send_data(Bytes::from_static(b"go"), false).unwrap();
    let mut error = None;
    while let Some(frame) = body.data().await {
        if let Err(e) = frame {
            error = Some(e);
            break;
        }
    }
    let error = error.expect("the stream was reset");
    assert_eq!(error.reason(), Some(Reason::INTERNAL_ERROR), "{error}");
    eventually(
        "the host error is counted",
        Duration::from_secs(5),
        || async { proxy.clusters().await[&(host.to_string(), "rq_error".into())] == "1" },
    )
    .await;
    proxy.stop().await;
}
