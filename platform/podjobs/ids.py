"""Time-sortable job ids (ULID: 48-bit milliseconds + 80 random bits, 26 chars).

Every id has exactly 26 characters of Crockford base32, so the payload
`{"id":"<26 chars>",...` can be read by Lua with a fixed substring.
"""

from __future__ import annotations

import random
import time

ID_LENGTH = 26
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# every 10-bit value as two digits: 80 random bits are 8 lookups
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
# random.getrandbits: Mersenne Twister, reseeded in a forked child by the random module
_bits = random.getrandbits
_last_ms = -1
_last_prefix = ""


def _time_prefix(ms: int) -> str:
    out = []
    for _ in range(10):
        out.append(_ALPHABET[ms & 31])
        ms >>= 5
    return "".join(reversed(out))


def new_id(now_ms: int | None = None) -> str:
    """A new ULID string; ids made in a later millisecond sort after earlier ones."""
    global _last_ms, _last_prefix
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if ms != _last_ms:
        _last_prefix, _last_ms = _time_prefix(ms), ms
    v = _bits(80)
    p = _PAIRS
    return (_last_prefix + p[v >> 70] + p[(v >> 60) & 1023] + p[(v >> 50) & 1023]
            + p[(v >> 40) & 1023] + p[(v >> 30) & 1023] + p[(v >> 20) & 1023]
            + p[(v >> 10) & 1023] + p[v & 1023])


def id_time_ms(job_id: str) -> int:
    """The millisecond timestamp encoded in an id."""
    value = 0
    for ch in job_id[:10]:
        value = (value << 5) | _ALPHABET.index(ch)
    return value
