"""Every ZooKeeper path the scheduler uses, built in this one module (under the ZK root).

    scheduler/election            kazoo Election: one contender node per scheduler process
    scheduler/leader              ephemeral JSON {"id", "host", "pid", "since"} of the leader
    migrations/locks/{pod}        kazoo Lock per shard: the migration runner holds it
    migrations/runs/{pod}/{rev}   JSON run record of one revision on one shard (runs.py)
    migrations/halts/{rev}        JSON {"pod", "error", "at"}: the revision is halted everywhere
    migrations/revisions          JSON {"order", "head", "directory"} published by the leader
    migrations/shards/{pod}       JSON {"current", "checked_at", "error"}: each shard's revision
    periodic/{job}/{target}       JSON {"last_tick"}: the last cron tick enqueued
"""

from __future__ import annotations

from podjobs.pods.zk import ZK

ELECTION = ("scheduler", "election")
LEADER = ("scheduler", "leader")


def election(zk: ZK) -> str:
    return str(zk.path(*ELECTION))


def leader(zk: ZK) -> str:
    return str(zk.path(*LEADER))


def lock(zk: ZK, pod: str) -> str:
    return str(zk.path("migrations", "locks", pod))


def runs(zk: ZK, pod: str) -> str:
    return str(zk.path("migrations", "runs", pod))


def run(zk: ZK, pod: str, revision: str) -> str:
    return str(zk.path("migrations", "runs", pod, revision))


def halts(zk: ZK) -> str:
    return str(zk.path("migrations", "halts"))


def halt(zk: ZK, revision: str) -> str:
    return str(zk.path("migrations", "halts", revision))


def revisions(zk: ZK) -> str:
    return str(zk.path("migrations", "revisions"))


def shards(zk: ZK) -> str:
    return str(zk.path("migrations", "shards"))


def shard(zk: ZK, pod: str) -> str:
    return str(zk.path("migrations", "shards", pod))


def periodic(zk: ZK, job: str, target: str) -> str:
    return str(zk.path("periodic", job, target))
