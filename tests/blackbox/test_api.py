"""Every endpoint and parameter of docs/API.md against a real server: single keys, preconditions
and ETags, bulk writes/reads/deletes, ranges and their paging, limits, stats, metrics, health."""
import base64
import re
import threading
import urllib.parse

import pytest

from conftest import Client, assert_json_error, assert_seq_reply, b64, pkey, qkey, unb64


def etag_of(seq):
    return '"%d"' % seq


def put_ok(c, key, value, headers=None):
    return assert_seq_reply(c.kv_put(key, value, headers))


# ---- single keys ---------------------------------------------------------------------------------


def test_get_absent_is_404_json(client):
    assert_json_error(client.kv_get("nope"), 404, "not_found")
    r = client.head("/kv/nope")
    assert r.status == 404
    assert r.body == b""


def test_put_get_head_etag_content_type(client):
    seq = put_ok(client, "alpha", b"hello world")
    r = client.kv_get("alpha")
    assert r.status == 200
    assert r.body == b"hello world"
    assert r.header("Content-Type") == "application/octet-stream"
    assert r.header("ETag") == etag_of(seq)
    h = client.head("/kv/alpha")
    assert h.status == 200
    assert h.body == b""
    assert h.header("ETag") == etag_of(seq)
    assert h.header("Content-Type") == "application/octet-stream"
    if h.header("Content-Length") is not None:
        assert int(h.header("Content-Length")) == len(b"hello world")


def test_post_is_a_write_too_and_seq_grows(client):
    s1 = assert_seq_reply(client.post("/kv/p", b"one"))
    s2 = assert_seq_reply(client.put("/kv/p", b"two"))
    s3 = assert_seq_reply(client.post("/kv/q", b"three"))
    assert s1 < s2 < s3
    assert client.kv_get("p").body == b"two"
    assert client.kv_get("p").header("ETag") == etag_of(s2)
    assert client.kv_get("q").body == b"three"
    # a write's reply is JSON
    r = client.put("/kv/p", b"x")
    assert "application/json" in r.header("Content-Type")
    assert set(r.json()) == {"seq"}


def test_overwrite_changes_etag(client):
    s1 = put_ok(client, "k", b"v1")
    s2 = put_ok(client, "k", b"v2")
    assert s2 > s1
    r = client.kv_get("k")
    assert (r.body, r.header("ETag")) == (b"v2", etag_of(s2))


def test_if_match_version(client):
    s1 = put_ok(client, "cas", b"v1")
    # wrong version: 412 and nothing changes
    assert_json_error(client.kv_put("cas", b"bad", {"If-Match": etag_of(s1 + 1000)}), 412, "precondition_failed")
    assert client.kv_get("cas").body == b"v1"
    s2 = put_ok(client, "cas", b"v2", {"If-Match": etag_of(s1)})
    assert client.kv_get("cas").body == b"v2"
    # the old version no longer matches
    assert_json_error(client.kv_put("cas", b"v3", {"If-Match": etag_of(s1)}), 412, "precondition_failed")
    assert client.kv_get("cas").header("ETag") == etag_of(s2)
    # absent key with If-Match: 412, and it stays absent
    assert_json_error(client.kv_put("absent", b"x", {"If-Match": etag_of(s2)}), 412, "precondition_failed")
    assert client.kv_get("absent").status == 404


def test_if_match_star(client):
    assert_json_error(client.kv_put("m", b"x", {"If-Match": "*"}), 412, "precondition_failed")
    assert client.kv_get("m").status == 404
    put_ok(client, "m", b"1")
    put_ok(client, "m", b"2", {"If-Match": "*"})
    assert client.kv_get("m").body == b"2"


def test_if_none_match_star_is_create_only(client):
    s = put_ok(client, "c", b"first", {"If-None-Match": "*"})
    assert_json_error(client.kv_put("c", b"second", {"If-None-Match": "*"}), 412, "precondition_failed")
    r = client.kv_get("c")
    assert (r.body, r.header("ETag")) == (b"first", etag_of(s))
    # POST honours it as well
    assert_json_error(client.post("/kv/c", b"third", {"If-None-Match": "*"}), 412, "precondition_failed")


def test_get_if_none_match_304(client):
    s = put_ok(client, "n", b"data")
    r = client.kv_get("n", {"If-None-Match": etag_of(s)})
    assert r.status == 304
    assert r.body == b""
    assert r.header("ETag") == etag_of(s)
    r = client.kv_get("n", {"If-None-Match": "*"})
    assert r.status == 304
    r = client.kv_get("n", {"If-None-Match": etag_of(s + 1)})
    assert r.status == 200 and r.body == b"data"
    r = client.head("/kv/n", headers={"If-None-Match": etag_of(s)})
    assert r.status == 304
    # absent key: 404 whatever the precondition
    assert_json_error(client.kv_get("none", {"If-None-Match": "*"}), 404, "not_found")


def test_delete(client):
    assert_json_error(client.kv_delete("d"), 404, "not_found")
    put_ok(client, "d", b"v")
    r = client.kv_delete("d")
    seq = assert_seq_reply(r)
    assert r.json() == {"seq": seq, "deleted": True}
    assert client.kv_get("d").status == 404
    assert_json_error(client.kv_delete("d"), 404, "not_found")


def test_delete_preconditions(client):
    s = put_ok(client, "dd", b"v")
    assert_json_error(client.kv_delete("dd", {"If-Match": etag_of(s + 5)}), 412, "precondition_failed")
    assert client.kv_get("dd").status == 200
    assert_seq_reply(client.kv_delete("dd", {"If-Match": etag_of(s)}))
    assert client.kv_get("dd").status == 404
    # If-Match on an absent key: 412 (not 404)
    assert_json_error(client.kv_delete("dd", {"If-Match": etag_of(s)}), 412, "precondition_failed")
    assert_json_error(client.kv_delete("dd", {"If-Match": "*"}), 412, "precondition_failed")
    put_ok(client, "dd", b"again")
    assert_seq_reply(client.kv_delete("dd", {"If-Match": "*"}))


def test_delete_if_none_match_star(client):
    """The issue: 'If-None-Match: * makes it create-only (412 when present). The same
    preconditions work on DELETE.'"""
    put_ok(client, "inm", b"v")
    r = client.kv_delete("inm", {"If-None-Match": "*"})
    assert r.status == 412, ("issue: the same preconditions work on DELETE; DELETE with If-None-Match: * "
                             "on a present key should be 412, got %d %r" % (r.status, r.body))
    assert client.kv_get("inm").status == 200


def test_key_path_encoding(client):
    # %2F and a raw '/' both mean '/'
    put_ok(client, "user/42", b"v42")
    r = client.get("/kv/user/42")
    assert r.status == 200 and r.body == b"v42"
    r = client.get("/kv/user%2F42")
    assert r.status == 200 and r.body == b"v42"
    # lower-case hex, and an escaped ordinary letter, are the same key
    put_ok(client, "a b+c", b"sp")
    assert client.get("/kv/a%20b%2bc").body == b"sp"
    assert client.get("/kv/%61%20b%2Bc").body == b"sp"
    # '+' in a path is a plus sign, not a space
    assert client.get("/kv/a+b%2Bc").status == 404
    put_ok(client, "x+y", b"plus")
    assert client.get("/kv/x+y").body == b"plus"


def test_raw_slashes_and_dot_segments_are_part_of_the_key(client):
    """'a raw / after /kv/ is part of the key too': no path normalisation."""
    for path, key in (("/kv/a/../b", b"a/../b"), ("/kv/./x", b"./x"), ("/kv//y", b"/y"), ("/kv/z/", b"z/"),
                      ("/kv/..", b".."), ("/kv/a//b/", b"a//b/")):
        assert_seq_reply(client.put(path, path.encode()))
        r = client.get("/kv/" + pkey(key))
        assert r.status == 200 and r.body == path.encode(), (path, r)
    keys = [i["key"] for i in client.get("/bulk/range").json()["items"]]
    assert keys == sorted(["a/../b", "./x", "/y", "z/", "..", "a//b/"])
    assert client.kv_get("b").status == 404 and client.kv_get("x").status == 404


def test_if_match_after_delete_and_recreate(client):
    s1 = put_ok(client, "re", b"1")
    assert_seq_reply(client.kv_delete("re"))
    assert_json_error(client.kv_put("re", b"2", {"If-Match": etag_of(s1)}), 412, "precondition_failed")
    assert client.kv_get("re").status == 404
    s2 = put_ok(client, "re", b"3", {"If-None-Match": "*"})
    assert s2 > s1
    assert_json_error(client.kv_put("re", b"4", {"If-Match": etag_of(s1)}), 412, "precondition_failed")
    put_ok(client, "re", b"5", {"If-Match": etag_of(s2)})
    assert client.kv_get("re").body == b"5"


def test_empty_and_bad_keys(client):
    assert_json_error(client.get("/kv/"), 400, "key_empty")
    assert_json_error(client.put("/kv/", b"x"), 400, "key_empty")
    assert_json_error(client.get("/kv/%zz"), 400, "bad_request")
    assert_json_error(client.get("/kv/" + "k" * 1025), 400, "key_too_long")
    assert client.get("/kv/" + "k" * 1024).status == 404


def test_unknown_paths_and_methods(client):
    for p in ("/", "/nope", "/kvx", "/bulk/nope", "/stats/x", "/healthz"):
        assert_json_error(client.get(p), 404, "not_found")
    cases = [("PUT", "/bulk", "POST"), ("GET", "/bulk", "POST"), ("GET", "/bulk/get", "POST"),
             ("DELETE", "/bulk/delete", "POST"), ("POST", "/bulk/range", "GET"), ("POST", "/stats", "GET"),
             ("DELETE", "/metrics", "GET"), ("PUT", "/health", "GET"), ("PATCH", "/kv/a", "GET")]
    for method, path, allowed in cases:
        r = client.request(method, path, body=b"" if method in ("PUT", "POST", "PATCH") else None)
        assert_json_error(r, 405, "method_not_allowed")
        allow = r.header("Allow")
        assert allow, "405 without Allow for %s %s" % (method, path)
        assert allowed in [a.strip() for a in allow.split(",")], (method, path, allow)
        assert method not in [a.strip() for a in allow.split(",")], (method, path, allow)


def test_kv_unknown_query_parameter(client):
    put_ok(client, "q", b"v")
    assert_json_error(client.get("/kv/q?x=1"), 400, "bad_request")
    assert_json_error(client.put("/kv/q?x=1", b"v2"), 400, "bad_request")
    assert client.kv_get("q").body == b"v"


# ---- limits ---------------------------------------------------------------------------------------


def test_value_size_limit(server_factory):
    s = server_factory(["--max-value-size", "4096"])
    c = Client(s)
    put_ok(c, "ok", b"x" * 4096)
    assert_json_error(c.kv_put("big", b"x" * 4097), 413, ("value_too_large", "payload_too_large"))
    assert c.kv_get("big").status == 404
    assert_json_error(c.kv_put("big", b"y" * 100000), 413, ("value_too_large", "payload_too_large"))
    assert c.kv_get("big").status == 404
    assert c.kv_get("ok").body == b"x" * 4096
    # bulk values obey it too, and the whole batch is refused
    r = c.post_json("/bulk", {"b1": "v", "b2": "z" * 4097})
    assert_json_error(r, 413, ("value_too_large", "payload_too_large"))
    assert c.kv_get("b1").status == 404


def test_bulk_item_and_byte_limits(server_factory):
    s = server_factory(["--max-bulk-items", "10", "--max-bulk-bytes", "2048", "--max-value-size", "65536"])
    c = Client(s)
    assert_seq_reply(c.post_json("/bulk", {"i%02d" % i: "v" for i in range(10)}))
    r = c.post_json("/bulk", {"j%02d" % i: "v" for i in range(11)})
    body = assert_json_error(r, 413, "too_many_items")
    assert "10" in body["message"], "the message should name the limit: %r" % body
    assert c.kv_get("j00").status == 404
    # bulk/get and bulk/delete have the same item limit
    assert_json_error(c.post_json("/bulk/get", {"keys": ["i%02d" % i for i in range(11)]}), 413, "too_many_items")
    assert_json_error(c.post_json("/bulk/delete", {"keys": ["i%02d" % i for i in range(11)]}), 413,
                      "too_many_items")
    assert c.kv_get("i00").status == 200
    # a body over max_bulk_bytes (few items, large values)
    r = c.post_json("/bulk", {"big1": "x" * 1500, "big2": "y" * 1500})
    assert_json_error(r, 413, "payload_too_large")
    assert c.kv_get("big1").status == 404
    # a PUT body may be larger than max_bulk_bytes (its limit is max_value_size)
    put_ok(c, "single", b"s" * 4000)


def test_bulk_get_response_too_large(server_factory):
    s = server_factory(["--max-bulk-bytes", "4096"])
    c = Client(s)
    put_ok(c, "a", b"a" * 3000)
    put_ok(c, "b", b"b" * 3000)
    r = c.post_json("/bulk/get", {"keys": ["a"]})
    assert r.status == 200
    assert_json_error(c.post_json("/bulk/get", {"keys": ["a", "b"]}), 413, "response_too_large")


# ---- POST /bulk, /bulk/get, /bulk/delete --------------------------------------------------------------


def test_bulk_write_atomic_batch(client):
    items = {"b/%03d" % i: "value %d" % i for i in range(50)}
    r = client.post_json("/bulk", items)
    seq = assert_seq_reply(r)
    assert r.json() == {"seq": seq, "count": 50}
    for k, v in items.items():
        g = client.kv_get(k)
        assert g.status == 200 and g.body == v.encode()
        assert g.header("ETag") == etag_of(seq), "every key of one batch has the batch's seq"
    # the next write gets the next seq: one batch, one seq
    assert put_ok(client, "after", b"x") == seq + 1


def test_bulk_unicode_strings(client):
    items = {"ключ": "значение", "emoji \U0001F600": "\u00e9t\u00e9", "nulvalue": "a\u0000b"}
    assert_seq_reply(client.post_json("/bulk", items))
    for k, v in items.items():
        assert client.kv_get(k.encode()).body == v.encode()
    r = client.post_json("/bulk/get", {"keys": list(items)})
    assert r.status == 200
    assert r.json()["items"] == [{"key": k, "value": v} for k, v in items.items()]


def test_bulk_json_key_with_nul(client):
    """JSON object keys cannot carry a NUL byte through the parser: the server says to use base64
    (docs/API.md), writes nothing, and the same key does go through base64."""
    r = client.post_json("/bulk", {"nul\u0000key": "v"})
    assert_json_error(r, 400, "bad_json", message_has="base64")
    assert client.kv_get(b"nul\x00key").status == 404
    k, v = base64.b64encode(b"nul\x00key").decode(), base64.b64encode(b"v").decode()
    assert client.post_json("/bulk?encoding=base64", {k: v}).status == 200
    assert client.kv_get(b"nul\x00key").body == b"v"
    r = client.get("/bulk/range?prefix=nul")
    assert r.status == 200 and r.json()["items"] == [{"key": "nul\u0000key", "value": "v"}]


@pytest.mark.parametrize("bad,code,status", [
    ({"v1": "ok", "v2": 5}, "bad_request", 400),
    ({"v1": "ok", "v2": None}, "bad_request", 400),
    ({"v1": "ok", "v2": ["x"]}, "bad_request", 400),
    ({"v1": "ok", "v2": {"a": "b"}}, "bad_request", 400),
    ({"v1": "ok", "": "empty key"}, "key_empty", 400),
    ({"v1": "ok", "k" * 1025: "long key"}, "key_too_long", 400),
], ids=["number", "null", "array", "object", "empty-key", "long-key"])
def test_bulk_one_invalid_member_writes_nothing(client, bad, code, status):
    good_keys = [k for k in bad if k and len(k) <= 1024]
    # several valid members before and after the bad one
    body = {"pre%d" % i: "x" for i in range(5)}
    body.update(bad)
    body.update({"post%d" % i: "y" for i in range(5)})
    seq_before = client.get("/health").json()["seq"]
    assert_json_error(client.post_json("/bulk", body), status, code)
    for k in list(body):
        if k and len(k) <= 1024:
            assert client.kv_get(k).status == 404, "key %r written by a rejected batch" % k
    assert good_keys
    assert client.get("/health").json()["seq"] == seq_before, "a rejected batch used a seq"


def test_bulk_duplicate_keys_refused(client):
    raw = b'{"dup": "1", "other": "x", "dup": "2"}'
    assert_json_error(client.post("/bulk", raw, {"Content-Type": "application/json"}), 400)
    assert client.kv_get("dup").status == 404
    assert client.kv_get("other").status == 404


def test_bulk_bad_json_and_shapes(client):
    for raw in (b"", b"{", b"not json", b'{"a": "b",}', b"[]", b'["a", "b"]', b'"str"', b"5", b"null"):
        r = client.post("/bulk", raw, {"Content-Type": "application/json"})
        assert_json_error(r, 400, ("bad_json", "bad_request"))
    assert client.range_all() == []


def test_bulk_base64(client):
    items = {b"\x00\xff\xfe": b"\x80\x81", b"plain": b"", b"\xc3\x28": b"\xff" * 10}
    body = {b64(k): b64(v) for k, v in items.items()}
    seq = assert_seq_reply(client.post_json("/bulk?encoding=base64", body))
    for k, v in items.items():
        g = client.kv_get(k)
        assert g.status == 200 and g.body == v and g.header("ETag") == etag_of(seq)
    # bad base64 in a key or a value: nothing written
    for bad in ({b64("ok1"): b64("v"), "!!notbase64": b64("v")},
                {b64("ok2"): b64("v"), b64("k2"): "***"},
                {b64("ok3"): b64("v"), b64("k3"): "YQ"},  # unpadded
                {b64("ok4"): b64("v"), "": b64("v")}):
        r = client.post_json("/bulk?encoding=base64", bad)
        assert_json_error(r, 400, ("bad_base64", "key_empty"))
    for k in ("ok1", "ok2", "ok3", "ok4", "k2", "k3"):
        assert client.kv_get(k).status == 404
    # utf8 is the explicit default
    assert_seq_reply(client.post_json("/bulk?encoding=utf8", {"u": "v"}))
    assert_json_error(client.post_json("/bulk?encoding=hex", {"u": "v"}), 400)
    assert_json_error(client.post_json("/bulk?bogus=1", {"u": "v"}), 400)


def test_bulk_get(client):
    client.post_json("/bulk", {"g1": "one", "g2": "two", "g3": ""})
    r = client.post_json("/bulk/get", {"keys": ["g3", "missing1", "g1", "missing2", "g2"]})
    assert r.status == 200
    assert "application/json" in r.header("Content-Type")
    body = r.json()
    assert body["items"] == [{"key": "g3", "value": ""}, {"key": "g1", "value": "one"},
                             {"key": "g2", "value": "two"}]
    assert body["missing"] == ["missing1", "missing2"]
    # empty list
    r = client.post_json("/bulk/get", {"keys": []})
    assert r.status == 200 and r.json() == {"items": [], "missing": []}
    # base64 both ways
    put_ok(client, b"\xff\x00", b"\x01\xfe")
    r = client.post_json("/bulk/get?encoding=base64", {"keys": [b64(b"\xff\x00"), b64(b"nokey")]})
    assert r.status == 200
    body = r.json()
    assert [(unb64(i["key"]), unb64(i["value"])) for i in body["items"]] == [(b"\xff\x00", b"\x01\xfe")]
    assert [unb64(k) for k in body["missing"]] == [b"nokey"]
    # a value that is not UTF-8 without base64: 400 that says to use base64
    put_ok(client, "binval", b"\xff\xfe")
    assert_json_error(client.post_json("/bulk/get", {"keys": ["binval"]}), 400, "not_utf8", "base64")
    # bad shapes
    for bad in ({"keys": 5}, {"keys": "g1"}, {"keys": [1]}, {"keys": [None]}, {"key": ["g1"]}, ["g1"],
                {"keys": ["g1"], "extra": 1}, {"keys": [""]}):
        assert_json_error(client.post_json("/bulk/get", bad), 400)
    assert_json_error(client.post_json("/bulk/get?encoding=base64", {"keys": ["%%%"]}), 400, "bad_base64")


def test_bulk_delete(client):
    client.post_json("/bulk", {"d1": "1", "d2": "2", "d3": "3"})
    r = client.post_json("/bulk/delete", {"keys": ["d1", "nope", "d3"]})
    seq = assert_seq_reply(r)
    assert r.json() == {"seq": seq, "deleted": 2, "count": 3}
    assert client.kv_get("d1").status == 404
    assert client.kv_get("d3").status == 404
    assert client.kv_get("d2").body == b"2"
    # none existed: deleted 0, seq is the current one
    cur = client.get("/health").json()["seq"]
    r = client.post_json("/bulk/delete", {"keys": ["zz1", "zz2"]})
    assert r.status == 200
    assert r.json()["deleted"] == 0 and r.json()["count"] == 2
    assert r.json()["seq"] == cur
    # base64
    put_ok(client, b"\x00\x01", b"x")
    r = client.post_json("/bulk/delete?encoding=base64", {"keys": [b64(b"\x00\x01")]})
    assert r.status == 200 and r.json()["deleted"] == 1
    assert client.kv_get(b"\x00\x01").status == 404


def test_bulk_delete_atomic(client):
    client.post_json("/bulk", {"a1": "1", "a2": "2"})
    for bad in ({"keys": ["a1", 7, "a2"]}, {"keys": ["a1", "", "a2"]}, {"keys": ["a1", "k" * 1025]},
                {"keys": "a1"}, {"keys": ["a1"], "more": True}):
        assert_json_error(client.post_json("/bulk/delete", bad), 400)
    r = client.post_json("/bulk/delete?encoding=base64", {"keys": [b64("a1"), "@@bad@@"]})
    assert_json_error(r, 400, "bad_base64")
    assert client.kv_get("a1").body == b"1"
    assert client.kv_get("a2").body == b"2"


# ---- GET /bulk/range -------------------------------------------------------------------------------


def load(c, items):
    assert_seq_reply(c.post_json("/bulk?encoding=base64", {b64(k): b64(v) for k, v in items.items()}))


def range_b64(c, params):
    r = c.get("/bulk/range?encoding=base64" + ("&" + params if params else ""))
    assert r.status == 200, r
    body = r.json()
    return [(unb64(i["key"]), unb64(i["value"]) if "value" in i else None) for i in body["items"]], body["next"]


def test_range_basic_bounds_and_order(client):
    keys = [b"a", b"ab", b"abc", b"b", b"ba", b"c", b"\x00", b"\x7f", b"\x80", b"\xff", b"\xff\x00", b"A", b"a\x00"]
    load(client, {k: b"v" + k for k in keys})
    items, nxt = range_b64(client, "")
    assert [k for k, _ in items] == sorted(keys), "byte order (memcmp, shorter first)"
    assert all(v == b"v" + k for k, v in items)
    assert nxt is None
    items, _ = range_b64(client, "start_key=ab&end_key=ba")
    assert [k for k, _ in items] == [b"ab", b"abc", b"b"]
    items, _ = range_b64(client, "start_key=b")
    assert [k for k, _ in items] == [k for k in sorted(keys) if k >= b"b"]
    items, _ = range_b64(client, "end_key=a")
    assert [k for k, _ in items] == [k for k in sorted(keys) if k < b"a"]
    items, _ = range_b64(client, "start_key=b&end_key=b")
    assert items == []
    items, _ = range_b64(client, "start_key=%80&end_key=%FF")
    assert [k for k, _ in items] == [b"\x80"]
    # start > end
    assert_json_error(client.get("/bulk/range?start_key=c&end_key=b"), 400, "bad_range")


def test_range_json_shape_plain(client):
    client.post_json("/bulk", {"r1": "one", "r2": "two"})
    r = client.get("/bulk/range")
    assert r.status == 200 and "application/json" in r.header("Content-Type")
    assert r.json() == {"items": [{"key": "r1", "value": "one"}, {"key": "r2", "value": "two"}], "next": None}
    r = client.get("/bulk/range?keys_only=true")
    assert r.json() == {"items": [{"key": "r1"}, {"key": "r2"}], "next": None}
    r = client.get("/bulk/range?keys_only=false")
    assert r.json()["items"][0] == {"key": "r1", "value": "one"}
    r = client.get("/bulk/range?keys_only=true&encoding=base64")
    assert r.json() == {"items": [{"key": b64("r1")}, {"key": b64("r2")}], "next": None}
    assert_json_error(client.get("/bulk/range?keys_only=yes%20please"), 400)
    assert_json_error(client.get("/bulk/range?encoding=rot13"), 400)
    assert_json_error(client.get("/bulk/range?start=a"), 400, "bad_request")
    assert client.head("/bulk/range").status == 200


def test_range_query_plus_is_space(client):
    client.post_json("/bulk", {"a b": "space", "a+b": "plus", "a": "x"})
    items = client.get("/bulk/range?prefix=a+b").json()["items"]
    assert [i["key"] for i in items] == ["a b"]
    items = client.get("/bulk/range?prefix=a%2Bb").json()["items"]
    assert [i["key"] for i in items] == ["a+b"]
    items = client.get("/bulk/range?start_key=a+b&end_key=a%2Bc").json()["items"]
    assert [i["key"] for i in items] == ["a b", "a+b"]


def test_range_prefix(client):
    keys = [b"user/1", b"user/2", b"user/10", b"user", b"users", b"usea", b"uses/1", b"v"]
    load(client, {k: b"x" for k in keys})
    items, _ = range_b64(client, "prefix=" + qkey("user/"))
    assert [k for k, _ in items] == [b"user/1", b"user/10", b"user/2"]
    items, _ = range_b64(client, "prefix=user")
    assert [k for k, _ in items] == [b"user", b"user/1", b"user/10", b"user/2", b"users"]
    items, _ = range_b64(client, "prefix=nothing")
    assert items == []
    items, _ = range_b64(client, "prefix=")
    assert [k for k, _ in items] == sorted(keys), "an empty prefix is every key"
    assert_json_error(client.get("/bulk/range?prefix=u&start_key=a"), 400, "bad_request")
    assert_json_error(client.get("/bulk/range?prefix=u&end_key=z"), 400, "bad_request")


def test_range_prefix_of_ff_bytes(client):
    keys = [b"\xfe", b"\xfe\xff", b"\xff", b"\xff\x00", b"\xff\xfe", b"\xff\xff", b"\xff\xff\x00",
            b"\xff\xff\xff", b"\xff\xff\xff\xff", b"\x00"]
    load(client, {k: k for k in keys})
    items, _ = range_b64(client, "prefix=%FF%FF")
    assert [k for k, _ in items] == [b"\xff\xff", b"\xff\xff\x00", b"\xff\xff\xff", b"\xff\xff\xff\xff"]
    items, _ = range_b64(client, "prefix=%FF")
    assert [k for k, _ in items] == sorted(k for k in keys if k.startswith(b"\xff"))
    # paged, one by one
    got, nxt = range_b64(client, "prefix=%FF%FF&limit=1")
    seen = [k for k, _ in got]
    while nxt:
        got, nxt = range_b64(client, "limit=1&cursor=" + urllib.parse.quote(nxt, safe=""))
        seen += [k for k, _ in got]
    assert seen == [b"\xff\xff", b"\xff\xff\x00", b"\xff\xff\xff", b"\xff\xff\xff\xff"]


def test_range_not_utf8_needs_base64(client):
    client.post_json("/bulk", {"t1": "text", "t2": "text"})
    put_ok(client, b"t3\xff", b"ok")
    put_ok(client, "t4", b"\xc0\xaf")  # an overlong form: not UTF-8
    for params in ("", "prefix=t", "start_key=t3", "start_key=t4", "keys_only=true&start_key=t3&end_key=t4"):
        r = client.get("/bulk/range" + ("?" + params if params else ""))
        assert_json_error(r, 400, "not_utf8", "base64")
    # never mangled: ranges that avoid the binary items are fine
    r = client.get("/bulk/range?end_key=t3")
    assert r.status == 200
    assert r.json()["items"] == [{"key": "t1", "value": "text"}, {"key": "t2", "value": "text"}]
    # keys_only only needs the keys to be text
    r = client.get("/bulk/range?keys_only=true&start_key=t4")
    assert r.status == 200 and r.json()["items"] == [{"key": "t4"}]
    items, _ = range_b64(client, "prefix=t")
    assert items == [(b"t1", b"text"), (b"t2", b"text"), (b"t3\xff", b"ok"), (b"t4", b"\xc0\xaf")]


def test_range_limit_and_cursor(server_factory):
    s = server_factory(["--max-range-response", "25"])
    c = Client(s)
    keys = ["k%03d" % i for i in range(100)]
    c.post_json("/bulk", {k: "v" + k for k in keys})
    # default page = the cap
    page = c.get("/bulk/range").json()
    assert len(page["items"]) == 25 and isinstance(page["next"], str)
    # limit within the cap
    page = c.get("/bulk/range?limit=7").json()
    assert [i["key"] for i in page["items"]] == keys[:7]
    assert c.get("/bulk/range?limit=25").status == 200
    assert_json_error(c.get("/bulk/range?limit=26"), 400, "bad_limit")
    for bad in ("0", "-1", "abc", "", "1.5", "99999999999999999999", "0x10", " 5"):
        assert_json_error(c.get("/bulk/range?limit=" + urllib.parse.quote(bad)), 400, "bad_limit")
    # walk with cursor alone, 7 at a time
    seen = []
    r = c.get("/bulk/range?limit=7")
    while True:
        page = r.json()
        assert len(page["items"]) <= 7
        seen += [i["key"] for i in page["items"]]
        if page["next"] is None:
            break
        r = c.get("/bulk/range?limit=7&cursor=" + urllib.parse.quote(page["next"], safe=""))
        assert r.status == 200, r
    assert seen == keys
    # the last page ends with next null even when it is exactly full
    page = c.get("/bulk/range?start_key=k090&limit=10").json()
    assert len(page["items"]) == 10 and page["next"] is None
    # a sub-range paged with its bounds repeated
    sub = []
    q = "start_key=k010&end_key=k030&limit=6"
    r = c.get("/bulk/range?" + q)
    while True:
        page = r.json()
        sub += [i["key"] for i in page["items"]]
        if page["next"] is None:
            break
        r = c.get("/bulk/range?" + q + "&cursor=" + urllib.parse.quote(page["next"], safe=""))
        assert r.status == 200, r
    assert sub == keys[10:30]
    # a cursor with another range is refused; a damaged one too
    nxt = c.get("/bulk/range?" + q).json()["next"]
    assert_json_error(c.get("/bulk/range?start_key=k011&end_key=k030&cursor=" + nxt), 400, "bad_cursor")
    assert_json_error(c.get("/bulk/range?prefix=k0&cursor=" + nxt), 400, "bad_cursor")
    damaged = nxt[:-1] + ("0" if nxt[-1] != "0" else "1")
    assert_json_error(c.get("/bulk/range?cursor=" + damaged), 400, "bad_cursor")
    assert_json_error(c.get("/bulk/range?cursor=zzz"), 400, "bad_cursor")
    assert_json_error(c.get("/bulk/range?cursor="), 400, "bad_cursor")


def test_range_max_range_bytes_paging(server_factory):
    s = server_factory(["--max-range-bytes", "4096", "--max-value-size", "65536"])
    c = Client(s)
    sizes = {"a": 1000, "b": 1000, "c": 1000, "d": 1000, "e": 5000, "f": 10, "g": 9000, "h": 4096, "i": 1,
             "j": 3000, "k": 3000}
    c.post_json("/bulk", {k: k * n for k, n in sizes.items()})
    pages = []
    r = c.get("/bulk/range")
    while True:
        assert r.status == 200, r
        page = r.json()
        pages.append([(i["key"], len(i["value"])) for i in page["items"]])
        if page["next"] is None:
            break
        r = c.get("/bulk/range?cursor=" + urllib.parse.quote(page["next"], safe=""))
    flat = [k for p in pages for k, _ in p]
    assert flat == sorted(sizes), "every key once, in order: %r" % pages
    for p in pages:
        assert p, "empty page: %r" % pages
        total = sum(n for _, n in p)
        assert total <= 4096 or len(p) == 1, "page over max_range_bytes with more than one item: %r" % p
    # a value larger than a page comes alone
    assert [("e", 5000)] in pages and [("g", 9000)] in pages
    # the values are whole
    items = c.range_all()
    assert {i["key"]: i["value"] for i in items} == {k: k * n for k, n in sizes.items()}
    # keys_only pages are not limited by value bytes
    page = c.get("/bulk/range?keys_only=true").json()
    assert [i["key"] for i in page["items"]] == sorted(sizes) and page["next"] is None


def test_range_cursor_stable_under_writes(server_factory):
    s = server_factory(["--max-range-response", "1000"])
    c = Client(s)
    w = Client(s)
    stable = ["s%04d" % i for i in range(0, 400, 2)]
    c.post_json("/bulk", {k: "v" for k in stable})
    doomed = ["s%04d" % i for i in range(1, 400, 4)]
    c.post_json("/bulk", {k: "d" for k in doomed})
    seen = []
    deleted = set()
    r = c.get("/bulk/range?prefix=s&limit=13")
    n = 0
    while True:
        assert r.status == 200, r
        page = r.json()
        keys = [i["key"] for i in page["items"]]
        seen += keys
        # between pages: insert keys before, at and after the cursor; delete others; overwrite some
        last = keys[-1] if keys else "s0000"
        i = int(last[1:])
        w.post_json("/bulk", {"s%04d" % (i + 1): "new", "s%04d" % max(i - 1, 0) + "x": "new",
                              "s%04d" % (i + 3): "new"})
        w.kv_delete("s%04d" % (i + 5))
        deleted.add("s%04d" % (i + 5))
        w.kv_put("s%04d" % (i + 2), b"over")
        w.kv_put(last, b"over")
        n += 1
        if page["next"] is None:
            break
        r = c.get("/bulk/range?limit=13&cursor=" + urllib.parse.quote(page["next"], safe=""))
    assert len(seen) == len(set(seen)), "a key came twice: %r" % [k for k in seen if seen.count(k) > 1]
    assert seen == sorted(seen), "keys out of order across pages"
    # keys the writer deleted between pages may be gone; the others existed throughout
    missing = [k for k in stable if k not in set(seen) and k not in deleted]
    assert missing == [], "keys that existed throughout were skipped: %r" % missing
    assert n > 10


def test_range_page_is_consistent_view(server_factory):
    """A batch committed while pages are read is on a page whole or not at all."""
    s = server_factory()
    c = Client(s)
    keys = ["cv%03d" % i for i in range(200)]
    stop = threading.Event()
    errors = []

    def writer():
        w = Client(s)
        gen = 0
        while not stop.is_set():
            gen += 1
            r = w.post_json("/bulk", {k: "g%06d" % gen for k in keys})
            if r.status != 200:
                errors.append(r)
                return

    c.post_json("/bulk", {k: "g000000" for k in keys})
    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(30):
            r = c.get("/bulk/range?prefix=cv")
            assert r.status == 200
            vals = {i["value"] for i in r.json()["items"]}
            assert len(r.json()["items"]) == 200
            assert len(vals) == 1, "one page mixes batches: %r" % sorted(vals)[:5]
    finally:
        stop.set()
        t.join()
    assert not errors, errors


# ---- observability --------------------------------------------------------------------------------


def test_health(client):
    r = client.get("/health")
    assert r.status == 200
    assert "application/json" in r.header("Content-Type")
    body = r.json()
    assert body["status"] == "ok" and body["role"] == "main" and body["seq"] == 0
    seq = put_ok(client, "h", b"x")
    assert client.get("/health").json()["seq"] == seq
    assert client.head("/health").status == 200
    assert_json_error(client.get("/health?verbose=1"), 400)


def test_stats_contents(server_factory):
    s = server_factory(["--fsync", "strict", "--cache-size", "64"])
    c = Client(s)
    st0 = c.get("/stats").json()
    for k in ("keys", "value_bytes", "gets", "sets", "deletes", "hits", "misses", "partitions", "seq",
              "uptime_seconds"):
        assert isinstance(st0[k], int) and st0[k] >= 0, (k, st0.get(k))
    assert st0["fsync"] == "strict"
    assert st0["role"] == "main"
    assert st0["keys"] == 0 and st0["value_bytes"] == 0 and st0["seq"] == 0
    assert st0["partitions"] >= 1
    assert isinstance(st0["cache"], dict) and st0["cache"]["budget_bytes"] == 64 << 20
    for k in ("bytes", "pinned_bytes", "pages", "hit_ratio", "evictions"):
        assert k in st0["cache"], k
    assert st0["storage"]["io_backend"] in ("io_uring", "posix")
    for k in ("durable_seq", "checkpoint_seq", "group_commits", "splits", "compactions", "wal_bytes", "wal_syncs",
              "corrupt_partitions", "read_only"):
        assert k in st0["storage"], k
    assert "open" in st0["connections"]
    assert isinstance(st0["requests"], dict)

    put_ok(c, "s1", b"12345")
    put_ok(c, "s2", b"123")
    put_ok(c, "s2", b"1234567")
    seq = assert_seq_reply(c.post_json("/bulk", {"s3": "xy", "s4": "z"}))
    c.kv_delete("s4")
    seq = assert_seq_reply(c.kv_delete("s1"))
    for _ in range(3):
        assert c.kv_get("s2").status == 200
    for _ in range(2):
        assert c.kv_get("nothere").status == 404
    st = c.get("/stats").json()
    assert st["keys"] == 2, st
    assert st["value_bytes"] == 7 + 2, st
    assert st["seq"] == seq
    assert st["sets"] - st0["sets"] == 5, "sets counts each put (a batch counts each of its ops)"
    assert st["deletes"] - st0["deletes"] == 2
    assert st["gets"] - st0["gets"] >= 5
    assert (st["hits"] + st["misses"]) - (st0["hits"] + st0["misses"]) >= 5
    assert st["storage"]["durable_seq"] == seq, "fsync strict: every acknowledged write is durable"
    assert st["requests"]["kv_get"] >= 5
    assert st["requests"]["kv_put"] >= 3
    assert st["requests"]["bulk"] >= 1
    assert st["requests"]["kv_delete"] >= 2
    assert st["connections"]["open"] >= 1


PROM_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$')
PROM_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_prometheus(text):
    """{family: {"type":..., "help":..., "samples": [(name, labels, value)]}}; asserts the format."""
    fams = {}
    cur_help = {}
    cur_type = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            assert name not in cur_help, "HELP twice for %s" % name
            cur_help[name] = help_
            continue
        if line.startswith("# TYPE "):
            name, _, typ = line[7:].partition(" ")
            assert typ in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in cur_type, "TYPE twice for %s" % name
            cur_type[name] = typ
            continue
        assert not line.startswith("#"), "stray comment: %r" % line
        m = PROM_LINE.match(line)
        assert m, "not a Prometheus sample line: %r" % line
        name, labels_s, value = m.group(1), m.group(3) or "", m.group(4)
        labels = {}
        pos = 0
        while pos < len(labels_s):
            lm = PROM_LABEL.match(labels_s, pos)
            assert lm, "bad labels in %r" % line
            labels[lm.group(1)] = lm.group(2)
            pos = lm.end()
        v = float(value)  # accepts +Inf, NaN, exponents
        fam = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[:-len(suffix)] in cur_type and \
                    cur_type[name[:-len(suffix)]] == "histogram":
                fam = name[:-len(suffix)]
        assert fam in cur_type, "sample %s before its # TYPE" % name
        assert fam in cur_help, "sample %s without # HELP" % name
        fams.setdefault(fam, {"type": cur_type[fam], "help": cur_help[fam], "samples": []})
        fams[fam]["samples"].append((name, labels, v))
    return fams


def test_metrics_prometheus_format(client):
    put_ok(client, "m1", b"abc")
    for _ in range(5):
        client.kv_get("m1")
    client.kv_get("absent")
    client.get("/bulk/range")
    client.post_json("/bulk/get", {"keys": ["m1"]})
    r = client.get("/metrics")
    assert r.status == 200
    assert r.header("Content-Type").startswith("text/plain")
    text = r.body.decode()
    assert text.endswith("\n")
    fams = parse_prometheus(text)
    # the /stats figures are there
    def one(name):
        samples = fams[name]["samples"]
        assert len(samples) == 1, samples
        return samples[0][2]
    assert one("triekv_keys") == 1
    assert one("triekv_value_bytes") == 3
    assert one("triekv_seq") >= 1
    assert one("triekv_uptime_seconds") >= 0
    assert one("triekv_partitions") >= 1
    ops = {s[1].get("op"): s[2] for s in fams["triekv_operations_total"]["samples"]}
    assert ops.get("get", 0) >= 6 and ops.get("set", 0) >= 1 and "delete" in ops
    # per-endpoint request counts
    reqs = fams["triekv_http_requests_total"]
    assert reqs["type"] == "counter"
    by_ep = {}
    for _, labels, v in reqs["samples"]:
        assert "endpoint" in labels and "code" in labels, labels
        by_ep[labels["endpoint"]] = by_ep.get(labels["endpoint"], 0) + v
    assert by_ep.get("kv_get", 0) >= 6 and by_ep.get("kv_put", 0) >= 1
    assert by_ep.get("bulk_range", 0) >= 1 and by_ep.get("bulk_get", 0) >= 1
    codes = {(l["endpoint"], l["code"]) for _, l, _ in reqs["samples"]}
    assert any(ep == "kv_get" and code.startswith("4") for ep, code in codes), codes
    # latency histogram
    hist = fams["triekv_http_request_duration_seconds"]
    assert hist["type"] == "histogram"
    eps = {}
    for name, labels, v in hist["samples"]:
        ep = labels.get("endpoint")
        assert ep, labels
        e = eps.setdefault(ep, {"buckets": [], "sum": None, "count": None})
        if name.endswith("_bucket"):
            e["buckets"].append((labels["le"], v))
        elif name.endswith("_sum"):
            e["sum"] = v
        elif name.endswith("_count"):
            e["count"] = v
    assert "kv_get" in eps and "kv_put" in eps
    for ep, e in eps.items():
        les = [le for le, _ in e["buckets"]]
        assert les[-1] == "+Inf", (ep, les)
        bounds = [float(le) for le in les]
        assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), (ep, les)
        counts = [v for _, v in e["buckets"]]
        assert counts == sorted(counts), "histogram buckets not cumulative for %s: %r" % (ep, counts)
        assert e["count"] is not None and e["sum"] is not None, ep
        assert counts[-1] == e["count"], "+Inf bucket != _count for %s" % ep
        assert e["sum"] >= 0
    assert eps["kv_get"]["count"] >= 6
    assert eps["kv_get"]["count"] == by_ep["kv_get"], "histogram count != request count for kv_get"


def test_stats_and_metrics_reject_bad_queries(client):
    assert_json_error(client.get("/stats?x=1"), 400, "bad_request")
    assert_json_error(client.get("/metrics?format=json"), 400, "bad_request")
