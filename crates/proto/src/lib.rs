//! Generated gRPC code for the project's protos.
//!
//! # Layout
//! - [`gateway`]: `AliveService` (what `GET /alive` calls) and `EchoService`
//!   (all four call kinds, for tests and demos).
//! - [`helloworld`]: the standard `Greeter` example service.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for server reflection.

#![allow(clippy::all, missing_docs)]

/// Package `gateway`: `AliveService` and `EchoService`.
pub mod gateway {
    tonic::include_proto!("gateway");
}

/// Package `helloworld`: the standard gRPC `Greeter` example.
pub mod helloworld {
    tonic::include_proto!("helloworld");
}

/// The encoded `FileDescriptorSet` of every proto above, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
