"""The admin page as a person sees it: headless Chromium, under load.

Three backends behind one proxy (round robin, so each gets a third of the
calls), the third started with `--delay-ms 20`. grpcio client threads call
helloworld.Greeter/SayHello and gateway.AliveService/GetStatus in turn, and
now and then helloworld.Greeter/Missing, which the backend answers
UNIMPLEMENTED. Chromium opens the admin page `/` and, after some seconds of
real time (the page computes its rates and percentiles from its own clock),
the test reads what the page shows with `Runtime.evaluate` over the DevTools
protocol (tests/docs/capture_page.py): the text of its cells and the SVG
charts it drew.

It checks: every host listed, each with a calls/s chart and a latency chart
drawn (SVG paths with points and a length), calls/s, p50 and p99 non-zero, the
slow host's p50 about 20 ms above the others', the per-method table with the
two methods apart (their calls/s, no errors, a p99 that shows the slow third)
and the missing method at 100 % errors; once the load stops, the table's
percentiles over 5 minutes (every call) against the proxy's own in /stats;
that nothing was loaded from anywhere
but the admin port, and that the page fits a laptop's screen (1280 pixels
wide) without scrolling sideways.

Needs chromium (scripts/install-deps installs Debian's). With CI=true a
missing browser fails the test; elsewhere it is skipped, saying so.
"""

import json
import os
import re
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

import grpc

import harness

sys.path.insert(0, os.path.join(harness.ROOT, "tests", "docs"))
from capture_page import Chromium  # noqa: E402

harness.load_stubs()
from gateway import alive_pb2, alive_pb2_grpc  # noqa: E402
from helloworld import helloworld_pb2, helloworld_pb2_grpc  # noqa: E402

ADMIN = urllib.request.build_opener(urllib.request.ProxyHandler({}))
SAY_HELLO = "helloworld.Greeter/SayHello"
GET_STATUS = "gateway.AliveService/GetStatus"
MISSING = "helloworld.Greeter/Missing"

# What a person reads on the page, as JSON: per cluster, each host row's cells
# and charts, and each row of the methods table.
READ_PAGE = r"""(() => {
  if (!document.getElementById("clusters")) return null;  // still loading
  const text = (el, sel) => { const e = el.querySelector(sel); return e ? e.textContent.trim() : null; };
  const box = e => { const r = e.getBoundingClientRect(); return { width: r.width, height: r.height }; };
  return {
    status: text(document, "#status"),
    page: { width: document.documentElement.scrollWidth, window: window.innerWidth },
    resources: performance.getEntriesByType("resource").map(e => e.name),
    scripts: [...document.scripts].map(s => s.src),
    clusters: [...document.querySelectorAll("#clusters .cluster")].map(c => ({
      name: text(c, "h2"),
      hosts: [...c.querySelectorAll("tr.host-row")].map(tr => ({
        addr: text(tr, "td.host"), share: text(tr, ".bar span"), calls: text(tr, "td.calls"),
        rate: text(tr, "td.rate .now"), p50: text(tr, ".lat .p50 b"), p99: text(tr, ".lat .p99 b"),
        charts: Object.fromEntries([...tr.querySelectorAll("svg")].map(svg => [svg.getAttribute("class"), {
          ...box(svg),
          paths: Object.fromEntries([...svg.querySelectorAll("path")].map(p => [p.getAttribute("class"), {
            points: ((p.getAttribute("d") || "").match(/[ML]/g) || []).length,
            length: p.getTotalLength(),
          }])),
        }])),
      })),
      methods: [...c.querySelectorAll("table.methods tr.method")].map(tr => ({
        method: text(tr, "td.method"), calls: text(tr, "td.calls"), rate: text(tr, "td.rate"),
        errors: text(tr, "td.errors"), p50: text(tr, "td.p50"), p99: text(tr, "td.p99"),
      })),
    })),
  };
})()"""


def number(text):
    """A figure as shown ("23.4", "0.00 %"); None for "–" or nothing."""
    match = re.match(r"-?\d+(\.\d+)?", text or "")
    return float(match.group(0)) if match else None


class Load:
    """Client threads, each on its own connection, calling without pause:
    SayHello and GetStatus in turn, and every 10th call the missing method.
    Stops on `close`, or by itself after `limit` seconds."""

    def __init__(self, addr, threads=6, limit=120):
        self.stop = threading.Event()
        self.deadline = time.monotonic() + limit
        self.counts = {}
        self.lock = threading.Lock()
        self.channels = [
            grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(threads)
        ]
        self.threads = [threading.Thread(target=self.run, args=(c,), daemon=True) for c in self.channels]
        for thread in self.threads:
            thread.start()

    def run(self, channel):
        greeter = helloworld_pb2_grpc.GreeterStub(channel)
        alive = alive_pb2_grpc.AliveServiceStub(channel)
        missing = channel.unary_unary(f"/{MISSING}")
        i = 0
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            i += 1
            try:
                if i % 10 == 0:
                    missing(b"", timeout=5)
                    outcome = (MISSING, "OK")
                elif i % 2:
                    greeter.SayHello(helloworld_pb2.HelloRequest(name="dashboard"), timeout=5)
                    outcome = (SAY_HELLO, "OK")
                else:
                    alive.GetStatus(alive_pb2.GetStatusRequest(), timeout=5)
                    outcome = (GET_STATUS, "OK")
            except grpc.RpcError as e:
                outcome = (MISSING if i % 10 == 0 else "other", e.code().name)
            with self.lock:
                self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def close(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(10)
        for channel in self.channels:
            channel.close()


class Dashboard(unittest.TestCase):
    def start(self, *args):
        """A harness.Process, stopped at cleanup."""
        return harness.started(self, harness.Process, *args)

    def test_page_shows_hosts_charts_slow_host_and_methods(self):
        browser = harness.chromium(self)

        fast = [self.start("backend", ["--listen", "127.0.0.1:0", "--id", f"fast-{i}"],
                           r"backend serving.*addr=(\S+)") for i in (1, 2)]
        slow = self.start("backend", ["--listen", "127.0.0.1:0", "--id", "slow", "--delay-ms", "20"],
                          r"backend serving.*addr=(\S+)")
        args = ["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--access-log", "off",
                "--lb", "round_robin", "--health-check-interval", "1s"]
        for b in fast + [slow]:
            args += ["--upstream", b.addr]
        proxy = self.start("proxy", args, r"admin interface listening addr=(\S+)")
        admin = proxy.addr

        def listener():
            for line in list(proxy.stderr_lines):
                if "listening" in line and "listener=" in line:
                    return re.search(r"\baddr=(\S+)", line).group(1)
            return None

        def healthy():
            with ADMIN.open(f"http://{admin}/clusters", timeout=5) as r:
                return r.read().decode().count("::health_flags::healthy") == 3

        deadline = time.monotonic() + 15
        while not (listener() and healthy()):
            self.assertLess(time.monotonic(), deadline, "the proxy's 3 hosts were not healthy in 15 s")
            time.sleep(0.1)

        # A laptop's screen.
        with Chromium(browser, f"http://{admin}/", 1280, 800) as page:
            # The page's first reading before any call, so that its 5 minute
            # window holds every call (compared with /stats below).
            deadline = time.monotonic() + 15
            while len(((page.evaluate(READ_PAGE) or {}).get("clusters") or [{}])[0].get("hosts", [])) != 3:
                self.assertLess(time.monotonic(), deadline, "the page did not list the 3 hosts in 15 s")
                time.sleep(0.2)
            load = Load(listener())
            self.addCleanup(load.close)
            # Until every chart has 8 points (8 s of readings, each point over
            # the 10 s before it) and the methods table has both methods.
            deadline = time.monotonic() + 45
            while True:
                shown = page.evaluate(READ_PAGE) or {"clusters": []}
                clusters = shown["clusters"]
                hosts = clusters[0]["hosts"] if clusters else []
                methods = {m["method"]: m for m in clusters[0]["methods"]} if clusters else {}
                ready = (
                    len(hosts) == 3
                    and all(h["charts"].get("rate", {}).get("paths", {}).get("line", {}).get("points", 0) >= 8
                            and h["charts"].get("latency", {}).get("paths", {}).get("p50", {}).get("points", 0) >= 8
                            for h in hosts)
                    and {SAY_HELLO, GET_STATUS, MISSING} <= set(methods)
                )
                if ready or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            try:
                self.check(shown, admin, fast, slow)
            except AssertionError:
                out = os.path.join(tempfile.gettempdir(), "test_dashboard.png")
                page.screenshot(out)
                print(f"dashboard: what the page showed is in {out}")
                raise
            load.close()
            print(f"dashboard: calls made {dict(sorted(load.counts.items()))}")

            # With the load stopped, the methods table over 5 minutes covers
            # every call: its percentiles, computed in the page from bucket
            # differences, are the proxy's own over all calls.
            with ADMIN.open(f"http://{admin}/stats?format=json&usedonly&filter=%5C.grpc%5C.", timeout=5) as r:
                stats = json.load(r)["stats"]
            quantiles = {q["name"]: q["values"] for s in stats if "histograms" in s
                         for q in s["histograms"]["computed_quantiles"]}
            page.evaluate('document.querySelector(\'button[data-window="300000"]\').click()')
            time.sleep(1.5)  # a refresh after the last call, in the page's real time
            methods = {m["method"]: m for m in page.evaluate(READ_PAGE)["clusters"][0]["methods"]}
            for name in (SAY_HELLO, GET_STATUS, MISSING):
                service, method = name.split("/")
                values = quantiles[f"cluster.backend.grpc.{service}.{method}.upstream_rq_time"]
                proxy_p50, proxy_p99 = values[2]["cumulative"], values[6]["cumulative"]
                shown_p50, shown_p99 = number(methods[name]["p50"]), number(methods[name]["p99"])
                print(f"dashboard: {name} over all calls: page p50 {shown_p50} p99 {shown_p99}, "
                      f"/stats P50 {proxy_p50:.3f} P99 {proxy_p99:.3f}")
                for shown_q, proxy_q in ((shown_p50, proxy_p50), (shown_p99, proxy_p99)):
                    self.assertAlmostEqual(shown_q, proxy_q, delta=0.01 + 0.006 * proxy_q)

    def check(self, shown, admin, fast, slow):
        origin = f"http://{admin}/"
        self.assertEqual(
            [r for r in shown["resources"] if not r.startswith(origin)], [],
            "the page fetched something from outside the admin port")
        self.assertEqual([s for s in shown["scripts"] if s], [], "the page loads a script file")
        self.assertLessEqual(shown["page"]["width"], shown["page"]["window"],
                             "the page is wider than a laptop's screen: it scrolls sideways")
        self.assertEqual(len(shown["clusters"]), 1, shown)
        cluster = shown["clusters"][0]
        self.assertEqual(cluster["name"], "backend")
        hosts = {h["addr"]: h for h in cluster["hosts"]}
        self.assertEqual(set(hosts), {b.addr for b in fast + [slow]}, "every host listed")

        for addr, h in hosts.items():
            print(f"dashboard: host {addr}{' (slow)' if addr == slow.addr else ''}: share {h['share']}, "
                  f"{h['calls']} calls, {h['rate']} calls/s, p50 {h['p50']} ms, p99 {h['p99']} ms, "
                  f"chart points {h['charts']['rate']['paths']['line']['points']}")
            for chart, paths in (("rate", ("line", "area")), ("latency", ("p50", "p99"))):
                svg = h["charts"].get(chart)
                self.assertIsNotNone(svg, f"{addr}: no {chart} chart")
                self.assertGreaterEqual(svg["width"], 60, f"{addr}: the {chart} chart is too small to see")
                self.assertGreaterEqual(svg["height"], 16, f"{addr}: the {chart} chart is too small to see")
                for name in paths:
                    path = svg["paths"].get(name)
                    self.assertIsNotNone(path, f"{addr}: {chart} chart without its {name}")
                    self.assertGreaterEqual(path["points"], 5, f"{addr}: {chart} {name}: {path}")
                    self.assertGreater(path["length"], 10, f"{addr}: {chart} {name} is not drawn: {path}")
            self.assertGreater(number(h["calls"]), 0, f"{addr}: calls {h['calls']}")
            self.assertGreater(number(h["rate"]), 1, f"{addr}: calls/s {h['rate']}")
            self.assertGreater(number(h["p50"]) or 0, 0, f"{addr}: p50 {h['p50']}")
            self.assertGreaterEqual(number(h["p99"]) or 0, number(h["p50"]) or 0, f"{addr}: p99 {h['p99']}")

        slow_p50 = number(hosts[slow.addr]["p50"])
        fast_p50 = max(number(hosts[b.addr]["p50"]) for b in fast)
        print(f"dashboard: slow host p50 {slow_p50} ms, the others at most {fast_p50} ms")
        self.assertGreaterEqual(slow_p50, 20, "the slow host's p50 shows its 20 ms")
        self.assertGreaterEqual(slow_p50 - fast_p50, 12, "the slow host's p50 stands out from the others'")

        methods = {m["method"]: m for m in cluster["methods"]}
        for m in cluster["methods"]:
            print(f"dashboard: method {m['method']}: {m['calls']} calls, {m['rate']} calls/s, "
                  f"errors {m['errors']}, p50 {m['p50']} ms, p99 {m['p99']} ms")
        for name in (SAY_HELLO, GET_STATUS):
            self.assertIn(name, methods, f"the methods table shows {name}")
            m = methods[name]
            self.assertGreater(number(m["rate"]), 1, f"{name}: calls/s {m['rate']}")
            self.assertEqual(m["errors"], "0.00 %", f"{name}: errors")
            # A third of the calls went to the slow host: the p99 shows it.
            self.assertGreaterEqual(number(m["p99"]), 20, f"{name}: p99 {m['p99']}")
            self.assertGreater(number(m["p50"]), 0, f"{name}: p50 {m['p50']}")
        self.assertIn(MISSING, methods)
        self.assertEqual(methods[MISSING]["errors"], "100.00 %", "UNIMPLEMENTED counts as a failure")
        self.assertGreater(number(methods[MISSING]["rate"]), 0)


if __name__ == "__main__":
    unittest.main()
