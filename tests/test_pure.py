"""Pure decisions, tested from tables without servers."""

from __future__ import annotations

import math
import re

import pytest

from podjobs import backoff, payload
from podjobs.errors import PayloadError
from podjobs.ids import ID_LENGTH, id_time_ms, new_id


@pytest.mark.parametrize(
    ("attempt", "retries", "expect"),
    [(1, 0, "dead"), (1, 1, "retry"), (2, 1, "dead"), (25, 25, "retry"), (26, 25, "dead")],
)
def test_decide(attempt: int, retries: int, expect: str) -> None:
    d = backoff.decide(attempt, retries, backoff.constant(3))
    assert (
        (isinstance(d, backoff.RetryLater) and d.delay_s == 3)
        if expect == "retry"
        else isinstance(d, backoff.GiveUp)
    )


@pytest.mark.parametrize("attempt", [1, 2, 5, 10, 25])
def test_exponential_grows_within_jitter(attempt: int) -> None:
    lo = attempt**4 + 15
    for _ in range(50):
        d = backoff.exponential(attempt)
        assert lo <= d <= lo + 30 * (attempt + 1)


def test_ids_sort_by_time_and_have_fixed_length() -> None:
    a, b = new_id(1_000), new_id(2_000)
    assert len(a) == len(b) == ID_LENGTH
    assert a < b
    assert id_time_ms(b) == 2_000
    assert len({new_id() for _ in range(10_000)}) == 10_000


@pytest.mark.parametrize(
    "value",
    [None, True, 1, 1.5, "s", [1, [2]], (1, 2), {"a": {"b": [1]}}],
)
def test_payload_accepts_json_values(value: object) -> None:
    payload.check_value(value)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ({1, 2}, "set"),
        (b"x", "bytes"),
        (math.nan, "finite"),
        ({1: "a"}, "dict key 1"),
        ([object()], "argument[0]"),
        ({"k": 1j}, "complex"),
    ],
)
def test_payload_refuses_other_values(value: object, needle: str) -> None:
    with pytest.raises(PayloadError, match=re.escape(needle)):
        payload.check_value(value)


def test_payload_size_limit_names_the_size() -> None:
    big = {"id": new_id(), "job": "j", "args": ["x" * 600_000]}
    with pytest.raises(PayloadError, match="over the limit of 524288 bytes"):
        payload.encode(big)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"[1]", "not an object"),
        (b'{"id":"x"}', "lacks"),
        (b'{"id":"x","job":"j","args":{}}', "must be a list"),
    ],
)
def test_decode_bad_payloads(raw: bytes, reason: str) -> None:
    with pytest.raises(payload.BadPayload, match=reason):
        payload.decode(raw)
