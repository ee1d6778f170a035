"""tests/cluster/test_basic.py - a main with one or two replicas: everything written on the main
reaches every replica byte for byte, with the same versions, in order; replicas refuse writes and
name their main; the replication figures of /stats are sane once caught up."""
import json
import random

import pytest

from .conftest import assert_same_data, b64, diff_summary, pkey, wait_converged, wait_until


def etag_of(node, key):
    r = node.get("/kv/" + pkey(key))
    assert r.status_code == 200, "%s GET %r: %d %s" % (node.name, key, r.status_code, r.text[:200])
    return r.headers.get("ETag"), r.content


def mixed_workload(main, rnd):
    """PUT, POST, DELETE, bulk writes and deletes with binary keys and values, conditional writes
    (met and not met). Returns the keys it expects to exist at the end, with their values."""
    expect = {}

    def ok(r, what):
        assert r.status_code == 200, "%s: %d %s" % (what, r.status_code, r.text[:300])
        assert r.headers.get("X-Triekv-Seq") == str(r.json()["seq"]), "%s: X-Triekv-Seq %r vs body %s" % (
            what, r.headers.get("X-Triekv-Seq"), r.text)
        return r.json()

    # single keys, text and binary (percent-encoded in the path)
    for i in range(60):
        k = ("t/%03d" % i).encode()
        v = ("value %d " % i).encode() * (1 + i % 5)
        ok(main.put("/kv/" + pkey(k), data=v), "PUT %r" % k)
        expect[k] = v
    for i in range(40):
        k = bytes([0, 255, i, 47, 32, 43]) + b"bin" + bytes([i % 7])
        v = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 300)))
        ok(main.post("/kv/" + pkey(k), data=v), "POST %r" % k)
        expect[k] = v
    # an empty value and a large one
    ok(main.put("/kv/empty", data=b""), "PUT empty")
    expect[b"empty"] = b""
    big = bytes(rnd.randrange(256) for _ in range(300 * 1024))
    ok(main.put("/kv/big", data=big), "PUT big")
    expect[b"big"] = big
    # deletes
    for i in range(0, 60, 3):
        k = ("t/%03d" % i).encode()
        j = ok(main.delete("/kv/" + pkey(k)), "DELETE %r" % k)
        assert j.get("deleted") is True
        del expect[k]
    r = main.delete("/kv/" + pkey(b"never-there"))
    assert r.status_code == 404, r.text
    # bulk writes, base64, binary keys and values
    for b in range(5):
        items = {}
        for i in range(200):
            k = bytes([b, 0xfe, 0x00]) + ("%04d" % i).encode() + bytes([rnd.randrange(256)])
            v = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 2000)))
            items[k] = v
        body = json.dumps({b64(k): b64(v) for k, v in items.items()})
        j = ok(main.post("/bulk?encoding=base64", data=body), "bulk %d" % b)
        assert j["count"] == len(items), j
        expect.update(items)
    # bulk delete: some existing keys (binary), some missing
    victims = [k for k in sorted(expect) if k[:1] in (b"\x01", b"\x03")][::4]
    body = json.dumps({"keys": [b64(k) for k in victims] + [b64(b"\x09missing")]})
    j = ok(main.post("/bulk/delete?encoding=base64", data=body), "bulk delete")
    assert j["deleted"] == len(victims), j
    for k in victims:
        del expect[k]
    # a bulk delete where nothing exists: no new batch expected, still 200
    body = json.dumps({"keys": [b64(b"\x09missing-a"), b64(b"\x09missing-b")]})
    ok(main.post("/bulk/delete?encoding=base64", data=body), "bulk delete of missing keys")
    # conditional writes
    k = b"cond"
    ok(main.put("/kv/cond", data=b"v1", headers={"If-None-Match": "*"}), "create-only")
    r = main.put("/kv/cond", data=b"nope", headers={"If-None-Match": "*"})
    assert r.status_code == 412, r.text
    etag, _ = etag_of(main, k)
    j = ok(main.put("/kv/cond", data=b"v2", headers={"If-Match": etag}), "If-Match met")
    r = main.put("/kv/cond", data=b"stale", headers={"If-Match": etag})
    assert r.status_code == 412, r.text
    ok(main.put("/kv/cond", data=b"v3", headers={"If-Match": "*"}), "If-Match * met")
    r = main.put("/kv/cond-missing", data=b"x", headers={"If-Match": "*"})
    assert r.status_code == 412, r.text
    expect[k] = b"v3"
    ok(main.put("/kv/cond-del", data=b"d"), "PUT cond-del")
    etag, _ = etag_of(main, b"cond-del")
    r = main.delete("/kv/cond-del", headers={"If-Match": '"1"'})
    assert r.status_code == 412, r.text
    ok(main.delete("/kv/cond-del", headers={"If-Match": etag}), "conditional delete")
    return expect


@pytest.mark.parametrize("nreplicas", [1, 2])
def test_replicas_get_everything(cluster, nreplicas):
    main, reps = cluster.simple(nreplicas)
    rnd = random.Random(1234 + nreplicas)
    expect = mixed_workload(main, rnd)

    wait_converged(main, reps, timeout=30, what="after the mixed workload")
    data = assert_same_data(main, reps)
    assert dict(data) == expect, "the main's key space is not what was written: " + diff_summary(
        sorted(expect.items()), data)
    # same versions (ETags) everywhere, for a sample of keys including binary ones
    for k in sorted(expect)[::17] + [b"cond", b"big", b"empty"]:
        want = etag_of(main, k)
        for r in reps:
            assert etag_of(r, k) == want, "%s: key %r differs (ETag/value)" % (r.name, k)
    # deleted keys are gone on the replicas too
    for r in reps:
        for k in (b"t/000", b"t/003", b"cond-del"):
            g = r.get("/kv/" + pkey(k))
            assert g.status_code == 404, "%s: deleted key %r answers %d" % (r.name, k, g.status_code)


@pytest.mark.parametrize("nreplicas", [1, 2])
def test_same_key_order(cluster, nreplicas):
    """The same key written 200 times in a row: every replica ends with the last value and the
    same version."""
    main, reps = cluster.simple(nreplicas)
    last = None
    for i in range(200):
        r = main.put("/kv/" + pkey(b"hot\x00key"), data=b"v%05d" % i)
        assert r.status_code == 200, r.text
        last = int(r.headers["X-Triekv-Seq"])
    wait_converged(main, reps, timeout=20)
    want = main.get("/kv/" + pkey(b"hot\x00key"))
    assert want.content == b"v00199"
    assert want.headers["ETag"] == '"%d"' % last
    for rep in reps:
        got = rep.get("/kv/" + pkey(b"hot\x00key"))
        assert got.status_code == 200, got.text
        assert (got.content, got.headers.get("ETag")) == (b"v00199", '"%d"' % last), rep.name


@pytest.mark.parametrize("nreplicas", [1, 2])
def test_replicas_refuse_writes(cluster, nreplicas):
    main, reps = cluster.simple(nreplicas)
    assert main.put("/kv/a", data=b"1").status_code == 200
    wait_converged(main, reps, timeout=20)
    for rep in reps:
        wait_until(lambda: rep.repl()["main_url"] == main.url, 10, "%s to learn the main's URL" % rep.name)
        attempts = [
            ("PUT", "/kv/a", b"2", {}),
            ("POST", "/kv/b", b"2", {}),
            ("DELETE", "/kv/a", None, {}),
            ("PUT", "/kv/a", b"3", {"If-Match": "*"}),
            ("POST", "/bulk", json.dumps({"x": "y"}), {}),
            ("POST", "/bulk?encoding=base64", json.dumps({b64(b"\x00"): b64(b"\x01")}), {}),
            ("POST", "/bulk/delete", json.dumps({"keys": ["a"]}), {}),
        ]
        for method, path, body, hdrs in attempts:
            r = rep.req(method, path, data=body, headers=hdrs)
            assert r.status_code == 403, "%s %s %s on %s: %d %s" % (method, path, body, rep.name, r.status_code,
                                                                     r.text[:200])
            j = r.json()
            assert j.get("error") == "read_only_replica", j
            assert main.url in j.get("message", ""), "the refusal does not name the main %s: %s" % (main.url, j)
        # nothing changed on the replica
        g = rep.get("/kv/a")
        assert g.status_code == 200 and g.content == b"1"
        assert rep.get("/kv/b").status_code == 404
        # reads still work, and /bulk/get (a POST) is a read
        r = rep.post("/bulk/get", data=json.dumps({"keys": ["a", "b"]}))
        assert r.status_code == 200, r.text
        assert r.json() == {"items": [{"key": "a", "value": "1"}], "missing": ["b"]}
    assert main.seq() == int(main.get("/health").json()["seq"])


@pytest.mark.parametrize("nreplicas", [1, 2])
def test_stats_when_caught_up(cluster, nreplicas):
    main, reps = cluster.simple(nreplicas)
    for i in range(50):
        assert main.put("/kv/k%d" % i, data=b"x" * 100).status_code == 200
    s = wait_converged(main, reps, timeout=20)
    seq = main.seq()
    assert seq >= 50

    def main_view_caught_up():
        rs = main.repl()
        return all(e["acked_seq"] == seq and e["lag_records"] == 0 for e in rs["replicas"]) and rs

    rs = wait_until(main_view_caught_up, 10, "the main's replica stats to show the replicas caught up")
    assert rs["role"] == "main" and rs["mode"] == "async", rs
    assert sorted(e["url"] for e in rs["replicas"]) == sorted(r.repl_url for r in reps), rs
    for e in rs["replicas"]:
        assert e["connected"] is True, e
        assert e["state"] == "streaming", e
        assert e["lag_records"] == 0 and e["lag_bytes"] == 0 and e["lag_seconds"] == 0, e
        assert e["snapshots"] == 0, e
        assert e["batches_sent"] >= 1 and e["bytes_sent"] > 50 * 100, e
        assert e["last_error"] in (None, ""), e

    for rep in reps:
        def replica_view():
            x = rep.repl()
            return x["main_seq"] == seq and x
        x = wait_until(replica_view, 10, "%s to hear the main's seq" % rep.name)
        assert x["role"] == "replica", x
        assert x["applied_seq"] == seq, x
        assert x["lag_records"] == 0 and x["staleness_seconds"] == 0, x
        assert x["resyncing"] is False and x["snapshots"] == 0 and x["refused"] == 0, x
        assert x["main_url"] == main.url, x
        assert 0 <= x["since_contact_seconds"] < 5, x
        st = rep.stats()
        assert st["seq"] == seq and st["keys"] == 50 and st["role"] == "replica", st

    # the same in /metrics
    m = main.get("/metrics").text
    for rep in reps:
        assert 'triekv_replica_lag_records{replica="%s"} 0' % rep.repl_url in m, m[-2000:]
        assert 'triekv_replica_connected{replica="%s"} 1' % rep.repl_url in m
