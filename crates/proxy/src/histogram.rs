//! Latency histograms: fixed buckets of atomic counters, so that recording
//! a call's time on the call path is a binary search and two atomic adds,
//! with no lock shared across workers and no allocation.
//!
//! The buckets are fine enough for percentiles (16 per decade, from 0.1 ms
//! to 100 s, each at most 25% wider than the one before) and include every
//! bound Prometheus is given (0.5 ms .. 60 s, Envoy's milliseconds), so that
//! the exported `_bucket` counts are exact. Percentiles are interpolated
//! within a bucket, as Envoy's and Prometheus' `histogram_quantile` do.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets in microseconds; one more bucket holds the rest.
pub const BOUNDS_US: [u64; 96] = bounds();

/// The bounds given to Prometheus (`le`, in milliseconds as Envoy has them).
pub const PROMETHEUS_BOUNDS_MS: [f64; 16] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
    30000.0, 60000.0,
];

/// The percentiles `/stats` prints, as Envoy does.
pub const QUANTILES: [f64; 10] = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0];

const fn bounds() -> [u64; 96] {
    // 1.0, 1.2, ... 9 times 100 us, 1 ms, ... 10 s.
    const STEPS: [u64; 16] = [
        10, 12, 14, 16, 18, 20, 25, 30, 35, 40, 45, 50, 60, 70, 80, 90,
    ];
    let mut out = [0u64; 96];
    let mut decade = 0;
    let mut scale = 10; // STEPS are tenths: 10 * 10 us = 100 us.
    while decade < 6 {
        let mut i = 0;
        while i < 16 {
            out[decade * 16 + i] = STEPS[i] * scale;
            i += 1;
        }
        scale *= 10;
        decade += 1;
    }
    out
}

/// A latency histogram.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; 97],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Counts one value.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// The counts as they are now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            counts: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            sum_us: self.sum_us.load(Relaxed),
        }
    }
}

/// A histogram's counts at one moment; can be added up and subtracted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// One per bucket of [`BOUNDS_US`], and the overflow bucket last.
    pub counts: Vec<u64>,
    pub sum_us: u64,
}

impl Snapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s counts (a cluster's from its hosts').
    pub fn add(&mut self, other: &Snapshot) {
        if self.counts.is_empty() {
            self.counts = vec![0; other.counts.len()];
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }

    /// The `q` quantile (0..=1) in milliseconds, interpolated within its
    /// bucket; `None` with no values.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (below + n) as f64 >= rank {
                let lower = if i == 0 { 0 } else { BOUNDS_US[i - 1] } as f64;
                let upper = BOUNDS_US.get(i).map_or(lower * 2.0, |&b| b as f64);
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some((lower + (upper - lower) * within) / 1000.0);
            }
            below += n;
        }
        None
    }

    /// Cumulative counts at each of [`PROMETHEUS_BOUNDS_MS`] (exact: every
    /// one of them is a bucket bound), then the total for `+Inf`.
    pub fn prometheus_buckets(&self) -> Vec<(f64, u64)> {
        let mut out = Vec::with_capacity(PROMETHEUS_BOUNDS_MS.len());
        let mut cumulative = 0u64;
        let mut next = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            cumulative += n;
            let Some(&bound) = BOUNDS_US.get(i) else {
                break;
            };
            while next < PROMETHEUS_BOUNDS_MS.len()
                && (PROMETHEUS_BOUNDS_MS[next] * 1000.0) as u64 == bound
            {
                out.push((PROMETHEUS_BOUNDS_MS[next], cumulative));
                next += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_gently_and_hold_every_prometheus_bound() {
        assert_eq!(BOUNDS_US[0], 100);
        assert_eq!(BOUNDS_US[95], 90_000_000);
        for w in BOUNDS_US.windows(2) {
            assert!(w[1] > w[0] && w[1] * 4 <= w[0] * 5, "{w:?}");
        }
        for b in PROMETHEUS_BOUNDS_MS {
            let us = (b * 1000.0) as u64;
            assert!(BOUNDS_US.contains(&us), "{b} ms is not a bucket bound");
        }
    }

    #[test]
    fn percentiles_land_near_the_values_recorded() {
        let h = Histogram::default();
        for _ in 0..900 {
            h.record(Duration::from_micros(1_050));
        }
        for _ in 0..100 {
            h.record(Duration::from_millis(21));
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 1000);
        let p50 = s.quantile_ms(0.5).unwrap();
        assert!((1.0..=1.2).contains(&p50), "p50 {p50}");
        let p99 = s.quantile_ms(0.99).unwrap();
        assert!((20.0..=25.0).contains(&p99), "p99 {p99}");
        assert_eq!(s.sum_us, 900 * 1_050 + 100 * 21_000);
        assert_eq!(Snapshot::default().quantile_ms(0.5), None);
    }

    #[test]
    fn prometheus_buckets_are_cumulative_and_exact() {
        let h = Histogram::default();
        h.record(Duration::from_micros(500)); // le 0.5 includes its bound
        h.record(Duration::from_micros(501));
        h.record(Duration::from_secs(100)); // beyond 60 s: only +Inf
        let b = h.snapshot().prometheus_buckets();
        assert_eq!(b.len(), PROMETHEUS_BOUNDS_MS.len());
        assert_eq!(b[0], (0.5, 1));
        assert_eq!(b[1], (1.0, 2));
        assert_eq!(b[15], (60000.0, 2));
        assert_eq!(h.snapshot().count(), 3);
        let mut sum = h.snapshot();
        sum.add(&h.snapshot());
        assert_eq!(sum.count(), 6);
    }
}
