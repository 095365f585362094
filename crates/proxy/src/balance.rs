//! How a host is picked for each call.
//!
//! Three policies, as in Envoy:
//! - `round_robin`: a shared counter walks the hosts in address order, so one
//!   client's consecutive calls land on consecutive hosts. With N hosts each
//!   gets exactly 1/N of the calls when all are available.
//! - `least_request` (the default): the host with the fewest calls in flight,
//!   ties broken in round-robin order. At light load every host has as many
//!   calls in flight (none), so it spreads exactly like round robin (1000
//!   sequential calls over 3 hosts: 334/333/333); a slow or frozen host, whose
//!   calls pile up, stops getting calls as soon as it has more in flight than
//!   another. O(hosts) per pick up to 64 hosts; past that the power of two
//!   choices (two distinct hosts at random, the one with fewer in flight wins,
//!   O(1)), as Envoy does.
//! - `random`: uniform.
//!
//! Only available hosts are picked (healthy, not ejected, not draining). When
//! none is available the pick ignores health, as Envoy's panic mode does:
//! trying a host that may have recovered beats failing every call. Hosts in
//! `exclude` (already tried by this call) are never picked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use rand::Rng;

use crate::cluster::Host;
use crate::config::LbPolicy;

/// Picks a host for one call; `None` when every host is excluded or there are none.
///
/// Preference goes, in order, to hosts in rotation whose connection is open;
/// then to hosts in rotation (a call waits for the connection, briefly); then
/// to any host not excluded (panic mode).
pub fn pick(
    policy: LbPolicy,
    hosts: &[Arc<Host>],
    rr: &AtomicUsize,
    exclude: &[SocketAddr],
) -> Option<Arc<Host>> {
    if hosts.is_empty() {
        return None;
    }
    let eligible = |h: &Host| !exclude.contains(&h.addr);
    let ready = |h: &Host| h.is_ready() && eligible(h);
    let healthy = |h: &Host| h.is_available() && eligible(h);
    pick_where(policy, hosts, rr, &ready)
        .or_else(|| pick_where(policy, hosts, rr, &healthy))
        .or_else(|| pick_where(policy, hosts, rr, &eligible))
}

/// Picks among the hosts that satisfy `ok`, as if they were the only ones:
/// the policy's fairness holds over that subset (a host out of rotation does
/// not hand its turn to its neighbour).
fn pick_where(
    policy: LbPolicy,
    hosts: &[Arc<Host>],
    rr: &AtomicUsize,
    ok: &dyn Fn(&Host) -> bool,
) -> Option<Arc<Host>> {
    let n = hosts.len();
    // The common case: every host qualifies, index directly.
    let all = hosts.iter().all(|h| ok(h));
    let count = if all {
        n
    } else {
        hosts.iter().filter(|h| ok(h)).count()
    };
    if count == 0 {
        return None;
    }
    let nth = |k: usize| -> &Arc<Host> {
        if all {
            &hosts[k]
        } else {
            hosts.iter().filter(|h| ok(h)).nth(k).unwrap_or(&hosts[0])
        }
    };
    let chosen = match policy {
        LbPolicy::RoundRobin => nth(rr.fetch_add(1, Relaxed) % count),
        LbPolicy::Random => nth(rand::rng().random_range(0..count)),
        LbPolicy::LeastRequest if n <= FULL_SCAN_HOSTS => {
            return least_request(hosts, rr, ok);
        }
        LbPolicy::LeastRequest => {
            if count == 1 {
                nth(0)
            } else {
                // Two distinct random hosts; the one with fewer calls in flight wins.
                let mut rng = rand::rng();
                let a = rng.random_range(0..count);
                let b = (a + rng.random_range(1..count)) % count;
                let (ha, hb) = (nth(a), nth(b));
                if hb.stats.rq_active.get() < ha.stats.rq_active.get() {
                    hb
                } else {
                    ha
                }
            }
        }
    };
    Some(Arc::clone(chosen))
}

/// Up to this many hosts, `least_request` looks at every host; beyond, it
/// draws two (P2C), as Envoy does for all sizes.
const FULL_SCAN_HOSTS: usize = 64;

/// The host with the fewest calls in flight; ties go to the first in
/// round-robin order, and the rotation continues after the chosen host. When
/// every host has as many calls in flight (light load: none), this is exactly
/// round robin; a host whose calls pile up (frozen, slow) stops getting new
/// ones as soon as it has more in flight than any other.
fn least_request(
    hosts: &[Arc<Host>],
    rr: &AtomicUsize,
    ok: &dyn Fn(&Host) -> bool,
) -> Option<Arc<Host>> {
    let n = hosts.len();
    let start = rr.load(Relaxed) % n;
    let mut best: Option<(usize, u64)> = None;
    for j in 0..n {
        let i = (start + j) % n;
        let h = &hosts[i];
        if !ok(h) {
            continue;
        }
        let active = h.stats.rq_active.get();
        if best.is_none_or(|(_, b)| active < b) {
            best = Some((i, active));
            if active == 0 {
                break; // nothing beats an idle host
            }
        }
    }
    let (i, _) = best?;
    rr.store(i + 1, Relaxed);
    Some(Arc::clone(&hosts[i]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::health;
    use crate::cluster::test_host as host;

    fn counts(policy: LbPolicy, hosts: &[Arc<Host>], picks: usize) -> Vec<usize> {
        let rr = AtomicUsize::new(0);
        let mut counts = vec![0; hosts.len()];
        for _ in 0..picks {
            let h = pick(policy, hosts, &rr, &[]).expect("a host");
            let i = hosts.iter().position(|x| x.addr == h.addr).expect("known");
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_is_exact() {
        let hosts = vec![host(1), host(2), host(3)];
        assert_eq!(
            counts(LbPolicy::RoundRobin, &hosts, 3000),
            [1000, 1000, 1000]
        );
    }

    #[test]
    fn unavailable_hosts_are_skipped_and_panic_mode_uses_them_when_all_are_down() {
        let hosts = vec![host(1), host(2), host(3)];
        hosts[1].set_flag(health::FAILED_OUTLIER_CHECK);
        for policy in [
            LbPolicy::RoundRobin,
            LbPolicy::Random,
            LbPolicy::LeastRequest,
        ] {
            let c = counts(policy, &hosts, 600);
            assert_eq!(c[1], 0, "{policy}: {c:?}");
            assert_eq!(c[0] + c[2], 600);
        }
        for h in &hosts {
            h.set_flag(health::FAILED_ACTIVE_HC);
        }
        let c = counts(LbPolicy::RoundRobin, &hosts, 300);
        assert_eq!(c, [100, 100, 100], "panic mode spreads over all hosts");
    }

    #[test]
    fn round_robin_is_fair_over_the_hosts_in_rotation() {
        // One of four out of rotation: the other three get a third each, not
        // its neighbour a double share.
        let hosts = vec![host(1), host(2), host(3), host(4)];
        hosts[1].set_flag(health::FAILED_ACTIVE_HC);
        let c = counts(LbPolicy::RoundRobin, &hosts, 3000);
        assert_eq!(c, [1000, 0, 1000, 1000]);
    }

    #[test]
    fn excluded_hosts_are_never_picked() {
        let hosts = vec![host(1), host(2)];
        let rr = AtomicUsize::new(0);
        for policy in [
            LbPolicy::RoundRobin,
            LbPolicy::Random,
            LbPolicy::LeastRequest,
        ] {
            for _ in 0..50 {
                let h = pick(policy, &hosts, &rr, &[hosts[0].addr]).unwrap();
                assert_eq!(h.addr, hosts[1].addr);
            }
            assert!(pick(policy, &hosts, &rr, &[hosts[0].addr, hosts[1].addr]).is_none());
        }
    }

    #[test]
    fn least_request_avoids_the_busy_host() {
        let hosts = vec![host(1), host(2), host(3)];
        let _busy: Vec<_> = (0..10).map(|_| hosts[0].start_request()).collect();
        let c = counts(LbPolicy::LeastRequest, &hosts, 3000);
        assert_eq!(c[0], 0, "{c:?}");
        assert_eq!(c[1] + c[2], 3000);
        assert!(c[1].abs_diff(c[2]) <= 1, "ties alternate: {c:?}");
    }

    #[test]
    fn least_request_with_nothing_in_flight_is_exact_round_robin() {
        let hosts = vec![host(1), host(2), host(3)];
        assert_eq!(counts(LbPolicy::LeastRequest, &hosts, 999), [333, 333, 333]);
    }

    #[test]
    fn least_request_past_the_full_scan_still_avoids_the_busy_host() {
        let hosts: Vec<_> = (1..=70).map(host).collect();
        let _busy: Vec<_> = (0..10).map(|_| hosts[0].start_request()).collect();
        let c = counts(LbPolicy::LeastRequest, &hosts, 7000);
        assert_eq!(c[0], 0, "P2C never prefers the busy host");
    }

    #[test]
    fn random_spreads_roughly_evenly() {
        let hosts = vec![host(1), host(2), host(3)];
        let c = counts(LbPolicy::Random, &hosts, 30_000);
        for n in c {
            assert!((9_000..11_000).contains(&n), "{n}");
        }
    }
}
