//! HPACK: one header block from a peer, decoded by h2fwd's decoder as a
//! connection of the proxy decodes it (4096-byte table), then sent on again
//! by h2fwd's static-table encoder, as the proxy forwards every block.
//!
//! The first input byte says what the block is (a request, a response or
//! trailers: the pseudo-header fields each must and must not carry differ)
//! and the header-list limit (the proxy's, or a small one that blocks hit);
//! the rest is the block. Besides not panicking:
//! - a block that decodes comes back the same through the encoder and a
//!   fresh decoder (the same fields in the same order, the same
//!   pseudo-header fields, list size and `content-length`, and the same
//!   bytes when encoded again: never-indexed fields stay so), and the
//!   encoder gives the same bytes twice (it keeps no state);
//! - with a `grpc-timeout` replacing the block's own, as the proxy sends a
//!   request on, the other fields come back in order and the new one last;
//! - the decoder that read the block goes on decoding: the encoded block
//!   again, and every entry of its dynamic table, which must hold what a
//!   decoder that read the same block as another kind and without a limit
//!   holds. The table follows the peer's encoder whatever the block's
//!   fields were: one that was malformed or too large costs its stream
//!   only, the connection and its table go on.
//!
//! No differential check against the h2 fork's decoder: its `fuzz_bridge`
//! offers no function that returns the fields it decoded.

#![no_main]

use bytes::BytesMut;
use h2fwd::Head;
use h2fwd::hpack::{DecodeError, Decoder, Kind, encode};
use libfuzzer_sys::fuzz_target;

/// SETTINGS_HEADER_TABLE_SIZE of every h2fwd connection.
const TABLE_SIZE: usize = 4096;
/// The proxy's `max_header_list_size` (crates/proxy/src/server.rs).
const MAX_HEADER_LIST: usize = 60 << 10;
/// The reference decoder's limit: far above any block of `-max_len` bytes
/// without references, low enough that references to large entries stop
/// being stored after a few hundred (an HPACK bomb costs no time here).
const REFERENCE_LIMIT: usize = 1 << 20;
/// The HPACK index of the newest dynamic table entry (RFC 7541 section 2.3.3).
const FIRST_DYNAMIC: usize = 62;
/// The most entries a table of `TABLE_SIZE` holds (32 bytes each at least).
const MAX_ENTRIES: usize = TABLE_SIZE / 32;
/// What the proxy sends in place of a request's own `grpc-timeout`.
const REPLACE: (&[u8], &[u8]) = (b"grpc-timeout", b"1S");

fuzz_target!(|input: &[u8]| {
    let Some((&selector, block)) = input.split_first() else {
        return;
    };
    let kinds = [Kind::Request, Kind::Response, Kind::Trailers];
    let kind = kinds[usize::from(selector % 3)];
    let max_list_size = match usize::from(selector / 3) {
        0 => MAX_HEADER_LIST,
        n => n * 64,
    };

    let mut decoder = Decoder::new(TABLE_SIZE);
    let mut head = Head::default();
    let decoded = decoder.decode(block, kind, max_list_size, &mut head);
    if let Err(DecodeError::Compression(_)) = decoded {
        // The connection is closed: its table is not used again.
        return;
    }
    if decoded.is_ok() {
        round_trip(&head, kind, max_list_size, &mut decoder);
    }

    // The same block read as another kind, with a limit it never hits:
    // its fields may be judged otherwise, its table must be the same.
    let other = kinds[usize::from(selector % 3 + 1) % 3];
    let mut reference = Decoder::new(TABLE_SIZE);
    let again = reference.decode(block, other, REFERENCE_LIMIT, &mut Head::default());
    assert!(
        !matches!(again, Err(DecodeError::Compression(_))),
        "the block decodes as {kind:?} with a {max_list_size}-byte limit but not as {other:?}: {again:?}"
    );
    same_tables(&mut decoder, &mut reference);
});

/// A decoded `head` sent on: encoded from the static table, decoded again.
fn round_trip(head: &Head, kind: Kind, max_list_size: usize, decoder: &mut Decoder) {
    let block = encoded(head, kind, None);
    assert_eq!(
        block,
        encoded(head, kind, None),
        "two encodings of the same head differ"
    );

    // A peer's fresh decoder, and the one that read the original block.
    for (who, decoder) in [
        ("a fresh", &mut Decoder::new(TABLE_SIZE)),
        ("the same", decoder),
    ] {
        let mut back = Head::default();
        let result = decoder.decode(&block, kind, max_list_size, &mut back);
        assert_eq!(
            result,
            Ok(()),
            "{who} decoder refuses the encoding of {head:?} ({kind:?}): {block:02x?}"
        );
        assert_eq!(
            Fields::of(&back),
            Fields::of(head),
            "{who} decoder reads the encoding of {kind:?} {head:?} otherwise: {block:02x?}"
        );
        assert_eq!(
            encoded(&back, kind, None),
            block,
            "what {who} decoder read encodes otherwise (never-indexed fields?)"
        );
    }

    // A request forwarded with the proxy's own grpc-timeout.
    let replaced = encoded(head, kind, Some(REPLACE));
    let mut back = Head::default();
    let result = Decoder::new(TABLE_SIZE).decode(&replaced, kind, usize::MAX, &mut back);
    assert_eq!(
        result,
        Ok(()),
        "a fresh decoder refuses {head:?} with {REPLACE:?} ({kind:?}): {replaced:02x?}"
    );
    let mut want = Fields::of(head).regular;
    want.retain(|(name, _)| name.0 != REPLACE.0);
    want.push((Text(REPLACE.0), Text(REPLACE.1)));
    assert_eq!(
        Fields::of(&back).regular,
        want,
        "{head:?} with {REPLACE:?} ({kind:?}) reads back otherwise: {replaced:02x?}"
    );
}

fn encoded(head: &Head, kind: Kind, replace: Option<(&[u8], &[u8])>) -> Vec<u8> {
    let mut dst = BytesMut::new();
    encode(head, kind, replace, &mut dst);
    dst.to_vec()
}

/// Reads every dynamic table entry of both decoders, newest first, one
/// indexed field per block (as trailers: reading adds nothing to a table),
/// and checks that they hold the same.
fn same_tables(decoder: &mut Decoder, reference: &mut Decoder) {
    for i in 0..=MAX_ENTRIES {
        let block = indexed(FIRST_DYNAMIC + i);
        let (mut a, mut b) = (Head::default(), Head::default());
        let got = decoder.decode(&block, Kind::Trailers, REFERENCE_LIMIT, &mut a);
        let want = reference.decode(&block, Kind::Trailers, REFERENCE_LIMIT, &mut b);
        assert_eq!(got, want, "dynamic table entry {i}: {a:?} / {b:?}");
        if let Err(DecodeError::Compression(_)) = got {
            // Past the last entry.
            return;
        }
        // A malformed entry (a pseudo-header field, a bad value) is only
        // compared by its size; the others by their bytes too.
        assert_eq!(a.list_size(), b.list_size(), "dynamic table entry {i}");
        if got.is_ok() {
            assert_eq!(Fields::of(&a), Fields::of(&b), "dynamic table entry {i}");
        }
    }
    panic!("more than {MAX_ENTRIES} entries in a {TABLE_SIZE}-byte table");
}

/// An indexed field representation (RFC 7541 sections 6.1 and 5.1).
fn indexed(index: usize) -> Vec<u8> {
    const PREFIX: usize = 0x7f;
    if index < PREFIX {
        return vec![0x80 | index as u8];
    }
    let mut block = vec![0x80 | PREFIX as u8];
    let mut rest = index - PREFIX;
    while rest >= 0x80 {
        block.push(rest as u8 | 0x80);
        rest >>= 7;
    }
    block.push(rest as u8);
    block
}

/// What a head says, to compare: the pseudo-header fields, the regular
/// fields in order, and what the decoder derived from them.
#[derive(Debug, PartialEq)]
struct Fields<'a> {
    /// Empty when absent (a decoded request never has it empty).
    method: Text<'a>,
    /// Empty when absent (a CONNECT request has none, the others one).
    scheme: Text<'a>,
    authority: Option<Text<'a>>,
    path: &'a str,
    protocol: Option<Text<'a>>,
    status: u16,
    regular: Vec<(Text<'a>, Text<'a>)>,
    list_size: usize,
    content_length: Option<u64>,
}

impl<'a> Fields<'a> {
    fn of(head: &'a Head) -> Self {
        Fields {
            method: Text(head.method()),
            scheme: Text(head.scheme()),
            authority: head.authority().map(Text),
            path: head.path(),
            protocol: head.protocol().map(Text),
            status: head.status(),
            regular: head.iter().map(|(n, v)| (Text(n), Text(v))).collect(),
            list_size: head.list_size(),
            content_length: head.content_length(),
        }
    }
}

/// Bytes shown as a string, escaped where they are not printable ASCII.
#[derive(PartialEq)]
struct Text<'a>(&'a [u8]);

impl std::fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}
