"""The stream registry: every declared stream is complete, consistent and lands in a V001 table."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from erp_sync.streams import STREAMS, get_stream
from erp_sync.streams.spec import DEFAULT_RECORD_PATH, IncrementalSpec

V001 = Path(__file__).parents[3] / "include/erp_sync/sql/migrations/V001__schemas.sql"
STAGING_TABLES = set(re.findall(r"CREATE TABLE erp_staging\.(\w+)", V001.read_text()))

EXPECTED = {
    "customers": ("Customer", "stripe_customers", ("customers",)),
    "invoices": ("Invoice", "stripe_invoices", ("ar_invoices", "ar_invoice_lines")),
    "charges": ("Charge", "stripe_charges", ("ar_receipts",)),
    "refunds": ("Refund", "stripe_refunds", ("ar_refunds",)),
    "credit_notes": ("CreditNote", "stripe_credit_notes", ("ar_credit_memos",)),
    "orders": ("Order", "orders", ("sales_orders",)),
}


def test_registry_holds_the_stripe_preset_and_orders() -> None:
    assert {name: (s.model, s.mapping, s.target_tables) for name, s in STREAMS.items()} == EXPECTED


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_every_stream_is_complete(name: str) -> None:
    spec = STREAMS[name]
    assert spec.name == name
    assert set(spec.target_tables) <= STAGING_TABLES
    assert spec.path.startswith("/")
    if spec.incremental.kind == "stripe_events":
        assert 0 < len(spec.incremental.event_types) <= 20  # Stripe's types[] limit
        assert all(
            t.split(".")[0] in {"customer", "invoice", "charge", "refund", "credit_note"}
            for t in spec.incremental.event_types
        )
        assert spec.paginator.kind == "stripe" and spec.paginator.page_size <= 100


def test_stripe_streams_share_a_source_system_and_orders_has_its_own() -> None:
    assert {s.source_system for n, s in STREAMS.items() if n != "orders"} == {"stripe"}
    orders = get_stream("orders")
    assert (orders.source_system, orders.path, orders.paginator.kind, orders.incremental.kind) == (
        "orders_api",
        "/api/v2/orders",
        "offset",
        "updated_since",
    )
    assert orders.paginator.overlap > 0  # offset walks over a moving set must overlap


def test_invoices_complete_their_lines() -> None:
    [child] = get_stream("invoices").children
    assert (child.field, child.path_template.format(id="in_1")) == ("lines", "/v1/invoices/in_1/lines")


def test_unknown_stream_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known streams: charges, credit_notes"):
        get_stream("payouts")


def test_stripe_deletion_events_are_declared_and_must_be_read() -> None:
    assert get_stream("customers").incremental.delete_event_types == ("customer.deleted",)
    assert get_stream("invoices").incremental.delete_event_types == ("invoice.deleted",)
    assert get_stream("charges").incremental.delete_event_types == ()
    with pytest.raises(ValueError, match=r"delete_event_types \['thing.deleted'\]"):
        IncrementalSpec(
            "stripe_events", event_types=("thing.updated",), delete_event_types=("thing.deleted",)
        )


def test_every_stream_declares_how_one_record_is_read_by_id() -> None:
    """Stripe's streams at `{path}/{id}`; the orders API has no by-id route (ADR 0023)."""
    declared = {name: spec.record_path for name, spec in STREAMS.items()}
    assert declared == {**dict.fromkeys(EXPECTED, DEFAULT_RECORD_PATH), "orders": None}
    assert [name for name, spec in STREAMS.items() if not spec.looks_up_by_id] == ["orders"]


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("{path}", "it names ['path']"),
        ("{path}/{ID}", "it names ['ID', 'path']"),
        ("{path}/{id}/{version}", "it names ['id', 'path', 'version']"),
        ("{path}/{}", "it names ['', 'path']"),
        ("{path}/{id!r}", "a field has a format spec or a conversion"),
        ("{path}/{id:>8}", "a field has a format spec or a conversion"),
        ("{path}/{id", "expected '}' before end of string"),
    ],
)
def test_a_by_id_path_that_would_ask_for_the_wrong_url_is_refused_when_declared(
    template: str, why: str
) -> None:
    with pytest.raises(ValueError) as refused:
        replace(get_stream("invoices"), record_path=template)
    text = str(refused.value)
    assert text.startswith(f"stream invoices: record_path {template!r} must name {{id}}") and why in text
    assert "record_path=None when the API has no by-id lookup" in text


def test_a_by_id_path_may_leave_out_the_list_path_or_escape_braces() -> None:
    for template in ("/v2/records/{id}", "{path}/{{v2}}/{id}"):
        assert replace(get_stream("invoices"), record_path=template).looks_up_by_id
