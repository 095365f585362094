//! HPACK (RFC 7541) for a forwarding proxy: a decoder that keeps a block as
//! the bytes it names ([`crate::Head`]), and an encoder that uses the static
//! table only.
//!
//! # Layout
//! - [`decoder`]: header block to [`crate::Head`], with the dynamic table and
//!   the RFC 9113 section 8 checks a received block must pass.
//! - [`encoder`]: [`crate::Head`] to header block, static table only, no
//!   state.
//! - `huffman`: the string decoder (the encoder never Huffman-codes).
//! - [`table`]: the static table.

pub mod decoder;
pub mod encoder;
mod huffman;
pub mod table;

pub use decoder::{DecodeError, Decoder};
pub use encoder::{encode, encode_size_update};

/// What a header block is: it decides which pseudo-header fields it must,
/// may and must not carry (RFC 9113 sections 8.1 and 8.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A request head: `:method`, `:scheme`, `:authority`, `:path`.
    Request,
    /// A response head (final or informational): `:status`.
    Response,
    /// A trailer block: no pseudo-header field.
    Trailers,
}
