//! The client behind `backend healthcheck`: one `grpc.health.v1.Health/Check`.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Why a health check got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    #[error("`{0}` is not a valid address (expected e.g. http://127.0.0.1:8080)")]
    Address(String),
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("health check call failed: {0}")]
    Call(#[source] tonic::Status),
}

/// Asks the backend at `addr` about `service` ("" for the whole server).
pub async fn check(
    addr: &str,
    service: &str,
    timeout: Duration,
) -> Result<ServingStatus, HealthcheckError> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|_| HealthcheckError::Address(addr.to_owned()))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel: Channel = endpoint
        .connect()
        .await
        .map_err(|source| HealthcheckError::Connect { addr: uri, source })?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(HealthcheckError::Call)?;
    Ok(response.into_inner().status())
}
