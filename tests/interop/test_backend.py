"""Python grpcio, a client written outside this project, against our backend."""

import unittest

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

import harness

harness.load_stubs()
from gateway import alive_pb2, alive_pb2_grpc, echo_pb2, echo_pb2_grpc  # noqa: E402
from helloworld import helloworld_pb2, helloworld_pb2_grpc  # noqa: E402


class BackendInterop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.backend = harness.backend("py-backend")
        cls.channel = grpc.insecure_channel(cls.backend.addr)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.backend.stop()

    def test_health_is_serving(self):
        stub = health_pb2_grpc.HealthStub(self.channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        self.assertEqual(reply.status, health_pb2.HealthCheckResponse.SERVING)
        reply = stub.Check(health_pb2.HealthCheckRequest(service="helloworld.Greeter"), timeout=5)
        self.assertEqual(reply.status, health_pb2.HealthCheckResponse.SERVING)

    def test_greeter_says_hello_world_and_names_the_backend(self):
        stub = helloworld_pb2_grpc.GreeterStub(self.channel)
        reply, call = stub.SayHello.with_call(helloworld_pb2.HelloRequest(name="world"), timeout=5)
        self.assertEqual(reply.message, "Hello world")
        self.assertIn(("x-backend-id", "py-backend"), call.initial_metadata())

    def test_alive(self):
        stub = alive_pb2_grpc.AliveServiceStub(self.channel)
        self.assertTrue(stub.GetStatus(alive_pb2.GetStatusRequest(), timeout=5).status)

    def test_reflection_lists_every_service(self):
        db = ProtoReflectionDescriptorDatabase(self.channel)
        services = set(db.get_services())
        for name in [
            "gateway.AliveService",
            "gateway.EchoService",
            "helloworld.Greeter",
            "grpc.health.v1.Health",
        ]:
            self.assertIn(name, services)

    def test_deadline_is_reported_as_deadline_exceeded(self):
        stub = echo_pb2_grpc.EchoServiceStub(self.channel)
        with self.assertRaises(grpc.RpcError) as caught:
            stub.Echo(echo_pb2.EchoRequest(message="late", delay_ms=2000), timeout=0.2)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)

    def test_server_stream_keeps_its_trailer(self):
        stub = echo_pb2_grpc.EchoServiceStub(self.channel)
        call = stub.Expand(echo_pb2.ExpandRequest(message="m", count=3, trailer="t1"), timeout=5)
        self.assertEqual([r.seq for r in call], [0, 1, 2])
        self.assertIn(("x-echo-trailer", "t1"), call.trailing_metadata())
        self.assertEqual(call.code(), grpc.StatusCode.OK)


if __name__ == "__main__":
    unittest.main()
