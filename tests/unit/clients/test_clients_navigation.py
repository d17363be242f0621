"""Pages decoded for navigation only (`records_needed` says no): the walk reads the same pages, and
`Page.decode_records` gives back exactly the records a model decode would have given."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from client_fakes import Call, FakeTransport, invoice_with_lines, stripe_list_handler

from erp_sync.clients.transport import HttpResponse
from erp_sync.core.transform import map_pages
from erp_sync.streams import get_stream

START = datetime(2026, 11, 19, 2, 0, tzinfo=UTC)
END = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
INVOICES = get_stream("invoices")


def _invoice(invoice_id: str, n_lines: int, embedded: int) -> dict[str, Any]:
    """An invoice the invoice model accepts, its lines summing to its subtotal."""
    invoice = invoice_with_lines(
        invoice_id, n_lines, embedded, description="a line", discounts=[], discount_amounts=[]
    )
    subtotal = sum(line["amount"] for line in invoice["_all_lines"])
    return {
        **invoice,
        "status": "open",
        "currency": "usd",
        "created": 1,
        "amount_paid": 0,
        "discounts": [],
        "subtotal": subtotal,
        "total": subtotal,
        "amount_due": subtotal,
        "customer": "cus_1",
    }


def _listing(invoices: list[dict[str, Any]], path: str) -> FakeTransport:
    lines: dict[str, list[Any]] = {}
    for item in invoices:
        invoice = item["data"]["object"] if path == "/v1/events" else item
        if "_all_lines" in invoice:
            lines[invoice["id"]] = invoice.pop("_all_lines")
    listing = stripe_list_handler(invoices, path)

    def handle(call: Call) -> HttpResponse:
        if call.path.endswith("/lines"):
            invoice_id = call.path.split("/")[-2]
            return stripe_list_handler(lines[invoice_id], call.path)(call)
        return listing(call)

    return FakeTransport(handle)


def _read(make_client: Any, invoices: list[dict[str, Any]], needed: Any, **kwargs: Any) -> list[Any]:
    client = make_client(_listing(orjson.loads(orjson.dumps(invoices)), kwargs.pop("path", "/v1/invoices")))
    client.page_size = 2
    return list(client.iter_pages(INVOICES, window_end=END, records_needed=needed, **kwargs))


def test_a_page_read_for_navigation_decodes_the_same_records_later(make_client: Any) -> None:
    invoices = [_invoice("in_1", 3, 3), _invoice("in_2", 25, 10), _invoice("in_3", 2, 2)]
    model = _read(make_client, invoices, None, mode="full", window_start=None)
    navigated = _read(make_client, invoices, lambda: False, mode="full", window_start=None)

    assert [len(p.records) for p in navigated] == [2, 1]
    # only what the walk reads: the key and the line ids, not the money
    assert (
        "total" not in navigated[0].records[1] and "amount" not in navigated[0].records[1]["lines"]["data"][0]
    )
    assert all(p.rebuild_records is not None for p in navigated)
    assert all(p.rebuild_records is None for p in model)
    # the batch's identity and the outbox's bytes are those of a model read
    assert [(p.url, p.body, p.fetched_children, p.stored_body()) for p in navigated] == [
        (p.url, p.body, p.fetched_children, p.stored_body()) for p in model
    ]
    assert [(p.versions, p.extracted, p.problems) for p in navigated] == [
        (p.versions, p.extracted, p.problems) for p in model
    ]
    assert [p.decode_records() for p in navigated] == [p.records for p in model]
    assert all(p.rebuild_records is None for p in navigated)
    assert len(navigated[0].records[1]["lines"]["data"]) == 25


def test_a_batch_of_navigation_pages_maps_as_a_batch_of_model_pages(make_client: Any) -> None:
    invoices = [_invoice("in_1", 3, 3), _invoice("in_2", 14, 10), {"no": "id"}, _invoice("in_4", 1, 1)]
    invoices[3]["total"] = "not money"
    model = map_pages(INVOICES, _read(make_client, invoices, None, mode="full", window_start=None))
    navigated = map_pages(
        INVOICES, _read(make_client, invoices, lambda: False, mode="full", window_start=None)
    )
    for table, frame in model.tables.items():
        assert navigated.tables[table].equals(frame), table
    assert len(model.tables["ar_invoice_lines"]) == 17
    # a rejection keeps the record whole either way
    assert [(r.reason_code, r.raw_payload) for r in navigated.rejections] == [
        (r.reason_code, r.raw_payload) for r in model.rejections
    ]
    assert {r.reason_code for r in model.rejections} == {"MISSING_ID", "INVALID_FIELD"}


def test_an_event_listing_read_for_navigation_drops_the_same_older_snapshots(make_client: Any) -> None:
    def event(n: int, invoice: dict[str, Any], total: int) -> dict[str, Any]:
        obj = {**orjson.loads(orjson.dumps(invoice)), "total": total}
        obj.pop("_all_lines", None)
        return {"id": f"evt_{n}", "type": "invoice.updated", "created": 100 + n, "data": {"object": obj}}

    big = _invoice("in_1", 15, 10)
    listing = [event(6, big, 900), event(5, _invoice("in_2", 3, 3), 3), event(4, big, 500),
               event(3, _invoice("in_3", 2, 2), 2), event(2, big, 400)]  # fmt: skip
    listing[0]["data"]["object"]["_all_lines"] = big["_all_lines"]
    window = {"mode": "incremental", "window_start": START, "path": "/v1/events"}
    model = _read(make_client, listing, None, **window)
    navigated = _read(make_client, listing, lambda: False, **window)

    assert [p.superseded for p in navigated] == [p.superseded for p in model] == [0, 1, 1]
    records = [p.decode_records() for p in navigated]
    assert records == [p.records for p in model]
    assert [[r["id"] for r in page] for page in records] == [["in_1", "in_2"], ["in_3"], []]
    assert records[0][0]["total"] == 900 and len(records[0][0]["lines"]["data"]) == 15


def test_each_page_is_decoded_as_records_needed_says_when_it_is_requested(make_client: Any) -> None:
    invoices = [_invoice(f"in_{i}", 1, 1) for i in range(6)]
    answers = iter([True, False, True])
    pages = _read(make_client, invoices, lambda: next(answers), mode="full", window_start=None)
    assert [p.rebuild_records is not None for p in pages] == [False, True, False]
    assert [r["total"] for p in pages for r in p.decode_records()] == [100] * 6
