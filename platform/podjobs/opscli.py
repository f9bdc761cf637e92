"""Placeholder for the ops commands (the core engineer replaces this file)."""

from typing import Any


def register(sub: Any) -> None:
    pass
