"""The exit codes of every `podjobs` command: what a deploy pipeline may rely on.

| code | meaning |
|---|---|
| 0 `OK` | done (a wait: every shard has the revision) |
| 1 `FAILED` | the thing asked for failed or is halted (a failed migration, a job not found, a refused action) |
| 2 `USAGE` | the command line or a setting is wrong (a typo, a missing flag, an unknown pod) |
| 3 `TIMEOUT` | a wait ran out of time; nothing failed (yet) |
| 4 `UNREACHABLE` | a server (ZooKeeper, Redis, a shard) could not be reached; nothing is known |
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    TIMEOUT = 3
    UNREACHABLE = 4
