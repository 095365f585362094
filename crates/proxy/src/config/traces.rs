//! Trace export as configured: where spans go over OTLP, and the bounds of
//! the queue that keeps a slow collector from slowing calls.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{duration, ser_duration};

/// One span per call, exported over OTLP/gRPC (the collector's port 4317).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TraceConfig {
    /// The collector, e.g. `http://otel-collector:4317`.
    pub otlp_endpoint: String,
    /// The `service.name` of the spans' resource.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Spans waiting for export at most; past it new spans are dropped (and
    /// counted), never waited for.
    #[serde(default = "default_queue")]
    pub max_queue_size: usize,
    /// Spans per export request at most.
    #[serde(default = "default_batch")]
    pub max_export_batch_size: usize,
    /// A batch leaves at least this often, full or not.
    #[serde(
        default = "default_delay",
        deserialize_with = "duration",
        serialize_with = "ser_duration"
    )]
    pub scheduled_delay: Duration,
    /// An export the collector has not answered in this long fails; its
    /// spans are dropped (and counted).
    #[serde(
        default = "default_export_timeout",
        deserialize_with = "duration",
        serialize_with = "ser_duration"
    )]
    pub export_timeout: Duration,
}

fn default_service_name() -> String {
    "grpc-balance-proxy".into()
}
fn default_queue() -> usize {
    2048
}
fn default_batch() -> usize {
    512
}
fn default_delay() -> Duration {
    Duration::from_secs(1)
}
fn default_export_timeout() -> Duration {
    Duration::from_secs(5)
}

impl TraceConfig {
    /// Export to `endpoint`, everything else default.
    pub fn new(endpoint: &str) -> Self {
        TraceConfig {
            otlp_endpoint: endpoint.to_owned(),
            service_name: default_service_name(),
            max_queue_size: default_queue(),
            max_export_batch_size: default_batch(),
            scheduled_delay: default_delay(),
            export_timeout: default_export_timeout(),
        }
    }

    /// What is wrong with it.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let uri = self.otlp_endpoint.parse::<http::Uri>();
        let ok = uri.as_ref().is_ok_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
        });
        if !ok {
            problems.push(format!(
                "traces.otlp_endpoint {:?} must be http://HOST:PORT or https://HOST:PORT (the collector's OTLP/gRPC port, 4317)",
                self.otlp_endpoint
            ));
        }
        if self.max_queue_size == 0 || self.max_export_batch_size == 0 {
            problems
                .push("traces: max_queue_size and max_export_batch_size must be at least 1".into());
        }
        if self.max_export_batch_size > self.max_queue_size {
            problems.push("traces: max_export_batch_size must not exceed max_queue_size".into());
        }
        if self.scheduled_delay.is_zero() || self.export_timeout.is_zero() {
            problems
                .push("traces: scheduled_delay and export_timeout must be more than zero".into());
        }
        problems
    }

    /// The `--validate` line.
    pub(super) fn summary(&self) -> String {
        format!(
            "traces: one span per call to {} (service {}), batches of up to {} every {}, queue {} (then dropped), export timeout {}\n",
            self.otlp_endpoint,
            self.service_name,
            self.max_export_batch_size,
            common::format_duration(self.scheduled_delay),
            self.max_queue_size,
            common::format_duration(self.export_timeout)
        )
    }
}
