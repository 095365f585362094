//! The HPACK static table (RFC 7541 Appendix A) and the lookups the encoder
//! and [`crate::Head`] make in it.

/// The static table: entry `i` (1-based in HPACK) is `STATIC[i - 1]`.
pub const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

// Static entries the encoder and decoder name (1-based, as in HPACK).
pub const AUTHORITY: u8 = 1;
pub const METHOD_GET: u8 = 2;
pub const METHOD_POST: u8 = 3;
pub const PATH_ROOT: u8 = 4;
pub const PATH_INDEX: u8 = 5;
pub const SCHEME_HTTP: u8 = 6;
pub const SCHEME_HTTPS: u8 = 7;
/// `:status 200`, the first of the `:status` entries (8 to 14).
pub const STATUS_200: u8 = 8;
pub const LAST_PSEUDO: u8 = 14;
pub const CONTENT_LENGTH: u8 = 28;
pub const TRANSFER_ENCODING: u8 = 57;

/// The static index (1..=61) of the first entry named `name`, or 0.
pub fn static_name_index(name: &[u8]) -> u8 {
    // First a cheap filter on the length, then the few names of that length.
    let candidates: &[u8] = match name.len() {
        3 => &[21, 60],
        4 => &[33, 34, 37, 38, 45, 59],
        5 => &[4, 22, 50],
        6 => &[19, 32, 35, 54],
        7 => &[2, 6, 8, 36, 51, 52],
        8 => &[39, 42, 46],
        10 => &[1, 55, 58],
        11 => &[53],
        12 => &[31, 47],
        13 => &[18, 23, 24, 30, 41, 44],
        14 => &[15, 28],
        15 => &[16, 17],
        16 => &[26, 27, 29, 61],
        17 => &[40, 57],
        18 => &[48],
        19 => &[25, 43, 49],
        25 => &[56],
        27 => &[20],
        _ => return 0,
    };
    // The first byte tells most candidates apart without a memcmp call.
    let first = name.first();
    for &i in candidates {
        let candidate = STATIC[usize::from(i) - 1].0;
        if candidate.first() == first && candidate == name {
            return i;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_indexes_are_their_entries() {
        let entry = |i: u8| STATIC[usize::from(i) - 1];
        assert_eq!(entry(AUTHORITY), (&b":authority"[..], &b""[..]));
        assert_eq!(entry(METHOD_GET), (&b":method"[..], &b"GET"[..]));
        assert_eq!(entry(METHOD_POST), (&b":method"[..], &b"POST"[..]));
        assert_eq!(entry(PATH_ROOT), (&b":path"[..], &b"/"[..]));
        assert_eq!(entry(PATH_INDEX), (&b":path"[..], &b"/index.html"[..]));
        assert_eq!(entry(SCHEME_HTTP), (&b":scheme"[..], &b"http"[..]));
        assert_eq!(entry(SCHEME_HTTPS), (&b":scheme"[..], &b"https"[..]));
        assert_eq!(entry(STATUS_200), (&b":status"[..], &b"200"[..]));
        assert_eq!(entry(LAST_PSEUDO).0, b":status");
        assert!(!entry(LAST_PSEUDO + 1).0.starts_with(b":"));
        assert_eq!(entry(CONTENT_LENGTH).0, b"content-length");
        assert_eq!(entry(TRANSFER_ENCODING).0, b"transfer-encoding");
    }

    #[test]
    fn every_static_name_is_found_at_its_first_index() {
        for (name, _) in &STATIC {
            let first = STATIC.iter().position(|(n, _)| n == name).unwrap() + 1;
            assert_eq!(
                usize::from(static_name_index(name)),
                first,
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        assert_eq!(static_name_index(b"x-backend-id"), 0);
        assert_eq!(static_name_index(b"grpc-status"), 0);
        assert_eq!(static_name_index(b"te"), 0);
    }
}
