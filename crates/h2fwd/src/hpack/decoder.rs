//! HPACK decoding (RFC 7541) of a header block into a [`Head`], checked as
//! RFC 9113 section 8 asks of a received message.
//!
//! Two kinds of failure differ in what they cost: a block that does not
//! decode leaves the connection's dynamic table out of sync with the peer's
//! (a connection error), but a block that decodes and breaks a message rule
//! (or the header list limit) only costs its stream. So a block is always
//! decoded to its end, into the table, even after it was found malformed or
//! too large; from then on its fields are only no longer stored, so a block
//! that references one large entry many times (an "HPACK bomb") allocates
//! nothing for the references past the limit.
//!
//! The dynamic table holds its entries' bytes in one ring the size of the
//! table (grown on demand, so a connection whose peer indexes little holds
//! little), and an entry whose name is in the static table keeps only that
//! index: a field read from it lands in the [`Head`] with its static name,
//! its name bytes not copied.

use std::collections::VecDeque;

use super::Kind;
use super::huffman;
use super::table::{
    AUTHORITY, CONTENT_LENGTH, LAST_PSEUDO, METHOD_GET, METHOD_POST, PATH_INDEX, PATH_ROOT,
    SCHEME_HTTP, SCHEME_HTTPS, STATIC, TRANSFER_ENCODING, static_name_index,
};
use crate::head::{Field, Head, Span, is_connection_specific};

/// Why a header block was not accepted.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The block does not decode: the connection's HPACK state is lost (a
    /// connection error, COMPRESSION_ERROR).
    #[error("header block does not decode: {0}")]
    Compression(&'static str),
    /// It decoded (the dynamic table is in sync) but the message is
    /// malformed (RFC 9113 section 8.1.1): a stream error, PROTOCOL_ERROR.
    #[error("malformed header block: {0}")]
    Malformed(&'static str),
    /// It decoded (table in sync) but its list size (name + value + 32 per
    /// field, pseudo-headers included) is over the limit: the stream is
    /// refused.
    #[error("header list larger than the limit")]
    TooLarge,
}

use DecodeError::Compression;

/// Blocks and header lists past this are refused, so that every offset into
/// a [`Head`]'s buffer fits the `u32` of a [`Span`] (a block's Huffman
/// strings decode to at most 8/5 of its length, and stored fields are
/// bounded by the list limit).
const MAX_BLOCK: usize = 1 << 30;

/// HPACK decoder state of one connection: the dynamic table the peer's
/// encoder fills.
pub struct Decoder {
    table: Table,
    /// The SETTINGS_HEADER_TABLE_SIZE we advertise: the most a size update
    /// may ask for.
    max_table_size: usize,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("entries", &self.table.entries.len())
            .field("size", &self.table.size)
            .field("max_size", &self.table.max_size)
            .field("max_table_size", &self.max_table_size)
            .finish()
    }
}

impl Decoder {
    /// `max_table_size`: the SETTINGS_HEADER_TABLE_SIZE we advertise (4096
    /// by default): the most the peer's size updates may ask for. The table
    /// starts at that size and allocates as entries arrive.
    pub fn new(max_table_size: usize) -> Self {
        let max_table_size = max_table_size.min(u32::MAX as usize);
        Decoder {
            table: Table::new(max_table_size),
            max_table_size,
        }
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION fragments
    /// already joined) into `head` (a fresh `Head::default()`), validating
    /// it as RFC 9113 section 8 asks for `kind`.
    ///
    /// On [`DecodeError::Malformed`] and [`DecodeError::TooLarge`] the
    /// dynamic table is in sync and the connection goes on, but `head` holds
    /// only part of the block: it is to be dropped. When several problems
    /// are found the first one is returned, except that a
    /// [`DecodeError::Compression`] error found later wins.
    pub fn decode(
        &mut self,
        block: &[u8],
        kind: Kind,
        max_list_size: usize,
        head: &mut Head,
    ) -> Result<(), DecodeError> {
        if block.len() > MAX_BLOCK {
            return Err(Compression("header block over 1 GiB"));
        }
        // One allocation for the whole block: enough for all its strings
        // Huffman-decoded plus every dynamic entry referenced once.
        head.buf.reserve(
            (huffman::max_decoded_len(block.len()) + self.table.stored).min(max_list_size),
        );
        let mut check = Check {
            kind,
            max_list_size: max_list_size.min(MAX_BLOCK),
            problem: None,
            regular_seen: false,
            pseudo_seen: 0,
        };
        let mut pos = 0;

        // Dynamic table size updates (RFC 7541 section 4.2): only at the
        // start of a block, any number of them.
        while let Some(&first) = block.get(pos) {
            if first & 0xe0 != 0x20 {
                break;
            }
            pos += 1;
            let size = integer(block, &mut pos, first, 5)?;
            if size > self.max_table_size {
                return Err(Compression(
                    "table size update above SETTINGS_HEADER_TABLE_SIZE",
                ));
            }
            self.table.set_max_size(size);
        }

        while let Some(&first) = block.get(pos) {
            pos += 1;
            if first & 0x80 != 0 {
                // Indexed field (RFC 7541 section 6.1).
                let index = integer(block, &mut pos, first, 7)?;
                self.indexed(index, &mut check, head)?;
            } else if first & 0x40 != 0 {
                // Literal with incremental indexing (section 6.2.1).
                let index = integer(block, &mut pos, first, 6)?;
                self.literal(block, &mut pos, index, true, false, &mut check, head)?;
            } else if first & 0x20 != 0 {
                return Err(Compression("table size update after a field"));
            } else {
                // Literal without indexing (0000) or never indexed (0001)
                // (sections 6.2.2 and 6.2.3).
                let index = integer(block, &mut pos, first, 4)?;
                let sensitive = first & 0x10 != 0;
                self.literal(block, &mut pos, index, false, sensitive, &mut check, head)?;
            }
        }

        check.finish(head);
        match check.problem {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// An indexed field: a whole static or dynamic entry.
    fn indexed(
        &mut self,
        index: usize,
        check: &mut Check,
        head: &mut Head,
    ) -> Result<(), DecodeError> {
        if index == 0 {
            return Err(Compression("index 0"));
        }
        if let Some(&(name, value)) = STATIC.get(index - 1) {
            if check.admit(head, name.len() + value.len() + 32) {
                let value = head.put(value);
                check.field(head, Name::Static(index as u8), value, false, None);
            }
            return Ok(());
        }
        let entry = self.table.get(index - STATIC.len() - 1)?;
        if check.admit(head, entry.size()) {
            let name = match entry.static_name {
                0 => Name::Buf(
                    self.table
                        .copy(entry.at as usize, entry.name_len, &mut head.buf),
                ),
                s => Name::Static(s),
            };
            let value =
                self.table
                    .copy(entry.value_at(&self.table), entry.value_len, &mut head.buf);
            let problem = entry.name_problem.or(entry.value_problem);
            check.field(head, name, value, false, problem);
        }
        Ok(())
    }

    /// A literal field whose name is `index` (0: a literal name too).
    #[allow(clippy::too_many_arguments)]
    fn literal(
        &mut self,
        block: &[u8],
        pos: &mut usize,
        index: usize,
        indexing: bool,
        sensitive: bool,
        check: &mut Check,
        head: &mut Head,
    ) -> Result<(), DecodeError> {
        let mark = head.buf.len();
        let (name, name_len, name_problem) = if index == 0 {
            let span = string(block, pos, &mut head.buf)?;
            let bytes = head.slice(span);
            match static_name_index(bytes) {
                0 => (Name::Buf(span), span.len, name_problem(bytes)),
                s => {
                    head.buf.truncate(mark);
                    (Name::Static(s), span.len, None)
                }
            }
        } else if let Some(&(name, _)) = STATIC.get(index - 1) {
            (Name::Static(index as u8), name.len() as u32, None)
        } else {
            let entry = self.table.get(index - STATIC.len() - 1)?;
            // Copied out now: inserting this field may evict the entry.
            let name = match entry.static_name {
                0 => Name::Buf(
                    self.table
                        .copy(entry.at as usize, entry.name_len, &mut head.buf),
                ),
                s => Name::Static(s),
            };
            (name, entry.name_len, entry.name_problem)
        };
        let value = string(block, pos, &mut head.buf)?;
        let size = name_len as usize + value.len as usize + 32;
        let keep = check.admit(head, size);

        let mut value_problem = None;
        if keep || indexing {
            value_problem = self::value_problem(head.slice(value));
        }
        if indexing {
            let (static_name, name_bytes) = match name {
                Name::Static(s) => (s, &[][..]),
                Name::Buf(span) => (0, head.slice(span)),
            };
            self.table.insert(
                static_name,
                name_bytes,
                name_len,
                head.slice(value),
                name_problem,
                value_problem,
            );
        }
        if keep {
            check.field(head, name, value, sensitive, name_problem.or(value_problem));
        } else {
            head.buf.truncate(mark);
        }
        Ok(())
    }
}

/// Reads an integer with an `n`-bit prefix (RFC 7541 section 5.1) whose
/// first byte, `first`, was just read (`pos` is past it).
fn integer(src: &[u8], pos: &mut usize, first: u8, n: u32) -> Result<usize, DecodeError> {
    let max_prefix = (1u8 << n) - 1;
    let prefix = first & max_prefix;
    if prefix < max_prefix {
        return Ok(usize::from(prefix));
    }
    let mut value = u64::from(max_prefix);
    let mut shift = 0;
    loop {
        let Some(&byte) = src.get(*pos) else {
            return Err(Compression("integer past the end of the block"));
        };
        *pos += 1;
        value += u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        // Five continuation bytes hold any u32 (and a small value padded
        // with zero groups); a longer integer is no encoder's doing.
        if shift > 28 {
            return Err(Compression("integer longer than 6 bytes"));
        }
    }
    match u32::try_from(value) {
        Ok(value) => Ok(value as usize),
        Err(_) => Err(Compression("integer above 2^32 - 1")),
    }
}

/// Reads a string literal (RFC 7541 section 5.2) at `pos` and appends it,
/// Huffman-decoded if need be, to `buf`.
fn string(src: &[u8], pos: &mut usize, buf: &mut Vec<u8>) -> Result<Span, DecodeError> {
    const PAST_END: DecodeError = Compression("string past the end of the block");
    let &first = src.get(*pos).ok_or(PAST_END)?;
    *pos += 1;
    let len = integer(src, pos, first, 7)?;
    let bytes = src
        .get(*pos..)
        .and_then(|rest| rest.get(..len))
        .ok_or(PAST_END)?;
    *pos += len;
    let start = buf.len();
    if first & 0x80 != 0 {
        huffman::decode(bytes, buf).map_err(Compression)?;
    } else {
        buf.extend_from_slice(bytes);
    }
    Ok(span(start, buf.len()))
}

fn span(start: usize, end: usize) -> Span {
    Span {
        start: start as u32,
        len: (end - start) as u32,
    }
}

/// A field's name as decoded: a static table index (names of static
/// entries and of dynamic entries that remember one), or bytes in the
/// head's buffer.
#[derive(Clone, Copy)]
enum Name {
    Static(u8),
    Buf(Span),
}

/// What makes a field malformed whatever its name, found once when an entry
/// is inserted and kept with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Problem {
    EmptyName,
    UppercaseName,
    NameByte,
    UnknownPseudo,
    Protocol,
    ValueByte,
    ValueSpace,
}

impl Problem {
    fn message(self) -> &'static str {
        match self {
            Problem::EmptyName => "empty field name",
            Problem::UppercaseName => "uppercase field name",
            Problem::NameByte => "field name with a control, space, colon or non-ASCII byte",
            Problem::UnknownPseudo => "unknown pseudo-header field",
            Problem::Protocol => "`:protocol` without SETTINGS_ENABLE_CONNECT_PROTOCOL",
            Problem::ValueByte => "field value with NUL, CR or LF",
            Problem::ValueSpace => "field value starting or ending with whitespace",
        }
    }
}

/// Whether each byte may be in a regular field name (RFC 9113 section
/// 8.2.1: not 0x00-0x20, not uppercase, not 0x7f-0xff; ':' only opens a
/// pseudo-header name, and every one we accept is a static name).
static NAME_BYTE: [bool; 256] = {
    let mut ok = [false; 256];
    let mut b = 0x21;
    while b < 0x7f {
        ok[b] = !(b >= 0x41 && b <= 0x5a) && b != b':' as usize;
        b += 1;
    }
    ok
};

/// The problem with a name that is not in the static table.
fn name_problem(name: &[u8]) -> Option<Problem> {
    let Some(&first) = name.first() else {
        return Some(Problem::EmptyName);
    };
    if first == b':' {
        return Some(if name == b":protocol" {
            Problem::Protocol
        } else {
            Problem::UnknownPseudo
        });
    }
    let bad = name.iter().find(|&&b| !NAME_BYTE[usize::from(b)])?;
    Some(if bad.is_ascii_uppercase() {
        Problem::UppercaseName
    } else {
        Problem::NameByte
    })
}

/// The problem with a value (RFC 9113 section 8.2.1).
fn value_problem(value: &[u8]) -> Option<Problem> {
    if let (Some(&first), Some(&last)) = (value.first(), value.last())
        && (matches!(first, b' ' | b'\t') || matches!(last, b' ' | b'\t'))
    {
        return Some(Problem::ValueSpace);
    }
    // No early exit, so that it compiles to a vector loop.
    let bad = value.iter().fold(false, |bad, &b| {
        bad | (b == 0) | (b == b'\n') | (b == b'\r')
    });
    bad.then_some(Problem::ValueByte)
}

/// The RFC 9113 section 8 checks of one block, field by field, and the
/// list size.
struct Check {
    kind: Kind,
    max_list_size: usize,
    /// The first problem found; from then on fields are neither stored nor
    /// checked.
    problem: Option<DecodeError>,
    regular_seen: bool,
    /// Pseudo-header fields seen, as `PSEUDO_*` bits.
    pseudo_seen: u8,
}

const PSEUDO_METHOD: u8 = 1;
const PSEUDO_SCHEME: u8 = 2;
const PSEUDO_AUTHORITY: u8 = 4;
const PSEUDO_PATH: u8 = 8;
const PSEUDO_STATUS: u8 = 16;

impl Check {
    /// Counts a field into the list size; whether it is to be stored.
    fn admit(&mut self, head: &mut Head, size: usize) -> bool {
        head.list_size = head.list_size.saturating_add(size);
        if self.problem.is_some() {
            return false;
        }
        if head.list_size > self.max_list_size {
            self.problem = Some(DecodeError::TooLarge);
            return false;
        }
        true
    }

    fn malformed(&mut self, why: &'static str) {
        if self.problem.is_none() {
            self.problem = Some(DecodeError::Malformed(why));
        }
    }

    /// Checks an admitted field, whose value is in the buffer, and stores
    /// it unless it is malformed.
    fn field(
        &mut self,
        head: &mut Head,
        name: Name,
        value: Span,
        sensitive: bool,
        problem: Option<Problem>,
    ) {
        if let Name::Static(s @ 1..=LAST_PSEUDO) = name {
            return self.pseudo(head, s, value, problem);
        }
        self.regular_seen = true;
        if let Some(problem) = problem {
            return self.malformed(problem.message());
        }
        let (static_name, name) = match name {
            Name::Static(s) => (s, Span::default()),
            Name::Buf(span) => (0, span),
        };
        let field = Field {
            static_name,
            sensitive,
            name,
            value,
        };
        let value = head.slice(value);
        // Of the connection-specific names only transfer-encoding is a
        // static one.
        let connection_specific = match static_name {
            0 => is_connection_specific(head.slice(field.name), value),
            s => s == TRANSFER_ENCODING,
        };
        if connection_specific {
            return self.malformed("connection-specific field");
        }
        if static_name == CONTENT_LENGTH {
            let Some(length) = parse_decimal(value) else {
                return self.malformed("content-length is not a decimal number");
            };
            if head.content_length.is_some_and(|l| l != length) {
                return self.malformed("content-length values differ");
            }
            head.content_length = Some(length);
        }
        head.fields.push(field);
    }

    /// A pseudo-header field: `s` is its static name index (1..=14).
    fn pseudo(&mut self, head: &mut Head, s: u8, value: Span, problem: Option<Problem>) {
        if self.regular_seen {
            return self.malformed("pseudo-header field after a regular field");
        }
        let bit = match s {
            AUTHORITY => PSEUDO_AUTHORITY,
            METHOD_GET | METHOD_POST => PSEUDO_METHOD,
            PATH_ROOT | PATH_INDEX => PSEUDO_PATH,
            SCHEME_HTTP | SCHEME_HTTPS => PSEUDO_SCHEME,
            _ => PSEUDO_STATUS,
        };
        match (self.kind, bit == PSEUDO_STATUS) {
            (Kind::Request, false) | (Kind::Response, true) => {}
            (Kind::Request, true) => return self.malformed("`:status` in a request"),
            (Kind::Response, false) => {
                return self.malformed("request pseudo-header field in a response");
            }
            (Kind::Trailers, _) => return self.malformed("pseudo-header field in trailers"),
        }
        if self.pseudo_seen & bit != 0 {
            return self.malformed("repeated pseudo-header field");
        }
        self.pseudo_seen |= bit;
        if let Some(problem) = problem {
            return self.malformed(problem.message());
        }
        let p = &mut head.pseudo;
        match bit {
            PSEUDO_METHOD => {
                if value.len == 0 {
                    return self.malformed("empty `:method`");
                }
                p.method = Some(value);
            }
            PSEUDO_SCHEME => p.scheme = Some(value),
            PSEUDO_AUTHORITY => p.authority = Some(value),
            PSEUDO_PATH => {
                let path = &head.buf[value.range()];
                if !(path.first() == Some(&b'/') || path == b"*") {
                    return self.malformed("`:path` neither starting with '/' nor '*'");
                }
                // No early exit, so that it compiles to a vector loop.
                let visible = path
                    .iter()
                    .fold(true, |ok, &b| ok & (b.wrapping_sub(0x21) < 0x5e));
                if !visible {
                    return self.malformed("`:path` with a byte that is not visible ASCII");
                }
                head.pseudo.path = Some(value);
            }
            // A status code is 100-999 (RFC 9110 section 15): three digits,
            // the first not 0 (`000` would also read as no status at all).
            _ => match head.buf[value.range()] {
                [a @ b'1'..=b'9', b @ b'0'..=b'9', c @ b'0'..=b'9'] => {
                    p.status =
                        u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
                }
                _ => self.malformed("`:status` is not three digits from 100 to 999"),
            },
        }
    }

    /// The checks of the block as a whole: the pseudo-header fields its
    /// kind requires (RFC 9113 sections 8.3.1 and 8.3.2, 8.5 for CONNECT).
    fn finish(&mut self, head: &Head) {
        if self.problem.is_some() {
            return;
        }
        let seen = self.pseudo_seen;
        let why = match self.kind {
            Kind::Request if seen & PSEUDO_METHOD == 0 => "`:method` missing",
            Kind::Request if head.method() == b"CONNECT" => {
                if seen & PSEUDO_AUTHORITY == 0 {
                    "CONNECT without `:authority`"
                } else if seen & (PSEUDO_SCHEME | PSEUDO_PATH) != 0 {
                    "CONNECT with `:scheme` or `:path`"
                } else {
                    return;
                }
            }
            Kind::Request if seen & PSEUDO_SCHEME == 0 => "`:scheme` missing",
            Kind::Request if seen & PSEUDO_PATH == 0 => "`:path` missing",
            Kind::Response if seen & PSEUDO_STATUS == 0 => "`:status` missing",
            _ => return,
        };
        self.malformed(why);
    }
}

/// A `content-length` value: ASCII digits only, fitting u64.
fn parse_decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// The dynamic table (RFC 7541 sections 2.3.2 and 4).
///
/// Entries' bytes (name, unless the entry keeps a static name index, then
/// value) sit back to back in `ring`, wrapping at its end, oldest first;
/// `entries` holds where each starts, oldest at the front. The ring is
/// allocated on the first insertion and grows (by doubling) up to the
/// table's size, so in the steady state an insertion allocates nothing.
struct Table {
    ring: Vec<u8>,
    /// Where the next entry's bytes go.
    write: usize,
    /// Bytes of `ring` in use: the `stored` bytes before `write`.
    stored: usize,
    entries: VecDeque<Entry>,
    /// RFC 7541 section 4.1 size: every entry's name and value plus 32.
    size: usize,
    /// The current maximum size (the last size update).
    max_size: usize,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Where the entry's bytes start in the ring.
    at: u32,
    name_len: u32,
    value_len: u32,
    /// The name's static table index, or 0: then the name is stored.
    static_name: u8,
    name_problem: Option<Problem>,
    value_problem: Option<Problem>,
}

impl Entry {
    fn size(&self) -> usize {
        self.name_len as usize + self.value_len as usize + 32
    }

    fn stored_name_len(&self) -> usize {
        if self.static_name == 0 {
            self.name_len as usize
        } else {
            0
        }
    }

    fn stored(&self) -> usize {
        self.stored_name_len() + self.value_len as usize
    }

    fn value_at(&self, table: &Table) -> usize {
        table.wrap(self.at as usize + self.stored_name_len())
    }
}

impl Table {
    fn new(max_size: usize) -> Self {
        Table {
            ring: Vec::new(),
            write: 0,
            stored: 0,
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// The entry at dynamic index `i` (0 is the newest, HPACK index 62).
    fn get(&self, i: usize) -> Result<Entry, DecodeError> {
        let len = self.entries.len();
        if i >= len {
            return Err(Compression("index past the end of the tables"));
        }
        Ok(self.entries[len - 1 - i])
    }

    fn wrap(&self, at: usize) -> usize {
        if at >= self.ring.len() {
            at - self.ring.len()
        } else {
            at
        }
    }

    /// The `len` bytes at `at`, in one or two pieces.
    fn bytes(&self, at: usize, len: usize) -> (&[u8], &[u8]) {
        let end = at + len;
        match self.ring.len() {
            cap if end <= cap => (&self.ring[at..end], &[]),
            cap => (&self.ring[at..], &self.ring[..end - cap]),
        }
    }

    /// Appends the `len` bytes at `at` to `buf`.
    fn copy(&self, at: usize, len: u32, buf: &mut Vec<u8>) -> Span {
        let start = buf.len();
        let (a, b) = self.bytes(at, len as usize);
        buf.extend_from_slice(a);
        buf.extend_from_slice(b);
        span(start, buf.len())
    }

    /// A dynamic table size update.
    fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        while self.size > max_size {
            self.evict();
        }
        if max_size == 0 {
            // The peer turned indexing off: give the memory back.
            self.ring = Vec::new();
            self.write = 0;
        }
    }

    fn evict(&mut self) {
        let Some(oldest) = self.entries.pop_front() else {
            return;
        };
        self.size -= oldest.size();
        self.stored -= oldest.stored();
        if self.entries.is_empty() {
            self.write = 0;
        }
    }

    /// Inserts an entry (RFC 7541 section 4.4): `name` is empty when
    /// `static_name` is set, `name_len` is the name's length either way.
    fn insert(
        &mut self,
        static_name: u8,
        name: &[u8],
        name_len: u32,
        value: &[u8],
        name_problem: Option<Problem>,
        value_problem: Option<Problem>,
    ) {
        let size = name_len as usize + value.len() + 32;
        if size > self.max_size {
            // Larger than the whole table: it empties the table and is not
            // inserted.
            while !self.entries.is_empty() {
                self.evict();
            }
            return;
        }
        while self.size + size > self.max_size {
            self.evict();
        }
        // The stored bytes never pass the size (each entry counts 32 more),
        // hence never the maximum size.
        let stored = name.len() + value.len();
        if self.stored + stored > self.ring.len() {
            self.grow(self.stored + stored);
        }
        let at = self.write;
        self.put(name);
        self.put(value);
        self.stored += stored;
        self.size += size;
        self.entries.push_back(Entry {
            at: at as u32,
            name_len,
            value_len: value.len() as u32,
            static_name,
            name_problem,
            value_problem,
        });
    }

    /// Reallocates the ring to hold at least `need` bytes, the stored ones
    /// moved to its start.
    fn grow(&mut self, need: usize) {
        let cap = need
            .next_power_of_two()
            .max(256)
            .min(self.max_size)
            .max(need);
        let mut ring = vec![0; cap];
        let old = self.ring.len();
        if old > 0 {
            let start = self.wrap(self.write + old - self.stored);
            let (a, b) = self.bytes(start, self.stored);
            ring[..a.len()].copy_from_slice(a);
            ring[a.len()..self.stored].copy_from_slice(b);
            for entry in &mut self.entries {
                let at = entry.at as usize;
                entry.at = if at >= start {
                    at - start
                } else {
                    at + old - start
                } as u32;
            }
        }
        self.ring = ring;
        self.write = if self.stored == cap { 0 } else { self.stored };
    }

    /// Writes bytes at `write`, wrapping; the room was made.
    fn put(&mut self, bytes: &[u8]) {
        let cap = self.ring.len();
        let first = (cap - self.write).min(bytes.len());
        let (a, b) = bytes.split_at(first);
        self.ring[self.write..self.write + first].copy_from_slice(a);
        self.ring[..b.len()].copy_from_slice(b);
        self.write = self.wrap(self.write + bytes.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hpack::huffman;
    use crate::hpack::huffman::tests::Rng;

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    const LIMIT: usize = 64 * 1024;

    fn decode(d: &mut Decoder, block: &[u8], kind: Kind) -> Result<Head, DecodeError> {
        let mut head = Head::default();
        d.decode(block, kind, LIMIT, &mut head).map(|()| head)
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    /// The block's fields: the pseudo-header ones (in the order the
    /// RFC 7541 examples send them), then the regular ones.
    fn fields(head: &Head) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let p = &head.pseudo;
        for (name, span) in [
            (":method", p.method),
            (":scheme", p.scheme),
            (":path", p.path),
            (":authority", p.authority),
        ] {
            if let Some(span) = span {
                out.push((name.to_string(), text(head.slice(span))));
            }
        }
        if p.status != 0 {
            out.push((":status".to_string(), p.status.to_string()));
        }
        out.extend(head.iter().map(|(n, v)| (text(n), text(v))));
        out
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// The dynamic table, newest entry first, and its size.
    fn table(d: &Decoder) -> (Vec<(String, String)>, usize) {
        let t = &d.table;
        let entries = t
            .entries
            .iter()
            .rev()
            .map(|e| {
                let mut name = Vec::new();
                if e.static_name == 0 {
                    t.copy(e.at as usize, e.name_len, &mut name);
                } else {
                    name.extend_from_slice(STATIC[usize::from(e.static_name) - 1].0);
                }
                let mut value = Vec::new();
                t.copy(e.value_at(t), e.value_len, &mut value);
                (text(&name), text(&value))
            })
            .collect();
        (entries, t.size)
    }

    // Block builders for the tests below.

    /// A string literal, raw.
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        int(out, 0, 7, s.len());
        out.extend_from_slice(s);
    }

    fn int(out: &mut Vec<u8>, first: u8, n: u32, value: usize) {
        let max = (1 << n) - 1;
        if value < max {
            out.push(first | value as u8);
            return;
        }
        out.push(first | max as u8);
        let mut rest = value - max;
        while rest >= 0x80 {
            out.push(rest as u8 | 0x80);
            rest >>= 7;
        }
        out.push(rest as u8);
    }

    /// A literal with incremental indexing and a literal name.
    fn indexed_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        out.push(0x40);
        string(out, name);
        string(out, value);
    }

    /// A literal with incremental indexing naming static entry `index`.
    fn indexed_static_name(out: &mut Vec<u8>, index: usize, value: &[u8]) {
        int(out, 0x40, 6, index);
        string(out, value);
    }

    // RFC 7541 Appendix C.

    #[test]
    fn c2_each_representation() {
        // C.2.1: literal with indexing.
        let mut d = Decoder::new(4096);
        let block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        let head = decode(&mut d, &block, Kind::Trailers).unwrap();
        assert_eq!(fields(&head), pairs(&[("custom-key", "custom-header")]));
        assert_eq!(table(&d), (pairs(&[("custom-key", "custom-header")]), 55));

        // C.2.2: literal without indexing (behind `:method` and `:scheme`,
        // to make a whole request).
        let mut d = Decoder::new(4096);
        let mut block = hex("8286");
        block.extend(hex("040c 2f73 616d 706c 652f 7061 7468"));
        let head = decode(&mut d, &block, Kind::Request).unwrap();
        assert_eq!(head.path(), "/sample/path");
        assert_eq!(table(&d), (vec![], 0));

        // C.2.3: never indexed.
        let mut d = Decoder::new(4096);
        let block = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
        let head = decode(&mut d, &block, Kind::Trailers).unwrap();
        assert_eq!(fields(&head), pairs(&[("password", "secret")]));
        assert!(head.fields[0].sensitive);
        assert_eq!(table(&d), (vec![], 0));

        // C.2.4: indexed (then `:scheme` and `:path`, indexed too).
        let mut d = Decoder::new(4096);
        let mut block = hex("82");
        block.extend(hex("8684"));
        let head = decode(&mut d, &block, Kind::Request).unwrap();
        assert_eq!(head.method(), b"GET");
        assert_eq!(table(&d), (vec![], 0));
    }

    /// C.3 (raw) and C.4 (Huffman): three requests on one connection.
    #[test]
    fn c3_c4_requests() {
        let blocks = [
            [
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            ],
            [
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8286 84be 5886 a8eb 1064 9cbf",
            ],
            [
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ],
        ];
        let www = ("www.example.com", ":authority");
        let want = [
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (www.1, www.0),
            ]),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (www.1, www.0),
                ("cache-control", "no-cache"),
            ]),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (www.1, www.0),
                ("custom-key", "custom-value"),
            ]),
        ];
        let tables = [
            (pairs(&[(www.1, www.0)]), 57),
            (pairs(&[("cache-control", "no-cache"), (www.1, www.0)]), 110),
            (
                pairs(&[
                    ("custom-key", "custom-value"),
                    ("cache-control", "no-cache"),
                    (www.1, www.0),
                ]),
                164,
            ),
        ];
        for huffman in [0, 1] {
            let mut d = Decoder::new(4096);
            for i in 0..3 {
                let head = decode(&mut d, &hex(blocks[i][huffman]), Kind::Request).unwrap();
                assert_eq!(fields(&head), want[i], "C.{} #{i}", 3 + huffman);
                assert_eq!(table(&d), tables[i], "C.{} #{i}", 3 + huffman);
                let list: usize = want[i].iter().map(|(n, v)| n.len() + v.len() + 32).sum();
                assert_eq!(head.list_size(), list);
                if i == 0 {
                    // Static names and values are not copied: only the
                    // values are in the buffer.
                    assert_eq!(head.buf, b"GEThttp/www.example.com");
                }
                if i == 1 {
                    // cache-control (24) keeps its static name from the
                    // literal, and `:authority` from its dynamic entry.
                    assert_eq!(head.fields[0].static_name, 24);
                }
            }
        }
    }

    /// C.5 (raw) and C.6 (Huffman): three responses with a 256-byte table,
    /// so entries are evicted.
    #[test]
    fn c5_c6_responses_with_eviction() {
        let blocks = [
            [
                "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
                 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
                 6c65 2e63 6f6d",
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
                 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            ],
            ["4803 3330 37c1 c0bf", "4883 640e ffc1 c0bf"],
            [
                "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
                 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
                 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
                 3d31",
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
                 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
                 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ],
        ];
        let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
        let date2 = "Mon, 21 Oct 2013 20:13:22 GMT";
        let url = "https://www.example.com";
        let cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
        let want = [
            pairs(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", date1),
                ("location", url),
            ]),
            pairs(&[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", date1),
                ("location", url),
            ]),
            pairs(&[
                (":status", "200"),
                ("cache-control", "private"),
                ("date", date2),
                ("location", url),
                ("content-encoding", "gzip"),
                ("set-cookie", cookie),
            ]),
        ];
        let tables = [
            (
                pairs(&[
                    ("location", url),
                    ("date", date1),
                    ("cache-control", "private"),
                    (":status", "302"),
                ]),
                222,
            ),
            (
                pairs(&[
                    (":status", "307"),
                    ("location", url),
                    ("date", date1),
                    ("cache-control", "private"),
                ]),
                222,
            ),
            (
                pairs(&[
                    ("set-cookie", cookie),
                    ("content-encoding", "gzip"),
                    ("date", date2),
                ]),
                215,
            ),
        ];
        for huffman in [0, 1] {
            let mut d = Decoder::new(256);
            for i in 0..3 {
                let head = decode(&mut d, &hex(blocks[i][huffman]), Kind::Response).unwrap();
                assert_eq!(fields(&head), want[i], "C.{} #{i}", 5 + huffman);
                assert_eq!(table(&d), tables[i], "C.{} #{i}", 5 + huffman);
            }
        }
    }

    // Representations and the dynamic table.

    #[test]
    fn dynamic_entries_remember_static_names() {
        let mut d = Decoder::new(4096);
        let mut block = Vec::new();
        indexed_static_name(&mut block, 4, b"/svc/Call");
        // A literal name that is a static one counts as that index.
        indexed_literal(&mut block, b"user-agent", b"grpc-go/1.60");
        indexed_static_name(&mut block, 31, b"application/grpc");
        let head = decode(&mut d, &block, Kind::Trailers);
        assert_eq!(
            head.unwrap_err(),
            DecodeError::Malformed("pseudo-header field in trailers")
        );
        // 0xbe is content-type, 0xbf user-agent, 0xc0 `:path`.
        let head = decode(&mut d, &hex("8286 c0 bf be"), Kind::Request).unwrap();
        assert_eq!(head.path(), "/svc/Call");
        assert_eq!(head.fields[0].static_name, 58);
        assert_eq!(head.fields[1].static_name, 31);
        assert_eq!(head.buf, b"GEThttp/svc/Callgrpc-go/1.60application/grpc");
        assert_eq!(
            fields(&head)[3..],
            pairs(&[
                ("user-agent", "grpc-go/1.60"),
                ("content-type", "application/grpc")
            ])
        );
        // As a name reference too.
        let mut block = hex("8286 84");
        int(&mut block, 0, 4, 63);
        string(&mut block, b"grpc-go/2");
        let head = decode(&mut d, &block, Kind::Request).unwrap();
        assert_eq!(head.fields[0].static_name, 58);
        assert_eq!(head.get(b"user-agent"), Some(&b"grpc-go/2"[..]));
    }

    #[test]
    fn an_entry_can_name_the_entry_it_evicts() {
        // A 100-byte table holds one entry of 10 + 10 + 32 bytes; the
        // second one, named by the first, evicts it.
        let mut d = Decoder::new(100);
        let mut block = Vec::new();
        indexed_literal(&mut block, b"x-name-abc", b"value-0001");
        int(&mut block, 0x40, 6, 62);
        string(&mut block, b"value-0002");
        let head = decode(&mut d, &block, Kind::Trailers).unwrap();
        assert_eq!(
            fields(&head),
            pairs(&[("x-name-abc", "value-0001"), ("x-name-abc", "value-0002")])
        );
        assert_eq!(table(&d), (pairs(&[("x-name-abc", "value-0002")]), 52));
    }

    #[test]
    fn an_entry_larger_than_the_table_empties_it() {
        let mut d = Decoder::new(4096);
        let mut block = hex("3f e1 01"); // size update to 256
        indexed_literal(&mut block, b"x-a", b"1");
        indexed_literal(&mut block, b"x-big", &[b'v'; 220]);
        let head = decode(&mut d, &block, Kind::Trailers).unwrap();
        assert_eq!(head.len(), 2);
        assert_eq!(table(&d), (vec![], 0));
        assert_eq!(
            decode(&mut d, &hex("be"), Kind::Trailers).unwrap_err(),
            DecodeError::Compression("index past the end of the tables")
        );
    }

    /// Against a plain model of RFC 7541 section 4: random insertions and
    /// size updates through a small table, whose ring wraps and grows,
    /// then every entry read back.
    #[test]
    fn the_ring_keeps_entries_as_the_rfc_model_does() {
        let mut rng = Rng(0x0bad_cafe_1234_5678);
        let mut d = Decoder::new(1000);
        let mut model: VecDeque<(Vec<u8>, Vec<u8>)> = VecDeque::new();
        let mut max = 1000;
        let size = |m: &VecDeque<(Vec<u8>, Vec<u8>)>| -> usize {
            m.iter().map(|(n, v)| n.len() + v.len() + 32).sum()
        };
        for round in 0..2000 {
            let mut block = Vec::new();
            if round % 50 == 1 {
                max = (rng.next() % 1001) as usize;
                int(&mut block, 0x20, 5, max);
                while size(&model) > max {
                    model.pop_back();
                }
            }
            for _ in 0..(rng.next() % 4) {
                let static_name = rng.next() % 3 == 1;
                let name = if static_name {
                    b"content-type".to_vec()
                } else {
                    let len = 1 + (rng.next() % 30) as usize;
                    (0..len).map(|_| b'a' + (rng.next() % 26) as u8).collect()
                };
                let len = (rng.next() % 120) as usize;
                let value: Vec<u8> = (0..len).map(|_| b'0' + (rng.next() % 10) as u8).collect();
                if static_name {
                    indexed_static_name(&mut block, 31, &value);
                } else {
                    indexed_literal(&mut block, &name, &value);
                }
                let entry = name.len() + value.len() + 32;
                if entry > max {
                    model.clear();
                } else {
                    while size(&model) + entry > max {
                        model.pop_back();
                    }
                    model.push_front((name, value));
                }
            }
            decode(&mut d, &block, Kind::Trailers).unwrap();
            let mut refs = Vec::new();
            for i in 0..model.len() {
                int(&mut refs, 0x80, 7, 62 + i);
            }
            let head = decode(&mut d, &refs, Kind::Trailers).unwrap();
            let got: Vec<_> = head.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
            assert_eq!(got, Vec::from(model.clone()), "round {round}");
            assert_eq!(d.table.size, size(&model));
            assert!(d.table.ring.len() <= 1000);
        }
    }

    // Decoding errors: the connection's table is lost.

    #[test]
    fn bad_indexes_integers_and_strings_are_compression_errors() {
        let cases: [(&str, &str); 9] = [
            ("80", "index 0"),
            ("be", "index past the end of the tables"),
            ("40 ff", "integer past the end of the block"),
            ("ff 80 80 80 80 80 80 01", "integer longer than 6 bytes"),
            ("ff ff ff ff ff 7f", "integer above 2^32 - 1"),
            ("40 05 61", "string past the end of the block"),
            ("40 01 61", "string past the end of the block"),
            ("40 81 ff 01 61", "Huffman padding longer than 7 bits"),
            ("40 81 18 01 61", "Huffman padding that is not all ones"),
        ];
        for (block, why) in cases {
            let mut d = Decoder::new(4096);
            assert_eq!(
                decode(&mut d, &hex(block), Kind::Trailers).unwrap_err(),
                DecodeError::Compression(why),
                "{block}"
            );
        }
        // The largest index that fits, and a redundant zero group, decode.
        let mut d = Decoder::new(4096);
        let mut head = Head::default();
        let err = d.decode(&hex("ff 80 80 80 80 00"), Kind::Trailers, LIMIT, &mut head);
        assert_eq!(err, Err(Compression("index past the end of the tables")));
        let err = d.decode(&hex("ff 80 ff ff ff 0f"), Kind::Trailers, LIMIT, &mut head);
        assert_eq!(err, Err(Compression("index past the end of the tables")));
        // "a", then 35 one-bits: EOS and more.
        let mut eos = vec![0x40, 0x01, b'a', 0x85];
        eos.extend(huffman::encode(b"a"));
        eos.extend([0xff, 0xff, 0xff, 0xff]);
        let err = decode(&mut d, &eos, Kind::Trailers).unwrap_err();
        assert_eq!(err, Compression(huffman::EOS));
    }

    #[test]
    fn size_updates_only_at_the_start_and_up_to_the_maximum() {
        let mut d = Decoder::new(4096);
        let mut block = Vec::new();
        indexed_literal(&mut block, b"x-a", b"1");
        decode(&mut d, &block, Kind::Trailers).unwrap();
        // Several at the start: to 0 (empties the table), then 4096.
        let head = decode(&mut d, &hex("20 3f e1 1f 8286 84"), Kind::Request).unwrap();
        assert_eq!(head.method(), b"GET");
        assert_eq!(table(&d), (vec![], 0));
        assert_eq!(d.table.max_size, 4096);
        // Down to 100, then an entry of 60 fits and one more evicts it.
        let mut block = hex("3f 45");
        indexed_literal(&mut block, b"x-a", &[b'1'; 25]);
        indexed_literal(&mut block, b"x-b", &[b'2'; 25]);
        decode(&mut d, &block, Kind::Trailers).unwrap();
        assert_eq!(table(&d).0, pairs(&[("x-b", &"2".repeat(25))]));
        // After a field.
        assert_eq!(
            decode(&mut d, &hex("82 20"), Kind::Request).unwrap_err(),
            Compression("table size update after a field")
        );
        // Above what we advertise.
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &hex("3f e2 1f"), Kind::Request).unwrap_err(),
            Compression("table size update above SETTINGS_HEADER_TABLE_SIZE")
        );
    }

    // Malformed messages: a stream error, and the table stays in sync.

    /// Decodes `block` as `kind` (a marker entry appended to it), expects
    /// it malformed for `why`, then checks that the next block, which
    /// references the marker, decodes.
    fn assert_malformed(kind: Kind, block: &[u8], why: &str) {
        let mut d = Decoder::new(4096);
        let mut block = block.to_vec();
        indexed_literal(&mut block, b"x-marker", b"inserted");
        match decode(&mut d, &block, kind) {
            Err(DecodeError::Malformed(got)) => assert!(got.contains(why), "{got:?}: {why:?}"),
            other => panic!("{why}: {other:?}"),
        }
        let mut next = match kind {
            Kind::Request => hex("8286 84"),
            Kind::Response => hex("88"),
            Kind::Trailers => vec![],
        };
        next.push(0xbe);
        let head = decode(&mut d, &next, kind).unwrap();
        assert_eq!(head.get(b"x-marker"), Some(&b"inserted"[..]), "{why}");
    }

    fn request_with(extra: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut block = hex("8286 84");
        for (name, value) in extra {
            indexed_literal(&mut block, name, value);
        }
        block
    }

    #[test]
    fn field_names_are_checked() {
        let cases: [(&[u8], &str); 6] = [
            (b"", "empty field name"),
            (b"x-Upper", "uppercase"),
            (b"x name", "control, space, colon or non-ASCII"),
            (b"x-\x01", "control, space, colon or non-ASCII"),
            (b"x-\xc3\xa9", "control, space, colon or non-ASCII"),
            (b"x:y", "control, space, colon or non-ASCII"),
        ];
        for (name, why) in cases {
            assert_malformed(Kind::Request, &request_with(&[(name, b"v")]), why);
        }
        assert_malformed(
            Kind::Request,
            &request_with(&[(b"x-\x7f", b"v")]),
            "non-ASCII",
        );
    }

    #[test]
    fn field_values_are_checked() {
        let cases: [(&[u8], &str); 6] = [
            (b"a\0b", "NUL, CR or LF"),
            (b"a\nb", "NUL, CR or LF"),
            (b"a\rb", "NUL, CR or LF"),
            (b" ab", "whitespace"),
            (b"ab\t", "whitespace"),
            (b"\tab", "whitespace"),
        ];
        for (value, why) in cases {
            assert_malformed(Kind::Request, &request_with(&[(b"x-v", value)]), why);
        }
        // Inside a value, space and tab are fine.
        let mut d = Decoder::new(4096);
        let block = request_with(&[(b"x-v", b"a \tb")]);
        assert!(decode(&mut d, &block, Kind::Request).is_ok());
    }

    #[test]
    fn a_problem_is_remembered_with_its_dynamic_entry() {
        let mut d = Decoder::new(4096);
        let block = request_with(&[(b"x-Bad", b"v")]);
        assert!(decode(&mut d, &block, Kind::Request).is_err());
        let err = decode(&mut d, &hex("8286 84 be"), Kind::Request).unwrap_err();
        assert_eq!(err, DecodeError::Malformed("uppercase field name"));
        // By name only, too.
        let mut block = hex("8286 84");
        int(&mut block, 0, 4, 62);
        string(&mut block, b"v");
        let err = decode(&mut d, &block, Kind::Request).unwrap_err();
        assert_eq!(err, DecodeError::Malformed("uppercase field name"));
    }

    #[test]
    fn pseudo_header_fields_are_checked() {
        let mut after = request_with(&[(b"x-a", b"1")]);
        after.push(0x41); // :authority, after a regular field
        string(&mut after, b"example");
        assert_malformed(Kind::Request, &after, "after a regular field");
        assert_malformed(
            Kind::Request,
            &request_with(&[(b":foo", b"1")]),
            "unknown pseudo-header",
        );
        assert_malformed(Kind::Request, &hex("8286 84 84"), "repeated");
        assert_malformed(Kind::Request, &hex("8286 84 88"), "`:status` in a request");
        assert_malformed(Kind::Response, &hex("88 82"), "in a response");
        assert_malformed(Kind::Trailers, &hex("88"), "in trailers");
        assert_malformed(
            Kind::Request,
            &request_with(&[(b":protocol", b"websocket")]),
            "`:protocol`",
        );
    }

    #[test]
    fn a_request_has_the_pseudo_header_fields_it_needs() {
        assert_malformed(Kind::Request, &hex("86 84"), "`:method` missing");
        assert_malformed(Kind::Request, &hex("82 84"), "`:scheme` missing");
        assert_malformed(Kind::Request, &hex("82 86"), "`:path` missing");
        let mut empty_method = vec![0x42, 0x00];
        empty_method.extend(hex("86 84"));
        assert_malformed(Kind::Request, &empty_method, "empty `:method`");
        let path = |p: &[u8]| {
            let mut block = hex("8286");
            block.push(0x44);
            string(&mut block, p);
            block
        };
        assert_malformed(Kind::Request, &path(b""), "`:path` neither");
        assert_malformed(Kind::Request, &path(b"x/y"), "`:path` neither");
        assert_malformed(Kind::Request, &path(b"/a b"), "not visible ASCII");
        assert_malformed(Kind::Request, &path(b"/a\x7f"), "not visible ASCII");
        assert_malformed(Kind::Request, &path(b"/\xc3\xa9"), "not visible ASCII");
        let mut d = Decoder::new(4096);
        let head = decode(&mut d, &path(b"*"), Kind::Request).unwrap();
        assert_eq!(head.path(), "*");

        // CONNECT: `:authority`, no `:scheme` nor `:path`.
        let connect = |rest: &str| {
            let mut block = vec![0x42];
            string(&mut block, b"CONNECT");
            block.extend(hex(rest));
            block
        };
        let authority = "41 0b 6578 616d 706c 653a 3434 33"; // example:443
        let mut d = Decoder::new(4096);
        let head = decode(&mut d, &connect(authority), Kind::Request).unwrap();
        assert_eq!(head.authority(), Some(&b"example:443"[..]));
        assert_eq!(head.path(), "");
        assert_malformed(Kind::Request, &connect(""), "CONNECT without `:authority`");
        let with_path = format!("{authority} 84");
        assert_malformed(Kind::Request, &connect(&with_path), "CONNECT with");
        let with_scheme = format!("86 {authority}");
        assert_malformed(Kind::Request, &connect(&with_scheme), "CONNECT with");
    }

    #[test]
    fn a_response_has_a_three_digit_status_from_100() {
        assert_malformed(Kind::Response, &[], "`:status` missing");
        // 099 and 000 were found by the `hpack` fuzz target: they decoded as
        // 99 and 0 (no status), which the encoder could not send back.
        for status in [&b"20"[..], b"2000", b"20a", b"", b"+20", b"099", b"000"] {
            let mut block = vec![0x48];
            string(&mut block, status);
            assert_malformed(Kind::Response, &block, "three digits");
        }
        let mut d = Decoder::new(4096);
        let mut block = vec![0x08];
        string(&mut block, b"103");
        assert_eq!(
            decode(&mut d, &block, Kind::Response).unwrap().status(),
            103
        );
        assert_eq!(
            decode(&mut d, &hex("8d"), Kind::Response).unwrap().status(),
            404
        );
    }

    #[test]
    fn connection_specific_fields_are_malformed() {
        let cases: [(&[u8], &[u8]); 7] = [
            (b"connection", b"close"),
            (b"keep-alive", b"timeout=5"),
            (b"proxy-connection", b"keep-alive"),
            (b"transfer-encoding", b"chunked"),
            (b"upgrade", b"h2c"),
            (b"te", b"gzip"),
            (b"te", b"trailers, gzip"),
        ];
        for (name, value) in cases {
            let block = request_with(&[(name, value)]);
            assert_malformed(Kind::Request, &block, "connection-specific");
        }
        let mut d = Decoder::new(4096);
        let block = request_with(&[(b"te", b"trailers")]);
        let head = decode(&mut d, &block, Kind::Request).unwrap();
        assert_eq!(head.get(b"te"), Some(&b"trailers"[..]));
    }

    #[test]
    fn content_length_is_decimal_and_agrees() {
        for value in [&b"12a"[..], b"", b"-1", b"1 2", b"99999999999999999999"] {
            let block = request_with(&[(b"content-length", value)]);
            assert_malformed(Kind::Request, &block, "not a decimal number");
        }
        let block = request_with(&[(b"content-length", b"12"), (b"content-length", b"13")]);
        assert_malformed(Kind::Request, &block, "content-length values differ");
        let mut d = Decoder::new(4096);
        let block = request_with(&[(b"content-length", b"12"), (b"content-length", b"12")]);
        let head = decode(&mut d, &block, Kind::Request).unwrap();
        assert_eq!(head.content_length(), Some(12));
        let head = decode(&mut d, &hex("8286 84"), Kind::Request).unwrap();
        assert_eq!(head.content_length(), None);
    }

    #[test]
    fn the_first_problem_is_reported() {
        let block = request_with(&[(b"x-A", b"1"), (b"connection", b"close")]);
        assert_malformed(Kind::Request, &block, "uppercase");
    }

    // The header list limit.

    #[test]
    fn an_hpack_bomb_is_too_large_and_allocates_little() {
        let mut d = Decoder::new(4096);
        let mut block = Vec::new();
        indexed_literal(&mut block, b"x-bomb", &[b'b'; 4000]);
        decode(&mut d, &block, Kind::Trailers).unwrap();
        let bomb = [0xbe; 100];
        let mut head = Head::default();
        let err = d.decode(&bomb, Kind::Trailers, LIMIT, &mut head);
        assert_eq!(err, Err(DecodeError::TooLarge));
        assert_eq!(head.list_size(), 100 * (6 + 4000 + 32));
        assert!(head.buf.len() <= LIMIT, "{}", head.buf.len());
        assert!(head.buf.capacity() <= 2 * LIMIT, "{}", head.buf.capacity());
        // The table is in sync: the next block decodes.
        let head = decode(&mut d, &hex("8286 84 be"), Kind::Request).unwrap();
        assert_eq!(head.get(b"x-bomb").map(<[u8]>::len), Some(4000));
        // A decoding error after the limit wins.
        let mut block = vec![0xbe; 20];
        block.push(0xff);
        assert_eq!(
            decode(&mut d, &block, Kind::Trailers).unwrap_err(),
            Compression("integer past the end of the block")
        );
    }

    #[test]
    fn fields_past_the_limit_still_reach_the_table() {
        let mut d = Decoder::new(4096);
        let mut block = Vec::new();
        indexed_literal(&mut block, b"x-a", &[b'a'; 100]);
        indexed_literal(&mut block, b"x-b", &[b'b'; 100]);
        let mut head = Head::default();
        let err = d.decode(&block, Kind::Trailers, 150, &mut head);
        assert_eq!(err, Err(DecodeError::TooLarge));
        assert_eq!(head.len(), 1);
        assert_eq!(table(&d).0.len(), 2);
        let head = decode(&mut d, &hex("be bf"), Kind::Trailers).unwrap();
        assert_eq!(head.get(b"x-b").map(<[u8]>::len), Some(100));
    }
}
