"""Start-up cost: modules loaded and wall time of `import podjobs`, `podjobs --help` and
what `podjobs worker` loads before it connects (with --redis, and with --pod).

    python -m bench.startup [--runs 7] [--tree DIR]

Each case runs in a fresh interpreter `--runs` times; the table shows the median wall
time (interpreter start included) and the modules in sys.modules, and which of the heavy
libraries (Alembic, SQLAlchemy, kazoo, Redis, croniter, FastAPI) are among them.
`--tree DIR`: measure another checkout laid out as installed (a folder holding
podjobs/ as tools/lint_imports.py lays it out), e.g. the code before a change.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HEAVY = ("alembic", "sqlalchemy", "kazoo", "redis", "croniter", "fastapi")
HELP = ("import contextlib, io\nimport podjobs.cli as c\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: c.main(['--help'])\n    except SystemExit: pass\n")
CASES = {
    "import podjobs": "import podjobs\n",
    "podjobs --help": HELP,
    "podjobs worker --redis": "import podjobs.cli as c\nc.build_parser(['worker'])\n"
                              "import podjobs.worker, podjobs.backend\n",
    "podjobs worker --pod": "import podjobs.cli as c\nc.build_parser(['worker'])\n"
                            "import podjobs.worker, podjobs.pods.podworker, podjobs.scheduler.migrate\n",
}
REPORT = "import sys, json\nprint(json.dumps(sorted(sys.modules)))\n"


def run(code: str, env: dict[str, str]) -> tuple[float, list[str]]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code + REPORT], capture_output=True, text=True,
                         check=True, env=env)
    return time.perf_counter() - t, json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--tree", help="a folder holding podjobs/ to measure instead")
    args = ap.parse_args()
    env = dict(os.environ)
    if args.tree:
        env["PYTHONPATH"] = args.tree
    base_s, _ = run("", env)
    print(f"{'case':<24} {'ms':>6} {'modules':>8}  heavy libraries loaded")
    for name, code in CASES.items():
        times, mods = [], []
        for _ in range(args.runs):
            s, mods = run(code, env)
            times.append(s)
        heavy = [h for h in HEAVY if h in mods]
        print(f"{name:<24} {statistics.median(times) * 1000:6.0f} {len(mods):8d}  "
              f"{', '.join(heavy) or '-'}")
    print(f"(a bare interpreter: {base_s * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
