#!/usr/bin/env python3
"""tests/run.py - runs every test suite of triekv and sums them into one closing line.

Suites:
  unit      the C unit-test binaries under <build>/tests/unit/ (each prints "N passed, N failed")
  blackbox  pytest suites under tests/blackbox/ against real server processes
  cli       pytest suites under tests/cli/ (triekv-cli against a real server)
  cluster   pytest suites under tests/cluster/ (multi-process replication)
  proxy     pytest suites under tests/proxy/ (two shards behind triekv-proxy)
  deploy    the docker-compose suite under tests/deploy/ (skipped, not passed, without Docker)

The last line printed is "N passed, N failed" (skipped tests are counted on the line before it);
the exit status is non-zero when any test failed, any suite crashed or timed out, or no test ran
at all.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?\s*$")
ALL_SUITES = ["unit", "blackbox", "cli", "cluster", "proxy", "deploy"]


class Totals:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.broken = []  # suites that crashed, timed out or reported nothing

    def add(self, p, f, s=0):
        self.passed += p
        self.failed += f
        self.skipped += s


def shm_tmpdir():
    """Unit tests create and delete thousands of small files: a tmpfs keeps that fast."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return tempfile.mkdtemp(prefix="triekv-unit-", dir="/dev/shm")
    return tempfile.mkdtemp(prefix="triekv-unit-")


def run_unit(args, totals):
    base = os.path.join(ROOT, args.build, "tests", "unit")
    bins = []
    for d, _, files in os.walk(base):
        for f in sorted(files):
            p = os.path.join(d, f)
            if f.startswith("test_") and not f.endswith((".o", ".d")) and os.access(p, os.X_OK):
                bins.append(p)
    if not bins:
        totals.broken.append("unit: no test binaries under %s (run make first)" % base)
        return
    tmp = shm_tmpdir()
    env = dict(os.environ, TMPDIR=tmp)
    for b in sorted(bins):
        name = os.path.relpath(b, base)
        print("== unit/%s" % name, flush=True)
        t0 = time.monotonic()
        try:
            r = subprocess.run([b], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=args.timeout, text=True, errors="replace")
            out, code = r.stdout, r.returncode
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            code = "timeout"
        lines = out.rstrip().splitlines()
        shown = lines if args.verbose or code != 0 else [l for l in lines if not l.startswith("ok ")]
        for l in shown[-200:]:
            print("   " + l)
        m = SUMMARY.match(lines[-1]) if lines else None
        if m:
            totals.add(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
        if code != 0 and not (m and int(m.group(2)) > 0):
            totals.broken.append("unit/%s exited with %s" % (name, code))
        print("   (%.1f s)" % (time.monotonic() - t0), flush=True)
    subprocess.run(["rm", "-rf", tmp])


def run_pytest(suite, args, totals):
    path = os.path.join(ROOT, "tests", suite)
    if not os.path.isdir(path) or not any(f.startswith("test_") for f in os.listdir(path)):
        return
    print("== %s" % suite, flush=True)
    xml = tempfile.NamedTemporaryFile(suffix=".xml", delete=False).name
    env = dict(os.environ, TRIEKV_BIN=os.path.join(ROOT, args.bin), TRIEKV_VARIANT=args.variant,
               PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml", xml, path]
    try:
        code = subprocess.run(cmd, cwd=ROOT, env=env, timeout=args.timeout * 4).returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    try:
        root = ET.parse(xml).getroot()
        suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
        p = f = s = 0
        for ts in suites:
            n = int(ts.get("tests", 0))
            fl = int(ts.get("failures", 0)) + int(ts.get("errors", 0))
            sk = int(ts.get("skipped", 0))
            f += fl
            s += sk
            p += n - fl - sk
        totals.add(p, f, s)
        if code not in (0, 1, 5):  # 1: some failed (counted), 5: none collected
            totals.broken.append("%s: pytest exited with %s" % (suite, code))
    except (ET.ParseError, FileNotFoundError):
        totals.broken.append("%s: pytest wrote no report (exit %s)" % (suite, code))
    finally:
        if os.path.exists(xml):
            os.unlink(xml)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build", help="build tree holding the unit-test binaries")
    ap.add_argument("--bin", default="bin", help="folder of the triekv programs")
    ap.add_argument("--variant", default="release")
    ap.add_argument("--suites", default=",".join(ALL_SUITES), help="comma-separated subset of %s" % ALL_SUITES)
    ap.add_argument("--timeout", type=int, default=600, help="seconds per unit binary")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    suites = [s for s in args.suites.split(",") if s]
    for s in suites:
        if s not in ALL_SUITES:
            ap.error("unknown suite %r" % s)
    totals = Totals()
    t0 = time.monotonic()
    for s in suites:
        if s == "unit":
            run_unit(args, totals)
        else:
            run_pytest(s, args, totals)
    for b in totals.broken:
        print("BROKEN: " + b)
    if totals.passed + totals.failed == 0 and not totals.broken:
        totals.broken.append("no test ran")
        print("BROKEN: no test ran")
    print("(%.0f s in all; %d skipped)" % (time.monotonic() - t0, totals.skipped))
    failed = totals.failed + len(totals.broken)
    print("%d passed, %d failed" % (totals.passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
