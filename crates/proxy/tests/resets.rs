//! Resets travel through the proxy both ways, observed on raw HTTP/2 at each
//! end: a client's RST_STREAM reaches the host, a host's reaches the client.

#![allow(clippy::unwrap_used)] // Tests panic on purpose.

mod support;

use std::collections::HashSet;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use h2::Reason;
use http::{Request, Response};
use proxy::config::Mode;
use support::{TestProxy, config, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A raw HTTP/2 host. On `/cancel-me` it answers headers and one DATA frame,
/// then reports how the stream was reset. On `/reset-me` it answers headers and
/// one DATA frame, waits for a DATA frame from the client (proof that the
/// response head went out), then resets the stream with INTERNAL_ERROR. On
/// `/answer-early` it answers trailers-only at once, without reading the request.
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
                        if request.uri().path() == "/answer-early" {
                            let response = Response::builder()
                                .header("content-type", "application/grpc")
                                .header("grpc-status", "0")
                                .body(())
                                .unwrap();
                            let _ = respond.send_response(response, true);
                            return;
                        }
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

/// A client connection written frame by frame, so that it can send a request's
/// DATA after the response has ended, which h2's client does not allow.
struct RawConnection {
    tcp: TcpStream,
    /// Streams that received END_STREAM.
    ended: HashSet<u32>,
    /// RST_STREAM frames received.
    resets: usize,
}

impl RawConnection {
    async fn open(addr: SocketAddr) -> Self {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut conn = RawConnection {
            tcp,
            ended: HashSet::new(),
            resets: 0,
        };
        conn.send(4, 0, 0, &[]).await; // SETTINGS, defaults
        conn
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = payload.len() as u32;
        let mut frame = Vec::with_capacity(9 + payload.len());
        frame.extend_from_slice(&len.to_be_bytes()[1..]);
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        if let Err(e) = self.tcp.write_all(&frame).await {
            self.closed(e);
        }
    }

    fn closed(&self, e: std::io::Error) -> ! {
        panic!(
            "the proxy closed the connection after {} resets: {e}",
            self.resets
        );
    }

    /// HEADERS of a gRPC call to `path`, END_HEADERS, not END_STREAM. HPACK
    /// with static-table names and literal values, never indexed.
    async fn request_headers(&mut self, stream: u32, path: &str) {
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
        for (name_index, value) in [(4u8, path), (1, "localhost")] {
            block.push(name_index); // literal without indexing, indexed name
            block.push(value.len() as u8);
            block.extend_from_slice(value.as_bytes());
        }
        block.extend_from_slice(&[0x0f, 0x10, 16]); // content-type (index 31)
        block.extend_from_slice(b"application/grpc");
        block.extend_from_slice(&[0x00, 2]);
        block.extend_from_slice(b"te");
        block.push(8);
        block.extend_from_slice(b"trailers");
        self.send(1, 0x4, stream, &block).await;
    }

    /// Reads frames until `stream` has ended, answering SETTINGS and PING;
    /// panics on GOAWAY.
    async fn until_ended(&mut self, stream: u32) {
        while !self.ended.contains(&stream) {
            let mut head = [0u8; 9];
            if let Err(e) = self.tcp.read_exact(&mut head).await {
                self.closed(e);
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            if let Err(e) = self.tcp.read_exact(&mut payload).await {
                self.closed(e);
            }
            match kind {
                0 | 1 if flags & 0x1 != 0 => {
                    self.ended.insert(id);
                }
                3 => self.resets += 1,
                4 if flags & 0x1 == 0 => self.send(4, 0x1, 0, &[]).await,
                6 if flags & 0x1 == 0 => self.send(6, 0x1, 0, &payload).await,
                7 => panic!(
                    "GOAWAY from the proxy after {} resets: {:?}",
                    self.resets,
                    String::from_utf8_lossy(&payload[8..])
                ),
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn requests_answered_before_they_end_do_not_cost_the_client_its_connection() {
    // A host that answers before reading the request, as an overloaded proxy
    // does with a local UNAVAILABLE. The client's DATA then arrives after the
    // response. Round after round of 200 such calls on one connection: h2
    // remembers 50 reset streams, so if the proxy reset each stream, it would
    // answer 150 late DATA frames per round with resets of its own and close
    // the connection (GOAWAY, ENHANCE_YOUR_CALM) after 1024 of those.
    let (host, _resets) = raw_host().await;
    let mut config = config(&[host.to_string()], Mode::L7);
    // 200 streams at once: above the default of 100 per connection.
    config.listeners[0].max_concurrent_streams = 200;
    let proxy = TestProxy::start(config).await;
    let mut conn = RawConnection::open(proxy.addr).await;
    let mut next = 1u32;
    for _round in 0..10 {
        let streams: Vec<u32> = (0..200).map(|i| next + 2 * i).collect();
        next += 400;
        for &id in &streams {
            conn.request_headers(id, "/answer-early").await;
        }
        for &id in &streams {
            conn.until_ended(id).await;
        }
        for &id in &streams {
            conn.send(0, 0x1, id, b"\0\0\0\0\0").await; // DATA, END_STREAM
        }
    }
    // The connection still carries calls.
    conn.request_headers(next, "/answer-early").await;
    conn.send(0, 0x1, next, b"\0\0\0\0\0").await;
    tokio::time::timeout(Duration::from_secs(10), conn.until_ended(next))
        .await
        .expect("the last call was answered");
    drop(conn);
    proxy.stop().await;
}
