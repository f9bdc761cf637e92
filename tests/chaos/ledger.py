"""The ledger: what every job did, in a store the faults never touch.

1. Each process appends JSON lines to its own file `DIR/<pid>.jsonl`, opened with
   O_APPEND; one `os.write` per line, so a line is in the kernel once the call returns
   and a kill -9 right after loses nothing (no buffering, no fsync needed).
2. `record(kind, job_id, ...)` writes an event: `enq` (the client saw an enqueue succeed,
   `ok`, or fail), `poison` (an entry pushed raw into a queue), `start`, `finish`.
   Each carries the pid, the parent pid, `time.monotonic()` (one clock for every process
   of the machine) and the wall clock; a start also the worker id (generation) that
   reserved the job (`ctx.worker_id`).
3. `run_guard(job_id)` holds an exclusive flock on `DIR/locks/<id>` while a job runs:
   a second run of the same id that starts while the first still runs (a paused or
   orphaned process keeps its lock; the kernel drops it when the process dies) marks
   its start `ov` (overlap). So overlaps are seen as they happen, not inferred.
4. `read(dir)` parses every file back into `Event`s (a torn last line is skipped).
The directory comes from $PODJOBS_LEDGER_DIR in worker processes.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ENV = "PODJOBS_LEDGER_DIR"


@dataclass(frozen=True)
class Event:
    kind: str  # enq | poison | start | finish
    job_id: str
    pid: int = 0
    mono: float = 0.0
    wall: float = 0.0
    amo: bool = False
    overlap: bool = False
    ok: bool = True
    #: the worker id (with its generation) that reserved the job, on starts
    worker: str = ""
    #: on starts: time.monotonic() of the worker's last ownership check (ctx.claimed_at)
    claimed: float = 0.0


class Ledger:
    """One process's append-only ledger file."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        (self.dir / "locks").mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int:
        pid = os.getpid()
        if self._fd is None or pid != self._pid:  # reopened after a fork
            self._pid = pid
            self._fd = os.open(self.dir / f"{pid}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                               0o644)
        return self._fd

    def record(self, kind: str, job_id: str, *, amo: bool = False, overlap: bool = False,
               ok: bool = True, worker: str = "", claimed: float = 0.0) -> None:
        line: dict[str, object] = {"e": kind, "id": job_id, "pid": os.getpid(),
                                   "ppid": os.getppid(), "m": time.monotonic(), "w": time.time()}
        if worker:
            line["wk"] = worker
        if claimed:
            line["ck"] = claimed
        if amo:
            line["amo"] = True
        if overlap:
            line["ov"] = True
        if not ok:
            line["ok"] = False
        os.write(self._file(), (json.dumps(line) + "\n").encode())

    @contextmanager
    def run_guard(self, job_id: str, amo: bool = False, worker: str = "",
                  claimed: float = 0.0) -> Iterator[None]:
        """Record start and finish around a run; the flock detects overlapping runs."""
        fd = os.open(self.dir / "locks" / job_id.replace("/", "_"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                overlap = False
            except BlockingIOError:
                overlap = True
            self.record("start", job_id, amo=amo, overlap=overlap, worker=worker,
                        claimed=claimed)
            yield
            self.record("finish", job_id, amo=amo)
        finally:
            os.close(fd)  # releases the lock


def read(directory: str | Path) -> list[Event]:
    """Every event of every process's file, sorted by monotonic time."""
    out: list[Event] = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        for raw in path.read_bytes().splitlines():
            try:
                d = json.loads(raw)
            except ValueError:
                continue  # a line torn by a kill (never seen with one write per line)
            out.append(Event(kind=d["e"], job_id=d["id"], pid=int(d.get("pid", 0)),
                             mono=float(d.get("m", 0.0)), wall=float(d.get("w", 0.0)),
                             amo=bool(d.get("amo", False)), overlap=bool(d.get("ov", False)),
                             ok=bool(d.get("ok", True)), worker=str(d.get("wk", "")),
                             claimed=float(d.get("ck", 0.0))))
    out.sort(key=lambda e: e.mono)
    return out


def count(directory: str | Path, kind: str) -> int:
    """Events of one kind so far (cheap enough to poll: the files are small)."""
    n = 0
    needle = f'"e": "{kind}"'.encode()
    for path in Path(directory).glob("*.jsonl"):
        n += path.read_bytes().count(needle)
    return n


def finished_ids(directory: str | Path) -> set[str]:
    return {e.job_id for e in read(directory) if e.kind == "finish"}
