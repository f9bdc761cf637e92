"""Per-tenant enqueue quotas: an enqueue rate (a token bucket) and a cap on pending jobs.

1. `Quota` is what a tenant may do on its pod: `rate` jobs a second with bursts of `burst`,
   and at most `pending` jobs enqueued and not yet started. Any field None = no limit.
   The directory holds them (pods.topology: a pod's `quota` is the default of its tenants,
   a tenant's `quota` overrides it field by field); `effective` merges the two.
2. The check runs inside the enqueue script (lua/enqueue.lua, one round trip): the bucket
   lives in the pod's Redis (`keys.rate(tenant)`), the pending count is exact: each job
   enqueued under a pending cap is recorded (`keys.PENDING`: job id -> tenant,
   `keys.PENDING_COUNT`: tenant -> count) and the record is removed, in the same script,
   when the job is first reserved, cancelled or carried away by a move.
3. Over either limit nothing is written and the enqueue raises `QuotaExceeded` (the HTTP
   API answers 429 with `Retry-After`).
A tenant without a quota pays one attribute test in Python and nothing in Lua.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from podjobs.errors import ConfigurationError, PodjobsError

FIELDS = ("rate", "burst", "pending")


class Quota(NamedTuple):
    """A tenant's limits on one pod (None = unlimited)."""

    rate: float | None = None
    burst: int | None = None
    pending: int | None = None

    @property
    def limited(self) -> bool:
        return self.rate is not None or self.pending is not None

    @property
    def bucket(self) -> int:
        """The bucket's size: `burst`, or one second of `rate` (at least 1)."""
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(self.rate or 1))

    def to_json(self) -> dict[str, Any]:
        return {k: v for k in FIELDS if (v := getattr(self, k)) is not None}

    @classmethod
    def from_json(cls, obj: Any, where: str = "quota") -> Quota:
        """From a directory node's `quota` object; `ValueError` naming the bad value."""
        if obj is None:
            return cls()
        if not isinstance(obj, Mapping):
            raise ValueError(f"{where} must be an object with {', '.join(FIELDS)}, not {obj!r}")
        unknown = sorted(set(obj) - set(FIELDS))
        if unknown:
            raise ValueError(f"{where} has unknown field(s) {', '.join(unknown)}; "
                             f"known: {', '.join(FIELDS)}")
        rate = obj.get("rate")
        burst = obj.get("burst")
        pending = obj.get("pending")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                                 or not rate > 0 or math.isinf(rate)):
            raise ValueError(f"{where}.rate must be a number of jobs a second above 0, not {rate!r}")
        for name, v in (("burst", burst), ("pending", pending)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{where}.{name} must be a whole number of jobs of 1 or more, "
                                 f"not {v!r}")
        if burst is not None and rate is None:
            raise ValueError(f"{where}.burst needs a rate (burst is the token bucket's size)")
        return cls(None if rate is None else float(rate), burst, pending)


def effective(default: Quota | None, override: Quota | None) -> Quota | None:
    """The pod's default with the tenant's fields laid over it; None when nothing is limited."""
    d = default or Quota()
    o = override or Quota()
    rate = o.rate if o.rate is not None else d.rate
    burst = o.burst if o.rate is not None or o.burst is not None else d.burst
    q = Quota(rate, burst if rate is not None else None,
              o.pending if o.pending is not None else d.pending)
    return q if q.limited else None


def parse_limit(text: str, name: str) -> float | int | None:
    """A `--rate/--burst/--pending` value: a number, or `none` to clear it."""
    if text.lower() in ("none", "off", "-"):
        return None
    try:
        v = float(text) if name == "rate" else int(text)
    except ValueError:
        raise ConfigurationError(
            f"--{name} {text!r} is not a {'number' if name == 'rate' else 'whole number'}; "
            f"give one (or 'none' to remove the limit)") from None
    return v


class TenantQuota(NamedTuple):
    """What an enqueue passes to the backend: the tenant and its limits."""

    tenant: str
    quota: Quota

    def spec(self) -> str:
        """The enqueue script's quota argument: "rate|bucket|pending|tenant" (see enqueue.lua)."""
        q = self.quota
        return (f"{'' if q.rate is None else repr(q.rate)}|{q.bucket if q.rate is not None else ''}"
                f"|{'' if q.pending is None else q.pending}|{self.tenant}")


class QuotaExceeded(PodjobsError):
    """An enqueue over the tenant's rate or pending cap: nothing was written."""

    def __init__(self, tenant: str, limit: str, value: float | int, retry_after_s: float | None,
                 current: float | int | None = None) -> None:
        self.tenant = tenant
        self.limit = limit
        self.value = value
        self.retry_after_s = retry_after_s
        self.current = current
        super().__init__(refusal_message(tenant, limit, value, retry_after_s, current))

    @property
    def retry_after_header(self) -> str:
        """A whole number of seconds for an HTTP Retry-After (at least 1)."""
        return str(max(1, math.ceil(self.retry_after_s or 1)))


def refusal_message(tenant: str, limit: str, value: float | int, retry_after_s: float | None,
                    current: float | int | None) -> str:
    if limit == "burst":
        return (f"tenant {tenant!r}: this enqueue needs more jobs at once than its rate "
                f"quota's burst of {value} allows; nothing was enqueued; enqueue in batches "
                f"of at most {value}")
    if limit == "rate":
        return (f"tenant {tenant!r} is over its enqueue rate quota ({value:g} jobs/s); "
                f"nothing was enqueued; retry in {retry_after_s:.3g} s")
    return (f"tenant {tenant!r} has {current} pending jobs, at its cap of {value}; nothing "
            f"was enqueued; retry when some have started (in ~{retry_after_s or 1:.3g} s), "
            f"or raise the cap with 'podjobs tenants quota {tenant} --pending N'")


#: Retry-After for a refusal by the pending cap (when jobs start is not known)
PENDING_RETRY_S = 1.0


def refusal(tq: TenantQuota, answer: list[Any]) -> QuotaExceeded:
    """The exception for the enqueue script's refusal `[kind, retry_ms, current]`."""
    kind = answer[0].decode() if isinstance(answer[0], bytes) else str(answer[0])
    retry_ms = int(answer[1])
    current = int(answer[2]) if len(answer) > 2 else None
    q = tq.quota
    if kind == "rate":
        assert q.rate is not None
        if retry_ms < 0:
            return QuotaExceeded(tq.tenant, "burst", q.bucket, None)
        return QuotaExceeded(tq.tenant, "rate", q.rate, retry_ms / 1000)
    assert q.pending is not None
    return QuotaExceeded(tq.tenant, "pending", q.pending, PENDING_RETRY_S, current)


def tokens_now(quota: Quota, tokens: float | None, at_ms: int | None, now_ms: int) -> float:
    """The tokens a bucket holds at `now_ms` (as enqueue.lua computes them): full when it was
    never used (or expired), else refilled at `rate` a second since `at_ms`, at most full."""
    full = float(quota.bucket)
    if quota.rate is None or tokens is None or at_ms is None:
        return full
    return min(full, tokens + max(0, now_ms - at_ms) * quota.rate / 1000)


class Usage(NamedTuple):
    """How near one tenant is to its limits on one pod (for `podjobs tenants top`)."""

    tenant: str
    pod: str | None
    quota: Quota
    pending: int
    tokens: float | None  # None: no rate limit

    @property
    def pending_used(self) -> float | None:
        """Pending jobs over the cap (0..1), None without a cap."""
        return None if self.quota.pending is None else self.pending / self.quota.pending

    @property
    def rate_used(self) -> float | None:
        """Share of the bucket spent (0..1), None without a rate limit."""
        if self.quota.rate is None or self.tokens is None:
            return None
        return max(0.0, 1 - self.tokens / self.quota.bucket)

    @property
    def nearness(self) -> float:
        """The larger of the two shares: how near the tenant is to being refused."""
        return max(x for x in (self.pending_used, self.rate_used, 0.0) if x is not None)

    def to_dict(self) -> dict[str, Any]:
        """The `quota_usage` noun."""
        return {"tenant": self.tenant, "pod": self.pod, "rate": self.quota.rate,
                "burst": self.quota.bucket if self.quota.rate is not None else None,
                "tokens": None if self.tokens is None else round(self.tokens, 3),
                "rate_used": None if self.rate_used is None else round(self.rate_used, 4),
                "pending": self.pending, "pending_cap": self.quota.pending,
                "pending_used": None if self.pending_used is None else round(self.pending_used, 4),
                "nearness": round(self.nearness, 4)}


def nearest(usages: list[Usage], limit: int | None = None) -> list[Usage]:
    """Tenants nearest their limits first (then by name); the first `limit` of them."""
    ranked = sorted(usages, key=lambda u: (-u.nearness, u.pod or "", u.tenant))
    return ranked if limit is None else ranked[:limit]
