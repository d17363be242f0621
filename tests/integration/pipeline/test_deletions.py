"""Deleted records end to end (ADR 0015), against real Postgres, Redis and the sandbox: a deleted
customer and deleted draft invoices become tombstones in staging (their lines retired with them), a
re-read of the same events writes nothing, and the period still reconciles. A deletion quarantined
for its snapshot stays a deletion when it is replayed."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg2
import pytest
import redis
from test_end_to_end import (
    REDIS_URL,
    assert_conservation,
    assert_staging_equals_truth,
    staging_row_versions,
    sync_in_process,
)

from erp_sync.clients.auth import BearerSecretKey
from erp_sync.clients.client import SaaSClient
from erp_sync.clients.sources import SourceClients
from erp_sync.core.money import ACCEPTED_CURRENCIES_ENV
from erp_sync.pipeline import replay_rejections
from erp_sync.reconcile_run import parse_request, run_request
from erp_sync.sandbox.testing import SandboxHandle
from erp_sync.sandbox.world import CURRENCIES

pytestmark = [pytest.mark.integration]


def _status(dsn: str, table: str, column: str, ids: set[str]) -> dict[str, set[str]]:
    """interface_status -> source ids, for the rows of `table` whose `column` is one of `ids`."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT interface_status, source_id FROM erp_staging.{table} WHERE {column} = ANY(%s)",
            (sorted(ids),),
        )
        rows = cur.fetchall()
    conn.close()
    out: dict[str, set[str]] = {}
    for status, source_id in rows:
        out.setdefault(status, set()).add(source_id)
    return out


def _reconcile_status(sandbox: SandboxHandle, dsn: str) -> Any:
    conf = {
        "period_start": "2020-01-01T00:00:00Z",
        "period_end": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
    }
    conn = psycopg2.connect(dsn)
    try:
        client = SaaSClient(sandbox.base_url, BearerSecretKey(sandbox.secret_key))
        outcome = run_request(
            conn=conn,
            clients=SourceClients({"stripe": client}),
            request=parse_request(conf, now=datetime.now(UTC)),
            run_id="deletions",
        )
    finally:
        conn.close()
    return outcome.reports[-1]


def test_deleted_customers_and_draft_invoices_become_tombstones(sandbox, staging, redis_namespace) -> None:
    drafts = sandbox.admin.mutate(6, kinds=["new_draft_invoice"])
    draft_ids = {c["id"] for c in drafts["applied"]}
    time.sleep(1.1)
    sync_in_process(sandbox, staging, redis_namespace)  # the first run: a full refresh, drafts included
    assert _status(staging, "ar_invoices", "source_id", draft_ids) == {"PENDING": draft_ids}
    draft_lines = _status(staging, "ar_invoice_lines", "invoice_source_id", draft_ids)["PENDING"]
    assert draft_lines

    gone = sandbox.admin.mutate(5, kinds=["delete_draft_invoice", "delete_customer"])["applied"]
    deleted_invoices = {c["id"] for c in gone if c["kind"] == "delete_draft_invoice"}
    deleted_customers = {c["id"] for c in gone if c["kind"] == "delete_customer"}
    assert deleted_invoices and deleted_customers and deleted_invoices <= draft_ids
    time.sleep(1.1)
    delta = sync_in_process(sandbox, staging, redis_namespace)
    assert {r.mode for r in delta.values()} == {"incremental"}
    assert delta["invoices"].loaded_changed == len(deleted_invoices)
    assert delta["customers"].loaded_changed == len(deleted_customers)

    assert _status(staging, "ar_invoices", "source_id", deleted_invoices) == {"DELETED": deleted_invoices}
    assert _status(staging, "customers", "source_id", deleted_customers) == {"DELETED": deleted_customers}
    lines = _status(staging, "ar_invoice_lines", "invoice_source_id", deleted_invoices)
    assert set(lines) == {"DELETED"} and lines["DELETED"] <= draft_lines
    assert_staging_equals_truth(staging, sandbox)  # the live rows are the SaaS's, and no more

    # The next run's lookback reads the same deletion events again: nothing is written.
    before = staging_row_versions(staging)
    again = sync_in_process(sandbox, staging, redis_namespace)
    assert sum(r.loaded_new + r.loaded_changed for r in again.values()) == 0
    assert again["invoices"].extracted >= len(deleted_invoices)
    assert staging_row_versions(staging) == before
    assert_conservation(staging)

    # The deleted drafts are in neither side of the period: it reconciles.
    report = _reconcile_status(sandbox, staging)
    assert report.status == "OK", report.message


def test_a_quarantined_deletion_replays_as_a_tombstone(
    sandbox, staging, redis_namespace, monkeypatch
) -> None:
    drafts = {c["id"] for c in sandbox.admin.mutate(8, kinds=["new_draft_invoice"])["applied"]}
    time.sleep(1.1)
    sync_in_process(sandbox, staging, redis_namespace)
    gone = sandbox.admin.mutate(3, kinds=["delete_draft_invoice"])["applied"]
    deleted = {c["id"] for c in gone}
    assert deleted <= drafts
    with psycopg2.connect(staging) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT lower(currency_code) FROM erp_staging.ar_invoices WHERE source_id = ANY(%s)",
            (sorted(deleted),),
        )
        their_currencies = {row[0] for row in cur.fetchall()}
    conn.close()
    # The ERP stops taking the deleted drafts' currencies: the deletions' snapshots are quarantined.
    monkeypatch.setenv(ACCEPTED_CURRENCIES_ENV, ",".join(sorted(set(CURRENCIES) - their_currencies)).upper())
    time.sleep(1.1)
    delta = sync_in_process(sandbox, staging, redis_namespace)
    with psycopg2.connect(staging) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT source_id, reason_code, deleted, raw_payload FROM erp_sync.rejections"
            " WHERE status = 'PENDING'"
        )
        rows = cur.fetchall()
    conn.close()
    quarantined = {source_id: (reason, flag) for source_id, reason, flag, _ in rows}
    # What the replay reads: a deletion's snapshot as the client selected it, its lines emptied.
    assert all(
        orjson.loads(payload)["lines"] == {**orjson.loads(payload)["lines"], "data": [], "has_more": False}
        for _, _, flag, payload in rows
        if flag
    )
    # The lookback re-reads the other drafts' creation events too: quarantined, but not as deletions.
    assert delta["invoices"].rejected == len(quarantined) >= len(deleted)
    assert {source_id for source_id, (_, flag) in quarantined.items() if flag} == deleted
    assert {reason for reason, _ in quarantined.values()} == {"CURRENCY_NOT_ENABLED"}
    assert _status(staging, "ar_invoices", "source_id", deleted) == {"PENDING": deleted}  # still live

    monkeypatch.delenv(ACCEPTED_CURRENCIES_ENV)
    conn = psycopg2.connect(staging)
    try:
        replayed = replay_rejections(
            conn=conn,
            redis_client=redis.Redis.from_url(REDIS_URL),
            run_id="replay",
            namespace=redis_namespace,
        )
    finally:
        conn.close()
    assert (replayed.replayed, replayed.still_rejected) == (len(quarantined), 0)
    assert _status(staging, "ar_invoices", "source_id", deleted) == {"DELETED": deleted}
    assert set(_status(staging, "ar_invoice_lines", "invoice_source_id", deleted)) == {"DELETED"}
    assert_staging_equals_truth(staging, sandbox)
    assert_conservation(staging)
