"""Python grpcio over TLS to our proxy: ALPN h2, the test CA as root, balanced."""

import collections
import os
import tempfile
import unittest

import grpc

import harness

harness.load_stubs()
from helloworld import helloworld_pb2, helloworld_pb2_grpc  # noqa: E402


class TlsInterop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="interop-tls-")
        cls.ca = harness.make_certs(cls.dir)
        cls.backends = [harness.backend(f"tls-b{i}") for i in range(3)]
        cls.proxy = harness.proxy(
            [b.addr for b in cls.backends],
            "--tls-cert", os.path.join(cls.dir, "server.pem"),
            "--tls-key", os.path.join(cls.dir, "server.key"),
        )
        # The certificate names localhost; grpcio checks the name.
        cls.target = "localhost:" + cls.proxy.addr.rsplit(":", 1)[1]

    @classmethod
    def tearDownClass(cls):
        cls.proxy.stop()
        for b in cls.backends:
            b.stop()

    def test_calls_over_tls_are_balanced(self):
        creds = grpc.ssl_channel_credentials(root_certificates=self.ca)
        with grpc.secure_channel(self.target, creds) as channel:
            stub = helloworld_pb2_grpc.GreeterStub(channel)
            seen = collections.Counter()
            for _ in range(30):
                reply, call = stub.SayHello.with_call(helloworld_pb2.HelloRequest(name="tls"), timeout=5)
                self.assertEqual(reply.message, "Hello tls")
                seen[dict(call.initial_metadata())["x-backend-id"]] += 1
        self.assertEqual(seen, {"tls-b0": 10, "tls-b1": 10, "tls-b2": 10})

    def test_a_client_trusting_another_ca_fails_the_handshake(self):
        other = tempfile.mkdtemp(prefix="interop-tls-other-")
        creds = grpc.ssl_channel_credentials(root_certificates=harness.make_certs(other))
        with grpc.secure_channel(self.target, creds) as channel:
            stub = helloworld_pb2_grpc.GreeterStub(channel)
            with self.assertRaises(grpc.RpcError) as caught:
                stub.SayHello(helloworld_pb2.HelloRequest(name="x"), timeout=5)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAVAILABLE)


if __name__ == "__main__":
    unittest.main()
