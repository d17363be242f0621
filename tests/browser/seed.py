"""Seed data for the Drift reports UI: reports, totals, items and pending queues, inserted with SQL.

Used by the plugin's integration and browser tests and by `scripts/ui_seed.py` for a demo. The
figures are deterministic so tests can assert on them: six daily reports over USD, JPY and KWD (OK,
DRIFT and one ERROR), one of them with 10,000 discrepancies, plus a few pending rejections, outbox
pages and staging rows for the operations panel.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from psycopg2.extensions import connection as PgConnection
from psycopg2.extras import execute_values

MIGRATIONS = Path(__file__).resolve().parents[2] / "include" / "erp_sync" / "sql" / "migrations"
BASE_DAY = datetime(2026, 11, 1, tzinfo=UTC)
CURRENCIES = ("USD", "JPY", "KWD")
STREAMS = ("charges", "invoices")
KINDS = ("missing_in_erp", "missing_in_saas", "amount_mismatch", "status_mismatch")
# Per currency: a typical day's SaaS total and the absolute tolerance (major units).
_DAY_TOTAL = {"USD": Decimal("125430.50"), "JPY": Decimal("9876500"), "KWD": Decimal("3210.125")}
_TOLERANCE = {"USD": Decimal("0.01"), "JPY": Decimal("1"), "KWD": Decimal("0.001")}


def apply_schema(conn: PgConnection) -> None:
    """Migrate an empty database: the project's `apply_migrations` when present, else the V*.sql files."""
    try:
        from erp_sync.store.migrations import apply_migrations
    except ImportError:
        with conn.cursor() as cur:
            for path in sorted(MIGRATIONS.glob("V*.sql")):
                cur.execute(path.read_text())
        conn.commit()
        return
    apply_migrations(conn)
    conn.commit()


@dataclass
class SeededReport:
    report_id: int
    status: str
    period_start: datetime
    period_end: datetime
    streams: list[str]
    item_count: int
    content_sha256: str
    backup_path: str | None


@dataclass
class Seeded:
    reports: list[SeededReport] = field(default_factory=list)
    pending_rejections: int = 0
    pending_outbox: int = 0
    pending_staging: dict[str, int] = field(default_factory=dict)

    def by_status(self, status: str) -> list[SeededReport]:
        return [r for r in self.reports if r.status == status]

    @property
    def big(self) -> SeededReport:
        return max(self.reports, key=lambda r: r.item_count)


def _item_rows(report_id: int, count: int, day: int) -> list[tuple[Any, ...]]:
    """`count` discrepancies cycling through kinds, streams and currencies; amounts are exact Decimals."""
    rows = []
    for n in range(1, count + 1):
        kind = KINDS[n % len(KINDS)]
        stream = STREAMS[n % len(STREAMS)]
        currency = CURRENCIES[n % len(CURRENCIES)]
        unit = {"USD": Decimal("0.01"), "JPY": Decimal("1"), "KWD": Decimal("0.001")}[currency]
        saas = (Decimal(1000 + n * 7) * unit * 100).quantize(unit)
        erp: Decimal | None = saas
        saas_status, erp_status = "paid", "paid"
        if kind == "missing_in_erp":
            erp = None
        elif kind == "missing_in_saas":
            saas, erp = None, saas
        elif kind == "amount_mismatch":
            erp = saas - unit * (n % 50 + 1)
        else:
            erp_status = "open"
        diff = (erp or Decimal(0)) - (saas or Decimal(0))
        batch = None if erp is None else 9000 + day * 10 + n % 7
        rows.append(
            (
                report_id,
                n,
                stream,
                f"{'ch' if stream == 'charges' else 'in'}_{day:02d}{n:06d}",
                kind,
                currency,
                saas,
                erp,
                saas_status if saas is not None else None,
                erp_status if erp is not None else None,
                diff,
                batch,
            )
        )
    return rows


def _totals_rows(report_id: int, items: list[tuple[Any, ...]], error: bool) -> list[tuple[Any, ...]]:
    """Per stream/currency: a money metric off by the items' net difference, and a count."""
    rows = []
    for stream in STREAMS:
        for currency in CURRENCIES:
            mine = [i for i in items if i[2] == stream and i[5] == currency]
            diff = sum((i[10] for i in mine), Decimal(0))
            saas = _DAY_TOTAL[currency]
            erp = saas + diff
            tol = _TOLERANCE[currency]
            within = abs(diff) <= tol and not error
            metric = "total_amount" if stream == "invoices" else "amount"
            saas_n = 400 + len(stream)
            erp_n = (
                saas_n
                - sum(1 for i in mine if i[4] == "missing_in_erp")
                + sum(1 for i in mine if i[4] == "missing_in_saas")
            )
            rows.append(
                (
                    report_id,
                    stream,
                    currency,
                    "paid",
                    metric,
                    saas_n,
                    erp_n,
                    saas,
                    erp,
                    diff,
                    tol,
                    Decimal("0.000010000"),
                    within,
                )
            )
            rows.append(
                (
                    report_id,
                    stream,
                    currency,
                    "paid",
                    "count",
                    saas_n,
                    erp_n,
                    Decimal(saas_n),
                    Decimal(erp_n),
                    Decimal(erp_n - saas_n),
                    Decimal(0),
                    Decimal(0),
                    erp_n == saas_n,
                )
            )
    return rows


def _insert_report(
    conn: PgConnection, *, day: int, status: str, item_count: int, error_message: str | None = None
) -> SeededReport:
    start = BASE_DAY + timedelta(days=day)
    end = start + timedelta(days=1)
    streams = list(STREAMS)
    content = f"report-{day}-{status}-{item_count}".encode()
    sha = hashlib.sha256(content).hexdigest()
    backup = None if status == "ERROR" else f"/erp-sync/reports/{start:%Y/%m/%d}/drift-report-v1.json"
    conservation = {
        stream: {
            "batches": 3,
            "extracted": 410 + k,
            "loaded_new": 400,
            "loaded_changed": 5 + k,
            "skipped_unchanged": 3,
            "rejected": 2,
        }
        for k, stream in enumerate(streams)
    }
    with conn.cursor() as cur:
        cur.execute(
            """
            INSERT INTO erp_sync.drift_reports (period_start, period_end, version, streams, status, dag_id,
                run_id, created_at, item_count, summary, conservation, content_sha256, backup_path,
                repair_command, error_message)
            VALUES (%s, %s, 1, %s, %s, 'erp_sync_reconcile', %s, %s, %s, %s, %s, %s, %s, %s, %s)
            RETURNING report_id
            """,
            (
                start,
                end,
                streams,
                status,
                f"scheduled__{end:%Y-%m-%dT%H:%M:%S}+00:00",
                end + timedelta(hours=2, minutes=day),
                item_count,
                json.dumps({"discrepancies": item_count, "currencies": len(CURRENCIES)}),
                json.dumps(conservation),
                sha,
                backup,
                None
                if status != "DRIFT"
                else f'airflow dags trigger erp_sync_replay --conf \'{{"day": "{start:%Y-%m-%d}"}}\'',
                error_message,
            ),
        )
        report_id = cur.fetchone()[0]
        items = _item_rows(report_id, item_count, day)
        execute_values(
            cur,
            "INSERT INTO erp_sync.drift_report_items (report_id, item_no, stream, source_id, kind,"
            " currency_code, saas_amount, erp_amount, saas_status, erp_status, difference, erp_batch_id)"
            " VALUES %s",
            items,
            page_size=2000,
        )
        execute_values(
            cur,
            "INSERT INTO erp_sync.drift_report_totals (report_id, stream, currency_code, status, metric,"
            " saas_count, erp_count, saas_sum, erp_sum, difference, tolerance_abs, tolerance_rel,"
            " within_tolerance) VALUES %s",
            _totals_rows(report_id, items, error=status == "ERROR"),
        )
    return SeededReport(report_id, status, start, end, streams, item_count, sha, backup)


def _seed_queues(conn: PgConnection, now: datetime, seeded: Seeded) -> None:
    with conn.cursor() as cur:
        for n in range(3):
            cur.execute(
                "INSERT INTO erp_sync.rejections (source_system, stream, source_id, reason_code, message,"
                " raw_payload, status, created_at) VALUES ('stripe', 'charges', %s, 'UNKNOWN_CURRENCY',"
                " 'currency XXX is not ISO 4217', '{}', 'PENDING', %s)",
                (f"ch_rej{n}", now - timedelta(hours=26 - n)),
            )
        cur.execute(
            "INSERT INTO erp_sync.rejections (source_system, stream, source_id, reason_code, message,"
            " raw_payload, status, created_at, replayed_at) VALUES ('stripe', 'charges', 'ch_done',"
            " 'MISSING_ID', 'replayed', '{}', 'REPLAYED', %s, %s)",
            (now - timedelta(days=5), now - timedelta(days=4)),
        )
        body = b'{"data": []}'
        for n in range(2):
            cur.execute(
                "INSERT INTO erp_sync.outbox (batch_id, run_id, source_system, stream, page_no, url,"
                " record_count, content_gzip, sha256, created_at) VALUES (%s, 'seed', 'stripe', 'charges',"
                " %s, 'https://api.example.test/v1/charges', 0, %s, %s, %s)",
                (
                    9001,
                    n,
                    gzip.compress(body),
                    hashlib.sha256(body).hexdigest(),
                    now - timedelta(minutes=90 - n),
                ),
            )
        for n in range(5):
            cur.execute(
                "INSERT INTO erp_staging.ar_invoices (source_system, source_id, status, currency_code,"
                " total_amount, amount_paid, amount_due, issued_at, row_sha256, source_version,"
                " sync_batch_id, interface_status, loaded_at) VALUES ('stripe', %s, 'open', 'USD', %s,"
                " 0, %s, %s, %s, 1, 9001, %s, %s)",
                (
                    f"in_pend{n}",
                    Decimal("10.50"),
                    Decimal("10.50"),
                    now,
                    "0" * 64,
                    "PENDING" if n < 4 else "IMPORTED",
                    now - timedelta(hours=3, minutes=n),
                ),
            )
    seeded.pending_rejections = 3
    seeded.pending_outbox = 2
    seeded.pending_staging = {"ar_invoices": 4}


def seed_reports(conn: PgConnection, *, big_items: int = 10_000, now: datetime | None = None) -> Seeded:
    """Insert the demo reports and queues into a migrated database and commit."""
    now = now or datetime.now(UTC)
    seeded = Seeded()
    plan = [
        (0, "OK", 0, None),
        (1, "DRIFT", 12, None),
        (2, "OK", 0, None),
        (3, "DRIFT", big_items, None),
        (4, "ERROR", 0, "SaaS re-read failed: HTTP 503 from /v1/charges after 5 attempts"),
        (5, "DRIFT", 40, None),
    ]
    for day, status, count, error in plan:
        seeded.reports.append(
            _insert_report(conn, day=day, status=status, item_count=count, error_message=error)
        )
    _seed_queues(conn, now, seeded)
    conn.commit()
    return seeded
