"""tests/proxy/test_hostile.py - malformed and hostile input to every endpoint of triekv-proxy.

What must hold: every refusal is the API's JSON {"error", "message"} with the node's code (only a
request that is not HTTP at all may get h2o's plain-text 400 and a closed connection); what the
proxy accepts reaches the right shard with exactly the bytes sent (binary keys, absolute-form
targets, chunked bodies, pipelining, HTTP/1.0); limits (key size, body size, headers, query
parameters) hold; and after every attack the proxy is still up and serving both shards."""
import json
import os
import socket
import struct
import time

import requests

from cluster.conftest import b64, pkey, read_all, sanitizer_findings, unb64, wait_until

from .conftest import BOUNDARY, Proxy, owner
from .rawhttp import PeerClosed, RawConn, exchange, request


def assert_serving(t, tag="x"):
    """The proxy still runs and serves a write and a read-your-write on both shards."""
    assert t.proxy.proc.poll() is None, "the proxy died: %s" % t.proxy.log()[-3000:]
    assert t.proxy.get("/health").status_code == 200
    for key in ("alive-%s" % tag, "zz-alive-%s" % tag):
        r = t.proxy.put("/kv/" + key, data=b"ok")
        assert r.status_code == 200, r.text
        r = t.proxy.get("/kv/" + key, headers={"X-Triekv-Min-Seq": r.headers["X-Triekv-Seq"]})
        assert r.status_code == 200 and r.content == b"ok", (r.status_code, r.text)


def pct(key):
    """Every byte percent-encoded (pkey leaves '.', '-', '_', '~' as they are)."""
    return "".join("%%%02X" % c for c in key)


def direct(t, key):
    """The key's value on its shard's main, read there directly (None when absent)."""
    r = t.main(owner(key)).get("/kv/" + pkey(key))
    assert r.status_code in (200, 404), r.text
    return r.content if r.status_code == 200 else None


# ---- targets -----------------------------------------------------------------------------------

def test_malformed_percent_escapes_in_paths_and_query_strings(topo):
    t = topo.start()
    port = t.proxy.port
    # (a malformed escape in a /kv/ path: test_malformed_key_escapes_do_not_leak, on a proxy of its own)
    targets = [
        ("GET", "/bulk/range?start_key=%zz"), ("GET", "/bulk/range?prefix=%"), ("GET", "/bulk/range?end_key=a%f"),
        ("GET", "/bulk/range?%zz=1"), ("GET", "/bulk/range?cursor=%x1"), ("POST", "/bulk?encoding=%zz"),
        ("POST", "/bulk?atomic=%"), ("POST", "/bulk/get?%=1"), ("POST", "/bulk/delete?encoding=base64&%q"),
        ("GET", "/stats?cluster=%zz"), ("GET", "/health?%"), ("GET", "/metrics?x%zz=1"),
        ("GET", "/kv/apple?x=%zz"), ("PUT", "/kv/apple?%=1"),
    ]
    for method, target in targets:
        body = b"{}" if method in ("POST", "PUT") else None
        r = exchange(port, request(method, target, body))
        assert r.status == 400 and r.is_json_error("bad_request"), (method, target, r)
    # nothing was written by the refused PUTs
    assert direct(t, b"apple") is None
    assert_serving(t)


BAD_KEY_PATHS = [("GET", "/kv/%zz"), ("GET", "/kv/abc%"), ("GET", "/kv/abc%4"), ("PUT", "/kv/%g0"),
                 ("DELETE", "/kv/%%"), ("HEAD", "/kv/a%2"), ("POST", "/kv/k5%x")]


# Regression test (bug found at caef4d0, fixed in d7f0b47). The bug: proxy_handle_kv does not free the key buffer when
#   the path's %-escape is malformed: every such request leaks as many bytes as its path is long
#   (LeakSanitizer: kv_percent_decode <- proxy_handle_kv, proxy/proxy_kv.c:20); node/node_kv.c:189 has the
#   same leak
def test_malformed_key_escapes_do_not_leak(topo, tmp_path, proxy_bin):
    """Refused with 400 bad_request, and nothing kept: a proxy of its own gets 500 of them with
    60 KB paths; its RSS must not grow with them, and LeakSanitizer (ASan build) must find nothing
    when it stops."""
    t = topo.start()
    bound = "".join("%%%02x" % c for c in BOUNDARY)
    shards = [{"name": "a", "start": "", "end": bound, "main": t.main("a").url, "replicas": [t.replica("a").url]},
              {"name": "b", "start": bound, "end": None, "main": t.main("b").url, "replicas": [t.replica("b").url]}]
    px = Proxy(tmp_path, shards, {"threads": 1}, name="leak-proxy").start()
    try:
        for method, target in BAD_KEY_PATHS:
            body = b"x" if method in ("PUT", "POST") else None
            r = exchange(px.port, request(method, target, body), head=method == "HEAD")
            assert r.status == 400 and (method == "HEAD" or r.is_json_error("bad_request")), (method, target, r)
        rss0 = rss_of(px.proc.pid)
        long_bad = request("GET", "/kv/" + "a" * 60000 + "%zz", close=False)
        with RawConn(px.port, timeout=30) as c:
            for _ in range(10):
                c.send(long_bad * 50)
                for _ in range(50):
                    assert c.response().status == 400
        growth = (rss_of(px.proc.pid) - rss0) / 2 ** 20
        assert px.get("/health").status_code == 200
    finally:
        code = px.stop()
    findings = sanitizer_findings(px.log())
    assert not findings, findings
    with open(proxy_bin, "rb") as f:
        asan = b"__asan_init" in f.read()
    if not asan:  # ASan's quarantine keeps freed memory: there LeakSanitizer is the judge
        assert growth < 10, "500 refused requests of 60 KB paths grew the proxy's RSS by %.0f MB" % growth
    assert code == 0, px.log()[-2000:]


def rss_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_absolute_form_targets_are_routed_by_their_path(topo):
    t = topo.start()
    port = t.proxy.port
    for key, value in ((b"apple", b"red"), (b"zebra", b"striped"), (b"k5", b"edge")):
        r = exchange(port, request("PUT", "http://elsewhere.example:1234/kv/" + pkey(key), value))
        assert r.status == 200, r
        assert direct(t, key) == value, key
        seq = r.headers["x-triekv-seq"]
        r = exchange(port, request("GET", "http://elsewhere.example/kv/%s?" % pkey(key),
                                   headers=[("X-Triekv-Min-Seq", seq)]))
        assert r.status == 200 and r.body == value, r
    r = exchange(port, request("GET", "http://h.example/bulk/range?start_key=a&keys_only=true",
                               headers=[("X-Triekv-Min-Seq", "1")]))
    assert r.status == 200 and [i["key"] for i in r.json()["items"]] == ["apple", "k5", "zebra"], r
    r = exchange(port, request("POST", "http://h.example/bulk/get", json.dumps({"keys": ["zebra", "apple"]}).encode(),
                               headers=[("X-Triekv-Min-Seq", "1")]))
    assert r.status == 200 and [i["value"] for i in r.json()["items"]] == ["striped", "red"], r
    r = exchange(port, request("GET", "http://h.example/health"))
    assert r.status == 200 and r.json()["role"] == "proxy"
    # a host and nothing else is no endpoint; an https:// target is not stripped (also no endpoint)
    for target in ("http://h.example", "https://h.example/kv/apple"):
        r = exchange(port, request("GET", target))
        assert r.status == 404 and r.is_json_error("not_found"), (target, r)
    assert_serving(t)


def test_oversized_and_too_many_headers(topo):
    t = topo.start()
    port = t.proxy.port
    # over the HTTP layer's limits: a plain-text 400 is allowed, and the connection closes
    for data in (request("GET", "/kv/apple", headers=[("X-Big", "a" * 500000)], close=False),
                 request("GET", "/kv/apple", headers=[("X-H%d" % i, "v") for i in range(150)], close=False)):
        with RawConn(port) as c:
            try:
                c.send(data)
                r = c.response()
            except (PeerClosed, BrokenPipeError, ConnectionResetError):
                r = None  # closed before the whole request was sent: the 400 may be lost with it
            assert r is None or (r.status == 400 and c.closed()), r
    # large but within the limits: served
    r = exchange(port, request("PUT", "/kv/hdr", b"v", headers=[("X-Big", "b" * 100000)]))
    assert r.status == 200, r
    r = exchange(port, request("GET", "/kv/hdr", headers=[("X-H%d" % i, "v") for i in range(60)] +
                               [("X-Triekv-Min-Seq", r.headers["x-triekv-seq"])]))
    assert r.status == 200 and r.body == b"v", r
    # a garbled request line and a bare HTTP/0.9 line
    for data in (b"GARBAGE\r\n\r\n", b"GET /health\r\n\r\n", b"\x00\x01\x02\r\n\r\n"):
        with RawConn(port) as c:
            c.send(data)
            assert c.response().status == 400
            assert c.closed()
    assert_serving(t)


def test_query_parameter_abuse(topo):
    t = topo.start()
    port = t.proxy.port

    def code(method, target, body=None):
        r = exchange(port, request(method, target, body))
        assert r.is_json_error(), (target, r)
        return r.status, r.json()["error"]

    many = "&".join("p%d=1" % i for i in range(40))
    for method, target in (("GET", "/bulk/range?" + many), ("POST", "/bulk?" + many), ("POST", "/bulk/get?" + many),
                           ("GET", "/stats?" + many), ("GET", "/kv/apple?" + many)):
        assert code(method, target, b"{}" if method == "POST" else None) == (400, "bad_request"), target
    for method, target in (("GET", "/bulk/range?limit=1&limit=1"), ("GET", "/bulk/range?prefix=a&prefix=a"),
                           ("POST", "/bulk?atomic=false&atomic=false"),
                           ("POST", "/bulk?encoding=base64&encoding=base64"),
                           ("POST", "/bulk/delete?atomic=false&%61tomic=false"),
                           ("GET", "/stats?cluster=true&cluster=true"),
                           ("GET", "/kv/apple?x=1&x=1"), ("POST", "/bulk/get?encoding=utf8&encoding=utf8")):
        assert code(method, target, b"{}" if method == "POST" else None) == (400, "bad_request"), target
    for method, target in (("GET", "/bulk/range?bogus=1"), ("POST", "/bulk/get?atomic=false"),
                           ("GET", "/health?verbose=1"), ("GET", "/bulk/range?encoding=hex"),
                           ("POST", "/bulk?atomic=maybe"), ("GET", "/bulk/range?keys_only=yes"),
                           ("GET", "/bulk/range?prefix=a&start_key=a")):
        assert code(method, target, b'{"keys": []}' if method == "POST" else None) == (400, "bad_request"), target
    for target in ("/bulk/range?limit=0", "/bulk/range?limit=1001", "/bulk/range?limit=-1", "/bulk/range?limit=1e3",
                   "/bulk/range?limit=99999999999", "/bulk/range?limit="):
        assert code("GET", target) == (400, "bad_limit"), target
    # empty pieces and a percent-encoded name are fine
    r = exchange(port, request("GET", "/bulk/range?&&%6Cimit=5&&keys_only=true&"))
    assert r.status == 200 and r.json() == {"items": [], "next": None}, r
    r = t.proxy.post("/bulk?%61tomic=false", data=json.dumps({"apple": "1", "zebra": "2"}))
    assert r.status_code == 200 and r.json()["parts_failed"] == 0, r.text
    assert direct(t, b"apple") == b"1" and direct(t, b"zebra") == b"2"
    assert_serving(t)


# Regression test (bug found at caef4d0, fixed in d7f0b47). The bug: a malformed X-Triekv-Min-Seq is refused by a node
#   on every read (400 bad_request), but the proxy ignores it on /bulk/range and on a cross-shard /bulk/get
#   (it sends them to the mains without the header) and answers 200
def test_malformed_min_seq_is_refused_on_every_read(topo):
    t = topo.start()
    h = {"X-Triekv-Min-Seq": "abc"}
    for node in (t.main("a"), t.replica("a")):  # what a node says
        assert node.get("/bulk/range?limit=1", headers=h).status_code == 400
        assert node.post("/bulk/get", data='{"keys": ["apple"]}', headers=h).status_code == 400
    outcomes = []
    for what, r in (("kv", t.proxy.get("/kv/apple", headers=h)),
                    ("bulk/get one shard", t.proxy.post("/bulk/get", data='{"keys": ["apple"]}', headers=h)),
                    ("range", t.proxy.get("/bulk/range?limit=1", headers=h)),
                    ("bulk/get two shards", t.proxy.post("/bulk/get", data='{"keys": ["apple", "zebra"]}', headers=h))):
        outcomes.append((what, r.status_code, r.json().get("error")))
    assert all(o[1:] == (400, "bad_request") for o in outcomes), outcomes


# ---- keys --------------------------------------------------------------------------------------

def test_key_size_limits_on_every_endpoint(topo):
    t = topo.start()
    p = t.proxy
    for n, shard_key in ((1024, b"k"), (1024, b"a")):
        key = shard_key * n
        r = p.put("/kv/" + pkey(key), data=b"max")
        assert r.status_code == 200, r.text
        assert direct(t, key) == b"max"
        r = p.get("/kv/" + pkey(key), headers={"X-Triekv-Min-Seq": r.headers["X-Triekv-Seq"]})
        assert r.status_code == 200 and r.content == b"max"
        r = p.post("/bulk/get?encoding=base64", data=json.dumps({"keys": [b64(key), b64("zz")]}))
        assert r.status_code == 200, r.text
        r = p.get("/bulk/range?keys_only=true&limit=1&encoding=base64&start_key=" + pkey(key),
                  headers={"X-Triekv-Min-Seq": "1"})
        assert r.status_code == 200 and [unb64(i["key"]) for i in r.json()["items"]] == [key], r.text
        r = p.get("/bulk/range?prefix=" + pkey(key))
        assert r.status_code == 200, r.text
        r = p.post("/bulk/delete?encoding=base64", data=json.dumps({"keys": [b64(key)]}))
        assert r.status_code == 200 and r.json()["deleted"] == 1, r.text
    over = b"k" * 1025
    checks = [
        p.put("/kv/" + pkey(over), data=b"x"), p.get("/kv/" + pkey(over)), p.delete("/kv/" + pkey(over)),
        p.req("HEAD", "/kv/" + pkey(over)),
        p.get("/bulk/range?start_key=" + pkey(over)), p.get("/bulk/range?end_key=" + pkey(over)),
        p.get("/bulk/range?prefix=" + pkey(over)),
        p.post("/bulk", data=json.dumps({over.decode(): "x"})),
        p.post("/bulk?atomic=false", data=json.dumps({"apple": "1", over.decode(): "x"})),
        p.post("/bulk?encoding=base64", data=json.dumps({b64(over): b64("x")})),
        p.post("/bulk/get", data=json.dumps({"keys": ["apple", over.decode()]})),
        p.post("/bulk/delete?atomic=false", data=json.dumps({"keys": ["zebra", over.decode()]})),
    ]
    for r in checks:
        assert r.status_code == 400, (r.request.method, r.request.url[:80], r.status_code, r.text)
        if r.request.method != "HEAD":
            assert r.json()["error"] == "key_too_long", r.text
    assert direct(t, over[:1024]) is None and direct(t, b"apple") is None
    # empty keys
    for r in (p.get("/kv/"), p.put("/kv/", data=b"x"), p.post("/bulk", data='{"": "x"}'),
              p.post("/bulk/get", data='{"keys": [""]}'),
              p.post("/bulk/delete?atomic=false", data='{"keys": ["a", ""]}')):
        assert r.status_code == 400 and r.json()["error"] == "key_empty", r.text
    assert_serving(t)


def test_every_byte_value_in_keys_through_path_and_base64(topo):
    t = topo.start()
    p = t.proxy
    keys = [bytes([i]) for i in range(256)]
    keys += [b"k5" + bytes([i]) for i in range(256)] + [b"k4\xff" + bytes([i]) for i in range(0, 256, 5)]
    keys += [b"%", b"%25", b"+", b"a+b", b"a b", b"/", b"//", b"a/b/", b"?", b"#", b"..", b".", b"k5",
             b"k4\xff\xff\xff"]
    keys = sorted(set(keys))
    s = requests.Session()
    for k in keys:  # through the path, every byte percent-encoded
        r = s.put(p.url + "/kv/" + pct(k), data=b"p:" + k, timeout=10)
        assert r.status_code == 200, (k, r.status_code, r.text)
    for shard in ("a", "b"):
        on_main = dict(read_all(t.main(shard)))
        mine = [k for k in keys if owner(k) == shard]
        assert sorted(on_main) == mine, "shard %s holds %d keys, wants %d" % (shard, len(on_main), len(mine))
        assert all(on_main[k] == b"p:" + k for k in mine)
    t.converge()
    for k in keys:
        r = s.get(p.url + "/kv/" + pct(k), timeout=10)
        assert r.status_code == 200 and r.content == b"p:" + k, (k, r.status_code, r.content[:50])
    # the same keys rewritten with base64 bulk batches (non-atomic, across both shards), read back in
    # request order through a cross-shard /bulk/get
    body = {b64(k): b64(b"b:" + k) for k in keys}
    r = p.post("/bulk?encoding=base64&atomic=false", data=json.dumps(body))
    assert r.status_code == 200 and r.json()["count"] == len(keys), r.text
    order = list(reversed(keys)) + [b"\x00missing", b"zzz-missing"]
    r = p.post("/bulk/get?encoding=base64", data=json.dumps({"keys": [b64(k) for k in order]}),
               headers={"X-Triekv-Min-Seq": "1"})
    assert r.status_code == 200, r.text
    j = r.json()
    assert [(unb64(i["key"]), unb64(i["value"])) for i in j["items"]] == [(k, b"b:" + k) for k in reversed(keys)]
    assert [unb64(k) for k in j["missing"]] == [b"\x00missing", b"zzz-missing"]
    # text JSON: a NUL inside an array key of /bulk/get is fine, in an object key of /bulk it is bad_json
    r = p.post("/bulk/get", data=json.dumps({"keys": ["\x00", "k5\x00", "apple"]}), headers={"X-Triekv-Min-Seq": "1"})
    assert r.status_code == 200 and [i["key"] for i in r.json()["items"]] == ["\x00", "k5\x00"], r.text
    r = p.post("/bulk", data=json.dumps({"a\x00b": "x"}))
    assert r.status_code == 400 and r.json()["error"] == "bad_json", r.text
    # deleting them all, base64, across shards
    r = p.post("/bulk/delete?encoding=base64&atomic=false", data=json.dumps({"keys": [b64(k) for k in keys]}))
    assert r.status_code == 200 and r.json()["deleted"] == len(keys), r.text
    assert read_all(t.main("a")) == [] and read_all(t.main("b")) == []
    assert_serving(t)


# ---- bodies --------------------------------------------------------------------------------------

BAD_BODIES = [
    b"", b"[]", b"[1,2]", b'"str"', b"42", b"null", b"true", b'{"a": {"b": "c"}}', b'{"keys": [["a"]]}',
    b'{"a": "1", "a": "2"}', b'{"keys": ["a"], "keys": ["b"]}', b'{"keys": ["a"], "extra": 1}',
    b"[" * 3000 + b"]" * 3000,
    b'{"a": ' * 3000 + b'"x"' + b"}" * 3000, b"\xff\xfe", b'{"a\\u0000b": "x"}', b'{"": "x"}', b'{"keys": [""]}',
    b'{"a": 1}', b'{"a": null}', b'{"a": ["x"]}', b'{"keys": null}', b'{"keys": [1]}', b'{"keys": [null]}',
    b'{"a": "b"} trailing', b'{"a": "b"', b'{"a": "\xff"}', b'{"\xc3\x28": "b"}', b"{'a': 'b'}",
    b'{"a": "b",}', b"\x00", b" ", b'{"keys": []} {"keys": []}', b'{"k": "v"}' + b" " * 100000 + b"x",
]
BAD_B64_BODIES = [b'{"YQ=": "YQ=="}', b'{"YQ==": "Y"}', b'{"YQ==": "YR=="}', b'{"keys": ["YR=="]}',
                  b'{"keys": ["Y Q=="]}', b'{"QR==": "YQ=="}', b'{"": ""}', b'{"keys": [""]}', b'{"YQ==": "!!!!"}',
                  b'{"a": "YQ=="}', b'{"keys": ["YWJj", "====" ]}', b'{"YWE=": "YQ==", "YWE=": "Yg=="}']


def test_malformed_bulk_bodies_get_the_nodes_answers(topo):
    """Every body a node refuses, the proxy refuses with the node's status and code (it checks the
    whole body before any shard sees it); nothing is written. Compared on the same requests sent to a
    node directly."""
    t = topo.start()
    pport, nport = t.proxy.port, t.main("a").port
    seq0 = t.main("a").seq(), t.main("b").seq()
    mismatches = []
    for path in ("/bulk", "/bulk/get", "/bulk/delete", "/bulk?atomic=false", "/bulk/delete?atomic=false"):
        for body in BAD_BODIES + [b"[" + b",".join(b'"k%d"' % i for i in range(5))]:
            cases = [(path, body)]
            if "atomic" not in path and body != b'{"": "x"}':  # two faults in one item: see the next test
                cases.append((path + "?encoding=base64", body))
            for target, b in cases:
                node_target = target.replace("?atomic=false", "").replace("&atomic=false", "")
                got = exchange(pport, request("POST", target, b))
                want = exchange(nport, request("POST", node_target, b))
                assert got.status >= 400 and got.is_json_error(), (target, b[:60], got)
                if (got.status, got.json()["error"]) != (want.status, want.json()["error"]):
                    mismatches.append((target, b[:60], got.status, got.json()["error"], want.status,
                                       want.json()["error"]))
        for b in BAD_B64_BODIES:
            target = path + ("&" if "?" in path else "?") + "encoding=base64"
            got = exchange(pport, request("POST", target, b))
            node_target = target.replace("atomic=false&", "").replace("?atomic=false", "?")
            want = exchange(nport, request("POST", node_target, b))
            assert got.status >= 400 and got.is_json_error(), (target, b, got)
            if (got.status, got.json()["error"]) != (want.status, want.json()["error"]):
                mismatches.append((target, b, got.status, got.json()["error"], want.status, want.json()["error"]))
    # too many items: 413 too_many_items from both
    many = json.dumps({"keys": ["k%05d" % i for i in range(10001)]}).encode()
    for target in ("/bulk/get", "/bulk/delete"):
        got, want = exchange(pport, request("POST", target, many)), exchange(nport, request("POST", target, many))
        assert (got.status, got.json()["error"]) == (want.status, want.json()["error"]) == (413, "too_many_items")
    assert not mismatches, "the proxy answers differently from a node (target, body, proxy, node):\n" + \
        "\n".join(map(repr, mismatches))
    assert (t.main("a").seq(), t.main("b").seq()) == seq0, "a refused batch was written"
    assert_serving(t)


# Regression test (bug found at caef4d0, fixed in d7f0b47). The bug: /bulk checks every value's base64 before any key,
#   so a body with an empty key before a bad value gets bad_base64 where a node answers key_empty
def test_bulk_error_precedence_is_the_nodes(topo):
    """A node checks a batch item by item (key, then value); the proxy must name the same first
    fault. Item 0 has an empty key, item 1 a value that is not base64."""
    t = topo.start()
    body = b'{"": "eA==", "YQ==": "!!!!"}'
    want = exchange(t.main("a").port, request("POST", "/bulk?encoding=base64", body))
    assert (want.status, want.json()["error"]) == (400, "key_empty")
    for target in ("/bulk?encoding=base64", "/bulk?encoding=base64&atomic=false"):
        got = exchange(t.proxy.port, request("POST", target, body))
        assert (got.status, got.json()["error"]) == (400, "key_empty"), (target, got)


def test_request_framing_content_length_and_chunked(topo):
    t = topo.start()
    port = t.proxy.port
    # chunked bodies are taken whole and forwarded with a Content-Length
    r = exchange(port, request("PUT", "/kv/chunked", b"abcdefghijklmnopqrstuvwxyz" * 3, chunked=True))
    assert r.status == 200, r
    assert direct(t, b"chunked") == b"abcdefghijklmnopqrstuvwxyz" * 3
    body = json.dumps({"chunk-a": "1", "chunk-b": "2"}).encode()
    r = exchange(port, request("POST", "/bulk", body, chunked=True))
    assert r.status == 200 and r.json()["count"] == 2, r
    r = exchange(port, request("POST", "/bulk?atomic=false", json.dumps({"chunk-c": "3", "zchunk": "4"}).encode(),
                               chunked=True))
    assert r.status == 200 and r.json()["parts_failed"] == 0, r
    assert direct(t, b"zchunk") == b"4"
    # Transfer-Encoding wins over a Content-Length
    data = (b"PUT /kv/te-cl HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert exchange(port, data).status == 200
    assert direct(t, b"te-cl") == b"hello"
    # broken framing: JSON 400, nothing written
    for data in (b"PUT /kv/bad1 HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nabc",
                 b"PUT /kv/bad2 HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nabc",
                 b"PUT /kv/bad3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
                 b"PUT /kv/bad4 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc"):
        with RawConn(port) as c:
            c.send(data)
            r = c.response()
            assert r.status == 400 and r.is_json_error("bad_request"), (data, r)
            assert c.closed(), data
    for k in (b"bad1", b"bad2", b"bad3", b"bad4"):
        assert direct(t, k) is None, k
    # a Content-Length shorter than what follows: the rest is the next request on the connection
    with RawConn(port) as c:
        c.send(b"PUT /kv/short HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /health HTTP/1.1\r\n"
               b"Host: x\r\nConnection: close\r\n\r\n")
        assert c.response().status == 200
        r = c.response()
        assert r.status == 200 and r.json()["role"] == "proxy", r
    assert direct(t, b"short") == b"abc"
    # a Content-Length longer than what comes, then the client gives up: nothing is written
    with RawConn(port) as c:
        c.send(b"PUT /kv/long HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        c.sock.shutdown(socket.SHUT_WR)
        assert c.closed(timeout=5)
    assert direct(t, b"long") is None
    assert_serving(t)


def test_expect_100_continue(topo):
    t = topo.start(proxy_extra={"max_body_bytes": 1 << 20})
    port = t.proxy.port
    with RawConn(port) as c:
        c.send(b"PUT /kv/expect HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        r = c.response()
        assert r.status == 100, r
        c.send(b"hello")
        r = c.response()
        assert r.status == 200 and "x-triekv-seq" in r.headers, r
    assert direct(t, b"expect") == b"hello"
    # too large: refused before the body is sent, no 100
    with RawConn(port) as c:
        c.send(b"PUT /kv/expect2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\nExpect: 100-continue\r\n\r\n")
        r = c.response(timeout=5)
        assert r.status == 413 and r.is_json_error("payload_too_large"), r
    # an expectation nobody knows
    r = exchange(port, request("PUT", "/kv/expect3", b"x", headers=[("Expect", "bananas")]))
    assert r.status == 417 and r.is_json_error(), r
    assert direct(t, b"expect2") is None and direct(t, b"expect3") is None
    assert_serving(t)


def test_http10_clients(topo):
    t = topo.start()
    port = t.proxy.port
    with RawConn(port) as c:
        c.send(b"PUT /kv/h10 HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")
        r = c.response()
        assert r.status == 200, r
        assert c.closed(), "an HTTP/1.0 connection without keep-alive stays open"
    with RawConn(port) as c:
        c.send(b"GET /kv/h10 HTTP/1.0\r\nX-Triekv-Min-Seq: 1\r\n\r\n")
        r = c.response()
        assert r.status == 200 and r.body == b"hi" and r.headers["content-length"] == "2", r
        assert c.closed()
    with RawConn(port) as c:  # 1.0 with keep-alive: two requests on one connection
        for _ in range(2):
            c.send(b"GET /kv/zz-none HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = c.response()
            assert r.status == 404 and r.is_json_error("not_found"), r
    with RawConn(port) as c:
        body = b'{"keys": ["h10", "zz-no"]}'
        c.send(b"POST /bulk/get HTTP/1.0\r\nContent-Length: %d\r\nX-Triekv-Min-Seq: 1\r\n\r\n%s" % (len(body), body))
        r = c.response()
        assert r.status == 200 and r.json()["items"] == [{"key": "h10", "value": "hi"}], r
    assert_serving(t)


def test_pipelined_requests_on_one_connection(topo):
    t = topo.start()
    port = t.proxy.port
    reqs, expect = [], []

    def add(data, check):
        reqs.append(data)
        expect.append(check)
    for i in range(6):  # odd: shard a, even: shard b; 3 writes each, so seq 3 has them all
        key = "apipe%d" % i if i % 2 else "zpipe%d" % i
        add(request("PUT", "/kv/" + key, b"v%d" % i, close=False), lambda r: r.status == 200)
    add(request("GET", "/kv/apipe1", headers=[("X-Triekv-Min-Seq", "3")], close=False),
        lambda r: r.status == 200 and r.body == b"v1")
    add(request("HEAD", "/kv/apipe3", headers=[("X-Triekv-Min-Seq", "3")], close=False),
        lambda r: r.status == 200 and r.headers["content-length"] == "2")
    add(request("GET", "/kv/nope", close=False), lambda r: r.status == 404 and r.is_json_error("not_found"))
    add(request("GET", "/bulk/range?start_key=a&keys_only=true", headers=[("X-Triekv-Min-Seq", "1")], close=False),
        lambda r: r.status == 200 and [i["key"] for i in r.json()["items"]] ==
        ["apipe1", "apipe3", "apipe5", "zpipe0", "zpipe2", "zpipe4"])
    add(request("POST", "/bulk/get", json.dumps({"keys": ["zpipe4", "apipe5", "x"]}).encode(),
                headers=[("X-Triekv-Min-Seq", "1")], close=False),
        lambda r: r.status == 200 and [i["value"] for i in r.json()["items"]] == ["v4", "v5"])
    add(request("POST", "/bulk", b"{nope", close=False), lambda r: r.status == 400 and r.is_json_error("bad_json"))
    add(request("POST", "/bulk", json.dumps({"apipe1": "a", "zpipe0": "b"}).encode(), close=False),
        lambda r: r.status == 409 and r.is_json_error("cross_shard"))
    add(request("DELETE", "/kv/zpipe0", close=False), lambda r: r.status == 200 and r.json()["deleted"] is True)
    add(request("GET", "/stats", close=False), lambda r: r.status == 200 and r.json()["role"] == "proxy")
    add(request("PATCH", "/kv/x", close=False), lambda r: r.status == 405 and "allow" in r.headers)
    with RawConn(port) as c:
        for _ in range(3):  # three rounds on the same connection
            c.send(b"".join(reqs))
            for i, check in enumerate(expect):
                r = c.response(head=reqs[i].startswith(b"HEAD"))
                assert check(r), (i, reqs[i][:60], r)
            # the connection is still good for one more
            c.send(request("GET", "/health", close=False))
            assert c.response().status == 200
    assert_serving(t)


def test_body_over_max_body_bytes_is_refused_before_it_is_read(topo):
    t = topo.start(proxy_extra={"max_body_bytes": 65536})
    port = t.proxy.port
    for target in ("/kv/huge", "/bulk", "/bulk/get", "/bulk/delete?atomic=false"):
        with RawConn(port) as c:
            t0 = time.monotonic()
            c.send(("PUT" if target.startswith("/kv") else "POST").encode() + b" " + target.encode() +
                   b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 1000)
            r = c.response(timeout=5)
            assert r.status == 413 and r.is_json_error("payload_too_large"), (target, r)
            assert time.monotonic() - t0 < 3, "413 came after %.1f s" % (time.monotonic() - t0)
    # chunked: refused once it passes the limit
    with RawConn(port) as c:
        c.send(b"PUT /kv/huge HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
               b"8000\r\n" + b"y" * 0x8000 + b"\r\n" + b"8000\r\n" + b"y" * 0x8000 + b"\r\n" + b"64\r\n" + b"y" * 100 +
               b"\r\n")
        r = c.response(timeout=5)
        assert r.status == 413 and r.is_json_error("payload_too_large"), r
    assert direct(t, b"huge") is None
    # exactly at the limit: accepted
    r = t.proxy.put("/kv/limit", data=b"z" * 65536)
    assert r.status_code == 200, r.text
    assert direct(t, b"limit") == b"z" * 65536
    assert_serving(t)


# ---- clients that go away ----------------------------------------------------------------------------

def test_clients_that_vanish_mid_request_or_mid_answer(topo):
    t = topo.start()
    p = t.proxy
    big = os.urandom(8 << 20)
    assert t.main("b").put("/kv/zbig", data=big).status_code == 200
    assert t.main("a").put("/kv/abig", data=big[: 3 << 20]).status_code == 200
    t.converge()
    port = p.port
    # half a request, then gone: in the request line, in the headers, in the body
    for data in (b"GE", b"GET /kv/app", b"PUT /kv/half HTTP/1.1\r\nHost: x\r\nContent-Le",
                 b"PUT /kv/half HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"h" * 5000,
                 b"POST /bulk HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"half\": "):
        for reset in (False, True):
            c = RawConn(port)
            c.send(data)
            if reset:
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
    # mid-answer: a large value, a range page and a cross-shard bulk/get, the client leaves after a
    # little (or nothing) of the answer
    for i in range(8):
        c = RawConn(port, rcvbuf=16384)
        c.send(request("GET", "/kv/zbig" if i % 2 else "/kv/abig", close=False))
        if i % 3:
            c.sock.recv(i * 20000 + 1)
        if i % 2:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    for data in (request("GET", "/bulk/range?encoding=base64&limit=5"),
                 request("POST", "/bulk/get?encoding=base64",
                         json.dumps({"keys": [b64("abig"), b64("zbig")]}).encode()),
                 request("GET", "/kv/zbig", headers=[("X-Triekv-Min-Seq", "999999999")]),
                 request("GET", "/bulk/range?start_key=a", headers=[("X-Triekv-Min-Seq", "999999999")])):
        c = RawConn(port)
        c.send(data)
        time.sleep(0.05)
        c.close()
    assert direct(t, b"half") is None
    # the proxy goes on, and lets go of the connections of the clients that left
    assert_serving(t)
    wait_until(lambda: p.stats()["connections"]["open"] <= 2, 15, "the proxy to close the abandoned connections")
    r = p.get("/kv/zbig")
    assert r.status_code == 200 and r.content == big
