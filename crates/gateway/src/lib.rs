//! The REST gateway of the per-call balancing demo.
//!
//! `GET /alive` calls `gateway.AliveService/GetStatus` over one shared gRPC
//! channel, which is one long-lived HTTP/2 connection: exactly the kind of
//! client that a layer-4 balancer pins to a single backend. The answering
//! backend's name comes back in the `x-backend-id` header.
//!
//! # Layout
//! - [`config`]: the command line and the validated [`Config`].
//! - [`error`]: how upstream trouble becomes a JSON answer.
//! - [`app`]: the router, testable without sockets.
//! - [`run`]: serves on a bound listener until shutdown, then drains.

#![forbid(unsafe_code)]

pub mod config;
pub mod error;

use std::future::Future;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use http::{HeaderName, HeaderValue};
use proto::gateway::GetStatusRequest;
use proto::gateway::alive_service_client::AliveServiceClient;
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};
use tower_http::trace::TraceLayer;

pub use config::Config;
pub use error::GatewayError;

/// The header (and gRPC metadata) naming the backend that answered.
pub const BACKEND_ID_HEADER: &str = "x-backend-id";

/// Shared by every request: one channel, so one HTTP/2 connection upstream.
#[derive(Clone)]
pub struct AppState {
    client: AliveServiceClient<Channel>,
    timeout: Duration,
}

impl AppState {
    /// Builds the channel to `config.upstream` without connecting yet.
    ///
    /// The gateway starts before its upstream exists; the channel connects on
    /// the first call and reconnects by itself after the upstream comes back.
    pub fn new(config: &Config) -> Self {
        let channel = Endpoint::from(config.upstream.clone())
            .connect_timeout(config.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect_lazy();
        AppState {
            client: AliveServiceClient::new(channel),
            timeout: config.timeout,
        }
    }
}

/// The router: `/alive` and `/healthz`, with request tracing.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/alive", get(alive))
        .route("/healthz", get(healthz))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// How many more times a call that never reached the server is made, within
/// the same deadline (a proxy that rolls away refuses or drops the calls it
/// had not started; see [`error::never_sent`]).
const NEVER_SENT_RETRIES: u32 = 2;

async fn alive(State(state): State<AppState>) -> Result<Response, GatewayError> {
    let mut client = state.client.clone();
    let deadline = tokio::time::Instant::now() + state.timeout;
    let call = async {
        let mut retries = 0;
        loop {
            let mut request = tonic::Request::new(GetStatusRequest {});
            request.set_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
            match client.get_status(request).await {
                Err(status) if retries < NEVER_SENT_RETRIES && error::never_sent(&status) => {
                    retries += 1;
                    tracing::debug!(
                        message = status.message(),
                        retries,
                        "GetStatus never reached the upstream; trying again"
                    );
                }
                done => return done,
            }
        }
    };
    // The channel enforces the deadline too; this bounds connect + calls as one.
    let result = tokio::time::timeout_at(deadline, call).await;
    let response = match result {
        Ok(Ok(response)) => response,
        Ok(Err(status)) => {
            let err = GatewayError::from_status(&status, state.timeout);
            tracing::warn!(code = ?status.code(), message = status.message(), "GetStatus failed");
            return Err(err);
        }
        Err(_) => {
            tracing::warn!("GetStatus passed its deadline");
            return Err(GatewayError::Deadline(state.timeout));
        }
    };
    let backend_id = response.metadata().get(BACKEND_ID_HEADER).cloned();
    if !response.get_ref().status {
        return Err(GatewayError::NotAlive);
    }
    let mut answer = Json(serde_json::json!({ "status": true })).into_response();
    if let Some(id) = backend_id.and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
        answer
            .headers_mut()
            .insert(HeaderName::from_static(BACKEND_ID_HEADER), id);
    }
    Ok(answer)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Why the gateway stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the HTTP server failed")]
    Serve(#[from] std::io::Error),
}

/// Serves on `listener` until `shutdown` completes, then drains.
///
/// After `shutdown` the gateway stops accepting, finishes requests in flight
/// and closes idle connections, for at most `config.grace_period`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, upstream = %config.upstream, timeout = %common::format_duration(config.timeout), "gateway serving");
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    // Responses go out without waiting for the client's ACK of the last write.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app(AppState::new(&config))).with_graceful_shutdown(async {
        shutdown.await;
        let _ = stopping_tx.send(());
    });
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.map_err(Error::from),
        _ = stopping_rx => {}
    }
    tracing::info!(grace_period = %common::format_duration(config.grace_period), "shutting down: draining requests in flight");
    match tokio::time::timeout(config.grace_period, server).await {
        Ok(result) => {
            result?;
            tracing::info!("drained; bye");
        }
        Err(_) => tracing::warn!("grace period over; closing the connections still open"),
    }
    Ok(())
}
