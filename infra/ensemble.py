"""A local ZooKeeper ensemble: N `ZooKeeperServer` members (QuorumPeerMain) on free ports.

    ens = Ensemble(base_dir, size=3, die_with_parent=True)
    ens.start(); ens.wait_ready(60)       # every member serving, one leader
    hosts = ens.hosts                     # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
    ens.kill9(ens.leader())               # SIGKILL by pid (only a process it started)
    ens.restart(member); ens.wait_ready()
    ens.stop()

Each member has its own data dir, conf dir, log and pid file under BASE/zk<id>/ and listens
on 127.0.0.1 only: a quorum port (followers to the leader), an election port and a client
port. `heap_mb` is each member's -Xmx.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from podjobs.errors import ConfigurationError

from .ports import free_port, wait_port_closed
from .servers import QuorumPeer, ServerFailed, ZooKeeperServer


class Ensemble:
    def __init__(self, base_dir: Path, size: int = 3, *, heap_mb: int = 128,
                 die_with_parent: bool = False) -> None:
        if size < 3 or size % 2 == 0:
            raise ConfigurationError(
                f"a ZooKeeper ensemble of {size} members: use an odd number, 3 or more "
                f"(2 members survive no failure; use a standalone ZooKeeperServer for one)")
        taken: list[int] = []

        def port() -> int:
            taken.append(free_port(avoid=taken))
            return taken[-1]

        self.peers = [QuorumPeer(i, port(), port(), port()) for i in range(1, size + 1)]
        base = Path(base_dir).absolute()
        self.members = [
            ZooKeeperServer(
                q.client_port, base / f"zk{q.server_id}" / "data",
                base / f"zk{q.server_id}" / "zookeeper.log",
                base / f"zk{q.server_id}" / "zookeeper.pid",
                name=f"zk{q.server_id}", quorum=self.peers, server_id=q.server_id,
                heap_mb=heap_mb, die_with_parent=die_with_parent)
            for q in self.peers]

    @property
    def hosts(self) -> str:
        """The client connect string: every member."""
        return ",".join(m.address for m in self.members)

    def start(self) -> None:
        for m in self.members:
            m.start()

    def wait_ready(self, timeout: float = 60.0, members: list[ZooKeeperServer] | None = None
                   ) -> float:
        """Until every member in `members` (default: all) serves and one of them leads."""
        t0 = time.monotonic()
        want = members if members is not None else self.members
        for m in want:
            m.wait_ready(max(0.1, timeout - (time.monotonic() - t0)))
        while True:
            if any(m.mode() == "leader" for m in self.members if m.is_running()):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                modes = {m.name: m.mode() for m in self.members}
                raise ServerFailed(f"no ZooKeeper leader within {timeout:.0f}s: {modes}")
            time.sleep(0.05)

    def leader(self) -> ZooKeeperServer:
        for m in self.members:
            if m.is_running() and m.mode() == "leader":
                return m
        raise ServerFailed(f"no member leads now: { {m.name: m.mode() for m in self.members} }")

    def followers(self) -> list[ZooKeeperServer]:
        return [m for m in self.members if m.is_running() and m.mode() == "follower"]

    def kill9(self, member: ZooKeeperServer) -> float:
        """SIGKILL the member's process (only if it is the one this member started);
        returns time.monotonic() of the signal, once the process is gone."""
        pid = member.pid
        if pid is None or not member.owns(pid):
            raise ServerFailed(f"{member.name} does not run (pid {pid}): nothing to kill")
        t = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        member.stop(timeout=5)  # reaps the child, removes the pid file
        wait_port_closed(member.port)
        return t

    def restart(self, member: ZooKeeperServer) -> None:
        member.start()

    def stop(self) -> None:
        for m in self.members:
            m.terminate()
        for m in self.members:
            m.stop(timeout=5)

    def log_tails(self, n: int = 20) -> dict[str, str]:
        return {m.name: m.log_tail(n) for m in self.members}
