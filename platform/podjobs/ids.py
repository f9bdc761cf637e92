"""Time-sortable job ids (ULID: 48-bit milliseconds + 80 random bits, 26 chars).

Every id has exactly 26 characters of Crockford base32, so the payload
`{"id":"<26 chars>",...` can be read by Lua with a fixed substring.
"""

from __future__ import annotations

import random
import time

ID_LENGTH = 26
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_rand = random.SystemRandom()


def new_id(now_ms: int | None = None) -> str:
    """A new ULID string; ids made in a later millisecond sort after earlier ones."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = (ms << 80) | _rand.getrandbits(80)
    out = []
    for _ in range(ID_LENGTH):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def id_time_ms(job_id: str) -> int:
    """The millisecond timestamp encoded in an id."""
    value = 0
    for ch in job_id[:10]:
        value = (value << 5) | _ALPHABET.index(ch)
    return value
