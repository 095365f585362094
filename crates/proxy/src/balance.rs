//! How a host is picked for each call.
//!
//! Three policies, as in Envoy:
//! - `round_robin`: a shared counter walks the hosts in address order, so one
//!   client's consecutive calls land on consecutive hosts. With N hosts each
//!   gets exactly 1/N of the calls when all are available.
//! - `least_request`: the power of two choices. Two distinct hosts are drawn at
//!   random and the one with fewer calls in flight wins. This avoids a slow host
//!   (its calls pile up) without the herd behaviour of always taking the
//!   global minimum, and costs O(1) per pick.
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
        // Host 0 can only win a draw against itself, which P2C never makes.
        assert_eq!(c[0], 0, "{c:?}");
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
