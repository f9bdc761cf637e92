"""Pure pieces of the command line: the `--json` schemas, times, durations, redaction."""

from __future__ import annotations

from typing import Any

import pytest

from podjobs.errors import BackendUnavailable, ConfigurationError, JobNotFound, ServerUnreachable
from podjobs.exits import Exit
from podjobs.surface.schema import check, iso, redact
from podjobs.table import ago, duration, iso_times, one_line

QUEUE = {"pod": "p1", "queue": "default", "size": 1, "latency_s": 0.5, "scheduled": 0,
         "retrying": 0, "in_flight": 0, "paused": False}


@pytest.mark.parametrize(("value", "errors"), [
    (QUEUE, []),
    ([QUEUE, {**QUEUE, "pod": None}], []),
    ({**QUEUE, "size": "1"}, ["$.size: '1' is a str, expected int"]),
    ({**QUEUE, "size": True}, ["$.size: True is a bool, expected int"]),
    ({k: v for k, v in QUEUE.items() if k != "queue"}, ["$: queue has no key 'queue'"]),
    ([QUEUE, 3], ["[1]: a queue must be an object, not int"]),
    ({**QUEUE, "checked_at": 1700000000}, ["$.checked_at: 1700000000 is not an ISO 8601 UTC time"]),
    ({**QUEUE, "extra": {"runs": [{"since": "2026-11-30T17:42:24.123Z"}]}}, []),
    ({**QUEUE, "extra": {"runs": [{"since": 17.5}]}},
     ["$.extra.runs[0].since: 17.5 is not an ISO 8601 UTC time"]),
])
def test_check_follows_the_noun_schema(value: Any, errors: list[str]) -> None:
    assert check("queue", value) == errors


def test_times_of_a_worker_and_an_unknown_noun() -> None:
    w = {"pod": "p1", "worker": "h:1:x", "alive": True, "host": "h", "pid": 1, "queues": [],
         "concurrency": 2, "isolation": "thread", "started_at": "2026-11-30T17:42:24.123+01:00",
         "busy": []}
    assert check("worker", w) == ["$.started_at: '2026-11-30T17:42:24.123+01:00' is not an ISO "
                                  "8601 UTC time"]
    assert check("nope", {}) and "nouns:" in check("nope", {})[0]


@pytest.mark.parametrize(("t", "ms", "out"), [
    (0, False, "1970-01-01T00:00:00.000Z"),
    (1764524544.5, False, "2025-11-30T17:42:24.500Z"),
    (1764524544500, True, "2025-11-30T17:42:24.500Z"),
    ("1764524544.5", False, "2025-11-30T17:42:24.500Z"),
    (None, False, None), ("", False, None),
    ("2025-11-30T17:42:24.500Z", False, "2025-11-30T17:42:24.500Z"),
])
def test_iso(t: Any, ms: bool, out: str | None) -> None:
    assert iso(t, ms=ms) == out


def test_iso_times_converts_time_keys_anywhere_and_nothing_else() -> None:
    doc = {"since": 0.0, "n": 5, "runs": {"a": {"queued_at": 1764524544.5, "fence": 3}},
           "at": None, "leader": {"since": 1764524544.5, "term": 2}}
    assert iso_times(doc) == {"since": 0.0, "n": 5, "runs": {"a": {
        "queued_at": "2025-11-30T17:42:24.500Z", "fence": 3}}, "at": None,
        "leader": {"since": "2025-11-30T17:42:24.500Z", "term": 2}}


@pytest.mark.parametrize(("s", "out"), [
    (0, "0s"), (59.4, "59s"), (60, "1m 00s"), (312, "5m 12s"), (3600, "1h 00m"),
    (3 * 3600 + 4 * 60 + 9, "3h 04m"), (2 * 86400 + 5 * 3600, "2d 05h"), (-312, "5m 12s"),
])
def test_duration(s: float, out: str) -> None:
    assert duration(s) == out


def test_ago_and_one_line() -> None:
    assert ago(None) == "-"
    assert ago(1000.0, now=1312.0) == "5m 12s ago"
    assert ago("1970-01-01T00:16:40.000Z", now=970.0) == "in 30s"
    assert one_line("ERROR 1064:\n  near 'CREAT INDEX'\n\tat line 1") == \
        "ERROR 1064: near 'CREAT INDEX' at line 1"


@pytest.mark.parametrize(("url", "out"), [
    ("redis://:secret@h:1/0", "redis://:***@h:1/0"),
    ("mysql+pymysql://u:p%40ss@h:3306/db", "mysql+pymysql://u:***@h:3306/db"),
    ("redis://h:1/0", "redis://h:1/0"),
    ("sqlite:////tmp/x.sqlite3", "sqlite:////tmp/x.sqlite3"),
])
def test_redact(url: str, out: str) -> None:
    assert redact(url) == out


@pytest.mark.parametrize(("exc", "code"), [
    (ConfigurationError("x"), Exit.USAGE), (ServerUnreachable("x"), Exit.UNREACHABLE),
    (BackendUnavailable("x"), Exit.UNREACHABLE), (JobNotFound("x"), Exit.FAILED),
])
def test_each_error_carries_its_exit_code(exc: Any, code: Exit) -> None:
    assert exc.exit_code == code


def test_password_references_resolve_from_the_environment_or_a_file(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from podjobs.secrets import plain_password, resolve

    monkeypatch.setenv("PJ_T_PW", "s3cr@t/x")
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    assert resolve("redis://:${env:PJ_T_PW}@h:1/0") == "redis://:s3cr%40t%2Fx@h:1/0"
    assert resolve(f"mysql+pymysql://u:${{file:{secret}}}@db/app") == \
        "mysql+pymysql://u:from-file@db/app"
    assert resolve("redis://h:1/0") == "redis://h:1/0"
    with pytest.raises(ConfigurationError, match=r"\$\{env:PJ_T_NOPE\}, which is not set"):
        resolve("redis://:${env:PJ_T_NOPE}@h:1/0")
    with pytest.raises(ConfigurationError, match="cannot be read"):
        resolve(f"redis://:${{file:{tmp_path / 'missing'}}}@h:1/0")
    assert plain_password("redis://:pw@h:1/0") == "pw"
    assert plain_password("redis://:${env:X}@h:1/0") is None
    assert plain_password("redis://h:1/0") is None



def test_bar_and_paint(monkeypatch: pytest.MonkeyPatch) -> None:
    from podjobs.table import bar, paint

    assert bar(2, 5, 10) == "[####------] 2/5"
    assert bar(0, 0, 4) == "[----] 0/0" and bar(9, 3, 4) == "[####] 9/3"

    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert paint("x", "red", Tty()) == "\033[31mx\033[0m"
    assert paint("x", "red", object()) == "x"  # not a terminal: plain
    monkeypatch.setenv("NO_COLOR", "1")
    assert paint("x", "red", Tty()) == "x"


@pytest.mark.parametrize("columns", ["60", "120"])
def test_help_is_argparses_own(columns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parsers' formatter looks the terminal's width up once (cli._Formatter); the help
    it makes is what argparse's own formatter makes at that width."""
    import argparse

    from podjobs import cli

    monkeypatch.setenv("COLUMNS", columns)
    cli._columns.cache_clear()
    try:
        top = cli.build_parser(["worker"])
        worker = top._subparsers._group_actions[0].choices["worker"]  # type: ignore[union-attr]
        ours = worker.format_help()
        worker.formatter_class = argparse.HelpFormatter
        assert ours == worker.format_help()
    finally:
        cli._columns.cache_clear()
