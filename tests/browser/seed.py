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

from erp_sync.store.drift import ITEM_FIELDS, TOTAL_FIELDS  # the same field order the report hash uses

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


_UNIT = {"USD": Decimal("0.01"), "JPY": Decimal("1"), "KWD": Decimal("0.001")}


def _metric(stream: str) -> str:
    return "total_amount" if stream == "invoices" else "amount"


def _items(count: int, day: int) -> list[dict[str, Any]]:
    """`count` discrepancies cycling through kinds, streams and currencies; amounts are exact Decimals."""
    items = []
    for n in range(1, count + 1):
        kind = KINDS[n % len(KINDS)]
        stream = STREAMS[n % len(STREAMS)]
        currency = CURRENCIES[n % len(CURRENCIES)]
        unit = _UNIT[currency]
        saas: Decimal | None = (Decimal(1000 + (n % 997) * 7) * unit * 100).quantize(unit)
        erp: Decimal | None = saas
        saas_status, erp_status = "paid", "paid"
        if kind == "missing_in_erp":
            erp = None
        elif kind == "missing_in_saas":
            saas, erp = None, saas
        elif kind == "amount_mismatch":
            erp = saas - unit * (n % 50 + 1)  # type: ignore[operator]
        else:
            erp_status = "open"
        diff = (erp or Decimal(0)) - (saas or Decimal(0))
        items.append(
            {
                "item_no": n,
                "stream": stream,
                "source_id": f"{'ch' if stream == 'charges' else 'in'}_{day:02d}{n:06d}",
                "kind": kind,
                "metric": _metric(stream) if kind == "amount_mismatch" else None,
                "currency_code": currency,
                "erp_currency_code": None,
                "saas_amount": saas,
                "erp_amount": erp,
                "saas_status": saas_status if saas is not None else None,
                "erp_status": erp_status if erp is not None else None,
                "difference": diff,
                "erp_batch_id": None if erp is None else 9000 + day * 10 + n % 7,
                "exceeds_tolerance": abs(diff) > _TOLERANCE[currency] or kind == "status_mismatch",
            }
        )
    return items


def _totals(items: list[dict[str, Any]], error: bool) -> list[dict[str, Any]]:
    """Per stream/currency: the money metric off by the items' net difference, and a record count."""
    rows = []
    for stream in STREAMS:
        for currency in CURRENCIES:
            mine = [i for i in items if i["stream"] == stream and i["currency_code"] == currency]
            diff = sum((i["difference"] for i in mine), Decimal(0))
            saas = _DAY_TOTAL[currency]
            tol = _TOLERANCE[currency]
            both_sides = 400 + len(stream)  # records present on both sides
            saas_n = both_sides + sum(1 for i in mine if i["kind"] == "missing_in_erp")
            erp_n = both_sides + sum(1 for i in mine if i["kind"] == "missing_in_saas")
            common = {"stream": stream, "currency_code": currency, "status": "paid"}
            rows.append(
                {
                    **common,
                    "metric": "count",
                    "saas_count": saas_n,
                    "erp_count": erp_n,
                    "saas_sum": Decimal(saas_n),
                    "erp_sum": Decimal(erp_n),
                    "difference": Decimal(erp_n - saas_n),
                    "tolerance_abs": Decimal(0),
                    "tolerance_rel": Decimal(0),
                    "within_tolerance": erp_n == saas_n,
                }
            )
            rows.append(
                {
                    **common,
                    "metric": _metric(stream),
                    "saas_count": saas_n,
                    "erp_count": erp_n,
                    "saas_sum": saas,
                    "erp_sum": saas + diff,
                    "difference": diff,
                    "tolerance_abs": tol,
                    "tolerance_rel": Decimal("0.00001"),
                    "within_tolerance": abs(diff) <= tol and not error,
                }
            )
    return rows


def _content_sha256(header: dict[str, Any], totals: list[dict[str, Any]], items: list[dict[str, Any]]) -> str:
    """The report's content hash exactly as `erp_sync.store.drift.verify_report` recomputes it."""
    from erp_sync.store import drift

    head = {
        "period_start": header["period_start"].astimezone(UTC).isoformat(),
        "period_end": header["period_end"].astimezone(UTC).isoformat(),
        "streams": sorted(header["streams"]),
        **{
            k: header[k]
            for k in ("status", "item_count", "summary", "conservation", "tolerances", "invariants")
        },
    }
    ordered = sorted(
        totals,
        key=lambda t: (t["stream"], t["currency_code"], t["status"], t["metric"] != "count", t["metric"]),
    )
    return drift.content_sha256(
        head, [drift.total_record(t) for t in ordered], (drift.item_record(i) for i in items)
    )


def _insert_report(
    conn: PgConnection, *, day: int, status: str, item_count: int, error_message: str | None = None
) -> SeededReport:
    start = BASE_DAY + timedelta(days=day)
    end = start + timedelta(days=1)
    streams = list(STREAMS)
    items = _items(item_count, day)
    totals = _totals(items, error=status == "ERROR")
    backup = None if status == "ERROR" else f"/erp-sync/reports/{start:%Y/%m/%d}/drift-report-v1.json"
    per_stream = {
        stream: {
            "batches": 3,
            "first_batch_id": 9000 + day * 10,
            "last_batch_id": 9002 + day * 10,
            "extracted": 410 + k,
            "loaded_new": 400,
            "loaded_changed": 5 + k,
            "skipped_unchanged": 3,
            "rejected": 2,
            "balanced": True,
        }
        for k, stream in enumerate(streams)
    }
    header: dict[str, Any] = {
        "period_start": start,
        "period_end": end,
        "streams": streams,
        "status": status,
        "item_count": item_count,
        "summary": {"items": {k: sum(1 for i in items if i["kind"] == k) for k in KINDS}, "currencies": 3},
        "conservation": {
            "basis": "sync_batches committed in the period",
            "streams": per_stream,
            "balanced": True,
        },
        "tolerances": {c: {"abs": str(_TOLERANCE[c]), "rel": "0.00001"} for c in CURRENCIES},
        "invariants": {"no_negative_amounts": "passed", "unique_source_ids": "passed"},
    }
    sha = _content_sha256(header, totals, items)
    with conn.cursor() as cur:
        cur.execute(
            """
            INSERT INTO erp_sync.drift_reports (period_start, period_end, version, streams, status, dag_id,
                run_id, created_at, item_count, summary, conservation, content_sha256, backup_path,
                repair_command, error_message, tolerances, invariants, sources)
            VALUES (%s, %s, 1, %s, %s, 'erp_drift_reconciliation', %s, %s, %s, %s, %s, %s, %s, %s, %s,
                    %s, %s, %s)
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
                json.dumps(header["summary"]),
                json.dumps(header["conservation"]),
                sha,
                backup,
                None
                if status != "DRIFT"
                else "airflow dags trigger erp_drift_reconciliation --conf "
                f'\'{{"period_start": "{start:%Y-%m-%dT%H:%M:%SZ}", "period_end": "{end:%Y-%m-%dT%H:%M:%SZ}", '
                '"repair": true}\'',
                error_message,
                json.dumps(header["tolerances"]),
                json.dumps(header["invariants"]),
                json.dumps({"saas": "GET /v1/charges, /v1/invoices by created", "erp": "erp_staging"}),
            ),
        )
        report_id = cur.fetchone()[0]
        execute_values(
            cur,
            f"INSERT INTO erp_sync.drift_report_items (report_id, {', '.join(ITEM_FIELDS)}) VALUES %s",
            [(report_id, *(i[f] for f in ITEM_FIELDS)) for i in items],
            page_size=2000,
        )
        execute_values(
            cur,
            f"INSERT INTO erp_sync.drift_report_totals (report_id, {', '.join(TOTAL_FIELDS)}) VALUES %s",
            [(report_id, *(t[f] for f in TOTAL_FIELDS)) for t in totals],
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


if __name__ == "__main__":  # python tests/browser/seed.py DSN -- demo data for the UI without `make demo`
    import sys

    import psycopg2

    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(MIGRATIONS.parents[2])]
    target = psycopg2.connect(sys.argv[1])
    apply_schema(target)
    done = seed_reports(target)
    print(f"seeded reports {[r.report_id for r in done.reports]} into {sys.argv[1].rsplit('/', 1)[-1]}")
    target.close()
