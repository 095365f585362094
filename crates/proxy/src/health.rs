//! Active health checking.
//!
//! Every `interval` each host is asked `grpc.health.v1.Health/Check` (for the
//! configured service name) on its own maintained HTTP/2 connection, so a
//! check also exercises the path real calls take. SERVING within `timeout` is
//! a pass; anything else (NOT_SERVING, an error status, no connection, a
//! connection that refuses new streams after GOAWAY) is a failure. A healthy
//! host leaves the rotation after `unhealthy_threshold` failures in a row and
//! an unhealthy one returns after `healthy_threshold` passes. A new host
//! starts out of rotation and is checked at once: its first pass brings it in
//! (as in Envoy), so scale-out is as fast as the host is ready.
//!
//! Clusters used only by L4 listeners are checked with a TCP connect.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use std::future::poll_fn;

use bytes::{Bytes, BytesMut};
use h2fwd::Head;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, Host, health};
use crate::config::HealthCheckConfig;
use crate::grpc;

/// `grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

/// Checks the cluster's hosts until `stop`.
pub async fn run(cluster: Arc<Cluster>, stop: CancellationToken) {
    let Some(config) = cluster.config.health_check.clone() else {
        return;
    };
    loop {
        let hosts = cluster.hosts();
        let checks = hosts.iter().map(|host| {
            let cluster = Arc::clone(&cluster);
            let config = &config;
            async move {
                cluster.stats.health_check_attempt.inc();
                let result = tokio::time::timeout(config.timeout, check(&cluster, host, config))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "no answer within {}",
                            common::format_duration(config.timeout)
                        ))
                    });
                judge(&cluster, host, config, result);
            }
        });
        futures_util::future::join_all(checks).await;
        tokio::select! {
            () = tokio::time::sleep(config.interval) => {}
            // New hosts are checked at once rather than after a full interval.
            () = cluster.hosts_added.notified() => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Applies one check's result to the host's state, logging transitions.
fn judge(cluster: &Cluster, host: &Host, config: &HealthCheckConfig, result: Result<(), String>) {
    let first = !host.hc_checked.swap(true, Relaxed);
    let unhealthy = host.flags() & health::FAILED_ACTIVE_HC != 0;
    match result {
        Ok(()) => {
            cluster.stats.health_check_success.inc();
            host.hc_failures.store(0, Relaxed);
            let passes = host.hc_passes.fetch_add(1, Relaxed) + 1;
            if unhealthy && (first || passes >= config.healthy_threshold) {
                host.clear_flag(health::FAILED_ACTIVE_HC);
                if first {
                    tracing::info!(cluster = cluster.name(), host = %host.addr, "new host passed its first health check");
                } else {
                    tracing::info!(cluster = cluster.name(), host = %host.addr, passes, "host healthy again");
                }
            }
        }
        Err(reason) => {
            cluster.stats.health_check_failure.inc();
            host.hc_passes.store(0, Relaxed);
            let failures = host.hc_failures.fetch_add(1, Relaxed) + 1;
            if !unhealthy && failures >= config.unhealthy_threshold {
                host.set_flag(health::FAILED_ACTIVE_HC);
                tracing::warn!(cluster = cluster.name(), host = %host.addr, failures, %reason, "host failed health checks; out of rotation");
            } else {
                tracing::debug!(cluster = cluster.name(), host = %host.addr, %reason, "health check failed");
            }
        }
    }
}

/// One check: gRPC health on the maintained connection, or a TCP connect.
async fn check(cluster: &Cluster, host: &Host, config: &HealthCheckConfig) -> Result<(), String> {
    if !cluster.http2 {
        return tokio::net::TcpStream::connect(host.addr)
            .await
            .map(drop)
            .map_err(|e| format!("TCP connect: {e}"));
    }
    let lease = host
        .conn
        .lease(config.timeout)
        .await
        .map_err(|e| e.to_string())?;
    let authority = host.addr.to_string();
    let mut request = Head::request(
        b"POST",
        b"http",
        authority.as_bytes(),
        b"/grpc.health.v1.Health/Check",
    );
    request.append(b"content-type", b"application/grpc");
    request.append(b"te", b"trailers");
    request.append(b"user-agent", b"proxy-health-check");
    let stream = lease
        .sender
        .send_request(&request, None, false)
        .map_err(|e| {
            host.conn.report_broken(lease.generation);
            format!("connection refuses new streams: {e}")
        })?;
    stream
        .send_data(request_body(&config.service), true)
        .map_err(|e| e.to_string())?;
    let head = poll_fn(|cx| stream.poll_response(cx))
        .await
        .map_err(|e| format!("stream failed: {e}"))?;
    if let Some(status) = grpc::status(&head) {
        return Err(format!("grpc-status {status}"));
    }
    let mut bytes = BytesMut::new();
    while let Some(chunk) = poll_fn(|cx| stream.poll_data(cx)).await {
        let (chunk, _) = chunk.map_err(|e| format!("stream failed: {e}"))?;
        bytes.extend_from_slice(&chunk);
        if bytes.len() > 1024 {
            return Err("health response too large".into());
        }
    }
    let trailers = poll_fn(|cx| stream.poll_trailers(cx))
        .await
        .map_err(|e| format!("stream failed: {e}"))?;
    match trailers.as_deref().and_then(grpc::status) {
        Some(0) => {}
        Some(status) => return Err(format!("grpc-status {status}")),
        None => return Err("no grpc-status".into()),
    }
    match serving_status(&bytes) {
        Some(SERVING) => Ok(()),
        Some(status) => Err(format!("serving status {status} (not SERVING)")),
        None => Err("malformed health response".into()),
    }
}

/// A gRPC-framed `HealthCheckRequest { service }`.
fn request_body(service: &str) -> Bytes {
    let mut message = Vec::with_capacity(service.len() + 3);
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    framed.into()
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The `status` of a gRPC-framed `HealthCheckResponse` (0 when absent).
fn serving_status(framed: &[u8]) -> Option<u64> {
    let (&compressed, rest) = framed.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let mut message = rest.get(4..4 + len)?;
    let mut status = 0;
    while let Some((&tag, tail)) = message.split_first() {
        let (value, tail) = varint(tail)?;
        match tag {
            0x08 => status = value, // field 1, varint
            t if t & 7 == 0 => {}   // another varint field
            t if t & 7 == 2 => {
                // skip a length-delimited field
                let len = usize::try_from(value).ok()?;
                message = tail.get(len..)?;
                continue;
            }
            _ => return None,
        }
        message = tail;
    }
    Some(status)
}

fn varint(mut bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        bytes = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some((value, bytes));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_framed_health_check_requests() {
        assert_eq!(&request_body("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &request_body("a.B")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']
        );
    }

    #[test]
    fn responses_decode_to_their_status() {
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(
            serving_status(&[0, 0, 0, 0, 0]),
            Some(0),
            "UNKNOWN when absent"
        );
        assert_eq!(serving_status(&[1, 0, 0, 0, 0]), None, "compressed");
        assert_eq!(serving_status(&[0, 0, 0, 0, 9, 0x08]), None, "truncated");
    }
}
