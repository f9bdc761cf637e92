"""Timeouts for jobs running in threads.

A thread cannot be killed, so, like Dramatiq's time limits, the watchdog
raises `JobTimeout` inside a job thread that runs past its deadline (via
PyThreadState_SetAsyncExc). It takes effect at the job's next Python
bytecode: a job blocked inside a C call is only stopped when the call returns.
For hard limits use process isolation.
"""

from __future__ import annotations

import threading
import time

from podjobs.invoke import JobTimeout


class Watchdog:
    def __init__(self) -> None:
        self._deadlines: dict[int, float] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="podjobs-watchdog", daemon=True)
        self._started = False

    def arm(self, seconds: float) -> None:
        with self._cond:
            if not self._started:
                self._started = True
                self._thread.start()
            self._deadlines[threading.get_ident()] = time.monotonic() + seconds
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadlines.pop(threading.get_ident(), None)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _loop(self) -> None:
        import ctypes  # here, on the watchdog's own thread: ~8 ms off every worker's start

        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                for tid, deadline in list(self._deadlines.items()):
                    if deadline <= now:
                        del self._deadlines[tid]
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(tid), ctypes.py_object(JobTimeout))
                nxt = min(self._deadlines.values(), default=now + 3600)
                self._cond.wait(max(0.005, nxt - now))
