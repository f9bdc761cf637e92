"""Test-only crash points: a process kills itself (SIGKILL) at a named step.

`PODJOBS_MOVE_CRASH_AT=<name>` (comma-separated names allowed) makes the
tenant mover die with SIGKILL, exactly as `kill -9` would, when it reaches
`crash_point(<name>)`; so a fault test can stop it between two given writes
deterministically and then resume or roll back the move in another process.
Unset (always, outside tests) it costs one environment lookup per point.

Points of `podjobs tenants move` (pods/moves.py):
- `before_<step>` (quiesce, carry, copy_data, flip, release): the step is
  recorded in the directory entry, nothing of it done yet;
- `carry_written`: carried jobs are written to the destination's held hash,
  the source's staging hash is not cleared yet;
- `outbox_held`: a batch of the tenant's unsent outbox jobs is held on the
  destination, their rows not yet deleted from the source shard;
- `rollback_recorded`: the rollback is recorded in the directory entry, no job
  returned yet;
- `rollback_written`: returning jobs are written to the source, not yet
  removed from the destination;
- `released`: after the first batch of held jobs was released (after the flip).
"""

from __future__ import annotations

import os
import signal

ENV = "PODJOBS_MOVE_CRASH_AT"
#: the outbox relay's point (pods/relay.py): `after_push`: its first batch is pushed to
#: Redis, the outbox rows are not deleted yet
RELAY_ENV = "PODJOBS_RELAY_CRASH_AT"


def crash_point(name: str, env: str = ENV) -> None:
    """SIGKILL this process if `$PODJOBS_MOVE_CRASH_AT` (or `env`) names this point."""
    wanted = os.environ.get(env)
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
