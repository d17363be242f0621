"""Source models: the real Stripe fixtures parse; strict types; currency and id rules; resolve()."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from core_records import fixture, needs_fixtures
from pydantic import BaseModel, ValidationError

from erp_sync.core.models import (
    Charge,
    CreditNote,
    Customer,
    Invoice,
    InvoiceLine,
    Order,
    Refund,
    resolve,
)


def _errors(model: type[BaseModel], data: Any) -> list[tuple[tuple[int | str, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return [(error["loc"], error["type"]) for error in caught.value.errors()]


@needs_fixtures
def test_customer_fixture() -> None:
    customer = Customer.model_validate(fixture("customer"))
    assert (customer.id, customer.created, customer.currency) == ("cus_QXg1o8vcGmoR32", 1234567890, "usd")
    assert customer.name is None and customer.email is None


@needs_fixtures
def test_invoice_fixture_with_lines() -> None:
    invoice = Invoice.model_validate(fixture("invoice"))
    assert invoice.id == "in_1Pgc6tB7WZ01zgkWu9fdqL6I"
    assert (invoice.total, invoice.amount_due, invoice.amount_paid) == (1000, 1000, 0)
    assert (invoice.status, invoice.currency, invoice.customer) == ("draft", "usd", "cus_QXg1o8vcGmoR32")
    assert invoice.lines.has_more is False
    [line] = invoice.lines.data
    assert isinstance(line, InvoiceLine)
    assert (line.id, line.amount, line.quantity) == ("il_1Pgc6sB7WZ01zgkWFnxLrLCq", 1000, 1)
    assert line.quantity_value == Decimal(1)


@needs_fixtures
def test_line_item_fixture_and_decimal_quantity() -> None:
    line = InvoiceLine.model_validate(fixture("line_item"))
    assert line.amount == 1000
    fractional = InvoiceLine.model_validate({**fixture("line_item"), "quantity_decimal": "1.25"})
    assert fractional.quantity_value == Decimal("1.25")
    assert _errors(InvoiceLine, {**fixture("line_item"), "quantity_decimal": "abc"}) == [
        (("quantity_decimal",), "string_pattern_mismatch")
    ]


@needs_fixtures
def test_truncated_line_list_is_invalid() -> None:
    record = fixture("invoice")
    record["lines"]["has_more"] = True
    assert _errors(Invoice, record) == [(("lines", "has_more"), "literal_error")]


@needs_fixtures
def test_charge_fixture_and_invoice_reference() -> None:
    charge = Charge.model_validate(fixture("charge"))
    assert (charge.amount, charge.amount_refunded, charge.status) == (100, 0, "succeeded")
    assert charge.invoice_id is None  # the current Stripe charge has no invoice field
    via_metadata = Charge.model_validate({**fixture("charge"), "metadata": {"invoice": "in_1"}})
    assert via_metadata.invoice_id == "in_1"
    top_level = Charge.model_validate(
        {**fixture("charge"), "invoice": "in_2", "metadata": {"invoice": "in_1"}}
    )
    assert top_level.invoice_id == "in_2"
    expanded = Charge.model_validate({**fixture("charge"), "invoice": {"id": "in_3", "object": "invoice"}})
    assert expanded.invoice_id == "in_3"


@needs_fixtures
def test_refund_and_credit_note_fixtures() -> None:
    refund = Refund.model_validate(fixture("refund"))
    assert (refund.charge, refund.amount, refund.status) == ("ch_1PgafuB7WZ01zgkWXYmPNZs8", 100, "succeeded")
    note = CreditNote.model_validate(fixture("credit_note"))
    assert (note.invoice, note.total, note.number) == ("in_1Pgc75B7WZ01zgkWYv4iMwt7", 1690, "ABCD-1234-CN-01")


@needs_fixtures
def test_expanded_customer_is_reduced_to_its_id() -> None:
    invoice = Invoice.model_validate({**fixture("invoice"), "customer": fixture("customer")})
    assert invoice.customer == "cus_QXg1o8vcGmoR32"


@needs_fixtures
@pytest.mark.parametrize("bad", ["1000", 1000.0, 10.5, True, None])
def test_amounts_are_strict_ints(bad: Any) -> None:
    assert _errors(Invoice, {**fixture("invoice"), "total": bad})[0][0] == ("total",)
    assert _errors(Charge, {**fixture("charge"), "amount": bad})[0][0] == ("amount",)


@needs_fixtures
def test_amount_beyond_numeric_20_3_is_invalid() -> None:
    assert _errors(Refund, {**fixture("refund"), "amount": 10**17})[0] == (("amount",), "less_than_equal")


@needs_fixtures
def test_currency_rules() -> None:
    assert Charge.model_validate({**fixture("charge"), "currency": "JPY"}).currency == "jpy"
    assert _errors(Charge, {**fixture("charge"), "currency": "xyz"}) == [(("currency",), "unknown_currency")]
    assert _errors(Charge, {**fixture("charge"), "currency": 840}) == [(("currency",), "string_type")]


@needs_fixtures
def test_missing_and_empty_ids() -> None:
    without_id = {k: v for k, v in fixture("customer").items() if k != "id"}
    assert _errors(Customer, without_id) == [(("id",), "missing")]
    assert _errors(Customer, {**without_id, "id": ""}) == [(("id",), "string_too_short")]
    assert _errors(Customer, {**without_id, "id": 12}) == [(("id",), "string_type")]


@needs_fixtures
def test_unknown_fields_are_ignored() -> None:
    customer = Customer.model_validate({**fixture("customer"), "brand_new_stripe_field": {"x": 1}})
    assert not hasattr(customer, "brand_new_stripe_field")


ORDER = {
    "order_id": "ord_1",
    "customer_id": "cus_1",
    "state": "shipped",
    "currency": "EUR",
    "total_cents": 12345,
    "created_at": "2024-03-01T10:00:00+01:00",
    "updated_at": "2024-03-02T10:00:00Z",
}


def test_order_parses_iso_times_to_utc() -> None:
    order = Order.model_validate(ORDER)
    assert order.created_at == datetime(2024, 3, 1, 9, tzinfo=UTC)
    assert order.updated_at == datetime(2024, 3, 2, 10, tzinfo=UTC)
    assert (order.currency, order.total_cents) == ("eur", 12345)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("created_at", "2024-03-01T10:00:00", "datetime_from_iso"),
        ("created_at", 1709283600, "string_type"),
        ("total_cents", "12345", "int_type"),
        ("currency", "EURO", "unknown_currency"),
    ],
)
def test_order_rejections(field: str, value: Any, error: str) -> None:
    assert _errors(Order, {**ORDER, field: value}) == [((field,), error)]


def test_resolve() -> None:
    assert resolve("Invoice") is Invoice
    assert resolve("erp_sync.core.models.Order") is Order
    with pytest.raises(LookupError):
        resolve("Subscription")
    with pytest.raises(LookupError):
        resolve("erp_sync.core.money.to_major")


@needs_fixtures
@pytest.mark.parametrize("code", ["clf", "UYW"])
def test_four_decimal_currencies_are_refused_by_the_staging_schema(code: str) -> None:
    with pytest.raises(ValidationError, match="staging money columns hold 3"):
        Charge.model_validate({**fixture("charge"), "currency": code})
