//! The small value types of the configuration (modes, policies, upstream
//! addresses) and how durations and switches are read and written.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a listener balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// HTTP/2 requests: each call goes to its own pick.
    #[default]
    L7,
    /// TCP connections: bytes are copied, every call of a connection lands on one host.
    L4,
}

/// How a host is picked. See [`crate::balance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum LbPolicy {
    RoundRobin,
    #[default]
    LeastRequest,
    Random,
}

/// The access log's line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// Envoy's default format, byte for byte.
    #[default]
    Envoy,
    /// Envoy's default format plus ` "%REQ(TRACEPARENT)%"` at the end.
    EnvoyTrace,
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl fmt::Display for LbPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LbPolicy::RoundRobin => "round_robin",
            LbPolicy::LeastRequest => "least_request",
            LbPolicy::Random => "random",
        })
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::L7 => "l7",
            Mode::L4 => "l4",
        })
    }
}

/// An upstream as configured: a name or an IP literal, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
}

impl Upstream {
    /// The address, when the host is an IP literal (a static host, never resolved).
    pub fn ip(&self) -> Option<SocketAddr> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl std::str::FromStr for Upstream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("upstream {s:?} must be HOST:PORT, e.g. backend:8080 or 10.0.0.5:8080");
        let (host, port) = s.trim().rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let valid_name = !host.is_empty()
            && host.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '[' | ']' | ':')
            });
        if !valid_name || port == 0 {
            return Err(bad());
        }
        Ok(Upstream {
            host: host.to_owned(),
            port,
        })
    }
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Upstream {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `true`/`false`, or `on`/`off` as the flag spells it.
pub(crate) fn on_off<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OnOff {
        Bool(bool),
        Text(String),
    }
    match OnOff::deserialize(d)? {
        OnOff::Bool(b) => Ok(b),
        OnOff::Text(t) => switch(&t).ok_or_else(|| {
            serde::de::Error::custom(format!("expected on or off, got {:?}", t.trim()))
        }),
    }
}

/// `on`/`true`/`yes` or `off`/`false`/`no`, as a switch is written.
pub(crate) fn switch(text: &str) -> Option<bool> {
    match text.trim() {
        "on" | "true" | "yes" => Some(true),
        "off" | "false" | "no" => Some(false),
        _ => None,
    }
}

/// A duration (`500ms`, `5s`, `2m`).
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    common::parse_duration(&s).map_err(serde::de::Error::custom)
}

/// A duration, or `off` / `none` / `0s` for none.
pub(crate) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    match s.as_deref().map(str::trim) {
        None | Some("") | Some("off") | Some("none") => Ok(None),
        Some(s) => common::parse_duration(s)
            .map(|d| (!d.is_zero()).then_some(d))
            .map_err(serde::de::Error::custom),
    }
}

/// Writes a duration as it is read: `500ms`, `5s`.
pub(crate) fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&common::format_duration(*d))
}

/// Writes an optional duration, `off` for none.
pub(crate) fn ser_opt_duration<S: Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_str("off"),
    }
}
