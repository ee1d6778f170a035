"""tests/proxy/conftest.py - two shards of triekv (a main and a replica each) behind triekv-proxy.

The binaries are $TRIEKV_BIN/triekv-server and triekv-proxy (default: <repo>/bin). Nodes come from
the cluster suite's Node and ClusterFactory (tests/cluster/conftest.py); the proxy is a process of
the same shape (free port on 127.0.0.1, stderr in a file, SIGTERM at the end, sanitizer reports
fail the test).

Fixtures:
  topo       a started Topology: shards "a" = ["", BOUNDARY) and "b" = [BOUNDARY, end), each with a
             main and one replica (its replication port behind a Relay, so a test can cut it off),
             and the proxy in front. .proxy .shard(name) .main(name) .replica(name) .relay(name)
  proxy_bin  the proxy binary, for tests that start their own (bad shard maps)

Helpers: Proxy (one triekv-proxy process), owner(key) -> "a" | "b", direct reads of the nodes.
The process plumbing (free_port, child_env, sanitizer_findings, BIN_DIR, ...) comes from
tests/support/triekv_procs.py, the nodes and wait_until from the cluster suite; tests may import
all of these from here too.
"""
import json
import os
import signal
import sys

import pytest
import requests

_TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _TESTS_DIR not in sys.path:  # pytest's default import mode puts it there, others may not
    sys.path.insert(0, _TESTS_DIR)

from cluster.conftest import (HTTP_TIMEOUT, ClusterFactory, _NODES, checked_teardown,  # noqa: E402
                              wait_converged, wait_until)
from support.triekv_procs import (BIN_DIR, HttpVerbs, child_env, free_port, poll_health,  # noqa: E402
                                  read_logs, sanitizer_findings, spawn, stop_process)

PROXY_BIN = os.path.join(BIN_DIR, "triekv-proxy")
BOUNDARY = b"k5"  # keys below it are shard a's, the rest shard b's
START_TIMEOUT = 30.0


def owner(key):
    if isinstance(key, str):
        key = key.encode()
    return "a" if key < BOUNDARY else "b"


class Proxy(HttpVerbs):
    """One triekv-proxy process with a proxy.json written from `shards` (a list of dicts)."""

    def __init__(self, tmp_path, shards, extra=None, name="proxy"):
        self.tmp_path = tmp_path
        self.name = name
        self.port = free_port()
        self.config = {"port": self.port, "bind": "127.0.0.1", "health_check_interval_ms": 200,
                       "health_check_timeout_ms": 150, "shards": shards}
        self.config.update(extra or {})
        self.config_path = str(tmp_path / (name + ".json"))
        self.proc = None
        self.stderr_paths = []
        self.session = requests.Session()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, wait=True):
        with open(self.config_path, "w") as f:
            json.dump(self.config, f)
        path = str(self.tmp_path / ("%s-stderr-%d.log" % (self.name, len(self.stderr_paths) + 1)))
        self.stderr_paths.append(path)
        self.proc = spawn([PROXY_BIN, "--config", self.config_path], path, child_env(), cwd=str(self.tmp_path))
        if wait and not poll_health(self.proc, self.port, START_TIMEOUT):
            assert self.proc.poll() is None, "the proxy exited with %s: %s" % (self.proc.returncode, self.log())
            pytest.fail("the proxy did not answer /health within %.0f s: %s" % (START_TIMEOUT, self.log()))
        return self

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        self.session.close()
        self.session = requests.Session()
        if self.proc is None:
            return None
        code = stop_process(self.proc, sig, timeout)
        return "hung (SIGKILLed after %.0f s)" % timeout if code is None else code

    def log(self):
        """stderr of every start of the proxy, concatenated."""
        return read_logs(self.stderr_paths)

    def req(self, method, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return self.session.request(method, self.url + path, **kw)

    def stats(self, cluster=False):
        r = self.get("/stats" + ("?cluster=true" if cluster else ""))
        assert r.status_code == 200, r.text
        return r.json()

    def backend(self, url):
        """The proxy's /stats entry for the backend at url."""
        for s in self.stats()["shards"]:
            for b in [s["main"]] + s["replicas"]:
                if b["url"] == url:
                    return b
        raise KeyError(url)


class Topology:
    def __init__(self, tmp_path):
        self.cluster = ClusterFactory(tmp_path)
        _NODES[:] = []
        self.cluster.nodes = _NODES
        self.shards = {}
        self.relays = {}
        self.proxy = None
        self.tmp_path = tmp_path

    def start(self, replica_args=(), main_args=(), proxy_extra=None):
        c = self.cluster
        for name in ("a", "b"):
            rep = c.replica(args=["--cache-size", "32", "--cluster-id", name] + list(replica_args),
                            name="%s-replica" % name)
            relay = c.relay(rep.repl_port)
            main = c.main([relay.url], args=["--cache-size", "32", "--cluster-id", name] + list(main_args),
                          name="%s-main" % name)
            self.shards[name] = (main, rep)
            self.relays[name] = relay
        pct = "".join("%%%02x" % b for b in BOUNDARY)
        shards = [
            {"name": "a", "start": "", "end": pct, "main": self.main("a").url, "replicas": [self.replica("a").url]},
            {"name": "b", "start": pct, "end": None, "main": self.main("b").url, "replicas": [self.replica("b").url]},
        ]
        self.proxy = Proxy(self.tmp_path, shards, proxy_extra).start()
        return self

    def main(self, name):
        return self.shards[name][0]

    def replica(self, name):
        return self.shards[name][1]

    def relay(self, name):
        return self.relays[name]

    def converge(self):
        for name in ("a", "b"):
            wait_converged(self.main(name), [self.replica(name)])

    def teardown(self):
        problems = []
        if self.proxy is not None:
            code = self.proxy.stop()
            if code not in (0, None):
                problems.append("the proxy exited with %s on SIGTERM: %s" % (code, self.proxy.log()[-2000:]))
            for f in sanitizer_findings(self.proxy.log()):
                problems.append("proxy: %s" % f)
        problems += self.cluster.teardown()
        return problems


@pytest.fixture
def topo(tmp_path):
    yield from checked_teardown(Topology(tmp_path))


@pytest.fixture
def proxy_bin():
    return PROXY_BIN


def wait_backend(proxy, url, up, timeout=10.0):
    wait_until(lambda: proxy.backend(url)["up"] is up, timeout, "the proxy to see %s %s" % (url, "up" if up else "down"))
