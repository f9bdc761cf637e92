"""Migrate the tenant directory in place: one node per tenant -> hashed buckets.

`podjobs tenants migrate-directory` runs `migrate_directory(zk)`:

    old: tenants/{tenant} = {"pod", "state", "move"?}   (node version z)
    new: tenantdir/b/{bucket}["t"][tenant] = {"pod", "v": z, "state"?, "move"?}

In chunks of `chunk` old nodes (listed once, read pipelined): each bucket touched
gets the chunk's tenants it does not hold yet (one compare-and-set write per
bucket, `BucketStore.update`), a moving tenant is put in the moves index first,
then the chunk's old nodes are deleted (only at the version read: an old node
written meanwhile is left for the next run). At the end the empty tenants/
parent goes.

- Idempotent: a tenant already in its bucket is never overwritten (the bucket is
  the truth once written), so a second run changes nothing.
- Resumable: killed anywhere, it is run again; a chunk written but not deleted
  is skipped then deleted. `stop_after` (chunks) simulates the kill in tests.
- The tenant's version carries over (`v` = the old node's version), so the move
  fences already raised on the shards (pods/fence.py) keep their meaning.

Run it once every process runs the bucket-reading release (a process of the
old release does not see tenants written to buckets, nor the reverse).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from .buckets import BucketStore, Entries, bucket_of, ensure_layout
from .topology import TENANTS, TenantEntry
from .zk import ZK, BadVersionError, NoNodeError

log = logging.getLogger(__name__)

CHUNK = 5000


@dataclass(frozen=True)
class MigrateSummary:
    migrated: int  # written into their bucket by this run
    already: int  # found in their bucket (an earlier run, or a newer write)
    removed: int  # old nodes deleted by this run
    left: int  # old nodes still there (changed meanwhile, or stop_after)
    buckets: int

    def to_dict(self) -> dict[str, Any]:
        return {"migrated": self.migrated, "already": self.already, "removed": self.removed,
                "left": self.left, "buckets": self.buckets}


def _merge(found: dict[str, TenantEntry], entries: Entries) -> tuple[int, int]:
    added = kept = 0
    for tenant, entry in found.items():
        if tenant in entries:
            kept += 1
        else:
            entries[tenant] = entry.to_bucket()
            added += 1
    return added, kept


def migrate_directory(zk: ZK, *, buckets: int | None = None, chunk: int = CHUNK,
                      stop_after: int | None = None,
                      progress: Callable[[str], None] | None = None) -> MigrateSummary:
    """Move every tenants/{tenant} node into its bucket (see module doc)."""
    say = progress or (lambda msg: log.info("%s", msg))
    n = ensure_layout(zk, buckets) if buckets else ensure_layout(zk)
    if buckets and n != buckets:
        say(f"the directory already has {n} buckets; --buckets {buckets} ignored")
    store = BucketStore(zk)
    parent = zk.path(TENANTS)
    names = zk.children(parent)
    say(f"{len(names)} tenant node(s) in the old layout under {parent}; {n} buckets")
    migrated = already = removed = left = 0
    for c, start in enumerate(range(0, len(names), max(1, chunk))):
        part = names[start : start + max(1, chunk)]
        if stop_after is not None and c >= stop_after:
            left += len(names) - start
            break
        read = zk.get_many_json({zk.path(TENANTS, t): t for t in part})
        found: dict[str, TenantEntry] = {}
        versions: dict[str, int] = {}
        for path, got in read.items():
            tenant = path.rsplit("/", 1)[1]
            if isinstance(got, ValueError):
                log.warning("not migrated: %s", got)
                left += 1
                continue
            try:
                found[tenant] = TenantEntry.from_json(tenant, got[0], got[1])
            except ValueError as exc:
                log.warning("not migrated: %s", exc)
                left += 1
                continue
            versions[tenant] = got[1]
        for tenant, entry in found.items():
            if entry.move is not None:  # the index before the entry (a superset)
                zk.ensure_path(store.moves_path(tenant))
        by_bucket: dict[int, dict[str, TenantEntry]] = {}
        for tenant, entry in found.items():
            by_bucket.setdefault(bucket_of(tenant, n), {})[tenant] = entry
        results = store.update_many({i: partial(_merge, group) for i, group in by_bucket.items()})
        migrated += sum(a for a, _ in results.values())
        already += sum(k for _, k in results.values())
        gone = zk.delete_many([(zk.path(TENANTS, t), versions[t]) for t in found])
        for path, err in gone.items():
            if err is None:
                removed += 1
            elif isinstance(err, BadVersionError):
                # written meanwhile by a process of the old release: kept and counted; the
                # bucket keeps what was read (run this when no old process is left)
                log.warning("%s changed while it was migrated; left in place", path)
                left += 1
            elif not isinstance(err, NoNodeError):
                raise err
        say(f"chunk {c + 1}: {len(found)} tenant(s) in their buckets, old nodes deleted")
    if not left and zk.exists(parent) and not zk.children(parent):
        zk.delete(parent)
    return MigrateSummary(migrated, already, removed, left, n)
