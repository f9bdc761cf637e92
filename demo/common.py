"""What every section of the demo uses: the repository, the workers' queues, the
failure it raises, headings, and starting, stopping and reading podjobs processes."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from podjobs import cli

REPO = Path(__file__).resolve().parent.parent
QUEUES = "critical,default,low"
#: seconds the workload may take once the workers are up
WORKLOAD_TIMEOUT = 30.0
LOG_TAIL_LINES = 20


class DemoFailed(Exception):
    """A check or a wait of the demo failed; the message says which."""


def heading(title: str) -> None:
    print(f"\n== {title} ==")


def short_args(args: list[Any]) -> str:
    return ", ".join(json.dumps(a) for a in args)


def die_with_parent() -> Callable[[], None]:
    """preexec_fn: SIGKILL this child if the demo dies (Linux prctl PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def spawn_worker(target: list[str], record_url: str, log_file: Path) -> subprocess.Popen[bytes]:
    """`podjobs worker` on `target` (["--redis", URL] or ["--pod", NAME, "--zk", SPEC])."""
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=pythonpath, PODJOBS_DEMO_RECORD_URL=record_url)
    cmd = [sys.executable, "-m", "podjobs.cli", "worker", *target, "--app", "demo.app,demo.reconcile",
           "--queues", QUEUES, "--concurrency", "4", "--heartbeat-ttl", "2",
           "--poll-interval", "0.1"]
    with log_file.open("ab") as log:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=die_with_parent())


def run_cli(argv: list[str]) -> None:
    """Print and run one `podjobs` command in this process; DemoFailed unless it exits 0."""
    print(f"\n$ podjobs {' '.join(argv)}")
    sys.stdout.flush()
    rc = cli.main(argv)
    sys.stdout.flush()
    if rc != 0:
        raise DemoFailed(f"podjobs {' '.join(argv)} exited with {rc}")


def stop_workers(workers: list[subprocess.Popen[bytes]], kind: str = "worker") -> bool:
    """SIGTERM every worker (or scheduler), wait; True if all exited 0 on their own."""
    clean = True
    t0 = time.monotonic()
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            rc = w.wait(20)
            print(f"  {kind} pid {w.pid}: exit {rc} after SIGTERM ({time.monotonic() - t0:.1f} s)")
            clean = clean and rc == 0
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait(5)
            print(f"  {kind} pid {w.pid}: did not stop within 20 s of SIGTERM; killed")
            clean = False
    return clean


def print_log_tails(tmp: Path) -> None:
    """The end of every server and worker log under the demo's temp dir."""
    heading(f"log tails (last {LOG_TAIL_LINES} lines)")
    paths = sorted(p for p in tmp.rglob("*.log") if "data" not in p.relative_to(tmp).parts)
    if not paths:
        print("(no logs were written)")
    for path in paths:
        print(f"--- {path.relative_to(tmp)}")
        with contextlib.suppress(OSError):
            lines = path.read_text(errors="replace").splitlines()
            print("\n".join(lines[-LOG_TAIL_LINES:]) or "(empty)")


def cluster_down(cluster: Any, tmp: Path) -> bool:
    """The demos' last teardown step: stop the cluster's servers by pid and remove the demo's
    directory, saying what was stopped; False when the stop failed (the directory still goes)."""
    ok = True
    try:
        stopped = cluster.down(timeout=10)
        names = ", ".join(f"{s.kind} {s.name}" for s in stopped) or "none was running"
        print(f"  cluster down: stopped {len(stopped)} servers ({names})")
    except Exception as exc:
        print(f"  teardown FAILED: {type(exc).__name__}: {exc}")
        ok = False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"  removed {tmp}")
    return ok
