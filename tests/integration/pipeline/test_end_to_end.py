"""The exactly-once protocol end to end: the sandbox over HTTP, real Postgres and Redis.

After each scenario -- a clean full sync, incremental syncs after mutations, crashes (SIGKILL) at
every point of the load, a lost Redis ledger, a window replayed three times, two runs of one stream
at once -- staging must equal the sandbox's truth exactly, with no duplicate key, and the
conservation law must hold for every committed batch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg2
import pytest
import redis

from erp_sync.clients.auth import BearerSecretKey
from erp_sync.clients.client import SaaSClient
from erp_sync.core.money import to_minor
from erp_sync.pipeline import StreamRunResult, WindowRequest, sync_stream
from erp_sync.sandbox.testing import SandboxHandle, running_sandbox
from erp_sync.streams import get_stream

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
STRIPE_STREAMS = ("customers", "invoices", "charges", "refunds", "credit_notes")
REDIS_URL = os.environ.get("ERP_SYNC_TEST_REDIS", "redis://127.0.0.1:6379/0")


# -- the two sides ---------------------------------------------------------------------------------


def _minor(amount: Decimal, currency: str) -> int:
    return to_minor(amount, currency)


def truth_state(sandbox: SandboxHandle) -> dict[str, dict[str, tuple[Any, ...]]]:
    """What staging must hold, from the sandbox's ground truth (amounts in minor units)."""
    objects = orjson.loads(orjson.dumps(sandbox.admin.truth(objects=True)))["objects"]
    lines = {  # a line's own (item-level) discounts, not the invoice-level shares (ADR 0019)
        line["id"]: (
            inv_id,
            line["amount"],
            sum(a["amount"] for a in line["discount_amounts"] if a["discount"] in line["discounts"]),
        )
        for inv_id, inv_lines in objects["invoice_lines"].items()
        for line in inv_lines
    }
    return {
        "customers": {c["id"]: (c["name"], c["email"]) for c in objects["customers"]},
        "ar_invoices": {
            i["id"]: (i["currency"].upper(), i["total"], i["status"]) for i in objects["invoices"]
        },
        "ar_invoice_lines": lines,
        "ar_receipts": {
            c["id"]: (c["currency"].upper(), c["amount"], c["amount_refunded"], c["status"])
            for c in objects["charges"]
        },
        "ar_refunds": {
            r["id"]: (r["currency"].upper(), r["amount"], r["status"]) for r in objects["refunds"]
        },
        "ar_credit_memos": {
            n["id"]: (n["currency"].upper(), n["total"], n["status"]) for n in objects["credit_notes"]
        },
    }


def staging_state(dsn: str) -> dict[str, dict[str, tuple[Any, ...]]]:
    """The live rows of staging (tombstones and retired lines, `interface_status = 'DELETED'`, are
    what the SaaS no longer has)."""
    queries = {
        "customers": "SELECT source_id, name, email FROM erp_staging.customers",
        "ar_invoices": "SELECT source_id, currency_code, total_amount, status FROM erp_staging.ar_invoices",
        "ar_invoice_lines": "SELECT l.source_id, l.invoice_source_id, l.amount, l.currency_code,"
        " l.discount_amount FROM erp_staging.ar_invoice_lines l",
        "ar_receipts": "SELECT source_id, currency_code, amount, amount_refunded, status FROM erp_staging.ar_receipts",
        "ar_refunds": "SELECT source_id, currency_code, amount, status FROM erp_staging.ar_refunds",
        "ar_credit_memos": "SELECT source_id, currency_code, total_amount, status FROM erp_staging.ar_credit_memos",
    }
    out: dict[str, dict[str, tuple[Any, ...]]] = {}
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        for table, sql in queries.items():
            cur.execute(sql + " WHERE interface_status <> 'DELETED'")
            rows = cur.fetchall()
            ids = [r[0] for r in rows]
            assert len(ids) == len(set(ids)), f"duplicate keys in {table}"
            if table == "customers":
                out[table] = {r[0]: (r[1], r[2]) for r in rows}
            elif table == "ar_invoice_lines":
                out[table] = {
                    r[0]: (r[1], _minor(r[2], r[3]), None if r[4] is None else _minor(r[4], r[3]))
                    for r in rows
                }
            elif table == "ar_receipts":
                out[table] = {r[0]: (r[1], _minor(r[2], r[1]), _minor(r[3], r[1]), r[4]) for r in rows}
            else:
                out[table] = {r[0]: (r[1], _minor(r[2], r[1]), r[3]) for r in rows}
    conn.close()
    return out


def assert_staging_equals_truth(dsn: str, sandbox: SandboxHandle) -> None:
    expected, actual = truth_state(sandbox), staging_state(dsn)
    for table, rows in expected.items():
        missing = sorted(set(rows) - set(actual[table]))[:5]
        extra = sorted(set(actual[table]) - set(rows))[:5]
        wrong = [
            (k, rows[k], actual[table][k]) for k in rows if k in actual[table] and rows[k] != actual[table][k]
        ]
        assert not missing and not extra and not wrong, (
            f"{table}: missing {missing}, extra {extra}, different {wrong[:5]}"
        )


def assert_conservation(dsn: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM erp_sync.sync_batches"
            " WHERE extracted <> loaded_new + loaded_changed + skipped_unchanged + rejected"
        )
        assert cur.fetchone()[0] == 0
    conn.close()


def staging_row_versions(dsn: str) -> dict[str, set[tuple[str, str]]]:
    """(source_id, xmin) per table: xmin changes whenever Postgres writes a row, whatever the counters say."""
    tables = ("customers", "ar_invoices", "ar_invoice_lines", "ar_receipts", "ar_refunds", "ar_credit_memos")
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        out = {}
        for table in tables:
            cur.execute(f"SELECT source_id, xmin::text FROM erp_staging.{table}")
            out[table] = set(cur.fetchall())
    conn.close()
    return out


def cursor_of(dsn: str, stream: str) -> Any:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT cursor_value FROM erp_sync.stream_state WHERE stream = %s", (stream,))
        row = cur.fetchone()
    conn.close()
    return row[0] if row else None


# -- running syncs ---------------------------------------------------------------------------------


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=150, seed=11) as handle:
        yield handle


@pytest.fixture
def staging(migrated_pg_dsn: str) -> str:
    return migrated_pg_dsn


def sync_in_process(
    sandbox: SandboxHandle,
    dsn: str,
    namespace: str,
    streams: tuple[str, ...] = STRIPE_STREAMS,
    full_refresh: bool = False,
    **kwargs: Any,
) -> dict[str, StreamRunResult]:
    client = SaaSClient(sandbox.base_url, BearerSecretKey(sandbox.secret_key))
    redis_client = redis.Redis.from_url(REDIS_URL)
    conn = psycopg2.connect(dsn)
    results = {}
    try:
        for name in streams:
            results[name] = sync_stream(
                spec=get_stream(name), client=client, conn=conn, redis_client=redis_client,
                run_id=f"test-{uuid.uuid4().hex[:8]}", window=WindowRequest(full_refresh=full_refresh), namespace=namespace, **kwargs,
            )  # fmt: skip
    finally:
        conn.close()
        redis_client.close()
    return results


def sync_subprocess(
    sandbox: SandboxHandle,
    dsn: str,
    namespace: str,
    stream: str,
    crash_at: str | None = None,
    batch_records: int = 40,
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ERP_SYNC_SECRET_KEY=sandbox.secret_key, PYTHONPATH=str(ROOT / "include"))
    env.pop("ERP_SYNC_CRASH_AT", None)
    if crash_at:
        env["ERP_SYNC_CRASH_AT"] = crash_at
    cmd = [sys.executable, "-m", "erp_sync.cli", "sync", "--stream", stream, "--base-url", sandbox.base_url,
           "--dsn", dsn, "--redis-url", REDIS_URL, "--namespace", namespace,
           "--batch-records", str(batch_records)]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


# -- the scenarios ---------------------------------------------------------------------------------


def test_full_then_incremental_syncs_equal_the_truth(sandbox, staging, redis_namespace) -> None:
    first = sync_in_process(sandbox, staging, redis_namespace)
    assert all(r.mode == "full" for r in first.values())
    assert first["invoices"].loaded_new == 150
    assert_staging_equals_truth(staging, sandbox)

    for _ in range(3):
        sandbox.admin.mutate(25)
        time.sleep(1.1)  # the window ends at a whole second: let the mutation's second pass
        later = sync_in_process(sandbox, staging, redis_namespace)
        assert all(r.mode == "incremental" for r in later.values()), {
            k: r.window_reason for k, r in later.items()
        }
        assert sum(r.loaded_new + r.loaded_changed for r in later.values()) > 0
        assert_staging_equals_truth(staging, sandbox)
    assert_conservation(staging)


def test_replaying_a_loaded_window_three_times_writes_no_row(sandbox, staging, redis_namespace) -> None:
    sync_in_process(sandbox, staging, redis_namespace)
    before = staging_row_versions(staging)
    for _ in range(3):
        again = sync_in_process(sandbox, staging, redis_namespace, full_refresh=True)
        assert sum(r.loaded_new + r.loaded_changed for r in again.values()) == 0
        assert sum(r.skipped_unchanged for r in again.values()) == sum(r.extracted for r in again.values())
    assert staging_row_versions(staging) == before
    assert_staging_equals_truth(staging, sandbox)
    assert_conservation(staging)


def test_a_flushed_ledger_is_rebuilt_and_nothing_is_rewritten(
    sandbox, staging, redis_namespace, redis_client
):
    sync_in_process(sandbox, staging, redis_namespace)
    before = staging_row_versions(staging)
    deleted = sum(redis_client.delete(k) for k in redis_client.scan_iter(match=f"{redis_namespace}:*"))
    assert deleted > 0
    again = sync_in_process(sandbox, staging, redis_namespace, full_refresh=True)
    assert sum(r.loaded_new + r.loaded_changed for r in again.values()) == 0
    assert staging_row_versions(staging) == before
    sandbox.admin.mutate(20)
    time.sleep(1.1)
    sync_in_process(sandbox, staging, redis_namespace)
    assert_staging_equals_truth(staging, sandbox)
    # batch ids stay unique even though the Redis counter was lost with the ledger
    with psycopg2.connect(staging) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT batch_id) FROM erp_sync.sync_batches")
        total, distinct = cur.fetchone()
    conn.close()
    assert total == distinct


@pytest.mark.parametrize(
    "crash_at", ["before_copy", "during_copy", "before_commit", "after_commit_before_ledger"]
)
def test_sigkill_at_each_point_of_the_load_then_rerun(sandbox, staging, redis_namespace, crash_at) -> None:
    sync_in_process(
        sandbox, staging, redis_namespace, streams=("customers", "charges", "refunds", "credit_notes")
    )
    crashed = sync_subprocess(sandbox, staging, redis_namespace, "invoices", crash_at=crash_at)
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    if crash_at != "after_commit_before_ledger":
        # nothing of the window's last batch committed, so the cursor has not moved
        assert cursor_of(staging, "invoices") is None
    rerun = sync_subprocess(sandbox, staging, redis_namespace, "invoices")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert cursor_of(staging, "invoices") is not None
    assert_staging_equals_truth(staging, sandbox)
    assert_conservation(staging)


def test_two_runs_of_one_stream_at_once_never_interleave(sandbox, staging, redis_namespace) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            sync_in_process(sandbox, staging, redis_namespace, streams=("invoices",), batch_records=30)
        except BaseException as exc:  # the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    with psycopg2.connect(staging) as conn, conn.cursor() as cur:
        cur.execute("SELECT sum(loaded_new) FROM erp_sync.sync_batches WHERE stream = 'invoices'")
        assert cur.fetchone()[0] == 150  # every invoice inserted exactly once across both runs
    conn.close()
    sync_in_process(
        sandbox, staging, redis_namespace, streams=("customers", "charges", "refunds", "credit_notes")
    )
    assert_staging_equals_truth(staging, sandbox)
    assert_conservation(staging)


def test_dry_run_reports_and_writes_nothing(sandbox, staging, redis_namespace) -> None:
    planned = sync_in_process(sandbox, staging, redis_namespace, streams=("invoices",), dry_run=True)
    assert planned["invoices"].loaded_new == 150
    assert planned["invoices"].dry_run_samples, "a dry run shows a sample of what it would write"
    with psycopg2.connect(staging) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM erp_staging.ar_invoices), (SELECT count(*) FROM erp_sync.sync_batches),"
            " (SELECT count(*) FROM erp_sync.stream_state), (SELECT count(*) FROM erp_sync.outbox)"
        )
        assert cur.fetchone() == (0, 0, 0, 0)
    conn.close()


def test_same_second_events_split_across_batches_keep_the_newest_snapshot(
    sandbox, staging, redis_namespace
) -> None:
    """A new invoice emits invoice.created (draft) and invoice.finalized (open) in the same second.
    Events are listed newest first, so when a batch boundary falls between them the older snapshot
    arrives in a later batch with the same version: it must not overwrite the newer one."""
    sync_in_process(sandbox, staging, redis_namespace, streams=("invoices",))
    sandbox.admin.mutate(4, kinds=["new_invoice"])
    time.sleep(1.1)
    client = SaaSClient(sandbox.base_url, BearerSecretKey(sandbox.secret_key), page_size=1)
    redis_client = redis.Redis.from_url(REDIS_URL)
    conn = psycopg2.connect(staging)
    try:
        result = sync_stream(
            spec=get_stream("invoices"), client=client, conn=conn, redis_client=redis_client,
            run_id="test-same-second", window=WindowRequest(), namespace=redis_namespace, batch_records=1,
        )  # fmt: skip
    finally:
        conn.close()
        redis_client.close()
    assert result.mode == "incremental"
    assert len(result.batch_ids) >= 8  # one event per batch: each pair straddles a boundary
    assert result.loaded_new == 4
    expected, actual = truth_state(sandbox), staging_state(staging)
    for table in ("ar_invoices", "ar_invoice_lines"):
        wrong = {
            k: (v, actual[table].get(k)) for k, v in expected[table].items() if actual[table].get(k) != v
        }
        assert not wrong, f"{table}: {wrong}"
    assert_conservation(staging)
