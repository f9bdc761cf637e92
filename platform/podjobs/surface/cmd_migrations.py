"""`podjobs migrations`: the rollout the scheduler runs, one revision at a time per shard.

    podjobs migrations status [--json]         per shard: current, pending, running, failures
    podjobs migrations wait [--migrations DIR] [--revision R] --timeout S
        exit 0 when every shard completed R (default: the head of DIR, else the
        published head), 1 when a migration failed or is halted, 3 on timeout,
        4 when ZooKeeper is unreachable; prints progress while it waits
    podjobs migrations retry REVISION [--pod P]    clear a failure; the leader queues it again
    podjobs migrations cancel REVISION [--pod P]   cancel queued runs, stop running ones
    podjobs migrations skip REVISION --pod P --migrations DIR
        stamp the revision on one shard without running it (after a manual fix)

scheduler.report (status, wait) and scheduler.control (retry, cancel, skip: Alembic,
SQLAlchemy) load in the commands that use them, not for --help.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

from podjobs.errors import ConfigurationError
from podjobs.exits import Exit
from podjobs.table import ago, bar, iso_times, one_line, paint, render

from .options import (
    Commands,
    action_result,
    add_watch,
    connect,
    open_zk,
    print_json,
    resolve_zk_spec,
    stop_quietly,
    watching,
    zk_options,
)


def _ago(t: float | None) -> str:
    """`5m 12s ago` (table.ago), `-` when unknown."""
    return ago(float(t)) if t else "-"


def _control() -> Any:
    from podjobs.scheduler import control

    return control


def _runs() -> Any:
    from podjobs.scheduler import runs

    return runs


def _report() -> Any:
    from podjobs.scheduler import report

    return report


# -- migrations ---------------------------------------------------------------------


def cmd_migrations_status(args: argparse.Namespace) -> int:
    return watching(args, lambda: _status(args))


def _status(args: argparse.Namespace) -> int:
    with connect(args) as zk:
        st = _report().collect(zk)
    if args.json:
        print_json(iso_times(st), sort_keys=True)
        return 0
    lead = st["leader"]
    print(f"head: {st['head'] or '-'}   leader: {lead['id'] if lead else 'none'}")
    rows = []
    for s in st["shards"]:
        running = ", ".join(
            f"{r['revision']} {r['state']}" + (f" on {r['worker']}" if r["worker"] else "")
            + (f" since {_ago(r['since'])}" if r["since"] else "")
            + (f" {r['progress']['percent']:.0f}%" if (r.get("progress") or {}).get("percent")
               is not None else "")
            for r in s["running"]) or "-"
        failed = "; ".join(
            f"{f['revision']} {f['state']}"
            + (f" ({len(f['applied'])} statement(s) applied)" if f.get("applied") else "")
            + f": {one_line(f['error'] or '')[:120]}" for f in s["failures"]) or "-"
        cur = s["current"] if s["known"] else f"? ({s['read_error'] or 'not read yet'})"
        rows.append([s["pod"], s["pod_state"], cur or "base", ",".join(s["pending"]) or "-",
                     running, failed])
    print(render(["POD", "STATE", "CURRENT", "PENDING", "RUNNING", "FAILED"], rows))
    for rev, h in sorted(st["halts"].items()):
        print(f"halted: {rev} (pod {h.get('pod')}): {one_line(h.get('error') or '')}")
    for s in st["shards"]:
        for f in s["failures"]:
            for i, stmt in enumerate(f.get("applied") or [], 1):
                print(f"  {s['pod']} {f['revision']} applied {i}: {one_line(stmt)[:150]}")
    return 0


def wait_target(revision: str | None, directory: str | None) -> str | None:
    """The revision a wait is for: `--revision`, else the head of `--migrations DIR` (the
    revisions the deploy ships), else None (the head the leader published)."""
    if directory is None:
        return revision
    from podjobs.scheduler.revisions import Revisions

    revs = Revisions(directory)
    head: str | None = revs.head
    if revision is not None:
        revs.get(revision)  # ConfigurationError naming the directory's revisions
        return revision
    if head is None:
        raise ConfigurationError(f"--migrations {directory}: no revision in its versions/ "
                                 f"folder; nothing to wait for")
    return head


def cmd_migrations_wait(args: argparse.Namespace) -> int:
    def progress(line: str) -> None:
        if args.json:
            return
        m = re.match(r"(\d+)/(\d+) shards", line)
        if m and sys.stdout.isatty():  # a bar on a terminal; logs keep the plain line
            line = f"{bar(int(m.group(1)), int(m.group(2)))} {line}"
        print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    target = wait_target(args.revision, args.migrations)
    zk = open_zk(resolve_zk_spec(args.zk))
    report = _report()
    res = report.wait(zk, target, args.timeout, args.interval, progress, zk_grace=args.zk_grace,
                      read_timeout=min(report.READ_TIMEOUT, args.zk_grace))
    if res.code == Exit.UNREACHABLE:
        stop_quietly(zk)  # a frozen ZooKeeper can hold a clean close
    else:
        zk.stop()
    if args.json:
        print_json({"outcome": res.outcome, "exit_code": int(res.code), "revision": res.target,
                    "message": res.message, "reasons": res.reasons,
                    "shards": [] if res.status is None else [
                        {"pod": s["pod"], "current": s["current"],
                         "pending": s["pending"]} for s in res.status["shards"]]})
    else:
        colour = {Exit.OK: "green", Exit.TIMEOUT: "yellow"}.get(res.code, "red")
        print(paint(res.message, colour, sys.stdout), flush=True)
    return int(res.code)


def cmd_migrations_retry(args: argparse.Namespace) -> int:
    with connect(args) as zk:
        cleared = _control().retry(zk, args.revision, args.pod)
        halted = args.revision in _runs().RunStore(zk).halts()
    halt = (f"still halted: a shard has a failed or cancelled run of {args.revision} left"
            if halted else "halt lifted")
    return action_result(args, "migrations retry", list(cleared),
                         f"{args.revision}: cleared on {', '.join(cleared) or 'no shard'}; {halt}; "
                         f"the leader queues it again", revision=args.revision,
                         halted=halted)


def cmd_migrations_cancel(args: argparse.Namespace) -> int:
    with connect(args) as zk:
        out = _control().cancel(zk, args.revision, args.pod)
    lines = [f"{p}: {what}" for p, what in sorted(out.items())]
    lines.append(f"{args.revision} is halted; 'podjobs migrations retry {args.revision}' to go on")
    return action_result(args, "migrations cancel", sorted(out), "\n".join(lines),
                         revision=args.revision, pods=out, halted=True)


def cmd_migrations_skip(args: argparse.Namespace) -> int:
    with connect(args) as zk:
        _control().skip(zk, args.revision, args.pod, args.migrations)
        halted = args.revision in _runs().RunStore(zk).halts()
    halt = (f"the halt of {args.revision} stays (another shard has a failed or cancelled run "
            f"of it)" if halted else f"the halt of {args.revision} is lifted: the leader goes "
            f"on with the rollout")
    return action_result(args, "migrations skip", [args.pod],
                         f"{args.pod}: {args.revision} stamped as applied (not run); {halt}",
                         revision=args.revision, halted=halted)


# -- parser -------------------------------------------------------------------------


def register(cmds: Commands) -> None:
    common = zk_options()
    cmds.group("migrations", "migration rollout: status, wait, retry, cancel, skip",
               description="Migrations run by the scheduler, one at a time per shard.")

    def command(name: str, help_: str, func: Any, noun: str = "action") -> argparse.ArgumentParser:
        return cmds.command(name, help_, func, under="migrations", parents=[common],
                            description=None, noun=noun)

    add_watch(command("status", "per shard: current, pending, running (where, since, progress), "
                                "failures", cmd_migrations_status, "rollout"))
    s = command("wait", "wait until every shard has a revision: exit 0 done, 1 failed or "
                        "halted, 3 timeout, 4 ZooKeeper unreachable", cmd_migrations_wait, "wait")
    s.add_argument("--migrations", metavar="DIR",
                   help="wait for the head of this migrations directory (the revisions the "
                        "deploy ships; a revision the leader has not published yet is waited "
                        "for); without it, the head the leader published, which may be the "
                        "old one right after a deploy")
    s.add_argument("--revision", metavar="R", help="the revision to wait for (default: the head)")
    s.add_argument("--timeout", type=float, required=True, metavar="S")
    s.add_argument("--interval", type=float, default=1.0, metavar="S", help="poll interval")
    s.add_argument("--zk-grace", type=float, default=10.0, metavar="S",
                   help="seconds ZooKeeper may stay unreachable before exit 4 (default 10)")
    for name, helptext, func in (
            ("retry", "clear a failed or cancelled revision; the leader queues it again",
             cmd_migrations_retry),
            ("cancel", "cancel a revision's queued runs, stop running ones, halt it",
             cmd_migrations_cancel)):
        s = command(name, helptext, func)
        s.add_argument("revision", metavar="REVISION")
        s.add_argument("--pod", metavar="POD", help="only this pod's shard")
    s = command("skip", "stamp a revision on one shard without running it (after a manual fix)",
                cmd_migrations_skip)
    s.add_argument("revision", metavar="REVISION")
    s.add_argument("--pod", required=True, metavar="POD")
    s.add_argument("--migrations", required=True, metavar="DIR")
