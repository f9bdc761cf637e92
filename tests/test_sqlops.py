"""What the commands read and change on a SQL pod (sqlbackend/ops.py `SqlInspector`), paused
queues and the enqueue request marker (pj_requests), on the SQL kinds of `selected_kinds()`
(sqlite by default; PODJOBS_TEST_BACKENDS=all adds mariadb and postgres)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import podjobs
from podjobs.errors import JobNotFound
from podjobs.ids import new_id
from podjobs.payload import encode
from podjobs.sqlbackend import SqlBackend
from podjobs.sqlbackend.ops import SqlInspector
from tests.backends import Probe, make_probe, selected_kinds
from tests.helpers import reserve_replies, wait_until

ran: list[Any] = []


@podjobs.job(name="sqlops.tag", queue="default")
def tag(t: str) -> None:
    ran.append(t)


@podjobs.job(name="sqlops.low", queue="low")
def tag_low(t: str) -> None:
    ran.append(t)


@podjobs.job(name="sqlops.broken", retries=0)
def broken(t: str) -> None:
    raise RuntimeError(f"broken {t}")


@pytest.fixture(params=[k for k in selected_kinds() if k != "redis"])
def sql(request: pytest.FixtureRequest, cluster: Any, tmp_path: Path) -> Iterator[Probe]:
    pg_ = request.getfixturevalue("pg") if request.param == "postgres" else None
    p = make_probe(request.param, cluster, tmp_path, pg_)
    client = podjobs.configure(client=podjobs.Client(p.backend()))
    ran.clear()
    try:
        yield p
    finally:
        client.close()


def target(monkeypatch: pytest.MonkeyPatch, p: Probe) -> None:
    """The operator commands read pod p9 at the probe's URL. cmd_queues holds its own name
    for pod_targets (imported from options when first loaded): patched too, else a later
    test's commands would read the database of the test that loaded it first."""
    from podjobs.surface import cmd_queues, options

    monkeypatch.setattr(options, "pod_targets", lambda args: [("p9", p.url)])
    monkeypatch.setattr(cmd_queues, "pod_targets", lambda args: [("p9", p.url)])


def inspector(p: Probe) -> SqlInspector:
    return SqlInspector(SqlBackend(p.url))


def test_a_paused_queue_is_left_alone_until_resumed(sql: Probe) -> None:
    ins = inspector(sql)
    assert ins.pause("low") and not ins.pause("low")
    tag_low.enqueue("low-1")
    tag.enqueue("default-1")
    with sql.worker(queues=["default", "low"]) as w:
        wait_until(lambda: ran == ["default-1"], what="the default job")
        # the idle worker keeps asking; the paused queue's job stays where it is
        replies = reserve_replies(w)
        wait_until(lambda: [] in replies, what="a reservation that found nothing")
        assert sql.ready("low") == 1 and ran == ["default-1"]
        q = {s.name: s for s in ins.queues()}
        assert q["low"].paused and q["low"].size == 1 and not any(s.paused for s in q.values() if s.name != "low")
        assert ins.resume("low") and not ins.resume("low")
        wait_until(lambda: "low-1" in ran, what="the resumed queue's job")
    assert sql.ready("low") == 0


def test_a_re_sent_enqueue_writes_nothing_twice(sql: Probe) -> None:
    """A commit whose reply was lost is sent once more (SqlBackend.enqueue): the first job
    id's marker in pj_requests makes the second send a no-op that still answers the count."""
    b = SqlBackend(sql.url)
    payloads = [encode({"id": new_id(), "job": "sqlops.tag", "queue": "default",
                        "args": [f"x{i}"], "enqueued_at": 0}) for i in range(3)]
    assert b.enqueue("default", payloads) == 3
    assert b.enqueue("default", payloads) == 3  # the re-send
    assert sql.ready() == 3
    other = [encode({"id": new_id(), "job": "sqlops.tag", "queue": "default", "args": ["y"],
                     "enqueued_at": 0})]
    assert b.enqueue("default", other) == 1 and sql.ready() == 4
    # a payload without an id of its own (written as-is, malformed) is never taken for a re-send
    assert b.enqueue("default", ["garbage"]) == 1 and b.enqueue("default", ["garbage"]) == 1
    assert sql.ready() == 6
    b.close()


def test_inspector_lists_retries_and_deletes_dead_jobs_and_finds_any_job(sql: Probe) -> None:
    ins = inspector(sql)
    h1, h2 = broken.enqueue("a"), broken.enqueue("b")
    later = tag.enqueue_in(3600, "later")
    with sql.worker():
        wait_until(lambda: sql.counts()["dead"] == 2, what="two dead jobs")
    dead = {d["id"]: (d, ms) for d, ms in ins.dead()}
    assert set(dead) == {h1.id, h2.id}
    d, died = dead[h1.id]
    assert d["dead_reason"] == "retries_exhausted" and d["error"]["class"] == "RuntimeError"
    assert died > 0 and ins.stats()["dead"] == 2
    assert ins.find_job(h1.id).where == "dead"
    assert ins.find_job(later.id).where == "scheduled"
    assert [p["id"] for p, _ in ins.scheduled()] == [later.id]
    with pytest.raises(JobNotFound, match="not queued, scheduled"):
        ins.find_job("01NOSUCHJOB000000000000000")

    assert ins.dead_retry(h1.id)
    back = ins.find_job(h1.id)
    assert back.where == "queue" and back.payload["attempt"] == 0
    assert "dead_reason" not in back.payload and "error" not in back.payload
    assert ins.dead_delete(h2.id) and ins.dead() == []
    with pytest.raises(JobNotFound, match="not in the dead set"):
        ins.dead_delete(h2.id)
    assert ins.run_now("scheduled", later.id) and ins.find_job(later.id).where == "queue"
    assert {q.name: q.size for q in ins.queues()} == {"default": 2}
    assert ins.dead_clear() == 0


def test_queues_and_dead_commands_read_a_sql_pod(sql: Probe, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`podjobs queues|dead list --json` on a pod of the topology whose backend is sql."""
    # (it read 1 of 2 rows on PostgreSQL in `make test-sql`: cmd_queues' own pod_targets,
    # patched by the first kind's run only, still named that run's database; see target())
    from podjobs import cli

    h = broken.enqueue("c")
    tag.enqueue("d")
    with sql.worker(queues=["critical"]):  # registers a worker, takes nothing of default
        wait_until(lambda: sql.n_workers() == 1, what="the worker's lease")
        target(monkeypatch, sql)
        assert cli.main(["queues", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [(r["pod"], r["queue"], r["size"]) for r in rows] == [("p9", "default", 2)], (
            json.dumps(rows), sql.counts(), sql.in_flight(), sql.n_workers())
        assert cli.main(["workers", "--json"]) == 0
        (w,) = json.loads(capsys.readouterr().out)
        assert w["alive"] and w["pod"] == "p9"
    with sql.worker():
        wait_until(lambda: sql.counts()["dead"] == 1, what="the dead job")
    assert cli.main(["dead", "list", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["job_id"] == h.id and row["reason"] == "retries_exhausted"
    assert cli.main(["dead", "retry", h.id]) == 0
    assert sql.ready() == 1


def test_job_show_and_scheduled_delete_of_a_tracked_job_on_a_sql_pod(
        sql: Probe, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`job show` adds the pj_status record; `scheduled delete` cancels a tracked job."""
    from podjobs import cli

    target(monkeypatch, sql)
    later = tag.call("t").tracked().enqueue(delay=3600)
    code = cli.main(["job", "show", later.id, "--json"])
    out = capsys.readouterr()
    assert code == 0, out
    shown = json.loads(out.out)
    assert shown["where"] == "scheduled" and shown["status"]["state"] == "queued"
    assert cli.main(["scheduled", "delete", later.id]) == 0
    capsys.readouterr()
    assert later.status().state == "cancelled" and sql.counts()["scheduled"] == 0
    assert cli.main(["job", "show", later.id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["where"] == "finished" and shown["status"]["state"] == "cancelled"


def test_tracked_enqueues_from_many_threads_each_write_their_record(sql: Probe) -> None:
    """Concurrent tracked enqueues (each a new pj_status row in the enqueue's transaction):
    every job is queued with its record, none refused."""
    import threading

    from sqlalchemy import func, select

    from podjobs.sqlbackend.tables import status as pj_status

    ids: list[str] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            for i in range(40):
                ids.append(tag.call(f"t{i}").tracked().enqueue().id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(ids) == 160 and sql.ready() == 160
    b = SqlBackend(sql.url, migrate=False)
    try:
        with b.engine.connect() as c:
            assert c.execute(select(func.count()).select_from(pj_status)).scalar() == 160
        assert {b.status_record(i)["state"] for i in ids[::20]} == {"queued"}
    finally:
        b.close()


def test_a_parallel_iteration_is_refused_by_name(sql: Probe) -> None:
    from podjobs.errors import NotSupported
    from tests.apps.iter_app import Count

    with pytest.raises(NotSupported, match=r"parallel iteration .*it\.count.* SQL backend"):
        Count.enqueue_parallel(2, span=(0, 10), tag="x", n=10)
    assert sql.empty()
