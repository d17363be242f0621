"""Restored tombstones that wait for their records, and their staging once the records are (ADR 0026).

A restore stages a repair's tombstone document again (`stage_tombstones`, ADR 0022). Restored before
the runs that staged its records, it finds no row to mark (`not_staged`). Those records wait:

    restoring the document (the batch's own transaction, `RestoredDeferrals`):
        each record not staged  -> a waiting row in erp_sync.deferred_tombstones, beside the document
                                   (erp_sync.deferred_tombstone_documents, V055)
        each record staged      -> its waiting row, if any, resolved with what the batch did to it
    the last step of every restore (`stage_waiting`), per stream under its load lock, per document
    oldest version first:
        the waiting records staged by then -> `stage_tombstones` with the document's version,
            evidence and report, and the same rules (live and not newer: tombstoned; lines retired;
            ledger evicted; `sync_batches` and evidence rows), their waiting rows resolved in the
            same transaction; the document goes to the outbox with the first batch that writes

So whichever order the runs are restored in, and however they are split across restores, each gone
record ends as the in-order restore leaves it. A crash anywhere leaves the waiting rows as they were
before the transaction, and the next restore (a retry, or any later one) stages them. A sync does not
look at waiting tombstones (its live read of a record is newer than the repair's lookups), and its load
path is unchanged; the last step takes each stream's load lock, so it never interleaves with a load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg2.extras import execute_values
from psycopg2.sql import SQL, Identifier

from erp_sync.core.batch import BatchKey
from erp_sync.core.tombstone_document import TombstoneDocument, decode_document, encode_document
from erp_sync.core.tombstones import tombstone_input_sha256
from erp_sync.store.ledger import RedisLedger
from erp_sync.store.locks import stream_lock
from erp_sync.store.tombstones import TombstoneBatch, TombstoneRequest, stage_tombstones

WAITING = "not_staged"  # the outcome that keeps a record waiting


@dataclass(frozen=True)
class BackedUpFile:
    """The verified backup a document was restored from (what its outbox row is pointed at)."""

    path: str
    sha256_gz: str
    sha256_raw: str


@dataclass(frozen=True)
class RestoredDocument:
    """A tombstone document as a restore read it: its original batch's window and its backup."""

    document: TombstoneDocument
    window_start: datetime | None
    window_end: datetime | None
    backup: BackedUpFile


@dataclass(frozen=True)
class RestoredDeferrals:
    """The `store.tombstones.Deferrals` of a batch staged from a restored document.

    `write_document`: the batch writes the document to the outbox (the restore of the document's own
    batch always does; a later batch of its waiting records only if no earlier one of this database
    did). `restore_run_id` is recorded with the records it defers."""

    restored: RestoredDocument
    restore_run_id: str
    write_document: bool = True

    @property
    def document_to_write(self) -> TombstoneDocument | None:
        return self.restored.document if self.write_document else None

    def settle(self, cur: Any, outcomes: Mapping[str, str], batch_id: int | None) -> bool:
        waiting = sorted(i for i, outcome in outcomes.items() if outcome == WAITING)
        resolved = {i: outcome for i, outcome in outcomes.items() if outcome != WAITING}
        in_outbox = batch_id is not None and self.write_document
        written = _defer(cur, self.restored, waiting, in_outbox, self.restore_run_id) if waiting else 0
        written += _resolve(cur, self.restored.document, resolved, batch_id)
        if in_outbox:
            written += _mark_in_outbox(cur, self.restored.document)
        return written > 0


def _document_key(document: TombstoneDocument) -> tuple[str, str, str]:
    return document.source_system, document.stream, document.input_sha256


def _defer(
    cur: Any, restored: RestoredDocument, ids: Sequence[str], in_outbox: bool, restore_run_id: str
) -> int:
    """The document and its records not staged; what waits already stays as it is. Rows written."""
    document, backup = restored.document, restored.backup
    cur.execute(
        "INSERT INTO erp_sync.deferred_tombstone_documents (source_system, stream, input_sha256, document,"
        " window_start, window_end, remote_path, backup_sha256, sha256, in_outbox, deferred_by)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (
            *_document_key(document), encode_document(document).decode("utf-8"), restored.window_start,
            restored.window_end, backup.path, backup.sha256_gz, backup.sha256_raw, in_outbox, restore_run_id,
        ),
    )  # fmt: skip
    written = int(cur.rowcount)
    rows = execute_values(
        cur,
        "INSERT INTO erp_sync.deferred_tombstones (source_system, stream, input_sha256, source_id)"
        " VALUES %s ON CONFLICT DO NOTHING RETURNING source_id",
        [(*_document_key(document), source_id) for source_id in ids],
        fetch=True,
    )
    return written + len(rows)


def _resolve(cur: Any, document: TombstoneDocument, outcomes: Mapping[str, str], batch_id: int | None) -> int:
    """Resolve the waiting rows of `document` among `outcomes` (the rest: none wait). Rows written."""
    if not outcomes:
        return 0
    ids = sorted(outcomes)
    cur.execute(
        "UPDATE erp_sync.deferred_tombstones d SET outcome = o.outcome, batch_id = %(batch_id)s,"
        " resolved_at = now() FROM unnest(%(ids)s::text[], %(outcomes)s::text[]) AS o(source_id, outcome)"
        " WHERE d.source_system = %(system)s AND d.stream = %(stream)s AND d.input_sha256 = %(digest)s"
        " AND d.source_id = o.source_id AND d.outcome IS NULL",
        {
            "batch_id": batch_id, "ids": ids, "outcomes": [outcomes[i] for i in ids],
            "system": document.source_system, "stream": document.stream, "digest": document.input_sha256,
        },
    )  # fmt: skip
    return int(cur.rowcount)


def _mark_in_outbox(cur: Any, document: TombstoneDocument) -> int:
    cur.execute(
        "UPDATE erp_sync.deferred_tombstone_documents SET in_outbox = true"
        " WHERE source_system = %s AND stream = %s AND input_sha256 = %s AND NOT in_outbox",
        _document_key(document),
    )
    return int(cur.rowcount)


# -- the last step of a restore --------------------------------------------------------------------


@dataclass(frozen=True)
class WaitingDocument:
    """A document with records still waiting, as stored."""

    restored: RestoredDocument
    in_outbox: bool
    waiting: tuple[str, ...]


@dataclass(frozen=True)
class StagedWaiting:
    """One batch of waiting records staged: what it did, and the backup its document's outbox row (if
    it wrote one) is the copy of."""

    staged: TombstoneBatch
    document_written_from: BackedUpFile | None


def stage_waiting(
    conn: Any,
    ledger: RedisLedger,
    *,
    run_id: str,
    next_batch_id: Callable[[], int],
    lock_timeout_s: float = 600.0,
) -> list[StagedWaiting]:
    """Stage every waiting tombstone whose record is staged now, one batch per document, under `run_id`.

    Per stream under its load lock, documents oldest version first (as an in-order restore meets
    them). A document none of whose waiting records is staged writes nothing.
    """
    done: list[StagedWaiting] = []
    for source_system, stream in waiting_streams(conn):
        with stream_lock(conn, source_system, stream, timeout_s=lock_timeout_s):
            for waiting in waiting_documents(conn, source_system, stream):
                staged_ids = _staged_among(conn, waiting.restored.document, waiting.waiting)
                if staged_ids:
                    batch_id = next_batch_id()
                    done.append(_stage(conn, ledger, waiting, staged_ids, run_id, batch_id, lock_timeout_s))
    return done


def _stage(
    conn: Any,
    ledger: RedisLedger,
    waiting: WaitingDocument,
    staged_ids: Sequence[str],
    run_id: str,
    batch_id: int,
    lock_timeout_s: float,
) -> StagedWaiting:
    document = waiting.restored.document
    staged = set(staged_ids)
    request = TombstoneRequest(
        key=waiting_batch_key(run_id, waiting.restored, staged_ids),
        primary_table=document.primary_table,
        child_tables=document.child_tables,
        gone=tuple(g for g in document.gone if g.source_id in staged),
        report_id=document.report_id,
        looked_up_at=document.looked_up_at,
    )
    deferrals = RestoredDeferrals(waiting.restored, run_id, write_document=not waiting.in_outbox)
    batch = stage_tombstones(
        conn, ledger, request, batch_id=batch_id, lock_timeout_s=lock_timeout_s, deferrals=deferrals
    )
    wrote_document = batch.result is not None and not batch.result.already_committed and not waiting.in_outbox
    return StagedWaiting(batch, waiting.restored.backup if wrote_document else None)


def waiting_batch_key(run_id: str, restored: RestoredDocument, ids: Sequence[str]) -> BatchKey:
    """The key of a batch of a document's waiting records: the restore's run, the original window, and
    a digest of the records (never the key of the document's own restored batch)."""
    document = restored.document
    records = tombstone_input_sha256(document.source_system, document.stream, document.primary_table, ids)
    tagged = hashlib.sha256(f"{run_id}|waiting|{document.input_sha256}|{records}".encode()).hexdigest()
    return BatchKey(
        run_id, document.source_system, document.stream, restored.window_start, restored.window_end, tagged
    )


def waiting_streams(conn: Any) -> list[tuple[str, str]]:
    """The streams with records waiting (read in its own transaction)."""
    return [(str(a), str(b)) for a, b in _read(conn, _WAITING_STREAMS, ())]


def waiting_count(conn: Any) -> int:
    """How many records wait for their record to be staged, in every stream."""
    [(count,)] = _read(conn, "SELECT count(*) FROM erp_sync.deferred_tombstones WHERE outcome IS NULL", ())
    return int(count)


def waiting_documents(conn: Any, source_system: str, stream: str) -> list[WaitingDocument]:
    """The stream's documents with records waiting, oldest version first, each with those records."""
    documents = [
        _waiting_document(row)
        for row in _read(
            conn,
            "SELECT d.document, d.window_start, d.window_end, d.remote_path, d.backup_sha256, d.sha256,"
            " d.in_outbox, array_agg(t.source_id ORDER BY t.source_id)"
            " FROM erp_sync.deferred_tombstone_documents d JOIN erp_sync.deferred_tombstones t"
            " USING (source_system, stream, input_sha256)"
            " WHERE d.source_system = %s AND d.stream = %s AND t.outcome IS NULL"
            " GROUP BY d.source_system, d.stream, d.input_sha256",
            (source_system, stream),
        )
    ]
    return sorted(documents, key=lambda w: (w.restored.document.version, w.restored.document.input_sha256))


def _waiting_document(row: Sequence[Any]) -> WaitingDocument:
    text, window_start, window_end, path, sha256_gz, sha256_raw, in_outbox, ids = row
    return WaitingDocument(
        RestoredDocument(
            decode_document(str(text).encode("utf-8"), str(path)),
            window_start,
            window_end,
            BackedUpFile(str(path), str(sha256_gz).strip(), str(sha256_raw).strip()),
        ),
        bool(in_outbox),
        tuple(str(i) for i in ids),
    )


def _staged_among(conn: Any, document: TombstoneDocument, ids: Sequence[str]) -> list[str]:
    """The records among `ids` that the document's table holds now (live or not: the batch decides)."""
    rows = _read(
        conn,
        SQL("SELECT source_id FROM erp_staging.{} WHERE source_system = %s AND source_id = ANY(%s)").format(
            Identifier(document.primary_table)
        ),
        (document.source_system, list(ids)),
    )
    return sorted(str(r[0]) for r in rows)


_WAITING_STREAMS = (
    "SELECT DISTINCT source_system, stream FROM erp_sync.deferred_tombstones WHERE outcome IS NULL"
    " ORDER BY source_system, stream"
)


def _read(conn: Any, statement: Any, args: Any) -> list[tuple[Any, ...]]:
    """Rows of one read, in its own transaction (ended here)."""
    try:
        with conn.cursor() as cur:
            cur.execute(statement, args)
            return list(cur.fetchall())
    finally:
        conn.rollback()
