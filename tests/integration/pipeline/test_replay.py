"""Quarantine and replay end to end: records the ERP cannot take yet are rejected with their reason,
the rest of each batch loads; once the cause is fixed, the replay loads them through the normal path
and staging equals the SaaS's truth."""

from __future__ import annotations

import psycopg2
import pytest
import redis
from test_end_to_end import (  # type: ignore[import-not-found]
    REDIS_URL,
    assert_conservation,
    assert_staging_equals_truth,
    staging_row_versions,
    sync_in_process,
)

from erp_sync.core.money import ACCEPTED_CURRENCIES_ENV
from erp_sync.pipeline import replay_rejections

pytestmark = pytest.mark.integration


def _rejections(dsn: str) -> list[tuple[str, str, str]]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT stream, reason_code, status FROM erp_sync.rejections ORDER BY rejection_id")
        rows = cur.fetchall()
    conn.close()
    return rows


def _replay(dsn: str, namespace: str, run_id: str, **filters):
    conn = psycopg2.connect(dsn)
    try:
        return replay_rejections(
            conn=conn,
            redis_client=redis.Redis.from_url(REDIS_URL),
            run_id=run_id,
            namespace=namespace,
            **filters,
        )
    finally:
        conn.close()


def test_quarantined_records_replay_after_the_fix(sandbox, staging, redis_namespace, monkeypatch) -> None:
    # The ERP has not enabled KWD yet: every KWD record is quarantined, everything else loads.
    monkeypatch.setenv(ACCEPTED_CURRENCIES_ENV, "USD,EUR,GBP,JPY")
    first = sync_in_process(sandbox, staging, redis_namespace)
    rejected = _rejections(staging)
    assert rejected, "the seeded data has KWD records"
    assert {reason for _, reason, _ in rejected} == {"CURRENCY_NOT_ENABLED"}
    assert sum(r.rejected for r in first.values()) == len(rejected)
    assert sum(r.loaded_new for r in first.values()) > 0  # the rest of each batch went on
    with pytest.raises(AssertionError):
        assert_staging_equals_truth(staging, sandbox)

    # Still not fixed: a replay leaves each one PENDING with its reason and one more attempt.
    still = _replay(staging, redis_namespace, "replay-1", stream="invoices")
    assert still.replayed == 0 and still.still_rejected == still.selected > 0
    with psycopg2.connect(staging) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM erp_sync.rejections WHERE stream = 'invoices' AND attempts = 1"
            " AND status = 'PENDING'"
        )
        assert cur.fetchone()[0] == still.selected
    conn.close()

    # The ERP enables KWD: replay everything.
    monkeypatch.delenv(ACCEPTED_CURRENCIES_ENV)
    done = _replay(staging, redis_namespace, "replay-2")
    assert done.selected == len(rejected) and done.replayed == len(rejected) and done.still_rejected == 0
    assert {status for _, _, status in _rejections(staging)} == {"REPLAYED"}
    assert_staging_equals_truth(staging, sandbox)
    assert_conservation(staging)

    # Nothing is pending, so a further replay selects nothing and writes nothing.
    before = staging_row_versions(staging)
    again = _replay(staging, redis_namespace, "replay-3")
    assert again.selected == 0
    assert staging_row_versions(staging) == before
