"""Secrets kept out of ZooKeeper: URLs whose passwords are references, resolved on connect.

A pod's URLs live in ZooKeeper, readable by anyone who can read the topology. Their
passwords may instead be references that each process resolves when it connects:

    redis://:${env:P1_REDIS_PASSWORD}@10.0.0.5:6379/0       an environment variable
    mysql+pymysql://app:${file:/run/secrets/p1_db}@db1/app   a file's contents (stripped)

1. `resolve(url)`: the URL with every `${env:NAME}` and `${file:PATH}` replaced;
   `ConfigurationError` naming the reference when it cannot be resolved. A URL without
   references is returned as it is (what `RedisBackend` and `db.engine` connect with; the
   URL they keep, and print in errors, is the unresolved one).
2. `plain_password(url)`: the password a URL carries in plain text (None when it has none or
   it is a reference): `podjobs pods add` refuses those unless told `--plain-password`.
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote, urlsplit

from podjobs.errors import ConfigurationError

_REF = re.compile(r"\$\{(env|file):([^}]+)\}")


def resolve(url: str) -> str:
    if "${" not in url:
        return url

    def one(m: re.Match[str]) -> str:
        kind, name = m.group(1), m.group(2)
        if kind == "env":
            value = os.environ.get(name)
            if value is None:
                raise ConfigurationError(
                    f"a URL refers to ${{env:{name}}}, which is not set in this process's "
                    f"environment; set {name} (the secret) where podjobs runs")
        else:
            try:
                with open(name, encoding="utf-8") as fh:
                    value = fh.read().strip()
            except OSError as exc:
                raise ConfigurationError(
                    f"a URL refers to ${{file:{name}}}, which cannot be read ({exc.strerror}); "
                    f"put the secret there, readable by podjobs") from None
        return quote(value, safe=":")  # "@", "/", "%"... quoted: a password may hold them

    return _REF.sub(one, url)


def plain_password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    if not password or _REF.fullmatch(password):
        return None
    return password
