"""Start-up, configuration, shutdown, durability across restarts, and the replica role."""
import json
import os
import signal
import socket
import threading
import time
import urllib.parse

import pytest

from conftest import Client, assert_json_error, assert_seq_reply, b64, free_port, unb64

EXIT_WITHIN = 5.0


def write_config(tmp_path, obj, name="config.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(p)


def start_fails(server_factory, args, env=None, add_defaults=True):
    """Starts a server that must refuse to start: returns (exit code, stderr lines)."""
    s = server_factory(args, env=env, wait=False, add_defaults=add_defaults)
    t0 = time.monotonic()
    code = s.wait_exit(EXIT_WITHIN)
    assert code is not None, "the server still runs %.0f s after a bad start-up (args %r env %r)" % (
        EXIT_WITHIN, args, env)
    s.stop()
    lines = [l for l in s.stderr_last().splitlines() if l.strip()]
    return code, lines, time.monotonic() - t0


def names_key(line, key):
    low = line.lower()
    return key in low or key.replace("_", "-") in low


def dump_range(c):
    out = {}
    r = c.get("/bulk/range?encoding=base64")
    while True:
        assert r.status == 200, r
        page = r.json()
        for i in page["items"]:
            out[unb64(i["key"])] = unb64(i["value"])
        if page["next"] is None:
            return out
        r = c.get("/bulk/range?encoding=base64&cursor=" + urllib.parse.quote(page["next"], safe=""))


# ---- configuration errors ------------------------------------------------------------------------

FILE_ERRORS = [
    ("unknown-key", {"nonsense_key": 1}, "nonsense_key"),
    ("unknown-key-among-good", {"port": 3030, "max_value_sise": 10}, "max_value_sise"),
    ("wrong-type-int", {"port": "3030"}, "port"),
    ("wrong-type-float", {"max_value_size": 1.5}, "max_value_size"),
    ("wrong-type-bool", {"is_replica": "yes"}, "is_replica"),
    ("wrong-type-string", {"data_dir": 5}, "data_dir"),
    ("wrong-type-list", {"replicas": "http://a:1"}, "replicas"),
    ("out-of-range-port", {"port": 70000}, "port"),
    ("out-of-range-zero", {"max_connections": 0}, "max_connections"),
    ("out-of-range-negative", {"cache_size": -1}, "cache_size"),
    ("out-of-range-min", {"max_range_bytes": 10}, "max_range_bytes"),
    ("out-of-range-timeout", {"request_timeout_ms": 5}, "request_timeout_ms"),
    ("out-of-range-huge", {"max_value_size": 2 ** 62}, "max_value_size"),
    ("out-of-range-past-int64", {"max_value_size": 10 ** 20}, "max_value_size"),
    ("bad-enum", {"fsync": "sometimes"}, "fsync"),
    ("bad-enum-io", {"io_backend": "magic"}, "io_backend"),
    ("bad-bind", {"bind": "not-an-address"}, "bind"),
    ("bad-main-url", {"main_url": "ftp://x"}, "main_url"),
]


@pytest.mark.parametrize("case", FILE_ERRORS, ids=[c[0] for c in FILE_ERRORS])
def test_config_file_errors(server_factory, tmp_path, case):
    _, obj, key = case
    path = write_config(tmp_path, obj)
    # the file alone (no flags that could mask it)
    code, lines, took = start_fails(server_factory, ["--config", path, "--data-dir", str(tmp_path / "d")],
                                    add_defaults=False)
    assert code != 0
    assert len(lines) == 1, "expected exactly one line on stderr, got %r" % lines
    assert names_key(lines[0], key), "the message does not name '%s': %r" % (key, lines[0])


FLAG_ERRORS = [
    ("unknown-flag", ["--bogus-flag", "1"], "bogus"),
    ("wrong-type", ["--max-key-size", "abc"], "max_key_size"),
    ("bad-suffix", ["--max-value-size", "10q"], "max_value_size"),
    ("out-of-range", ["--request-timeout-ms", "5"], "request_timeout_ms"),
    ("out-of-range-port", ["--port", "0"], "port"),
    ("bad-bool", ["--is-replica", "perhaps"], "is_replica"),
    ("bad-enum", ["--log-level", "chatty"], "log_level"),
    ("missing-value", ["--fsync"], "fsync"),
]


@pytest.mark.parametrize("case", FLAG_ERRORS, ids=[c[0] for c in FLAG_ERRORS])
def test_flag_errors(server_factory, case):
    _, args, key = case
    code, lines, _ = start_fails(server_factory, args)
    assert code != 0
    assert len(lines) == 1, "expected exactly one line on stderr, got %r" % lines
    assert names_key(lines[0], key), "the message does not name '%s': %r" % (key, lines[0])


ENV_ERRORS = [
    ("port-not-int", {"TRIEKV_PORT": "abc"}, "port"),
    ("conns-zero", {"TRIEKV_MAX_CONNECTIONS": "0"}, "max_connections"),
    ("bad-enum", {"TRIEKV_IO_BACKEND": "fast"}, "io_backend"),
    ("bad-bool", {"TRIEKV_IS_REPLICA": "maybe"}, "is_replica"),
    ("too-big", {"TRIEKV_THREADS": "100000"}, "threads"),
]


@pytest.mark.parametrize("case", ENV_ERRORS, ids=[c[0] for c in ENV_ERRORS])
def test_env_errors(server_factory, case):
    _, env, key = case
    code, lines, _ = start_fails(server_factory, [], env=env)
    assert code != 0
    assert len(lines) == 1, "expected exactly one line on stderr, got %r" % lines
    assert names_key(lines[0], key), "the message does not name '%s': %r" % (key, lines[0])


def test_config_file_unreadable_or_not_json(server_factory, tmp_path):
    for content, what in (("{not json", "config.json"), ("[1, 2]", "config.json"), (None, "missing.json")):
        path = write_config(tmp_path, content) if content is not None else str(tmp_path / "missing.json")
        code, lines, _ = start_fails(server_factory, ["--config", path])
        assert code != 0
        assert len(lines) == 1, lines
        assert what in lines[0], "the message should name the file: %r" % lines[0]


def test_help_and_version(server_factory):
    s = server_factory(["--help"], wait=False, add_defaults=False)
    assert s.wait_exit(EXIT_WITHIN) == 0
    s = server_factory(["--version"], wait=False, add_defaults=False)
    assert s.wait_exit(EXIT_WITHIN) == 0


# ---- precedence: defaults < file < TRIEKV_* < flags ------------------------------------------------


def test_flags_override_file(server_factory, tmp_path):
    file_port = free_port()
    file_dir = tmp_path / "file-data"
    flag_dir = tmp_path / "flag-data"
    port = free_port()
    path = write_config(tmp_path, {"port": file_port, "data_dir": str(file_dir), "bind": "127.0.0.1",
                                   "max_value_size": 100, "fsync": "strict", "max_key_size": 20})
    s = server_factory(["--max-value-size", "200", "--config", path, "--port", str(port), "--data_dir",
                        str(flag_dir)], add_defaults=False, port=port, data_dir=flag_dir)
    c = Client(s)
    assert_seq_reply(c.kv_put("v", b"x" * 200))
    assert_json_error(c.kv_put("v", b"x" * 201), 413)
    st = c.get("/stats").json()
    assert st["fsync"] == "strict", "a file key no flag overrides still applies"
    assert_json_error(c.kv_put("k" * 21, b"x"), 400, "key_too_long")
    # listening on the flag's port, not the file's
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", file_port), timeout=1).close()
    assert s.stop() == 0
    assert os.path.isdir(flag_dir) and os.listdir(flag_dir), "the store is not in the flag's data dir"
    assert not os.path.exists(file_dir), "the file's data dir was used"


def test_env_overrides_file_and_flags_override_env(server_factory, tmp_path):
    port = free_port()
    env_dir = tmp_path / "env-data"
    path = write_config(tmp_path, {"port": free_port(), "data_dir": str(tmp_path / "file-data"),
                                   "max_value_size": 100, "fsync": "strict", "bind": "0.0.0.0"})
    env = {"TRIEKV_PORT": str(port), "TRIEKV_DATA_DIR": str(env_dir), "TRIEKV_MAX_VALUE_SIZE": "300",
           "TRIEKV_BIND": "127.0.0.1", "TRIEKV_MAX_KEY_SIZE": "50"}
    s = server_factory(["--config", path], env=env, add_defaults=False, port=port, data_dir=env_dir)
    c = Client(s)
    assert_seq_reply(c.kv_put("v", b"x" * 300))
    assert_json_error(c.kv_put("v", b"x" * 301), 413)
    assert c.get("/stats").json()["fsync"] == "strict"
    assert "127.0.0.1" in s.stderr_last()
    assert s.stop() == 0
    assert os.listdir(env_dir)
    assert not os.path.exists(tmp_path / "file-data")
    # a flag beats the variable, the variable beats the file
    port2 = free_port()
    env["TRIEKV_FSYNC"] = "batch"
    s2 = server_factory(["--config", path, "--port", str(port2), "--max-value-size", "1k"], env=env,
                        add_defaults=False, port=port2, data_dir=env_dir)
    c = Client(s2)
    assert_seq_reply(c.kv_put("v", b"x" * 1024))
    assert_json_error(c.kv_put("v", b"x" * 1025), 413)
    assert c.get("/stats").json()["fsync"] == "batch"
    assert_json_error(c.kv_put("k" * 51, b"x"), 400, "key_too_long")
    assert c.kv_get("v").body == b"x" * 1024


# ---- start-up failures ------------------------------------------------------------------------------


def test_port_in_use(server_factory, tmp_path):
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(5)
    port = holder.getsockname()[1]
    try:
        code, lines, took = start_fails(server_factory, ["--bind", "127.0.0.1", "--port", str(port), "--data-dir",
                                                         str(tmp_path / "d")], add_defaults=False)
    finally:
        holder.close()
    assert code != 0
    assert len(lines) == 1, lines
    assert str(port) in lines[0], "the message should name the port: %r" % lines[0]


def test_port_in_use_by_another_server(server_factory):
    a = server_factory()
    code, lines, _ = start_fails(server_factory, ["--port", str(a.port)], add_defaults=False,
                                 env={"TRIEKV_BIND": "127.0.0.1", "TRIEKV_DATA_DIR": a.data_dir + "-b"})
    assert code != 0 and len(lines) == 1 and str(a.port) in lines[0], lines
    assert a.health_ok()


def unwritable_dirs(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("not a directory")
    dirs = [("regular-file", str(f)), ("under-a-file", str(f / "data"))]
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        os.chmod(ro, 0o500)
        dirs.append(("under-read-only-dir", str(ro / "data")))
    else:  # root writes through permission bits: use a read-only file system
        dirs.append(("under-read-only-fs", "/proc/triekv-blackbox/data"))
    return dirs


def test_unwritable_data_dir(server_factory, tmp_path):
    for what, d in unwritable_dirs(tmp_path):
        code, lines, _ = start_fails(server_factory, ["--bind", "127.0.0.1", "--port", str(free_port()),
                                                      "--data-dir", d], add_defaults=False)
        assert code != 0, what
        assert len(lines) == 1, "%s: expected one line on stderr, got %r" % (what, lines)
        assert d in lines[0] or os.path.dirname(d) in lines[0], "%s: the message should name the dir: %r" % (
            what, lines[0])


def test_start_log_line(server_factory):
    s = server_factory(["--fsync", "strict", "--cache-size", "64", "--io-backend", "posix"])
    lines = [l for l in s.stderr_last().splitlines() if str(s.port) in l]
    assert lines, "no start line mentions the port: %r" % s.stderr_last()
    line = lines[0]
    for what in ("main", s.data_dir, "strict", "posix", "64"):
        assert what in line, "the start line should mention %r: %r" % (what, line)
    low = line.lower()
    assert "cache" in low and "fsync" in low and ("i/o" in low or "io_backend" in low or "io " in low), line
    # a replica also listens on its replication port: both ports are in its line
    rport = free_port()
    r = server_factory(["--is-replica", "true", "--replication-port", str(rport), "--cache-size", "32"])
    lines = [l for l in r.stderr_last().splitlines() if str(r.port) in l]
    assert lines, "no start line mentions the port: %r" % r.stderr_last()
    line = lines[0]
    for what in ("replica", "default", r.data_dir, str(rport), "32"):
        assert what in line, "the replica's start line should mention %r: %r" % (what, line)


# ---- shutdown and durability -------------------------------------------------------------------------


def workload(c, n=300, tag=""):
    """Single puts, a bulk, overwrites and deletes; returns the expected contents and ETags."""
    model, etags = {}, {}
    for i in range(n):
        k = b"key-%s%04d" % (tag.encode(), i)
        v = b"value %d " % i + bytes([i % 256]) * (i % 50)
        etags[k] = assert_seq_reply(c.kv_put(k, v))
        model[k] = v
    bulk = {b"bulk-%s%03d" % (tag.encode(), i): bytes([i]) * 10 for i in range(100)}
    seq = assert_seq_reply(c.post_json("/bulk?encoding=base64", {b64(k): b64(v) for k, v in bulk.items()}))
    model.update(bulk)
    etags.update({k: seq for k in bulk})
    for i in range(0, n, 7):
        k = b"key-%s%04d" % (tag.encode(), i)
        assert_seq_reply(c.kv_delete(k))
        del model[k]
        del etags[k]
    for i in range(1, n, 11):
        k = b"key-%s%04d" % (tag.encode(), i)
        if k in model:
            model[k] = b"overwritten"
            etags[k] = assert_seq_reply(c.kv_put(k, b"overwritten"))
    r = c.post_json("/bulk/delete?encoding=base64", {"keys": [b64(b"bulk-%s%03d" % (tag.encode(), i))
                                                              for i in range(0, 100, 3)]})
    assert r.status == 200
    for i in range(0, 100, 3):
        del model[b"bulk-%s%03d" % (tag.encode(), i)]
        etags.pop(b"bulk-%s%03d" % (tag.encode(), i))
    return model, etags


def check_contents(c, model, etags):
    assert dump_range(c) == model
    for k in list(model)[::5]:
        r = c.kv_get(k)
        assert r.status == 200 and r.body == model[k]
        assert r.header("ETag") == '"%d"' % etags[k], "a key's version changed across the restart"
    st = c.get("/stats").json()
    assert st["keys"] == len(model)
    assert st["value_bytes"] == sum(len(v) for v in model.values())


STOP_CASES = [
    ("default", signal.SIGTERM, []), ("strict", signal.SIGTERM, []), ("default", signal.SIGINT, []),
    ("strict", signal.SIGINT, []), ("batch", signal.SIGTERM, ["--fsync-batch-writes", "50"]),
    ("interval", signal.SIGTERM, ["--fsync-interval-ms", "5000"]),
    ("default", signal.SIGTERM, ["--io-backend", "posix", "--max-page-size", "4096", "--cache-size", "1"]),
]


@pytest.mark.parametrize("fsync,sig,extra", STOP_CASES,
                         ids=["default-SIGTERM", "strict-SIGTERM", "default-SIGINT", "strict-SIGINT", "batch-SIGTERM",
                              "interval-SIGTERM", "posix-small-pages-SIGTERM"])
def test_clean_stop_and_restart_keep_writes(server_factory, fsync, sig, extra):
    s = server_factory(["--fsync", fsync] + extra)
    c = Client(s)
    model, etags = workload(c)
    last_seq = c.get("/health").json()["seq"]
    c.close()
    code = s.stop(sig)
    assert code == 0, "%s: exit code %r; stderr: %s" % (sig.name, code, s.stderr_last()[-1000:])
    s.restart()
    c = Client(s)
    check_contents(c, model, etags)
    assert c.get("/health").json()["seq"] == last_seq
    assert assert_seq_reply(c.kv_put("after-restart", b"x")) > last_seq, "seq went back after a restart"
    # and once more, to restart a store that was itself restarted
    model[b"after-restart"] = b"x"
    etags[b"after-restart"] = last_seq + 1
    c.close()
    assert s.stop(sig) == 0
    s.restart()
    check_contents(Client(s), model, etags)


def test_sigterm_with_requests_in_flight(server_factory):
    """SIGTERM while clients write: exit 0, every acknowledged write is there after a restart, and
    no request hangs."""
    s = server_factory(["--fsync", "default"])
    acked = {}
    lock = threading.Lock()
    hung = []
    started = threading.Barrier(9)

    def writer(t):
        c = Client(s, timeout=15)
        started.wait()
        for i in range(100000):
            k = b"w%d-%06d" % (t, i)
            try:
                r = c.kv_put(k, k)
            except socket.timeout:
                hung.append(k)
                return
            except OSError:
                return
            if r.status == 200:
                with lock:
                    acked[k] = r.json()["seq"]
            else:
                assert r.status == 503, r  # shutting down
                return

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.7)
    t0 = time.monotonic()
    code = s.stop(signal.SIGTERM)
    for t in threads:
        t.join(20)
    assert code == 0, "exit code %r: %s" % (code, s.stderr_last()[-1000:])
    assert time.monotonic() - t0 < 12
    assert not hung, "requests hung through the shutdown: %r" % hung[:5]
    assert len(acked) > 50
    s.restart()
    got = dump_range(Client(s))
    missing = [k for k in acked if got.get(k) != k]
    assert not missing, "%d acknowledged writes lost across SIGTERM, e.g. %r" % (len(missing), missing[:5])


def test_sigterm_finishes_a_response_being_sent(server_factory):
    """A GET whose large answer is still being read when SIGTERM arrives gets all of it."""
    s = server_factory()
    c = Client(s, timeout=30)
    value = os.urandom(16 << 20)
    assert_seq_reply(c.kv_put("big", value))
    c.close()
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=15)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(b"GET /kv/big HTTP/1.1\r\nHost: x\r\n\r\n")
    data = sock.recv(65536)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    while True:
        d = sock.recv(1 << 20)
        if not d:
            break
        data += d
    sock.close()
    assert s.wait_exit() == 0
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    assert len(body) == len(value) and body == value, "the answer in flight was cut at %d of %d bytes" % (
        len(body), len(value))


def test_sigterm_finishes_a_request_whose_body_is_arriving(server_factory):
    """The issue: 'SIGTERM/SIGINT: stop accepting, finish in-flight requests'. A PUT whose headers
    and half its body arrived before SIGTERM is in flight: it should be finished and answered."""
    s = server_factory()
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    sock.sendall(b"PUT /kv/inflight HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 50000)
    time.sleep(0.2)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    answer = b""
    try:
        sock.sendall(b"a" * 50000)
        while b"\r\n\r\n" not in answer:
            d = sock.recv(4096)
            if not d:
                break
            answer += d
    except OSError as e:
        answer += ("<%s>" % e).encode()
    sock.close()
    assert s.wait_exit() == 0
    assert answer.startswith(b"HTTP/1.1 200"), (
        "PUT /kv/inflight (headers + 50000 of 100000 body bytes sent before SIGTERM, the rest 0.3 s later): "
        "expected the request to be finished with 200 before exit; got %r" % answer[:200])
    s.restart()
    assert Client(s).kv_get("inflight").body == b"a" * 100000


def test_sigterm_does_not_wait_for_idle_or_stalled_clients(server_factory):
    """Idle keep-alive connections and clients stalled inside a request do not hold the exit."""
    s = server_factory(["--request-timeout-ms", "60000"])
    socks = []
    try:
        for i in range(30):
            sock = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            if i % 3 == 1:
                sock.sendall(b"GET /hea")
            elif i % 3 == 2:
                sock.sendall(b"PUT /kv/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            socks.append(sock)
        assert s.health_ok()
        t0 = time.monotonic()
        code = s.stop(signal.SIGTERM)
        took = time.monotonic() - t0
    finally:
        for sock in socks:
            sock.close()
    assert code == 0, s.stderr_last()[-500:]
    assert took < 3.0, "SIGTERM took %.1f s with idle clients connected" % took
    s.restart()
    assert Client(s).kv_get("x").status == 404


def test_stop_accepting_after_sigterm(server_factory):
    s = server_factory()
    c = Client(s)
    assert c.kv_put("a", b"1").status == 200
    c.close()
    assert s.stop(signal.SIGTERM) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.port), timeout=1).close()


@pytest.mark.parametrize("extra", [[], ["--max-page-size", "4096", "--cache-size", "1"], ["--io-backend", "posix"]],
                         ids=["default-pages", "small-pages", "posix"])
def test_sigkill_strict_keeps_acknowledged_writes(server_factory, extra):
    s = server_factory(["--fsync", "strict"] + extra)
    c = Client(s)
    model, etags = workload(c, n=200)
    # then writers running at the moment of the kill
    acked = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(t):
        cc = Client(s, timeout=10)
        i = 0
        while not stop.is_set():
            k = b"live%d-%05d" % (t, i)
            i += 1
            try:
                r = cc.kv_put(k, k * 3)
            except OSError:
                return
            if r.status == 200:
                with lock:
                    acked[k] = k * 3

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.8)
    code = s.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(10)
    assert code == -signal.SIGKILL
    assert acked, "no write was acknowledged before the kill"
    s.restart()
    c = Client(s)
    got = dump_range(c)
    lost = [k for k in model if got.get(k) != model[k]]
    assert not lost, "acknowledged writes lost after SIGKILL in fsync=strict: %r" % lost[:5]
    resurrected = [k for k in got if not k.startswith(b"live") and k not in model]
    assert not resurrected, "acknowledged deletes undone after SIGKILL: %r" % resurrected[:5]
    lost = [k for k in acked if got.get(k) != acked[k]]
    assert not lost, "%d of %d writes acknowledged just before SIGKILL were lost: %r" % (len(lost), len(acked),
                                                                                        lost[:5])
    for k in list(model)[::9]:
        assert c.kv_get(k).header("ETag") == '"%d"' % etags[k]


# ---- the replica role ---------------------------------------------------------------------------------


def test_replica_refuses_writes_and_serves_reads(server_factory, tmp_path):
    data = tmp_path / "shared"
    m = server_factory(data_dir=data)
    c = Client(m)
    c.post_json("/bulk", {"r1": "one", "r2": "two", "r3": "three"})
    seq = assert_seq_reply(c.kv_put("r4", b"\x00\xff"))
    c.close()
    assert m.stop() == 0

    main_url = "http://127.0.0.1:1"
    r = server_factory(["--is-replica", "true", "--main-url", main_url, "--replication-port", str(free_port())],
                       data_dir=data)
    c = Client(r)
    before = dump_range(c)
    assert before == {b"r1": b"one", b"r2": b"two", b"r3": b"three", b"r4": b"\x00\xff"}
    refusals = [
        c.put("/kv/r1", b"new"), c.post("/kv/r1", b"new"), c.put("/kv/fresh", b"new"), c.delete("/kv/r1"),
        c.delete("/kv/absent"), c.put("/kv/r1", b"x", {"If-Match": '"%d"' % seq}),
        c.put("/kv/zz", b"x", {"If-None-Match": "*"}),
        c.post_json("/bulk", {"r1": "x", "new": "y"}), c.post_json("/bulk?encoding=base64", {b64("a"): b64("b")}),
        c.post_json("/bulk/delete", {"keys": ["r1", "r2"]}),
    ]
    for resp in refusals:
        body = assert_json_error(resp, 403, "read_only_replica")
        assert main_url in body["message"], "the refusal should name the main: %r" % body
    assert dump_range(c) == before, "a replica changed its data"
    # reads
    g = c.kv_get("r1")
    assert g.status == 200 and g.body == b"one" and g.header("Content-Type") == "application/octet-stream"
    assert c.head("/kv/r4").status == 200
    assert c.kv_get("r4", {"If-None-Match": '"%d"' % seq}).status == 304
    assert_json_error(c.kv_get("nope"), 404, "not_found")
    bg = c.post_json("/bulk/get", {"keys": ["r1", "nope", "r3"]})
    assert bg.status == 200
    assert bg.json() == {"items": [{"key": "r1", "value": "one"}, {"key": "r3", "value": "three"}],
                         "missing": ["nope"]}
    rg = c.get("/bulk/range?end_key=r4&limit=2")
    assert rg.status == 200 and [i["key"] for i in rg.json()["items"]] == ["r1", "r2"]
    st = c.get("/stats").json()
    assert st["role"] == "replica" and st["keys"] == 4 and st["seq"] == seq
    h = c.get("/health")
    assert h.status == 200 and h.json()["role"] == "replica"
    assert c.get("/metrics").status == 200


def test_replica_without_main_url(server_factory):
    r = server_factory(["--is-replica", "true", "--replication-port", str(free_port())])
    c = Client(r)
    assert_json_error(c.kv_put("a", b"x"), 403, "read_only_replica")
    assert_json_error(c.post_json("/bulk", {"a": "b"}), 403, "read_only_replica")
    assert c.kv_get("a").status == 404
