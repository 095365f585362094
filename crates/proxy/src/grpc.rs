//! The little of gRPC the proxy must know, all from headers: recognising a gRPC
//! call, reading `grpc-status`, and answering locally in gRPC form
//! ("trailers-only") when no upstream answer can be had. Messages are never
//! decoded.

use h2fwd::Head;
use http::{HeaderMap, HeaderValue, StatusCode};

/// Header names looked up on every call, parsed once (a `&str` key is parsed
/// again at each lookup).
pub mod header {
    use http::HeaderName;

    pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
    pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
    pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
}

/// gRPC status codes the proxy produces or reasons about.
pub mod code {
    pub const OK: u16 = 0;
    pub const CANCELLED: u16 = 1;
    pub const UNKNOWN: u16 = 2;
    pub const DEADLINE_EXCEEDED: u16 = 4;
    pub const RESOURCE_EXHAUSTED: u16 = 8;
    pub const UNIMPLEMENTED: u16 = 12;
    pub const INTERNAL: u16 = 13;
    pub const UNAVAILABLE: u16 = 14;
    pub const DATA_LOSS: u16 = 15;
}

/// Whether a request is a gRPC call (`content-type: application/grpc[+proto|...]`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| is_grpc_content_type(v.as_bytes()))
}

/// Whether a `content-type` value is gRPC's (`application/grpc[+proto]...`).
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    value.starts_with(b"application/grpc")
}

/// The `grpc-status` in a head or trailer block, if any (its first value).
pub fn status(head: &Head) -> Option<u16> {
    parse_status(head.get(b"grpc-status")?)
}

/// [`status`] for a block held as an `http::HeaderMap` (the gRPC-Web side).
pub fn status_in(headers: &HeaderMap) -> Option<u16> {
    parse_status(headers.get(header::GRPC_STATUS)?.as_bytes())
}

fn parse_status(value: &[u8]) -> Option<u16> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// Whether a gRPC status is the server's fault (what HTTP would call 5xx),
/// using the mapping Envoy applies to gRPC responses.
pub fn is_server_error(code: u16) -> bool {
    matches!(
        code,
        code::UNKNOWN
            | code::DEADLINE_EXCEEDED
            | code::UNIMPLEMENTED
            | code::INTERNAL
            | code::UNAVAILABLE
            | code::DATA_LOSS
    )
}

/// Percent-encodes a `grpc-message` as the gRPC spec asks: bytes outside
/// printable ASCII, and `%` itself.
pub fn encode_message(message: &str) -> HeaderValue {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("proxy error"))
}

/// A local answer to a call that got no upstream answer: trailers-only gRPC
/// (HTTP 200 with `grpc-status`) for gRPC calls, a plain HTTP status otherwise.
pub fn local_head(grpc: bool, code: u16, message: &str) -> Head {
    if grpc {
        let mut head = Head::response(200);
        head.append(b"content-type", b"application/grpc");
        head.append(b"grpc-status", code.to_string().as_bytes());
        head.append(b"grpc-message", encode_message(message).as_bytes());
        head
    } else {
        let mut head = Head::response(http_status(code).as_u16());
        head.append(b"content-type", b"text/plain");
        head
    }
}

/// The HTTP status for a non-gRPC request that failed with `code`.
fn http_status(code: u16) -> StatusCode {
    match code {
        code::DEADLINE_EXCEEDED => StatusCode::GATEWAY_TIMEOUT,
        code::RESOURCE_EXHAUSTED | code::UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
        // No route: Envoy's 404.
        code::UNIMPLEMENTED => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// Trailers that end an already started response with `code`.
pub fn trailers_head(code: u16, message: &str) -> Head {
    let mut head = Head::trailers();
    head.append(b"grpc-status", code.to_string().as_bytes());
    head.append(b"grpc-message", encode_message(message).as_bytes());
    head
}

/// [`trailers_head`] as an `http::HeaderMap` (the gRPC-Web side).
pub fn trailers(code: u16, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(2);
    trailers.insert(header::GRPC_STATUS, HeaderValue::from(code));
    trailers.insert(header::GRPC_MESSAGE, encode_message(message));
    trailers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(encode_message("no healthy upstream"), "no healthy upstream");
        assert_eq!(encode_message("100% é"), "100%25 %C3%A9");
        assert_eq!(encode_message("a\nb"), "a%0Ab");
    }

    #[test]
    fn status_is_the_first_valid_value() {
        let mut h = Head::trailers();
        assert_eq!(status(&h), None);
        h.append(b"grpc-statu", b"4");
        h.append(b"grpc-status", b" 7 ");
        h.append(b"grpc-status", b"3");
        assert_eq!(status(&h), Some(7));
        let mut h = Head::trailers();
        h.append(b"grpc-status", b"x");
        assert_eq!(status(&h), None);
        let mut m = HeaderMap::new();
        m.insert("grpc-status", HeaderValue::from_static("14"));
        assert_eq!(status_in(&m), Some(14));
    }

    #[test]
    fn local_replies_are_trailers_only_for_grpc_and_plain_otherwise() {
        let r = local_head(true, code::UNAVAILABLE, "no healthy upstream");
        assert_eq!(r.status(), 200);
        assert_eq!(r.get(b"grpc-status"), Some(&b"14"[..]));
        assert_eq!(r.get(b"content-type"), Some(&b"application/grpc"[..]));
        let r = local_head(false, code::DEADLINE_EXCEEDED, "late");
        assert_eq!(r.status(), 504);
        let t = trailers_head(code::UNAVAILABLE, "100%");
        assert_eq!(t.get(b"grpc-message"), Some(&b"100%25"[..]));
    }

    #[test]
    fn server_errors_follow_envoys_mapping() {
        assert!(is_server_error(code::UNAVAILABLE));
        assert!(is_server_error(code::INTERNAL));
        assert!(!is_server_error(code::OK));
        assert!(!is_server_error(3)); // INVALID_ARGUMENT is the caller's fault
        assert!(!is_server_error(code::CANCELLED));
    }
}
