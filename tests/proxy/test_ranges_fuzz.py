"""tests/proxy/test_ranges_fuzz.py - GET /bulk/range through triekv-proxy against the union of the
shards, with random ranges, limits, encodings and cursors.

What must hold: paging a range through the proxy returns exactly the keys of both shards' mains in
that range, in byte order, each once, whatever the limit, the bounds (the boundary "k5", keys with
the prefix "k5" or "k4\\xff", binary keys, empty and inverted ranges) and the encoding; a page in
text encoding fails with not_utf8 exactly when it would hold bytes that are not UTF-8; cursors are
idempotent, tied to their range, and interchangeable between the proxy and the nodes; the last
page says so (next is null) as a node's does; a page the proxy cannot assemble within
max_response_bytes is a 413, not a shard outage."""
import json
import os
import random
import struct
import urllib.parse

import pytest

from cluster.conftest import b64, pkey, read_all, unb64

from .conftest import owner

SPECIAL = [b"k5", b"k4\xff", b"k4\xff\xff", b"k4\xff\xff\xff", b"k5\x00", b"k5\x00\x00", b"k50", b"k4", b"k49",
           b"k", b"k6", b"\x00", b"\x00\x00", b"\xff", b"\xff\xff", b"k5\xff\xff", b"k4\xfe\xff", b"a", b"z"]
PREFIXES = [b"", b"k", b"k4", b"k4\xff", b"k5", b"k5\x00", b"k50", b"k6", b"\xff", b"\x00", b"t", b"j"]


def make_data(rnd, n=260):
    kv = {}
    for k in SPECIAL:
        kv[k] = b"special:" + k
    while len(kv) < n:
        p = rnd.choice(PREFIXES)
        if p in (b"t", b"j"):  # text-safe keys and values, on both sides of the boundary
            k = p + "/ключ-%d-é".encode() % rnd.randrange(1000)
            kv[k] = ("значение %d ✓" % rnd.randrange(10 ** 6)).encode()
        else:
            k = p + bytes(rnd.randrange(256) for _ in range(rnd.randrange(0 if p else 1, 5)))
            if not k:
                continue
            kv[k] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 24)))
    return kv


def load(t, kv):
    for shard in ("a", "b"):
        part = {b64(k): b64(v) for k, v in kv.items() if owner(k) == shard}
        r = t.proxy.post("/bulk?encoding=base64", data=json.dumps(part))
        assert r.status_code == 200 and r.json()["count"] == len(part), r.text
    t.converge()
    union = sorted(read_all(t.main("a")) + read_all(t.main("b")))
    assert union == sorted(kv.items()), "the shards do not hold what was written"
    for k, _ in read_all(t.main("a")):
        assert owner(k) == "a", k
    return union


def utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def query_string(params):
    return "&".join("%s=%s" % (k, v if k in ("limit", "keys_only", "encoding", "cursor") else pkey(v))
                    for k, v in params)


def page_through(proxy, params, max_pages=2000):
    """Pages of a range through the proxy: a list of (status, json) until next is null or an error."""
    pages, cursor = [], None
    for _ in range(max_pages):
        q = query_string(params) + ("&cursor=" + urllib.parse.quote(cursor, safe="") if cursor else "")
        r = proxy.get("/bulk/range?" + q.lstrip("&"))
        pages.append((r.status_code, r.json()))
        if r.status_code != 200:
            return pages
        cursor = r.json()["next"]
        if cursor is None:
            return pages
    pytest.fail("more than %d pages" % max_pages)


def expected_items(union, start=None, end=None, prefix=None):
    out = []
    for k, v in union:
        if prefix is not None and not k.startswith(prefix):
            continue
        if start is not None and k < start:
            continue
        if end is not None and k >= end:
            continue
        out.append((k, v))
    return out


def random_bound(rnd, keys):
    c = rnd.random()
    if c < 0.35:
        return rnd.choice(keys)
    if c < 0.6:
        return rnd.choice(SPECIAL)
    if c < 0.8:
        return rnd.choice(PREFIXES[1:]) + bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 3)))
    return bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 4)))


def test_random_ranges_page_exactly_the_union_of_the_shards(topo):
    t = topo.start()
    rnd = random.Random(20261121)
    kv = make_data(rnd)
    union = load(t, kv)
    keys = [k for k, _ in union]
    checked = 0
    seen = {"multi_page_across": 0, "not_utf8": 0, "text_ok": 0, "empty": 0, "inverted": 0}
    for i in range(70):
        kind = rnd.choice(["start_end", "start_end", "start", "end", "prefix", "prefix", "all", "equal"])
        params, start, end, prefix = [], None, None, None
        if kind in ("start_end", "start"):
            start = random_bound(rnd, keys)
        if kind in ("start_end", "end"):
            end = random_bound(rnd, keys)
        if kind == "equal":
            start = end = random_bound(rnd, keys)
        if kind == "prefix":
            prefix = rnd.choice(PREFIXES + [random_bound(rnd, keys)[:2]])
        if start is not None:
            params.append(("start_key", start))
        if end is not None:
            params.append(("end_key", end))
        if prefix is not None:
            params.append(("prefix", prefix))
        limit = rnd.choice([1, 2, 3, 7, 13, 50, 1000])
        params.append(("limit", str(limit)))
        keys_only = rnd.random() < 0.3
        if keys_only:
            params.append(("keys_only", "true"))
        text = rnd.random() < 0.3
        if not text:
            params.append(("encoding", "base64"))
        elif rnd.random() < 0.5:  # mostly text-safe ranges, so text pages are checked too, not only refused
            params = [x for x in params if x[0] not in ("start_key", "end_key", "prefix")]
            start, end, prefix = rnd.choice([(None, None, b"j/"), (None, None, b"t/"), (b"t", b"u", None),
                                             (b"j", b"k", None), (b"t/", None, None)])
            params += [(n, v) for n, v in (("start_key", start), ("end_key", end), ("prefix", prefix)) if v is not None]
        rnd.shuffle(params)
        what = "query %d: %s" % (i, query_string(params))
        if start is not None and end is not None and start > end:
            r = t.proxy.get("/bulk/range?" + query_string(params))
            assert r.status_code == 400 and r.json()["error"] == "bad_range", what
            n = t.main(owner(start)).get("/bulk/range?" + query_string(params))
            assert n.status_code == 400 and n.json()["error"] == "bad_range", what
            seen["inverted"] += 1
            continue
        want = expected_items(union, start, end, prefix)
        pages = page_through(t.proxy, params)
        got = []
        for p_i, (status, j) in enumerate(pages):
            chunk = want[p_i * limit:(p_i + 1) * limit]
            bad = text and not all(utf8(k) and (keys_only or utf8(v)) for k, v in chunk)
            if bad:
                assert status == 400 and j["error"] == "not_utf8", "%s, page %d: %s" % (what, p_i, j)
                seen["not_utf8"] += 1
                break
            assert status == 200, "%s, page %d: %s" % (what, p_i, j)
            items = j["items"]
            assert len(items) <= limit, what
            if j["next"] is not None:
                assert len(items) == limit, "%s: page %d has %d items and a next" % (what, p_i, len(items))
            for it in items:
                k = it["key"].encode() if text else unb64(it["key"])
                if keys_only:
                    assert "value" not in it, what
                    got.append((k, None))
                else:
                    got.append((k, it["value"].encode() if text else unb64(it["value"])))
        else:
            assert got == [(k, None if keys_only else v) for k, v in want], \
                "%s: %d items through the proxy, %d in the shards" % (what, len(got), len(want))
            assert len(pages) == max(1, -(-len(want) // limit)), \
                "%s: %d pages for %d items (the last page must have next null)" % (what, len(pages), len(want))
            seen["text_ok"] += text and bool(want)
            seen["empty"] += not want
            seen["multi_page_across"] += len(pages) > 1 and owner(want[0][0]) != owner(want[-1][0])
        checked += 1
    # the generator covers what matters (else this test proves little)
    assert checked >= 50 and all(n >= 2 for n in seen.values()), seen


def test_range_edges_empty_equal_and_inverted(topo):
    t = topo.start()
    union = load(t, make_data(random.Random(5), n=80))
    p = t.proxy
    for q in ("start_key=k5&end_key=k5", "start_key=a&end_key=a", "start_key=%ff%ff%ff&end_key=%ff%ff%ff",
              "prefix=nothing-here", "start_key=k5%00%00%00&end_key=k5%00%00%00%00", "start_key=%ff%ff%ff%ff"):
        for extra in ("", "&encoding=base64", "&keys_only=true&limit=1"):
            r = p.get("/bulk/range?" + q + extra)
            assert r.status_code == 200 and r.json() == {"items": [], "next": None}, (q, extra, r.text)
    for q in ("start_key=k5&end_key=k4%ff", "start_key=b&end_key=a", "start_key=k5%00&end_key=k5",
              "start_key=%01&end_key=%00"):
        r = p.get("/bulk/range?" + q)
        assert r.status_code == 400 and r.json()["error"] == "bad_range", (q, r.text)
    # the boundary key itself, and ranges that end or start exactly at it
    r = p.get("/bulk/range?encoding=base64&start_key=k5&end_key=k5%00&keys_only=true")
    assert [unb64(i["key"]) for i in r.json()["items"]] == [b"k5"], r.text
    r = p.get("/bulk/range?encoding=base64&end_key=k5&keys_only=true&limit=1000")
    assert [unb64(i["key"]) for i in r.json()["items"]] == [k for k, _ in union if k < b"k5"]
    r = p.get("/bulk/range?encoding=base64&start_key=k5&keys_only=true&limit=1000")
    assert [unb64(i["key"]) for i in r.json()["items"]] == [k for k, _ in union if k >= b"k5"]
    r = p.get("/bulk/range?encoding=base64&prefix=k4%ff&keys_only=true")
    assert [unb64(i["key"]) for i in r.json()["items"]] == [k for k, _ in union if k.startswith(b"k4\xff")]
    r = p.get("/bulk/range?encoding=base64&prefix=%ff%ff&keys_only=true")  # a prefix with no upper bound
    assert [unb64(i["key"]) for i in r.json()["items"]] == [k for k, _ in union if k.startswith(b"\xff\xff")]
    # "+" is a space in query strings, %2B a plus (as on a node)
    assert p.put("/kv/" + pkey(b"k5 plus"), data=b"1").status_code == 200
    assert p.put("/kv/" + pkey(b"k5+plus"), data=b"2").status_code == 200
    r = p.get("/bulk/range?prefix=k5+plus", headers={"X-Triekv-Min-Seq": "1"})
    assert r.json()["items"] == [{"key": "k5 plus", "value": "1"}], r.text
    r = p.get("/bulk/range?prefix=k5%2Bplus", headers={"X-Triekv-Min-Seq": "1"})
    assert r.json()["items"] == [{"key": "k5+plus", "value": "2"}], r.text


def page1(proxy_or_node, q):
    r = proxy_or_node.get("/bulk/range?" + q)
    assert r.status_code == 200, r.text
    return r.json()


def test_cursors_idempotent_tied_to_their_range_and_shared_with_nodes(topo):
    t = topo.start()
    kv = {b"k4%02d" % i: b"a%d" % i for i in range(12)}
    kv.update({b"k5%02d" % i: b"b%d" % i for i in range(12)})
    kv.update({b"k4\xff" + bytes([i]): b"x" for i in (0, 7, 255)})
    union = load(t, kv)
    p = t.proxy
    q = "start_key=k4&end_key=k6&limit=7&encoding=base64"
    first = page1(p, q)
    c = first["next"]
    assert c is not None
    # the same cursor twice: the same page (nothing written meanwhile)
    a = page1(p, "cursor=" + c + "&limit=7&encoding=base64")
    b = page1(p, "cursor=" + c + "&limit=7&encoding=base64")
    assert a == b and a["items"], (a, b)
    # with its own range repeated: fine; with another range (or a prefix for it): bad_cursor
    assert page1(p, q + "&cursor=" + c) == a
    for other in ("start_key=k4&end_key=k7", "start_key=k3&end_key=k6", "prefix=k4", "start_key=k4", "end_key=k6"):
        r = p.get("/bulk/range?limit=7&cursor=%s&%s" % (c, other))
        assert r.status_code == 400 and r.json()["error"] == "bad_cursor", (other, r.text)
    # damaged: bad_cursor, on the proxy as on a node
    for bad in (c[:-2] + ("00" if c[-2:] != "00" else "11"), c[:-1], "2" + c[1:], c + "00", "zz", "1"):
        for target in (p, t.main("a")):
            r = target.get("/bulk/range?cursor=" + bad)
            assert r.status_code == 400 and r.json()["error"] == "bad_cursor", (bad, r.text)
    # every page of the range, by the proxy's cursors
    want = [k for k, _ in union if b"k4" <= k < b"k6"]
    keys, cursor = [], None
    for _ in range(20):
        j = page1(p, q + ("&cursor=" + cursor if cursor else ""))
        keys += [unb64(i["key"]) for i in j["items"]]
        cursor = j["next"]
        if cursor is None:
            break
    assert keys == want
    # a node's cursor continues on the proxy, across the boundary: shard a's main pages its part of
    # the range, and its cursor goes on through the proxy into shard b
    j = page1(t.main("a"), q)
    assert [unb64(i["key"]) for i in j["items"]] == want[:7] and j["next"]
    rest, cursor = [], j["next"]
    for _ in range(20):
        j = page1(p, "encoding=base64&limit=5&cursor=" + cursor)
        rest += [unb64(i["key"]) for i in j["items"]]
        cursor = j["next"]
        if cursor is None:
            break
    assert rest == want[7:]
    # the proxy's cursor whose last key is in shard b continues on shard b's own node
    j = page1(p, "start_key=k4&end_key=k6&limit=17&encoding=base64")
    assert unb64(j["items"][-1]["key"]) >= b"k5" and j["next"]
    n = page1(t.main("b"), "encoding=base64&limit=100&cursor=" + j["next"])
    assert [unb64(i["key"]) for i in n["items"]] == want[17:]
    # and a prefix's cursor stays a prefix's
    j = page1(p, "prefix=k4&limit=5&keys_only=true&encoding=base64")
    r = p.get("/bulk/range?prefix=k5&cursor=" + j["next"])
    assert r.status_code == 400 and r.json()["error"] == "bad_cursor"
    keys = [unb64(i["key"]) for i in j["items"]]
    cursor = j["next"]
    while cursor:
        j = page1(p, "keys_only=true&encoding=base64&limit=5&cursor=" + cursor)
        keys += [unb64(i["key"]) for i in j["items"]]
        cursor = j["next"]
    assert keys == [k for k, _ in union if k.startswith(b"k4")]


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def make_cursor(start=b"", end=None, after=b"", flags=None):
    """A cursor in the node's text form (common/kv_codec.h), checksum and all, with any fields."""
    raw = bytes([flags if flags is not None else (1 if end is not None else 0)])
    for x in (start, end or b"", after):
        raw += struct.pack("<H", len(x)) + x
    return "1" + (raw + struct.pack("<I", crc32c(raw))).hex()


def test_crafted_cursors_page_as_the_nodes_do(topo):
    """Cursors a client made up (a valid checksum, odd fields): the proxy's page is what the two
    nodes give for the same cursor, put together; none of them breaks."""
    t = topo.start()
    for k in (b"a", b"k40", b"k45", b"k49", b"k5", b"k50", b"k55", b"k59", b"z", b"\xff\xff"):
        assert t.proxy.put("/kv/" + pkey(k), data=b"v").status_code == 200
    t.converge()
    real = page1(t.proxy, "start_key=k4&end_key=k6&limit=2&keys_only=true")["next"]
    assert make_cursor(b"k4", b"k6", b"k45") == real, "the cursor format is not the one this test knows"
    crafted = [make_cursor(b"k4", b"k6", b"k40", flags=3), make_cursor(b"k5", b"k6", b"a"),
               make_cursor(b"k4", b"k5", b"z"), make_cursor(b"a", b"k5", b"k55"),
               make_cursor(b"", None, b"k45", flags=2),
               make_cursor(b"\xff\xff", None, b"", flags=2), make_cursor(b"k" * 2000, None, b"k" * 2000),
               make_cursor(b"k" * 60000, None, b"k" * 60000), make_cursor(), make_cursor(b"k4", None, b"k45", flags=3),
               make_cursor(b"k5", b"k5", b""), make_cursor(b"", b"k5", b"k4\xff")]
    for c in crafted:
        pages = [n.get("/bulk/range?keys_only=true&encoding=base64&cursor=" + c) for n in (t.main("a"), t.main("b"))]
        got = t.proxy.get("/bulk/range?keys_only=true&encoding=base64&cursor=" + c)
        if pages[0].status_code != 200:
            assert (got.status_code, got.json()["error"]) == (pages[0].status_code, pages[0].json()["error"]), c[:80]
            continue
        want = sorted(unb64(i["key"]) for p in pages for i in p.json()["items"])
        assert got.status_code == 200, (c[:80], got.text[:200])
        assert [unb64(i["key"]) for i in got.json()["items"]] == want, c[:80]
    bad = make_cursor(b"k6", b"k4", b"k45")  # start past end
    assert t.proxy.get("/bulk/range?cursor=" + bad).json()["error"] == "bad_range"
    assert t.proxy.get("/health").status_code == 200


# Regression test (bug found at caef4d0, fixed in d7f0b47). The bug: a page that fills up at the end of a shard's part
#   gets a next cursor even when no later shard holds a key of the range (a node answers next: null); the
#   client then fetches an extra, empty page
def test_the_last_page_has_no_next(topo):
    t = topo.start()
    for k in (b"a1", b"a2", b"a3"):  # shard a only
        assert t.proxy.put("/kv/" + pkey(k), data=b"v").status_code == 200
    t.converge()
    for q in ("start_key=a&end_key=k6&limit=3", "limit=3", "start_key=a&limit=3&keys_only=true"):
        node = page1(t.main("a"), q)
        assert len(node["items"]) == 3 and node["next"] is None, node
        got = page1(t.proxy, q)
        assert [i["key"] for i in got["items"]] == ["a1", "a2", "a3"]
        assert got["next"] is None, "%s: the page with the range's last key has a next (a node's has none)" % q


# Regression test (bug found at caef4d0, fixed in d7f0b47). The bug: a shard's range page or /bulk/get part larger than
#   max_response_bytes is answered 503 shard_unavailable ('no backend answered'), though the node answered; it
#   should be 413 response_too_large (with the defaults: any value over ~48 MiB makes a base64 range scan
#   through the proxy fail at that key, forever)
def test_answers_over_max_response_bytes_are_413_not_an_outage(topo):
    t = topo.start(proxy_extra={"max_response_bytes": 4 << 20})
    big = os.urandom(3_500_000)  # 4.7 MB in base64: more than max_response_bytes + 64 KiB
    assert t.main("b").put("/kv/zbig", data=big).status_code == 200
    assert t.main("a").put("/kv/apple", data=b"1").status_code == 200
    t.converge()
    # the node serves it alone on its page
    r = t.main("b").get("/bulk/range?encoding=base64&start_key=z")
    assert r.status_code == 200 and unb64(r.json()["items"][0]["value"]) == big
    outcomes = []
    for path, body in (("/bulk/range?encoding=base64&start_key=z", None),
                       ("/bulk/range?encoding=base64&start_key=a", None),
                       ("/bulk/get?encoding=base64", json.dumps({"keys": [b64("apple"), b64("zbig")]}))):
        r = t.proxy.get(path) if body is None else t.proxy.post(path, data=body)
        ok = r.status_code == 200 or (r.status_code == 413 and r.json()["error"] == "response_too_large")
        outcomes.append((path, r.status_code, r.text[:200], ok))
    assert all(o[3] for o in outcomes), outcomes
    # and the shard is not charged with a failure for it
    assert t.proxy.backend(t.replica("b").url)["failures"] == 0
