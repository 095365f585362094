//! The real gateway `run()` and real backends on 127.0.0.1, over real sockets.

#![allow(clippy::unwrap_used)] // Tests panic on purpose.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use backend::testing::TestBackend;
use gateway::Config;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

struct TestGateway {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), gateway::Error>>,
}

impl TestGateway {
    async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway::run(listener, config, async {
            let _ = stopped.await;
        }));
        TestGateway {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }

    /// `GET path` on a fresh HTTP/1.1 connection.
    async fn get(&self, path: &str) -> (StatusCode, HeaderMap, serde_json::Value) {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = http::Request::get(path)
            .header("host", "gateway")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).expect("a JSON body");
        (parts.status, parts.headers, json)
    }
}

fn config(upstream: &str, timeout: Duration) -> Config {
    let mut config = Config::new(upstream).unwrap();
    config.timeout = timeout;
    config
}

#[tokio::test]
async fn alive_answers_true_and_names_the_backend() {
    let backend = TestBackend::start("alive-1").await.unwrap();
    let gateway = TestGateway::start(config(&backend.uri(), Duration::from_secs(2))).await;

    let (status, headers, json) = gateway.get("/alive").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json, serde_json::json!({ "status": true }));
    assert_eq!(headers["x-backend-id"], "alive-1");
    assert_eq!(headers["content-type"], "application/json");

    gateway.stop().await;
    backend.stop().await.unwrap();
}

#[tokio::test]
async fn upstream_down_gives_a_json_503_and_the_gateway_recovers_when_it_returns() {
    // Reserve an address, then free it: nothing listens there for now.
    let spot = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = spot.local_addr().unwrap();
    drop(spot);

    let gateway = TestGateway::start(config(
        &format!("http://{addr}"),
        Duration::from_millis(500),
    ))
    .await;
    let (status, _, json) = gateway.get("/alive").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json["status"], false);
    assert!(
        json["error"].as_str().unwrap().contains("unavailable"),
        "{json}"
    );

    let backend = TestBackend::start_with(backend::Config::named("late"), addr)
        .await
        .unwrap();
    // The channel reconnects with backoff; poll with a deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, headers, _) = gateway.get("/alive").await;
        if status == StatusCode::OK {
            assert_eq!(headers["x-backend-id"], "late");
            break;
        }
        assert!(Instant::now() < deadline, "the gateway never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway.stop().await;
    backend.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_upstream_gives_a_json_504_within_the_deadline() {
    let mut slow = backend::Config::named("slow");
    slow.delay = Duration::from_secs(5);
    slow.grace_period = Duration::from_millis(100);
    let backend = TestBackend::start_with(slow, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let gateway = TestGateway::start(config(&backend.uri(), Duration::from_millis(300))).await;

    let started = Instant::now();
    let (status, _, json) = gateway.get("/alive").await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json["status"], false);
    assert!(json["error"].as_str().unwrap().contains("300ms"), "{json}");
    assert!(took < Duration::from_secs(2), "answered after {took:?}");

    gateway.stop().await;
    backend.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_upstream_gives_a_json_503() {
    let mut failing = backend::Config::named("failing");
    failing.fail_rate = 1.0;
    let backend = TestBackend::start_with(failing, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let gateway = TestGateway::start(config(&backend.uri(), Duration::from_secs(2))).await;

    for _ in 0..3 {
        let (status, _, json) = gateway.get("/alive").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json["status"], false);
        assert!(
            json["error"].as_str().unwrap().contains("UNAVAILABLE"),
            "{json}"
        );
    }
    // The gateway itself is still fine.
    let (status, _, _) = gateway.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);

    gateway.stop().await;
    backend.stop().await.unwrap();
}

#[tokio::test]
async fn the_healthcheck_subcommand_asks_healthz() {
    let gateway = TestGateway::start(config("http://127.0.0.1:1", Duration::from_secs(1))).await;
    let listen = gateway.addr.to_string();
    let run = |listen: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["--listen", &listen, "healthcheck"])
            .output()
            .unwrap()
    };
    let up = tokio::task::spawn_blocking({
        let listen = listen.clone();
        move || run(listen)
    })
    .await
    .unwrap();
    assert!(up.status.success(), "{up:?}");
    gateway.stop().await;
    let down = tokio::task::spawn_blocking(move || run(listen))
        .await
        .unwrap();
    assert_eq!(down.status.code(), Some(1), "{down:?}");
}

/// A fake upstream over raw HTTP/2: every stream is answered by `answer`
/// with its number (0, 1, ...); returns its URI and the count of streams.
async fn fake_upstream(
    answer: fn(u32, h2::server::SendResponse<Bytes>),
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use std::sync::atomic::{AtomicU32, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(AtomicU32::new(0));
    let count = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = std::sync::Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((_request, respond))) = conn.accept().await {
                    answer(seen.fetch_add(1, Ordering::SeqCst), respond);
                }
            });
        }
    });
    (uri, count)
}

/// `GetStatusResponse { status: true }` from backend `fake`.
fn answer_ok(mut respond: h2::server::SendResponse<Bytes>) {
    let head = http::Response::builder()
        .header("content-type", "application/grpc")
        .header("x-backend-id", "fake")
        .body(())
        .unwrap();
    let mut body = respond.send_response(head, false).unwrap();
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x01]), false)
        .unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    body.send_trailers(trailers).unwrap();
}

#[tokio::test]
async fn a_call_the_upstream_never_processed_is_tried_again() {
    use std::sync::atomic::Ordering;
    // Every other stream refused (REFUSED_STREAM: provably never processed,
    // as a proxy that is going away or full answers it).
    let (uri, seen) = fake_upstream(|n, mut respond| {
        if n % 2 == 0 {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
        } else {
            answer_ok(respond);
        }
    })
    .await;
    let gateway = TestGateway::start(config(&uri, Duration::from_secs(2))).await;
    for call in 1..=3 {
        let (status, headers, json) = gateway.get("/alive").await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(headers["x-backend-id"], "fake");
        assert_eq!(
            seen.load(Ordering::SeqCst),
            2 * call,
            "one refused, one answered"
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_call_the_upstream_answered_unavailable_is_not_tried_again() {
    use std::sync::atomic::Ordering;
    // The server ran the call and said UNAVAILABLE: that is its answer.
    let (uri, seen) = fake_upstream(|_, mut respond| {
        let head = http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "14")
            .header("grpc-message", "overloaded")
            .body(())
            .unwrap();
        let _ = respond.send_response(head, true);
    })
    .await;
    let gateway = TestGateway::start(config(&uri, Duration::from_secs(2))).await;
    let (status, _, json) = gateway.get("/alive").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("overloaded"),
        "{json}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1, "asked once");
    gateway.stop().await;
}
