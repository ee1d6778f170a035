"""tests/proxy/test_faults.py - triekv-proxy under load while nodes fail.

What must hold while threads write and read through the proxy and a node is killed, hung, or cut off
from its main: no acknowledged write is ever lost (after recovery each is readable, through the
proxy and on its shard's main); no read returns a value that was never written for that key; a
shard whose main is down refuses its writes quickly (503, or 502 for a write already sent) and never
holds a client past upstream_timeout_ms, while the other shard's writes keep succeeding; non-atomic
batches report each part, and a part is applied whole or not at all; SIGTERM lets the requests in
flight finish and the proxy exits 0 within seconds."""
import hashlib
import json
import os
import random
import signal
import threading
import time

import pytest
import requests

from cluster.conftest import b64, read_all, unb64, wait_until

from .conftest import owner, wait_backend
from .rawhttp import PeerClosed, RawConn, request

PREFIX = {"a": "a-w", "b": "z-w"}  # keys of shard a sort below "k5", of shard b above


def value_of(key):
    """The one value a key is ever written with: names the key, so a mix-up between keys shows."""
    if isinstance(key, str):
        key = key.encode()
    return key + b"|" + hashlib.sha1(key).hexdigest().encode() + b"|" + b"v" * 64


class Load:
    """Writer threads per shard and reader threads, all through the proxy.

    Writers PUT unique keys (each written once, with value_of(key)); acked[key] = seq for every 200,
    sent holds every key tried. results[shard] lists (status, or (status, text) for an unexpected
    one, or an exception's name; seconds taken; seconds since the start). Readers GET acknowledged
    keys, half of them with X-Triekv-Min-Seq: a 200 must carry value_of(key) (else wrong), a read
    with the seq must not be a 404 (else stale)."""

    def __init__(self, proxy_url, shards=("a", "b"), writers=2, readers=2, timeout=10.0, pause=0.002):
        self.url = proxy_url
        self.shards = shards
        self.nwriters = writers
        self.nreaders = readers
        self.timeout = timeout
        self.pause = pause
        self.lock = threading.Lock()
        self.acked = {}
        self.sent = set()
        self.results = {s: [] for s in shards}
        self.reads = {"ok": 0, "404": 0, "other": 0, "exc": 0}
        self.wrong = []
        self.stale = []
        self.stop_ev = threading.Event()
        self.threads = []
        self.t0 = time.monotonic()

    def _writer(self, shard, n):
        s = requests.Session()
        i = 0
        while not self.stop_ev.is_set():
            key = "%s%d-%06d" % (PREFIX[shard], n, i)
            i += 1
            with self.lock:
                self.sent.add(key)
            t0 = time.monotonic()
            try:
                r = s.put(self.url + "/kv/" + key, data=value_of(key), timeout=self.timeout)
                outcome = r.status_code
                if r.status_code == 200:
                    with self.lock:
                        self.acked[key] = int(r.headers["X-Triekv-Seq"])
                elif r.status_code not in (502, 503):
                    outcome = (r.status_code, r.text[:200])
            except requests.RequestException as e:
                outcome = type(e).__name__
                s.close()
                s = requests.Session()
            with self.lock:
                self.results[shard].append((outcome, time.monotonic() - t0, t0 - self.t0))
            time.sleep(self.pause)
        s.close()

    def _reader(self, n):
        s = requests.Session()
        rnd = random.Random(n)
        while not self.stop_ev.is_set():
            with self.lock:
                keys = list(self.acked.items())[-500:]
            if not keys:
                time.sleep(0.01)
                continue
            key, seq = rnd.choice(keys)
            headers = {"X-Triekv-Min-Seq": str(seq)} if rnd.random() < 0.5 else {}
            try:
                r = s.get(self.url + "/kv/" + key, headers=headers, timeout=self.timeout)
                body = r.content
            except requests.RequestException:
                with self.lock:
                    self.reads["exc"] += 1
                s.close()
                s = requests.Session()
                continue
            with self.lock:
                if r.status_code == 200:
                    self.reads["ok"] += 1
                    if body != value_of(key):
                        self.wrong.append((key, body[:80], r.headers.get("X-Triekv-Backend")))
                elif r.status_code == 404:
                    self.reads["404"] += 1
                    if headers:
                        self.stale.append((key, seq, r.headers.get("X-Triekv-Backend")))
                else:
                    self.reads["other"] += 1
            time.sleep(self.pause)
        s.close()

    def start(self):
        for shard in self.shards:
            for n in range(self.nwriters):
                self.threads.append(threading.Thread(target=self._writer, args=(shard, n), daemon=True))
        for n in range(self.nreaders):
            self.threads.append(threading.Thread(target=self._reader, args=(n,), daemon=True))
        for th in self.threads:
            th.start()
        return self

    def stop(self):
        self.stop_ev.set()
        for th in self.threads:
            th.join(30)
        assert not any(th.is_alive() for th in self.threads), "a load thread hung"

    def acks(self, shard):
        with self.lock:
            return sum(1 for k in self.acked if owner(k) == shard)

    def wait_acks(self, shard, n, timeout=20):
        base = self.acks(shard)
        wait_until(lambda: self.acks(shard) >= base + n, timeout,
                   "%d more acknowledged writes on shard %s" % (n, shard))

    def outcomes(self, shard, since=0.0):
        with self.lock:
            return [r for r in self.results[shard] if r[2] >= since]

    def now(self):
        return time.monotonic() - self.t0

    def check_reads(self):
        assert not self.wrong, "reads returned values never written for their key: %r" % self.wrong[:5]

    def check_durable(self, t):
        """Every acknowledged write is on its shard's main and readable through the proxy."""
        on_mains = dict(read_all(t.main("a")) + read_all(t.main("b")))
        lost = [k for k in self.acked if on_mains.get(k.encode()) != value_of(k)]
        assert not lost, "%d acknowledged writes lost, e.g. %r" % (len(lost), lost[:5])
        # nothing that was never sent, and never another key's value
        for k, v in on_mains.items():
            if k.startswith(b"a-w") or k.startswith(b"z-w"):
                assert k.decode() in self.sent and v == value_of(k), (k, v[:60])
        s = requests.Session()
        for k, seq in random.Random(1).sample(sorted(self.acked.items()), min(300, len(self.acked))):
            r = s.get(self.url + "/kv/" + k, headers={"X-Triekv-Min-Seq": str(seq)}, timeout=10)
            assert r.status_code == 200 and r.content == value_of(k), (k, r.status_code, r.text[:100])
        s.close()


@pytest.fixture
def loads():
    made = []

    def make(*a, **kw):
        made.append(Load(*a, **kw))
        return made[-1]
    yield make
    for ld in made:
        ld.stop_ev.set()
        for th in ld.threads:
            th.join(30)


def statuses(outcomes):
    out = {}
    for o, _, _ in outcomes:
        k = o if isinstance(o, (int, str)) else o[0]
        out[k] = out.get(k, 0) + 1
    return out


# ---- a replica fails -----------------------------------------------------------------------------------

def test_replica_killed_and_restarted_under_load(topo, loads):
    t = topo.start()
    ld = loads(t.proxy.url).start()
    ld.wait_acks("a", 100)
    t.replica("a").kill9()
    ld.wait_acks("a", 150)
    ld.wait_acks("b", 50)
    t.replica("a").start()
    wait_backend(t.proxy, t.replica("a").url, True)
    ld.wait_acks("a", 150)
    ld.stop()
    # writes go to the mains: a replica's death costs none of them
    for shard in ("a", "b"):
        assert set(statuses(ld.outcomes(shard))) == {200}, (shard, statuses(ld.outcomes(shard)))
    # reads fell back to the main at once: after the kill, nothing but answers
    ld.check_reads()
    assert not ld.stale, "reads with X-Triekv-Min-Seq returned 404: %r" % ld.stale[:5]
    assert ld.reads["other"] == 0 and ld.reads["ok"] > 100, ld.reads
    assert ld.reads["exc"] <= 2, "reads broke off: %r (at most the ones in flight at the kill)" % ld.reads
    t.converge()
    ld.check_durable(t)
    # and reads go back to the restarted replica
    k = next(k for k in ld.acked if owner(k) == "a")
    wait_until(lambda: t.proxy.get("/kv/" + k).headers.get("X-Triekv-Backend") == t.replica("a").url, 10,
               "reads to be served by the restarted replica")


def test_a_replica_dying_mid_answer_never_looks_like_a_whole_answer(topo):
    """The replica streaming a 40 MB value is killed half way: the client must see the answer break
    off (the connection closes short of Content-Length), never a complete-looking wrong value; the
    next read is served by the main."""
    t = topo.start()
    big = os.urandom(40 << 20)
    assert t.main("b").put("/kv/zbig", data=big).status_code == 200
    t.converge()
    with RawConn(t.proxy.port, timeout=30, rcvbuf=16384) as c:
        c.send(request("GET", "/kv/zbig"))
        while b"\r\n\r\n" not in c.buf:
            c.buf += c.sock.recv(65536)
        head = bytes(c.buf).partition(b"\r\n\r\n")[0].decode().lower()
        assert "x-triekv-backend: " + t.replica("b").url in head, head
        time.sleep(0.3)
        t.replica("b").kill9()
        try:
            r = c.response(timeout=20)
            complete = True
        except PeerClosed:
            complete = False
    if complete:
        assert r.status == 200 and r.body == big, "a broken answer was delivered as a complete one"
    r = t.proxy.get("/kv/zbig", timeout=30)
    assert r.status_code == 200 and r.content == big
    assert r.headers["X-Triekv-Backend"] == t.main("b").url
    assert complete or "broke off an answer" in t.proxy.log()


def test_replication_cut_off_reads_stay_correct(topo, loads):
    """The relay drops replication to shard a's replica: it falls behind. Plain reads may be stale
    (a 404 for a new key), never wrong; reads asking for a write's seq get it (from the main)."""
    t = topo.start(replica_args=["--replication-read-wait-ms", "200"])
    ld = loads(t.proxy.url).start()
    ld.wait_acks("a", 50)
    t.relay("a").set_mode("blackhole")
    ld.wait_acks("a", 200)
    ld.wait_acks("b", 100)
    # a read-your-write of a fresh key, while the replica is behind: served by the main
    r = t.proxy.put("/kv/a-fresh", data=value_of("a-fresh"))
    assert r.status_code == 200
    assert t.proxy.get("/kv/a-fresh").status_code == 404  # the replica has not got it
    r = t.proxy.get("/kv/a-fresh", headers={"X-Triekv-Min-Seq": r.headers["X-Triekv-Seq"]})
    assert r.status_code == 200 and r.content == value_of("a-fresh")
    assert r.headers["X-Triekv-Backend"] == t.main("a").url
    t.relay("a").set_mode("pass")
    ld.wait_acks("a", 50)
    ld.stop()
    for shard in ("a", "b"):
        assert set(statuses(ld.outcomes(shard))) == {200}, (shard, statuses(ld.outcomes(shard)))
    ld.check_reads()
    assert not ld.stale, "reads with X-Triekv-Min-Seq returned 404: %r" % ld.stale[:5]
    assert ld.reads["other"] == 0 and ld.reads["exc"] == 0, ld.reads
    t.converge()
    ld.check_durable(t)


# ---- a main fails ----------------------------------------------------------------------------------------

UPSTREAM_TIMEOUT = 1.5


def test_main_killed_under_load_fails_fast_and_loses_nothing(topo, loads):
    t = topo.start(proxy_extra={"upstream_timeout_ms": int(UPSTREAM_TIMEOUT * 1000)})
    ld = loads(t.proxy.url, timeout=20).start()
    ld.wait_acks("a", 100)
    ld.wait_acks("b", 100)
    t.main("a").kill9()
    t_kill = ld.now()
    wait_backend(t.proxy, t.main("a").url, False)
    ld.wait_acks("b", 200)  # the other shard goes on
    t_restart = ld.now()
    t.main("a").start()
    wait_backend(t.proxy, t.main("a").url, True)
    ld.wait_acks("a", 100)
    ld.stop()
    during = [o for o in ld.outcomes("a", since=t_kill) if o[2] < t_restart]
    st = statuses(during)
    assert st.get(503, 0) > 10, st
    assert set(st) <= {200, 502, 503}, "writes to the dead main ended otherwise: %r" % st
    slow = [o for o in during if o[0] != 200 and o[1] > UPSTREAM_TIMEOUT + 1.0]
    assert not slow, "refusals that took longer than upstream_timeout_ms: %r" % slow[:5]
    fast503 = [o for o in during if o[0] == 503]
    assert sorted(o[1] for o in fast503)[len(fast503) // 2] < 0.2, "a refused write is not quick"
    assert set(statuses(ld.outcomes("b"))) == {200}, statuses(ld.outcomes("b"))
    ld.check_reads()
    assert ld.reads["ok"] > 100, ld.reads
    t.converge()
    ld.check_durable(t)


def test_hung_main_never_holds_a_write_past_upstream_timeout(topo, loads):
    """A main that stops answering (SIGSTOP: connections are accepted, nothing is answered)."""
    t = topo.start(proxy_extra={"upstream_timeout_ms": int(UPSTREAM_TIMEOUT * 1000)})
    ld = loads(t.proxy.url, writers=3, readers=1, timeout=30).start()
    ld.wait_acks("a", 50)
    pid = t.main("a").proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        t_stop = ld.now()
        wait_backend(t.proxy, t.main("a").url, False)
        ld.wait_acks("b", 100)
        time.sleep(UPSTREAM_TIMEOUT + 0.5)
        t_cont = ld.now()
        # reads of shard a's keys are served by its replica meanwhile
        k = next(k for k in ld.acked if owner(k) == "a")
        r = t.proxy.get("/kv/" + k)
        assert r.status_code in (200, 404) and (r.status_code == 404 or r.content == value_of(k))
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_backend(t.proxy, t.main("a").url, True)
    ld.wait_acks("a", 50)
    ld.stop()
    during = [o for o in ld.outcomes("a", since=t_stop) if o[2] < t_cont]
    st = statuses(during)
    assert set(st) <= {200, 502, 503} and st.get(503, 0) > 0, st
    slow = [o for o in during if o[1] > UPSTREAM_TIMEOUT + 1.0]
    assert not slow, "writes held past upstream_timeout_ms (%.1f s): %r" % (UPSTREAM_TIMEOUT, slow[:5])
    assert set(statuses(ld.outcomes("b"))) == {200}
    ld.check_reads()
    t.converge()
    ld.check_durable(t)


# ---- non-atomic batches with a main down ----------------------------------------------------------------------

def test_non_atomic_batches_with_one_main_down(topo):
    t = topo.start()
    p = t.proxy
    base = {"apple": "1", "avocado": "2", "zebra": "3", "zucchini": "4"}
    assert p.post("/bulk?atomic=false", data=json.dumps(base)).status_code == 200
    t.converge()
    t.main("a").kill9()
    wait_backend(p, t.main("a").url, False)
    batch = {"apricot": "5", "banana": "6", "k4\u00ff": "7", "k5": "8", "kiwi": "9", "zest": "10"}
    r = p.post("/bulk?atomic=false", data=json.dumps(batch))
    assert r.status_code == 207, r.text
    j = r.json()
    parts = {x["shard"]: x for x in j["parts"]}
    assert j["atomic"] is False and j["parts_failed"] == 1 and j["count"] == 3, j
    assert parts["a"]["status"] == 503 and parts["a"]["error"] == "main_unavailable" and parts["a"]["keys"] == 3
    assert parts["b"]["status"] == 200 and parts["b"]["count"] == 3 and parts["b"]["keys"] == 3
    r = p.post("/bulk/delete?atomic=false", data=json.dumps({"keys": ["apple", "zebra", "zucchini", "nope"]}))
    assert r.status_code == 207, r.text
    j = r.json()
    parts = {x["shard"]: x for x in j["parts"]}
    assert j["deleted"] == 2 and parts["a"]["status"] == 503 and parts["b"]["deleted"] == 2, j
    # base64, the same
    r = p.post("/bulk?atomic=false&encoding=base64", data=json.dumps({"YQ==": "MQ==", "eg==": "Mg=="}))
    assert r.status_code == 207 and r.json()["parts_failed"] == 1, r.text
    # a batch wholly inside the dead shard: 503, inside the live one: 200
    assert p.post("/bulk?atomic=false", data=json.dumps({"cherry": "1"})).status_code == 503
    assert p.post("/bulk?atomic=false", data=json.dumps({"zz": "1"})).status_code == 200
    # shard b's part is there whole, shard a's not at all (after the restart, on the main itself)
    t.main("a").start()
    wait_backend(p, t.main("a").url, True)
    a = dict(read_all(t.main("a")))
    b = dict(read_all(t.main("b")))
    assert a == {b"apple": b"1", b"avocado": b"2"}, a
    assert b == {b"k5": b"8", b"kiwi": b"9", b"z": b"2", b"zest": b"10", b"zz": b"1"}, b


# Regression test (bug found at caef4d0, fixed in d7f0b47). The bug: a non-atomic part whose main refused the
#   connection (nothing was sent) is reported 502 main_failed 'may or may not have been applied'; a single
#   write in the same state is 503 main_unavailable 'nothing was written'
def test_non_atomic_part_not_sent_is_reported_not_applied(topo):
    t = topo.start(proxy_extra={"health_check_interval_ms": 60000, "health_check_timeout_ms": 1000})
    p = t.proxy
    assert p.put("/kv/apple", data=b"1").status_code == 200
    t.main("a").kill9()  # the health checks will not notice for a minute: the batch finds out itself
    r = p.post("/bulk?atomic=false", data=json.dumps({"avocado": "1", "zucchini": "2"}))
    assert r.status_code == 207, r.text
    part = {x["shard"]: x for x in r.json()["parts"]}["a"]
    assert (part["status"], part["error"]) == (503, "main_unavailable"), part


# ---- SIGTERM ----------------------------------------------------------------------------------------------------

def test_sigterm_lets_requests_in_flight_finish(topo):
    t = topo.start(replica_args=["--replication-read-wait-ms", "1500"])
    big = os.urandom(12 << 20)
    assert t.main("b").put("/kv/zbig", data=big).status_code == 200
    for i in range(20):
        assert t.proxy.put("/kv/k%02d" % (40 + i), data=b"v%d" % i).status_code == 200
    t.converge()
    t.relay("a").set_mode("blackhole")
    r = t.proxy.put("/kv/apple", data=b"fresh")
    seq = r.headers["X-Triekv-Seq"]
    results = {}

    def run(name, fn):
        try:
            results[name] = fn()
        except Exception as e:  # noqa: BLE001 - reported below
            results[name] = e

    def big_reader():  # a client slower than the proxy, still reading when SIGTERM comes
        with RawConn(t.proxy.port, timeout=30, rcvbuf=65536) as c:
            c.send(request("GET", "/kv/zbig"))
            head = c.sock.recv(100000)
            time.sleep(0.5)
            c.buf = bytearray(head)
            r = c.response()
            return r.status, r.body == big

    def waiting_read():  # the replica waits for the seq (1.5 s), then the main answers
        r = requests.get(t.proxy.url + "/kv/apple", headers={"X-Triekv-Min-Seq": seq}, timeout=30)
        return r.status_code, r.content

    def cross_shard_get():  # merged from both shards (16 MB of base64), read slowly
        body = json.dumps({"keys": [b64("k45"), b64("zbig"), b64("k55")]}).encode()
        with RawConn(t.proxy.port, timeout=30, rcvbuf=65536) as c:
            c.send(request("POST", "/bulk/get?encoding=base64", body))
            time.sleep(0.6)
            r = c.response()
            return r.status, [unb64(i["value"]) for i in r.json()["items"]] == [b"v5", big, b"v15"]

    threads = [threading.Thread(target=run, args=(n, f)) for n, f in
               (("big", big_reader), ("wait", waiting_read), ("bulk_get", cross_shard_get))]
    for th in threads:
        th.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    t.proxy.proc.send_signal(signal.SIGTERM)
    try:
        code = t.proxy.proc.wait(timeout=15)
    except Exception:  # noqa: BLE001
        code = "still running"
    took = time.monotonic() - t0
    for th in threads:
        th.join(30)
    t.relay("a").set_mode("pass")
    assert results.get("big") == (200, True), results.get("big")
    assert results.get("wait") == (200, b"fresh"), results.get("wait")
    assert results.get("bulk_get") == (200, True), results.get("bulk_get")
    assert code == 0, "the proxy exited with %r: %s" % (code, t.proxy.log()[-2000:])
    assert took < 6, "the proxy took %.1f s to stop" % took
    # it no longer takes connections
    with pytest.raises(OSError):
        RawConn(t.proxy.port, timeout=2).send(request("GET", "/health")).response()
