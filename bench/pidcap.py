"""A pids cgroup for a bench's child processes: at most `max_pids` tasks (processes and
threads) in it, so a bench that starts many clients cannot exhaust the machine's PIDs
(a thread storm in the children ends in their own EAGAIN, not in everyone's).

    with PidsCap("bench-scale-storm", 3000) as cap:
        p = subprocess.Popen(argv, preexec_fn=cap.enter)

cgroup v1 (/sys/fs/cgroup/pids/) and v2 (a /sys/fs/cgroup/ with "pids" in
cgroup.controllers) are both handled. Where neither is writable (not root, a read-only
cgroupfs), `PidsCap.available()` is False and the bench must not start its storm.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

ROOTS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))


def _root() -> Path | None:
    v1, v2 = ROOTS
    if (v1 / "cgroup.procs").exists() and os.access(v1, os.W_OK):
        return v1
    ctl = v2 / "cgroup.controllers"
    if ctl.exists() and "pids" in ctl.read_text().split() and os.access(v2, os.W_OK):
        return v2
    return None


class PidsCap:
    def __init__(self, name: str, max_pids: int) -> None:
        self.name = f"{name}-{os.getpid()}"
        self.max_pids = max_pids
        self.path: Path | None = None

    @staticmethod
    def available() -> bool:
        return _root() is not None

    def __enter__(self) -> PidsCap:
        root = _root()
        if root is None:
            raise RuntimeError("no writable pids cgroup (/sys/fs/cgroup/pids or cgroup v2 with "
                               "the pids controller): run as root, or lower the client count")
        self.path = root / self.name
        self.path.mkdir(exist_ok=True)
        (self.path / "pids.max").write_text(str(self.max_pids))
        return self

    def enter(self) -> None:
        """In the child (a `preexec_fn`): move this process into the cgroup."""
        assert self.path is not None
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def current(self) -> int:
        assert self.path is not None
        return int((self.path / "pids.current").read_text())

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.path is not None:
            try:
                self.path.rmdir()  # fails while a task is left: left for the operator to see
            except OSError:
                pass
