"""Drift reports in Postgres: write one (immutable, versioned per period and streams), read them back.

A report is a row of `erp_sync.drift_reports` with its totals and items. Its `content_sha256` is the
SHA-256 of the report's canonical JSON lines (`content_lines`): one line for the header figures,
then one per total and one per item in `item_no` order, each `orjson` with sorted keys, amounts as
strings with three decimals. `verify_report` recomputes it from the stored rows, so anyone can check
that a report has not been altered. Identity (report_id, version, run ids, timestamps, backup path)
is not part of the content: two runs that found the same drift have the same hash.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pandas as pd
from psycopg2.sql import SQL, Composable, Identifier

from erp_sync.core.reconcile import ITEM_COLUMNS, TotalLine, from_scaled

ITEM_FETCH = 5_000
COPY_CHUNK = 50_000

TOTAL_FIELDS = (
    "stream",
    "currency_code",
    "status",
    "metric",
    "saas_count",
    "erp_count",
    "saas_sum",
    "erp_sum",
    "difference",
    "tolerance_abs",
    "tolerance_rel",
    "within_tolerance",
)
ITEM_FIELDS = ("item_no", *ITEM_COLUMNS)
HASHED_HEADER_FIELDS = (
    "period_start",
    "period_end",
    "streams",
    "status",
    "item_count",
    "summary",
    "conservation",
    "tolerances",
    "invariants",
)


@dataclass(frozen=True)
class ReportHeader:
    """Everything about a report except its totals and items."""

    period_start: datetime
    period_end: datetime
    streams: Sequence[str]
    status: str  # OK | DRIFT | ERROR
    summary: Mapping[str, Any] = field(default_factory=dict)
    conservation: Mapping[str, Any] = field(default_factory=dict)
    tolerances: Mapping[str, Any] = field(default_factory=dict)
    invariants: Mapping[str, Any] = field(default_factory=dict)
    sources: Mapping[str, Any] = field(default_factory=dict)
    dag_id: str | None = None
    run_id: str | None = None
    repair_command: str | None = None
    error_message: str | None = None
    repair_of_report_id: int | None = None


@dataclass(frozen=True)
class StoredReport:
    report_id: int
    version: int
    content_sha256: str
    item_count: int


# ---------------------------------------------------------------------------------------------
# Canonical content


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _money(value: Any) -> str | None:
    if value is None or value is pd.NA:
        return None
    return f"{Decimal(value):.3f}"


def _int(value: Any) -> int | None:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return int(value)


def _text(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return str(value).strip()


def header_record(header: ReportHeader, item_count: int) -> dict[str, Any]:
    return {
        "period_start": _ts(header.period_start),
        "period_end": _ts(header.period_end),
        "streams": sorted(header.streams),
        "status": header.status,
        "item_count": item_count,
        "summary": dict(header.summary),
        "conservation": dict(header.conservation),
        "tolerances": dict(header.tolerances),
        "invariants": dict(header.invariants),
    }


def total_record(line: TotalLine | Mapping[str, Any]) -> dict[str, Any]:
    raw = line if isinstance(line, Mapping) else line.__dict__
    return {
        "stream": raw["stream"],
        "currency_code": _text(raw["currency_code"]),
        "status": raw["status"],
        "metric": raw["metric"],
        "saas_count": int(raw["saas_count"]),
        "erp_count": int(raw["erp_count"]),
        "saas_sum": _money(raw["saas_sum"]),
        "erp_sum": _money(raw["erp_sum"]),
        "difference": _money(raw["difference"]),
        "tolerance_abs": _money(raw["tolerance_abs"]),
        "tolerance_rel": f"{Decimal(raw['tolerance_rel']).normalize():f}",
        "within_tolerance": bool(raw["within_tolerance"]),
    }


def item_record(raw: Mapping[str, Any]) -> dict[str, Any]:
    """An item as stored and hashed. Amounts come in as Decimals (from the DB) or, from the reconcile
    core, as int thousandths under the key names with `_scaled` semantics (see `items_to_records`)."""
    return {
        "item_no": int(raw["item_no"]),
        "stream": raw["stream"],
        "source_id": raw["source_id"],
        "kind": raw["kind"],
        "metric": _text(raw.get("metric")),
        "currency_code": _text(raw.get("currency_code")),
        "erp_currency_code": _text(raw.get("erp_currency_code")),
        "saas_amount": _money(raw.get("saas_amount")),
        "erp_amount": _money(raw.get("erp_amount")),
        "saas_status": _text(raw.get("saas_status")),
        "erp_status": _text(raw.get("erp_status")),
        "difference": _money(raw.get("difference")),
        "erp_batch_id": _int(raw.get("erp_batch_id")),
        "exceeds_tolerance": bool(raw.get("exceeds_tolerance", True)),
    }


def items_to_records(items: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """The reconcile core's items (int thousandths) as item records numbered from 1."""
    columns = {col: items[col].tolist() for col in ITEM_COLUMNS}
    for i in range(len(items)):
        raw = {col: columns[col][i] for col in ITEM_COLUMNS}
        for col in ("saas_amount", "erp_amount", "difference"):
            value = _int(raw[col])
            raw[col] = None if value is None else from_scaled(value)
        raw["item_no"] = i + 1
        yield item_record(raw)


def _line(record: Mapping[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS) + b"\n"


def content_lines(
    header: Mapping[str, Any], totals: Iterable[Mapping[str, Any]], items: Iterable[Mapping[str, Any]]
) -> Iterator[bytes]:
    """The canonical JSON lines the content hash covers (header, totals, items)."""
    yield _line({key: header[key] for key in HASHED_HEADER_FIELDS})
    for total in totals:
        yield _line(total)
    for item in items:
        yield _line(item)


def content_sha256(
    header: Mapping[str, Any], totals: Iterable[Mapping[str, Any]], items: Iterable[Mapping[str, Any]]
) -> str:
    digest = hashlib.sha256()
    for line in content_lines(header, totals, items):
        digest.update(line)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Conservation


def conservation_for_period(
    conn: Any, period_start: datetime, period_end: datetime, streams_by_system: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """Sums of the sync_batches committed in the period, per stream, and whether each adds up.

    `streams_by_system` is `{source_system: [stream, ...]}`: a run that reconciles streams of several
    source systems counts each stream's batches under its own system.
    """
    pairs = [(system, stream) for system, names in streams_by_system.items() for stream in names]
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT stream, count(*), coalesce(min(batch_id), 0), coalesce(max(batch_id), 0),
                   coalesce(sum(extracted), 0), coalesce(sum(loaded_new), 0),
                   coalesce(sum(loaded_changed), 0), coalesce(sum(skipped_unchanged), 0),
                   coalesce(sum(rejected), 0)
              FROM erp_sync.sync_batches
             WHERE (source_system, stream) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
               AND committed_at >= %s AND committed_at < %s
             GROUP BY stream ORDER BY stream
            """,
            ([system for system, _ in pairs], [stream for _, stream in pairs], period_start, period_end),
        )
        rows = cur.fetchall()
    per_stream: dict[str, Any] = {}
    for stream, batches, first_id, last_id, extracted, new, changed, unchanged, rejected in rows:
        per_stream[stream] = {
            "batches": int(batches),
            "first_batch_id": int(first_id),
            "last_batch_id": int(last_id),
            "extracted": int(extracted),
            "loaded_new": int(new),
            "loaded_changed": int(changed),
            "skipped_unchanged": int(unchanged),
            "rejected": int(rejected),
            "balanced": int(extracted) == int(new) + int(changed) + int(unchanged) + int(rejected),
        }
    return {
        "basis": "sync_batches committed in the period",
        "streams": per_stream,
        "balanced": all(s["balanced"] for s in per_stream.values()),
    }


# ---------------------------------------------------------------------------------------------
# Writing


def _next_version(cur: Any, period_start: datetime, period_end: datetime, streams: list[str]) -> int:
    lock_key = f"erp_sync.drift_reports|{_ts(period_start)}|{_ts(period_end)}|{','.join(streams)}"
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (lock_key,))
    cur.execute(
        """SELECT coalesce(max(version), 0) + 1 FROM erp_sync.drift_reports
            WHERE period_start = %s AND period_end = %s AND streams = %s::text[]""",
        (period_start, period_end, streams),
    )
    return int(cur.fetchone()[0])


def write_report(
    conn: Any, header: ReportHeader, totals: Sequence[TotalLine], items: pd.DataFrame
) -> StoredReport:
    """Insert the report, its totals and items in one transaction, as the next version; commits."""
    streams = sorted(header.streams)
    head = header_record(header, len(items))
    total_rows = [total_record(t) for t in totals]
    sha = content_sha256(head, total_rows, items_to_records(items))
    try:
        with conn.cursor() as cur:
            version = _next_version(cur, header.period_start, header.period_end, streams)
            cur.execute(
                """
                INSERT INTO erp_sync.drift_reports
                    (period_start, period_end, version, streams, status, dag_id, run_id, item_count,
                     summary, conservation, content_sha256, repair_command, error_message,
                     tolerances, invariants, sources, repair_of_report_id)
                VALUES (%s, %s, %s, %s::text[], %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s,
                        %s::jsonb, %s::jsonb, %s::jsonb, %s)
                RETURNING report_id
                """,
                (
                    header.period_start,
                    header.period_end,
                    version,
                    streams,
                    header.status,
                    header.dag_id,
                    header.run_id,
                    len(items),
                    _json(head["summary"]),
                    _json(head["conservation"]),
                    sha,
                    header.repair_command,
                    header.error_message,
                    _json(head["tolerances"]),
                    _json(head["invariants"]),
                    _json(dict(header.sources)),
                    header.repair_of_report_id,
                ),
            )
            report_id = int(cur.fetchone()[0])
            _copy_rows(cur, "drift_report_totals", ("report_id", *TOTAL_FIELDS), report_id, total_rows)
            _copy_rows(
                cur, "drift_report_items", ("report_id", *ITEM_FIELDS), report_id, items_to_records(items)
            )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return StoredReport(report_id=report_id, version=version, content_sha256=sha, item_count=len(items))


# ---------------------------------------------------------------------------------------------
# Restoring a backed-up report (ADR 0025)

_IDENTITY_COLUMNS = ("report_id", "period_start", "period_end", "streams", "version", "created_at",
                     "dag_id", "run_id", "content_sha256")  # fmt: skip


def reports_sharing_identity(
    conn: Any,
    report_id: int,
    period_start: datetime,
    period_end: datetime,
    streams: Sequence[str],
    version: int,
) -> list[dict[str, Any]]:
    """Stored reports with this `report_id`, or that are this `version` of the period and streams:
    either the report itself, or one it would clash with."""
    with conn.cursor() as cur:
        cur.execute(
            SQL(
                "SELECT {} FROM erp_sync.drift_reports WHERE report_id = %s OR (period_start = %s"
                " AND period_end = %s AND streams = %s::text[] AND version = %s) ORDER BY report_id"
            ).format(_cols(_IDENTITY_COLUMNS)),
            (report_id, period_start, period_end, sorted(streams), version),
        )
        rows = [dict(zip(_IDENTITY_COLUMNS, row, strict=True)) for row in cur.fetchall()]
    for row in rows:
        row["content_sha256"] = str(row["content_sha256"]).strip()
        row["streams"] = list(row["streams"])
    return rows


def lock_reports_for_restore(conn: Any) -> None:
    """Hold off `write_report` (its INSERT takes a lock this one conflicts with) until COMMIT, so no
    report takes a sequence id or version between a restore's check and its insert."""
    with conn.cursor() as cur:
        cur.execute("LOCK TABLE erp_sync.drift_reports IN SHARE ROW EXCLUSIVE MODE")


def insert_restored_report(
    conn: Any,
    header: Mapping[str, Any],
    totals: Sequence[Mapping[str, Any]],
    items: Iterable[Mapping[str, Any]],
    backup_path: str,
) -> None:
    """Insert a report as it was stored where it was written: its own report_id, version, created_at
    and every other column, its totals and items, and `backup_path`; then move the report id
    sequence past it, so a report written here later never takes its id. Does not commit: the
    caller checks, under `lock_reports_for_restore`, that nothing clashes, in the same transaction."""
    columns = (*(name for name in REPORT_COLUMNS if name != "backup_path"), "backup_path")
    values = [
        _json(header[name]) if name in {"summary", "conservation", "tolerances", "invariants", "sources"}
        else sorted(header[name]) if name == "streams"
        else header[name]
        for name in columns[:-1]
    ]  # fmt: skip
    report_id = int(header["report_id"])
    with conn.cursor() as cur:
        cur.execute(
            SQL("INSERT INTO erp_sync.drift_reports ({}) VALUES ({})").format(
                _cols(columns), SQL(", ").join(SQL("%s") for _ in columns)
            ),
            (*values, backup_path),
        )
        _copy_rows(cur, "drift_report_totals", ("report_id", *TOTAL_FIELDS), report_id, totals)
        _copy_rows(cur, "drift_report_items", ("report_id", *ITEM_FIELDS), report_id, items)
        cur.execute(
            "SELECT setval('erp_sync.drift_reports_report_id_seq', GREATEST(%s, (SELECT CASE WHEN is_called"
            " THEN last_value ELSE last_value - 1 END FROM erp_sync.drift_reports_report_id_seq)), true)",
            (report_id,),
        )


def _cols(names: Iterable[str]) -> Composable:
    return SQL(", ").join(Identifier(name) for name in names)


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _copy_rows(
    cur: Any, table: str, columns: Sequence[str], report_id: int, records: Iterable[Mapping[str, Any]]
) -> None:
    """COPY in chunks: a million items never sit in one buffer."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    pending = 0
    sql = SQL("COPY erp_sync.{} ({}) FROM STDIN WITH (FORMAT csv, NULL '\\N')").format(
        Identifier(table), _cols(columns)
    )
    for record in records:
        row = [report_id] + [_csv_value(record[col]) for col in columns[1:]]
        writer.writerow(row)
        pending += 1
        if pending >= COPY_CHUNK:
            buffer.seek(0)
            cur.copy_expert(sql, buffer)
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            pending = 0
    if pending:
        buffer.seek(0)
        cur.copy_expert(sql, buffer)


def _csv_value(value: Any) -> Any:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    return value


def set_backup_path(conn: Any, report_id: int, backup_path: str) -> None:
    """Record where the report's files were backed up (the one change a report allows, once)."""
    try:
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE erp_sync.drift_reports SET backup_path = %s"
                " WHERE report_id = %s AND backup_path IS NULL",
                (backup_path, report_id),
            )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


# ---------------------------------------------------------------------------------------------
# Reading (the UI and the repair use these)

REPORT_COLUMNS = (
    "report_id",
    "period_start",
    "period_end",
    "version",
    "streams",
    "status",
    "dag_id",
    "run_id",
    "created_at",
    "item_count",
    "summary",
    "conservation",
    "content_sha256",
    "backup_path",
    "repair_command",
    "error_message",
    "tolerances",
    "invariants",
    "sources",
    "repair_of_report_id",
)


def _report_dict(row: Sequence[Any]) -> dict[str, Any]:
    report = dict(zip(REPORT_COLUMNS, row, strict=True))
    report["content_sha256"] = str(report["content_sha256"]).strip()
    report["streams"] = list(report["streams"])
    return report


def list_reports(
    conn: Any,
    *,
    limit: int = 50,
    offset: int = 0,
    status: str | None = None,
    stream: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first; optionally only one status or reports covering one stream."""
    clauses: list[str] = []
    args: list[Any] = []
    if status:
        clauses.append("status = %s")
        args.append(status)
    if stream:
        clauses.append("%s = ANY(streams)")
        args.append(stream)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    with conn.cursor() as cur:
        cur.execute(
            SQL(
                "SELECT {} FROM erp_sync.drift_reports {} ORDER BY created_at DESC, report_id DESC "
                "LIMIT %s OFFSET %s"
            ).format(_cols(REPORT_COLUMNS), SQL(where)),
            (*args, limit, offset),
        )
        return [_report_dict(row) for row in cur.fetchall()]


def get_report(conn: Any, report_id: int) -> dict[str, Any] | None:
    """The report row with its totals (items are paged: `get_items`)."""
    with conn.cursor() as cur:
        cur.execute(
            SQL("SELECT {} FROM erp_sync.drift_reports WHERE report_id = %s").format(_cols(REPORT_COLUMNS)),
            (report_id,),
        )
        row = cur.fetchone()
        if row is None:
            return None
        report = _report_dict(row)
        cur.execute(
            SQL(
                "SELECT {} FROM erp_sync.drift_report_totals WHERE report_id = %s "
                "ORDER BY stream, currency_code, status, metric = 'count' DESC, metric"
            ).format(_cols(TOTAL_FIELDS)),
            (report_id,),
        )
        report["totals"] = [dict(zip(TOTAL_FIELDS, r, strict=True)) for r in cur.fetchall()]
    return report


def latest_report(
    conn: Any, period_start: datetime, period_end: datetime, streams: Sequence[str]
) -> dict[str, Any] | None:
    with conn.cursor() as cur:
        cur.execute(
            """SELECT report_id FROM erp_sync.drift_reports
                WHERE period_start = %s AND period_end = %s AND streams = %s::text[]
                ORDER BY version DESC LIMIT 1""",
            (period_start, period_end, sorted(streams)),
        )
        row = cur.fetchone()
    return get_report(conn, int(row[0])) if row else None


def get_items(
    conn: Any,
    report_id: int,
    *,
    kind: str | None = None,
    stream: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """One page of a report's items in item_no order."""
    clauses: list[str] = ["report_id = %s"]
    args: list[Any] = [report_id]
    if kind:
        clauses.append("kind = %s")
        args.append(kind)
    if stream:
        clauses.append("stream = %s")
        args.append(stream)
    with conn.cursor() as cur:
        cur.execute(
            SQL(
                "SELECT {} FROM erp_sync.drift_report_items WHERE {} ORDER BY item_no LIMIT %s OFFSET %s"
            ).format(_cols(ITEM_FIELDS), SQL(" AND ").join(SQL(c) for c in clauses)),
            (*args, limit, offset),
        )
        return [item_record(dict(zip(ITEM_FIELDS, r, strict=True))) for r in cur.fetchall()]


def iter_items(conn: Any, report_id: int, chunk: int = ITEM_FETCH) -> Iterator[dict[str, Any]]:
    """Every item in item_no order, fetched in chunks by keyset (bounded memory)."""
    after = 0
    while True:
        with conn.cursor() as cur:
            cur.execute(
                SQL(
                    "SELECT {} FROM erp_sync.drift_report_items "
                    "WHERE report_id = %s AND item_no > %s ORDER BY item_no LIMIT %s"
                ).format(_cols(ITEM_FIELDS)),
                (report_id, after, chunk),
            )
            rows = cur.fetchall()
        if not rows:
            return
        for row in rows:
            yield item_record(dict(zip(ITEM_FIELDS, row, strict=True)))
        after = int(rows[-1][0])


def verify_report(conn: Any, report_id: int) -> bool:
    """Recompute the content SHA-256 from the stored rows and compare."""
    report = get_report(conn, report_id)
    if report is None:
        raise LookupError(f"no drift report {report_id}")
    head = dict(report)
    head["period_start"] = _ts(report["period_start"])
    head["period_end"] = _ts(report["period_end"])
    head["streams"] = sorted(report["streams"])
    totals = [total_record(t) for t in report["totals"]]
    return bool(content_sha256(head, totals, iter_items(conn, report_id)) == report["content_sha256"])
