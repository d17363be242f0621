"""A window read in slices (`window_slices`) against the sandbox: the same pages' records, in the same
order, as one walk; a window that fits one page costs one request; a failing slice fails the listing
and stops the other slices' threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from erp_sync.clients import BearerSecretKey, RetryPolicy, SaaSClient
from erp_sync.clients.errors import FatalApiError, RetryExhaustedError
from erp_sync.core.batch import Page
from erp_sync.sandbox.testing import SandboxHandle, running_sandbox
from erp_sync.streams import get_stream

pytestmark = [pytest.mark.integration]

HOUR = 3_600


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=400, seed=21) as sbx:
        now = int(time.time())
        for hours_ago in (5, 3, 1):  # an invoice changed in several slices: the newest snapshot wins
            sbx.admin.mutate(150, at=now - hours_ago * HOUR)
        yield sbx


def _client(sbx: SandboxHandle, slices: int, **kwargs: object) -> SaaSClient:
    return SaaSClient(
        sbx.base_url, BearerSecretKey(sbx.secret_key), window_slices=slices, page_size=40,
        progress=lambda stream, stats: None, **kwargs,
    )  # fmt: skip


def _read(client: SaaSClient, stream: str, mode: str, hours: int) -> list[Page]:
    end = datetime.now(UTC).replace(microsecond=0)
    pages = client.iter_pages(
        get_stream(stream), mode=mode, window_start=end - timedelta(hours=hours), window_end=end
    )  # type: ignore[arg-type]
    return list(pages)


def _records(pages: list[Page]) -> list[tuple[str, int]]:
    return [(str(r["id"]), v) for p in pages for r, v in zip(p.records, p.versions, strict=True)]


@pytest.mark.parametrize(
    ("stream", "mode"), [("invoices", "incremental"), ("charges", "incremental"), ("charges", "full")]
)
def test_slices_give_one_walks_records_in_its_order(sandbox: SandboxHandle, stream: str, mode: str) -> None:
    one_walk = _client(sandbox, 1)
    sliced = _client(sandbox, 4)
    whole = _read(one_walk, stream, mode, hours=6)
    sandbox.admin.reset_counts()
    in_slices = _read(sliced, stream, mode, hours=6)

    assert len(_records(whole)) > 40, "the window must span several pages to prove anything"
    assert _records(in_slices) == _records(whole)
    assert sum(p.superseded for p in in_slices) == sum(p.superseded for p in whole)
    if mode == "incremental":
        assert sum(p.superseded for p in whole) > 0, "some records must change in more than one slice"
    assert sliced.stats.slices == 4 and one_walk.stats.slices == 1
    route = "GET /v1/events" if mode == "incremental" else f"GET {get_stream(stream).path}"
    # the whole window's first page, then each slice's pages
    assert sandbox.admin.request_counts()["by_route"][route] >= 1 + 4


def test_a_window_that_fits_one_page_is_read_with_one_request(sandbox: SandboxHandle) -> None:
    client = _client(sandbox, 4)
    sandbox.admin.reset_counts()
    end = datetime.now(UTC)
    pages = list(
        client.iter_pages(
            get_stream("credit_notes"),
            mode="incremental",
            window_start=end - timedelta(minutes=30),
            window_end=end,
        )
    )
    assert sum(len(p.records) for p in pages) <= 40
    assert client.stats.slices == 1
    assert sandbox.admin.request_counts()["by_route"] == {"GET /v1/events": 1}


def test_a_failing_slice_fails_the_listing_and_stops_every_slice(sandbox: SandboxHandle) -> None:
    client = _client(sandbox, 4, retry=RetryPolicy(max_attempts=1))
    sandbox.admin.set_faults(http_503_every=4)  # the probe page passes; a slice's request fails
    try:
        with pytest.raises((RetryExhaustedError, FatalApiError)):
            _read(client, "invoices", "incremental", hours=6)
    finally:
        sandbox.admin.reset_faults()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _slice_threads():
        time.sleep(0.05)
    assert _slice_threads() == []


def _slice_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if "-slice-" in t.name and t.is_alive()]
