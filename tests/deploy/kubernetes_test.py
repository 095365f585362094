#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests in deploy/kubernetes.

No cluster is needed, nor any network:
1. Render the kustomization: `kubectl kustomize` when kubectl is on PATH,
   else the small renderer below, which knows exactly the subset
   kustomization.yaml uses (resources, namespace, labels) and refuses
   anything else. With kubectl, both renderings must agree.
2. Validate every rendered object against the Kubernetes API's JSON schemas
   (kubernetes-validate, strict: unknown fields are errors) of v1.30, the
   oldest version the manifests run on (the `sleep` preStop handler is on by
   default from 1.30), and of v1.37, the newest the package ships.
3. Run checkov on the rendered objects with tests/deploy/checkov.yaml: no
   finding may fail, and every check that file skips must still fail without
   the skip and carry a reason.
4. Assert what the design relies on: the backend Service is headless and the
   proxy's upstream (ConfigMap) names it and its namespace; the probes and the
   ports they use; every pod's terminationGracePeriodSeconds covers its
   preStop sleep plus its drain timeout (the proxy's drain_timeout from the
   ConfigMap, the backend's and the gateway's grace period from their
   environment); the security context; the proxy's configuration is
   compose/front-proxy.yaml but for the upstream, and `proxy --validate`
   accepts it.

Run by scripts/deploy-test, with .venv's Python (scripts/python-env installs
tests/deploy/requirements.txt). KUBECTL=none forces the fallback renderer.

Usage: .venv/bin/python tests/deploy/kubernetes_test.py [unittest args]
"""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZATION_DIR = ROOT / "deploy" / "kubernetes"
CHECKOV_CONFIG = Path(__file__).resolve().parent / "checkov.yaml"
COMPOSE_PROXY_CONFIG = ROOT / "compose" / "front-proxy.yaml"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))

# Kubernetes versions whose schemas every object must pass.
SCHEMA_VERSIONS = ("1.30.0", "1.37.0")
# How long the cluster DNS may answer from its cache: kubeadm's default
# Corefile (kind, minikube, most clusters) has `ttl 30` and `cache 30`.
CLUSTER_DNS_CACHE_SECONDS = 30
# The images' user and group (docker/*.Dockerfile).
IMAGE_USER = 65532
DEPLOYMENTS = ("backend", "proxy", "gateway")
# Where each binary's drain deadline comes from, when not in a ConfigMap.
DRAIN_VARIABLES = {"backend": "BACKEND_GRACE_PERIOD", "gateway": "GATEWAY_GRACE_PERIOD"}
CLUSTER_SCOPED = {"Namespace"}
NAMESPACED = {
    "ConfigMap", "Service", "Deployment", "HorizontalPodAutoscaler",
    "PodDisruptionBudget", "NetworkPolicy", "ServiceAccount",
}
POD_TEMPLATE_KINDS = {"Deployment"}


# --- rendering ---------------------------------------------------------------

def load_all(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def render_fallback(directory):
    """What `kubectl kustomize` makes of the subset kustomization.yaml uses."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "namespace", "labels", "resources"}
    unknown = set(kustomization) - known
    if unknown:
        raise ValueError(f"kustomization.yaml uses {sorted(unknown)}: the fallback renderer "
                         f"of {Path(__file__).name} knows only {sorted(known)}")
    objects = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if not path.is_file():
            raise ValueError(f"resource {resource}: the fallback renderer reads files only")
        objects += load_all(path)

    namespace = kustomization.get("namespace")
    if namespace:
        for obj in objects:
            kind = obj["kind"]
            if kind in CLUSTER_SCOPED:
                if kind == "Namespace" and obj["metadata"]["name"] != namespace:
                    raise ValueError(f"Namespace {obj['metadata']['name']} is not {namespace}: "
                                     "kustomize would rename it; the fallback does not")
            elif kind in NAMESPACED:
                obj["metadata"]["namespace"] = namespace
            else:
                raise ValueError(f"kind {kind}: the fallback renderer does not know its scope")

    for entry in kustomization.get("labels", []):
        unknown = set(entry) - {"pairs", "includeSelectors", "includeTemplates"}
        if unknown or entry.get("includeSelectors"):
            raise ValueError(f"labels entry {entry}: the fallback renderer supports pairs and "
                             "includeTemplates only")
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(entry["pairs"])
            if entry.get("includeTemplates") and "template" in obj.get("spec", {}):
                if obj["kind"] not in POD_TEMPLATE_KINDS:
                    raise ValueError(f"kind {obj['kind']}: the fallback renderer does not "
                                     "label its template")
                template = obj["spec"]["template"].setdefault("metadata", {})
                template.setdefault("labels", {}).update(entry["pairs"])
    return objects


def kubectl():
    """kubectl's path, or None (absent, or KUBECTL=none)."""
    name = os.environ.get("KUBECTL", "kubectl")
    return None if name == "none" else shutil.which(name)


def render_kubectl(binary, directory):
    out = subprocess.run([binary, "kustomize", str(directory)], check=True,
                         capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc is not None]


def key(obj):
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def differences(a, b, path="$"):
    """Where two parsed YAML trees differ, as JSON-path-like strings."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only in {'kubectl' if k in a else 'fallback'}")
            else:
                out += differences(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: kubectl {a!r}, fallback {b!r}"]


# --- helpers -----------------------------------------------------------------

def parse_duration(text):
    """Seconds in a duration as the binaries write them: 500ms, 30s, 1m, 1m30s."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def container_port(container, port):
    """A probe's or Service's port (number or name) as the container's number."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


def address_port(address):
    return int(str(address).rsplit(":", 1)[1])


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


# --- the rendered objects, once for every test ----------------------------------

RENDERED = []
FALLBACK = []
KUBECTL_RENDERED = None


def setUpModule():
    global KUBECTL_RENDERED
    FALLBACK[:] = render_fallback(KUSTOMIZATION_DIR)
    binary = kubectl()
    if binary:
        KUBECTL_RENDERED = render_kubectl(binary, KUSTOMIZATION_DIR)
        RENDERED[:] = KUBECTL_RENDERED
        print(f"rendered with {binary} kustomize: {len(RENDERED)} objects", file=sys.stderr)
    else:
        RENDERED[:] = FALLBACK
        print(f"rendered with the fallback renderer (no kubectl): {len(RENDERED)} objects",
              file=sys.stderr)


def objects(kind):
    return {o["metadata"]["name"]: o for o in RENDERED if o["kind"] == kind}


def one(kind, name):
    found = objects(kind).get(name)
    if found is None:
        raise AssertionError(f"no {kind} {name} in the rendered manifests")
    return found


def pod_spec(name):
    return one("Deployment", name)["spec"]["template"]["spec"]


def main_container(name):
    containers = pod_spec(name)["containers"]
    assert len(containers) == 1, f"Deployment {name}: one container expected"
    return containers[0]


def proxy_config():
    """The proxy's configuration file, as the ConfigMap mounted at PROXY_CONFIG holds it."""
    spec = pod_spec("proxy")
    path = env_of(main_container("proxy"))["PROXY_CONFIG"]
    directory, file_name = path.rsplit("/", 1)
    mount = next(m for m in main_container("proxy")["volumeMounts"] if m["mountPath"] == directory)
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    config_map = one("ConfigMap", volume["configMap"]["name"])
    return yaml.safe_load(config_map["data"][file_name]), config_map["data"][file_name]


# --- the tests ---------------------------------------------------------------

class Rendering(unittest.TestCase):
    def test_kubectl_and_fallback_agree(self):
        if KUBECTL_RENDERED is None:
            self.skipTest("no kubectl on PATH: rendered with the fallback only")
        by_kubectl = {key(o): o for o in KUBECTL_RENDERED}
        by_fallback = {key(o): o for o in FALLBACK}
        self.assertEqual(sorted(by_kubectl), sorted(by_fallback),
                         "kubectl kustomize and the fallback render different objects")
        problems = [f"{k[1]}/{k[3]}: {d}" for k in sorted(by_kubectl)
                    for d in differences(by_kubectl[k], by_fallback[k])]
        self.assertEqual(problems, [], "kubectl kustomize and the fallback renderer differ")

    def test_expected_objects(self):
        kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in RENDERED)
        for name in DEPLOYMENTS:
            for kind in ("Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"):
                self.assertIn(f"{kind}/{name}", kinds)
        for expected in ("Namespace/grpc-balance", "ConfigMap/proxy-config",
                         "HorizontalPodAutoscaler/backend", "NetworkPolicy/default-deny-ingress"):
            self.assertIn(expected, kinds)

    def test_one_namespace(self):
        namespaces = objects("Namespace")
        self.assertEqual(len(namespaces), 1)
        (namespace,) = namespaces
        self.assertEqual(namespaces[namespace]["metadata"]["labels"]
                         ["pod-security.kubernetes.io/enforce"], "restricted")
        for obj in RENDERED:
            if obj["kind"] != "Namespace":
                self.assertEqual(obj["metadata"].get("namespace"), namespace,
                                 f"{obj['kind']}/{obj['metadata']['name']}")


class Schemas(unittest.TestCase):
    def test_every_object_against_the_schemas(self):
        problems = []
        for version in SCHEMA_VERSIONS:
            for obj in RENDERED:
                try:
                    kubernetes_validate.validate(obj, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    where = "/".join(str(p) for p in e.path)
                    problems.append(f"v{version} {obj['kind']}/{obj['metadata']['name']} "
                                    f"at {where}: {e.message}")
        self.assertEqual(problems, [])
        print(f"schemas: {len(RENDERED)} objects valid against Kubernetes "
              f"{', '.join('v' + v for v in SCHEMA_VERSIONS)} (strict)", file=sys.stderr)

    def test_strict_schemas_refuse_an_unknown_field(self):
        # The validation above would prove little if misspelt fields passed.
        deployment = copy.deepcopy(one("Deployment", "backend"))
        lifecycle = deployment["spec"]["template"]["spec"]["containers"][0]["lifecycle"]
        lifecycle["preStop"] = {"sleeep": {"seconds": 5}}
        with self.assertRaises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(deployment, SCHEMA_VERSIONS[0], strict=True)


def checkov_skips():
    """The check IDs tests/deploy/checkov.yaml skips, each with its reason."""
    skips = {}
    for line in CHECKOV_CONFIG.read_text().splitlines():
        m = re.match(r"^\s*-\s*(CKV\w+)\s*(?:#\s*(.*))?$", line)
        if m:
            skips[m.group(1)] = (m.group(2) or "").strip()
    return skips


class Policy(unittest.TestCase):
    def test_checkov(self):
        checkov = Path(sys.executable).parent / "checkov"
        self.assertTrue(checkov.exists(), f"{checkov} missing: run scripts/python-env")
        skips = checkov_skips()
        self.assertTrue(skips, f"{CHECKOV_CONFIG.name} skips nothing?")
        for check, reason in skips.items():
            self.assertGreater(len(reason), 20, f"{check} is skipped without a reason")
        env = dict(os.environ, CKV_SKIP_PACKAGE_UPDATE_CHECK="true")
        with tempfile.TemporaryDirectory() as tmp:
            rendered = Path(tmp) / "rendered.yaml"
            rendered.write_text(yaml.safe_dump_all(RENDERED, sort_keys=False))
            runs = {
                # What the project keeps: every check, less the skipped ones.
                "configured": [str(checkov), "--config-file", str(CHECKOV_CONFIG),
                               "-f", str(rendered), "-o", "json"],
                # Only the skipped checks, without the skips: each must still
                # find something, or its skip (and its reason) is outdated.
                "skipped only": [str(checkov), "--framework", "kubernetes", "--skip-download",
                                 "--check", ",".join(skips), "-f", str(rendered), "-o", "json"],
            }

            def run(args):
                done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp)
                try:
                    return json.loads(done.stdout)
                except json.JSONDecodeError:
                    raise AssertionError(f"checkov printed no JSON (exit {done.returncode}): "
                                         f"{done.stderr[-2000:]}")

            with ThreadPoolExecutor(len(runs)) as pool:
                reports = dict(zip(runs, pool.map(run, runs.values())))

        configured = reports["configured"]
        summary = configured["summary"]
        failed = [f"{c['check_id']} {c['check_name']}: {c['resource']}"
                  for c in configured["results"]["failed_checks"]]
        self.assertEqual(failed, [], "checkov findings: fix them, or skip the check in "
                                     f"{CHECKOV_CONFIG.name} with the reason")
        self.assertEqual(summary["parsing_errors"], 0)
        # checkov counts each Deployment's pod template as a Pod too, and has
        # checks for some kinds only: every workload and Service must be among
        # what it checked.
        self.assertGreaterEqual(summary["resource_count"], len(RENDERED))
        checked = {c["resource"] for c in configured["results"]["passed_checks"]}
        for obj in RENDERED:
            if obj["kind"] in ("Deployment", "Service"):
                meta = obj["metadata"]
                self.assertIn(f"{obj['kind']}.{meta['namespace']}.{meta['name']}", checked,
                              "checkov did not check it")
        failing_when_unskipped = {}
        for c in reports["skipped only"]["results"]["failed_checks"]:
            failing_when_unskipped.setdefault(c["check_id"], []).append(c["resource"])
        for check in skips:
            self.assertIn(check, failing_when_unskipped,
                          f"{check} is skipped but passes now: remove its skip")
        print(f"checkov {summary['checkov_version']}: {summary['passed']} passed, "
              f"{summary['failed']} failed, {len(skips)} checks skipped with a reason "
              f"({sum(map(len, failing_when_unskipped.values()))} findings):", file=sys.stderr)
        for check, resources in sorted(failing_when_unskipped.items()):
            print(f"  {check} on {', '.join(sorted(resources))}", file=sys.stderr)


class Discovery(unittest.TestCase):
    def test_backend_service_is_headless_over_ready_pods(self):
        service = one("Service", "backend")["spec"]
        self.assertEqual(service.get("clusterIP"), "None", "the backend Service must be headless")
        self.assertIs(service.get("publishNotReadyAddresses"), False,
                      "only ready pods may be A records")
        self.assertTrue(labels_match(service["selector"],
                                     one("Deployment", "backend")["spec"]["template"]["metadata"]["labels"]))

    def test_proxy_upstream_names_the_backend_service(self):
        config, _ = proxy_config()
        service = one("Service", "backend")
        fqdn = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
        (port,) = service["spec"]["ports"]
        listener_clusters = {listener["cluster"] for listener in config["listeners"]}
        for cluster in config["clusters"]:
            if cluster["name"] not in listener_clusters:
                continue
            self.assertEqual(cluster["upstreams"], [f"{fqdn}:{port['port']}"])
            self.assertEqual(parse_duration(cluster["dns_refresh"]), 1)
            self.assertIn("health_check", cluster)
        self.assertEqual(container_port(main_container("backend"), port["targetPort"]), port["port"])

    def test_proxy_config_is_composes_but_the_upstream(self):
        config, _ = proxy_config()
        compose = yaml.safe_load(COMPOSE_PROXY_CONFIG.read_text())
        for c in config["clusters"] + compose["clusters"]:
            c.pop("upstreams")
        self.assertEqual(differences(compose, config), [],
                         "deploy/kubernetes/proxy.yaml's configuration drifted from "
                         "compose/front-proxy.yaml")

    def test_proxy_validates_its_config(self):
        proxy = TARGET / "debug" / "proxy"
        self.assertTrue(proxy.exists(), f"{proxy} missing: cargo build --bin proxy")
        _, text = proxy_config()
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            f.write(text)
            f.flush()
            done = subprocess.run([proxy, "--validate", "--config", f.name],
                                  capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    def test_proxy_reads_the_configmap_as_a_directory(self):
        container = main_container("proxy")
        path = env_of(container)["PROXY_CONFIG"]
        directory = path.rsplit("/", 1)[0]
        mounts = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
        self.assertEqual(len(mounts), 1, f"PROXY_CONFIG {path}: no volume mounted at {directory}")
        self.assertNotIn("subPath", mounts[0], "a subPath mount never sees ConfigMap updates")
        self.assertTrue(mounts[0].get("readOnly"))

    def test_gateway_calls_the_proxy_service(self):
        upstream = env_of(main_container("gateway"))["GATEWAY_UPSTREAM"]
        m = re.fullmatch(r"http://([a-z0-9-]+)(?:\.[a-z0-9.-]+)?:(\d+)", upstream)
        self.assertIsNotNone(m, upstream)
        ports = {p["port"]: p for p in one("Service", m.group(1))["spec"]["ports"]}
        self.assertIn(int(m.group(2)), ports)
        config, _ = proxy_config()
        target = container_port(main_container("proxy"), ports[int(m.group(2))]["targetPort"])
        self.assertEqual(target, address_port(config["listeners"][0]["address"]))

    def test_services_select_pods_and_their_ports(self):
        for name in DEPLOYMENTS:
            service = one("Service", name)["spec"]
            template = one("Deployment", name)["spec"]["template"]
            self.assertTrue(labels_match(service["selector"], template["metadata"]["labels"]), name)
            for port in service["ports"]:
                container_port(main_container(name), port["targetPort"])

    def test_the_network_policies_let_the_calls_through(self):
        policy = one("NetworkPolicy", "backend")["spec"]
        proxy_labels = one("Deployment", "proxy")["spec"]["template"]["metadata"]["labels"]
        (rule,) = policy["ingress"]
        self.assertTrue(any(labels_match(peer["podSelector"]["matchLabels"], proxy_labels)
                            for peer in rule["from"]), "the proxy may not reach the backends")
        self.assertEqual([p["port"] for p in rule["ports"]], [8080])
        proxy_ports = {p["port"] for r in one("NetworkPolicy", "proxy")["spec"]["ingress"]
                       for p in r["ports"]}
        self.assertEqual(proxy_ports, {8000, 8001})


class Probes(unittest.TestCase):
    def test_backend_native_grpc_probes(self):
        container = main_container("backend")
        listen = address_port(env_of(container)["BACKEND_LISTEN"])
        for probe in ("readinessProbe", "livenessProbe"):
            self.assertIn("grpc", container[probe], f"backend {probe}")
            self.assertEqual(container[probe]["grpc"]["port"], listen, f"backend {probe}")

    def test_proxy_probes_ready_on_the_admin(self):
        container = main_container("proxy")
        config, _ = proxy_config()
        self.assertEqual(config["admin"], "0.0.0.0:8001",
                         "the kubelet probes from the node: the admin must listen on every address")
        for probe in ("readinessProbe", "livenessProbe"):
            http = container[probe]["httpGet"]
            self.assertEqual(http["path"], "/ready", f"proxy {probe}")
            self.assertEqual(container_port(container, http["port"]), 8001, f"proxy {probe}")

    def test_gateway_probes_healthz(self):
        container = main_container("gateway")
        for probe in ("readinessProbe", "livenessProbe"):
            http = container[probe]["httpGet"]
            self.assertEqual(http["path"], "/healthz", f"gateway {probe}")
            self.assertEqual(container_port(container, http["port"]), 3000, f"gateway {probe}")


class Shutdown(unittest.TestCase):
    def drain_seconds(self, name):
        env = env_of(main_container(name))
        if name == "proxy":
            config, _ = proxy_config()
            return parse_duration(env.get("PROXY_DRAIN_TIMEOUT") or config["drain_timeout"])
        variable = DRAIN_VARIABLES[name]
        self.assertIn(variable, env, f"{name}: set {variable} explicitly, the grace period "
                                     "depends on it")
        return parse_duration(env[variable])

    def test_prestop_sleep_before_the_drain(self):
        for name in DEPLOYMENTS:
            pre_stop = main_container(name).get("lifecycle", {}).get("preStop", {})
            self.assertIn("sleep", pre_stop, f"{name}: preStop sleep (no shell in a scratch image)")
            self.assertNotIn("exec", pre_stop, f"{name}: a scratch image has nothing to exec")
            self.assertGreaterEqual(pre_stop["sleep"]["seconds"], 3, name)

    def test_grace_period_covers_prestop_and_drain(self):
        for name in DEPLOYMENTS:
            grace = pod_spec(name)["terminationGracePeriodSeconds"]
            sleep = main_container(name)["lifecycle"]["preStop"]["sleep"]["seconds"]
            drain = self.drain_seconds(name)
            self.assertGreater(grace, drain, f"{name}: grace {grace}s <= drain {drain}s")
            self.assertGreater(grace, sleep + drain,
                               f"{name}: terminationGracePeriodSeconds {grace} must exceed the "
                               f"preStop sleep {sleep}s + the drain {drain}s (it counts from "
                               "the preStop's start)")
        self.assertEqual(self.drain_seconds("proxy"), 30)

    def test_disruption_budgets_cover_every_deployment(self):
        budgets = objects("PodDisruptionBudget").values()
        for name in DEPLOYMENTS:
            labels = one("Deployment", name)["spec"]["template"]["metadata"]["labels"]
            self.assertTrue(any(labels_match(b["spec"]["selector"]["matchLabels"], labels)
                                for b in budgets), f"no PodDisruptionBudget selects {name}")

    def test_rollouts_surge_before_they_stop(self):
        for name in DEPLOYMENTS:
            rolling = one("Deployment", name)["spec"]["strategy"]["rollingUpdate"]
            self.assertEqual(rolling["maxUnavailable"], 0, name)
        # A new backend must be in the proxy's rotation before an old one
        # stops: the cluster DNS's cache, a lookup, the passed health checks.
        config, _ = proxy_config()
        (cluster,) = config["clusters"]
        check = cluster["health_check"]
        needed = (CLUSTER_DNS_CACHE_SECONDS + parse_duration(cluster["dns_refresh"])
                  + check["healthy_threshold"] * parse_duration(check["interval"]))
        self.assertGreaterEqual(one("Deployment", "backend")["spec"]["minReadySeconds"], needed)


class Scaling(unittest.TestCase):
    def test_hpa_owns_the_backend_count(self):
        hpa = one("HorizontalPodAutoscaler", "backend")
        self.assertEqual(hpa["apiVersion"], "autoscaling/v2")
        target = hpa["spec"]["scaleTargetRef"]
        self.assertEqual((target["kind"], target["name"]), ("Deployment", "backend"))
        self.assertGreaterEqual(hpa["spec"]["minReplicas"], 2)
        self.assertNotIn("replicas", one("Deployment", "backend")["spec"],
                         "with an HPA, spec.replicas makes every apply reset the count")
        self.assertIn("cpu", main_container("backend")["resources"]["requests"],
                      "CPU utilisation is measured against the request")

    def test_requests_and_limits(self):
        for name in DEPLOYMENTS:
            resources = main_container(name)["resources"]
            for kind in ("requests", "limits"):
                self.assertEqual(set(resources[kind]), {"cpu", "memory"}, f"{name} {kind}")


class Security(unittest.TestCase):
    def test_security_context(self):
        for name in DEPLOYMENTS:
            spec = pod_spec(name)
            container = main_container(name)
            # The container's settings win over the pod's.
            effective = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
            self.assertIs(effective.get("runAsNonRoot"), True, name)
            self.assertEqual(effective.get("runAsUser"), IMAGE_USER, name)
            self.assertEqual(effective.get("runAsGroup"), IMAGE_USER, name)
            self.assertIs(effective.get("readOnlyRootFilesystem"), True, name)
            self.assertIs(effective.get("allowPrivilegeEscalation"), False, name)
            self.assertEqual(effective.get("capabilities"), {"drop": ["ALL"]}, name)
            self.assertEqual(effective.get("seccompProfile"), {"type": "RuntimeDefault"}, name)
            self.assertIs(spec.get("automountServiceAccountToken"), False, name)
            self.assertIs(spec.get("enableServiceLinks"), False,
                          f"{name}: Service link variables would land in the binaries' "
                          "variable namespace")

    def test_local_images(self):
        for name in DEPLOYMENTS:
            container = main_container(name)
            self.assertEqual(container["image"], f"grpc-balance/{name}:latest")
            self.assertEqual(container["imagePullPolicy"], "IfNotPresent",
                             f"{name}: no registry, the image is loaded into the nodes")


if __name__ == "__main__":
    unittest.main(verbosity=2)
