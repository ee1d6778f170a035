"""Concurrent clients: a mixed workload checked against a model built from the seq numbers the
server acknowledged, and a compare-and-set counter."""
import random
import threading
import time
import urllib.parse

import pytest
import requests

CLIENTS = 32
DURATION = 15.0      # seconds of mixed load at most
OPS_PER_CLIENT = 500  # and at most this many operations per client
SHARED_KEYS = ["shared-%02d" % i for i in range(40)]


class Model:
    """Per key, the acknowledged writes as (seq, value or None for a delete)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.writes = {}
        self.attempted = {}  # every value ever sent for a key (acknowledged or not)

    def attempt(self, key, value):
        with self.lock:
            self.attempted.setdefault(key, set()).add(value)

    def ack(self, key, seq, value):
        with self.lock:
            self.writes.setdefault(key, []).append((seq, value))

    def final(self):
        out = {}
        for k, ws in self.writes.items():
            seqs = [s for s, _ in ws]
            assert len(seqs) == len(set(seqs)), "two acknowledged writes of %r share a seq: %r" % (k, sorted(ws))
            seq, value = max(ws, key=lambda w: w[0])
            if value is not None:
                out[k] = value
        return out


def full_range(session, base):
    items = {}
    url = base + "/bulk/range"
    r = session.get(url, timeout=30)
    keys_seen = []
    while True:
        assert r.status_code == 200, r.text
        page = r.json()
        for i in page["items"]:
            items[i["key"]] = i["value"]
            keys_seen.append(i["key"])
        if page["next"] is None:
            break
        r = session.get(url + "?cursor=" + urllib.parse.quote(page["next"], safe=""), timeout=30)
    assert keys_seen == sorted(keys_seen) and len(keys_seen) == len(set(keys_seen))
    return items


def client_loop(cid, base, model, deadline, errors, counts):
    rng = random.Random(cid * 7919)
    s = requests.Session()
    own = ["c%02d-%02d" % (cid, i) for i in range(15)]
    neighbour = ["c%02d-%02d" % ((cid + 1) % CLIENTS, i) for i in range(15)]
    pool = SHARED_KEYS + own + neighbour  # shared by all, own, and a neighbour's (overlap by two)

    def fail(msg):
        errors.append("client %d: %s" % (cid, msg))

    try:
        for op in range(OPS_PER_CLIENT):
            if time.monotonic() > deadline:
                break
            x = rng.random()
            if x < 0.35:  # PUT (or POST)
                k = rng.choice(pool)
                v = "v-%d-%d-%s" % (cid, op, "x" * rng.randint(0, 40))
                model.attempt(k, v)
                if rng.random() < 0.5:
                    r = s.put(base + "/kv/" + k, data=v.encode(), timeout=30)
                else:
                    r = s.post(base + "/kv/" + k, data=v.encode(), timeout=30)
                if r.status_code != 200:
                    return fail("PUT %s: %d %s" % (k, r.status_code, r.text))
                seq = r.json()["seq"]
                if int(r.headers["X-Triekv-Seq"]) != seq:
                    return fail("X-Triekv-Seq %s != %d" % (r.headers["X-Triekv-Seq"], seq))
                model.ack(k, seq, v)
            elif x < 0.55:  # GET
                k = rng.choice(pool)
                r = s.get(base + "/kv/" + k, timeout=30)
                if r.status_code == 200:
                    with model.lock:
                        known = r.text in model.attempted.get(k, ())
                    if not known:
                        return fail("GET %s returned %r, a value never written to it" % (k, r.text[:80]))
                    if not r.headers.get("ETag", "").strip('"').isdigit():
                        return fail("GET %s: bad ETag %r" % (k, r.headers.get("ETag")))
                elif r.status_code != 404:
                    return fail("GET %s: %d %s" % (k, r.status_code, r.text))
            elif x < 0.65:  # DELETE
                k = rng.choice(pool)
                r = s.delete(base + "/kv/" + k, timeout=30)
                if r.status_code == 200:
                    model.ack(k, r.json()["seq"], None)
                elif r.status_code != 404:
                    return fail("DELETE %s: %d %s" % (k, r.status_code, r.text))
            elif x < 0.80:  # bulk write
                ks = rng.sample(pool, rng.randint(2, 8))
                vals = {k: "b-%d-%d-%s" % (cid, op, k) for k in ks}
                for k, v in vals.items():
                    model.attempt(k, v)
                r = s.post(base + "/bulk", json=vals, timeout=30)
                if r.status_code != 200 or r.json().get("count") != len(ks):
                    return fail("bulk: %d %s" % (r.status_code, r.text))
                seq = r.json()["seq"]
                for k, v in vals.items():
                    model.ack(k, seq, v)
            elif x < 0.88:  # bulk delete
                ks = rng.sample(pool, rng.randint(1, 5))
                r = s.post(base + "/bulk/delete", json={"keys": ks}, timeout=30)
                if r.status_code != 200:
                    return fail("bulk/delete: %d %s" % (r.status_code, r.text))
                body = r.json()
                if body["count"] != len(ks) or not 0 <= body["deleted"] <= len(ks):
                    return fail("bulk/delete counts: %r" % body)
                if body["deleted"] > 0:  # a batch that deleted nothing changed nothing
                    for k in ks:
                        model.ack(k, body["seq"], None)
            elif x < 0.94:  # bulk get
                ks = rng.sample(pool, rng.randint(1, 6))
                r = s.post(base + "/bulk/get", json={"keys": ks}, timeout=30)
                if r.status_code != 200:
                    return fail("bulk/get: %d %s" % (r.status_code, r.text))
                body = r.json()
                got = [i["key"] for i in body["items"]]
                if sorted(got + body["missing"]) != sorted(ks):
                    return fail("bulk/get answered other keys: %r for %r" % (body, ks))
                with model.lock:
                    for i in body["items"]:
                        if i["value"] not in model.attempted.get(i["key"], ()):
                            return fail("bulk/get %s: unknown value %r" % (i["key"], i["value"][:80]))
            else:  # range
                prefix = rng.choice(["shared-", "c%02d-" % cid, "c", "shared-1"])
                r = s.get(base + "/bulk/range", params={"prefix": prefix, "limit": rng.randint(1, 30)}, timeout=30)
                if r.status_code != 200:
                    return fail("range: %d %s" % (r.status_code, r.text))
                keys = [i["key"] for i in r.json()["items"]]
                if keys != sorted(keys) or len(set(keys)) != len(keys) or \
                        not all(k.startswith(prefix) for k in keys):
                    return fail("range %s: bad page %r" % (prefix, keys))
            counts[cid] += 1
    except Exception as e:  # noqa: any transport error is a failure
        fail("%s: %s" % (type(e).__name__, e))
    finally:
        s.close()


@pytest.mark.parametrize("args", [[], ["--max-page-size", "4096", "--cache-size", "1", "--fsync", "strict"]],
                         ids=["defaults", "small-pages-tiny-cache-strict"])
def test_32_clients_mixed_workload_match_model(server_factory, args):
    server = server_factory(args)
    base = server.url
    model = Model()
    errors = []
    counts = [0] * CLIENTS
    deadline = time.monotonic() + DURATION
    threads = [threading.Thread(target=client_loop, args=(i, base, model, deadline, errors, counts))
               for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DURATION + 60)
    assert not any(t.is_alive() for t in threads), "clients hung"
    assert not errors, "\n".join(errors[:20])
    assert sum(counts) >= CLIENTS * 20, "too little work done: %d ops" % sum(counts)
    expected = model.final()
    with requests.Session() as s:
        got = full_range(s, base)
        diff = {k: (got.get(k), expected.get(k)) for k in set(got) | set(expected) if got.get(k) != expected.get(k)}
        assert not diff, "%d keys differ from the model (server, model): %r" % (len(diff), dict(list(diff.items())[:10]))
        for k, v in list(expected.items())[:50]:
            r = s.get(base + "/kv/" + k, timeout=10)
            assert r.status_code == 200 and r.text == v
            seq = max(sq for sq, _ in model.writes[k])
            assert r.headers["ETag"] == '"%d"' % seq, "ETag is not the seq of the last acknowledged write"
        st = s.get(base + "/stats", timeout=10).json()
        assert st["keys"] == len(expected), "stats keys %d, model %d" % (st["keys"], len(expected))
        assert st["value_bytes"] == sum(len(v.encode()) for v in expected.values())
        all_seqs = [sq for ws in model.writes.values() for sq, _ in ws]
        assert st["seq"] >= max(all_seqs)
    assert server.health_ok()
    # and the same after a restart
    assert server.stop() == 0
    server.restart()
    with requests.Session() as s:
        assert full_range(s, server.url) == expected, "the data changed across a restart"


def test_compare_and_set_counter(server):
    base = server.url
    N_CLIENTS, PER_CLIENT = 16, 15
    successes = [0] * N_CLIENTS
    creates = []
    conflicts = []
    errors = []
    lock = threading.Lock()
    start = threading.Barrier(N_CLIENTS)

    def worker(i):
        s = requests.Session()
        try:
            start.wait()
            # everyone races to create the counter; exactly one may win
            r = s.put(base + "/kv/counter", data=b"0", headers={"If-None-Match": "*"}, timeout=30)
            if r.status_code == 200:
                with lock:
                    creates.append(i)
            elif r.status_code != 412:
                errors.append("create: %d %s" % (r.status_code, r.text))
                return
            done = 0
            tries = 0
            while done < PER_CLIENT and tries < 5000:
                tries += 1
                g = s.get(base + "/kv/counter", timeout=30)
                if g.status_code != 200:
                    errors.append("GET: %d %s" % (g.status_code, g.text))
                    return
                etag = g.headers["ETag"]
                n = int(g.text)
                p = s.put(base + "/kv/counter", data=str(n + 1).encode(), headers={"If-Match": etag}, timeout=30)
                if p.status_code == 200:
                    done += 1
                    if p.json()["seq"] <= int(etag.strip('"')):
                        errors.append("seq did not grow: %s -> %s" % (etag, p.json()["seq"]))
                elif p.status_code == 412:
                    with lock:
                        conflicts.append(1)
                else:
                    errors.append("PUT: %d %s" % (p.status_code, p.text))
                    return
            successes[i] = done
        except Exception as e:  # noqa
            errors.append("%s: %s" % (type(e).__name__, e))
        finally:
            s.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(N_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:10]
    assert len(creates) == 1, "If-None-Match: * let %d clients create the counter" % len(creates)
    total = sum(successes)
    assert total == N_CLIENTS * PER_CLIENT
    r = requests.get(base + "/kv/counter", timeout=10)
    assert int(r.text) == total, "counter %s after %d successful increments: lost updates" % (r.text, total)
    st = requests.get(base + "/stats", timeout=10).json()
    # every 412 answered (the racing creates included) is a precondition failure the engine counted
    assert st["storage"]["precondition_failures"] >= len(conflicts) + N_CLIENTS - 1, st["storage"]
