"""The dashboard's session cookie and CSRF token (pure: no I/O).

A session is `base64url(JSON) "." base64url(HMAC-SHA256(secret, JSON))`; the JSON holds
the SHA-256 of the token the operator logged in with (never the token), a random CSRF
token and the expiry. Each request looks the digest up in the token file again
(`TokenStore.principal_of_digest`), so a token removed from the file ends its sessions at
once. Every form that changes something carries the CSRF token, compared in constant time.

    cookie = seal(secret, Session(digest_hex, csrf, expires))
    session = unseal(secret, cookie, now)     # None when forged, malformed or expired
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

COOKIE = "podjobs_session"
#: seconds a login lasts
TTL_S = 12 * 3600


@dataclass(frozen=True, slots=True)
class Session:
    digest: str  # hex SHA-256 of the token
    csrf: str
    expires: float


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def new_session(digest_hex: str, now: float, ttl_s: float = TTL_S) -> Session:
    return Session(digest_hex, secrets.token_urlsafe(24), now + ttl_s)


def seal(secret: bytes, s: Session) -> str:
    body = json.dumps({"d": s.digest, "c": s.csrf, "e": s.expires}, separators=(",", ":")).encode()
    mac = hmac.new(secret, body, hashlib.sha256).digest()
    return f"{_b64(body)}.{_b64(mac)}"


def unseal(secret: bytes, cookie: str | None, now: float) -> Session | None:
    if not cookie or cookie.count(".") != 1:
        return None
    body_b64, mac_b64 = cookie.split(".")
    try:
        body, mac = _unb64(body_b64), _unb64(mac_b64)
    except ValueError:
        return None
    if not hmac.compare_digest(mac, hmac.new(secret, body, hashlib.sha256).digest()):
        return None
    try:
        d = json.loads(body)
        s = Session(str(d["d"]), str(d["c"]), float(d["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    return s if s.expires > now else None


def csrf_ok(s: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(s.csrf.encode(), str(presented).encode())
