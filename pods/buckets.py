"""The tenant directory's layout in ZooKeeper: tenants in hashed bucket nodes.

A process pays for the buckets it reads, not for every tenant: one node (and one
watch) per bucket instead of one per tenant (issue 17).

1. Layout under the ZK root:
       tenantdir/meta            {"buckets": N, "format": 1}  (N fixed when created)
       tenantdir/b/{i:04x}       {"t": {tenant: {"pod", "v", "state"?, "move"?}}}
       tenantdir/moves/{tenant}  (empty) the index of moves: a superset of the moving tenants
   A tenant is in bucket `crc32(tenant) % N`. `v` is the tenant's own version (what
   `TenantEntry.version` and the move fence use): 0 when assigned, +1 per write of
   its entry. "state" is left out when active.
2. Sizes: an entry is ~35 bytes (`"shop-123456":{"pod":"p12","v":0}`); with the default
   N = 1024, 1M tenants are ~1,000 per bucket, ~35 KB (150 KB with 128-character
   names), far below ZooKeeper's 1 MB packet limit (`MAX_BUCKET_BYTES` refuses a
   write above 900 KB, naming the way out: more buckets).
3. `BucketStore(zk)`: `update(index, fn)`: read a bucket, `fn(entries)` changes the
   dict in place, write it back with the node's version; on `BadVersionError` (another
   writer got there first) read again and redo `fn`: no update is lost under concurrent
   writers. `update_many` does the same for many buckets, pipelined (bulk sign-ups).
4. Pure: `bucket_of`, `bucket_name`, `encode_bucket`, `decode_bucket`, `entry_json`.
"""

from __future__ import annotations

import json
import logging
import random
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from podjobs.errors import ConfigurationError, PodjobsError

from .zk import ZK, BadVersionError, NodeExistsError, NoNodeError

log = logging.getLogger(__name__)

ROOT = "tenantdir"
META = "meta"
BUCKETS = "b"
MOVES = "moves"
DEFAULT_BUCKETS = 1024
FORMAT = 1
#: refuse to write a bucket above this (ZooKeeper's default packet limit is 1 MB)
MAX_BUCKET_BYTES = 900_000
#: read-modify-write attempts under contention before giving up
UPDATE_ATTEMPTS = 100

T = TypeVar("T")
#: one bucket's entries: tenant -> its JSON form (see `entry_json`)
Entries = dict[str, dict[str, Any]]


class BucketConflict(PodjobsError):  # type: ignore[misc,unused-ignore]
    """A bucket kept changing under us for `UPDATE_ATTEMPTS` writes."""


def bucket_of(tenant: str, buckets: int) -> int:
    """The bucket index of a tenant (stable across processes and Python versions)."""
    return zlib.crc32(tenant.encode()) % buckets


def bucket_name(index: int) -> str:
    return f"{index:04x}"


def encode_bucket(entries: Mapping[str, Mapping[str, Any]], where: str = "bucket") -> bytes:
    """A bucket's node data; `ConfigurationError` if it would not fit a ZooKeeper node."""
    raw = _dump(entries)
    if len(raw) > MAX_BUCKET_BYTES:
        raise ConfigurationError(
            f"directory {where} would hold {len(raw):,} bytes ({len(entries):,} tenants), over "
            f"the {MAX_BUCKET_BYTES:,}-byte limit under ZooKeeper's 1 MB packet size; re-create "
            f"the directory with more buckets ('podjobs tenants migrate-directory --buckets N')")
    return raw


def _dump(entries: Mapping[str, Mapping[str, Any]]) -> bytes:
    return json.dumps({"t": entries}, separators=(",", ":"), sort_keys=True).encode()


def decode_bucket(raw: bytes | None, where: str) -> Entries:
    """A bucket's entries; `ValueError` naming `where` if it is not a bucket."""
    if not raw:
        return {}
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"ZooKeeper node {where} does not hold JSON: {exc}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("t", {}), dict):
        raise ValueError(f"ZooKeeper node {where} is not a directory bucket ({{\"t\": {{...}}}})")
    entries: Entries = obj.get("t", {})
    return entries


def entry_json(pod: str, state: str, move: dict[str, Any] | None, version: int,
               quota: dict[str, Any] | None = None) -> dict[str, Any]:
    """One tenant's compact JSON form inside its bucket (its own quota only when it has one)."""
    obj: dict[str, Any] = {"pod": pod, "v": version}
    if state != "active":
        obj["state"] = state
    if move is not None:
        obj["move"] = move
    if quota:
        obj["quota"] = quota
    return obj


class BucketStore:
    """Reads and compare-and-set writes of the bucket nodes (see module doc)."""

    def __init__(self, zk: ZK) -> None:
        self.zk = zk
        self._buckets: int | None = None

    # -- layout ---------------------------------------------------------------------

    def path(self, index: int) -> str:
        return self.zk.path(ROOT, BUCKETS, bucket_name(index))

    def moves_path(self, tenant: str | None = None) -> str:
        return self.zk.path(ROOT, MOVES, *([tenant] if tenant else []))

    @property
    def buckets(self) -> int:
        """The bucket count (read once; the meta node is created with the default if missing)."""
        if self._buckets is None:
            self._buckets = ensure_layout(self.zk)
        return self._buckets

    def index(self, tenant: str) -> int:
        return bucket_of(tenant, self.buckets)

    # -- reads ----------------------------------------------------------------------

    def read(self, index: int) -> tuple[Entries, int]:
        """(entries, node version); an absent bucket is ({}, -1)."""
        got = self.read_many([index])
        return got[index]

    def read_many(self, indices: Iterable[int]) -> dict[int, tuple[Entries, int]]:
        """Many buckets, pipelined: index -> (entries, node version or -1 if absent)."""
        paths = {self.path(i): i for i in indices}
        out: dict[int, tuple[Entries, int]] = {}
        for path, got in self.zk.read_watched(paths, None).items():
            i = paths[path]
            out[i] = ({}, -1) if got is None else (decode_bucket(got[0], path), got[1])
        return out

    # -- writes ---------------------------------------------------------------------

    def update(self, index: int, fn: Callable[[Entries], T]) -> T:
        """Read bucket `index`, let `fn` change its entries in place, write it back if they
        changed (compare-and-set on the node version; re-done from a fresh read when
        another writer won). Returns `fn`'s result of the attempt that was written.
        `fn` may raise to refuse (nothing is written)."""
        return self.update_many({index: fn})[index]

    def update_many(self, fns: Mapping[int, Callable[[Entries], T]]) -> dict[int, T]:
        """`update` for many buckets at once, reads and writes pipelined."""
        todo = dict(fns)
        results: dict[int, T] = {}
        for attempt in range(UPDATE_ATTEMPTS):
            if not todo:
                return results
            current = self.read_many(todo)
            writes: list[tuple[str, bytes, int]] = []
            pending: dict[str, tuple[int, T]] = {}
            for i, fn in todo.items():
                entries, version = current[i]
                before = _dump(entries) if version >= 0 else None
                result = fn(entries)
                data = encode_bucket(entries, self.path(i))
                if data == before:
                    results[i] = result  # nothing changed: nothing to write
                    continue
                writes.append((self.path(i), data, -2 if version < 0 else version))
                pending[self.path(i)] = (i, result)
            got = self.zk.write_many(writes) if writes else {}
            todo_next: dict[int, Callable[[Entries], T]] = {}
            for path, res in got.items():
                i, result = pending[path]
                if isinstance(res, (BadVersionError, NodeExistsError, NoNodeError)):
                    todo_next[i] = todo[i]  # another writer won: read again, redo
                elif isinstance(res, Exception):
                    raise res
                else:
                    results[i] = result
            todo = todo_next
            if todo:
                time.sleep(random.uniform(0, min(0.05, 0.002 * (attempt + 1))))
        raise BucketConflict(
            f"directory bucket(s) {', '.join(bucket_name(i) for i in sorted(todo))} kept changing "
            f"under us ({UPDATE_ATTEMPTS} attempts); try again")


def ensure_layout(zk: ZK, buckets: int = DEFAULT_BUCKETS) -> int:
    """Create tenantdir/ (meta with `buckets`, b/, moves/) if missing; returns the bucket
    count in force (an existing meta node's wins)."""
    meta = zk.path(ROOT, META)
    got = zk.get_json(meta)
    if got is None:
        if buckets < 1 or buckets > 65536:
            raise ConfigurationError(f"bucket count {buckets} is out of range (1-65536)")
        for sub in (BUCKETS, MOVES):
            zk.ensure_path(zk.path(ROOT, sub))
        try:
            zk.create_json(meta, {"buckets": buckets, "format": FORMAT})
        except NodeExistsError:
            pass
        got = zk.get_json(meta)
        assert got is not None
    n = got[0].get("buckets")
    if not isinstance(n, int) or n < 1:
        raise ConfigurationError(f"ZooKeeper node {meta} holds no valid bucket count: {got[0]}")
    return n
