//! A backend dying, restarting, draining or failing costs the caller nothing.
//!
//! Backends here are real `backend` processes, stopped with real signals:
//! SIGKILL (a crash: sockets closed by the kernel mid-call) and SIGTERM (an
//! orchestrator's stop: NOT_SERVING, GOAWAY, drain). A steady, bounded stream
//! of calls runs over one client connection throughout, and every failure the
//! client sees is counted.

#![allow(clippy::unwrap_used)] // Tests panic on purpose.

mod support;

use std::time::{Duration, Instant};

use proto::gateway::EchoRequest;
use proto::gateway::echo_service_client::EchoServiceClient;
use proxy::config::{Config, HealthCheckConfig, Mode, OutlierConfig, RetryOn};
use support::{Process, TestProxy, Traffic, backends, config, eventually, upstreams};
use tonic::Code;

/// The resilience settings of compose/front-proxy.yaml, with shorter times.
fn resilient(upstreams: &[String]) -> Config {
    let mut config = config(upstreams, Mode::L7);
    let cluster = &mut config.clusters[0];
    cluster.health_check = Some(HealthCheckConfig {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(500),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        service: String::new(),
    });
    cluster.outlier_detection = Some(OutlierConfig {
        consecutive_failures: 3,
        base_ejection_time: Duration::from_secs(1),
        max_ejection_time: Duration::from_secs(10),
        max_ejection_percent: 50,
    });
    cluster.retry.retry_on = vec![RetryOn::Reset, RetryOn::Unavailable];
    config
}

/// Calls that take a little while, so that some are always in flight.
fn slowish() -> EchoRequest {
    EchoRequest {
        message: "x".into(),
        delay_ms: 20,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_sigterm_of_backends_lose_no_call_and_a_restarted_one_returns() {
    let mut b0 = Process::backend("b0", "127.0.0.1:0", &[]);
    let b1 = Process::backend("b1", "127.0.0.1:0", &[]);
    let _b2 = Process::backend("b2", "127.0.0.1:0", &[]);
    let addrs = [b0.addr, b1.addr, _b2.addr].map(|a| a.to_string());
    let proxy = TestProxy::start(resilient(&addrs)).await;
    let traffic = Traffic::start(proxy.channel().await, 4, slowish());

    eventually(
        "every backend takes calls",
        Duration::from_secs(10),
        || async { ["b0", "b1", "b2"].iter().all(|id| traffic.count(id) > 20) },
    )
    .await;

    // A crash: SIGKILL while calls are in flight on it.
    b0.kill();
    let after_kill = traffic.count("b1") + traffic.count("b2");
    eventually(
        "calls flow on after the crash",
        Duration::from_secs(10),
        || async { traffic.count("b1") + traffic.count("b2") > after_kill + 200 },
    )
    .await;

    // An orchestrator's stop: SIGTERM, so NOT_SERVING, GOAWAY, drain, exit.
    b1.terminate();
    let mut b1 = b1;
    let exited = tokio::task::spawn_blocking(move || b1.wait())
        .await
        .unwrap();
    assert!(
        exited.success(),
        "b1 drained and exited cleanly: {exited:?}"
    );
    let after_term = traffic.count("b2");
    eventually(
        "calls flow on after the drain",
        Duration::from_secs(10),
        || async { traffic.count("b2") > after_term + 200 },
    )
    .await;
    assert_eq!(traffic.failures(), Vec::<String>::new(), "no call failed");

    // The crashed backend comes back on its address: health checks let it in.
    let before = traffic.count("b0");
    let started = Instant::now();
    let _b0 = Process::backend("b0", &addrs[0], &[]);
    eventually(
        "the restarted backend takes calls again",
        Duration::from_secs(20),
        || async { traffic.count("b0") > before + 20 },
    )
    .await;
    let back_after = started.elapsed();

    let tally = traffic.stop().await;
    assert_eq!(tally.failed, Vec::<String>::new(), "no call failed");
    eprintln!(
        "calls: {:?}, failures: {}, restarted backend back after {back_after:?}",
        tally.ok,
        tally.failed.len()
    );
    let (_, stats) = proxy.admin_get("/stats").await;
    eprintln!(
        "{}",
        stats
            .lines()
            .filter(|l| l.contains("retry") || l.contains("outlier") || l.contains("health_check"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_is_ejected_and_retries_hide_its_failures() {
    let b0 = Process::backend("b0", "127.0.0.1:0", &[]);
    let b1 = Process::backend("b1", "127.0.0.1:0", &[]);
    let bad = Process::backend("bad", "127.0.0.1:0", &["--fail-rate", "1.0"]);
    let addrs = [b0.addr, b1.addr, bad.addr].map(|a| a.to_string());

    // With retries on UNAVAILABLE (2 per call, budget at least 3 retries in
    // flight) and 3 calls in flight at most, every call that meets the failing
    // backend is retried on a healthy one: the client sees no failure at all.
    let proxy = TestProxy::start(resilient(&addrs)).await;
    let traffic = Traffic::start(proxy.channel().await, 3, slowish());
    eventually(
        "the failing backend is ejected",
        Duration::from_secs(10),
        || async {
            let clusters = proxy.clusters().await;
            clusters[&(bad.addr.to_string(), "health_flags".into())]
                .contains("failed_outlier_check")
        },
    )
    .await;
    eventually("calls go on", Duration::from_secs(10), || async {
        traffic.count("b0") + traffic.count("b1") > 300
    })
    .await;
    let tally = traffic.stop().await;
    assert_eq!(
        tally.failed,
        Vec::<String>::new(),
        "retries hid every failure"
    );
    assert_eq!(
        tally.ok.get("bad"),
        None,
        "no success can come from the failing backend"
    );
    let clusters = proxy.clusters().await;
    let bad_errors: u64 = clusters[&(bad.addr.to_string(), "rq_error".into())]
        .parse()
        .unwrap();
    eprintln!(
        "with retries: {} calls ok, 0 failed; the failing backend answered {bad_errors} attempts, all retried",
        tally.ok_total()
    );
    proxy.stop().await;

    // Without retries the client sees the failures outlier detection lets
    // through: 3 consecutive failures eject the host (ejection here lasts far
    // longer than the test), plus at most one call per other call in flight
    // that was already on its way there: 3 + (3 - 1) = 5.
    let mut config = resilient(&addrs);
    config.clusters[0].retry.retry_on.clear();
    config.clusters[0]
        .outlier_detection
        .as_mut()
        .unwrap()
        .base_ejection_time = Duration::from_secs(60);
    config.clusters[0]
        .outlier_detection
        .as_mut()
        .unwrap()
        .max_ejection_time = Duration::from_secs(60);
    let proxy = TestProxy::start(config).await;
    let traffic = Traffic::start(proxy.channel().await, 3, slowish());
    eventually("calls go on", Duration::from_secs(10), || async {
        traffic.count("b0") + traffic.count("b1") > 300
    })
    .await;
    let tally = traffic.stop().await;
    let failed = tally.failed.len();
    assert!(
        (1..=5).contains(&failed),
        "{failed} failures: {:?}",
        tally.failed
    );
    assert!(
        tally.failed.iter().all(|f| f.starts_with("Unavailable")),
        "{:?}",
        tally.failed
    );
    eprintln!(
        "without retries: {} calls ok, {failed} failed (bound: 5)",
        tally.ok_total()
    );
    proxy.stop().await;
}

#[tokio::test]
async fn grpc_timeout_expiry_is_deadline_exceeded_in_time_and_long_streams_live_on() {
    let backends = backends(1).await;
    let proxy = TestProxy::start(config(&upstreams(&backends), Mode::L7)).await;
    let mut client = EchoServiceClient::new(proxy.channel().await);

    // A server stream with 1.5 s of silence between messages, 4.5 s in all:
    // no default timeout cuts it.
    let started = Instant::now();
    let mut stream = client
        .expand(proto::gateway::ExpandRequest {
            message: "slow".into(),
            count: 4,
            interval_ms: 1500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while stream.message().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 4);
    assert!(started.elapsed() >= Duration::from_millis(4500));
    proxy.stop().await;
}

#[tokio::test]
async fn idle_and_request_timeouts_end_calls_when_configured() {
    let backends = backends(1).await;
    let mut config = config(&upstreams(&backends), Mode::L7);
    config.clusters[0].idle_timeout = Some(Duration::from_millis(300));
    let proxy = TestProxy::start(config).await;
    let mut client = EchoServiceClient::new(proxy.channel().await);
    let mut stream = client
        .expand(proto::gateway::ExpandRequest {
            message: "gappy".into(),
            count: 3,
            interval_ms: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "stream idle timeout");
    proxy.stop().await;

    let mut config = support::config(&upstreams(&backends), Mode::L7);
    config.clusters[0].request_timeout = Some(Duration::from_millis(300));
    let proxy = TestProxy::start(config).await;
    let mut client = EchoServiceClient::new(proxy.channel().await);
    let started = Instant::now();
    let err = client
        .echo(EchoRequest {
            delay_ms: 5000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(2));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breakers_hold_under_a_burst_with_clear_errors() {
    let backends = backends(1).await;
    let mut config = config(&upstreams(&backends), Mode::L7);
    config.clusters[0].circuit_breakers.max_requests = 5;
    let proxy = TestProxy::start(config).await;
    let channel = proxy.channel().await;

    // 20 calls at once, each held 1 s by the backend: 5 fit.
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let mut client = EchoServiceClient::new(channel.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let result = client
                    .echo(EchoRequest {
                        delay_ms: 1000,
                        ..Default::default()
                    })
                    .await;
                (result, started.elapsed())
            })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for call in calls {
        let (result, took) = call.await.unwrap();
        match result {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable);
                assert!(
                    status.message().contains("max_requests (5)"),
                    "{}",
                    status.message()
                );
                assert!(
                    took < Duration::from_millis(900),
                    "refused at once, not queued: {took:?}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (5, 15));
    let (_, stats) = proxy.admin_get("/stats").await;
    assert!(
        stats.contains("cluster.backend.upstream_rq_pending_overflow: 15\n"),
        "{stats}"
    );
    let (_, clusters) = proxy.admin_get("/clusters").await;
    assert!(clusters.contains("backend::default_priority::max_requests::5\n"));
    proxy.stop().await;
}

#[tokio::test]
async fn proxy_sigterm_fails_ready_first_and_lets_calls_in_flight_finish() {
    let backends = backends(1).await;
    let upstream = backends[0].addr().to_string();
    let mut proxy = Process::start(
        "proxy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--upstream",
            &upstream,
            "--access-log",
            "off",
        ],
        "listening",
    );
    // The admin address is announced on its own line.
    let admin = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = proxy.log_text();
            if let Some(addr) = text
                .lines()
                .filter(|l| l.contains("admin interface listening"))
                .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
            {
                break addr.parse::<std::net::SocketAddr>().unwrap();
            }
            assert!(Instant::now() < deadline, "no admin address in {text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert_eq!(support::http_get(admin, "/ready").await.0, 200);

    let channel = tonic::transport::Channel::from_shared(format!("http://{}", proxy.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = EchoServiceClient::new(channel);
    let mut slow = client.clone();
    let in_flight = tokio::spawn(async move {
        slow.echo(EchoRequest {
            message: "finish me".into(),
            delay_ms: 1500,
            ..Default::default()
        })
        .await
    });
    // Make sure the slow call reached the backend before the signal.
    client.echo(EchoRequest::default()).await.unwrap();
    eventually(
        "the slow call is in flight",
        Duration::from_secs(5),
        || async {
            let (_, stats) = support::http_get(admin, "/stats").await;
            stats.contains("cluster.backend.upstream_rq_active: 1\n")
        },
    )
    .await;

    proxy.terminate();
    eventually(
        "/ready fails while draining",
        Duration::from_secs(5),
        || async {
            tokio::net::TcpStream::connect(admin).await.is_err()
                || support::http_get(admin, "/ready").await.0 == 503
        },
    )
    .await;
    let reply = in_flight.await.unwrap().unwrap();
    assert_eq!(reply.get_ref().message, "finish me");
    let exited = tokio::task::spawn_blocking(move || {
        let status = proxy.wait();
        (status, proxy.log_text())
    })
    .await
    .unwrap();
    assert!(exited.0.success(), "{exited:?}");
    assert!(exited.1.contains("draining"), "{}", exited.1);
    assert!(exited.1.contains("all calls finished"), "{}", exited.1);
}

#[tokio::test]
async fn calls_still_running_at_the_drain_deadline_end_with_unavailable() {
    let backends = backends(1).await;
    let mut config = config(&upstreams(&backends), Mode::L7);
    config.drain_timeout = Duration::from_millis(300);
    let mut proxy = TestProxy::start(config).await;
    let mut client = EchoServiceClient::new(proxy.channel().await);
    // One call waits for its host's head, the other has its head forwarded
    // and its body piped: a call's one wait for the deadline covers both.
    let waiting = tokio::spawn({
        let mut client = client.clone();
        async move {
            client
                .echo(EchoRequest {
                    delay_ms: 5000,
                    ..Default::default()
                })
                .await
        }
    });
    let mut streaming = client
        .expand(proto::gateway::ExpandRequest {
            message: "long".into(),
            count: 50,
            interval_ms: 200,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        streaming.message().await.unwrap().is_some(),
        "a reply is through"
    );
    eventually(
        "both calls are in flight",
        Duration::from_secs(5),
        || async {
            proxy
                .admin_get("/stats")
                .await
                .1
                .contains("upstream_rq_active: 2\n")
        },
    )
    .await;
    let started = Instant::now();
    proxy.begin_shutdown();
    let streamed = loop {
        match streaming.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended OK; it should have been cut"),
            Err(err) => break err,
        }
    };
    let waited = waiting.await.unwrap().unwrap_err();
    for err in [waited, streamed] {
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert_eq!(err.message(), "proxy shutting down");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    proxy.stop().await;
}

/// A SIGTERM that arrives as soon as the proxy listens (an orchestrator
/// stopping a task that has just started) drains it: the process logs the
/// signal and exits cleanly instead of being killed by the signal's default
/// action, which would cut the calls it had already taken.
#[test]
fn a_sigterm_as_soon_as_it_listens_drains_instead_of_killing() {
    let mut proxy = Process::start(
        "proxy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "off",
            "--upstream",
            "127.0.0.1:9",
        ],
        "listening",
    );
    proxy.terminate();
    let exited = proxy.wait();
    assert!(
        exited.success(),
        "exited cleanly after a drain: {exited:?}\n{}",
        proxy.log_text()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proxy.log_text().contains("signal received") && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(
        proxy.log_text().contains("signal received"),
        "the signal was caught and logged:\n{}",
        proxy.log_text()
    );
}
