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
