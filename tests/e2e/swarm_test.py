#!/usr/bin/env python3
"""End-to-end test of the Swarm stack (deploy/swarm/stack.yml).

Builds the images, makes this node a one-node swarm if it is in none, deploys
the stack under a stack name of its own with host ports picked free at run
time, and checks what a user of docs/deploy.md relies on, counting calls by
the `x-backend-id` header (each backend task's name, `<service>.<slot>.<task
id>`), independent of the proxies' own statistics:

0. deploy/swarm/proxy.yaml has compose/front-proxy.yaml's settings but for
   the upstream (`tasks.backend:8080`);
1. every task healthy and running as uid 65532, each proxy's published admin
   page lists the 3 backend tasks as healthy hosts;
2. 999 requests through the gateway spread 333 +- 10% over the 3 tasks;
3. `docker service scale` to 5 under continuous traffic: the new tasks get
   calls, no request fails;
4. a rolling `docker service update --force` of the backends under continuous
   traffic: every task is replaced, the new ones get the calls, no request
   fails;
5. `docker service scale` to 2 under continuous traffic: no request fails, the
   calls go to the 2 left.

Where the kernel has no IPVS (Swarm's routing mesh and service VIPs are IPVS
load balancers), the stack is deployed with deploy/swarm/no-ipvs.env: ports
published in host mode, the proxies found by DNS round robin, one gateway.
SWARM_PUBLISH=ingress|host chooses instead of the detection.

The node is left as it was found, also when a check fails or the test is
interrupted (SIGINT, SIGTERM, SIGHUP): the stack is removed and the test waits
until its services, containers, networks and configs are gone; a swarm the
test initialised is left (`docker swarm leave --force`) and the bridge network
Swarm created with it (docker_gwbridge) removed; a swarm that was there
before is left alone. The swarm the test makes carries a node label, so that
another run deploying on it meanwhile (two checkouts tested at once) knows it
is a test's: the last run out leaves it. Python 3 standard library only; the HTTP client, the
traffic generator and the soft checks are compose_test.py's.

Usage: tests/e2e/swarm_test.py [--no-build]
"""

import argparse
import collections
import gzip
import json
import os
import platform
import signal
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compose_test import (  # noqa: E402  (the sibling test's helpers)
    ROOT,
    WORKERS,
    Checks,
    Client,
    Traffic,
    cluster_hosts,
    log,
    on_signal,
    run,
    step,
)

STACK_FILE = ROOT / "deploy" / "swarm" / "stack.yml"
PROXY_CONFIG = ROOT / "deploy" / "swarm" / "proxy.yaml"
COMPOSE_PROXY_CONFIG = ROOT / "compose" / "front-proxy.yaml"
NO_IPVS_ENV = ROOT / "deploy" / "swarm" / "no-ipvs.env"
# Latency of every backend call, so that calls are in flight when a task
# stops: those must finish (drain), not fail.
BACKEND_DELAY_MS = 5
READY_DEADLINE = 180.0
# How long a new task may take to get its first call after `docker service
# scale` returned: the DNS refresh (1s), the proxy's first health check, and a
# margin for a loaded 2-core machine. Swarm adds a task to DNS only once its
# health check passes, which `scale` already waited for.
NEW_TASK_DEADLINE = 20.0
# After a scale-down or an update returned: the DNS refresh and a margin.
SETTLE = 3.0
# docker stack rm: the tasks' stop (drains are quick without traffic), then
# the network.
REMOVE_DEADLINE = 120.0


# --- the node -------------------------------------------------------------------


def swarm_state():
    """(LocalNodeState, ControlAvailable) of this node."""
    out = run(["docker", "info", "--format",
               "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"]).split()
    return out[0], out[1:] == ["true"]


# On a swarm this test initialised, so that another run of it that deploys on
# the same swarm meanwhile (two checkouts testing at once) knows the swarm is a
# test's: the last one out leaves it, the others leave it to their stacks.
NODE_LABEL = "grpc-balance.swarm-test"


def node_labelled():
    out = run(["docker", "node", "inspect", "self", "--format",
               "{{index .Spec.Labels \"" + NODE_LABEL + "\"}}"], check=False)
    return out.strip() == "initialised"


def other_services():
    return run(["docker", "service", "ls", "--format", "{{.Name}}"], check=False).split()


def networks():
    return set(run(["docker", "network", "ls", "--format", "{{.Name}}"]).split())


def ipvs_in_kernel():
    """Whether the kernel can run IPVS, which the routing mesh and VIPs need.
    Docker loads the module itself when it can; a kernel built without it
    (CONFIG_IP_VS unset, as in some micro-VMs) cannot have one."""
    if Path("/proc/net/ip_vs").exists():
        return True
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            for line in f:
                if line.startswith("CONFIG_IP_VS="):
                    return line.strip().split("=")[1] in ("y", "m")
        return False
    except OSError:
        pass
    modules = Path("/lib/modules") / platform.release()
    for listing in ("modules.builtin", "modules.dep"):
        try:
            if "/ip_vs.ko" in (modules / listing).read_text():
                return True
        except OSError:
            pass
    return False


def free_port():
    """A TCP port free on this host now (the routing mesh publishes on every
    address, so the test cannot use 127.0.0.1:0 as the Compose test does)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def read_env_file(path):
    found = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found[key] = value
    return found


# --- the stack ------------------------------------------------------------------


class Stack:
    """One stack: deploy, services, tasks, containers, rm."""

    def __init__(self, publish):
        self.name = f"e2e-swarm-{os.getpid()}"
        self.publish = publish
        self.gateway_port = free_port()
        self.env = dict(os.environ, BACKEND_DELAY_MS=str(BACKEND_DELAY_MS), BACKEND_FAIL_RATE="0",
                        BACKEND_REPLICAS="3", GATEWAY_PORT=str(self.gateway_port))
        if publish == "host":
            # Host mode: the gateway on its port, each proxy task on ports of
            # its own (PROXY_PORT=ADMIN_PORT=0), found by `docker inspect`.
            self.env.update(read_env_file(NO_IPVS_ENV))
            self.admin_port = None
        else:
            self.admin_port = free_port()
            # Explicit, in case the shell has no-ipvs.env's values.
            self.env.update(PUBLISH_MODE="ingress", PROXY_ENDPOINT_MODE="vip",
                            GATEWAY_REPLICAS="2", GATEWAY_UPDATE_ORDER="start-first",
                            PROXY_PORT=str(free_port()), ADMIN_PORT=str(self.admin_port))
        self.gateway_replicas = int(self.env.get("GATEWAY_REPLICAS", "2"))

    def service(self, name):
        return f"{self.name}_{name}"

    def deploy(self):
        return run(["docker", "stack", "deploy", "--resolve-image", "never",
                    "-c", STACK_FILE, self.name], env=self.env)

    def containers(self, service=None, running=True):
        cmd = ["docker", "ps", "-q", "--no-trunc"] + ([] if running else ["-a"])
        cmd += ["--filter", f"label=com.docker.stack.namespace={self.name}"]
        if service:
            cmd += ["--filter", f"label=com.docker.swarm.service.name={self.service(service)}"]
        return run(cmd, check=False).split()

    def tasks(self, service="backend"):
        """{x-backend-id: current state} of the tasks meant to run."""
        out = run(["docker", "service", "ps", "--no-trunc", "--filter", "desired-state=running",
                   "--format", "{{.Name}}\t{{.ID}}\t{{.CurrentState}}", self.service(service)])
        found = {}
        for line in out.splitlines():
            name, task_id, state = line.split("\t")
            found[f"{name}.{task_id}"] = state
        return found

    def running_tasks(self, service="backend"):
        return {t for t, state in self.tasks(service).items() if state.startswith("Running")}

    def gateway(self):
        return ("127.0.0.1", self.gateway_port)

    def admins(self):
        """Each proxy's admin address: the published port of every task in host
        mode; the routing mesh's one port (any proxy answers) in ingress mode."""
        if self.admin_port:
            return {"routing mesh": ("127.0.0.1", self.admin_port)}
        found = {}
        for info in inspect(self.containers("proxy")):
            ports = (info["NetworkSettings"]["Ports"] or {}).get("8001/tcp") or []
            task = info["Config"]["Labels"].get("com.docker.swarm.task.name", info["Name"])
            if ports:
                found[task] = ("127.0.0.1", int(ports[0]["HostPort"]))
        return found

    def rm(self):
        run(["docker", "stack", "rm", self.name], check=False)

    def leftovers(self):
        label = f"label=com.docker.stack.namespace={self.name}"
        found = {}
        for kind, cmd in (
            ("services", ["docker", "service", "ls", "-q", "--filter", label]),
            ("containers", ["docker", "ps", "-aq", "--filter", label]),
            ("networks", ["docker", "network", "ls", "-q", "--filter", label]),
            ("configs", ["docker", "config", "ls", "-q", "--filter", label]),
        ):
            ids = run(cmd, check=False).split()
            if ids:
                found[kind] = ids
        return found


def inspect(ids):
    if not ids:
        return []
    return json.loads(run(["docker", "inspect", *ids]))


def explain(stack, since, errors):
    """After failed requests: what the proxies and the gateway logged meanwhile,
    leaving out the access log lines of calls that went well."""
    if not errors:
        return
    for service in ("proxy", "gateway"):
        for container in stack.containers(service, running=False):
            out = run(["docker", "logs", "--since", f"{since:.3f}", container], check=False)
            lines = [l for l in out.splitlines() if '" 200 - ' not in l]
            log(f"    {service} {container[:12]} log since the phase began "
                f"({len(lines)} lines besides calls that went well):")
            for line in lines[-25:]:
                log(f"      | {line[:300]}")


def short(task):
    """`stack_backend.2.<task id>` as `backend.2.<first 6 of the id>`."""
    service, _, rest = task.partition("_")
    slot, _, task_id = rest.rpartition(".")
    return f"{slot}.{task_id[:6]}"


def names_of(tasks):
    return {t: short(t) for t in tasks}


# --- the phases -----------------------------------------------------------------


def settings(path):
    """A YAML file's lines without comments and blank lines."""
    lines = (line.split(" #")[0].rstrip() for line in path.read_text().splitlines())
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def same_proxy_config(checks):
    """The Swarm proxy's settings are Compose's, but for the upstream."""
    ours, compose = settings(PROXY_CONFIG), settings(COMPOSE_PROXY_CONFIG)
    differ = [(c, o) for c, o in zip(compose, ours) if c != o]
    expected = [("    upstreams: [backend:8080]", "    upstreams: [tasks.backend:8080]")]
    checks.check(len(ours) == len(compose) and differ == expected,
                 f"{PROXY_CONFIG.relative_to(ROOT)} has the settings of "
                 f"{COMPOSE_PROXY_CONFIG.relative_to(ROOT)} but for the upstream "
                 f"tasks.backend:8080 ({'no other difference' if differ == expected else differ}"
                 f"{'' if len(ours) == len(compose) else f'; {len(ours)} against {len(compose)} lines'})")



def wait_ready(stack, checks, replicas=3):
    """Until every task runs and is healthy, each proxy lists the backend
    tasks as healthy hosts, and calls reach every backend task."""
    started = time.monotonic()
    deadline = started + READY_DEADLINE
    expected = replicas + 2 + stack.gateway_replicas
    while True:
        infos = inspect(stack.containers())
        health = {i["Name"].lstrip("/"): i["State"].get("Health", {}).get("Status", "none")
                  for i in infos}
        healthy = sum(1 for s in health.values() if s == "healthy")
        admins = stack.admins()
        listed = {}
        for task, admin in admins.items():
            try:
                listed[task] = sorted(h for h, s in cluster_hosts(admin).items()
                                      if s.get("health_flags") == "healthy")
            except OSError:
                listed[task] = []
        if (len(infos) == expected and healthy == expected
                and len(admins) == (1 if stack.admin_port else 2)
                and all(len(h) == replicas for h in listed.values())):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"stack not ready after {READY_DEADLINE:.0f}s: health {health}, "
                               f"proxies list {listed}")
        time.sleep(0.5)
    log(f"    {healthy} tasks healthy after {time.monotonic() - started:.1f}s")
    for task, hosts in listed.items():
        log(f"    admin of {task} ({admins[task][0]}:{admins[task][1]}): "
            f"{len(hosts)} healthy hosts {hosts}")
    users = {i["Config"]["Labels"].get("com.docker.swarm.service.name", "?"): i["Config"]["User"]
             for i in infos}
    checks.check(all(u == "65532:65532" for u in users.values()),
                 f"every task runs as uid:gid 65532:65532 ({users})")
    checks.check(all(len(h) == replicas for h in listed.values()),
                 f"each published admin page lists the {replicas} backend tasks as healthy "
                 f"({ {t: len(h) for t, h in listed.items()} })")
    wanted = stack.running_tasks()
    client = Client(stack.gateway())
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


def spread(stack, checks, total=999, replicas=3):
    step(f"{total} requests through the gateway, one at a time")
    tasks = stack.running_tasks()
    client = Client(stack.gateway())
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
    for backend, n in sorted(counts.items()):
        log(f"      {backend:<50} {n:>4}  ({100 * n / total:.1f}%)")
    checks.check(not errors, f"{total} requests, none failed ({len(errors)} failed)")
    checks.check(set(counts) == tasks and all(low <= n <= high for n in counts.values()),
                 f"each of the {replicas} tasks got {share:.0f} +- 10% "
                 f"({low:.0f}..{high:.0f}): {sorted(counts.values())}")


def with_traffic(stack, action):
    """Runs action(traffic) under continuous traffic from WORKERS clients;
    returns (traffic, wall-clock start) for the figures."""
    wall = time.time()
    with Traffic(stack.gateway()) as traffic:
        traffic.wait_for(lambda r: len(r) >= 200, time.monotonic() + 30, "traffic to flow")
        action(traffic)
    return traffic, wall


def scale_up(stack, checks, to=5):
    step(f"docker service scale backend={to} under continuous traffic ({WORKERS} clients)")
    before = stack.running_tasks()
    found = {}

    def act(traffic):
        t0 = time.monotonic()
        run(["docker", "service", "scale", "--detach=false", f"{stack.service('backend')}={to}"])
        t_up = found["t_up"] = time.monotonic()
        after = found["after"] = stack.running_tasks()
        new = found["new"] = sorted(after - before)
        log(f"    `docker service scale` returned after {t_up - t0:.1f}s (the tasks healthy, "
            f"then its monitor period); new tasks: {new}")
        deadline = t_up + NEW_TASK_DEADLINE
        traffic.wait_for(lambda r: all(traffic.first_call(t, t0) for t in new), deadline,
                         "the new tasks' first calls")
        for t in new:
            first = traffic.first_call(t, t0)
            took = f"{first - t0:.1f}s after `scale` began" if first else "never"
            checks.check(first is not None and first <= deadline,
                         f"{short(t)} got its first call within {NEW_TASK_DEADLINE:.0f}s ({took})")
        found["mark"] = time.monotonic()
        traffic.wait_for(lambda r: traffic.successes_after(found["mark"]) >= 500,
                         found["mark"] + 30, "500 more calls")

    traffic, wall = with_traffic(stack, act)
    names = names_of(found["after"] | before)
    log("    calls during the whole phase:")
    _, errors = traffic.summary(names)
    log("    calls once every new task had joined:")
    last, _ = traffic.summary(names, since=found["mark"])
    explain(stack, wall, errors)
    checks.check(len(found["new"]) == to - len(before),
                 f"{to - len(before)} new tasks running ({len(found['new'])})")
    checks.check(not errors, f"no failed request while scaling to {to} "
                             f"({len(errors)} of {len(traffic.records)} failed)")
    checks.check(set(last) == found["after"],
                 f"the last calls reached all {len(found['after'])} tasks ({len(last)} did)")
    return len(traffic.records), len(errors)


def rolling_update(stack, checks):
    step("docker service update --force backend under continuous traffic: a rolling update, "
         "one task at a time, start-first")
    before = stack.running_tasks()
    found = {}

    def act(traffic):
        t0 = found["t0"] = time.monotonic()
        run(["docker", "service", "update", "--force", "--no-resolve-image", "--detach=false",
             "--quiet", stack.service("backend")], timeout=600)
        t_done = found["t_done"] = time.monotonic()
        after = found["after"] = stack.running_tasks()
        log(f"    `docker service update --force` returned after {t_done - t0:.1f}s "
            f"(the last task replaced, then its 10s monitor period)")
        settle = time.monotonic() + SETTLE
        traffic.wait_for(lambda r: time.monotonic() >= settle, settle + 1, "settling")
        found["mark"] = time.monotonic()
        traffic.wait_for(lambda r: traffic.successes_after(found["mark"]) >= 500,
                         found["mark"] + 30, "500 more calls")
        found["new_first"] = {t: traffic.first_call(t, t0) for t in after}

    traffic, wall = with_traffic(stack, act)
    after = found["after"]
    names = names_of(after | before)
    log("    calls during the whole phase:")
    _, errors = traffic.summary(names)
    log("    calls after the update settled:")
    last, _ = traffic.summary(names, since=found["mark"])
    explain(stack, wall, errors)
    last_old = max((t for t, b, _ in traffic.records if b in before), default=None)
    firsts = [t for t in found["new_first"].values() if t]
    if last_old and firsts:
        log(f"    first call on a new task {min(firsts) - found['t0']:+.1f}s, last call on an old "
            f"task {last_old - found['t0']:+.1f}s after the update began")
    checks.check(len(after) == len(before) and not after & before,
                 f"every task replaced ({len(before)} old, {len(after)} new, "
                 f"{len(after & before)} kept)")
    checks.check(not errors, f"no failed request during the rolling update "
                             f"({len(errors)} of {len(traffic.records)} failed)")
    checks.check(set(last) == after,
                 f"after the update, calls went to the {len(after)} new tasks only "
                 f"({sorted(names.get(h, h) for h in last)})")
    return len(traffic.records), len(errors), found["t_done"] - found["t0"]


def scale_down(stack, checks, to=2):
    step(f"docker service scale backend={to} under continuous traffic")
    before = stack.running_tasks()
    found = {}

    def act(traffic):
        t0 = time.monotonic()
        run(["docker", "service", "scale", "--detach=false", f"{stack.service('backend')}={to}"])
        t_down = time.monotonic()
        found["after"] = stack.running_tasks()
        log(f"    `docker service scale` returned after {t_down - t0:.1f}s; removed: "
            f"{sorted(before - found['after'])}")
        settle = t_down + SETTLE
        traffic.wait_for(lambda r: time.monotonic() >= settle, settle + 1, "settling")
        found["mark"] = time.monotonic()
        traffic.wait_for(lambda r: traffic.successes_after(found["mark"]) >= 300,
                         found["mark"] + 30, "300 more calls")

    traffic, wall = with_traffic(stack, act)
    after = found["after"]
    names = names_of(before)
    log("    calls during the whole phase:")
    _, errors = traffic.summary(names)
    log("    calls after the scale-down settled:")
    last, _ = traffic.summary(names, since=found["mark"])
    explain(stack, wall, errors)
    checks.check(len(after) == to, f"{to} tasks left ({len(after)})")
    checks.check(not errors, f"no failed request while scaling to {to} "
                             f"({len(errors)} of {len(traffic.records)} failed)")
    checks.check(set(last) == after,
                 f"after the scale-down, calls went to the {to} left only "
                 f"({sorted(names.get(h, h) for h in last)})")
    return len(traffic.records), len(errors)


# --- setting up and leaving the node as it was ----------------------------------


def remove(stack):
    """docker stack rm, then wait until nothing of the stack is left; a network
    whose last container went after `stack rm` gave up on it is removed here."""
    step(f"docker stack rm {stack.name}, waiting until its services, containers, networks "
         f"and configs are gone")
    started = time.monotonic()
    stack.rm()
    deadline = started + REMOVE_DEADLINE
    left = stack.leftovers()
    while left and time.monotonic() < deadline:
        if set(left) == {"networks"}:
            run(["docker", "network", "rm", *left["networks"]], check=False)
        elif set(left) == {"configs"}:
            run(["docker", "config", "rm", *left["configs"]], check=False)
        time.sleep(0.5)
        left = stack.leftovers()
    log(f"    {'gone' if not left else f'still there: {left}'} after "
        f"{time.monotonic() - started:.1f}s")
    return left


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-build", action="store_true",
                        help="use the images already built (scripts/build-images)")
    args = parser.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    checks = Checks()
    began = time.monotonic()
    state, manager = swarm_state()
    networks_before = networks()
    initialised = False
    stack = None
    figures = {}
    try:
        if not args.no_build:
            step("building the images (scripts/build-images)")
            run([ROOT / "scripts" / "build-images"], capture=False)

        same_proxy_config(checks)
        step(f"swarm: this node is `{state}`" + (" (a manager)" if manager else ""))
        if state == "inactive":
            run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"])
            initialised = True
            node = run(["docker", "info", "--format", "{{.Swarm.NodeID}}"]).strip()
            run(["docker", "node", "update", "--label-add", f"{NODE_LABEL}=initialised", node])
            log("    initialised a one-node swarm (docker swarm init --advertise-addr 127.0.0.1); "
                "the test leaves it at the end")
        elif state != "active" or not manager:
            raise RuntimeError(f"this node is `{state}`{'' if manager else ', not a manager'}: "
                               f"the test deploys only on a manager or a node in no swarm")
        elif node_labelled():
            log("    already in a swarm that another run of this test initialised: the test "
                "deploys its own stack beside, and leaves the swarm if it is the last one out")
        else:
            log("    already in a swarm, as a manager: the test deploys its own stack beside "
                "what runs and leaves the swarm as it is")

        forced = os.environ.get("SWARM_PUBLISH")
        if forced not in (None, "", "ingress", "host"):
            raise RuntimeError(f"SWARM_PUBLISH={forced}: expected ingress or host")
        publish = forced or ("ingress" if ipvs_in_kernel() else "host")
        stack = Stack(publish)
        if publish == "host":
            log(f"    {'SWARM_PUBLISH=host' if forced else 'no IPVS in this kernel'}: no routing "
                f"mesh and no service VIPs, so the stack is deployed with "
                f"{NO_IPVS_ENV.relative_to(ROOT)} (ports in host mode, the proxies found by DNS "
                f"round robin, one gateway)")

        step(f"docker stack deploy: stack {stack.name}, 3 backends ({BACKEND_DELAY_MS} ms per "
             f"call), publishing mode {publish}, gateway on port {stack.gateway_port}")
        t0 = time.monotonic()
        for line in stack.deploy().strip().splitlines():
            log(f"    | {line}")
        wait_ready(stack, checks)
        figures["deploy to ready"] = f"{time.monotonic() - t0:.1f}s"
        spread(stack, checks)
        calls, failed = scale_up(stack, checks)
        figures["scale to 5"] = f"{calls} calls, {failed} failed"
        calls, failed, took = rolling_update(stack, checks)
        figures["rolling update"] = f"{calls} calls, {failed} failed, {took:.1f}s"
        calls, failed = scale_down(stack, checks)
        figures["scale to 2"] = f"{calls} calls, {failed} failed"
    except (Exception, KeyboardInterrupt) as e:
        checks.check(False, f"the test ran to its end ({type(e).__name__}: {e})")
    finally:
        # Signals now would only leave things behind: finish the cleanup.
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        if stack is not None:
            left = remove(stack)
            checks.check(not left, f"the stack left no services, containers, networks or "
                                   f"configs ({left or 'none'})")
        expected, handed_over = state, False
        if initialised or (state == "active" and node_labelled()):
            others = other_services()
            if others:
                log(f"    other services run on the swarm a run of this test initialised "
                    f"({others}): another run's; the last one out leaves the swarm")
                expected, handed_over = "active", True
            else:
                step("docker swarm leave --force (a run of this test initialised the swarm)")
                run(["docker", "swarm", "leave", "--force"], check=False)
                # The bridge Swarm made for its tasks' outside traffic stays
                # after leaving: remove it unless it was there before.
                if "docker_gwbridge" not in networks_before or state == "active":
                    run(["docker", "network", "rm", "docker_gwbridge"], check=False)
                expected = "inactive"
        now, _ = swarm_state()
        extra = networks() - networks_before
        if handed_over:
            # The swarm's own networks and the other run's stay with it.
            checks.check(now == "active", f"the swarm stays for the other run (`{now}`)")
        else:
            checks.check(now == expected and not extra,
                         f"the node is as it was found: swarm `{now}` (was `{state}`"
                         f"{', left: a test had initialised it' if state != now else ''}), "
                         f"networks added: {sorted(extra) or 'none'}")
        figures["whole test"] = f"{time.monotonic() - began:.0f}s"
        step("figures")
        for what, figure in figures.items():
            log(f"    {what:<16} {figure}")
    return 0 if checks.report() else 1


if __name__ == "__main__":
    sys.exit(main())
