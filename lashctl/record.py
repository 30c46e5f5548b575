"""Plain records for the classes every command loads.

``@dataclass`` writes the source of a class's methods and compiles it each
time the module is imported: about half a millisecond a class, which start-up
(every shell call and TAB) pays for each. The records on that path are written
out instead (their ``__init__`` is compiled once, into the module's bytecode)
on these two bases. A record names its fields in ``__slots__``, in order;
equality, ``repr`` and ``replace`` follow from them.
"""

from __future__ import annotations

from typing import Any, TypeVar

R = TypeVar("R", bound="Record")


class Record:
    """Fields in ``__slots__``; equal when of the same class with equal fields."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def replace(self: R, **changes: Any) -> R:
        """A copy with some fields changed."""
        values = {name: getattr(self, name) for name in self.__slots__}
        values.update(changes)
        return type(self)(**values)


class FrozenRecord(Record):
    """A ``Record`` whose fields cannot change once set; hashable by them.

    ``__init__`` sets the fields with ``_set`` (or ``object.__setattr__``)."""

    __slots__ = ()

    def _set(self, *values: object) -> None:
        """Set the fields, in ``__slots__`` order (for ``__init__``)."""
        for name, value in zip(self.__slots__, values):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")

    def __hash__(self) -> int:
        return hash(self._values())
