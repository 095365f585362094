//! The backend over real gRPC on 127.0.0.1: every service, the `x-backend-id`
//! metadata, the fault knobs, the `healthcheck` subcommand and the drain.

#![allow(clippy::unwrap_used)] // Tests panic on purpose.

use std::process::Command;
use std::time::Duration;

use backend::Config;
use backend::testing::TestBackend;
use proto::gateway::alive_service_client::AliveServiceClient;
use proto::gateway::echo_service_client::EchoServiceClient;
use proto::gateway::{EchoRequest, ExpandRequest, GetStatusRequest};
use proto::helloworld::HelloRequest;
use proto::helloworld::greeter_client::GreeterClient;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn channel(backend: &TestBackend) -> Channel {
    Channel::from_shared(backend.uri())
        .expect("valid uri")
        .connect()
        .await
        .expect("backend accepts connections")
}

fn id_of<T>(response: &tonic::Response<T>) -> Option<&str> {
    response
        .metadata()
        .get("x-backend-id")
        .and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn every_service_answers_and_names_the_backend() {
    let backend = TestBackend::start("b-one").await.unwrap();
    let channel = channel(&backend).await;

    let alive = AliveServiceClient::new(channel.clone())
        .get_status(GetStatusRequest {})
        .await
        .unwrap();
    assert!(alive.get_ref().status);
    assert_eq!(id_of(&alive), Some("b-one"));

    let hello = GreeterClient::new(channel.clone())
        .say_hello(HelloRequest {
            name: "world".into(),
        })
        .await
        .unwrap();
    assert_eq!(hello.get_ref().message, "Hello world");
    assert_eq!(id_of(&hello), Some("b-one"));

    let mut health = HealthClient::new(channel.clone());
    for service in [
        "",
        "gateway.AliveService",
        "helloworld.Greeter",
        "gateway.EchoService",
    ] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap();
        assert_eq!(
            answer.get_ref().status(),
            ServingStatus::Serving,
            "{service:?}"
        );
        assert_eq!(id_of(&answer), Some("b-one"));
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.Such".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    backend.stop().await.unwrap();
}

#[tokio::test]
async fn streams_end_with_the_status_and_trailer_asked_for() {
    let backend = TestBackend::start("b-echo").await.unwrap();
    let mut echo = EchoServiceClient::new(channel(&backend).await);

    let response = echo
        .expand(ExpandRequest {
            message: "m".into(),
            count: 3,
            trailer: "kept".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut stream = response.into_inner();
    let mut seen = Vec::new();
    while let Some(reply) = stream.message().await.unwrap() {
        assert_eq!(reply.backend_id, "b-echo");
        seen.push(reply.message);
    }
    assert_eq!(seen, ["m 0", "m 1", "m 2"]);
    let trailers = stream.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers.get("x-echo-trailer").unwrap(), "kept");

    let err = echo
        .echo(EchoRequest {
            message: "x".into(),
            status_code: Code::PermissionDenied as i32,
            status_message: "no entry".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), "no entry");
    backend.stop().await.unwrap();
}

#[tokio::test]
async fn fail_rate_one_answers_unavailable_but_health_stays_serving() {
    let mut config = Config::named("b-fail");
    config.fail_rate = 1.0;
    let backend = TestBackend::start_with(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let channel = channel(&backend).await;
    let err = AliveServiceClient::new(channel.clone())
        .get_status(GetStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("b-fail"), "{}", err.message());
    assert_eq!(
        err.metadata().get("x-backend-id").unwrap(),
        "b-fail",
        "a trailers-only error still names the backend"
    );
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(health.get_ref().status(), ServingStatus::Serving);
    backend.stop().await.unwrap();
}

#[tokio::test]
async fn delay_holds_each_call_back() {
    let mut config = Config::named("b-slow");
    config.delay = Duration::from_millis(300);
    let backend = TestBackend::start_with(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut client = AliveServiceClient::new(channel(&backend).await);
    let mut request = tonic::Request::new(GetStatusRequest {});
    request.set_timeout(Duration::from_millis(50));
    let started = std::time::Instant::now();
    let err = client.get_status(request).await.unwrap_err();
    // tonic's client enforces the same deadline locally and reports its own
    // expiry as CANCELLED "Timeout expired"; either way the call ended at the
    // deadline rather than after the backend's delay.
    let deadline_hit = err.code() == Code::DeadlineExceeded
        || (err.code() == Code::Cancelled && err.message() == "Timeout expired");
    assert!(deadline_hit, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    backend.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_turns_health_not_serving_and_lets_calls_in_flight_finish() {
    let mut backend = TestBackend::start("b-drain").await.unwrap();
    let channel = channel(&backend).await;

    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    // A stream whose first reply proves the call is in flight on the backend.
    let mut stream = EchoServiceClient::new(channel)
        .expand(ExpandRequest {
            message: "drain".into(),
            count: 3,
            interval_ms: 200,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let reply = stream.message().await.unwrap().unwrap();
    assert_eq!(reply.seq, 0);

    backend.begin_shutdown();
    let next = watch.message().await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);

    let mut rest = Vec::new();
    while let Some(reply) = stream.message().await.unwrap() {
        rest.push(reply.seq);
    }
    assert_eq!(rest, [1, 2], "the call in flight finished");
    drop(watch);
    backend.stop().await.unwrap();
}

#[tokio::test]
async fn healthcheck_subcommand_exits_zero_only_when_serving() {
    let backend = TestBackend::start("b-hc").await.unwrap();
    let addr = backend.addr().to_string();
    let run = |addr: &str| {
        Command::new(env!("CARGO_BIN_EXE_backend"))
            .args(["healthcheck", "--addr", addr, "--timeout", "2s"])
            .output()
            .expect("backend binary runs")
    };
    let up = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || run(&addr)
    })
    .await
    .unwrap();
    assert!(up.status.success(), "{up:?}");
    assert_eq!(String::from_utf8_lossy(&up.stdout).trim(), "SERVING");

    backend.stop().await.unwrap();
    let down = tokio::task::spawn_blocking(move || run(&addr))
        .await
        .unwrap();
    assert_eq!(down.status.code(), Some(1), "{down:?}");
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("cannot connect"),
        "{down:?}"
    );
}

#[test]
fn bad_flags_exit_64_with_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_backend"))
        .args(["--fail-rate", "2", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--fail-rate"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
