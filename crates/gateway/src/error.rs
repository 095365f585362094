//! How upstream trouble becomes an HTTP answer, in one place.
//!
//! Every failure answers `{"status":false,"error":"..."}`: 503 when the
//! upstream is unavailable or refuses, 504 when the deadline passed, 502 for any
//! other gRPC error. The text says what happened without internal detail; the
//! detail goes to the log.

use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use tonic::Code;

/// Why `/alive` could not answer `{"status":true}`.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    #[error("upstream did not answer within {}", common::format_duration(*.0))]
    Deadline(Duration),
    #[error("upstream failed: {0}")]
    Upstream(String),
    #[error("backend reports it is not alive")]
    NotAlive,
}

impl GatewayError {
    /// Classifies a failed call. `timeout` is the deadline it was given.
    pub fn from_status(status: &tonic::Status, timeout: Duration) -> Self {
        let what = describe(status);
        match status.code() {
            Code::DeadlineExceeded => GatewayError::Deadline(timeout),
            // tonic reports its own client-side deadline this way.
            Code::Cancelled if status.message() == "Timeout expired" => {
                GatewayError::Deadline(timeout)
            }
            Code::Unavailable | Code::ResourceExhausted | Code::Cancelled => {
                GatewayError::Unavailable(what)
            }
            _ => GatewayError::Upstream(what),
        }
    }

    fn status_code(&self) -> StatusCode {
        match self {
            GatewayError::Unavailable(_) | GatewayError::NotAlive => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::Deadline(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Whether a failed call provably never reached the server's application:
/// the stream was refused (REFUSED_STREAM, what a server that is going away
/// or full answers) or was above a GOAWAY's last stream id, or the
/// connection closed before the request was sent
/// (hyper's "canceled", what a GOAWAY does to a call still queued). Such a
/// call can be made again without running anything twice.
pub fn never_sent(status: &tonic::Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = cause {
        if let Some(h2) = e.downcast_ref::<h2::Error>()
            && (h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                // h2 fails a stream above a GOAWAY's last stream id with
                // the GOAWAY itself: the server never processed it (RFC
                // 9113 section 6.8), as the proxy's own retries assume.
                || (h2.is_go_away() && h2.is_remote()))
        {
            return true;
        }
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// `UNAVAILABLE: <message>`, the message cut to a sane length.
fn describe(status: &tonic::Status) -> String {
    const MAX: usize = 200;
    let code = format!("{:?}", status.code()).to_uppercase();
    let mut message = status.message().trim().to_owned();
    if message.len() > MAX {
        let mut cut = MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    if message.is_empty() {
        code
    } else {
        format!("{code}: {message}")
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "status": false, "error": self.to_string() });
        (self.status_code(), Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_to_http_statuses() {
        let t = Duration::from_secs(1);
        let cases = [
            (Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
            (Code::ResourceExhausted, StatusCode::SERVICE_UNAVAILABLE),
            (Code::DeadlineExceeded, StatusCode::GATEWAY_TIMEOUT),
            (Code::Internal, StatusCode::BAD_GATEWAY),
            (Code::Unimplemented, StatusCode::BAD_GATEWAY),
        ];
        for (code, http) in cases {
            let err = GatewayError::from_status(&tonic::Status::new(code, "x"), t);
            assert_eq!(err.status_code(), http, "{code:?}");
        }
    }

    #[test]
    fn only_a_refused_or_unsent_call_counts_as_never_sent() {
        let refused =
            tonic::Status::from_error(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM)));
        assert!(never_sent(&refused), "{refused:?}");
        let reset =
            tonic::Status::from_error(Box::new(h2::Error::from(h2::Reason::INTERNAL_ERROR)));
        assert!(!never_sent(&reset), "a reset after the server began");
        assert!(!never_sent(&tonic::Status::unavailable(
            "the server's own answer"
        )));
    }

    #[test]
    fn messages_are_cut_to_a_sane_length() {
        let status = tonic::Status::unavailable("é".repeat(500));
        let err = GatewayError::from_status(&status, Duration::from_secs(1));
        assert!(err.to_string().len() < 260, "{}", err.to_string().len());
    }
}
