#!/usr/bin/env python3
"""The measurement driver behind scripts/bench (stdlib only).

Starts 3 backends, every target (direct, our proxy L7 and L4, HAProxy h2 and
tcp, nginx grpc_pass) and the gateways, then measures the targets interleaved
(A B C D .. A B C D ..), each repeated --reps times, and writes every raw
figure to <out>/results.json. bench/report.py turns that into the tables of
docs/benchmarks.md and the chart.

CPU placement: every proxy (and every gateway) is pinned to core 1 and runs
one worker thread; backends and load generators share core 0.

Instructions per call: each L7 proxy in turn runs under valgrind's callgrind
(counters zeroed after a warm-up, dumped after a fixed number of calls), which
counts user-space instructions exactly however busy the machine is: the one
CPU figure that a shared VM cannot blur.

Usage: bench/run.py --out DIR [--quick] [--reps N] [--duration S] [--profile]
                    [--no-instructions]
"""

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / "target" / "release"
LOADGEN = REPO / "target" / "loadgen" / "release" / "loadgen"
CONFIGS = REPO / "bench" / "configs"

PROXY_CPU = "1"
LOAD_CPU = "0"
BACKENDS = [("b1", 18081), ("b2", 18082), ("b3", 18083)]
UPSTREAMS = [f"127.0.0.1:{port}" for _, port in BACKENDS]
# Our proxy's flags for those upstreams, and its settings for every run.
OURS_ARGS = [a for u in UPSTREAMS for a in ("--upstream", u)] + ["--access-log", "off", "--workers", "1", "--lb", "round_robin"]
# HAProxy and nginx forward a request's headers as they come, while ours adds
# an x-request-id by default (as Envoy does). Off for the comparison, so that
# the three do the same work; the instructions phase also counts ours with it
# on ("ours-l7-ids"), which is what that default costs.
OURS_L7_ARGS = [*OURS_ARGS, "--generate-request-id", "off"]
METHOD = "/gateway.AliveService/GetStatus"
# gRPC frame of an empty GetStatusRequest: flag 0, length 0.
BODY = b"\x00\x00\x00\x00\x00"

# How h2load calls: a gRPC client, or a browser's gRPC-Web (the frame is the
# same) over HTTP/2 or, with --h1, HTTP/1.1 keep-alive.
CLIENTS = {
    "grpc": ["-H", "content-type: application/grpc", "-H", "te: trailers"],
    "web-h2": ["-H", "content-type: application/grpc-web+proto", "-H", "x-grpc-web: 1"],
    "web-h1": ["--h1", "-H", "content-type: application/grpc-web+proto", "-H", "x-grpc-web: 1"],
}
# The instructions phase also counts gRPC-Web calls on ours (--grpc-web),
# binary, over HTTP/2 (4x16, as the others) and over HTTP/1.1 (16 connections,
# one call at a time each, as a browser's connections carry them).
WEB_VARIANTS = {"ours-web-h2": ("web-h2", 4, 16), "ours-web-h1": ("web-h1", 16, 1)}

# name, label, port, kind. "direct" is the limit: the client talks to b1 alone.
TARGETS = [
    ("direct", "direct (1 backend)", 18081, "direct"),
    ("ours-l7", "ours L7", 19001, "l7"),
    ("haproxy-h2", "HAProxy h2", 19002, "l7"),
    ("nginx", "nginx grpc_pass", 19003, "l7"),
    ("haproxy-tcp", "HAProxy tcp", 19004, "l4"),
    ("ours-l4", "ours L4", 19005, "l4"),
]
ADMIN = {"ours-l7": 19101, "ours-l4": 19105}
# What each admin counts per host: calls (L7) or connections (L4).
ADMIN_STAT = {"ours-l7": "rq_total", "ours-l4": "cx_total"}
GATEWAYS = [
    ("gw-direct", "gateway -> backend", 19201, "http://127.0.0.1:18081"),
    ("gw-ours", "gateway -> ours L7 -> 3 backends", 19202, "http://127.0.0.1:19001"),
    ("gw-haproxy", "gateway -> HAProxy h2 -> 3 backends", 19203, "http://127.0.0.1:19002"),
]
SHAPES = [(4, 16), (1, 32)]
RATE_SHARES = [0.25, 0.50, 0.75]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"bench: {msg}", flush=True)


class Processes:
    """Every process this run starts; all are stopped on exit, by pid."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.procs = {}
        self.pidfile = run_dir / "pids"
        # name -> the exact command line, for the docs.
        self.commands = {}

    def start(self, name, argv, cpu, env=None):
        out = open(self.run_dir / "logs" / f"{name}.log", "wb")
        full_env = dict(os.environ, RUST_LOG="warn")
        full_env.update(env or {})
        proc = subprocess.Popen(
            ["taskset", "-c", cpu, *map(str, argv)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
        )
        self.procs[name] = proc
        self.commands[name] = " ".join(["taskset", "-c", cpu, *(shlex_rel(a) for a in argv)])
        with open(self.pidfile, "a") as f:
            f.write(f"{proc.pid}\n")
        return proc

    def pid(self, name):
        return self.procs[name].pid

    def check_alive(self):
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see logs/{name}.log")

    def stop(self, name):
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self):
        for name in list(self.procs):
            self.stop(name)


def shlex_rel(arg):
    """An argument as the docs show it: paths relative to the repository."""
    text = str(arg)
    if text.startswith(str(REPO) + "/"):
        text = text[len(str(REPO)) + 1 :]
    return shlex.quote(text)


# ---------------------------------------------------------------- /proc


def descendants(pid):
    """pid and every process below it (nginx master -> worker)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime and stime are fields 14 and 15 of stat; 12 and 13 after the comm.
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def status_kb(pids, key):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


# ---------------------------------------------------------------- helpers


class RssSampler:
    """Highest VmRSS of some processes while a measurement runs (every 50 ms)."""

    def __init__(self, pids):
        self.pids = pids
        self.peak = status_kb(pids, "VmRSS")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, status_kb(self.pids, "VmRSS"))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, status_kb(self.pids, "VmRSS"))


def wait_port(port, what, deadline=15.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {deadline}s")


def port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def children_cpu_seconds():
    """CPU time of this script's finished children (h2load, once it exits)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run(argv, timeout=None, cpu=LOAD_CPU):
    res = subprocess.run(
        ["taskset", "-c", cpu, *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if res.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return res.stdout


def loadgen(*args, timeout=120):
    out = run([LOADGEN, *args], timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def admin_counts(port, stat):
    """Per-host `stat` from the admin /clusters page (Envoy's text format)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/clusters", timeout=5) as r:
        text = r.read().decode()
    counts = {}
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[2] == stat:
            counts[parts[1]] = int(parts[3])
    return counts


def parse_h2load(text):
    m = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", text)
    r = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout",
        text,
    )
    t = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if not (m and r):
        raise RuntimeError(f"cannot parse h2load output:\n{text[-800:]}")
    return {
        "seconds": float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0),
        "rps": float(m.group(3)),
        "done": int(r.group(3)),
        "succeeded": int(r.group(4)),
        "failed": int(r.group(5)),
        "errored": int(r.group(6)),
        "timeout": int(r.group(7)),
        "mean_latency": t.group(3) if t else None,
    }


def to_ms(s):
    """wrk's latency strings (812.00us, 1.23ms, 1.01s) in milliseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", s)
    if not m:
        return None
    v = float(m.group(1))
    return v * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


def parse_wrk(text):
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    pct = {p: to_ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M)}
    if not rps:
        raise RuntimeError(f"cannot parse wrk output:\n{text[-800:]}")
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)) if total else 0,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
        "p50_ms": pct.get("50"),
        "p90_ms": pct.get("90"),
        "p99_ms": pct.get("99"),
    }


def first_line(argv):
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (res.stdout + res.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def environment():
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"Model name:\s+(.*)", lscpu)
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "cpu_model": model.group(1).strip() if model else "unknown",
        "cpus": os.cpu_count(),
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": os.uname().release,
        "haproxy": first_line(["haproxy", "-v"]),
        "nginx": first_line(["nginx", "-v"]),
        "h2load": first_line(["h2load", "--version"]),
        "wrk": first_line(["wrk", "-v"]),
        "rustc": first_line(["rustc", "-V"]),
        "commit": first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "dirty": bool(
            subprocess.run(
                ["git", "-C", str(REPO), "status", "--porcelain", "crates"],
                capture_output=True,
                text=True,
            ).stdout.strip()
        ),
    }


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------- the run


class Bench:
    def __init__(self, args, run_dir):
        self.args = args
        self.run_dir = run_dir
        self.procs = Processes(run_dir)
        self.body = run_dir / "getstatus.bin"
        self.body.write_bytes(BODY)
        self.results = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": {
                "reps": args.reps,
                "duration_s": args.duration,
                "idle_conns": args.idle_conns,
                "shapes": [f"{c}x{m}" for c, m in SHAPES],
                "rate_shares": RATE_SHARES,
                "proxy_cpu": PROXY_CPU,
                "load_cpu": LOAD_CPU,
                "quick": args.quick,
            },
            "env": environment(),
            "load_before": loadavg(),
            "targets": {name: {"label": label, "port": port, "kind": kind} for name, label, port, kind in TARGETS},
            "gateways": {name: {"label": label, "port": port} for name, label, port, _ in GATEWAYS},
            "closed": [],
            "open": [],
            "gateway": [],
            "idle_rss_kb": {},
            "peak_rss_kb": {},
            "idle_conn": {},
            "share": {},
            "admin_share": {},
            "checks": {},
            "commands": {
                "closed": "taskset -c 0 h2load -c C -m M -t 1 -D SECONDS -H 'content-type: application/grpc' "
                "-H 'te: trailers' -d getstatus.bin http://127.0.0.1:PORT/gateway.AliveService/GetStatus",
                "open": "taskset -c 0 target/loadgen/release/loadgen open --addr 127.0.0.1:PORT --conns 4 "
                "--rate RATE --duration SECONDS --warmup 1",
                "idle": "taskset -c 0 target/loadgen/release/loadgen idle --addr 127.0.0.1:PORT --conns N",
                "check": "taskset -c 0 target/loadgen/release/loadgen closed --addr 127.0.0.1:PORT --conns 1 --streams 8 --duration 1",
                "gateway": "taskset -c 0 wrk -t1 -c32 -dSECONDSs --latency http://127.0.0.1:PORT/alive",
            },
        }

    def save(self):
        self.results["processes"] = self.procs.commands
        path = self.run_dir / "results.json"
        path.write_text(json.dumps(self.results, indent=1))

    def target_pids(self, name):
        if name == "direct":
            return descendants(self.procs.pid("b1"))
        return descendants(self.procs.pid(name))

    # -- start

    def start_backends(self):
        log("starting 3 backends on core 0")
        for bid, port in BACKENDS:
            self.procs.start(bid, [BIN / "backend", "--listen", f"127.0.0.1:{port}", "--id", bid], LOAD_CPU)
        for bid, port in BACKENDS:
            wait_port(port, bid)

    def l7_argv(self, name, single_process=False):
        """The command line of an L7 target (ours, HAProxy h2, nginx).

        `single_process`: nginx without its master, so that its one process
        serves the calls (callgrind_control cannot reach a forked worker).
        """
        if name == "ours-l7":
            return [BIN / "proxy", "--listen", "127.0.0.1:19001", "--admin", "127.0.0.1:19101", *OURS_L7_ARGS]
        if name == "ours-l7-ids":
            return [BIN / "proxy", "--listen", "127.0.0.1:19001", "--admin", "127.0.0.1:19101", *OURS_ARGS]
        if name in WEB_VARIANTS:
            return [BIN / "proxy", "--listen", "127.0.0.1:19001", "--admin", "127.0.0.1:19101", *OURS_L7_ARGS,
                    "--grpc-web"]
        if name == "haproxy-h2":
            return ["haproxy", "-db", "-f", CONFIGS / "haproxy-h2.cfg"]
        nginx_prefix = self.run_dir / "nginx"
        (nginx_prefix / "tmp").mkdir(parents=True, exist_ok=True)
        config = CONFIGS / "nginx.conf"
        if single_process:
            text = config.read_text()
            assert "master_process on;" in text
            config = (self.run_dir / "nginx-single-process.conf").resolve()
            config.write_text(text.replace("master_process on;", "master_process off;"))
        return ["nginx", "-p", f"{nginx_prefix}/", "-c", config]

    def start(self):
        ports = [p for _, p in BACKENDS] + [t[2] for t in TARGETS[1:]] + list(ADMIN.values()) + [g[2] for g in GATEWAYS]
        busy = [p for p in ports if not port_free(p)]
        if busy:
            raise RuntimeError(f"ports already in use: {busy} (another bench running?)")
        self.start_backends()
        log("starting the targets on core 1, one worker thread each")
        self.procs.start("ours-l7", self.l7_argv("ours-l7"), PROXY_CPU)
        self.procs.start(
            "ours-l4",
            [BIN / "proxy", "--mode", "l4", "--listen", "127.0.0.1:19005", "--admin", "127.0.0.1:19105", *OURS_ARGS],
            PROXY_CPU,
        )
        self.procs.start("haproxy-h2", self.l7_argv("haproxy-h2"), PROXY_CPU)
        self.procs.start("haproxy-tcp", ["haproxy", "-db", "-f", CONFIGS / "haproxy-tcp.cfg"], PROXY_CPU)
        self.procs.start("nginx", self.l7_argv("nginx"), PROXY_CPU)
        for name, _, port, _ in TARGETS:
            wait_port(port, name)
        time.sleep(1.0)
        self.procs.check_alive()

    def restart(self):
        """Fresh processes, so memory held since the idle-connection test does not count as load."""
        log("restarting backends and targets")
        self.procs.stop_all()
        self.start()

    def start_gateways(self):
        log("starting the gateways on core 1")
        for name, _, port, upstream in GATEWAYS:
            self.procs.start(name, [BIN / "gateway", "--listen", f"127.0.0.1:{port}", "--upstream", upstream], PROXY_CPU)
        for name, _, port, _ in GATEWAYS:
            wait_port(port, name)

    # -- phases

    def idle_rss(self):
        for name, *_ in TARGETS:
            self.results["idle_rss_kb"][name] = status_kb(self.target_pids(name), "VmRSS")
        log("idle RSS (KiB): " + ", ".join(f"{k} {v}" for k, v in self.results["idle_rss_kb"].items()))

    def check(self):
        """Every target answers grpc-status 0; the counts show the spread."""
        for name, _, port, _ in TARGETS:
            r = loadgen("closed", "--addr", f"127.0.0.1:{port}", "--conns", "1", "--streams", "8", "--duration", "1")
            ok = r["ok"] == r["done"] and r["done"] > 0
            self.results["checks"][name] = r
            log(f"check {name}: {r['ok']}/{r['done']} grpc-status 0, backends {r['backends']}")
            if not ok:
                raise RuntimeError(f"{name} failed the correctness check: {r}")

    def h2load(self, port, conns, streams, duration=None, calls=None, client=None):
        """Closed loop for `duration` seconds, or for exactly `calls` calls.
        `client`: h2load flags and headers instead of a gRPC call's (CLIENTS)."""
        url = f"http://127.0.0.1:{port}{METHOD}"
        amount = ["-D", duration] if calls is None else ["-n", calls]
        out = run(
            [
                "h2load", "-c", conns, "-m", streams, "-t", "1", *amount,
                *(client or CLIENTS["grpc"]),
                "-d", self.body, url,
            ],
            timeout=(duration or 0) + 600,
        )
        return parse_h2load(out)

    def warm_up(self):
        log("warm-up: 2 s of h2load per target")
        for name, _, port, _ in TARGETS:
            self.h2load(port, 4, 16, 2)

    def closed(self):
        for rep in range(1, self.args.reps + 1):
            for conns, streams in SHAPES:
                for name, _, port, _ in TARGETS:
                    pids = self.target_pids(name)
                    backends = [p for bid, _ in BACKENDS for p in descendants(self.procs.pid(bid))]
                    cpu0 = cpu_seconds(pids)
                    backends0 = cpu_seconds(backends)
                    client0 = children_cpu_seconds()
                    with RssSampler(pids) as rss:
                        r = self.h2load(port, conns, streams, self.args.duration)
                    cpu = cpu_seconds(pids) - cpu0
                    calls = max(r["done"], 1)
                    r.update(
                        target=name,
                        shape=f"{conns}x{streams}",
                        rep=rep,
                        cpu_s=cpu,
                        cpu_us_per_call=cpu * 1e6 / calls,
                        # Core 0's side of the same calls: the 3 backends (for
                        # direct, b1 alone does the work) and h2load itself.
                        backends_us_per_call=(cpu_seconds(backends) - backends0) * 1e6 / calls,
                        client_us_per_call=(children_cpu_seconds() - client0) * 1e6 / calls,
                        peak_rss_kb=rss.peak,
                    )
                    self.results["closed"].append(r)
                    log(
                        f"closed rep {rep}/{self.args.reps} {conns}x{streams} {name}: "
                        f"{r['rps']:.0f} req/s, {r['cpu_us_per_call']:.1f} us CPU/call, failed {r['failed'] + r['errored']}"
                    )
                    self.save()
                    self.procs.check_alive()

    def direct_max(self):
        runs = [r["rps"] for r in self.results["closed"] if r["target"] == "direct" and r["shape"] == "4x16"]
        return statistics.median(runs)

    def open_loop(self):
        top = self.direct_max()
        self.results["direct_max_rps"] = top
        log(f"open loop: rates {', '.join(f'{int(s * 100)}%' for s in RATE_SHARES)} of the direct maximum {top:.0f} req/s")
        admin_before = {n: admin_counts(p, ADMIN_STAT[n]) for n, p in ADMIN.items()}
        for rep in range(1, self.args.reps + 1):
            for share in RATE_SHARES:
                rate = top * share
                for name, _, port, _ in TARGETS:
                    pids = self.target_pids(name)
                    cpu0 = cpu_seconds(pids)
                    with RssSampler(pids) as rss:
                        r = loadgen(
                            "open", "--addr", f"127.0.0.1:{port}", "--conns", "4",
                            "--rate", f"{rate:.0f}", "--duration", str(self.args.duration), "--warmup", "1",
                            timeout=self.args.duration + 60,
                        )
                    cpu = cpu_seconds(pids) - cpu0
                    r.update(
                        target=name,
                        share=share,
                        rep=rep,
                        cpu_s=cpu,
                        cpu_us_per_call=cpu * 1e6 / max(r["issued"], 1),
                        peak_rss_kb=rss.peak,
                    )
                    self.results["open"].append(r)
                    bad = r["done"] - r["ok"] + r["unfinished"]
                    log(
                        f"open rep {rep}/{self.args.reps} {int(share * 100)}% {name}: p50 {r['p50_us']} us, "
                        f"p99 {r['p99_us']} us, p99.9 {r['p999_us']} us, not ok {bad}, generator lag p99 {r['lag_p99_us']} us"
                    )
                    self.save()
                    self.procs.check_alive()
        for n, p in ADMIN.items():
            after = admin_counts(p, ADMIN_STAT[n])
            self.results["admin_share"][n] = {
                "stat": ADMIN_STAT[n],
                "hosts": {h: after.get(h, 0) - admin_before[n].get(h, 0) for h in after},
            }

    def peak_rss(self):
        """Highest RSS sampled during the closed-loop runs (bounded concurrency)."""
        for name, *_ in TARGETS:
            runs = [r["peak_rss_kb"] for r in self.results["closed"] if r["target"] == name]
            self.results["peak_rss_kb"][name] = max(runs, default=0)
        log("peak RSS under closed-loop load (KiB): " + ", ".join(f"{k} {v}" for k, v in self.results["peak_rss_kb"].items()))

    def idle_connections(self):
        n = self.args.idle_conns
        for name, _, port, _ in TARGETS:
            pids = self.target_pids(name)
            before = status_kb(pids, "VmRSS")
            out = open(self.run_dir / "logs" / f"idle-{name}.log", "w")
            holder = subprocess.Popen(
                ["taskset", "-c", LOAD_CPU, LOADGEN, "idle", "--addr", f"127.0.0.1:{port}", "--conns", str(n)],
                stdout=subprocess.PIPE,
                stderr=out,
                text=True,
            )
            with open(self.procs.pidfile, "a") as f:
                f.write(f"{holder.pid}\n")
            try:
                line = holder.stdout.readline()
                if not line.startswith("ready"):
                    raise RuntimeError(f"idle connections to {name} failed; see logs/idle-{name}.log")
                time.sleep(1.0)
                pids = self.target_pids(name)  # nginx may not have new processes, but be safe
                after = status_kb(pids, "VmRSS")
            finally:
                holder.terminate()
                holder.wait()
            self.results["idle_conn"][name] = {
                "conns": n,
                "rss_before_kb": before,
                "rss_after_kb": after,
                "kb_per_conn": (after - before) / n,
            }
            log(f"idle connections {name}: {n} conns, RSS {before} -> {after} KiB, {(after - before) / n * 1024:.0f} B/conn")
            time.sleep(1.0)

    def gateway(self):
        d = self.args.duration
        for name, _, port, _ in GATEWAYS:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/alive", timeout=5) as r:
                body = r.read().decode()
                backend = r.headers.get("x-backend-id")
            if '"status":true' not in body:
                raise RuntimeError(f"{name} /alive answered {body}")
            log(f"check {name}: /alive {body} from {backend}")
        for name, _, port, _ in GATEWAYS:
            run(["wrk", "-t1", "-c32", "-d2s", f"http://127.0.0.1:{port}/alive"], timeout=30)
        for rep in range(1, self.args.reps + 1):
            for name, _, port, _ in GATEWAYS:
                out = run(
                    ["wrk", "-t1", "-c32", f"-d{d}s", "--latency", f"http://127.0.0.1:{port}/alive"],
                    timeout=d + 60,
                )
                r = parse_wrk(out)
                r.update(gateway=name, rep=rep)
                self.results["gateway"].append(r)
                log(
                    f"gateway rep {rep}/{self.args.reps} {name}: {r['rps']:.0f} req/s, "
                    f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, non-2xx {r['non2xx']}"
                )
                self.save()

    def share(self):
        """Per-backend share of the open-loop calls at 50%, counted from x-backend-id."""
        for name, *_ in TARGETS:
            counts = {}
            for r in self.results["open"]:
                if r["target"] == name:
                    for b, c in r["backends"].items():
                        counts[b] = counts.get(b, 0) + c
            self.results["share"][name] = counts

    def profile(self):
        """perf (cpu-clock: VMs often lack hardware counters) of ours L7 under h2load 4x16.

        Two recordings: a flat one (self time per symbol, grouped by component)
        and one with DWARF call graphs (inclusive time of our own functions).
        """
        if not shutil.which("perf"):
            log("perf not found; skipping the profile")
            return
        pid = self.procs.pid("ours-l7")
        secs = max(5, min(self.args.duration, 15))
        prof = self.run_dir / "profile"
        prof.mkdir(exist_ok=True)
        for kind, extra in [("flat", ["-F", "1999"]), ("callgraph", ["-F", "999", "--call-graph", "dwarf,16384"])]:
            data = prof / f"perf-{kind}.data"
            rec = subprocess.Popen(
                ["perf", "record", "-e", "cpu-clock", *extra, "-p", str(pid), "-o", data, "--", "sleep", str(secs)],
                stdout=subprocess.DEVNULL,
                stderr=open(prof / f"record-{kind}.log", "w"),
            )
            with open(self.procs.pidfile, "a") as f:
                f.write(f"{rec.pid}\n")
            time.sleep(0.3)
            r = self.h2load(19001, 4, 16, secs)
            rec.wait(timeout=300)
            log(f"profile {kind}: {r['rps']:.0f} req/s while recording")
        self.results["profile"] = summarize_profile(prof)
        self.save()


    def instructions(self):
        """User-space instructions per call of each L7 proxy, counted by callgrind.

        Every other process is stopped first; the backends run natively. Each
        proxy runs alone under valgrind (nginx as one process), gets a warm-up,
        then its counters are zeroed, it serves exactly CALLS calls (h2load 4x16),
        and the counters are dumped: instructions / calls is exact and repeatable.
        """
        if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
            log("valgrind not found; skipping instructions per call")
            return
        self.procs.stop_all()
        self.start_backends()
        calls = 2000 if self.args.quick else 10000
        out_dir = self.run_dir / "callgrind"
        out_dir.mkdir(exist_ok=True)
        counts = {}
        for name in ("ours-l7", "ours-l7-ids", "haproxy-h2", "nginx", *WEB_VARIANTS):
            client, conns, streams = WEB_VARIANTS.get(name, ("grpc", 4, 16))
            base = "ours-l7" if name in WEB_VARIANTS else name.removesuffix("-ids")
            port = next(t[2] for t in TARGETS if t[0] == base)
            target_dir = out_dir / name
            target_dir.mkdir(exist_ok=True)
            proc_name = f"callgrind-{name}"
            self.procs.start(
                proc_name,
                [
                    "valgrind", "--tool=callgrind",
                    f"--callgrind-out-file={target_dir}/callgrind.out.%p", *self.l7_argv(name, single_process=True),
                ],
                PROXY_CPU,
            )
            wait_port(port, name, deadline=120)
            self.h2load(port, conns, streams, calls=max(500, calls // 10), client=CLIENTS[client])
            pid = self.procs.pid(proc_name)

            def control(cmd):
                try:
                    subprocess.run(
                        ["callgrind_control", cmd, str(pid)], capture_output=True, text=True, timeout=60, check=True
                    )
                except (subprocess.SubprocessError, OSError) as e:
                    raise RuntimeError(f"callgrind_control {cmd} {pid} ({name}) failed: {e}") from e

            control("--zero")
            r = self.h2load(port, conns, streams, calls=calls, client=CLIENTS[client])
            control("--dump")
            self.procs.stop(proc_name)
            # Zeroed then dumped: the dumps (callgrind.out.<pid>.1) hold the load alone.
            total = 0
            for dump in target_dir.glob("callgrind.out.*.1"):
                for line in dump.read_text(errors="replace").splitlines():
                    if line.startswith("totals:"):
                        total += int(line.split()[1])
            if r["succeeded"] != calls or total == 0:
                raise RuntimeError(f"callgrind {name}: {r['succeeded']}/{calls} calls succeeded, {total} instructions")
            counts[name] = {"calls": calls, "instructions": total, "per_call": total / calls}
            log(f"instructions per call {name}: {total / calls:,.0f} ({calls} calls)")
        self.results["instructions"] = counts
        self.save()


def summarize_profile(prof):
    """Self time grouped by component, top symbols, and inclusive time of our functions."""
    summary = {}
    for kind in ("flat", "callgraph"):
        data = prof / f"perf-{kind}.data"
        if not data.exists():
            continue
        if kind == "flat":
            report = ["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "symbol", "--percent-limit", "0"]
        else:
            report = ["perf", "report", "-i", data, "--stdio", "--children", "--sort", "symbol", "-g", "none", "--percent-limit", "0.5"]
        text = subprocess.run(report, capture_output=True, text=True).stdout
        (prof / f"report-{kind}.txt").write_text(text)
        rows = []
        for line in text.splitlines():
            m = re.match(r"\s+([\d.]+)%\s+(?:([\d.]+)%\s+)?\[(.)\]\s+(.*)", line)
            if m:
                sym = re.sub(r"\s+-\s+-\s*$", "", m.group(4)).strip()
                rows.append((float(m.group(1)), m.group(3), sym))
        if kind == "flat":
            summary["samples"] = sample_count(text)
            summary["top"] = [{"pct": p, "symbol": sym, "kernel": k == "k"} for p, k, sym in rows[:30]]
            groups = {}
            for p, k, sym in rows:
                g = component(k, sym)
                groups[g] = groups.get(g, 0.0) + p
            summary["components"] = sorted(groups.items(), key=lambda kv: -kv[1])
        else:
            summary["callgraph_samples"] = sample_count(text)
            # Frames of our code and of h2, with the time spent in them and below.
            seen, inclusive = set(), []
            for p, _, sym in rows:
                if not re.match(r"<?(proxy|h2)::", sym) or sym.startswith("proxy::main"):
                    continue
                if sym not in seen:
                    seen.add(sym)
                    inclusive.append({"pct": p, "symbol": sym})
            summary["inclusive"] = inclusive[:30]
            # Where the time goes, by kind of task (frames nest, so take the outermost).
            tasks = {}
            for name, needle in [
                ("calls (proxy::forward::handle, run inside client connection tasks)", "proxy::forward::handle"),
                ("client connection tasks (proxy::server::connection: h2 server and its calls)", "proxy::server::connection"),
                ("upstream connection tasks (proxy::upstream::maintain, h2 client)", "proxy::upstream::maintain"),
            ]:
                tasks[name] = max((p for p, _, sym in rows if needle in sym), default=0.0)
            summary["tasks"] = tasks
    return summary


def sample_count(report):
    m = re.search(r"# Samples: (\S+)", report)
    return m.group(1) if m else "?"


COMPONENTS = [
    ("allocator (glibc malloc/free)", r"^(malloc|_int_malloc|_int_free|cfree|free|realloc|_int_realloc|calloc|malloc_consolidate|unlink_chunk|tcache|__libc_malloc|__libc_free|__libc_calloc|__libc_realloc|alloc::)"),
    ("memcpy/memmove/memcmp", r"^__mem|^memcpy|^memmove|^memcmp|^memset"),
    ("h2 HPACK", r"h2::hpack"),
    ("h2 frames, streams, flow control", r"h2::"),
    ("http headers", r"^<?http::"),
    ("bytes", r"^<?bytes::"),
    ("tokio runtime and I/O", r"^<?tokio::"),
    ("tokio-util (TaskTracker, codecs)", r"^<?tokio_util::"),
    ("tracing", r"^<?tracing"),
    ("our proxy code", r"proxy::"),
    ("std/core futures glue", r"^<?(core::|std::|futures)"),
]


def component(kind, symbol):
    if kind == "k":
        return "kernel (syscalls, TCP loopback, scheduler)"
    for name, pattern in COMPONENTS:
        if re.search(pattern, symbol):
            return name
    return "other"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--quick", action="store_true", help="2 repetitions of 3 s, 200 idle connections")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--duration", type=int, help="seconds per measurement")
    ap.add_argument("--idle-conns", type=int)
    ap.add_argument("--profile", action="store_true", help="also perf-profile our L7 proxy under load")
    ap.add_argument("--no-instructions", action="store_true", help="skip the callgrind instructions-per-call phase")
    ap.add_argument("--instructions-only", action="store_true", help="only the callgrind instructions-per-call phase")
    ap.add_argument(
        "--memory-only", action="store_true", help="only idle RSS and memory per idle client connection (about a minute)"
    )
    args = ap.parse_args()
    if args.reps is None:
        args.reps = 2 if args.quick else 5
    if args.duration is None:
        args.duration = 3 if args.quick else 10
    if args.idle_conns is None:
        args.idle_conns = 200 if args.quick else 1000

    run_dir = args.out
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    bench = Bench(args, run_dir)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        if args.instructions_only:
            bench.instructions()
            return
        if args.memory_only:
            bench.start()
            bench.idle_rss()
            bench.idle_connections()
            bench.save()
            return
        bench.start()
        bench.idle_rss()
        # Before any load, so that memory freed after load does not hide the cost.
        bench.idle_connections()
        bench.restart()
        bench.check()
        bench.warm_up()
        bench.closed()
        bench.peak_rss()
        bench.open_loop()
        bench.share()
        if args.profile:
            bench.profile()
        bench.start_gateways()
        bench.gateway()
        if not args.no_instructions:
            bench.instructions()
        bench.results["load_after"] = loadavg()
        bench.results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        bench.save()
    finally:
        bench.procs.stop_all()
    log(f"raw results: {run_dir / 'results.json'}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    except RuntimeError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        sys.exit(1)
