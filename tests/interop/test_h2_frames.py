"""HTTP/2 frame-layer conformance of the proxy's client-facing listener.

Each test opens a fresh cleartext connection to a real proxy that forwards
real gRPC calls (`gateway.EchoService/Echo`) to a real backend, writes the
frames by hand on a raw socket (`hyperframe` builds and parses frames,
`hpack` encodes and decodes header blocks; malformed frames are written byte
by byte) and waits, with a deadline, for the frames RFC 9113 (HTTP/2) and
RFC 7541 (HPACK) require of a server in answer: SETTINGS, PING, flow control
on both levels, GOAWAY, RST_STREAM, CONTINUATION, padding, PRIORITY, header
size limits and frame sizes. The proxy's own limits are those of
docs/proxy.md (request header blocks of at most 60 KiB, refused on their
stream beyond; windows of 1 MiB per stream and 4 MiB per connection) and
docs/operations.md (the premature-reset rule, client PINGs). Tests that
need the proxy not to read a request body send it to a host that accepts
TCP connections and never answers.

A failing test prints the frames its connection received.
"""

import itertools
import os
import select
import signal
import socket
import struct
import tempfile
import time
import unittest

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

import harness

harness.load_stubs()
from gateway import echo_pb2  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ECHO_PATH = "/gateway.EchoService/Echo"

# Frame types and flags (RFC 9113 section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20

# SETTINGS parameters (RFC 9113 section 6.5.2).
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

# Error codes (RFC 9113 section 7).
ERRORS = (
    "NO_ERROR PROTOCOL_ERROR INTERNAL_ERROR FLOW_CONTROL_ERROR SETTINGS_TIMEOUT STREAM_CLOSED "
    "FRAME_SIZE_ERROR REFUSED_STREAM CANCEL COMPRESSION_ERROR CONNECT_ERROR ENHANCE_YOUR_CALM "
    "INADEQUATE_SECURITY HTTP_1_1_REQUIRED"
).split()
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR = 0x0, 0x1, 0x3, 0x6
CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x8, 0x9, 0xB

DEFAULT_WINDOW = 65535  # RFC 9113 section 6.9.2
MAX_WINDOW = 2**31 - 1
DEFAULT_MAX_FRAME = 16384  # RFC 9113 section 6.5.2


def error_name(code):
    return ERRORS[code] if code < len(ERRORS) else hex(code)


def raw_frame(kind, flags, stream, payload=b""):
    """A frame exactly as given: no check of its length, flags or stream."""
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def raw_settings(values, flags=0, stream=0):
    """A SETTINGS frame with any values, valid or not."""
    return raw_frame(
        SETTINGS, flags, stream, b"".join(struct.pack(">HI", k, v) for k, v in values.items())
    )


def hpack_int(value, prefix_bits, first_byte):
    """An HPACK integer (RFC 7541 section 5.1) with the high bits of its first byte."""
    encoded = hpack.hpack.encode_integer(value, prefix_bits)
    encoded[0] |= first_byte
    return bytes(encoded)


def hpack_string(data):
    return hpack_int(len(data), 7, 0x00) + data


def literal(name, value, indexing=False):
    """A literal field with a literal name, not Huffman-coded: without
    indexing (RFC 7541 section 6.2.2), or with incremental indexing (6.2.1)."""
    return (b"\x40" if indexing else b"\x00") + hpack_string(name) + hpack_string(value)


def indexed(index):
    """An indexed field (RFC 7541 section 6.1)."""
    return hpack_int(index, 7, 0x80)


def request_headers(authority, extra=()):
    """An Echo call's request header fields."""
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", ECHO_PATH),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *extra,
    ]


def grpc_message(message):
    """A protobuf message as gRPC frames it: flag byte, 4-byte length, bytes."""
    payload = message.SerializeToString()
    return struct.pack(">BI", 0, len(payload)) + payload


def echo_request(message="frames", delay_ms=0):
    return grpc_message(echo_pb2.EchoRequest(message=message, delay_ms=delay_ms))


def describe(frame):
    """One received frame on one line, for failure messages."""
    if isinstance(frame, (HeadersFrame, ContinuationFrame)):
        text = f"{type(frame).__name__}(stream_id={frame.stream_id}, flags={sorted(frame.flags)})"
        if frame.headers is not None:
            text += f" headers={frame.headers}"
        return text
    text = repr(frame)
    if len(text) > 160:
        text = text[:157] + "..."
    if isinstance(frame, (GoAwayFrame, RstStreamFrame)):
        text += f" [{error_name(frame.error_code)}]"
    return text


class Response:
    """What one stream received: the head, the DATA bytes, the trailers, a reset."""

    def __init__(self, frames, stream):
        self.head, self.trailers, self.reset = None, None, None
        self.data = b""
        self.ended = False
        for frame in frames:
            if frame.stream_id != stream:
                continue
            if isinstance(frame, HeadersFrame):
                if self.head is None:
                    self.head = dict(frame.headers or [])
                else:
                    self.trailers = dict(frame.headers or [])
                self.ended |= "END_STREAM" in frame.flags
            elif isinstance(frame, DataFrame):
                self.data += frame.data
                self.ended |= "END_STREAM" in frame.flags
            elif isinstance(frame, RstStreamFrame):
                self.reset = frame.error_code

    def grpc_status(self):
        """grpc-status from the trailers, or from a trailers-only head."""
        for block in (self.trailers, self.head):
            if block and "grpc-status" in block:
                return block["grpc-status"]
        return None

    def messages(self):
        """The gRPC messages of the body, as EchoReply."""
        out, at = [], 0
        while at + 5 <= len(self.data):
            length = struct.unpack(">I", self.data[at + 1 : at + 5])[0]
            reply = echo_pb2.EchoReply()
            reply.ParseFromString(self.data[at + 5 : at + 5 + length])
            out.append(reply)
            at += 5 + length
        return out


class Client:
    """One HTTP/2 client connection, frame by frame, on a raw socket.

    It sends the preface and its SETTINGS (or `raw` bytes instead),
    acknowledges the server's SETTINGS and (unless told not to) PINGs as
    RFC 9113 requires, and keeps every frame it receives, in order, header
    blocks decoded with its own HPACK decoder. Everything else is sent by
    the test.
    """

    def __init__(self, addr, settings=None, raw=None, answer_pings=True):
        self.answer_pings = answer_pings
        host, port = addr.rsplit(":", 1)
        self.authority = addr
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.frames = []
        self.closed = None  # "FIN" or "RST" once reading found the connection ended
        self.write_failed = False
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder(max_header_list_size=1 << 24)
        self.block = None  # [first frame, fragments] of a header block being received
        self.next_stream = 1
        self.pings = itertools.count()
        self.send(
            PREFACE + (raw if raw is not None else SettingsFrame(0, settings or {}).serialize())
        )

    def close(self):
        self.sock.close()

    # Sending.

    def send(self, *frames):
        """Writes frames (hyperframe objects or bytes) in one write. A
        connection the proxy has already closed is noted, not raised: what
        it sent before (its GOAWAY) is still to be read, and the test then
        sees the close where it waits."""
        data = b"".join(f if isinstance(f, (bytes, bytearray)) else f.serialize() for f in frames)
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.write_failed = True

    def stream(self):
        """The next client stream id."""
        stream = self.next_stream
        self.next_stream += 2
        return stream

    def request_headers(self, extra=()):
        return request_headers(self.authority, extra)

    def headers(self, stream, end_stream=False, extra=(), **kwargs):
        """A HEADERS frame (END_HEADERS) for an Echo call, from this
        connection's HPACK encoder."""
        flags = ["END_HEADERS"] + (["END_STREAM"] if end_stream else [])
        flags += kwargs.pop("flags", [])
        block = self.encoder.encode(self.request_headers(extra=extra))
        return HeadersFrame(stream, block, flags=flags, **kwargs)

    def call(self, message="frames", delay_ms=0, extra=()):
        """Opens an Echo call and sends its whole request; the stream id."""
        stream = self.stream()
        body = echo_request(message, delay_ms)
        chunks = [body[i : i + DEFAULT_MAX_FRAME] for i in range(0, len(body), DEFAULT_MAX_FRAME)]
        frames = [DataFrame(stream, chunk) for chunk in chunks]
        frames[-1].flags.add("END_STREAM")
        self.send(self.headers(stream, extra=extra), *frames)
        return stream

    # Receiving.

    def pump(self, timeout):
        """Reads what arrives within `timeout` seconds (one read at most)."""
        if self.closed:
            return
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(1 << 20)
        except (socket.timeout, BlockingIOError):
            return
        except ConnectionResetError:
            self.closed = "RST"
            return
        if not data:
            self.closed = "FIN"
            return
        self.buffer += data
        self.parse()

    def parse(self):
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                return
            head, body = bytes(self.buffer[:9]), bytes(self.buffer[9 : 9 + length])
            del self.buffer[: 9 + length]
            frame, _ = Frame.parse_frame_header(memoryview(head))
            try:
                frame.parse_body(memoryview(body))
            except Exception as e:  # hyperframe's own errors: a malformed frame from the proxy
                raise AssertionError(
                    f"the proxy sent a malformed frame {head.hex()} {body[:64].hex()}: {e}\n"
                    + self.log()
                )
            frame.headers = None
            frame.length = length
            self.frames.append(frame)
            self.on_frame(frame)

    def on_frame(self, frame):
        if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
            self.send(SettingsFrame(0, flags=["ACK"]))
        elif isinstance(frame, PingFrame) and "ACK" not in frame.flags and self.answer_pings:
            self.send(PingFrame(0, frame.opaque_data, flags=["ACK"]))
        if isinstance(frame, HeadersFrame):
            self.block = [frame, [frame.data]]
        elif isinstance(frame, ContinuationFrame) and self.block:
            self.block[1].append(frame.data)
        if isinstance(frame, (HeadersFrame, ContinuationFrame)) and "END_HEADERS" in frame.flags:
            first, fragments = self.block
            self.block = None
            first.block = b"".join(fragments)
            try:
                first.headers = list(self.decoder.decode(first.block))
            except hpack.HPACKError as e:
                raise AssertionError(
                    f"the proxy sent a header block we cannot decode: {e}\n{self.log()}"
                )

    def wait_for(self, what, predicate, timeout=5):
        """The first frame received (from the start) for which `predicate`
        holds, waiting for it until the deadline; fails with the frames received."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for frame in self.frames[checked:]:
                if predicate(frame):
                    return frame
            checked = len(self.frames)
            if self.closed:
                raise AssertionError(
                    f"{what}: the connection was closed ({self.closed}) first\n{self.log()}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what}: not within {timeout}s\n{self.log()}")
            self.pump(left)

    def wait_until(self, what, condition, timeout=5):
        """Reads until `condition()` holds; fails with the frames received."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.closed:
                raise AssertionError(
                    f"{what}: the connection was closed ({self.closed}) first\n{self.log()}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what}: not within {timeout}s\n{self.log()}")
            self.pump(left)

    def wait_closed(self, what, timeout=5):
        deadline = time.monotonic() + timeout
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{what}: the connection still open after {timeout}s\n{self.log()}"
                )
            self.pump(left)

    def read_for(self, seconds):
        """Reads whatever arrives for `seconds`: to show that something does
        not arrive (a frame that would break flow control), never to wait."""
        deadline = time.monotonic() + seconds
        while not self.closed and time.monotonic() < deadline:
            self.pump(deadline - time.monotonic())

    def handshake(self):
        """Waits for the server's SETTINGS and for the ACK of ours: the
        server applies our settings to what it sends from then on. The
        server's settings."""
        settings = self.wait_for(
            "the server's SETTINGS", lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags
        )
        self.wait_for(
            "our SETTINGS acknowledged", lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags
        )
        return settings.settings

    def ping_roundtrip(self, timeout=5):
        """Sends a PING and waits for its ACK: the server has processed every
        frame sent before it."""
        opaque = struct.pack(">Q", 0x6832_0000_0000_0000 + next(self.pings))
        self.send(PingFrame(0, opaque))
        self.wait_for(
            "PING acknowledged",
            lambda f: isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == opaque,
            timeout,
        )

    def response(self, stream, timeout=10):
        """Waits until `stream` ended (END_STREAM or RST_STREAM); its Response."""
        self.wait_until(
            f"stream {stream} ended",
            lambda: (r := Response(self.frames, stream)).ended or r.reset is not None,
            timeout,
        )
        return Response(self.frames, stream)

    def data_received(self, stream=None):
        """The flow-controlled length of the DATA received (padding
        included), on `stream` or on all streams."""
        return sum(
            f.flow_controlled_length
            for f in self.frames
            if isinstance(f, DataFrame) and (stream is None or f.stream_id == stream)
        )

    def of(self, kind, stream=None):
        return [
            f
            for f in self.frames
            if isinstance(f, kind) and (stream is None or f.stream_id == stream)
        ]

    def flood(self, chunk, limit, seconds, read=True):
        """Writes `chunk` over and over without waiting for anything, until
        the proxy ends the connection ("closed"; with `read`, also once a
        GOAWAY arrives: "goaway"), stops reading for a second ("stalled"),
        `limit` bytes are written ("limit") or `seconds` pass ("time").
        With `read`, what the proxy sends is read meanwhile. The bytes the
        kernel took, and why it stopped."""
        self.sock.setblocking(False)
        sent, pending = 0, memoryview(chunk)
        deadline = time.monotonic() + seconds
        progress = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if self.closed:
                    return sent, "closed"
                if read and self.of(GoAwayFrame):
                    return sent, "goaway"
                if sent >= limit:
                    return sent, "limit"
                if now >= deadline:
                    return sent, "time"
                if now - progress > 1.0:
                    return sent, "stalled"
                readable, writable, _ = select.select(
                    [self.sock] if read else [], [self.sock], [], 0.05
                )
                if readable:
                    self.pump(0)
                    self.sock.setblocking(False)
                if writable:
                    try:
                        n = self.sock.send(pending)
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, ConnectionResetError):
                        self.write_failed = True
                        return sent, "closed"
                    sent += n
                    progress = now
                    pending = pending[n:] if n < len(pending) else memoryview(chunk)
        finally:
            self.sock.setblocking(True)

    def log(self, last=80):
        lines = [f"  {i}: {describe(f)}" for i, f in enumerate(self.frames)]
        if len(lines) > last:
            lines = lines[:10] + [f"  ... {len(lines) - last} frames ..."] + lines[-(last - 10) :]
        closed = f"closed by the proxy ({self.closed})" if self.closed else "still open"
        return f"frames received ({len(self.frames)}, connection {closed}):\n" + "\n".join(lines)


class ClassScope:
    """harness.started for a class: its cleanup runs once the class is done."""

    def __init__(self, cls):
        self.addCleanup = cls.addClassCleanup


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class H2Frames(unittest.TestCase):
    """The proxy's downstream HTTP/2 listener, frame by frame."""

    @classmethod
    def setUpClass(cls):
        cls.backend = harness.started(ClassScope(cls), harness.backend, "h2-frames")

    def setUp(self):
        self._proxy = None

    # Processes and connections.

    def proxy(self):
        """The test's proxy in front of the backend (started on first use)."""
        if self._proxy is None:
            self._proxy = harness.started(self, harness.proxy, [self.backend.addr])
        return self._proxy

    def proxy_with(self, upstreams, *flags, config=None):
        """A proxy of the test's own: flags, or a YAML config (with `{upstreams}`)."""
        if config is not None:
            fd, path = tempfile.mkstemp(prefix="interop-h2-frames-", suffix=".yaml")
            with os.fdopen(fd, "w") as f:
                f.write(config.format(upstreams=", ".join(upstreams)))
            self.addCleanup(os.remove, path)
            args = ["--config", path, "--admin", "off", "--access-log", "off", *flags]
            return harness.started(self, harness.Process, "proxy", args, r"listening.*addr=(\S+)")
        return harness.started(self, harness.proxy, upstreams, *flags)

    def blackhole(self):
        """An address that completes TCP handshakes and never says a word: a
        host the proxy keeps connecting to, so that a call's request body is
        never read by the proxy (nothing gives its window back)."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        self.addCleanup(sock.close)
        return "%s:%d" % sock.getsockname()

    def client(self, settings=None, addr=None, raw=None, answer_pings=True):
        """A new connection; `raw`: bytes sent after the preface instead of our SETTINGS."""
        client = Client(addr or self.proxy().addr, settings, raw, answer_pings)
        self.addCleanup(client.close)
        return client

    # Assertions.

    def assert_echoed(self, client, stream, message="frames"):
        """`stream` is an Echo call answered 200, grpc-status 0, with `message`."""
        response = client.response(stream)
        detail = f"stream {stream}\n{client.log()}"
        self.assertIsNone(response.reset, f"reset {error_name(response.reset or 0)}: {detail}")
        self.assertEqual(response.head.get(":status"), "200", detail)
        self.assertEqual(response.grpc_status(), "0", detail)
        replies = response.messages()
        self.assertEqual([r.message for r in replies], [message], detail)
        return response

    def assert_each_is_connection_error(self, kind, cases, before=None):
        """Each `(name, frame, code)` case on a fresh connection after the
        handshake: the frame is answered with GOAWAY(`code`) and the close.
        `before(client, name)`, when given, runs before the frame is sent."""
        for name, frame, code in cases:
            with self.subTest(name):
                client = self.client()
                client.handshake()
                if before:
                    before(client, name)
                client.send(frame)
                self.assert_connection_error(client, code, f"{kind} {name}")

    def assert_connection_error(self, client, code, what):
        """GOAWAY(`code`), then the close (RFC 9113 section 5.4.1: after a
        GOAWAY for an error the endpoint MUST close the TCP connection)."""
        goaway = client.wait_for(
            f"{what}: GOAWAY {error_name(code)}", lambda f: isinstance(f, GoAwayFrame)
        )
        self.assertEqual(
            error_name(goaway.error_code),
            error_name(code),
            f"{what}: GOAWAY with the wrong code\n{client.log()}",
        )
        client.wait_closed(f"{what}: the close after GOAWAY")
        return goaway

    def assert_stream_error(self, client, stream, code, what):
        """RST_STREAM(`code`) on `stream`, or the connection error of that
        code (RFC 9113 section 5.4.1: an endpoint may treat a stream error as
        a connection error). The frame that said so."""
        frame = client.wait_for(
            f"{what}: RST_STREAM {error_name(code)} on stream {stream} (or GOAWAY)",
            lambda f: isinstance(f, GoAwayFrame)
            or (isinstance(f, RstStreamFrame) and f.stream_id == stream),
        )
        self.assertEqual(
            error_name(frame.error_code),
            error_name(code),
            f"{what}: wrong error code\n{client.log()}",
        )
        if isinstance(frame, GoAwayFrame):
            client.wait_closed(f"{what}: the close after GOAWAY")
        return frame

    def assert_no_goaway(self, client, what):
        self.assertEqual(client.of(GoAwayFrame), [], f"{what}\n{client.log()}")
        self.assertIsNone(client.closed, f"{what}\n{client.log()}")

    def assert_other_client_works(self, addr=None):
        """A call on a new connection is answered."""
        other = self.client(addr=addr)
        other.handshake()
        self.assert_echoed(other, other.call("still here"), "still here")

    # SETTINGS (RFC 9113 section 6.5).

    def test_settings_the_servers_settings_come_first(self):
        """The server's first frame is its own SETTINGS (not an ACK) on stream
        0 (section 3.4), with the documented limits: 100 streams, a 1 MiB
        stream window, a 60 KiB header list, never ENABLE_PUSH 1; then a
        WINDOW_UPDATE on stream 0 opens the connection window to 4 MiB."""
        client = self.client()
        first = client.wait_for("the first frame", lambda f: True)
        self.assertIsInstance(first, SettingsFrame, client.log())
        self.assertNotIn("ACK", first.flags, client.log())
        self.assertEqual(first.stream_id, 0)
        settings = first.settings
        self.assertEqual(settings.get(MAX_CONCURRENT_STREAMS), 100, settings)
        self.assertEqual(settings.get(INITIAL_WINDOW_SIZE), 1 << 20, settings)
        self.assertEqual(settings.get(MAX_HEADER_LIST_SIZE), 60 << 10, settings)
        self.assertNotEqual(settings.get(ENABLE_PUSH), 1, "a server MUST NOT send ENABLE_PUSH 1")
        self.assertGreaterEqual(settings.get(MAX_FRAME_SIZE, DEFAULT_MAX_FRAME), DEFAULT_MAX_FRAME)
        update = client.wait_for(
            "the connection window opened",
            lambda f: isinstance(f, WindowUpdateFrame) and f.stream_id == 0,
        )
        self.assertEqual(DEFAULT_WINDOW + update.window_increment, 4 << 20, client.log())

    def test_settings_are_acknowledged(self):
        """Each SETTINGS of ours gets one empty SETTINGS ACK: the first (with
        an unknown identifier, which MUST be ignored), a later one and an
        empty one; calls work afterwards."""
        client = self.client(
            {
                HEADER_TABLE_SIZE: 4096,
                ENABLE_PUSH: 0,
                INITIAL_WINDOW_SIZE: 65535,
                MAX_FRAME_SIZE: 16384,
                MAX_HEADER_LIST_SIZE: 1 << 16,
                0xF0: 7,
            }
        )
        client.handshake()
        client.send(SettingsFrame(0, {MAX_CONCURRENT_STREAMS: 10}), SettingsFrame(0, {}))

        def acks():
            return [f for f in client.of(SettingsFrame) if "ACK" in f.flags]

        client.wait_until("three SETTINGS ACKs", lambda: len(acks()) == 3)
        client.ping_roundtrip()
        self.assertEqual(len(acks()), 3, client.log())
        self.assertTrue(all(f.length == 0 and f.stream_id == 0 for f in acks()), client.log())
        self.assert_echoed(client, client.call())

    def test_settings_invalid_values_are_connection_errors(self):
        """ENABLE_PUSH 2 and MAX_FRAME_SIZE below 2^14 or above 2^24-1 give
        GOAWAY(PROTOCOL_ERROR), INITIAL_WINDOW_SIZE above 2^31-1
        GOAWAY(FLOW_CONTROL_ERROR) (section 6.5.2), in the preface's SETTINGS
        and in a later one."""
        cases = [
            ("ENABLE_PUSH=2", {ENABLE_PUSH: 2}, PROTOCOL_ERROR),
            ("INITIAL_WINDOW_SIZE=2^31", {INITIAL_WINDOW_SIZE: 2**31}, FLOW_CONTROL_ERROR),
            ("INITIAL_WINDOW_SIZE=2^32-1", {INITIAL_WINDOW_SIZE: 2**32 - 1}, FLOW_CONTROL_ERROR),
            ("MAX_FRAME_SIZE=16383", {MAX_FRAME_SIZE: 16383}, PROTOCOL_ERROR),
            ("MAX_FRAME_SIZE=2^24", {MAX_FRAME_SIZE: 2**24}, PROTOCOL_ERROR),
        ]
        for name, values, code in cases:
            for where in ("preface", "later"):
                with self.subTest(setting=name, where=where):
                    if where == "preface":
                        client = self.client(raw=raw_settings(values))
                    else:
                        client = self.client()
                        client.handshake()
                        client.send(raw_settings(values))
                    self.assert_connection_error(client, code, f"SETTINGS {name} ({where})")

    def test_settings_malformed_frames_are_connection_errors(self):
        """A SETTINGS whose length is not a multiple of 6, or an ACK with a
        payload, is a FRAME_SIZE_ERROR; SETTINGS on a stream other than 0 is
        a PROTOCOL_ERROR (section 6.5)."""
        cases = [
            ("length 5", raw_frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00"), FRAME_SIZE_ERROR),
            (
                "length 7",
                raw_frame(SETTINGS, 0, 0, struct.pack(">HI", 3, 10) + b"\x00"),
                FRAME_SIZE_ERROR,
            ),
            (
                "ACK with a payload",
                raw_settings({MAX_CONCURRENT_STREAMS: 10}, flags=ACK),
                FRAME_SIZE_ERROR,
            ),
            ("on stream 1", raw_settings({MAX_CONCURRENT_STREAMS: 10}, stream=1), PROTOCOL_ERROR),
        ]
        self.assert_each_is_connection_error("SETTINGS", cases)

    # PING (section 6.7).

    def test_ping_is_acknowledged_with_its_payload(self):
        """A PING gets a PING ACK on stream 0 with the same 8 bytes; a PING
        ACK of ours is not answered (MUST NOT respond)."""
        client = self.client()
        client.handshake()
        client.send(PingFrame(0, b"unasked!", flags=["ACK"]), PingFrame(0, b"h2frames"))
        ack = client.wait_for(
            "the PING ACK", lambda f: isinstance(f, PingFrame) and "ACK" in f.flags
        )
        self.assertEqual(ack.opaque_data, b"h2frames", client.log())
        self.assertEqual(ack.stream_id, 0)
        client.ping_roundtrip()
        echoed = [f for f in client.of(PingFrame) if f.opaque_data == b"unasked!"]
        self.assertEqual(echoed, [], f"a PING ACK was answered\n{client.log()}")

    def test_ping_malformed_frames_are_connection_errors(self):
        """A PING on a stream other than 0 is a PROTOCOL_ERROR, a PING whose
        length is not 8 a FRAME_SIZE_ERROR (section 6.7)."""
        cases = [
            ("on stream 1", raw_frame(PING, 0, 1, b"12345678"), PROTOCOL_ERROR),
            ("length 7", raw_frame(PING, 0, 0, b"1234567"), FRAME_SIZE_ERROR),
            ("length 9", raw_frame(PING, 0, 0, b"123456789"), FRAME_SIZE_ERROR),
        ]
        self.assert_each_is_connection_error("PING", cases)

    def test_ping_flood_is_bounded_and_costs_others_nothing(self):
        """PINGs written as fast as the socket takes them by a client that
        never reads: the proxy does not queue their ACKs without bound (it
        stops reading, or closes the connection: the flooder can write at
        most a few MiB of socket buffers, and the proxy's memory stays flat),
        it ends the connection (here with client PINGs every 1 s, timeout
        1 s: docs/operations.md's unanswered-PING rule; with the default 60 s
        the connection just stalls that long), and another client's calls
        work meanwhile."""
        proxy = self.proxy_with(
            [self.backend.addr],
            config="""\
listeners:
  - name: ingress
    address: 127.0.0.1:0
    cluster: backend
    keepalive_interval: 1s
    keepalive_timeout: 1s
clusters:
  - name: backend
    upstreams: [{upstreams}]
""",
        )
        # A dead client: it neither reads nor (once read) answers the proxy's PINGs.
        flooder = self.client(addr=proxy.addr, answer_pings=False)
        flooder.handshake()
        before = rss_kib(proxy.proc.pid)
        pings = b"".join(PingFrame(0, struct.pack(">Q", i)).serialize() for i in range(4096))
        sent, why = flooder.flood(pings, limit=256 << 20, seconds=10, read=False)
        after = rss_kib(proxy.proc.pid)
        self.assert_other_client_works(proxy.addr)
        # What the proxy sent: ACKs, then its GOAWAY or the close.
        deadline = time.monotonic() + 10
        while not flooder.closed and time.monotonic() < deadline:
            flooder.pump(deadline - time.monotonic())
        acks = sum(1 for f in flooder.of(PingFrame) if "ACK" in f.flags)
        goaways = [error_name(f.error_code) for f in flooder.of(GoAwayFrame)]
        print(
            f"\nPING flood: {sent / 1e6:.1f} MB ({sent // 17} PINGs) written, then {why}; "
            f"proxy RSS {before} -> {after} KiB; {acks} ACKs read back, GOAWAY {goaways}, "
            f"then the connection {flooder.closed or 'still open'}"
        )
        self.assertIn(
            why, ("stalled", "closed"), f"the proxy took {sent} bytes of PINGs and kept reading"
        )
        self.assertLess(sent, 64 << 20, "more than socket buffers were taken")
        self.assertLess(after - before, 32 << 10, "the proxy's memory grew with the flood")
        self.assertIsNotNone(
            flooder.closed, f"the flooding connection was not ended\n{flooder.log()}"
        )
        self.assertLessEqual(set(goaways), {"ENHANCE_YOUR_CALM", "NO_ERROR"}, flooder.log())

    # Flow control (section 5.2, 6.9).

    def test_flow_control_stream_window_holds_the_answer(self):
        """With INITIAL_WINDOW_SIZE 16 the answer's DATA stops at 16 bytes
        (the head needs no window) until a WINDOW_UPDATE on the stream; 16
        more bytes for an increment of 16; the rest after a large one."""
        client = self.client({INITIAL_WINDOW_SIZE: 16})
        client.handshake()
        message = "w" * 200
        stream = client.call(message)
        client.wait_for(
            "the answer's head", lambda f: isinstance(f, HeadersFrame) and f.stream_id == stream
        )
        for granted in (16, 32):
            client.wait_until(
                f"{granted} DATA bytes", lambda: client.data_received(stream) >= granted
            )
            client.ping_roundtrip()
            client.read_for(0.3)
            self.assertEqual(
                client.data_received(stream),
                granted,
                f"DATA beyond the stream window\n{client.log()}",
            )
            client.send(WindowUpdateFrame(stream, 16 if granted == 16 else 1 << 20))
        self.assert_echoed(client, stream, message)

    def test_flow_control_connection_window_holds_the_answers(self):
        """The connection window (65,535: SETTINGS cannot change it) holds
        two answers of 40 kB, on streams whose windows are 1 MiB, to 65,535
        DATA bytes in all until a WINDOW_UPDATE on stream 0; DATA frames stay
        within our 16,384-byte MAX_FRAME_SIZE."""
        client = self.client({INITIAL_WINDOW_SIZE: 1 << 20})
        client.handshake()
        streams = [client.call("a" * 40000), client.call("b" * 40000)]
        client.wait_until("65,535 DATA bytes", lambda: client.data_received() >= DEFAULT_WINDOW)
        client.ping_roundtrip()
        client.read_for(0.3)
        self.assertEqual(
            client.data_received(),
            DEFAULT_WINDOW,
            f"DATA beyond the connection window\n{client.log()}",
        )
        client.send(WindowUpdateFrame(0, 1 << 20))
        self.assert_echoed(client, streams[0], "a" * 40000)
        self.assert_echoed(client, streams[1], "b" * 40000)
        sizes = [f.length for f in client.of(DataFrame)]
        self.assertLessEqual(max(sizes), DEFAULT_MAX_FRAME, sizes)

    def open_stream(self, client):
        """A stream whose request is still open (HEADERS, no END_STREAM)."""
        stream = client.stream()
        client.send(client.headers(stream))
        return stream

    def test_flow_control_window_update_of_zero(self):
        """A WINDOW_UPDATE with increment 0 is a connection PROTOCOL_ERROR on
        stream 0, a stream PROTOCOL_ERROR on a stream; one whose length is
        not 4 a FRAME_SIZE_ERROR (section 6.9)."""
        for where in ("connection", "stream", "length 3"):
            with self.subTest(where):
                client = self.client()
                client.handshake()
                if where == "connection":
                    client.send(raw_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)))
                    self.assert_connection_error(
                        client, PROTOCOL_ERROR, "WINDOW_UPDATE 0 on stream 0"
                    )
                elif where == "stream":
                    stream = self.open_stream(client)
                    client.send(raw_frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", 0)))
                    self.assert_stream_error(
                        client, stream, PROTOCOL_ERROR, "WINDOW_UPDATE 0 on a stream"
                    )
                else:
                    client.send(raw_frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"))
                    self.assert_connection_error(
                        client, FRAME_SIZE_ERROR, "WINDOW_UPDATE of length 3"
                    )

    def test_flow_control_window_overflow(self):
        """A WINDOW_UPDATE taking a window past 2^31-1 gives GOAWAY
        (FLOW_CONTROL_ERROR) for the connection and RST_STREAM
        (FLOW_CONTROL_ERROR) for a stream (section 6.9.1); a SETTINGS
        INITIAL_WINDOW_SIZE change that does it to an open stream is a
        connection FLOW_CONTROL_ERROR (section 6.9.2)."""
        for where in ("connection", "stream", "settings"):
            with self.subTest(where):
                client = self.client()
                client.handshake()
                if where == "connection":
                    client.send(WindowUpdateFrame(0, MAX_WINDOW))
                    self.assert_connection_error(
                        client, FLOW_CONTROL_ERROR, "connection window past 2^31-1"
                    )
                elif where == "stream":
                    stream = self.open_stream(client)
                    client.send(WindowUpdateFrame(stream, MAX_WINDOW))
                    self.assert_stream_error(
                        client, stream, FLOW_CONTROL_ERROR, "stream window past 2^31-1"
                    )
                else:
                    stream = self.open_stream(client)
                    client.send(WindowUpdateFrame(stream, MAX_WINDOW - DEFAULT_WINDOW))
                    client.ping_roundtrip()
                    self.assert_no_goaway(client, "a window of exactly 2^31-1 is allowed")
                    client.send(SettingsFrame(0, {INITIAL_WINDOW_SIZE: DEFAULT_WINDOW + 1}))
                    self.assert_connection_error(
                        client,
                        FLOW_CONTROL_ERROR,
                        "INITIAL_WINDOW_SIZE taking a stream past 2^31-1",
                    )

    def send_data(self, client, stream, size, end_stream=False):
        """`size` bytes of DATA on `stream`, in frames of the default maximum size."""
        frames = []
        while size > 0:
            n = min(size, DEFAULT_MAX_FRAME)
            frames.append(DataFrame(stream, b"d" * n))
            size -= n
        if end_stream:
            frames[-1].flags.add("END_STREAM")
        client.send(*frames)

    def granted(self, client, stream):
        return sum(f.window_increment for f in client.of(WindowUpdateFrame, stream))

    def test_flow_control_request_data_beyond_the_proxys_window(self):
        """DATA past the window the proxy advertised is not accepted (calls
        to a host that never answers: nothing reads their bodies, so the
        proxy gives no window back): one byte past a stream's window (1 MiB)
        gives FLOW_CONTROL_ERROR (stream or connection, section 6.9.1); one
        byte past the connection window (4 MiB: four streams filled, the
        byte on a fifth) FLOW_CONTROL_ERROR too."""
        proxy = self.proxy_with([self.blackhole()], "--connect-timeout", "30s")
        for level in ("stream", "connection"):
            with self.subTest(level):
                client = self.client(addr=proxy.addr)
                window = client.handshake().get(INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)
                connection_window = DEFAULT_WINDOW + self.granted(client, 0)
                streams = 1 if level == "stream" else connection_window // window + 1
                ids = []
                for _ in range(streams):
                    ids.append(self.open_stream(client))
                    self.send_data(
                        client, ids[-1], min(window, connection_window - (len(ids) - 1) * window)
                    )
                client.ping_roundtrip()
                client.ping_roundtrip()
                self.assertEqual(
                    [f for f in client.of(WindowUpdateFrame) if f.stream_id in ids],
                    [],
                    f"the proxy gave back window for a body it does not read\n{client.log()}",
                )
                self.assertEqual(client.of(RstStreamFrame), [], client.log())
                self.assert_no_goaway(client, "DATA within the windows is accepted")
                last = ids[-1]
                client.send(DataFrame(last, b"x"))
                self.assert_stream_error(
                    client, last, FLOW_CONTROL_ERROR, f"one byte past the {level} window"
                )

    # GOAWAY (section 6.8).

    def test_goaway_from_the_client_lets_its_calls_finish(self):
        """After our GOAWAY(NO_ERROR, last stream 0: we take no pushes) the
        calls already open finish with their answers, no stream is reset,
        and the proxy closes the connection without an error."""
        client = self.client()
        client.handshake()
        streams = [client.call("one", delay_ms=300), client.call("two", delay_ms=300)]
        client.ping_roundtrip()
        client.send(GoAwayFrame(0, last_stream_id=0, error_code=NO_ERROR))
        self.assert_echoed(client, streams[0], "one")
        self.assert_echoed(client, streams[1], "two")
        client.wait_closed("the connection closed once its calls were done")
        self.assertEqual(client.of(RstStreamFrame), [], client.log())
        codes = [error_name(f.error_code) for f in client.of(GoAwayFrame)]
        self.assertLessEqual(set(codes), {"NO_ERROR"}, client.log())

    def test_goaway_on_a_protocol_error_names_the_last_stream(self):
        """The proxy's GOAWAY for a connection error carries the error code
        and, as last stream id, the highest stream it processed (a call in
        flight, stream 3)."""
        client = self.client()
        client.handshake()
        self.assert_echoed(client, client.call())
        in_flight = client.call(delay_ms=2000)
        client.ping_roundtrip()
        client.send(raw_frame(PING, 0, in_flight, b"12345678"))
        goaway = self.assert_connection_error(client, PROTOCOL_ERROR, "PING on a stream")
        self.assertEqual(goaway.last_stream_id, in_flight, client.log())

    def test_goaway_on_drain_lets_calls_below_last_stream_finish(self):
        """On SIGTERM the proxy sends GOAWAY(NO_ERROR); the last stream id
        never grows from one GOAWAY to the next, the last one names the call
        in flight, that call finishes with its answer, then the connection
        is closed."""
        proxy = self.proxy_with([self.backend.addr], "--drain-timeout", "10s")
        client = self.client(addr=proxy.addr)
        client.handshake()
        stream = client.call("draining", delay_ms=800)
        client.ping_roundtrip()
        proxy.proc.send_signal(signal.SIGTERM)
        client.wait_for("GOAWAY", lambda f: isinstance(f, GoAwayFrame))
        self.assert_echoed(client, stream, "draining")
        client.wait_closed("the drained connection closed", timeout=10)
        goaways = client.of(GoAwayFrame)
        self.assertEqual({error_name(f.error_code) for f in goaways}, {"NO_ERROR"}, client.log())
        last_ids = [f.last_stream_id for f in goaways]
        self.assertEqual(last_ids, sorted(last_ids, reverse=True), client.log())
        self.assertEqual(last_ids[-1], stream, client.log())

    # RST_STREAM (section 6.4).

    def test_rst_stream_cancels_its_call_only(self):
        """RST_STREAM(CANCEL) on a call in flight: once the proxy has seen it
        (a PING later), no frame comes on that stream, and the other call of
        the connection is answered."""
        client = self.client()
        client.handshake()
        cancelled = client.call("cancelled", delay_ms=500)
        kept = client.call("kept", delay_ms=500)
        client.ping_roundtrip()
        client.send(RstStreamFrame(cancelled, CANCEL))
        client.ping_roundtrip()
        seen = len(client.frames)
        self.assert_echoed(client, kept, "kept")
        client.ping_roundtrip()
        late = [f for f in client.frames[seen:] if f.stream_id == cancelled]
        self.assertEqual(late, [], f"frames on the reset stream\n{client.log()}")
        self.assert_no_goaway(client, "a reset is no connection error")

    def test_rst_stream_malformed_frames_are_connection_errors(self):
        """RST_STREAM on an idle stream or on stream 0 is a PROTOCOL_ERROR,
        one whose length is not 4 a FRAME_SIZE_ERROR (section 6.4)."""
        cases = [
            (
                "on idle stream 1",
                raw_frame(RST_STREAM, 0, 1, struct.pack(">I", CANCEL)),
                PROTOCOL_ERROR,
            ),
            ("on stream 0", raw_frame(RST_STREAM, 0, 0, struct.pack(">I", CANCEL)), PROTOCOL_ERROR),
            ("length 3", raw_frame(RST_STREAM, 0, 1, b"\x00\x00\x08"), FRAME_SIZE_ERROR),
        ]
        # The wrong length is sent on an open stream, so that it is the length
        # and not an idle stream that is refused.
        def open_for_length_3(client, name):
            if name == "length 3":
                self.open_stream(client)

        self.assert_each_is_connection_error("RST_STREAM", cases, before=open_for_length_3)

    def test_rst_stream_rapid_reset_is_stopped(self):
        """HEADERS then RST_STREAM(CANCEL), stream after stream (CVE-2023-44487):
        the proxy answers GOAWAY(ENHANCE_YOUR_CALM) and closes the connection
        within the documented threshold (100 streams, half of them reset within
        1 s; h2's own limit of 20 resets before accept is lower), while
        another client's call in flight and its next call are answered."""
        proxy = self.proxy()
        other = self.client()
        other.handshake()
        before = other.call("before", delay_ms=1000)
        attacker = self.client()
        attacker.handshake()
        # Batches of 10 pairs, each followed by a PING whose ACK says the
        # proxy has read the batch: how far it let the attack go does not
        # depend on how fast this machine is.
        sent = 0
        while sent < 2000 and not attacker.closed and not attacker.of(GoAwayFrame):
            pairs = []
            for _ in range(10):
                stream = attacker.stream()
                pairs += [attacker.headers(stream, end_stream=True), RstStreamFrame(stream, CANCEL)]
            attacker.send(*pairs)
            sent += 10
            try:
                attacker.ping_roundtrip()
            except AssertionError:
                break  # closed before the ACK: the GOAWAY is checked below
        goaway = self.assert_connection_error(attacker, ENHANCE_YOUR_CALM, "rapid reset")
        print(
            f"\nrapid reset: GOAWAY {error_name(goaway.error_code)}, last stream "
            f"{goaway.last_stream_id}, after {sent} HEADERS+RST_STREAM pairs written"
        )
        # The proxy took at most the threshold's 100 streams, plus two batches.
        self.assertLessEqual(goaway.last_stream_id, 2 * (100 + 20) - 1, attacker.log())
        self.assert_echoed(other, before, "before")
        self.assert_echoed(other, other.call("after"), "after")
        self.assert_other_client_works(proxy.addr)

    # CONTINUATION (section 6.10).

    def test_continuation_carries_a_split_header_block(self):
        """A header block split across HEADERS and two CONTINUATION frames
        (END_HEADERS on the last) makes a call like any other."""
        client = self.client()
        client.handshake()
        stream = client.stream()
        block = client.encoder.encode(client.request_headers(extra=[("x-split", "s" * 300)]))
        third = len(block) // 3
        client.send(
            HeadersFrame(stream, block[:third]),
            ContinuationFrame(stream, block[third : 2 * third]),
            ContinuationFrame(stream, block[2 * third :], flags=["END_HEADERS"]),
            DataFrame(stream, echo_request(), flags=["END_STREAM"]),
        )
        self.assert_echoed(client, stream)

    def test_continuation_interrupted_header_block_is_a_protocol_error(self):
        """Inside a header block only CONTINUATION frames of the same stream
        may come: a CONTINUATION of another stream, a PING, DATA, HEADERS of
        another stream, PRIORITY or an unknown frame type there is a
        connection PROTOCOL_ERROR (sections 6.10, 5.5); so is a CONTINUATION
        after a complete block."""
        # What comes after the first 10 bytes of the block (`rest`: the
        # block's remainder) on stream `s`; flags 4: END_HEADERS.
        cases = {
            "CONTINUATION, other stream": lambda s, rest: raw_frame(CONTINUATION, 4, s + 2, rest),
            "PING": lambda s, rest: raw_frame(PING, 0, 0, b"12345678"),
            "DATA on the stream": lambda s, rest: raw_frame(DATA, 0, s, b"x"),
            "HEADERS on another stream": lambda s, rest: raw_frame(HEADERS, 4, s + 2, rest),
            "PRIORITY": lambda s, rest: raw_frame(PRIORITY, 0, s, struct.pack(">IB", 0, 16)),
            "unknown frame type": lambda s, rest: raw_frame(0xFA, 0, 0, b"ext"),
        }
        for name, interloper in cases.items():
            with self.subTest(name):
                client = self.client()
                client.handshake()
                stream = client.stream()
                block = client.encoder.encode(client.request_headers())
                client.send(HeadersFrame(stream, block[:10]), interloper(stream, block[10:]))
                self.assert_connection_error(
                    client, PROTOCOL_ERROR, f"{name} inside a header block"
                )
        with self.subTest("CONTINUATION after END_HEADERS"):
            client = self.client()
            client.handshake()
            stream = self.open_stream(client)
            client.send(ContinuationFrame(stream, literal(b"x-late", b"1"), flags=["END_HEADERS"]))
            self.assert_connection_error(
                client, PROTOCOL_ERROR, "CONTINUATION after a complete block"
            )

    def test_continuation_flood_is_cut_off(self):
        """HEADERS then CONTINUATION frames without END_HEADERS, written as
        fast as the proxy reads them: the proxy does not buffer the block
        without bound but ends the connection (GOAWAY with an error) before a
        few MiB have been written, and other clients' calls work."""
        client = self.client()
        client.handshake()
        stream = client.stream()
        client.send(HeadersFrame(stream, client.encoder.encode(client.request_headers())))
        fragment = literal(b"x-flood", b"f" * 16000)
        chunk = b"".join(raw_frame(CONTINUATION, 0, stream, fragment) for _ in range(16))
        before = rss_kib(self.proxy().proc.pid)
        sent, why = client.flood(chunk, limit=64 << 20, seconds=10)
        after = rss_kib(self.proxy().proc.pid)
        client.wait_for("GOAWAY", lambda f: isinstance(f, GoAwayFrame), timeout=5)
        goaway = client.of(GoAwayFrame)[0]
        print(
            f"\nCONTINUATION flood: {sent / 1e6:.2f} MB written, then {why}; "
            f"GOAWAY {error_name(goaway.error_code)}; proxy RSS {before} -> {after} KiB"
        )
        self.assertNotEqual(goaway.error_code, NO_ERROR, client.log())
        client.wait_closed("the close after GOAWAY")
        # Socket buffers take a few MiB; the proxy's memory does not grow.
        self.assertLess(sent, 32 << 20, "the proxy kept reading the header block")
        self.assertLess(after - before, 16 << 10, "the proxy's memory grew with the flood")
        self.assert_other_client_works()

    # Padding (sections 6.1, 6.2).

    def test_padding_on_headers_and_data_is_accepted(self):
        """Padded HEADERS (also with PRIORITY) and padded DATA make calls
        like any other; the padding is not part of the message."""
        client = self.client()
        client.handshake()
        first = client.stream()
        client.send(
            client.headers(first, flags=["PADDED"], pad_length=17),
            DataFrame(first, echo_request("padded"), flags=["END_STREAM", "PADDED"], pad_length=30),
        )
        second = client.stream()
        client.send(
            client.headers(
                second,
                flags=["PADDED", "PRIORITY"],
                pad_length=255,
                depends_on=0,
                stream_weight=200,
            ),
            DataFrame(second, b"", flags=["PADDED"], pad_length=10),
            DataFrame(
                second, echo_request("padded too"), flags=["END_STREAM", "PADDED"], pad_length=0
            ),
        )
        self.assert_echoed(client, first, "padded")
        self.assert_echoed(client, second, "padded too")

    def test_padding_longer_than_the_payload_is_a_protocol_error(self):
        """A pad length as long as the frame's payload or longer is a
        connection PROTOCOL_ERROR, for DATA and HEADERS (with PRIORITY, the 5
        priority bytes are not room for padding)."""

        def data(pad):
            # One pad length byte and 3 data bytes: a pad length of 4 or more
            # leaves no room.
            return lambda client, stream: raw_frame(DATA, PADDED, stream, bytes([pad]) + b"abc")

        def headers(client, stream, priority=False):
            # The padding may not eat into the block, nor (with PRIORITY)
            # into the 5 priority bytes: one byte more than the block is too
            # much, though less than the whole payload.
            block = client.encoder.encode(client.request_headers())
            self.assertLess(len(block), 255, "the block must fit a pad length")
            fields = struct.pack(">IB", 0, 16) if priority else b""
            flags = END_HEADERS | PADDED | (PRIORITY_FLAG if priority else 0)
            return raw_frame(HEADERS, flags, stream, bytes([len(block) + 1]) + fields + block)

        cases = [
            ("DATA, pad = payload", data(4)),
            ("DATA, pad > payload", data(200)),
            ("HEADERS, pad = payload", headers),
            (
                "HEADERS with PRIORITY, pad past the block",
                lambda c, s: headers(c, s, priority=True),
            ),
        ]
        for name, make in cases:
            with self.subTest(name):
                client = self.client()
                client.handshake()
                stream = self.open_stream(client) if name.startswith("DATA") else client.stream()
                client.send(make(client, stream))
                self.assert_connection_error(client, PROTOCOL_ERROR, name)

    def test_padding_counts_against_flow_control(self):
        """Padded DATA uses the window by its whole payload (pad length byte
        and padding included, section 6.1): after padded frames that fill a
        stream's 1 MiB window with less than 1 MiB of data, one more byte is
        a FLOW_CONTROL_ERROR."""
        proxy = self.proxy_with([self.blackhole()], "--connect-timeout", "30s")
        client = self.client(addr=proxy.addr)
        window = client.handshake().get(INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)
        stream = self.open_stream(client)
        frames, used, data = [], 0, 0
        while window - used >= DEFAULT_MAX_FRAME:
            payload = DEFAULT_MAX_FRAME - 256
            frames.append(DataFrame(stream, b"p" * payload, flags=["PADDED"], pad_length=255))
            used += DEFAULT_MAX_FRAME
            data += payload
        if window > used:
            frames.append(DataFrame(stream, b"p" * (window - used)))
            data += window - used
            used = window
        client.send(*frames)
        client.ping_roundtrip()
        client.ping_roundtrip()
        self.assert_no_goaway(client, "padded DATA within the window is accepted")
        # The room left: what WINDOW_UPDATEs gave back (h2 returns the
        # padding at once). Had the padding not been counted, the proxy would
        # see `used - data` more, and room + 1 bytes would fit.
        room = self.granted(client, stream)
        self.assertLess(data, used)
        self.send_data(client, stream, room + 1)
        self.assert_stream_error(
            client, stream, FLOW_CONTROL_ERROR, f"{data} data bytes, {used} with padding"
        )

    # PRIORITY (section 6.3).

    def test_priority_frames_are_ignored_safely(self):
        """PRIORITY on an idle stream, on an open one (between its HEADERS and
        DATA, exclusive) and on a closed one changes nothing: the calls are
        answered, also on the stream that got PRIORITY while idle."""
        client = self.client()
        client.handshake()
        client.send(PriorityFrame(7, depends_on=0, stream_weight=16))
        first = client.stream()
        client.send(
            client.headers(first),
            PriorityFrame(first, depends_on=0, stream_weight=255, exclusive=True),
            DataFrame(first, echo_request("first"), flags=["END_STREAM"]),
        )
        self.assert_echoed(client, first, "first")
        client.send(PriorityFrame(first, depends_on=0, stream_weight=1))
        self.assert_echoed(client, client.call("third"), "third")
        self.assert_echoed(client, client.call("fifth"), "fifth")
        seventh = client.call("seventh")
        self.assertEqual(seventh, 7)
        self.assert_echoed(client, seventh, "seventh")
        self.assert_no_goaway(client, "PRIORITY frames are no error")

    def test_priority_with_a_wrong_length(self):
        """A PRIORITY of 4 or 6 bytes is a FRAME_SIZE_ERROR (a stream error,
        section 6.3: other calls go on if the proxy resets only that stream);
        a PRIORITY on stream 0 a connection PROTOCOL_ERROR."""
        for name, payload in (
            ("length 4", b"\x00\x00\x00\x00"),
            ("length 6", b"\x00\x00\x00\x00\x10\x00"),
        ):
            with self.subTest(name):
                client = self.client()
                client.handshake()
                stream = self.open_stream(client)
                client.send(raw_frame(PRIORITY, 0, stream, payload))
                frame = self.assert_stream_error(
                    client, stream, FRAME_SIZE_ERROR, f"PRIORITY of {name}"
                )
                if isinstance(frame, RstStreamFrame):
                    self.assert_echoed(client, client.call())
        with self.subTest("on stream 0"):
            client = self.client()
            client.handshake()
            client.send(raw_frame(PRIORITY, 0, 0, struct.pack(">IB", 0, 16)))
            self.assert_connection_error(client, PROTOCOL_ERROR, "PRIORITY on stream 0")

    # Header size limits (section 10.5.1, RFC 7541).

    def test_headers_over_the_advertised_list_size_are_refused(self):
        """A header block whose list size (RFC 7541 section 4.1: name, value
        and 32 per field) is one byte over the advertised MAX_HEADER_LIST_SIZE
        is refused on its stream (RST_STREAM REFUSED_STREAM as docs/proxy.md
        says, or the 431 of RFC 9113 section 10.5.1, which is what h2
        sends), without a connection error: the call in flight beside it is
        answered, and the next call, whose header block refers to entries the
        refused block added to the HPACK dynamic table, is too."""
        client = self.client()
        settings = client.handshake()
        limit = settings[MAX_HEADER_LIST_SIZE]
        in_flight = client.call("in flight", delay_ms=500)
        big = client.stream()
        headers = client.request_headers(extra=[("x-sync", "kept in the table")])
        size = sum(len(n) + len(v) + 32 for n, v in headers)
        # One byte over: x-big counts 5 + its value + 32.
        headers.append(hpack.NeverIndexedHeaderTuple("x-big", "b" * (limit - size - 37 + 1)))
        block = client.encoder.encode(headers, huffman=False)
        fragments = [
            block[i : i + DEFAULT_MAX_FRAME] for i in range(0, len(block), DEFAULT_MAX_FRAME)
        ]
        frames = [HeadersFrame(big, fragments[0], flags=["END_STREAM"])]
        frames += [ContinuationFrame(big, f) for f in fragments[1:]]
        frames[-1].flags.add("END_HEADERS")
        client.send(*frames)
        refusal = client.wait_for(
            "the refusal",
            lambda f: f.stream_id == big and isinstance(f, (RstStreamFrame, HeadersFrame)),
        )
        if isinstance(refusal, RstStreamFrame):
            self.assertEqual(error_name(refusal.error_code), "REFUSED_STREAM", client.log())
        else:
            self.assertEqual(
                refusal.headers and dict(refusal.headers).get(":status"), "431", client.log()
            )
        self.assert_echoed(client, in_flight, "in flight")
        self.assert_echoed(
            client, client.call("after", extra=[("x-sync", "kept in the table")]), "after"
        )
        self.assert_no_goaway(client, "an oversized header block is no connection error")

    def test_headers_with_connection_specific_fields_are_malformed(self):
        """A request carrying a connection-specific field (connection,
        keep-alive, proxy-connection, transfer-encoding, upgrade) or a te
        other than "trailers" is malformed (RFC 9113 section 8.2.2): each is
        reset with PROTOCOL_ERROR on its own stream, the call in flight beside
        them is answered, and the connection carries the next call."""
        client = self.client()
        client.handshake()
        in_flight = client.call("in flight", delay_ms=500)
        for name, value in [
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("te", "gzip"),
        ]:
            stream = client.stream()
            client.send(client.headers(stream, end_stream=True, extra=[(name, value)]))
            self.assert_stream_error(client, stream, PROTOCOL_ERROR, f"{name}: {value}")
        self.assert_echoed(client, in_flight, "in flight")
        self.assert_echoed(client, client.call("after"), "after")
        self.assert_no_goaway(client, "a malformed request is no connection error")

    def test_hpack_bomb_is_refused(self):
        """A 4,000-byte field put in the dynamic table by one call (which is
        answered), then referenced 100 times by one-byte indexes in the next
        call's block (400 kB decoded from 100 bytes): that call is refused
        (RST_STREAM or 431, or the connection closed with an error), never
        forwarded."""
        client = self.client()
        client.handshake()
        plain = b"".join(literal(n.encode(), v.encode()) for n, v in client.request_headers())
        first = client.stream()
        client.send(
            HeadersFrame(
                first, plain + literal(b"x-bomb", b"B" * 4000, indexing=True), flags=["END_HEADERS"]
            ),
            DataFrame(first, echo_request("armed"), flags=["END_STREAM"]),
        )
        self.assert_echoed(client, first, "armed")
        bomb = client.stream()
        client.send(
            HeadersFrame(bomb, plain + indexed(62) * 100, flags=["END_HEADERS", "END_STREAM"])
        )
        refusal = client.wait_for(
            "the refusal",
            lambda f: isinstance(f, GoAwayFrame)
            or (f.stream_id == bomb and isinstance(f, (RstStreamFrame, HeadersFrame))),
        )
        if isinstance(refusal, HeadersFrame):
            self.assertEqual(
                dict(refusal.headers).get(":status"),
                "431",
                f"the bomb was forwarded\n{client.log()}",
            )
        elif isinstance(refusal, GoAwayFrame):
            self.assertNotEqual(refusal.error_code, NO_ERROR, client.log())
            client.wait_closed("the close after GOAWAY")
        else:
            self.assert_echoed(client, client.call("after the bomb"), "after the bomb")

    def test_hpack_the_proxys_blocks_use_the_static_table_only(self):
        """The proxy's header blocks (heads and trailers of three calls on one
        connection) never insert into the client's dynamic table, so each
        decodes alone, with a fresh decoder, to what the connection's decoder
        got: the proxy keeps no HPACK state per client (docs/architecture.md,
        "The HTTP/2 layer")."""
        client = self.client()
        client.handshake()
        streams = [client.call(f"static {n}") for n in range(3)]
        for n, stream in enumerate(streams):
            self.assert_echoed(client, stream, f"static {n}")
        blocks = [f for f in client.frames if isinstance(f, HeadersFrame)]
        self.assertEqual(len(blocks), 6, client.log())
        for frame in blocks:
            detail = f"block on stream {frame.stream_id} needs the connection's table"
            try:
                alone = list(hpack.Decoder().decode(frame.block))
            except hpack.HPACKError as e:
                self.fail(f"{detail}: {e}\n{client.log()}")
            self.assertEqual(alone, frame.headers, f"{detail}\n{client.log()}")

    def test_hpack_invalid_blocks_are_compression_errors(self):
        """Header blocks an HPACK decoder must reject are a connection
        COMPRESSION_ERROR (RFC 9113 section 4.3): index 0 and indexes past
        the tables (RFC 7541 section 2.3.3, 6.1), a table size update above
        SETTINGS_HEADER_TABLE_SIZE (section 6.3) or after a field (section
        4.2), a Huffman string with EOS or over-long padding (section 5.2)."""
        plain = b"".join(
            literal(n.encode(), v.encode()) for n, v in request_headers(self.proxy().addr)
        )
        cases = [
            ("(valid: the same block with a good index)", plain + indexed(2)),
            ("index 0", plain + indexed(0)),
            ("index 62, empty dynamic table", plain + indexed(62)),
            ("index 300", plain + indexed(300)),
            ("name index 70", plain + hpack_int(70, 4, 0x00) + hpack_string(b"v")),
            ("table size update 8192 > 4096", hpack_int(8192, 5, 0x20) + plain),
            ("table size update after a field", plain + hpack_int(100, 5, 0x20)),
            (
                "Huffman string with EOS",
                plain + b"\x00" + hpack_string(b"x-h") + b"\x84\xff\xff\xff\xff",
            ),
            ("Huffman padding of 8 bits", plain + b"\x00" + hpack_string(b"x-h") + b"\x82\x1f\xff"),
        ]
        for name, block in cases:
            with self.subTest(name):
                client = self.client()
                client.handshake()
                client.send(
                    HeadersFrame(client.stream(), block, flags=["END_HEADERS", "END_STREAM"])
                )
                if name.startswith("(valid"):
                    client.ping_roundtrip()
                    self.assert_no_goaway(client, "a good block is no error")
                    continue
                self.assert_connection_error(client, COMPRESSION_ERROR, name)

    # Frame size (section 4.2) and extensibility (section 5.5).

    def test_frames_over_max_frame_size_are_frame_size_errors(self):
        """A frame longer than SETTINGS_MAX_FRAME_SIZE (16,384: the proxy
        does not raise it) is a FRAME_SIZE_ERROR: DATA a stream or connection
        error; HEADERS and any frame on stream 0 a connection error."""
        client = self.client()
        settings = client.handshake()
        limit = settings.get(MAX_FRAME_SIZE, DEFAULT_MAX_FRAME)
        client.close()
        for name in ("DATA", "HEADERS", "unknown type on stream 0"):
            with self.subTest(name):
                client = self.client()
                client.handshake()
                if name == "DATA":
                    stream = self.open_stream(client)
                    client.send(raw_frame(DATA, 0, stream, b"d" * (limit + 1)))
                    self.assert_stream_error(
                        client, stream, FRAME_SIZE_ERROR, "DATA over MAX_FRAME_SIZE"
                    )
                    continue
                if name == "HEADERS":
                    block = client.encoder.encode(
                        client.request_headers(extra=[("x-long", "l" * limit)]), huffman=False
                    )
                    client.send(
                        raw_frame(HEADERS, END_HEADERS, client.stream(), block[: limit + 1])
                    )
                else:
                    client.send(raw_frame(0xFA, 0, 0, b"u" * (limit + 1)))
                self.assert_connection_error(
                    client, FRAME_SIZE_ERROR, f"{name} over MAX_FRAME_SIZE"
                )

    def test_unknown_frame_types_and_flags_are_ignored(self):
        """Unknown frame types (on stream 0, and on a call's stream between
        its HEADERS and DATA), unknown flags on PING, HEADERS and DATA, and
        the reserved bit of a stream id are ignored (sections 4.1, 5.5): the
        PING is acknowledged and the call answered."""
        client = self.client()
        client.handshake()
        stream = client.stream()
        block = client.encoder.encode(client.request_headers())
        client.send(
            raw_frame(0x20, 0xFF, 0, b"extension on stream 0"),
            raw_frame(PING, 0xFE, 0, b"flagged!"),
            raw_frame(HEADERS, END_HEADERS | 0x02 | 0x10 | 0x40 | 0x80, stream, block),
            raw_frame(0xFA, 0x01, stream, b"extension on the stream"),
            raw_frame(
                DATA, END_STREAM | 0x02 | 0x04 | 0x10, stream | 0x80000000, echo_request("ignored")
            ),
        )
        client.wait_for(
            "the flagged PING acknowledged",
            lambda f: isinstance(f, PingFrame)
            and "ACK" in f.flags
            and f.opaque_data == b"flagged!",
        )
        self.assert_echoed(client, stream, "ignored")
        self.assert_no_goaway(client, "unknown frames and flags are no error")


if __name__ == "__main__":
    unittest.main()
