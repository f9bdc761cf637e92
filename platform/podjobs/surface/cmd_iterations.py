"""`podjobs iterations list|show|pause|resume|cancel`: iteration jobs of every pod.

    podjobs iterations list [--state STATE] [--limit N]
    podjobs iterations show ID          (a job id, or a parallel group's id)
    podjobs iterations pause ID...      (a running job stops at its next item boundary)
    podjobs iterations resume ID...
    podjobs iterations cancel ID...

Which pods: every pod of the topology in ZooKeeper, unless `--pod NAME`, `--redis URL` or
`$PODJOBS_REDIS_URL` names one, as for the other operator views (`list` has a pod column;
`show`, `pause`, `resume` and `cancel` find the id on whichever pod holds it); every command
takes `--json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from podjobs.errors import BackendUnavailable, JobNotFound
from podjobs.exits import Exit
from podjobs.iteration.state import State
from podjobs.table import one_line, render

from .options import (
    Commands,
    action_result,
    add_target_args,
    add_watch,
    pod_targets,
    print_json,
    watching,
)
from .schema import iso

if TYPE_CHECKING:
    from podjobs.iteration.admin import Iterations
    from podjobs.iteration.state import Progress

T = TypeVar("T")


def _admins(args: argparse.Namespace) -> list[tuple[str | None, Iterations]]:
    """(pod, its iterations) for every pod of the view (see options.pod_targets)."""
    from podjobs.backend import RedisBackend
    from podjobs.iteration.admin import Iterations

    return [(pod, Iterations(RedisBackend(url, check=False))) for pod, url in pod_targets(args)]


def _each(args: argparse.Namespace, fn: Callable[[Iterations], T]) -> tuple[list[tuple[str | None, T]], int]:
    """`fn` on every pod of the view; a pod whose Redis does not answer is named on stderr
    and makes the exit code 4 (the others are still shown)."""
    from podjobs.gateway import UNREACHABLE

    out: list[tuple[str | None, T]] = []
    code = 0
    for pod, admin in _admins(args):
        try:
            out.append((pod, fn(admin)))
        except (BackendUnavailable, *UNREACHABLE) as exc:  # type: ignore[misc]
            print(f"podjobs: pod {pod}: Redis unreachable ({one_line(str(exc))}); left out",
                  file=sys.stderr)
            code = int(Exit.UNREACHABLE)
    return out, code


def _find(args: argparse.Namespace, fn: Callable[[Iterations], T], what: str) -> tuple[str | None, T]:
    """(pod, fn(admin)) on the first pod where `fn` finds `what` (JobNotFound elsewhere)."""
    from podjobs.gateway import UNREACHABLE
    from podjobs.iteration.store import FINISHED_TTL_S

    unreachable = []
    for pod, admin in _admins(args):
        try:
            got = _or_none(fn, admin)
        except (BackendUnavailable, *UNREACHABLE):  # type: ignore[misc]
            unreachable.append(pod or "?")
            continue
        if got is not None:
            return pod, got
    if unreachable:
        raise BackendUnavailable(f"{what!r} is on no pod that answered; Redis unreachable on pod(s) "
                                 f"{', '.join(unreachable)}")
    raise JobNotFound(f"no iteration job or parallel group {what!r} on any pod; finished ones are "
                      f"kept {FINISHED_TTL_S // 86400} days. See 'podjobs iterations list'")


def _or_none(fn: Callable[[Iterations], T], admin: Iterations) -> T | None:
    try:
        return fn(admin)
    except JobNotFound:
        return None


def _num(v: float | None, fmt: str = "{:,.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _progress(p: Progress) -> str:
    pct = p.percent
    return f"{p.done:,}/{p.total:,} ({pct:.1f}%)" if p.total is not None and pct is not None \
        else f"{p.done:,}"


def _state(p: Progress) -> str:
    return p.state.value + (f" ({p.control} requested)" if p.control else "")


def _rows(ps: list[Progress]) -> list[list[Any]]:
    return [[p.id, p.job, _state(p), _progress(p), _num(p.rate), _num(p.eta_s, "{:,.0f}s"),
             p.interrupted, f"{p.elapsed_s:,.1f}s", (p.group[-8:] + f"#{p.part}") if p.group else "-"]
            for p in ps]


_HEAD = ["id", "job", "state", "done", "items/s", "eta", "interrupted", "run time", "group"]


def iteration_row(d: dict[str, Any]) -> dict[str, Any]:
    """The `iteration` noun from a Progress's (or a group's) `as_dict()`: `job_id` for its id,
    epoch-millisecond times as ISO 8601 `*_at`, a group's parts likewise."""
    out: dict[str, Any] = {"job_id": d.get("id")}
    for k, v in d.items():
        if k == "id":
            continue
        if k.endswith("_ms") and (v is None or isinstance(v, int | float)):
            out[k[:-3] + "_at"] = iso(v or None, ms=True)
        elif k == "parts" and isinstance(v, list):
            out[k] = [iteration_row(x) for x in v]
        else:
            out[k] = v
    return out


def cmd_list(args: argparse.Namespace) -> int:
    return watching(args, lambda: _list(args))


def _list(args: argparse.Namespace) -> int:
    found, code = _each(args, lambda a: a.jobs(args.state, args.limit))
    if args.json:
        print_json([{"pod": pod, **iteration_row(p.as_dict())} for pod, ps in found for p in ps])
    else:
        print(render(["pod", *_HEAD], [[pod or "-", *row] for pod, ps in found for row in _rows(ps)]))
    return code


def cmd_show(args: argparse.Namespace) -> int:
    from podjobs.iteration.admin import GroupProgress

    pod, found = _find(args, lambda a: a.show(args.id), args.id)
    if args.json:
        print_json({"pod": pod, **iteration_row(found.as_dict())})
        return 0
    if isinstance(found, GroupProgress):
        total = f"/{found.total:,}" if found.total is not None else ""
        print(f"parallel iteration {found.id}: {found.job}, {found.state.value}, "
              f"{found.done:,}{total} items in {len(found.parts)} parts, "
              f"{_num(found.rate)} items/s, eta {_num(found.eta_s, '{:,.0f}s')}, "
              f"callback {'enqueued' if found.callback_fired else 'pending'}")
        print(render(_HEAD, _rows(found.parts)))
        return 0
    p = found
    for k, v in [("id", p.id), ("pod", pod or "-"), ("job", p.job), ("state", _state(p)), ("queue", p.queue),
                 ("tenant", p.tenant or "-"), ("done", _progress(p)),
                 ("rate", f"{_num(p.rate)} items/s"), ("eta", _num(p.eta_s, "{:,.0f}s")),
                 ("cursor", json.dumps(p.cursor)), ("runs", p.runs), ("interrupted", p.interrupted),
                 ("run time", f"{p.elapsed_s:,.1f}s"), ("last stop", p.reason or "-"),
                 ("error", p.error or "-"), ("worker", p.worker or "-"),
                 ("group", f"{p.group} part {p.part}" if p.group else "-")]:
        print(f"{k:>12}: {v}")
    return 0


def _control(action: str) -> Any:
    def cmd(args: argparse.Namespace) -> int:
        results: dict[str, str] = {}
        for i in args.ids:
            def act(a: Iterations, i: str = i) -> dict[str, str]:
                done: dict[str, str] = getattr(a, action)(i)
                return done

            results.update(_find(args, act, i)[1])
        return action_result(args, f"iterations {action}", list(results),
                             "\n".join(f"{jid}: {st}" for jid, st in results.items()),
                             states=results)

    return cmd


def register(cmds: Commands) -> None:
    cmds.group("iterations", "iteration jobs: progress, pause, resume, cancel",
               description="Iteration jobs of every pod (or --pod's): progress, pause, resume, cancel.")

    def command(name: str, help_: str, func: Any, noun: str = "action") -> argparse.ArgumentParser:
        p = cmds.command(name, help_, func, under="iterations", noun=noun)
        add_target_args(p)
        return p

    p = command("list", "iteration jobs, newest first, with their progress", cmd_list, "iteration")
    p.add_argument("--state", choices=[s.value for s in State])
    add_watch(p)
    p.add_argument("--limit", type=int, default=50)
    p = command("show", "one iteration job, or a parallel group and its parts", cmd_show, "iteration")
    p.add_argument("id", metavar="ID")
    for action, help_ in (("pause", "pause: a running job stops at its next item boundary and "
                                    "keeps its cursor"),
                          ("resume", "resume paused jobs from their cursor"),
                          ("cancel", "cancel: a running job stops at its next item boundary")):
        p = command(action, help_, _control(action))
        p.add_argument("ids", nargs="+", metavar="ID", help="job ids or parallel group ids")
