#!/usr/bin/env python3
"""Checks that the reference docs cover what the binaries really accept.

1. docs/configuration.md names every flag and environment variable that
   `--help` of each binary (and of its `healthcheck` subcommand) prints, and
   every flag its tables name still exists.
2. docs/configuration.md names every key of the proxy's YAML file, at every
   level. The keys come from the binary itself: a file with an unknown key at
   a level makes `proxy --validate` list the keys that level accepts.
3. Relative links in README.md and docs/*.md point at files that exist, and
   `#anchors` at headings that exist.

Builds the debug binaries first (`cargo build --bins`, seconds when up to
date). No Docker. Python 3 standard library only.

Usage: tests/docs/config_test.py
"""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION = ROOT / "docs" / "configuration.md"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BINARIES = ("proxy", "backend", "gateway")

# YAML that puts an unknown key at each level of the proxy's file, and the
# heading of docs/configuration.md that documents that level.
LEVELS = {
    "top level": "bogus_key: 1\n",
    "`listeners[]`": "listeners: [{bogus_key: 1}]\n",
    "`listeners[].tls`": "listeners: [{tls: {bogus_key: 1}}]\n",
    "`listeners[].grpc_web`": "listeners: [{grpc_web: {bogus_key: 1}}]\n",
    "`listeners[].grpc_web.cors`":
        "listeners: [{grpc_web: {cors: {allow_origins: ['*'], bogus_key: 1}}}]\n",
    "`listeners[].virtual_hosts[]`": "listeners: [{virtual_hosts: [{bogus_key: 1, routes: []}]}]\n",
    "`routes[]`": "listeners: [{routes: [{bogus_key: 1, route: {}}]}]\n",
    "`routes[].match`": "listeners: [{routes: [{match: {bogus_key: 1}, route: {}}]}]\n",
    "`routes[].match.headers[]`":
        "listeners: [{routes: [{match: {headers: [{name: a, bogus_key: 1}]}, route: {}}]}]\n",
    "`routes[].route`": "listeners: [{routes: [{route: {bogus_key: 1}}]}]\n",
    "`routes[].route.weighted_clusters[]`":
        "listeners: [{routes: [{route: {weighted_clusters: [{name: a, weight: 1, bogus_key: 1}]}}]}]\n",
    "`routes[].route.retry_policy`":
        "listeners: [{routes: [{route: {retry_policy: {bogus_key: 1}}}]}]\n",
    "`clusters[]`": "clusters: [{bogus_key: 1}]\n",
    "`clusters[].health_check`": "clusters: [{health_check: {bogus_key: 1}}]\n",
    "`clusters[].outlier_detection`": "clusters: [{outlier_detection: {bogus_key: 1}}]\n",
    "`clusters[].retry`": "clusters: [{retry: {bogus_key: 1}}]\n",
    "`clusters[].circuit_breakers`": "clusters: [{circuit_breakers: {bogus_key: 1}}]\n",
    "`clusters[].tls`": "clusters: [{tls: {bogus_key: 1}}]\n",
    "`dns`": "dns: {bogus_key: 1}\n",
    "`traces`": "traces: {otlp_endpoint: 'http://a:4317', bogus_key: 1}\n",
}


def binary(name):
    return TARGET / "debug" / name


def ensure_binaries():
    """The debug binaries of the current sources (seconds when up to date)."""
    subprocess.run(["cargo", "build", "--quiet", "--bins"], cwd=ROOT, check=True)


def help_text(*args):
    result = subprocess.run([str(a) for a in args] + ["--help"], capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith(
                                ("PROXY_", "BACKEND_", "GATEWAY_"))})
    if result.returncode != 0:
        raise RuntimeError(f"{args} --help exited {result.returncode}: {result.stderr}")
    return result.stdout


def flags_and_vars(text):
    flags = set(re.findall(r"(?m)^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)", text))
    flags -= {"--help", "--version"}
    env = set(re.findall(r"\[env: ([A-Z0-9_]+)=", text))
    return flags, env


def section(doc, heading):
    """The text under the heading that contains `heading`, up to the next heading."""
    lines = doc.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("#") and heading in line:
            level = len(line) - len(line.lstrip("#"))
            body = []
            for next_line in lines[i + 1:]:
                if next_line.startswith("#") and len(next_line) - len(next_line.lstrip("#")) <= level:
                    break
                body.append(next_line)
            return "\n".join(body)
    return None


def accepted_keys(yaml_text):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(yaml_text)
        path = f.name
    try:
        result = subprocess.run([str(binary("proxy")), "--validate", "--config", path],
                                capture_output=True, text=True,
                                env={k: v for k, v in os.environ.items() if not k.startswith("PROXY_")})
    finally:
        os.unlink(path)
    m = re.search(r"unknown field `bogus_key`, expected (?:one of )?(.*?)(?: at line|$)",
                  result.stderr, re.M)
    if not m:
        raise RuntimeError(f"proxy did not list the keys for {yaml_text!r}: {result.stderr.strip()}")
    return re.findall(r"`([a-z_]+)`", m.group(1))


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path):
    found = set()
    counts = {}
    in_fence = False
    for line in path.read_text().split("\n"):
        if line.startswith("```"):
            in_fence = not in_fence
        if in_fence:
            continue
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            s = slug(m.group(1))
            n = counts.get(s, 0)
            counts[s] = n + 1
            found.add(s if n == 0 else f"{s}-{n}")
    return found


def check_links(problems):
    docs = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    for doc in docs:
        text = re.sub(r"(?ms)^```.*?^```", "", doc.read_text())
        text = re.sub(r"`[^`\n]*`", "", text)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (doc.parent / file_part).resolve() if file_part else doc
            where = f"{doc.relative_to(ROOT)}: link {target}"
            if not dest.exists():
                problems.append(f"{where}: {file_part} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{where}: no heading #{anchor} in {dest.relative_to(ROOT)}")


def main():
    problems = []
    if not CONFIGURATION.exists():
        print("config_test: docs/configuration.md is missing")
        return 1
    ensure_binaries()
    doc = CONFIGURATION.read_text()
    # Flags and variables count as documented in a table row of their own:
    # a cell that starts with the flag, and a cell that is the variable.
    rows = [line for line in doc.split("\n") if line.startswith("|")]
    documented = set()
    table_vars = set()
    for row in rows:
        for cell in row.split("|"):
            cell = cell.strip()
            m = re.match(r"^(?:`-\w`, )?`(--[a-z][a-z0-9-]*)", cell)
            if m:
                documented.add(m.group(1))
            m = re.fullmatch(r"`([A-Z][A-Z0-9_]+)`", cell)
            if m:
                table_vars.add(m.group(1))

    all_flags = set()
    for name in BINARIES:
        for args in ((binary(name),), (binary(name), "healthcheck")):
            flags, env = flags_and_vars(help_text(*args))
            all_flags |= flags
            shown = " ".join(a if isinstance(a, str) else a.name for a in args)
            for flag in sorted(flags):
                if flag not in documented:
                    problems.append(f"`{shown} --help` has {flag}; no table row of "
                                    f"docs/configuration.md starts with it")
            for var in sorted(env):
                if var not in table_vars:
                    problems.append(f"`{shown} --help` reads {var}; no table row of "
                                    f"docs/configuration.md names it")
    for flag in sorted(documented - all_flags):
        problems.append(f"docs/configuration.md names {flag}, which no binary accepts")

    for heading, yaml_text in LEVELS.items():
        body = section(doc, heading)
        if body is None:
            problems.append(f"docs/configuration.md has no heading with {heading}")
            continue
        for key in accepted_keys(yaml_text):
            if f"`{key}`" not in body:
                problems.append(f"the proxy's file accepts `{key}` under {heading}; "
                                f"docs/configuration.md does not document it there")

    check_links(problems)

    for p in problems:
        print(f"    {p}")
    if problems:
        print(f"config_test: {len(problems)} problems")
        return 1
    print(f"config_test: OK ({len(all_flags)} flags of {len(BINARIES)} binaries, "
          f"{len(LEVELS)} levels of YAML keys, links of README.md and docs/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
