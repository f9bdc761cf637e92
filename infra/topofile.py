"""The topology file (`topology.json`) that tells podjobs where its servers are, and the
`Pod` it lists (the one pod type: the pods package keeps the same `Pod` in ZooKeeper).

1. `Pod(name, redis_url, shard_url, state)`: one pod's Redis and database shard, and
   whether it takes new tenants (`PodState`; the file holds active pods only);
   `to_json` / `from_json` are its ZooKeeper node (pods/{name}).
2. `Topology(zookeeper, pods, db)`: the ZooKeeper address ("host:port") and the
   pods in order; `pod(name)` finds one, `pod_names` lists them.
3. `Topology.load(path)` / `.save(path)` / `from_dict` / `to_dict` read and write
   the JSON format written by `podjobs dev up`:
   {"zookeeper": "127.0.0.1:PORT", "db": "sqlite",
    "pods": [{"name": "p1", "redis_url": "redis://...", "shard_url": "sqlite:///..."}]}
4. `format_topology(topology)`: the table `podjobs dev up` prints (`format_table`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from podjobs.errors import ConfigurationError
from podjobs.quota import Quota

#: the queue backends a pod can run on
BACKENDS = ("redis", "sql")


class PodState(StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"


@dataclass(frozen=True)
class Pod:
    """One pod: its queue Redis, its database shard, and whether it takes new tenants."""

    name: str
    redis_url: str
    shard_url: str
    state: PodState = PodState.ACTIVE
    #: where the pod's queue lives: "redis" (its Redis) or "sql" (tables on its shard,
    #: podjobs.sqlbackend; redis_url may then be "")
    backend: str = "redis"
    #: the default quota of the pod's tenants (podjobs.quota; a tenant's own overrides it)
    quota: Quota | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigurationError(
                f"pod {self.name!r}: backend {self.backend!r} is not one of {', '.join(BACKENDS)} "
                f"(redis: the queue in the pod's Redis; sql: in tables on its shard)")

    def to_json(self) -> dict[str, Any]:
        """The pods/{name} node in ZooKeeper ("backend" only when not redis)."""
        node: dict[str, Any] = {
            "name": self.name,
            "redis_url": self.redis_url,
            "shard_url": self.shard_url,
            "state": self.state.value,
        }
        if self.backend != "redis":
            node["backend"] = self.backend
        if self.quota is not None and self.quota.to_json():
            node["quota"] = self.quota.to_json()
        return node

    @classmethod
    def from_json(cls, name: str, obj: dict[str, Any]) -> Pod:
        """From a pods/{name} node; `ValueError` if a field is missing or wrong."""
        try:
            return cls(
                name=name,
                redis_url=str(obj["redis_url"]),
                shard_url=str(obj["shard_url"]),
                state=PodState(obj.get("state", PodState.ACTIVE)),
                backend=str(obj.get("backend", "redis")),
                quota=Quota.from_json(obj["quota"], f"pod {name}'s quota") if obj.get("quota") else None,
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(f"pod node {name!r} is malformed ({exc!r}): {obj}") from exc

    def to_dict(self) -> dict[str, str]:
        """Its entry in topology.json ("backend" only when not redis)."""
        entry = {"name": self.name, "redis_url": self.redis_url, "shard_url": self.shard_url}
        if self.backend != "redis":
            entry["backend"] = self.backend
        return entry


@dataclass
class Topology:
    """ZooKeeper plus the pods, as written to topology.json."""

    zookeeper: str
    pods: list[Pod] = field(default_factory=list)
    db: str = "sqlite"

    def pod(self, name: str) -> Pod:
        """The pod called `name`; `ConfigurationError` listing the known pods if none."""
        for pod in self.pods:
            if pod.name == name:
                return pod
        known = ", ".join(self.pod_names) or "none"
        raise ConfigurationError(f"no pod named {name!r} in the topology (pods: {known})")

    @property
    def pod_names(self) -> list[str]:
        return [p.name for p in self.pods]

    def to_dict(self) -> dict[str, Any]:
        return {
            "zookeeper": self.zookeeper,
            "db": self.db,
            "pods": [p.to_dict() for p in self.pods],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "topology") -> Topology:
        try:
            pods = [
                Pod(name=str(p["name"]), redis_url=str(p.get("redis_url", "")),
                    shard_url=str(p["shard_url"]), backend=str(p.get("backend", "redis")))
                for p in data["pods"]
            ]  # fmt: skip
            zookeeper = str(data["zookeeper"])
        except (KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"{source} is not a podjobs topology (missing or bad field {exc}); "
                f"expected {{'zookeeper': 'host:port', 'pods': [{{'name', 'redis_url', "
                f"'shard_url'}}]}}"
            ) from exc
        for p in pods:
            if p.backend == "redis" and not p.redis_url:
                raise ConfigurationError(f"{source}: pod {p.name!r} needs a redis_url (or "
                                         f"\"backend\": \"sql\" to keep its queue on its shard)")
        names = [p.name for p in pods]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"{source} names a pod twice: {names}")
        return cls(zookeeper=zookeeper, pods=pods, db=str(data.get("db", "sqlite")))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Topology:
        """Read a topology.json; `ConfigurationError` if missing or malformed."""
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError as exc:
            raise ConfigurationError(
                f"topology file {p} does not exist; run 'podjobs dev up --pods N' first "
                f"or pass the path of an existing topology.json"
            ) from exc
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"topology file {p} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigurationError(f"topology file {p} must hold a JSON object")
        return cls.from_dict(data, source=str(p))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp file + rename); returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(p)
        return p


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)


def format_topology(topology: Topology) -> str:
    rows = [[p.name, p.redis_url if p.backend == "redis" else f"- (queue on its shard: {p.backend})",
             p.shard_url] for p in topology.pods]
    table = format_table(["pod", "redis", "shard"], rows)
    return f"{table}\n\nzookeeper  {topology.zookeeper}"
