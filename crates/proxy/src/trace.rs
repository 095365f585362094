//! Trace export: one span per call, sent over OTLP/gRPC to a collector in
//! batches, continuing the client's W3C `traceparent`.
//!
//! The call path only fills a small record and offers it to a bounded queue
//! (`try_send`): when the queue is full (a collector slow or away) the span
//! is dropped and counted, and the call never waits. A task of its own takes
//! the records in batches, turns them into OpenTelemetry spans and exports
//! them with the `opentelemetry-otlp` exporter, one export at a time, each
//! bounded by `export_timeout`.
//!
//! Context: the span continues the client's trace (its trace id, with the
//! client's span as parent) or starts one, and the request goes upstream
//! with a `traceparent` naming the proxy's span, so the backend's spans
//! hang under it. A client that marks its trace as not sampled (flags `00`)
//! is followed: nothing is exported for it.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderValue;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use rand::RngCore;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cluster::Stat;
use crate::config::TraceConfig;

/// Counters of the export, in `/stats` as `traces.*`.
#[derive(Debug, Default)]
pub struct TraceStats {
    pub spans_exported: Stat,
    /// Dropped because the queue was full, or their export failed.
    pub spans_dropped: Stat,
    pub export_failures: Stat,
}

/// Where the call path sends its spans; cheap to clone.
#[derive(Debug, Clone)]
pub struct Traces {
    tx: mpsc::Sender<CallSpan>,
    pub stats: Arc<TraceStats>,
}

/// A call's trace context, as read from (or made for) its request.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub trace_id: [u8; 16],
    /// The client's span, when it sent a `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// The proxy's span for this call.
    pub span_id: [u8; 8],
    pub sampled: bool,
}

/// What the call path records of one call.
#[derive(Debug)]
pub struct CallSpan {
    pub context: Context,
    pub path: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub listener: String,
    pub cluster: String,
    pub host: Option<SocketAddr>,
    pub grpc_status: Option<u16>,
    pub http_status: u16,
    pub retries: u32,
    pub flags: &'static str,
}

impl Context {
    /// Continues `traceparent` (version 00) if it is valid, else starts a trace.
    pub fn from_header(traceparent: Option<&[u8]>) -> Self {
        let mut rng = rand::rng();
        let mut span_id = [0u8; 8];
        while span_id == [0; 8] {
            rng.fill_bytes(&mut span_id);
        }
        if let Some((trace_id, parent, flags)) = traceparent.and_then(parse) {
            return Context {
                trace_id,
                parent: Some(parent),
                span_id,
                sampled: flags & 1 == 1,
            };
        }
        let mut trace_id = [0u8; 16];
        while trace_id == [0; 16] {
            rng.fill_bytes(&mut trace_id);
        }
        Context {
            trace_id,
            parent: None,
            span_id,
            sampled: true,
        }
    }

    /// The `traceparent` the host is sent: this trace, the proxy's span.
    pub fn header(&self) -> HeaderValue {
        let text = format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            u8::from(self.sampled)
        );
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `00-<32 hex>-<16 hex>-<2 hex>`, neither id all zeros.
fn parse(value: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let mut parts = text.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() {
        return None;
    }
    let bytes = |s: &str, out: &mut [u8]| -> Option<()> {
        if s.len() != out.len() * 2 {
            return None;
        }
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(())
    };
    let mut t = [0u8; 16];
    let mut p = [0u8; 8];
    let mut f = [0u8; 1];
    bytes(trace, &mut t)?;
    bytes(parent, &mut p)?;
    bytes(flags, &mut f)?;
    (t != [0; 16] && p != [0; 8]).then_some((t, p, f[0]))
}

impl Traces {
    /// Starts the exporter task; it ends (after one last flush) on `stop`.
    pub fn start(config: &TraceConfig, stop: CancellationToken) -> Result<Self, String> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .with_timeout(config.export_timeout)
            .build()
            .map_err(|e| format!("OTLP exporter for {}: {e}", config.otlp_endpoint))?;
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(config.service_name.clone())
                .build(),
        );
        let (tx, rx) = mpsc::channel(config.max_queue_size);
        let stats = Arc::new(TraceStats::default());
        tokio::spawn(export(
            rx,
            exporter,
            config.clone(),
            Arc::clone(&stats),
            stop,
        ));
        Ok(Traces { tx, stats })
    }

    /// Offers a finished call's span; drops it (counted) when the queue is full.
    pub fn record(&self, span: CallSpan) {
        if !span.context.sampled {
            return;
        }
        if self.tx.try_send(span).is_err() {
            self.stats.spans_dropped.inc();
        }
    }
}

/// Takes spans in batches and exports them, one export at a time.
async fn export(
    mut rx: mpsc::Receiver<CallSpan>,
    exporter: opentelemetry_otlp::SpanExporter,
    config: TraceConfig,
    stats: Arc<TraceStats>,
    stop: CancellationToken,
) {
    let scope = InstrumentationScope::builder("grpc-balance-proxy")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let mut batch = Vec::with_capacity(config.max_export_batch_size);
    let mut stopping = false;
    while !stopping {
        let deadline = tokio::time::sleep(config.scheduled_delay);
        tokio::pin!(deadline);
        while batch.len() < config.max_export_batch_size {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(span) => batch.push(span),
                    None => { stopping = true; break; }
                },
                () = &mut deadline => break,
                () = stop.cancelled() => {
                    // Take what is queued, then one last export.
                    while let Ok(span) = rx.try_recv() {
                        batch.push(span);
                    }
                    stopping = true;
                    break;
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let n = batch.len() as u64;
        let spans: Vec<SpanData> = batch.drain(..).map(|s| to_span(s, &scope)).collect();
        let sent = tokio::time::timeout(config.export_timeout, exporter.export(spans)).await;
        match sent {
            Ok(Ok(())) => stats.spans_exported.add(n),
            Ok(Err(e)) => {
                stats.export_failures.inc();
                stats.spans_dropped.add(n);
                tracing::debug!(error = %e, spans = n, "trace export failed; spans dropped");
            }
            Err(_) => {
                stats.export_failures.inc();
                stats.spans_dropped.add(n);
                tracing::debug!(spans = n, "trace export timed out; spans dropped");
            }
        }
    }
}

fn to_span(s: CallSpan, scope: &InstrumentationScope) -> SpanData {
    let (service, method) = s
        .path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or((s.path.as_str(), ""));
    let mut attributes = vec![
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", service.to_owned()),
        KeyValue::new("rpc.method", method.to_owned()),
        KeyValue::new("http.response.status_code", i64::from(s.http_status)),
        KeyValue::new("proxy.listener", s.listener.clone()),
        KeyValue::new("proxy.cluster", s.cluster.clone()),
        KeyValue::new("proxy.retries", i64::from(s.retries)),
    ];
    if let Some(code) = s.grpc_status {
        attributes.push(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
    }
    if let Some(host) = s.host {
        attributes.push(KeyValue::new("server.address", host.ip().to_string()));
        attributes.push(KeyValue::new("server.port", i64::from(host.port())));
    }
    if s.flags != "-" {
        attributes.push(KeyValue::new("proxy.response_flags", s.flags));
    }
    let status = match s.grpc_status {
        Some(0) => Status::Unset,
        Some(code) => Status::error(format!("grpc-status {code}")),
        None if s.flags != "-" => Status::error(format!("response flags {}", s.flags)),
        None => Status::Unset,
    };
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(s.context.trace_id),
            SpanId::from_bytes(s.context.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: s.context.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: s.context.parent.is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Owned(if method.is_empty() {
            s.path.clone()
        } else {
            format!("{service}/{method}")
        }),
        start_time: s.start,
        end_time: s.end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_traceparent_is_continued_and_a_bad_one_starts_a_trace() {
        let client =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let c = Context::from_header(Some(client.as_bytes()));
        assert_eq!(hex(&c.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            c.parent.map(|p| hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert!(c.sampled);
        let up = c.header();
        let up = up.to_str().unwrap();
        assert!(
            up.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{up}"
        );
        assert!(
            up.ends_with("-01") && !up.contains("00f067aa0ba902b7"),
            "{up}"
        );

        let unsampled =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(!Context::from_header(Some(unsampled.as_bytes())).sampled);
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-zz f067aa0ba902b7-01",
            "garbage",
        ] {
            let c = Context::from_header(Some(bad.as_bytes()));
            assert!(c.parent.is_none() && c.sampled, "{bad}");
            assert_ne!(hex(&c.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        }
    }
}
