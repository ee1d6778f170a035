"""tests/cluster/test_faults.py - crashes and network faults: a replica or the main SIGKILLed in the
middle of a write stream, a replica left behind the retained log (resynced by a snapshot while
writes go on), and a replication link that stalls, crawls or resets (through tests/cluster/relay.py).
Then the resync cases of repl.h / repl_send.c: /stats during a resync, a replica ahead of its main or
holding batches its main lost, a replica or main killed mid-snapshot, writes racing a slow snapshot,
and the sender's backoff against a replica that answers every batch 409."""
import json
import random
import shutil
import time


from .conftest import (applied_seq, assert_same_data, b64, diff_summary, pkey, read_all, wait_converged,
                      wait_until)


def assert_acked_present(node, acked, what):
    """Every acknowledged write (key -> (value, seq)) is on node with that value and version."""
    data = dict(read_all(node))
    missing = [k for k in acked if k not in data]
    wrong = [k for k in acked if k in data and data[k] != acked[k][0]]
    assert not missing and not wrong, "%s: %d of %d acknowledged writes missing %r, %d with another value %r" % (
        what, len(missing), len(acked), sorted(missing)[:5], len(wrong), sorted(wrong)[:5])
    return data


# ---- a. a replica SIGKILLed under load ------------------------------------------------------------

def test_replica_killed_during_writes(cluster, writers_factory):
    main, (rep, other) = cluster.simple(2)
    w = writers_factory(main, nthreads=3, tag="a").start()
    w.wait_count(300)
    wait_until(lambda: applied_seq(rep) > 50, 20, "the replica to apply something")
    rep.kill9()
    n_at_kill = w.count()
    w.wait_count(n_at_kill + 500, timeout=30)  # the main keeps serving while the replica is dead
    time.sleep(0.3)
    rep.start()
    w.wait_count(w.count() + 300, timeout=30)  # and while it catches up
    w.stop()
    assert w.failures == 0, "writes on the main failed while a replica was down: %r" % w.errors
    wait_converged(main, [rep, other], timeout=60, what="after the replica's restart")
    data = assert_same_data(main, [rep, other])
    assert_acked_present(rep, w.acked, "restarted replica")
    assert len(data) == len(w.acked), "the main holds %d keys, %d writes were acknowledged" % (
        len(data), len(w.acked))
    # versions survived too
    for k in sorted(w.acked)[::97]:
        a, b = main.get("/kv/" + pkey(k)), rep.get("/kv/" + pkey(k))
        assert a.headers["ETag"] == b.headers["ETag"] == '"%d"' % w.acked[k][1], k
    # it resumed from its own applied seq: no snapshot was needed (the log is all retained)
    e = main.replica_entry(rep.repl_url)
    assert e["snapshots"] == 0, "the restarted replica was resynced with a snapshot: %s" % e
    assert rep.repl()["snapshots"] == 0
    assert "streaming" == wait_until(lambda: main.replica_entry(rep.repl_url)["state"] == "streaming" and
                                     "streaming", 10, "the sender to stream again")


# ---- b. the main SIGKILLed under load, fsync=strict ------------------------------------------------

def test_main_killed_during_writes_strict(cluster, writers_factory):
    main, reps = cluster.simple(2, main_args=["--fsync", "strict"])
    w = writers_factory(main, nthreads=3, tag="b").start()
    w.wait_count(400, timeout=60)
    wait_until(lambda: all(applied_seq(r) > 50 for r in reps), 20, "the replicas to apply something")
    main.kill9()
    w.stop()
    acked = dict(w.acked)
    before = {r.name: applied_seq(r) for r in reps}
    main.start()  # same data dir, same ports
    data = assert_acked_present(main, acked, "the main after kill -9 and restart")
    max_acked = max(s for _, s in acked.values())
    assert main.seq() >= max_acked, "main seq %d < highest acknowledged seq %d" % (main.seq(), max_acked)
    # at most the writes in flight at the kill can be there beyond the acknowledged ones
    extra = [k for k in data if k not in acked]
    assert len(extra) <= 3 * 2, "unacknowledged keys on the main: %r" % extra[:10]

    # more writes after the restart; the replicas continue and converge
    w2 = writers_factory(main, nthreads=2, tag="b2").start()
    w2.wait_count(200, timeout=30)
    w2.stop()
    assert w2.failures == 0, w2.errors
    wait_converged(main, reps, timeout=60, what="after the main's restart")
    assert_same_data(main, reps)
    for r in reps:
        x = r.repl()
        assert x["snapshots"] == 0, "%s was resynced with a snapshot (it had %d): %s" % (r.name, before[r.name], x)
        assert x["applied_seq"] >= before[r.name]
        assert x["main_url"] == main.url
    for e in main.repl()["replicas"]:
        assert e["snapshots"] == 0, e
    assert "replica is ahead" not in main.log(), "the main lost acknowledged writes: " + main.log()[-2000:]


# ---- c. a replica behind the retained log: snapshot while writes go on -----------------------------

SMALL_LOG = ["--replication-retention-mb", "1", "--wal-segment-bytes", "64k", "--checkpoint-wal-bytes", "128k",
             "--checkpoint-interval-ms", "300"]


def bulk_fill(node, prefix, total_bytes, value_size=2000, per_batch=100):
    n = 0
    i = 0
    while n < total_bytes:
        items = {}
        for _ in range(per_batch):
            k = b"%s-%07d\x00" % (prefix, i)
            items[b64(k)] = b64((b"%07d" % i) * (value_size // 7))
            i += 1
            n += value_size
        r = node.post("/bulk?encoding=base64", data=json.dumps(items))
        assert r.status_code == 200, r.text
    return i


def test_replica_resynced_by_snapshot(cluster, writers_factory):
    rep = cluster.replica()
    main = cluster.main([rep.repl_url], args=SMALL_LOG)
    bulk_fill(main, b"before", 300 * 1024)
    wait_converged(main, [rep], timeout=30)
    assert main.replica_entry(rep.repl_url)["snapshots"] == 0
    rep.stop()
    stopped_at = main.seq()
    bulk_fill(main, b"while-down", 5 * 1024 * 1024)
    # deletes and overwrites of keys the replica has, so a stale replica would show
    r = main.post("/bulk/delete", data=json.dumps({"keys": ["before-%07d\x00" % i for i in range(0, 100)]}))
    assert r.status_code == 200 and r.json()["deleted"] == 100, r.text
    for i in range(100, 120):
        assert main.put("/kv/" + pkey(b"before-%07d\x00" % i), data=b"overwritten").status_code == 200
    time.sleep(1.0)  # a few checkpoint intervals: the log the replica needs is dropped
    st = main.stats()
    # keep writing on the main during the whole resync
    w = writers_factory(main, nthreads=2, tag="c", value_size=500).start()
    w.wait_count(50)
    rep.start()
    wait_until(lambda: (rep.repl_maybe() or {}).get("snapshots", 0) >= 1, 60,
               "the replica to receive a snapshot")
    w.wait_count(w.count() + 300, timeout=30)
    w.stop()
    assert w.failures == 0, w.errors
    wait_converged(main, [rep], timeout=60, what="after the snapshot")
    assert_same_data(main, [rep])
    assert_acked_present(rep, w.acked, "the resynced replica")
    x = rep.repl()
    e = main.replica_entry(rep.repl_url)
    assert 1 <= x["snapshots"] <= 2, "replica snapshots: %s" % x
    assert 1 <= e["snapshots"] <= 2, "main's count of snapshots for the replica: %s" % e
    assert x["resyncing"] is False
    # a few seconds later it is still streaming, not resyncing again
    time.sleep(1.5)
    assert rep.repl()["snapshots"] == x["snapshots"]
    assert main.replica_entry(rep.repl_url)["state"] == "streaming"
    assert stopped_at < main.seq()


def test_snapshot_resync_keys_in_version_order(cluster, writers_factory):
    """The same resync as above, but with a key space whose versions ascend in key order (every key
    written once, in key order; one writer thread appending keys that sort last). It checks the
    snapshot machinery (counters, writes during the resync, no resync loop) apart from the order of
    versions within the snapshot, which the test above covers. (Deletes racing the snapshot are
    test_writes_and_deletes_racing_a_slow_snapshot's part, deterministically.)"""
    rep = cluster.replica()
    main = cluster.main([rep.repl_url], args=SMALL_LOG)
    bulk_fill(main, b"a-before", 300 * 1024)
    wait_converged(main, [rep], timeout=30)
    rep.stop()
    bulk_fill(main, b"b-down", 5 * 1024 * 1024)
    time.sleep(1.0)
    w = writers_factory(main, nthreads=1, tag="z", value_size=500).start()  # keys "wz-0-..." sort last
    w.wait_count(50)
    rep.start()
    wait_until(lambda: (rep.repl_maybe() or {}).get("snapshots", 0) >= 1, 60,
               "the replica to receive a snapshot")
    w.wait_count(w.count() + 300, timeout=30)
    w.stop()
    assert w.failures == 0, w.errors
    print("slowest write during the resync: %.3f s" % w.slowest)
    assert w.slowest < 1.0, "a write on the main took %.2f s during a resync (senders must not block " \
        "writes)" % w.slowest
    wait_converged(main, [rep], timeout=60, what="after the snapshot")
    assert_same_data(main, [rep])
    assert_acked_present(rep, w.acked, "the resynced replica")
    x = rep.repl()
    e = main.replica_entry(rep.repl_url)
    assert 1 <= x["snapshots"] <= 2, "replica snapshots: %s" % x
    assert 1 <= e["snapshots"] <= 2, "main's count of snapshots for the replica: %s" % e
    time.sleep(1.5)
    assert rep.repl()["snapshots"] == x["snapshots"], "a resync loop: %s" % rep.repl()
    assert main.replica_entry(rep.repl_url)["state"] == "streaming"


def test_stats_served_while_resyncing(cluster):
    """While a replica loads a snapshot (slowed down by a delaying relay so it lasts seconds), its
    reads answer 503 "resyncing" but /health, /stats and /metrics stay available, and /stats says
    "resyncing": true (the field exists for exactly that)."""
    rep = cluster.replica(start=False)
    relay = cluster.relay(rep.repl_port)
    main = cluster.main([relay.url], args=SMALL_LOG)
    bulk_fill(main, b"k", 3 * 1024 * 1024)  # keys and versions both ascending
    time.sleep(1.0)  # the replica never came: the log from seq 1 is gone past the 1 MiB cap
    relay.set_mode("delay", delay_ms=150)
    rep.start()
    seen = {"stats": set(), "metrics": set(), "health": set(), "kv": set(), "resyncing_true": 0}
    deadline = time.monotonic() + 60
    for _ in range(3000):
        if time.monotonic() > deadline:
            break
        s = rep.get("/stats")
        seen["stats"].add(s.status_code)
        if s.status_code == 200 and s.json()["replication"]["resyncing"]:
            seen["resyncing_true"] += 1
        seen["metrics"].add(rep.get("/metrics").status_code)
        seen["health"].add(rep.get("/health").status_code)
        k = rep.get("/kv/k-0000001%00")
        seen["kv"].add((k.status_code, k.json().get("error") if k.status_code != 200 else None))
        if main.replica_entry(relay.url)["snapshots"] >= 1:
            break
        time.sleep(0.05)
    assert main.replica_entry(relay.url)["snapshots"] >= 1, "no snapshot happened: %s" % main.repl()
    assert (503, "resyncing") in seen["kv"], "the resync was not observed (too fast?): %s" % seen
    assert seen["health"] == {200}, seen
    assert seen["metrics"] == {200}, "/metrics during a resync: %s" % seen
    assert seen["stats"] == {200}, "/stats during a resync answered %s (want 200 with resyncing true)" % seen
    assert seen["resyncing_true"] > 0, seen
    relay.set_mode("pass")
    wait_converged(main, [rep], timeout=30)
    assert_same_data(main, [rep])


# ---- d. a link that stalls, crawls or resets -------------------------------------------------------

RELAY_MAIN_ARGS = ["--replication-timeout-ms", "2000"]
# the replica stalls for at most the timeout (2 s), then the sender backs off (at most 5 s) and
# reconnects: catching up after the link heals must take well under this
CATCH_UP = 20.0


def relayed_cluster(cluster, main_args=RELAY_MAIN_ARGS, replica_args=()):
    rep = cluster.replica(args=replica_args)
    relay = cluster.relay(rep.repl_port)
    main = cluster.main([relay.url], args=main_args)
    return main, rep, relay


def timed_puts(node, prefix, n):
    times = []
    last = 0
    for i in range(n):
        t0 = time.monotonic()
        r = node.put("/kv/%s-%04d" % (prefix, i), data=b"v" * 200)
        times.append(time.monotonic() - t0)
        assert r.status_code == 200, r.text
        last = int(r.headers["X-Triekv-Seq"])
    return times, last


def test_blackhole_then_heal(cluster):
    main, rep, relay = relayed_cluster(cluster)
    timed_puts(main, "pre", 50)
    wait_converged(main, [rep], timeout=20)
    relay.set_mode("blackhole")
    time.sleep(0.2)
    frozen = applied_seq(rep)
    t_start = time.monotonic()
    all_times = []
    for rnd in range(6):  # ~3 s of writes, past the replication timeout
        times, last = timed_puts(main, "bh%d" % rnd, 40)
        all_times += times
        time.sleep(0.5)
    slow = [t for t in all_times if t >= 0.5]
    assert max(all_times) < 1.0 and not slow, "writes on the main were slow while the replica was " \
        "blackholed: max %.3f s, %d over 0.5 s" % (max(all_times), len(slow))
    assert time.monotonic() - t_start < 15
    assert applied_seq(rep) == frozen, "the replica applied writes through a blackhole?"
    assert main.seq() > frozen
    e = main.replica_entry(relay.url)
    assert e["acked_seq"] <= frozen and e["lag_records"] >= 240, e
    assert e["lag_seconds"] > 1.0, "lag_seconds while the replica is blackholed for ~3 s: %s" % e
    assert e["lag_bytes"] > 0, "lag_bytes while %d records are not acknowledged: %s" % (e["lag_records"], e)
    # past the replication timeout the sender has noticed the stall
    wait_until(lambda: main.replica_entry(relay.url)["connected"] is False, 10,
               "the main to notice the stalled replica (connected false)")
    e = main.replica_entry(relay.url)
    assert e["retries"] >= 1 and e["last_error"], e
    x = rep.repl()
    assert x["applied_seq"] == frozen
    assert x["since_contact_seconds"] > 1.0, "the main cannot have spoken through the blackhole: %s" % x
    # heal
    relay.set_mode("pass")
    healed = time.monotonic()
    wait_converged(main, [rep], timeout=CATCH_UP, what="after the blackhole ended")
    took = time.monotonic() - healed
    assert_same_data(main, [rep])
    wait_until(lambda: main.replica_entry(relay.url)["connected"] is True, 10, "connected again")
    assert main.replica_entry(relay.url)["snapshots"] == 0
    print("caught up %.1f s after the blackhole ended" % took)


def test_delay_still_converges(cluster, writers_factory):
    main, rep, relay = relayed_cluster(cluster)
    relay.set_mode("delay", delay_ms=40)
    w = writers_factory(main, nthreads=2, tag="d").start()
    w.wait_count(1500, timeout=60)
    w.stop()
    assert w.failures == 0, w.errors
    assert w.slowest < 1.0, "a write took %.2f s with a slow replication link" % w.slowest
    wait_converged(main, [rep], timeout=CATCH_UP, what="through a 40 ms/chunk link")
    assert_same_data(main, [rep])
    assert relay.bytes_up > 1500 * 100
    relay.set_mode("pass")
    timed_puts(main, "after", 20)
    wait_converged(main, [rep], timeout=10)
    assert_same_data(main, [rep])


def test_resets_still_converge(cluster, writers_factory):
    main, rep, relay = relayed_cluster(cluster)
    w = writers_factory(main, nthreads=2, tag="r").start()
    w.wait_count(200)
    for _ in range(3):
        relay.set_mode("drop")
        time.sleep(0.4)
        relay.set_mode("pass")
        time.sleep(0.4)
    w.wait_count(w.count() + 200)
    w.stop()
    assert w.failures == 0, w.errors
    assert relay.resets >= 1, "the relay reset nothing: the test did not test anything"
    wait_converged(main, [rep], timeout=CATCH_UP, what="after connection resets")
    assert_same_data(main, [rep])
    assert_acked_present(rep, w.acked, "replica after resets")
    e = main.replica_entry(relay.url)
    assert e["retries"] >= 1, e
    assert e["snapshots"] == 0, e


# ---- more resync cases (repl.h: a replica ahead of its main, a resync cut short) ----------------------
# Keys are written once each, in key order, so that versions ascend in key order and these tests do
# not depend on test_replica_resynced_by_snapshot's failure.

def copy_dir(src, dst):
    shutil.copytree(src, dst)


def restore_dir(src, dst):
    shutil.rmtree(dst)
    shutil.copytree(src, dst)


def test_replica_ahead_of_main_is_resynced(cluster, tmp_path):
    """The main loses its last writes (simulated: its data dir is put back to an older copy, as after
    a power loss with fsync=default); the replica that has them must drop them (repl.h: a replica
    ahead of the main is resynced with a snapshot)."""
    main, (rep,) = cluster.simple(1)
    for i in range(100):
        assert main.put("/kv/k%04d" % i, data=b"kept").status_code == 200
    main.stop()
    copy_dir(main.data_dir, str(tmp_path / "main-old"))
    main.start()
    for i in range(100, 150):
        assert main.put("/kv/k%04d" % i, data=b"lost").status_code == 200
    wait_converged(main, [rep], timeout=10)
    main.stop()
    restore_dir(str(tmp_path / "main-old"), main.data_dir)
    main.start()
    assert main.seq() == 100
    wait_until(lambda: (rep.repl_maybe() or {}).get("snapshots", 0) >= 1, 20,
               "the replica ahead of the main to be resynced")
    wait_converged(main, [rep], timeout=20)
    got = dict(read_all(rep))
    assert b"k0120" not in got, "the replica kept writes its main lost"
    assert_same_data(main, [rep])
    assert "ahead of the main" in main.log()


def test_main_lost_writes_then_overtook_the_replica(cluster, tmp_path):
    """As above, but the replica is away while the restarted main takes more new writes than it lost:
    when the replica comes back its applied seq is not past the main's, yet its last records are
    ones the main lost (other values under the same seqs). It must not keep them."""
    main, (rep,) = cluster.simple(1)
    for i in range(100):
        assert main.put("/kv/k%04d" % i, data=b"kept").status_code == 200
    main.stop()
    copy_dir(main.data_dir, str(tmp_path / "main-old"))
    main.start()
    for i in range(100, 120):
        assert main.put("/kv/k%04d" % i, data=b"lost").status_code == 200
    wait_converged(main, [rep], timeout=10)
    main.stop()
    rep.stop()
    restore_dir(str(tmp_path / "main-old"), main.data_dir)
    main.start()
    for i in range(120, 160):  # new writes: seqs 101..140 now mean other writes than on the replica
        assert main.put("/kv/k%04d" % i, data=b"new").status_code == 200
    rep.start()
    # same seq on both sides: only the epochs of batch 140 tell the histories apart
    wait_until(lambda: (rep.repl_maybe() or {}).get("snapshots", 0) >= 1, 20,
               "the replica with the main's lost writes to be resynced")
    wait_converged(main, [rep], timeout=20)
    want, got = read_all(main), read_all(rep)
    assert got == want, ("the replica kept writes its main lost, under seqs the main reused: " +
                         diff_summary(want, got))
    assert "reused their numbers" in main.log()


def test_replica_killed_during_snapshot(cluster):
    """A replica SIGKILLed while loading a snapshot comes back (its store knows the resync was cut
    short), is resynced again and converges."""
    rep = cluster.replica(start=False)
    relay = cluster.relay(rep.repl_port)
    main = cluster.main([relay.url], args=SMALL_LOG)
    bulk_fill(main, b"k", 3 * 1024 * 1024)
    time.sleep(1.0)
    relay.set_mode("delay", delay_ms=150)
    rep.start()

    def loading():
        r = rep.get("/kv/" + pkey(b"k-0000001\x00"))
        return r.status_code == 503 and r.json().get("error") == "resyncing"
    wait_until(loading, 30, "the replica to start loading a snapshot", interval=0.02)
    time.sleep(0.5)
    assert main.replica_entry(relay.url)["snapshots"] == 0, "the snapshot ended too soon for this test"
    rep.kill9()
    relay.set_mode("pass")
    rep.start()
    wait_converged(main, [rep], timeout=30, what="after a replica killed during its snapshot")
    assert_same_data(main, [rep])
    assert main.replica_entry(relay.url)["snapshots"] == 1


def test_writes_and_deletes_racing_a_slow_snapshot(cluster):
    """repl_send.c: the snapshot is a paged scan while the main's writes go on; writes newer than the
    snapshot's seq S may or may not be in it, and streaming from S + 1 replays them harmlessly. Here
    the snapshot is slowed down (small chunks through a delaying relay) and, while it is sent, keys
    it has not reached yet are deleted and overwritten-free new keys are added after them."""
    rep = cluster.replica(start=False)
    relay = cluster.relay(rep.repl_port)
    main = cluster.main([relay.url], args=SMALL_LOG + ["--replication-batch-bytes", "64k"])
    nkeys = bulk_fill(main, b"k", 3 * 1024 * 1024)  # keys and versions ascending
    time.sleep(1.0)
    relay.set_mode("delay", delay_ms=20)
    rep.start()

    def loading():
        r = rep.get("/kv/" + pkey(b"k-0000001\x00"))
        return r.status_code == 503 and r.json().get("error") == "resyncing"
    wait_until(loading, 30, "the replica to start loading a snapshot", interval=0.02)
    assert main.replica_entry(relay.url)["snapshots"] == 0, "the snapshot ended too soon for this test"
    # the last keys (not yet scanned): delete some; add keys that sort after everything
    victims = [b"k-%07d\x00" % i for i in range(nkeys - 20, nkeys)]
    r = main.post("/bulk/delete?encoding=base64", data=json.dumps({"keys": [b64(k) for k in victims]}))
    assert r.status_code == 200 and r.json()["deleted"] == 20, r.text
    for i in range(10):
        assert main.put("/kv/zz-%d" % i, data=b"new").status_code == 200
    assert main.delete("/kv/zz-3").status_code == 200
    wait_until(lambda: main.replica_entry(relay.url)["snapshots"] >= 1, 60, "the snapshot to end")
    relay.set_mode("pass")
    wait_converged(main, [rep], timeout=30, what="after writes raced the snapshot")
    assert_same_data(main, [rep])
    assert main.replica_entry(relay.url)["snapshots"] == 1


def test_main_killed_during_snapshot(cluster):
    """The main SIGKILLed while a replica loads its snapshot: the replica is left mid-resync (it says
    so in GET /replication/state), and the restarted main resyncs it again from scratch."""
    rep = cluster.replica(start=False)
    relay = cluster.relay(rep.repl_port)
    main = cluster.main([relay.url], args=SMALL_LOG)
    bulk_fill(main, b"k", 3 * 1024 * 1024)
    time.sleep(1.0)
    relay.set_mode("delay", delay_ms=150)
    rep.start()

    def loading():
        r = rep.get("/kv/" + pkey(b"k-0000001\x00"))
        return r.status_code == 503 and r.json().get("error") == "resyncing"
    wait_until(loading, 30, "the replica to start loading a snapshot", interval=0.02)
    time.sleep(0.3)
    main.kill9()
    relay.set_mode("pass")
    time.sleep(0.3)
    assert loading(), "the replica stopped resyncing although its snapshot never ended"
    main.start()
    for i in range(20):
        assert main.put("/kv/after-%d" % i, data=b"x").status_code == 200
    wait_converged(main, [rep], timeout=30, what="after the main was killed during a snapshot")
    assert_same_data(main, [rep])
    assert main.replica_entry(relay.url)["snapshots"] == 1


# ---- a replica that keeps answering 409 (gap) --------------------------------------------------------

class _FakeReplica:
    """A replication endpoint in Python: GET /replication/state says applied_seq 0; every POST
    /replication/apply answers 409 gap. Counts the requests."""

    def __init__(self):
        import http.server
        import threading
        fake = self
        self.requests = 0
        self.lock = threading.Lock()

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # answer at once, as a real replica does

            def log_message(self, *a):
                pass

            def _send(self, status, body):
                b = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(b)))
                self.end_headers()
                self.wfile.write(b)

            def do_GET(self):
                with fake.lock:
                    fake.requests += 1
                self._send(200, {"applied_seq": 0, "resyncing": False, "cluster_id": "triekv"})

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                with fake.lock:
                    fake.requests += 1
                self._send(409, {"error": "gap", "message": "records out of sequence: resend from applied_seq"})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def count(self):
        with self.lock:
            return self.requests

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_sender_backs_off_on_repeated_gaps(cluster):
    """repl.h: "Failures are retried with capped exponential backoff". A replica that answers every
    batch with 409 (gap) must not be hammered in a tight loop, nor the main's log flooded."""
    fake = _FakeReplica()
    try:
        main = cluster.main(["http://127.0.0.1:%d" % fake.port])
        assert main.put("/kv/a", data=b"1").status_code == 200
        time.sleep(0.5)
        c0, l0 = fake.count(), len(main.log().splitlines())
        time.sleep(2.0)
        c1, l1 = fake.count(), len(main.log().splitlines())
        e = main.replica_entry("http://127.0.0.1:%d" % fake.port)
        assert "409" in (e["last_error"] or ""), e
        # with a backoff doubling from 50 ms, a few dozen requests at most; a tight loop makes thousands
        assert c1 - c0 <= 40, ("the main sent %d replication requests in 2 s to a replica answering 409 "
                                "(no backoff); its log grew by %d lines: %s" %
                                (c1 - c0, l1 - l0, "\n".join(main.log().splitlines()[-3:])))
        assert l1 - l0 <= 20, "the main's log grew by %d lines in 2 s" % (l1 - l0)
        assert main.get("/kv/a").status_code == 200
    finally:
        cluster.nodes[-1].stop()
        fake.stop()


def test_values_of_max_value_size_replicate_streamed_and_in_snapshots(cluster):
    """repl.h: a value of max_value_size replicates like any other, in the stream (one record per
    request, however large) and in a snapshot (one item alone in its chunk)."""
    rep = cluster.replica()
    main = cluster.main([rep.repl_url], args=SMALL_LOG)
    big = bytes(random.Random(3).randrange(256) for _ in range(1 << 16)) * 1024  # 64 MiB: the default limit
    assert len(big) == 64 << 20
    r = main.put("/kv/big-streamed", data=big)
    assert r.status_code == 200, r.text
    assert main.put("/kv/after", data=b"small").status_code == 200
    wait_converged(main, [rep], timeout=120)
    got = rep.get("/kv/big-streamed", timeout=120)
    assert got.status_code == 200 and got.content == big, "the replica has %d of %d bytes" % (len(got.content), len(big))
    # the replica away while the log it needs is dropped: it comes back through a snapshot
    rep.stop()
    assert main.put("/kv/big-snapshotted", data=big[::-1]).status_code == 200
    bulk_fill(main, b"while-down", 2 * 1024 * 1024)
    time.sleep(1.0)  # a few checkpoint intervals: the log is gone
    rep.start()
    wait_until(lambda: (rep.repl_maybe() or {}).get("snapshots", 0) >= 1, 120, "a snapshot")
    wait_converged(main, [rep], timeout=120, what="after the snapshot")
    for key, value in ((b"big-streamed", big), (b"big-snapshotted", big[::-1])):
        got = rep.get("/kv/" + pkey(key), timeout=120)
        assert got.status_code == 200 and got.content == value, key
    assert rep.repl()["snapshots"] == 1
