"""Generated Stripe-shaped records for unit tests and the map_pages measurement.

Each record is a deep copy of a real fixture object (so it carries all of Stripe's fields, which
validation must skip) with its ids, amounts, currency and times varied.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from erp_sync.core.transform import MAPPINGS
from erp_sync.streams.spec import StreamSpec

REPO_ROOT = Path(__file__).resolve().parents[3]
FIXTURES = (REPO_ROOT / "../shared/reference/stripe/fixtures3.subset.json").resolve()
CURRENCIES = ("usd", "eur", "jpy", "kwd", "gbp")

needs_fixtures = pytest.mark.skipif(
    not FIXTURES.exists(), reason=f"Stripe fixtures not found at {FIXTURES} (../shared/reference/stripe/)"
)

# One spec per mapping, named after it (the unit tests map without the stream registry).
SPECS = {
    key: StreamSpec(
        name=key,
        source_system="orders_api" if key == "orders" else "stripe",
        path="/",
        model=model,
        mapping=key,
        target_tables=MAPPINGS[key].tables,
        primary_key=MAPPINGS[key].id_source,
    )
    for key, model in [
        ("stripe_customers", "Customer"),
        ("stripe_invoices", "Invoice"),
        ("stripe_charges", "Charge"),
        ("stripe_refunds", "Refund"),
        ("stripe_credit_notes", "CreditNote"),
        ("orders", "Order"),
    ]
}


@cache
def stripe_fixtures() -> dict[str, Any]:
    """The real Stripe objects, keyed by resource name (`invoice`, `charge`, ...)."""
    return json.loads(FIXTURES.read_text())["resources"]


def fixture(name: str) -> dict[str, Any]:
    """A fresh deep copy of one fixture object."""
    return copy.deepcopy(stripe_fixtures()[name])


def invoices(count: int, lines_per_invoice: int = 3, start: int = 0) -> list[dict[str, Any]]:
    """`count` invoices with `lines_per_invoice` lines each, varied currencies and amounts."""
    template = stripe_fixtures()["invoice"]
    line_template = template["lines"]["data"][0]
    out = []
    for n in range(start, start + count):
        invoice = copy.deepcopy(template)
        invoice["id"] = f"in_gen{n:09d}"
        invoice["number"] = f"INV-{n:06d}"
        invoice["currency"] = CURRENCIES[n % len(CURRENCIES)]
        invoice["created"] = 1_700_000_000 + n
        invoice["status"] = ("draft", "open", "paid")[n % 3]
        lines = []
        for k in range(lines_per_invoice):
            line = copy.deepcopy(line_template)
            line["id"] = f"il_gen{n:09d}_{k}"
            line["amount"] = 100 * (k + 1) + n % 97
            line["quantity"] = k + 1
            line["currency"] = invoice["currency"]
            lines.append(line)
        invoice["lines"]["data"] = lines
        total = sum(line["amount"] for line in lines)
        invoice["total"] = invoice["subtotal"] = invoice["amount_due"] = total
        invoice["amount_paid"] = 0
        out.append(invoice)
    return out
