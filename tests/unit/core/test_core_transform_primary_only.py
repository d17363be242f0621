"""map_pages(..., primary_only=True): reconciliation's header-only read.

Headers equal the full mapping's primary table (without `row_sha256`), child lists are neither
validated nor mapped (a truncated `lines` list is not a rejection), header fields are still
validated and deduplicated, and the result is not something the loader can take.
"""

from __future__ import annotations

import copy
from dataclasses import fields
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest
from core_records import SPECS, fixture, invoices, needs_fixtures

from erp_sync.core.batch import CHILDREN_SHA256, CONTROL_COLUMNS, MappedBatch, Page
from erp_sync.core.models import Charge, Invoice
from erp_sync.core.transform import (
    HEADER_CONTROL_COLUMNS,
    INCOMPLETE_CHILDREN,
    INVALID_FIELD,
    MAPPINGS,
    MISSING_ID,
    UNKNOWN_CURRENCY,
    HeaderRows,
    header_model,
    map_pages,
)
from erp_sync.streams.spec import StreamSpec

pytestmark = needs_fixtures

INVOICES = SPECS["stripe_invoices"]


def page(stream: str, records: list[Any], versions: list[int] | None = None) -> Page:
    versions = versions if versions is not None else [100] * len(records)
    return Page(stream=stream, page_no=0, url="/test", body=b"{}", records=records, versions=versions)


def headers(spec: StreamSpec, records: list[Any], versions: list[int] | None = None) -> HeaderRows:
    return map_pages(spec, [page(spec.name, records, versions)], primary_only=True)


def truncated(invoice: dict[str, Any], keep: int = 1) -> dict[str, Any]:
    """The invoice as a listing embeds it when it has more lines than the embedded page."""
    out = copy.deepcopy(invoice)
    out["lines"]["data"] = out["lines"]["data"][:keep]
    out["lines"]["has_more"] = True
    return out


# --- same headers as the full mapping -----------------------------------------------------------


def test_invoice_headers_equal_the_full_mappings_primary_rows_without_hash() -> None:
    records = invoices(25, lines_per_invoice=4)
    full = map_pages(INVOICES, [page(INVOICES.name, copy.deepcopy(records))])
    head = headers(INVOICES, records)
    # the header-only read hashes nothing, its lines' digest included
    expected = full.tables["ar_invoices"].drop(columns=["row_sha256", CHILDREN_SHA256])
    pd.testing.assert_frame_equal(head.rows, expected)
    assert list(head.rows.columns) == [*MAPPINGS["stripe_invoices"].business_columns, *HEADER_CONTROL_COLUMNS]
    assert head.primary_table == "ar_invoices" and head.accepted == 25
    assert (head.extracted, head.superseded, head.rejections) == (25, 0, [])
    assert all(isinstance(v, Decimal) for v in head.rows["total_amount"])


@pytest.mark.parametrize("key", ["stripe_charges", "stripe_credit_notes"])
def test_streams_without_children_map_the_same_headers(key: str) -> None:
    resource = {"stripe_charges": "charge", "stripe_credit_notes": "credit_note"}[key]
    record = fixture(resource)
    full = map_pages(SPECS[key], [page(key, [copy.deepcopy(record)])])
    head = headers(SPECS[key], [record])
    pd.testing.assert_frame_equal(head.rows, full.tables[full.primary_table].drop(columns=["row_sha256"]))


def test_default_is_the_full_mapping_with_lines_and_hashes() -> None:
    records = invoices(3, lines_per_invoice=2)
    batch = map_pages(INVOICES, [page(INVOICES.name, records)])
    assert isinstance(batch, MappedBatch)
    assert set(batch.tables) == {"ar_invoices", "ar_invoice_lines"}
    assert len(batch.tables["ar_invoice_lines"]) == 6
    assert list(batch.tables["ar_invoices"].columns[-4:]) == list(CONTROL_COLUMNS)


# --- child lists are not read -------------------------------------------------------------------


def test_truncated_lines_are_not_a_rejection_when_primary_only() -> None:
    [record] = invoices(1, lines_per_invoice=5)
    partial = truncated(record, keep=2)
    full = map_pages(INVOICES, [page(INVOICES.name, [copy.deepcopy(partial)])])
    assert [r.reason_code for r in full.rejections] == [INCOMPLETE_CHILDREN]  # the sync refuses it
    head = headers(INVOICES, [partial])
    assert head.rejections == [] and head.accepted == 1
    [row] = head.rows.to_dict("records")
    assert row["source_id"] == record["id"]
    assert record["currency"] == "usd"
    assert row["total_amount"] == Decimal(record["total"]).scaleb(-2)


@pytest.mark.parametrize(
    "lines",
    [
        {"object": "list", "data": [{"id": "il_1", "amount": 1.5}], "has_more": False},  # float amount
        {"object": "list", "data": "not a list", "has_more": True},
        None,
    ],
    ids=["malformed_line", "malformed_list", "no_lines"],
)
def test_child_lists_are_not_validated_when_primary_only(lines: Any) -> None:
    [record] = invoices(1)
    record["lines"] = lines
    head = headers(INVOICES, [record])
    assert head.rejections == [] and head.accepted == 1
    [missing] = invoices(1)
    del missing["lines"]
    assert headers(INVOICES, [missing]).accepted == 1


def test_no_child_rows_and_no_row_hash() -> None:
    head = headers(INVOICES, invoices(4, lines_per_invoice=3))
    assert "row_sha256" not in head.rows.columns
    assert not any(column.endswith("__sha256") for column in head.rows.columns)
    assert "tables" not in {f.name for f in fields(head)}  # nothing for the loader to load


def test_header_rows_are_not_a_mapped_batch() -> None:
    head = headers(INVOICES, invoices(1))
    assert not isinstance(head, MappedBatch)
    with pytest.raises(AttributeError):
        head.tables  # type: ignore[attr-defined]  # noqa: B018  # the loader reads `mapped.tables`


# --- header fields are still validated and deduplicated -----------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("total", "100", INVALID_FIELD),
        ("total", 1.5, INVALID_FIELD),
        ("status", None, INVALID_FIELD),
        ("currency", "xyz", UNKNOWN_CURRENCY),
        ("id", None, MISSING_ID),
    ],
)
def test_header_fields_are_still_validated(field: str, value: Any, reason: str) -> None:
    good = invoices(2, start=10)
    [bad] = invoices(1)
    bad[field] = value
    head = headers(INVOICES, [*good, truncated(bad)])
    assert [r.reason_code for r in head.rejections] == [reason]
    assert head.accepted == 2 and head.extracted == 3


def test_newest_version_per_key_wins_like_the_full_mapping() -> None:
    [old] = invoices(1)
    new = copy.deepcopy(old)
    new["total"] = old["total"] + 7
    head = headers(INVOICES, [truncated(old), truncated(new)], versions=[1, 2])
    assert head.superseded == 1 and head.accepted == 1
    assert head.rows["source_version"].tolist() == [2]
    full = map_pages(INVOICES, [page(INVOICES.name, [old, new], [1, 2])])
    assert head.rows["total_amount"].tolist() == full.tables["ar_invoices"]["total_amount"].tolist()


# --- the header model -----------------------------------------------------------------------------


def test_header_model_ignores_only_the_child_fields() -> None:
    model = header_model(Invoice, ("lines",))
    assert issubclass(model, Invoice) and model is header_model(Invoice, ("lines",))
    assert set(model.model_fields) == set(Invoice.model_fields)
    assert model.model_config["strict"] is True
    assert header_model(Charge, ()) is Charge


def test_header_model_refuses_an_unknown_child_field() -> None:
    with pytest.raises(ValueError, match="no child fields"):
        header_model(Invoice, ("items",))
