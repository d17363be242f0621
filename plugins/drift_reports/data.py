"""Read-only queries behind the Drift reports pages (schema: V001 + V020).

Every function takes an open DB-API (psycopg2) connection to the `erp_staging` database and runs
parameterised SQL against the V001 tables. Nothing here imports Airflow, so the queries are tested
against a real Postgres without an api-server. Money comes back as `Decimal` (NUMERIC), timestamps
as tz-aware datetimes; lists are paged with LIMIT/OFFSET (a report's items by their primary key).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection
from psycopg2.extras import RealDictCursor

REPORT_STATUSES = ("OK", "DRIFT", "ERROR")
ITEM_KINDS = ("missing_in_erp", "missing_in_saas", "amount_mismatch", "status_mismatch")
ITEM_COLUMNS = (  # V001 + V020 (metric, erp_currency_code, exceeds_tolerance)
    "item_no",
    "stream",
    "source_id",
    "kind",
    "metric",
    "currency_code",
    "erp_currency_code",
    "saas_amount",
    "erp_amount",
    "difference",
    "exceeds_tolerance",
    "saas_status",
    "erp_status",
    "erp_batch_id",
)

_REPORT_COLUMNS = """
    r.report_id, r.period_start, r.period_end, r.version, r.streams, r.status, r.dag_id, r.run_id,
    r.created_at, r.item_count, r.summary, r.conservation, r.content_sha256, r.backup_path,
    r.repair_command, r.error_message, r.tolerances, r.invariants, r.sources, r.repair_of_report_id
"""


@dataclass(frozen=True)
class ReportFilters:
    """The list page's filters; `None` means "any". Period bounds are inclusive calendar days (UTC)."""

    status: str | None = None
    stream: str | None = None
    period_from: date | None = None
    period_to: date | None = None

    def where(self) -> tuple[str, list[Any]]:
        """A WHERE clause over `erp_sync.drift_reports r` and its parameters."""
        clauses: list[str] = ["TRUE"]
        params: list[Any] = []
        if self.status:
            clauses.append("r.status = %s")
            params.append(self.status)
        if self.stream:
            clauses.append("%s = ANY(r.streams)")
            params.append(self.stream)
        if self.period_from:
            # A report overlaps the chosen days when its period ends after the first day starts ...
            clauses.append("r.period_end > %s::date::timestamp AT TIME ZONE 'UTC'")
            params.append(self.period_from)
        if self.period_to:
            # ... and starts before the day after the last day.
            clauses.append("r.period_start < %s::date::timestamp AT TIME ZONE 'UTC'")
            params.append(self.period_to + timedelta(days=1))
        return " AND ".join(clauses), params


@dataclass(frozen=True)
class TrendPoint:
    """Net drift (ERP - SaaS, major units) of one stream and currency in one report's period."""

    report_id: int
    period_start: datetime
    stream: str
    currency_code: str
    difference: Decimal
    status: str


@dataclass(frozen=True)
class QueueStat:
    """One operational queue: how many items wait and since when."""

    name: str
    description: str
    count: int
    oldest: datetime | None


def _dict_cursor(conn: PgConnection) -> RealDictCursor:
    return conn.cursor(cursor_factory=RealDictCursor)


def list_reports(
    conn: PgConnection, filters: ReportFilters, *, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """Reports matching `filters`, newest first (by creation, then id), and the total match count."""
    where, params = filters.where()
    with _dict_cursor(conn) as cur:
        cur.execute(f"SELECT count(*) AS n FROM erp_sync.drift_reports r WHERE {where}", params)  # noqa: S608
        total = int(cur.fetchone()["n"])
        cur.execute(
            f"SELECT {_REPORT_COLUMNS} FROM erp_sync.drift_reports r WHERE {where} "  # noqa: S608
            "ORDER BY r.created_at DESC, r.report_id DESC LIMIT %s OFFSET %s",
            [*params, limit, offset],
        )
        return [dict(row) for row in cur.fetchall()], total


def known_streams(conn: PgConnection) -> list[str]:
    """Every stream named by any report (for the filter's drop-down)."""
    with conn.cursor() as cur:
        cur.execute("SELECT DISTINCT unnest(streams) AS s FROM erp_sync.drift_reports ORDER BY s")
        return [row[0] for row in cur.fetchall()]


def get_report(conn: PgConnection, report_id: int) -> dict[str, Any] | None:
    with _dict_cursor(conn) as cur:
        cur.execute(
            f"SELECT {_REPORT_COLUMNS} FROM erp_sync.drift_reports r WHERE r.report_id = %s",  # noqa: S608
            [report_id],
        )
        row = cur.fetchone()
        return dict(row) if row else None


def report_totals(conn: PgConnection, report_id: int) -> list[dict[str, Any]]:
    """The report's per stream / currency / status / metric totals, in a stable reading order."""
    with _dict_cursor(conn) as cur:
        cur.execute(
            """
            SELECT stream, currency_code, status, metric, saas_count, erp_count, saas_sum, erp_sum,
                   difference, tolerance_abs, tolerance_rel, within_tolerance
              FROM erp_sync.drift_report_totals
             WHERE report_id = %s
             ORDER BY stream, currency_code, status, metric
            """,
            [report_id],
        )
        return [dict(row) for row in cur.fetchall()]


def _items_where(report_id: int, kind: str | None, stream: str | None) -> tuple[str, list[Any]]:
    clauses = ["report_id = %s"]
    params: list[Any] = [report_id]
    if kind:
        clauses.append("kind = %s")
        params.append(kind)
    if stream:
        clauses.append("stream = %s")
        params.append(stream)
    return " AND ".join(clauses), params


def report_items(
    conn: PgConnection,
    report_id: int,
    *,
    limit: int,
    offset: int,
    kind: str | None = None,
    stream: str | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """One page of a report's discrepancies in item order, and how many match in total."""
    where, params = _items_where(report_id, kind, stream)
    cols = ", ".join(ITEM_COLUMNS)
    with _dict_cursor(conn) as cur:
        cur.execute(f"SELECT count(*) AS n FROM erp_sync.drift_report_items WHERE {where}", params)  # noqa: S608
        total = int(cur.fetchone()["n"])
        cur.execute(
            f"SELECT {cols} FROM erp_sync.drift_report_items WHERE {where} "  # noqa: S608
            "ORDER BY item_no LIMIT %s OFFSET %s",
            [*params, limit, offset],
        )
        return [dict(row) for row in cur.fetchall()], total


def item_breakdown(conn: PgConnection, report_id: int) -> list[dict[str, Any]]:
    """Discrepancy counts per stream and kind (the report page's quick filters)."""
    with _dict_cursor(conn) as cur:
        cur.execute(
            "SELECT stream, kind, count(*) AS n FROM erp_sync.drift_report_items WHERE report_id = %s "
            "GROUP BY stream, kind ORDER BY stream, kind",
            [report_id],
        )
        return [dict(row) for row in cur.fetchall()]


def iter_report_items(conn: PgConnection, report_id: int, *, chunk: int = 2000) -> Iterator[dict[str, Any]]:
    """Every discrepancy of a report in item order, read in keyset chunks (for the downloads)."""
    cols = ", ".join(ITEM_COLUMNS)
    after = -1
    while True:
        with _dict_cursor(conn) as cur:
            cur.execute(
                f"SELECT {cols} FROM erp_sync.drift_report_items WHERE report_id = %s AND item_no > %s "  # noqa: S608
                "ORDER BY item_no LIMIT %s",
                [report_id, after, chunk],
            )
            rows = cur.fetchall()
        if not rows:
            return
        for row in rows:
            yield dict(row)
        after = rows[-1]["item_no"]


def trend_points(conn: PgConnection, filters: ReportFilters, *, max_reports: int = 200) -> list[TrendPoint]:
    """Net money drift per stream and currency for the newest `max_reports` matching reports.

    Only the latest version of each period is used (a re-run supersedes its predecessor), and
    counts are left out: the chart plots money, summed over statuses and amount metrics.
    """
    where, params = filters.where()
    with _dict_cursor(conn) as cur:
        cur.execute(
            f"""
            WITH latest AS (
                SELECT DISTINCT ON (r.period_start, r.period_end, r.streams)
                       r.report_id, r.period_start, r.status
                  FROM erp_sync.drift_reports r
                 WHERE {where} AND r.status <> 'ERROR'
                 ORDER BY r.period_start, r.period_end, r.streams, r.version DESC
            ), recent AS (
                SELECT * FROM latest ORDER BY period_start DESC LIMIT %s
            )
            SELECT rc.report_id, rc.period_start, rc.status, t.stream, t.currency_code,
                   sum(t.difference) AS difference
              FROM recent rc
              JOIN erp_sync.drift_report_totals t ON t.report_id = rc.report_id
             WHERE t.metric <> 'count'
             GROUP BY rc.report_id, rc.period_start, rc.status, t.stream, t.currency_code
             ORDER BY rc.period_start, t.stream, t.currency_code
            """,  # noqa: S608
            [*params, max_reports],
        )
        return [
            TrendPoint(
                report_id=row["report_id"],
                period_start=row["period_start"],
                stream=row["stream"],
                currency_code=row["currency_code"].strip(),
                difference=row["difference"],
                status=row["status"],
            )
            for row in cur.fetchall()
        ]


def _staging_tables(conn: PgConnection) -> list[str]:
    """Staging tables that carry the ERP importer's `interface_status` column."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema = 'erp_staging' AND column_name = 'interface_status' ORDER BY table_name"
        )
        return [row[0] for row in cur.fetchall()]


def _count_and_oldest(conn: PgConnection, query: sql.Composable | str) -> tuple[int, datetime | None]:
    with conn.cursor() as cur:
        cur.execute(query)
        count, oldest = cur.fetchone()
        return int(count), oldest


def operations_queues(conn: PgConnection) -> list[QueueStat]:
    """The pending queues an operator watches; a growing or ageing queue is the first sign of trouble."""
    stats = [
        QueueStat(
            "Rejections awaiting replay",
            "erp_sync.rejections with status PENDING",
            *_count_and_oldest(
                conn, "SELECT count(*), min(created_at) FROM erp_sync.rejections WHERE status = 'PENDING'"
            ),
        ),
        QueueStat(
            "Raw pages awaiting backup",
            "erp_sync.outbox rows not yet copied to SFTP",
            *_count_and_oldest(
                conn, "SELECT count(*), min(created_at) FROM erp_sync.outbox WHERE backed_up_at IS NULL"
            ),
        ),
    ]
    for table in _staging_tables(conn):
        query = sql.SQL("SELECT count(*), min(loaded_at) FROM {} WHERE interface_status = 'PENDING'").format(
            sql.Identifier("erp_staging", table)
        )
        stats.append(
            QueueStat(
                f"Staging {table} pending import",
                f"erp_staging.{table} rows with interface_status PENDING",
                *_count_and_oldest(conn, query),
            )
        )
    return stats


def report_as_json_ready(report: dict[str, Any], totals: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report header and totals with every Decimal and datetime made JSON-safe (money as strings)."""
    return {
        "report": {key: _json_safe(value) for key, value in report.items()},
        "totals": [{key: _json_safe(value) for key, value in row.items()} for row in totals],
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def item_json_ready(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _json_safe(value) for key, value in item.items()}
