"""Binary keys and values: every byte value as a key, random binary data, empty values, and the
exact size limits of keys and values."""
import random
import urllib.parse

from conftest import Client, assert_json_error, assert_seq_reply, b64, pkey, unb64


def range_all_b64(c, params=""):
    out = []
    q = "encoding=base64" + ("&" + params if params else "")
    r = c.get("/bulk/range?" + q)
    while True:
        assert r.status == 200, r
        page = r.json()
        out += [(unb64(i["key"]), unb64(i["value"])) for i in page["items"]]
        if page["next"] is None:
            return out
        r = c.get("/bulk/range?encoding=base64&cursor=" + urllib.parse.quote(page["next"], safe=""))


def test_every_single_byte_key_round_trips(server):
    c = Client(server)
    seqs = {}
    for b in range(256):
        key = bytes([b])
        value = bytes([b, 255 - b]) * 3 + b"#%d" % b
        seqs[key] = assert_seq_reply(c.put("/kv/%%%02X" % b, value))
    for b in range(256):
        key = bytes([b])
        r = c.get("/kv/%%%02x" % b)  # lower-case hex is the same key
        assert r.status == 200, (b, r)
        assert r.body == bytes([b, 255 - b]) * 3 + b"#%d" % b, b
        assert r.header("ETag") == '"%d"' % seqs[key]
    items = range_all_b64(c)
    assert [k for k, _ in items] == [bytes([b]) for b in range(256)], "all 256 keys, in byte order"
    assert all(v == bytes([k[0], 255 - k[0]]) * 3 + b"#%d" % k[0] for k, v in items)
    # and with small pages
    got = []
    r = c.get("/bulk/range?encoding=base64&keys_only=true&limit=17")
    while True:
        page = r.json()
        got += [unb64(i["key"]) for i in page["items"]]
        if not page["next"]:
            break
        r = c.get("/bulk/range?encoding=base64&keys_only=true&limit=17&cursor=" + page["next"])
    assert got == [bytes([b]) for b in range(256)]
    # bulk/get in base64 finds them all
    r = c.post_json("/bulk/get?encoding=base64", {"keys": [b64(bytes([b])) for b in range(256)]})
    assert r.status == 200
    assert [unb64(i["key"]) for i in r.json()["items"]] == [bytes([b]) for b in range(256)]
    assert r.json()["missing"] == []
    # single bytes as a range bound
    items = range_all_b64(c, "start_key=%00&end_key=%02")
    assert [k for k, _ in items] == [b"\x00", b"\x01"]
    items = range_all_b64(c, "prefix=%FF")
    assert [k for k, _ in items] == [b"\xff"]
    # unescaped ASCII in the path is the same key as escaped
    assert c.get("/kv/A").body == c.get("/kv/%41").body
    # and they delete
    for b in range(0, 256, 3):
        assert assert_seq_reply(c.delete("/kv/%%%02X" % b))
    items = range_all_b64(c)
    assert [k for k, _ in items] == [bytes([b]) for b in range(256) if b % 3]


def test_every_byte_inside_keys_and_values(server):
    c = Client(server)
    key = bytes(range(256))
    value = bytes(range(256)) * 4
    assert_seq_reply(c.kv_put(key, value))
    assert c.kv_get(key).body == value
    # the same through bulk base64 with bytes reversed
    rkey = bytes(reversed(range(256)))
    assert_seq_reply(c.post_json("/bulk?encoding=base64", {b64(rkey): b64(value[::-1])}))
    assert c.kv_get(rkey).body == value[::-1]
    assert dict(range_all_b64(c)) == {key: value, rkey: value[::-1]}


def test_random_binary_keys_and_values(server):
    rng = random.Random(1234)
    c = Client(server)
    model = {}
    for i in range(300):
        k = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
        v = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 7, 100, 1000, 5000])))
        assert_seq_reply(c.kv_put(k, v))
        model[k] = v
    # bulk writes of binary data in base64
    batch = {}
    for i in range(200):
        k = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
        batch[k] = bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
    assert_seq_reply(c.post_json("/bulk?encoding=base64", {b64(k): b64(v) for k, v in batch.items()}))
    model.update(batch)
    for k, v in model.items():
        r = c.kv_get(k)
        assert r.status == 200 and r.body == v, k
    items = range_all_b64(c)
    assert [k for k, _ in items] == sorted(model)
    assert dict(items) == model
    # a prefix of random bytes
    pre = sorted(model)[len(model) // 2][:1]
    got = range_all_b64(c, "prefix=" + pkey(pre))
    assert [k for k, _ in got] == sorted(k for k in model if k.startswith(pre))
    # bulk/delete of half of them in base64
    gone = sorted(model)[::2]
    r = c.post_json("/bulk/delete?encoding=base64", {"keys": [b64(k) for k in gone]})
    assert r.status == 200 and r.json()["deleted"] == len(gone)
    for k in gone:
        del model[k]
    assert dict(range_all_b64(c)) == model


def test_empty_value(server):
    c = Client(server)
    seq = assert_seq_reply(c.kv_put("empty", b""))
    r = c.kv_get("empty")
    assert r.status == 200
    assert r.body == b""
    assert r.header("Content-Length") == "0"
    assert r.header("ETag") == '"%d"' % seq
    assert r.header("Content-Type") == "application/octet-stream"
    assert c.head("/kv/empty").status == 200
    assert c.get("/bulk/range").json()["items"] == [{"key": "empty", "value": ""}]
    assert c.post_json("/bulk/get", {"keys": ["empty"]}).json()["items"] == [{"key": "empty", "value": ""}]
    assert c.get("/stats").json()["keys"] == 1
    # an empty value is not absence
    r = c.kv_put("empty", b"x", {"If-None-Match": "*"})
    assert r.status == 412


def test_value_of_exactly_max_value_size(server_factory):
    limit = 65536
    s = server_factory(["--max-value-size", str(limit)])
    c = Client(s)
    rng = random.Random(5)
    v = bytes(rng.randrange(256) for _ in range(limit))
    assert_seq_reply(c.kv_put("max", v))
    assert c.kv_get("max").body == v
    assert_json_error(c.kv_put("over", v + b"x"), 413, ("value_too_large", "payload_too_large"))
    assert c.kv_get("over").status == 404
    assert_seq_reply(c.post_json("/bulk?encoding=base64", {b64("bmax"): b64(v)}))
    assert c.kv_get("bmax").body == v
    r = c.post_json("/bulk?encoding=base64", {b64("bover"): b64(v + b"y")})
    assert_json_error(r, 413, ("value_too_large", "payload_too_large"))
    assert c.kv_get("bover").status == 404
    items = range_all_b64(c)
    assert dict(items) == {b"max": v, b"bmax": v}


def test_keys_of_max_key_size_and_one_more(server_factory):
    limit = 200
    s = server_factory(["--max-key-size", str(limit)])
    c = Client(s)
    rng = random.Random(9)
    k = bytes(rng.randrange(256) for _ in range(limit))
    assert_seq_reply(c.kv_put(k, b"max"))
    assert c.kv_get(k).body == b"max"
    k1 = k + b"\x01"
    for r in (c.kv_put(k1, b"x"), c.kv_get(k1), c.kv_delete(k1), c.head("/kv/" + pkey(k1))):
        if r.body:
            assert_json_error(r, 400, "key_too_long")
        else:
            assert r.status == 400
    assert_json_error(c.post_json("/bulk?encoding=base64", {b64(k1): b64("x")}), 400, "key_too_long")
    assert_json_error(c.post_json("/bulk/get?encoding=base64", {"keys": [b64(k1)]}), 400, "key_too_long")
    assert_json_error(c.post_json("/bulk/delete?encoding=base64", {"keys": [b64(k1)]}), 400, "key_too_long")
    assert_json_error(c.get("/bulk/range?start_key=" + pkey(k1)), 400, "key_too_long")
    assert_json_error(c.get("/bulk/range?prefix=" + pkey(k1)), 400, "key_too_long")
    assert range_all_b64(c) == [(k, b"max")]
    # the limit counts decoded bytes, not escaped characters: 200 bytes escaped are 600 characters
    assert len(pkey(k)) > limit
    # exactly max through bulk too
    k2 = b"\xee" * limit
    assert_seq_reply(c.post_json("/bulk?encoding=base64", {b64(k2): b64("b")}))
    assert c.kv_get(k2).body == b"b"


def test_binary_keys_across_many_partitions_and_evictions(server_factory):
    """Small pages (many splits) and a 1 MiB cache (evictions, reloads): ranges, prefixes and gets
    still agree with a model, before and after a restart."""
    s = server_factory(["--max-page-size", "4096", "--cache-size", "1"])
    c = Client(s)
    rng = random.Random(77)
    model = {}
    for rnd in range(6):
        batch = {}
        for i in range(400):
            # skewed keys: shared prefixes make a deep trie, 0xff/0x00 runs test the edges
            head = rng.choice([b"", b"\xff\xff", b"\x00\x00", b"user/", b"\xff"])
            k = head + bytes(rng.randrange(256) for _ in range(rng.randint(1, 24)))
            batch[k] = bytes(rng.randrange(256) for _ in range(rng.choice([0, 3, 100, 700, 3000])))
        assert_seq_reply(c.post_json("/bulk?encoding=base64", {b64(k): b64(v) for k, v in batch.items()}))
        model.update(batch)
        gone = rng.sample(sorted(model), 60)
        r = c.post_json("/bulk/delete?encoding=base64", {"keys": [b64(k) for k in gone]})
        assert r.status == 200 and r.json()["deleted"] == 60
        for k in gone:
            del model[k]
    st = c.get("/stats").json()
    assert st["storage"]["splits"] > 0, "the test meant to split partitions: %r" % st["storage"]

    def check():
        assert dict(range_all_b64(c)) == model
        for pre in (b"\xff", b"\xff\xff", b"\x00", b"\x00\x00", b"user/", b"u", b"\xff\xff\xff"):
            got = [k for k, _ in range_all_b64(c, "prefix=" + pkey(pre))]
            assert got == sorted(k for k in model if k.startswith(pre)), pre
        keys = sorted(model)
        lo, hi = keys[len(keys) // 4], keys[3 * len(keys) // 4]
        got = [k for k, _ in range_all_b64(c, "start_key=%s&end_key=%s" % (pkey(lo), pkey(hi)))]
        assert got == [k for k in keys if lo <= k < hi]
        for k in rng.sample(keys, 200):
            r = c.kv_get(k)
            assert r.status == 200 and r.body == model[k], k
        st = c.get("/stats").json()
        assert st["keys"] == len(model)
        assert st["value_bytes"] == sum(len(v) for v in model.values())

    check()
    c.close()
    assert s.stop() == 0
    s.restart()
    c = Client(s)
    check()


def test_default_max_value_size_64_mib(server):
    """The default limits: a value of exactly 64 MiB is taken, one byte more is 413."""
    c = Client(server, timeout=60)
    v = random.Random(3).randbytes(64 << 20)
    assert_seq_reply(c.kv_put("v64", v))
    r = c.kv_get("v64")
    assert r.status == 200 and len(r.body) == len(v) and r.body == v
    assert_json_error(c.kv_put("v64plus", v + b"!"), 413, ("value_too_large", "payload_too_large"))
    assert c.kv_get("v64plus").status == 404
