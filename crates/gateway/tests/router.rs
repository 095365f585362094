//! The router without sockets on the HTTP side: `app().oneshot(..)`.

#![allow(clippy::unwrap_used)] // Tests panic on purpose.

use axum::body::Body;
use gateway::{AppState, Config, app};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn call(path: &str, upstream: &str) -> (StatusCode, serde_json::Value) {
    let state = AppState::new(&Config::new(upstream).unwrap());
    let response = app(state)
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[tokio::test]
async fn healthz_answers_without_calling_upstream() {
    // Nothing listens on port 1: /healthz must not care.
    let (status, json) = call("/healthz", "http://127.0.0.1:1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["status"], "ok");
}

#[tokio::test]
async fn alive_with_no_upstream_is_a_json_503() {
    let (status, json) = call("/alive", "http://127.0.0.1:1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json["status"], false);
    let error = json["error"].as_str().unwrap();
    assert!(error.starts_with("upstream unavailable"), "{error}");
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let (status, _) = call("/nope", "http://127.0.0.1:1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
