//! A lean HTTP/2 layer for a forwarding proxy.
//!
//! # Layout
//! - [`head`]: a header block as the bytes it arrived as.
//! - [`hpack`]: HPACK decoding into a [`Head`], static-table encoding from one.
#![forbid(unsafe_code)]

pub mod head;
pub mod hpack;

pub use head::Head;
