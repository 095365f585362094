"""gRPC-Web through our proxy, seen from clients written outside this project.

Three backends behind one proxy started with `--grpc-web` (round robin, so a
run of calls is spread evenly), and:

- sonora (PyPI `sonora`, an independent gRPC-Web implementation): unary
  SayHello and GetStatus, EchoService/Echo ending with a status, a message
  and a trailer, server-streaming EchoService/Expand with its trailer and with
  an error at the end, and calls spread over the 3 backends. sonora's clients
  speak the binary mode only (both its urllib3 and its aiohttp client send
  `application/grpc-web+proto`; it decodes `application/grpc-web-text` only in
  its servers), so the same calls in the text mode
  (`application/grpc-web-text+proto`, base64 both ways) are made with the
  small hand-written client of this module, over http.client.
- raw HTTP/1.1 (http.client): a text-mode stream decoded by hand; the
  proxy's own answers, each HTTP 200 with grpc-status in the headers, to
  malformed bodies (13), an oversized one (8) and two messages in one body
  (12), while a grpcio client keeps calling through the same proxy; 415 for
  HTTP/1.1 that is not gRPC-Web; CORS preflights answered by the proxy
  without reaching a backend (204 for an allowed origin, 403 otherwise); the
  /stats counters of all that; max_request_bytes from a config file; a TLS
  listener whose ALPN offers h2 and http/1.1.
- HTTP/2 prior knowledge (hyper-h2): a binary gRPC-Web call whose trailers
  come as the last frame of the body, not as HTTP/2 trailers.
- headless Chromium: the admin's `/grpc-web` demo page, calls in both modes,
  every one OK and the 3 backends each answering a share; nothing loaded from
  any origin but the admin's and the gRPC-Web listener's. Then the same page
  against a TLS listener (`?target=https://...`, the test CA ignored with
  `--ignore-certificate-errors`): ALPN picks h2, so the browser's own
  gRPC-Web calls go over HTTP/2, as DevTools reports for every answer and
  preflight, with no HTTP/1.1 request in /stats. (Resource timing's
  nextHopProtocol would say h2 only with a Timing-Allow-Origin header, which
  the proxy does not send: without it the browser gives "" cross-origin.)
  With the env var GRPC_WEB_SCREENSHOT set, a screenshot of the page is
  saved there. Needs chromium (scripts/install-deps installs Debian's): with
  CI=true a missing browser fails the tests; elsewhere they are skipped,
  saying so.
"""

import base64
import collections
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

import grpc
import h2.config
import h2.connection
import h2.events
import sonora.client
import sonora.protocol

import harness

sys.path.insert(0, os.path.join(harness.ROOT, "tests", "docs"))
from capture_page import Chromium  # noqa: E402

harness.load_stubs()
from gateway import alive_pb2, echo_pb2  # noqa: E402
from helloworld import helloworld_pb2, helloworld_pb2_grpc  # noqa: E402

SAY_HELLO = "/helloworld.Greeter/SayHello"
GET_STATUS = "/gateway.AliveService/GetStatus"
ECHO = "/gateway.EchoService/Echo"
EXPAND = "/gateway.EchoService/Expand"
CONTENT_TYPES = {"binary": "application/grpc-web+proto", "text": "application/grpc-web-text+proto"}
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
MALFORMED = "malformed gRPC-Web request: "
STREAMING_REFUSED = ("gRPC-Web carries one request message: client-streaming and "
                     "bidirectional calls are not supported")


def eventually(what, timeout, predicate, interval=0.05):
    """Polls `predicate` until it returns something true, and returns it;
    fails with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(interval)


# ---- gRPC-Web on the wire, by hand ------------------------------------------

def frame(message, flag=0):
    """One length-prefixed frame: flag, u32 big-endian length, message."""
    return struct.pack(">BI", flag, len(message)) + message


def decode_text(body):
    """A text-mode body: base64 in 4-character groups, where padding may end
    any group (each chunk the server flushed is encoded alone), not only the
    last. Decoded run by run, each run ending with a padded group."""
    text = re.sub(rb"\s+", b"", body)
    if len(text) % 4:
        raise ValueError(f"text-mode body of {len(text)} characters: not whole base64 groups")
    out, start = [], 0
    for i in range(0, len(text), 4):
        if text[i + 3:i + 4] == b"=" or i + 4 == len(text):
            out.append(base64.b64decode(text[start:i + 4], validate=True))
            start = i + 4
    return b"".join(out)


def parse_frames(data):
    """The frames of a response body: ([message], {trailer: value} or None)."""
    messages, trailers, i = [], None, 0
    while i < len(data):
        if len(data) - i < 5:
            raise ValueError(f"truncated frame header at byte {i} of {len(data)}")
        flag, length = struct.unpack(">BI", data[i:i + 5])
        payload = data[i + 5:i + 5 + length]
        if len(payload) != length:
            raise ValueError(f"frame of {length} bytes with {len(payload)} left in the body")
        i += 5 + length
        if flag & 0x80:
            if trailers is not None:
                raise ValueError("two trailer frames")
            trailers = {}
            for line in payload.decode("ascii").split("\r\n"):
                if line:
                    name, _, value = line.partition(":")
                    trailers[name.strip()] = value.strip()
        elif trailers is not None:
            raise ValueError("a message after the trailer frame")
        elif flag != 0:
            raise ValueError(f"unexpected frame flag {flag:#x}")
        else:
            messages.append(payload)
    return messages, trailers


class WebResult:
    """What a gRPC-Web answer says: the HTTP status and headers (lowercase
    names), the body as received (`chunks`) and decoded, its messages, its
    trailer frame, and the gRPC status and message from the trailer frame or,
    for a trailers-only answer, from the headers."""

    def __init__(self, http_status, headers, chunks):
        self.http_status = http_status
        self.headers = headers
        self.chunks = chunks
        self.body = b"".join(chunks)
        self.content_type = headers.get("content-type", "")
        self.messages, self.trailers = [], None
        if http_status == 200 and self.body:
            data = decode_text(self.body) if "grpc-web-text" in self.content_type else self.body
            self.messages, self.trailers = parse_frames(data)
        meta = self.trailers if self.trailers is not None else headers
        status = meta.get("grpc-status")
        self.status = int(status) if status is not None else None
        self.message = urllib.parse.unquote(meta.get("grpc-message", ""))
        self.backend = headers.get("x-backend-id")

    def __repr__(self):
        return (f"WebResult(http {self.http_status}, grpc-status {self.status} {self.message!r}, "
                f"{len(self.messages)} messages, trailers {self.trailers}, headers {self.headers}, "
                f"body {self.body[:120]!r})")


def http1(addr, method, path, body=b"", headers=None, timeout=10, tls=None):
    """One HTTP/1.1 request on a connection of its own; the answer as a
    WebResult. The body is sent from a thread while the answer is read, so
    an answer given before the whole body was taken (a body over the limit)
    is still read, whatever happens to the rest of the upload. `tls`: an
    ssl.SSLContext to speak TLS with, to the name `localhost`; the request
    is then sent whole before the answer is read, from this thread: an
    SSLSocket must not be read and written from two threads at once (the
    OpenSSL object under it is shared, and a read racing a write can end
    as a spurious EOF, "closed without response")."""
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="localhost")
    try:
        head = [f"{method} {path} HTTP/1.1", f"Host: {addr}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + body

        def send():
            try:
                sock.sendall(request)
            except OSError:
                pass  # the proxy answered and closed before taking it all

        sender = threading.Thread(target=send, daemon=True)
        if tls is None:
            sender.start()
        else:
            send()
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        chunks = []
        while True:
            chunk = response.read1(65536)
            if not chunk:
                break
            chunks.append(chunk)
        headers_out = {k.lower(): v for k, v in response.getheaders()}
        if sender.is_alive():
            sender.join(timeout)
        return WebResult(response.status, headers_out, chunks)
    finally:
        sock.close()


def grpc_web(addr, path, message, mode="binary", headers=None, origin=None, tls=None):
    """A gRPC-Web call of one message over HTTP/1.1, in `mode` (binary or
    text), as a browser's client makes it."""
    body = frame(message)
    if mode == "text":
        body = base64.b64encode(body)
    hdrs = {"Content-Type": CONTENT_TYPES[mode], "X-Grpc-Web": "1", "X-User-Agent": "interop-test"}
    if origin:
        hdrs["Origin"] = origin
    hdrs.update(headers or {})
    return http1(addr, "POST", path, body, hdrs, tls=tls)


def raw_post(addr, path, body, content_type="application/grpc-web+proto"):
    """A POST of `body` exactly as given (no framing, no encoding)."""
    return http1(addr, "POST", path, body, {"Content-Type": content_type, "X-Grpc-Web": "1"})


# ---- Our processes ------------------------------------------------------------

class Proxy:
    """Our proxy with its admin on, both addresses read from its log."""

    def __init__(self, process):
        self.process = process
        self.admin = process.addr

        def listening():
            for line in list(process.lines):
                match = re.search(r"listening listener=(\S+) addr=(\S+)", line)
                if match:
                    return match.groups()
            return None

        self.listener, self.addr = eventually("the proxy logs its listener", 10, listening)

    def wait_for_hosts(self, n):
        """Until the cluster has its `n` hosts, each with its connection
        open: the balancer prefers hosts whose connection is open, so a call
        made while some are still connecting skews a spread."""
        def connected():
            lines = self.get("/clusters").splitlines()
            return sum(1 for line in lines if re.fullmatch(r"backend::[^:]+:\d+::cx_active::[1-9]\d*", line)) == n
        eventually(f"the proxy's {n} hosts connected (cx_active in /clusters)", 10, connected)

    def get(self, path):
        return harness.admin_get(self.admin, path)

    def stats(self):
        """/stats as {name: value} (counters and gauges)."""
        return harness.admin_stats(self.admin)

    def web_stats(self):
        """The spec's gRPC-Web, HTTP/1 and CORS counters of the listener
        (each must be listed), and the cluster's upstream calls."""
        stats = self.stats()
        names = ["grpc_web.calls", "grpc_web.text_calls", "grpc_web.malformed", "grpc_web.too_large",
                 "grpc_web.streaming_refused", "http1.refused", "cors.origin_valid",
                 "cors.origin_invalid", "cors.preflight"]
        missing = [f"http.{self.listener}.{n}" for n in names if f"http.{self.listener}.{n}" not in stats]
        if missing:
            raise AssertionError(f"not in /stats: {missing}")
        out = {n: stats[f"http.{self.listener}.{n}"] for n in names}
        out["upstream_rq_total"] = stats["cluster.backend.upstream_rq_total"]
        return out


def delta(before, after):
    return {k: after[k] - before[k] for k in after}


class Shared:
    """Processes started once for a test class, stopped at its cleanup."""

    def __init__(self, cls):
        self.addCleanup = cls.addClassCleanup


class WebTestCase(unittest.TestCase):
    BACKENDS = ()

    @classmethod
    def setUpClass(cls):
        shared = Shared(cls)
        cls.backends = [harness.started(shared, harness.backend, b) for b in cls.BACKENDS]

    def start_proxy(self, *flags, admin="127.0.0.1:0"):
        """A proxy in front of the class's backends, round robin, admin on."""
        args = ["--listen", "127.0.0.1:0", "--admin", admin, "--access-log", "off",
                "--lb", "round_robin"]
        for b in self.backends:
            args += ["--upstream", b.addr]
        proxy = Proxy(harness.started(self, harness.Process, "proxy", args + list(flags),
                                      r"admin interface listening addr=(\S+)"))
        proxy.wait_for_hosts(len(self.backends))
        return proxy

    def make_certs(self):
        """A directory with a test CA (ca.pem) and a server certificate for
        localhost and 127.0.0.1 (server.pem, server.key), gone at cleanup."""
        certs = tempfile.mkdtemp(prefix="interop-grpc-web-tls-")
        self.addCleanup(shutil.rmtree, certs, True)
        harness.make_certs(certs)
        return certs

    @staticmethod
    def tls_flags(certs):
        return ["--tls-cert", os.path.join(certs, "server.pem"), "--tls-key", os.path.join(certs, "server.key")]

    def proxy_with_config(self, text):
        """A proxy started with `--config` on `text` (checked by --validate)."""
        fd, path = tempfile.mkstemp(prefix="interop-grpc-web-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.addCleanup(os.remove, path)
        check = subprocess.run([harness.binary("proxy"), "--validate", "--config", path],
                               capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        proxy = Proxy(harness.started(self, harness.Process, "proxy", ["--config", path],
                                      r"admin interface listening addr=(\S+)"))
        proxy.wait_for_hosts(len(self.backends))
        return proxy

    def assertProxyAnswer(self, result, status, prefix, what):
        """An error the proxy gives itself: HTTP 200, trailers-only."""
        self.assertEqual(result.http_status, 200, f"{what}: {result}")
        self.assertEqual(result.status, status, f"{what}: {result}")
        self.assertEqual(result.headers.get("grpc-status"), str(status), f"{what}: in the headers: {result}")
        self.assertTrue(result.message.startswith(prefix), f"{what}: grpc-message {result.message!r}")
        self.assertEqual(result.body, b"", f"{what}: a trailers-only answer has no body: {result}")


# ---- sonora, and the text mode by hand -----------------------------------------

class SonoraInterop(WebTestCase):
    """Binary mode with sonora 0.2.3 (its `sonora.client.WebChannel`, on
    urllib3); text mode with this module's hand-written client, since sonora's
    clients cannot send it."""

    BACKENDS = ("web-b0", "web-b1", "web-b2")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ids = set(cls.BACKENDS)

    def setUp(self):
        self.proxy = self.start_proxy("--grpc-web")
        self.channel = sonora.client.insecure_web_channel(f"http://{self.proxy.addr}")
        self.addCleanup(self.channel.__exit__, None, None, None)
        # sonora's channel takes the methods' paths and (de)serializers: the
        # generated stubs of grpcio-tools pass `_registered_method`, which it
        # does not know.
        self.say_hello = self.channel.unary_unary(
            SAY_HELLO, helloworld_pb2.HelloRequest.SerializeToString, helloworld_pb2.HelloReply.FromString)
        self.get_status = self.channel.unary_unary(
            GET_STATUS, alive_pb2.GetStatusRequest.SerializeToString, alive_pb2.GetStatusResponse.FromString)
        self.echo = self.channel.unary_unary(
            ECHO, echo_pb2.EchoRequest.SerializeToString, echo_pb2.EchoReply.FromString)
        self.expand = self.channel.unary_stream(
            EXPAND, echo_pb2.ExpandRequest.SerializeToString, echo_pb2.EchoReply.FromString)

    @staticmethod
    def metadata(call):
        return {k.lower(): v for k, v in call.initial_metadata()}

    def until_every_backend_answered(self):
        """Calls until each backend has answered one, before a spread is
        counted. `wait_for_hosts` sees a host's connection open (cx_active),
        but the balancer passes a host over until it has answered on that
        connection (its PING); a call is only ever sent on an answered
        connection, so once each backend answered one, all three are in
        rotation and round robin spreads exactly."""
        seen, deadline = set(), time.monotonic() + 10
        while seen != self.ids and time.monotonic() < deadline:
            r = grpc_web(self.proxy.addr, GET_STATUS, b"")
            self.assertEqual(r.status, 0, r)
            seen.add(r.backend)
        self.assertEqual(seen, self.ids, "every backend answered a call within 10 s")

    def test_sonora_unary_calls_spread_over_the_backends(self):
        self.until_every_backend_answered()
        seen, order = collections.Counter(), []
        for i in range(30):
            if i % 2:
                reply, call = self.get_status.with_call(alive_pb2.GetStatusRequest(), timeout=5)
                self.assertTrue(reply.status)
            else:
                reply, call = self.say_hello.with_call(helloworld_pb2.HelloRequest(name="sonora"), timeout=5)
                self.assertEqual(reply.message, "Hello sonora")
            headers = self.metadata(call)
            self.assertEqual(headers.get("content-type"), "application/grpc-web+proto", headers)
            self.assertIn(("grpc-status", "0"), call.trailing_metadata())
            seen[headers["x-backend-id"]] += 1
            order.append(headers["x-backend-id"][-1])
        print(f"grpc-web: sonora unary calls per backend {dict(sorted(seen.items()))}")
        self.assertEqual(set(seen), self.ids)
        self.assertEqual(sorted(seen.values()), [10, 10, 10], f"round robin: a third each; {''.join(order)}, "
                         f"stats {self.proxy.web_stats()}")

    def test_sonora_echo_status_details_and_trailer(self):
        # An OK answer carries its status in the trailer frame.
        reply, call = self.echo.with_call(echo_pb2.EchoRequest(message="m"), timeout=5)
        self.assertEqual(reply.message, "m")
        self.assertIn(reply.backend_id, self.ids)
        self.assertEqual(self.metadata(call)["x-backend-id"], reply.backend_id)

        # An error without messages is trailers-only: status, message and the
        # trailer are HTTP headers. sonora raises from the status; it shows
        # the rest only as the call's initial_metadata (the HTTP headers),
        # and its with_call raises before handing back the call, so the call
        # is built here as with_call builds it.
        request = echo_pb2.EchoRequest(status_code=7, status_message="denied: 100% sure",
                                       trailer="sonora-unary")
        call = sonora.client.UnaryUnaryCall(
            request, 5, list(self.echo._metadata), self.echo._rpc_url, self.echo._session,
            echo_pb2.EchoRequest.SerializeToString, echo_pb2.EchoReply.FromString)
        with self.assertRaises(sonora.protocol.WebRpcError) as caught:
            call()
        self.assertEqual(caught.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        self.assertEqual(caught.exception.details(), "denied: 100% sure")
        headers = self.metadata(call)
        self.assertEqual(headers.get("grpc-status"), "7", headers)
        self.assertEqual(headers.get("x-echo-trailer"), "sonora-unary", headers)
        self.assertIn(headers.get("x-backend-id"), self.ids, headers)

        # Through the plain multicallable, as an application sees it.
        with self.assertRaises(sonora.protocol.WebRpcError) as caught:
            self.echo(echo_pb2.EchoRequest(status_code=5, status_message="not here"), timeout=5)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertEqual(caught.exception.details(), "not here")

    def test_sonora_server_streaming_with_trailer_and_with_an_error(self):
        call = self.expand(echo_pb2.ExpandRequest(message="s", count=5, interval_ms=20,
                                                  trailer="sonora-stream"), timeout=5)
        replies = list(call)
        self.assertEqual([r.seq for r in replies], [0, 1, 2, 3, 4])
        self.assertEqual([r.message for r in replies], [f"s {i}" for i in range(5)])
        self.assertEqual({r.backend_id for r in replies}, {self.metadata(call)["x-backend-id"]})
        trailers = dict(call.trailing_metadata())
        self.assertEqual(trailers.get("grpc-status"), "0", trailers)
        self.assertEqual(trailers.get("x-echo-trailer"), "sonora-stream", trailers)

        call = self.expand(echo_pb2.ExpandRequest(message="e", count=3, interval_ms=20, status_code=9,
                                                  status_message="stopped after 3"), timeout=5)
        got = []
        with self.assertRaises(sonora.protocol.WebRpcError) as caught:
            for reply in call:
                got.append(reply.message)
        self.assertEqual(got, ["e 0", "e 1", "e 2"], "the replies before the error")
        self.assertEqual(caught.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertEqual(caught.exception.details(), "stopped after 3")
        self.assertEqual(dict(call.trailing_metadata()).get("grpc-status"), "9")

        # Streams are balanced per call too.
        self.until_every_backend_answered()
        seen = collections.Counter()
        for _ in range(6):
            call = self.expand(echo_pb2.ExpandRequest(message="b", count=2), timeout=5)
            seen[{r.backend_id for r in call}.pop()] += 1
        self.assertEqual(sorted(seen.values()), [2, 2, 2], seen)

    def test_text_mode_by_hand_unary_errors_streams_and_spread(self):
        addr = self.proxy.addr
        self.until_every_backend_answered()
        seen = collections.Counter()
        for i in range(30):
            if i % 2:
                r = grpc_web(addr, GET_STATUS, b"", "text")
                self.assertEqual(r.status, 0, r)
                self.assertTrue(alive_pb2.GetStatusResponse.FromString(r.messages[0]).status)
            else:
                r = grpc_web(addr, SAY_HELLO, helloworld_pb2.HelloRequest(name="text").SerializeToString(), "text")
                self.assertEqual(r.status, 0, r)
                self.assertEqual(helloworld_pb2.HelloReply.FromString(r.messages[0]).message, "Hello text")
            self.assertEqual(r.http_status, 200)
            self.assertEqual(r.content_type, "application/grpc-web-text+proto", r)
            self.assertEqual(len(r.messages), 1, r)
            seen[r.backend] += 1
        print(f"grpc-web: text-mode unary calls per backend {dict(sorted(seen.items()))}")
        self.assertEqual(set(seen), self.ids)
        self.assertEqual(sorted(seen.values()), [10, 10, 10], "round robin: a third each")

        # Trailers-only error: status, message and trailer in the headers.
        request = echo_pb2.EchoRequest(status_code=7, status_message="denied: 100% sure", trailer="text-unary")
        r = grpc_web(addr, ECHO, request.SerializeToString(), "text")
        self.assertEqual((r.http_status, r.status, r.message), (200, 7, "denied: 100% sure"), r)
        self.assertEqual(r.headers.get("x-echo-trailer"), "text-unary", r)
        self.assertEqual(r.messages, [])

        # A stream with its trailer in the (base64) trailer frame.
        request = echo_pb2.ExpandRequest(message="t", count=5, interval_ms=20, trailer="text-stream")
        r = grpc_web(addr, EXPAND, request.SerializeToString(), "text")
        self.assertEqual(r.status, 0, r)
        replies = [echo_pb2.EchoReply.FromString(m) for m in r.messages]
        self.assertEqual([x.message for x in replies], [f"t {i}" for i in range(5)])
        self.assertEqual([x.seq for x in replies], list(range(5)))
        self.assertEqual({x.backend_id for x in replies}, {r.backend})
        self.assertEqual(r.trailers.get("x-echo-trailer"), "text-stream", r)

        # A stream that ends with an error after its replies.
        request = echo_pb2.ExpandRequest(message="e", count=3, interval_ms=20, status_code=9,
                                         status_message="stopped after 3")
        r = grpc_web(addr, EXPAND, request.SerializeToString(), "text")
        self.assertEqual([echo_pb2.EchoReply.FromString(m).message for m in r.messages], ["e 0", "e 1", "e 2"])
        self.assertEqual((r.status, r.message), (9, "stopped after 3"), r)
        self.assertEqual(r.trailers.get("grpc-status"), "9", r)

    def test_accept_text_gets_a_text_answer(self):
        """The spec: the answer is text for text requests, or when the request
        accepts `application/grpc-web-text`."""
        request = helloworld_pb2.HelloRequest(name="accept").SerializeToString()
        r = grpc_web(self.proxy.addr, SAY_HELLO, request, "binary", {"Accept": "application/grpc-web-text"})
        self.assertEqual(r.content_type, "application/grpc-web-text+proto", r)
        self.assertEqual(r.status, 0, r)
        self.assertEqual(helloworld_pb2.HelloReply.FromString(r.messages[0]).message, "Hello accept")


# ---- Raw HTTP/1.1 and HTTP/2 ----------------------------------------------------

class SteadyClient:
    """A grpcio client on plain gRPC calling SayHello without pause on one
    channel, from a thread, until `close`; it counts successes and keeps the
    failures."""

    def __init__(self, addr):
        self.channel = grpc.insecure_channel(addr)
        self.stub = helloworld_pb2_grpc.GreeterStub(self.channel)
        self.ok = 0
        self.failures = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def call(self):
        try:
            reply = self.stub.SayHello(helloworld_pb2.HelloRequest(name="grpcio"), timeout=2)
            if reply.message != "Hello grpcio":
                raise AssertionError(f"answer {reply.message!r}")
            self.ok += 1
        except Exception as e:  # noqa: BLE001 - every failure is what the test counts
            self.failures.append(repr(e))

    def run(self):
        deadline = time.monotonic() + 120
        while not self.done.is_set() and time.monotonic() < deadline:
            self.call()

    def stop(self):
        self.done.set()
        if self.thread.is_alive():
            self.thread.join(10)

    def close(self):
        self.stop()
        self.channel.close()


class WireInterop(WebTestCase):
    BACKENDS = ("wire-b0", "wire-b1", "wire-b2")

    def test_text_mode_stream_decoded_by_hand(self):
        proxy = self.start_proxy("--grpc-web")
        before = proxy.web_stats()
        request = echo_pb2.ExpandRequest(message="x", count=5, interval_ms=20, trailer="by-hand")
        r = grpc_web(proxy.addr, EXPAND, request.SerializeToString(), "text")
        print(f"grpc-web: text-mode Expand of 5 arrived in {len(r.chunks)} reads of "
              f"{[len(c) for c in r.chunks]} bytes")
        self.assertEqual(r.http_status, 200, r)
        self.assertEqual(r.content_type, "application/grpc-web-text+proto", r)
        self.assertIsNotNone(re.fullmatch(rb"[A-Za-z0-9+/=\s]+", r.body), f"not base64: {r.body[:80]!r}")
        self.assertEqual([echo_pb2.EchoReply.FromString(m).message for m in r.messages],
                         [f"x {i}" for i in range(5)])
        self.assertEqual(r.trailers.get("grpc-status"), "0")
        self.assertEqual(r.trailers.get("x-echo-trailer"), "by-hand")
        self.assertIn(r.backend, set(self.BACKENDS))
        moved = delta(before, proxy.web_stats())
        self.assertEqual((moved["grpc_web.calls"], moved["grpc_web.text_calls"]), (1, 1), moved)

    def test_proxy_errors_while_grpcio_keeps_working(self):
        proxy = self.start_proxy("--grpc-web")
        steady = SteadyClient(proxy.addr)
        self.addCleanup(steady.close)
        steady.call()
        self.assertEqual((steady.ok, steady.failures), (1, []), "a grpcio call before")
        steady.thread.start()
        eventually("the grpcio client calls", 10, lambda: steady.ok >= 3)
        before = proxy.web_stats()
        hello = helloworld_pb2.HelloRequest(name="web").SerializeToString()
        good = frame(hello)

        malformed = [
            ("bad base64 characters", b"AAAA!!!*", CONTENT_TYPES["text"]),
            ("bad padding", base64.b64encode(good)[:4] + b"AA=A", CONTENT_TYPES["text"]),
            ("a frame longer than the body", struct.pack(">BI", 0, 100) + hello, CONTENT_TYPES["binary"]),
            ("a truncated 3-byte body", b"\x00\x00\x00", CONTENT_TYPES["binary"]),
            ("a trailer frame in a request", frame(b"grpc-status: 0\r\n", 0x80), CONTENT_TYPES["binary"]),
            ("an unknown frame flag", frame(hello, 0x02), CONTENT_TYPES["binary"]),
        ]
        for what, body, content_type in malformed:
            with self.subTest(what):
                self.assertProxyAnswer(raw_post(proxy.addr, SAY_HELLO, body, content_type), 13, MALFORMED, what)

        # Over the default max_request_bytes (4 MiB), decoded.
        big = frame(b"\x00" * (5 * 1024 * 1024))
        r = raw_post(proxy.addr, SAY_HELLO, big)
        self.assertProxyAnswer(r, 8, f"gRPC-Web request larger than max_request_bytes ({DEFAULT_MAX_REQUEST_BYTES})",
                               "a 5 MiB body")

        r = raw_post(proxy.addr, "/gateway.EchoService/Collect", frame(b"") + frame(b""))
        self.assertProxyAnswer(r, 12, STREAMING_REFUSED, "two messages in one body")

        # HTTP/1.1 that is not gRPC-Web.
        not_grpc_web = [
            ("GET /", "GET", "/", b"", {}),
            ("POST application/json", "POST", SAY_HELLO, b"{}", {"Content-Type": "application/json"}),
            ("application/grpc over HTTP/1.1", "POST", SAY_HELLO, good, {"Content-Type": "application/grpc"}),
        ]
        for what, method, path, body, headers in not_grpc_web:
            with self.subTest(what):
                r = http1(proxy.addr, method, path, body, headers)
                self.assertEqual(r.http_status, 415, f"{what}: {r}")
                self.assertTrue(r.content_type.startswith("text/plain"), f"{what}: {r}")
                self.assertEqual(len(r.body.decode().strip().splitlines()), 1, f"{what}: a one-line reason: {r}")

        # And a good one in between, in each mode.
        for mode in ("binary", "text"):
            r = grpc_web(proxy.addr, SAY_HELLO, hello, mode)
            self.assertEqual((r.status, helloworld_pb2.HelloReply.FromString(r.messages[0]).message),
                             (0, "Hello web"), r)

        during = steady.ok
        steady.stop()
        moved = delta(before, proxy.web_stats())
        print(f"grpc-web: while the proxy refused bad gRPC-Web, grpcio made {during} calls, "
              f"{len(steady.failures)} failed; stats moved {moved}")
        self.assertEqual(steady.failures, [], "the grpcio client lost calls")
        self.assertGreater(during, 3, "grpcio calls during")
        steady.call()
        self.assertEqual(steady.failures, [], "a grpcio call after")

        self.assertEqual(moved["grpc_web.malformed"], len(malformed), moved)
        self.assertEqual(moved["grpc_web.too_large"], 1, moved)
        self.assertEqual(moved["grpc_web.streaming_refused"], 1, moved)
        self.assertEqual(moved["http1.refused"], len(not_grpc_web), moved)
        self.assertGreaterEqual(moved["grpc_web.text_calls"], 1, moved)
        self.assertGreaterEqual(moved["grpc_web.calls"], 2, moved)

    def test_max_request_bytes_from_the_config_file(self):
        upstreams = ", ".join(b.addr for b in self.backends)
        proxy = self.proxy_with_config(f"""\
admin: 127.0.0.1:0
access_log: false
listeners:
  - name: web
    address: 127.0.0.1:0
    cluster: backend
    grpc_web:
      max_request_bytes: 1024
clusters:
  - name: backend
    upstreams: [{upstreams}]
""")
        self.assertEqual(proxy.listener, "web")
        listeners = json.loads(proxy.get("/listeners?format=json"))["listener_statuses"]
        self.assertEqual([(l["name"], l.get("grpc_web"), l.get("tls")) for l in listeners],
                         [("web", True, False)], listeners)
        before = proxy.web_stats()
        small = helloworld_pb2.HelloRequest(name="s" * 500).SerializeToString()
        r = grpc_web(proxy.addr, SAY_HELLO, small)
        self.assertEqual(r.status, 0, r)
        self.assertEqual(helloworld_pb2.HelloReply.FromString(r.messages[0]).message, "Hello " + "s" * 500)
        large = helloworld_pb2.HelloRequest(name="l" * 2000).SerializeToString()
        for mode in ("binary", "text"):
            r = grpc_web(proxy.addr, SAY_HELLO, large, mode)
            self.assertProxyAnswer(r, 8, "gRPC-Web request larger than max_request_bytes (1024)", mode)
        moved = delta(before, proxy.web_stats())
        self.assertEqual(moved["grpc_web.too_large"], 2, moved)
        self.assertEqual(moved["upstream_rq_total"], 1, f"only the small call reached a backend: {moved}")

    def test_cors_preflights_and_origins(self):
        allowed, pattern_origin, other = "http://app.example", "http://localhost:5173", "http://evil.example"
        proxy = self.start_proxy("--cors-origin", allowed, "--cors-origin", "http://localhost:*")
        preflight_headers = {"Access-Control-Request-Method": "POST",
                             "Access-Control-Request-Headers": "content-type,x-grpc-web,x-user-agent,x-app-metadata"}

        def preflight(origin):
            return http1(proxy.addr, "OPTIONS", SAY_HELLO, b"", {"Origin": origin, **preflight_headers})

        def listed(value):
            return {v.strip().lower() for v in (value or "").split(",") if v.strip()}

        for origin in (allowed, pattern_origin):
            with self.subTest(preflight=origin):
                before = proxy.web_stats()
                r = preflight(origin)
                moved = delta(before, proxy.web_stats())
                self.assertEqual(r.http_status, 204, r)
                self.assertEqual(r.headers.get("access-control-allow-origin"), origin, r)
                self.assertEqual(listed(r.headers.get("access-control-allow-methods")), {"post", "options"}, r)
                # What the preflight asked for, echoed (PROTOCOL-WEB.md's advice).
                self.assertEqual({"content-type", "x-grpc-web", "x-user-agent", "x-app-metadata"},
                                 listed(r.headers.get("access-control-allow-headers")), r)
                self.assertEqual(r.headers.get("access-control-max-age"), "86400", r)
                self.assertIn("origin", listed(r.headers.get("vary")), r)
                self.assertEqual(moved["upstream_rq_total"], 0, f"a preflight reached a backend: {moved}")
                self.assertEqual(moved["cors.preflight"], 1, moved)
                self.assertEqual(moved["cors.origin_invalid"], 0, moved)
                self.assertIn(moved["cors.origin_valid"], (0, 1), moved)

        with self.subTest(preflight=other):
            before = proxy.web_stats()
            r = preflight(other)
            moved = delta(before, proxy.web_stats())
            self.assertEqual(r.http_status, 403, r)
            self.assertNotIn("access-control-allow-origin", r.headers, r)
            self.assertEqual(len(r.body.decode().strip().splitlines()), 1, f"a one-line reason: {r}")
            self.assertEqual(moved["upstream_rq_total"], 0, moved)
            self.assertEqual(moved["cors.origin_invalid"], 1, moved)

        hello = helloworld_pb2.HelloRequest(name="cors").SerializeToString()
        with self.subTest(call=allowed):
            before = proxy.web_stats()
            r = grpc_web(proxy.addr, SAY_HELLO, hello, origin=allowed)
            moved = delta(before, proxy.web_stats())
            self.assertEqual(r.status, 0, r)
            self.assertEqual(r.headers.get("access-control-allow-origin"), allowed, r)
            self.assertLessEqual({"grpc-status", "grpc-message", "x-backend-id"},
                                 listed(r.headers.get("access-control-expose-headers")), r)
            self.assertIn("origin", listed(r.headers.get("vary")), r)
            self.assertEqual((moved["cors.origin_valid"], moved["grpc_web.calls"], moved["upstream_rq_total"]),
                             (1, 1, 1), moved)

        with self.subTest(call=other):
            before = proxy.web_stats()
            r = grpc_web(proxy.addr, SAY_HELLO, hello, origin=other)
            moved = delta(before, proxy.web_stats())
            self.assertEqual(r.http_status, 403, r)
            self.assertNotIn("access-control-allow-origin", r.headers, r)
            self.assertEqual(moved["upstream_rq_total"], 0, f"a refused origin's call was forwarded: {moved}")
            self.assertEqual(moved["cors.origin_invalid"], 1, moved)

        # Without CORS configured, preflights are refused.
        plain = self.start_proxy("--grpc-web")
        r = http1(plain.addr, "OPTIONS", SAY_HELLO, b"", {"Origin": allowed, **preflight_headers})
        self.assertEqual(r.http_status, 403, r)

    def test_without_grpc_web_http1_is_refused_505(self):
        proxy = self.start_proxy()
        r = grpc_web(proxy.addr, SAY_HELLO, b"")
        self.assertEqual(r.http_status, 505, r)

    def test_tls_listener_offers_http1_and_h2(self):
        certs = self.make_certs()
        proxy = self.start_proxy("--grpc-web", *self.tls_flags(certs))
        listeners = json.loads(proxy.get("/listeners?format=json"))["listener_statuses"]
        self.assertEqual([(l.get("grpc_web"), l.get("tls")) for l in listeners], [(True, True)], listeners)

        def context(protocols):
            tls = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
            tls.set_alpn_protocols(protocols)
            return tls

        host, port = proxy.addr.rsplit(":", 1)
        for offered, chosen in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
            with socket.create_connection((host, int(port)), timeout=10) as raw:
                with context(offered).wrap_socket(raw, server_hostname="localhost") as sock:
                    self.assertEqual(sock.selected_alpn_protocol(), chosen, f"ALPN offering {offered}")
        hello = helloworld_pb2.HelloRequest(name="tls").SerializeToString()
        for mode in ("binary", "text"):
            r = grpc_web(proxy.addr, SAY_HELLO, hello, mode, tls=context(["http/1.1"]))
            self.assertEqual(r.status, 0, r)
            self.assertEqual(helloworld_pb2.HelloReply.FromString(r.messages[0]).message, "Hello tls")

    def test_http2_grpc_web_call_has_its_trailers_in_the_body(self):
        proxy = self.start_proxy("--grpc-web")
        host, port = proxy.addr.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=10)
        self.addCleanup(sock.close)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [
            (":method", "POST"), (":scheme", "http"), (":path", SAY_HELLO), (":authority", proxy.addr),
            ("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1"), ("x-user-agent", "interop-test"),
        ])
        conn.send_data(stream, frame(helloworld_pb2.HelloRequest(name="h2").SerializeToString()), end_stream=True)
        sock.sendall(conn.data_to_send())
        headers, body, http2_trailers, ended = None, b"", None, False
        deadline = time.monotonic() + 10
        while not ended:
            self.assertLess(time.monotonic(), deadline, "no complete answer in 10 s")
            data = sock.recv(65536)
            self.assertTrue(data, "the proxy closed the connection")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    headers = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    http2_trailers = dict(event.headers)
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
                elif isinstance(event, h2.events.StreamReset):
                    self.fail(f"stream reset: {event}")
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
        self.assertEqual(headers.get(":status"), "200", headers)
        self.assertEqual(headers.get("content-type"), "application/grpc-web+proto", headers)
        self.assertIn(headers.get("x-backend-id"), set(self.BACKENDS), headers)
        self.assertIsNone(http2_trailers, "gRPC-Web answers carry no HTTP/2 trailers")
        messages, trailers = parse_frames(body)
        self.assertEqual([helloworld_pb2.HelloReply.FromString(m).message for m in messages], ["Hello h2"])
        self.assertIsNotNone(trailers, f"no trailer frame in the body {body!r}")
        self.assertEqual(trailers.get("grpc-status"), "0", trailers)


# ---- The demo page in Chromium -------------------------------------------------

READ_PAGE = r"""(() => {
  const state = document.getElementById("state");
  if (!state) return null;
  return {
    state: state.textContent.trim(),
    target: document.getElementById("target").value,
    bursting: document.getElementById("burst").disabled,
    rows: [...document.querySelectorAll("#calls tbody tr")].map(tr => ({
      method: tr.dataset.method, backend: tr.dataset.backend, status: tr.dataset.status,
      mode: tr.dataset.mode, answer: (tr.querySelector("td.answer") || {}).textContent,
    })),
    tally: [...document.querySelectorAll("#tally li")].map(li => ({ backend: li.dataset.backend, text: li.textContent.trim() })),
    resources: performance.getEntriesByType("resource").map(e => e.name),
    scripts: [...document.scripts].map(s => s.src),
  };
})()"""

# The protocol of each call to a target, `%s` the target's prefix as JSON.
READ_PROTOCOLS = r"""(prefix => performance.getEntriesByType("resource")
  .filter(e => e.name.startsWith(prefix)).map(e => e.nextHopProtocol))(%s)"""


def read_page(page):
    return page.evaluate(READ_PAGE) or {"state": None, "rows": []}


def rows_then(page, n):
    """What the page shows once it has `n` rows and no burst running."""
    shown = read_page(page)
    return shown if len(shown["rows"]) >= n and not shown.get("bursting") else None


class BrowserDemo(WebTestCase):
    BACKENDS = ("page-b0", "page-b1", "page-b2")
    CORS = ("--grpc-web", "--cors-origin", "http://127.0.0.1:*")

    def start_with_admin_origin(self, *flags):
        """A proxy that lets pages of any 127.0.0.1 port call (a wildcard
        origin), its admin's demo page among them: (proxy, the page's origin)."""
        proxy = self.start_proxy(*self.CORS, *flags)
        return proxy, f"http://{proxy.admin}"

    def browser(self):
        """The chromium to run; skips the test without one, fails it in CI."""
        return harness.chromium(self)

    def click_through(self, page, target):
        """Waits for the page to be ready on `target`, then clicks #say-hello,
        #get-status and #burst in the binary mode, then in the text mode,
        each time waiting for its rows: what the page shows at the end."""
        def settled():
            shown = read_page(page)
            return shown if shown["state"] and not shown["state"].startswith("loading") else None

        shown = eventually("the page finds its target", 15, settled)
        self.assertEqual(shown["state"], "ready", shown)
        self.assertEqual(shown["target"], target, shown)
        n = 0
        for mode in ("binary", "text"):
            page.evaluate(f"""(() => {{ const m = document.getElementById("mode");
                m.value = "{mode}"; m.dispatchEvent(new Event("change")); }})()""")
            for button, calls in (("say-hello", 1), ("get-status", 1), ("burst", 30)):
                page.evaluate(f'document.getElementById("{button}").click()')
                n += calls
                shown = eventually(f"{mode}: #{button}'s {calls} row(s)", 30, lambda: rows_then(page, n))
        return shown

    def test_demo_page_calls_in_both_modes_spread_over_the_backends(self):
        browser = self.browser()
        proxy, origin = self.start_with_admin_origin()
        target = f"http://{proxy.addr}"
        no_cors = self.start_proxy("--grpc-web")
        before = proxy.web_stats()

        with Chromium(browser, f"{origin}/grpc-web", 1200, 900) as page:
            # No ?target=: the page finds the first gRPC-Web listener itself.
            shown = self.click_through(page, target)
            screenshot = os.environ.get("GRPC_WEB_SCREENSHOT")
            if screenshot:
                page.screenshot(screenshot)
                print(f"grpc-web: the demo page is in {screenshot}")

            # A target without CORS for this origin: the browser blocks the
            # call, and the page says what to set.
            n = len(shown["rows"])
            page.evaluate(f"""(() => {{ const t = document.getElementById("target");
                t.value = "http://{no_cors.addr}"; t.dispatchEvent(new Event("change")); }})()""")
            page.evaluate('document.getElementById("say-hello").click()')
            blocked = eventually("the blocked call's row", 15, lambda: rows_then(page, n + 1))

        rows = shown["rows"]
        self.check_rows(rows, shown, origin, target)
        self.assertNotEqual(blocked["rows"][0]["status"], "0", blocked["rows"][0])
        self.assertIn("--cors-origin", blocked["state"], blocked["state"])
        self.assertIn(origin, blocked["state"], blocked["state"])

        moved = delta(before, proxy.web_stats())
        print(f"grpc-web: the page's calls moved the stats {moved}")
        self.assertEqual(moved["grpc_web.calls"], len(rows), moved)
        self.assertEqual(moved["grpc_web.text_calls"], len(rows) // 2, moved)
        self.assertEqual(moved["upstream_rq_total"], len(rows), "preflights never reach a backend")
        # The browser keeps a preflight's answer for access-control-max-age:
        # one per URL, and a few more at most if calls race the first one.
        self.assertGreaterEqual(moved["cors.preflight"], 1, moved)
        self.assertLessEqual(moved["cors.preflight"], 6, f"the browser did not cache the preflights: {moved}")

    def test_demo_page_over_tls_calls_over_http2(self):
        """The page (plain http on the admin) calling a TLS gRPC-Web listener:
        the browser's ALPN picks h2, so every call is gRPC-Web over HTTP/2."""
        browser = self.browser()
        proxy, origin = self.start_with_admin_origin(*self.tls_flags(self.make_certs()))
        # The certificate names 127.0.0.1 as well as localhost, so the page's
        # host is the right name; chromium does not trust the test CA, hence
        # --ignore-certificate-errors.
        target = f"https://{proxy.addr}"
        http1_requests = f"http.{proxy.listener}.http1.requests"
        before = proxy.web_stats()
        http1_before = proxy.stats()[http1_requests]

        with Chromium(browser, f"{origin}/grpc-web?target={target}", 1200, 900,
                      flags=["--ignore-certificate-errors"]) as page:
            # The protocol of each answer, as the browser's network stack saw
            # it (DevTools `Response.protocol`, preflights included).
            page.page.call("Network.enable")
            shown = self.click_through(page, target)
            n = len(shown["rows"])

            def responses():
                page.evaluate("0")  # reads the events sent meanwhile
                seen = [e["params"] for e in page.page.events if e["method"] == "Network.responseReceived"
                        and e["params"]["response"]["url"].startswith(target + "/")]
                return seen if sum(1 for r in seen if r.get("type") != "Preflight") >= n else None

            answers = eventually(f"DevTools reports the {n} answers from {target}", 10, responses)
            timings = page.evaluate(READ_PROTOCOLS % json.dumps(target + "/"))

        rows = shown["rows"]
        self.check_rows(rows, shown, origin, target)
        protocols = collections.Counter((r.get("type"), r["response"].get("protocol")) for r in answers)
        print(f"grpc-web: (type, protocol) of the answers from {target} in DevTools {dict(protocols)}")
        self.assertEqual({p for _, p in protocols}, {"h2"}, f"every answer over HTTP/2: {protocols}")
        self.assertEqual(sum(c for (t, _), c in protocols.items() if t != "Preflight"), n, protocols)

        # Resource timing says the same only where Timing-Allow-Origin lets
        # the page see it: for a cross-origin call without it, the browser
        # gives "" (https://w3c.github.io/resource-timing/#sec-timing-allow-origin).
        tao = {any(k.lower() == "timing-allow-origin" for k in r["response"]["headers"])
               for r in answers if r.get("type") != "Preflight"}
        print(f"grpc-web: nextHopProtocol of the calls to {target} {dict(collections.Counter(timings))}, "
              f"timing-allow-origin sent: {tao}")
        self.assertEqual(len(timings), n, f"one resource entry per call: {timings}")
        self.assertEqual(len(tao), 1, "timing-allow-origin on some answers only")
        self.assertEqual(set(timings), {"h2"} if tao == {True} else {""}, f"timing-allow-origin {tao}")

        moved = delta(before, proxy.web_stats())
        moved["http1.requests"] = proxy.stats()[http1_requests] - http1_before
        print(f"grpc-web: the page's calls over TLS moved the stats {moved}")
        self.assertEqual(moved["http1.requests"], 0, f"a request came over HTTP/1.1: {moved}")
        self.assertEqual(moved["grpc_web.calls"], n, moved)
        self.assertEqual(moved["grpc_web.text_calls"], n // 2, moved)
        self.assertEqual(moved["upstream_rq_total"], n, "preflights never reach a backend")
        self.assertGreaterEqual(moved["cors.preflight"], 1, moved)

    def check_rows(self, rows, shown, origin, target):
        """What the page shows after its calls; on a failure, all of it is printed."""
        try:
            self._check_rows(rows, shown, origin, target)
        except AssertionError:
            print(f"grpc-web: the page showed {shown}")
            raise

    def _check_rows(self, rows, shown, origin, target):
        self.assertEqual(len(rows), 64, "1 + 1 + 30 calls in each mode")
        self.assertEqual(collections.Counter(r["status"] for r in rows), {"0": 64}, "every call OK")
        self.assertEqual(collections.Counter(r["mode"] for r in rows), {"binary": 32, "text": 32})
        self.assertEqual(collections.Counter(r["method"] for r in rows), {"SayHello": 32, "GetStatus": 32})
        self.assertEqual({r["answer"] for r in rows if r["method"] == "SayHello"}, {"Hello browser"})
        self.assertEqual({r["answer"] for r in rows if r["method"] == "GetStatus"}, {"status: true"})
        spread = collections.Counter(r["backend"] for r in rows)
        print(f"grpc-web: the page's calls per backend {dict(sorted(spread.items()))}")
        self.assertEqual(set(spread), set(self.BACKENDS))
        for backend, calls in spread.items():
            self.assertGreaterEqual(calls, 0.2 * len(rows), f"{backend}'s share: {spread}")
        tally = {t["backend"]: t["text"] for t in shown["tally"]}
        self.assertEqual(tally, {b: f"{b}: {c}" for b, c in spread.items()}, "#tally")
        self.assertEqual([u for u in shown["resources"] if not (u.startswith(origin + "/") or u.startswith(target + "/"))],
                         [], "the page loaded something from elsewhere than the admin and the target")
        self.assertEqual([s for s in shown["scripts"] if s], [], "the page loads a script file")


if __name__ == "__main__":
    unittest.main()
