"""SIGKILL at every crash point, then a re-run: staging exact, no duplicate, conservation, cursor.

Each case runs the window (batches A then B, B moves the cursor) in a subprocess that kills itself
with SIGKILL at the named point of batch A or B, checks what the crash left, then re-runs the window
to completion and checks the end state against the truth.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from store_factories import (
    REDIS_URL,
    WINDOW,
    expected_invoices,
    expected_lines,
    staging_invoices,
    staging_lines,
)
from store_runner import truth

from erp_sync.store.faults import CRASH_POINTS
from erp_sync.store.state import get_cursor

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RUNNER = Path(__file__).with_name("store_runner.py")


def run_window(dsn: str, namespace: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(RUNNER),
            "--dsn",
            dsn,
            "--redis-url",
            REDIS_URL,
            "--namespace",
            namespace,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def results(proc: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    return {r["batch"]: r for r in map(json.loads, proc.stdout.splitlines())}


def scalar(dsn: str, sql: str):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql)
        value = cur.fetchone()[0]
    conn.close()
    return value


def assert_window_complete(dsn: str) -> None:
    conn = psycopg2.connect(dsn)
    try:
        assert staging_invoices(conn) == expected_invoices(truth())
        assert staging_lines(conn) == expected_lines(truth())
        assert get_cursor(conn, "stripe", "invoices") == WINDOW[1]
    finally:
        conn.close()
    assert scalar(dsn, "SELECT count(*) FROM erp_sync.sync_batches") == 2
    # every committed batch adds up, and together they account for every extracted record once
    assert (
        scalar(
            dsn,
            "SELECT count(*) FROM erp_sync.sync_batches WHERE extracted <> loaded_new + "
            "loaded_changed + skipped_unchanged + rejected",
        )
        == 0
    )
    assert scalar(dsn, "SELECT sum(extracted) FROM erp_sync.sync_batches") == 21 + 26
    assert scalar(dsn, "SELECT sum(loaded_new) FROM erp_sync.sync_batches") == 40
    assert scalar(dsn, "SELECT sum(loaded_changed) FROM erp_sync.sync_batches") == 5
    assert scalar(dsn, "SELECT count(*) FROM erp_sync.rejections") == 2
    assert scalar(dsn, "SELECT count(*) FROM erp_sync.outbox") == 2
    assert scalar(dsn, "SELECT count(DISTINCT batch_id) FROM erp_sync.outbox") == 2


@pytest.mark.parametrize("batch", ["A", "B"])
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_sigkill_then_rerun_converges(migrated_pg_dsn, redis_namespace, point, batch):
    crashed = run_window(migrated_pg_dsn, redis_namespace, "--crash-at", point, "--crash-batch", batch)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    committed_before_crash = {"A": 0, "B": 1}[batch] + (point == "after_commit_before_ledger")
    assert scalar(migrated_pg_dsn, "SELECT count(*) FROM erp_sync.sync_batches") == committed_before_crash
    cursor_moved = committed_before_crash == 2
    assert (
        scalar(migrated_pg_dsn, "SELECT count(*) FROM erp_sync.stream_state WHERE cursor_value IS NOT NULL")
        == 1
    ) is cursor_moved
    expected_rows = {0: 0, 1: 20, 2: 40}[committed_before_crash]
    assert scalar(migrated_pg_dsn, "SELECT count(*) FROM erp_staging.ar_invoices") == expected_rows
    assert scalar(migrated_pg_dsn, "SELECT count(*) FROM erp_staging.ar_invoice_lines") == 2 * expected_rows

    rerun = run_window(migrated_pg_dsn, redis_namespace)
    assert rerun.returncode == 0, rerun.stderr
    done = results(rerun)
    assert [done[b]["already_committed"] for b in ("A", "B")] == [
        committed_before_crash >= 1,
        committed_before_crash >= 2,
    ]
    assert_window_complete(migrated_pg_dsn)


def test_crash_after_commit_then_lost_redis(migrated_pg_dsn, redis_namespace, redis_client):
    crashed = run_window(
        migrated_pg_dsn, redis_namespace, "--crash-at", "after_commit_before_ledger", "--crash-batch", "A"
    )
    assert crashed.returncode == -signal.SIGKILL
    for key in redis_client.scan_iter(match=f"{redis_namespace}:*"):  # Redis lost, counter included
        redis_client.delete(key)
    rerun = run_window(migrated_pg_dsn, redis_namespace)
    assert rerun.returncode == 0, rerun.stderr
    done = results(rerun)
    assert done["A"]["already_committed"] and not done["B"]["already_committed"]
    assert done["B"]["batch_id"] > done["A"]["batch_id"]  # the counter was re-seeded above Postgres
    assert_window_complete(migrated_pg_dsn)


def test_window_run_three_times_is_a_no_op_after_the_first(migrated_pg_dsn, redis_namespace):
    first = run_window(migrated_pg_dsn, redis_namespace)
    assert first.returncode == 0, first.stderr
    snapshot = scalar(
        migrated_pg_dsn,
        "SELECT string_agg(source_id || xmin::text || loaded_at::text, ',' "
        "ORDER BY source_id) FROM erp_staging.ar_invoices",
    )
    for _ in range(2):
        again = run_window(migrated_pg_dsn, redis_namespace)
        assert again.returncode == 0, again.stderr
        assert all(r["already_committed"] for r in results(again).values())
    assert (
        scalar(
            migrated_pg_dsn,
            "SELECT string_agg(source_id || xmin::text || loaded_at::text, ',' "
            "ORDER BY source_id) FROM erp_staging.ar_invoices",
        )
        == snapshot
    )
    assert_window_complete(migrated_pg_dsn)


def test_two_runs_of_one_stream_started_together(migrated_pg_dsn, redis_namespace):
    cmd = [
        sys.executable,
        str(RUNNER),
        "--dsn",
        migrated_pg_dsn,
        "--redis-url",
        REDIS_URL,
        "--namespace",
        redis_namespace,
    ]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outputs]
    runs = [{r["batch"]: r for r in map(json.loads, out.splitlines())} for out, _ in outputs]
    # one run did the work, the other waited for the lock and found both batches committed
    flags = sorted(tuple(run[b]["already_committed"] for b in ("A", "B")) for run in runs)
    assert flags == [(False, False), (True, True)]
    assert_window_complete(migrated_pg_dsn)
