"""Narrow decoding: records hold only the fields the model (or the header mapping) reads, and
mapping them gives exactly what mapping the whole records gives."""

from __future__ import annotations

from typing import Any

import orjson
import pandas as pd
import pytest
from core_records import fixture, invoices, needs_fixtures

from erp_sync.clients.errors import MalformedResponseError
from erp_sync.clients.pages import (
    event_shape,
    parse_json_body,
    record_shape,
    select_records,
    shape_decoder,
)
from erp_sync.core.batch import Page
from erp_sync.core.models import Invoice
from erp_sync.core.shape import Shape, model_shape
from erp_sync.core.transform import MAPPINGS, header_source_fields, map_pages
from erp_sync.streams import get_stream
from erp_sync.streams.spec import StreamSpec


def _list_body(records: list[Any], has_more: bool = True) -> bytes:
    return orjson.dumps({"object": "list", "data": records, "has_more": has_more, "url": "/v1/invoices"})


def test_only_the_named_fields_are_built_and_the_envelope_is_whole() -> None:
    decode = shape_decoder("data", Shape.of(["id", "total"]))
    body = _list_body([{"id": "in_1", "total": 5, "lines": {"data": [{"id": "il_1"}]}, "x": 1}])
    payload = decode("/v1/invoices", body)
    assert payload == {
        "object": "list",
        "data": [{"id": "in_1", "total": 5}],
        "has_more": True,
        "url": "/v1/invoices",
    }


def test_an_item_that_is_not_an_object_is_kept_for_record_selection_to_reject() -> None:
    decode = shape_decoder("data", Shape.of(["id"]))
    payload = decode("/v1/invoices", _list_body([{"id": "in_1"}, 7, "text"]))
    assert payload["data"] == [{"id": "in_1"}, 7, "text"]
    selection = select_records(get_stream("invoices"), payload["data"], mode="full", default_version=1)
    assert [r["id"] for r in selection.records] == ["in_1"]
    assert [p.reason_code for p in selection.problems] == ["NOT_AN_OBJECT", "NOT_AN_OBJECT"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>502 Bad Gateway</html>", "body is not JSON"),
        (b'{"data": [1, 2', "body is not JSON"),
        (b'{"data": 5}', "no list at 'data'"),
        (b"[1, 2]", "no list at 'data'"),
    ],
)
def test_malformed_pages_fail_like_the_whole_decoder(body: bytes, message: str) -> None:
    with pytest.raises(MalformedResponseError, match=message):
        shape_decoder("data", Shape.of(["id"]))("/v1/invoices", body)
    if message == "body is not JSON":
        with pytest.raises(MalformedResponseError, match=message):
            parse_json_body("/v1/invoices", body)


def test_a_nested_selector_is_refused() -> None:
    with pytest.raises(ValueError, match="top-level"):
        shape_decoder("data.items", Shape.of(["id"]))


def _headers(spec: StreamSpec, records: list[Any], decode: Any) -> pd.DataFrame:
    payload = decode("/v1/x", _list_body(records))
    selection = select_records(spec, payload["data"], mode="full", default_version=100)
    page = Page(spec.name, 1, "/v1/x", b"", selection.records, selection.versions, selection.problems)
    return map_pages(spec, [page], primary_only=True).rows


@needs_fixtures
@pytest.mark.parametrize(
    ("stream", "records"),
    [
        ("invoices", lambda: invoices(40, lines_per_invoice=12)),
        ("charges", lambda: [fixture("charge")]),
        ("credit_notes", lambda: [fixture("credit_note")]),
    ],
)
def test_narrow_records_map_to_the_same_headers_as_whole_records(stream: str, records: Any) -> None:
    spec = get_stream(stream)
    fields = header_source_fields(spec)
    assert fields is not None and spec.primary_key in fields
    assert not set(MAPPINGS[spec.mapping].child_fields) & fields
    data = records()
    whole = _headers(spec, data, parse_json_body)
    narrow = _headers(spec, data, shape_decoder(spec.record_selector, Shape.of(fields)))
    assert len(whole) == len(data)
    pd.testing.assert_frame_equal(narrow, whole)


@needs_fixtures
@pytest.mark.parametrize("events", [False, True])
def test_pages_decoded_to_the_model_shape_map_to_the_same_rows_as_whole_pages(events: bool) -> None:
    """The sync's decoding: every table, `row_sha256` included, equals the whole decode's."""
    spec = get_stream("invoices")
    data = invoices(60, lines_per_invoice=7)
    shape = record_shape(spec, model_shape(Invoice))
    assert shape is not None
    if events:
        items = [
            {"id": f"evt_{i}", "type": "invoice.updated", "created": 7, "data": {"object": r}}
            for i, r in enumerate(data)
        ]
        shape = event_shape(shape)
    body = _list_body(items if events else data)
    mode = "incremental" if events else "full"

    def mapped(decode: Any) -> Any:
        selection = select_records(spec, decode("/v1/x", body)["data"], mode=mode, default_version=100)
        assert not selection.problems
        page = Page(spec.name, 1, "/v1/x", body, selection.records, selection.versions)
        return map_pages(spec, [page])

    narrow, whole = mapped(shape_decoder("data", shape)), mapped(parse_json_body)
    assert narrow.accepted == len(data) and not narrow.rejections
    for table, frame in whole.tables.items():
        pd.testing.assert_frame_equal(narrow.tables[table], frame)


@needs_fixtures
def test_line_discounts_by_id_and_expanded_are_decoded_narrow_and_map_as_whole() -> None:
    """The line's `discounts` and `discount_amounts` (ADR 0019) are in the shape: an expanded
    discount is kept whole (validation reduces it to its id), an amount entry keeps `amount` and
    `discount` only."""
    spec = get_stream("invoices")
    data = invoices(3, lines_per_invoice=3)
    expanded = {"id": "di_x", "object": "discount", "coupon": {"id": "C", "percent_off": 10}, "end": None}
    data[1]["lines"]["data"][0] |= {
        "discounts": ["di_a"],
        "discount_amounts": [{"amount": 7, "discount": "di_a"}, {"amount": 3, "discount": "di_inv"}],
    }
    data[2]["lines"]["data"][2] |= {
        "discounts": [expanded],
        "discount_amounts": [{"amount": 9, "discount": expanded, "note": "not read"}],
    }
    shape = record_shape(spec, model_shape(Invoice))
    assert shape is not None
    body = _list_body(data)
    narrow_payload = shape_decoder("data", shape)("/v1/x", body)
    line = narrow_payload["data"][2]["lines"]["data"][2]
    assert line["discounts"] == [expanded]
    assert line["discount_amounts"] == [{"amount": 9, "discount": expanded}]

    def mapped(payload: Any) -> Any:
        selection = select_records(spec, payload["data"], mode="full", default_version=100)
        page = Page(spec.name, 1, "/v1/x", body, selection.records, selection.versions)
        return map_pages(spec, [page])

    narrow, whole = mapped(narrow_payload), mapped(parse_json_body("/v1/x", body))
    for table, frame in whole.tables.items():
        pd.testing.assert_frame_equal(narrow.tables[table], frame)
    staged = narrow.tables["ar_invoice_lines"].set_index("source_id")["discount_amount"]
    # eur (2 decimals) and jpy (none); the invoice-level `di_inv` is not the line's own
    assert (str(staged["il_gen000000001_0"]), str(staged["il_gen000000002_2"])) == ("0.07", "9")
