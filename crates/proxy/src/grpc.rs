//! The little of gRPC the proxy must know, all from headers: recognising a gRPC
//! call, reading `grpc-status`, and answering locally in gRPC form
//! ("trailers-only") when no upstream answer can be had. Messages are never
//! decoded.

use http::{HeaderMap, HeaderValue, Response, StatusCode};

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
        .is_some_and(is_grpc_content_type)
}

/// Whether a `content-type` value is gRPC's (`application/grpc[+proto]...`).
pub fn is_grpc_content_type(value: &HeaderValue) -> bool {
    value.as_bytes().starts_with(b"application/grpc")
}

/// Blocks of up to this many fields are searched for a name in order rather
/// than looked up.
pub const SCAN_AT_MOST: usize = 8;

/// The `grpc-status` in a header or trailer block, if any.
pub fn status(headers: &HeaderMap) -> Option<u16> {
    // A head or trailer block holds a handful of fields: comparing each name
    // costs less than hashing `grpc-status` for a lookup (about 190
    // instructions, three times a call). Both find the first value.
    let value = if headers.len() <= SCAN_AT_MOST {
        headers
            .iter()
            .find_map(|(name, value)| (*name == header::GRPC_STATUS).then_some(value))
    } else {
        headers.get(header::GRPC_STATUS)
    }?;
    std::str::from_utf8(value.as_bytes())
        .ok()?
        .trim()
        .parse()
        .ok()
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
pub fn local_reply(grpc: bool, code: u16, message: &str) -> Response<()> {
    let mut response = Response::new(());
    if grpc {
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(header::GRPC_STATUS, HeaderValue::from(code));
        headers.insert(header::GRPC_MESSAGE, encode_message(message));
    } else {
        *response.status_mut() = http_status(code);
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
    }
    response
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
    fn status_is_read_from_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(status(&h), None);
        h.insert("grpc-status", HeaderValue::from_static("14"));
        assert_eq!(status(&h), Some(14));
        h.insert("grpc-status", HeaderValue::from_static("x"));
        assert_eq!(status(&h), None);
    }

    #[test]
    fn status_is_the_first_value_in_small_and_large_blocks() {
        // Three fields are added below: `SCAN_AT_MOST - 3` is the largest
        // block that is scanned, `SCAN_AT_MOST - 2` the smallest looked up.
        for fields in [0, 3, SCAN_AT_MOST - 3, SCAN_AT_MOST - 2, 40] {
            let mut h = HeaderMap::new();
            for i in 0..fields {
                h.append(
                    http::HeaderName::try_from(format!("x-field-{i}")).unwrap(),
                    HeaderValue::from_static("1"),
                );
            }
            h.append("grpc-status", HeaderValue::from_static(" 7 "));
            h.append("grpc-status", HeaderValue::from_static("3"));
            h.append("grpc-statu", HeaderValue::from_static("4"));
            assert_eq!(h.len(), fields + 3);
            assert_eq!(status(&h), Some(7), "with {fields} other fields");
        }
    }

    #[test]
    fn local_replies_are_trailers_only_for_grpc_and_plain_otherwise() {
        let r = local_reply(true, code::UNAVAILABLE, "no healthy upstream");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["content-type"], "application/grpc");
        let r = local_reply(false, code::DEADLINE_EXCEEDED, "late");
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
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
