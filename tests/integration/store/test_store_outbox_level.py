"""Outbox pages are stored at the fast gzip level the loader declares and decompress to the exact page."""

from __future__ import annotations

import gzip

import pytest
from store_factories import invoice_batch, sample_invoices

from erp_sync.store.counters import next_batch_id
from erp_sync.store.loader import OUTBOX_GZIP_LEVEL, load_batch

pytestmark = pytest.mark.integration


def test_outbox_page_is_fast_gzip_and_exact(conn, ledger):
    key, mapped, pages = invoice_batch(sample_invoices(200))
    batch_id = next_batch_id(ledger.redis, ledger.namespace, conn)
    load_batch(conn, ledger, key, mapped, pages, batch_id=batch_id, cursor_after=None)
    with conn.cursor() as cur:
        cur.execute("SELECT content_gzip FROM erp_sync.outbox WHERE batch_id = %s", (batch_id,))
        (content,) = cur.fetchone()
    conn.rollback()

    stored = bytes(content)
    assert OUTBOX_GZIP_LEVEL == 2
    assert gzip.decompress(stored) == pages[0].body
    assert stored == gzip.compress(pages[0].body, compresslevel=2, mtime=0)  # deterministic (mtime=0)
    assert stored != gzip.compress(pages[0].body, compresslevel=6, mtime=0)
