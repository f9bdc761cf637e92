"""Tenant quotas: the pure decisions (podjobs.quota), from tables."""

from __future__ import annotations

from typing import Any

import pytest

from podjobs.errors import PodjobsError
from podjobs.quota import (
    Quota,
    QuotaExceeded,
    TenantQuota,
    Usage,
    effective,
    nearest,
    refusal,
    tokens_now,
)


@pytest.mark.parametrize("obj, want", [
    (None, Quota()),
    ({}, Quota()),
    ({"rate": 5}, Quota(5.0, None, None)),
    ({"rate": 0.5, "burst": 3, "pending": 100}, Quota(0.5, 3, 100)),
    ({"pending": 7}, Quota(None, None, 7)),
])
def test_quota_from_directory_json(obj: Any, want: Quota) -> None:
    assert Quota.from_json(obj) == want


@pytest.mark.parametrize("obj, words", [
    ([1], "must be an object"),
    ({"rate": 0}, "rate must be a number"),
    ({"rate": -1}, "rate must be a number"),
    ({"rate": "5"}, "rate must be a number"),
    ({"rate": True}, "rate must be a number"),
    ({"rate": 1, "burst": 0}, "burst must be a whole number"),
    ({"pending": 1.5}, "pending must be a whole number"),
    ({"burst": 3}, "burst needs a rate"),
    ({"rat": 3}, "unknown field(s) rat"),
])
def test_bad_quotas_are_refused_naming_the_value(obj: Any, words: str) -> None:
    with pytest.raises(ValueError) as e:
        Quota.from_json(obj, "tenant t's quota")
    assert words in str(e.value) and "tenant t's quota" in str(e.value)


@pytest.mark.parametrize("default, override, want", [
    (None, None, None),
    (Quota(), Quota(), None),
    (Quota(10, 20, None), None, Quota(10, 20, None)),
    (None, Quota(None, None, 5), Quota(None, None, 5)),
    (Quota(10, 20, 100), Quota(None, None, 5), Quota(10, 20, 5)),
    # a tenant's own rate comes with its own burst (the pod's burst was for the pod's rate)
    (Quota(10, 20, 100), Quota(2, None, None), Quota(2, None, 100)),
    (Quota(10, 20, None), Quota(None, 50, None), Quota(10, 50, None)),
])
def test_effective_quota_is_the_pods_default_under_the_tenants_fields(
        default: Quota | None, override: Quota | None, want: Quota | None) -> None:
    assert effective(default, override) == want


@pytest.mark.parametrize("quota, tokens, at, now, want", [
    (Quota(10, 5), None, None, 1000, 5.0),     # never used: full
    (Quota(10, 5), 0.0, 1000, 1000, 0.0),
    (Quota(10, 5), 0.0, 1000, 1100, 1.0),      # 100 ms at 10/s
    (Quota(10, 5), 2.0, 1000, 5000, 5.0),      # never above the bucket
    (Quota(10, 5), 2.0, 1000, 900, 2.0),       # a clock step back adds nothing
    (Quota(2.5), 0.0, 0, 400, 1.0),            # default bucket: one second of rate (3)
    (Quota(2.5), 0.0, 0, 4000, 3.0),
])
def test_tokens_refill_at_the_rate_up_to_the_bucket(
        quota: Quota, tokens: float | None, at: int | None, now: int, want: float) -> None:
    assert tokens_now(quota, tokens, at, now) == pytest.approx(want)


@pytest.mark.parametrize("quota, answer, limit, retry, words", [
    (Quota(10, 5), ["rate", 250], "rate", 0.25, "over its enqueue rate quota (10 jobs/s)"),
    (Quota(10, 5), [b"rate", -1], "burst", None, "batches of at most 5"),
    (Quota(None, None, 3), [b"pending", 1000, 3], "pending", 1.0, "3 pending jobs, at its cap of 3"),
])
def test_refusals_name_the_tenant_the_limit_and_when_to_retry(
        quota: Quota, answer: list[Any], limit: str, retry: float | None, words: str) -> None:
    exc = refusal(TenantQuota("shop-1", quota), answer)
    assert isinstance(exc, PodjobsError) and exc.limit == limit and exc.retry_after_s == retry
    assert "'shop-1'" in str(exc) and words in str(exc) and "nothing was enqueued" in str(exc)
    assert int(exc.retry_after_header) >= 1


def test_retry_after_header_rounds_up_to_whole_seconds() -> None:
    assert QuotaExceeded("t", "rate", 1.0, 1.2).retry_after_header == "2"
    assert QuotaExceeded("t", "rate", 1.0, 0.001).retry_after_header == "1"


def test_the_script_spec_carries_only_the_limits_set() -> None:
    assert TenantQuota("a", Quota(2.5, None, None)).spec() == "2.5|3||a"
    assert TenantQuota("a", Quota(None, None, 9)).spec() == "||9|a"
    assert TenantQuota("a", Quota(1.0, 4, 9)).spec() == "1.0|4|9|a"


def test_top_ranks_tenants_nearest_a_limit_first() -> None:
    us = [Usage("calm", "p1", Quota(10, 10, 100), 1, 10.0),
          Usage("flood", "p1", Quota(10, 10, 100), 95, 9.0),
          Usage("bursty", "p2", Quota(10, 10, None), 0, 1.0),
          Usage("norate", "p2", Quota(None, None, 10), 5, None)]
    assert [u.tenant for u in nearest(us)] == ["flood", "bursty", "norate", "calm"]
    assert [u.tenant for u in nearest(us, 1)] == ["flood"]
    d = us[2].to_dict()
    assert d["rate_used"] == 0.9 and d["pending_used"] is None and d["nearness"] == 0.9
