//! The application services: `AliveService`, `Greeter` and `EchoService`.
//!
//! All three share a [`Behaviour`]: the backend's name, and the latency and
//! failure rate that demos and fault tests turn on with `--delay-ms` and
//! `--fail-rate`. Health and reflection are not affected by either, so a
//! failing backend still looks alive to a health checker, as a real backend
//! with a broken dependency would.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use proto::gateway::echo_service_server::EchoService;
use proto::gateway::{
    EchoReply, EchoRequest, ExpandRequest, GetStatusRequest, GetStatusResponse,
    alive_service_server::AliveService,
};
use proto::helloworld::greeter_server::Greeter;
use proto::helloworld::{HelloReply, HelloRequest};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::config::Config;

/// The trailer that `EchoService` sends back when a request asks for one.
pub const ECHO_TRAILER: &str = "x-echo-trailer";

/// The response metadata in which `Echo` returns the request's `x-request-id`.
pub const ECHO_REQUEST_ID: &str = "x-echo-request-id";

/// The response metadata in which `Echo` returns the request's `traceparent`.
pub const ECHO_TRACEPARENT: &str = "x-echo-traceparent";

/// What every application call does before answering.
#[derive(Debug, Clone)]
pub struct Behaviour {
    id: Arc<str>,
    delay: Duration,
    fail_rate: f64,
}

impl Behaviour {
    pub fn new(config: &Config) -> Self {
        Behaviour {
            id: config.id.as_str().into(),
            delay: config.delay,
            fail_rate: config.fail_rate,
        }
    }

    /// The backend's name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Waits `--delay-ms`, then fails the call with `--fail-rate` probability.
    async fn before_call(&self) -> Result<(), Status> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.fail_rate > 0.0 && rand::random::<f64>() < self.fail_rate {
            return Err(Status::unavailable(format!(
                "backend {} fails this call on purpose (--fail-rate {})",
                self.id, self.fail_rate
            )));
        }
        Ok(())
    }
}

/// `gateway.AliveService`.
#[derive(Debug, Clone)]
pub struct Alive(pub Behaviour);

#[tonic::async_trait]
impl AliveService for Alive {
    async fn get_status(
        &self,
        _request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        self.0.before_call().await?;
        Ok(Response::new(GetStatusResponse { status: true }))
    }
}

/// `helloworld.Greeter`, as in every gRPC language's examples.
#[derive(Debug, Clone)]
pub struct Hello(pub Behaviour);

#[tonic::async_trait]
impl Greeter for Hello {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        self.0.before_call().await?;
        let name = request.into_inner().name;
        Ok(Response::new(HelloReply {
            message: format!("Hello {name}"),
        }))
    }
}

/// `gateway.EchoService`: the four call kinds, with statuses and trailers on request.
#[derive(Debug, Clone)]
pub struct Echo(pub Behaviour);

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

/// The status a request asks to end with, carrying its trailer, if any.
///
/// Returns `None` for a plain OK with no trailer. A `Status` with code OK is
/// how tonic sends custom trailers at the end of a stream.
fn ending(code: i32, message: &str, trailer: &str) -> Option<Status> {
    if code == 0 && trailer.is_empty() {
        return None;
    }
    let mut metadata = MetadataMap::new();
    if !trailer.is_empty() {
        match trailer.parse() {
            Ok(value) => {
                metadata.insert(ECHO_TRAILER, value);
            }
            Err(_) => {
                return Some(Status::invalid_argument(
                    "trailer must be visible ASCII (it is sent as metadata)",
                ));
            }
        }
    }
    Some(Status::with_metadata(
        Code::from_i32(code),
        message,
        metadata,
    ))
}

impl Echo {
    fn reply(&self, message: String, seq: u32) -> EchoReply {
        EchoReply {
            message,
            backend_id: self.0.id().to_owned(),
            seq,
        }
    }
}

async fn sleep_ms(ms: u32) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
    }
}

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.0.before_call().await?;
        let request_id = request.metadata().get("x-request-id").cloned();
        let traceparent = request.metadata().get("traceparent").cloned();
        let req = request.into_inner();
        sleep_ms(req.delay_ms).await;
        if req.status_code != 0 {
            // A unary error is a trailers-only response: the trailer rides in it.
            return Err(ending(req.status_code, &req.status_message, &req.trailer)
                .unwrap_or_else(|| Status::unknown("unreachable")));
        }
        let mut response = Response::new(self.reply(req.message, 0));
        if let Some(id) = request_id {
            response.metadata_mut().insert(ECHO_REQUEST_ID, id);
        }
        if let Some(trace) = traceparent {
            response.metadata_mut().insert(ECHO_TRACEPARENT, trace);
        }
        Ok(response)
    }

    async fn collect(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        self.0.before_call().await?;
        let mut stream = request.into_inner();
        let mut joined = String::new();
        let mut last = EchoRequest::default();
        while let Some(req) = stream.next().await {
            let req = req?;
            sleep_ms(req.delay_ms).await;
            joined.push_str(&req.message);
            last = req;
        }
        if last.status_code != 0 {
            return Err(
                ending(last.status_code, &last.status_message, &last.trailer)
                    .unwrap_or_else(|| Status::unknown("unreachable")),
            );
        }
        Ok(Response::new(self.reply(joined, 0)))
    }

    type ExpandStream = ReplyStream;

    async fn expand(
        &self,
        request: Request<ExpandRequest>,
    ) -> Result<Response<Self::ExpandStream>, Status> {
        self.0.before_call().await?;
        let req = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        // The task ends when the stream is done or the client goes away (send fails).
        tokio::spawn(async move {
            for seq in 0..req.count {
                if seq > 0 {
                    sleep_ms(req.interval_ms).await;
                }
                let reply = this.reply(format!("{} {seq}", req.message), seq);
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
            if let Some(status) = ending(req.status_code, &req.status_message, &req.trailer) {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ChatStream = ReplyStream;

    async fn chat(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        self.0.before_call().await?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            let mut seq = 0;
            let mut trailer = String::new();
            while let Some(req) = inbound.next().await {
                let req = match req {
                    Ok(req) => req,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                sleep_ms(req.delay_ms).await;
                if req.status_code != 0 {
                    let status = ending(req.status_code, &req.status_message, &req.trailer);
                    let _ = tx
                        .send(Err(status.unwrap_or_else(|| Status::unknown(""))))
                        .await;
                    return;
                }
                if !req.trailer.is_empty() {
                    trailer = req.trailer.clone();
                }
                if tx.send(Ok(this.reply(req.message, seq))).await.is_err() {
                    return;
                }
                seq += 1;
            }
            if let Some(status) = ending(0, "", &trailer) {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
