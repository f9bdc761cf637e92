"""Bearer tokens of the HTTP API: each scoped to one tenant, or an operator token.

The token file (`podjobs api --tokens FILE`, or `$PODJOBS_API_TOKENS`) is JSON:

    {"tokens": [
      {"name": "shop-17 backend", "tenant": "shop-17", "sha256": "<hex SHA-256 of the token>"},
      {"name": "on-call",         "operator": true,    "sha256": "<hex>"},
      {"name": "dev",             "tenant": "shop-1",  "token": "<the token itself>"}
    ]}

Each entry has exactly one of `sha256` (the file then holds no secret) or `token` (at least
16 characters), and exactly one of `tenant` or `"operator": true`. `podjobs api token
--tenant T` prints a fresh token and its entry. The file is read again when it changes
(checked at most once a second); a broken new version is logged and the old tokens stay.

Checking a token: a presented token is never compared with a stored one character by
character. Its SHA-256 digest is looked up in a table keyed by digests, so any timing
depends only on the digest of the guess, which an attacker cannot steer towards a stored
digest (the comparison of SHA-256 digests is the constant-time comparison).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podjobs.errors import ConfigurationError

log = logging.getLogger("podjobs.api.auth")

ENV_TOKENS = "PODJOBS_API_TOKENS"
MIN_TOKEN_LENGTH = 16
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_TENANT = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a token speaks for: one tenant, or an operator (every tenant, and the pods)."""

    name: str
    tenant: str | None = None
    operator: bool = False

    def may_act_for(self, tenant: str | None) -> bool:
        return self.operator or (tenant is not None and tenant == self.tenant)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def parse_tokens(doc: Any, where: str = "token file") -> dict[bytes, Principal]:
    """The entries of a token file's JSON, by token digest; ConfigurationError names the entry."""
    if not isinstance(doc, dict) or not isinstance(doc.get("tokens"), list):
        raise ConfigurationError(f'{where}: expected {{"tokens": [...]}} (see podjobs.surface.api.auth)')
    out: dict[bytes, Principal] = {}
    for i, e in enumerate(doc["tokens"]):
        at = f"{where}: tokens[{i}]"
        if not isinstance(e, dict):
            raise ConfigurationError(f"{at} is not an object")
        unknown = set(e) - {"name", "tenant", "operator", "sha256", "token"}
        if unknown:
            raise ConfigurationError(f"{at} has unknown fields {sorted(unknown)}")
        name = str(e.get("name") or f"tokens[{i}]")
        operator = e.get("operator", False)
        tenant = e.get("tenant")
        if operator not in (True, False):
            raise ConfigurationError(f"{at}: operator must be true or false")
        if (tenant is None) == (not operator):
            raise ConfigurationError(f'{at} needs exactly one of "tenant" or "operator": true')
        if tenant is not None and (not isinstance(tenant, str) or not _TENANT.fullmatch(tenant)):
            raise ConfigurationError(f"{at}: tenant {tenant!r} is not a valid tenant name")
        if ("sha256" in e) == ("token" in e):
            raise ConfigurationError(f'{at} needs exactly one of "sha256" or "token"')
        if "sha256" in e:
            if not isinstance(e["sha256"], str) or not _HEX64.fullmatch(e["sha256"]):
                raise ConfigurationError(f"{at}: sha256 must be 64 hex digits")
            d = bytes.fromhex(e["sha256"])
        else:
            tok = e["token"]
            if not isinstance(tok, str) or len(tok) < MIN_TOKEN_LENGTH:
                raise ConfigurationError(f"{at}: token must be a string of at least "
                                         f"{MIN_TOKEN_LENGTH} characters")
            d = digest(tok)
        if d in out:
            raise ConfigurationError(f"{at} repeats the token of {out[d].name!r}")
        out[d] = Principal(name, tenant, bool(operator))
    return out


class TokenStore:
    """The configured tokens; `authenticate(Authorization header)` -> Principal or None."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 entries: dict[bytes, Principal] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._by_digest: dict[bytes, Principal] = entries or {}
        self._mtime: float = -1.0
        self._checked = 0.0
        self._lock = threading.Lock()
        if self.path is not None:
            self._load(first=True)

    @classmethod
    def from_env(cls, path: str | None = None) -> TokenStore:
        chosen = path or os.environ.get(ENV_TOKENS)
        if not chosen:
            raise ConfigurationError(
                f"the HTTP API needs tokens: pass --tokens FILE or set {ENV_TOKENS} "
                f"('podjobs api token --tenant T' prints an entry)")
        return cls(chosen)

    def __len__(self) -> int:
        return len(self._by_digest)

    def _load(self, first: bool = False) -> None:
        assert self.path is not None
        try:
            mtime = self.path.stat().st_mtime
            if mtime == self._mtime:
                return
            entries = parse_tokens(json.loads(self.path.read_text()), str(self.path))
        except (OSError, ValueError, ConfigurationError) as exc:
            if first:
                raise ConfigurationError(f"cannot read the token file {self.path}: {exc}") from None
            log.error("token file %s was not reloaded (the previous tokens stay): %s", self.path, exc)
            return
        self._by_digest, self._mtime = entries, mtime
        if not first:
            log.info("token file %s reloaded: %d tokens", self.path, len(entries))

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if self.path is None or now - self._checked < 1.0:
            return
        with self._lock:
            if now - self._checked < 1.0:
                return
            self._checked = now
            self._load()

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal of an `Authorization: Bearer TOKEN` header, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        self._maybe_reload()
        # looked up by SHA-256 digest: the timing depends only on the digest of the guess,
        # never on how much of a stored token a guess matches
        return self._by_digest.get(digest(token))


    def principal_of_digest(self, digest_hex: str) -> Principal | None:
        """The principal whose token has this hex SHA-256 (a dashboard session's), or None."""
        try:
            d = bytes.fromhex(digest_hex)
        except ValueError:
            return None
        self._maybe_reload()
        return self._by_digest.get(d)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def entry_for(token: str, *, tenant: str | None, operator: bool, name: str | None) -> dict[str, Any]:
    e: dict[str, Any] = {"name": name or (f"tenant {tenant}" if tenant else "operator")}
    if operator:
        e["operator"] = True
    else:
        e["tenant"] = tenant
    e["sha256"] = hashlib.sha256(token.encode()).hexdigest()
    return e
