//! HPACK encoding (RFC 7541) of a [`Head`] from the static table only,
//! strings never Huffman-coded: HAProxy's encoder design.
//!
//! A proxy re-encodes every block it forwards, three per call. Indexing
//! into a dynamic table (a lookup per field, eviction, the table's memory
//! per connection) and Huffman coding (a table walk per byte) cost more per
//! call than the bytes they save on a LAN hop. Without a dynamic table the
//! encoder keeps no state: a block can be encoded by whichever task has the
//! write buffer, and the peer's table is never filled. A field whose name
//! and value are a static entry is one byte; every other one is a literal
//! that the peer does not index (never-indexed when sensitive, as RFC 7541
//! section 6.2.3 asks of intermediaries), its name a static index when it
//! has one.

use bytes::{BufMut, BytesMut};

use super::Kind;
use super::table::{
    AUTHORITY, METHOD_GET, METHOD_POST, PATH_INDEX, PATH_ROOT, SCHEME_HTTP, SCHEME_HTTPS, STATIC,
    STATUS_200, static_name_index,
};
use crate::head::Head;

/// Literal without indexing (RFC 7541 section 6.2.2), 4-bit name index.
const LITERAL: u8 = 0x00;
/// Literal never indexed (section 6.2.3), 4-bit name index.
const NEVER_INDEXED: u8 = 0x10;
/// Indexed field (section 6.1), 7-bit index.
const INDEXED: u8 = 0x80;

/// Encodes `head` as a header block of `kind` into `dst`. `replace`: a
/// field sent in place of every field of its name (the proxy's own
/// `grpc-timeout` replacing the client's), written after the other fields.
///
/// Request pseudo-header fields go in the order `:method :scheme
/// :authority :path`, each only when present; a response starts with
/// `:status`; trailers have none. The block is written straight into `dst`
/// (the connection's write buffer), after one `reserve` for all of it.
pub fn encode(head: &Head, kind: Kind, replace: Option<(&[u8], &[u8])>, dst: &mut BytesMut) {
    // At most 13 bytes of representation and lengths per field besides its
    // name and value bytes, all of which are in the buffer.
    let replace_len = replace.map_or(0, |(name, value)| name.len() + value.len());
    dst.reserve(head.buf.len() + replace_len + 13 * (head.fields.len() + 6));

    // A value the static table lacks is a literal naming the first entry
    // of its pseudo-header (`:method GET` for any method, and so on).
    match kind {
        Kind::Request => {
            let p = &head.pseudo;
            if let Some(method) = p.method {
                match head.slice(method) {
                    b"GET" => dst.put_u8(INDEXED | METHOD_GET),
                    b"POST" => dst.put_u8(INDEXED | METHOD_POST),
                    value => static_name_literal(dst, LITERAL, METHOD_GET, value),
                }
            }
            if let Some(scheme) = p.scheme {
                match head.slice(scheme) {
                    b"http" => dst.put_u8(INDEXED | SCHEME_HTTP),
                    b"https" => dst.put_u8(INDEXED | SCHEME_HTTPS),
                    value => static_name_literal(dst, LITERAL, SCHEME_HTTP, value),
                }
            }
            if let Some(authority) = p.authority {
                match head.slice(authority) {
                    b"" => dst.put_u8(INDEXED | AUTHORITY),
                    value => static_name_literal(dst, LITERAL, AUTHORITY, value),
                }
            }
            if let Some(path) = p.path {
                match head.slice(path) {
                    b"/" => dst.put_u8(INDEXED | PATH_ROOT),
                    b"/index.html" => dst.put_u8(INDEXED | PATH_INDEX),
                    value => static_name_literal(dst, LITERAL, PATH_ROOT, value),
                }
            }
        }
        Kind::Response => status(dst, head.pseudo.status),
        Kind::Trailers => {}
    }

    let replace = replace.map(|(name, value)| (name, static_name_index(name), value));
    for field in &head.fields {
        if let Some((name, index, _)) = replace {
            let same = if field.static_name != 0 {
                field.static_name == index
            } else {
                head.slice(field.name) == name
            };
            if same {
                continue;
            }
        }
        let value = head.slice(field.value);
        if field.static_name != 0 {
            static_name_field(dst, field.static_name, value, field.sensitive);
        } else {
            literal_name_field(dst, head.slice(field.name), value, field.sensitive);
        }
    }
    if let Some((name, index, value)) = replace {
        match index {
            0 => literal_name_field(dst, name, value, false),
            index => static_name_field(dst, index, value, false),
        }
    }
}

/// A dynamic table size update (RFC 7541 section 6.3), owed at the start of
/// the first block after the peer lowered SETTINGS_HEADER_TABLE_SIZE.
pub fn encode_size_update(size: usize, dst: &mut BytesMut) {
    let mut ints = Ints::default();
    ints.int(0x20, 5, size);
    dst.put_slice(ints.as_slice());
}

/// `:status`: one byte when the static table has it, else its name index
/// and its digits.
fn status(dst: &mut BytesMut, status: u16) {
    let index = match status {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => {
            // Three digits for every valid status; any u16 is written whole.
            let mut digits = [0u8; 5];
            let mut at = digits.len();
            let mut n = status;
            loop {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            return static_name_literal(dst, LITERAL, STATUS_200, &digits[at..]);
        }
    };
    dst.put_u8(INDEXED | index);
}

/// A regular field whose name is static entry `index`: one byte when its
/// value is that entry's too and it is not sensitive.
fn static_name_field(dst: &mut BytesMut, index: u8, value: &[u8], sensitive: bool) {
    if !sensitive
        && STATIC
            .get(usize::from(index) - 1)
            .is_some_and(|e| e.1 == value)
    {
        dst.put_u8(INDEXED | index);
        return;
    }
    let kind = if sensitive { NEVER_INDEXED } else { LITERAL };
    static_name_literal(dst, kind, index, value);
}

/// A literal (`kind`: without indexing or never indexed) naming static
/// entry `index`, its value raw.
fn static_name_literal(dst: &mut BytesMut, kind: u8, index: u8, value: &[u8]) {
    let mut ints = Ints::default();
    ints.int(kind, 4, usize::from(index));
    ints.int(0, 7, value.len());
    dst.put_slice(ints.as_slice());
    dst.put_slice(value);
}

/// A literal with a literal name, both raw.
fn literal_name_field(dst: &mut BytesMut, name: &[u8], value: &[u8], sensitive: bool) {
    let mut ints = Ints::default();
    ints.int(if sensitive { NEVER_INDEXED } else { LITERAL }, 4, 0);
    ints.int(0, 7, name.len());
    dst.put_slice(ints.as_slice());
    dst.put_slice(name);
    let mut ints = Ints::default();
    ints.int(0, 7, value.len());
    dst.put_slice(ints.as_slice());
    dst.put_slice(value);
}

/// Up to two HPACK integers (RFC 7541 section 5.1) gathered on the stack,
/// so that a field's representation and length go out in one write.
#[derive(Default)]
struct Ints {
    bytes: [u8; 24],
    len: usize,
}

impl Ints {
    /// Appends `value` with an `n`-bit prefix, `first` holding the bits
    /// above the prefix. A `usize` takes at most 11 bytes.
    fn int(&mut self, first: u8, n: u32, value: usize) {
        let max = (1usize << n) - 1;
        if value < max {
            self.push(first | value as u8);
            return;
        }
        self.push(first | max as u8);
        let mut rest = value - max;
        while rest >= 0x80 {
            self.push(rest as u8 | 0x80);
            rest >>= 7;
        }
        self.push(rest as u8);
    }

    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hpack::huffman::tests::Rng;
    use crate::hpack::{DecodeError, Decoder};

    fn encoded(head: &Head, kind: Kind, replace: Option<(&[u8], &[u8])>) -> Vec<u8> {
        let mut dst = BytesMut::from(&b"before"[..]);
        encode(head, kind, replace, &mut dst);
        // It appends to what the buffer holds.
        assert_eq!(&dst[..6], b"before");
        dst[6..].to_vec()
    }

    /// Decodes `block` with a fresh decoder, as a peer would.
    fn decoded(block: &[u8], kind: Kind) -> Head {
        let mut head = Head::default();
        Decoder::new(4096)
            .decode(block, kind, 1 << 20, &mut head)
            .unwrap();
        head
    }

    /// Every field as (name, value, sensitive), pseudo-header ones first.
    fn all(head: &Head) -> Vec<(Vec<u8>, Vec<u8>, bool)> {
        let mut out = Vec::new();
        let p = &head.pseudo;
        for (name, span) in [
            (&b":method"[..], p.method),
            (b":scheme", p.scheme),
            (b":authority", p.authority),
            (b":path", p.path),
        ] {
            if let Some(span) = span {
                out.push((name.to_vec(), head.slice(span).to_vec(), false));
            }
        }
        if p.status != 0 {
            out.push((
                b":status".to_vec(),
                p.status.to_string().into_bytes(),
                false,
            ));
        }
        for f in &head.fields {
            let name = head.name_of(f).to_vec();
            out.push((name, head.slice(f.value).to_vec(), f.sensitive));
        }
        out
    }

    fn concat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn a_grpc_request_is_what_haproxy_sends() {
        let mut head = Head::request(
            b"POST",
            b"http",
            b"localhost:50051",
            b"/helloworld.Greeter/SayHello",
        );
        head.append(b"content-type", b"application/grpc");
        head.append(b"te", b"trailers");
        head.append(b"grpc-timeout", b"5S");
        head.append(b"user-agent", b"grpc-go/1.60.0");
        let block = encoded(&head, Kind::Request, Some((b"grpc-timeout", b"1S")));
        let want = concat(&[
            // :method POST, :scheme http: static entries 3 and 6.
            &[0x83, 0x86],
            // :authority (name 1) and :path (name 4): literals without
            // indexing, raw.
            &[0x01, 15],
            b"localhost:50051",
            &[0x04, 28],
            b"/helloworld.Greeter/SayHello",
            // content-type: name 31 = 15 + 16 with a 4-bit prefix.
            &[0x0f, 16, 16],
            b"application/grpc",
            // te: not a static name.
            &[0x00, 2],
            b"te",
            &[8],
            b"trailers",
            // user-agent: name 58 = 15 + 43.
            &[0x0f, 43, 14],
            b"grpc-go/1.60.0",
            // The replacing grpc-timeout, last.
            &[0x00, 12],
            b"grpc-timeout",
            &[2],
            b"1S",
        ]);
        assert_eq!(block, want);
    }

    #[test]
    fn a_grpc_response_and_its_trailers_are_what_haproxy_sends() {
        let mut head = Head::response(200);
        head.append(b"content-type", b"application/grpc");
        let block = encoded(&head, Kind::Response, None);
        assert_eq!(block, concat(&[&[0x88, 0x0f, 16, 16], b"application/grpc"]));

        let mut trailers = Head::trailers();
        trailers.append(b"grpc-status", b"0");
        trailers.append(b"grpc-message", b"");
        let block = encoded(&trailers, Kind::Trailers, None);
        let want = concat(&[&[0x00, 11], b"grpc-status", &[1], b"0"]);
        let want = concat(&[&want, &[0x00, 12], b"grpc-message", &[0]]);
        assert_eq!(block, want);
    }

    #[test]
    fn whole_static_entries_are_one_byte_unless_sensitive() {
        let mut head = Head::request(b"GET", b"https", b"", b"/");
        head.append(b"accept-encoding", b"gzip, deflate");
        head.append(b"accept", b"");
        head.append_sensitive(b"accept-encoding", b"gzip, deflate");
        head.append_sensitive(b"authorization", b"secret");
        head.append_sensitive(b"x-key", b"k");
        let block = encoded(&head, Kind::Request, None);
        let want = concat(&[
            &[0x82, 0x87, 0x84, 0x90, 0x93],
            // Never indexed: 0x10 | 15, then 16 - 15.
            &[0x1f, 1, 13],
            b"gzip, deflate",
            &[0x1f, 8, 6],
            b"secret",
            &[0x10, 5],
            b"x-key",
            &[1],
            b"k",
        ]);
        assert_eq!(block, want);
        let head = Head::request(b"GET", b"http", b"", b"/index.html");
        assert_eq!(encoded(&head, Kind::Request, None), [0x82, 0x86, 0x85]);
    }

    #[test]
    fn requests_round_trip() {
        let mut heads = vec![
            Head::request(b"GET", b"https", b"example.com", b"/index.html"),
            Head::request(b"PUT", b"ftp", b"", b"/a?b=c"),
            Head::request(b"OPTIONS", b"http", b"h:1", b"*"),
        ];
        let long_name = vec![b'n'; 200];
        let long_value = vec![b'v'; 300];
        for head in &mut heads {
            head.append(b"content-type", b"application/grpc+proto");
            head.append(b"x-custom", b"1");
            head.append_sensitive(b"cookie", b"a=b");
            head.append_sensitive(b"x-secret", b"s");
            head.append(&long_name, &long_value);
            head.append(b"accept-encoding", b"gzip, deflate");
            head.append(b"x-custom", b"2");
        }
        for head in &heads {
            let back = decoded(&encoded(head, Kind::Request, None), Kind::Request);
            assert_eq!(all(&back), all(head));
            // Static names come back as indexes, the others as bytes.
            let names: Vec<u8> = back.fields.iter().map(|f| f.static_name).collect();
            assert_eq!(names, [31, 0, 32, 0, 0, 16, 0]);
        }
    }

    #[test]
    fn responses_round_trip_with_any_status() {
        for status in [
            200, 204, 206, 304, 400, 404, 500, 100, 103, 302, 429, 503, 999,
        ] {
            let mut head = Head::response(status);
            head.append(b"content-type", b"application/grpc");
            head.append_sensitive(b"set-cookie", b"id=1");
            let block = encoded(&head, Kind::Response, None);
            let back = decoded(&block, Kind::Response);
            assert_eq!(back.status(), status);
            assert_eq!(all(&back), all(&head));
            assert!(back.is_sensitive(b"set-cookie"));
        }
        assert_eq!(encoded(&Head::response(404), Kind::Response, None), [0x8d]);
        assert_eq!(
            encoded(&Head::response(302), Kind::Response, None),
            concat(&[&[0x08, 3], b"302"])
        );
    }

    #[test]
    fn trailers_round_trip() {
        let mut head = Head::trailers();
        head.append(b"grpc-status", b"14");
        head.append(b"grpc-message", b"upstream connect error");
        head.append_sensitive(b"x-debug", b"token");
        let back = decoded(&encoded(&head, Kind::Trailers, None), Kind::Trailers);
        assert_eq!(all(&back), all(&head));
        assert!(back.is_sensitive(b"x-debug"));
    }

    #[test]
    fn replace_drops_every_field_of_its_name_and_goes_last() {
        let mut head = Head::request(b"POST", b"http", b"a", b"/s/m");
        head.append(b"grpc-timeout", b"10S");
        head.append(b"user-agent", b"one");
        head.append(b"grpc-timeout", b"20S");
        head.append(b"x-last", b"z");
        let block = encoded(&head, Kind::Request, Some((b"grpc-timeout", b"3S")));
        let back = decoded(&block, Kind::Request);
        let fields: Vec<_> = back.iter().collect();
        assert_eq!(
            fields,
            [
                (&b"user-agent"[..], &b"one"[..]),
                (b"x-last", b"z"),
                (b"grpc-timeout", b"3S")
            ]
        );
        // A static name, replaced by index.
        let block = encoded(&head, Kind::Request, Some((b"user-agent", b"proxy")));
        let back = decoded(&block, Kind::Request);
        assert_eq!(back.get_all(b"user-agent").collect::<Vec<_>>(), [b"proxy"]);
        assert_eq!(back.get_all(b"grpc-timeout").count(), 2);
        assert_eq!(back.fields.last().map(|f| f.static_name), Some(58));
    }

    #[test]
    fn a_received_block_is_sent_again_as_it_came() {
        // RFC 7541 C.3.3, then a never-indexed field.
        let mut d = Decoder::new(4096);
        let mut head = Head::default();
        let blocks = [
            "828684410f7777772e6578616d706c652e636f6d",
            "828684be58086e6f2d6361636865",
            "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565\
             1006706173737764027077",
        ];
        for block in blocks {
            head = Head::default();
            let bytes: Vec<u8> = (0..block.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&block[i..i + 2], 16).unwrap())
                .collect();
            d.decode(&bytes, Kind::Request, 1 << 20, &mut head).unwrap();
        }
        let back = decoded(&encoded(&head, Kind::Request, None), Kind::Request);
        assert_eq!(all(&back), all(&head));
        assert!(back.is_sensitive(b"passwd"));
    }

    #[test]
    fn size_updates() {
        let update = |size| {
            let mut dst = BytesMut::new();
            encode_size_update(size, &mut dst);
            dst.to_vec()
        };
        assert_eq!(update(0), [0x20]);
        assert_eq!(update(30), [0x3e]);
        assert_eq!(update(31), [0x3f, 0x00]);
        assert_eq!(update(100), [0x3f, 0x45]);
        assert_eq!(update(4096), [0x3f, 0xe1, 0x1f]);
        // A peer's decoder takes it in front of a block.
        let mut block = update(1024);
        block.extend(encoded(&Head::response(200), Kind::Response, None));
        assert_eq!(decoded(&block, Kind::Response).status(), 200);
    }

    /// Random blocks, built from random representations (some broken) and
    /// random bytes, through one decoder with a small table: nothing
    /// panics, and every block that decodes comes back the same through
    /// the encoder and a fresh decoder.
    #[test]
    fn arbitrary_blocks_never_panic_and_round_trip() {
        let mut rng = Rng(0x5eed_0fb1_0c00);
        let alphabet = b"ab:-/ \t\r\x00Z\xff0123456789*";
        let mut d = Decoder::new(300);
        let mut decoded_ok = 0;
        for round in 0..20_000 {
            let mut block = Vec::new();
            if rng.next() % 10 == 1 {
                block.push(0x20 | (rng.next() % 31) as u8);
            }
            for _ in 0..(rng.next() % 8) {
                let pick = |rng: &mut Rng, n: u64| {
                    (0..rng.next() % n)
                        .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
                        .collect::<Vec<u8>>()
                };
                let string = |rng: &mut Rng, out: &mut Vec<u8>, s: &[u8]| {
                    if rng.next() % 2 == 1 {
                        let h = crate::hpack::huffman::encode(s);
                        out.push(0x80 | h.len() as u8);
                        out.extend(h);
                    } else {
                        out.push(s.len() as u8);
                        out.extend_from_slice(s);
                    }
                };
                match rng.next() % 4 {
                    1 => block.push(0x80 | (1 + rng.next() % 70) as u8),
                    2 => {
                        let first = [0x40, 0x00, 0x10][(rng.next() % 3) as usize];
                        let index = rng.next() % 4;
                        block.push(
                            first
                                | if index == 0 {
                                    0
                                } else {
                                    (1 + rng.next() % 14) as u8
                                },
                        );
                        if index == 0 {
                            let name = pick(&mut rng, 6);
                            string(&mut rng, &mut block, &name);
                        }
                        let value = pick(&mut rng, 40);
                        string(&mut rng, &mut block, &value);
                    }
                    3 => {
                        let name = [&b"x-"[..], &pick(&mut rng, 4)].concat();
                        block.push(0x40);
                        string(&mut rng, &mut block, &name);
                        let value = pick(&mut rng, 90);
                        string(&mut rng, &mut block, &value);
                    }
                    _ => {
                        let len = (rng.next() % 4) as usize;
                        block.extend(rng.bytes(len));
                    }
                }
            }
            let kind = [Kind::Request, Kind::Response, Kind::Trailers][round % 3];
            let mut head = Head::default();
            let result = d.decode(&block, kind, 2000, &mut head);
            if let Err(DecodeError::Compression(_)) = result {
                d = Decoder::new(300);
            }
            if result.is_ok() {
                decoded_ok += 1;
                let back = decoded(&encoded(&head, kind, None), kind);
                assert_eq!(all(&back), all(&head), "{block:x?}");
            }
        }
        assert!(decoded_ok > 1000, "{decoded_ok}");
    }
}
