//! Shared by the proxy's integration tests: the real `proxy::run_with_log` on
//! 127.0.0.1:0, real backends, gRPC clients, an admin client, and a DNS server
//! whose answers the test controls.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backend::testing::TestBackend;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use proto::gateway::EchoRequest;
use proto::gateway::echo_service_client::EchoServiceClient;
use proxy::config::{ClusterConfig, Config, ListenerConfig, Mode, Upstream};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// Everything the access log wrote, shared with the test.
#[derive(Clone, Default)]
pub struct LogSink(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogSink {
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// A configuration with one listener on 127.0.0.1:0 and one cluster `backend`.
pub fn config(upstreams: &[String], mode: Mode) -> Config {
    let upstreams = upstreams
        .iter()
        .map(|u| u.parse::<Upstream>().unwrap())
        .collect();
    Config {
        admin: Some("127.0.0.1:0".parse().unwrap()),
        access_log: true,
        access_log_format: proxy::config::AccessLogFormat::Envoy,
        listeners: vec![ListenerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            mode,
            "backend",
        )],
        clusters: vec![ClusterConfig::new("backend", upstreams)],
        dns_resolvers: Vec::new(),
        workers: 0,
        drain_timeout: Duration::from_secs(5),
        traces: None,
        source: None,
    }
}

/// A running proxy.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub log: LogSink,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), proxy::Error>>>,
}

impl TestProxy {
    pub async fn start(config: Config) -> Self {
        let listeners = proxy::Listeners::bind(&config).await.unwrap();
        let addr = listeners.proxy_addr(0).unwrap();
        let admin = listeners.admin_addr().unwrap();
        let log = LogSink::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(proxy::run_with_log(
            config,
            listeners,
            async {
                let _ = stopped.await;
            },
            Box::new(log.clone()),
        ));
        TestProxy {
            addr,
            admin,
            log,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A gRPC channel to the proxy: one HTTP/2 connection.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.uri())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Begins the drain, as SIGTERM would.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Drains and waits for `run` to return.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    /// `GET path` on the admin interface: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).await
    }

    /// `/clusters` parsed into {(host, stat): value}.
    pub async fn clusters(&self) -> HashMap<(String, String), String> {
        let (status, body) = self.admin_get("/clusters").await;
        assert_eq!(status, 200);
        let mut out = HashMap::new();
        for line in body.lines() {
            let parts: Vec<&str> = line.split("::").collect();
            if parts.len() == 4 {
                out.insert(
                    (parts[1].to_owned(), parts[2].to_owned()),
                    parts[3].to_owned(),
                );
            }
        }
        out
    }

    /// `rq_total` of one host in `/clusters`.
    pub async fn rq_total(&self, host: SocketAddr) -> u64 {
        self.clusters()
            .await
            .get(&(host.to_string(), "rq_total".to_owned()))
            .map_or(0, |v| v.parse().unwrap())
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `GET path` over HTTP/1.1 on a fresh connection: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header("host", "admin")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Starts `n` backends named `b0`.. on 127.0.0.1:0.
pub async fn backends(n: usize) -> Vec<TestBackend> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(TestBackend::start(&format!("b{i}")).await.unwrap());
    }
    out
}

/// The `host:port` upstream strings of `backends`.
pub fn upstreams(backends: &[TestBackend]) -> Vec<String> {
    backends.iter().map(|b| b.addr().to_string()).collect()
}

/// One Echo call; returns the answering backend's id.
pub async fn echo(
    client: &mut EchoServiceClient<Channel>,
    message: &str,
) -> Result<String, tonic::Status> {
    let reply = client
        .echo(EchoRequest {
            message: message.into(),
            ..Default::default()
        })
        .await?;
    let id = reply
        .metadata()
        .get("x-backend-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(reply.get_ref().backend_id, id, "metadata and body agree");
    Ok(id)
}

/// Polls `f` until it returns true, failing after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Binds backends on the same port of 127.0.0.1, 127.0.0.2, ... so that one
/// DNS name with several A records can point at all of them.
pub async fn backends_on_one_port(n: usize) -> (u16, Vec<Option<TestBackend>>) {
    'port: for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for i in 2..=n {
            match TcpListener::bind((IpAddr::from([127, 0, 0, i as u8]), port)).await {
                Ok(l) => listeners.push(l),
                Err(_) => continue 'port,
            }
        }
        let backends = listeners
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                Some(TestBackend::serve(
                    backend::Config::named(format!("b{i}")),
                    l,
                ))
            })
            .collect();
        return (port, backends);
    }
    panic!("no port free on every loopback address");
}

/// A DNS server on 127.0.0.1 answering A queries for one name from a set the
/// test changes at will; other names get NXDOMAIN.
pub struct TestDns {
    pub addr: SocketAddr,
    records: Arc<Mutex<Vec<IpAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestDns {
    pub async fn start(name: &str, records: Vec<IpAddr>) -> Self {
        use hickory_proto::op::{Message, MessageType, ResponseCode};
        use hickory_proto::rr::{Name, RData, Record, RecordType, rdata::A};

        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let records = Arc::new(Mutex::new(records));
        let served = Arc::clone(&records);
        let name = Name::from_ascii(format!("{name}.")).unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut reply = Message::new();
                reply
                    .set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(query.op_code())
                    .set_recursion_desired(query.recursion_desired())
                    .set_recursion_available(true)
                    .set_authoritative(true);
                for q in query.queries() {
                    reply.add_query(q.clone());
                    if q.name() != &name {
                        reply.set_response_code(ResponseCode::NXDomain);
                        continue;
                    }
                    if q.query_type() == RecordType::A {
                        for ip in served.lock().unwrap().iter() {
                            if let IpAddr::V4(v4) = ip {
                                reply.add_answer(Record::from_rdata(
                                    q.name().clone(),
                                    0,
                                    RData::A(A(*v4)),
                                ));
                            }
                        }
                    }
                }
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        TestDns {
            addr,
            records,
            task,
        }
    }

    pub fn set(&self, records: Vec<IpAddr>) {
        *self.records.lock().unwrap() = records;
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A program of this workspace run as a real process, so that tests can stop
/// it the way an orchestrator does (SIGTERM) or the way a crash does (SIGKILL).
/// Its log is read for the address it announces.
pub struct Process {
    child: std::process::Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Where cargo put the workspace's binaries (next to the test executable).
pub fn binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build --bins` first)",
        path.display()
    );
    path
}

impl Process {
    /// Starts `name` with `args`; waits for a stderr line containing `ready`
    /// and an `addr=IP:PORT` field.
    pub fn start(name: &str, args: &[&str], ready: &str) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(binary(name))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let ready = ready.to_owned();
        std::thread::spawn({
            let log = log.clone();
            move || {
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { return };
                    if line.contains(&ready)
                        && let Some(addr) = line
                            .split_whitespace()
                            .find_map(|w| w.strip_prefix("addr="))
                            .and_then(|a| a.parse::<SocketAddr>().ok())
                    {
                        let _ = tx.send(addr);
                    }
                    log.lock().unwrap().push(line);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("{name} did not start: {:?}", log.lock().unwrap());
            }
        };
        Process { child, addr, log }
    }

    /// Our backend on `listen` (e.g. `127.0.0.1:0`), named `id`.
    pub fn backend(id: &str, listen: &str, extra: &[&str]) -> Self {
        let mut args = vec!["--listen", listen, "--id", id, "--grace-period", "5s"];
        args.extend_from_slice(extra);
        Self::start("backend", &args, "backend serving")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process dies at once; the kernel closes its sockets.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as `docker stop` or Kubernetes sends.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit (blocking; use from spawn_blocking).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls made by [`Traffic`], and how they ended.
#[derive(Default)]
pub struct Tally {
    pub ok: HashMap<String, u64>,
    pub failed: Vec<String>,
}

impl Tally {
    pub fn ok_total(&self) -> u64 {
        self.ok.values().sum()
    }
}

/// A steady, bounded stream of Echo calls over one connection: `workers`
/// calls at a time, each followed by a short pause.
pub struct Traffic {
    pub tally: Arc<Mutex<Tally>>,
    stop: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(channel: Channel, workers: usize, request: EchoRequest) -> Self {
        let tally: Arc<Mutex<Tally>> = Arc::default();
        let stop = tokio_util::sync::CancellationToken::new();
        let tasks = (0..workers)
            .map(|_| {
                let mut client = EchoServiceClient::new(channel.clone());
                let (tally, stop, request) = (tally.clone(), stop.clone(), request.clone());
                tokio::spawn(async move {
                    while !stop.is_cancelled() {
                        let mut call = tonic::Request::new(request.clone());
                        call.set_timeout(Duration::from_secs(10));
                        match client.echo(call).await {
                            Ok(reply) => {
                                *tally
                                    .lock()
                                    .unwrap()
                                    .ok
                                    .entry(reply.into_inner().backend_id)
                                    .or_default() += 1;
                            }
                            Err(status) => tally.lock().unwrap().failed.push(format!(
                                "{:?}: {}",
                                status.code(),
                                status.message()
                            )),
                        }
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                })
            })
            .collect();
        Traffic { tally, stop, tasks }
    }

    pub fn count(&self, id: &str) -> u64 {
        self.tally.lock().unwrap().ok.get(id).copied().unwrap_or(0)
    }

    pub fn failures(&self) -> Vec<String> {
        self.tally.lock().unwrap().failed.clone()
    }

    /// Stops and waits for the calls in flight.
    pub async fn stop(self) -> Tally {
        self.stop.cancel();
        for task in self.tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(self.tally)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_default()
    }
}

/// Reads an HTTP/2 body to its end, opening the flow-control window as it
/// goes; the bytes, in order.
pub async fn read_body(body: &mut h2::RecvStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    out
}
