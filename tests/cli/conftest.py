"""tests/cli/conftest.py - real servers and a runner for triekv-cli.

Binaries come from $TRIEKV_BIN (default <repo>/bin): triekv-cli and triekv-server. Each test module
gets one main (`server`) and, when asked, one read-only replica (`replica`) on free 127.0.0.1 ports,
with data in a temporary folder; both are stopped when the module ends and their stderr is checked
for sanitizer reports (ASan/UBSan builds). `cli(...)` runs the client with TRIEKV_URL pointing at the
module's main and fails the test if the client's stderr holds a sanitizer report.

Helpers:
  free_port()          a loopback port nobody listens on (now)
  Node                 .url .port .proc .stop() .http(method, path, body) -> (status, headers, bytes)
  cli(*args, ...)      -> CliResult(.rc .out (bytes) .err (str) .text (stdout as str) .seconds)
  server_range(node, params) every (key, value) of a range as bytes, read over HTTP with the cursor
  cli_escape(bytes)    the client's one-line escaping (\\\\ \\t \\n \\r \\xNN), for comparisons
  FakeServer(answer)   an HTTP server whose answers a test scripts: answers a real server never gives
  base_env(extra)      the environment for the client and the servers (no TRIEKV_*, no proxies)
free_port, b64, unb64, pkey and sanitizer_findings (and the paths BIN_DIR, SERVER_BIN) come from
tests/support/triekv_procs.py, shared with the other suites, and stay importable from here.
"""
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

_TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _TESTS_DIR not in sys.path:  # tests/cli is no package: make tests/support importable
    sys.path.insert(0, _TESTS_DIR)

# shared with the other suites; the names the tests import from here are re-exported
from support.triekv_procs import (BIN_DIR, IGNORED_LEAK_FRAMES, REPO, SERVER_BIN, b64,  # noqa: E402,F401
                                  child_env, free_port, pkey, poll_health, read_logs,
                                  sanitizer_findings, spawn, stop_process, unb64)
from support.triekv_procs import LSAN_SUPPRESSIONS as LSAN_SUPP  # noqa: E402,F401

CLI_BIN = os.path.join(BIN_DIR, "triekv-cli")
START_TIMEOUT = 20.0
CLI_TIMEOUT = 60.0
# libcurl in triekv-cli would send requests to 127.0.0.1 through these
PROXY_SETTINGS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def base_env(extra=None):
    """Our environment without TRIEKV_* and proxy settings, with the sanitizer options."""
    env = {k: v for k, v in child_env().items() if k.lower() not in PROXY_SETTINGS}
    if extra:
        env.update(extra)
    return env


# ---- servers ----------------------------------------------------------------------------------------

class Node:
    """One triekv-server on 127.0.0.1 with extra flags args."""

    def __init__(self, workdir, name, args=()):
        self.name = name
        self.data_dir = os.path.join(workdir, name + "-data")
        self.log_path = os.path.join(workdir, name + ".log")
        self.args = list(args)
        self.proc = None
        self._conn = None
        for _ in range(5):
            self.port = free_port()
            if self._start():
                return
        raise RuntimeError("%s did not start: %s" % (name, self.log()[-2000:]))

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def _start(self):
        cmd = [SERVER_BIN, "--bind", "127.0.0.1", "--port", str(self.port), "--data-dir", self.data_dir] + self.args
        self.proc = spawn(cmd, self.log_path, base_env(), append=True)
        if poll_health(self.proc, self.port, START_TIMEOUT):
            return True
        if self.proc.poll() is not None:
            if "cannot listen" in self.log():
                return False  # the port was taken meanwhile: another one
            raise RuntimeError("%s exited with %s: %s" % (self.name, self.proc.returncode, self.log()[-2000:]))
        raise RuntimeError("%s did not answer /health: %s" % (self.name, self.log()[-2000:]))

    def log(self):
        return read_logs([self.log_path])

    def http(self, method, path, body=None, headers=None):
        """One request on a kept-alive connection: (status, headers, body bytes)."""
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self._conn.request(method, path, body=body, headers=headers or {})
                r = self._conn.getresponse()
                data = r.read()
                if r.will_close:
                    self._conn.close()
                    self._conn = None
                return r.status, r.headers, data
            except (ConnectionError, http.client.RemoteDisconnected):
                self._conn = None
                if attempt:
                    raise

    def kv_get(self, key):
        """The value of key (bytes), or None when the server answers 404."""
        status, _, body = self.http("GET", "/kv/" + pkey(key))
        assert status in (200, 404), (status, body)
        return body if status == 200 else None

    def put_many(self, items):
        """Writes {bytes: bytes} in one /bulk call (base64)."""
        body = json.dumps({b64(k): b64(v) for k, v in items.items()})
        status, _, data = self.http("POST", "/bulk?encoding=base64", body, {"Content-Type": "application/json"})
        assert status == 200, data
        return json.loads(data)["seq"]

    def stats(self):
        status, _, body = self.http("GET", "/stats")
        assert status == 200, body
        return json.loads(body)

    def stop(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.proc is not None:
            stop_process(self.proc)


def server_range(node, params=""):
    """[(key, value)] of a range, following `next` over plain HTTP (base64 both ways)."""
    items = []
    query = "encoding=base64" + ("&" + params if params else "")
    for _ in range(100000):
        status, _, body = node.http("GET", "/bulk/range?" + query)
        assert status == 200, body
        page = json.loads(body)
        items += [(unb64(i["key"]), unb64(i["value"]) if "value" in i else None) for i in page["items"]]
        if page["next"] is None:
            return items
        query = "encoding=base64&cursor=" + urllib.parse.quote(page["next"], safe="")
    raise AssertionError("the range never ended")


@pytest.fixture(scope="module")
def workdir():
    d = tempfile.mkdtemp(prefix="triekv-cli-test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _stop_and_check(nodes):
    problems = []
    for n in nodes:
        n.stop()
        found = sanitizer_findings(n.log())
        if found:
            problems.append("%s: %s" % (n.name, "\n  ".join(found[:10])))
    if problems:
        pytest.fail("sanitizer reports in a server's stderr:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def server(workdir):
    """The module's main. Small range pages (100 items), so ranges cross many pages."""
    for b in (CLI_BIN, SERVER_BIN):
        assert os.access(b, os.X_OK), "no %s (set TRIEKV_BIN or run make all)" % b
    node = Node(workdir, "main", ["--max-range-response", "100"])
    yield node
    _stop_and_check([node])


@pytest.fixture(scope="module")
def replica(workdir, server):
    """A read-only replica whose main_url names the module's main."""
    node = Node(workdir, "replica", ["--is-replica", "true", "--main-url", server.url,
                                     "--replication-port", str(free_port())])
    yield node
    _stop_and_check([node])


# ---- the client -----------------------------------------------------------------------------------

class CliResult:
    def __init__(self, args, rc, out, err, seconds):
        self.args, self.rc, self.out, self.err, self.seconds = args, rc, out, err, seconds

    @property
    def text(self):
        return self.out.decode()

    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return "<cli %r rc=%s out=%r err=%r>" % (self.args, self.rc, self.out[:300], self.err[:600])


def run_cli(args, url=None, input=None, env=None, stdout=None, timeout=CLI_TIMEOUT):
    """Runs triekv-cli args with TRIEKV_URL=url (unless env sets it); input: bytes for stdin;
    stdout: a file to write to instead of a pipe."""
    e = base_env()
    if url is not None:
        e["TRIEKV_URL"] = url
    if env:
        e.update(env)
    t0 = time.monotonic()
    p = subprocess.run([CLI_BIN] + [str(a) for a in args], input=input if input is not None else b"",
                       stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE,
                       env=e, timeout=timeout)
    res = CliResult(args, p.returncode, p.stdout or b"", p.stderr.decode(errors="replace"), time.monotonic() - t0)
    found = sanitizer_findings(res.err)
    assert not found, "sanitizer report from triekv-cli %r:\n%s" % (args, "\n".join(found))
    return res


@pytest.fixture
def cli(server):
    """cli(*args, input=None, env=None, url=<main>, stdout=None) -> CliResult"""
    def run(*args, input=None, env=None, url=None, stdout=None, timeout=CLI_TIMEOUT):
        return run_cli(args, url=url or server.url, input=input, env=env, stdout=stdout, timeout=timeout)
    return run


def cli_escape(b):
    """The client's escaping of bytes for one line of text (cli/cli_out.c)."""
    out = []
    i = 0
    while i < len(b):
        c = b[i]
        n = 1
        if c == 0x5C:
            out.append("\\\\")
        elif c in (9, 10, 13):
            out.append({9: "\\t", 10: "\\n", 13: "\\r"}[c])
        elif c < 0x20 or c == 0x7F:
            out.append("\\x%02x" % c)
        elif c < 0x80:
            out.append(chr(c))
        else:
            n = 4 if c >= 0xF0 else 3 if c >= 0xE0 else 2 if c >= 0xC0 else 1
            seq = b[i:i + n]
            try:
                ok = n > 1 and len(seq) == n and seq.decode("utf-8") and not (n == 2 and seq[0] == 0xC2 and seq[1] < 0xA0)
            except UnicodeDecodeError:
                ok = False
            if ok:
                out.append(seq.decode())
            else:
                out.append("\\x%02x" % c)
                n = 1
        i += n
    return "".join(out)


class FakeServer:
    """HTTP/1.1 on 127.0.0.1 answering every request with answer(method, path, body) ->
    (status, content_type, body bytes). Use as a context manager; .requests lists (method, path)."""

    def __init__(self, answer):
        fake = self
        self.requests = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                fake.requests.append((self.command, self.path))
                status, ctype, data = answer(self.command, self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
