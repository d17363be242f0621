"""SaaSClient.iter_pages: request shapes per mode, versions, child lists, progress, rate budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from client_fakes import (
    WALL,
    Call,
    FakeClock,
    FakeTransport,
    RecordingSleep,
    invoice_with_lines,
    json_response,
    stripe_list_handler,
)

from erp_sync.clients import ClientStats, LocalTokenBucket, meta_for_page, page_from_body
from erp_sync.clients.transport import HttpResponse
from erp_sync.core.transform import map_pages
from erp_sync.streams import get_stream

START = datetime(2026, 11, 19, 2, 0, tzinfo=UTC)
END = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def test_full_mode_lists_by_created_window_versioned_by_listing_start(make_client: Any) -> None:
    transport = FakeTransport(stripe_list_handler([{"id": "ch_1"}], "/v1/charges"))
    pages = list(
        make_client(transport).iter_pages(
            get_stream("charges"), mode="full", window_start=START, window_end=END
        )
    )
    assert transport.calls[0].params == [
        ("created[gte]", str(int(START.timestamp()))),
        ("created[lt]", str(int(END.timestamp()))),
        ("limit", "100"),
    ]
    assert pages[0].versions == [int(WALL.timestamp())]
    assert pages[0].fetched_at == WALL


def test_full_refresh_without_start_has_no_lower_bound(make_client: Any) -> None:
    transport = FakeTransport(stripe_list_handler([], "/v1/customers"))
    list(
        make_client(transport).iter_pages(
            get_stream("customers"), mode="full", window_start=None, window_end=END
        )
    )
    assert "created[gte]" not in dict(transport.calls[0].params)


def test_incremental_stripe_reads_events_of_the_streams_types(make_client: Any) -> None:
    transport = FakeTransport(stripe_list_handler([], "/v1/events"))
    spec = get_stream("credit_notes")
    list(make_client(transport).iter_pages(spec, mode="incremental", window_start=START, window_end=END))
    params = transport.calls[0].params
    assert [v for k, v in params if k == "types[]"] == list(spec.incremental.event_types)
    assert ("created[gte]", str(int(START.timestamp()))) in params
    assert ("created[lt]", str(int(END.timestamp()))) in params


def test_incremental_updated_since_sends_iso_window_and_offset_paging(make_client: Any) -> None:
    def handle(call: Call) -> HttpResponse:
        return json_response(
            {"items": [{"order_id": "o1", "updated_at": "2026-11-19T10:00:00Z"}], "total": 1}
        )

    transport = FakeTransport(handle)
    [page] = list(
        make_client(transport).iter_pages(
            get_stream("orders"), mode="incremental", window_start=START, window_end=END
        )
    )
    assert transport.calls[0].path == "/api/v2/orders"
    assert dict(transport.calls[0].params) == {
        "updated_since": "2026-11-19T02:00:00Z",
        "updated_before": "2026-11-20T02:00:00Z",
        "limit": "100",
        "offset": "0",
    }
    assert page.versions == [int(datetime(2026, 11, 19, 10, tzinfo=UTC).timestamp())]


def test_empty_window_makes_no_request(make_client: Any) -> None:
    transport = FakeTransport()
    assert (
        list(
            make_client(transport).iter_pages(
                get_stream("customers"), mode="incremental", window_start=END, window_end=END
            )
        )
        == []
    )
    assert transport.calls == []


def test_naive_datetimes_are_refused(make_client: Any) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        list(
            make_client(FakeTransport()).iter_pages(
                get_stream("customers"), mode="full", window_start=None, window_end=datetime(2026, 1, 1)
            )
        )


def test_truncated_invoice_lines_are_completed_before_yielding(make_client: Any) -> None:
    big, small = invoice_with_lines("in_big", 25, 10), invoice_with_lines("in_small", 3, 3)
    all_lines = {"in_big": big.pop("_all_lines"), "in_small": small.pop("_all_lines")}
    invoices = stripe_list_handler([big, small], "/v1/invoices")

    def handle(call: Call) -> HttpResponse:
        if call.path.endswith("/lines"):
            return stripe_list_handler(all_lines["in_big"], "/v1/invoices/in_big/lines")(call)
        return invoices(call)

    transport = FakeTransport(handle)
    [page] = list(
        make_client(transport).iter_pages(
            get_stream("invoices"), mode="full", window_start=None, window_end=END
        )
    )
    line_calls = [c for c in transport.calls if c.path.endswith("/lines")]
    assert len(line_calls) == 1  # 15 remaining lines fit in one page of 100
    assert line_calls[0].param("starting_after") == "il_in_big_9"
    first = page.records[0]["lines"]
    assert [ln["id"] for ln in first["data"]] == [ln["id"] for ln in all_lines["in_big"]]
    assert first["has_more"] is False
    # the stored body holds the body received and the fetched tail, so a restore sees every line too
    stored = page.stored_body()
    rebuilt = page_from_body(get_stream("invoices"), stored, page.url, meta_for_page(page, "full"), 1)
    assert rebuilt.records == [page.whole_record(i) for i in range(len(page.records))]
    assert len(rebuilt.records[0]["lines"]["data"]) == 25
    fetched = b"".join(page.fetched_children)
    assert (rebuilt.body, rebuilt.fetched_children) == (page.body, (fetched,))
    assert orjson.loads(stored)["body"] == orjson.loads(page.body)  # one JSON document, body verbatim
    assert page.body in stored
    # the raw body stays what was received; the continuation page, kept as received, is part of the
    # batch's identity
    assert len(orjson.loads(page.body)["data"][0]["lines"]["data"]) == 10
    [[continuation]] = orjson.loads(fetched)
    assert [ln["id"] for ln in continuation["data"]] == [ln["id"] for ln in all_lines["in_big"][10:]]
    assert stored.startswith(b'{"erp_sync_page_envelope":2,')
    assert handle(line_calls[0]).body in stored  # the continuation page verbatim, not re-serialised


def test_line_discounts_in_the_embedded_head_and_the_fetched_tail_are_both_staged(
    make_client: Any,
) -> None:
    """The embedded lines are decoded narrow, a truncated list's tail from `/v1/invoices/{id}/lines`
    whole: a line's own discount reaches `discount_amount` either way (ADR 0019)."""
    invoice = invoice_with_lines("in_big", 13, 10)
    lines = invoice.pop("_all_lines")
    for line in lines:
        line.update(description=None, discounts=[], discount_amounts=[])
    for k, own in ((2, "di_head"), (12, "di_tail")):
        lines[k]["discounts"] = [own if k == 2 else {"id": own, "object": "discount"}]
        lines[k]["discount_amounts"] = [{"amount": 10 + k, "discount": lines[k]["discounts"][0]}]
    invoice.update(status="open", currency="usd", amount_paid=0, created=1, discounts=[])
    invoice["subtotal"] = sum(line["amount"] for line in lines) - 12 - 22
    invoice["total"] = invoice["amount_due"] = invoice["subtotal"]
    invoices = stripe_list_handler([invoice], "/v1/invoices")
    line_list = stripe_list_handler(lines, "/v1/invoices/in_big/lines")
    transport = FakeTransport(
        lambda call: line_list(call) if call.path.endswith("/lines") else invoices(call)
    )
    spec = get_stream("invoices")
    pages = list(make_client(transport).iter_pages(spec, mode="full", window_start=None, window_end=END))
    assert sum(1 for c in transport.calls if c.path.endswith("/lines")) == 1
    staged = map_pages(spec, pages).tables["ar_invoice_lines"]
    discounts = dict(zip(staged["source_id"], staged["discount_amount"], strict=True))
    assert {k: str(v) for k, v in discounts.items() if v} == {"il_in_big_2": "0.12", "il_in_big_12": "0.22"}
    assert sum(1 for v in discounts.values() if v == 0) == 11


def test_untruncated_pages_keep_the_exact_bytes_received(make_client: Any) -> None:
    body = b'{"object":"list","data":[{"id":"in_1","lines":{"data":[],"has_more":false}}],  "has_more":false}'
    transport = FakeTransport(lambda call: HttpResponse(200, body, "", {}))
    [page] = list(
        make_client(transport).iter_pages(
            get_stream("invoices"), mode="full", window_start=None, window_end=END
        )
    )
    assert page.body == body
    assert page.stored_body() is body
    assert page.fetched_children == ()


def test_stats_and_progress_reports(make_client: Any, clock: FakeClock) -> None:
    data = [{"id": f"cus_{i}"} for i in range(5)] + [{"no": "id"}]
    handler = stripe_list_handler(data)

    def slow(call: Call) -> HttpResponse:
        clock.advance(3)  # each request takes 3 s of fake time
        return handler(call)

    reports: list[dict[str, Any]] = []
    client = make_client(
        FakeTransport(slow, script=[json_response({}, status=503)]),
        progress=lambda stream, stats: reports.append({"stream": stream, **stats.as_dict()}),
    )
    client.page_size = 2
    list(client.iter_pages(get_stream("customers"), mode="full", window_start=None, window_end=END))
    stats = client.stats
    assert (stats.pages, stats.records, stats.problems, stats.requests, stats.retries) == (3, 5, 1, 4, 1)
    assert stats.elapsed == pytest.approx(9.5)  # 3 x 3 s requests + 0.5 s backoff (503 answered instantly)
    assert stats.records_per_s == pytest.approx(5 / 9.5)
    assert len(reports) >= 2  # at least one while running (every 5 s) and one at the end
    assert reports[-1]["records"] == 5 and reports[-1]["stream"] == "customers"


def test_the_rate_budget_makes_the_client_wait_and_counts_it(
    make_client: Any, clock: FakeClock, sleep: RecordingSleep
) -> None:
    bucket = LocalTokenBucket(rate_per_s=2, burst=1, clock=clock)
    client = make_client(
        FakeTransport(stripe_list_handler([{"id": f"c{i}"} for i in range(3)])), rate_limiter=bucket
    )
    client.page_size = 1
    list(client.iter_pages(get_stream("customers"), mode="full", window_start=None, window_end=END))
    assert client.stats.requests == 3
    assert client.stats.rate_limit_waits == 2
    assert client.stats.wait_seconds == pytest.approx(1.0)
    assert sleep.slept == [0.5, 0.5]


def test_local_token_bucket_refills_at_rate_up_to_burst() -> None:
    clock = FakeClock()
    bucket = LocalTokenBucket(rate_per_s=10, burst=3, clock=clock)
    assert [bucket.try_acquire() for _ in range(3)] == [0, 0, 0]
    assert bucket.try_acquire() == pytest.approx(0.1)
    clock.advance(10)
    assert [bucket.try_acquire() for _ in range(4)][-1] == pytest.approx(0.1)  # burst caps the refill


def test_client_stats_line_has_the_progress_fields() -> None:
    stats = ClientStats(
        pages=2, records=10, requests=3, retries=1, rate_limit_waits=1, started=0.0, finished=2.0
    )
    line = stats.line()
    for part in (
        "pages=2",
        "records=10",
        "requests=3",
        "retries=1",
        "rate_limit_waits=1",
        "elapsed=2.0s",
        "records/s=5.0",
    ):
        assert part in line


def test_timedelta_sanity() -> None:
    assert timedelta(days=1) == END - START


def test_an_event_listing_keeps_each_records_newest_snapshot_and_completes_only_its_lines(
    make_client: Any,
) -> None:
    """Events come newest first: a record met again, on the same page or a later one, is an older
    snapshot. It is dropped before its lines are fetched, counted as superseded, and a restore
    (page_from_body with the window's keys) and a rejection's whole record see the same pages."""
    inv = invoice_with_lines("in_1", 15, 10)
    lines = inv.pop("_all_lines")
    small = {k: v for k, v in invoice_with_lines("in_2", 3, 3).items() if k != "_all_lines"}
    new = {k: v for k, v in invoice_with_lines("in_3", 2, 2).items() if k != "_all_lines"}

    def event(n: int, record: dict[str, Any], total: int) -> dict[str, Any]:
        obj = orjson.loads(orjson.dumps({**record, "total": total, "subtotal": total}))
        return {"id": f"evt_{n}", "type": "invoice.updated", "created": 100, "data": {"object": obj}}

    listing = [
        event(6, inv, 900),
        event(5, small, 3),
        event(4, inv, 500),
        event(3, new, 2),
        event(2, inv, 400),
    ]
    events_handler = stripe_list_handler(listing, "/v1/events")
    line_handler = stripe_list_handler(lines, "/v1/invoices/in_1/lines")
    transport = FakeTransport(
        lambda call: line_handler(call) if call.path.endswith("/lines") else events_handler(call)
    )
    client = make_client(transport)
    client.page_size = 3
    spec = get_stream("invoices")
    pages = list(client.iter_pages(spec, mode="incremental", window_start=START, window_end=END))

    assert [[r["id"] for r in p.records] for p in pages] == [["in_1", "in_2"], ["in_3"]]
    assert [p.superseded for p in pages] == [1, 1]
    assert [p.extracted for p in pages] == [3, 2] and client.stats.records == 5
    assert pages[0].records[0]["total"] == 900  # the newest, with every line
    assert len(pages[0].records[0]["lines"]["data"]) == 15
    assert sum(1 for c in transport.calls if c.path.endswith("/lines")) == 1
    assert pages[1].whole_record(0)["object"] == "invoice"  # in_3, whole, past the dropped in_1

    seen: set[str] = set()
    rebuilt = [
        page_from_body(spec, p.stored_body(), p.url, meta_for_page(p, "incremental"), p.page_no, seen)
        for p in pages
    ]
    assert [[r["id"] for r in p.records] for p in rebuilt] == [["in_1", "in_2"], ["in_3"]]
    assert [p.superseded for p in rebuilt] == [1, 1]
    assert rebuilt[0].records[0] == pages[0].whole_record(0)


def test_record_fields_narrow_the_records_but_not_the_body_or_the_paging(make_client: Any) -> None:
    data = [
        {"id": f"ch_{i}", "amount": i, "created": 1, "metadata": {"k": "v"}, "big": "x" * 100}
        for i in range(5)
    ]
    transport = FakeTransport(stripe_list_handler(data, "/v1/charges"))
    client = make_client(transport)
    client.page_size = 2
    pages = list(
        client.iter_pages(
            get_stream("charges"), mode="full", window_start=None, window_end=END, record_fields={"amount"}
        )
    )
    assert [r for p in pages for r in p.records] == [{"id": f"ch_{i}", "amount": i} for i in range(5)]
    assert len(pages) == 3  # paged by the narrowed records' ids, as with whole ones
    assert orjson.loads(pages[0].body)["data"][0]["big"] == "x" * 100  # the raw body, untouched
    assert pages[0].whole_record(1) == data[1]  # what a rejection keeps: the record as it arrived
    # event listings are narrowed too: the event to what selection reads, its object to the fields
    event = {"id": "evt_1", "type": "charge.updated", "created": 5, "data": {"object": data[0]}}
    events = FakeTransport(stripe_list_handler([event], "/v1/events"))
    [page] = list(
        make_client(events).iter_pages(
            get_stream("charges"),
            mode="incremental",
            window_start=START,
            window_end=END,
            record_fields={"amount"},
        )
    )
    assert page.records == [{"id": "ch_0", "amount": 0}]
    assert page.whole_record(0) == data[0]


CHARGE = {
    "id": "ch_1",
    "object": "charge",
    "amount": 5,
    "amount_refunded": 0,
    "currency": "usd",
    "status": "succeeded",
    "created": 1,
}


def test_a_rejected_record_keeps_every_field_it_arrived_with(make_client: Any) -> None:
    """Pages are decoded narrow (only what the model reads), yet a rejection's raw payload is the
    record as received: both the client's (no id) and validation's (a string amount)."""
    good = {**CHARGE, "receipt_url": "https://pay.example/r/1"}
    bad_amount = {**good, "id": "ch_2", "amount": "5"}
    no_id = {**good, "id": ""}
    transport = FakeTransport(stripe_list_handler([good, no_id, bad_amount], "/v1/charges"))
    spec = get_stream("charges")
    pages = list(make_client(transport).iter_pages(spec, mode="full", window_start=None, window_end=END))
    assert "receipt_url" not in pages[0].records[0]  # decoded narrow
    batch = map_pages(spec, pages)
    assert batch.accepted == 1
    raw = {r.reason_code: orjson.loads(r.raw_payload) for r in batch.rejections}
    assert raw == {"MISSING_ID": no_id, "INVALID_FIELD": bad_amount}


def test_a_rejected_newest_snapshot_still_supersedes_the_older_ones(make_client: Any) -> None:
    """The newest snapshot of a window decides (ADR 0013): when validation rejects it, the older
    valid snapshot of the same charge is not loaded in its place, on the same page or a later one."""
    charge = CHARGE

    def event(n: int, record: dict[str, Any]) -> dict[str, Any]:
        return {"id": f"evt_{n}", "type": "charge.updated", "created": 100 + n, "data": {"object": record}}

    newest_bad = {**charge, "amount": "6"}  # a string amount: INVALID_FIELD
    other = {**charge, "id": "ch_2"}
    listing = [event(4, newest_bad), event(3, charge), event(2, other), event(1, charge)]
    client = make_client(FakeTransport(stripe_list_handler(listing, "/v1/events")))
    client.page_size = 2
    spec = get_stream("charges")
    pages = list(client.iter_pages(spec, mode="incremental", window_start=START, window_end=END))
    batch = map_pages(spec, pages)
    assert [r.reason_code for r in batch.rejections] == ["INVALID_FIELD"]
    assert orjson.loads(batch.rejections[0].raw_payload) == newest_bad
    assert batch.tables["ar_receipts"]["source_id"].tolist() == ["ch_2"]
    assert (batch.extracted, batch.accepted, batch.superseded) == (4, 1, 2)


def test_a_deletion_event_is_a_tombstone_whose_lines_are_never_fetched(make_client: Any) -> None:
    """`invoice.deleted` (ADR 0015): the record is kept as a tombstone -- its embedded lines emptied,
    no request for their tail (Stripe answers 404 for a deleted invoice's lines), its key in
    `Page.deleted_ids`; a restore sees the same. An older snapshot of the same invoice further down
    the listing is dropped as usual. (How it maps: test_core_transform.)"""
    inv = invoice_with_lines("in_1", 15, 10)
    inv.pop("_all_lines")
    live = {k: v for k, v in invoice_with_lines("in_2", 3, 3).items() if k != "_all_lines"}

    def event(n: int, kind: str, record: dict[str, Any]) -> dict[str, Any]:
        obj = orjson.loads(orjson.dumps(record))
        return {"id": f"evt_{n}", "type": kind, "created": 100 + n, "data": {"object": obj}}

    listing = [
        event(3, "invoice.deleted", inv),
        event(2, "invoice.updated", live),
        event(1, "invoice.created", inv),
    ]
    transport = FakeTransport(stripe_list_handler(listing, "/v1/events"))
    client = make_client(transport)
    spec = get_stream("invoices")
    [page] = list(client.iter_pages(spec, mode="incremental", window_start=START, window_end=END))

    assert [r["id"] for r in page.records] == ["in_1", "in_2"] and page.superseded == 1
    assert page.deleted_ids == frozenset({"in_1"})
    assert page.records[0]["lines"]["data"] == [] and page.records[0]["lines"]["has_more"] is False
    assert not any(c.path.endswith("/lines") for c in transport.calls)

    rebuilt = page_from_body(spec, page.stored_body(), page.url, meta_for_page(page, "incremental"), 1, set())
    assert rebuilt.deleted_ids == page.deleted_ids and rebuilt.records[0]["lines"]["data"] == []
