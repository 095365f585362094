//! Micro-benchmarks of the per-call host pick, the one piece of balancing on
//! every call's path: `balance::pick` for each policy over a small and a large
//! cluster, the retry case (one host excluded), the case with an ejected host,
//! and `Cluster::pick`, which adds the lock-free load of the host list.
//!
//! Run with `cargo bench -p proxy --bench pick`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use proxy::balance;
use proxy::cluster::{Cluster, Host, health};
use proxy::config::{ClusterConfig, LbPolicy};
use tokio_util::task::TaskTracker;

const POLICIES: [LbPolicy; 3] = [
    LbPolicy::RoundRobin,
    LbPolicy::LeastRequest,
    LbPolicy::Random,
];

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 256) as u8, (i % 256) as u8], 8080))
}

/// A cluster of `n` static hosts. Without HTTP/2 no connection maintainer is
/// spawned, so no runtime is needed.
fn cluster(n: usize, lb: LbPolicy) -> (Arc<Cluster>, Arc<Vec<Arc<Host>>>) {
    let mut config = ClusterConfig::new("bench", Vec::new());
    config.lb = lb;
    let cluster = Cluster::new(config, TaskTracker::new(), false, None);
    let wanted: Vec<(SocketAddr, String)> = (0..n).map(|i| (addr(i), format!("h{i}"))).collect();
    cluster.update(&wanted);
    let hosts = cluster.hosts();
    (cluster, hosts)
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance::pick");
    for n in [3, 32] {
        for policy in POLICIES {
            let (_cluster, hosts) = cluster(n, policy);
            let rr = AtomicUsize::new(0);
            group.bench_with_input(BenchmarkId::new(policy.to_string(), n), &n, |b, _| {
                b.iter(|| balance::pick(policy, black_box(&hosts), &rr, black_box(&[])))
            });
        }
    }
    group.finish();
}

fn pick_excluding(c: &mut Criterion) {
    // A retry: the host already tried is excluded.
    let mut group = c.benchmark_group("balance::pick excluding one");
    for policy in POLICIES {
        let (_cluster, hosts) = cluster(3, policy);
        let rr = AtomicUsize::new(0);
        let exclude = [hosts[0].addr];
        group.bench_function(policy.to_string(), |b| {
            b.iter(|| balance::pick(policy, black_box(&hosts), &rr, black_box(&exclude)))
        });
    }
    group.finish();
}

fn pick_with_ejected(c: &mut Criterion) {
    // One of three hosts ejected by outlier detection.
    let mut group = c.benchmark_group("balance::pick one ejected");
    for policy in POLICIES {
        let (_cluster, hosts) = cluster(3, policy);
        hosts[1].set_flag(health::FAILED_OUTLIER_CHECK);
        let rr = AtomicUsize::new(0);
        group.bench_function(policy.to_string(), |b| {
            b.iter(|| balance::pick(policy, black_box(&hosts), &rr, black_box(&[])))
        });
    }
    group.finish();
}

fn cluster_pick(c: &mut Criterion) {
    // What a call does: load the current host list, then pick.
    let mut group = c.benchmark_group("Cluster::pick");
    for policy in POLICIES {
        let (cluster, _hosts) = cluster(3, policy);
        group.bench_function(policy.to_string(), |b| {
            b.iter(|| cluster.pick(black_box(&[])))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    pick,
    pick_excluding,
    pick_with_ejected,
    cluster_pick
);
criterion_main!(benches);
