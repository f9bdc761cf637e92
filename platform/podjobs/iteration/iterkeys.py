"""Every Redis key of job iteration, built in this one module (Lua never builds keys).

They live in the pod's own Redis, next to the queue keys of `podjobs.keys`.
"""

from __future__ import annotations

from podjobs.keys import PREFIX

#: sorted set of iteration job ids, score = when it was first seen (ms, Redis clock)
INDEX = PREFIX + "iters"
#: sorted set of parallel group ids, score = creation time in ms
GROUPS = PREFIX + "itergroups"


def job(job_id: str) -> str:
    """Hash with one iteration job's state, cursor and progress (see store.py for its fields)."""
    return f"{PREFIX}iter:{job_id}"


def group(group_id: str) -> str:
    """Hash of a parallel group: parts, their job ids, the completion callback payload."""
    return f"{PREFIX}itergroup:{group_id}"


def group_done(group_id: str) -> str:
    """Set of the part numbers of a group that succeeded."""
    return f"{PREFIX}itergroup:{group_id}:done"
