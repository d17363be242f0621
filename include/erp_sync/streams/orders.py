"""A non-Stripe API declared as data: orders from `/api/v2/orders` (offset pagination over
`{"items": [...], "total": n}`, ISO `updated_since`/`updated_before`, key `order_id`, OAuth2).
Same client, same operator; only this spec is new.

The API has no created filter, so a full refresh lists by `updated_before` (everything up to the
window end) and every record is versioned by its own `updated_at` in both modes. Nor has it a route for
one order by id: the reconcile's lookups skip the stream, saying so (ADR 0023), and the repair re-sends
its orders from a re-listing of the period (ADR 0024)."""

from __future__ import annotations

from erp_sync.streams.spec import FullRefreshSpec, IncrementalSpec, PaginatorSpec, StreamSpec

ORDERS = StreamSpec(
    name="orders",
    source_system="orders_api",
    path="/api/v2/orders",
    model="Order",
    mapping="orders",
    target_tables=("sales_orders",),
    primary_key="order_id",
    record_selector="items",
    created_field="created_at",
    # Orders updated past the window end mid-walk leave the filtered set: re-read 5 rows per page
    # so the rows that slide back are never skipped (the API accepts limit up to 1000).
    paginator=PaginatorSpec(
        "offset", page_size=100, limit_param="limit", offset_param="offset", total_path="total", overlap=5
    ),
    incremental=IncrementalSpec(
        "updated_since",
        since_param="updated_since",
        until_param="updated_before",
        version_field="updated_at",
        retention_days=None,  # the API filters the live table: any cursor age works
    ),
    full_refresh=FullRefreshSpec(
        created_gte_param="updated_since", created_lt_param="updated_before", timestamp_format="iso8601"
    ),
    record_path=None,  # no GET /api/v2/orders/{id}: a request there can only 404
)
