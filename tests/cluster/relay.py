"""tests/cluster/relay.py - a fault-injecting TCP relay for the cluster tests (threads only).

Relay(host, target_port) listens on a free port of 127.0.0.1 (.port, .url) and forwards every
connection to host:target_port. Its mode can change at any time:

  pass        forward both ways
  blackhole   accept connections and keep them open, but forward nothing and answer nothing
              (nothing is read from either side, so the sender's bytes stay in kernel buffers and
              its requests stall as on a network that drops every packet). New connections are
              accepted but not connected upstream until the mode changes.
  delay       like pass, with a sleep of delay_ms before every chunk forwarded
  drop        reset every open connection (RST, via SO_LINGER 0) and every new one at once

set_mode("pass" | "blackhole" | "drop") or set_mode("delay", delay_ms=N). Counters: accepted,
resets, bytes_up (to the target), bytes_down (to the client). stop() closes everything and joins
the threads (bounded). Every loop polls at most every 50 ms, so a mode change applies at once, and
ends after MAX_LIFETIME seconds whatever happens.
"""
import select
import socket
import struct
import threading
import time

POLL = 0.05
CHUNK = 64 * 1024
MAX_LIFETIME = 600.0  # every loop ends by then even if stop() is never called


def _reset(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Conn:
    def __init__(self, relay, client):
        self.relay = relay
        self.client = client
        self.upstream = None
        self.closed = threading.Event()
        self.lock = threading.Lock()

    def close(self, reset=False):
        with self.lock:
            if self.closed.is_set():
                return
            self.closed.set()
            for s in (self.client, self.upstream):
                if s is None:
                    continue
                if reset:
                    _reset(s)
                else:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    try:
                        s.close()
                    except OSError:
                        pass

    def run(self):
        """Connects upstream once the mode allows it, then pumps client->upstream on this thread
        and upstream->client on another."""
        r = self.relay
        while not self.closed.is_set() and not r.stopping.is_set() and not r.expired():
            mode = r.mode
            if mode == "drop":
                r._count("resets")
                self.close(reset=True)
                return
            if mode != "blackhole":
                break
            # blackhole: keep the client's connection open, read nothing; notice if it goes away
            if _peer_closed(self.client):
                self.close()
                return
            time.sleep(POLL)
        if self.closed.is_set() or r.stopping.is_set() or r.expired():
            self.close()
            return
        try:
            up = socket.create_connection((r.target_host, r.target_port), timeout=5)
            up.settimeout(None)
        except OSError:
            self.close(reset=True)
            return
        with self.lock:
            if self.closed.is_set():
                up.close()
                return
            self.upstream = up
        t = threading.Thread(target=self.pump, args=(self.upstream, self.client, "bytes_down"), daemon=True)
        t.start()
        r._track(t)
        self.pump(self.client, self.upstream, "bytes_up")

    def pump(self, src, dst, counter):
        r = self.relay
        try:
            while not self.closed.is_set() and not r.stopping.is_set() and not r.expired():
                mode = r.mode
                if mode == "drop":
                    r._count("resets")
                    self.close(reset=True)
                    return
                if mode == "blackhole":
                    time.sleep(POLL)  # read nothing, forward nothing
                    continue
                try:
                    ready, _, _ = select.select([src], [], [], POLL)
                except (OSError, ValueError):
                    break
                if not ready:
                    continue
                if r.mode == "blackhole":  # switched while waiting: leave the bytes unread
                    continue
                try:
                    data = src.recv(CHUNK)
                except OSError:
                    break
                if not data:
                    break
                if r.mode == "delay" and r.delay_ms > 0:
                    time.sleep(r.delay_ms / 1000.0)
                try:
                    dst.sendall(data)
                except OSError:
                    break
                r._count(counter, len(data))
        finally:
            self.close()


def _peer_closed(sock):
    """True when the peer has closed the connection. Only peeks (MSG_PEEK), so data the peer sent
    stays unread; a peer that sent data and then closed is noticed once the data is forwarded."""
    try:
        ready, _, _ = select.select([sock], [], [], 0)
        if not ready:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Relay:
    def __init__(self, target_host, target_port):
        self.target_host = target_host
        self.target_port = target_port
        self.mode = "pass"
        self.delay_ms = 0
        self.stopping = threading.Event()
        self.born = time.monotonic()
        self.accepted = 0
        self.resets = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._lock = threading.Lock()
        self._conns = []
        self._threads = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def expired(self):
        return time.monotonic() - self.born > MAX_LIFETIME

    def _count(self, name, n=1):
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def _track(self, t):
        with self._lock:
            self._threads.append(t)

    def set_mode(self, mode, delay_ms=0):
        assert mode in ("pass", "blackhole", "delay", "drop"), mode
        self.delay_ms = delay_ms
        self.mode = mode
        if mode == "drop":
            with self._lock:
                conns = list(self._conns)
            for c in conns:
                if not c.closed.is_set():
                    self._count("resets")
                c.close(reset=True)

    def open_connections(self):
        with self._lock:
            self._conns = [c for c in self._conns if not c.closed.is_set()]
            return len(self._conns)

    def start(self):
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._track(t)
        return self

    def _accept_loop(self):
        while not self.stopping.is_set() and not self.expired():
            try:
                ready, _, _ = select.select([self.listener], [], [], POLL)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            self._count("accepted")
            if self.mode == "drop":
                self._count("resets")
                _reset(client)
                continue
            c = _Conn(self, client)
            with self._lock:
                self._conns.append(c)
            t = threading.Thread(target=c.run, daemon=True)
            t.start()
            self._track(t)

    def stop(self, timeout=5.0):
        self.stopping.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for c in conns:
            c.close()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
