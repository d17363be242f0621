"""The Redis dedupe ledger: for each staging row, the `row_sha256` last committed to Postgres.

Keys: `{ns}:ledger:{table}:{key_digest(source_system, source_id)}` -> row_sha256 (no customer data
in clear). Every operation is bulk: chunked MGET, MSET and DEL, never one round trip per record.

The ledger is a cache of Postgres, never the truth, and it is kept safe to trust:
- keys about to be written are evicted *before* the load transaction and remembered only *after*
  COMMIT, with the sha256 Postgres then holds; a crash anywhere in between leaves a missing entry
  (one wasted upsert next time), never a stale one that could hide a change;
- a per-table marker `{ns}:ledger_built:{table}` says "this table's entries were built from
  Postgres". A flushed or replaced Redis loses the marker with the entries, and the loader rebuilds
  the table's entries from Postgres (under the stream lock) before trusting it again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from erp_sync.core.batching import chunked
from erp_sync.core.hashing import frame_key_digest

# Keys per MGET/MSET/DEL: a batch's keys of one table in one round trip (fewer waits for the GIL).
CHUNK = 10_000
REBUILD_FETCH = 10_000


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class LedgerSplit:
    candidates: pd.DataFrame  # rows the ledger does not hold with this row_sha256
    skipped: int  # rows it holds unchanged
    stale_keys: list[str]  # full keys of candidates it holds with another row_sha256
    none_known: bool = False  # it holds no key of these rows at all (a cold load)
    keys: Sequence[str] = ()  # the full key of every row looked up, in row order


class RedisLedger:
    """Bulk key -> row_sha256 lookups in Redis for the staging tables."""

    def __init__(self, redis: Any, namespace: str = "erpsync") -> None:
        self.redis = redis
        self.namespace = namespace

    # -- keys ------------------------------------------------------------------------------------
    def _keys(self, table: str, source_system: str | Sequence[str], source_ids: Iterable[Any]) -> list[str]:
        prefix = f"{self.namespace}:ledger:{table}:"
        ids = [str(source_id) for source_id in source_ids]
        if isinstance(source_system, str):
            return [prefix + digest for digest in frame_key_digest(source_system, ids)]
        return [
            prefix + frame_key_digest(system, [source_id])[0]
            for system, source_id in zip(source_system, ids, strict=True)
        ]

    def _frame_keys(self, table: str, df: pd.DataFrame) -> list[str]:
        systems = df["source_system"].astype(str).tolist()
        ids = df["source_id"].astype(str).tolist()
        if systems and all(system == systems[0] for system in systems):
            return self._keys(table, systems[0], ids)
        return self._keys(table, systems, ids)

    def marker_key(self, table: str | None = None) -> str:
        return f"{self.namespace}:ledger_built" + (f":{table}" if table else "")

    # -- reads -----------------------------------------------------------------------------------
    def lookup(self, table: str, df: pd.DataFrame) -> list[str | None]:
        """The remembered row_sha256 of each row of `df` (None where unknown), in row order."""
        return self._lookup_keys(self._frame_keys(table, df))

    def _lookup_keys(self, keys: Sequence[str]) -> list[str | None]:
        found: list[str | None] = []
        for chunk in chunked(keys, CHUNK):
            found.extend(_text(value) for value in self.redis.mget(list(chunk)))
        return found

    def split_unchanged(self, table: str, df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
        """Drop the rows whose row_sha256 the ledger already holds; return (the rest, how many dropped)."""
        split = self.split(table, df)
        return split.candidates, split.skipped

    def split(self, table: str, df: pd.DataFrame) -> LedgerSplit:
        """`split_unchanged`, plus the keys of the candidates the ledger remembers with another sha256:
        the only entries that must be evicted before they are rewritten (a key it does not hold
        cannot go stale, so a cold load evicts nothing)."""
        if df.empty:
            return LedgerSplit(df, 0, [], none_known=True)
        keys = self._frame_keys(table, df)
        remembered = self._lookup_keys(keys)
        shas = [str(sha) for sha in df["row_sha256"]]
        unchanged = [known == sha for known, sha in zip(remembered, shas, strict=True)]
        stale = [
            key
            for key, known, same in zip(keys, remembered, unchanged, strict=True)
            if known is not None and not same
        ]
        mask = pd.Series(unchanged, index=df.index, dtype=bool)
        none_known = all(known is None for known in remembered)
        return LedgerSplit(df.loc[~mask], int(mask.sum()), stale, none_known, keys)

    def is_empty(self, tables: Iterable[str] | None = None) -> bool:
        """True when the ledger was never built from Postgres (or Redis lost it).

        With `tables`, true when any of those tables lacks its marker; without, checks the marker any
        rebuild sets.
        """
        if tables is None:
            return not self.redis.exists(self.marker_key())
        return bool(self.missing_tables(tables))

    def missing_tables(self, tables: Iterable[str]) -> list[str]:
        names = list(dict.fromkeys(tables))
        if not names:
            return []
        present = self.redis.mget([self.marker_key(table) for table in names])
        return [table for table, flag in zip(names, present, strict=True) if flag is None]

    # -- writes ----------------------------------------------------------------------------------
    def remember(self, table: str, df: pd.DataFrame, keys: Sequence[str] | None = None) -> int:
        """Record each row's row_sha256 (call after COMMIT, with what Postgres holds). Returns rows set.

        `keys`, when the caller has them (`LedgerSplit.keys` of the same rows in the same order), saves
        computing the digests a second time."""
        if df.empty:
            return 0
        if keys is None:
            keys = self._frame_keys(table, df)
        elif len(keys) != len(df):
            raise ValueError(f"{len(keys)} keys for {len(df)} rows of {table}")
        self._set_many(keys, [str(sha) for sha in df["row_sha256"]])
        return len(keys)

    def evict(self, table: str, source_ids: Iterable[Any], *, source_system: str) -> int:
        """Forget the given keys (before they are rewritten, or after an out-of-band change)."""
        return self.evict_full_keys(self._keys(table, source_system, source_ids))

    def evict_keys(self, keys: Iterable[tuple[str, str, str]]) -> int:
        """Forget (table, source_system, source_id) keys, in bulk."""
        return self.evict_full_keys(
            [self._keys(table, system, [source_id])[0] for table, system, source_id in keys]
        )

    def evict_frame(self, table: str, df: pd.DataFrame) -> int:
        """`evict` for the rows of a DataFrame (its source_system and source_id columns)."""
        return 0 if df.empty else self.evict_full_keys(self._frame_keys(table, df))

    def evict_full_keys(self, keys: Sequence[str]) -> int:
        """Forget full Redis keys (as `split` returns them), one DEL per chunk."""
        return sum(int(self.redis.delete(*chunk)) for chunk in chunked(keys, CHUNK))

    def _set_many(self, keys: Sequence[str], values: Sequence[str]) -> None:
        """One MSET per chunk (a SET per key cost 82 s for 455,108 keys; entries carry no TTL, so
        MSET writes exactly what SET did). Callers keep the order the protocol needs: this runs
        only after COMMIT (or for a rebuild under the stream lock)."""
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys but {len(values)} values")
        for start in range(0, len(keys), CHUNK):
            chunk = zip(keys[start : start + CHUNK], values[start : start + CHUNK], strict=True)
            pipe = self.redis.pipeline(transaction=False)  # one round trip, one MSET command
            pipe.mset(dict(chunk))
            pipe.execute()

    def rebuild_from_postgres(self, conn: Any, tables: Iterable[str]) -> dict[str, int]:
        """Reload the given staging tables' entries from Postgres, streamed; returns entries per table.

        Call it under the stream's lock (a concurrent load of the same table could otherwise have its
        fresher entry overwritten by this snapshot). Ends the connection's transaction (read only).
        """
        counts: dict[str, int] = {}
        try:
            for table in dict.fromkeys(tables):
                self._clear_table(table)
                counts[table] = self._rebuild_table(conn, table)
                self.redis.set(self.marker_key(table), "1")
            self.redis.set(self.marker_key(), "1")
        finally:
            conn.rollback()
        return counts

    def _clear_table(self, table: str) -> None:
        """Drop every entry of one table (keys Postgres no longer has must not survive a rebuild)."""
        self.redis.delete(self.marker_key(table))
        batch: list[Any] = []
        for key in self.redis.scan_iter(match=f"{self.namespace}:ledger:{_ident(table)}:*", count=CHUNK):
            batch.append(key)
            if len(batch) >= CHUNK:
                self.redis.delete(*batch)
                batch = []
        if batch:
            self.redis.delete(*batch)

    def _rebuild_table(self, conn: Any, table: str) -> int:
        total = 0
        with conn.cursor(name=f"ledger_rebuild_{table}") as cur:
            cur.itersize = REBUILD_FETCH
            sql = f"SELECT source_system, source_id, row_sha256 FROM erp_staging.{_ident(table)}"  # noqa: S608
            cur.execute(sql + " WHERE interface_status <> 'DELETED'")
            while True:
                rows = cur.fetchmany(REBUILD_FETCH)
                if not rows:
                    break
                keys = self._keys(table, [r[0] for r in rows], [r[1] for r in rows])
                self._set_many(keys, [str(r[2]) for r in rows])
                total += len(rows)
        return total


def _ident(name: str) -> str:
    """A staging table name, checked (it is interpolated into SQL)."""
    if not name.replace("_", "").isalnum() or not name[0].isalpha() or name.lower() != name:
        raise ValueError(f"not a staging table name: {name!r}")
    return name
