"""`Record`: the base of the small value classes on a worker's import path.

What `typing.NamedTuple` gave them (equality, hash, repr, unpacking, `_replace`) without its
cost at import: `namedtuple` compiles code for every class it makes, about 1M instructions a
class, and a worker imports a dozen before its first job (bench-peers' first-job column).
A subclass lists its fields in `__slots__` and sets them all in its own `__init__`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Self


class Record:
    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in self.__slots__)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values())

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()  # type: ignore[attr-defined,unused-ignore]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def _replace(self, **changes: Any) -> Self:
        """A copy with `changes` (as NamedTuple's)."""
        return type(self)(**{**dict(zip(self.__slots__, self._values(), strict=True)), **changes})
