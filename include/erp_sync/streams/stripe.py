"""The Stripe preset: customers, invoices (with every line), charges, refunds and credit notes.

Full refreshes page each list endpoint by `created` window; deltas page `/v1/events` filtered by
the event types that carry the stream's object (Stripe has no updated-since filter and keeps
events for 30 days). `types[]` takes at most 20 exact names, so the lists below stay under that.
"""

from __future__ import annotations

from erp_sync.streams.spec import ChildListSpec, IncrementalSpec, PaginatorSpec, StreamSpec

SOURCE_SYSTEM = "stripe"
PAGE_SIZE = 100  # Stripe's maximum `limit`


def _events(*types: str) -> IncrementalSpec:
    if len(types) > 20:
        raise ValueError("Stripe accepts at most 20 types[] per events request")
    deletes = tuple(t for t in types if t.endswith(".deleted"))  # the object is gone: a tombstone
    return IncrementalSpec("stripe_events", event_types=types, delete_event_types=deletes)


def _stripe_stream(
    name: str, path: str, model: str, mapping: str, tables: tuple[str, ...], events: IncrementalSpec
) -> StreamSpec:
    return StreamSpec(
        name=name,
        source_system=SOURCE_SYSTEM,
        path=path,
        model=model,
        mapping=mapping,
        target_tables=tables,
        paginator=PaginatorSpec("stripe", page_size=PAGE_SIZE),
        incremental=events,
    )


CUSTOMERS = _stripe_stream(
    "customers",
    "/v1/customers",
    "Customer",
    "stripe_customers",
    ("customers",),
    _events("customer.created", "customer.updated", "customer.deleted"),
)

INVOICES = StreamSpec(
    name="invoices",
    source_system=SOURCE_SYSTEM,
    path="/v1/invoices",
    model="Invoice",
    mapping="stripe_invoices",
    target_tables=("ar_invoices", "ar_invoice_lines"),
    paginator=PaginatorSpec("stripe", page_size=PAGE_SIZE),
    incremental=_events(
        "invoice.created",
        "invoice.updated",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "invoice.voided",
        "invoice.marked_uncollectible",
        "invoice.sent",
        "invoice.deleted",
        "invoice.overdue",
    ),
    children=(ChildListSpec(field="lines", path_template="/v1/invoices/{id}/lines"),),
)

CHARGES = _stripe_stream(
    "charges",
    "/v1/charges",
    "Charge",
    "stripe_charges",
    ("ar_receipts",),
    _events(
        "charge.succeeded",
        "charge.failed",
        "charge.pending",
        "charge.captured",
        "charge.refunded",
        "charge.updated",
        "charge.expired",
    ),
)

REFUNDS = _stripe_stream(
    "refunds",
    "/v1/refunds",
    "Refund",
    "stripe_refunds",
    ("ar_refunds",),
    _events("refund.created", "refund.updated", "refund.failed", "charge.refund.updated"),
)

CREDIT_NOTES = _stripe_stream(
    "credit_notes",
    "/v1/credit_notes",
    "CreditNote",
    "stripe_credit_notes",
    ("ar_credit_memos",),
    _events("credit_note.created", "credit_note.updated", "credit_note.voided"),
)

STRIPE_STREAMS: tuple[StreamSpec, ...] = (CUSTOMERS, INVOICES, CHARGES, REFUNDS, CREDIT_NOTES)
