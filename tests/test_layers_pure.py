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
