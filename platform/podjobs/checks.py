"""The verdicts of the exec probes `podjobs worker check` and `podjobs scheduler check`
(pure: no I/O; the commands read Redis or ZooKeeper and print the verdict). The HTTP probe
on the metrics port is probe.py's.

Exit codes (documented in the README and in each command's --help):
    0  OK: a worker of this host has a fresh heartbeat / a scheduler of this host
       contends and a leader is elected (this one or another)
    1  NOT OK: no such worker or scheduler, or its heartbeat expired
    2  usage or configuration error (the CLI's code for every podjobs error)
    3  Redis (worker) or ZooKeeper (scheduler) unreachable
    4  scheduler only: it contends but no scheduler leads (an election is under way;
       lasting, it is a problem); with --require-leader also: this one does not lead
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

OK, NOT_OK, USAGE, UNREACHABLE, NO_LEADER = 0, 1, 2, 3, 4


@dataclass
class Verdict:
    code: int
    message: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.code == OK, "code": self.code, "message": self.message, **self.detail}

    def report(self, as_json: bool) -> int:
        """Print the verdict (one JSON object, or an "ok: ..." / "not ok: ..." line) and
        return its exit code: what `podjobs worker check` and `scheduler check` end with."""
        if as_json:
            print(json.dumps(self.as_dict(), sort_keys=True))
        else:
            print(("ok: " if self.code == OK else "not ok: ") + self.message)
        return self.code


def worker_verdict(workers: list[dict[str, Any]], host: str, pid: int | None = None,
                   worker_id: str | None = None) -> Verdict:
    """`workers`: {"id", "host", "pid", "alive"} rows of the pod's registered workers; the
    ones of this host (and pid, or id) count."""
    mine = [w for w in workers
            if (worker_id is not None and str(w.get("id", "")).startswith(worker_id))
            or (worker_id is None and w.get("host") == host
                and (pid is None or int(w.get("pid") or 0) == pid))]
    live = [w for w in mine if w.get("alive")]
    what = f"worker id {worker_id}" if worker_id else f"host {host}" + (f" pid {pid}" if pid else "")
    detail = {"workers": [{k: w.get(k) for k in ("id", "alive", "busy")} for w in mine]}
    if live:
        return Verdict(OK, f"{len(live)} worker(s) of {what} with a fresh heartbeat", detail)
    if mine:
        return Verdict(NOT_OK, f"the worker(s) of {what} are registered but their heartbeat "
                               f"expired (hung, paused, or cut off from Redis)", detail)
    return Verdict(NOT_OK, f"no worker of {what} is registered on this pod's Redis "
                           f"(not started yet, or it exited)", detail)


def scheduler_verdict(contenders: list[dict[str, Any]], leader: dict[str, Any] | None,
                      host: str, scheduler_id: str | None = None,
                      require_leader: bool = False) -> Verdict:
    """`contenders`: the election's identities ({"id", "host", "pid"}), `leader`: the
    leader's record or None."""
    mine = [c for c in contenders
            if (c.get("id") == scheduler_id if scheduler_id else c.get("host") == host)]
    what = f"scheduler {scheduler_id}" if scheduler_id else f"host {host}"
    leads = bool(leader) and any(c.get("id") == (leader or {}).get("id") for c in mine)
    detail = {"leader": (leader or {}).get("id"), "term": (leader or {}).get("term"),
              "state": "leader" if leads else "standby" if mine else "absent",
              "contenders": [c.get("id") for c in contenders]}
    if not mine:
        return Verdict(NOT_OK, f"no scheduler of {what} takes part in the election", detail)
    if not leader:
        return Verdict(NO_LEADER, "no scheduler leads (an election is under way)", detail)
    if require_leader and not leads:
        return Verdict(NO_LEADER, f"the {what} stands by; {leader.get('id')} leads", detail)
    return Verdict(OK, f"the {what} " + ("leads" if leads else f"stands by; {leader.get('id')} leads")
                   + f" (term {leader.get('term')})", detail)
