//! Answers requests that are not gRPC (no `application/grpc` content type)
//! with 415 and a line saying what the port serves, as the gRPC over HTTP/2
//! spec asks, instead of tonic's bare trailers-only UNIMPLEMENTED: a person
//! trying the port with curl learns why, and HTTP/2 test tools that send
//! `GET /` get an answer with a body, as they expect (h2spec's stream-state
//! cases hold a stream open with a zero window on the body).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tonic::body::Body;
use tower::{Layer, Service};

const ANSWER: &str = "this port serves gRPC over HTTP/2 (content-type application/grpc)\n";

#[derive(Debug, Clone, Copy, Default)]
pub struct NotGrpcLayer;

impl<S> Layer<S> for NotGrpcLayer {
    type Service = NotGrpc<S>;
    fn layer(&self, inner: S) -> Self::Service {
        NotGrpc { inner }
    }
}

#[derive(Debug, Clone)]
pub struct NotGrpc<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for NotGrpc<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if is_grpc(&request) {
            return Box::pin(self.inner.call(request));
        }
        let mut response = http::Response::new(Body::new(http_body_util::Full::new(
            Bytes::from_static(ANSWER.as_bytes()),
        )));
        *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        Box::pin(std::future::ready(Ok(response)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn requests_without_a_grpc_content_type_get_415_and_a_line() {
        let grpc = tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
        });
        let service = NotGrpcLayer.layer(grpc);
        let plain = http::Request::get("/").body(()).unwrap();
        let response = service.clone().oneshot(plain).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, ANSWER);

        let call = http::Request::post("/gateway.AliveService/GetStatus")
            .header("content-type", "application/grpc+proto")
            .body(())
            .unwrap();
        let response = service.oneshot(call).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "gRPC passes through");
    }
}
