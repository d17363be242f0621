"""The exactly-once load of one batch (DESIGN.md, "Exactly-once").

    committed already? (same source_system, stream, window, input_sha256) -> its recorded result
    ledger split (Redis MGET): unchanged rows never reach Postgres
    evict the entries the ledger holds with another row_sha256 (a key it does not hold cannot go stale)
    ONE transaction, as role erp_loader:
        COPY rows -> temp tables; upsert with the version guard, RETURNING (xmax = 0)
        sync_batches row, rejections, raw pages into the outbox, the cursor (last batch only)
        conservation check -> COMMIT
    ledger.remember(what Postgres now holds)

A crash anywhere before COMMIT leaves Postgres untouched; a crash after COMMIT leaves the batch
recorded (a retry returns it) and some ledger entries missing (a retry re-sends those rows and the
upsert finds them identical). Named `crash_point`s let the tests kill the process at each step.

Counting is per source record (the primary table's rows): a record is new when its primary row was
inserted, changed when its primary row was updated or any of its child rows (invoice lines) was
written, otherwise unchanged -- which includes rows the ledger skipped, rows Postgres found identical,
rows the version guard refused as older, and older in-batch copies (`mapped.superseded`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import psycopg2.errors
from psycopg2.extras import Json, execute_values

from erp_sync.core.batch import (
    CHILDREN_SHA256,
    CONTROL_COLUMNS,
    BatchKey,
    BatchResult,
    MappedBatch,
    Page,
    Rejection,
)
from erp_sync.store import outbox
from erp_sync.store.faults import crash_point
from erp_sync.store.ledger import RedisLedger
from erp_sync.store.locks import stream_lock
from erp_sync.store.state import advance_cursor

LOADER_ROLE = "erp_loader"
# Columns the loader sets itself; a mapping must not supply them.
LOADER_COLUMNS = ("sync_batch_id", "interface_status", "loaded_at")
# Child table -> the column naming its parent record (the batch's primary table).
CHILD_PARENT_COLUMN: dict[str, str] = {"ar_invoice_lines": "invoice_source_id"}
# What psycopg2 pulls from the CSV stream per call: a batch's table in one or two pulls. Each pull
# gives the GIL back and waits to take it again from the extraction and mapping threads; with 64 KB
# pulls, the COPYs of 5,000 sandbox invoices (1.2 MB of headers, 3.1 MB of lines) took 66 of them.
COPY_CHUNK_BYTES = 8 << 20
ACTIONS = ("insert", "update", "skip", "reject")
# Outbox pages: on 50 sandbox pages of 100 invoices, level 2 compresses at 525 MB/s (ratio 14.6),
# level 6 at 215 MB/s (ratio 19.1), level 1 at 516 MB/s (ratio 13.3); at a million invoices (~5 GB of
# pages) that is ~10 s against ~23 s of one core. The outbox is transient (drained to SFTP).
# Readers use gzip.decompress, which takes any level.
OUTBOX_GZIP_LEVEL = 2


@dataclass(frozen=True)
class PlannedBatch(BatchResult):
    """A dry run's answer: the counts a load would produce, and a few rows per action."""

    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class _TableOutcome:
    written: int = 0
    inserted_ids: set[str] = field(default_factory=set)
    updated_ids: set[str] = field(default_factory=set)
    touched_parents: set[str] = field(default_factory=set)
    final_state: pd.DataFrame | None = None  # (source_system, source_id, row_sha256) after the upsert
    copied: bool = False  # COPY straight into the table: every row was new
    final_keys: Sequence[str] | None = None  # the ledger keys of final_state's rows, when known
    # Stored headers this upsert rewrote with another CHILDREN_SHA256 (None: the table has none).
    children_changed: set[str] | None = None


# -- entry points --------------------------------------------------------------------------------


def load_batch(
    conn: Any,
    ledger: RedisLedger,
    key: BatchKey,
    mapped: MappedBatch,
    pages: Sequence[Page],
    *,
    batch_id: int,
    cursor_after: datetime | None,
    dry_run: bool = False,
    page_meta: Mapping[str, Any] | None = None,
    replayed_ids: Sequence[int] = (),
    lock_timeout_s: float = 600.0,
) -> BatchResult:
    """Load one batch exactly once; see the module docstring.

    `conn` must have no open transaction. The load takes the stream's lock itself (waiting up to
    `lock_timeout_s`, then `StreamLockedError`); a caller already holding it on `conn` -- the
    pipeline, for the whole window -- is not blocked. `page_meta` is stored
    with every outbox page (what restore needs: mode, default_version). `replayed_ids` are stored
    rejections this batch replays: each is marked REPLAYED in the same transaction unless it is
    rejected again (a `Rejection` carrying its `rejection_id` updates that row instead of adding one).
    With `dry_run` nothing is written anywhere and a `PlannedBatch` (with samples) is returned.
    """
    _check_batch(key, mapped)
    if dry_run:
        return plan_batch(conn, ledger, key, mapped, pages, batch_id=batch_id, cursor_after=cursor_after)
    # Re-entrant: a caller that holds the stream lock (the pipeline) passes straight through.
    with stream_lock(conn, key.source_system, key.stream, timeout_s=lock_timeout_s):
        return _load_locked(
            conn,
            ledger,
            key,
            mapped,
            pages,
            batch_id=batch_id,
            cursor_after=cursor_after,
            page_meta=page_meta or {},
            replayed_ids=replayed_ids,
        )


def _load_locked(
    conn: Any,
    ledger: RedisLedger,
    key: BatchKey,
    mapped: MappedBatch,
    pages: Sequence[Page],
    *,
    batch_id: int,
    cursor_after: datetime | None,
    page_meta: Mapping[str, Any],
    replayed_ids: Sequence[int],
) -> BatchResult:
    recorded = find_committed(conn, key)
    if recorded is not None:
        return recorded
    tables = _tables_in_order(mapped)
    missing = ledger.missing_tables(tables)
    if missing:
        ledger.rebuild_from_postgres(conn, missing)
    candidates, stale_keys, unknown_keys = _ledger_split(ledger, mapped, tables)
    ledger.evict_full_keys(stale_keys)

    result, outcomes = _transact(
        conn,
        ledger,
        key,
        mapped,
        pages,
        candidates,
        batch_id=batch_id,
        cursor_after=cursor_after,
        dry_run=False,
        page_meta=page_meta,
        replayed_ids=replayed_ids,
        unknown_keys=unknown_keys,
    )
    if result.already_committed:
        return result
    crash_point("after_commit_before_ledger")
    for table, outcome in outcomes.items():
        if outcome.final_state is not None:
            ledger.remember(table, outcome.final_state, keys=outcome.final_keys)
    return result


def plan_batch(
    conn: Any,
    ledger: RedisLedger,
    key: BatchKey,
    mapped: MappedBatch,
    pages: Sequence[Page],
    *,
    batch_id: int = 0,
    cursor_after: datetime | None = None,
    sample_size: int = 5,
) -> PlannedBatch:
    """What `load_batch` would do (same counts), written nowhere: the transaction is rolled back and
    Redis is only read (an empty ledger is not rebuilt; Postgres then decides alone)."""
    _check_batch(key, mapped)
    recorded = find_committed(conn, key)
    if recorded is not None:
        return PlannedBatch(**_fields(recorded))
    tables = _tables_in_order(mapped)
    if ledger.missing_tables(tables):
        candidates = {table: mapped.tables[table] for table in tables}
    else:
        candidates, _, _ = _ledger_split(ledger, mapped, tables)
    result, outcomes = _transact(
        conn,
        ledger,
        key,
        mapped,
        pages,
        candidates,
        batch_id=batch_id,
        cursor_after=cursor_after,
        dry_run=True,
        page_meta={},
        replayed_ids=(),
    )
    samples = _samples(mapped, outcomes.get(mapped.primary_table, _TableOutcome()), sample_size)
    return PlannedBatch(**_fields(result), samples=samples)


def find_committed(conn: Any, key: BatchKey) -> BatchResult | None:
    """The recorded result of this batch if an earlier try committed it (read in its own transaction
    unless one is open)."""
    idle = conn.info.transaction_status == 0
    try:
        with conn.cursor() as cur:
            return _find_committed(cur, key)
    finally:
        if idle:
            conn.rollback()


# -- the transaction -----------------------------------------------------------------------------


@contextmanager
def loader_transaction(conn: Any) -> Iterator[Any]:
    """A cursor in one transaction as the loader's role: committed when the block ends, rolled back
    when it raises (the error goes on). A block that rolls back itself and returns leaves nothing to
    commit."""
    try:
        with conn.cursor() as cur:
            cur.execute(f"SET LOCAL ROLE {LOADER_ROLE}")
            yield cur
        conn.commit()
    except BaseException:
        if not conn.closed:
            conn.rollback()
        raise


def _transact(
    conn: Any,
    ledger: RedisLedger,
    key: BatchKey,
    mapped: MappedBatch,
    pages: Sequence[Page],
    candidates: Mapping[str, pd.DataFrame],
    *,
    batch_id: int,
    cursor_after: datetime | None,
    dry_run: bool,
    page_meta: Mapping[str, Any],
    replayed_ids: Sequence[int],
    unknown_keys: Mapping[str, Sequence[str]] | None = None,
) -> tuple[BatchResult, dict[str, _TableOutcome]]:
    with loader_transaction(conn) as cur:
        # Every statement here is driven by the batch's keys through indexes; JIT compiling one
        # whose estimated cost crosses jit_above_cost (the retire, the upserts of a large batch)
        # took 9 ms a statement, and the first in a session also loads LLVM.
        cur.execute("SET LOCAL jit = off")
        # Two tries of the same batch at once: the second waits here, then finds the first's record.
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_batch_lock_key(key),))
        recorded = _find_committed(cur, key)
        if recorded is not None:
            conn.rollback()
            return recorded, {}
        cursor_before = _current_cursor(cur, key)
        crash_point("before_copy")
        outcomes: dict[str, _TableOutcome] = {}
        for table, df in candidates.items():
            if df.empty:
                continue
            deleted = mapped.deleted_ids if table == mapped.primary_table else frozenset()
            copied = (
                _copy_new_rows(cur, table, df, batch_id, unknown_keys[table], deleted)
                if not dry_run
                and unknown_keys
                and _may_copy(table, mapped.primary_table, unknown_keys, outcomes)
                else None
            )
            outcomes[table] = copied or _upsert_table(
                cur,
                table,
                df,
                batch_id,
                with_final_state=not dry_run,
                primary_table=mapped.primary_table,
                deleted_ids=deleted,
            )
        retired = _retire_removed_children(cur, mapped, batch_id, outcomes)
        if retired and not dry_run:
            ledger.evict_keys(retired)  # before COMMIT: a crash after it leaves no stale entry
        result = _count(mapped, batch_id, outcomes)
        result.check_conservation()  # raises ConservationError -> rollback below
        if dry_run:
            conn.rollback()
            return result, outcomes
        insert_batch_row(cur, key, result, cursor_before, cursor_after)
        _write_rejections(cur, mapped, batch_id)
        _mark_replayed(cur, replayed_ids, mapped.rejections, batch_id)
        _write_outbox(cur, key, pages, batch_id, page_meta)
        if cursor_after is not None:
            advance_cursor(
                cur, key.source_system, key.stream, cursor_after, batch_id=batch_id, run_id=key.run_id
            )
        crash_point("before_commit")
    return result, outcomes


def _may_copy(
    table: str, primary_table: str, unknown_tables: Collection[str], outcomes: Mapping[str, _TableOutcome]
) -> bool:
    """Whether `table`'s rows may go straight in with COPY: the ledger knows none of their keys, and for a
    child table, every parent is new too (copied in this batch), so no stored parent can be newer."""
    if table not in unknown_tables:
        return False
    return table == primary_table or outcomes.get(primary_table, _TableOutcome()).copied


def _copy_new_rows(
    cur: Any,
    table: str,
    df: pd.DataFrame,
    batch_id: int,
    ledger_keys: Sequence[str],
    deleted_ids: frozenset[str] = frozenset(),
) -> _TableOutcome | None:
    """COPY rows the ledger does not know straight into the staging table (a cold load), or None.

    Half the Postgres time of the upsert (no temp table, no conflict checks): 0.16 s against 0.33 s for
    5,000 invoices and 18,000 lines into tables of 1,000,000. The ledger is a cache, so a key it lost
    can still be stored: the COPY then fails on the primary key, is rolled back to its savepoint, and
    the caller upserts instead.
    """
    columns = [c for c in df.columns if c not in LOADER_COLUMNS]
    rows = df[columns].assign(sync_batch_id=batch_id)
    if deleted_ids:  # tombstones first seen here (ADR 0015); every other row takes the default, PENDING
        gone = df["source_id"].astype(str).isin(deleted_ids).to_numpy()
        rows = rows.assign(interface_status=np.where(gone, "DELETED", "PENDING"))
    col_list = ", ".join(_ident(c) for c in rows.columns)
    cur.execute("SAVEPOINT copy_new_rows")
    try:
        cur.copy_expert(
            f"COPY erp_staging.{_ident(table)} ({col_list}) FROM STDIN WITH (FORMAT csv)",
            _CsvStream(_csv_lines(rows, list(rows.columns))),
            size=COPY_CHUNK_BYTES,
        )
    except psycopg2.errors.UniqueViolation:
        cur.execute("ROLLBACK TO SAVEPOINT copy_new_rows")
        return None
    cur.execute("RELEASE SAVEPOINT copy_new_rows")
    ids = df["source_id"].astype(str)
    parent = CHILD_PARENT_COLUMN.get(table)
    return _TableOutcome(
        written=len(df),
        inserted_ids=set(ids),
        touched_parents=set(df[parent].astype(str)) if parent in df.columns else set(),
        final_state=pd.DataFrame(
            {
                "source_system": df["source_system"].to_numpy(),
                "source_id": ids.to_numpy(),
                "row_sha256": df["row_sha256"].to_numpy(),
            }
        ),
        final_keys=ledger_keys,
        copied=True,
    )


def _upsert_table(
    cur: Any,
    table: str,
    df: pd.DataFrame,
    batch_id: int,
    *,
    with_final_state: bool,
    primary_table: str,
    deleted_ids: frozenset[str] = frozenset(),
) -> _TableOutcome:
    columns = [c for c in df.columns if c not in LOADER_COLUMNS]
    temp = f"load_{table}"
    col_list = ", ".join(_ident(c) for c in columns)
    cur.execute(
        f"CREATE TEMP TABLE {temp} ON COMMIT DROP AS "  # noqa: S608 -- identifiers checked by _ident
        f"SELECT {col_list} FROM erp_staging.{_ident(table)} WITH NO DATA"
    )
    cur.copy_expert(
        f"COPY {temp} ({col_list}) FROM STDIN WITH (FORMAT csv)",
        _CsvStream(_csv_lines(df, columns)),
        size=COPY_CHUNK_BYTES,
    )
    # Temp tables are never auto-analyzed: without this the upsert's joins are planned blind.
    cur.execute(f"ANALYZE {temp}")
    parent = CHILD_PARENT_COLUMN.get(table) if CHILD_PARENT_COLUMN.get(table) in columns else None
    # The header keeps its children's digest: the upsert says whose it changed (ADR 0027).
    tracks_children = table == primary_table and CHILDREN_SHA256 in columns
    # A child row older than its stored record (an out-of-order old version) is not applied at all:
    # it could only resurrect a line the newer version no longer has. A scalar subquery, not NOT
    # EXISTS: the planner turns NOT EXISTS into a hash anti-join that reads every stored header
    # (0.4-0.9 s a batch at 1,000,000 invoices, auto_explain); a scalar subquery is never flattened
    # into a join, so each row is one probe of the header's primary key.
    older_than_parent = (
        f"""WHERE coalesce((SELECT h.source_version FROM erp_staging.{_ident(primary_table)} h
               WHERE h.source_system = t.source_system AND h.source_id = t.{_ident(parent)}),
             t.source_version) <= t.source_version"""  # noqa: S608 -- _ident-checked names
        if parent and table != primary_table
        else ""
    )
    updates = ", ".join(
        f"{_ident(c)} = excluded.{_ident(c)}" for c in columns if c not in ("source_system", "source_id")
    )
    # A row is rewritten when its hash changed, or when it is to be live and is stored DELETED (a
    # retired line that returns) or the reverse (a tombstone: ADR 0015); a re-read tombstone is not.
    status = (
        "CASE WHEN t.source_id = ANY(%(deleted)s) THEN 'DELETED' ELSE 'PENDING' END"
        if deleted_ids
        else "'PENDING'"
    )
    cur.execute(
        f"""
        INSERT INTO erp_staging.{_ident(table)} AS s ({col_list}, sync_batch_id, interface_status, loaded_at)
        SELECT {col_list}, %(batch_id)s, {status}, now() FROM {temp} t
        {older_than_parent}
        ON CONFLICT (source_system, source_id) DO UPDATE SET
            {updates}, sync_batch_id = excluded.sync_batch_id, interface_status = excluded.interface_status,
            loaded_at = now()
        WHERE (s.row_sha256 <> excluded.row_sha256
               OR (s.interface_status = 'DELETED') <> (excluded.interface_status = 'DELETED'))
          AND excluded.source_version >= s.source_version
        RETURNING s.source_id, (s.xmax = 0) AS inserted, {f"s.{_ident(parent)}" if parent else "NULL"},
            s.source_system, s.row_sha256, {_children_changed_sql(table) if tracks_children else "NULL"}
        """,  # noqa: S608 -- _ident-checked names
        {"batch_id": batch_id, "deleted": sorted(deleted_ids)},
    )
    written = cur.fetchall()
    children_changed: set[str] | None = set() if tracks_children else None
    outcome = _TableOutcome(children_changed=children_changed)
    for source_id, inserted, parent_id, _, _, digest_changed in written:
        outcome.written += 1
        (outcome.inserted_ids if inserted else outcome.updated_ids).add(source_id)
        if parent_id is not None:
            outcome.touched_parents.add(parent_id)
        if digest_changed and not inserted and children_changed is not None:
            children_changed.add(source_id)
    if with_final_state and len(written) == len(df):
        # Every row was written (a cold load): what the upsert returned is what Postgres holds.
        outcome.final_state = pd.DataFrame(
            [(system, source_id, sha) for source_id, _, _, system, sha, _ in written],
            columns=["source_system", "source_id", "row_sha256"],
        )
    elif with_final_state:
        cur.execute(
            f"SELECT s.source_system, s.source_id, s.row_sha256 FROM {temp} t "  # noqa: S608
            f"JOIN erp_staging.{_ident(table)} s USING (source_system, source_id) "
            "WHERE s.interface_status <> 'DELETED'"  # a retired row must reach Postgres when it returns
        )
        outcome.final_state = pd.DataFrame(
            cur.fetchall(), columns=["source_system", "source_id", "row_sha256"]
        )
    return outcome


def _children_changed_sql(table: str) -> str:
    """The RETURNING expression: did this write change the header's children digest? A subquery in
    RETURNING does not see the statement's own changes, so it reads the row as it was before (for
    one staged before the digest existed, NULL: changed; an inserted row is told apart by the
    caller)."""
    return (
        f"(SELECT o.{CHILDREN_SHA256} FROM erp_staging.{_ident(table)} o"  # noqa: S608 -- checked name
        " WHERE o.source_system = s.source_system AND o.source_id = s.source_id)"
        f" IS DISTINCT FROM s.{CHILDREN_SHA256}"
    )


def _retire_removed_children(
    cur: Any, mapped: MappedBatch, batch_id: int, outcomes: dict[str, _TableOutcome]
) -> list[tuple[str, str, str]]:
    """Soft-delete child rows (invoice lines) that a newer version of their record no longer has.

    The loader may not DELETE staging rows: a removed line is marked `interface_status = 'DELETED'`
    at the record's version, so only a newer version re-activates it through the upsert. A line is
    retired only when the batch's record version is newer than the line's and not older than the
    stored header: an out-of-order old version retires nothing. Returns (table, source_system,
    source_id) of the retired rows, which count as writes.
    """
    primary = mapped.tables.get(mapped.primary_table)
    if primary is None or primary.empty:
        return []
    primary = _headers_to_retire_under(primary, mapped, outcomes.get(mapped.primary_table, _TableOutcome()))
    if primary.empty:
        return []
    retired: list[tuple[str, str, str]] = []
    for table, parent_column in CHILD_PARENT_COLUMN.items():
        if table not in mapped.tables:
            continue
        children = mapped.tables[table]
        kept = [] if children.empty else children["source_id"].astype(str).tolist()
        cur.execute(
            _retire_statement(table, parent_column, mapped.primary_table),
            {
                "ids": primary["source_id"].astype(str).tolist(),
                "versions": [int(v) for v in primary["source_version"]],
                "batch_id": batch_id,
                "system": mapped.source_system,
                "kept": kept,
                # a tombstone retires its lines even when they were loaded in the same second, as
                # its header replaced theirs (the upsert's version guard is >=)
                "deleted": sorted(mapped.deleted_ids),
            },
        )
        rows = cur.fetchall()
        if rows:
            outcome = outcomes.setdefault(table, _TableOutcome())
            outcome.written += len(rows)
            outcome.touched_parents.update(parent for _, parent in rows)
            retired.extend((table, mapped.source_system, source_id) for source_id, _ in rows)
    return retired


def _headers_to_retire_under(primary: pd.DataFrame, mapped: MappedBatch, head: _TableOutcome) -> pd.DataFrame:
    """The batch's headers whose stored child rows may include some their new version lacks.

    A header this batch inserted had no stored lines before it (lines are loaded only with their
    header, and the loader never deletes a header). Where the table keeps a children digest
    (ADR 0027), only the headers this upsert rewrote with another digest can have lost a child, and
    tombstones, which retire theirs whatever the digest: a header not rewritten is stored with this
    row_sha256, which covers its children's; one rewritten with the same digest kept every child.
    """
    ids = primary["source_id"].astype(str)
    if head.children_changed is not None:
        return primary[ids.isin(head.children_changed | mapped.deleted_ids).to_numpy()]
    if head.inserted_ids:
        return primary[~ids.isin(head.inserted_ids).to_numpy()]
    return primary


def _retire_statement(table: str, parent_column: str, primary_table: str) -> str:
    """The soft-delete of removed children, driven from the batch's parent keys.

    Its plan must not depend on statistics: staging tables bulk-loaded since their last ANALYZE look
    tiny to the planner, which then scanned every child row against `<> ALL(<kept ids>)` (139 s for
    1,000 parents over 356,569 lines). Here the children are reached per parent through the
    `(source_system, <parent column>)` index (a LATERAL subquery with OFFSET 0 cannot be flattened
    into a hash join), kept children are excluded by a hashed anti-join on `unnest(<kept ids>)`, and
    the UPDATE finds its rows by primary key.
    """
    return f"""
        WITH parents AS (
            SELECT p.parent_id, p.version
            FROM unnest(%(ids)s::text[], %(versions)s::bigint[]) AS p(parent_id, version)
            JOIN erp_staging.{_ident(primary_table)} h
              ON h.source_system = %(system)s AND h.source_id = p.parent_id AND h.source_version <= p.version
        ), doomed AS MATERIALIZED (
            SELECT c.source_id, c.version
            FROM parents p
            CROSS JOIN LATERAL (
                SELECT l.source_id, p.version FROM erp_staging.{_ident(table)} l
                WHERE l.source_system = %(system)s AND l.{_ident(parent_column)} = p.parent_id
                  AND (l.source_version < p.version
                       OR (l.source_version = p.version AND p.parent_id = ANY(%(deleted)s)))
                  AND l.interface_status <> 'DELETED'
                OFFSET 0
            ) c
            WHERE NOT EXISTS (
                SELECT 1 FROM unnest(%(kept)s::text[]) AS k(source_id) WHERE k.source_id = c.source_id
            )
        )
        UPDATE erp_staging.{_ident(table)} AS s
        SET interface_status = 'DELETED', source_version = d.version, sync_batch_id = %(batch_id)s,
            loaded_at = now()
        FROM doomed d
        WHERE s.source_system = %(system)s AND s.source_id = d.source_id
        RETURNING s.source_id, s.{_ident(parent_column)}
        """  # noqa: S608 -- _ident-checked names


def _count(mapped: MappedBatch, batch_id: int, outcomes: Mapping[str, _TableOutcome]) -> BatchResult:
    primary = mapped.tables.get(mapped.primary_table)
    record_ids = set() if primary is None else set(primary["source_id"].astype(str))
    head = outcomes.get(mapped.primary_table, _TableOutcome())
    new = head.inserted_ids & record_ids
    changed = set(head.updated_ids & record_ids)
    for table, outcome in outcomes.items():
        if table != mapped.primary_table:
            changed |= (outcome.touched_parents & record_ids) - new
    accepted = len(record_ids)
    return BatchResult(
        batch_id=batch_id,
        extracted=mapped.extracted,
        loaded_new=len(new),
        loaded_changed=len(changed),
        skipped_unchanged=accepted - len(new) - len(changed) + mapped.superseded,
        rejected=len(mapped.rejections),
        rows_by_table={table: outcomes[table].written if table in outcomes else 0 for table in mapped.tables},
    )


def insert_batch_row(
    cur: Any,
    key: BatchKey,
    result: BatchResult,
    cursor_before: datetime | None,
    cursor_after: datetime | None,
) -> None:
    cur.execute(
        """
        INSERT INTO erp_sync.sync_batches (batch_id, run_id, source_system, stream, window_start, window_end,
            input_sha256, extracted, loaded_new, loaded_changed, skipped_unchanged, rejected, rows_by_table,
            cursor_before, cursor_after)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (
            result.batch_id,
            key.run_id,
            key.source_system,
            key.stream,
            key.window_start,
            key.window_end,
            key.input_sha256,
            result.extracted,
            result.loaded_new,
            result.loaded_changed,
            result.skipped_unchanged,
            result.rejected,
            Json(result.rows_by_table),
            cursor_before,
            cursor_after,
        ),
    )


def _write_rejections(cur: Any, mapped: MappedBatch, batch_id: int) -> None:
    fresh = [r for r in mapped.rejections if r.rejection_id is None]
    again = [r for r in mapped.rejections if r.rejection_id is not None]
    if fresh:
        execute_values(
            cur,
            "INSERT INTO erp_sync.rejections (source_system, stream, source_id, reason_code, message,"
            " raw_payload, batch_id, deleted) VALUES %s",
            [
                (
                    mapped.source_system,
                    r.stream,
                    r.source_id,
                    r.reason_code,
                    r.message,
                    r.raw_payload,
                    batch_id,
                    r.deleted,
                )
                for r in fresh
            ],
        )
    for rejection in again:  # a replayed record rejected again keeps its row, with its new reason
        cur.execute(
            "UPDATE erp_sync.rejections SET reason_code = %s, message = %s, attempts = attempts + 1,"
            " batch_id = %s WHERE rejection_id = %s",
            (rejection.reason_code, rejection.message, batch_id, rejection.rejection_id),
        )


def _mark_replayed(
    cur: Any, replayed_ids: Sequence[int], rejections: Sequence[Rejection], batch_id: int
) -> None:
    failed_again = {r.rejection_id for r in rejections if r.rejection_id is not None}
    done = [int(i) for i in replayed_ids if i not in failed_again]
    if done:
        cur.execute(
            "UPDATE erp_sync.rejections SET status = 'REPLAYED', replayed_at = now(), replay_batch_id = %s,"
            " attempts = attempts + 1 WHERE rejection_id = ANY(%s) AND status = 'PENDING'",
            (batch_id, done),
        )


def _write_outbox(
    cur: Any, key: BatchKey, pages: Sequence[Page], batch_id: int, page_meta: Mapping[str, Any]
) -> None:
    outbox.insert_rows(
        cur,
        [
            (
                batch_id,
                key.run_id,
                key.source_system,
                page.stream,
                page.page_no,
                page.url,
                Json(dict(page_meta)),
                page.extracted,
                *page.compressed(OUTBOX_GZIP_LEVEL),
            )
            for page in pages
        ],
    )


# -- helpers -------------------------------------------------------------------------------------


def _find_committed(cur: Any, key: BatchKey) -> BatchResult | None:
    cur.execute(
        """
        SELECT batch_id, extracted, loaded_new, loaded_changed, skipped_unchanged, rejected, rows_by_table
        FROM erp_sync.sync_batches
        WHERE source_system = %s AND stream = %s AND input_sha256 = %s
          AND window_start IS NOT DISTINCT FROM %s AND window_end IS NOT DISTINCT FROM %s
        ORDER BY batch_id LIMIT 1
        """,
        (key.source_system, key.stream, key.input_sha256, key.window_start, key.window_end),
    )
    row = cur.fetchone()
    if row is None:
        return None
    batch_id, extracted, new, changed, unchanged, rejected, rows_by_table = row
    return BatchResult(
        batch_id,
        extracted,
        new,
        changed,
        unchanged,
        rejected,
        dict(rows_by_table or {}),
        already_committed=True,
    )


def _current_cursor(cur: Any, key: BatchKey) -> datetime | None:
    cur.execute(
        "SELECT cursor_value FROM erp_sync.stream_state WHERE source_system = %s AND stream = %s",
        (key.source_system, key.stream),
    )
    row = cur.fetchone()
    return row[0] if row else None


def _batch_lock_key(key: BatchKey) -> int:
    text = "|".join(
        [
            "erp_sync:batch",
            key.source_system,
            key.stream,
            str(key.window_start),
            str(key.window_end),
            key.input_sha256,
        ]
    )
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


def _tables_in_order(mapped: MappedBatch) -> list[str]:
    names = [t for t in mapped.tables if t == mapped.primary_table]
    return names + [t for t in mapped.tables if t != mapped.primary_table]


def _ledger_split(
    ledger: RedisLedger, mapped: MappedBatch, tables: Iterable[str]
) -> tuple[dict[str, pd.DataFrame], list[str], dict[str, Sequence[str]]]:
    """Per table, the rows the ledger does not hold with this row_sha256; the ledger keys it holds
    with another row_sha256 (the only ones to evict before they are rewritten); and, for the tables
    of which it holds no key at all, every row's key (all of them are candidates, in row order)."""
    splits = [(table, ledger.split(table, mapped.tables[table])) for table in tables]
    return (
        {table: split.candidates for table, split in splits},
        [key for _, split in splits for key in split.stale_keys],
        {table: split.keys for table, split in splits if split.none_known},
    )


def _check_batch(key: BatchKey, mapped: MappedBatch) -> None:
    if (key.source_system, key.stream) != (mapped.source_system, mapped.stream):
        raise ValueError(
            f"batch key {key.source_system}/{key.stream} does not match the mapped batch "
            f"{mapped.source_system}/{mapped.stream}"
        )
    for table, df in mapped.tables.items():
        _ident(table)
        if df.empty:
            continue
        missing = [c for c in CONTROL_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{table}: mapped rows lack control columns {missing}")
        if df.duplicated(["source_system", "source_id"]).any():
            raise ValueError(
                f"{table}: a key appears twice in one batch (map_pages must keep only the newest)"
            )


def _samples(mapped: MappedBatch, head: _TableOutcome, size: int) -> dict[str, list[dict[str, Any]]]:
    samples: dict[str, list[dict[str, Any]]] = {action: [] for action in ACTIONS}
    primary = mapped.tables.get(mapped.primary_table)
    if primary is not None and not primary.empty:
        for row in primary.to_dict("records"):
            sid = str(row["source_id"])
            action = "insert" if sid in head.inserted_ids else "update" if sid in head.updated_ids else "skip"
            if len(samples[action]) < size:
                samples[action].append({str(k): _jsonable(v) for k, v in row.items()})
    for rejection in mapped.rejections[:size]:
        samples["reject"].append(
            {
                "source_id": rejection.source_id,
                "reason_code": rejection.reason_code,
                "message": rejection.message,
            }
        )
    return samples


def _fields(result: BatchResult) -> dict[str, Any]:
    return {
        "batch_id": result.batch_id,
        "extracted": result.extracted,
        "loaded_new": result.loaded_new,
        "loaded_changed": result.loaded_changed,
        "skipped_unchanged": result.skipped_unchanged,
        "rejected": result.rejected,
        "rows_by_table": dict(result.rows_by_table),
        "already_committed": result.already_committed,
    }


def _ident(name: str) -> str:
    """A table or column name, checked: it is interpolated into SQL."""
    if not name or not name[0].isalpha() or not name.replace("_", "").isalnum() or name.lower() != name:
        raise ValueError(f"not a plain lower-case SQL identifier: {name!r}")
    return name


# -- COPY: exact CSV from a DataFrame, streamed ----------------------------------------------------


def _csv_field(value: Any) -> str:
    """One CSV field: NULL is an empty unquoted field, everything else is quoted (so '' stays '').
    The definition `_csv_lines` must match byte for byte (the tests hold it to this)."""
    text = _csv_text(value)
    return "" if text is None else '"' + text.replace('"', '""') + '"'


def _csv_text(value: Any) -> str | None:
    """A value's text before quoting, None for NULL; refuses what staging must never hold."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"refusing to load non-finite Decimal {value}")
        return format(value, "f")
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if not value.is_integer():
            raise TypeError(f"refusing to load float {value!r}: money and quantities must be Decimal")
        return str(int(value))
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"refusing to load naive datetime {value!r}")
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


# While a chunk is assembled, a NULL is this marker; every field is quoted, and the quoted marker is
# then cut out, leaving the empty unquoted field CSV reads as NULL. Postgres text cannot hold NUL,
# so no value can be mistaken for it (a value that holds one is refused by the count below).
_NULL = "\x00"
_QUOTED_NULL = '"\x00"'


def _csv_lines(df: pd.DataFrame, columns: Sequence[str], rows_per_chunk: int = 10_000) -> Iterator[bytes]:
    """The rows of `df` as CSV, `rows_per_chunk` lines per bytes object, exactly as `_csv_field`
    writes each value -- but built a column at a time and joined by `str.join`: row-by-row
    formatting was 54 s of a 100,000-invoice load, quoting field by field a third of what was left."""
    for start in range(0, len(df), rows_per_chunk):
        part = df.iloc[start : start + rows_per_chunk]
        texts = [_csv_texts(part[column]) for column in columns]
        nulls = sum(column_nulls for _, column_nulls in texts)
        fields = [_double_quotes(column_texts) for column_texts, _ in texts]
        chunk = '"' + '"\n"'.join(map('","'.join, zip(*fields, strict=True))) + '"\n'
        if chunk.count(_NULL) != nulls:
            raise ValueError("refusing to load a text value holding NUL (0x00), which Postgres cannot store")
        yield (chunk.replace(_QUOTED_NULL, "") if nulls else chunk).encode("utf-8")


def _double_quotes(texts: list[str]) -> list[str]:
    return [text.replace('"', '""') for text in texts] if '"' in "".join(texts) else texts


def _csv_texts(column: pd.Series) -> tuple[list[str], int]:
    """One column's unquoted texts (`_NULL` for NULL) and how many are NULL. The common types take a
    fast path; anything else goes value by value through `_csv_text`."""
    dtype = column.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        return [str(value) for value in column.tolist()], 0
    if isinstance(dtype, pd.StringDtype):
        return _strings(column.to_numpy(dtype=object, na_value=None).tolist())  # type: ignore[call-overload]
    if isinstance(dtype, pd.DatetimeTZDtype):
        found = _utc_timestamp_texts(column)
        if found is not None:
            return found
    if pd.api.types.is_object_dtype(dtype):
        values = column.tolist()
        kinds = {type(value) for value in values}
        if kinds <= {str, type(None)}:
            return _strings(values)
        if kinds <= {Decimal, type(None)}:
            return _decimals(values)
    return _general(column.tolist())


def _strings(values: list[str | None]) -> tuple[list[str], int]:
    nulls = values.count(None)
    return ([_NULL if value is None else value for value in values] if nulls else values), nulls  # type: ignore[return-value]


def _decimals(values: list[Decimal | None]) -> tuple[list[str], int]:
    """`str` is 3x faster than `format(value, "f")` and writes the same digits unless it picks
    scientific notation (an 'E'); non-finite values are the only others with letters."""
    nulls = values.count(None)
    texts = [_NULL if value is None else str(value) for value in values]
    joined = "".join(texts)
    if "N" in joined or "I" in joined:  # 'NaN', 'sNaN', 'Infinity'
        bad = next(value for value in values if value is not None and not value.is_finite())
        raise ValueError(f"refusing to load non-finite Decimal {bad}")
    if "E" in joined:
        texts = [_NULL if value is None else format(value, "f") for value in values]
    return texts, nulls


def _general(values: list[Any]) -> tuple[list[str], int]:
    texts = [_csv_text(value) for value in values]
    nulls = texts.count(None)
    return ([_NULL if text is None else text for text in texts] if nulls else texts), nulls  # type: ignore[return-value]


def _utc_timestamp_texts(column: pd.Series) -> tuple[list[str], int] | None:
    """A UTC timestamp column as `Timestamp.isoformat()` writes it, formatted by numpy; None when a
    value needs the general path (another zone, sub-microsecond digits, a year outside 1-9999)."""
    dtype = column.dtype
    if not isinstance(dtype, pd.DatetimeTZDtype) or str(dtype.tz) != "UTC":
        return None
    naive = column.dt.tz_localize(None).to_numpy()
    micros = naive.astype("datetime64[us]")
    present = ~np.isnat(naive)
    if (micros[present] != naive[present]).any():
        return None
    if present.any() and not (micros[present].min() >= _YEAR_1 and micros[present].max() < _YEAR_10000):
        return None
    nulls = len(micros) - int(present.sum())
    if not (micros[present].astype(np.int64) % 1_000_000).any():  # whole seconds: Unix timestamps
        texts = [value + "+00:00" for value in np.datetime_as_string(micros, unit="s").tolist()]
    else:
        texts = [
            (value[:-7] if value.endswith(".000000") else value) + "+00:00"
            for value in np.datetime_as_string(micros, unit="us").tolist()
        ]
    if nulls:
        texts = [text if ok else _NULL for text, ok in zip(texts, present.tolist(), strict=True)]
    return texts, nulls


_YEAR_1 = np.datetime64("0001-01-01T00:00:00", "us")
_YEAR_10000 = np.datetime64("10000-01-01T00:00:00", "us")


class _CsvStream:
    """A file-like view of CSV lines for `copy_expert`, which pulls it in chunks.

    The second pull is the `during_copy` crash point: by then a first chunk of rows was sent.
    """

    def __init__(self, lines: Iterator[bytes]) -> None:
        self._lines = lines
        self._buffer = bytearray()
        self._reads = 0

    def read(self, size: int = -1) -> bytes:
        self._reads += 1
        if self._reads == 2:
            crash_point("during_copy")
        while size < 0 or len(self._buffer) < size:
            line = next(self._lines, None)
            if line is None:
                break
            self._buffer += line
        take = len(self._buffer) if size < 0 else size
        chunk = bytes(self._buffer[:take])
        del self._buffer[:take]
        return chunk

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)


def _jsonable(value: Any) -> Any:
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Decimal | datetime):
        return str(value) if isinstance(value, Decimal) else value.isoformat()
    if isinstance(value, int | str | bool):
        return value
    return str(value)
