//! `loadgen`: the HTTP/2 gRPC load generator behind `scripts/bench`.
//!
//! h2load measures closed-loop throughput well but ignores `grpc-status` and
//! cannot hold a fixed arrival rate independent of response times. This tool
//! fills those gaps, on one thread (pin it with taskset):
//! - `open`: a fixed request rate (open loop) spread round robin over a few
//!   connections; latency percentiles, every call's `grpc-status`, and the
//!   `x-backend-id` of every response (the per-backend share, counted outside
//!   the proxy under test).
//! - `closed`: `conns` x `streams` callers, each sending its next call when the
//!   previous one ends; the same counts, for correctness checks.
//! - `idle`: opens `conns` HTTP/2 connections, completes the handshake and a
//!   PING on each, prints `ready`, then holds them until killed.
//!
//! Results are one JSON object on stdout.
//!
//! Arrivals in `open` are issued by a 1 ms ticker: every tick sends the calls
//! the schedule owes since the last tick. Latency is measured from the tick
//! that issued the call (so time spent waiting for a stream slot counts);
//! `lag_p99_us` reports how late ticks ran against the schedule, so a
//! generator that could not keep up is visible rather than hidden.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderMap, Request, Uri};
use tokio::net::TcpStream;
use tokio::task::LocalSet;

const USAGE: &str = "usage:
  loadgen open   --addr H:P [--conns 4] --rate RPS [--duration 10] [--warmup 1] [--path P] [--body HEX]
  loadgen closed --addr H:P [--conns 1] [--streams 8] [--duration 2] [--path P] [--body HEX]
  loadgen idle   --addr H:P --conns N";

/// A gRPC-framed empty message: `gateway.GetStatusRequest {}`.
const DEFAULT_BODY: &str = "0000000000";
const DEFAULT_PATH: &str = "/gateway.AliveService/GetStatus";
/// How long calls still in flight at the end may take before they count as unfinished.
const GRACE: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Args {
    mode: String,
    addr: SocketAddr,
    conns: usize,
    streams: usize,
    rate: f64,
    duration: Duration,
    warmup: Duration,
    path: String,
    body: Bytes,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().ok_or("missing mode")?;
    if !matches!(mode.as_str(), "open" | "closed" | "idle") {
        return Err(format!("unknown mode {mode}"));
    }
    let mut args = Args {
        mode,
        addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        conns: 0,
        streams: 8,
        rate: 0.0,
        duration: Duration::ZERO,
        warmup: Duration::from_secs(1),
        path: DEFAULT_PATH.into(),
        body: hex(DEFAULT_BODY)?,
    };
    let mut addr = None;
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |_| format!("bad value for {flag}: {value}");
        let secs = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|s| *s >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("bad value for {flag}: {v}"))
        };
        match flag.as_str() {
            "--addr" => addr = Some(value.parse().map_err(|_| bad(()))?),
            "--conns" => args.conns = value.parse().map_err(|_| bad(()))?,
            "--streams" => args.streams = value.parse().map_err(|_| bad(()))?,
            "--rate" => args.rate = value.parse().map_err(|_| bad(()))?,
            "--duration" => args.duration = secs(&value)?,
            "--warmup" => args.warmup = secs(&value)?,
            "--path" => args.path = value,
            "--body" => args.body = hex(&value)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    args.addr = addr.ok_or("--addr is required")?;
    if args.conns == 0 {
        args.conns = match args.mode.as_str() {
            "open" => 4,
            "closed" => 1,
            _ => return Err("--conns is required".into()),
        };
    }
    if args.duration.is_zero() {
        args.duration = Duration::from_secs(if args.mode == "open" { 10 } else { 2 });
    }
    if args.mode == "open" && args.rate <= 0.0 {
        return Err("--rate is required".into());
    }
    Ok(args)
}

fn hex(s: &str) -> Result<Bytes, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd-length hex: {s}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("bad hex: {s}")))
        .collect::<Result<Vec<u8>, _>>()
        .map(Bytes::from)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("loadgen: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = LocalSet::new();
    let result = local.block_on(&runtime, async {
        match args.mode.as_str() {
            "open" => open(&args).await,
            "closed" => closed(&args).await,
            _ => idle(&args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Opens one HTTP/2 connection and drives it on a local task.
async fn connect(addr: SocketAddr) -> Result<SendRequest<Bytes>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (send, mut conn) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .handshake::<_, Bytes>(tcp)
        .await
        .map_err(|e| format!("handshake {addr}: {e}"))?;
    // A PING round trip proves the server has read our preface and settings.
    let mut ping = conn.ping_pong();
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    if let Some(ping) = ping.as_mut() {
        ping.ping(h2::Ping::opaque())
            .await
            .map_err(|e| format!("ping {addr}: {e}"))?;
    }
    Ok(send)
}

async fn connect_all(args: &Args) -> Result<Vec<SendRequest<Bytes>>, String> {
    let mut conns = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        conns.push(connect(args.addr).await?);
    }
    Ok(conns)
}

/// How one call ended.
enum Outcome {
    /// The `grpc-status` (or `-1` when absent), the backend that answered,
    /// and `grpc-message` when the status is not OK.
    Done {
        grpc_status: i32,
        backend: Option<String>,
        message: Option<String>,
    },
    /// HTTP status other than 200.
    Http(u16),
    /// Reset, GOAWAY, broken connection: h2's description of it.
    Transport(String),
}

async fn call(mut send: SendRequest<Bytes>, uri: Uri, body: Bytes) -> Outcome {
    let attempt = async {
        send = send.ready().await?;
        let request = Request::post(uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|_| h2::Error::from(h2::Reason::INTERNAL_ERROR))?;
        let (response, mut stream) = send.send_request(request, false)?;
        stream.send_data(body, true)?;
        let response = response.await?;
        let (parts, mut recv) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            return Ok(Outcome::Http(parts.status.as_u16()));
        }
        let backend = parts
            .headers
            .get("x-backend-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut status = grpc_status(&parts.headers);
        let mut message = grpc_message(&parts.headers);
        while let Some(chunk) = recv.data().await {
            let chunk = chunk?;
            let _ = recv.flow_control().release_capacity(chunk.len());
        }
        if status.is_none()
            && let Some(trailers) = recv.trailers().await?
        {
            status = grpc_status(&trailers);
            message = grpc_message(&trailers);
        }
        let grpc_status = status.unwrap_or(-1);
        Ok::<_, h2::Error>(Outcome::Done {
            grpc_status,
            backend,
            message: message.filter(|_| grpc_status != 0),
        })
    };
    attempt
        .await
        .unwrap_or_else(|e| Outcome::Transport(e.to_string()))
}

fn grpc_message(headers: &HeaderMap) -> Option<String> {
    headers
        .get("grpc-message")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Counts of one run.
#[derive(Default)]
struct Stats {
    latencies_us: Vec<u32>,
    lags_us: Vec<u32>,
    grpc_status: BTreeMap<i32, u64>,
    http_status: BTreeMap<u16, u64>,
    transport_errors: u64,
    backends: BTreeMap<String, u64>,
    /// `status: message` of failed calls (the first few distinct ones).
    errors: BTreeMap<String, u64>,
    in_flight: u64,
}

impl Stats {
    fn record(&mut self, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Done {
                grpc_status,
                backend,
                message,
            } => {
                if grpc_status != 0 {
                    self.count_error(format!("{grpc_status}: {}", message.unwrap_or_default()));
                }
                *self.grpc_status.entry(grpc_status).or_default() += 1;
                *self
                    .backends
                    .entry(backend.unwrap_or_else(|| "-".into()))
                    .or_default() += 1;
                if grpc_status == 0 {
                    self.latencies_us
                        .push(latency.as_micros().min(u32::MAX as u128) as u32);
                }
            }
            Outcome::Http(code) => *self.http_status.entry(code).or_default() += 1,
            Outcome::Transport(error) => {
                self.transport_errors += 1;
                self.count_error(format!("transport: {error}"));
            }
        }
    }

    /// Counts an error by its message; at most 10 distinct messages are kept.
    fn count_error(&mut self, key: String) {
        if self.errors.len() < 10 || self.errors.contains_key(&key) {
            *self.errors.entry(key).or_default() += 1;
        }
    }

    fn ok(&self) -> u64 {
        self.grpc_status.get(&0).copied().unwrap_or(0)
    }

    fn json(&mut self, mode: &str, extra: &[(&str, String)], elapsed: Duration) -> String {
        self.latencies_us.sort_unstable();
        self.lags_us.sort_unstable();
        let done: u64 = self.grpc_status.values().sum::<u64>()
            + self.http_status.values().sum::<u64>()
            + self.transport_errors;
        let mut out = format!("{{\"mode\":\"{mode}\"");
        for (k, v) in extra {
            out.push_str(&format!(",\"{k}\":{v}"));
        }
        out.push_str(&format!(
            ",\"elapsed_s\":{:.3},\"done\":{done},\"ok\":{},\"ok_rps\":{:.1},\"transport_errors\":{},\"unfinished\":{}",
            elapsed.as_secs_f64(),
            self.ok(),
            self.ok() as f64 / elapsed.as_secs_f64().max(1e-9),
            self.transport_errors,
            self.in_flight,
        ));
        for (name, q) in [
            ("p50_us", 0.5),
            ("p90_us", 0.9),
            ("p99_us", 0.99),
            ("p999_us", 0.999),
            ("max_us", 1.0),
        ] {
            out.push_str(&format!(",\"{name}\":{}", quantile(&self.latencies_us, q)));
        }
        out.push_str(&format!(
            ",\"lag_p99_us\":{}",
            quantile(&self.lags_us, 0.99)
        ));
        out.push_str(&format!(
            ",\"grpc_status\":{}",
            map_json(self.grpc_status.iter().map(|(k, v)| (k.to_string(), *v)))
        ));
        out.push_str(&format!(
            ",\"http_status\":{}",
            map_json(self.http_status.iter().map(|(k, v)| (k.to_string(), *v)))
        ));
        out.push_str(&format!(
            ",\"errors\":{}",
            map_json(self.errors.iter().map(|(k, v)| (k.clone(), *v)))
        ));
        out.push_str(&format!(
            ",\"backends\":{}}}",
            map_json(self.backends.iter().map(|(k, v)| (k.clone(), *v)))
        ));
        out
    }
}

fn quantile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn map_json(items: impl Iterator<Item = (String, u64)>) -> String {
    let body: Vec<String> = items
        .map(|(k, v)| format!("\"{}\":{v}", k.replace(['"', '\\'], "_")))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn uri(args: &Args) -> Result<Uri, String> {
    format!("http://{}{}", args.addr, args.path)
        .parse()
        .map_err(|e| format!("bad path {}: {e}", args.path))
}

/// Fixed arrival rate, round robin over the connections.
async fn open(args: &Args) -> Result<(), String> {
    let conns = connect_all(args).await?;
    let uri = uri(args)?;
    let stats = Rc::new(RefCell::new(Stats::default()));
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let mut sent: u64 = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        let now = Instant::now();
        if now >= end {
            break;
        }
        let owed = ((now - start).as_secs_f64() * args.rate) as u64;
        while sent < owed {
            let scheduled = start + interval.mul_f64(sent as f64);
            let counted = scheduled >= measure_from;
            let send = conns[(sent % conns.len() as u64) as usize].clone();
            sent += 1;
            if counted {
                let mut s = stats.borrow_mut();
                s.lags_us
                    .push((now - scheduled).as_micros().min(u32::MAX as u128) as u32);
                s.in_flight += 1;
            }
            let (stats, uri, body) = (Rc::clone(&stats), uri.clone(), args.body.clone());
            tokio::task::spawn_local(async move {
                let outcome = call(send, uri, body).await;
                if counted {
                    let mut s = stats.borrow_mut();
                    s.in_flight -= 1;
                    s.record(outcome, now.elapsed());
                }
            });
        }
    }
    wait_in_flight(&stats).await;
    let mut s = stats.borrow_mut();
    let extra = [
        ("rate", format!("{:.1}", args.rate)),
        ("conns", args.conns.to_string()),
        // Calls sent including the warm-up, for CPU-per-call accounting.
        ("issued", sent.to_string()),
    ];
    println!("{}", s.json("open", &extra, args.duration));
    Ok(())
}

async fn wait_in_flight(stats: &Rc<RefCell<Stats>>) {
    let deadline = Instant::now() + GRACE;
    while stats.borrow().in_flight > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `conns` x `streams` callers, each waiting for its call before the next.
async fn closed(args: &Args) -> Result<(), String> {
    let conns = connect_all(args).await?;
    let uri = uri(args)?;
    let stats = Rc::new(RefCell::new(Stats::default()));
    let start = Instant::now();
    let end = start + args.duration;
    let mut callers = Vec::new();
    for send in &conns {
        for _ in 0..args.streams {
            let (send, stats, uri, body) = (
                send.clone(),
                Rc::clone(&stats),
                uri.clone(),
                args.body.clone(),
            );
            callers.push(tokio::task::spawn_local(async move {
                while Instant::now() < end {
                    let began = Instant::now();
                    stats.borrow_mut().in_flight += 1;
                    let outcome = call(send.clone(), uri.clone(), body.clone()).await;
                    let mut s = stats.borrow_mut();
                    s.in_flight -= 1;
                    s.record(outcome, began.elapsed());
                }
            }));
        }
    }
    for caller in callers {
        let _ = tokio::time::timeout(args.duration + GRACE, caller).await;
    }
    let elapsed = start.elapsed();
    let mut s = stats.borrow_mut();
    let extra = [
        ("conns", args.conns.to_string()),
        ("streams", args.streams.to_string()),
    ];
    println!("{}", s.json("closed", &extra, elapsed));
    Ok(())
}

/// Opens idle connections and holds them until killed.
async fn idle(args: &Args) -> Result<(), String> {
    let conns = connect_all(args).await?;
    println!("ready {}", conns.len());
    std::future::pending::<()>().await;
    drop(conns);
    Ok(())
}
