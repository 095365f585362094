//! A header block as a forwarding proxy holds it: the pseudo-header fields
//! and the regular fields in the order they came, their bytes back to back
//! in one buffer, each name that is in the HPACK static table kept as its
//! index only.
//!
//! Nothing is parsed into typed values (no `HeaderMap`, no `Uri`): a proxy
//! reads a handful of fields and passes the rest on. The static index of a
//! name read from the static table (or from a dynamic-table entry whose name
//! is in it) is kept, so the encoder writes it again without a lookup, and a
//! field received as never-indexed is sent as never-indexed (RFC 7541
//! section 6.2.3 asks intermediaries to).

use smallvec::SmallVec;

use crate::hpack::table::STATIC;

/// A range of a [`Head`]'s buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) len: u32,
}

impl Span {
    pub(crate) fn range(self) -> std::ops::Range<usize> {
        self.start as usize..(self.start + self.len) as usize
    }
}

/// One regular field.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Field {
    /// The name's index in the HPACK static table (1..=61), or 0: then the
    /// name is `name` in the buffer.
    pub(crate) static_name: u8,
    /// Received (or to be sent) as a never-indexed literal.
    pub(crate) sensitive: bool,
    pub(crate) name: Span,
    pub(crate) value: Span,
}

/// The pseudo-header fields of a block; `None` (or status 0) when absent.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Pseudo {
    pub(crate) method: Option<Span>,
    pub(crate) scheme: Option<Span>,
    pub(crate) authority: Option<Span>,
    pub(crate) path: Option<Span>,
    pub(crate) protocol: Option<Span>,
    pub(crate) status: u16,
}

/// A request head, a response head or a trailer block.
///
/// Built by the HPACK decoder from a received block (validated as RFC 9113
/// section 8 asks), or by the caller ([`Head::request`], [`Head::response`],
/// [`Head::trailers`], then [`Head::append`]) for a block to send.
#[derive(Clone, Default)]
pub struct Head {
    pub(crate) buf: Vec<u8>,
    pub(crate) fields: SmallVec<[Field; 8]>,
    pub(crate) pseudo: Pseudo,
    /// RFC 7541 section 4.1 size of the block as received: every field's name
    /// and value plus 32, pseudo-header fields included. 0 for built blocks.
    pub(crate) list_size: usize,
    /// The `content-length` of a received block, parsed; checked against the
    /// DATA that follows.
    pub(crate) content_length: Option<u64>,
}

impl std::fmt::Debug for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        let p = &self.pseudo;
        for (name, span) in [
            (":method", p.method),
            (":scheme", p.scheme),
            (":authority", p.authority),
            (":path", p.path),
            (":protocol", p.protocol),
        ] {
            if let Some(span) = span {
                list.entry(&(name, String::from_utf8_lossy(&self.buf[span.range()])));
            }
        }
        if p.status != 0 {
            list.entry(&(":status", p.status));
        }
        for (name, value) in self.iter() {
            list.entry(&(
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(value),
            ));
        }
        list.finish()
    }
}

impl Head {
    /// A request head to send. `authority` may be empty (then none is sent).
    pub fn request(method: &[u8], scheme: &[u8], authority: &[u8], path: &[u8]) -> Self {
        let mut head = Head::default();
        head.buf
            .reserve(method.len() + scheme.len() + authority.len() + path.len() + 64);
        head.pseudo.method = Some(head.put(method));
        head.pseudo.scheme = Some(head.put(scheme));
        if !authority.is_empty() {
            head.pseudo.authority = Some(head.put(authority));
        }
        head.pseudo.path = Some(head.put(path));
        head
    }

    /// A response head to send.
    pub fn response(status: u16) -> Self {
        let mut head = Head::default();
        head.pseudo.status = status;
        head
    }

    /// A trailer block to send.
    pub fn trailers() -> Self {
        Head::default()
    }

    /// Adds a field. `name` must be a valid lowercase field name (the
    /// proxy's own names are); it is not checked here.
    pub fn append(&mut self, name: &[u8], value: &[u8]) {
        self.push(name, value, false);
    }

    /// Adds a field to be sent as a never-indexed literal (RFC 7541 section
    /// 6.2.3): a secret, or a value new on every call.
    pub fn append_sensitive(&mut self, name: &[u8], value: &[u8]) {
        self.push(name, value, true);
    }

    fn push(&mut self, name: &[u8], value: &[u8], sensitive: bool) {
        let static_name = crate::hpack::table::static_name_index(name);
        let name = if static_name == 0 {
            self.put(name)
        } else {
            Span::default()
        };
        let value = self.put(value);
        self.fields.push(Field {
            static_name,
            sensitive,
            name,
            value,
        });
    }

    /// Appends bytes to the buffer and returns where they are.
    pub(crate) fn put(&mut self, bytes: &[u8]) -> Span {
        let start = self.buf.len() as u32;
        self.buf.extend_from_slice(bytes);
        Span {
            start,
            len: bytes.len() as u32,
        }
    }

    pub(crate) fn slice(&self, span: Span) -> &[u8] {
        &self.buf[span.range()]
    }

    pub(crate) fn name_of(&self, field: &Field) -> &[u8] {
        if field.static_name != 0 {
            STATIC[usize::from(field.static_name) - 1].0
        } else {
            self.slice(field.name)
        }
    }

    /// `:method`, empty when absent (never for a received request).
    pub fn method(&self) -> &[u8] {
        self.pseudo.method.map_or(&[][..], |s| self.slice(s))
    }

    /// `:scheme`, empty when absent (CONNECT).
    pub fn scheme(&self) -> &[u8] {
        self.pseudo.scheme.map_or(&[][..], |s| self.slice(s))
    }

    /// `:authority`, when present.
    pub fn authority(&self) -> Option<&[u8]> {
        self.pseudo.authority.map(|s| self.slice(s))
    }

    /// `:path`, empty when absent (CONNECT). The decoder checked that it is
    /// visible ASCII, so it is also valid UTF-8.
    pub fn path(&self) -> &str {
        let bytes = self.pseudo.path.map_or(&[][..], |s| self.slice(s));
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    /// The path without its query.
    pub fn path_only(&self) -> &str {
        let path = self.path();
        path.split_once('?').map_or(path, |(p, _)| p)
    }

    /// `:protocol` (extended CONNECT), when present.
    pub fn protocol(&self) -> Option<&[u8]> {
        self.pseudo.protocol.map(|s| self.slice(s))
    }

    /// `:status`, or 0 for a request or trailers.
    pub fn status(&self) -> u16 {
        self.pseudo.status
    }

    /// Replaces `:status`.
    pub fn set_status(&mut self, status: u16) {
        self.pseudo.status = status;
    }

    /// The regular fields, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(|f| (self.name_of(f), self.slice(f.value)))
    }

    /// How many regular fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there is no regular field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The first value of `name` (lowercase).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| self.name_of(f) == name)
            .map(|f| self.slice(f.value))
    }

    /// Every value of `name` (lowercase), in order.
    pub fn get_all<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |f| self.name_of(f) == name)
            .map(|f| self.slice(f.value))
    }

    /// Whether `name` has a value.
    pub fn contains(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    /// Removes every field of `name` (their bytes stay in the buffer).
    pub fn remove(&mut self, name: &[u8]) {
        let mut fields = std::mem::take(&mut self.fields);
        fields.retain(|f| self.name_of(f) != name);
        self.fields = fields;
    }

    /// Marks the first field of `name` never-indexed; false when none.
    pub fn set_sensitive(&mut self, name: &[u8]) -> bool {
        let Some(i) = self.fields.iter().position(|f| self.name_of(f) == name) else {
            return false;
        };
        self.fields[i].sensitive = true;
        true
    }

    /// Whether the first field of `name` is marked never-indexed.
    pub fn is_sensitive(&self, name: &[u8]) -> bool {
        self.fields
            .iter()
            .find(|f| self.name_of(f) == name)
            .is_some_and(|f| f.sensitive)
    }

    /// The RFC 7541 section 4.1 size of a received block (what
    /// SETTINGS_MAX_HEADER_LIST_SIZE limits); 0 for a built one.
    pub fn list_size(&self) -> usize {
        self.list_size
    }

    /// The `content-length` of a received block, if it had one.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// The fields as an `http::HeaderMap` (for code that works with the
    /// `http` types: not on the forwarding path). Fields that `http` does
    /// not accept are left out; never-indexed ones stay sensitive.
    pub fn to_header_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::with_capacity(self.fields.len());
        for f in &self.fields {
            let (Ok(name), Ok(mut value)) = (
                http::HeaderName::from_bytes(self.name_of(f)),
                http::HeaderValue::from_bytes(self.slice(f.value)),
            ) else {
                continue;
            };
            value.set_sensitive(f.sensitive);
            map.append(name, value);
        }
        map
    }

    /// Appends the fields of an `http::HeaderMap`, leaving out the ones
    /// HTTP/2 forbids (RFC 9113 section 8.2.2: connection-specific fields, a
    /// `te` other than `trailers`), which an HTTP/1.1 message may carry.
    pub fn extend_from_header_map(&mut self, map: &http::HeaderMap) {
        for (name, value) in map {
            let name = name.as_str().as_bytes();
            if is_connection_specific(name, value.as_bytes()) {
                continue;
            }
            self.push(name, value.as_bytes(), value.is_sensitive());
        }
    }
}

/// Whether a field is one HTTP/2 forbids (RFC 9113 section 8.2.2).
pub(crate) fn is_connection_specific(name: &[u8], value: &[u8]) -> bool {
    match name.len() {
        2 => name == b"te" && value != b"trailers",
        7 => name == b"upgrade",
        10 => name == b"connection" || name == b"keep-alive",
        16 => name == b"proxy-connection",
        17 => name == b"transfer-encoding",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_head_reads_back_its_fields_in_order() {
        let mut head = Head::request(b"POST", b"http", b"example:80", b"/svc/Method?x=1");
        head.append(b"content-type", b"application/grpc");
        head.append(b"x-tag", b"one");
        head.append_sensitive(b"authorization", b"secret");
        head.append(b"x-tag", b"two");
        assert_eq!(head.method(), b"POST");
        assert_eq!(head.scheme(), b"http");
        assert_eq!(head.authority(), Some(&b"example:80"[..]));
        assert_eq!(head.path(), "/svc/Method?x=1");
        assert_eq!(head.path_only(), "/svc/Method");
        assert_eq!(head.get(b"x-tag"), Some(&b"one"[..]));
        assert_eq!(head.get_all(b"x-tag").collect::<Vec<_>>(), [b"one", b"two"]);
        assert!(head.is_sensitive(b"authorization"));
        assert!(!head.is_sensitive(b"x-tag"));
        let names: Vec<_> = head.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [&b"content-type"[..], b"x-tag", b"authorization", b"x-tag"]
        );
        assert_ne!(
            head.fields[0].static_name, 0,
            "content-type is in the static table"
        );
        assert_eq!(head.fields[1].static_name, 0);
        head.remove(b"x-tag");
        assert_eq!(head.len(), 2);
        assert_eq!(head.get(b"x-tag"), None);
    }

    #[test]
    fn header_maps_convert_both_ways_without_hop_by_hop_fields() {
        let mut map = http::HeaderMap::new();
        map.insert("content-type", "application/grpc-web".parse().unwrap());
        map.insert("connection", "keep-alive".parse().unwrap());
        map.insert("te", "gzip".parse().unwrap());
        let mut secret = http::HeaderValue::from_static("s");
        secret.set_sensitive(true);
        map.insert("cookie", secret);
        let mut head = Head::response(200);
        head.extend_from_header_map(&map);
        assert_eq!(head.len(), 2, "{head:?}");
        let back = head.to_header_map();
        assert_eq!(back["content-type"], "application/grpc-web");
        assert!(back["cookie"].is_sensitive());
        assert!(!back.contains_key("connection"));
    }
}
