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
"""
import base64
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("TRIEKV_BIN") or os.path.join(REPO, "bin")
SERVER_BIN = os.path.join(BIN_DIR, "triekv-server")

START_TIMEOUT = 20.0  # an ASan build recovering a store is slow
STOP_TIMEOUT = 20.0

# Leak reports whose stacks go through these are h2o's own (known, ignored).
IGNORED_LEAK_FRAMES = ("h2o_mem_alloc_recycle", "h2o_multithread_create_queue")
LSAN_SUPPRESSIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lsan.supp")


def free_port():
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pkey(key):
    """Percent-encodes a key (bytes or str) for /kv/{key}: every byte outside A-Z a-z 0-9 as %XX."""
    if isinstance(key, str):
        key = key.encode()
    return urllib.parse.quote_from_bytes(key, safe="")


def qkey(key):
    """Percent-encodes a key for a query string ('+' must be %2B there)."""
    return pkey(key)


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def unb64(s):
    return base64.b64decode(s.encode(), validate=True)


def child_env(extra=None):
    """The environment for a server: ours without any TRIEKV_* setting, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIEKV_")}
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    # h2o's known leaks (IGNORED_LEAK_FRAMES) would make every clean exit status 1 in ASan builds
    env.setdefault("LSAN_OPTIONS", "suppressions=%s:print_suppressions=0" % LSAN_SUPPRESSIONS)
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    if extra:
        env.update(extra)
    return env


def sanitizer_findings(text):
    """Sanitizer reports in a server's stderr, leaks through h2o's known allocations left out."""
    found = []
    for m in re.finditer(r"^.*runtime error:.*$", text, re.M):
        found.append(m.group(0))
    for m in re.finditer(r"^==\d+==ERROR: AddressSanitizer.*$", text, re.M):
        found.append(m.group(0))
    if "ERROR: LeakSanitizer" in text:
        body = text.split("ERROR: LeakSanitizer", 1)[1]
        for block in re.split(r"\n(?=(?:Direct|Indirect) leak of )", body):
            if not re.match(r"(?:Direct|Indirect) leak of ", block.lstrip()):
                continue
            if any(f in block for f in IGNORED_LEAK_FRAMES):
                continue
            found.append(block.strip().splitlines()[0] + " ... " + " | ".join(
                l.strip() for l in block.splitlines()[1:6]))
    return found


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
        self._err = None
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
            if self._err is not None:
                self._err.close()
            self._err = open(path, "wb")
            self.proc = subprocess.Popen(self.cmdline(), stdin=subprocess.DEVNULL, stdout=self._err,
                                         stderr=self._err, env=child_env(self.env), cwd=str(self.tmp_path))
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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError("triekv-server exited with %s before serving: %s" %
                                       (self.proc.returncode, self.stderr_last()[-2000:]))
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/health")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.02)
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
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            code = self.wait_exit(timeout)
            if code is None:
                self.proc.kill()
                self.proc.wait()
        else:
            code = self.proc.returncode
        self._err.close()
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
        try:
            with open(self.stderr_paths[-1], "rb") as f:
                return f.read().decode(errors="replace")
        except (IndexError, OSError):
            return ""

    @property
    def stderr(self):
        """stderr of every start of this server, concatenated."""
        out = []
        for p in self.stderr_paths:
            try:
                with open(p, "rb") as f:
                    out.append(f.read().decode(errors="replace"))
            except OSError:
                pass
        return "".join(out)

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
        if s._err is not None:
            s._err.close()
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
