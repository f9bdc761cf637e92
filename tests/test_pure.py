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
    same_ms = [new_id(5_000) for _ in range(1_000)]     # one process, one millisecond
    assert same_ms == sorted(same_ms) and len(set(same_ms)) == 1_000


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
        # every field a worker reads is checked before anything runs (issue 11, item 4)
        (b'{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","job":"j","attempt":"2"}', "'attempt' is '2', not int"),
        (b'{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","job":"j","attempt":true}', "'attempt' is True"),
        (b'{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","job":"j","attempt":-1}', "below 0"),
        (b'{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","job":"j","then":{"id":"x"}}', "'then' is"),
        (b'{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","job":"j","then":[{"id":"x","job":"k"}]}',
         "follow-up 0 lacks its 'queue'"),
        (b'{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","job":"j","then":[{"job":"k","queue":"q"}]}',
         "follow-up 0 lacks a string 'id'"),
        (b'{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","job":"j","tenant":7}', "'tenant' is 7"),
        (b'{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","job":"j","unique":null}', "'unique' is None"),
        (b'{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","job":"j","enqueued_at":1.5}', "'enqueued_at' is 1.5"),
        (b'{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","job":""}', "lacks a string 'job'"),
        # the in-flight hash is keyed by the id Lua reads: the payload must start with it
        (b'{"id": "01ARZ3NDEKTSV4RRFFQ69G5FAV","job":"j"}', "does not start with"),
        (b'{"job":"j","id":"01ARZ3NDEKTSV4RRFFQ69G5FAV"}', "does not start with"),
        (b'{"id":"short","job":"j"}', "does not start with"),
        (b'{"id":"01ARZ3NDEKTSV4RRFFQ69G5FA\\u0041","job":"j"}', "does not start with"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_decode_bad_payloads(raw: bytes, reason: str) -> None:
    with pytest.raises(payload.BadPayload, match=re.escape(reason)):
        payload.decode(raw)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","job":"j"}', "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        (b'{"id": "01ARZ3NDEKTSV4RRFFQ69G5FAV","job":"j"}', "bad:"),
        (b'{"id":"01ARZ3NDEKTSV4RRFFQ69G5F-V","job":"j"}', "bad:"),
        (b"garbage", "bad:"),
    ],
)
def test_inflight_field_is_the_id_or_a_digest(raw: bytes, field: str) -> None:
    got = payload.inflight_field(raw)
    assert got == field if not field.endswith(":") else got.startswith(field) and len(got) == 44


def test_identity_renews_once_per_reap_and_registers_first() -> None:
    from podjobs.identity import Identity

    ident = Identity("h:1:tok")
    registered: list[str] = []
    assert ident.renew("h:1:tok", registered.append) and ident.id == "h:1:tok.2"
    assert not ident.renew("h:1:tok", registered.append)  # a second thread saw the same reap
    assert registered == ["h:1:tok.2"]

    def down(_: str) -> None:
        raise ConnectionError("redis down")

    with pytest.raises(ConnectionError):
        ident.renew("h:1:tok.2", down)
    assert ident.id == "h:1:tok.2" and ident.generation == 2  # unchanged: tried again later
    assert ident.renew("h:1:tok.2", registered.append) and ident.id == "h:1:tok.3"


def test_record_behaves_as_the_named_tuple_it_replaced() -> None:
    """podjobs.record.Record: equality by type and fields, hash, repr, unpacking, _replace."""
    from podjobs.fetcher import Reserved
    from podjobs.gateway import SentinelURL

    a = Reserved("q", b"raw", "w1")
    assert a == Reserved("q", b"raw", "w1") and hash(a) == hash(Reserved("q", b"raw", "w1"))
    assert a != Reserved("q", b"raw", "w2") and a != ("q", b"raw", "w1")
    queue, raw, owner = a
    assert (queue, raw, owner) == ("q", b"raw", "w1")
    assert repr(a) == "Reserved(queue='q', raw=b'raw', owner='w1')"
    b = a._replace(owner="w2")
    assert b == Reserved("q", b"raw", "w2") and a.owner == "w1"
    s = SentinelURL((("h", 1),), "p")
    assert (s.db, s.wait_ms) == (0, 1000) and s._replace(db=2).db == 2
