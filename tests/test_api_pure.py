"""The HTTP API's pure parts, from tables: body parsing, Expect/Prefer, the status document
and its answers, tokens, and the core's status field builders."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

import podjobs
from podjobs import status
from podjobs.errors import ConfigurationError
from podjobs.surface.api.answers import final_answer, monitor_answer
from podjobs.surface.api.auth import Principal, TokenStore, digest, entry_for, parse_tokens
from podjobs.surface.api.body import BadRequest, EnqueueRequest, Unprocessable, parse_enqueue
from podjobs.surface.api.negotiation import Demand, Mode, parse_demand, refusal
from podjobs.surface.api.views import iso, job_view, valid_job_id

# -- the enqueue body ---------------------------------------------------------------------------


@pytest.mark.parametrize("body, want", [
    (b'{"job": "a.b"}', EnqueueRequest("a.b")),
    (b'{"job": "a.b", "args": [1, "x", null], "kwargs": {"k": [1.5]}, "queue": "q-1", "delay": 2}',
     EnqueueRequest("a.b", [1, "x", None], {"k": [1.5]}, "q-1", 2.0)),
    (b'{"job": "a.b", "delay": 0}', EnqueueRequest("a.b", delay=0.0)),
])
def test_parse_enqueue_accepts(body: bytes, want: EnqueueRequest) -> None:
    assert parse_enqueue(body) == want


@pytest.mark.parametrize("body", [
    b"", b"{", b"nope", b'{"job": "a", "args": [NaN]}', b'{"job": "a", "x": Infinity}',
    b"\xff\xfe", b"[" * 5000 + b"]" * 5000,
])
def test_parse_enqueue_400_for_what_is_not_json(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_enqueue(body)


@pytest.mark.parametrize("body, field", [
    (b"[]", "body"), (b"1", "body"), (b"{}", "job"), (b'{"job": 7}', "job"),
    (b'{"job": ""}', "job"), (b'{"job": "' + b"x" * 201 + b'"}', "job"),
    (b'{"job": "a", "args": {}}', "args"), (b'{"job": "a", "kwargs": []}', "kwargs"),
    (b'{"job": "a", "queue": "a:b"}', "queue"), (b'{"job": "a", "queue": ""}', "queue"),
    (b'{"job": "a", "queue": "default\\n"}', "queue"),
    (b'{"job": "a", "delay": -1}', "delay"), (b'{"job": "a", "delay": true}', "delay"),
    (b'{"job": "a", "delay": "5"}', "delay"), (b'{"job": "a", "delay": 1e12}', "delay"),
    (b'{"job": "a", "tenant": "x"}', "tenant"),
])
def test_parse_enqueue_422_names_the_field(body: bytes, field: str) -> None:
    with pytest.raises(Unprocessable) as ei:
        parse_enqueue(body)
    assert ei.value.errors[0]["loc"][-1] == field


@pytest.mark.parametrize("body, loc, names", [
    (b'{"job": "t.add", "args": [1e400, 1]}', ["body", "args", 0], "1e400"),
    (b'{"job": "t.add", "kwargs": {"x": [2, -1E+999]}}', ["body", "kwargs", "x", 1], "-1E+999"),
    (b'{"job": "t.add", "args": ["\\ud800", 1]}', ["body", "args", 0], "\\ud800"),
    (b'{"job": "t.add", "kwargs": {"a\\udfff": 1}}', ["body", "kwargs"], "\\udfff"),
    (b'{"job": "t.\\udc00"}', ["body", "job"], "\\udc00"),
])
def test_parse_enqueue_422_for_values_a_payload_cannot_carry(body: bytes, loc: list[Any],
                                                              names: str) -> None:
    with pytest.raises(Unprocessable) as ei:
        parse_enqueue(body)
    assert ei.value.errors[0]["loc"] == loc
    assert names in ei.value.errors[0]["msg"] and names in ei.value.detail
    # a valid astral character (a surrogate pair in JSON) and big finite numbers are fine
    ok = parse_enqueue(b'{"job": "t.add", "args": ["\\ud83d\\ude00", 1.7e308, 10000000000000000000000]}')
    assert ok.args == ["\U0001f600", 1.7e308, 10**22]


# -- Expect and Prefer -------------------------------------------------------------------------------

D, M = 10.0, 30.0


@pytest.mark.parametrize("expect, prefer, mode, wait, no_content", [
    (None, None, Mode.ASYNC, 0.0, False),
    ("202-accepted", None, Mode.ASYNC, 0.0, False),
    ("202-Accepted", "wait=5", Mode.ASYNC, 0.0, False),  # Expect wins
    ("100-continue", None, Mode.ASYNC, 0.0, False),
    ("200-ok", None, Mode.SYNC, D, False),
    ("201-created", "wait=3", Mode.SYNC, 3.0, False),
    ("204-no-content", None, Mode.SYNC, D, True),
    ("201", None, Mode.SYNC, D, False),
    ("100-continue, 200-ok", None, Mode.SYNC, D, False),
    (None, "wait=7", Mode.SYNC, 7.0, False),
    (None, "wait=100", Mode.SYNC, M, False),  # capped
    (None, "handling=lenient; x=1, wait=2.5", Mode.SYNC, 2.5, False),
    (None, 'wait="4"', Mode.SYNC, 4.0, False),
    (None, "respond-async, wait=4", Mode.WAIT_THEN_ASYNC, 4.0, False),
    (None, "respond-async", Mode.ASYNC, 0.0, False),
    (None, "wait=abc", Mode.ASYNC, 0.0, False),  # unparseable preferences are ignored
    (None, "wait=-1", Mode.ASYNC, 0.0, False),
    (None, "return=minimal", Mode.ASYNC, 0.0, False),
])
def test_parse_demand(expect: str | None, prefer: str | None, mode: Mode, wait: float,
                      no_content: bool) -> None:
    d = parse_demand(expect, prefer, default_wait_s=D, max_wait_s=M)
    assert d.refusal is None
    assert (d.mode, d.wait_s, d.no_content) == (mode, wait, no_content)


@pytest.mark.parametrize("expect, prefer, why", [
    ("299-maybe", None, "unsupported expectation"),
    ("200-okay", None, "unsupported expectation"),
    ("202-accepted, 201-created", None, "both"),
    (None, "wait=0", "0 seconds"),
    ("200-ok", "wait=0", "0 seconds"),
])
def test_parse_demand_refuses(expect: str | None, prefer: str | None, why: str) -> None:
    d = parse_demand(expect, prefer, default_wait_s=D, max_wait_s=M)
    assert d.refusal is not None and why in d.refusal
    assert refusal(False, None, d) == d.refusal


def test_refusal_before_anything_is_written() -> None:
    sync = Demand(Mode.SYNC, 5.0)
    assert refusal(False, None, sync) is None
    assert "asynchronously only" in (refusal(True, None, sync) or "")
    assert "cannot finish within the 5 s" in (refusal(False, 5.0, sync) or "")
    assert refusal(False, 4.9, sync) is None
    assert refusal(True, 100.0, Demand(Mode.ASYNC)) is None
    assert refusal(True, None, Demand(Mode.WAIT_THEN_ASYNC, 3.0)) is None


# -- the status document -------------------------------------------------------------------------------

JID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
BASE = {"job": "app.x", "queue": "default", "tenant": "shop-1", "attempts": "1",
        "max_attempts": "3", "enqueued_ms": "1700000000000", "started_ms": "1700000000100",
        "updated_ms": "1700000000200"}


def view(**rec: str) -> dict[str, Any]:
    return job_view(JID, {**BASE, **rec})


def test_job_view_fields() -> None:
    v = view(state="running", worker="w1")
    assert v["state"] == "running" and v["attempts"] == 1 and v["max_attempts"] == 3
    assert v["enqueued_at"] == "2023-11-14T22:13:20.000Z" and v["started_at"].endswith("20.100Z")
    assert v["finished_at"] is None and v["location"] is None and v["monitor"] == f"/v1/jobs/{JID}"
    v = view(state="succeeded", finished_ms="1700000001000", location="/x/1", result='{"a":1}')
    assert v["finished_at"] == "2023-11-14T22:13:21.000Z" and v["result"] == {"a": 1}
    v = view(state="failed", error='{"class":"E","message":"m"}', reason="retries_exhausted",
             location="/ignored")
    assert v["error"] == {"class": "E", "message": "m"} and v["location"] is None
    assert view(state="queued", run_at_ms="1700000009000")["run_at"] == "2023-11-14T22:13:29.000Z"
    assert view(state="succeeded", run_at_ms="1")["run_at"] is None


@pytest.mark.parametrize("rec, alive, progress, state, reason", [
    ({"state": "running"}, True, None, "running", None),
    ({"state": "running"}, False, None, "queued", "recovered"),  # its worker is gone
    ({"state": "running"}, None, None, "running", None),
    ({"state": "succeeded"}, None, {"state": "cancelled"}, "cancelled", "cancelled"),
    ({"state": "succeeded"}, None, {"state": "paused"}, "paused", "paused"),
    ({"state": "queued"}, None, {"state": "paused"}, "paused", "paused"),
    ({"state": "failed", "reason": "retries_exhausted"}, None, {"state": "cancelled"}, "failed",
     "retries_exhausted"),
    ({"state": "running"}, True, {"state": "running"}, "running", None),
])
def test_job_view_state(rec: dict[str, str], alive: bool | None, progress: dict[str, Any] | None,
                        state: str, reason: str | None) -> None:
    prog = None if progress is None else {"done": 1, "runs": 1, "interrupted": 0, "elapsed_s": 0.5,
                                          "reason": "", **progress}
    v = job_view(JID, {**BASE, **rec}, prog, alive)
    assert (v["state"], v["reason"]) == (state, reason)


def test_progress_view_rounds_and_drops_nan() -> None:
    p = {"state": "running", "done": 3, "total": 9, "percent": 33.3333333, "rate": float("nan"),
         "eta_s": 1.23456, "runs": 1, "interrupted": 0, "elapsed_s": 2.0, "reason": "", "cursor": 2,
         "worker": "hidden"}
    v = job_view(JID, {**BASE, "state": "running"}, p)["progress"]
    assert v["percent"] == 33.333 and v["rate"] is None and v["eta_s"] == 1.235
    assert "worker" not in v and v["cursor"] == 2


def test_answers() -> None:
    ok = view(state="succeeded", location="/things/1")
    a = monitor_answer(ok)
    assert (a.status, a.headers) == (303, {"Location": "/things/1"})
    assert monitor_answer(view(state="succeeded")).status == 200
    assert monitor_answer(view(state="failed")).status == 200
    sync = Demand(Mode.SYNC, 5.0, prefer_wait=5.0)
    a = final_answer(ok, sync)
    assert a.status == 201 and a.headers["Location"] == "/things/1"
    assert a.headers["Content-Location"] == f"/v1/jobs/{JID}" and a.headers["Preference-Applied"] == "wait=5"
    a = final_answer(view(state="succeeded"), Demand(Mode.SYNC, 5.0, no_content=True))
    assert (a.status, a.body) == (204, None) and "Preference-Applied" not in a.headers
    a = final_answer(view(state="succeeded", result="3"), Demand(Mode.SYNC, 5.0, no_content=True))
    assert a.status == 200
    assert final_answer(view(state="dead"), sync).status == 200
    # asked 2.5 s, the server waited at most 1 s (its cap): the preference applied is wait=1
    assert final_answer(view(state="succeeded"), Demand(Mode.SYNC, 1, 2.5)).headers[
        "Preference-Applied"] == "wait=1"


def test_ids_and_times() -> None:
    assert valid_job_id(JID) and valid_job_id(podjobs.ids.new_id())
    for bad in ("", JID.lower(), JID[:-1], JID + "0", "01ARZ3NDEKTSV4RRFFQ69G5FAU"[:-1] + "I", JID + "\n"):
        assert not valid_job_id(bad)
    assert iso(None) is None and iso("") is None and iso("x") is None and iso(0) is None


# -- tokens ------------------------------------------------------------------------------------------


def test_tokens_parse_and_authenticate(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"tokens": [
        {"name": "a", "tenant": "shop-1", "token": "a-long-enough-token"},
        {"tenant": "shop-2", "sha256": digest("secret-of-shop-two").hex()},
        {"operator": True, "token": "operator-token-xyz"},
    ]}))
    ts = TokenStore(f)
    assert len(ts) == 3
    assert ts.authenticate("Bearer a-long-enough-token") == Principal("a", "shop-1")
    assert ts.authenticate("bearer   secret-of-shop-two") == Principal("tokens[1]", "shop-2")
    op = ts.authenticate("Bearer operator-token-xyz")
    assert op is not None and op.operator and op.may_act_for("anyone")
    for bad in (None, "", "Bearer", "Bearer ", "Basic a-long-enough-token", "a-long-enough-token",
                "Bearer a-long-enough-toke", "Bearer A-LONG-ENOUGH-TOKEN"):
        assert ts.authenticate(bad) is None, bad
    p = ts.authenticate("Bearer a-long-enough-token")
    assert p is not None and p.may_act_for("shop-1") and not p.may_act_for("shop-2")
    assert not p.may_act_for(None)


def test_token_file_is_reloaded_when_it_changes(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"tokens": [{"tenant": "t1", "token": "first-token-0123456"}]}))
    ts = TokenStore(f)
    assert ts.authenticate("Bearer first-token-0123456") is not None
    f.write_text(json.dumps({"tokens": [{"tenant": "t1", "token": "second-token-012345"}]}))
    st = f.stat()
    os.utime(f, (st.st_atime, st.st_mtime + 5))
    ts._checked = time.monotonic() - 2
    assert ts.authenticate("Bearer first-token-0123456") is None
    assert ts.authenticate("Bearer second-token-012345") is not None
    f.write_text("{broken")  # a broken version is logged; the tokens stay
    os.utime(f, (st.st_atime, st.st_mtime + 10))
    ts._checked = time.monotonic() - 2
    assert ts.authenticate("Bearer second-token-012345") is not None


@pytest.mark.parametrize("doc, why", [
    ({}, "expected"),
    ({"tokens": [1]}, "not an object"),
    ({"tokens": [{"token": "x" * 20}]}, "exactly one of \"tenant\""),
    ({"tokens": [{"token": "x" * 20, "tenant": "a", "operator": True}]}, "exactly one of \"tenant\""),
    ({"tokens": [{"tenant": "a"}]}, "exactly one of \"sha256\""),
    ({"tokens": [{"tenant": "a", "token": "short"}]}, "at least 16"),
    ({"tokens": [{"tenant": "a", "sha256": "abc"}]}, "64 hex"),
    ({"tokens": [{"tenant": "a b", "token": "x" * 20}]}, "not a valid tenant"),
    ({"tokens": [{"tenant": "a\n", "token": "x" * 20}]}, "not a valid tenant"),
    ({"tokens": [{"tenant": "a", "sha256": "a" * 64 + "\n"}]}, "64 hex"),
    ({"tokens": [{"tenant": "a", "token": "x" * 20, "role": "x"}]}, "unknown fields"),
    ({"tokens": [{"tenant": "a", "token": "x" * 20}, {"tenant": "b", "token": "x" * 20}]}, "repeats"),
])
def test_token_file_errors_name_the_entry(doc: Any, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why):
        parse_tokens(doc)


def test_token_store_needs_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PODJOBS_API_TOKENS", raising=False)
    with pytest.raises(ConfigurationError, match="--tokens FILE"):
        TokenStore.from_env(None)
    with pytest.raises(ConfigurationError, match="cannot read"):
        TokenStore.from_env(str(tmp_path / "missing.json"))


def test_token_entry_round_trip() -> None:
    e = entry_for("tok-0123456789abcdef", tenant="shop-9", operator=False, name=None)
    assert parse_tokens({"tokens": [e]})[digest("tok-0123456789abcdef")] == Principal("tenant shop-9", "shop-9")
    e = entry_for("tok-0123456789abcdef", tenant=None, operator=True, name="ops")
    assert parse_tokens({"tokens": [e]})[digest("tok-0123456789abcdef")].operator


# -- the core's status fields ---------------------------------------------------------------------------


def test_result_fields() -> None:
    assert status.result_fields(podjobs.Created("/a/1")) == {"location": "/a/1", "result": '{"location":"/a/1"}'}
    assert status.result_fields({"location": "https://x.test/a", "n": 1})["location"] == "https://x.test/a"
    assert status.result_fields({"location": "bad\r\nSet-Cookie: x"})["location"] == ""
    assert status.result_fields({"location": 7})["location"] == ""
    assert status.result_fields(None) == {"location": "", "result": ""}
    assert status.result_fields(5)["result"] == "5"
    assert status.result_fields(object())["result"] == ""  # not JSON: not kept
    assert status.result_fields("x" * (status.MAX_RESULT_BYTES + 1))["result"] == ""
    with pytest.raises(ValueError):
        podjobs.Created("has space")
    with pytest.raises(ValueError):
        podjobs.Created("")


def test_status_writes() -> None:
    data = {"id": JID, "job": "app.x", "queue": "q", "tenant": "t", "enqueued_at": 5, "track": 60}
    w = status.ended(data, "retries_exhausted", {"class": "E", "message": "m", "trace": "tb"}, 3)
    f = json.loads(w.fields)
    assert (w.key, w.ttl_s, f["state"], f["attempts"]) == (f"pj:status:{JID}", 60, "failed", "3")
    assert json.loads(f["error"]) == {"class": "E", "message": "m"}  # no trace for clients
    assert json.loads(status.ended(data, "unknown_job", {}, 1).fields)["state"] == "dead"
    assert status.finished_ttl({}) == status.DEFAULT_FINISHED_TTL_S
    assert status.finished_ttl({"track": "x"}) == status.DEFAULT_FINISHED_TTL_S
    assert status.started(data, "w", 2).ttl_s == status.PENDING_TTL_S
    assert json.loads(status.enqueued(data, 4).fields)["max_attempts"] == "4"


# -- the acker's batches of tracked jobs --------------------------------------------------------------


class FakeBackend:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.owners: list[str] = []
        self.fail = False

    def ack(self, worker_id: str, acks: Any, starts: Any = (), tracked: Any = None) -> int:
        if self.fail:
            raise ConnectionError("down")
        self.calls.append((dict(acks), list(starts), dict(tracked or {})))
        self.owners.append(worker_id)
        return sum(map(len, acks.values())) + sum(map(len, (tracked or {}).values()))


def test_acker_sends_starts_before_acks_and_keeps_them_on_failure() -> None:
    from podjobs.acker import Acker

    b = FakeBackend()
    a = Acker(b)  # type: ignore[arg-type]
    s1, s2 = status.StatusWrite("k1", "{}", 1), status.StatusWrite("k2", "{}", 1)
    done = status.StatusWrite("k1", '{"state":"succeeded"}', 1)
    a.started("q", "j1", True, s1, "w1")
    a.add("q", "plain", "w1")
    a.add_tracked("q", "j1", done, True, "w1")
    a.started("r", "j2", False, s2, "w1")
    b.fail = True
    assert a.flush() == 0  # kept for the next flush, in order
    b.fail = False
    assert a.flush() == 2
    assert b.calls == [({"q": ["plain"]}, [("q", "j1", True, s1), ("r", "j2", False, s2)],
                        {"q": [("j1", True, done)]})]
    assert a.flush() == 0 and len(b.calls) == 1
    a.add("q", "only-plain", "w1")
    a.flush()
    assert b.calls[-1] == ({"q": ["only-plain"]}, [], {})
    # a late ack of an earlier worker generation goes to that generation's hash
    a.add("q", "old", "w1")
    a.add("q", "new", "w1.2")
    assert a.flush() == 2
    assert sorted(b.owners[-2:]) == ["w1", "w1.2"]


def test_token_file_add_rotate_revoke(tmp_path: Any) -> None:
    """The token file keeps hashes only, is valid for the server after each change, and
    refuses a second entry of one name, an unknown scope and an entry it does not have."""
    from podjobs.errors import ConfigurationError
    from podjobs.surface.api.auth import TokenStore
    from podjobs.surface.api.tokenfile import TokenFile

    path = tmp_path / "tokens.json"
    tf = TokenFile(path)
    t1 = tf.add("shop-1 app", tenant="shop-1", scopes=["read"], expires="2030-01-01T00:00:00Z")
    t2 = tf.add("ops", tenant=None, operator=True)
    assert t1 not in path.read_text() and t2 not in path.read_text()
    store = TokenStore(path)
    p = store.authenticate(f"Bearer {t1}")
    assert p is not None and p.tenant == "shop-1" and p.scopes == frozenset({"read"})
    assert [e["name"] for e in tf.entries()] == ["shop-1 app", "ops"]
    t3 = tf.rotate("shop-1 app")
    again = TokenStore(path)
    assert again.authenticate(f"Bearer {t1}") is None
    rotated = again.authenticate(f"Bearer {t3}")
    assert rotated is not None and rotated.scopes == frozenset({"read"}) and rotated.expires
    tf.revoke("ops")
    assert TokenStore(path).authenticate(f"Bearer {t2}") is None
    for bad in (lambda: tf.add("shop-1 app", tenant="shop-1"),
                lambda: tf.add("x", tenant="shop-1", scopes=["delete"]),
                lambda: tf.revoke("nobody"), lambda: tf.add("y", tenant="shop-1", expires="soon")):
        with pytest.raises(ConfigurationError):
            bad()
    assert [e["name"] for e in tf.entries()] == ["shop-1 app"]  # nothing half-written
