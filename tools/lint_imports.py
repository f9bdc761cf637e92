"""Run import-linter (the contracts in pyproject.toml) on podjobs as it is installed.

    python -m tools.lint_imports        # `make lint-imports`, part of `make lint`

Why not plain `lint-imports`: the package's folders are not nested on disk.
pyproject's `package-dir` maps podjobs=platform/podjobs, podjobs.pods=pods,
podjobs.scheduler=scheduler and podjobs.infra=infra; the editable install joins them
with an import hook, but grimp (import-linter's graph) finds modules by walking the
root package's folder, so it would see platform/podjobs only, and every contract about
pods, the scheduler or infra would pass without looking at a single import of theirs.

1. Lays out build/import-graph/podjobs as installed: a tree of symlinks made from
   `package-dir` and `packages` (regenerated on every run).
2. Builds grimp's graph from it and checks that it holds exactly the modules of every
   package pyproject lists (so a new folder or module cannot slip out of the contracts).
3. Runs `lint-imports` with that tree first on PYTHONPATH; its exit code is ours.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "import-graph"


def package_dirs(pyproject: dict[str, object]) -> dict[str, Path]:
    """Each package of pyproject's `packages` -> its folder, by `package-dir` or its parent's."""
    st = pyproject["tool"]["setuptools"]  # type: ignore[index]
    mapping: dict[str, str] = st.get("package-dir", {})
    out: dict[str, Path] = {}
    for pkg in sorted(st["packages"], key=lambda p: p.count(".")):
        if pkg in mapping:
            out[pkg] = ROOT / mapping[pkg]
        else:
            parent, _, leaf = pkg.rpartition(".")
            out[pkg] = out[parent] / leaf
    return out


def lay_out(dirs: dict[str, Path]) -> None:
    """build/import-graph/<package path> with a symlink per module file."""
    shutil.rmtree(TREE, ignore_errors=True)
    for pkg, src in dirs.items():
        dst = TREE.joinpath(*pkg.split("."))
        dst.mkdir(parents=True, exist_ok=True)
        for f in src.glob("*.py"):
            (dst / f.name).symlink_to(f)


def expected_modules(dirs: dict[str, Path]) -> set[str]:
    """Every module of pyproject's packages; exit 1 if a package folder holds another
    package (a folder with __init__.py) that pyproject does not list."""
    listed = {d.resolve() for d in dirs.values()}
    unlisted = sorted(str(sub.relative_to(ROOT)) for src in dirs.values()
                      for sub in src.iterdir()
                      if (sub / "__init__.py").exists() and sub.resolve() not in listed)
    if unlisted:
        print(f"packages missing from pyproject's [tool.setuptools] packages: {unlisted}",
              file=sys.stderr)
        sys.exit(1)
    mods: set[str] = set()
    for pkg, src in dirs.items():
        for f in src.glob("*.py"):
            mods.add(pkg if f.name == "__init__.py" else f"{pkg}.{f.stem}")
    return mods


def check_graph(root: str, expected: set[str]) -> None:
    """Exit 1 unless grimp, reading the tree, finds exactly the expected modules."""
    sys.path.insert(0, str(TREE))
    import grimp

    graph = grimp.build_graph(root, cache_dir=None)
    seen = set(graph.modules)
    if seen != expected:
        print(f"import graph of {root} differs from pyproject's packages:\n"
              f"  not seen: {sorted(expected - seen)}\n  unexpected: {sorted(seen - expected)}",
              file=sys.stderr)
        sys.exit(1)
    packages = sorted(m for m in seen if any(o.startswith(m + ".") for o in seen))
    print(f"import graph: {len(seen)} modules in {len(packages)} packages: {', '.join(packages)}")


def main() -> int:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    root = pyproject["tool"]["importlinter"]["root_package"]
    dirs = package_dirs(pyproject)
    lay_out(dirs)
    check_graph(root, expected_modules(dirs))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(TREE), *filter(None, [os.environ.get("PYTHONPATH")])])}
    lint = Path(sys.executable).parent / "lint-imports"
    return subprocess.call([str(lint), "--no-cache", "--no-logo", *sys.argv[1:]], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
