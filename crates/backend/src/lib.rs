//! The gRPC backend of the per-call balancing demo.
//!
//! It serves `gateway.AliveService`, `helloworld.Greeter`, `gateway.EchoService`,
//! `grpc.health.v1.Health` and server reflection, and names itself in the
//! response metadata `x-backend-id` of every call, so anyone can count from the
//! outside how calls were spread.
//!
//! # Layout
//! - [`config`]: the command line and the validated [`Config`].
//! - [`service`]: the application services and their shared [`service::Behaviour`].
//! - [`deadline`]: answers DEADLINE_EXCEEDED (not tonic's CANCELLED) when `grpc-timeout` passes.
//! - [`healthcheck`]: the client of the `backend healthcheck` subcommand.
//! - [`not_grpc`]: 415 with a line for requests that are not gRPC.
//! - [`testing`]: a backend in the test's own process, for this workspace's tests.
//! - [`run`]: serves on a bound listener until shutdown, then drains.

#![forbid(unsafe_code)]

pub mod config;
pub mod deadline;
pub mod healthcheck;
pub mod not_grpc;
pub mod service;
pub mod testing;

use std::future::Future;

use http::{HeaderName, HeaderValue};
use proto::gateway::alive_service_server::AliveServiceServer;
use proto::gateway::echo_service_server::EchoServiceServer;
use proto::helloworld::greeter_server::GreeterServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tower_http::set_header::SetResponseHeaderLayer;

pub use config::Config;
use service::{Alive, Behaviour, Echo, Hello};

/// The response metadata that names the backend that answered.
pub const BACKEND_ID_HEADER: &str = "x-backend-id";

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("cannot build the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the gRPC server failed")]
    Serve(#[from] tonic::transport::Error),
}

/// The fully qualified names of the services the health service reports on.
const SERVICES: [&str; 3] = [
    "gateway.AliveService",
    "helloworld.Greeter",
    "gateway.EchoService",
];

/// Serves on `listener` until `shutdown` completes, then drains.
///
/// On shutdown the health service turns every service NOT_SERVING first (so
/// health checkers and `Watch` streams see it), then the server stops accepting,
/// sends GOAWAY and lets calls in flight finish within `config.grace_period`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    config.validate()?;
    let addr = listener
        .local_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string());
    let behaviour = Behaviour::new(&config);

    let (reporter, health) = tonic_health::server::health_reporter();
    for service in ["", SERVICES[0], SERVICES[1], SERVICES[2]] {
        reporter
            .set_service_status(service, ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    // Validated in `Config::validate`: visible ASCII only.
    let id_value = HeaderValue::from_str(&config.id)
        .map_err(|_| Error::Config(config::ConfigError::Id(config.id.clone())))?;

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = Server::builder()
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static(BACKEND_ID_HEADER),
            id_value,
        ))
        .layer(not_grpc::NotGrpcLayer)
        .layer(deadline::DeadlineLayer)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(AliveServiceServer::new(Alive(behaviour.clone())))
        .add_service(GreeterServer::new(Hello(behaviour.clone())))
        .add_service(EchoServiceServer::new(Echo(behaviour)))
        // Without TCP_NODELAY, a response written in more than one piece
        // (HEADERS, then DATA and trailers) waits for the peer's ACK.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stop_rx.await;
            },
        );
    tokio::pin!(server);
    tracing::info!(id = %config.id, %addr, "backend serving");

    tokio::select! {
        result = &mut server => return result.map_err(Error::from),
        () = shutdown => {}
    }

    tracing::info!(grace_period = %common::format_duration(config.grace_period),
        "shutting down: health is NOT_SERVING, draining calls in flight");
    for service in ["", SERVICES[0], SERVICES[1], SERVICES[2]] {
        reporter
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
    let _ = stop_tx.send(());
    match tokio::time::timeout(config.grace_period, server).await {
        Ok(result) => {
            result?;
            tracing::info!("drained; bye");
        }
        Err(_) => tracing::warn!("grace period over; closing the connections still open"),
    }
    Ok(())
}
