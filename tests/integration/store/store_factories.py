"""Hand-built batches for the store tests: invoices with lines, and customers.

A test describes the SaaS truth as `Invoice`s (id, version, amounts, lines); `invoice_batch` maps a
list of them to a `MappedBatch` the way `map_pages` would (one row per record, lines as a child
table, `row_sha256` over the business fields) plus the raw `Page`s and the `BatchKey`.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pandas as pd
import psycopg2

from erp_sync.core.batch import CHILDREN_SHA256, BatchKey, MappedBatch, Page, Rejection
from erp_sync.core.hashing import combine_digests, frame_row_sha256

PG_ADMIN_DSN = os.environ.get("ERP_SYNC_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ERP_SYNC_TEST_REDIS", "redis://127.0.0.1:6379/0")
SOURCE = "stripe"
STREAM = "invoices"
WINDOW = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))

INVOICE_COLUMNS = [
    "customer_ref",
    "invoice_number",
    "status",
    "currency_code",
    "total_amount",
    "amount_paid",
    "amount_due",
    "issued_at",
    "due_at",
]
LINE_COLUMNS = ["invoice_source_id", "line_number", "description", "quantity", "currency_code", "amount"]


@dataclass(frozen=True)
class Line:
    amount: Decimal
    description: str = "Seat"
    quantity: Decimal = Decimal("1")
    line_id: str | None = None  # default: il_<position>


@dataclass(frozen=True)
class Invoice:
    source_id: str
    version: int
    total: Decimal
    status: str = "open"
    currency: str = "USD"
    customer: str = "cus_1"
    lines: tuple[Line, ...] = field(default_factory=tuple)

    def bump(self, version: int, **changes: Any) -> Invoice:
        return replace(self, version=version, **changes)


def _invoice_frames(
    invoices: list[Invoice], *, children_digest: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    heads, lines = [], []
    for inv in invoices:
        heads.append(
            {
                "source_system": SOURCE,
                "source_id": inv.source_id,
                "customer_ref": inv.customer,
                "invoice_number": f"N-{inv.source_id}",
                "status": inv.status,
                "currency_code": inv.currency,
                "total_amount": inv.total,
                "amount_paid": Decimal("0"),
                "amount_due": inv.total,
                "issued_at": datetime(2026, 11, 1, 12, tzinfo=UTC),
                "due_at": None,
                "source_version": inv.version,
            }
        )
        for number, line in enumerate(inv.lines, start=1):
            lines.append(
                {
                    "source_system": SOURCE,
                    "source_id": f"{inv.source_id}:{line.line_id or f'il_{number}'}",
                    "invoice_source_id": inv.source_id,
                    "line_number": number,
                    "description": line.description,
                    "quantity": line.quantity,
                    "currency_code": inv.currency,
                    "amount": line.amount,
                    "source_version": inv.version,
                }
            )
    head = pd.DataFrame(heads, columns=["source_system", "source_id", *INVOICE_COLUMNS, "source_version"])
    line = pd.DataFrame(lines, columns=["source_system", "source_id", *LINE_COLUMNS, "source_version"])
    line["row_sha256"] = frame_row_sha256(line, LINE_COLUMNS) if len(line) else pd.Series(dtype=object)
    if not children_digest:  # a hand-built header: its hash covers its own fields only, no digest
        head["row_sha256"] = frame_row_sha256(head, INVOICE_COLUMNS) if len(head) else pd.Series(dtype=object)
        return head, line
    # As map_pages: a header's hash covers its lines' (so a removed line changes it), and the
    # header keeps their combined digest beside it (ADR 0027).
    by_invoice = line.groupby("invoice_source_id", sort=False)["row_sha256"].agg(list).to_dict()
    head[CHILDREN_SHA256] = [combine_digests(by_invoice.get(sid, [])) for sid in head["source_id"]]
    head["row_sha256"] = (
        frame_row_sha256(head, [*INVOICE_COLUMNS, CHILDREN_SHA256]) if len(head) else pd.Series(dtype=object)
    )
    return head, line


def _body(invoices: list[Invoice], rejections: list[Rejection], tag: str) -> bytes:
    data = [
        {
            "id": i.source_id,
            "version": i.version,
            "total": str(i.total),
            "status": i.status,
            "lines": [str(line.amount) for line in i.lines],
        }
        for i in invoices
    ]
    return json.dumps({"tag": tag, "data": data, "bad": [r.raw_payload for r in rejections]}).encode()


def invoice_batch(
    invoices: list[Invoice],
    *,
    rejections: list[Rejection] | None = None,
    superseded: list[Invoice] | None = None,
    run_id: str = "run-1",
    tag: str = "",
    window: tuple[datetime | None, datetime | None] = WINDOW,
    children_digest: bool = True,
) -> tuple[BatchKey, MappedBatch, list[Page]]:
    """A batch of `invoices` (newest copy of each), older in-batch copies, and rejections."""
    rejections = rejections or []
    superseded = superseded or []
    head, line = _invoice_frames(invoices, children_digest=children_digest)
    page = Page(
        stream=STREAM,
        page_no=1,
        url=f"https://sandbox.test/v1/invoices?tag={tag}",
        body=_body(invoices + superseded, rejections, tag),
        records=[{"id": i.source_id} for i in invoices + superseded],
        versions=[i.version for i in invoices + superseded],
        problems=list(rejections),
    )
    mapped = MappedBatch(
        source_system=SOURCE,
        stream=STREAM,
        primary_table="ar_invoices",
        tables={"ar_invoices": head, "ar_invoice_lines": line},
        rejections=list(rejections),
        extracted=len(invoices) + len(superseded) + len(rejections),
        superseded=len(superseded),
    )
    digest = hashlib.sha256()
    digest.update(page.url.encode() + b"\0" + page.body)
    key = BatchKey(run_id, SOURCE, STREAM, window[0], window[1], digest.hexdigest())
    return key, mapped, [page]


def bad_record(source_id: str | None, reason: str = "INVALID_FIELD") -> Rejection:
    payload = json.dumps({"id": source_id, "total": "not-a-number"})
    return Rejection(
        stream=STREAM,
        reason_code=reason,
        message="total is not a number",
        raw_payload=payload,
        source_id=source_id,
    )


def sample_invoices(n: int, *, version: int = 100, prefix: str = "in_") -> list[Invoice]:
    """`n` invoices across currencies with exponents 0, 2 and 3, each with two lines."""
    currencies = [("USD", Decimal("10.25")), ("JPY", Decimal("1500")), ("KWD", Decimal("3.125"))]
    out = []
    for i in range(n):
        currency, unit = currencies[i % 3]
        lines = (Line(unit), Line(unit * 2, description=f'Usage "{i}", metered\nline'))
        out.append(Invoice(f"{prefix}{i:05d}", version, unit * 3, currency=currency, lines=lines))
    return out


def staging_invoices(conn: Any) -> dict[str, tuple[Any, ...]]:
    """source_id -> (status, currency, total, version, row_sha256) as Postgres holds them."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT source_id, status, currency_code, total_amount, source_version, row_sha256 "
            "FROM erp_staging.ar_invoices WHERE source_system = %s",
            (SOURCE,),
        )
        rows = {r[0]: tuple(r[1:]) for r in cur.fetchall()}
    conn.rollback()
    return rows


def expected_invoices(invoices: list[Invoice]) -> dict[str, tuple[Any, ...]]:
    head, _ = _invoice_frames(invoices)
    return {
        r.source_id: (r.status, r.currency_code, r.total_amount, r.source_version, r.row_sha256)
        for r in head.itertuples()
    }


def staging_lines(conn: Any) -> dict[str, tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT source_id, invoice_source_id, amount, row_sha256 FROM erp_staging.ar_invoice_lines"
        )
        rows = {r[0]: tuple(r[1:]) for r in cur.fetchall()}
    conn.rollback()
    return rows


def expected_lines(invoices: list[Invoice]) -> dict[str, tuple[Any, ...]]:
    _, line = _invoice_frames(invoices)
    return {r.source_id: (r.invoice_source_id, r.amount, r.row_sha256) for r in line.itertuples()}


def row_versions(conn: Any, table: str = "ar_invoices") -> dict[str, tuple[str, Any, int]]:
    """source_id -> (xmin, loaded_at, sync_batch_id): what changes whenever Postgres rewrites a row."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT source_id, xmin::text, loaded_at, sync_batch_id FROM erp_staging.{table}")
        rows = {r[0]: (r[1], r[2], r[3]) for r in cur.fetchall()}
    conn.rollback()
    return rows


def _admin(sql: str) -> None:
    conn = psycopg2.connect(PG_ADMIN_DSN)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def make_database() -> str:
    """A new empty database (the caller drops it); DSN returned."""
    name = f"erp_store_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name


def drop_database(dsn: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
