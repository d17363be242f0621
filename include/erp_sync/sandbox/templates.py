"""Object templates taken from Stripe's own API fixtures (stripe/openapi `fixtures3.json`, MIT).

Every object the sandbox serves starts as a shallow copy of one of these templates, so its keys and
JSON types are Stripe's. The fixtures carry OpenAPI example junk in some fields (a
`last_finalization_error` on every invoice, random 10-digit amounts); those are replaced here by the
values a real object of that kind has. Where Stripe's API reference documents a field as nullable
but the fixture happens to hold an object or a number, the sandbox may serve null: those fields are
listed in `NULLABLE_FIELDS` (dotted paths; `[]` for list elements), which the shape test honours.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from typing import Any

import orjson

FIXTURE_FILE = "stripe_fixtures3.subset.json"

# Dotted paths, relative to the object, that Stripe documents as nullable (see module docstring).
NULLABLE_FIELDS: dict[str, frozenset[str]] = {
    "customer": frozenset({"discount", "shipping"}),
    "invoice": frozenset(
        {
            "due_date",
            "effective_at",
            "from_invoice",
            "last_finalization_error",
            "next_payment_attempt",
            "parent",
            "shipping_cost",
            "shipping_details",
            "customer_shipping",
            "webhooks_delivered_at",
            "lines.data[].parent.subscription_item_details",
            "lines.data[].parent.invoice_item_details.proration_details.credited_items",
        }
    ),
    "line_item": frozenset(
        {
            "parent.subscription_item_details",
            "parent.invoice_item_details.proration_details.credited_items",
        }
    ),
    "charge": frozenset({"source", "transfer_data", "shipping"}),
    "refund": frozenset(),
    "credit_note": frozenset({"voided_at", "shipping_cost"}),
    "event": frozenset(),
}

# Keys a real object may carry beyond the fixture's (Stripe adds them on some objects only).
OPTIONAL_KEYS: dict[str, frozenset[str]] = {
    "event": frozenset({"data.previous_attributes"}),
}


@cache
def fixtures() -> dict[str, Any]:
    """The raw fixture objects by resource name (read once)."""
    raw = resources.files(__package__).joinpath(FIXTURE_FILE).read_bytes()
    data: dict[str, Any] = orjson.loads(raw)["resources"]
    return data


def _fixture(name: str) -> dict[str, Any]:
    return copy.deepcopy(fixtures()[name])


@cache
def customer_template() -> dict[str, Any]:
    t = _fixture("customer")
    t.update(discount=None, shipping=None, preferred_locales=[], invoice_settings=t["invoice_settings"])
    return t


@cache
def line_item_template() -> dict[str, Any]:
    t = _fixture("line_item")
    t["parent"] = {
        "invoice_item_details": {
            "invoice_item": "",
            "proration": False,
            "proration_details": {"credited_items": None},
            "subscription": None,
        },
        "subscription_item_details": None,
        "type": "invoice_item_details",
    }
    t["pretax_credit_amounts"] = []
    t["taxes"] = []
    return t


@cache
def invoice_template() -> dict[str, Any]:
    t = _fixture("invoice")
    t.update(
        account_name="Sandbox Billing Ltd",
        amount_overpaid=0,
        automatically_finalizes_at=None,
        billing_reason="manual",
        due_date=None,
        from_invoice=None,
        last_finalization_error=None,
        next_payment_attempt=None,
        parent=None,
        shipping_cost=None,
        shipping_details=None,
        customer_shipping=None,
        total_pretax_credit_amounts=[],
        total_taxes=[],
    )
    return t


@cache
def charge_template() -> dict[str, Any]:
    t = _fixture("charge")
    t.update(
        source=None,
        transfer_data=None,
        shipping=None,
        calculated_statement_descriptor="SANDBOX",
        statement_descriptor=None,
        outcome={
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "approved_by_network",
            "reason": None,
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
    )
    return t


@cache
def refund_template() -> dict[str, Any]:
    return _fixture("refund")


@cache
def credit_note_template() -> dict[str, Any]:
    t = _fixture("credit_note")
    t.update(refunds=[], shipping_cost=None, pretax_credit_amounts=[], discount_amounts=[])
    return t


@cache
def credit_note_line_template() -> dict[str, Any]:
    t: dict[str, Any] = copy.deepcopy(fixtures()["credit_note"]["lines"]["data"][0])
    t.update(tax_rates=[], pretax_credit_amounts=[], taxes=[], metadata={})
    return t


@cache
def event_template() -> dict[str, Any]:
    t = _fixture("event")
    t["api_version"] = "2025-10-29.clover"
    t["data"] = {}
    return t
