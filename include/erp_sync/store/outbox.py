"""The transactional outbox of raw extract pages (`erp_sync.outbox`), seen from the backup side.

The loader writes a batch's pages here in the batch's own transaction; the backup drains them to
SFTP and marks each row only after the remote copy was read back and its hash matched. Rows are
never deleted here. A backed-up row keeps its content for `keep_days` after its backup was verified
(so a lost SFTP server can be refilled from Postgres meanwhile), then `prune_contents` clears it;
the row keeps what a later manifest of its run must say about the page (path, hashes, sizes).

Functions take a DB-API (psycopg2) connection and do not commit, except `mark_backed_up`'s caller
decides when: the drain commits once per run, after the run's manifest verified.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg2.extras import execute_values

# Backed up more than `keep_days` (the one parameter) ago, content still stored.
_PRUNABLE = "content_gzip IS NOT NULL AND backed_up_at < now() - make_interval(days => %s)"
_ROW_COLUMNS = (
    "outbox_id, batch_id, run_id, source_system, stream, page_no, url, page_meta, record_count, "
    "sha256, created_at, backed_up_at, remote_path, backup_sha256, backup_size, raw_size, "
    "content_gzip IS NULL"
)


@dataclass(frozen=True)
class OutboxRow:
    """One stored page, without its (possibly large) content."""

    outbox_id: int
    batch_id: int
    run_id: str
    source_system: str
    stream: str
    page_no: int
    url: str
    page_meta: dict[str, Any]
    record_count: int
    sha256: str  # of the uncompressed page body
    created_at: datetime
    backed_up_at: datetime | None
    remote_path: str | None
    backup_sha256: str | None
    backup_size: int | None = None  # bytes of the verified gzip (recorded since V031)
    raw_size: int | None = None  # bytes of the raw page (recorded since V031)
    pruned: bool = False  # its content was cleared after its backup (`prune_contents`)

    @property
    def pending(self) -> bool:
        return self.backed_up_at is None


@dataclass(frozen=True)
class BackupMark:
    """What the drain proved about one row: it sits at `remote_path` and hashes to `backup_sha256`."""

    outbox_id: int
    remote_path: str
    backup_sha256: str
    backup_size: int
    raw_size: int


@dataclass(frozen=True)
class PruneResult:
    pages: int = 0
    bytes: int = 0  # of gzip content cleared

    def as_dict(self) -> dict[str, int]:
        return {"pages": self.pages, "bytes": self.bytes}


@dataclass(frozen=True)
class StreamBacklog:
    """Pages still waiting for a verified backup, per stream (the UI's ops panel)."""

    source_system: str
    stream: str
    pending_pages: int
    pending_records: int
    oldest_created_at: datetime
    oldest_age_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "source_system": self.source_system,
            "stream": self.stream,
            "pending_pages": self.pending_pages,
            "pending_records": self.pending_records,
            "oldest_created_at": self.oldest_created_at.isoformat(),
            "oldest_age_seconds": self.oldest_age_seconds,
        }


def _row(values: Sequence[Any]) -> OutboxRow:
    return OutboxRow(
        outbox_id=int(values[0]),
        batch_id=int(values[1]),
        run_id=values[2],
        source_system=values[3],
        stream=values[4],
        page_no=int(values[5]),
        url=values[6],
        page_meta=dict(values[7] or {}),
        record_count=int(values[8]),
        sha256=values[9].strip(),
        created_at=values[10],
        backed_up_at=values[11],
        remote_path=values[12],
        backup_sha256=values[13].strip() if values[13] else None,
        backup_size=values[14],
        raw_size=values[15],
        pruned=bool(values[16]),
    )


def insert_rows(cur: Any, rows: Sequence[tuple[Any, ...]]) -> None:
    """New outbox rows, each `(batch_id, run_id, source_system, stream, page_no, url, page_meta,
    record_count, content_gzip, sha256)`, in the caller's transaction (the batch's own)."""
    if rows:
        execute_values(
            cur,
            "INSERT INTO erp_sync.outbox (batch_id, run_id, source_system, stream, page_no, url, page_meta,"
            " record_count, content_gzip, sha256) VALUES %s",
            rows,
        )


def pending_run_ids(conn: Any, limit: int | None = None) -> list[str]:
    """Runs with at least one page not yet backed up, oldest first."""
    sql = (
        "SELECT run_id FROM erp_sync.outbox WHERE backed_up_at IS NULL "
        "GROUP BY run_id ORDER BY min(outbox_id)"
    )
    params: tuple[Any, ...] = ()
    if limit is not None:
        sql += " LIMIT %s"
        params = (limit,)
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return [r[0] for r in cur.fetchall()]


def rows_for_run(conn: Any, run_id: str) -> list[OutboxRow]:
    """Every page of a run (backed up or not), in batch and page order: what its manifest lists."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_ROW_COLUMNS} FROM erp_sync.outbox WHERE run_id = %s "  # noqa: S608
            "ORDER BY batch_id, page_no, outbox_id",
            (run_id,),
        )
        return [_row(r) for r in cur.fetchall()]


def read_content(conn: Any, outbox_id: int) -> bytes | None:
    """The stored gzip of one page; None once `prune_contents` cleared it."""
    with conn.cursor() as cur:
        cur.execute("SELECT content_gzip FROM erp_sync.outbox WHERE outbox_id = %s", (outbox_id,))
        found = cur.fetchone()
    if found is None:
        raise LookupError(f"outbox row {outbox_id} does not exist")
    return None if found[0] is None else bytes(found[0])


def prune_contents(conn: Any, keep_days: int, *, limit: int = 50_000) -> PruneResult:
    """Clear the content of pages whose backup was verified more than `keep_days` ago (at most
    `limit` per call, oldest first); the caller commits. Pages marked before V031, which lack their
    sizes, get them first: the next manifest of their run must still list them."""
    if keep_days < 1:
        raise ValueError(f"keep_days must be at least 1, not {keep_days}")
    _record_missing_sizes(conn, keep_days, limit)
    with conn.cursor() as cur:
        cur.execute(
            "WITH doomed AS ("  # noqa: S608 -- _PRUNABLE is a constant
            f" SELECT outbox_id, octet_length(content_gzip) AS size FROM erp_sync.outbox WHERE {_PRUNABLE}"
            " AND backup_size IS NOT NULL AND raw_size IS NOT NULL"
            " ORDER BY backed_up_at LIMIT %s FOR UPDATE)"
            " UPDATE erp_sync.outbox o SET content_gzip = NULL, content_pruned_at = now()"
            " FROM doomed WHERE o.outbox_id = doomed.outbox_id RETURNING doomed.size",
            (keep_days, limit),
        )
        sizes = [int(r[0]) for r in cur.fetchall()]
    return PruneResult(len(sizes), sum(sizes))


def _record_missing_sizes(conn: Any, keep_days: int, limit: int, chunk: int = 200) -> None:
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT outbox_id FROM erp_sync.outbox WHERE {_PRUNABLE}"  # noqa: S608 -- a constant
            " AND (backup_size IS NULL OR raw_size IS NULL) ORDER BY backed_up_at LIMIT %s",
            (keep_days, limit),
        )
        ids = [int(r[0]) for r in cur.fetchall()]
        for start in range(0, len(ids), chunk):  # a few hundred pages' content in memory at a time
            cur.execute(
                "SELECT outbox_id, content_gzip FROM erp_sync.outbox WHERE outbox_id = ANY(%s)",
                (ids[start : start + chunk],),
            )
            sizes = [(i, len(gz), len(gzip.decompress(bytes(gz)))) for i, gz in cur.fetchall()]
            execute_values(
                cur,
                "UPDATE erp_sync.outbox o SET backup_size = v.backup_size, raw_size = v.raw_size"
                " FROM (VALUES %s) AS v (outbox_id, backup_size, raw_size) WHERE o.outbox_id = v.outbox_id",
                sizes,
            )


def mark_backed_up(conn: Any, marks: Iterable[BackupMark]) -> int:
    """Record verified remote copies; rows already marked keep their first mark (and so does a row
    marked twice in `marks`). One statement per 1,000 marks. Does not commit."""
    first: dict[int, BackupMark] = {}
    for mark in marks:
        first.setdefault(mark.outbox_id, mark)
    rows = [(m.outbox_id, m.remote_path, m.backup_sha256, m.backup_size, m.raw_size) for m in first.values()]
    return _update_from_values(
        conn,
        "UPDATE erp_sync.outbox o SET backed_up_at = now(), remote_path = v.remote_path,"
        " backup_sha256 = v.backup_sha256, backup_size = v.backup_size, raw_size = v.raw_size"
        " FROM (VALUES %s) AS v(outbox_id, remote_path, backup_sha256, backup_size, raw_size)"
        " WHERE o.outbox_id = v.outbox_id AND o.backed_up_at IS NULL RETURNING o.outbox_id",
        rows,
        "(%s::bigint, %s::text, %s::text, %s::integer, %s::integer)",
    )


def mark_restored(conn: Any, batch_id: int, pages: Iterable[tuple[int, str, str, str]]) -> int:
    """A restored batch's pages, re-written to the outbox by the loader, are the very files the
    restore just verified on the server: point them there instead of uploading them again.

    `pages` holds (page_no, remote_path, sha256 of the gzip, sha256 of the raw page); a row is marked
    only when its own raw SHA-256 matches. Does not commit.
    """
    rows = [
        (batch_id, page_no, remote_path, backup_sha256, raw_sha256)
        for page_no, remote_path, backup_sha256, raw_sha256 in pages
    ]
    return _update_from_values(
        conn,
        "UPDATE erp_sync.outbox o SET backed_up_at = now(), remote_path = v.remote_path,"
        " backup_sha256 = v.backup_sha256"
        " FROM (VALUES %s) AS v(batch_id, page_no, remote_path, backup_sha256, sha256)"
        " WHERE o.batch_id = v.batch_id AND o.page_no = v.page_no AND o.sha256 = v.sha256"
        " AND o.backed_up_at IS NULL RETURNING o.outbox_id",
        rows,
        "(%s::bigint, %s::integer, %s::text, %s::text, %s::char(64))",
    )


def _update_from_values(conn: Any, statement: str, rows: Sequence[tuple[Any, ...]], template: str) -> int:
    """Run an `UPDATE ... FROM (VALUES %s) ... RETURNING` over `rows`; how many rows it updated."""
    if not rows:
        return 0
    with conn.cursor() as cur:
        updated = execute_values(cur, statement, rows, template=template, page_size=1000, fetch=True)
    return len(updated)


def unverified_run_ids(conn: Any) -> set[str]:
    """Runs the outbox still holds without a verified backup: retention must not touch their files."""
    with conn.cursor() as cur:
        cur.execute("SELECT DISTINCT run_id FROM erp_sync.outbox WHERE backed_up_at IS NULL")
        return {r[0] for r in cur.fetchall()}


def pending_summary(conn: Any) -> list[StreamBacklog]:
    """Per stream: how many pages wait for a backup and how old the oldest one is (by the DB clock)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT source_system, stream, count(*), coalesce(sum(record_count), 0), min(created_at), "
            "extract(epoch FROM now() - min(created_at)) "
            "FROM erp_sync.outbox WHERE backed_up_at IS NULL "
            "GROUP BY source_system, stream ORDER BY source_system, stream"
        )
        return [
            StreamBacklog(
                source_system=r[0],
                stream=r[1],
                pending_pages=int(r[2]),
                pending_records=int(r[3]),
                oldest_created_at=r[4],
                oldest_age_seconds=max(0.0, float(r[5])),
            )
            for r in cur.fetchall()
        ]


def batches_for(conn: Any, batch_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The `sync_batches` rows a manifest describes: windows, counts and the cursor before/after."""
    if not batch_ids:
        return []
    with conn.cursor() as cur:
        cur.execute(
            "SELECT batch_id, run_id, source_system, stream, window_start, window_end, input_sha256, "
            "extracted, loaded_new, loaded_changed, skipped_unchanged, rejected, cursor_before, "
            "cursor_after, committed_at FROM erp_sync.sync_batches "
            "WHERE batch_id = ANY(%s) ORDER BY batch_id",
            (list(batch_ids),),
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
