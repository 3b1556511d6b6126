"""Deadlines for the server's connections and one budget for the bytes it buffers.

A socket timeout bounds each read, not a request: a client trickling one byte every few
seconds never trips it, and 400 of them held every connection slot. Here a request
must arrive whole within the idle timeout of the connection starting to wait for it, and a
body must keep up a minimum rate once that grace is over; one reaper thread shuts down the
socket of a connection that misses its deadline (the blocked read then returns at once).
When every slot is taken, the connection that has waited longest for its request is shut
down to make room for a new one, so slow clients cannot lock fast ones out. Bodies are read
only against a server-wide budget of buffered bytes, so stalled uploads cannot add up.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field

WAITING = "waiting"  # for the request line and headers (keep-alive idle included)
BODY = "body"
WORKING = "working"


@dataclass(eq=False)
class Connection:
    sock: socket.socket
    phase: str = WAITING
    since: float = field(default_factory=time.monotonic)
    received: int = 0

    def _shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class ConnectionWatch:
    """The server's live connections, their deadlines and the buffered-bytes budget."""

    def __init__(self, idle_timeout: float, min_body_rate: float, budget_bytes: int) -> None:
        self.idle_timeout = idle_timeout
        self.min_body_rate = min_body_rate
        self.budget = budget_bytes
        self._reserved = 0
        self._lock = threading.Lock()
        self._conns: set[Connection] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reap, name="edge-infer-reaper", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- connections
    def add(self, sock: socket.socket) -> Connection:
        conn = Connection(sock)
        with self._lock:
            self._conns.add(conn)
        return conn

    def remove(self, conn: Connection) -> None:
        with self._lock:
            self._conns.discard(conn)

    def enter(self, conn: Connection, phase: str) -> None:
        conn.phase, conn.since, conn.received = phase, time.monotonic(), 0

    def expired(self, conn: Connection, now: float) -> bool:
        waited = now - conn.since
        if conn.phase == WAITING:
            return waited > self.idle_timeout
        if conn.phase == BODY:
            return conn.received < self.min_body_rate * (waited - self.idle_timeout)
        return False

    def evict_longest_waiting(self) -> bool:
        """Shut down the connection that has waited longest for its request (a slot is
        needed for a new one); False if every connection is busy with a request."""
        with self._lock:
            waiting = [c for c in self._conns if c.phase == WAITING]
        if not waiting:
            return False
        min(waiting, key=lambda c: c.since)._shutdown()
        return True

    def _reap(self) -> None:
        while not self._stop.wait(0.2):
            now = time.monotonic()
            with self._lock:
                late = [c for c in self._conns if self.expired(c, now)]
            for conn in late:
                conn._shutdown()

    def close(self) -> None:
        self._stop.set()

    # ---------------------------------------------------------------- budget
    def reserve(self, n: int) -> bool:
        with self._lock:
            if self._reserved + n > self.budget:
                return False
            self._reserved += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self._reserved = max(0, self._reserved - n)

    @property
    def reserved(self) -> int:
        with self._lock:
            return self._reserved
