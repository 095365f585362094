//! HPACK: the input is one header block from a peer. It is decoded with a
//! 4096-byte table and the proxy's header-list limit; when it decodes, our
//! fork's encoders must give the same headers back, in order
//! (h2's `fuzz_bridge::fuzz_logic::hpack_round_trip`).

#![no_main]

use libfuzzer_sys::fuzz_target;

/// The proxy's `max_header_list_size` (crates/proxy/src/server.rs).
const MAX_HEADER_LIST: usize = 60 << 10;

fuzz_target!(|block: &[u8]| {
    h2::fuzz_bridge::fuzz_logic::hpack_round_trip(block, MAX_HEADER_LIST);
});
