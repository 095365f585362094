//! Per-method gRPC statistics of a cluster (Envoy's gRPC statistics filter:
//! `cluster.<name>.grpc.<service>.<method>.*`): calls, their `grpc-status`
//! and their time, without decoding a message.
//!
//! The method comes from the request's `:path`, which a client chooses: a
//! client calling made-up methods must not grow memory without limit, so a
//! cluster tracks at most [`MAX_METHODS`] of them and counts the rest
//! together as `other/other`. Looking a method up is a read of an `ArcSwap`
//! map (no lock); only a method seen for the first time takes the lock that
//! copies the map.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::cluster::Stat;
use crate::histogram::Histogram;

/// How many distinct methods one cluster tracks; the rest fold into `other`.
pub const MAX_METHODS: usize = 200;
/// gRPC status codes 0..=16; anything else counts as 2 (UNKNOWN).
const CODES: usize = 17;

/// One method's counts.
#[derive(Debug, Default)]
pub struct MethodStats {
    pub total: Stat,
    /// `grpc-status: 0`.
    pub success: Stat,
    /// Any other status, or none (the call was reset or cut).
    pub failure: Stat,
    /// By `grpc-status`.
    pub status: [Stat; CODES],
    /// Calls that ended with no `grpc-status` (reset, client gone).
    pub no_status: Stat,
    /// Whole call time, as the proxy saw it.
    pub rq_time: Histogram,
}

impl MethodStats {
    fn count(&self, grpc_status: Option<u16>, time: Duration) {
        self.total.inc();
        match grpc_status {
            Some(0) => self.success.inc(),
            _ => self.failure.inc(),
        }
        match grpc_status.map(usize::from) {
            Some(code) if code < CODES => self.status[code].inc(),
            Some(_) => self.status[2].inc(),
            None => self.no_status.inc(),
        }
        self.rq_time.record(time);
    }
}

/// The methods of one cluster.
#[derive(Debug, Default)]
pub struct Methods {
    map: ArcSwap<HashMap<Box<str>, Arc<MethodStats>>>,
    adding: Mutex<()>,
    other: Arc<MethodStats>,
}

impl Methods {
    /// Counts one call of `path` (`/package.Service/Method`).
    pub fn record(&self, path: &str, grpc_status: Option<u16>, time: Duration) {
        let map = self.map.load();
        if let Some(stats) = map.get(path) {
            stats.count(grpc_status, time);
            return;
        }
        drop(map);
        self.add(path).count(grpc_status, time);
    }

    /// The stats of a method seen for the first time (or `other` when full,
    /// or when `path` is not a gRPC method path).
    fn add(&self, path: &str) -> Arc<MethodStats> {
        if split(path).is_none() {
            return Arc::clone(&self.other);
        }
        let _adding = self.adding.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.map.load_full();
        if let Some(s) = current.get(path) {
            return Arc::clone(s);
        }
        if current.len() >= MAX_METHODS {
            return Arc::clone(&self.other);
        }
        let stats = Arc::new(MethodStats::default());
        let mut next = (*current).clone();
        next.insert(path.into(), Arc::clone(&stats));
        self.map.store(Arc::new(next));
        stats
    }

    /// Every method tracked as (service, method, stats), sorted, with
    /// `other/other` last when anything fell into it.
    pub fn all(&self) -> Vec<(String, String, Arc<MethodStats>)> {
        let mut out: Vec<_> = self
            .map
            .load()
            .iter()
            .filter_map(|(path, s)| {
                let (service, method) = split(path)?;
                Some((service.to_owned(), method.to_owned(), Arc::clone(s)))
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        if self.other.total.get() > 0 {
            out.push(("other".into(), "other".into(), Arc::clone(&self.other)));
        }
        out
    }
}

/// `/package.Service/Method` -> (`package.Service`, `Method`).
fn split(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    (ok(service) && ok(method)).then_some((service, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_count_by_method_and_status() {
        let m = Methods::default();
        let t = Duration::from_millis(2);
        m.record("/helloworld.Greeter/SayHello", Some(0), t);
        m.record("/helloworld.Greeter/SayHello", Some(14), t);
        m.record("/helloworld.Greeter/SayHello", None, t);
        m.record("/gateway.AliveService/GetStatus", Some(99), t);
        let all = m.all();
        assert_eq!(all.len(), 2);
        let (service, method, greeter) = &all[1];
        assert_eq!(
            (service.as_str(), method.as_str()),
            ("helloworld.Greeter", "SayHello")
        );
        assert_eq!(greeter.total.get(), 3);
        assert_eq!(greeter.success.get(), 1);
        assert_eq!(greeter.failure.get(), 2);
        assert_eq!(greeter.status[14].get(), 1);
        assert_eq!(greeter.no_status.get(), 1);
        assert_eq!(greeter.rq_time.snapshot().count(), 3);
        assert_eq!(
            all[0].2.status[2].get(),
            1,
            "an unknown code counts as UNKNOWN"
        );
    }

    #[test]
    fn a_flood_of_made_up_methods_folds_into_other() {
        let m = Methods::default();
        for i in 0..MAX_METHODS + 50 {
            m.record(&format!("/svc.S/M{i}"), Some(0), Duration::ZERO);
        }
        m.record("/not a path", Some(0), Duration::ZERO);
        let all = m.all();
        assert_eq!(all.len(), MAX_METHODS + 1);
        let (service, _, other) = all.last().unwrap();
        assert_eq!(service, "other");
        assert_eq!(other.total.get(), 51);
    }
}
