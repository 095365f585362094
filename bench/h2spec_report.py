#!/usr/bin/env python3
"""The comparison behind scripts/h2spec-compare (stdlib only).

Reads the h2spec runs of one results directory (junit-<target>.xml, h2spec's
JUnit report, and h2spec-<target>.txt, its console output) for our proxy and
HAProxy on each transport, prints the totals of every run, a table of every
case whose result differs between ours and HAProxy, and the cases ours fails
that HAProxy passes: the gate. Exits 1 when that list is not empty.

A case is named as h2spec selects it on its command line: group and sequence
number (`http2/5.1.1/2`). The JUnit report gives the results; the console
output adds the requirement h2spec quotes for a failure (the report leaves it
out), matched to the report case by case, in order.

Usage: bench/h2spec_report.py DIR [--transports h2c,tls]
"""

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

PEERS = [("ours", "ours"), ("haproxy", "HAProxy")]
TRANSPORTS = {"h2c": "cleartext (h2c prior knowledge)", "tls": "TLS (ALPN h2)"}

# A result line of h2spec's console output: "✔ 1: desc" (passed),
# "× 1: desc" (failed), "1: desc" (skipped), after the indentation.
RESULT = re.compile(r"^\s*(✔|×)?\s*(\d+): (.*)$")


class Case:
    def __init__(self, case_id, desc, result, message):
        self.id = case_id
        self.desc = desc
        self.result = result  # "passed", "failed" or "skipped"
        self.message = message  # h2spec's lines for a failure
        self.requirement = None


def read_junit(path):
    """The cases of one h2spec JUnit report, in h2spec's order."""
    cases = []
    for suite in ET.parse(path).getroot().iter("testsuite"):
        for seq, tc in enumerate(suite.iter("testcase"), start=1):
            package = tc.get("package") or suite.get("package")
            failure = tc.find("failure")
            if failure is None:
                # h2spec 2.0 files its assertion failures as <error>, too.
                failure = tc.find("error")
            if failure is not None:
                result, message = "failed", (failure.text or "").strip()
            elif tc.find("skipped") is not None:
                result, message = "skipped", ""
            else:
                result, message = "passed", ""
            cases.append(Case(f"{package}/{seq}", tc.get("classname", ""), result, message))
    return cases


def read_console(path):
    """(desc, failure lines) of every case of the console output, in order."""
    entries, failure = [], None
    # Bytes, not read_text(): universal newlines would turn each "\r" into a line.
    for raw in path.read_bytes().decode(errors="replace").split("\n"):
        # A case's progress line is overwritten ("\r") by its result.
        line = raw.split("\r")[-1]
        if line.startswith("Failures:"):
            break  # the recap of the failures repeats them
        m = RESULT.match(line)
        if m:
            entries.append((m.group(3).strip(), []))
            # A failure's lines follow it, up to the next case or the blank
            # line that ends its group.
            failure = entries[-1][1] if m.group(1) == "×" else None
        elif not line.strip():
            failure = None
        elif failure is not None:
            failure.append(line.strip())
    return entries


def add_requirements(cases, console):
    """Copy the requirement and the console's failure text onto the report's cases."""
    if len(console) != len(cases) or any(c.desc != desc for c, (desc, _) in zip(cases, console)):
        return False
    for case, (_, lines) in zip(cases, console):
        if case.result != "failed":
            continue
        rest = []
        for line in lines:
            if line.startswith("-> ") and case.requirement is None:
                case.requirement = line[3:]
            else:
                rest.append(line)
        if rest:
            case.message = "\n".join(rest)
    return True


def load(directory, target):
    junit = directory / f"junit-{target}.xml"
    console = directory / f"h2spec-{target}.txt"
    if not junit.is_file():
        print(f"h2spec-compare: {junit} is missing (h2spec stopped early? see {console})", file=sys.stderr)
        sys.exit(2)
    cases = read_junit(junit)
    if console.is_file() and not add_requirements(cases, read_console(console)):
        print(f"h2spec-compare: {console} does not match {junit.name} case by case; "
              "messages from the report only", file=sys.stderr)
    return cases


def totals(cases):
    count = {r: sum(1 for c in cases if c.result == r) for r in ("passed", "failed", "skipped")}
    return f"{len(cases)} tests, {count['passed']} passed, {count['failed']} failed, {count['skipped']} skipped"


def print_failure(case):
    """h2spec's own words for a failed case: the requirement, expected, actual."""
    if case.requirement:
        print(f"      -> {case.requirement}")
    for line in case.message.splitlines():
        print(f"         {line}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--transports", default="h2c,tls", help="comma-separated: h2c, tls")
    args = ap.parse_args()
    transports = [t for t in args.transports.split(",") if t]
    for t in transports:
        if t not in TRANSPORTS:
            ap.error(f"unknown transport {t}")

    runs = {(peer, t): load(args.dir, f"{peer}-{t}") for t in transports for peer, _ in PEERS}

    print("Totals")
    for t in transports:
        for peer, label in PEERS:
            print(f"  {label + ' ' + t:<12} {totals(runs[peer, t])}")

    rows, gate, both = [], [], []
    for t in transports:
        ours = {c.id: c for c in runs["ours", t]}
        theirs = {c.id: c for c in runs["haproxy", t]}
        for case_id in dict.fromkeys([*ours, *theirs]):
            a, b = ours.get(case_id), theirs.get(case_id)
            ra, rb = (a.result if a else "absent"), (b.result if b else "absent")
            desc = (a or b).desc
            if ra != rb:
                rows.append((t, case_id, ra, rb, desc, a))
                if ra == "failed" and rb == "passed":
                    gate.append((t, case_id, desc))
            elif ra == "failed":
                both.append((t, case_id, desc, a))

    print()
    print(f"Cases whose result differs between ours and HAProxy: {len(rows)}")
    if rows:
        width = max(len(r[1]) for r in rows)
        print(f"  {'transport':<9}  {'case':<{width}}  {'ours':<7}  {'HAProxy':<7}  description")
        for t, case_id, ra, rb, desc, a in rows:
            print(f"  {t:<9}  {case_id:<{width}}  {ra:<7}  {rb:<7}  {desc}")
            if ra == "failed":
                print_failure(a)

    if both:
        print()
        print(f"Cases both fail (ours' messages): {len(both)}")
        for t, case_id, desc, a in both:
            print(f"  {t:<9}  {case_id}  {desc}")
            print_failure(a)

    print()
    print(f"Cases ours fails that HAProxy passes: {len(gate)}")
    for t, case_id, desc in gate:
        print(f"  {t:<9}  {case_id}  {desc}")
    return 1 if gate else 0


if __name__ == "__main__":
    sys.exit(main())
