"""Shared pieces of the interop tests: generated stubs and real processes.

The stubs are generated at run time from the repository's `proto/` with
grpcio-tools, so the tests always use the same protos as the Rust code.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROTO = os.path.join(ROOT, "proto")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
PROFILE = os.environ.get("INTEROP_PROFILE", "debug")


def binary(name):
    path = os.path.join(TARGET, PROFILE, name)
    if not os.path.exists(path):
        raise RuntimeError(f"{path} is missing: run `cargo build` first")
    return path


def load_stubs():
    """Generates the Python stubs of proto/ and puts them on sys.path."""
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="interop-stubs-")
    files = ["gateway/alive.proto", "gateway/echo.proto", "helloworld/helloworld.proto"]
    args = ["protoc", f"-I{PROTO}", f"--python_out={out}", f"--grpc_python_out={out}"] + files
    if protoc.main(args) != 0:
        raise RuntimeError("grpc_tools.protoc failed on proto/")
    sys.path.insert(0, out)


class Process:
    """A binary of ours, started with flags, whose log announces its address.

    `ready` is a regex over stderr lines with one group: the address. The
    process is killed (and waited for) on `stop`, so no test leaves one behind.
    `lines` holds what it wrote on both streams in arrival order;
    `stderr_lines` (the logs) and `stdout_lines` (the proxy's access log)
    each stream alone.
    """

    def __init__(self, name, args, ready, timeout=30):
        self.proc = subprocess.Popen(
            [binary(name)] + args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "RUST_LOG": os.environ.get("INTEROP_RUST_LOG", "info")},
        )
        self.lines = []
        self.stderr_lines = []
        self.stdout_lines = []
        found = threading.Event()
        self.addr = None

        def pump(stream, own):
            for line in stream:
                self.lines.append(line)
                own.append(line)
                match = re.search(ready, line)
                if match and self.addr is None:
                    self.addr = match.group(1)
                    found.set()

        streams = [(self.proc.stderr, self.stderr_lines), (self.proc.stdout, self.stdout_lines)]
        for stream, own in streams:
            threading.Thread(target=pump, args=(stream, own), daemon=True).start()
        if not found.wait(timeout):
            self.stop()
            raise RuntimeError(f"{name} did not start:\n" + "".join(self.lines))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def started(test, start, *args):
    """A Process from `start(*args)`, stopped at the test's cleanup, and its
    log pipes closed once their readers are done."""
    before = set(threading.enumerate())
    process = start(*args)
    readers = [t for t in threading.enumerate() if t not in before]

    def stop():
        process.stop()
        for reader in readers:
            reader.join(5)
        process.proc.stdout.close()
        process.proc.stderr.close()

    test.addCleanup(stop)
    return process


def make_certs(directory):
    """A test CA and a server certificate for localhost and 127.0.0.1
    (scripts/make-certs) in `directory`: ca.pem, server.pem, server.key. The
    CA certificate's bytes, for clients to trust."""
    script = os.path.join(ROOT, "scripts", "make-certs")
    subprocess.run([script, "--force", directory], check=True, capture_output=True)
    with open(os.path.join(directory, "ca.pem"), "rb") as f:
        return f.read()


def backend(backend_id, *extra):
    """Starts our backend on an ephemeral port of 127.0.0.1."""
    return Process(
        "backend",
        ["--listen", "127.0.0.1:0", "--id", backend_id, *extra],
        r"backend serving.*addr=(\S+)",
    )


def proxy(upstreams, *extra):
    """Starts our proxy on an ephemeral port of 127.0.0.1, admin off."""
    args = ["--listen", "127.0.0.1:0", "--admin", "off", "--access-log", "off"]
    for upstream in upstreams:
        args += ["--upstream", upstream]
    return Process("proxy", args + list(extra), r"listening.*addr=(\S+)")


# The admin interface is on loopback: no HTTP proxy of the environment in the way.
ADMIN = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def admin_get(admin, path, timeout=5):
    """`GET path` on a proxy's admin interface at `admin` (host:port): the body as text."""
    with ADMIN.open(f"http://{admin}{path}", timeout=timeout) as response:
        return response.read().decode()


def admin_stats(admin):
    """A proxy's /stats as {name: value}: its counters and gauges."""
    out = {}
    for line in admin_get(admin, "/stats").splitlines():
        name, _, value = line.partition(": ")
        if value.strip().lstrip("-").isdigit():
            out[name] = int(value)
    return out


def chromium(test):
    """The headless browser for `test`: Debian's chromium (scripts/install-deps
    installs it). Missing, it fails the test with CI=true and skips it
    elsewhere, saying so."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI") == "true":
        test.fail("chromium is missing in CI: scripts/install-deps should have installed it")
    test.skipTest("chromium is not installed (scripts/install-deps installs Debian's package)")
