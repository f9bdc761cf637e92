"""Time-sortable job ids (ULID: 48-bit milliseconds + 80 more bits, 26 chars).

The 80 bits are a per-process counter (40 bits, from a random start) then 40 random bits,
so the ids one process makes sort in the order it made them, within a millisecond too
(a tenant move releases held jobs in id order: one transaction's outbox jobs keep their
order); ids of two processes in one millisecond differ by counter and random bits.

Every id has exactly 26 characters of Crockford base32, so the payload
`{"id":"<26 chars>",...` can be read by Lua with a fixed substring.
"""

from __future__ import annotations

import itertools
import os
import random
import time

ID_LENGTH = 26
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# every 10-bit value as two digits: 80 random bits are 8 lookups
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
# random.getrandbits: Mersenne Twister, reseeded in a forked child by the random module
_bits = random.getrandbits
#: next() is atomic under the GIL: two threads never get the same value
_seq = itertools.count(random.SystemRandom().getrandbits(38))


def _reseed() -> None:
    """A forked child counts from its own random start (not its parent's next values)."""
    global _seq
    _seq = itertools.count(random.SystemRandom().getrandbits(38))


os.register_at_fork(after_in_child=_reseed)
_MASK40 = (1 << 40) - 1
#: (ms, its time prefix) of the last id: ONE global, read and replaced whole, so threads
#: never pair one millisecond with another's prefix
_last: tuple[int, str] = (-1, "")


def _time_prefix(ms: int) -> str:
    out = []
    for _ in range(10):
        out.append(_ALPHABET[ms & 31])
        ms >>= 5
    return "".join(reversed(out))


def new_id(now_ms: int | None = None) -> str:
    """A new ULID string; ids of a later millisecond sort after earlier ones, and ids this
    process makes within one millisecond sort in the order it made them."""
    global _last
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    last = _last
    if ms != last[0]:
        last = _last = (ms, _time_prefix(ms))
    v = ((next(_seq) & _MASK40) << 40) | _bits(40)
    p = _PAIRS
    return (last[1] + p[v >> 70] + p[(v >> 60) & 1023] + p[(v >> 50) & 1023]
            + p[(v >> 40) & 1023] + p[(v >> 30) & 1023] + p[(v >> 20) & 1023]
            + p[(v >> 10) & 1023] + p[v & 1023])


def id_time_ms(job_id: str) -> int:
    """The millisecond timestamp encoded in an id."""
    value = 0
    for ch in job_id[:10]:
        value = (value << 5) | _ALPHABET.index(ch)
    return value
