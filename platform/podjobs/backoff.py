"""Pure retry decisions: how long to wait before attempt N, and whether to give up.

Exponential with jitter, like Sidekiq: (attempt ** 4) + 15 + jitter seconds,
where jitter is up to 30 * (attempt + 1) seconds.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from podjobs.record import Record

#: a backoff function: attempt number (1 = first retry) -> delay in seconds
Backoff = Callable[[int], float]


def exponential(attempt: int, rng: random.Random | None = None) -> float:
    """Sidekiq's curve: 15 s, 16 s, 31 s, 96 s, ... plus jitter; about 20 days over 25 retries."""
    r = rng or random
    return float(attempt**4 + 15 + r.random() * 30 * (attempt + 1))


def constant(seconds: float) -> Backoff:
    """Always wait the same time."""
    return lambda attempt: seconds


class RetryLater(Record):
    __slots__ = ("delay_s",)

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s


class GiveUp(Record):
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def decide(attempt: int, retries: int, backoff: Backoff) -> RetryLater | GiveUp:
    """After failed attempt number `attempt` (1-based), retry or give up.

    `retries` is how many retries follow the first run: retries=0 never retries.
    """
    if attempt > retries:
        return GiveUp(f"retries exhausted ({retries} allowed)")
    return RetryLater(max(0.0, float(backoff(attempt))))
