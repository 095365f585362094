//! A lean HTTP/2 layer for a forwarding proxy.
//!
//! A proxy reads a few fields of each request and passes everything else
//! on; this layer is built for that. A header block is kept as the bytes it
//! named ([`Head`]) and encoded again from the static table only; a frame is
//! written straight into its connection's output buffer by whoever sends it;
//! each stream has one handle ([`StreamRef`]) used from both directions of
//! a call. RFC 9113 and RFC 7541 are followed in full on what is received:
//! every frame checked, both levels of flow control, the limits that protect
//! a server (rapid reset, CONTINUATION floods, HPACK bombs, floods of frames
//! that must be answered).
//!
//! # Layout
//! - [`frame`]: frame heads and payloads, checked as RFC 9113 asks; writers.
//! - [`error`]: error codes, and how a stream or connection ended.
//! - [`head`]: a header block as the bytes it arrived as.
//! - [`hpack`]: HPACK decoding into a [`Head`], static-table encoding from one.
//! - `conn`: a connection's streams, flow control and output, under one lock.
//! - `driver`: the task side: writes the output, reads and dispatches frames.
//! - [`stream`]: the handle of a stream.
//! - [`server`], [`client`]: the two ends' entry points.
#![forbid(unsafe_code)]

pub mod client;
mod conn;
mod driver;
pub mod error;
pub mod frame;
pub mod head;
pub mod hpack;
pub mod server;
pub mod stream;

pub use conn::Config;
pub use error::{Error, Initiator, Reason};
pub use head::Head;
pub use stream::{PingPong, StreamRef};
