"""Finding the server programs podjobs starts locally.

1. `find_binary(name)` looks a program up on PATH (plus the sbin folders, where
   Debian puts `mariadbd`), or only on an explicit `search_path` (for tests).
2. `zookeeper_classpath()` finds the ZooKeeper jars in /usr/share/java (the
   Debian `zookeeper` package) and the logging jars that make it log via log4j.
3. `require(...)` resolves several programs at once; whatever is missing raises
   one `MissingBinary` naming the Debian packages that provide it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from podjobs.errors import MissingBinary

# Program (or jar) name -> the Debian package that installs it.
DEBIAN_PACKAGES: dict[str, str] = {
    "redis-server": "redis-server",
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "java": "default-jre-headless",
    "zookeeper.jar": "zookeeper",
}

# Debian installs daemons to sbin, which is not on every user's PATH.
_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")

DEFAULT_JAVA_LIB = Path("/usr/share/java")
# slf4j binding + log4j 1.2: ZooKeeper then reads log4j.properties from its conf dir.
_ZK_LOGGING_JARS = ("slf4j-log4j12.jar", "log4j-1.2.jar")
INSTALL_HINT = "or run 'make deps' as root"


def default_search_path() -> str:
    """$PATH plus the sbin folders."""
    parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    parts += [d for d in _SBIN_DIRS if d not in parts]
    return os.pathsep.join(parts)


def _missing_message(names: list[str], where: str) -> str:
    packages: list[str] = []
    for name in names:
        pkg = DEBIAN_PACKAGES.get(name, name)
        if pkg not in packages:
            packages.append(pkg)
    what = ", ".join(names)
    it = "it" if len(names) == 1 else "them"
    return (
        f"{what} not found {where}; install {it} with "
        f"'apt-get install {' '.join(packages)}' ({INSTALL_HINT})"
    )


def find_binary(name: str, search_path: str | None = None) -> Path:
    """The absolute path of program `name`, or `MissingBinary` naming its package."""
    path = search_path if search_path is not None else default_search_path()
    found = shutil.which(name, path=path)
    if found is None:
        raise MissingBinary(_missing_message([name], "on PATH"))
    return Path(found).absolute()  # not resolve(): redis-server is a symlink to redis-check-rdb


@dataclass(frozen=True)
class ZooKeeperJars:
    """The jars `java -cp` needs to run ZooKeeperServerMain."""

    zookeeper: Path
    logging: tuple[Path, ...]

    def classpath(self, conf_dir: Path) -> str:
        """CONF_DIR first (log4j.properties is found there), then the jars."""
        parts = [str(conf_dir), str(self.zookeeper), *(str(p) for p in self.logging)]
        return os.pathsep.join(parts)


def find_zookeeper_jars(java_lib: Path | None = None) -> ZooKeeperJars:
    """zookeeper.jar (whose manifest lists its own dependencies) + log4j binding.

    The logging jars are optional: without them ZooKeeper runs but logs nothing.
    """
    lib = java_lib if java_lib is not None else DEFAULT_JAVA_LIB
    jar = lib / "zookeeper.jar"
    if not jar.is_file():
        raise MissingBinary(_missing_message(["zookeeper.jar"], f"in {lib}"))
    logging = tuple(lib / n for n in _ZK_LOGGING_JARS if (lib / n).is_file())
    if len(logging) != len(_ZK_LOGGING_JARS):
        logging = ()
    return ZooKeeperJars(zookeeper=jar.resolve(), logging=logging)


def require(
    names: Iterable[str],
    search_path: str | None = None,
    java_lib: Path | None = None,
) -> dict[str, Path]:
    """Resolve every program in `names` (use "zookeeper.jar" for the jar).

    Raises one `MissingBinary` listing everything missing and the packages to install.
    """
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in names:
        try:
            if name == "zookeeper.jar":
                found[name] = find_zookeeper_jars(java_lib).zookeeper
            else:
                found[name] = find_binary(name, search_path)
        except MissingBinary:
            missing.append(name)
    if missing:
        only_jars = all(n.endswith(".jar") for n in missing)
        lib = java_lib if java_lib is not None else DEFAULT_JAVA_LIB
        raise MissingBinary(_missing_message(missing, f"in {lib}" if only_jars else "on PATH"))
    return found
