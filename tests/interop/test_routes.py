"""Routes, weighted clusters and live reload, seen from Python grpcio clients.

One proxy with its admin interface on, started with `--config` on a file in a
temporary directory; the reload tests rewrite that file the way an operator's
tooling should (a temporary file in the same directory, then os.replace).
Every backend names itself (`--id`), and a call is counted by the
`x-backend-id` metadata its answer carries. The format and the behaviour under
test are those of issue 17 (routes, weighted clusters, live reload).

Every test prints its figures (lines starting with the test's subject) so
that they can be quoted.
"""

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import grpc

import harness

harness.load_stubs()
from gateway import alive_pb2, alive_pb2_grpc  # noqa: E402
from helloworld import helloworld_pb2, helloworld_pb2_grpc  # noqa: E402

GREETER_PATH = "/helloworld.Greeter/SayHello"
ALIVE_PATH = "/gateway.AliveService/GetStatus"
# The admin interface never goes through an HTTP proxy of the environment.


def eventually(what, timeout, predicate, interval=0.05):
    """Polls `predicate` until it is true; fails with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(interval)


def proxy_config(routes, clusters, access_log=False, cluster_keys=()):
    """The YAML of a proxy with one L7 listener `ingress` on an ephemeral port.

    `routes` are (match, route) pairs of YAML flow mappings, in order;
    `clusters` is {name: [host addresses]}; `cluster_keys` are more lines
    given to every cluster. Admin and listener stay on port 0 in every
    version of a file, so a reload sees them unchanged.
    """
    lines = [
        "admin: 127.0.0.1:0",
        f"access_log: {'true' if access_log else 'false'}",
        "listeners:",
        "  - name: ingress",
        "    address: 127.0.0.1:0",
        "    routes:",
    ]
    for match, route in routes:
        lines += [f"      - match: {match}", f"        route: {route}"]
    lines.append("clusters:")
    for name, hosts in clusters.items():
        lines += [f"  - name: {name}", f"    upstreams: [{', '.join(hosts)}]"]
        lines += [f"    {key}" for key in cluster_keys]
    return "\n".join(lines) + "\n"


def backend_of(call):
    """The `x-backend-id` of an answered call (initial or trailing metadata)."""
    metadata = dict(call.initial_metadata() or ())
    metadata.update(dict(call.trailing_metadata() or ()))
    return metadata.get("x-backend-id")


def ids(processes):
    return {p.backend_id for p in processes}


class RoutedProxy:
    """Our proxy on a configuration file that the test may rewrite."""

    def __init__(self, test, text):
        self.dir = tempfile.mkdtemp(prefix="interop-routes-")
        test.addCleanup(shutil.rmtree, self.dir, True)
        self.path = os.path.join(self.dir, "proxy.yaml")
        self.validated = self.validate(test, text)
        self.write(text)
        self.process = test.started(
            harness.Process,
            "proxy",
            ["--config", self.path],
            r"admin interface listening addr=(\S+)",
        )
        self.admin = self.process.addr
        self.addr = None

        def listening():
            for line in list(self.process.stderr_lines):
                if "listening" in line and "listener=ingress" in line:
                    self.addr = re.search(r"\baddr=(\S+)", line).group(1)
                    return True
            return False

        eventually("the listener `ingress` announced", 10, listening)

    def validate(self, test, text):
        """`proxy --validate` on `text`: its output, once it exits 0."""
        path = os.path.join(self.dir, "validate.yaml")
        with open(path, "w") as f:
            f.write(text)
        check = subprocess.run(
            [harness.binary("proxy"), "--validate", "--config", path],
            capture_output=True,
            text=True,
        )
        test.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        return check.stdout + check.stderr

    def write(self, text):
        """Replaces the configuration file at once: readers see the old file
        or the new one, never half of it."""
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".proxy-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, self.path)

    def sighup(self):
        os.kill(self.process.proc.pid, signal.SIGHUP)

    def get(self, path):
        return harness.admin_get(self.admin, path)

    def config_dump(self):
        return json.loads(self.get("/config_dump"))

    def version(self):
        return self.config_dump()["version"]

    def cluster_names(self, dump=None):
        """The clusters of the configuration in force, by /config_dump."""
        dump = dump or self.config_dump()
        return {c["name"] for c in dump["config"]["clusters"]}

    def stats(self):
        """/stats as {name: value} (counters and gauges)."""
        return harness.admin_stats(self.admin)

    def stat(self, name):
        stats = self.stats()
        if name not in stats:
            raise AssertionError(f"no stat {name} in /stats")
        return stats[name]

    def clusters(self):
        """/clusters as {(cluster, host, key): value} for the host lines."""
        out = {}
        for line in self.get("/clusters").splitlines():
            parts = line.split("::")
            if len(parts) == 4 and ":" in parts[1]:
                out[(parts[0], parts[1], parts[2])] = parts[3]
        return out

    def wait_ready(self, clusters):
        """Waits until every host of {cluster: [backend process]} is healthy
        and connected, so that the first calls can go to any of them."""

        def ready():
            seen = self.clusters()
            return all(
                seen.get((name, b.addr, "health_flags")) == "healthy"
                and int(seen.get((name, b.addr, "cx_total"), "0")) >= 1
                for name, backends in clusters.items()
                for b in backends
            )

        eventually(f"every host of {sorted(clusters)} healthy and connected", 15, ready)


class Load:
    """Client threads calling Greeter and AliveService in turn, without pause.

    Each thread has its own channel, with its own subchannel pool so that it
    is one client connection of its own that lasts as long as the channel.
    Every call is kept as (started, ended, path, backend id, error);
    `done[i]` counts the calls thread i has finished.
    """

    def __init__(self, addr, threads):
        self.calls = []
        self.done = [0] * threads
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.channels = [
            grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(threads)
        ]
        self.threads = [
            threading.Thread(target=self.run, args=(i, channel), daemon=True)
            for i, channel in enumerate(self.channels)
        ]
        for thread in self.threads:
            thread.start()

    def run(self, index, channel):
        greeter = helloworld_pb2_grpc.GreeterStub(channel)
        alive = alive_pb2_grpc.AliveServiceStub(channel)
        calls = [
            (GREETER_PATH, greeter.SayHello, helloworld_pb2.HelloRequest(name="load")),
            (ALIVE_PATH, alive.GetStatus, alive_pb2.GetStatusRequest()),
        ]
        i = 0
        while not self.stop.is_set():
            path, method, request = calls[i % 2]
            i += 1
            started = time.monotonic()
            try:
                _, call = method.with_call(request, timeout=5)
                record = (started, time.monotonic(), path, backend_of(call), None)
            except grpc.RpcError as e:
                record = (started, time.monotonic(), path, None, f"{e.code().name}: {e.details()}")
            with self.lock:
                self.calls.append(record)
                self.done[index] += 1

    def snapshot(self):
        with self.lock:
            return list(self.calls)

    def done_since(self, t):
        """How many calls started after `t` are finished."""
        return sum(1 for c in self.snapshot() if c[0] > t)

    def close(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(10)
        for channel in self.channels:
            channel.close()


class RoutesInterop(unittest.TestCase):
    def started(self, start, *args):
        """A harness.Process from `start(*args)`, stopped at cleanup."""
        return harness.started(self, start, *args)

    def start_backends(self, prefix, n, *extra):
        """Backends named prefix1..prefixN; each knows its `backend_id`."""
        out = []
        for i in range(1, n + 1):
            process = self.started(harness.backend, f"{prefix}{i}", *extra)
            process.backend_id = f"{prefix}{i}"
            out.append(process)
        return out

    def channel(self, proxy):
        channel = grpc.insecure_channel(proxy.addr)
        self.addCleanup(channel.close)
        return channel

    def call_both(self, channel, rounds):
        """`rounds` Greeter and AliveService calls in turn, one at a time:
        ({path: Counter of backend ids}, [failures])."""
        greeter = helloworld_pb2_grpc.GreeterStub(channel)
        alive = alive_pb2_grpc.AliveServiceStub(channel)
        seen = {GREETER_PATH: collections.Counter(), ALIVE_PATH: collections.Counter()}
        failed = []
        for i in range(rounds):
            try:
                reply, call = greeter.SayHello.with_call(
                    helloworld_pb2.HelloRequest(name=f"n{i}"), timeout=5
                )
                self.assertEqual(reply.message, f"Hello n{i}")
                seen[GREETER_PATH][backend_of(call)] += 1
            except grpc.RpcError as e:
                failed.append(f"{GREETER_PATH} {e.code().name}: {e.details()}")
            try:
                reply, call = alive.GetStatus.with_call(alive_pb2.GetStatusRequest(), timeout=5)
                self.assertTrue(reply.status)
                seen[ALIVE_PATH][backend_of(call)] += 1
            except grpc.RpcError as e:
                failed.append(f"{ALIVE_PATH} {e.code().name}: {e.details()}")
        return seen, failed

    def test_two_services_land_on_their_own_backend_sets(self):
        """Prefix /helloworld.Greeter/ to the cluster `greeter` (g1, g2), the
        rest to `backend` (b1, b2, b3): over one grpcio channel, every
        Greeter call lands on a g and every AliveService call on a b, spread
        over each set."""
        greeters = self.start_backends("g", 2)
        backends = self.start_backends("b", 3)
        text = proxy_config(
            routes=[
                ("{ prefix: /helloworld.Greeter/ }", "{ cluster: greeter }"),
                ("{ prefix: / }", "{ cluster: backend }"),
            ],
            clusters={
                "greeter": [b.addr for b in greeters],
                "backend": [b.addr for b in backends],
            },
        )
        proxy = RoutedProxy(self, text)
        self.assertIn("route prefix /helloworld.Greeter/ -> cluster greeter", proxy.validated)
        self.assertIn("route prefix / -> cluster backend", proxy.validated)
        proxy.wait_ready({"greeter": greeters, "backend": backends})

        n = 300
        seen, failed = self.call_both(self.channel(proxy), n)
        stats = proxy.stats()
        print(
            f"\ntwo services: {n} Greeter calls on {dict(seen[GREETER_PATH])}, {n} AliveService "
            f"calls on {dict(seen[ALIVE_PATH])}; cluster.greeter.upstream_rq_total "
            f"{stats.get('cluster.greeter.upstream_rq_total')}, "
            f"cluster.backend.upstream_rq_total {stats.get('cluster.backend.upstream_rq_total')}"
        )
        self.assertEqual(failed, [])
        self.assertEqual(set(seen[GREETER_PATH]), ids(greeters), "Greeter only on g1, g2")
        self.assertEqual(set(seen[ALIVE_PATH]), ids(backends), "AliveService only on b1-b3")
        for path, backend_set in [(GREETER_PATH, greeters), (ALIVE_PATH, backends)]:
            fair = n / len(backend_set)
            for backend_id, count in seen[path].items():
                self.assertGreaterEqual(count, fair / 2, f"{path} spread: {dict(seen[path])}")
        self.assertEqual(stats.get("cluster.greeter.upstream_rq_total"), n)
        self.assertEqual(stats.get("cluster.backend.upstream_rq_total"), n)

    def test_a_weighted_split_of_90_10_within_2_points_over_10000_calls(self):
        """`weighted_clusters` backend 90, backend-canary 10 on prefix /:
        10,000 AliveService calls, 100 in flight at a time, give the canary
        10% of them within 2 points."""
        backends = self.start_backends("b", 2)
        canaries = self.start_backends("c", 1)
        text = proxy_config(
            routes=[
                (
                    "{ prefix: / }",
                    "{ weighted_clusters: [{ name: backend, weight: 90 },"
                    " { name: backend-canary, weight: 10 }] }",
                )
            ],
            clusters={
                "backend": [b.addr for b in backends],
                "backend-canary": [b.addr for b in canaries],
            },
        )
        proxy = RoutedProxy(self, text)
        self.assertIn("route prefix / -> backend 90%, backend-canary 10%", proxy.validated)
        proxy.wait_ready({"backend": backends, "backend-canary": canaries})

        stub = alive_pb2_grpc.AliveServiceStub(self.channel(proxy))
        request = alive_pb2.GetStatusRequest()
        seen, failures = collections.Counter(), collections.Counter()
        pending = collections.deque()

        def harvest(future):
            try:
                self.assertTrue(future.result().status)
                seen[backend_of(future)] += 1
            except grpc.RpcError as e:
                failures[f"{e.code().name}: {e.details()}"] += 1

        total = 10_000
        started = time.monotonic()
        for _ in range(total):
            pending.append(stub.GetStatus.future(request, timeout=10))
            if len(pending) >= 100:
                harvest(pending.popleft())
        while pending:
            harvest(pending.popleft())
        took = time.monotonic() - started
        canary = sum(seen[i] for i in ids(canaries))
        main = sum(seen[i] for i in ids(backends))
        share = 100 * canary / total
        stats = proxy.stats()
        print(
            f"\nweighted split: backend-canary {canary} of {total} calls = {share:.2f}% "
            f"(weight 10%), backend {main} = {100 * main / total:.2f}%, by host {dict(seen)}, "
            f"{sum(failures.values())} failed, {took:.1f}s; upstream_rq_total backend "
            f"{stats.get('cluster.backend.upstream_rq_total')}, backend-canary "
            f"{stats.get('cluster.backend-canary.upstream_rq_total')}"
        )
        self.assertEqual(dict(failures), {})
        self.assertLessEqual(set(seen), ids(backends) | ids(canaries), dict(seen))
        self.assertLessEqual(
            abs(share - 10), 2, f"backend-canary got {share:.2f}% of {total} calls, not 10 ± 2"
        )
        self.assertEqual(stats.get("cluster.backend-canary.upstream_rq_total"), canary)
        self.assertEqual(stats.get("cluster.backend.upstream_rq_total"), main)

    def test_an_unmatched_path_gets_unimplemented_naming_it(self):
        """Only prefix /helloworld.Greeter/ is routed: AliveService calls get
        UNIMPLEMENTED with a message naming their path, no host sees them,
        `http.ingress.no_route` counts them and the access log flags `NR`;
        Greeter calls on the same channel still work."""
        greeters = self.start_backends("g", 1)
        text = proxy_config(
            routes=[("{ prefix: /helloworld.Greeter/ }", "{ cluster: greeter }")],
            clusters={"greeter": [greeters[0].addr]},
            access_log=True,
        )
        proxy = RoutedProxy(self, text)
        proxy.wait_ready({"greeter": greeters})
        channel = self.channel(proxy)
        alive = alive_pb2_grpc.AliveServiceStub(channel)
        greeter = helloworld_pb2_grpc.GreeterStub(channel)

        errors = []
        for _ in range(5):
            with self.assertRaises(grpc.RpcError) as caught:
                alive.GetStatus(alive_pb2.GetStatusRequest(), timeout=5)
            errors.append((caught.exception.code(), caught.exception.details()))
        reply, call = greeter.SayHello.with_call(helloworld_pb2.HelloRequest(name="r"), timeout=5)
        stats = proxy.stats()
        print(
            f"\nno route: {len(errors)} AliveService calls answered {errors[0]}; "
            f"http.ingress.no_route {stats.get('http.ingress.no_route')}; Greeter on "
            f"{backend_of(call)}"
        )
        for code, details in errors:
            self.assertEqual(code, grpc.StatusCode.UNIMPLEMENTED)
            self.assertIn(ALIVE_PATH, details or "")
        self.assertEqual(reply.message, "Hello r")
        self.assertEqual(backend_of(call), "g1")
        self.assertEqual(stats.get("http.ingress.no_route"), 5)
        self.assertEqual(stats.get("cluster.greeter.upstream_rq_total"), 1, "no host saw them")

        def flagged():
            return sum(
                1
                for line in list(proxy.process.stdout_lines)
                if ALIVE_PATH in line and re.search(r"\bNR\b", line)
            )

        eventually("the access log flags the 5 calls NR", 5, lambda: flagged() == 5)

    def test_a_reload_under_load_loses_no_call_and_no_connection(self):
        """8 client threads, each on its own connection, call Greeter and
        AliveService without pause while the file changes twice: first a
        cluster is added and the catch-all route moved to it (applied by
        SIGHUP), then two clusters are removed, one of them with calls in
        flight (applied by the file watch). No call fails, no client
        connection is opened again, calls started after each version is in
        force go where it says, and the removed clusters' hosts get none."""
        # Each call takes 10 ms at its host: calls are in flight at every swap.
        greeters = self.start_backends("g", 2, "--delay-ms", "10")
        backends = self.start_backends("b", 2, "--delay-ms", "10")
        news = self.start_backends("n", 2, "--delay-ms", "10")
        keys = ["health_check: { interval: 200ms, timeout: 1s, healthy_threshold: 1 }"]
        hosts = {
            "greeter": [b.addr for b in greeters],
            "backend": [b.addr for b in backends],
            "backend-v2": [b.addr for b in news],
        }
        greeter_route = ("{ prefix: /helloworld.Greeter/ }", "{ cluster: greeter }")
        v1 = proxy_config(
            routes=[greeter_route, ("{ prefix: / }", "{ cluster: backend }")],
            clusters={k: hosts[k] for k in ("greeter", "backend")},
            cluster_keys=keys,
        )
        # Add the cluster backend-v2 and move the catch-all route to it.
        v2 = proxy_config(
            routes=[greeter_route, ("{ prefix: / }", "{ cluster: backend-v2 }")],
            clusters=hosts,
            cluster_keys=keys,
        )
        # Remove greeter (its calls now take the catch-all route) and backend.
        v3 = proxy_config(
            routes=[("{ prefix: / }", "{ cluster: backend-v2 }")],
            clusters={"backend-v2": hosts["backend-v2"]},
            cluster_keys=keys,
        )
        proxy = RoutedProxy(self, v1)
        for text in (v2, v3):
            proxy.validate(self, text)
        proxy.wait_ready({"greeter": greeters, "backend": backends})
        self.assertEqual(proxy.version(), 1)

        threads = 8
        load = Load(proxy.addr, threads)
        self.addCleanup(load.close)
        eventually("every client thread has called", 10, lambda: min(load.done) >= 10)
        cx_before = proxy.stat("http.ingress.downstream_cx_total")
        self.assertEqual(cx_before, threads, "one client connection per thread")

        def apply(text, version, clusters, by_signal):
            """Writes `text`, then waits until /config_dump has `version` in
            force with exactly `clusters`: (time written, time seen)."""
            written = time.monotonic()
            proxy.write(text)
            if by_signal:
                proxy.sighup()

            last = []

            def in_force():
                dump = proxy.config_dump()
                last[:] = [dump["version"], sorted(proxy.cluster_names(dump))]
                return dump["version"] == version and proxy.cluster_names(dump) == clusters

            try:
                eventually(f"version {version} in force", 15, in_force, interval=0.02)
            except AssertionError as e:
                raise AssertionError(f"{e}; last seen: version {last[0]}, clusters {last[1]}")
            return written, time.monotonic()

        sent2, seen2 = apply(v2, 2, {"greeter", "backend", "backend-v2"}, by_signal=True)
        eventually("200 calls under version 2", 10, lambda: load.done_since(seen2) >= 200)
        sent3, seen3 = apply(v3, 3, {"backend-v2"}, by_signal=False)
        eventually("200 calls under version 3", 10, lambda: load.done_since(seen3) >= 200)
        load.close()
        # Drained, the removed clusters leave /clusters.
        eventually(
            "greeter and backend gone from /clusters",
            10,
            lambda: {c for c, _, _ in proxy.clusters()} == {"backend-v2"},
        )

        stats = proxy.stats()
        cx_after = stats["http.ingress.downstream_cx_total"]
        calls = load.snapshot()
        duration = max(c[1] for c in calls) - min(c[0] for c in calls)
        failed = [c for c in calls if c[4] is not None]

        def landed(after, before=float("inf")):
            """{path: Counter of backend ids} of the calls started in (after, before)."""
            out = {GREETER_PATH: collections.Counter(), ALIVE_PATH: collections.Counter()}
            for started, _, path, backend_id, error in calls:
                if after < started < before and error is None:
                    out[path][backend_id] += 1
            return out

        def in_flight(t):
            return sum(1 for c in calls if c[0] < t < c[1])

        def started_between(a, b):
            return sum(1 for c in calls if a < c[0] < b)

        under1 = landed(0, sent2)
        under2 = landed(seen2, sent3)
        under3 = landed(seen3)
        after2 = landed(seen2)
        print(
            f"\nreload under load: {len(calls)} calls in {duration:.1f}s on {threads} connections, "
            f"{len(failed)} failed {collections.Counter(c[4] for c in failed)}; "
            f"downstream_cx_total {cx_before} before, {cx_after} after; "
            f"version 2 (SIGHUP) in force {seen2 - sent2:.2f}s after the write, "
            f"{started_between(sent2, seen2)} calls started meanwhile, {in_flight(seen2)} in "
            f"flight when seen; version 3 (file watch) {seen3 - sent3:.2f}s after, "
            f"{started_between(sent3, seen3)} started meanwhile, {in_flight(seen3)} in flight "
            f"when seen; config.update_success {stats.get('config.update_success')}, "
            f"config.version {stats.get('config.version')}; "
            f"landed v1 {self.figures(under1)}, v2 {self.figures(under2)}, "
            f"v3 {self.figures(under3)}"
        )
        self.assertEqual(failed, [], "no call lost to a reload")
        self.assertEqual(cx_after, cx_before, "no client connection opened again")
        self.assertLessEqual(set(under1[GREETER_PATH]), ids(greeters))
        self.assertLessEqual(set(under1[ALIVE_PATH]), ids(backends))
        # The moved route: every AliveService call since version 2 on backend-v2.
        self.assertEqual(set(under2[ALIVE_PATH]), ids(news), "moved route after version 2")
        self.assertLessEqual(set(under2[GREETER_PATH]), ids(greeters))
        self.assertGreater(sum(under2[GREETER_PATH].values()), 0)
        # The removed clusters: their hosts got no call started since.
        self.assertEqual(set(under3[GREETER_PATH]), ids(news), "Greeter after version 3")
        self.assertEqual(set(under3[ALIVE_PATH]), ids(news), "AliveService after version 3")
        self.assertEqual(set(after2[ALIVE_PATH]) & ids(backends), set(), "backend removed")
        self.assertEqual(set(under3[GREETER_PATH]) & ids(greeters), set(), "greeter removed")
        self.assertEqual(stats.get("config.version"), 3)
        self.assertEqual(stats.get("config.update_success"), 2)

    @staticmethod
    def figures(landed):
        return {path.split("/")[1].split(".")[1]: dict(c) for path, c in landed.items()}

    def test_a_broken_file_changes_nothing_and_says_why(self):
        """A route to an undefined cluster, then a YAML syntax error, then
        SIGHUP on that same file: each is refused once (and not again every
        second), counted in `config.update_rejected`, explained on stderr,
        and the version in force and its routes stay; a good file afterwards
        applies."""
        greeters = self.start_backends("g", 1)
        backends = self.start_backends("b", 1)
        clusters = {"greeter": [greeters[0].addr], "backend": [backends[0].addr]}
        catch_all = ("{ prefix: / }", "{ cluster: backend }")
        good = proxy_config(
            routes=[("{ prefix: /helloworld.Greeter/ }", "{ cluster: greeter }"), catch_all],
            clusters=clusters,
        )
        undefined = proxy_config(
            routes=[
                ("{ prefix: /helloworld.Greeter/ }", "{ cluster: no-such-cluster }"),
                catch_all,
            ],
            clusters=clusters,
        )
        # An unclosed flow mapping.
        syntax = good.replace("{ cluster: greeter }", "{ cluster: greeter")
        self.assertNotEqual(syntax, good)
        proxy = RoutedProxy(self, good)
        proxy.wait_ready({"greeter": greeters, "backend": backends})
        channel = self.channel(proxy)
        old_routes = {GREETER_PATH: ids(greeters), ALIVE_PATH: ids(backends)}

        def old_routes_serve(rounds=20):
            seen, failed = self.call_both(channel, rounds)
            self.assertEqual(failed, [])
            self.assertEqual({p: set(c) for p, c in seen.items()}, old_routes)

        old_routes_serve()
        before = proxy.stats()
        self.assertEqual(proxy.version(), 1)
        self.assertEqual(before.get("config.update_rejected"), 0)

        def rejections():
            """The rejection log events: the ERROR line, with the lines that
            continue it (those that do not start with a timestamp)."""
            events = []
            for line in list(proxy.process.stderr_lines):
                if re.match(r"\d{4}-\d\d-\d\dT", line) or not events:
                    events.append(line)
                else:
                    events[-1] += line
            return [e for e in events if "reload rejected" in e]

        def refused(text, count, by_signal=False):
            """Writes `text` (or only signals), waits until it is refused as
            rejection number `count`, checks nothing changed: the dump."""
            if text is not None:
                proxy.write(text)
            if by_signal:
                proxy.sighup()
            eventually(
                f"rejection {count} counted",
                10,
                lambda: proxy.stat("config.update_rejected") >= count,
            )
            self.assertEqual(proxy.stat("config.update_rejected"), count)
            eventually(f"rejection {count} logged", 5, lambda: len(rejections()) >= count)
            dump = proxy.config_dump()
            self.assertEqual(dump["version"], 1, "the version in force stays")
            self.assertEqual(proxy.cluster_names(dump), {"greeter", "backend"})
            self.assertEqual(dump["last_update"]["result"], "rejected")
            old_routes_serve()
            return dump

        dump = refused(undefined, 1)
        problems = " ".join(str(p) for p in dump["last_update"]["problems"])
        self.assertIn("no-such-cluster", problems)
        self.assertIn("ERROR", rejections()[0])
        self.assertIn("keeping version 1", rejections()[0])
        self.assertIn("no-such-cluster", rejections()[0], "the log names the undefined cluster")
        dump = refused(syntax, 2)
        self.assertNotEqual(dump["last_update"]["problems"], [])
        self.assertIn("keeping version 1", rejections()[1])
        self.assertRegex(rejections()[1], r"line \d+", "the log says where the YAML breaks")
        # SIGHUP reads the same broken file again: refused again.
        refused(None, 3, by_signal=True)
        # The file watch does not refuse an unchanged file again and again:
        # traffic for at least 1.5 s (more than one check of the file).
        until = time.monotonic() + 1.5
        rounds = 0
        while time.monotonic() < until:
            old_routes_serve(5)
            rounds += 5
        after = proxy.stats()
        print(
            "\nbroken file: "
            + " | ".join(" ".join(e.split()) for e in rejections())
            + f"; config.update_rejected {after.get('config.update_rejected')}, "
            f"update_success {after.get('config.update_success')}, config.version "
            f"{after.get('config.version')}; {rounds} rounds of calls on the old routes since"
        )
        self.assertEqual(after.get("config.update_rejected"), 3, "each bad file refused once")
        self.assertEqual(after.get("config.update_success"), 0)
        self.assertEqual(proxy.version(), 1)

        # A good file applies again: Greeter moves to the cluster backend.
        fixed = proxy_config(routes=[catch_all], clusters={"backend": clusters["backend"]})
        proxy.write(fixed)
        eventually("the fixed file in force", 10, lambda: proxy.version() == 2)
        seen, failed = self.call_both(channel, 20)
        self.assertEqual(failed, [])
        self.assertEqual(set(seen[GREETER_PATH]), ids(backends))
        self.assertEqual(proxy.config_dump()["last_update"]["result"], "success")


if __name__ == "__main__":
    unittest.main()
