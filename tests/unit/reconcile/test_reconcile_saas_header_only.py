"""`read_saas_side` re-reads headers only, against the real sandbox over HTTP: it makes no
`/v1/invoices/{id}/lines` requests, yet gives exactly the side the full read (lines completed,
validated, mapped and hashed) gives, and the sandbox's own per-currency/status totals."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from erp_sync.clients.auth import BearerSecretKey
from erp_sync.clients.client import SaaSClient
from erp_sync.clients.errors import AuthenticationError
from erp_sync.core.reconcile import (
    METRICS_BY_TABLE,
    PERIOD_COLUMN_BY_TABLE,
    SCALE,
    SideBuilder,
    currency_exponent,
)
from erp_sync.core.transform import map_pages
from erp_sync.reconcile_run import read_saas_side
from erp_sync.sandbox.testing import SandboxHandle, running_sandbox
from erp_sync.streams import STREAMS
from erp_sync.streams.spec import StreamSpec

pytestmark = [pytest.mark.integration]

LINES_ROUTE = "GET /v1/invoices/{id}/lines"
START = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=400, seed=4) as handle:
        yield handle


def _client(sandbox: SandboxHandle) -> SaaSClient:
    return SaaSClient(sandbox.base_url, BearerSecretKey(sandbox.secret_key), page_size=50)


def _end() -> datetime:
    return datetime.now(UTC) + timedelta(days=1)


def _full_read_side(client: SaaSClient, spec: StreamSpec, start: datetime, end: datetime) -> pd.DataFrame:
    """What `read_saas_side` gave before it went header-only: lines completed and fully mapped."""
    table = spec.target_tables[0]
    builder = SideBuilder(stream=spec.name, metrics=METRICS_BY_TABLE[table])
    pages = list(client.iter_pages(spec, mode="full", window_start=start, window_end=end))
    mapped = map_pages(spec, pages)
    assert mapped.rejections == []
    rows = mapped.tables[mapped.primary_table]
    stamps = pd.to_datetime(rows[PERIOD_COLUMN_BY_TABLE[table]], utc=True)
    builder.add(rows[(stamps >= pd.Timestamp(start)) & (stamps < pd.Timestamp(end))])
    return builder.frame()


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.sort_values("source_id").reset_index(drop=True)
    for col in ("currency_code", "status"):
        out[col] = out[col].astype(str)
    return out


def test_invoices_side_without_line_requests_equals_the_full_read(sandbox: SandboxHandle) -> None:
    spec = STREAMS["invoices"]
    end = _end()
    sandbox.admin.reset_counts()
    full_client = _client(sandbox)
    expected = _full_read_side(full_client, spec, START, end)
    assert full_client.stats.child_requests > 0, "the data must have truncated line lists to prove anything"
    assert sandbox.admin.request_counts()["by_route"].get(LINES_ROUTE, 0) > 0

    sandbox.admin.reset_counts()
    client = _client(sandbox)
    side, stats = read_saas_side(client, spec, START, end, batch_records=120)
    assert client.stats.child_requests == 0
    assert LINES_ROUTE not in sandbox.admin.request_counts()["by_route"]
    assert (stats.rejected, stats.records, stats.outside_period) == (0, len(expected), 0)
    pd.testing.assert_frame_equal(_sorted(side.frame), _sorted(expected))


def test_invoices_side_matches_the_sandbox_truth(sandbox: SandboxHandle) -> None:
    side, _ = read_saas_side(_client(sandbox), STREAMS["invoices"], START, _end())
    got = {
        row.source_id: (str(row.currency_code), str(row.status), int(row.total_amount))
        for row in side.frame.itertuples()
    }
    want = {}
    for invoice in sandbox.admin.truth(objects=True)["objects"]["invoices"]:
        code = invoice["currency"].upper()
        thousandths = invoice["total"] * 10 ** (SCALE - currency_exponent(code))
        want[invoice["id"]] = (code, invoice["status"], thousandths)
    assert got == want


@pytest.mark.parametrize("name", ["charges", "credit_notes"])
def test_streams_without_children_give_the_same_side(sandbox: SandboxHandle, name: str) -> None:
    spec = STREAMS[name]
    end = _end()
    expected = _full_read_side(_client(sandbox), spec, START, end)
    side, stats = read_saas_side(_client(sandbox), spec, START, end)
    assert stats.rejected == 0 and len(side) == len(expected) > 0
    pd.testing.assert_frame_equal(_sorted(side.frame), _sorted(expected))


def test_the_collector_is_restored_after_the_read(sandbox: SandboxHandle) -> None:
    spec = STREAMS["invoices"]
    assert gc.isenabled()
    read_saas_side(_client(sandbox), spec, START, _end(), batch_records=100)
    assert gc.isenabled()
    wrong_key = SaaSClient(sandbox.base_url, BearerSecretKey("sk_test_wrong"), page_size=50)
    with pytest.raises(AuthenticationError):
        read_saas_side(wrong_key, spec, START, _end())
    assert gc.isenabled(), "a failed read must not leave the collector off"
    gc.disable()
    try:
        read_saas_side(_client(sandbox), spec, START, _end())
        assert not gc.isenabled(), "a caller's disabled collector stays disabled"
    finally:
        gc.enable()
