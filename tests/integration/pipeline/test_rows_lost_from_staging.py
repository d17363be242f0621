"""Rows deleted from staging outside the sync, against real Postgres, Redis and the sandbox: the ledger
still holds their keys, so a full refresh skips them as unchanged; once the table's ledger marker is
deleted, the next load rebuilds the ledger from Postgres and the full refresh stages them again
(README, "Rows deleted from staging")."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from erp_sync.clients.auth import BearerSecretKey
from erp_sync.clients.client import SaaSClient
from erp_sync.pipeline import WindowRequest, sync_stream
from erp_sync.sandbox.testing import SandboxHandle, running_sandbox
from erp_sync.store.ledger import RedisLedger
from erp_sync.streams import STREAMS
from tests.integration.reconcile.repair_checks import sql_rows

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=60, seed=12) as handle:
        yield handle


def _full_refresh(sandbox: SandboxHandle, conn: Any, redis_client: redis.Redis, ns: str) -> Any:
    return sync_stream(
        spec=STREAMS["invoices"],
        client=SaaSClient(sandbox.base_url, BearerSecretKey(sandbox.secret_key), page_size=50),
        conn=conn,
        redis_client=redis_client,
        run_id=f"sync-{time.monotonic_ns()}",
        namespace=ns,
        batch_records=100,
        window=WindowRequest(full_refresh=True, window_end=datetime.now(UTC) + timedelta(days=1)),
    )


def _lines(conn: Any) -> dict[str, str]:
    return dict(sql_rows(conn, "SELECT source_id, row_sha256 FROM erp_staging.ar_invoice_lines"))


def test_lines_deleted_from_staging_come_back_once_their_ledger_is_rebuilt(
    sandbox, conn, redis_client, redis_namespace
):
    ns = redis_namespace
    _full_refresh(sandbox, conn, redis_client, ns)
    synced = _lines(conn)
    [(invoice,)] = sql_rows(conn, "SELECT min(invoice_source_id) FROM erp_staging.ar_invoice_lines")
    lost = sql_rows(
        conn, "DELETE FROM erp_staging.ar_invoice_lines WHERE invoice_source_id = %s RETURNING 1", (invoice,)
    )
    assert lost

    again = _full_refresh(sandbox, conn, redis_client, ns)
    assert len(_lines(conn)) == len(synced) - len(lost)  # skipped: the ledger still holds their keys
    assert again.loaded_new == again.loaded_changed == 0

    redis_client.delete(RedisLedger(redis_client, namespace=ns).marker_key("ar_invoice_lines"))
    rebuilt = _full_refresh(sandbox, conn, redis_client, ns)
    assert _lines(conn) == synced
    assert rebuilt.loaded_changed == 1  # the invoice whose lines were written again
