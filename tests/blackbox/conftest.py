"""tests/blackbox/conftest.py - start and stop real triekv-server processes for the black-box suite.

The server binary is $TRIEKV_BIN/triekv-server (default: <repo>/bin). Every server binds 127.0.0.1
on a free port, keeps its data in a pytest tmp_path and its stderr in a file next to it. The
`server_factory` fixture kills whatever it started at the end of each test, pass or fail, and
then checks the server's stderr for sanitizer reports (ASan/UBSan builds).

Helpers:
  free_port()                      a loopback port nobody listens on (now)
  Server                           .url .port .data_dir .proc .stderr .stop(sig) .restart() .kill()
  Client(server)                   a tiny keep-alive HTTP client on http.client: exact paths, raw bytes
  assert_json_error(resp, status)  the body is {"error": str, "message": str}
  pkey(bytes) / qkey(bytes)        percent-encode a key for a path / query string
free_port, pkey, b64, unb64, child_env and sanitizer_findings (and the paths BIN_DIR, SERVER_BIN)
come from tests/support/triekv_procs.py, shared with the other suites, and stay importable from here.
"""
import http.client
import json
import os
import signal
import subprocess
import sys
import urllib.parse

import pytest

_TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _TESTS_DIR not in sys.path:  # tests/blackbox is no package: make tests/support importable
    sys.path.insert(0, _TESTS_DIR)

# shared with the other suites; the names the tests import from here are re-exported
from support.triekv_procs import (BIN_DIR, IGNORED_LEAK_FRAMES, LSAN_SUPPRESSIONS, REPO,  # noqa: E402,F401
                                  SERVER_BIN, STOP_TIMEOUT, b64, child_env, free_port, pkey,
                                  poll_health, read_logs, sanitizer_findings, spawn, stop_process,
                                  unb64)

START_TIMEOUT = 20.0  # an ASan build recovering a store is slow


def qkey(key):
    """Percent-encodes a key for a query string ('+' must be %2B there)."""
    return pkey(key)


class ServerStartError(Exception):
    pass


class Server:
    """One triekv-server process. args are extra flags; the port, bind and data dir are added."""

    def __init__(self, tmp_path, args=(), env=None, data_dir=None, name="srv", port=None, wait=True,
                 add_defaults=True):
        self.tmp_path = tmp_path
        self.args = list(args)
        self.env = dict(env or {})
        self.name = name
        self.data_dir = str(data_dir) if data_dir is not None else str(tmp_path / (name + "-data"))
        self.fixed_port = port
        self.add_defaults = add_defaults
        self.port = None
        self.proc = None
        self.starts = 0
        self.stderr_paths = []
        self.exit_codes = []
        if wait is not None:
            self.start(wait=wait)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    # -- process -------------------------------------------------------------------------------

    def cmdline(self):
        cmd = [SERVER_BIN]
        if self.add_defaults:
            cmd += ["--bind", "127.0.0.1", "--port", str(self.port), "--data-dir", self.data_dir]
        return cmd + self.args

    def start(self, wait=True):
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        for attempt in range(5):
            self.port = self.fixed_port or free_port()
            self.starts += 1
            path = str(self.tmp_path / ("%s-stderr-%d.log" % (self.name, self.starts)))
            self.stderr_paths.append(path)
            self.proc = spawn(self.cmdline(), path, child_env(self.env), cwd=str(self.tmp_path))
            if not wait:
                return
            try:
                self.wait_healthy()
                return
            except ServerStartError:
                # another process may have taken the port between free_port() and bind
                if self.proc.poll() is not None and "cannot listen" in self.stderr_last() and not self.fixed_port:
                    continue
                raise
        raise ServerStartError("could not find a free port")

    def wait_healthy(self, timeout=START_TIMEOUT):
        if poll_health(self.proc, self.port, timeout):
            return
        if self.proc.poll() is not None:
            raise ServerStartError("triekv-server exited with %s before serving: %s" %
                                   (self.proc.returncode, self.stderr_last()[-2000:]))
        raise ServerStartError("triekv-server did not answer /health within %.0f s" % timeout)

    def wait_exit(self, timeout=STOP_TIMEOUT):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Sends sig and waits for the exit; returns the exit code (None if it did not exit, then it
        is killed). A negative code is death by a signal."""
        if self.proc is None:
            return None
        code = stop_process(self.proc, sig, timeout)
        self.exit_codes.append(code)
        return code

    def kill(self):
        return self.stop(signal.SIGKILL)

    def restart(self, sig=signal.SIGTERM, args=None, env=None):
        """Stops (if running) and starts again on the same data dir, returning the stop's exit code."""
        code = None
        if self.proc is not None and self.proc.poll() is None:
            code = self.stop(sig)
        if args is not None:
            self.args = list(args)
        if env is not None:
            self.env = dict(env)
        self.start()
        return code

    # -- output ----------------------------------------------------------------------------------

    def stderr_last(self):
        """stderr of the current (or last) process."""
        return read_logs(self.stderr_paths[-1:])

    @property
    def stderr(self):
        """stderr of every start of this server, concatenated."""
        return read_logs(self.stderr_paths)

    # -- convenience -------------------------------------------------------------------------

    def client(self, timeout=10):
        return Client(self, timeout=timeout)

    def health_ok(self, timeout=5):
        """True when /health answers 200 on a new connection."""
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            c.request("GET", "/health")
            r = c.getresponse()
            body = r.read()
            c.close()
            return r.status == 200 and json.loads(body).get("status") == "ok"
        except (OSError, http.client.HTTPException, ValueError):
            return False

    def stats(self):
        r = self.client().get("/stats")
        assert r.status == 200, r.body
        return r.json()


class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # http.client.HTTPMessage: case-insensitive .get()
        self.body = body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        return self.headers.get(name)

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:300])


class Client:
    """Keep-alive HTTP/1.1 on http.client; paths are sent exactly as given."""

    def __init__(self, server_or_port, timeout=10):
        self.port = server_or_port if isinstance(server_or_port, int) else server_or_port.port
        self.timeout = timeout
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, headers=None):
        hdrs = dict(headers or {})
        if body is not None and isinstance(body, str):
            body = body.encode()
        if body is None and method in ("PUT", "POST"):
            body = b""
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=hdrs)
                r = self.conn.getresponse()
                data = r.read()
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                # the server closed a kept-alive connection: one more try on a new one
                self.close()
                if attempt:
                    raise
                continue
            if r.will_close:
                self.close()
            return Response(r.status, r.reason, r.headers, data)

    def get(self, path, headers=None):
        return self.request("GET", path, headers=headers)

    def head(self, path, headers=None):
        return self.request("HEAD", path, headers=headers)

    def put(self, path, body=b"", headers=None):
        return self.request("PUT", path, body=body, headers=headers)

    def post(self, path, body=b"", headers=None):
        return self.request("POST", path, body=body, headers=headers)

    def delete(self, path, headers=None):
        return self.request("DELETE", path, headers=headers)

    def post_json(self, path, obj, headers=None):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        return self.request("POST", path, body=json.dumps(obj).encode(), headers=h)

    # key-level helpers (keys are bytes or str)
    def kv_put(self, key, value, headers=None):
        return self.put("/kv/" + pkey(key), value, headers)

    def kv_get(self, key, headers=None):
        return self.get("/kv/" + pkey(key), headers)

    def kv_delete(self, key, headers=None):
        return self.delete("/kv/" + pkey(key), headers)

    def range_all(self, params="", page_check=None, max_pages=100000):
        """Every item of a range, following `next`; params is a query string without '?'."""
        items = []
        r = self.get("/bulk/range" + ("?" + params if params else ""))
        pages = 0
        while True:
            assert r.status == 200, r
            page = r.json()
            if page_check:
                page_check(page)
            items.extend(page["items"])
            pages += 1
            assert pages < max_pages, "range paging does not end"
            if page["next"] is None:
                return items
            r = self.get("/bulk/range?cursor=" + urllib.parse.quote(page["next"], safe=""))


def assert_json_error(resp, status, code=None, message_has=None):
    """resp has the status and a JSON body {"error": str, "message": str} (code: the error code,
    one of several when a tuple)."""
    assert resp.status == status, "expected %d, got %d: %r" % (status, resp.status, resp.body[:500])
    ctype = resp.header("Content-Type") or ""
    try:
        body = json.loads(resp.body)
    except ValueError:
        raise AssertionError("error body is not JSON (Content-Type %r): %r" % (ctype, resp.body[:500]))
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], "no 'error' string: %r" % body
    assert isinstance(body.get("message"), str) and body["message"], "no 'message' string: %r" % body
    assert "application/json" in ctype, "error Content-Type is %r" % ctype
    if code is not None:
        codes = code if isinstance(code, tuple) else (code,)
        assert body["error"] in codes, "error code %r, expected %r (%r)" % (body["error"], codes, body)
    if message_has is not None:
        assert message_has.lower() in body["message"].lower(), \
            "message %r should mention %r" % (body["message"], message_has)
    return body


def assert_seq_reply(resp):
    """A write's answer: 200, {"seq": N, ...} and X-Triekv-Seq: N. Returns N."""
    assert resp.status == 200, resp
    body = resp.json()
    assert isinstance(body.get("seq"), int) and body["seq"] > 0, body
    hdr = resp.header("X-Triekv-Seq")
    assert hdr is not None, "no X-Triekv-Seq header"
    assert int(hdr) == body["seq"], (hdr, body)
    return body["seq"]


# ---- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def server_factory(tmp_path):
    """make(args=(), env=None, data_dir=None, name=..., wait=True) -> Server. Every server made is
    killed at teardown (SIGTERM, then SIGKILL) and its stderr checked for sanitizer reports."""
    assert os.access(SERVER_BIN, os.X_OK), "no triekv-server at %s (set TRIEKV_BIN or run make all)" % SERVER_BIN
    made = []
    counter = [0]

    def make(args=(), env=None, data_dir=None, name=None, wait=True, port=None, add_defaults=True):
        counter[0] += 1
        s = Server(tmp_path, args=args, env=env, data_dir=data_dir, name=name or "srv%d" % counter[0],
                   port=port, wait=None, add_defaults=add_defaults)
        made.append(s)  # before starting: teardown kills it whatever happens next
        s.start(wait=wait)
        return s

    yield make
    problems = []
    for s in made:
        if s.proc is not None and s.proc.poll() is None:
            s.stop(signal.SIGTERM, timeout=10)
        found = sanitizer_findings(s.stderr)
        if found:
            problems.append("%s: %s" % (s.name, "\n  ".join(found[:10])))
    if problems:
        pytest.fail("sanitizer reports in the server's stderr:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def server(server_factory):
    """A main with the default settings."""
    return server_factory()


@pytest.fixture
def client(server):
    c = Client(server)
    yield c
    c.close()
