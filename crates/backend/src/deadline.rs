//! Answers DEADLINE_EXCEEDED when a call's `grpc-timeout` passes.
//!
//! tonic's server enforces `grpc-timeout` itself but answers CANCELLED ("Timeout
//! expired"), which the gRPC spec reserves for calls the client gave up on.
//! This layer sits inside tonic's and fires a millisecond earlier, so callers
//! (and a proxy counting `rq_timeout`) see the spec's DEADLINE_EXCEEDED.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::Status;
use tower::{Layer, Service};

/// How much earlier than tonic's own timer this layer answers.
const HEAD_START: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Deadline<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| common::parse_grpc_timeout(v.as_bytes()));
        let call = self.inner.call(request);
        match timeout {
            None => Box::pin(call),
            Some(timeout) => Box::pin(async move {
                match tokio::time::timeout(timeout.saturating_sub(HEAD_START), call).await {
                    Ok(result) => result,
                    Err(_) => Ok(Status::deadline_exceeded("deadline exceeded").into_http()),
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test(start_paused = true)]
    async fn a_passed_grpc_timeout_answers_deadline_exceeded() {
        let slow = tower::service_fn(|_req: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(String::from("late")))
        });
        let service = DeadlineLayer.layer(slow);
        let request = http::Request::builder()
            .header("grpc-timeout", "100m")
            .body(())
            .unwrap();
        let started = tokio::time::Instant::now();
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.headers()["grpc-status"], "4");
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn calls_without_a_deadline_are_left_alone() {
        let slow = tower::service_fn(|_req: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(String::from("late")))
        });
        let request = http::Request::new(());
        let response = DeadlineLayer.layer(slow).oneshot(request).await.unwrap();
        assert_eq!(response.into_body(), "late");
    }
}
