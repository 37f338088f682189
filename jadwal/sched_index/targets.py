"""Target columns and values of a phase's request (defined once here; docs/architecture.md lists it).

A phase requests shares of the values of a *target column*: one composition column (``"task"``) or a
composite of several (``"task/label"``).  In memory a target is :class:`TargetColumns` (the columns)
and value tuples, one entry per column, with ``None`` the one spelling of a missing value.

``meta.json`` keeps its historical string encoding, applied only at the edge by :meth:`encode` /
:meth:`decode`: a column name is the columns joined by ``/``; a value of one column is ``str(value)``
with a missing value spelled ``"None"``, a composite value is its parts joined by ``/`` with a missing
part spelled ``""``.  (Values that themselves contain ``/`` cannot be decoded unambiguously; a
column whose own name contains ``/`` is one column when the shard set has it.)
"""
from __future__ import annotations

from dataclasses import dataclass

SEP = "/"
_NULL_SINGLE = "None"  # meta.json spelling of a missing value of a one-column target
_NULL_PART = ""  # … and of a missing part of a composite value


def norm(v) -> str | None:
    """A target value in memory: ``str(v)``, ``None`` for a missing value (None or NaN)."""
    return None if v is None or v != v else str(v)


@dataclass(frozen=True)
class TargetColumns:
    """The composition columns one target column names, in order."""

    columns: tuple[str, ...]

    @classmethod
    def parse(cls, name: str, known=()) -> TargetColumns:
        """The columns of target name ``name`` (``"task/label"`` → task, label); a name in ``known``
        (the shard set's or the cells' columns) is one column even if it contains ``/``."""
        if name in known or SEP not in name:
            return cls((name,))
        return cls(tuple(name.split(SEP)))

    @property
    def name(self) -> str:
        return SEP.join(self.columns)

    @property
    def composite(self) -> bool:
        return len(self.columns) > 1

    def value(self, *parts) -> tuple:
        """The in-memory value tuple of ``parts`` (one per column, normalized by :func:`norm`)."""
        if len(parts) != len(self.columns):
            raise ValueError(f"target {self.name!r}: {len(parts)} value(s) for {len(self.columns)} column(s)")
        return tuple(norm(p) for p in parts)

    def encode(self, value: tuple) -> str:
        """The meta.json string of a value tuple."""
        if not self.composite:
            v = norm(value[0])
            return _NULL_SINGLE if v is None else v
        return SEP.join(_NULL_PART if v is None else v for v in map(norm, value))

    def decode(self, s: str) -> tuple:
        """The value tuple of a meta.json string (inverse of :meth:`encode` for values without ``/``)."""
        if not self.composite:
            return (None if s == _NULL_SINGLE else s,)
        parts = s.split(SEP)
        if len(parts) != len(self.columns):
            raise ValueError(f"target {self.name!r}: value {s!r} has {len(parts)} part(s), not {len(self.columns)}")
        return tuple(None if p == _NULL_PART else p for p in parts)

    def encode_rows(self, *columns) -> list[str]:
        """The meta.json string of each row of row-aligned value sequences (one per column)."""
        return [self.encode(xs) for xs in zip(*columns)]
