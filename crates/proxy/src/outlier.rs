//! Passive outlier detection: hosts that keep failing calls are ejected.
//!
//! Every finished attempt reports to [`record`]. A *failure* is what says the
//! host itself is in trouble: a connection that cannot be opened, a stream
//! reset or a connection lost mid-call, or `grpc-status: 14` (UNAVAILABLE),
//! read from the response headers **or the trailers** (Envoy only looks at
//! headers, so it misses every streamed gRPC failure). Anything else,
//! including application errors such as NOT_FOUND, is a success and resets the
//! count.
//!
//! After `consecutive_failures` in a row the host is ejected for
//! `base_ejection_time` times the number of times it has been ejected (capped
//! at `max_ejection_time`), unless that would eject more than
//! `max_ejection_percent` of the cluster (one host may always be ejected).
//! A sweep brings hosts back when their time is up and slowly forgives past
//! ejections of hosts that stay well.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, Host, health};
use crate::config::OutlierConfig;

/// What an attempt said about its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
}

/// Counts one attempt's verdict, ejecting the host when it has failed too often.
pub fn record(cluster: &Cluster, host: &Host, verdict: Verdict) {
    let Some(config) = &cluster.config.outlier_detection else {
        return;
    };
    match verdict {
        Verdict::Success => {
            // Cheap when nothing failed: most calls only load.
            if host.consecutive_failures.load(Relaxed) != 0 {
                host.consecutive_failures.store(0, Relaxed);
            }
        }
        Verdict::Failure => {
            let n = host.consecutive_failures.fetch_add(1, Relaxed) + 1;
            if n >= config.consecutive_failures {
                eject(cluster, host, config, n);
            }
        }
    }
}

fn eject(cluster: &Cluster, host: &Host, config: &OutlierConfig, failures: u32) {
    let mut until = host.ejected_until.lock().unwrap_or_else(|e| e.into_inner());
    if until.is_some() {
        return;
    }
    let hosts = cluster.hosts();
    let ejected = hosts.iter().filter(|h| h.is_ejected()).count();
    let allowed = (hosts.len() * config.max_ejection_percent as usize / 100).max(1);
    if ejected + 1 > allowed {
        cluster.stats.outlier_ejections_overflow.inc();
        tracing::warn!(cluster = cluster.name(), host = %host.addr, ejected, allowed,
            "host keeps failing but max_ejection_percent forbids ejecting it");
        host.consecutive_failures.store(0, Relaxed);
        return;
    }
    let times = host.ejections.fetch_add(1, Relaxed) + 1;
    let time = config
        .base_ejection_time
        .saturating_mul(times)
        .min(config.max_ejection_time);
    *until = Some(Instant::now() + time);
    host.set_flag(health::FAILED_OUTLIER_CHECK);
    host.consecutive_failures.store(0, Relaxed);
    cluster.stats.outlier_ejections_active.inc();
    cluster.stats.outlier_ejections_enforced_total.inc();
    tracing::warn!(
        cluster = cluster.name(),
        host = %host.addr,
        failures,
        ejection = times,
        for_ = %common::format_duration(time),
        "host ejected after consecutive failures"
    );
}

/// Brings ejected hosts back when their time is up, until `stop`.
pub async fn run(cluster: Arc<Cluster>, stop: CancellationToken) {
    let Some(config) = cluster.config.outlier_detection.clone() else {
        return;
    };
    // Fine enough for the ejection times, cheap enough to ignore.
    let tick =
        (config.base_ejection_time / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let forgive_after = config.base_ejection_time.max(Duration::from_secs(10));
    let mut last_forgiven = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = stop.cancelled() => return,
        }
        let now = Instant::now();
        let forgive = now.duration_since(last_forgiven) >= forgive_after;
        if forgive {
            last_forgiven = now;
        }
        for host in cluster.all_hosts() {
            let mut until = host.ejected_until.lock().unwrap_or_else(|e| e.into_inner());
            match *until {
                Some(t) if now >= t => {
                    *until = None;
                    host.clear_flag(health::FAILED_OUTLIER_CHECK);
                    cluster.stats.outlier_ejections_active.dec();
                    tracing::info!(cluster = cluster.name(), host = %host.addr, "ejection over; host back in rotation");
                }
                None if forgive => {
                    // A host that stays well slowly earns short ejections back.
                    let _ = host
                        .ejections
                        .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
                }
                _ => {}
            }
        }
    }
}
