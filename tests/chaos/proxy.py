"""A small TCP proxy on 127.0.0.1 between clients and a Redis, to lose replies on purpose.

- `drop_reply_of(match)`: the next command whose bytes contain `match` (e.g. a script's
  SHA) is forwarded to the server; the server's reply to it is dropped and both sides of
  that connection are closed. `dropped` is set once that happened. The server ran the
  command; the client sees a connection drop mid-reply.
- `blackhole(True)`: forward nothing either way (connections stay open, requests vanish);
  `refuse(True)`: close every connection and refuse new ones. Both undone with False.
Threads, one pair per connection; `close()` stops everything it started.
"""

from __future__ import annotations

import contextlib
import socket
import threading

HOST = "127.0.0.1"


class _Conn:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.drop_next_reply = False

    def close(self) -> None:
        for s in (self.client, self.server):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._match: bytes | None = None
        self._blackhole = False
        self._refuse = False
        self._closed = False
        self.dropped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept_loop)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _spawn(self, fn: object, *args: object) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    # -- faults -------------------------------------------------------------------------

    def drop_reply_of(self, match: bytes) -> None:
        with self._lock:
            self.dropped.clear()
            self._match = match

    def blackhole(self, on: bool) -> None:
        self._blackhole = on

    def refuse(self, on: bool) -> None:
        self._refuse = on
        if on:
            with self._lock:
                conns, self._conns = list(self._conns), set()
            for c in conns:
                c.close()

    # -- plumbing -----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refuse or self._closed:
                client.close()
                continue
            try:
                server = socket.create_connection((HOST, self.target_port), timeout=2)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            conn = _Conn(client, server)
            with self._lock:
                self._conns.add(conn)
            self._spawn(self._pump, conn, True)
            self._spawn(self._pump, conn, False)

    def _pump(self, conn: _Conn, upstream: bool) -> None:
        src, dst = (conn.client, conn.server) if upstream else (conn.server, conn.client)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self._blackhole:
                    continue
                if upstream:
                    with self._lock:
                        if self._match is not None and self._match in data:
                            self._match = None
                            conn.drop_next_reply = True
                elif conn.drop_next_reply:
                    self.dropped.set()
                    break  # the reply goes nowhere; the connection closes below
                dst.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()
            with self._lock:
                self._conns.discard(conn)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept loop
        with contextlib.suppress(OSError):
            self._listener.close()
        self.refuse(True)
        for t in self._threads:
            t.join(2)
