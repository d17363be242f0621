"""Tombstones the repair stages for records the SaaS confirms gone (ADR 0020), exactly once.

    committed already? (same source_system, stream, window = the report's period, and an
        input_sha256 over the gone ids: `core.tombstones.tombstone_input_sha256`) -> its recorded result
    ONE transaction, as role erp_loader:
        the primary rows still live and not newer than the lookups: interface_status 'DELETED',
            row_sha256 = tombstone_sha256(row_sha256), source_version = when the lookups began
        their live child rows (invoice lines): retired as the loader retires removed children
        the ledger entries of every row written: evicted (before COMMIT)
        the sync_batches row, each record's evidence (erp_sync.repair_tombstones), and the batch's
            document in the outbox (`core.tombstone_document`: what a restore stages again, ADR 0022)
    COMMIT

A restore stages a backed-up document through the same function (ADR 0022), with `deferrals`: the
records it finds `not_staged` wait for the runs that stage them, in the same transaction, and a later
batch of those records resolves them (`store.deferred_tombstones`, ADR 0026).

What a deletion event stages (ADR 0015) is staged here too: the same tombstone hash, `DELETED` header
and lines, a batch id an ERP importer reads to reverse them. Rows are UPDATEd, never deleted (ADR 0004).

The ledger is evicted and never written: as after the loader's upsert, and as after a rebuild from
Postgres, it holds no entry for a `DELETED` row. Evicting before COMMIT leaves no stale entry whatever
point a crash hits (after COMMIT there is nothing left to write); a missing entry costs one no-op
upsert later. A live read of the record after this (a full refresh with a later version, if the
record was not gone after all) is therefore never skipped, and the upsert stages it live again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from psycopg2.extras import Json, execute_values
from psycopg2.sql import SQL, Identifier

from erp_sync.core.batch import BatchKey, BatchResult, outbox_content
from erp_sync.core.hashing import tombstone_sha256
from erp_sync.core.tombstone_document import TOMBSTONE_MODE, TombstoneDocument, encode_document
from erp_sync.core.tombstones import GoneRecord, distinct_gone
from erp_sync.store import outbox
from erp_sync.store.faults import crash_point
from erp_sync.store.ledger import RedisLedger
from erp_sync.store.loader import (
    CHILD_PARENT_COLUMN,
    OUTBOX_GZIP_LEVEL,
    find_committed,
    insert_batch_row,
    loader_transaction,
)
from erp_sync.store.locks import stream_lock
from erp_sync.store.state import get_cursor

OUTCOMES = ("tombstoned", "already_deleted", "newer_version", "not_staged")


@dataclass(frozen=True)
class TombstoneRequest:
    """One stream's tombstones: its tables, the gone records, the report and when it was asked."""

    key: BatchKey
    primary_table: str
    child_tables: Sequence[str]
    gone: Sequence[GoneRecord]
    report_id: int
    looked_up_at: datetime

    @property
    def version(self) -> int:
        """The tombstones' source_version: when the lookups began, in unix seconds (a row a sync
        staged later than that is newer, and stays as it is)."""
        return int(self.looked_up_at.timestamp())

    def document(self) -> TombstoneDocument:
        """What the batch writes to the outbox, for a restore to stage it again."""
        return TombstoneDocument(
            source_system=self.key.source_system,
            stream=self.key.stream,
            primary_table=self.primary_table,
            child_tables=tuple(self.child_tables),
            report_id=self.report_id,
            looked_up_at=self.looked_up_at,
            gone=tuple(self.gone),
        )

    @classmethod
    def from_document(cls, key: BatchKey, document: TombstoneDocument) -> TombstoneRequest:
        """The request a restore stages under `key`: the same records, evidence, report and version."""
        if (key.source_system, key.stream) != (document.source_system, document.stream):
            raise ValueError(
                f"batch key {key.source_system}/{key.stream} is not the document's "
                f"{document.source_system}/{document.stream}"
            )
        return cls(
            key=key,
            primary_table=document.primary_table,
            child_tables=document.child_tables,
            gone=document.gone,
            report_id=document.report_id,
            looked_up_at=document.looked_up_at,
        )


class Deferrals(Protocol):
    """What a batch staged from a restored document does, in its own transaction, with the records it
    cannot stage yet and with those that waited for it (`store.deferred_tombstones`, ADR 0026)."""

    @property
    def document_to_write(self) -> TombstoneDocument | None:
        """The document the batch writes to the outbox, if it writes one."""

    def settle(self, cur: Any, outcomes: Mapping[str, str], batch_id: int | None) -> bool:
        """Record what became of each record (`batch_id`: None when no batch is written); whether
        anything was written."""


@dataclass(frozen=True)
class TombstoneBatch:
    """What the batch did: its record (None when no gone record was live: nothing was written), and
    each gone record's outcome (see `OUTCOMES`)."""

    result: BatchResult | None
    outcomes: Mapping[str, str] = field(default_factory=dict)  # source_id -> outcome

    @property
    def tombstoned(self) -> list[str]:
        return sorted(i for i, outcome in self.outcomes.items() if outcome == "tombstoned")


def stage_tombstones(
    conn: Any,
    ledger: RedisLedger,
    request: TombstoneRequest,
    *,
    batch_id: int,
    lock_timeout_s: float = 600.0,
    deferrals: Deferrals | None = None,
) -> TombstoneBatch:
    """Stage `request.gone` as tombstones in one recorded batch; a retry returns the recorded batch.

    Takes the stream's load lock (a caller already holding it on `conn` passes straight through), so
    no sync of the stream loads between the reads and the writes. A restore passes `deferrals`: they
    decide the document the batch writes, and keep the records not staged yet waiting (ADR 0026), in
    the same transaction, which then commits even when no record is tombstoned.
    """
    key = request.key
    with stream_lock(conn, key.source_system, key.stream, timeout_s=lock_timeout_s):
        recorded = find_committed(conn, key)
        if recorded is not None:
            return TombstoneBatch(recorded, recorded_outcomes(conn, recorded.batch_id))
        return _transact(conn, ledger, request, batch_id, deferrals)


def recorded_outcomes(conn: Any, batch_id: int) -> dict[str, str]:
    """The outcomes a committed tombstone batch recorded, by source id."""
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT source_id, outcome FROM erp_sync.repair_tombstones WHERE batch_id = %s", (batch_id,)
            )
            return {str(source_id): str(outcome) for source_id, outcome in cur.fetchall()}
    finally:
        conn.rollback()


def _transact(
    conn: Any, ledger: RedisLedger, request: TombstoneRequest, batch_id: int, deferrals: Deferrals | None
) -> TombstoneBatch:
    key = request.key
    ids = sorted({g.source_id for g in request.gone})
    with loader_transaction(conn) as cur:
        stored = _stored_rows(cur, request.primary_table, key.source_system, ids)
        outcomes = _outcomes(ids, stored, request.version)
        doomed = {i: tombstone_sha256(stored[i][0]) for i, o in outcomes.items() if o == "tombstoned"}
        if not doomed:  # every one is deleted already (say, by a delta): no batch to record
            if deferrals is None or not deferrals.settle(cur, outcomes, None):
                conn.rollback()
            return TombstoneBatch(None, outcomes)
        written = _tombstone_primary(cur, request, doomed, batch_id)
        retired = {
            table: _retire_children(cur, table, key.source_system, written, request.version, batch_id)
            for table in request.child_tables
            if table in CHILD_PARENT_COLUMN
        }
        ledger.evict(request.primary_table, written, source_system=key.source_system)
        for table, children in retired.items():
            ledger.evict(table, children, source_system=key.source_system)
        result = BatchResult(
            batch_id=batch_id,
            extracted=len(ids),
            loaded_new=0,
            loaded_changed=len(written),
            skipped_unchanged=len(ids) - len(written),
            rejected=0,
            rows_by_table={request.primary_table: len(written)}
            | {table: len(children) for table, children in retired.items()},
        )
        result.check_conservation()
        cursor = get_cursor(conn, key.source_system, key.stream)
        insert_batch_row(cur, key, result, cursor_before=cursor, cursor_after=None)
        _insert_evidence(cur, request, batch_id, outcomes)
        document = request.document() if deferrals is None else deferrals.document_to_write
        if document is not None:
            _write_document(cur, key.run_id, document, batch_id)
        if deferrals is not None:
            deferrals.settle(cur, outcomes, batch_id)
        crash_point("before_commit")
    return TombstoneBatch(result, outcomes)


def _stored_rows(
    cur: Any, table: str, source_system: str, ids: Sequence[str]
) -> dict[str, tuple[str, int, str]]:
    """source_id -> (row_sha256, source_version, interface_status), locked for the update."""
    cur.execute(
        SQL(
            "SELECT source_id, row_sha256, source_version, interface_status FROM erp_staging.{}"
            " WHERE source_system = %s AND source_id = ANY(%s) FOR UPDATE"
        ).format(Identifier(table)),
        (source_system, list(ids)),
    )
    return {str(r[0]): (str(r[1]), int(r[2]), str(r[3])) for r in cur.fetchall()}


def _outcomes(ids: Sequence[str], stored: Mapping[str, tuple[str, int, str]], version: int) -> dict[str, str]:
    """What happens to each gone record: a live row no newer than the lookups becomes a tombstone."""
    outcomes: dict[str, str] = {}
    for source_id in ids:
        row = stored.get(source_id)
        if row is None:
            outcomes[source_id] = "not_staged"  # an ERP-side SQL over posted tables named it
        elif row[2] == "DELETED":
            outcomes[source_id] = "already_deleted"  # a delta read its deletion event meanwhile
        elif row[1] > version:
            outcomes[source_id] = "newer_version"  # staged live after the SaaS answered
        else:
            outcomes[source_id] = "tombstoned"
    return outcomes


def _tombstone_primary(
    cur: Any, request: TombstoneRequest, shas: Mapping[str, str], batch_id: int
) -> list[str]:
    if not shas:
        return []
    ids = sorted(shas)
    cur.execute(
        SQL(
            "UPDATE erp_staging.{} AS s SET interface_status = 'DELETED', row_sha256 = t.sha,"
            " source_version = %(version)s, sync_batch_id = %(batch_id)s, loaded_at = now()"
            " FROM unnest(%(ids)s::text[], %(shas)s::text[]) AS t(source_id, sha)"
            " WHERE s.source_system = %(system)s AND s.source_id = t.source_id"
            " AND s.interface_status <> 'DELETED' AND s.source_version <= %(version)s"
            " RETURNING s.source_id"
        ).format(Identifier(request.primary_table)),
        {
            "version": request.version,
            "batch_id": batch_id,
            "ids": ids,
            "shas": [shas[i] for i in ids],
            "system": request.key.source_system,
        },
    )
    return sorted(str(r[0]) for r in cur.fetchall())


def _retire_children(
    cur: Any, table: str, source_system: str, parents: Sequence[str], version: int, batch_id: int
) -> list[str]:
    """Mark the live child rows of the tombstoned records `DELETED` at the tombstone's version, as the
    loader's retire step does for a tombstone from a deletion event (reached through the
    `(source_system, <parent column>)` index)."""
    if not parents:
        return []
    cur.execute(
        SQL(
            "UPDATE erp_staging.{} SET interface_status = 'DELETED', source_version = %(version)s,"
            " sync_batch_id = %(batch_id)s, loaded_at = now()"
            " WHERE source_system = %(system)s AND {} = ANY(%(parents)s)"
            " AND interface_status <> 'DELETED' AND source_version <= %(version)s"
            " RETURNING source_id"
        ).format(Identifier(table), Identifier(CHILD_PARENT_COLUMN[table])),
        {"version": version, "batch_id": batch_id, "system": source_system, "parents": list(parents)},
    )
    return sorted(str(r[0]) for r in cur.fetchall())


def _insert_evidence(cur: Any, request: TombstoneRequest, batch_id: int, outcomes: Mapping[str, str]) -> None:
    execute_values(
        cur,
        "INSERT INTO erp_sync.repair_tombstones (batch_id, source_system, stream, source_id, report_id,"
        " evidence, api_message, looked_up_at, outcome) VALUES %s",
        [
            (
                batch_id, request.key.source_system, request.key.stream, g.source_id, request.report_id,
                g.evidence.value, g.api_message, request.looked_up_at, outcomes[g.source_id],
            )
            for g in distinct_gone(request.gone)
        ],
    )  # fmt: skip


def _write_document(cur: Any, run_id: str, document: TombstoneDocument, batch_id: int) -> None:
    """The batch's one outbox row: the drain backs it up with the pages (ADR 0022). Its URL names the
    report, as no page of the SaaS is behind it."""
    raw = encode_document(document)
    outbox.insert_rows(
        cur,
        [(
            batch_id, run_id, document.source_system, document.stream, 1,
            f"erp-sync:repair-tombstones?report_id={document.report_id}", Json({"mode": TOMBSTONE_MODE}),
            document.record_count, *outbox_content(raw, OUTBOX_GZIP_LEVEL),
        )],
    )  # fmt: skip
