#!/usr/bin/env python3
"""End-to-end test of the compose stack (compose/docker-compose.yml).

Builds the images, brings the stack up under a project name of its own with
ephemeral host ports on 127.0.0.1, and checks what a user of the reference
walkthrough relies on, counting calls by the `x-backend-id` header the gateway
passes on (independent of the proxy's own statistics):

1. 999 requests through the gateway spread 333 +- 10% over 3 backends;
2. scale to 5 under continuous traffic: the new backends get calls within the
   DNS refresh plus a margin, no request fails;
3. one backend frozen (`docker pause`) and another cut off (`docker network
   disconnect`) for 6 s under traffic: at most 1% of the requests fail, and
   both get calls again after `unpause` / `connect`;
4. one backend container stopped under traffic: no request fails;
5. scale to 2 under traffic: no request fails;
   then gRPC-Web as a browser sends it, straight to the proxy's port: the
   admin serves the demo page /grpc-web; a CORS preflight from the admin's
   origin is answered 204 by the proxy; 30 binary SayHello calls and 30
   base64-text GetStatus calls over one HTTP/1.1 keep-alive connection all
   answer grpc-status 0 and spread 20 +- 5 over the 3 backends;
6. the layer 4 override puts every request of the gateway's one connection on
   one backend (the skew layer 7 removes);
7. the routes override (compose/docker-compose.routes.yml, 3 `grpc`, one
   `grpc-canary`, one `greeter`): every helloworld.Greeter call (grpcio, from
   the project's venv) lands on `greeter`, /alive splits 90/10 between `grpc`
   and `grpc-canary`; a rewrite of the mounted file to 50/50 under traffic is
   applied (`/config_dump` version 2), moves the split to 50/50, fails no
   request and keeps the gateway's connection; a file routing to an undefined
   cluster is refused (version unchanged, `config.update_rejected` 1, the
   split unchanged). The test edits a temporary copy of compose/routes
   (ROUTES_DIR), never the tracked file.

The stack is always taken down (`down -v --remove-orphans`), also when a check
fails or the test is interrupted, and the test then checks that nothing of its
project is left. Python 3 standard library only; the Greeter calls of step 7
run tests/docs/fixtures/greeter_client.py in the venv of scripts/python-env.

Usage: tests/e2e/compose_test.py [--no-build] [--routes-only]
"""

import argparse
import base64
import collections
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
BASE = COMPOSE_DIR / "docker-compose.yml"
L4 = COMPOSE_DIR / "docker-compose.l4.yml"
ROUTES = COMPOSE_DIR / "docker-compose.routes.yml"
ROUTES_CONFIG = COMPOSE_DIR / "routes" / "front-proxy.yaml"
GREETER_CLIENT = ROOT / "tests" / "docs" / "fixtures" / "greeter_client.py"

# compose/front-proxy.yaml resolves `backend` again every second.
DNS_REFRESH = 1.0
# How long a new replica may take to get its first call after `up --scale`
# returns: the container's start, the DNS refresh, and a margin for the
# proxy's health checking and a loaded 2-core machine.
NEW_BACKEND_DEADLINE = 20.0
READY_DEADLINE = 120.0
WORKERS = 4  # concurrent clients of the continuous traffic
# Latency of every backend call, so that calls are in flight when a backend
# stops or is scaled away: those must finish (drain), not fail.
BACKEND_DELAY_MS = 5


def log(message=""):
    print(message, flush=True)


def step(message):
    log(f"\n==> {message}")


class Interrupted(Exception):
    """A signal asked the test to stop; the stack still comes down."""


def on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


# --- Docker and Compose ---------------------------------------------------------


def run(cmd, *, env=None, capture=True, check=True, timeout=600):
    shown = " ".join(str(c) for c in cmd)
    result = subprocess.run(
        [str(c) for c in cmd],
        env=env,
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        output = result.stdout or ""
        raise RuntimeError(f"`{shown}` exited {result.returncode}\n{output[-3000:]}")
    return result.stdout or ""


def compose_command():
    """`docker compose` (v2) when the plugin is there, else `docker-compose` (1.29)."""
    chosen = os.environ.get("E2E_COMPOSE")
    if chosen:
        return chosen.split()
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True
    )
    if probe.returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


class Stack:
    """One compose project: up, scale, ports, containers, down."""

    def __init__(self):
        self.project = f"e2e-{os.getpid()}"
        self.compose = compose_command()
        self.files = [BASE]
        self.env = dict(
            os.environ,
            COMPOSE_PROJECT_NAME=self.project,
            BIND_IP="127.0.0.1",
            GATEWAY_PORT="0",
            PROXY_PORT="0",
            ADMIN_PORT="0",
            BACKEND_DELAY_MS=str(BACKEND_DELAY_MS),
            BACKEND_FAIL_RATE="0",
        )

    def run(self, *args, capture=True, check=True, timeout=600):
        cmd = list(self.compose)
        for f in self.files:
            cmd += ["-f", f]
        cmd += ["-p", self.project, *args]
        return run(cmd, env=self.env, capture=capture, check=check, timeout=timeout)

    def port(self, service, port):
        out = self.run("port", service, str(port)).strip().splitlines()
        host, _, number = out[-1].strip().rpartition(":")
        return ("127.0.0.1" if host in ("0.0.0.0", "") else host), int(number)

    def containers(self, service=None, running=True):
        cmd = ["docker", "ps", "-q", "--no-trunc"]
        if not running:
            cmd.append("-a")
        cmd += ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            cmd += ["--filter", f"label=com.docker.compose.service={service}"]
        return run(cmd).split()

    def leftovers(self):
        label = f"label=com.docker.compose.project={self.project}"
        found = {}
        for kind, cmd in (
            ("containers", ["docker", "ps", "-aq", "--filter", label]),
            ("networks", ["docker", "network", "ls", "-q", "--filter", label]),
            ("volumes", ["docker", "volume", "ls", "-q", "--filter", label]),
        ):
            ids = run(cmd, check=False).split()
            if ids:
                found[kind] = ids
        return found


def inspect(ids):
    if not ids:
        return []
    return json.loads(run(["docker", "inspect", *ids]))


class Backend:
    """A `grpc` replica as the test sees it: container, name on the wire, address."""

    def __init__(self, info):
        self.container = info["Id"]
        self.name = info["Name"].lstrip("/")
        self.hostname = info["Config"]["Hostname"]
        nets = info["NetworkSettings"]["Networks"]
        self.ip = next((n["IPAddress"] for n in nets.values() if n["IPAddress"]), "?")

    def __repr__(self):
        return f"{self.name} ({self.hostname}, {self.ip})"


def started_at(container):
    """When the container started, as a Unix time."""
    text = run(["docker", "inspect", "--format", "{{.State.StartedAt}}", container]).strip()
    # 2026-11-23T19:40:01.123456789Z: Python parses microseconds at most.
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?", text)
    whole = datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")
    whole = whole.replace(tzinfo=datetime.timezone.utc).timestamp()
    return whole + float(match.group(2) or 0)


def backends(stack):
    """Running backends by the id they send (`x-backend-id`, their hostname)."""
    return {b.hostname: b for b in map(Backend, inspect(stack.containers("grpc")))}


# --- HTTP -----------------------------------------------------------------------


def get(addr, path, timeout=5.0):
    """One GET on a fresh connection: (status, headers, body)."""
    conn = http.client.HTTPConnection(*addr, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def cluster_hosts(admin, cluster="backend"):
    """Admin /clusters: {host: {stat: value}} of one cluster."""
    status, _, body = get(admin, "/clusters")
    if status != 200:
        return {}
    hosts = collections.defaultdict(dict)
    for line in body.decode(errors="replace").splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == cluster and re.match(r"[\d.]+:\d+$", parts[1]):
            hosts[parts[1]][parts[2]] = parts[3]
    return dict(hosts)


class Client:
    """Sequential GET /alive on one keep-alive connection; every outcome recorded."""

    def __init__(self, addr, timeout=5.0):
        self.addr = addr
        self.timeout = timeout
        self.conn = None

    def call(self):
        """Returns (backend id or None, error or None)."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection(*self.addr, timeout=self.timeout)
        try:
            self.conn.request("GET", "/alive")
            response = self.conn.getresponse()
            body = response.read()
            backend = response.getheader("x-backend-id")
            if response.status == 200 and body.strip() == b'{"status":true}' and backend:
                return backend, None
            return None, f"HTTP {response.status} {body[:120].decode(errors='replace')}"
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return None, f"{type(e).__name__}: {e}"

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Traffic:
    """Continuous calls from WORKERS clients, bounded in time, until stopped."""

    MAX_SECONDS = 240.0

    def __init__(self, addr):
        self.addr = addr
        self.records = []  # (monotonic time, backend id or None, error or None)
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.work, daemon=True) for _ in range(WORKERS)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=30)

    def work(self):
        client = Client(self.addr)
        deadline = time.monotonic() + self.MAX_SECONDS
        try:
            while not self.stopping.is_set() and time.monotonic() < deadline:
                backend, error = client.call()
                self.records.append((time.monotonic(), backend, error))
        finally:
            client.close()

    def wait_for(self, condition, deadline, what):
        """Polls condition(records) until true; False at the deadline."""
        while time.monotonic() < deadline:
            if condition(self.records):
                return True
            time.sleep(0.05)
        log(f"    timed out waiting for {what}")
        return False

    def successes_after(self, since):
        return sum(1 for t, b, _ in list(self.records) if t >= since and b)

    def first_call(self, backend, since):
        return next((t for t, b, _ in list(self.records) if t >= since and b == backend), None)

    def summary(self, names, since=None, until=None):
        records = [
            r for r in list(self.records)
            if (since is None or r[0] >= since) and (until is None or r[0] <= until)
        ]
        counts = collections.Counter(b for _, b, _ in records if b)
        errors = [(t, e) for t, b, e in records if not b]
        took = (records[-1][0] - records[0][0]) if len(records) > 1 else 0.0
        log(f"    {len(records)} requests in {took:.1f}s ({len(records) / max(took, 1e-9):.0f}/s), "
            f"{len(errors)} failed")
        for backend, n in sorted(counts.items(), key=lambda kv: names.get(kv[0], kv[0])):
            log(f"      {names.get(backend, backend):<28} {n:>6}")
        for t, e in errors[:5]:
            log(f"      failure at +{t - records[0][0]:.2f}s: {e}")
        if len(errors) > 5:
            log(f"      ... and {len(errors) - 5} more failures")
        return counts, errors


def explain(stack, since, errors):
    """After failed requests: what the proxy and the gateway logged meanwhile,
    leaving out the access log lines of calls that went well."""
    if not errors:
        return
    for service in ("front-proxy", "gateway"):
        for container in stack.containers(service):
            out = run(["docker", "logs", "--since", f"{since:.3f}", container], check=False)
            lines = [l for l in out.splitlines() if '" 200 - ' not in l]
            log(f"    {service} log since the phase began ({len(lines)} lines besides calls that went well):")
            for line in lines[-25:]:
                log(f"      | {line[:300]}")


# --- the test -------------------------------------------------------------------


class Checks:
    """Soft assertions: every phase runs and prints its figures; the verdict comes last."""

    def __init__(self):
        self.results = []

    def check(self, ok, what):
        self.results.append((bool(ok), what))
        log(f"    [{'PASS' if ok else 'FAIL'}] {what}")
        return ok

    def report(self):
        passed = sum(1 for ok, _ in self.results if ok)
        failed = len(self.results) - passed
        step("summary")
        for ok, what in self.results:
            if not ok:
                log(f"    FAILED: {what}")
        log(f"e2e: {passed} passed, {failed} failed")
        return failed == 0


def wait_ready(stack, admin, gateway, replicas):
    """Until every container is healthy, the proxy lists `replicas` hosts and
    calls reach every backend."""
    deadline = time.monotonic() + READY_DEADLINE
    started = time.monotonic()
    expected = 2 + replicas
    while True:
        infos = inspect(stack.containers())
        health = {i["Name"].lstrip("/"): i["State"].get("Health", {}).get("Status", "none")
                  for i in infos}
        healthy = sum(1 for s in health.values() if s == "healthy")
        try:
            hosts = cluster_hosts(admin)
        except OSError:
            hosts = {}
        if healthy == expected and len(infos) == expected and len(hosts) >= replicas:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"stack not ready after {READY_DEADLINE:.0f}s: health {health}, "
                               f"proxy hosts {sorted(hosts)}")
        time.sleep(0.5)
    log(f"    {healthy} containers healthy, proxy lists {len(hosts)} hosts "
        f"after {time.monotonic() - started:.1f}s")
    # The proxy lists a host once DNS names it; wait until calls reach each one.
    wanted = set(backends(stack))
    client = Client(gateway)
    seen = set()
    try:
        while not wanted <= seen:
            backend, _ = client.call()
            if backend:
                seen.add(backend)
            if time.monotonic() > deadline:
                raise RuntimeError(f"calls reached only {sorted(seen)} of {sorted(wanted)}")
    finally:
        client.close()


def spread(gateway, names, checks, total=999, replicas=3):
    step(f"{total} requests through the gateway, one at a time")
    client = Client(gateway)
    counts = collections.Counter()
    errors = []
    started = time.monotonic()
    try:
        for _ in range(total):
            backend, error = client.call()
            if backend:
                counts[backend] += 1
            else:
                errors.append(error)
    finally:
        client.close()
    took = time.monotonic() - started
    log(f"    {total} requests in {took:.1f}s ({total / took:.0f}/s), {len(errors)} failed")
    share = total / replicas
    low, high = share * 0.9, share * 1.1
    for backend, n in sorted(counts.items(), key=lambda kv: names.get(kv[0], kv[0])):
        log(f"      {names.get(backend, backend):<28} {n:>4}  ({100 * n / total:.1f}%)")
    checks.check(not errors, f"{total} requests, none failed ({len(errors)} failed)")
    checks.check(len(counts) == replicas and all(low <= n <= high for n in counts.values()),
                 f"each of {replicas} backends got {share:.0f} +- 10% "
                 f"({low:.0f}..{high:.0f}): {sorted(counts.values())}")


def web_frame(message):
    return b"\0" + len(message).to_bytes(4, "big") + message


def web_frames(body):
    """A gRPC-Web body: ([messages], {trailer: value})."""
    messages, trailers = [], {}
    while body:
        flag, size = body[0], int.from_bytes(body[1:5], "big")
        payload, body = body[5:5 + size], body[5 + size:]
        if flag & 0x80:
            for line in payload.decode().split("\r\n"):
                if ": " in line:
                    name, value = line.split(": ", 1)
                    trailers[name] = value
        else:
            messages.append(payload)
    return messages, trailers


def grpc_web(stack, admin, checks, calls=30):
    step(f"gRPC-Web, as a browser sends it, to the proxy's port: the demo page, a preflight, "
         f"{calls} binary SayHello and {calls} text GetStatus calls on one HTTP/1.1 connection")
    proxy = stack.port("front-proxy", 8000)
    status, _, page = get(admin, "/grpc-web")
    checks.check(status == 200 and b"gRPC-Web" in page, f"the admin serves the demo page ({status})")
    origin = f"http://127.0.0.1:{admin[1]}"
    conn = http.client.HTTPConnection(*proxy, timeout=10)
    counts = collections.Counter()
    statuses = collections.Counter()
    try:
        conn.request("OPTIONS", "/helloworld.Greeter/SayHello", headers={
            "origin": origin, "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-grpc-web"})
        response = conn.getresponse()
        response.read()
        checks.check(response.status == 204 and response.getheader("access-control-allow-origin") == origin,
                     f"the preflight from {origin} is answered 204 by the proxy "
                     f"({response.status}, allow-origin {response.getheader('access-control-allow-origin')})")
        name = b"compose"
        hello = web_frame(b"\x0a" + bytes([len(name)]) + name)
        for i in range(2 * calls):
            text = i % 2 == 1
            path = "/gateway.AliveService/GetStatus" if text else "/helloworld.Greeter/SayHello"
            body = base64.b64encode(web_frame(b"")) if text else hello
            conn.request("POST", path, body=body, headers={
                "content-type": "application/grpc-web-text" if text else "application/grpc-web+proto",
                "x-grpc-web": "1", "origin": origin})
            response = conn.getresponse()
            raw = response.read()
            messages, trailers = web_frames(base64.b64decode(raw) if text else raw)
            want = b"\x08\x01" if text else b"Hello compose"
            ok = (response.status == 200 and trailers.get("grpc-status") == "0"
                  and len(messages) == 1 and want in messages[0]
                  and response.getheader("access-control-allow-origin") == origin)
            statuses["ok" if ok else f"{response.status} {trailers or dict(response.getheaders())}"] += 1
            counts[response.getheader("x-backend-id")] += 1
    finally:
        conn.close()
    log(f"    answers: {dict(statuses)}; per backend: {sorted(counts.values())}")
    checks.check(statuses["ok"] == 2 * calls, f"{2 * calls} gRPC-Web calls answered grpc-status 0 "
                 f"with their message and CORS headers ({dict(statuses)})")
    share = 2 * calls / 3
    checks.check(len(counts) == 3 and all(abs(n - share) <= 5 for n in counts.values()),
                 f"balanced per call over the 3 backends, {share:.0f} +- 5 each: {sorted(counts.values())}")


def scale_up(stack, gateway, checks, to=5):
    step(f"scale to {to} under continuous traffic ({WORKERS} clients)")
    before = backends(stack)
    wall = time.time()
    with Traffic(gateway) as traffic:
        began = time.monotonic()
        traffic.wait_for(lambda r: len(r) >= 200, began + 30, "traffic to flow")
        t0 = time.monotonic()
        stack.run("up", "-d", "--no-recreate", "--scale", f"grpc={to}")
        t_up = time.monotonic()
        after = backends(stack)
        new = {h: b for h, b in after.items() if h not in before}
        log(f"    `up --scale grpc={to}` took {t_up - t0:.1f}s; new: {list(new.values())}")
        checks.check(len(new) == to - len(before), f"{to - len(before)} new backends started")
        deadline = t_up + NEW_BACKEND_DEADLINE
        traffic.wait_for(
            lambda r: all(traffic.first_call(h, t0) for h in new), deadline, "new backends' first calls")
        for h, b in new.items():
            first = traffic.first_call(h, t0)
            if first:
                since_start = first + (time.time() - time.monotonic()) - started_at(b.container)
                took = (f"{since_start:.1f}s after its container started, "
                        f"{first - t_up:+.1f}s after `up` returned")
            else:
                took = "never"
            checks.check(first is not None and first <= deadline,
                         f"{b.name} got its first call within {NEW_BACKEND_DEADLINE:.0f}s ({took})")
        # A little more traffic, to see the spread over all of them.
        mark = time.monotonic()
        traffic.wait_for(lambda r: traffic.successes_after(mark) >= 500, mark + 30, "500 more calls")
    names = {h: b.name for h, b in after.items()}
    log("    calls during the whole phase:")
    _, errors = traffic.summary(names)
    log("    calls once every new backend had joined:")
    last, _ = traffic.summary(names, since=mark)
    explain(stack, wall, errors)
    checks.check(not errors, f"no failed request while scaling to {to} ({len(errors)} failed)")
    checks.check(set(last) == set(after),
                 f"the last calls reached all {len(after)} backends ({len(last)} did)")


FREEZE_SECONDS = 6.0


def freeze_and_cut(stack, gateway, checks):
    step(f"freeze one backend (docker pause) and cut another off (docker network disconnect) "
         f"for {FREEZE_SECONDS:.0f}s under continuous traffic")
    before = backends(stack)
    frozen, cut = sorted(before.values(), key=lambda b: b.name)[:2]
    network = f"{stack.project}_front-proxy"
    wall = time.time()
    with Traffic(gateway) as traffic:
        began = time.monotonic()
        traffic.wait_for(lambda r: len(r) >= 200, began + 30, "traffic to flow")
        t0 = time.monotonic()
        run(["docker", "pause", frozen.container])
        run(["docker", "network", "disconnect", network, cut.container])
        log(f"    paused {frozen}, disconnected {cut}")
        traffic.wait_for(lambda r: time.monotonic() >= t0 + FREEZE_SECONDS,
                         t0 + FREEZE_SECONDS + 1, "the freeze")
        run(["docker", "unpause", frozen.container])
        run(["docker", "network", "connect", "--alias", "backend", network, cut.container])
        t_back = time.monotonic()
        log(f"    unpaused and reconnected after {t_back - t0:.1f}s")
        back = lambda r: (traffic.first_call(frozen.hostname, t_back) is not None
                          and traffic.first_call(cut.hostname, t_back) is not None)
        returned = traffic.wait_for(back, t_back + 45, "both to get calls again")
        if returned:
            log(f"    back in rotation after {time.monotonic() - t_back:.1f}s")
    names = {h: b.name for h, b in before.items()}
    _, errors = traffic.summary(names)
    total = len(traffic.records)
    explain(stack, wall, errors)
    checks.check(len(errors) <= 0.01 * total,
                 f"at most 1% of the requests failed while one backend was frozen and one cut off "
                 f"({len(errors)} of {total})")
    checks.check(returned, "the frozen and the cut-off backend got calls again after unpause/connect")


def stop_one(stack, gateway, checks):
    step("stop one backend container under continuous traffic (docker stop: SIGTERM, drain)")
    before = backends(stack)
    victim = sorted(before.values(), key=lambda b: b.name)[0]
    wall = time.time()
    with Traffic(gateway) as traffic:
        began = time.monotonic()
        traffic.wait_for(lambda r: len(r) >= 200, began + 30, "traffic to flow")
        t0 = time.monotonic()
        run(["docker", "stop", "--time", "15", victim.container])
        t_stopped = time.monotonic()
        log(f"    stopped {victim} in {t_stopped - t0:.1f}s")
        # Keep the traffic going past a DNS refresh, then see who still gets calls.
        settle = t_stopped + DNS_REFRESH + 2.0
        traffic.wait_for(lambda r: time.monotonic() >= settle, settle + 1, "settling")
        mark = time.monotonic()
        traffic.wait_for(lambda r: traffic.successes_after(mark) >= 300, mark + 30, "300 more calls")
    names = {h: b.name for h, b in before.items()}
    _, errors = traffic.summary(names)
    log("    calls after the stop settled:")
    last, _ = traffic.summary(names, since=mark)
    explain(stack, wall, errors)
    checks.check(not errors, f"no failed request while stopping {victim.name} ({len(errors)} failed)")
    checks.check(victim.hostname not in last and len(last) == len(before) - 1,
                 f"after the stop, calls went to the {len(before) - 1} others only "
                 f"({sorted(names.get(h, h) for h in last)})")
    # A stopped replica would be started again by the next `up`; it is gone for good.
    run(["docker", "rm", victim.container])


def scale_down(stack, gateway, checks, to=2):
    step(f"scale to {to} under continuous traffic (compose stops the extra replicas)")
    before = backends(stack)
    wall = time.time()
    with Traffic(gateway) as traffic:
        began = time.monotonic()
        traffic.wait_for(lambda r: len(r) >= 200, began + 30, "traffic to flow")
        t0 = time.monotonic()
        stack.run("up", "-d", "--no-recreate", "--scale", f"grpc={to}")
        t_down = time.monotonic()
        after = backends(stack)
        gone = [b for h, b in before.items() if h not in after]
        log(f"    `up --scale grpc={to}` took {t_down - t0:.1f}s; removed: {gone}")
        settle = t_down + DNS_REFRESH + 2.0
        traffic.wait_for(lambda r: time.monotonic() >= settle, settle + 1, "settling")
        mark = time.monotonic()
        traffic.wait_for(lambda r: traffic.successes_after(mark) >= 300, mark + 30, "300 more calls")
    names = {h: b.name for h, b in before.items()}
    _, errors = traffic.summary(names)
    log("    calls after the scale-down settled:")
    last, _ = traffic.summary(names, since=mark)
    explain(stack, wall, errors)
    checks.check(len(after) == to, f"{to} backends left ({len(after)})")
    checks.check(not errors, f"no failed request while scaling to {to} ({len(errors)} failed)")
    checks.check(set(last) == set(after),
                 f"after the scale-down, calls went to the {to} left only "
                 f"({sorted(names.get(h, h) for h in last)})")


def layer4(stack, checks, total=100):
    step("layer 4 override (compose/docker-compose.l4.yml): one connection, one backend")
    stack.files = [BASE, L4]
    replicas = len(stack.containers("grpc"))
    stack.run("up", "-d", "--scale", f"grpc={replicas}")
    gateway = stack.port("gateway", 3000)
    admin = stack.port("front-proxy", 8001)
    wait_ready_l4(stack, admin, gateway, replicas)
    names = {h: b.name for h, b in backends(stack).items()}
    client = Client(gateway)
    counts = collections.Counter()
    errors = 0
    try:
        for _ in range(total):
            backend, _ = client.call()
            counts[backend] += 1 if backend else 0
            errors += 0 if backend else 1
    finally:
        client.close()
    for backend, n in counts.items():
        log(f"      {names.get(backend, backend):<28} {n:>4}")
    checks.check(errors == 0, f"{total} requests in layer 4 mode, none failed ({errors} failed)")
    checks.check(len([n for n in counts.values() if n]) == 1,
                 f"layer 4: all {total} requests on one of {replicas} backends")


def wait_ready_l4(stack, admin, gateway, replicas):
    """Layer 4 readiness: the proxy is healthy again and /alive answers."""
    deadline = time.monotonic() + READY_DEADLINE
    while time.monotonic() < deadline:
        try:
            if len(cluster_hosts(admin)) >= replicas and get(gateway, "/alive")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the layer 4 proxy did not become ready")


# --- routes, a canary and live reload (compose/docker-compose.routes.yml) ---------

# Which compose service answers for which cluster of compose/routes/front-proxy.yaml.
ROUTE_CLUSTERS = {"grpc": "backend", "grpc-canary": "backend-canary", "greeter": "greeter"}
# Calls per measured split. The weighted pick is random per call, so the
# canary's count is binomial: over 4000 calls its share has a standard
# deviation of 0.47 points at 10% and 0.79 points at 50%. A tolerance of
# +-3 points is 6.3 and 3.8 standard deviations: a correct proxy fails it
# less than once in 7000 runs, while weights off by 10 points (80/20, 60/40)
# land far outside it.
SPLIT_CALLS = 4000
SPLIT_TOLERANCE = 3.0
GREETER_CALLS = 500
# The proxy checks its file every second; the margin is for a loaded machine.
RELOAD_DEADLINE = 15.0


def services_by_hostname(stack):
    """{x-backend-id (container hostname): compose service} of every backend."""
    found = {}
    for info in inspect(stack.containers()):
        service = info["Config"]["Labels"].get("com.docker.compose.service")
        if service in ROUTE_CLUSTERS:
            found[info["Config"]["Hostname"]] = service
    return found


def stats(admin):
    """Admin /stats as {name: int}."""
    status, _, body = get(admin, "/stats")
    if status != 200:
        raise RuntimeError(f"/stats answered {status}")
    found = {}
    for line in body.decode(errors="replace").splitlines():
        name, _, value = line.partition(": ")
        if value.strip().lstrip("-").isdigit():
            found[name] = int(value)
    return found


def config_dump(admin):
    status, _, body = get(admin, "/config_dump")
    if status != 200:
        raise RuntimeError(f"/config_dump answered {status}: {body[:200]!r}")
    return json.loads(body)


def wait_ready_routes(stack, admin, gateway, replicas):
    """Until every container is healthy, each cluster lists its service's
    containers as healthy hosts, and /alive calls reach every grpc and
    grpc-canary container."""
    deadline = time.monotonic() + READY_DEADLINE
    started = time.monotonic()
    while True:
        infos = inspect(stack.containers())
        health = {i["Name"].lstrip("/"): i["State"].get("Health", {}).get("Status", "none")
                  for i in infos}
        want = collections.defaultdict(set)
        for i in infos:
            service = i["Config"]["Labels"].get("com.docker.compose.service")
            if service in ROUTE_CLUSTERS:
                for net in i["NetworkSettings"]["Networks"].values():
                    if net.get("IPAddress"):
                        want[ROUTE_CLUSTERS[service]].add(f"{net['IPAddress']}:8080")
        try:
            have = {c: {h for h, s in cluster_hosts(admin, c).items()
                        if s.get("health_flags") == "healthy"}
                    for c in ROUTE_CLUSTERS.values()}
        except OSError:
            have = {}
        if (len(infos) == 4 + replicas and all(s == "healthy" for s in health.values())
                and len(want["backend"]) == replicas
                and all(have.get(c) == want[c] for c in ROUTE_CLUSTERS.values())):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"routes stack not ready after {READY_DEADLINE:.0f}s: health {health}, "
                               f"clusters want {dict(want)}, proxy lists {have}")
        time.sleep(0.5)
    log(f"    {len(infos)} containers healthy, clusters "
        + ", ".join(f"{c} {len(h)}" for c, h in have.items())
        + f" after {time.monotonic() - started:.1f}s")
    wanted = {h for h, s in services_by_hostname(stack).items() if s != "greeter"}
    client = Client(gateway)
    seen = set()
    try:
        while not wanted <= seen:
            backend, _ = client.call()
            if backend:
                seen.add(backend)
            if time.monotonic() > deadline:
                raise RuntimeError(f"calls reached only {sorted(seen)} of {sorted(wanted)}")
    finally:
        client.close()


def by_service(counts, services):
    """{service: calls} from {x-backend-id: calls}; unknown ids as `?id`."""
    totals = collections.Counter()
    for backend, n in counts.items():
        totals[services.get(backend, f"?{backend}")] += n
    return totals


def canary_share(totals):
    both = totals["grpc"] + totals["grpc-canary"]
    return 100.0 * totals["grpc-canary"] / both if both else float("nan")


def check_split(checks, totals, canary_percent, what):
    share = canary_share(totals)
    calls = sum(totals.values())
    strays = {s: n for s, n in totals.items() if s not in ("grpc", "grpc-canary")}
    log(f"    {what}: grpc {totals['grpc']}, grpc-canary {totals['grpc-canary']} "
        f"of {calls} calls: canary {share:.1f}%")
    checks.check(not strays, f"{what}: /alive calls reached grpc and grpc-canary only "
                             f"({dict(strays) or 'no others'})")
    checks.check(abs(share - canary_percent) <= SPLIT_TOLERANCE,
                 f"{what}: grpc-canary got {canary_percent}% +- {SPLIT_TOLERANCE:.0f} points "
                 f"of {calls} calls ({share:.1f}%)")
    return share


def greeter_calls(proxy, total):
    """SayHello calls by grpcio on one channel: ({x-backend-id: calls}, failures, output)."""
    venv = run([ROOT / "scripts" / "python-env"]).strip().splitlines()[-1]
    out = run([Path(venv) / "bin" / "python", GREETER_CLIENT, f"{proxy[0]}:{proxy[1]}",
               "--calls", str(total), "--concurrency", "8"], check=False)
    counts = {m.group(2): int(m.group(1))
              for m in re.finditer(r"^\s*(\d+)\s+x-backend-id: (\S+)\s*$", out, re.M)}
    failed = sum(int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s+failed: ", out, re.M))
    if not counts and not failed:
        failed = total
    return counts, failed, out


def split_now(gateway, total=SPLIT_CALLS):
    """`total` /alive calls from WORKERS clients: ({x-backend-id: calls}, errors)."""
    with Traffic(gateway) as traffic:
        traffic.wait_for(lambda r: len(r) >= total, time.monotonic() + 120, f"{total} calls")
    records = traffic.records[:total]
    counts = collections.Counter(b for _, b, _ in records if b)
    return counts, [e for _, b, e in records if not b]


def edited(text, old, new):
    if text.count(old) != 1:
        raise RuntimeError(f"{ROUTES_CONFIG.name}: expected `{old}` once, found {text.count(old)}")
    return text.replace(old, new)


def replace_file(path, text):
    """As an editor or `sed -i` does: a new file renamed over the old one (a new
    inode, which a single-file bind mount would not show)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def proxy_log(stack, since):
    lines = []
    for container in stack.containers("front-proxy"):
        lines += run(["docker", "logs", "--since", f"{since:.3f}", container], check=False).splitlines()
    return lines


def routes(stack, routes_dir, checks, replicas=3):
    step(f"routes override (compose/docker-compose.routes.yml): {replicas} grpc, grpc-canary, greeter")
    stack.files = [BASE, ROUTES]
    stack.run("up", "-d", "--scale", f"grpc={replicas}", capture=False)
    gateway = stack.port("gateway", 3000)
    proxy = stack.port("front-proxy", 8000)
    admin = stack.port("front-proxy", 8001)
    wait_ready_routes(stack, admin, gateway, replicas)
    services = services_by_hostname(stack)
    labels = {h: f"{s} {h}" for h, s in services.items()}
    log("    backends: " + ", ".join(sorted(labels.values())))
    dump = config_dump(admin)
    checks.check(dump.get("version") == 1 and dump.get("source") == "/etc/proxy/routes/front-proxy.yaml",
                 f"/config_dump: version 1 from the mounted routes file "
                 f"(version {dump.get('version')}, source {dump.get('source')})")

    step(f"{GREETER_CALLS} helloworld.Greeter/SayHello calls (grpcio, one channel) to the proxy")
    counts, failed, out = greeter_calls(proxy, GREETER_CALLS)
    for line in out.strip().splitlines():
        log(f"    | {line}")
    totals = by_service(counts, services)
    checks.check(failed == 0, f"{GREETER_CALLS} Greeter calls, none failed ({failed} failed)")
    checks.check(set(totals) == {"greeter"} and totals["greeter"] == GREETER_CALLS,
                 f"every Greeter call landed on the greeter service ({dict(totals)})")

    step(f"{SPLIT_CALLS} /alive calls through the gateway ({WORKERS} clients): 90/10")
    counts, errors = split_now(gateway)
    checks.check(not errors, f"{SPLIT_CALLS} calls at 90/10, none failed ({len(errors)} failed)")
    check_split(checks, by_service(counts, services), 10, "at 90/10")

    step("reload to 50/50 under continuous traffic: the mounted file rewritten")
    path = Path(routes_dir) / ROUTES_CONFIG.name
    text = path.read_text()
    half = edited(edited(text, "name: backend, weight: 90 }", "name: backend, weight: 50 }"),
                  "name: backend-canary, weight: 10 }", "name: backend-canary, weight: 50 }")
    before = stats(admin)
    wall = time.time()
    with Traffic(gateway) as traffic:
        traffic.wait_for(lambda r: len(r) >= 200, time.monotonic() + 30, "traffic to flow")
        t0 = time.monotonic()
        replace_file(path, half)
        applied = traffic.wait_for(lambda r: config_dump(admin).get("version") == 2,
                                   t0 + RELOAD_DEADLINE, "/config_dump version 2")
        t_applied = time.monotonic()
        if applied:
            log(f"    /config_dump shows version 2 {t_applied - t0:.2f}s after the file was replaced")
        traffic.wait_for(lambda r: traffic.successes_after(t_applied) >= SPLIT_CALLS,
                         t_applied + 120, f"{SPLIT_CALLS} calls after the reload")
    after = stats(admin)
    _, errors = traffic.summary(labels)
    counts = collections.Counter(b for t, b, _ in traffic.records if t >= t_applied and b)
    explain(stack, wall, errors)
    checks.check(applied, f"the rewritten file was applied within {RELOAD_DEADLINE:.0f}s "
                          f"({t_applied - t0:.2f}s)")
    checks.check(not errors, f"no failed request during the reload ({len(errors)} of "
                             f"{len(traffic.records)} failed)")
    check_split(checks, by_service(counts, services), 50, "after the reload to 50/50")
    cx = "http.ingress.downstream_cx_total"
    checks.check(before.get(cx) is not None and before.get(cx) == after.get(cx),
                 f"the reload kept the gateway's connection ({cx} {before.get(cx)} -> {after.get(cx)})")
    checks.check(after.get("config.update_success") == 1 and after.get("config.version") == 2,
                 f"/stats: config.update_success 1, config.version 2 "
                 f"({after.get('config.update_success')}, {after.get('config.version')})")
    logged = [l for l in proxy_log(stack, wall) if "configuration reloaded" in l]
    checks.check(logged, f"the proxy logged `configuration reloaded` ({logged[-1].strip()[:160] if logged else 'no'})")

    step("a broken file (a route to an undefined cluster) under continuous traffic")
    broken = edited(half, "name: backend-canary, weight: 50 }", "name: backend-canry, weight: 50 }")
    wall = time.time()
    with Traffic(gateway) as traffic:
        traffic.wait_for(lambda r: len(r) >= 200, time.monotonic() + 30, "traffic to flow")
        t0 = time.monotonic()
        replace_file(path, broken)
        refused = traffic.wait_for(lambda r: stats(admin).get("config.update_rejected") == 1,
                                   t0 + RELOAD_DEADLINE, "config.update_rejected 1")
        t_refused = time.monotonic()
        if refused:
            log(f"    config.update_rejected 1 after {t_refused - t0:.2f}s")
        traffic.wait_for(lambda r: traffic.successes_after(t_refused) >= SPLIT_CALLS,
                         t_refused + 120, f"{SPLIT_CALLS} calls after the refusal")
    now = stats(admin)
    dump = config_dump(admin)
    _, errors = traffic.summary(labels)
    counts = collections.Counter(b for t, b, _ in traffic.records if t >= t_refused and b)
    explain(stack, wall, errors)
    last = dump.get("last_update") or {}
    problems = " ".join(map(str, last.get("problems") or []))
    log(f"    /config_dump: version {dump.get('version')}, last_update {json.dumps(last)[:300]}")
    checks.check(refused, f"the broken file was refused within {RELOAD_DEADLINE:.0f}s "
                          f"(config.update_rejected {now.get('config.update_rejected')})")
    checks.check(dump.get("version") == 2 and now.get("config.version") == 2
                 and now.get("config.update_success") == 1,
                 f"the broken file changed nothing: version 2 in /config_dump and /stats "
                 f"({dump.get('version')}, {now.get('config.version')})")
    checks.check(last.get("result") == "rejected" and "backend-canry" in problems,
                 f"/config_dump's last_update says rejected and names the undefined cluster "
                 f"({last.get('result')}: {problems[:200]})")
    checks.check(not errors, f"no failed request after the broken file ({len(errors)} failed)")
    check_split(checks, by_service(counts, services), 50, "after the broken file")
    logged = [l for l in proxy_log(stack, wall) if "configuration reload rejected; keeping version 2" in l]
    checks.check(logged, f"the proxy logged `configuration reload rejected; keeping version 2` "
                         f"({logged[-1].strip()[:200] if logged else 'no'})")


def routes_copy():
    """A temporary copy of compose/routes that the proxy (uid 65532) can read."""
    tmp = Path(tempfile.mkdtemp(prefix="e2e-routes-"))
    tmp.chmod(0o755)
    shutil.copy(ROUTES_CONFIG, tmp / ROUTES_CONFIG.name)
    (tmp / ROUTES_CONFIG.name).chmod(0o644)
    return tmp


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-build", action="store_true",
                        help="use the images already built (scripts/build-images)")
    parser.add_argument("--routes-only", action="store_true",
                        help="only step 7, the routes override (faster, while working on it)")
    args = parser.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    if not args.no_build:
        step("building the images (scripts/build-images)")
        run([ROOT / "scripts" / "build-images"], capture=False)

    stack = Stack()
    checks = Checks()
    routes_dir = routes_copy()
    stack.env["ROUTES_DIR"] = str(routes_dir)
    try:
        if not args.routes_only:
            step(f"up: project {stack.project}, 3 backends ({BACKEND_DELAY_MS} ms per call), "
                 f"ephemeral ports on 127.0.0.1 ({' '.join(stack.compose)})")
            stack.run("up", "-d", "--scale", "grpc=3", capture=False)
            gateway = stack.port("gateway", 3000)
            admin = stack.port("front-proxy", 8001)
            log(f"    gateway http://{gateway[0]}:{gateway[1]}/alive, "
                f"admin http://{admin[0]}:{admin[1]}/clusters")
            wait_ready(stack, admin, gateway, replicas=3)
            names = {h: b.name for h, b in backends(stack).items()}
            spread(gateway, names, checks)
            grpc_web(stack, admin, checks)
            scale_up(stack, gateway, checks)
            freeze_and_cut(stack, gateway, checks)
            stop_one(stack, gateway, checks)
            scale_down(stack, gateway, checks)
            layer4(stack, checks)
        routes(stack, routes_dir, checks)
    except (Exception, KeyboardInterrupt) as e:
        checks.check(False, f"the test ran to its end ({type(e).__name__}: {e})")
    finally:
        if not all(ok for ok, _ in checks.results):
            step("proxy log (last 40 lines)")
            stack.run("logs", "--tail", "40", "front-proxy", capture=False, check=False)
        step(f"down -v --remove-orphans ({stack.project})")
        stack.run("down", "-v", "--remove-orphans", "--timeout", "10",
                  capture=False, check=False)
        left = stack.leftovers()
        checks.check(not left, f"down left no containers, networks or volumes ({left or 'none'})")
        shutil.rmtree(routes_dir, ignore_errors=True)
    return 0 if checks.report() else 1


if __name__ == "__main__":
    sys.exit(main())
