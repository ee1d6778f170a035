"""tests/proxy/rawhttp.py - a raw-socket HTTP/1.x client for the hostile-input tests of the proxy.

requests/urllib3 normalise what they send (dot segments, header names, framing), so the tests that
must send exactly some bytes (absolute-form targets, broken framing, pipelining, half requests) use
this instead. Everything is bounded in time: every socket has a timeout and every loop a deadline.

  RawConn(port)            one connection: .send(bytes), .response(head=False) -> Response,
                           .closed(timeout) -> True when the peer closed (EOF or reset)
  exchange(port, data)     sends data on a new connection and reads `count` responses
  Response                 .status .reason .headers (lower-case name -> value) .body .raw_head
                           .json() .is_json_error(code=None)
"""
import json
import re
import socket
import time

DEFAULT_TIMEOUT = 10.0


class Response:
    def __init__(self, version, status, reason, headers, body, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.raw_head = raw_head

    def json(self):
        return json.loads(self.body.decode())

    def is_json_error(self, code=None):
        """The body is the API's error shape {"error", "message"} (and error == code when given)."""
        if not self.headers.get("content-type", "").startswith("application/json"):
            return False
        try:
            j = self.json()
        except ValueError:
            return False
        if not (isinstance(j, dict) and isinstance(j.get("error"), str) and isinstance(j.get("message"), str)):
            return False
        return code is None or j["error"] == code

    def __repr__(self):
        return "<Response %s %s %r>" % (self.status, self.reason, self.body[:300])


class PeerClosed(Exception):
    pass


class RawConn:
    def __init__(self, port, timeout=DEFAULT_TIMEOUT, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.timeout = timeout
        self.buf = bytearray()

    def send(self, data):
        self.sock.sendall(data)
        return self

    def _fill(self, deadline):
        if time.monotonic() > deadline:
            raise socket.timeout("no complete answer in time")
        try:
            chunk = self.sock.recv(1 << 20)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise PeerClosed("the peer closed the connection (%d bytes pending)" % len(self.buf))
        self.buf += chunk

    def response(self, head=False, timeout=None):
        """Reads one complete response (interim 1xx answers are returned as responses too)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        if not isinstance(self.buf, bytearray):
            self.buf = bytearray(self.buf)
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            self._fill(deadline)
        raw_head = bytes(self.buf[:end])
        lines = raw_head.split(b"\r\n")
        m = re.match(rb"(HTTP/1\.[01]) (\d{3}) ?(.*)$", lines[0])
        assert m, "not an HTTP status line: %r" % lines[0]
        status = int(m.group(2))
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if head or status < 200 or status in (204, 304):
            n = 0
        elif "content-length" in headers:
            n = int(headers["content-length"])
        else:  # no framing: the body lasts until the connection closes
            while True:
                try:
                    self._fill(deadline)
                except PeerClosed:
                    break
            n = len(self.buf) - end - 4
        need = end + 4 + n
        while len(self.buf) < need:
            self._fill(deadline)
        body = bytes(self.buf[end + 4:need])
        del self.buf[:need]
        return Response(m.group(1).decode(), status, m.group(3).decode("latin-1"), headers, body, raw_head)

    def closed(self, timeout=3.0):
        """True when the peer closes (EOF or reset) within timeout with nothing more to read."""
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(self.timeout)
        self.buf += chunk
        return chunk == b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def exchange(port, data, count=1, head=False, timeout=DEFAULT_TIMEOUT):
    """Sends data on a new connection and returns `count` responses (a list when count > 1)."""
    with RawConn(port, timeout) as c:
        c.send(data)
        out = [c.response(head=head) for _ in range(count)]
    return out if count > 1 else out[0]


def request(method, target, body=None, headers=(), version=b"HTTP/1.1", close=True, chunked=False):
    """The bytes of one request. headers: (name, value) pairs (bytes or str); Host is added."""
    def b(x):
        return x if isinstance(x, bytes) else x.encode()
    out = [b(method) + b" " + b(target) + b" " + version, b"Host: proxy-test"]
    names = set()
    for k, v in headers:
        out.append(b(k) + b": " + b(v))
        names.add(b(k).lower())
    if close:
        out.append(b"Connection: close")
    if body is not None and not chunked and b"content-length" not in names:
        out.append(b"Content-Length: %d" % len(body))
    if chunked:
        out.append(b"Transfer-Encoding: chunked")
    data = b"\r\n".join(out) + b"\r\n\r\n"
    if body is not None:
        if chunked:
            for i in range(0, len(body), 7):
                part = body[i:i + 7]
                data += b"%x\r\n%s\r\n" % (len(part), part)
            data += b"0\r\n\r\n"
        else:
            data += body
    return data
