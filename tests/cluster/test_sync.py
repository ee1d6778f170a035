"""tests/cluster/test_sync.py - replication_mode sync (an OK means a replica has the write; a
timeout is 503 but the write stays committed) and read-your-writes on a replica with
X-Triekv-Min-Seq (waits, bounded, then 503)."""
import json
import time

from .conftest import applied_seq, assert_same_data, b64, wait_converged, wait_until

SYNC = ["--replication-mode", "sync", "--min-replica-acks", "1", "--replication-timeout-ms", "1500"]


def test_sync_write_times_out_but_stays_committed(cluster):
    main, (rep,) = cluster.simple(1, main_args=SYNC)
    r = main.put("/kv/before", data=b"1")
    assert r.status_code == 200, r.text
    wait_converged(main, [rep], timeout=10)
    rep.stop()
    seq_before = main.seq()
    t0 = time.monotonic()
    r = main.put("/kv/lonely", data=b"committed anyway")
    took = time.monotonic() - t0
    assert r.status_code == 503, "a sync write with its only replica down: %d %s" % (r.status_code, r.text)
    assert 1.2 <= took <= 3.5, "the 503 came after %.2f s, want about the 1.5 s replication timeout" % took
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    j = r.json()
    assert isinstance(j.get("error"), str) and isinstance(j.get("message"), str), j
    assert "committed" in j["message"], "the 503 must say the write is committed: %s" % j
    # it is on the main
    g = main.get("/kv/lonely")
    assert g.status_code == 200 and g.content == b"committed anyway", (g.status_code, g.text)
    assert main.seq() == seq_before + 1
    if r.headers.get("X-Triekv-Seq") is not None:
        assert int(r.headers["X-Triekv-Seq"]) == seq_before + 1
    # other writes also time out (no OK without a replica), reads on the main are not held up
    t0 = time.monotonic()
    r2 = main.post("/bulk", data=json.dumps({"b1": "x", "b2": "y"}))
    assert r2.status_code == 503, r2.text
    t0 = time.monotonic()
    assert main.get("/kv/before").status_code == 200
    assert time.monotonic() - t0 < 0.5
    # back: the replica gets them
    rep.start()
    wait_converged(main, [rep], timeout=20, what="after the replica came back")
    g = rep.get("/kv/lonely")
    assert g.status_code == 200 and g.content == b"committed anyway"
    assert rep.get("/kv/b2").content == b"y"
    assert_same_data(main, [rep])
    # and sync writes answer OK again, quickly
    t0 = time.monotonic()
    r = main.put("/kv/again", data=b"ok")
    assert r.status_code == 200, r.text
    assert time.monotonic() - t0 < 1.0


def test_sync_ok_means_on_the_replica(cluster):
    main, (rep,) = cluster.simple(1, main_args=SYNC)
    stale = []
    slow = 0.0
    for i in range(300):
        k = "s%04d" % (i % 120)  # overwrites too
        v = b"value-%d" % i
        t0 = time.monotonic()
        if i % 10 == 9:
            r = main.post("/bulk?encoding=base64", data=json.dumps({b64(k): b64(v), b64("bulk\x00%d" % i): b64(v)}))
        elif i % 25 == 24:
            r = main.delete("/kv/" + k)
            v = None
        else:
            r = main.put("/kv/" + k, data=v)
        slow = max(slow, time.monotonic() - t0)
        if v is None and r.status_code == 404:
            continue
        assert r.status_code == 200, "sync write %d: %d %s" % (i, r.status_code, r.text)
        seq = int(r.headers["X-Triekv-Seq"])
        g = rep.get("/kv/" + k)  # at once, no X-Triekv-Min-Seq
        if v is None:
            ok = g.status_code == 404
        else:
            ok = g.status_code == 200 and g.content == v and g.headers.get("ETag") == '"%d"' % seq
        if not ok:
            stale.append((i, k, seq, g.status_code, g.content[:40], g.headers.get("ETag")))
    assert not stale, "%d OK'd sync writes were not readable on the replica right after the OK: %r" % (
        len(stale), stale[:10])
    assert slow < 1.0, "a sync write took %.2f s with a healthy replica" % slow
    e = main.replica_entry(rep.repl_url)
    assert e["acked_seq"] == main.seq(), e
    assert main.repl()["mode"] == "sync"


def test_read_your_writes_min_seq(cluster):
    main, (rep,) = cluster.simple(1)
    bad = []
    for i in range(150):
        r = main.put("/kv/ryw", data=b"v%d" % i)
        assert r.status_code == 200
        seq = int(r.headers["X-Triekv-Seq"])
        g = rep.get("/kv/ryw", headers={"X-Triekv-Min-Seq": str(seq)})
        if g.status_code != 200 or g.content != b"v%d" % i or g.headers.get("ETag") != '"%d"' % seq:
            bad.append((i, seq, g.status_code, g.text[:100]))
    assert not bad, "reads with X-Triekv-Min-Seq did not see the write: %r" % bad[:10]
    # a min seq already reached answers at once; /bulk/get and HEAD honour it too
    seq = main.seq()
    r = rep.post("/bulk/get", data=json.dumps({"keys": ["ryw"]}), headers={"X-Triekv-Min-Seq": str(seq)})
    assert r.status_code == 200 and r.json()["items"][0]["value"] == "v149", r.text
    assert rep.req("HEAD", "/kv/ryw", headers={"X-Triekv-Min-Seq": str(seq)}).status_code == 200
    # malformed
    assert rep.get("/kv/ryw", headers={"X-Triekv-Min-Seq": "abc"}).status_code == 400


def test_min_seq_read_times_out_when_stream_blocked(cluster):
    rep = cluster.replica(args=["--replication-read-wait-ms", "500"])
    relay = cluster.relay(rep.repl_port)
    main = cluster.main([relay.url], args=["--replication-timeout-ms", "2000"])
    r = main.put("/kv/x", data=b"old")
    wait_converged(main, [rep], timeout=10)
    relay.set_mode("blackhole")
    time.sleep(0.2)
    r = main.put("/kv/x", data=b"new")
    assert r.status_code == 200
    seq = int(r.headers["X-Triekv-Seq"])
    t0 = time.monotonic()
    g = rep.get("/kv/x", headers={"X-Triekv-Min-Seq": str(seq)})
    took = time.monotonic() - t0
    assert g.status_code == 503, "a replica read for seq %d through a blackhole: %d %s" % (seq, g.status_code,
                                                                                          g.text)
    assert 0.4 <= took <= 1.5, "the 503 came after %.2f s, want about 0.5 s" % took
    j = g.json()
    assert isinstance(j.get("error"), str) and isinstance(j.get("message"), str), j
    # without the header the replica answers its (stale) value at once
    g = rep.get("/kv/x")
    assert g.status_code == 200 and g.content == b"old"
    assert applied_seq(rep) < seq
    # a read that is waiting gets its answer as soon as the stream heals
    relay.set_mode("pass")
    wait_until(lambda: rep.get("/kv/x", headers={"X-Triekv-Min-Seq": str(seq)}).status_code == 200, 20,
               "the replica to catch up after the blackhole")
    assert rep.get("/kv/x").content == b"new"


def test_sync_min_acks_counts_replicas(cluster):
    """min_replica_acks 1 of 2: one replica down does not hold writes up; min_replica_acks 2 of 2: it
    does (503 after the timeout, the write committed)."""
    main, (r1, r2) = cluster.simple(2, main_args=SYNC)
    assert main.put("/kv/a", data=b"1").status_code == 200
    r2.stop()
    t0 = time.monotonic()
    for i in range(20):
        r = main.put("/kv/one-down-%d" % i, data=b"x")
        assert r.status_code == 200, r.text
        assert r1.get("/kv/one-down-%d" % i).status_code == 200
    assert time.monotonic() - t0 < 3.0
    r2.start()
    wait_converged(main, [r1, r2], timeout=20)
    main.stop()
    main.args = ["--replication-mode", "sync", "--min-replica-acks", "2", "--replication-timeout-ms", "1500"]
    main.start()
    r = main.put("/kv/both", data=b"y")
    assert r.status_code == 200, r.text
    for rep in (r1, r2):
        assert rep.get("/kv/both").content == b"y", rep.name
    r1.stop()
    t0 = time.monotonic()
    r = main.put("/kv/half", data=b"z")
    took = time.monotonic() - t0
    assert r.status_code == 503, r.text
    assert 1.2 <= took <= 3.5, took
    assert "committed" in r.json()["message"]
    assert r2.get("/kv/half").content == b"z"  # the replica that is up has it
    r1.start()
    wait_converged(main, [r1, r2], timeout=20)
    assert_same_data(main, [r1, r2])
