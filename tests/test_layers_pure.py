"""The layers at run time (import-linter checks the imports; these check what loads):
`import podjobs` and `podjobs --help` stay lean, and the public names stay."""

from __future__ import annotations

import json
import subprocess
import sys

import podjobs

HEAVY = ("sqlalchemy", "alembic", "fastapi", "uvicorn")
ABOVE_CORE = ("podjobs.pods", "podjobs.scheduler", "podjobs.iteration", "podjobs.infra",
              "podjobs.surface", "podjobs.cli")


def loaded_after(code: str) -> list[str]:
    """Modules loaded by `code` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, timeout=60)
    mods: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return mods


def under(mods: list[str], roots: tuple[str, ...]) -> list[str]:
    return [m for m in mods if any(m == r or m.startswith(r + ".") for r in roots)]


def test_import_podjobs_loads_the_core_only() -> None:
    mods = loaded_after("import podjobs")
    assert under(mods, ABOVE_CORE) == []
    assert under(mods, (*HEAVY, "kazoo", "redis", "croniter")) == []


def test_cli_help_loads_no_database_zookeeper_or_http_stack() -> None:
    mods = loaded_after("import contextlib, io\nimport podjobs.cli as c\n"
                        "with contextlib.redirect_stdout(io.StringIO()):\n"
                        "    try: c.main(['--help'])\n    except SystemExit: pass")
    assert under(mods, (*HEAVY, "kazoo", "redis")) == []
    assert "podjobs.worker" not in mods


def test_public_names_stay() -> None:
    from podjobs import IterationJob
    from podjobs.iteration import IterationJob as FromIteration

    assert IterationJob is FromIteration is podjobs.IterationJob
    assert podjobs.periodic.__module__ == "podjobs.cron"
    assert "IterationJob" in podjobs.__all__ and "periodic" in podjobs.__all__


def test_the_package_installs_its_hooks_into_the_core() -> None:
    from podjobs import client, context

    assert client._zk_connect is not None
    assert context._db_guard is not None


def test_cli_owners_name_every_command_and_only_its_modules() -> None:
    """`podjobs.cli.OWNERS` (which modules a command needs) matches the full parser."""
    import argparse

    import podjobs.cli as c

    def top_names(argv: list[str] | None) -> set[str]:
        p = c.build_parser(argv)
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        return set(sub.choices)

    assert top_names(None) == set(c.OWNERS)
    assert {m for ms in c.OWNERS.values() for m in ms} == set(c.COMMANDS)
    for name in c.OWNERS:
        assert name in top_names([name])


def test_worker_command_loads_only_the_worker_command_module() -> None:
    mods = loaded_after("import podjobs.cli as c\nc.build_parser(['worker', '--app', 'x'])\n"
                        "import podjobs.worker")
    assert [m for m in mods if m.startswith("podjobs.surface.cmd_")] == ["podjobs.surface.cmd_worker"]
    assert under(mods, ("podjobs.isolation", "multiprocessing", "podjobs.iteration")) == []


def test_the_worker_loads_no_http_stack() -> None:
    """A worker host installs `podjobs` without the `api` extra: nothing on the worker's path
    may need it (fastapi also brings opentelemetry-api, which redis-py loads when present:
    the worker's start-up time, issue 13)."""
    mods = loaded_after("import podjobs.cli as c\nc.build_parser(['worker', '--app', 'x'])\n"
                        "import podjobs.worker, podjobs.pods.podworker")
    assert under(mods, ("fastapi", "starlette", "uvicorn", "jinja2", "pydantic")) == []


def test_api_without_the_extra_says_what_to_install() -> None:
    """`podjobs api` / `podjobs web` where the `api` extra is not installed: exit 2 and the
    pip line, not an ImportError trace."""
    for argv, says in ((["api", "--tokens", "t.json"], "podjobs api needs"),
                       (["web", "--tokens", "t.json"], "podjobs web needs")):
        out = subprocess.run(
            [sys.executable, "-c", "import sys\nsys.modules['fastapi'] = None\n"
             "import podjobs.cli as c\nsys.exit(c.main(sys.argv[1:]))", *argv],
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out.stderr
        assert says in out.stderr and "missing: fastapi" in out.stderr
        assert "pip install 'podjobs[api]'" in out.stderr and "Traceback" not in out.stderr
