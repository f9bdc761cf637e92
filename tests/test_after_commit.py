"""`podjobs.after_commit(session)` (podjobs.aftercommit) on the session's MariaDB shard and pod
Redis: enqueued when the session commits, in order; nothing on a rollback or a close without a
commit; and the README's FastAPI example, run as written."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import podjobs
from podjobs.backend import RedisBackend
from podjobs.db import engine
from podjobs.fairshare import ready_jobs

REPO = Path(__file__).resolve().parent.parent


@podjobs.job(queue="acm")
def note(n: int) -> None:
    pass


def _queued(b: RedisBackend, queue: str) -> list[dict[str, Any]]:
    """The ready jobs, oldest first (one tenant's, or none's: one ready list)."""
    return [json.loads(raw) for raw in reversed(ready_jobs(b.redis, queue))]


@pytest.fixture
def shard(pods: Any) -> tuple[str, RedisBackend]:
    pod = pods.pods[0]
    with engine(pod.shard_url).begin() as conn:
        conn.execute(text("CREATE TABLE orders (id INT PRIMARY KEY)"))
    podjobs.configure(pod.redis_url)
    return pod.shard_url, RedisBackend(pod.redis_url)


def test_enqueued_at_the_commit_in_order(shard: tuple[str, RedisBackend]) -> None:
    url, b = shard
    with Session(engine(url)) as s, podjobs.after_commit(s):
        s.execute(text("INSERT INTO orders VALUES (1)"))
        hs = [note.enqueue(n, tenant="acme") for n in (1, 2, 3)]
        assert _queued(b, "acm") == [] and hs[0].id == "" and not hs[0].enqueued
        s.commit()
    assert [(j["id"], j["args"], j["tenant"]) for j in _queued(b, "acm")] == \
        [(h.id, [n], "acme") for h, n in zip(hs, (1, 2, 3), strict=True)]
    assert all(h.enqueued for h in hs)


def test_nothing_on_a_rollback_or_a_close_without_commit(shard: tuple[str, RedisBackend]) -> None:
    url, b = shard
    with Session(engine(url)) as s, podjobs.after_commit(s):
        s.execute(text("INSERT INTO orders VALUES (2)"))
        note.enqueue(2)
        s.rollback()
        s.commit()                                  # a later commit sends nothing dropped
    with Session(engine(url)) as s, podjobs.after_commit(s):
        note.enqueue(3)                             # no SQL at all, then closed
    with pytest.raises(IntegrityError), Session(engine(url)) as s, podjobs.after_commit(s):
        s.execute(text("INSERT INTO orders VALUES (4)"))
        s.execute(text("INSERT INTO orders VALUES (4)"))
        note.enqueue(4)
        s.commit()
    assert _queued(b, "acm") == []
    with Session(engine(url)) as s:                 # kept past the block: the commit sends it
        with podjobs.after_commit(s):
            note.enqueue(5)
        s.commit()
    assert [j["args"] for j in _queued(b, "acm")] == [[5]]


def test_a_bad_session_is_refused_with_what_to_do() -> None:
    with pytest.raises(podjobs.ConfigurationError, match="needs a SQLAlchemy Session, got str"):
        with podjobs.after_commit("postgresql://..."):
            pass


def readme_example(name: str) -> str:
    """The python block after `<!-- example: NAME -->` in README.md."""
    m = re.search(rf"<!-- example: {name} -->\n```python\n(.*?)```", (REPO / "README.md").read_text(),
                  re.S)
    assert m, f"README.md has no example {name}"
    return m.group(1)


def test_the_readme_fastapi_example(shard: tuple[str, RedisBackend], pods: Any, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    url, b = shard
    (tmp_path / "shop_fastapi.py").write_text(readme_example("fastapi"))
    monkeypatch.setenv("SHOP_DATABASE_URL", url)
    monkeypatch.setenv("PODJOBS_REDIS_URL", pods.pods[0].redis_url)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("shop_fastapi", None)
    import shop_fastapi  # type: ignore[import-not-found]

    http = TestClient(shop_fastapi.app, raise_server_exceptions=False)
    r = http.post("/orders/7")
    assert r.status_code == 200, r.text
    assert http.post("/orders/7").status_code == 500      # duplicate key: rolled back
    jobs = _queued(b, "mail")
    assert [(j["id"], j["args"]) for j in jobs] == [(r.json()["job"], [7])]


def test_the_readme_django_example(shard: tuple[str, RedisBackend], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    django = pytest.importorskip("django", reason="the test extra installs Django")
    import pymysql
    from django.conf import settings
    from sqlalchemy.engine import make_url

    url, b = shard
    u = make_url(url)
    pymysql.install_as_MySQLdb()
    if not settings.configured:
        settings.configure(DATABASES={"default": {
            "ENGINE": "django.db.backends.mysql", "NAME": u.database, "USER": u.username,
            "PASSWORD": u.password or "", "HOST": u.host, "PORT": str(u.port)}},
            INSTALLED_APPS=[], USE_TZ=True)
        django.setup()
    else:
        settings.DATABASES["default"].update(NAME=u.database, HOST=u.host, PORT=str(u.port))
    from django.db import IntegrityError as DjangoIntegrityError
    from django.db import connection
    from django.test import RequestFactory

    (tmp_path / "shop_django.py").write_text(readme_example("django"))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("shop_django", None)
    import shop_django  # type: ignore[import-not-found]

    rf = RequestFactory()
    try:
        assert shop_django.create_order(rf.post("/orders/9"), 9).status_code == 200
        with pytest.raises(DjangoIntegrityError):            # duplicate key: rolled back
            shop_django.create_order(rf.post("/orders/9"), 9)
    finally:
        connection.close()
    assert [j["args"] for j in _queued(b, "mail")] == [[9]]
