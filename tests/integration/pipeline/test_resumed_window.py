"""A window read again after some of its records changed, against the sandbox, Postgres and Redis:
its unchanged batches are found committed, so the client reads the pages after them for navigation
only (keys and line ids), and the changed batches among those pages are decoded in full when they
are loaded. Staging must end equal to the sandbox's truth."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg2
import pytest
import redis
from test_end_to_end import REDIS_URL, assert_conservation, assert_staging_equals_truth, sync_in_process

from erp_sync.clients.auth import BearerSecretKey
from erp_sync.clients.client import SaaSClient
from erp_sync.core.batch import Page
from erp_sync.pipeline import StreamRunResult, WindowRequest, sync_stream
from erp_sync.sandbox.testing import SandboxHandle
from erp_sync.streams import get_stream

pytestmark = pytest.mark.integration


class RecordingClient(SaaSClient):
    """The real client, remembering each page it yielded and whether it was read for navigation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.yielded: list[tuple[Page, bool]] = []

    def iter_pages(self, *args: Any, **kwargs: Any) -> Iterator[Page]:
        for page in super().iter_pages(*args, **kwargs):
            self.yielded.append((page, page.rebuild_records is not None))
            yield page


def _sync_invoices(
    sandbox: SandboxHandle, dsn: str, namespace: str, end: datetime
) -> tuple[StreamRunResult, RecordingClient]:
    client = RecordingClient(sandbox.base_url, BearerSecretKey(sandbox.secret_key), page_size=2)
    conn = psycopg2.connect(dsn)
    redis_client = redis.Redis.from_url(REDIS_URL)
    try:
        result = sync_stream(
            spec=get_stream("invoices"), client=client, conn=conn, redis_client=redis_client,
            run_id=f"test-{uuid.uuid4().hex[:8]}", window=WindowRequest(full_refresh=True, window_end=end),
            namespace=namespace, batch_records=10,
        )  # fmt: skip
    finally:
        conn.close()
        redis_client.close()
        client.close()
    return result, client


def test_changed_batches_after_committed_ones_load_from_pages_read_for_navigation(
    sandbox, staging, redis_namespace
) -> None:
    end = datetime.now(UTC).replace(microsecond=0)
    first, _ = _sync_invoices(sandbox, staging, redis_namespace, end)
    assert first.already_committed_batches == 0 and first.loaded_new > 0

    paid = sandbox.admin.mutate(12, kinds=["pay_invoice"])
    assert paid
    again, client = _sync_invoices(sandbox, staging, redis_namespace, end)

    assert again.already_committed_batches > 0  # the unchanged batches: nothing read of their records
    assert again.loaded_changed > 0
    navigated = [page for page, navigation in client.yielded if navigation]
    assert navigated
    # a page read for navigation that a changed batch loaded had its records decoded then
    decoded = [page for page in navigated if page.rebuild_records is None]
    assert decoded, "no changed batch fell among the pages read for navigation"
    assert all("total" in record for page in decoded for record in page.records)
    # a page of a committed batch kept only what the walk reads
    assert any("total" not in page.records[0] for page in navigated if page.rebuild_records is not None)
    # the truth is compared whole: the other streams are synced first, past the payments' second
    time.sleep(1.1)
    sync_in_process(
        sandbox, staging, redis_namespace, streams=("customers", "charges", "refunds", "credit_notes")
    )
    assert_staging_equals_truth(staging, sandbox)
    assert_conservation(staging)
