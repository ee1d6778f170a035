"""tests/deploy/test_compose.py - the docker-compose cluster, for real, with the unmodified
deploy/Dockerfile and docker-compose.yml.

It first makes sure a local debian:bookworm-slim exists (tests/deploy/ensure_base_image.sh builds one
with debootstrap when no registry can be reached), then: up --build, both health checks, writes and a
bulk batch on the main read back from the replica, ranges equal, a write to the replica refused, the
replica killed and started again while writes go on, the main restarted with its data, the I/O
backend named in both logs and no error lines, and down -v at the end even when a step failed,
leaving no container, network or volume behind. Then the "proxy" profile: shard b and the proxy
join, keys land on their shard, and the proxy's cluster view adds both up. Without a Docker engine
the tests are skipped, not passed."""
import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAIN, REPLICA, PROXY = "http://127.0.0.1:3030", "http://127.0.0.1:3031", "http://127.0.0.1:3000"


def docker_available():
    if shutil.which("docker") is None or shutil.which("docker-compose") is None:
        return "docker or docker-compose is not installed"
    r = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if r.returncode != 0:
        return "no Docker engine answers: " + (r.stderr.strip().splitlines() or ["?"])[-1]
    return None


REASON = docker_available()
pytestmark = pytest.mark.skipif(REASON is not None, reason="Docker: %s" % REASON)


def compose(project, *args, timeout=900, check=True):
    cmd = ["docker-compose", "-p", project, "-f", os.path.join(ROOT, "docker-compose.yml")] + list(args)
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("%s failed:\n%s\n%s" % (" ".join(cmd), r.stdout[-3000:], r.stderr[-3000:]))
    return r.stdout


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_healthy(project, services, timeout=180):
    deadline = time.monotonic() + timeout
    status = {}
    while time.monotonic() < deadline:
        for s in services:
            cid = compose(project, "ps", "-q", s).strip()
            if not cid:
                status[s] = "absent"
                continue
            r = subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", cid], capture_output=True,
                               text=True)
            status[s] = r.stdout.strip()
        if all(v == "healthy" for v in status.values()):
            return
        time.sleep(1)
    raise AssertionError("not healthy after %d s: %s" % (timeout, status))


def whole_range(url):
    items, cursor = [], None
    for _ in range(10000):
        q = "/bulk/range?encoding=base64&limit=1000" + ("&cursor=" + cursor if cursor else "")
        st, body = http("GET", url + q)
        assert st == 200, body
        page = json.loads(body)
        items += [(i["key"], i["value"]) for i in page["items"]]
        cursor = page["next"]
        if cursor is None:
            return items
    raise AssertionError("range did not end")


def converge(timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seq = json.loads(http("GET", MAIN + "/stats")[1])["seq"]
            applied = json.loads(http("GET", REPLICA + "/stats")[1])["replication"]["applied_seq"]
            if applied == seq and whole_range(MAIN) == whole_range(REPLICA):
                return
        except (OSError, ValueError, KeyError, AssertionError):
            pass
        time.sleep(0.5)
    raise AssertionError("the replica did not converge within %d s" % timeout)


@pytest.fixture(scope="module")
def cluster():
    r = subprocess.run(["sh", os.path.join(ROOT, "tests", "deploy", "ensure_base_image.sh")], capture_output=True,
                       text=True, timeout=1200)
    assert r.returncode == 0, "cannot provide debian:bookworm-slim:\n" + r.stdout[-2000:] + r.stderr[-2000:]
    project = "triekvtest%d" % os.getpid()
    try:
        compose(project, "up", "--build", "-d", timeout=1800)
        wait_healthy(project, ["main", "replica"])
        yield project
    finally:  # the trap: whatever happened, nothing is left behind
        compose(project, "--profile", "proxy", "down", "-v", "--remove-orphans", check=False, timeout=300)
        left = []
        for what in (["ps", "-a"], ["network", "ls"], ["volume", "ls"]):
            out = subprocess.run(["docker"] + what + ["--format", "{{.Names}}" if what[0] == "ps" else "{{.Name}}"],
                                 capture_output=True, text=True).stdout
            left += [l for l in out.split() if l.startswith(project)]
        assert not left, "left behind: %s" % left


def test_compose_cluster(cluster):
    project = cluster
    # writes and a bulk batch on the main, read from the replica
    for i in range(50):
        st, body = http("PUT", MAIN + "/kv/key%03d" % i, b"value %d" % i)
        assert st == 200, body
    bulk = {base64.b64encode(bytes([0, 255, i])).decode(): base64.b64encode(bytes(range(i))).decode()
            for i in range(1, 40)}
    st, body = http("POST", MAIN + "/bulk?encoding=base64", json.dumps(bulk).encode())
    assert st == 200, body
    converge()
    st, body = http("GET", REPLICA + "/kv/key007")
    assert (st, body) == (200, b"value 7")
    # the replica refuses writes, naming the main
    st, body = http("PUT", REPLICA + "/kv/nope", b"x")
    assert st == 403, body
    assert json.loads(body)["error"] == "read_only_replica"
    assert "http://localhost:3030" in json.loads(body)["message"]
    # kill the replica, keep writing, start it again: it converges
    compose(project, "kill", "replica")
    for i in range(50, 120):
        assert http("PUT", MAIN + "/kv/key%03d" % i, b"value %d" % i)[0] == 200
    assert http("DELETE", MAIN + "/kv/key001")[0] == 200
    compose(project, "start", "replica")
    wait_healthy(project, ["replica"])
    converge()
    # restart the main: the data survives and replication resumes
    before = whole_range(MAIN)
    compose(project, "restart", "main")
    wait_healthy(project, ["main"])
    assert whole_range(MAIN) == before
    assert http("PUT", MAIN + "/kv/after-restart", b"yes")[0] == 200
    converge()
    assert http("GET", REPLICA + "/kv/after-restart") == (200, b"yes")
    # the logs name the I/O backend each container chose, and hold no error line
    for service in ("main", "replica"):
        log = compose(project, "logs", "--no-color", service)
        serving = [l for l in log.splitlines() if "node: serving:" in l]
        assert serving, "no start line in the %s log:\n%s" % (service, log[-2000:])
        assert all(("i/o io_uring" in l or "i/o posix" in l) for l in serving), serving
        errors = [l for l in log.splitlines() if " error " in l or "assertion failed" in l]
        assert not errors, "error lines in the %s log: %s" % (service, errors)
        print("%s: %s" % (service, serving[-1].split("node: ")[-1]))


def test_compose_proxy_profile(cluster):
    """docker-compose --profile proxy: shard b (main-b, replica-b) and triekv-proxy on 3000."""
    project = cluster
    compose(project, "--profile", "proxy", "up", "-d", timeout=600)
    wait_healthy(project, ["main", "replica", "main-b", "replica-b", "proxy"])
    for key, value in ((b"apple", b"red"), (b"zebra", b"striped"), (b"m", b"edge")):
        st, body = http("PUT", PROXY + "/kv/" + key.decode(), value)
        assert st == 200, body
    # "apple" is shard a's: on the main at 3030; the others are shard b's, not there
    assert http("GET", MAIN + "/kv/apple") == (200, b"red")
    assert http("GET", MAIN + "/kv/zebra")[0] == 404
    assert http("GET", MAIN + "/kv/m")[0] == 404
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(http("GET", PROXY + "/kv/" + k)[0] == 200 for k in ("apple", "zebra", "m")):
            break
        time.sleep(0.5)
    assert http("GET", PROXY + "/kv/zebra") == (200, b"striped")
    st, body = http("POST", PROXY + "/bulk", json.dumps({"avocado": "1", "zucchini": "2"}).encode())
    assert st == 409 and json.loads(body)["error"] == "cross_shard", body
    st, body = http("GET", PROXY + "/stats?cluster=true")
    view = json.loads(body)
    assert view["cluster"]["nodes_answered"] == 4, view["cluster"]
    assert all(b["up"] for s in view["shards"] for b in [s["main"]] + s["replicas"]), view["shards"]
    keys_on_mains = {n["shard"]: n["stats"]["keys"] for n in view["cluster"]["node_stats"] if n["role"] == "main"}
    assert keys_on_mains["b"] == 2, keys_on_mains
    log = compose(project, "--profile", "proxy", "logs", "--no-color", "proxy")
    assert "proxy: serving:" in log and " error " not in log, log[-2000:]
