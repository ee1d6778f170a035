"""tests/support/triekv_procs.py - what every pytest suite needs to run triekv's programs.

Plain functions and constants. No fixtures, and nothing that belongs to one suite: servers,
clusters, proxies and clients stay in their suite's conftest. A conftest imports it after putting
tests/ on sys.path (each suite runs in its own pytest, and tests/blackbox and tests/cli are not
packages):

    sys.path.insert(0, <the tests/ folder>)
    from support.triekv_procs import free_port, ...

Paths:
  REPO                              the repository
  BIN_DIR / SERVER_BIN              $TRIEKV_BIN (default <repo>/bin) / the triekv-server in it
  LSAN_SUPPRESSIONS                 tests/lsan.supp: h2o's known leaks
  IGNORED_LEAK_FRAMES               the frames of those leaks, for sanitizer_findings
Keys and values:
  free_port()                       a loopback port nobody listens on (now)
  b64(data) / unb64(text)           base64 of bytes (or str) / back to bytes, strictly
  pkey(key)                         percent-encodes a key for /kv/{key} or a query string
Processes:
  child_env(extra)                  the environment for a child: ours without TRIEKV_*, sanitizer options
  spawn(cmd, log_path, env)         starts a program with stdout and stderr into a file: the Popen
  poll_health(proc, port, timeout)  waits for GET /health to answer 200 (False: it exited or timed out)
  stop_process(proc, sig, timeout)  sig, then SIGKILL after timeout: the exit code (None: SIGKILLed)
  read_logs(paths)                  the text of log files, concatenated
  sanitizer_findings(text)          sanitizer reports in a stderr, h2o's known leaks left out
  HttpVerbs                         .get .put .post .delete for a class with req(method, path, **kw)
"""
import base64
import http.client
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("TRIEKV_BIN") or os.path.join(REPO, "bin")
SERVER_BIN = os.path.join(BIN_DIR, "triekv-server")
LSAN_SUPPRESSIONS = os.path.join(REPO, "tests", "lsan.supp")

# Leak reports whose stacks go through these are h2o's own (known, ignored; see tests/lsan.supp).
IGNORED_LEAK_FRAMES = ("h2o_mem_alloc_recycle", "h2o_multithread_create_queue")

STOP_TIMEOUT = 20.0


# ---- keys and values ----------------------------------------------------------------------------

_ports_given = set()


def free_port():
    """A TCP port on 127.0.0.1 that is free right now and that this process has not handed out
    before: the kernel may give a just-closed port back at once, and a node's port and its
    replication port asked for one after the other must differ."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise RuntimeError("no free port that was not handed out before")


def b64(data):
    """Base64 of bytes (a str is UTF-8 encoded first), as a str."""
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def unb64(s):
    """The bytes of a base64 str; anything but base64 raises."""
    return base64.b64decode(s.encode(), validate=True)


def pkey(key):
    """Percent-encodes a key (bytes or str) for /kv/{key} or a query string: every byte outside
    A-Z a-z 0-9 _ . - ~ as %XX (so '/' and '+' too)."""
    if isinstance(key, str):
        key = key.encode()
    return urllib.parse.quote_from_bytes(key, safe="")


# ---- processes ------------------------------------------------------------------------------------

def child_env(extra=None):
    """The environment for a server: ours without any TRIEKV_* setting, plus the sanitizer options
    (where not set already), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIEKV_")}
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    # h2o's known leaks (IGNORED_LEAK_FRAMES) would make every clean exit status 1 in ASan builds
    env.setdefault("LSAN_OPTIONS", "suppressions=%s:print_suppressions=0" % LSAN_SUPPRESSIONS)
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    if extra:
        env.update(extra)
    return env


def spawn(cmd, log_path, env, cwd=None, append=False):
    """Starts cmd with stdin from /dev/null and stdout and stderr into the file log_path (appended
    to when append; only the child keeps it open). Returns the subprocess.Popen."""
    with open(log_path, "ab" if append else "wb") as f:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=f, env=env, cwd=cwd)


def poll_health(proc, port, timeout):
    """Polls GET /health on 127.0.0.1:port (a new connection each time) until it answers 200: True.
    False as soon as proc has exited, or after timeout seconds; proc.poll() tells which."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                c.request("GET", "/health")
                r = c.getresponse()
                r.read()
            finally:
                c.close()
            if r.status == 200:
                return True
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.02)
    return False


def stop_process(proc, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
    """Sends sig (unless proc has exited already) and waits for the exit, SIGKILLing it after
    timeout seconds. Returns the exit code (negative: death by a signal), None when it was
    SIGKILLed for not exiting in time."""
    code = proc.poll()
    if code is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return code


def read_logs(paths):
    """The text of the files (bytes decoded, bad ones replaced), concatenated; unreadable ones are
    left out. read_logs(paths[-1:]) is the last one alone ("" for none)."""
    out = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                out.append(f.read().decode(errors="replace"))
        except OSError:
            pass
    return "".join(out)


def sanitizer_findings(text):
    """Sanitizer reports in a server's stderr, leaks through h2o's known allocations left out."""
    found = []
    for m in re.finditer(r"^.*runtime error:.*$", text, re.M):
        found.append(m.group(0))
    for m in re.finditer(r"^==\d+==ERROR: AddressSanitizer.*$", text, re.M):
        found.append(m.group(0))
    for m in re.finditer(r"^WARNING: ThreadSanitizer.*$", text, re.M):
        found.append(m.group(0))
    if "ERROR: LeakSanitizer" in text:
        body = text.split("ERROR: LeakSanitizer", 1)[1]
        for block in re.split(r"\n(?=(?:Direct|Indirect) leak of )", body):
            if not re.match(r"(?:Direct|Indirect) leak of ", block.lstrip()):
                continue
            if any(f in block for f in IGNORED_LEAK_FRAMES):
                continue
            found.append(block.strip().splitlines()[0] + " ... " +
                         " | ".join(l.strip() for l in block.splitlines()[1:8]))
    return found


# ---- HTTP -------------------------------------------------------------------------------------------

class HttpVerbs:
    """A mixin: get/put/post/delete(path, ...) for a class whose req(method, path, **kw) sends one
    request (the keywords of requests; put and post take the body as data)."""

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def put(self, path, data=b"", **kw):
        return self.req("PUT", path, data=data, **kw)

    def post(self, path, data=b"", **kw):
        return self.req("POST", path, data=data, **kw)

    def delete(self, path, **kw):
        return self.req("DELETE", path, **kw)
