"""Pydantic v2 models of the source objects, declaring only the fields the mappings use.

Validation is strict on purpose: an amount is an `int` in minor units (a string or float amount is
a malformed record, not something to coerce), a timestamp is int unix seconds (Stripe) or an
ISO-8601 string with an offset (the orders API), a currency is a known ISO-4217 code (stored lower
case, as Stripe sends it). Unknown fields are ignored, so Stripe adding fields never breaks a run.
Expandable references (`"customer": "cus_..."` or the expanded object) are reduced to the id.
"""

from __future__ import annotations

import importlib
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, StrictInt, StrictStr
from pydantic_core import PydanticCustomError

from erp_sync.core.money import CURRENCY_EXPONENTS, accepted_currencies
from erp_sync.core.timeutil import parse_iso8601

# numeric(20,3) holds 17 integer digits; with exponent 0 a minor amount is a major amount.
MAX_ABS_MINOR: Final = 10**17 - 1
# Staging money columns are numeric(20,3): a 4-decimal currency (CLF, UYW) would be rounded.
MAX_STAGING_EXPONENT: Final = 3
# 9999-12-31T23:59:59Z: the last instant a timestamptz column and `datetime` both represent.
MAX_UNIX_SECONDS: Final = 253_402_300_799


def _check_currency(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "Input should be a valid string")
    exponent = CURRENCY_EXPONENTS.get(value.upper())
    if exponent is None:
        raise PydanticCustomError(
            "unknown_currency", "unknown ISO-4217 currency code {code}", {"code": value}
        )
    if exponent > MAX_STAGING_EXPONENT:
        raise PydanticCustomError(
            "unknown_currency",
            "currency {code} has {exponent} decimals; staging money columns hold 3",
            {"code": value, "exponent": exponent},
        )
    accepted = accepted_currencies()
    if accepted is not None and value.upper() not in accepted:
        raise PydanticCustomError(
            "currency_not_enabled",
            "currency {code} is not enabled in the ERP (ERP_SYNC_ACCEPTED_CURRENCIES)",
            {"code": value.upper()},
        )
    return value.lower()


def _expandable_id(value: Any) -> Any:
    """Stripe sends either the id or, when expanded, the object with its `id`."""
    if isinstance(value, dict) and "id" in value:
        return value["id"]
    return value


def _parse_iso_utc(value: Any) -> datetime:
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "Input should be an ISO-8601 string")
    try:
        return parse_iso8601(value)
    except ValueError as exc:
        raise PydanticCustomError("datetime_from_iso", "{reason}", {"reason": str(exc)}) from exc


Currency = Annotated[str, PlainValidator(_check_currency)]
MinorAmount = Annotated[StrictInt, Field(ge=-MAX_ABS_MINOR, le=MAX_ABS_MINOR)]
UnixSeconds = Annotated[StrictInt, Field(ge=0, le=MAX_UNIX_SECONDS)]
ObjectId = Annotated[StrictStr, Field(min_length=1)]
ExpandableId = Annotated[StrictStr, BeforeValidator(_expandable_id)]
IsoUtcDatetime = Annotated[datetime, PlainValidator(_parse_iso_utc)]
# A plain decimal number as text (Stripe's `quantity_decimal`, `unit_amount_decimal`); checked in
# Rust by the pattern, turned into a `Decimal` by the mapping.
DecimalString = Annotated[StrictStr, Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", max_length=40)]


class SourceModel(BaseModel):
    """Base of every source model: strict types, unknown fields ignored, immutable."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class Customer(SourceModel):
    id: ObjectId
    created: UnixSeconds
    name: StrictStr | None = None
    email: StrictStr | None = None
    currency: Currency | None = None


class DiscountAmount(SourceModel):
    """One entry of a line's `discount_amounts`: what one discount took off the line."""

    amount: MinorAmount
    discount: ExpandableId  # the discount's id, or the expanded Discount object with its `id`


class InvoiceLine(SourceModel):
    id: ObjectId
    # Gross: before the line's own (item-level) discounts, as Stripe documents for every line but a
    # proration whose discounts are not itemized, whose amount is net and whose discount amounts are
    # 0 (ADR 0019).
    amount: MinorAmount
    description: StrictStr | None = None
    quantity: StrictInt | None = None
    quantity_decimal: DecimalString | None = None
    # The line's own discounts (ids, or expanded objects: either is reduced to the id). The
    # invoice's discounts are not here, but their shares of this line are in `discount_amounts`.
    discounts: list[ExpandableId] | None = None
    discount_amounts: list[DiscountAmount] | None = None

    @property
    def quantity_value(self) -> Decimal | None:
        """`quantity_decimal` when Stripe sends it (fractional quantities), else `quantity`."""
        if self.quantity_decimal is not None:
            return Decimal(self.quantity_decimal)
        return None if self.quantity is None else Decimal(self.quantity)

    @property
    def item_discount(self) -> int | None:
        """What the line's own discounts took off its `amount` (minor units): the sum of its
        `discount_amounts` whose discount is one of its `discounts`; the shares of invoice-level
        discounts are not counted. 0 when the line lists discount amounts and none is its own;
        None when the source states no discount amounts, or lists some without saying which
        discounts are the line's own (no `discounts`)."""
        amounts = self.discount_amounts
        if amounts is None:
            return None
        if not amounts:
            return 0
        if self.discounts is None:
            return None
        own = self.discounts
        return sum(entry.amount for entry in amounts if entry.discount in own)


class InvoiceLineList(SourceModel):
    """The embedded lines. `has_more` must be false: the client completes truncated lists from
    `/v1/invoices/{id}/lines` and clears it, so a true value here means lines are missing."""

    data: list[InvoiceLine]
    has_more: Literal[False] = False


class TaxAmount(SourceModel):
    amount: MinorAmount


class Invoice(SourceModel):
    id: ObjectId
    customer: ExpandableId | None = None
    number: StrictStr | None = None
    status: StrictStr
    currency: Currency
    # The lines' sum: before invoice-level discounts and exclusive tax (inclusive tax is in it).
    subtotal: MinorAmount | None = None
    total: MinorAmount
    amount_paid: MinorAmount
    amount_due: MinorAmount
    created: UnixSeconds
    effective_at: UnixSeconds | None = None
    due_date: UnixSeconds | None = None
    lines: InvoiceLineList
    # Stripe lists the taxes in `total_taxes` since API version 2025-03-31; before, one `tax`.
    total_taxes: list[TaxAmount] | None = None
    tax: MinorAmount | None = None

    @property
    def tax_total(self) -> int | None:
        """All tax on the invoice, inclusive and exclusive; None when the source states none."""
        if self.total_taxes is not None:
            return sum(tax.amount for tax in self.total_taxes)
        return self.tax


class Charge(SourceModel):
    id: ObjectId
    amount: MinorAmount
    amount_refunded: MinorAmount
    currency: Currency
    status: StrictStr
    created: UnixSeconds
    customer: ExpandableId | None = None
    # The current Stripe charge has no `invoice`; older API versions (and our sandbox) may send it.
    invoice: ExpandableId | None = None
    metadata: dict[str, StrictStr | None] = Field(default_factory=dict)

    @property
    def invoice_id(self) -> str | None:
        """The invoice this charge pays: top-level `invoice` when present, else `metadata["invoice"]`."""
        return self.invoice or self.metadata.get("invoice") or None


class Refund(SourceModel):
    id: ObjectId
    amount: MinorAmount
    currency: Currency
    status: StrictStr
    created: UnixSeconds
    charge: ExpandableId | None = None
    reason: StrictStr | None = None


class CreditNote(SourceModel):
    id: ObjectId
    invoice: ExpandableId | None = None
    customer: ExpandableId | None = None
    number: StrictStr | None = None
    status: StrictStr
    reason: StrictStr | None = None
    currency: Currency
    total: MinorAmount
    created: UnixSeconds
    effective_at: UnixSeconds | None = None


class Order(SourceModel):
    """An order from the non-Stripe orders API (the declarative-stream example)."""

    order_id: ObjectId
    customer_id: StrictStr | None = None
    state: StrictStr
    currency: Currency
    total_cents: MinorAmount
    created_at: IsoUtcDatetime
    updated_at: IsoUtcDatetime


MODELS: Final[dict[str, type[BaseModel]]] = {
    model.__name__: model for model in (Customer, Invoice, InvoiceLine, Charge, Refund, CreditNote, Order)
}


def resolve(name: str) -> type[BaseModel]:
    """The model class for `StreamSpec.model`: a name in this module (`"Invoice"`,
    `"erp_sync.core.models.Invoice"`) or any importable dotted `module.Class` that is a BaseModel.
    """
    short = name.removeprefix(f"{__name__}.")
    if short in MODELS:
        return MODELS[short]
    module_name, _, attr = name.rpartition(".")
    if not module_name:
        raise LookupError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    candidate = getattr(importlib.import_module(module_name), attr, None)
    if not (isinstance(candidate, type) and issubclass(candidate, BaseModel)):
        raise LookupError(f"{name!r} is not a pydantic model")
    return candidate
