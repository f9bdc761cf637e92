"""The demo's dashboard: `podjobs api` (with the dashboard under /ui) on the demo's
ZooKeeper, started once the tenants are set up, so that the pods, queues, jobs, the
backfill's progress and the migrations can be watched live while the demo runs.

`start_dashboard(spec, tmp)` writes a token file with a fresh operator token, starts the
server on 127.0.0.1 ($PODJOBS_DEMO_UI_PORT, else 8080 when free, else a free port), waits
until /readyz answers 200 and prints the URL and the token. `hold()`: with
$PODJOBS_DEMO_HOLD set, the demo waits for Ctrl-C before it tears the cluster down.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from demo.common import REPO, DemoFailed, die_with_parent


def _port() -> int:
    want = int(os.environ.get("PODJOBS_DEMO_UI_PORT", "8080"))
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", want))
            return want
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def start_dashboard(spec: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    token = secrets.token_urlsafe(18)
    tokens = tmp / "dashboard-tokens.json"
    tokens.write_text(json.dumps({"tokens": [{"name": "demo operator", "operator": True,
                                              "token": token}]}))
    port = _port()
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "podjobs.cli", "api", "--host", "127.0.0.1", "--port", str(port),
           "--zk", spec, "--tokens", str(tokens), "--app", "demo.app,demo.reconcile",
           "--log-level", "warning"]
    with (tmp / "dashboard.log").open("ab") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=die_with_parent(),
                                env=dict(os.environ, PYTHONPATH=pythonpath))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise DemoFailed(f"the dashboard exited with {proc.returncode}: see {tmp}/dashboard.log")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise DemoFailed("the dashboard did not become ready in 30 s")
        time.sleep(0.1)
    print(f"  dashboard: {url}/ui/   (log in with the operator token {token})")
    print(f"  API docs:  {url}/docs")
    return proc, url


def hold(url: str) -> None:
    """With $PODJOBS_DEMO_HOLD set, keep the cluster (and the dashboard) up until Ctrl-C."""
    if not os.environ.get("PODJOBS_DEMO_HOLD"):
        print(f"  (the dashboard at {url}/ui/ stops with the demo; run 'PODJOBS_DEMO_HOLD=1 make "
              f"demo' to keep the cluster up until Ctrl-C)")
        return
    print(f"\nthe cluster and the dashboard ({url}/ui/) stay up: press Ctrl-C to stop")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
