//! Huffman decoding of HPACK string literals (RFC 7541 section 5.2, code
//! table in Appendix B).
//!
//! Peers Huffman-code most literals (nghttp2 and grpc-go send every `:path`
//! that way, on every call), so this is on the hot path. Instead of walking
//! the code tree a few bits at a time, the decoder keeps the next input bits
//! in a 64-bit accumulator refilled 8 bytes at a time, and looks the next
//! `FAST_BITS` bits up in `FAST`, a table built at compile time that
//! yields the one or two whole codes they start with: letters, digits and
//! the usual punctuation have 5- to 8-bit codes, so one lookup usually
//! decodes two bytes. The same table decodes the last bits of the string,
//! so the common case never leaves it. Longer codes (control bytes, bytes
//! above 0x7f, a few rare ASCII ones) are decoded canonically: the code is
//! canonical (a fact checked at compile time), so the length of the code
//! starting with `n` one-bits is one of at most three known lengths, each
//! tried with one comparison.

/// The RFC 7541 Appendix B code: `CODES[sym] = (code, length in bits)`,
/// symbol 256 being EOS.
#[rustfmt::skip]
const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28),         // 0x00-0x03
    (0xfffffe4, 28), (0xfffffe5, 28), (0xfffffe6, 28), (0xfffffe7, 28),     // 0x04-0x07
    (0xfffffe8, 28), (0xffffea, 24), (0x3ffffffc, 30), (0xfffffe9, 28),     // 0x08-0x0b
    (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28), (0xfffffec, 28),    // 0x0c-0x0f
    (0xfffffed, 28), (0xfffffee, 28), (0xfffffef, 28), (0xffffff0, 28),     // 0x10-0x13
    (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28),    // 0x14-0x17
    (0xffffff4, 28), (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28),     // 0x18-0x1b
    (0xffffff8, 28), (0xffffff9, 28), (0xffffffa, 28), (0xffffffb, 28),     // 0x1c-0x1f
    (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12),                       // 0x20-0x23
    (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11),                        // 0x24-0x27
    (0x3fa, 10), (0x3fb, 10), (0xf9, 8), (0x7fb, 11),                       // 0x28-0x2b
    (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6),                             // 0x2c-0x2f
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6),                                // 0x30-0x33
    (0x1a, 6), (0x1b, 6), (0x1c, 6), (0x1d, 6),                             // 0x34-0x37
    (0x1e, 6), (0x1f, 6), (0x5c, 7), (0xfb, 8),                             // 0x38-0x3b
    (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10),                      // 0x3c-0x3f
    (0x1ffa, 13), (0x21, 6), (0x5d, 7), (0x5e, 7),                          // 0x40-0x43
    (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7),                             // 0x44-0x47
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7),                             // 0x48-0x4b
    (0x67, 7), (0x68, 7), (0x69, 7), (0x6a, 7),                             // 0x4c-0x4f
    (0x6b, 7), (0x6c, 7), (0x6d, 7), (0x6e, 7),                             // 0x50-0x53
    (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7),                             // 0x54-0x57
    (0xfc, 8), (0x73, 7), (0xfd, 8), (0x1ffb, 13),                          // 0x58-0x5b
    (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6),                   // 0x5c-0x5f
    (0x7ffd, 15), (0x3, 5), (0x23, 6), (0x4, 5),                            // 0x60-0x63
    (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6),                              // 0x64-0x67
    (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7),                              // 0x68-0x6b
    (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5),                              // 0x6c-0x6f
    (0x2b, 6), (0x76, 7), (0x2c, 6), (0x8, 5),                              // 0x70-0x73
    (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7),                              // 0x74-0x77
    (0x79, 7), (0x7a, 7), (0x7b, 7), (0x7ffe, 15),                          // 0x78-0x7b
    (0x7fc, 11), (0x3ffd, 14), (0x1ffd, 13), (0xffffffc, 28),               // 0x7c-0x7f
    (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20),            // 0x80-0x83
    (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22), (0x7fffd9, 23),         // 0x84-0x87
    (0x3fffd6, 22), (0x7fffda, 23), (0x7fffdb, 23), (0x7fffdc, 23),         // 0x88-0x8b
    (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23),         // 0x8c-0x8f
    (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22), (0x7fffe0, 23),         // 0x90-0x93
    (0xffffee, 24), (0x7fffe1, 23), (0x7fffe2, 23), (0x7fffe3, 23),         // 0x94-0x97
    (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23),         // 0x98-0x9b
    (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23), (0xffffef, 24),         // 0x9c-0x9f
    (0x3fffda, 22), (0x1fffdd, 21), (0xfffe9, 20), (0x3fffdb, 22),          // 0xa0-0xa3
    (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21),         // 0xa4-0xa7
    (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22), (0xfffff0, 24),         // 0xa8-0xab
    (0x1fffdf, 21), (0x3fffdf, 22), (0x7fffeb, 23), (0x7fffec, 23),         // 0xac-0xaf
    (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21),         // 0xb0-0xb3
    (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23), (0x7fffef, 23),         // 0xb4-0xb7
    (0xfffea, 20), (0x3fffe2, 22), (0x3fffe3, 22), (0x3fffe4, 22),          // 0xb8-0xbb
    (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23),         // 0xbc-0xbf
    (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19),         // 0xc0-0xc3
    (0x3fffe7, 22), (0x7ffff2, 23), (0x3fffe8, 22), (0x1ffffec, 25),        // 0xc4-0xc7
    (0x3ffffe2, 26), (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27),     // 0xc8-0xcb
    (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24), (0x1ffffed, 25),      // 0xcc-0xcf
    (0x7fff2, 19), (0x1fffe3, 21), (0x3ffffe6, 26), (0x7ffffe0, 27),        // 0xd0-0xd3
    (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24),      // 0xd4-0xd7
    (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26),       // 0xd8-0xdb
    (0xffffffd, 28), (0x7ffffe3, 27), (0x7ffffe4, 27), (0x7ffffe5, 27),     // 0xdc-0xdf
    (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20), (0x1fffe6, 21),           // 0xe0-0xe3
    (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23),         // 0xe4-0xe7
    (0x3fffea, 22), (0x3fffeb, 22), (0x1ffffee, 25), (0x1ffffef, 25),       // 0xe8-0xeb
    (0xfffff4, 24), (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23),        // 0xec-0xef
    (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26), (0x3ffffed, 26),     // 0xf0-0xf3
    (0x7ffffe7, 27), (0x7ffffe8, 27), (0x7ffffe9, 27), (0x7ffffea, 27),     // 0xf4-0xf7
    (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27),     // 0xf8-0xfb
    (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26),     // 0xfc-0xff
    (0x3fffffff, 30),                                                       // EOS
];

/// How many bits the fast table is indexed by. Two 6-bit codes (most
/// lowercase letters, '/', '.', digits) fit in 12; the table is 16 KiB.
const FAST_BITS: usize = 12;

/// `FAST[next 12 bits]`: bits 0..6 the length of the codes it decodes (both,
/// or the first when no second one fits; 0 when the first code is longer
/// than `FAST_BITS`), 8..16 the first symbol, 16..24 the second one, 24..29
/// the first code's length, 30..32 the number of symbols (1 or 2).
///
/// The length is in the low bits because the decoding loop's critical path
/// runs through it (load, shift the accumulator, index the next load): a
/// shift by a `u64` takes its count modulo 64, so it needs no masking.
static FAST: [u32; 1 << FAST_BITS] = build_fast();

/// The longest code (EOS).
const MAX_LEN: usize = 30;

/// The canonical code's tables, for codes longer than `FAST_BITS`: by
/// length, the first code (`FIRST`) and one past the last (`LIMIT`), and
/// where its symbols start in `SORTED` (the symbols ordered by length, then
/// value, which is the canonical code order).
struct Canonical {
    first: [u32; 31],
    limit: [u32; 31],
    base: [u16; 31],
    sorted: [u16; 257],
    /// The shortest code that starts with `n` one-bits (then a zero, or is
    /// all ones), for `n` in 0..=30.
    min_len_by_ones: [u8; 31],
}

static CANONICAL: Canonical = build_canonical();

const fn build_fast() -> [u32; 1 << FAST_BITS] {
    let mut table = [0u32; 1 << FAST_BITS];
    let k = FAST_BITS;
    // Every index starting with one whole code; EOS (30 bits) never fits.
    let mut a = 0;
    while a < 256 {
        let (code1, len1) = CODES[a];
        let len1 = len1 as usize;
        if len1 <= k {
            let rem = k - len1;
            let base = (code1 as usize) << rem;
            let entry = (1 << 30) | ((len1 as u32) << 24) | ((a as u32) << 8) | len1 as u32;
            let mut i = 0;
            while i < (1 << rem) {
                table[base + i] = entry;
                i += 1;
            }
            // Then the ones where a second whole code follows.
            let mut b = 0;
            while b < 256 {
                let (code2, len2) = CODES[b];
                let len2 = len2 as usize;
                if len2 <= rem {
                    let rem2 = rem - len2;
                    let base = base | ((code2 as usize) << rem2);
                    let entry = (2 << 30)
                        | ((len1 as u32) << 24)
                        | ((b as u32) << 16)
                        | ((a as u32) << 8)
                        | (len1 + len2) as u32;
                    let mut i = 0;
                    while i < (1 << rem2) {
                        table[base + i] = entry;
                        i += 1;
                    }
                }
                b += 1;
            }
        }
        a += 1;
    }
    table
}

const fn build_canonical() -> Canonical {
    let mut count = [0u32; 31];
    let mut s = 0;
    while s < 257 {
        count[CODES[s].1 as usize] += 1;
        s += 1;
    }
    let mut first = [0u32; 31];
    let mut limit = [0u32; 31];
    let mut base = [0u16; 31];
    let mut code = 0u32;
    let mut at = 0u16;
    let mut len = 1;
    while len <= 30 {
        first[len] = code;
        limit[len] = code + count[len];
        base[len] = at;
        at += count[len] as u16;
        code = (code + count[len]) << 1;
        len += 1;
    }
    // Symbols in canonical order; each must get the code the RFC gives it,
    // or the build fails: the slow path below relies on it.
    let mut sorted = [0u16; 257];
    let mut next = first;
    let mut filled = base;
    let mut len = 1;
    while len <= 30 {
        let mut s = 0;
        while s < 257 {
            if CODES[s].1 as usize == len {
                assert!(CODES[s].0 == next[len], "RFC 7541 code is not canonical");
                next[len] += 1;
                sorted[filled[len] as usize] = s as u16;
                filled[len] += 1;
            }
            s += 1;
        }
        len += 1;
    }
    let mut min_len_by_ones = [0u8; 31];
    let mut s = 0;
    while s < 257 {
        let (code, len) = CODES[s];
        // Leading ones of the code as `len` bits.
        let mut ones = (!(code << (32 - len as u32))).leading_zeros();
        if ones > len as u32 {
            ones = len as u32;
        }
        let ones = ones as usize;
        if min_len_by_ones[ones] == 0 || len < min_len_by_ones[ones] {
            min_len_by_ones[ones] = len;
        }
        s += 1;
    }
    Canonical {
        first,
        limit,
        base,
        sorted,
        min_len_by_ones,
    }
}

/// Why a Huffman-coded string does not decode (a COMPRESSION_ERROR).
pub(crate) const EOS: &str = "EOS symbol inside a Huffman-coded string";
pub(crate) const PADDING_TOO_LONG: &str = "Huffman padding longer than 7 bits";
pub(crate) const PADDING_NOT_ONES: &str = "Huffman padding that is not all ones";

/// The most bytes `len` Huffman-coded bytes decode to: every code is at
/// least 5 bits.
pub(crate) fn max_decoded_len(len: usize) -> usize {
    len * 8 / 5
}

/// Decodes `src` and appends the bytes to `dst`.
///
/// `dst` grows by [`max_decoded_len`] plus one byte first (the fast path
/// writes a pair's second byte even when it decodes one symbol), then is
/// cut to what was decoded; on an error it is left at some length past its
/// old one (the caller truncates it).
pub(crate) fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), &'static str> {
    let start = dst.len();
    dst.resize(start + max_decoded_len(src.len()) + 1, 0);
    // Every code is at least 5 bits, so `o` never passes the bytes the
    // input can decode to, and a write at `o + 1` lands in the spare byte.
    let out = &mut dst[start..];
    let mut o = 0usize;
    // The next input bits, from the top; below the `bits` counted ones it
    // holds zeros or input bits that a refill will OR in again.
    let mut acc: u64 = 0;
    let mut bits: usize = 0;
    let mut pos = 0usize;

    'refill: loop {
        if let Some(word) = src.get(pos..).and_then(|s| s.first_chunk::<8>()) {
            // Whole bytes that fit under the bits held: to 56..=63 bits.
            acc |= u64::from_be_bytes(*word) >> bits;
            pos += (63 - bits) >> 3;
            bits |= 56;
        } else {
            while bits <= 56 {
                let Some(&byte) = src.get(pos) else { break };
                acc |= u64::from(byte) << (56 - bits);
                pos += 1;
                bits += 8;
            }
        }

        while bits >= FAST_BITS {
            let entry = FAST[(acc >> (64 - FAST_BITS)) as usize];
            let used = (entry & 0x3f) as usize;
            if used == 0 {
                // A code longer than FAST_BITS: up to 30 bits, so refill
                // first unless the input is all in.
                if bits < MAX_LEN && pos < src.len() {
                    continue 'refill;
                }
                let (sym, len) = decode_long(acc, bits)?;
                out[o] = sym;
                o += 1;
                acc <<= len;
                bits -= len;
                continue;
            }
            out[o] = (entry >> 8) as u8;
            out[o + 1] = (entry >> 16) as u8;
            o += (entry >> 30) as usize;
            acc <<= used;
            bits -= used;
        }
        if pos >= src.len() {
            break;
        }
    }

    // The input is all in and fewer than FAST_BITS bits are left: the
    // table still decodes them (the bits past the end read as zeros), as
    // long as the codes it finds end within them.
    while bits > 0 {
        let entry = FAST[(acc >> (64 - FAST_BITS)) as usize];
        let len1 = ((entry >> 24) & 0x1f) as usize;
        if len1 == 0 || len1 > bits {
            break;
        }
        out[o] = (entry >> 8) as u8;
        o += 1;
        let both = (entry & 0x3f) as usize;
        if both != len1 && both <= bits {
            out[o] = (entry >> 16) as u8;
            o += 1;
            acc <<= both;
            bits -= both;
        } else {
            acc <<= len1;
            bits -= len1;
        }
    }
    // What is left does not hold a whole code: it must be the padding, the
    // high bits of EOS (at most 7 one-bits).
    if bits > 7 {
        return Err(PADDING_TOO_LONG);
    }
    if bits > 0 && (acc >> (64 - bits)) != (1 << bits) - 1 {
        return Err(PADDING_NOT_ONES);
    }
    dst.truncate(start + o);
    Ok(())
}

/// Decodes the code longer than `FAST_BITS` at the top of `acc`, of which
/// `bits` are input: its symbol and length.
#[cold]
fn decode_long(acc: u64, bits: usize) -> Result<(u8, usize), &'static str> {
    let window = (acc >> 32) as u32;
    let ones = ((!window).leading_zeros() as usize).min(MAX_LEN);
    let c = &CANONICAL;
    // No shorter code starts with as many one-bits: by the canonical order
    // the code's first `len` bits are at least `first[len]`.
    let mut len = usize::from(c.min_len_by_ones[ones]).max(FAST_BITS + 1);
    while len <= MAX_LEN && len <= bits {
        let code = window >> (32 - len);
        let l = len;
        if code < c.limit[l] {
            let at = usize::from(c.base[l]) + code.wrapping_sub(c.first[l]) as usize;
            return match c.sorted.get(at).copied() {
                Some(sym @ 0..=255) => Ok((sym as u8, len)),
                _ => Err(EOS),
            };
        }
        len += 1;
    }
    // The code runs past the end of the input: as padding, too long.
    Err(PADDING_TOO_LONG)
}

/// A Huffman encoder for tests (the crate's encoder never Huffman-codes).
#[cfg(test)]
pub(crate) fn encode(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc: u64 = 0;
    let mut bits = 0;
    for &b in src {
        let (code, len) = CODES[usize::from(b)];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        // Padding: the high bits of EOS, all ones.
        out.push(((acc << (8 - bits)) as u8) | (0xff >> bits));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn decoded(src: &[u8]) -> Result<Vec<u8>, &'static str> {
        // Some bytes in front, to check that decoding appends.
        let mut out = b"x".to_vec();
        decode(src, &mut out)?;
        assert_eq!(out[0], b'x');
        Ok(out.split_off(1))
    }

    /// The slowest decoder there is: match the codes bit by bit against the
    /// input as a string of '0' and '1'.
    fn reference(src: &[u8]) -> Result<Vec<u8>, ()> {
        let codes: Vec<String> = CODES
            .iter()
            .map(|&(code, len)| format!("{code:0len$b}", len = usize::from(len)))
            .collect();
        let bits: String = src.iter().map(|b| format!("{b:08b}")).collect();
        let mut rest = &bits[..];
        let mut out = Vec::new();
        while let Some(sym) = (0..257).find(|&s| rest.starts_with(&codes[s])) {
            if sym == 256 {
                return Err(());
            }
            out.push(sym as u8);
            rest = &rest[codes[sym].len()..];
        }
        if rest.len() > 7 || rest.contains('0') {
            return Err(());
        }
        Ok(out)
    }

    /// xorshift64*: reproducible random bytes without a dependency.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn the_code_table_is_the_rfc_one() {
        // A few rows of RFC 7541 Appendix B, and the code is complete.
        assert_eq!(CODES[usize::from(b' ')], (0x14, 6));
        assert_eq!(CODES[usize::from(b'0')], (0x0, 5));
        assert_eq!(CODES[usize::from(b'A')], (0x21, 6));
        assert_eq!(CODES[usize::from(b'~')], (0x1ffd, 13));
        assert_eq!(CODES[0], (0x1ff8, 13));
        assert_eq!(CODES[255], (0x3ffffee, 26));
        assert_eq!(CODES[256], (0x3fffffff, 30));
        let kraft: f64 = CODES.iter().map(|&(_, l)| 0.5f64.powi(i32::from(l))).sum();
        assert_eq!(kraft, 1.0);
    }

    #[test]
    fn every_symbol_round_trips() {
        for b in 0..=255u8 {
            for len in [1, 2, 3, 7, 8, 9] {
                let s = vec![b; len];
                assert_eq!(decoded(&encode(&s)).unwrap(), s, "byte {b:#x} x {len}");
            }
            // Behind a short code and a long one, so that it starts at
            // other bit offsets.
            for prefix in [&b"a"[..], b"ab", b"abc", b"\xff", b"a\xfe"] {
                let mut s = prefix.to_vec();
                s.push(b);
                s.extend_from_slice(b"xyz");
                assert_eq!(decoded(&encode(&s)).unwrap(), s);
            }
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decoded(&encode(&all)).unwrap(), all);
    }

    #[test]
    fn random_strings_round_trip() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for len in 0..300 {
            let s = rng.bytes(len);
            assert_eq!(decoded(&encode(&s)).unwrap(), s);
            let ascii: Vec<u8> = s.iter().map(|b| b'!' + b % 94).collect();
            assert_eq!(decoded(&encode(&ascii)).unwrap(), ascii);
        }
    }

    #[test]
    fn shortest_codes_fill_the_output_exactly() {
        // '0' has a 5-bit code: the most bytes per input byte.
        for len in 0..100 {
            let s = vec![b'0'; len];
            let e = encode(&s);
            assert!(max_decoded_len(e.len()) >= len);
            assert_eq!(decoded(&e).unwrap(), s);
        }
    }

    #[test]
    fn arbitrary_input_decodes_as_the_reference_decoder_does() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        for round in 0..20_000 {
            let len = (rng.next() % 40) as usize;
            let mut src = rng.bytes(len);
            if round % 2 == 1 {
                // High bytes reach long codes, EOS and long padding.
                src.iter_mut().for_each(|b| *b |= 0xe0);
            }
            assert_eq!(decoded(&src).map_err(|_| ()), reference(&src), "{src:x?}");
        }
    }

    #[test]
    fn rfc_7541_c4_strings_decode() {
        let cases: [(&[u8], &[u8]); 3] = [
            (
                &[
                    0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
                ],
                b"www.example.com",
            ),
            (&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf], b"no-cache"),
            (
                &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf],
                b"custom-value",
            ),
        ];
        for (src, want) in cases {
            assert_eq!(decoded(src).unwrap(), want);
            assert_eq!(encode(want), src);
        }
    }

    #[test]
    fn eos_in_a_string_is_rejected() {
        // 'a' (00011), EOS (30 ones), 'a', padding.
        let mut acc: u64 = 0b00011;
        acc = (acc << 30) | 0x3fff_ffff;
        acc = (acc << 5) | 0b00011;
        acc = (acc << 8) | 0xff;
        // 48 bits: the padding is 8 bits but the EOS comes first.
        let src = &acc.to_be_bytes()[2..];
        assert_eq!(decoded(src), Err(EOS));
        assert_eq!(decoded(&[0xff, 0xff, 0xff, 0xff]), Err(EOS));
        assert_eq!(decoded(&[0xff, 0xff, 0xff, 0xfc]), Err(EOS));
    }

    #[test]
    fn padding_longer_than_7_bits_is_rejected() {
        // "a" is 5 bits: 3 bits of padding make a byte; a byte of ones more.
        assert_eq!(decoded(&[0x1f]).unwrap(), b"a");
        assert_eq!(decoded(&[0x1f, 0xff]), Err(PADDING_TOO_LONG));
        assert_eq!(decoded(&[0xff]), Err(PADDING_TOO_LONG));
        // A long code cut short.
        assert_eq!(decoded(&[0xff, 0xfe]), Err(PADDING_TOO_LONG));
    }

    #[test]
    fn padding_that_is_not_ones_is_rejected() {
        // "a" then 000, and then 101.
        assert_eq!(decoded(&[0x18]), Err(PADDING_NOT_ONES));
        assert_eq!(decoded(&[0x1d]), Err(PADDING_NOT_ONES));
        // "0" is 00000: five zero bits decode, the three after do not pad.
        assert_eq!(decoded(&[0x00]), Err(PADDING_NOT_ONES));
    }
}
