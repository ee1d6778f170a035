"""tests/cluster/test_auth.py - a replica takes a stream only from a main of its cluster with its
token; refusals are visible on both sides; the replication endpoints live only on the replica's
replication port."""
import time

import pytest
import requests

from .conftest import applied_seq, assert_same_data, wait_converged, wait_until


def assert_refused(main, rep, why):
    """Writes on the main do not reach the replica, and both sides say so."""
    for i in range(20):
        assert main.put("/kv/k%d" % i, data=b"v").status_code == 200
    e = wait_until(lambda: (lambda e: e["state"] == "refused" and e)(main.replica_entry(rep.repl_url)), 15,
                   "the main's replica state to become 'refused' (%s)" % why)
    assert e["last_error"] and "403" in e["last_error"], "last_error should mention the 403: %s" % e
    assert e["connected"] is False, e
    assert e["acked_seq"] == 0, e
    x = rep.repl()
    assert x["refused"] > 0, x
    assert x["applied_seq"] == 0, x
    time.sleep(0.5)
    assert applied_seq(rep) == 0
    assert rep.get("/kv/k0").status_code == 404
    log = rep.log()
    refusal_lines = [l for l in log.splitlines() if "refused" in l]
    assert refusal_lines, "the replica's log has no line about the refusal: %s" % log[-2000:]
    main_lines = [l for l in main.log().splitlines() if "refused" in l]
    assert main_lines, "the main's log has no line about the refusal: %s" % main.log()[-2000:]
    return e, x, refusal_lines, main_lines


def test_other_cluster_refused(cluster):
    rep = cluster.replica(args=["--cluster-id", "b"])
    main = cluster.main([rep.repl_url], args=["--cluster-id", "a"])
    e, x, lines, _ = assert_refused(main, rep, "cluster a vs b")
    assert any("cluster" in l for l in lines), lines


@pytest.mark.parametrize("main_token", [None, "wrong-token", ""], ids=["no-token", "wrong-token", "empty-token"])
def test_token_refused(cluster, main_token):
    rep = cluster.replica(args=["--replication-token", "s3cret-t0ken"])
    args = [] if main_token is None else ["--replication-token", main_token]
    main = cluster.main([rep.repl_url], args=args)
    e, x, lines, _ = assert_refused(main, rep, "token %r" % main_token)
    assert any("token" in l for l in lines), lines
    assert "s3cret-t0ken" not in rep.log() and "s3cret-t0ken" not in main.log(), "a log shows the secret"
    assert "s3cret-t0ken" not in str(e) and "s3cret-t0ken" not in str(x)


def test_matching_cluster_and_token_replicate(cluster):
    args = ["--cluster-id", "prod-7", "--replication-token", "s3cret-t0ken"]
    main, reps = cluster.simple(2, main_args=args, replica_args=args)
    for i in range(100):
        assert main.put("/kv/k%d" % i, data=b"v%d" % i).status_code == 200
    wait_converged(main, reps, timeout=20)
    assert_same_data(main, reps)
    for r in reps:
        x = r.repl()
        assert x["refused"] == 0, x
        e = main.replica_entry(r.repl_url)
        assert e["state"] == "streaming" and e["connected"] is True, e


def test_replica_fixed_after_restart_with_right_token(cluster):
    """A refused replica restarted with the right settings is picked up (the main keeps retrying)."""
    rep = cluster.replica(args=["--replication-token", "other"])
    main = cluster.main([rep.repl_url], args=["--replication-token", "right"])
    assert_refused(main, rep, "token mismatch")
    rep.stop()
    rep.args = ["--replication-token", "right"]
    rep.start()
    # refused streams are retried slowly (at most every 5 s, the backoff cap)
    wait_converged(main, [rep], timeout=20, what="after the replica got the right token")
    assert_same_data(main, [rep])


def test_raw_requests_to_replication_port(cluster):
    rep = cluster.replica(args=["--cluster-id", "c1", "--replication-token", "tok"])
    base = rep.repl_url
    s = requests.Session()
    good = {"X-Triekv-Cluster": "c1", "X-Triekv-Token": "tok"}
    bad_headers = [
        {},
        {"X-Triekv-Cluster": "c2", "X-Triekv-Token": "tok"},
        {"X-Triekv-Cluster": "C1", "X-Triekv-Token": "tok"},
        {"X-Triekv-Cluster": "c1"},
        {"X-Triekv-Cluster": "c1", "X-Triekv-Token": "TOK"},
        {"X-Triekv-Cluster": "c1", "X-Triekv-Token": "tok "},
        {"X-Triekv-Cluster": "c1", "X-Triekv-Token": ""},
        {"X-Triekv-Token": "tok"},
    ]
    requests_to_try = [
        ("GET", "/replication/state", None),
        ("POST", "/replication/apply", b""),
        ("POST", "/replication/apply", b"\x00" * 64),
        ("POST", "/replication/snapshot/begin", b""),
        ("POST", "/replication/snapshot/chunk", b"\x00" * 8),
        ("POST", "/replication/snapshot/end?seq=1000", b""),
        ("GET", "/replication/nothing", None),
    ]
    refused_before = rep.repl()["refused"]
    count = 0
    for h in bad_headers:
        for method, path, body in requests_to_try:
            r = s.request(method, base + path, data=body, headers=dict(h, **{"X-Triekv-Main": "http://evil:1",
                                                                              "X-Triekv-Main-Seq": "999"}),
                          timeout=10)
            count += 1
            assert r.status_code == 403, "%s %s with %r: %d %s" % (method, path, h, r.status_code, r.text[:200])
            assert r.json().get("error"), r.text
    x = rep.repl()
    assert x["refused"] >= refused_before + count, x
    # none of it had any effect: no resync started, nothing applied, the main URL not taken over
    assert x["resyncing"] is False and x["applied_seq"] == 0 and x["snapshots"] == 0, x
    assert x["main_url"] != "http://evil:1" and x["main_seq"] != 999, x
    assert rep.get("/health").status_code == 200
    assert "refused" in rep.log()
    # the right headers are accepted (the checks above can fail)
    r = s.get(base + "/replication/state", headers=good, timeout=10)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["applied_seq"] == 0 and j["resyncing"] is False and j["cluster_id"] == "c1", j
    s.close()


def test_replication_endpoints_not_on_public_ports(cluster):
    main, (rep,) = cluster.simple(1)
    hdr = {"X-Triekv-Cluster": "triekv"}
    for node in (rep, main):
        for method, path in [("GET", "/replication/state"), ("POST", "/replication/apply"),
                             ("POST", "/replication/snapshot/begin"), ("POST", "/replication/snapshot/chunk"),
                             ("POST", "/replication/snapshot/end?seq=5")]:
            r = node.req(method, path, data=b"" if method == "POST" else None, headers=hdr)
            assert r.status_code == 404, "%s %s on %s's public port: %d %s" % (method, path, node.name,
                                                                             r.status_code, r.text[:200])
    # and the replica's replication port answers the same request (control)
    r = requests.get(rep.repl_url + "/replication/state", headers=hdr, timeout=10)
    assert r.status_code == 200, r.text
    assert rep.repl()["resyncing"] is False
    assert main.put("/kv/a", data=b"1").status_code == 200
    wait_converged(main, [rep], timeout=10)
