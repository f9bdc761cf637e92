"""Leader election for scheduler processes (kazoo's Lock recipe, as kazoo's Election uses).

1. `Leadership(zk, identity)`: `run(on_lead, stop)` contends for leadership
   until `stop` is set; each time it wins it calls `on_lead(term)` and
   contends again when that returns (a lost session ends the term).
2. A `Term` is one period of leadership: its contender node, its `fence`
   (the node's sequence number: every later term has a larger one) and
   `since`. `term.active` is False at once when the session is SUSPENDED (the
   leader cannot know whether it still leads) and for good when it is LOST;
   a SUSPENDED term resumes if the session comes back with the node intact.
   `term.check()` raises `NotLeader` when not active; `term.transaction()` is a
   ZooKeeper transaction that also checks the contender node still exists, so
   a write of a deposed leader fails on the server even if it raced the
   state change.
3. While leading, the ephemeral scheduler/leader node says who leads and since
   when; `leader_info(zk)` and `contenders(zk)` read it for `scheduler status`.

Term states:

    ACTIVE --SUSPENDED--> PAUSED --CONNECTED (node still there)--> ACTIVE
    ACTIVE or PAUSED --LOST (session expired, node deleted)--> OVER
    any --stop set or on_lead returned--> OVER (contender node deleted)
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from podjobs.errors import PodjobsError
from podjobs.pods.zk import (
    ZK,
    ConnState,
    KazooException,
    Lock,
    NodeExistsError,
    NoNodeError,
    Transaction,
)

from . import paths

log = logging.getLogger(__name__)


class NotLeader(PodjobsError):  # type: ignore[misc,unused-ignore]
    """This process does not (or no longer surely) lead: it must not act."""


def fence_of(node: str) -> int:
    """The sequence number at the end of a kazoo lock node name ("...__lock__0000000042")."""
    digits = node.rsplit("__", 1)[-1]
    if not digits.isdigit():
        raise ValueError(f"lock node {node!r} has no sequence number")
    return int(digits)


class Term:
    """One period of leadership (see the module docstring)."""

    def __init__(self, zk: ZK, node_path: str, identity: dict[str, Any]) -> None:
        self.zk = zk
        self.node_path = node_path
        self.fence = fence_of(node_path)
        self.identity = identity
        self.since = time.time()
        self._active = threading.Event()
        self._active.set()
        self.over = threading.Event()
        self.changed = threading.Event()

    @property
    def active(self) -> bool:
        return self._active.is_set() and not self.over.is_set()

    def check(self) -> None:
        if not self.active:
            raise NotLeader(f"scheduler {self.identity['id']} does not lead now (term {self.fence})")

    def transaction(self) -> Transaction:
        """A transaction that only commits while our contender node exists."""
        self.check()
        txn = self.zk.transaction()
        txn.check(self.node_path, 0)
        return txn

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking early when the term changes state."""
        self.changed.wait(seconds)
        self.changed.clear()

    # -- called from the connection listener (must not block or call ZooKeeper) -----

    def _on_state(self, state: ConnState) -> None:
        if state == ConnState.SUSPENDED:
            self._active.clear()
            log.warning("scheduler %s: ZooKeeper connection suspended; pausing (term %d)",
                        self.identity["id"], self.fence)
        elif state == ConnState.LOST:
            self._active.clear()
            self.over.set()
            log.warning("scheduler %s: ZooKeeper session lost; no longer leader (term %d)",
                        self.identity["id"], self.fence)
        elif state == ConnState.CONNECTED and not self.over.is_set():
            # the session survived; our node is still there unless the session was replaced.
            # Checking needs ZooKeeper, so the leading thread does it (see Leadership._lead).
            pass
        self.changed.set()


class Leadership:
    """Contend for the scheduler leadership under the ZK root (see the module docstring)."""

    def __init__(self, zk: ZK, identity: dict[str, Any] | None = None) -> None:
        self.zk = zk
        host, pid = socket.gethostname(), os.getpid()
        self.identity = dict(identity or {})
        self.identity.setdefault("id", f"{host}:{pid}")
        self.identity.setdefault("host", host)
        self.identity.setdefault("pid", pid)
        self._lock: Lock | None = None

    def run(self, on_lead: Callable[[Term], None], stop: threading.Event) -> None:
        """Contend and lead until `stop` is set."""
        watcher = threading.Thread(target=self._cancel_on_stop, args=(stop,), daemon=True,
                                   name="scheduler-election-stop")
        watcher.start()
        while not stop.is_set():
            self._lock = self.zk.lock(paths.election(self.zk), json.dumps(self.identity, sort_keys=True))
            if stop.is_set():  # set before the stop watcher could see this lock to cancel it
                break
            try:
                got = self._lock.acquire(timeout=None)
            except KazooException as exc:
                if stop.is_set():
                    break
                log.warning("scheduler %s: election failed (%s); trying again", self.identity["id"], exc)
                stop.wait(0.5)
                continue
            if not got or stop.is_set():
                self._release()
                break
            try:
                self._lead(on_lead, stop)
            finally:
                self._release()

    def _lead(self, on_lead: Callable[[Term], None], stop: threading.Event) -> None:
        lock = self._lock
        assert lock is not None  # held: run() acquired it
        node_path = f"{lock.path}/{lock.node}"
        term = Term(self.zk, node_path, self.identity)
        self.zk.add_listener(term._on_state)
        stopper = threading.Thread(target=self._end_on_stop, args=(stop, term), daemon=True,
                                   name="scheduler-term-stop")
        stopper.start()
        try:
            if not self.zk.exists(node_path):  # lost between acquire and here
                return
            self._publish(term)
            log.info("scheduler %s leads (term %d)", self.identity["id"], term.fence)
            on_lead(term)
        except NotLeader as exc:
            log.warning("%s", exc)
        finally:
            term.over.set()
            term.changed.set()
            self.zk.remove_listener(term._on_state)
            self._unpublish(term)
            log.info("scheduler %s stopped leading (term %d)", self.identity["id"], term.fence)

    def resume_if_still_leader(self, term: Term) -> bool:
        """After a SUSPENDED session came back: True (and active again) if our node survived."""
        if term.over.is_set() or not self.zk.connected:
            return False
        try:
            ok = bool(self.zk.exists(term.node_path))
        except KazooException:
            return False
        if ok:
            term._active.set()
            log.info("scheduler %s: connection back, still leader (term %d)",
                     self.identity["id"], term.fence)
        else:
            term.over.set()
        return ok

    def _publish(self, term: Term) -> None:
        info = dict(self.identity, since=term.since, term=term.fence)
        path = paths.leader(self.zk)
        txn = term.transaction()
        txn.create(path, json.dumps(info, sort_keys=True).encode(), ephemeral=True)
        try:
            self.zk.delete(path)  # a leftover of an earlier term of ours, or an expired one's
        except KazooException:
            pass
        results = txn.commit()
        for r in results:
            if isinstance(r, NodeExistsError):
                raise NotLeader(f"scheduler/leader is held by another session ({path})")
            if isinstance(r, Exception) and not isinstance(r, NoNodeError):
                raise NotLeader(f"could not publish leadership: {r!r}")
            if isinstance(r, NoNodeError):
                raise NotLeader("our election node is gone")

    def _unpublish(self, term: Term) -> None:
        try:
            got = self.zk.get_json(paths.leader(self.zk))
            if got and got[0].get("term") == term.fence and self.zk.connected:
                self.zk.delete(paths.leader(self.zk), version=got[1])
        except (KazooException, ValueError):
            pass

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is None:
            return
        try:
            lock.release()
        except KazooException:
            pass

    def _cancel_on_stop(self, stop: threading.Event) -> None:
        stop.wait()
        lock = self._lock
        if lock is not None:
            lock.cancel()

    @staticmethod
    def _end_on_stop(stop: threading.Event, term: Term) -> None:
        while not term.over.is_set():
            if stop.wait(0.2):
                term.over.set()
                term.changed.set()
                return


def leader_info(zk: ZK) -> dict[str, Any] | None:
    """The leading scheduler's {"id", "host", "pid", "since", "term"}, or None."""
    got = zk.get_json(paths.leader(zk))
    return got[0] if got else None


def contenders(zk: ZK) -> list[dict[str, Any]]:
    """Every scheduler process in the election, the leader first."""
    lock = zk.lock(paths.election(zk))
    out = []
    for ident in lock.contenders():
        try:
            obj = json.loads(ident)
        except ValueError:
            obj = {"id": ident}
        out.append(obj if isinstance(obj, dict) else {"id": str(obj)})
    return out
