//! gRPC-Web on a listener as configured: the request limit, and which web
//! pages (origins) may call through it (CORS).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::values::{duration, ser_duration};

/// Browsers' gRPC-Web calls on an L7 listener, translated to gRPC. Off
/// unless given (`grpc_web: on`, or a map of these keys).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcWebConfig {
    /// A request body (its messages, decoded) larger than this is refused
    /// with RESOURCE_EXHAUSTED before anything is sent to a host.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Which pages may call (CORS); absent: no cross-origin calls at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsConfig>,
}

/// Cross-origin calls: what the proxy answers a browser's preflight with,
/// and adds to the answers of allowed pages.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed, exact (`https://app.example.com`) or with `*`
    /// standing for any run of characters (`https://*.example.com`,
    /// `http://localhost:*`, `*`).
    pub allow_origins: Vec<String>,
    /// Request headers a page may send (the preflight's answer). Empty (the
    /// default): whatever the preflight asks for, as PROTOCOL-WEB.md
    /// advises, so that a page's own metadata headers pass too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response headers a page may read, beyond `grpc-status`,
    /// `grpc-message` and `x-backend-id`, which are always exposed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long a browser may keep a preflight's answer.
    #[serde(
        default = "default_max_age",
        deserialize_with = "duration",
        serialize_with = "ser_duration"
    )]
    pub max_age: Duration,
    /// Let pages send cookies and HTTP authentication.
    #[serde(default)]
    pub allow_credentials: bool,
}

/// The headers every gRPC-Web answer exposes to the page.
pub const ALWAYS_EXPOSED: [&str; 3] = ["grpc-status", "grpc-message", "x-backend-id"];

fn default_max_request_bytes() -> usize {
    4 << 20
}
fn default_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}
impl Default for GrpcWebConfig {
    fn default() -> Self {
        GrpcWebConfig {
            max_request_bytes: default_max_request_bytes(),
            cors: None,
        }
    }
}

impl CorsConfig {
    /// These origins allowed, everything else default.
    pub fn new(allow_origins: Vec<String>) -> Self {
        CorsConfig {
            allow_origins,
            allow_headers: Vec::new(),
            expose_headers: Vec::new(),
            max_age: default_max_age(),
            allow_credentials: false,
        }
    }

    /// Whether a page of `origin` may call.
    pub fn allows(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|p| glob(p, origin))
    }

    /// Whether every origin is allowed (`*` may then be answered as such).
    pub fn any_origin(&self) -> bool {
        self.allow_origins.iter().any(|p| p == "*")
    }
}

/// `pattern` with `*` for any run of characters (none included), matched
/// against the whole of `text`, case-insensitively (origins' schemes and
/// hosts are).
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    // The classic two-pointer match with one backtrack point per star.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i].eq_ignore_ascii_case(&t[j]) {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

/// `grpc_web:` is `on`/`off` (or `true`/`false`), or a map of the keys.
pub(crate) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<GrpcWebConfig>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Bool(bool),
        Text(String),
        // Read on its own below: through `untagged`, a mistyped key would
        // only say that nothing matched.
        Map(serde_norway::Value),
    }
    match Given::deserialize(d)? {
        Given::Bool(on) => Ok(on.then(GrpcWebConfig::default)),
        Given::Text(t) => match super::values::switch(&t) {
            Some(on) => Ok(on.then(GrpcWebConfig::default)),
            None => Err(serde::de::Error::custom(format!(
                "grpc_web: expected on, off or a map (max_request_bytes, cors), got {:?}",
                t.trim()
            ))),
        },
        Given::Map(map) => GrpcWebConfig::deserialize(map)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("grpc_web: {e}"))),
    }
}

impl GrpcWebConfig {
    /// What is wrong with it, for listener `listener`.
    pub(super) fn problems(&self, listener: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.max_request_bytes < 5 {
            problems.push(format!(
                "listener {listener:?}: grpc_web.max_request_bytes must be at least 5 (one frame header)"
            ));
        }
        if let Some(cors) = &self.cors {
            if cors.allow_origins.is_empty() {
                problems.push(format!(
                    "listener {listener:?}: grpc_web.cors.allow_origins is empty; give the pages' origins (e.g. https://app.example.com), or leave cors out"
                ));
            }
            for origin in &cors.allow_origins {
                if origin.is_empty()
                    || origin.ends_with('/')
                    || origin.contains(char::is_whitespace)
                    || (origin != "*" && !origin.contains("://"))
                {
                    problems.push(format!(
                        "listener {listener:?}: grpc_web.cors.allow_origins: {origin:?} is not an origin (scheme://host[:port], no path; `*` wildcards allowed)"
                    ));
                }
            }
            if cors.allow_credentials && cors.any_origin() {
                problems.push(format!(
                    "listener {listener:?}: grpc_web.cors: allow_credentials with allow_origins `*` would let every site call with the user's cookies; name the origins"
                ));
            }
            for h in cors.allow_headers.iter().chain(&cors.expose_headers) {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    problems.push(format!(
                        "listener {listener:?}: grpc_web.cors: {h:?} is not a header name"
                    ));
                }
            }
        }
        problems
    }

    /// The lines `--validate` prints about it.
    pub fn describe(&self) -> String {
        let cors = match &self.cors {
            None => "no cross-origin calls".to_owned(),
            Some(c) => format!(
                "CORS for {} (max age {})",
                c.allow_origins.join(", "),
                common::format_duration(c.max_age)
            ),
        };
        format!(
            "gRPC-Web and HTTP/1.1 on, requests up to {} bytes, {cors}",
            self.max_request_bytes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_by_wildcard() {
        let cors = CorsConfig::new(vec![
            "https://app.example.com".into(),
            "https://*.example.org".into(),
            "http://localhost:*".into(),
        ]);
        assert!(cors.allows("https://app.example.com"));
        assert!(cors.allows("HTTPS://APP.example.com"), "case-insensitive");
        assert!(!cors.allows("https://app.example.com.evil.net"));
        assert!(!cors.allows("http://app.example.com"), "another scheme");
        assert!(cors.allows("https://a.b.example.org"));
        assert!(!cors.allows("https://example.org"), "the dot is part of it");
        assert!(cors.allows("http://localhost:9901"));
        assert!(!cors.allows("http://localhost"));
        assert!(!cors.any_origin());
        assert!(CorsConfig::new(vec!["*".into()]).allows("null"));
    }

    #[test]
    fn grpc_web_is_a_switch_or_a_map() {
        #[derive(Deserialize)]
        struct L {
            #[serde(default, deserialize_with = "optional")]
            grpc_web: Option<GrpcWebConfig>,
        }
        let read = |y: &str| serde_norway::from_str::<L>(y).map(|l| l.grpc_web);
        assert_eq!(
            read("grpc_web: on").unwrap(),
            Some(GrpcWebConfig::default())
        );
        assert_eq!(read("grpc_web: off").unwrap(), None);
        assert_eq!(
            read("grpc_web: true").unwrap(),
            Some(GrpcWebConfig::default())
        );
        let config = read("grpc_web: {max_request_bytes: 100, cors: {allow_origins: ['*']}}")
            .unwrap()
            .unwrap();
        assert_eq!(config.max_request_bytes, 100);
        assert!(
            config.cors.unwrap().allow_headers.is_empty(),
            "by default the preflight's own list is echoed"
        );
        let typo = read("grpc_web: {max_request_byte: 1}")
            .err()
            .unwrap()
            .to_string();
        assert!(typo.contains("max_request_byte"), "{typo}");
    }

    #[test]
    fn bad_cors_settings_are_named() {
        let mut config = GrpcWebConfig {
            cors: Some(CorsConfig::new(vec!["https://app.example.com/".into()])),
            ..GrpcWebConfig::default()
        };
        assert!(config.problems("web")[0].contains("is not an origin"));
        let mut cors = CorsConfig::new(vec!["*".into()]);
        cors.allow_credentials = true;
        config.cors = Some(cors);
        assert!(config.problems("web")[0].contains("allow_credentials"));
    }
}
