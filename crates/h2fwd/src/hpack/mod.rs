//! HPACK (RFC 7541) for a forwarding proxy: a decoder that keeps a block as
//! the bytes it names ([`crate::Head`]), and an encoder that uses the static
//! table only.

pub mod table;
