"""tests/proxy/test_proxy.py - triekv-proxy in front of two shards, each a main and a replica.

What must hold: every key lands on its shard (checked on the nodes directly); reads are served by
replicas, and fall back to the main; ranges and prefixes across the shard boundary come back
complete and ordered through paging; cross-shard batches are refused unless non-atomic is asked;
a shard whose main is down refuses its writes with 503 while its reads and the other shard go on;
the node's API (statuses, headers, preconditions, bodies) passes through unchanged."""
import json
import os
import random
import socket
import subprocess
import time
import urllib.parse

import pytest
import requests

from cluster.conftest import b64, pkey, read_all, unb64, wait_until

from .conftest import owner, wait_backend


def direct_get(node, key):
    return node.get("/kv/" + pkey(key))


def keys_around_boundary():
    """Keys on both sides of the boundary, at it, and binary ones."""
    ks = [b"a", b"k", b"k4", b"k4\xff\xff", b"k5", b"k5\x00", b"k50", b"k6", b"z", b"\x00", b"\xff\xfe",
          b"k4zzz", b"k5/x", b"hello world", b"\x00k5"]
    ks += [b"key%03d" % i for i in range(40)]
    return ks


def put_all(proxy, kv):
    for k, v in kv.items():
        r = proxy.put("/kv/" + pkey(k), data=v)
        assert r.status_code == 200, "PUT %r: %d %s" % (k, r.status_code, r.text)
        assert r.headers.get("X-Triekv-Seq") == str(r.json()["seq"])


# ---- routing ----------------------------------------------------------------------------------

def test_every_key_lands_on_its_shard(topo):
    t = topo.start()
    kv = {k: b"v:" + k for k in keys_around_boundary()}
    put_all(t.proxy, kv)
    for k, v in kv.items():
        mine, other = t.main(owner(k)), t.main("b" if owner(k) == "a" else "a")
        r = direct_get(mine, k)
        assert r.status_code == 200 and r.content == v, "%r missing on its shard's main %s" % (k, mine.name)
        assert direct_get(other, k).status_code == 404, "%r also on the other shard's main %s" % (k, other.name)
    # and reading back through the proxy gives every value
    t.converge()
    for k, v in kv.items():
        r = t.proxy.get("/kv/" + pkey(k))
        assert r.status_code == 200 and r.content == v, (k, r.status_code, r.text[:200])


def test_reads_are_served_by_replicas(topo):
    t = topo.start()
    kv = {b"apple": b"1", b"zebra": b"2"}
    put_all(t.proxy, kv)
    t.converge()
    gets0 = {(n, i): t.shards[n][i].stats()["gets"] for n in ("a", "b") for i in (0, 1)}
    for _ in range(30):
        for k, v in kv.items():
            r = t.proxy.get("/kv/" + pkey(k))
            assert r.status_code == 200 and r.content == v
            assert r.headers["X-Triekv-Backend"] == t.replica(owner(k)).url, r.headers
    gets1 = {(n, i): t.shards[n][i].stats()["gets"] for n in ("a", "b") for i in (0, 1)}
    for n in ("a", "b"):
        assert gets1[(n, 1)] - gets0[(n, 1)] >= 30, "replica %s served %d reads" % (n, gets1[(n, 1)] - gets0[(n, 1)])
        assert gets1[(n, 0)] == gets0[(n, 0)], "main %s served reads: %s -> %s" % (n, gets0[(n, 0)], gets1[(n, 0)])
    # the upstream connections are pooled and kept alive, not one per request
    for n in ("a", "b"):
        acc = t.replica(n).stats()["connections"]["accepted"]
        assert acc <= 12, "replica %s accepted %d connections for 30 reads and 2 health checks/s" % (n, acc)


def test_reads_fall_back_to_the_main_when_the_replica_is_down(topo):
    t = topo.start()
    put_all(t.proxy, {b"apple": b"red"})
    t.converge()
    t.replica("a").stop()
    # at once (before any health check), and after the proxy marked it down
    for _ in range(3):
        r = t.proxy.get("/kv/apple")
        assert r.status_code == 200 and r.content == b"red", r.text
        assert r.headers["X-Triekv-Backend"] == t.main("a").url
    wait_backend(t.proxy, t.replica("a").url, False)
    assert t.proxy.get("/kv/apple").content == b"red"
    t.replica("a").start()
    wait_backend(t.proxy, t.replica("a").url, True)
    wait_until(lambda: t.proxy.get("/kv/apple").headers["X-Triekv-Backend"] == t.replica("a").url, 10,
               "reads to go back to the replica")


def test_read_your_writes_through_a_stale_replica(topo):
    t = topo.start(replica_args=["--replication-read-wait-ms", "300"])
    put_all(t.proxy, {b"apple": b"old"})
    t.converge()
    t.relay("a").set_mode("blackhole")  # the replica stops hearing from its main
    r = t.proxy.put("/kv/apple", data=b"new")
    assert r.status_code == 200
    seq = r.headers["X-Triekv-Seq"]
    # without the header: the replica's (stale) answer is what a plain read gets
    assert t.proxy.get("/kv/apple").content == b"old"
    # with it: the replica cannot serve that seq, the main can
    r = t.proxy.get("/kv/apple", headers={"X-Triekv-Min-Seq": seq})
    assert r.status_code == 200 and r.content == b"new", (r.status_code, r.text)
    assert r.headers["X-Triekv-Backend"] == t.main("a").url
    # multi-key reads with the header go to the mains
    r = t.proxy.post("/bulk/get", data=json.dumps({"keys": ["apple", "zebra"]}), headers={"X-Triekv-Min-Seq": seq})
    assert r.status_code == 200 and r.json()["items"] == [{"key": "apple", "value": "new"}], r.text
    r = t.proxy.get("/bulk/range?prefix=app", headers={"X-Triekv-Min-Seq": seq})
    assert r.json()["items"] == [{"key": "apple", "value": "new"}], r.text
    t.relay("a").set_mode("pass")


# ---- ranges -----------------------------------------------------------------------------------

def page_all(proxy, query, limit):
    """Every item of a range through the proxy, page by page; checks each page's size."""
    items, cursor, pages = [], None, 0
    for _ in range(10000):
        q = query + "&limit=%d" % limit + ("&cursor=" + urllib.parse.quote(cursor) if cursor else "")
        r = proxy.get("/bulk/range?" + q.lstrip("&"))
        assert r.status_code == 200, r.text
        j = r.json()
        assert len(j["items"]) <= limit
        items += j["items"]
        pages += 1
        cursor = j["next"]
        if cursor is None:
            return items, pages
    pytest.fail("more than 10000 pages")


def test_ranges_across_the_boundary_page_completely_and_in_order(topo):
    t = topo.start()
    rnd = random.Random(7)
    kv = {}
    for i in range(400):
        k = b"k%d%03d" % (rnd.randrange(10), i)
        kv[k] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 40)))
    for k in keys_around_boundary():
        kv[k] = b"x" + k
    # bulk writes per shard (atomic within a shard)
    for shard in ("a", "b"):
        part = {b64(k): b64(v) for k, v in kv.items() if owner(k) == shard}
        r = t.proxy.post("/bulk?encoding=base64", data=json.dumps(part))
        assert r.status_code == 200 and r.json()["count"] == len(part), r.text
    t.converge()
    want = sorted(kv.items())
    # the whole key space, in several page sizes
    for limit in (1, 7, 100, 1000):
        items, pages = page_all(t.proxy, "encoding=base64", limit)
        got = [(unb64(i["key"]), unb64(i["value"])) for i in items]
        assert got == want, "limit %d: %d items vs %d" % (limit, len(got), len(want))
    # a range across the boundary, and a prefix across it
    for query, pred in (("start_key=k3&end_key=k7", lambda k: b"k3" <= k < b"k7"),
                        ("prefix=k", lambda k: k.startswith(b"k")),
                        ("prefix=k5", lambda k: k.startswith(b"k5")),
                        ("start_key=k4%ff&end_key=k5%00%01", lambda k: b"k4\xff" <= k < b"k5\x00\x01")):
        items, _ = page_all(t.proxy, query + "&encoding=base64&keys_only=true", 13)
        got = [unb64(i["key"]) for i in items]
        assert got == sorted(k for k in kv if pred(k)), query
        assert all("value" not in i for i in items)
    # the same through the nodes' own pages: the proxy's content is the union of the shards'
    union = sorted(read_all(t.main("a")) + read_all(t.main("b")))
    assert union == want


def test_range_cursors_are_the_nodes_format(topo):
    t = topo.start()
    put_all(t.proxy, {b"k4%02d" % i: b"v" for i in range(10)})
    put_all(t.proxy, {b"k5%02d" % i: b"v" for i in range(10)})
    t.converge()
    r = t.proxy.get("/bulk/range?limit=15&keys_only=true")
    j = r.json()
    assert [i["key"] for i in j["items"]][-1] == "k504"
    # a cursor with another range is refused, a damaged one too
    assert t.proxy.get("/bulk/range?prefix=zz&cursor=" + j["next"]).json()["error"] == "bad_cursor"
    assert t.proxy.get("/bulk/range?cursor=1" + j["next"][1:-2] + "00").json()["error"] == "bad_cursor"
    # the proxy's cursor continues on shard b's own node as well
    r = t.main("b").get("/bulk/range?keys_only=true&cursor=" + j["next"])
    assert [i["key"] for i in r.json()["items"]] == ["k5%02d" % i for i in range(5, 10)]
    # text output refuses bytes that are not UTF-8, as a node does
    t.proxy.put("/kv/" + pkey(b"k9\xff"), data=b"v")
    t.converge()
    r = t.proxy.get("/bulk/range?start_key=k9")
    assert r.status_code == 400 and r.json()["error"] == "not_utf8"


# ---- batches ----------------------------------------------------------------------------------

def test_cross_shard_batches_refused_unless_non_atomic(topo):
    t = topo.start()
    body = {"apple": "1", "banana": "2", "zebra": "3"}
    r = t.proxy.post("/bulk", data=json.dumps(body))
    assert r.status_code == 409, r.text
    j = r.json()
    assert j["error"] == "cross_shard" and "'a'" in j["message"] and "'b'" in j["message"], j
    assert {s["shard"]: s["keys"] for s in j["shards"]} == {"a": 2, "b": 1}
    for k in body:
        assert direct_get(t.main(owner(k)), k).status_code == 404, "%s was written by a refused batch" % k
    # inside one shard: atomic, forwarded as is
    r = t.proxy.post("/bulk", data=json.dumps({"apple": "1", "banana": "2"}))
    assert r.status_code == 200 and r.json()["count"] == 2 and "seq" in r.json(), r.text
    # across shards, non-atomic: each shard's part applied, each outcome reported
    r = t.proxy.post("/bulk?atomic=false", data=json.dumps(body))
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["atomic"] is False and j["count"] == 3 and j["parts_failed"] == 0
    assert sorted((p["shard"], p["keys"], p["status"]) for p in j["parts"]) == [("a", 2, 200), ("b", 1, 200)]
    for k, v in body.items():
        assert direct_get(t.main(owner(k)), k).content == v.encode()
    # deletes likewise
    r = t.proxy.post("/bulk/delete", data=json.dumps({"keys": ["apple", "zebra", "nope"]}))
    assert r.status_code == 409 and r.json()["error"] == "cross_shard"
    r = t.proxy.post("/bulk/delete?atomic=false", data=json.dumps({"keys": ["apple", "zebra", "nope"]}))
    assert r.status_code == 200 and r.json()["deleted"] == 2, r.text
    assert direct_get(t.main("a"), "apple").status_code == 404
    assert direct_get(t.main("b"), "zebra").status_code == 404
    # a bad item anywhere refuses the whole batch before any shard sees it, atomic or not
    for q in ("", "?atomic=false"):
        r = t.proxy.post("/bulk" + q, data=json.dumps({"cherry": "1", "zz": 5}))
        assert r.status_code == 400, r.text
        r = t.proxy.post("/bulk?encoding=base64" + q.replace("?", "&"),
                         data=json.dumps({b64("cherry"): b64("1"), b64("zz"): "%%%"}))
        assert r.status_code == 400 and r.json()["error"] == "bad_base64", r.text
        r = t.proxy.post("/bulk/delete" + q, data=json.dumps({"keys": ["cherry", ""]}))
        assert r.status_code == 400 and r.json()["error"] == "key_empty", r.text
    assert direct_get(t.main("a"), "cherry").status_code == 404
    assert t.proxy.post("/bulk?atomic=maybe", data="{}").status_code == 400


def test_bulk_get_across_shards_keeps_request_order(topo):
    t = topo.start()
    kv = {b"\x00a": b"\xff", b"apple": b"1", b"k4": b"2", b"k5": b"a\x00b", b"zebra": b"\xff\x00"}
    put_all(t.proxy, kv)
    t.converge()
    ask = [b"zebra", b"nope1", b"k5", b"\x00a", b"k4", b"nope2", b"apple", b"k5"]
    r = t.proxy.post("/bulk/get?encoding=base64", data=json.dumps({"keys": [b64(k) for k in ask]}))
    assert r.status_code == 200, r.text
    j = r.json()
    assert [(unb64(i["key"]), unb64(i["value"])) for i in j["items"]] == [(k, kv[k]) for k in ask if k in kv]
    assert [unb64(k) for k in j["missing"]] == [b"nope1", b"nope2"]
    # text output across shards, a NUL inside a value included
    r = t.proxy.post("/bulk/get", data=json.dumps({"keys": ["k5", "k4"]}))
    assert r.json() == {"items": [{"key": "k5", "value": "a\x00b"}, {"key": "k4", "value": "2"}], "missing": []}
    # inside one shard it is forwarded as is
    r = t.proxy.post("/bulk/get", data=json.dumps({"keys": ["apple", "k4"]}))
    assert r.json() == {"items": [{"key": "apple", "value": "1"}, {"key": "k4", "value": "2"}], "missing": []}
    # a shard's refusal is the answer (text output of bytes that are not UTF-8)
    r = t.proxy.post("/bulk/get", data=json.dumps({"keys": ["apple", "zebra"]}))
    assert r.status_code == 400 and r.json()["error"] == "not_utf8", r.text


# ---- a shard's main down ------------------------------------------------------------------------

def test_main_down_refuses_its_writes_while_reads_and_the_other_shard_go_on(topo):
    t = topo.start()
    put_all(t.proxy, {b"apple": b"red", b"zebra": b"striped"})
    t.converge()
    t.main("a").stop()
    wait_backend(t.proxy, t.main("a").url, False)
    r = t.proxy.put("/kv/apple", data=b"green")
    assert r.status_code == 503, r.text
    j = r.json()
    assert j["error"] == "main_unavailable" and "shard 'a'" in j["message"] and t.main("a").url in j["message"], j
    assert t.proxy.post("/bulk", data=json.dumps({"avocado": "1"})).status_code == 503
    assert t.proxy.delete("/kv/apple").status_code == 503
    # reads of its keys go on, from the replica
    r = t.proxy.get("/kv/apple")
    assert r.status_code == 200 and r.content == b"red"
    # the other shard is untouched
    assert t.proxy.put("/kv/zebra", data=b"plain").status_code == 200
    assert t.proxy.get("/kv/zebra", headers={"X-Triekv-Min-Seq": "2"}).content == b"plain"
    # a non-atomic batch reports the part that could not be applied
    r = t.proxy.post("/bulk?atomic=false", data=json.dumps({"avocado": "1", "zucchini": "2"}))
    assert r.status_code == 207, r.text
    parts = {p["shard"]: p for p in r.json()["parts"]}
    assert parts["a"]["status"] == 503 and parts["b"]["status"] == 200
    assert direct_get(t.main("b"), "zucchini").content == b"2"
    h = t.proxy.get("/health").json()
    assert h["shards_writable"] == 1 and h["shards_readable"] == 2
    # back up: writes go through again
    t.main("a").start()
    wait_backend(t.proxy, t.main("a").url, True)
    assert t.proxy.put("/kv/apple", data=b"green").status_code == 200


def test_a_shard_with_nothing_up_answers_503(topo):
    t = topo.start()
    t.main("a").stop()
    t.replica("a").stop()
    r = t.proxy.get("/kv/apple")
    assert r.status_code == 503 and r.json()["error"] in ("shard_unavailable", "main_unavailable"), r.text
    assert t.proxy.get("/kv/zebra").status_code == 404  # shard b still answers
    r = t.proxy.get("/bulk/range")
    assert r.status_code == 503 and "shard 'a'" in r.json()["message"], r.text


# ---- the node's API, unchanged ------------------------------------------------------------------

def test_api_passes_through_unchanged(topo):
    t = topo.start()
    p = t.proxy
    r = p.put("/kv/apple", data=b"one", headers={"If-None-Match": "*"})
    assert r.status_code == 200
    etag = '"%s"' % r.json()["seq"]
    r = p.put("/kv/apple", data=b"two", headers={"If-None-Match": "*"})
    assert r.status_code == 412 and r.json()["error"] == "precondition_failed"
    assert p.put("/kv/apple", data=b"two", headers={"If-Match": '"999"'}).status_code == 412
    r = p.put("/kv/apple", data=b"two", headers={"If-Match": etag})
    assert r.status_code == 200
    t.converge()
    r = p.get("/kv/apple")
    assert r.content == b"two" and r.headers["ETag"] == '"%s"' % r.headers["ETag"].strip('"')
    assert r.headers["Content-Type"] == "application/octet-stream"
    r = p.req("HEAD", "/kv/apple")
    assert r.status_code == 200 and r.content == b"" and r.headers["Content-Length"] == "3"
    assert p.get("/kv/apple", headers={"If-None-Match": r.headers["ETag"]}).status_code == 304
    r = p.delete("/kv/nope")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert p.delete("/kv/apple").json()["deleted"] is True
    # an empty value, and a large binary one
    assert p.put("/kv/empty", data=b"").status_code == 200
    big = bytes(random.Random(1).randrange(256) for _ in range(3 << 20))
    assert p.put("/kv/zbig", data=big).status_code == 200
    t.converge()
    assert p.get("/kv/empty").content == b""
    assert p.get("/kv/zbig").content == big
    # the node's own limits come back as it says them
    r = p.req("PATCH", "/kv/apple")
    assert r.status_code == 405 and "GET" in r.headers["Allow"]
    assert p.get("/kv/").json()["error"] == "key_empty"
    assert p.get("/kv/" + "x" * 2000).json()["error"] == "key_too_long"
    assert p.get("/nope").status_code == 404 and p.get("/nope").json()["error"] == "not_found"
    assert p.get("/bulk/range?start_key=b&end_key=a").json()["error"] == "bad_range"
    assert p.get("/bulk/range?limit=0").json()["error"] == "bad_limit"
    assert p.get("/bulk/range?bogus=1").status_code == 400
    assert p.post("/bulk", data="{nope").json()["error"] == "bad_json"
    assert p.post("/bulk/get", data=json.dumps({"keys": "x"})).status_code == 400
    assert p.req("GET", "/bulk").status_code == 405


def test_large_value_to_a_slow_client(topo):
    """The proxy streams a value to a client slower than the backend, without holding it whole."""
    t = topo.start()
    big = bytes(random.Random(2).randrange(256) for _ in range(6 << 20))
    assert t.proxy.put("/kv/zslow", data=big).status_code == 200
    t.converge()
    s = socket.create_connection(("127.0.0.1", t.proxy.port), timeout=20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.sendall(b"GET /kv/zslow HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if body and len(body) >= len(big):
            break
        time.sleep(0.002)
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head[:200]
    assert body == big


# ---- observability --------------------------------------------------------------------------------

def test_stats_metrics_and_health(topo):
    t = topo.start()
    put_all(t.proxy, {b"apple": b"1", b"banana": b"2", b"zebra": b"3"})
    t.converge()
    t.proxy.get("/kv/apple")
    s = t.proxy.stats()
    assert s["role"] == "proxy" and [x["name"] for x in s["shards"]] == ["a", "b"]
    assert s["shards"][0]["end"] == "k5" and s["shards"][1]["end"] is None
    for sh in s["shards"]:
        for b in [sh["main"]] + sh["replicas"]:
            assert b["up"] is True and b["checks"] >= 1 and b["reported_role"] == b["role"], b
    assert s["shards"][0]["main"]["responses"]["2xx"] >= 2
    assert s["requests"]["kv_put"] == 3 and s["requests"]["kv_get"] >= 1
    c = t.proxy.stats(cluster=True)["cluster"]
    assert c["nodes_answered"] == 4 and c["keys"] == 3, c
    assert {(n["shard"], n["role"]) for n in c["node_stats"]} == {("a", "main"), ("a", "replica"),
                                                                  ("b", "main"), ("b", "replica")}
    m = t.proxy.get("/metrics").text
    assert 'triekv_proxy_backend_up{shard="a",role="main",url="%s"} 1' % t.main("a").url in m
    assert 'triekv_proxy_http_requests_total{endpoint="kv_put",code="2xx"} 3' in m
    h = t.proxy.get("/health").json()
    assert h == {"status": "ok", "role": "proxy", "shards": 2, "shards_writable": 2, "shards_readable": 2,
                 "backends": 4, "backends_up": 4}
    # a node that is down shows in the cluster view, and the rest still adds up
    t.replica("b").stop()
    c = t.proxy.stats(cluster=True)["cluster"]
    assert c["nodes_answered"] == 3 and c["keys"] == 3
    down = [n for n in c["node_stats"] if "error" in n]
    assert [n["url"] for n in down] == [t.replica("b").url]
    assert t.proxy.get("/stats?cluster=maybe").status_code == 400


# ---- the shard map ------------------------------------------------------------------------------

GOOD_MAIN, GOOD_MAIN2 = "http://127.0.0.1:1", "http://127.0.0.1:2"


def shard(name, start, end, main, replicas=()):
    return {"name": name, "start": start, "end": end, "main": main, "replicas": list(replicas)}


BAD_MAPS = [
    ("a gap", [shard("a", "", "k", GOOD_MAIN), shard("b", "m", None, GOOD_MAIN2)],
     'keys from "k" to "m" belong to no shard'),
    ("an overlap", [shard("a", "", "m", GOOD_MAIN), shard("b", "k", None, GOOD_MAIN2)],
     "shards 'a' and 'b' overlap"),
    ("a last shard with an end", [shard("a", "", "m", GOOD_MAIN), shard("b", "m", "z", GOOD_MAIN2)],
     "must have no end"),
    ("a first shard not at the start", [shard("a", "b", "m", GOOD_MAIN), shard("b", "m", None, GOOD_MAIN2)],
     "the first shard ('a') must start at"),
    ("two open-ended shards", [shard("a", "", None, GOOD_MAIN), shard("b", "m", None, GOOD_MAIN2)],
     "shards 'a' and 'b' overlap"),
    ("an empty range", [shard("a", "", "m", GOOD_MAIN), shard("b", "m", "m", GOOD_MAIN2),
                        shard("c", "m", None, "http://127.0.0.1:3")], "shard 'b' is empty"),
    ("the same start twice", [shard("a", "", "m", GOOD_MAIN), shard("b", "", None, GOOD_MAIN2)], "overlap"),
    ("a duplicate name", [shard("a", "", "m", GOOD_MAIN), shard("a", "m", None, GOOD_MAIN2)],
     "two shards are named 'a'"),
    ("a backend twice", [shard("a", "", "m", GOOD_MAIN), shard("b", "m", None, GOOD_MAIN2, [GOOD_MAIN])],
     "listed twice"),
    ("a bad URL", [shard("a", "", None, "https://x:1")], "must be http://host:port"),
    ("a URL with a path", [shard("a", "", None, "http://127.0.0.1:1/kv")], "must be http://host:port"),
    ("a bad escape", [shard("a", "", "%zz", GOOD_MAIN), shard("b", "%zz", None, GOOD_MAIN2)],
     "malformed %-escape"),
    ("an unknown key", [dict(shard("a", "", None, GOOD_MAIN), weight=2)], "unknown key 'weight'"),
    ("no shards", [], "1 to 256 shards"),
    ("a shard without a main", [{"name": "a", "start": "", "end": None}], "'main' must be"),
]


@pytest.mark.parametrize("what,shards,message", BAD_MAPS, ids=[b[0] for b in BAD_MAPS])
def test_bad_shard_maps_are_refused_at_start(tmp_path, proxy_bin, what, shards, message):
    path = tmp_path / "proxy.json"
    path.write_text(json.dumps({"port": 1, "bind": "127.0.0.1", "shards": shards}))
    for extra in ([], ["--check"]):
        r = subprocess.run([proxy_bin, "--config", str(path)] + extra, capture_output=True, timeout=20, text=True)
        assert r.returncode == 1, "%s: exit %d, %s" % (what, r.returncode, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("triekv-proxy: config: "), r.stderr
        assert message in lines[0], "%s: %s" % (what, lines[0])


def test_config_mistakes_and_check(tmp_path, proxy_bin):
    good = [shard("a", "", "m", GOOD_MAIN), shard("b", "m", None, GOOD_MAIN2, ["http://127.0.0.1:3/"])]
    path = tmp_path / "proxy.json"
    path.write_text(json.dumps({"port": 1, "shards": good}))
    r = subprocess.run([proxy_bin, "--config", str(path), "--check"], capture_output=True, timeout=20, text=True)
    assert r.returncode == 0 and "2 shards, 3 backends" in r.stdout, r.stdout + r.stderr
    cases = [({"shards": good, "port": 70000}, "'port'"), ({"shards": good, "colour": 1}, "unknown key 'colour'"),
             ({"port": 1}, "'shards' is missing"), ({"shards": "[", "port": 1}, "'shards'"),
             ({"shards": good, "bind": "localhost"}, "'bind' must be an IPv4 or IPv6 address"),
             ({"shards": good, "health_check_timeout_ms": 5000, "health_check_interval_ms": 1000},
              "health_check_timeout_ms")]
    for cfg, message in cases:
        path.write_text(json.dumps(cfg))
        r = subprocess.run([proxy_bin, "--config", str(path)], capture_output=True, timeout=20, text=True)
        assert r.returncode == 1 and message in r.stderr, (cfg, r.returncode, r.stderr)
    # the shard map from the environment, as containers give it
    env = dict(os.environ, TRIEKV_PROXY_SHARDS=json.dumps(good), TRIEKV_PROXY_PORT="1")
    r = subprocess.run([proxy_bin, "--check"], capture_output=True, timeout=20, text=True, env=env)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([proxy_bin, "--bogus", "1"], capture_output=True, timeout=20, text=True, env=env)
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr
    # a port in use stops start-up
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        env["TRIEKV_PROXY_PORT"] = str(s.getsockname()[1])
        env["TRIEKV_PROXY_BIND"] = "127.0.0.1"
        r = subprocess.run([proxy_bin], capture_output=True, timeout=20, text=True, env=env)
        assert r.returncode == 1 and "cannot listen" in r.stderr, r.stderr
