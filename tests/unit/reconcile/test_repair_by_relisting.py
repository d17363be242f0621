"""A stream without a by-id path is re-sent from one re-listing (ADR 0024), pure: the listing window
comes from the report, only the report's ids are kept (every field as received), all of them before
any write, and the re-sent page is shaped as the stream's own listing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from erp_sync.clients.pages import page_meta_for
from erp_sync.clients.sources import SourceClients
from erp_sync.reconcile_run import RelistWindow, fetch_first_chunks, fetched_page, relisted_records
from erp_sync.streams import STREAMS
from erp_sync.streams.spec import StreamSpec

PERIOD_START = datetime(2026, 11, 1, tzinfo=UTC)
LISTED_FROM = datetime(2026, 10, 31, tzinfo=UTC)
REPAIR_START = datetime(2026, 11, 28, 12, tzinfo=UTC)


def _order(order_id: str) -> dict[str, Any]:
    return {
        "order_id": order_id, "customer_id": "cus_1", "state": "paid", "currency": "USD",
        "total_cents": 1250, "created_at": "2026-11-02T10:00:00Z", "updated_at": "2026-11-03T10:00:00Z",
        "note": "a field the model does not read",
    }  # fmt: skip


@dataclass
class ListingClient:
    """Lists its pages (records narrow, whole on request, as the real client's) and records each walk."""

    pages: list[list[dict[str, Any]]]
    walks: list[tuple[str, datetime | None, datetime]] = field(default_factory=list)
    base_url: str = "https://orders.example.test"

    def iter_pages(self, spec: StreamSpec, *, mode: str, window_start: Any, window_end: Any) -> Iterator[Any]:
        self.walks.append((mode, window_start, window_end))
        for whole in self.pages:
            narrow = [{"order_id": r["order_id"]} for r in whole]
            yield SimpleNamespace(records=narrow, whole_record=lambda i, whole=whole: whole[i])

    def get_record(self, spec: StreamSpec, source_id: str) -> None:
        raise AssertionError("a stream without a by-id path is never asked by id")


def test_the_re_listing_keeps_the_report_s_ids_whole_and_says_which_it_did_not_return() -> None:
    client = ListingClient([[_order("o_1"), _order("o_2")], [_order("o_3")]])
    records, not_listed = relisted_records(
        client, STREAMS["orders"], ["o_3", "o_1", "o_9"], LISTED_FROM, REPAIR_START
    )
    assert records == [_order("o_3"), _order("o_1")] and not_listed == ["o_9"]
    assert client.walks == [("full", LISTED_FROM, REPAIR_START)]


def test_the_window_starts_where_the_report_s_re_read_listed_the_stream_and_ends_at_the_repair() -> None:
    report = {
        "period_start": PERIOD_START,
        "sources": {"saas": {"orders": {"listed_from": LISTED_FROM.isoformat()}, "charges": {}}},
    }
    window = RelistWindow.of_report(report, until=REPAIR_START)
    assert window.start_of("orders") == LISTED_FROM
    assert window.start_of("charges") == PERIOD_START  # no listing start recorded: the period's
    assert window.until == REPAIR_START


def test_every_record_is_re_listed_before_any_write_in_one_walk() -> None:
    """All of a re-listed stream's records come with its first chunk: the walk is done before the
    repair writes, and the chunks that follow ask for nothing more."""
    client = ListingClient([[_order(f"o_{n:03d}") for n in range(150)]])
    ids = {f"o_{n:03d}" for n in range(0, 150, 1)} | {"o_gone"}
    window = RelistWindow({"orders": LISTED_FROM}, PERIOD_START, REPAIR_START)
    targets = {"orders": {"missing": ids, "mismatched": {"o_001"}}}

    resends = fetch_first_chunks(SourceClients({"orders_api": client}), targets, window)["orders"]

    assert resends.relisted and len(client.walks) == 1
    chunks = list(resends.fetched_chunks())
    assert len(chunks) == 1 and len(client.walks) == 1
    records, not_listed = chunks[0]
    assert len(records) == 150 and not_listed == ["o_gone"] and resends.mismatched == {"o_001"}


def test_the_re_sent_page_is_shaped_as_the_stream_s_own_listing() -> None:
    meta = page_meta_for("full", int(REPAIR_START.timestamp()))
    page = fetched_page(STREAMS["orders"], [_order("o_1"), _order("o_2")], "https://x/api/v2/orders", meta)
    assert [r["order_id"] for r in page.records] == ["o_1", "o_2"]
    assert b'"items":[' in page.body
    stripe = fetched_page(
        STREAMS["charges"], [{"id": "ch_1", "object": "charge"}], "https://x/v1/charges", meta
    )
    assert stripe.body.startswith(b'{"object":"list","data":[')  # Stripe's pages unchanged
