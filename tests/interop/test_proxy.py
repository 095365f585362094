"""Python grpcio through our proxy: one client channel, calls balanced per call."""

import collections
import unittest

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import harness

harness.load_stubs()
from gateway import echo_pb2, echo_pb2_grpc  # noqa: E402
from helloworld import helloworld_pb2, helloworld_pb2_grpc  # noqa: E402


class ProxyInterop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.backends = [harness.backend(f"py-b{i}") for i in range(3)]
        cls.proxy = harness.proxy([b.addr for b in cls.backends])
        cls.channel = grpc.insecure_channel(cls.proxy.addr)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.proxy.stop()
        for b in cls.backends:
            b.stop()

    def test_one_channel_is_balanced_per_call(self):
        stub = helloworld_pb2_grpc.GreeterStub(self.channel)
        seen = collections.Counter()
        for _ in range(300):
            reply, call = stub.SayHello.with_call(helloworld_pb2.HelloRequest(name="world"), timeout=5)
            self.assertEqual(reply.message, "Hello world")
            seen[dict(call.initial_metadata())["x-backend-id"]] += 1
        self.assertEqual(sorted(seen), ["py-b0", "py-b1", "py-b2"])
        for backend, n in seen.items():
            self.assertEqual(n, 100, seen)

    def test_health_through_the_proxy(self):
        stub = health_pb2_grpc.HealthStub(self.channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        self.assertEqual(reply.status, health_pb2.HealthCheckResponse.SERVING)

    def test_streams_statuses_and_trailers_pass_through(self):
        stub = echo_pb2_grpc.EchoServiceStub(self.channel)
        call = stub.Expand(
            echo_pb2.ExpandRequest(message="m", count=5, trailer="py-trailer"), timeout=5
        )
        self.assertEqual([r.seq for r in call], [0, 1, 2, 3, 4])
        self.assertIn(("x-echo-trailer", "py-trailer"), call.trailing_metadata())

        replies = stub.Chat(iter([echo_pb2.EchoRequest(message=f"c{i}") for i in range(10)]), timeout=5)
        self.assertEqual([r.message for r in replies], [f"c{i}" for i in range(10)])

        with self.assertRaises(grpc.RpcError) as caught:
            stub.Echo(echo_pb2.EchoRequest(status_code=7, status_message="nope"), timeout=5)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        self.assertEqual(caught.exception.details(), "nope")

    def test_deadline_through_the_proxy(self):
        stub = echo_pb2_grpc.EchoServiceStub(self.channel)
        with self.assertRaises(grpc.RpcError) as caught:
            stub.Echo(echo_pb2.EchoRequest(delay_ms=3000), timeout=0.3)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)


if __name__ == "__main__":
    unittest.main()
