"""tests/cluster/conftest.py - multi-process triekv clusters (a main and its replicas) for pytest.

The server binary is $TRIEKV_BIN/triekv-server (default: <repo>/bin/triekv-server). Every node
binds 127.0.0.1 on free ports, keeps its data in the test's tmp_path and its stderr in a file next
to it. The `cluster` fixture stops (SIGTERM, then SIGKILL) every node and relay it started at the
end of each test, pass or fail, and then fails the test if a node's stderr holds a sanitizer
report (ASan/UBSan builds).

Helpers:
  free_port()                              a loopback port nobody listens on (now)
  Node                                     one triekv-server: .url .repl_url .start() .stop() .kill9()
                                           .restart() .stats() .repl() .seq() .log()
  ClusterFactory (the `cluster` fixture)   .replica(args) .main(replica_urls, args) .simple(n, ...)
                                           .relay(target_port) (a relay.Relay, stopped at the end)
  Writers (the `writers_factory` fixture)  threads writing unique keys, recording what was acked
  wait_until(fn, timeout, what)            polls fn until it returns a true value (bounded); fails at
                                           once, with the log, when a node died unexpectedly
  read_all(node)                           the whole key space via GET /bulk/range?encoding=base64,
                                           paged with cursors: a list of (key bytes, value bytes)
  wait_converged(main, replicas)           every replica's applied_seq equals the main's seq
  assert_same_data(main, replicas)         read_all() is identical on every node
  checked_teardown(owner)                  a fixture's body: yield owner, then fail on owner.teardown()'s
                                           problems (the `cluster` fixture, the proxy suite's `topo`)
  b64 / unb64 / pkey                       base64 and percent-encoding helpers
free_port, b64, unb64, pkey, child_env and sanitizer_findings (and the paths BIN_DIR, SERVER_BIN)
come from tests/support/triekv_procs.py, shared with the other suites, and stay importable from here.

tests/cluster is a package (tests import `from .conftest import ...`), so this module never
shadows another suite's conftest when suites share a pytest run.
"""
import json
import os
import signal
import sys
import threading
import time
import urllib.parse

import pytest
import requests

from .relay import Relay

HERE = os.path.dirname(os.path.abspath(__file__))
_TESTS_DIR = os.path.dirname(HERE)
if _TESTS_DIR not in sys.path:  # pytest's default import mode puts it there, others may not
    sys.path.insert(0, _TESTS_DIR)

# shared with the other suites; the names the tests import from here are re-exported
from support.triekv_procs import (BIN_DIR, IGNORED_LEAK_FRAMES, LSAN_SUPPRESSIONS, REPO,  # noqa: E402,F401
                                  SERVER_BIN, STOP_TIMEOUT, HttpVerbs, b64, child_env, free_port, pkey,
                                  poll_health, read_logs, sanitizer_findings, spawn, stop_process,
                                  unb64)

START_TIMEOUT = 30.0  # an ASan build recovering a store is slow
HTTP_TIMEOUT = 15.0


# ---- waiting ---------------------------------------------------------------------------------

# the nodes of the running test: wait_until fails at once when one of them died unexpectedly
_NODES = []


def check_nodes_alive():
    """Fails the test when a node that should be running has exited (a crash), with its log."""
    for n in list(_NODES):
        if n.expected_up and n.proc is not None and n.proc.poll() is not None:
            n.expected_up = False
            pytest.fail("%s (%s) died unexpectedly with exit status %s; its log ends:\n%s" %
                        (n.name, n.role, n.proc.returncode, n.log_last()[-3000:]), pytrace=False)


def wait_until(fn, timeout, what="condition", interval=0.05):
    """Calls fn until it returns a true value and returns that value; fails the test after timeout
    seconds (bounded in time and in the number of calls), or at once when a node crashed."""
    deadline = time.monotonic() + timeout
    last_exc = None
    max_calls = int(timeout / max(interval, 0.001)) + 1000
    for _ in range(max_calls):
        check_nodes_alive()
        try:
            v = fn()
            if v:
                return v
            last_exc = None
        except (requests.RequestException, OSError, ValueError, KeyError) as e:
            last_exc = e
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    pytest.fail("timed out after %.1f s waiting for %s%s" %
                (timeout, what, " (last error: %r)" % last_exc if last_exc else ""))


# ---- one node --------------------------------------------------------------------------------

class NodeStartError(Exception):
    pass


class Node(HttpVerbs):
    """One triekv-server process. Its ports and data dir are chosen once and kept across restarts.

    role "main": --replicas (list of base URLs) and --advertise-url are added.
    role "replica": --is-replica true and --replication-port are added."""

    def __init__(self, tmp_path, name, role, args=(), replicas=(), env=None):
        self.tmp_path = tmp_path
        self.name = name
        self.role = role
        self.args = list(args)
        self.replicas = list(replicas)
        self.env = dict(env or {})
        self.port = free_port()
        self.repl_port = free_port() if role == "replica" else None
        self.data_dir = str(tmp_path / (name + "-data"))
        self.proc = None
        self.expected_up = False
        self.starts = 0
        self.stderr_paths = []
        self._session = None
        self._lock = threading.Lock()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def repl_url(self):
        return "http://127.0.0.1:%d" % self.repl_port

    def cmdline(self):
        cmd = [SERVER_BIN, "--bind", "127.0.0.1", "--port", str(self.port), "--data-dir", self.data_dir]
        if self.role == "main":
            if self.replicas:
                cmd += ["--replicas", ",".join(self.replicas)]
            cmd += ["--advertise-url", self.url]
        else:
            cmd += ["--is-replica", "true", "--replication-port", str(self.repl_port)]
        return cmd + self.args

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait=True):
        assert not self.running(), "%s already running" % self.name
        self.starts += 1
        path = str(self.tmp_path / ("%s-stderr-%d.log" % (self.name, self.starts)))
        self.stderr_paths.append(path)
        self.proc = spawn(self.cmdline(), path, child_env(self.env), cwd=str(self.tmp_path))
        self.expected_up = True
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout=START_TIMEOUT):
        if poll_health(self.proc, self.port, timeout):
            return
        if self.proc.poll() is not None:
            raise NodeStartError("%s exited with %s before serving: %s" %
                                 (self.name, self.proc.returncode, self.log_last()[-3000:]))
        raise NodeStartError("%s did not answer /health within %.0f s: %s" %
                             (self.name, timeout, self.log_last()[-3000:]))

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Sends sig and waits for the exit (SIGKILL after timeout); returns the exit code."""
        self.reset_session()
        self.expected_up = False
        if self.proc is None:
            return None
        code = stop_process(self.proc, sig, timeout)
        return "hung (SIGKILLed after %.0f s)" % timeout if code is None else code

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def restart(self, sig=signal.SIGTERM):
        if self.running():
            self.stop(sig)
        self.start()

    # -- output --------------------------------------------------------------------------------

    def log_last(self):
        return read_logs(self.stderr_paths[-1:])

    def log(self):
        """stderr of every start of this node, concatenated."""
        return read_logs(self.stderr_paths)

    # -- HTTP ------------------------------------------------------------------------------------

    def session(self):
        with self._lock:
            if self._session is None:
                self._session = requests.Session()
            return self._session

    def reset_session(self):
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def req(self, method, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return self.session().request(method, self.url + path, **kw)

    def stats(self):
        r = self.get("/stats")
        assert r.status_code == 200, r.text
        return r.json()

    def repl_maybe(self):
        """The "replication" object of /stats, or None while a replica answers /stats with 503
        "resyncing" (tolerated where a test waits for a resync to end; see
        test_faults.py::test_stats_served_while_resyncing for that answer itself)."""
        r = self.get("/stats")
        if r.status_code == 503 and self.role == "replica" and '"resyncing"' in r.text:
            return None
        assert r.status_code == 200, r.text
        return r.json()["replication"]

    def seq(self):
        return self.stats()["seq"]

    def repl(self):
        """The "replication" object of /stats."""
        return self.stats()["replication"]

    def replica_entry(self, repl_url):
        """On a main: its /stats entry for the replica whose replication URL is repl_url."""
        for e in self.repl()["replicas"]:
            if e["url"] == repl_url.rstrip("/"):
                return e
        raise KeyError("no replica %s in %s" % (repl_url, self.repl()))

    def __repr__(self):
        return "<Node %s %s :%d>" % (self.name, self.role, self.port)


# ---- whole key space ----------------------------------------------------------------------------

def read_all(node_or_url, page=500, timeout=60.0, max_pages=100000):
    """Every (key, value) of a node, in key order, as bytes, via GET /bulk/range?encoding=base64
    paged with cursors (bounded in time and pages)."""
    url = node_or_url.url if isinstance(node_or_url, Node) else node_or_url
    out = []
    cursor = None
    deadline = time.monotonic() + timeout
    with requests.Session() as s:
        for _ in range(max_pages):
            q = "encoding=base64&limit=%d" % page
            if cursor is not None:
                q += "&cursor=" + urllib.parse.quote(cursor, safe="")
            r = s.get(url + "/bulk/range?" + q, timeout=HTTP_TIMEOUT)
            assert r.status_code == 200, "range on %s: %d %s" % (url, r.status_code, r.text[:300])
            j = r.json()
            for it in j["items"]:
                out.append((unb64(it["key"]), unb64(it["value"])))
            cursor = j.get("next")
            if cursor is None:
                return out
            assert time.monotonic() < deadline, "reading the key space of %s took over %.0f s" % (url, timeout)
    pytest.fail("reading the key space of %s: more than %d pages" % (url, max_pages))


def diff_summary(a, b, limit=5):
    """A short description of how two read_all() results differ."""
    da, db = dict(a), dict(b)
    only_a = [k for k in da if k not in db]
    only_b = [k for k in db if k not in da]
    differ = [k for k in da if k in db and da[k] != db[k]]
    return ("%d vs %d items; only in first: %d %r; only in second: %d %r; different values: %d %r" %
            (len(a), len(b), len(only_a), only_a[:limit], len(only_b), only_b[:limit], len(differ),
             [(k, da[k][:40], db[k][:40]) for k in differ[:limit]]))


def assert_same_data(main, replicas):
    want = read_all(main)
    for r in replicas:
        got = read_all(r)
        assert got == want, "key space of %s differs from the main's: %s" % (r.name, diff_summary(want, got))
    return want


def applied_seq(replica):
    """A replica's applied_seq (-1 while it answers /stats 503 during a resync)."""
    x = replica.repl_maybe()
    return -1 if x is None else x["applied_seq"]


def wait_converged(main, replicas, timeout=30.0, what=""):
    """Waits until the main's seq is stable and every replica's applied_seq equals it."""
    def ok():
        s = main.seq()
        return all(applied_seq(r) == s for r in replicas) and main.seq() == s
    try:
        return wait_until(ok, timeout, "replicas to converge %s" % what, interval=0.1)
    except pytest.fail.Exception:
        check_nodes_alive()
        info = {"main seq": main.seq()}
        for r in replicas:
            try:
                info[r.name] = r.repl()
            except Exception as e:  # noqa: BLE001 - only for the message
                info[r.name] = repr(e)
        try:
            info["main replication"] = main.repl()
        except Exception as e:  # noqa: BLE001
            info["main replication"] = repr(e)
        logs = "".join("\n--- %s log (last lines):\n%s" % (n.name, "\n".join(n.log().splitlines()[-12:]))
                       for n in [main] + list(replicas))
        pytest.fail("replicas did not converge within %.0f s %s: %s%s" % (timeout, what, json.dumps(info)[:3000],
                                                                           logs), pytrace=False)


# ---- the fixture ----------------------------------------------------------------------------------

class ClusterFactory:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.nodes = []
        self.relays = []
        self._n = 0

    def replica(self, args=(), start=True, name=None):
        self._n += 1
        n = Node(self.tmp_path, name or "replica%d" % self._n, "replica", args=args)
        self.nodes.append(n)
        if start:
            n.start()
        return n

    def main(self, replica_urls, args=(), start=True, name="main"):
        n = Node(self.tmp_path, name, "main", args=args, replicas=replica_urls)
        self.nodes.append(n)
        if start:
            n.start()
        return n

    def relay(self, target_port):
        r = Relay("127.0.0.1", target_port)
        self.relays.append(r)
        r.start()
        return r

    def simple(self, nreplicas=1, main_args=(), replica_args=()):
        """A main and nreplicas replicas, replicas started first."""
        reps = [self.replica(args=replica_args) for _ in range(nreplicas)]
        m = self.main([r.repl_url for r in reps], args=main_args)
        return m, reps

    def teardown(self):
        problems = []
        codes = {}
        for n in reversed(self.nodes):  # the main first: its senders stop before the replicas go
            try:
                was_up = n.expected_up
                codes[n.name] = n.stop()
                if was_up and codes[n.name] not in (0, None) and not isinstance(codes[n.name], str):
                    problems.append("%s exited with status %s on SIGTERM (or had died before): %s" %
                                    (n.name, codes[n.name], n.log_last()[-1500:]))
            except Exception as e:  # noqa: BLE001 - keep stopping the others
                problems.append("%s: stop failed: %r" % (n.name, e))
        for r in self.relays:
            try:
                r.stop()
            except Exception as e:  # noqa: BLE001
                problems.append("relay stop failed: %r" % e)
        for n in self.nodes:
            for f in sanitizer_findings(n.log()):
                problems.append("%s: %s" % (n.name, f))
            if isinstance(codes.get(n.name), str):
                problems.append("%s: %s on SIGTERM" % (n.name, codes[n.name]))
        return problems


def checked_teardown(owner):
    """A fixture's body: yields owner (whose teardown() returns a list of problems) to the test,
    then tears it down and fails the test if there was any problem."""
    try:
        yield owner
    finally:
        problems = owner.teardown()
        _NODES[:] = []
        if problems:
            pytest.fail("after the test: " + "; ".join(problems)[:6000], pytrace=False)


@pytest.fixture
def cluster(tmp_path):
    f = ClusterFactory(tmp_path)
    _NODES[:] = []
    f.nodes = _NODES
    yield from checked_teardown(f)


# ---- writers ----------------------------------------------------------------------------------------

class Writers:
    """Threads writing unique keys to a node as fast as they can, remembering what was acknowledged.

    Each thread t writes keys b"w<tag>-<t>-<i>" with a value naming the key and i, one PUT each, and
    ignores failures (the node may be down); acked maps key -> (value, seq) for every 200."""

    def __init__(self, node, nthreads=3, tag="", value_size=100, pause=0.0, max_writes=200000, max_seconds=120.0):
        self.node = node
        self.nthreads = nthreads
        self.tag = tag
        self.value_size = value_size
        self.pause = pause
        self.max_writes = max_writes
        self.max_seconds = max_seconds
        self.acked = {}
        self.failures = 0
        self.slowest = 0.0
        self.errors = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = []

    def _run(self, t):
        s = requests.Session()
        deadline = time.monotonic() + self.max_seconds
        try:
            for i in range(self.max_writes):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                key = "w%s-%d-%07d" % (self.tag, t, i)
                val = (key + ":" + "x" * self.value_size).encode()
                t0 = time.monotonic()
                try:
                    r = s.put(self.node.url + "/kv/" + key, data=val, timeout=5)
                except requests.RequestException:
                    with self._lock:
                        self.failures += 1
                    s.close()
                    s = requests.Session()
                    time.sleep(0.02)
                    continue
                dt = time.monotonic() - t0
                with self._lock:
                    self.slowest = max(self.slowest, dt)
                    if r.status_code == 200:
                        self.acked[key.encode()] = (val, int(r.headers["X-Triekv-Seq"]))
                    else:
                        self.failures += 1
                        if len(self.errors) < 20:
                            self.errors.append((r.status_code, r.text[:200]))
                if self.pause:
                    time.sleep(self.pause)
        finally:
            s.close()

    def start(self):
        for t in range(self.nthreads):
            th = threading.Thread(target=self._run, args=(t,), daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def count(self):
        with self._lock:
            return len(self.acked)

    def wait_count(self, n, timeout=30.0):
        wait_until(lambda: self.count() >= n, timeout, "%d acknowledged writes" % n)

    def stop(self, timeout=20.0):
        self._stop.set()
        for th in self._threads:
            th.join(timeout)
        assert not any(th.is_alive() for th in self._threads), "a writer thread did not stop"


@pytest.fixture
def writers_factory():
    made = []

    def make(*a, **kw):
        w = Writers(*a, **kw)
        made.append(w)
        return w
    try:
        yield make
    finally:
        for w in made:
            w._stop.set()
        for w in made:
            for th in w._threads:
                th.join(20)
