"""systemd's notify protocol: READY, WATCHDOG, STOPPING, STATUS, a few lines over a unix
datagram socket (no libsystemd).

1. `notify("READY=1")`: one datagram to `$NOTIFY_SOCKET` (a path, or `@name` for the
   abstract namespace); False (nothing sent) when the variable is unset, as outside systemd.
2. `watchdog_interval()`: half of `$WATCHDOG_USEC` in seconds (systemd's advice), or None
   when no watchdog is configured (`WatchdogSec=` unset) or it is meant for another pid.
3. `Pinger(healthy)`: a daemon thread that sends READY=1 the first time `healthy()` is true
   and then WATCHDOG=1 every interval while it stays true; it sends nothing while not
   healthy, so systemd restarts a process whose heartbeat (worker) or ZooKeeper session
   (scheduler, API) stays gone for longer than `WatchdogSec`. Without a watchdog it checks
   once a second until READY is sent, then ends.
Used by `podjobs worker` (healthy: heartbeat confirmed by Redis), `podjobs scheduler` and
`podjobs api` (healthy: ZooKeeper connected). With `Type=notify` in the unit, systemd
waits for READY before it counts the service started (deploy/systemd/).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

ENV_SOCKET = "NOTIFY_SOCKET"
_warned = False  # the first failed notify is a warning, the rest debug (one per interval)


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `state` (e.g. "READY=1\\nSTATUS=running") to systemd; True when sent."""
    path = (env if env is not None else os.environ).get(ENV_SOCKET, "")
    if not path:
        return False
    addr = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            # never wait: a reader that does not read (a stalled systemd, a test's socket)
            # fills its queue, and a blocking send then held the worker's stop forever
            s.setblocking(False)
            s.sendall(state.encode("utf-8"))
        return True
    except OSError as exc:  # systemd gone, busy, or the socket not ours: never fail the process
        global _warned
        (log.debug if _warned else log.warning)(
            "sd_notify %r to %s failed: %s", state.split("\n")[0], path, exc)
        _warned = True
        return False


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between two WATCHDOG=1 (half of WATCHDOG_USEC), or None."""
    e = env if env is not None else os.environ
    usec, pid = e.get("WATCHDOG_USEC", ""), e.get("WATCHDOG_PID", "")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        us = int(usec)
    except ValueError:
        return None
    return us / 2e6 if us > 0 else None


class Pinger:
    """READY once healthy, then WATCHDOG while healthy (see the module docstring)."""

    def __init__(self, healthy: Callable[[], bool], status: str = "",
                 env: Mapping[str, str] | None = None) -> None:
        self.healthy = healthy
        self.status = status
        self.env = dict(env if env is not None else os.environ)
        self.interval = watchdog_interval(self.env)
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="podjobs-sd-notify", daemon=True)

    def start(self) -> Pinger:
        if self.env.get(ENV_SOCKET):
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            notify("STOPPING=1", self.env)
            self._thread.join(2)

    def _ok(self) -> bool:
        try:
            return bool(self.healthy())
        except Exception:  # a probe that fails is "not healthy", never a dead thread
            return False

    def _loop(self) -> None:
        wait = min(self.interval or 1.0, 1.0)
        while not self._stop.is_set():
            if self._ok():
                if not self.ready.is_set():
                    msg = "READY=1" + (f"\nSTATUS={self.status}" if self.status else "")
                    notify(msg + (f"\nMAINPID={os.getpid()}"), self.env)
                    self.ready.set()
                    if self.interval is None:
                        return
                    wait = self.interval
                else:
                    notify("WATCHDOG=1", self.env)
            if self._stop.wait(wait if self.ready.is_set() else min(wait, 0.2)):
                return
