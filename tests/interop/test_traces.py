"""Trace export over OTLP, received by a collector written outside the project.

The collector is a grpcio server of `opentelemetry.proto.collector.trace.v1.
TraceService` (the `opentelemetry-proto` package's own stubs), on an
ephemeral port; the proxy is started with a `traces:` section pointing at it.
Calls from grpcio clients, some carrying a W3C `traceparent`, must arrive as
one span each with the client's trace continued; a collector that is away
must cost no call, only counted drops.
"""

import concurrent.futures
import os
import re
import shutil
import tempfile
import threading
import time
import unittest

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

import harness

harness.load_stubs()
from gateway import alive_pb2, alive_pb2_grpc  # noqa: E402
from helloworld import helloworld_pb2, helloworld_pb2_grpc  # noqa: E402

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def eventually(what, timeout, predicate, interval=0.05):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(interval)


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span it is sent, with its resource's attributes."""

    def __init__(self):
        self.spans = []
        self.resources = []
        self.lock = threading.Lock()
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request, context):  # noqa: N802 (the service's name)
        with self.lock:
            for rs in request.resource_spans:
                self.resources.append({a.key: a.value.string_value for a in rs.resource.attributes})
                for ss in rs.scope_spans:
                    self.spans.extend(ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def count(self):
        with self.lock:
            return len(self.spans)


def attributes(span):
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = v.string_value if v.HasField("string_value") else v.int_value
    return out


class TracesInterop(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="interop-traces-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def proxy(self, endpoint, upstreams, extra=""):
        path = os.path.join(self.dir, "proxy.yaml")
        with open(path, "w") as f:
            f.write(
                "admin: 127.0.0.1:0\naccess_log: false\n"
                "listeners:\n  - name: ingress\n    address: 127.0.0.1:0\n    cluster: backend\n"
                f"clusters:\n  - name: backend\n    upstreams: [{', '.join(upstreams)}]\n"
                f"traces:\n  otlp_endpoint: {endpoint}\n  service_name: interop-proxy\n"
                f"  scheduled_delay: 100ms\n{extra}"
            )
        proxy = harness.started(
            self, harness.Process, "proxy", ["--config", path], r"admin interface listening addr=(\S+)"
        )
        eventually("the listener announced", 10, lambda: any("listener=ingress" in l for l in proxy.stderr_lines))
        line = next(l for l in proxy.stderr_lines if "listener=ingress" in l)
        proxy.listen = re.search(r"\baddr=(\S+)", line).group(1)
        return proxy

    def stats(self, proxy):
        return harness.admin_stats(proxy.addr)

    def test_each_call_is_one_span_continuing_the_clients_trace(self):
        collector = Collector()
        self.addCleanup(collector.server.stop, None)
        b1, b2 = (harness.started(self, harness.backend, name) for name in ("t1", "t2"))
        proxy = self.proxy(f"http://127.0.0.1:{collector.port}", [b1.addr, b2.addr])
        channel = grpc.insecure_channel(proxy.listen)
        self.addCleanup(channel.close)
        alive = alive_pb2_grpc.AliveServiceStub(channel)
        greeter = helloworld_pb2_grpc.GreeterStub(channel)
        traced = (("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),)
        for _ in range(10):
            alive.GetStatus(alive_pb2.GetStatusRequest(), timeout=5, metadata=traced)
        for _ in range(10):
            greeter.SayHello(helloworld_pb2.HelloRequest(name="t"), timeout=5)
        # Not sampled by the client: continued upstream, never exported.
        alive.GetStatus(
            alive_pb2.GetStatusRequest(), timeout=5,
            metadata=(("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"),),
        )
        eventually("20 spans at the collector", 10, lambda: collector.count() >= 20)
        spans = list(collector.spans)
        self.assertEqual(len(spans), 20, "one span per sampled call")
        self.assertTrue(all(r.get("service.name") == "interop-proxy" for r in collector.resources))

        continued = [s for s in spans if s.trace_id.hex() == CLIENT_TRACE]
        self.assertEqual(len(continued), 10)
        for s in continued:
            self.assertEqual(s.parent_span_id.hex(), CLIENT_SPAN)
            self.assertEqual(s.name, "gateway.AliveService/GetStatus")
            a = attributes(s)
            self.assertEqual((a["rpc.system"], a["rpc.service"], a["rpc.method"]), ("grpc", "gateway.AliveService", "GetStatus"))
            self.assertEqual(a["rpc.grpc.status_code"], 0)
            self.assertIn(f"{a['server.address']}:{a['server.port']}", (b1.addr, b2.addr))
            self.assertEqual(a["proxy.cluster"], "backend")
            self.assertGreater(s.end_time_unix_nano, s.start_time_unix_nano)
        new = [s for s in spans if s.trace_id.hex() != CLIENT_TRACE]
        self.assertEqual(len(new), 10)
        self.assertEqual(len({s.trace_id for s in new}), 10, "a new trace per untraced call")
        self.assertTrue(all(s.parent_span_id == b"" for s in new))
        self.assertEqual(len({s.span_id for s in spans}), 20)
        hosts = {attributes(s)["server.port"] for s in spans}
        self.assertEqual(len(hosts), 2, "both hosts appear")
        self.assertEqual(self.stats(proxy)["traces.spans_exported"], 20)
        print(f"\ntraces: 20 spans exported for 21 calls (1 not sampled by its client), hosts {sorted(hosts)}")

    def test_a_collector_that_is_away_costs_no_call(self):
        # A port nothing listens on: every export fails; the calls do not care.
        sock_holder = __import__("socket").socket()
        sock_holder.bind(("127.0.0.1", 0))
        dead = sock_holder.getsockname()[1]
        sock_holder.close()
        b1 = harness.started(self, harness.backend, "d1")
        proxy = self.proxy(f"http://127.0.0.1:{dead}", [b1.addr], "  max_queue_size: 16\n  max_export_batch_size: 8\n  export_timeout: 200ms\n")
        channel = grpc.insecure_channel(proxy.listen)
        self.addCleanup(channel.close)
        alive = alive_pb2_grpc.AliveServiceStub(channel)
        for _ in range(300):
            alive.GetStatus(alive_pb2.GetStatusRequest(), timeout=5)
        eventually("every span dropped and counted", 15, lambda: self.stats(proxy).get("traces.spans_dropped", 0) == 300)
        stats = self.stats(proxy)
        self.assertEqual(stats["traces.spans_exported"], 0)
        self.assertGreater(stats["traces.export_failures"], 0)
        print(f"\ntraces, collector away: 300 calls ok, {stats['traces.spans_dropped']} spans dropped, "
              f"{stats['traces.export_failures']} exports failed")


if __name__ == "__main__":
    unittest.main()
