"""Writes the seed inputs of the fuzz targets (fuzz/README.md, "The corpus").

Usage: "$(scripts/python-env)/bin/python" fuzz/seeds.py

corpus/h2_frames/seed-*: what a gRPC client sends after the connection
preface (the target prepends the preface), one small conversation per file;
a frame of the target's PAUSE type makes the client wait for the server to
be idle before it sends the rest. corpus/hpack/seed-*: a byte saying what
the block is (request, response, trailers) and its header-list limit, then a
header block: the examples of RFC 7541 appendix C and a gRPC call's blocks.
Frames are built with hyperframe and header blocks with hpack, the libraries
h2's Python implementation uses, so every seed is valid and a change to a
seed is a change to this script. Idempotent: rewrites the seed-* files,
removes the seed-* files it no longer writes, and leaves the rest of the
corpus alone.
"""

import pathlib
import struct

from hpack import Encoder
from hpack.hpack import encode_integer
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    ExtensionFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"

GRPC_REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/gateway.AliveService/GetStatus"),
    (":authority", "localhost:8080"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
    ("grpc-timeout", "1S"),
    ("user-agent", "grpc-python/1.76.0"),
]
GRPC_RESPONSE = [(":status", "200"), ("content-type", "application/grpc")]
GRPC_TRAILERS = [("grpc-status", "0"), ("grpc-message", "")]
NO_ERROR = 0x0
CANCEL = 0x8
# The h2_frames target's PAUSE frame type (fuzz_targets/h2_frames.rs): the
# client sends what follows once the server is idle; the server never sees it.
PAUSE = ExtensionFrame(0xFA, 0)
# The hpack target's first byte: the kind of block (its value modulo 3) and
# the header-list limit (the proxy's 60 KiB for 0 to 2, else 64 bytes for
# each 3 above that).
REQUEST, RESPONSE, TRAILERS = 0, 1, 2


def message(payload=b""):
    """A gRPC length-prefixed message, uncompressed."""
    return struct.pack(">BI", 0, len(payload)) + payload


def frames(*fs):
    return b"".join(f.serialize() for f in fs)


def settings(**values):
    f = SettingsFrame(0)
    for name, value in values.items():
        f.settings[getattr(SettingsFrame, name)] = value
    return f


def headers(stream_id, block, *flags, **fields):
    return HeadersFrame(stream_id, block, flags=flags, **fields)


def data(stream_id, payload, *flags, **fields):
    return DataFrame(stream_id, payload, flags=flags, **fields)


def h2_frames():
    """The seeds of the h2_frames target, by name."""
    seeds = {}
    hpack = Encoder()
    block = hpack.encode(GRPC_REQUEST)
    opening = (settings(ENABLE_PUSH=0, INITIAL_WINDOW_SIZE=1 << 20), SettingsFrame(0, flags=["ACK"]))

    seeds["grpc_call"] = frames(
        *opening,
        headers(1, block, "END_HEADERS"),
        data(1, message(), "END_STREAM"),
    )

    # The second call's block refers to the first's dynamic table entries.
    seeds["grpc_calls_interleaved"] = frames(
        *opening,
        headers(1, Encoder().encode(GRPC_REQUEST), "END_HEADERS"),
        headers(3, hpack.encode(GRPC_REQUEST), "END_HEADERS"),
        data(3, message(b"\x08\x01"), "END_STREAM"),
        data(1, message(b"\x08\x02"), "END_STREAM"),
    )

    seeds["empty_body"] = frames(*opening, headers(1, block, "END_HEADERS", "END_STREAM"))

    seeds["client_trailers"] = frames(
        *opening,
        headers(1, block, "END_HEADERS"),
        data(1, message(b"\x08\x01")),
        headers(1, Encoder().encode([("grpc-status", "0")]), "END_HEADERS", "END_STREAM"),
    )

    third = len(block) // 3
    continuation = ContinuationFrame(1, data=block[third : 2 * third])
    last = ContinuationFrame(1, data=block[2 * third :], flags=["END_HEADERS"])
    seeds["continuation"] = frames(
        *opening,
        headers(1, block[:third]),
        continuation,
        last,
        data(1, message(), "END_STREAM"),
    )

    seeds["padding"] = frames(
        *opening,
        headers(1, block, "END_HEADERS", "PADDED", pad_length=10),
        data(1, message(b"\x08\x01"), "END_STREAM", "PADDED", pad_length=7),
    )

    seeds["priority"] = frames(
        *opening,
        headers(
            1, block, "END_HEADERS", "PRIORITY", depends_on=0, stream_weight=200, exclusive=True
        ),
        PriorityFrame(3, depends_on=1, stream_weight=15),
        PriorityFrame(1, depends_on=0, stream_weight=255, exclusive=False),
        data(1, message(), "END_STREAM"),
    )

    # A one-byte window: the answer's DATA waits for the WINDOW_UPDATEs.
    seeds["window_update"] = frames(
        settings(INITIAL_WINDOW_SIZE=1, MAX_FRAME_SIZE=16384, HEADER_TABLE_SIZE=0),
        SettingsFrame(0, flags=["ACK"]),
        WindowUpdateFrame(0, window_increment=1 << 20),
        headers(1, block, "END_HEADERS"),
        data(1, message(), "END_STREAM"),
        WindowUpdateFrame(1, window_increment=64),
        WindowUpdateFrame(0, window_increment=64),
    )

    seeds["ping"] = frames(
        *opening,
        PingFrame(0, opaque_data=b"fuzzping"),
        PingFrame(0, opaque_data=b"\0" * 8, flags=["ACK"]),
        headers(1, block, "END_HEADERS"),
        PingFrame(0, opaque_data=b"12345678"),
        data(1, message(), "END_STREAM"),
    )

    seeds["rst_stream"] = frames(
        *opening,
        headers(1, block, "END_HEADERS"),
        data(1, message(b"\x08")[:3]),
        RstStreamFrame(1, error_code=CANCEL),
        headers(3, hpack.encode(GRPC_REQUEST), "END_HEADERS"),
        data(3, message(), "END_STREAM"),
    )

    seeds["goaway"] = frames(
        *opening,
        headers(1, block, "END_HEADERS"),
        data(1, message(), "END_STREAM"),
        GoAwayFrame(0, last_stream_id=1, error_code=0, additional_data=b"bye"),
    )

    # The rest of a call arrives once the server has read its start: a
    # header block whose CONTINUATION comes in a later read, a body whose
    # last DATA does.
    seeds["continuation_later"] = frames(
        *opening,
        headers(1, block[:third]),
        PAUSE,
        ContinuationFrame(1, data=block[third:], flags=["END_HEADERS"]),
        data(1, message(), "END_STREAM"),
    )
    seeds["body_later"] = frames(
        *opening,
        headers(1, block, "END_HEADERS"),
        data(1, message(b"\x08\x01")[:4]),
        PAUSE,
        data(1, message(b"\x08\x01")[4:], "END_STREAM"),
        PAUSE,
        WindowUpdateFrame(0, window_increment=1024),
    )

    # The client's side is complete and it wants no more of the server's
    # (RFC 9113 section 8.1): before the answer, and after it.
    seeds["rst_no_error_after_end_stream"] = frames(
        *opening,
        headers(1, block, "END_HEADERS"),
        data(1, message(), "END_STREAM"),
        RstStreamFrame(1, error_code=NO_ERROR),
        headers(3, hpack.encode(GRPC_REQUEST), "END_HEADERS", "END_STREAM"),
        PAUSE,
        RstStreamFrame(3, error_code=NO_ERROR),
    )

    # GOAWAY once the call was answered, then a new call the server may
    # still take (a client's GOAWAY only says what it will no longer accept).
    seeds["goaway_later"] = frames(
        *opening,
        headers(1, block, "END_HEADERS", "END_STREAM"),
        PAUSE,
        GoAwayFrame(0, last_stream_id=0, error_code=0),
        headers(3, hpack.encode(GRPC_REQUEST), "END_HEADERS", "END_STREAM"),
    )

    # One stream more than the proxy's 100 at once: the last is refused.
    seeds["over_max_concurrent_streams"] = frames(
        *opening,
        headers(1, block, "END_HEADERS"),
        *(headers(2 * i + 3, hpack.encode(GRPC_REQUEST), "END_HEADERS") for i in range(100)),
    )

    # A body longer than its content-length: the stream is reset.
    seeds["content_length_mismatch"] = frames(
        *opening,
        headers(1, Encoder().encode(GRPC_REQUEST + [("content-length", "5")]), "END_HEADERS"),
        data(1, message(b"\x08\x01"), "END_STREAM"),
    )
    return seeds


def literal_without_indexing(name_index, value):
    """RFC 7541 6.2.2, the name from the table, the value raw (hpack's
    Encoder only writes incremental and never-indexed literals)."""
    return bytes(encode_integer(name_index, 4)) + bytes(encode_integer(len(value), 7)) + value


def hpack_blocks():
    """The seeds of the hpack target, by name: RFC 7541 appendix C, the
    first block of each sequence of C.3 to C.6 alone and the whole sequence
    as one block (the table carries over within a block as it does across
    blocks; as one block, it repeats its pseudo-header fields, so it is
    malformed but fills the table), and a gRPC call's blocks."""
    seeds = {}
    seeds["rfc7541_c2_1"] = bytes([TRAILERS]) + Encoder().encode(
        [("custom-key", "custom-header")], huffman=False
    )
    seeds["rfc7541_c2_2"] = bytes([REQUEST]) + literal_without_indexing(4, b"/sample/path")
    seeds["rfc7541_c2_3"] = bytes([TRAILERS]) + Encoder().encode(
        [("password", "secret", True)], huffman=False
    )
    seeds["rfc7541_c2_4"] = bytes([REQUEST]) + Encoder().encode([(":method", "GET")], huffman=False)

    requests = [
        [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")],
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
            ("cache-control", "no-cache"),
        ],
        [
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ],
    ]
    date = "Mon, 21 Oct 2013 20:13:21 GMT"
    location = "https://www.example.com"
    responses = [
        [(":status", "302"), ("cache-control", "private"), ("date", date), ("location", location)],
        [(":status", "307"), ("cache-control", "private"), ("date", date), ("location", location)],
        [
            (":status", "200"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
            ("location", location),
            ("content-encoding", "gzip"),
            ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"),
        ],
    ]
    for name, kind, sequence, huffman, table_size in [
        ("rfc7541_c3", REQUEST, requests, False, 4096),
        ("rfc7541_c4", REQUEST, requests, True, 4096),
        # C.5 and C.6 run with a 256-byte table: entries are evicted. The
        # block opens with that table size update.
        ("rfc7541_c5", RESPONSE, responses, False, 256),
        ("rfc7541_c6", RESPONSE, responses, True, 256),
    ]:
        encoder = Encoder()
        encoder.header_table_size = table_size
        blocks = [encoder.encode(h, huffman=huffman) for h in sequence]
        seeds[f"{name}_1"] = bytes([kind]) + blocks[0]
        seeds[name] = bytes([kind]) + b"".join(blocks)

    seeds["grpc_request"] = bytes([REQUEST]) + Encoder().encode(GRPC_REQUEST)
    seeds["grpc_request_raw"] = bytes([REQUEST]) + Encoder().encode(GRPC_REQUEST, huffman=False)
    # The same request under a 256-byte header-list limit, which it is over.
    seeds["grpc_request_over_limit"] = bytes([3 * 4 + REQUEST]) + Encoder().encode(GRPC_REQUEST)
    seeds["grpc_response"] = bytes([RESPONSE]) + Encoder().encode(GRPC_RESPONSE)
    seeds["grpc_trailers"] = bytes([TRAILERS]) + Encoder().encode(GRPC_TRAILERS)
    return seeds


def main():
    for target, seeds in [("h2_frames", h2_frames()), ("hpack", hpack_blocks())]:
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for name, content in seeds.items():
            (directory / f"seed-{name}").write_bytes(content)
        for stale in directory.glob("seed-*"):
            if stale.name.removeprefix("seed-") not in seeds:
                stale.unlink()
        print(f"seeds: {len(seeds)} in {directory.relative_to(CORPUS.parent.parent)}")


if __name__ == "__main__":
    main()
