"""Record selection (records, versions, problems) and rebuilding pages from stored bodies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from client_fakes import WALL, Call, FakeTransport, json_response, stripe_list_handler

from erp_sync.clients import meta_for_page, page_from_body
from erp_sync.clients.pages import select_records, to_unix_seconds
from erp_sync.clients.transport import HttpResponse
from erp_sync.core.batch import Page
from erp_sync.streams import get_stream
from erp_sync.streams.spec import IncrementalSpec, PaginatorSpec, StreamSpec

CUSTOMERS = get_stream("customers")
ORDERS = get_stream("orders")
END = datetime(2027, 1, 1, tzinfo=UTC)


def test_records_without_id_or_not_objects_become_problems_and_the_rest_survive() -> None:
    items: list[Any] = [{"id": "cus_1"}, {"name": "no id"}, "just a string", {"id": ""}, {"id": "cus_2"}]
    selection = select_records(CUSTOMERS, items, mode="full", default_version=77)
    assert [r["id"] for r in selection.records] == ["cus_1", "cus_2"]
    assert selection.versions == [77, 77]
    assert [p.reason_code for p in selection.problems] == ["MISSING_ID", "NOT_AN_OBJECT", "MISSING_ID"]
    assert orjson.loads(selection.problems[0].raw_payload) == {"name": "no id"}
    assert selection.problems[1].raw_payload == '"just a string"'
    assert all(p.stream == "customers" for p in selection.problems)


def test_events_select_data_object_versioned_by_event_created() -> None:
    events: list[Any] = [
        {
            "id": "evt_2",
            "type": "customer.updated",
            "created": 200,
            "data": {"object": {"id": "cus_1", "v": 2}},
        },
        {"id": "evt_x", "type": "invoice.paid", "created": 150, "data": {"object": {"id": "in_1"}}},
        {
            "id": "evt_1",
            "type": "customer.created",
            "created": 100,
            "data": {"object": {"id": "cus_1", "v": 1}},
        },
        {"id": "evt_0", "type": "customer.created", "created": 90, "data": {}},
    ]
    selection = select_records(CUSTOMERS, events, mode="incremental", default_version=None)
    assert selection.records == [{"id": "cus_1", "v": 2}, {"id": "cus_1", "v": 1}]
    assert selection.versions == [200, 100]
    assert [p.reason_code for p in selection.problems] == ["NOT_AN_OBJECT"]


def test_updated_since_versions_come_from_the_record() -> None:
    items = [
        {"order_id": "o1", "updated_at": "2026-11-20T12:00:05Z"},
        {"order_id": "o2", "updated_at": "yesterday"},
        {"order_id": "o3", "updated_at": "2026-11-20T12:00:05"},
    ]
    selection = select_records(ORDERS, items, mode="incremental", default_version=None)
    assert selection.versions == [int(datetime(2026, 11, 20, 12, 0, 5, tzinfo=UTC).timestamp())]
    assert [(p.reason_code, p.source_id) for p in selection.problems] == [
        ("BAD_VERSION", "o2"),
        ("BAD_VERSION", "o3"),
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1700000000, 1700000000),
        (1700000000.9, 1700000000),
        ("2023-11-14T22:13:20+00:00", 1700000000),
        ("2023-11-14T23:13:20+01:00", 1700000000),
        ("2023-11-14T22:13:20Z", 1700000000),
        ("2023-11-14T22:13:20", None),
        (True, None),
        (None, None),
        ("", None),
    ],
)
def test_to_unix_seconds(value: Any, expected: int | None) -> None:
    assert to_unix_seconds(value) == expected


def _same(a: Page, b: Page) -> None:
    assert (a.stream, a.page_no, a.url, a.body) == (b.stream, b.page_no, b.url, b.body)
    assert a.records == b.records and a.versions == b.versions and a.problems == b.problems


def test_page_from_body_rebuilds_a_full_page(make_client: Any) -> None:
    data: list[Any] = [{"id": "cus_1"}, {"nope": 1}, {"id": "cus_2"}]
    client = make_client(FakeTransport(stripe_list_handler(data)))
    [page] = list(client.iter_pages(CUSTOMERS, mode="full", window_start=None, window_end=END))
    meta = meta_for_page(page, "full")
    assert meta == {"mode": "full", "default_version": int(WALL.timestamp())}
    _same(page, page_from_body(CUSTOMERS, page.stored_body(), page.url, meta, page.page_no))


def test_page_from_body_rebuilds_an_events_page(make_client: Any) -> None:
    events = [
        {"id": "evt_1", "type": "customer.updated", "created": 123, "data": {"object": {"id": "cus_1"}}}
    ]
    client = make_client(FakeTransport(stripe_list_handler(events, "/v1/events")))
    [page] = list(
        client.iter_pages(CUSTOMERS, mode="incremental", window_start=END.replace(year=2026), window_end=END)
    )
    rebuilt = page_from_body(
        CUSTOMERS, page.stored_body(), page.url, meta_for_page(page, "incremental"), page.page_no
    )
    _same(page, rebuilt)
    assert rebuilt.versions == [123]


def _truncated_invoice_event(n: int, total: int) -> dict[str, Any]:
    head = [{"id": f"il_{i}", "amount": 1} for i in range(2)]
    invoice = {"id": "in_1", "total": total, "lines": {"data": head, "has_more": True}}
    return {"id": f"evt_{n}", "type": "invoice.updated", "created": 100, "data": {"object": invoice}}


@pytest.mark.parametrize(
    "tails_stored",
    [
        pytest.param(1, id="the newest snapshot's tail only (the client drops older ones first)"),
        pytest.param(2, id="a tail for every snapshot (pages stored before it did)"),
    ],
)
def test_page_from_body_drops_older_snapshots_of_an_event_page_with_either_kind_of_envelope(
    tails_stored: int,
) -> None:
    from erp_sync.core.batch import envelope

    spec = get_stream("invoices")
    body = orjson.dumps(
        {"object": "list", "data": [_truncated_invoice_event(2, 9), _truncated_invoice_event(1, 5)]}
    )
    tail = [{"id": "il_2", "amount": 1}]
    stored = envelope(body, orjson.dumps([tail] * tails_stored))
    page = page_from_body(spec, stored, "u", {"mode": "incremental"}, 1, set())
    assert [(r["id"], r["total"]) for r in page.records] == [("in_1", 9)]
    assert [line["id"] for line in page.records[0]["lines"]["data"]] == ["il_0", "il_1", "il_2"]
    assert (page.superseded, page.extracted) == (1, 2)
    every = page_from_body(spec, envelope(body, orjson.dumps([tail, tail])), "u", {"mode": "incremental"}, 1)
    assert (len(every.records), every.superseded) == (2, 0)  # no `seen`: every snapshot kept


def test_page_from_body_refuses_an_envelope_whose_tails_match_no_reading() -> None:
    from erp_sync.clients.errors import MalformedResponseError
    from erp_sync.core.batch import envelope

    body = orjson.dumps(
        {"object": "list", "data": [_truncated_invoice_event(2, 9), _truncated_invoice_event(1, 5)]}
    )
    stored = envelope(body, orjson.dumps([[], [], []]))
    with pytest.raises(MalformedResponseError, match="1 truncated child lists, 3 tails"):
        page_from_body(get_stream("invoices"), stored, "u", {"mode": "incremental"}, 1, set())
    newest_only = envelope(body, orjson.dumps([[]]))
    with pytest.raises(MalformedResponseError, match="in order with their `seen` keys"):
        page_from_body(get_stream("invoices"), newest_only, "u", {"mode": "incremental"}, 1)


def test_page_from_body_of_a_broken_body_names_the_url() -> None:
    from erp_sync.clients.errors import MalformedResponseError

    with pytest.raises(MalformedResponseError, match=r"https://x\.test/v1/customers"):
        page_from_body(CUSTOMERS, b"<html>", "https://x.test/v1/customers", {"mode": "full"}, 1)


def test_custom_selector_with_dotted_path(make_client: Any) -> None:
    spec = StreamSpec(
        name="things",
        source_system="t",
        path="/things",
        model="M",
        mapping="m",
        target_tables=("t",),
        record_selector="result.items",
        paginator=PaginatorSpec("cursor"),
        incremental=IncrementalSpec("none"),
    )

    def handle(call: Call) -> HttpResponse:
        return json_response({"result": {"items": [{"id": 7}]}, "next_cursor": None})

    [page] = list(
        make_client(FakeTransport(handle)).iter_pages(
            spec, mode="incremental", window_start=None, window_end=END
        )
    )
    assert page.records == [{"id": 7}]


def test_batch_meta_and_client_page_meta_agree(make_client: Any) -> None:
    from erp_sync.clients import meta_for_pages

    spec = StreamSpec(name="things", source_system="t", path="/things", model="M", mapping="m",
                      target_tables=("t",), paginator=PaginatorSpec("offset", page_size=1))  # fmt: skip
    data: list[Any] = [{"nope": 1}, {"id": "t_1"}]

    def handle(call: Call) -> HttpResponse:
        offset = int(call.param("offset") or 0)
        return json_response({"data": data[offset : offset + 1], "total": 2})

    client = make_client(FakeTransport(handle))
    pages = list(client.iter_pages(spec, mode="full", window_start=None, window_end=END))
    assert pages[0].versions == []  # the first page held only a problem
    expected = {"mode": "full", "default_version": int(WALL.timestamp())}
    assert meta_for_pages(pages, "full") == client.page_meta == expected
