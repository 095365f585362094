//! A lean HTTP/2 layer for a forwarding proxy.
//!
//! # Layout
//! - [`frame`]: frame heads and payloads, checked as RFC 9113 asks; writers.
//! - [`error`]: error codes, and how a stream or connection ended.
//! - [`head`]: a header block as the bytes it arrived as.
//! - [`hpack`]: HPACK decoding into a [`Head`], static-table encoding from one.
#![forbid(unsafe_code)]

pub mod error;
pub mod frame;
pub mod head;
pub mod hpack;

pub use error::{Error, Initiator, Reason};
pub use head::Head;
