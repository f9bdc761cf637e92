"""Managing the token file (`podjobs api token add|list|revoke|rotate`): hashes only,
written atomically.

- `add` makes a fresh token, writes its entry (name, tenant or operator, SHA-256, and the
  optional scopes, jobs and expiry; see podjobs.surface.api.auth) and returns the token,
  which is shown once and never stored;
- `rotate NAME` gives an entry a fresh token (same name, tenant, scopes, jobs, expiry);
- `revoke NAME` removes the entry: the API refuses the token within a second (the server
  reads the file again when it changes);
- `entries()` lists them without secrets.

Every change writes the whole file to a temporary file beside it, flushes it to disk and
renames it over the old one, so a server reading it sees the old file or the new one, never
half of one. Names are unique (they are how an entry is revoked or rotated); the file is
checked with the server's own parser before it is written.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from podjobs.errors import ConfigurationError

from .auth import SCOPES, entry_for, new_token, parse_expiry, parse_tokens


class TokenFile:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read the token file {self.path}: {exc}") from None
        parse_tokens(doc, str(self.path))
        return list(doc["tokens"])

    def _write(self, entries: list[dict[str, Any]]) -> None:
        doc = {"tokens": entries}
        parse_tokens(doc, str(self.path))  # never write a file the server would refuse
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def entries(self) -> list[dict[str, Any]]:
        """The entries without their secrets (`token` entries show as `"token": "(stored)"`)."""
        out = []
        for e in self._read():
            row = {k: v for k, v in e.items() if k not in ("sha256", "token")}
            row.setdefault("scopes", list(SCOPES))
            out.append(row)
        return out

    def add(self, name: str, *, tenant: str | None, operator: bool = False,
            scopes: list[str] | None = None, jobs: list[str] | None = None,
            expires: str | None = None) -> str:
        """A fresh token for a new entry `name`; returns the token (shown once)."""
        entries = self._read()
        if any(e.get("name") == name for e in entries):
            raise ConfigurationError(f"the token file {self.path} already has an entry named "
                                     f"{name!r}; pick another name, or 'rotate {name}'")
        parse_expiry(expires)
        token = new_token()
        entry = entry_for(token, tenant=tenant, operator=operator, name=name)
        if scopes is not None:
            entry["scopes"] = scopes
        if jobs is not None:
            entry["jobs"] = jobs
        if expires is not None:
            entry["expires"] = expires
        self._write([*entries, entry])
        return token

    def _index(self, entries: list[dict[str, Any]], name: str) -> int:
        for i, e in enumerate(entries):
            if e.get("name") == name:
                return i
        known = ", ".join(str(e.get("name")) for e in entries) or "none"
        raise ConfigurationError(f"the token file {self.path} has no entry named {name!r} "
                                 f"(entries: {known})")

    def rotate(self, name: str) -> str:
        entries = self._read()
        i = self._index(entries, name)
        token = new_token()
        fresh = entry_for(token, tenant=entries[i].get("tenant"),
                          operator=bool(entries[i].get("operator")), name=name)
        kept = {k: v for k, v in entries[i].items() if k in ("scopes", "jobs", "expires")}
        entries[i] = {**fresh, **kept}
        self._write(entries)
        return token

    def revoke(self, name: str) -> None:
        entries = self._read()
        del entries[self._index(entries, name)]
        self._write(entries)
