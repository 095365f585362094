//! Routes and live reload through the real `run()`: services on their own
//! backends, no-route answers, and reloads under steady load that add,
//! move and remove clusters and listeners without losing a call or a
//! client connection.

#![allow(clippy::unwrap_used)] // Tests panic on purpose.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use backend::testing::TestBackend;
use proto::gateway::EchoRequest;
use proto::helloworld::HelloRequest;
use proto::helloworld::greeter_client::GreeterClient;
use proxy::config::Cli;
use serde_json::Value;
use support::{TestProxy, Traffic, eventually, http_get};

/// A config file in a directory of its own, rewritten as an editor would
/// (a new file renamed over the old one).
struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    fn new(test: &str, yaml: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("proxy-routes-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = ConfigFile {
            path: dir.join("proxy.yaml"),
            dir,
        };
        file.write(yaml);
        file
    }

    fn write(&self, yaml: &str) {
        let tmp = self.dir.join("proxy.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    fn load(&self) -> proxy::Config {
        proxy::Config::load(&Cli {
            config: Some(self.path.clone()),
            ..Cli::default()
        })
        .unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cluster(name: &str, backends: &[&TestBackend]) -> String {
    let ups: Vec<String> = backends.iter().map(|b| b.addr().to_string()).collect();
    format!(
        "  - name: {name}\n    upstreams: [{}]\n    lb: round_robin\n    health_check: {{ interval: 100ms }}\n",
        ups.join(", ")
    )
}

fn file(listeners: &str, clusters: &[String]) -> String {
    format!(
        "admin: 127.0.0.1:0\naccess_log: true\ndrain_timeout: 5s\nlisteners:\n{listeners}clusters:\n{}",
        clusters.concat()
    )
}

async fn config_dump(proxy: &TestProxy) -> Value {
    let (status, body) = proxy.admin_get("/config_dump").await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

async fn version(proxy: &TestProxy) -> u64 {
    config_dump(proxy).await["version"].as_u64().unwrap()
}

async fn stat(proxy: &TestProxy, name: &str) -> u64 {
    let (_, body) = proxy.admin_get("/stats").await;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map_or(0, |v| v.parse().unwrap())
}

async fn wait_for_version(proxy: &TestProxy, want: u64) {
    eventually(
        &format!("configuration version {want} is in force"),
        Duration::from_secs(15),
        || async { version(proxy).await >= want },
    )
    .await;
    assert_eq!(version(proxy).await, want, "one reload per file change");
}

/// Waits until `n` hosts have passed their health checks.
async fn wait_healthy(proxy: &TestProxy, n: usize) {
    eventually(
        &format!("{n} hosts are healthy"),
        Duration::from_secs(10),
        || async {
            proxy
                .clusters()
                .await
                .values()
                .filter(|v| *v == "healthy")
                .count()
                == n
        },
    )
    .await;
}

async fn start(path: &Path, file: &ConfigFile) -> TestProxy {
    assert_eq!(file.path, path);
    TestProxy::start(file.load()).await
}

async fn greet(
    client: &mut GreeterClient<tonic::transport::Channel>,
) -> Result<String, tonic::Status> {
    let reply = client.say_hello(HelloRequest { name: "x".into() }).await?;
    Ok(reply
        .metadata()
        .get("x-backend-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned())
}

#[tokio::test]
async fn each_service_lands_on_its_own_backends_and_unknown_paths_get_unimplemented() {
    let greeters = [
        TestBackend::start("g0").await.unwrap(),
        TestBackend::start("g1").await.unwrap(),
    ];
    let echoes = [
        TestBackend::start("e0").await.unwrap(),
        TestBackend::start("e1").await.unwrap(),
    ];
    let listeners = "  - name: ingress\n    address: 127.0.0.1:0\n    routes:\n      \
        - match: { prefix: /helloworld.Greeter/ }\n        route: { cluster: greeter }\n      \
        - match: { path: /gateway.EchoService/Echo }\n        route: { cluster: echo }\n";
    let yaml = file(
        listeners,
        &[
            cluster("greeter", &[&greeters[0], &greeters[1]]),
            cluster("echo", &[&echoes[0], &echoes[1]]),
        ],
    );
    let config = ConfigFile::new("services", &yaml);
    let proxy = start(&config.path, &config).await;
    let channel = proxy.channel().await;
    wait_healthy(&proxy, 4).await;

    let mut greeter = GreeterClient::new(channel.clone());
    let mut echo = proto::gateway::echo_service_client::EchoServiceClient::new(channel.clone());
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..20 {
        *counts
            .entry(format!("greet:{}", greet(&mut greeter).await.unwrap()))
            .or_default() += 1;
        let id = support::echo(&mut echo, "x").await.unwrap();
        *counts.entry(format!("echo:{id}")).or_default() += 1;
    }
    assert_eq!(
        counts,
        [
            ("echo:e0", 10),
            ("echo:e1", 10),
            ("greet:g0", 10),
            ("greet:g1", 10)
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        "each service on its own backends, spread evenly"
    );

    // A path no route matches: UNIMPLEMENTED naming it, counted and logged.
    let mut alive = proto::gateway::alive_service_client::AliveServiceClient::new(channel);
    let status = alive
        .get_status(proto::gateway::GetStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert_eq!(
        status.message(),
        "no route for /gateway.AliveService/GetStatus"
    );
    assert_eq!(stat(&proxy, "http.ingress.no_route").await, 1);
    eventually(
        "the access log has the NR line",
        Duration::from_secs(5),
        || async {
            proxy
                .log
                .lines()
                .iter()
                .any(|l| l.contains("/gateway.AliveService/GetStatus") && l.contains(" 200 NR "))
        },
    )
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn reloads_under_load_add_move_and_remove_clusters_without_losing_a_call() {
    let a = [
        TestBackend::start("a0").await.unwrap(),
        TestBackend::start("a1").await.unwrap(),
    ];
    let b = [
        TestBackend::start("b0").await.unwrap(),
        TestBackend::start("b1").await.unwrap(),
    ];
    let listeners = |target: &str| {
        format!(
            "  - name: ingress\n    address: 127.0.0.1:0\n    routes:\n      - route: {{ cluster: {target} }}\n"
        )
    };
    let config = ConfigFile::new(
        "reload",
        &file(&listeners("a"), &[cluster("a", &[&a[0], &a[1]])]),
    );
    let proxy = start(&config.path, &config).await;
    assert_eq!(version(&proxy).await, 1);
    wait_healthy(&proxy, 2).await;

    // Steady load on one client connection all along.
    let traffic = Traffic::start(proxy.channel().await, 4, EchoRequest::default());
    eventually("calls flow to a", Duration::from_secs(10), || async {
        traffic.count("a0") > 20 && traffic.count("a1") > 20
    })
    .await;

    // 1. Add cluster b and move the route to it: b is warmed (health-checked)
    // before the first call goes there.
    config.write(&file(
        &listeners("b"),
        &[cluster("a", &[&a[0], &a[1]]), cluster("b", &[&b[0], &b[1]])],
    ));
    wait_for_version(&proxy, 2).await;
    let (a_then, b_then) = (
        traffic.count("a0") + traffic.count("a1"),
        traffic.count("b0") + traffic.count("b1"),
    );
    eventually("calls flow to b", Duration::from_secs(10), || async {
        traffic.count("b0") > b_then + 20 && traffic.count("b1") > b_then + 20
    })
    .await;
    // No new call went to a after the swap (calls in flight then may finish).
    let a_now = traffic.count("a0") + traffic.count("a1");
    assert!(
        a_now <= a_then + 4,
        "a got {} calls after the route moved",
        a_now - a_then
    );

    // 2. Remove cluster a.
    config.write(&file(&listeners("b"), &[cluster("b", &[&b[0], &b[1]])]));
    wait_for_version(&proxy, 3).await;
    let dump = config_dump(&proxy).await;
    let names: Vec<&str> = dump["config"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b"]);
    let (_, clusters) = proxy.admin_get("/clusters").await;
    assert!(!clusters.contains("a::"), "{clusters}");
    let b_before = traffic.count("b0") + traffic.count("b1");
    eventually("calls keep flowing", Duration::from_secs(10), || async {
        traffic.count("b0") + traffic.count("b1") > b_before + 50
    })
    .await;

    let tally = traffic.stop().await;
    assert_eq!(
        tally.failed,
        Vec::<String>::new(),
        "no call lost to a reload"
    );
    assert_eq!(
        stat(&proxy, "http.ingress.downstream_cx_total").await,
        1,
        "the client's one connection was kept through every reload"
    );
    assert_eq!(stat(&proxy, "config.update_success").await, 2);
    assert!(tally.ok_total() > 200, "{} calls", tally.ok_total());
    proxy.stop().await;
}

#[tokio::test]
async fn a_broken_file_changes_nothing_and_says_why() {
    let a = TestBackend::start("a0").await.unwrap();
    let good = file(
        "  - name: ingress\n    address: 127.0.0.1:0\n    cluster: a\n",
        &[cluster("a", &[&a])],
    );
    let config = ConfigFile::new("broken", &good);
    let proxy = start(&config.path, &config).await;
    let mut client =
        proto::gateway::echo_service_client::EchoServiceClient::new(proxy.channel().await);
    eventually("a is healthy", Duration::from_secs(10), || {
        let mut client = client.clone();
        async move { support::echo(&mut client, "x").await.is_ok() }
    })
    .await;
    let before = config_dump(&proxy).await;

    // A route to a cluster that does not exist, then a YAML syntax error.
    config.write(&good.replace("cluster: a\n", "cluster: nowhere\n"));
    eventually("the first rejection", Duration::from_secs(10), || async {
        stat(&proxy, "config.update_rejected").await == 1
    })
    .await;
    let dump = config_dump(&proxy).await;
    assert_eq!(dump["version"], 1);
    assert_eq!(
        dump["config"], before["config"],
        "the running configuration stays"
    );
    assert_eq!(dump["last_update"]["result"], "rejected");
    let problems = dump["last_update"]["problems"].to_string();
    assert!(
        problems.contains("\\\"nowhere\\\", which is not defined"),
        "{problems}"
    );

    config.write("listeners: [ {name: x\n");
    eventually("the second rejection", Duration::from_secs(10), || async {
        stat(&proxy, "config.update_rejected").await == 2
    })
    .await;
    assert_eq!(version(&proxy).await, 1);
    assert_eq!(support::echo(&mut client, "x").await.unwrap(), "a0");
    assert_eq!(stat(&proxy, "config.update_success").await, 0);
    proxy.stop().await;
}

#[tokio::test]
async fn listeners_come_and_go_with_the_file() {
    let a = TestBackend::start("a0").await.unwrap();
    let one = "  - name: ingress\n    address: 127.0.0.1:0\n    cluster: a\n";
    let config = ConfigFile::new("listeners", &file(one, &[cluster("a", &[&a])]));
    let proxy = start(&config.path, &config).await;

    let two = format!("{one}  - name: second\n    address: 127.0.0.1:0\n    cluster: a\n");
    config.write(&file(&two, &[cluster("a", &[&a])]));
    wait_for_version(&proxy, 2).await;
    let (_, listeners) = proxy.admin_get("/listeners").await;
    let second: std::net::SocketAddr = listeners
        .lines()
        .find_map(|l| l.strip_prefix("second::"))
        .unwrap_or_else(|| panic!("no second listener in {listeners}"))
        .parse()
        .unwrap();
    assert!(
        listeners.contains(&format!("ingress::{}", proxy.addr)),
        "{listeners}"
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://{second}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = proto::gateway::echo_service_client::EchoServiceClient::new(channel);
    eventually("the new listener serves", Duration::from_secs(10), || {
        let mut client = client.clone();
        async move { support::echo(&mut client, "x").await.is_ok() }
    })
    .await;

    // Removed again: no new connections there.
    config.write(&file(one, &[cluster("a", &[&a])]));
    wait_for_version(&proxy, 3).await;
    eventually(
        "the removed listener stops accepting",
        Duration::from_secs(10),
        || async { tokio::net::TcpStream::connect(second).await.is_err() },
    )
    .await;
    let (status, _) = http_get(proxy.admin, "/ready").await;
    assert_eq!(status, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn a_route_overrides_the_timeout_and_one_cluster_full_of_slow_calls_does_not_slow_another() {
    let slow = TestBackend::start("slow").await.unwrap();
    let fast = TestBackend::start("fast").await.unwrap();
    let listeners = "  - name: ingress\n    address: 127.0.0.1:0\n    routes:\n      \
        - match: { prefix: /, headers: [{ name: x-short, present: true }] }\n        route: { cluster: slow, timeout: 200ms }\n      \
        - match: { prefix: /, headers: [{ name: x-fast, exact: \"1\" }] }\n        route: { cluster: fast }\n      \
        - route: { cluster: slow }\n";
    let limited = cluster("slow", &[&slow]).replace(
        "    lb: round_robin\n",
        "    lb: round_robin\n    circuit_breakers: { max_requests: 4 }\n",
    );
    let config = ConfigFile::new(
        "isolated",
        &file(listeners, &[limited, cluster("fast", &[&fast])]),
    );
    let proxy = start(&config.path, &config).await;
    let channel = proxy.channel().await;
    wait_healthy(&proxy, 2).await;
    let call = |delay_ms: u32, header: Option<(&'static str, &'static str)>| {
        let mut client =
            proto::gateway::echo_service_client::EchoServiceClient::new(channel.clone());
        async move {
            let mut request = tonic::Request::new(EchoRequest {
                delay_ms,
                ..Default::default()
            });
            if let Some((k, v)) = header {
                request.metadata_mut().insert(k, v.parse().unwrap());
            }
            client
                .echo(request)
                .await
                .map(|r| r.into_inner().backend_id)
        }
    };

    // The route's 200ms cap ends a 2s call; the same call on the default route finishes.
    let capped = call(2_000, Some(("x-short", "1"))).await.unwrap_err();
    assert_eq!(capped.code(), tonic::Code::DeadlineExceeded, "{capped:?}");

    // Fill the slow cluster's max_requests with long calls...
    let hogs: Vec<_> = (0..4).map(|_| tokio::spawn(call(1_500, None))).collect();
    eventually(
        "the slow cluster is full",
        Duration::from_secs(5),
        || async { stat(&proxy, "cluster.slow.upstream_rq_active").await == 4 },
    )
    .await;
    // ...its next call is refused at once, and the other cluster's calls are untouched.
    let refused = call(0, None).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(refused.message().contains("cluster slow"), "{refused:?}");
    let started = std::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(call(0, Some(("x-fast", "1"))).await.unwrap(), "fast");
    }
    assert!(
        stat(&proxy, "cluster.slow.upstream_rq_active").await == 4,
        "the fast calls ran while the slow cluster was full ({:?} for 20)",
        started.elapsed()
    );
    for hog in hogs {
        assert_eq!(hog.await.unwrap().unwrap(), "slow");
    }
    assert_eq!(
        stat(&proxy, "cluster.fast.upstream_rq_pending_overflow").await,
        0
    );
    proxy.stop().await;
}
