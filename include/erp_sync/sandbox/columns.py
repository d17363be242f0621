"""Growable numpy columns and a created-ordered index: the sandbox keeps every object's state in
compact arrays (1,000,000 invoices fit in a few hundred MB and generate in seconds) and renders
JSON from them on demand."""

from __future__ import annotations

from typing import Any

import numpy as np


class Column:
    """A 1-D numpy array that grows by doubling; `.v` is the live view."""

    def __init__(self, values: np.ndarray[Any, Any]) -> None:
        self.a = np.ascontiguousarray(values)
        self.n = len(values)

    @property
    def v(self) -> np.ndarray[Any, Any]:
        return self.a[: self.n]

    def append(self, value: Any) -> int:
        if self.n == len(self.a):
            grown = np.empty(max(16, 2 * len(self.a)), dtype=self.a.dtype)
            grown[: self.n] = self.a[: self.n]
            self.a = grown
        self.a[self.n] = value
        self.n += 1
        return self.n - 1

    def __getitem__(self, i: int) -> Any:
        return self.a.item(i)  # a Python scalar: cheaper than a numpy scalar and JSON-ready

    def __setitem__(self, i: int, value: Any) -> None:
        self.a[i] = value


class Table:
    """Named columns of equal length; row index == object sequence number."""

    def __init__(self, **columns: np.ndarray[Any, Any]) -> None:
        self.cols = {name: Column(values) for name, values in columns.items()}
        lengths = {c.n for c in self.cols.values()}
        assert len(lengths) == 1, lengths
        self.n = lengths.pop()
        for name, column in self.cols.items():
            setattr(self, name, column)  # plain attribute access on the hot path

    def __getattr__(self, name: str) -> Column:  # only reached for unknown names (and for mypy)
        raise AttributeError(name)

    def append(self, **values: Any) -> int:
        missing = set(self.cols) - set(values)
        assert not missing, missing
        for name, value in values.items():
            self.cols[name].append(value)
        self.n += 1
        return self.n - 1


class CreatedIndex:
    """Rows ordered by (created, row): `order[pos]` is a row, `pos_of[row]` its position.

    Seeded rows are generated in that order already; rows appended later with a `created` not
    before the last one keep it cheaply, anything else marks the index for a rebuild."""

    def __init__(self, created: Column) -> None:
        self._created = created
        self._dirty = True
        self._order = np.empty(0, dtype=np.int64)
        self._pos_of = np.empty(0, dtype=np.int64)
        self._sorted_created = np.empty(0, dtype=np.int64)
        self._indexed = 0

    def _rebuild(self) -> None:
        created = self._created.v
        n = len(created)
        rows = np.arange(n, dtype=np.int64)
        if n and bool(np.all(created[1:] >= created[:-1])):
            order = rows
        else:
            order = np.lexsort((rows, created)).astype(np.int64)
        self._order = order
        self._sorted_created = created[order].astype(np.int64)
        self._pos_of = np.empty(n, dtype=np.int64)
        self._pos_of[order] = rows
        self._indexed = n
        self._dirty = False

    def _sync(self) -> None:
        n = self._created.n
        if self._dirty:
            self._rebuild()
            return
        if n == self._indexed:
            return
        new = self._created.v[self._indexed :]
        last = self._sorted_created[-1] if len(self._sorted_created) else np.iinfo(np.int64).min
        if new[0] >= last and bool(np.all(new[1:] >= new[:-1])):
            rows = np.arange(self._indexed, n, dtype=np.int64)
            self._order = np.concatenate([self._order, rows])
            self._sorted_created = np.concatenate([self._sorted_created, new.astype(np.int64)])
            self._pos_of = np.concatenate([self._pos_of, np.arange(self._indexed, n, dtype=np.int64)])
            self._indexed = n
        else:
            self._rebuild()

    def invalidate(self) -> None:
        self._dirty = True

    @property
    def order(self) -> np.ndarray[Any, Any]:
        self._sync()
        return self._order

    @property
    def sorted_created(self) -> np.ndarray[Any, Any]:
        self._sync()
        return self._sorted_created

    def pos_of(self, row: int) -> int:
        self._sync()
        return int(self._pos_of[row])
