"""A table of malformed and hostile requests, sent over raw sockets. Each must get the right
status (a JSON {"error", "message"} body where docs/API.md says errors are JSON), and afterwards
the server must still answer /health with 200 on a fresh connection."""
import json
import select
import socket
import threading
import time

import pytest

from conftest import Client, b64

# Small limits so the hostile cases are cheap to build.
ARGS = ["--max-value-size", "4096", "--max-bulk-bytes", "65536", "--max-bulk-items", "100",
        "--max-range-response", "100", "--max-key-size", "256", "--request-timeout-ms", "1000"]
BODY_MAX = 65536  # the largest body any endpoint takes with ARGS


# ---- raw HTTP ----------------------------------------------------------------------------------


def req(method, target, body=None, headers=(), version="HTTP/1.1", host=True):
    """A request as bytes. body (bytes/str/obj-as-JSON) gets a Content-Length."""
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    lines = ["%s %s %s" % (method, target, version)]
    if host:
        lines.append("Host: 127.0.0.1")
    lines += list(headers)
    if body is not None:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def connect(port, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def send_until_answered(sock, data, chunk=16384):
    """Sends data in pieces; stops early when the server has answered (or closed). Returns the
    number of bytes sent."""
    sent = 0
    while sent < len(data):
        r, _, _ = select.select([sock], [], [], 0)
        if r:
            break
        try:
            sent += sock.send(data[sent:sent + chunk])
        except (BrokenPipeError, ConnectionResetError):
            break
    return sent


class RawResponse:
    def __init__(self, status, reason, headers, body, raw):
        self.status, self.reason, self.headers, self.body, self.raw = status, reason, headers, body, raw

    def header(self, name):
        return self.headers.get(name.lower())

    def __repr__(self):
        return "<RawResponse %s %r>" % (self.status, self.raw[:400])


class Reader:
    """Reads HTTP/1.1 responses one after the other from a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _fill(self, deadline):
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete response in time; got %r" % self.buf[:300])
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no complete response in time; got %r" % self.buf[:300])
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def response(self, timeout=5.0, head=False):
        """The next response, or None when the connection closed before one started."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                if not self.buf:
                    return None
                raise AssertionError("connection closed inside a response head: %r" % self.buf[:300])
        head_raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head_raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        assert parts[0].startswith("HTTP/1."), "not an HTTP response: %r" % head_raw[:200]
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            headers[k.strip().lower()] = v.strip()
        body = b""
        if head or status in (100, 204, 304) or 100 <= status < 200:
            pass
        elif "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                if not self._fill(deadline):
                    raise AssertionError("connection closed inside a body")
            body, self.buf = self.buf[:n], self.buf[n:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                while b"\r\n" not in self.buf:
                    assert self._fill(deadline), "closed inside a chunk"
                size_s, rest = self.buf.split(b"\r\n", 1)
                size = int(size_s.split(b";")[0], 16)
                while len(rest) < size + 2:
                    assert self._fill(deadline), "closed inside a chunk"
                    size_s, rest = self.buf.split(b"\r\n", 1)
                body += rest[:size]
                self.buf = rest[size + 2:]
                if size == 0:
                    break
        else:
            while self._fill(deadline):
                pass
            body, self.buf = self.buf, b""
        return RawResponse(status, reason, headers, body, head_raw + b"\r\n\r\n" + body)

    def closed(self, timeout=3.0):
        """True when the server closes the connection within timeout (nothing more is sent)."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            return False
        return True


def exchange(port, data, timeout=5.0):
    """Sends data on a new connection; returns (first response or None, reader)."""
    s = connect(port)
    send_until_answered(s, data)
    rd = Reader(s)
    return rd.response(timeout), rd


def check_error(resp, status, code=None, json_body=True, allow=None):
    assert resp is not None, "the connection closed without a response (expected %d)" % status
    assert resp.status == status, "expected %d, got %r" % (status, resp)
    if json_body:
        ctype = resp.header("content-type") or ""
        try:
            body = json.loads(resp.body)
        except ValueError:
            raise AssertionError("error body is not JSON (Content-Type %r): %r" % (ctype, resp.body[:300]))
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and isinstance(body.get("message"), str), body
        assert "application/json" in ctype, ctype
        if code:
            codes = code if isinstance(code, tuple) else (code,)
            assert body["error"] in codes, "error %r, expected %r" % (body["error"], codes)
    if allow is not None:
        got = resp.header("allow")
        assert got, "405 without an Allow header"
        assert sorted(a.strip() for a in got.split(",")) == sorted(allow), got


# ---- the table -----------------------------------------------------------------------------------


class Case:
    def __init__(self, id, raw=None, status=None, code=None, json_body=True, closes=False, allow=None, run=None,
                 args=None):
        self.id, self.raw, self.status, self.code = id, raw, status, code
        self.json_body, self.closes, self.allow, self.run, self.args = json_body, closes, allow, run, args


def R(id, raw, status, code=None, **kw):
    return Case(id, raw=raw, status=status, code=code, **kw)


def S(id, run, args=None):
    return Case(id, run=run, args=args)


# -- special cases ----------------------------------------------------------------------------------


def run_late_413(path_len, method="PUT"):
    """A body over its endpoint's own limit but under the largest body limit: the server reads it
    (bounded by that largest limit, docs/API.md "Body limits"), then answers 413."""
    def run(srv):
        path, length = path_len
        s = connect(srv.port)
        s.sendall(req(method, path, headers=["Content-Length: %d" % length]) + b"x" * length)
        resp = Reader(s).response(timeout=5)
        check_error(resp, 413, ("payload_too_large", "value_too_large"))
        s.close()
    return run


def run_early_413(path_len, method="PUT"):
    """A Content-Length over the largest body any endpoint accepts: 413 before the body is sent."""
    def run(srv):
        path, length = path_len
        s = connect(srv.port)
        s.sendall(req(method, path, headers=["Content-Length: %d" % length]))  # no body at all
        rd = Reader(s)
        try:
            resp = rd.response(timeout=3)
        except TimeoutError:
            resp = None
        assert resp is not None, ("%s %s with Content-Length: %d (over the limit) and no body: expected 413 "
                                  "before the body is sent; the server waited for the body and then closed the "
                                  "connection without an answer" % (method, path, length))
        check_error(resp, 413, ("payload_too_large", "value_too_large"))
        s.close()
    return run


def run_chunked_over_limit(srv):
    s = connect(srv.port)
    s.sendall(b"PUT /kv/chunky HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"1000\r\n" + b"c" * 4096 + b"\r\n"
    sent = 0
    while sent < 4 * BODY_MAX:
        n = send_until_answered(s, chunk)
        if n < len(chunk):
            break
        sent += len(chunk)
    rd = Reader(s)
    check_error(rd.response(timeout=5), 413, ("payload_too_large", "value_too_large"))
    assert Client(srv).kv_get("chunky").status == 404


def run_chunked_value_too_large(srv):
    """A chunked body over max_value_size but under the body limit: 413 once it is in."""
    s = connect(srv.port)
    body = b"".join(b"400\r\n" + b"v" * 1024 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"
    s.sendall(b"PUT /kv/chunky HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    check_error(Reader(s).response(), 413, "value_too_large")
    assert Client(srv).kv_get("chunky").status == 404
    # a chunked body within the limit is a normal write
    s = connect(srv.port)
    s.sendall(b"PUT /kv/chunky HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert Reader(s).response().status == 200
    assert Client(srv).kv_get("chunky").body == b"abcde"


def run_pipelined(srv):
    s = connect(srv.port)
    data = (req("PUT", "/kv/p1", b"v1") + req("GET", "/kv/p1") + req("GET", "/kv/missing") +
            req("PUT", "/kv/p2", b"x" * 5000) + req("GET", "/kv/%zz") + req("DELETE", "/kv/p1") +
            req("GET", "/kv/p1") + req("POST", "/bulk", {"p3": "three"}) + req("GET", "/kv/p3"))
    s.sendall(data)
    rd = Reader(s)
    got = [rd.response() for _ in range(9)]
    assert [r.status for r in got] == [200, 200, 404, 413, 400, 200, 404, 200, 200], got
    assert got[1].body == b"v1"
    assert got[8].body == b"three"
    for r in (got[2], got[3], got[4], got[6]):
        check_error(r, r.status)
    # still usable afterwards
    s.sendall(req("GET", "/health"))
    assert rd.response().status == 200


def run_http10(srv):
    resp, rd = exchange(srv.port, req("GET", "/kv/nothing", version="HTTP/1.0", host=False))
    check_error(resp, 404, "not_found")
    assert rd.closed(), "HTTP/1.0 without keep-alive: the connection should close"
    resp, rd = exchange(srv.port, req("PUT", "/kv/ten", b"1.0", version="HTTP/1.0", host=False))
    assert resp.status == 200
    resp, rd = exchange(srv.port, req("GET", "/kv/ten", version="HTTP/1.0", host=False))
    assert resp.status == 200 and resp.body == b"1.0"


def run_slowloris(srv):
    """Headers one byte at a time, slower than request_timeout_ms (1000): disconnected, while
    other clients keep being served."""
    result = {}

    def slow():
        s = connect(srv.port, timeout=10)
        data = req("GET", "/health", headers=["X-Slow: " + "s" * 200])
        t0 = time.monotonic()
        for i in range(len(data)):
            r, _, _ = select.select([s], [], [], 0)
            if r:
                try:
                    d = s.recv(4096)
                except ConnectionResetError:
                    d = b""
                result["answer"] = d
                break
            try:
                s.send(data[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                result["answer"] = b""
                break
            time.sleep(0.15)
            if time.monotonic() - t0 > 8:
                break
        result["elapsed"] = time.monotonic() - t0
        s.close()

    t = threading.Thread(target=slow)
    t.start()
    served = 0
    t0 = time.monotonic()
    while t.is_alive() and time.monotonic() - t0 < 10:
        a = time.monotonic()
        assert srv.health_ok(timeout=2), "another client was not served during a slowloris"
        assert time.monotonic() - a < 2.0, "health took over two seconds during a slowloris"
        served += 1
        time.sleep(0.1)
    t.join()
    assert "answer" in result, "the slow client was never disconnected (%.1f s)" % result.get("elapsed", 0)
    ans = result["answer"]
    assert ans == b"" or ans.startswith(b"HTTP/1.1 408") or ans.startswith(b"HTTP/1.1 400"), ans[:200]
    assert result["elapsed"] < 4.0, "disconnected only after %.1f s" % result["elapsed"]
    assert served >= 3


def run_half_body(srv):
    s = connect(srv.port, timeout=10)
    s.sendall(req("PUT", "/kv/half", headers=["Content-Length: 100"]) + b"h" * 50)
    t0 = time.monotonic()
    assert srv.health_ok(), "not served while another client stalls inside a body"
    rd = Reader(s)
    try:
        resp = rd.response(timeout=4)
    except TimeoutError:
        raise AssertionError("a client that sent half a body and stopped was not disconnected in 4 s")
    if resp is not None:
        assert resp.status in (400, 408), resp
        assert rd.closed()
    assert time.monotonic() - t0 < 4
    assert Client(srv).kv_get("half").status == 404, "half a body must not be written"


def run_many_idle(srv):
    idle = []
    try:
        for i in range(200):
            s = connect(srv.port)
            if i % 2:
                s.sendall(b"GET /he")  # a partial request line
            idle.append(s)
        c = Client(srv)
        for i in range(20):
            assert c.kv_put("idle%d" % i, b"v").status == 200
            assert c.kv_get("idle%d" % i).body == b"v"
        st = c.get("/stats").json()
        assert st["connections"]["open"] >= 200, st["connections"]
        assert srv.health_ok()
    finally:
        for s in idle:
            s.close()


def run_max_connections(srv):
    """--max-connections 8: the ninth and later connections are refused (closed at once) while
    the connections already open keep being served."""
    keep = Client(srv)
    assert keep.get("/health").status == 200  # opens one kept-alive connection
    idle = [connect(srv.port) for _ in range(7)]
    time.sleep(0.2)
    try:
        refused = 0
        for i in range(5):
            s = connect(srv.port)
            try:
                s.sendall(req("GET", "/health"))
            except (BrokenPipeError, ConnectionResetError):
                pass
            rd = Reader(s)
            try:
                resp = rd.response(timeout=3)
            except TimeoutError:
                raise AssertionError("connection %d over max_connections was neither refused nor served" % (9 + i))
            assert resp is None or resp.status == 503, "connection over the cap was served: %r" % resp
            refused += 1
            s.close()
            r = keep.get("/kv/k%d" % i)  # the open connection keeps working
            assert r.status == 404, r
            assert keep.conn is not None, "the kept-alive connection was dropped"
        st = keep.get("/stats").json()
        assert st["connections"]["refused"] >= 5, st["connections"]
    finally:
        for s in idle:
            s.close()
    keep.close()
    # once the idle ones are gone, new connections are served again
    deadline = time.monotonic() + 5
    while not srv.health_ok(timeout=1):
        assert time.monotonic() < deadline, "new connections still refused after the others closed"
        time.sleep(0.1)


def with_data(items, fn):
    def run(srv):
        c = Client(srv)
        r = c.post_json("/bulk?encoding=base64", {b64(k): b64(v) for k, v in items.items()})
        assert r.status == 200, r
        fn(srv)
    return run


def expect(raw_fn, status, code=None, json_body=True):
    """raw_fn(srv) -> bytes; the request is sent and its answer checked."""
    def run(srv):
        resp, _ = exchange(srv.port, raw_fn(srv))
        check_error(resp, status, code, json_body)
    return run


def a_cursor(srv, q):
    r = Client(srv).get("/bulk/range?" + q)
    assert r.status == 200, r
    nxt = r.json()["next"]
    assert nxt
    return nxt


SOME = {b"c%03d" % i: b"v" for i in range(30)}

CASES = [
    # bad JSON
    R("bulk-truncated-json", req("POST", "/bulk", b'{"a": '), 400, "bad_json"),
    R("bulk-trailing-garbage", req("POST", "/bulk", b'{"a": "b"} xyz'), 400, "bad_json"),
    R("bulk-single-quotes", req("POST", "/bulk", b"{'a': 'b'}"), 400, "bad_json"),
    R("bulk-invalid-utf8-json", req("POST", "/bulk", b'{"\xff\xfe": "x"}'), 400, "bad_json"),
    R("bulk-deep-nesting", req("POST", "/bulk", b"[" * 60000), 400, ("bad_json", "bad_request")),
    R("bulk-empty-body", req("POST", "/bulk", b""), 400, "bad_request"),
    R("bulk-no-body", req("POST", "/bulk"), 400, "bad_request"),
    # wrong JSON types
    R("bulk-array-not-object", req("POST", "/bulk", ["a", "b"]), 400, "bad_request"),
    R("bulk-string-body", req("POST", "/bulk", b'"just a string"'), 400, ("bad_json", "bad_request")),
    R("bulk-number-value", req("POST", "/bulk", {"a": "ok", "b": 5}), 400, "bad_request"),
    R("bulk-null-value", req("POST", "/bulk", {"a": None}), 400, "bad_request"),
    R("bulk-bool-value", req("POST", "/bulk", {"a": True}), 400, "bad_request"),
    R("bulk-object-value", req("POST", "/bulk", {"a": {"b": "c"}}), 400, "bad_request"),
    R("bulk-get-keys-number", req("POST", "/bulk/get", {"keys": 5}), 400, "bad_request"),
    R("bulk-get-array-body", req("POST", "/bulk/get", ["a"]), 400, "bad_request"),
    R("bulk-get-key-ints", req("POST", "/bulk/get", {"keys": [1, 2]}), 400, "bad_request"),
    R("bulk-get-no-keys-member", req("POST", "/bulk/get", {"key": ["a"]}), 400, "bad_request"),
    R("bulk-delete-keys-string", req("POST", "/bulk/delete", {"keys": "a"}), 400, "bad_request"),
    R("bulk-delete-keys-object", req("POST", "/bulk/delete", {"keys": {"a": 1}}), 400, "bad_request"),
    R("bulk-delete-key-null", req("POST", "/bulk/delete", {"keys": ["a", None]}), 400, "bad_request"),
    R("bulk-duplicate-keys", req("POST", "/bulk", b'{"a": "1", "a": "2"}'), 400, ("bad_json", "bad_request")),
    R("bulk-empty-key", req("POST", "/bulk", {"": "x"}), 400, "key_empty"),
    R("bulk-long-key", req("POST", "/bulk", {"k" * 257: "x"}), 400, "key_too_long"),
    R("bulk-get-empty-key", req("POST", "/bulk/get", {"keys": [""]}), 400, "key_empty"),
    # bad base64
    R("bulk-b64-bad-key", req("POST", "/bulk?encoding=base64", {"!!!!": b64("v")}), 400, "bad_base64"),
    R("bulk-b64-bad-value", req("POST", "/bulk?encoding=base64", {b64("k"): "not base64!"}), 400, "bad_base64"),
    R("bulk-b64-unpadded", req("POST", "/bulk?encoding=base64", {b64("k"): "YWJjZA"}), 400, "bad_base64"),
    R("bulk-b64-whitespace", req("POST", "/bulk?encoding=base64", {b64("k"): "YW Jj"}), 400, "bad_base64"),
    R("bulk-get-b64-bad", req("POST", "/bulk/get?encoding=base64", {"keys": ["@@@@"]}), 400, "bad_base64"),
    R("bulk-delete-b64-bad", req("POST", "/bulk/delete?encoding=base64", {"keys": ["a==="]}), 400, "bad_base64"),
    # invalid %-escapes, empty and long keys
    R("path-bad-escape", req("GET", "/kv/%zz"), 400, "bad_request"),
    R("path-truncated-escape", req("GET", "/kv/abc%"), 400, "bad_request"),
    R("path-one-digit-escape", req("PUT", "/kv/%4", b"x"), 400, "bad_request"),
    R("query-bad-escape-value", req("GET", "/bulk/range?start_key=%G0"), 400, "bad_request"),
    R("query-bad-escape-name", req("GET", "/bulk/range?%zz=1"), 400, "bad_request"),
    R("query-nul-in-name", req("GET", "/bulk/range?limit%00=1"), 400, "bad_request"),
    R("empty-key", req("GET", "/kv/"), 400, "key_empty"),
    R("empty-key-put", req("PUT", "/kv/", b"x"), 400, "key_empty"),
    R("empty-key-no-slash", req("DELETE", "/kv"), 400, "key_empty"),
    R("long-key", req("GET", "/kv/" + "k" * 257), 400, "key_too_long"),
    R("long-key-escaped", req("PUT", "/kv/" + "%FF" * 257, b"x"), 400, "key_too_long"),
    R("long-range-bound", req("GET", "/bulk/range?start_key=" + "a" * 257), 400, "key_too_long"),
    # huge headers, many headers
    R("huge-header-500k", req("GET", "/health", headers=["X-Big: " + "b" * 500000]), 400, json_body=False,
      closes=True),
    R("many-small-headers-450k", req("GET", "/health", headers=["X-H%d: %s" % (i, "h" * 4500) for i in range(99)]),
      400, json_body=False, closes=True),
    # more than 100 header lines: the HTTP layer's plain-text 400 and a closed connection (docs/API.md)
    R("101-headers", req("GET", "/health", headers=["X-H%d: v" % i for i in range(100)]), 400, json_body=False,
      closes=True),
    # oversized bodies
    S("content-length-over-every-limit", run_early_413(("/kv/big", 10 ** 9))),
    S("content-length-over-max-bulk-bytes", run_early_413(("/kv/big", BODY_MAX + 10))),
    S("content-length-over-max-value-size", run_late_413(("/kv/big", 20000))),
    S("content-length-over-max-bulk-bytes-on-bulk", run_late_413(("/bulk", 20000), method="POST"),
      args=["--max-bulk-bytes", "4096", "--max-value-size", "65536", "--request-timeout-ms", "1000"]),
    S("content-length-over-every-limit-on-bulk", run_early_413(("/bulk", 70000), method="POST"),
      args=["--max-bulk-bytes", "4096", "--max-value-size", "65536", "--request-timeout-ms", "1000"]),
    S("chunked-over-the-limit", run_chunked_over_limit),
    S("chunked-value-too-large", run_chunked_value_too_large),
    R("value-too-large", req("PUT", "/kv/big", b"x" * 4097), 413, "value_too_large"),
    R("bulk-value-too-large", req("POST", "/bulk", {"a": "x" * 4097}), 413, "value_too_large"),
    R("bulk-body-too-large", req("POST", "/bulk", {"k%d" % i: "x" * 1000 for i in range(70)}), 413,
      "payload_too_large"),
    R("bulk-too-many-items", req("POST", "/bulk", {"k%d" % i: "x" for i in range(101)}), 413, "too_many_items"),
    R("bulk-get-too-many-keys", req("POST", "/bulk/get", {"keys": ["k%d" % i for i in range(101)]}), 413,
      "too_many_items"),
    R("bad-content-length", req("PUT", "/kv/a", headers=["Content-Length: abc"]) + b"abc", 400),
    R("negative-content-length", req("PUT", "/kv/a", headers=["Content-Length: -5"]), 400),
    R("bad-chunk-size", req("PUT", "/kv/a", headers=["Transfer-Encoding: chunked"]) + b"zz\r\nabc\r\n", 400),
    # limits
    R("limit-negative", req("GET", "/bulk/range?limit=-1"), 400, "bad_limit"),
    R("limit-zero", req("GET", "/bulk/range?limit=0"), 400, "bad_limit"),
    R("limit-overflow", req("GET", "/bulk/range?limit=18446744073709551617"), 400, "bad_limit"),
    R("limit-overflow-10-digits", req("GET", "/bulk/range?limit=9999999999"), 400, "bad_limit"),
    R("limit-not-numeric", req("GET", "/bulk/range?limit=ten"), 400, "bad_limit"),
    R("limit-empty", req("GET", "/bulk/range?limit="), 400, "bad_limit"),
    R("limit-over-cap", req("GET", "/bulk/range?limit=101"), 400, "bad_limit"),
    R("limit-float", req("GET", "/bulk/range?limit=2.5"), 400, "bad_limit"),
    # cursors
    R("cursor-garbage", req("GET", "/bulk/range?cursor=garbage"), 400, "bad_cursor"),
    R("cursor-empty", req("GET", "/bulk/range?cursor="), 400, "bad_cursor"),
    R("cursor-hex-noise", req("GET", "/bulk/range?cursor=1" + "ab" * 30), 400, "bad_cursor"),
    S("cursor-truncated", with_data(SOME, expect(
        lambda srv: req("GET", "/bulk/range?cursor=" + a_cursor(srv, "limit=3")[:-2]), 400, "bad_cursor"))),
    S("cursor-tampered", with_data(SOME, expect(
        lambda srv: req("GET", "/bulk/range?cursor=" + a_cursor(srv, "limit=3").replace("6330", "6331", 1)),
        400, "bad_cursor"))),
    S("cursor-of-another-range", with_data(SOME, expect(
        lambda srv: req("GET", "/bulk/range?start_key=c005&cursor=" + a_cursor(srv, "start_key=c001&limit=3")),
        400, "bad_cursor"))),
    S("cursor-of-another-prefix", with_data(SOME, expect(
        lambda srv: req("GET", "/bulk/range?prefix=c00&cursor=" + a_cursor(srv, "prefix=c0&limit=3")),
        400, "bad_cursor"))),
    # query parameters
    R("unknown-param-kv", req("GET", "/kv/a?x=1"), 400, "bad_request"),
    R("unknown-param-range", req("GET", "/bulk/range?bogus=1"), 400, "bad_request"),
    R("unknown-param-bulk", req("POST", "/bulk?fast=1", {"a": "b"}), 400, "bad_request"),
    R("duplicate-param", req("GET", "/bulk/range?limit=1&limit=1"), 400, "bad_request"),
    R("duplicate-encoding", req("POST", "/bulk?encoding=base64&encoding=base64", {}), 400, "bad_request"),
    R("too-many-params", req("GET", "/bulk/range?" + "&".join("p%d=1" % i for i in range(17))), 400,
      "bad_request"),
    R("bad-encoding", req("GET", "/bulk/range?encoding=base32"), 400, "bad_request"),
    R("bad-keys-only", req("GET", "/bulk/range?keys_only=maybe"), 400, "bad_request"),
    R("prefix-with-start", req("GET", "/bulk/range?prefix=a&start_key=a"), 400, "bad_request"),
    R("start-after-end", req("GET", "/bulk/range?start_key=b&end_key=a"), 400, "bad_range"),
    S("not-utf8-without-base64", with_data({b"bin\xff": b"x"}, expect(
        lambda srv: req("GET", "/bulk/range"), 400, "not_utf8"))),
    # preconditions
    R("if-match-garbage", req("PUT", "/kv/a", b"x", headers=["If-Match: yes please"]), 400, "bad_request"),
    R("if-match-and-if-none-match", req("PUT", "/kv/a", b"x", headers=["If-Match: *", "If-None-Match: *"]), 400,
      "bad_request"),
    R("if-none-match-version-on-put", req("PUT", "/kv/a", b"x", headers=['If-None-Match: "5"']), 400,
      "bad_request"),
    R("if-match-overflow", req("DELETE", "/kv/a", headers=['If-Match: "99999999999999999999999"']), 400,
      "bad_request"),
    R("if-none-match-garbage-get", req("GET", "/kv/a", headers=["If-None-Match: ???"]), 400, "bad_request"),
    R("expect-unknown", req("PUT", "/kv/a", b"abc", headers=["Expect: teapot"]), 417),
    # wrong methods, unknown paths
    R("patch-kv", req("PATCH", "/kv/a", b"x"), 405, "method_not_allowed",
      allow=["GET", "HEAD", "PUT", "POST", "DELETE"]),
    R("put-bulk", req("PUT", "/bulk", {}), 405, "method_not_allowed", allow=["POST"]),
    R("get-bulk-get", req("GET", "/bulk/get"), 405, "method_not_allowed", allow=["POST"]),
    R("get-bulk-delete", req("GET", "/bulk/delete"), 405, "method_not_allowed", allow=["POST"]),
    R("delete-bulk-range", req("DELETE", "/bulk/range"), 405, "method_not_allowed", allow=["GET", "HEAD"]),
    R("post-stats", req("POST", "/stats", b""), 405, "method_not_allowed", allow=["GET", "HEAD"]),
    R("trace-health", req("TRACE", "/health"), 405, "method_not_allowed", allow=["GET", "HEAD"]),
    R("lowercase-method", req("get", "/health"), 405, "method_not_allowed", allow=["GET", "HEAD"]),
    R("unknown-path", req("GET", "/nope"), 404, "not_found"),
    R("unknown-path-root", req("GET", "/"), 404, "not_found"),
    R("unknown-path-case", req("GET", "/KV/a"), 404, "not_found"),
    R("unknown-path-bulk-suffix", req("POST", "/bulk/ranges", {}), 404, "not_found"),
    # not HTTP, other versions, pipelining
    R("request-line-not-http", b"HELLO WORLD\r\n\r\n", 400, json_body=False, closes=True),
    R("binary-garbage", bytes(range(256)) * 4 + b"\r\n\r\n", 400, json_body=False, closes=True),
    R("http-version-9", b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", 400, json_body=False, closes=True),
    S("http-1.0", run_http10),
    S("pipelined", run_pipelined),
    # slow and idle clients
    S("slowloris-headers", run_slowloris),
    S("half-body-then-silence", run_half_body),
    S("200-idle-connections", run_many_idle,
      args=[a for a in ARGS if a not in ("--request-timeout-ms", "1000")] + ["--request-timeout-ms", "60000"]),
    S("over-max-connections", run_max_connections,
      args=[a for a in ARGS if a not in ("--request-timeout-ms", "1000")] +
      ["--request-timeout-ms", "60000", "--max-connections", "8"]),
]


def test_table_is_large_enough():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile(server_factory, case):
    srv = server_factory(case.args or ARGS)
    if case.run is not None:
        case.run(srv)
    else:
        resp, rd = exchange(srv.port, case.raw)
        check_error(resp, case.status, case.code, case.json_body, case.allow)
        if case.closes:
            assert rd.closed(), "the connection should be closed after %s" % case.id
    assert srv.health_ok(), "the server does not answer /health on a fresh connection after %s" % case.id
    assert srv.proc.poll() is None, "the server died"
    if case.run is None:
        # a refused request writes nothing
        r = Client(srv).get("/bulk/range?encoding=base64&keys_only=true")
        assert r.status == 200 and r.json()["items"] == [], "a refused request wrote: %r" % r.body[:300]
