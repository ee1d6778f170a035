"""tests/proxy/test_limits.py - triekv-proxy's resource limits: backpressure to slow clients,
max_connections, and its keep-alive connections to the nodes.

What must hold: a large value read by clients slower than the node streams through without the
proxy holding it (its RSS grows by far less than the values times the slow clients) while other
clients are served promptly, and a slow client still gets every byte; more than max_connections
clients are refused while the ones in are served; the proxy reuses its connections to a node
(the node accepts a handful, not one per request), lets idle ones go, and makes new ones after the
node restarts, without failing a request on a connection the node had closed; backends named by
host name work; many clients at once each get the answers to their own requests."""
import json
import os
import threading
import time

import pytest
import requests

from cluster.conftest import sanitizer_findings, wait_until

from .conftest import BOUNDARY, Proxy, owner, wait_backend
from .rawhttp import PeerClosed, RawConn, request

MB = 1 << 20


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for %d" % pid)


def is_asan(path):
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()


# ---- backpressure --------------------------------------------------------------------------------------

def test_slow_readers_do_not_make_the_proxy_hold_whole_values(topo, proxy_bin):
    """Five clients ask for a 20 MB value and read nothing for 3 s (less than upstream_timeout_ms:
    see the next test for longer), then read it all at once, side by side."""
    t = topo.start()
    big = os.urandom(20 * MB)
    assert t.main("b").put("/kv/zbig", data=big).status_code == 200
    for i in range(20):
        assert t.main(owner("k%02d" % (40 + i))).put("/kv/k%02d" % (40 + i), data=b"small").status_code == 200
    t.converge()
    pid = t.proxy.proc.pid
    t.proxy.get("/kv/k41")
    base = rss(pid)
    slow = []
    try:
        for _ in range(5):
            c = RawConn(t.proxy.port, timeout=30, rcvbuf=16384)
            c.send(request("GET", "/kv/zbig", close=False))
            slow.append(c)
        peak = base
        latencies = []
        s = requests.Session()
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end:  # meanwhile other clients are served at once
            for i in range(5):
                t0 = time.monotonic()
                r = s.get(t.proxy.url + "/kv/k%02d" % (40 + (len(latencies) % 20)), timeout=10)
                latencies.append(time.monotonic() - t0)
                assert r.status_code == 200 and r.content == b"small"
            peak = max(peak, rss(pid))
            time.sleep(0.02)
        s.close()
        # every slow client gets the whole value, read side by side
        results = [None] * len(slow)

        def drain(i):
            try:
                r = slow[i].response(timeout=30)
                results[i] = (r.status, len(r.body), r.body == big)
            except Exception as e:  # noqa: BLE001 - reported below
                results[i] = repr(e)
        threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(slow))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(40)
        peak = max(peak, rss(pid))
    finally:
        for c in slow:
            c.close()
    assert all(x == (200, len(big), True) for x in results), results
    latencies.sort()
    assert latencies[-1] < 1.0 and latencies[len(latencies) // 2] < 0.05, \
        "other clients waited: median %.3f s, max %.3f s" % (latencies[len(latencies) // 2], latencies[-1])
    if not is_asan(proxy_bin):  # ASan's allocator keeps freed memory: RSS says nothing there
        growth = (peak - base) / MB
        assert growth < 60, "the proxy's RSS grew by %.0f MB with 5 slow clients of a 20 MB value" % growth


# regression: a read drained the kernel's whole receive window from the node (megabytes on
# loopback) before PROXY_STREAM_BUFFER_MAX was checked; upstream sockets now cap their receive buffer
def test_a_stalled_client_costs_the_proxy_about_256_kib(topo, proxy_bin):
    """PROXY.md: while more than 256 KiB of an answer waits for a slow client, the proxy stops
    reading from the node; it holds at most about 256 KiB per answer in flight. Five clients ask
    for a 20 MB value and read nothing: the proxy's RSS may grow by a few MB (the answers' 256 KiB,
    the connections), not by megabytes per client."""
    if is_asan(proxy_bin):
        pytest.skip("ASan's allocator keeps freed memory: RSS says nothing there")
    t = topo.start()
    big = os.urandom(20 * MB)
    assert t.main("b").put("/kv/zbig", data=big).status_code == 200
    t.converge()
    pid = t.proxy.proc.pid
    assert t.proxy.get("/kv/k41").status_code == 404
    base = rss(pid)
    slow = []
    try:
        for _ in range(5):
            c = RawConn(t.proxy.port, timeout=30, rcvbuf=16384)
            c.send(request("GET", "/kv/zbig", close=False))
            slow.append(c)
        peak = base
        for _ in range(40):
            time.sleep(0.05)
            peak = max(peak, rss(pid))
    finally:
        for c in slow:
            c.close()
    growth = (peak - base) / MB
    assert growth < 8, "5 stalled answers grew the proxy's RSS by %.1f MB (%.1f MB each)" % (growth, growth / 5)


# Regression test (bug found at caef4d0, fixed in d7f0b47). The bug: while the proxy stops reading a node for a slow
#   client (backpressure), upstream_timeout_ms keeps running: a client that pauses longer than it gets a
#   truncated value (the connection closes mid-body) and the node is charged a failure ('the answer stopped
#   coming'), though the node sent everything asked of it
def test_a_client_pausing_longer_than_upstream_timeout_still_gets_the_value(topo):
    t = topo.start(proxy_extra={"upstream_timeout_ms": 1000})
    big = os.urandom(16 * MB)
    assert t.main("b").put("/kv/zbig", data=big).status_code == 200
    t.converge()
    with RawConn(t.proxy.port, timeout=30, rcvbuf=16384) as c:
        c.send(request("GET", "/kv/zbig"))
        while len(c.buf) < MB:
            c.buf += c.sock.recv(65536)
        time.sleep(2.5)  # a client busy elsewhere for a moment (a direct node waits for it)
        try:
            r = c.response(timeout=20)
            got = r.body
        except PeerClosed:
            got = c.buf.partition(b"\r\n\r\n")[2]
    failures = t.proxy.backend(t.replica("b").url)["failures"]
    assert len(got) == len(big) and got == big, "the client got %d of %d bytes" % (len(got), len(big))
    assert failures == 0, "the replica was charged %d failures for the client's pause" % failures


# ---- max_connections --------------------------------------------------------------------------------------

def test_connections_over_max_connections_are_refused_while_the_others_work(topo):
    t = topo.start(proxy_extra={"max_connections": 8})
    t.proxy.session.close()  # the fixture's keep-alive connection would count
    port = t.proxy.port
    conns = []
    for i in range(8):
        c = RawConn(port, timeout=5)
        c.send(request("GET", "/kv/k%d" % i, close=False))
        assert c.response().status == 404
        conns.append(c)

    def refused(c):
        try:
            c.send(request("GET", "/health", close=False))
            c.response(timeout=3)
            return False
        except (PeerClosed, ConnectionResetError, BrokenPipeError):
            return True
    extra = [RawConn(port, timeout=5) for _ in range(3)]
    assert all(refused(c) for c in extra), "a connection over max_connections was served"
    for c in extra:
        c.close()
    # the eight are still served, writes and reads on both shards
    for i, c in enumerate(conns):
        key = "apple%d" % i if i % 2 else "zebra%d" % i
        c.send(request("PUT", "/kv/" + key, b"v", close=False))
        assert c.response().status == 200
    conns[0].send(request("GET", "/stats", close=False))
    st = conns[0].response().json()["connections"]
    assert st["open"] == 8 and st["refused"] >= 3, st
    # one leaves: a new one gets in (once the proxy has seen the close)
    conns.pop().close()
    conns.pop().close()

    def new_one_served():
        with RawConn(port, timeout=5) as c:
            return not refused(c)
    wait_until(new_one_served, 5, "a new connection to be accepted after two closed")
    for c in conns:
        c.send(request("GET", "/health", close=False))
        assert c.response().status == 200
        c.close()


# ---- connections to the nodes ----------------------------------------------------------------------------------

def accepted(node):
    return node.stats()["connections"]["accepted"]


def test_upstream_connections_are_reused_dropped_when_idle_and_remade_after_restarts(topo):
    t = topo.start()
    p = t.proxy
    keys = ["k%02d" % i for i in range(40, 60)]  # both shards
    for k in keys:
        assert p.put("/kv/" + k, data=k.encode()).status_code == 200
    t.converge()
    before = {n: accepted(t.replica(n)) for n in ("a", "b")}
    before_main = {n: accepted(t.main(n)) for n in ("a", "b")}
    errors = []

    def reader(n):
        s = requests.Session()
        for i in range(100):
            k = keys[(i * 7 + n) % len(keys)]
            r = s.get(p.url + "/kv/" + k, timeout=10)
            if r.status_code != 200 or r.content != k.encode():
                errors.append((k, r.status_code))
        s.close()
    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors[:5]
    for n in ("a", "b"):  # 400 reads, 4 at a time, the health checks' own connection, /stats
        assert accepted(t.replica(n)) - before[n] <= 12, (n, accepted(t.replica(n)) - before[n])
        assert accepted(t.main(n)) - before_main[n] <= 2, "main %s served reads" % n
    # idle connections are let go after 2 s (a node keeps them 60 s)
    wait_until(lambda: all(t.replica(n).stats()["connections"]["open"] <= 3 for n in ("a", "b")), 8,
               "the proxy to close its idle connections to the replicas")
    # a replica killed and restarted: reads go on (to the main meanwhile), then back to it
    t.replica("a").kill9()
    for k in keys:
        r = p.get("/kv/" + k)
        assert r.status_code == 200 and r.content == k.encode(), (k, r.status_code, r.text)
    t.replica("a").start()
    wait_backend(p, t.replica("a").url, True)
    t.converge()
    backends = set()
    for k in keys * 3:
        r = p.get("/kv/" + k)
        assert r.status_code == 200 and r.content == k.encode(), (k, r.status_code, r.text)
        backends.add(r.headers["X-Triekv-Backend"])
    assert t.replica("a").url in backends
    # mains restarted, gracefully and with SIGKILL: no write fails on a connection the old process had
    for n, how in (("a", "term"), ("b", "kill")):
        if how == "term":
            t.main(n).restart()
        else:
            t.main(n).kill9()
            t.main(n).start()
        wait_backend(p, t.main(n).url, True)
        for i in range(30):
            k = ("apple%d" if n == "a" else "zebra%d") % i
            r = p.put("/kv/" + k, data=b"after-restart")
            assert r.status_code == 200, \
                "write %d after %s's restart: %d %s" % (i, t.main(n).name, r.status_code, r.text)


def test_backends_named_by_host_name(topo, tmp_path):
    """Backends given by name are resolved at each new connection (decision 0007); a replica whose
    name does not resolve is skipped by reads, like one that is down."""
    t = topo.start()
    pct = "".join("%%%02x" % c for c in BOUNDARY)

    def named(node):
        return "http://localhost:%d" % node.port
    shards = [{"name": "a", "start": "", "end": pct, "main": named(t.main("a")),
               "replicas": ["http://no-such-host.invalid:1", named(t.replica("a"))]},
              {"name": "b", "start": pct, "end": None, "main": named(t.main("b")), "replicas": [named(t.replica("b"))]}]
    px = Proxy(tmp_path, shards, {"threads": 2}, name="named-proxy").start()
    try:
        for k in ("apple", "k5", "zebra"):
            r = px.put("/kv/" + k, data=k.encode())
            assert r.status_code == 200, r.text
        t.converge()
        for _ in range(6):  # every read answered, whichever replica's turn it is
            for k in ("apple", "k5", "zebra"):
                r = px.get("/kv/" + k)
                assert r.status_code == 200 and r.content == k.encode(), (k, r.status_code, r.text)
        r = px.get("/bulk/range?keys_only=true")
        assert [i["key"] for i in r.json()["items"]] == ["apple", "k5", "zebra"], r.text
        r = px.post("/bulk/get", data=json.dumps({"keys": ["zebra", "apple"]}))
        assert [i["value"] for i in r.json()["items"]] == ["zebra", "apple"], r.text
        bad = px.backend("http://no-such-host.invalid:1")
        assert bad["up"] is False and bad["last_error"], bad
    finally:
        code = px.stop()
    assert code == 0, px.log()[-2000:]
    assert not sanitizer_findings(px.log()), sanitizer_findings(px.log())


def test_many_concurrent_clients_each_get_their_own_answers(topo):
    """48 clients at once, each with its own keys on both shards: every answer (single reads, HEAD,
    cross-shard bulk reads, ranges) is the one for that client's request, whichever pooled
    connection to a node carried it."""
    t = topo.start()
    url = t.proxy.url
    problems = []

    def client(n):
        s = requests.Session()
        try:
            for i in range(12):
                ka, kb = "c%03d-%02d" % (n, i), "zc%03d-%02d" % (n, i)  # shard a, shard b
                va, vb = ("%s=%d" % (ka, n * 1000 + i)).encode(), ("%s=%d" % (kb, n * 1000 + i)).encode() * (1 + i * 50)
                seqs = []
                for k, v in ((ka, va), (kb, vb)):
                    r = s.put(url + "/kv/" + k, data=v, timeout=20)
                    if r.status_code != 200:
                        problems.append(("put", k, r.status_code, r.text[:100]))
                        return
                    seqs.append(r.headers["X-Triekv-Seq"])
                r = s.get(url + "/kv/" + kb, headers={"X-Triekv-Min-Seq": seqs[1]}, timeout=20)
                if r.status_code != 200 or r.content != vb:
                    problems.append(("get", kb, r.status_code, r.content[:60]))
                r = s.head(url + "/kv/" + kb, headers={"X-Triekv-Min-Seq": seqs[1]}, timeout=20)
                if r.status_code != 200 or r.headers.get("Content-Length") != str(len(vb)):
                    problems.append(("head", kb, r.status_code, r.headers.get("Content-Length")))
                r = s.post(url + "/bulk/get", data=json.dumps({"keys": [kb, ka, "c-none"]}),
                           headers={"X-Triekv-Min-Seq": "1"}, timeout=20)
                want = [{"key": kb, "value": vb.decode()}, {"key": ka, "value": va.decode()}]
                if r.status_code != 200 or r.json() != {"items": want, "missing": ["c-none"]}:
                    problems.append(("bulk/get", ka, r.status_code, r.text[:100]))
                r = s.get(url + "/bulk/range?prefix=c%03d-&keys_only=true" % n, headers={"X-Triekv-Min-Seq": "1"},
                          timeout=20)
                if r.status_code != 200 or [x["key"] for x in r.json()["items"]] != ["c%03d-%02d" % (n, j)
                                                                                      for j in range(i + 1)]:
                    problems.append(("range", n, r.status_code, r.text[:100]))
        except requests.RequestException as e:
            problems.append(("exception", n, repr(e)))
        finally:
            s.close()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(48)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not any(th.is_alive() for th in threads), "a client hung"
    assert not problems, "%d wrong answers, e.g. %r" % (len(problems), problems[:5])
