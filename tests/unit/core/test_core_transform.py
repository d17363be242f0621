"""map_pages: every Stripe object mapped from the real fixtures, orders, rejections, in-batch dedupe,
row hashes, and the mappings' agreement with the staging schema and the declared streams."""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest
from core_records import REPO_ROOT, SPECS, fixture, invoices, needs_fixtures

from erp_sync.core.batch import CHILDREN_SHA256, CONTROL_COLUMNS, Page, Rejection
from erp_sync.core.hashing import combine_digests, row_sha256
from erp_sync.core.transform import MAPPINGS, map_pages
from erp_sync.streams.spec import StreamSpec

CREATED = datetime(2009, 2, 13, 23, 31, 30, tzinfo=UTC)  # the fixtures' `created`


def page(stream: str, records: list[Any], versions: list[int] | None = None, **kw: Any) -> Page:
    versions = versions if versions is not None else [100] * len(records)
    return Page(stream=stream, page_no=0, url="/test", body=b"{}", records=records, versions=versions, **kw)


def one_row(key: str, record: dict[str, Any], version: int = 100) -> dict[str, Any]:
    batch = map_pages(SPECS[key], [page(key, [record], [version])])
    assert batch.rejections == [] and batch.accepted == 1
    [row] = batch.tables[batch.primary_table].to_dict("records")
    return row


# --- each Stripe object from the real fixtures ------------------------------------------------


@needs_fixtures
def test_customer_fixture_maps_to_customers() -> None:
    row = one_row("stripe_customers", fixture("customer"), version=7)
    assert row["source_system"] == "stripe"
    assert row["source_id"] == "cus_QXg1o8vcGmoR32"
    assert row["source_version"] == 7
    assert (row["name"], row["email"], row["currency_code"]) == (None, None, "USD")
    assert row["created_at"] == CREATED and row["created_at"].tzinfo is not None


@needs_fixtures
def test_invoice_fixture_maps_to_header_and_lines() -> None:
    batch = map_pages(SPECS["stripe_invoices"], [page("stripe_invoices", [fixture("invoice")], [42])])
    assert batch.primary_table == "ar_invoices"
    [header] = batch.tables["ar_invoices"].to_dict("records")
    assert header["source_id"] == "in_1Pgc6tB7WZ01zgkWu9fdqL6I"
    assert header["customer_ref"] == "cus_QXg1o8vcGmoR32"
    assert header["invoice_number"] is None
    assert header["status"] == "draft"
    assert header["currency_code"] == "USD"
    assert header["total_amount"] == Decimal("10.00") and str(header["total_amount"]) == "10.00"
    assert (header["amount_paid"], header["amount_due"]) == (Decimal("0.00"), Decimal("10.00"))
    assert header["issued_at"] == CREATED  # effective_at
    assert header["due_at"] == CREATED
    assert header["subtotal_amount"] == Decimal("10.00")
    assert header["tax_amount"] is None  # this API version's `total_taxes` is null and `tax` absent
    [line] = batch.tables["ar_invoice_lines"].to_dict("records")
    assert line["source_id"] == "il_1Pgc6sB7WZ01zgkWFnxLrLCq"
    assert line["invoice_source_id"] == header["source_id"]
    assert line["line_number"] == 1
    assert line["currency_code"] == "USD"
    assert line["description"] == "My First Invoice Item (created for API docs)"
    assert line["quantity"] == Decimal(1) and isinstance(line["quantity"], Decimal)
    assert str(line["amount"]) == "10.00"
    assert str(line["discount_amount"]) == "0.00"  # `discount_amounts` is empty: stated, none
    assert line["source_version"] == 42


@needs_fixtures
def test_a_taxed_invoice_stages_its_subtotal_and_all_its_taxes() -> None:
    invoice = fixture("invoice")
    invoice["currency"] = "kwd"  # three decimals
    invoice["lines"]["data"][0]["amount"] = invoice["subtotal"] = 12_345
    invoice["total_taxes"] = [
        {"amount": 617, "tax_behavior": "exclusive", "taxable_amount": 12_345},
        {"amount": 100, "tax_behavior": "inclusive", "taxable_amount": 12_345},
    ]
    invoice["total"] = invoice["amount_due"] = 12_345 + 617
    header = one_row("stripe_invoices", invoice)
    assert (header["subtotal_amount"], header["tax_amount"], header["total_amount"]) == (
        Decimal("12.345"),
        Decimal("0.717"),
        Decimal("12.962"),
    )


@needs_fixtures
def test_an_invoice_of_an_older_api_version_stages_its_single_tax() -> None:
    invoice = fixture("invoice")
    del invoice["total_taxes"]
    invoice["tax"] = 190
    invoice["total"] = invoice["amount_due"] = invoice["subtotal"] + 190
    header = one_row("stripe_invoices", invoice)
    assert (header["tax_amount"], header["total_amount"]) == (Decimal("1.90"), Decimal("11.90"))


def _discounted_invoice(currency: str) -> dict[str, Any]:
    """An invoice with an item-level discount on two lines (one by id, one expanded) and an
    invoice-level discount apportioned to every line's `discount_amounts` (ADR 0019)."""
    invoice = fixture("invoice")
    invoice["currency"] = currency
    invoice["discounts"] = ["di_invoice"]
    template = invoice["lines"]["data"][0]
    expanded = {"id": "di_item_2", "object": "discount", "coupon": {"id": "SPRING", "percent_off": 5}}
    specs = [
        (10_000, ["di_item_1"], [(1_000, "di_item_1"), (450, "di_invoice")]),
        (5_000, [expanded], [(250, expanded), (238, {"id": "di_invoice", "object": "discount"})]),
        (2_001, [], [(100, "di_invoice")]),
    ]
    lines = []
    for k, (amount, discounts, amounts) in enumerate(specs):
        line = {**template, "id": f"il_disc_{k}", "amount": amount, "discounts": discounts}
        line["discount_amounts"] = [{"amount": a, "discount": d} for a, d in amounts]
        lines.append(line)
    lines.append({k: v for k, v in template.items() if k != "discount_amounts"} | {"id": "il_disc_3"})
    invoice["lines"]["data"] = lines
    invoice["subtotal"] = 9_000 + 4_750 + 2_001 + template["amount"]
    invoice["total"] = invoice["amount_due"] = invoice["subtotal"] - 788
    return invoice


@needs_fixtures
@pytest.mark.parametrize(
    ("currency", "staged"),
    [
        ("usd", ("10.00", "2.50", "0.00", None)),
        ("jpy", ("1000", "250", "0", None)),
        ("kwd", ("1.000", "0.250", "0.000", None)),
    ],
)
def test_a_lines_own_discounts_are_staged_in_the_invoice_currency(
    currency: str, staged: tuple[str | None, ...]
) -> None:
    """Only the line's own discounts count (by id, or expanded); the invoice-level discount's share is
    not the line's; a line without `discount_amounts` states none."""
    batch = map_pages(SPECS["stripe_invoices"], [page("stripe_invoices", [_discounted_invoice(currency)])])
    assert batch.rejections == []
    lines = batch.tables["ar_invoice_lines"]
    got = tuple(None if value is None else str(value) for value in lines["discount_amount"])
    assert got == staged
    [header] = batch.tables["ar_invoices"].to_dict("records")
    pairs = zip(lines["amount"], lines["discount_amount"], strict=True)
    net = sum(amount - (discount or 0) for amount, discount in pairs)
    assert net == header["subtotal_amount"] != header["total_amount"]


@needs_fixtures
def test_discount_amounts_without_the_lines_own_discounts_are_not_guessed() -> None:
    invoice = _discounted_invoice("usd")
    del invoice["lines"]["data"][0]["discounts"]  # which of its amounts are its own is not stated
    invoice["lines"]["data"][1]["discount_amounts"] = []  # stated: none at all
    lines = map_pages(SPECS["stripe_invoices"], [page("stripe_invoices", [invoice])]).tables[
        "ar_invoice_lines"
    ]
    assert lines["discount_amount"].tolist()[:2] == [None, Decimal("0.00")]


@needs_fixtures
@pytest.mark.parametrize(
    ("where", "value", "field"),
    [
        ("discount_amounts", [{"amount": "1.00", "discount": "di_item_1"}], "discount_amounts.0.amount"),
        ("discount_amounts", [{"amount": 100, "discount": {"object": "discount"}}], "discount_amounts.0"),
        ("discounts", [{"object": "discount"}], "discounts.0"),
    ],
)
def test_a_malformed_line_discount_rejects_the_invoice(where: str, value: Any, field: str) -> None:
    invoice = _discounted_invoice("usd")
    invoice["lines"]["data"][0][where] = value
    rejection = _reject_one("stripe_invoices", invoice, [])
    assert rejection.reason_code == "INVALID_FIELD"
    assert f"field lines.data.0.{field}" in rejection.message


@needs_fixtures
def test_a_string_tax_amount_rejects_the_invoice() -> None:
    invoice = fixture("invoice")
    invoice["total_taxes"] = [{"amount": "1.90"}]
    batch = map_pages(SPECS["stripe_invoices"], [page("stripe_invoices", [invoice])])
    [rejection] = batch.rejections
    assert rejection.reason_code == "INVALID_FIELD" and "total_taxes.0.amount" in rejection.message


@needs_fixtures
def test_charge_fixture_maps_to_receipts() -> None:
    row = one_row("stripe_charges", fixture("charge"))
    assert row["source_id"] == "ch_1PgafuB7WZ01zgkWXYmPNZs8"
    assert (str(row["amount"]), str(row["amount_refunded"])) == ("1.00", "0.00")
    assert (row["status"], row["currency_code"], row["received_at"]) == ("succeeded", "USD", CREATED)
    assert row["invoice_source_id"] is None
    linked = one_row("stripe_charges", {**fixture("charge"), "metadata": {"invoice": "in_9"}})
    assert linked["invoice_source_id"] == "in_9"


@needs_fixtures
def test_refund_fixture_maps_to_refunds() -> None:
    row = one_row("stripe_refunds", fixture("refund"))
    assert row["source_id"] == "re_1Pgc72B7WZ01zgkWqPvrRrPE"
    assert row["receipt_source_id"] == "ch_1PgafuB7WZ01zgkWXYmPNZs8"
    assert (str(row["amount"]), row["status"], row["reason"], row["refunded_at"]) == (
        "1.00",
        "succeeded",
        None,
        CREATED,
    )


@needs_fixtures
def test_credit_note_fixture_maps_to_credit_memos() -> None:
    row = one_row("stripe_credit_notes", fixture("credit_note"))
    assert row["source_id"] == "cn_1Pgc75B7WZ01zgkWJMPt5riP"
    assert row["invoice_source_id"] == "in_1Pgc75B7WZ01zgkWYv4iMwt7"
    assert row["customer_ref"] == "cus_QXg1o8vcGmoR32"
    assert row["memo_number"] == "ABCD-1234-CN-01"
    assert (row["status"], row["currency_code"], str(row["total_amount"])) == ("issued", "USD", "16.90")
    assert row["issued_at"] == CREATED


@needs_fixtures
@pytest.mark.parametrize(("currency", "total", "line"), [("jpy", "1000", "1000"), ("kwd", "1.000", "1.000")])
def test_invoice_money_uses_the_invoice_currency_exponent(currency: str, total: str, line: str) -> None:
    record = fixture("invoice")
    record["currency"] = currency
    record["lines"]["data"][0]["currency"] = "usd"  # lines take the invoice's currency
    batch = map_pages(SPECS["stripe_invoices"], [page("stripe_invoices", [record])])
    header = batch.tables["ar_invoices"].iloc[0]
    lines = batch.tables["ar_invoice_lines"].iloc[0]
    assert (str(header["total_amount"]), header["currency_code"]) == (total, currency.upper())
    assert (str(lines["amount"]), lines["currency_code"]) == (line, currency.upper())


@needs_fixtures
def test_draft_invoice_without_effective_at_is_issued_at_created() -> None:
    row = one_row("stripe_invoices", {**fixture("invoice"), "effective_at": None, "due_date": None})
    assert row["issued_at"] == CREATED
    assert pd.isna(row["due_at"])


def test_order_maps_to_sales_orders() -> None:
    order = {
        "order_id": "ord_1",
        "customer_id": "cus_1",
        "state": "shipped",
        "currency": "kwd",
        "total_cents": 12345,
        "created_at": "2024-03-01T10:00:00+01:00",
        "updated_at": "2024-03-02T10:00:00Z",
    }
    row = one_row("orders", order, version=1709373600)
    assert (row["source_system"], row["source_id"], row["source_version"]) == (
        "orders_api",
        "ord_1",
        1709373600,
    )
    assert (row["customer_ref"], row["status"], row["currency_code"]) == ("cus_1", "shipped", "KWD")
    assert str(row["total_amount"]) == "12.345"
    assert row["ordered_at"] == datetime(2024, 3, 1, 9, tzinfo=UTC)


# --- frame conventions ------------------------------------------------------------------------


@needs_fixtures
@pytest.mark.parametrize("key", [k for k in SPECS if k != "orders"])
def test_frame_columns_dtypes_and_no_floats(key: str) -> None:
    resource = {
        "stripe_customers": "customer",
        "stripe_invoices": "invoice",
        "stripe_charges": "charge",
        "stripe_refunds": "refund",
        "stripe_credit_notes": "credit_note",
    }[key]
    batch = map_pages(SPECS[key], [page(key, [fixture(resource)])])
    for table, frame in batch.tables.items():
        assert tuple(frame.columns[-4:]) == CONTROL_COLUMNS, table
        for column in frame.columns:
            dtype = frame[column].dtype
            assert not pd.api.types.is_float_dtype(dtype), (table, column)
            if pd.api.types.is_datetime64_any_dtype(dtype):
                assert str(dtype.tz) == "UTC", (table, column)
            for value in frame[column]:
                assert not isinstance(value, float), (table, column, value)
        assert frame["row_sha256"].str.fullmatch(r"[0-9a-f]{64}").all()


def _staging_columns() -> dict[str, dict[str, bool]]:
    """table -> column -> NOT NULL without default, parsed from V001's tables and the later
    migrations' `ADD COLUMN`s."""
    migrations = sorted((REPO_ROOT / "include/erp_sync/sql/migrations").glob("V*.sql"))
    sql = migrations[0].read_text()
    tables: dict[str, dict[str, bool]] = {}
    for name, body in re.findall(r"CREATE TABLE erp_staging\.(\w+) \((.*?)\n\);", sql, re.S):
        columns = {}
        for line in body.splitlines():
            match = re.match(r"\s+(\w+)\s+(.*)", line)
            if match and match.group(1) != "PRIMARY":
                rest = match.group(2)
                columns[match.group(1)] = "NOT NULL" in rest and "DEFAULT" not in rest
        tables[name] = columns
    for migration in migrations[1:]:
        added = r"ALTER TABLE erp_staging\.(\w+) ADD COLUMN (?:IF NOT EXISTS )?(\w+) ([^;]*);"
        for table, column, rest in re.findall(added, migration.read_text()):
            tables[table][column] = "NOT NULL" in rest and "DEFAULT" not in rest
    return tables


@pytest.mark.parametrize("key", list(MAPPINGS))
def test_mappings_fill_the_staging_tables(key: str) -> None:
    schema = _staging_columns()
    batch = map_pages(SPECS[key], [])
    for table, frame in batch.tables.items():
        assert table in schema
        assert set(frame.columns) <= set(schema[table]), set(frame.columns) - set(schema[table])
        required = {c for c, not_null in schema[table].items() if not_null} - {"sync_batch_id"}
        assert required <= set(frame.columns), required - set(frame.columns)


def test_declared_streams_agree_with_mappings_and_models() -> None:
    from erp_sync.core.models import resolve
    from erp_sync.streams.orders import ORDERS
    from erp_sync.streams.stripe import STRIPE_STREAMS

    for spec in (*STRIPE_STREAMS, ORDERS):
        assert spec.mapping in MAPPINGS, spec.name
        assert set(spec.target_tables) == set(MAPPINGS[spec.mapping].tables), spec.name
        resolve(spec.model)
        assert map_pages(spec, []).accepted == 0


# --- hashes -----------------------------------------------------------------------------------


def test_row_hash_is_the_canonical_hash_of_business_columns_and_source_id() -> None:
    batch = map_pages(SPECS["stripe_invoices"], [page("stripe_invoices", invoices(5))])
    lines = batch.tables["ar_invoice_lines"]
    business = [c for c in lines.columns if c not in CONTROL_COLUMNS]
    for row in lines.to_dict("records"):
        fields = {c: row[c] for c in business} | {"source_id": row["source_id"]}
        assert row["row_sha256"] == row_sha256(fields)
    headers = batch.tables["ar_invoices"]
    business = [c for c in headers.columns if c not in (*CONTROL_COLUMNS, CHILDREN_SHA256)]
    for row in headers.to_dict("records"):
        line_hashes = lines.loc[lines["invoice_source_id"] == row["source_id"], "row_sha256"].tolist()
        fields = {c: row[c] for c in business} | {
            "source_id": row["source_id"],
            "ar_invoice_lines__sha256": combine_digests(line_hashes),
        }
        assert row["row_sha256"] == row_sha256(fields)
        # stored beside the hash that covers it, for the loader's retire (ADR 0027)
        assert row[CHILDREN_SHA256] == combine_digests(line_hashes)


def test_children_digest_is_only_on_mappings_that_declare_it() -> None:
    mapping = MAPPINGS["stripe_invoices"]
    assert mapping.stores_children_digest
    others = [
        key for key, other in MAPPINGS.items() if other.stores_children_digest and key != "stripe_invoices"
    ]
    assert others == []
    with pytest.raises(ValueError, match="stores_children_digest needs child tables"):
        dataclasses.replace(MAPPINGS["stripe_customers"], stores_children_digest=True)


def test_children_digest_changes_with_the_line_set_and_only_with_the_lines() -> None:
    [record] = invoices(1)
    fewer = copy.deepcopy(record)
    fewer["lines"]["data"] = fewer["lines"]["data"][:-1]
    fewer["lines"]["total_count"] = len(fewer["lines"]["data"])
    paid = copy.deepcopy(record) | {"status": "paid"}

    def digest_and_hash(one: dict[str, Any]) -> tuple[str, str]:
        [row] = (
            map_pages(SPECS["stripe_invoices"], [page("stripe_invoices", [one])])
            .tables["ar_invoices"]
            .to_dict("records")
        )
        return row[CHILDREN_SHA256], row["row_sha256"]

    digest, sha = digest_and_hash(record)
    assert digest_and_hash(fewer)[0] != digest
    paid_digest, paid_sha = digest_and_hash(paid)
    assert (paid_digest, paid_sha != sha) == (digest, True)


def _hashes(records: list[dict[str, Any]], versions: list[int] | None = None) -> dict[str, str]:
    batch = map_pages(SPECS["stripe_invoices"], [page("stripe_invoices", records, versions)])
    frames = batch.tables.values()
    return {
        sid: h for frame in frames for sid, h in zip(frame["source_id"], frame["row_sha256"], strict=True)
    }


def test_a_changed_line_changes_its_invoice_header_only() -> None:
    before = _hashes(invoices(3))
    changed = invoices(3)
    changed[1]["lines"]["data"][2]["amount"] += 1
    after = _hashes(changed)
    differing = {sid for sid in before if before[sid] != after[sid]}
    assert differing == {"in_gen000000001", "il_gen000000001_2"}


def test_a_changed_line_discount_changes_the_line_and_its_header() -> None:
    before = _hashes(invoices(2))
    changed = invoices(2)
    changed[0]["lines"]["data"][1]["discounts"] = ["di_1"]
    changed[0]["lines"]["data"][1]["discount_amounts"] = [{"amount": 5, "discount": "di_1"}]
    after = _hashes(changed)
    assert {sid for sid in before if before[sid] != after[sid]} == {"in_gen000000000", "il_gen000000000_1"}


def test_a_removed_or_reordered_line_changes_the_header() -> None:
    base = _hashes(invoices(1))["in_gen000000000"]
    removed = invoices(1)
    removed[0]["lines"]["data"].pop()
    assert _hashes(removed)["in_gen000000000"] != base
    reordered = invoices(1)
    reordered[0]["lines"]["data"].reverse()
    assert _hashes(reordered)["in_gen000000000"] != base


def test_version_and_unmapped_fields_do_not_change_hashes() -> None:
    base = _hashes(invoices(2), [1, 1])
    touched = invoices(2)
    touched[0]["livemode"] = True
    touched[0]["lines"]["data"][0]["metadata"] = {"note": "x"}
    assert _hashes(touched, [99, 99]) == base


def test_every_mapped_header_field_changes_the_hash() -> None:
    base = _hashes(invoices(1))["in_gen000000000"]
    for field, value in [
        ("customer", "cus_other"),
        ("number", "INV-X"),
        ("status", "void"),
        ("currency", "eur"),
        ("total", 1),
        ("amount_paid", 1),
        ("amount_due", 1),
        ("effective_at", 1),
        ("due_date", 1),
    ]:
        record = invoices(1)[0]
        record[field] = value
        assert _hashes([record])["in_gen000000000"] != base, field


# --- rejections -------------------------------------------------------------------------------


def _reject_one(key: str, record: Any, good: list[Any]) -> Rejection:
    batch = map_pages(SPECS[key], [page(key, [*good, record])])
    assert batch.accepted == len(good), "the rest of the batch goes on"
    assert batch.extracted == len(good) + 1
    [rejection] = batch.rejections
    assert rejection.stream == key
    if not isinstance(record, dict | list | str | int) or record is None:
        return rejection
    assert json.loads(rejection.raw_payload) == record
    return rejection


@needs_fixtures
def test_missing_id_is_rejected() -> None:
    record = {k: v for k, v in fixture("charge").items() if k != "id"}
    rejection = _reject_one("stripe_charges", record, [fixture("charge")])
    assert rejection.reason_code == "MISSING_ID"
    assert "field id" in rejection.message and rejection.source_id is None
    assert _reject_one("stripe_charges", {**record, "id": None}, []).reason_code == "MISSING_ID"
    assert _reject_one("stripe_charges", {**record, "id": ""}, []).reason_code == "MISSING_ID"


def test_missing_order_id_is_rejected_even_under_a_spec_with_another_primary_key() -> None:
    from erp_sync.streams.orders import ORDERS

    order = {"customer_id": "c", "state": "new", "currency": "usd", "total_cents": 1}
    order |= {"created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z"}
    batch = map_pages(ORDERS, [page(ORDERS.name, [order])])
    assert [r.reason_code for r in batch.rejections] == ["MISSING_ID"]
    assert "order_id" in batch.rejections[0].message


@needs_fixtures
def test_string_amount_is_rejected_naming_the_field() -> None:
    rejection = _reject_one("stripe_charges", {**fixture("charge"), "id": "ch_bad", "amount": "100"}, [])
    assert rejection.reason_code == "INVALID_FIELD"
    assert "field amount" in rejection.message and "'100'" in rejection.message
    assert rejection.source_id == "ch_bad"


@needs_fixtures
def test_string_amount_on_a_line_rejects_its_invoice() -> None:
    bad = invoices(2)
    bad[1]["lines"]["data"][1]["amount"] = "150"
    rejection = _reject_one("stripe_invoices", bad[1], [bad[0]])
    assert rejection.reason_code == "INVALID_FIELD"
    assert "field lines.data.1.amount" in rejection.message
    assert rejection.source_id == "in_gen000000001"


@needs_fixtures
def test_unknown_currency_is_rejected() -> None:
    rejection = _reject_one("stripe_refunds", {**fixture("refund"), "currency": "xyz"}, [fixture("refund")])
    assert rejection.reason_code == "UNKNOWN_CURRENCY"
    assert "field currency" in rejection.message and "xyz" in rejection.message


@needs_fixtures
@pytest.mark.parametrize(
    ("field", "value"),
    [("created", "2009-02-13"), ("customer", 42), ("status", None), ("lines", [1, 2]), ("total", 10.5)],
)
def test_wrong_types_are_rejected_as_invalid_field(field: str, value: Any) -> None:
    record = {**fixture("invoice"), field: value}
    rejection = _reject_one("stripe_invoices", record, [])
    assert rejection.reason_code == "INVALID_FIELD"
    assert f"field {field}" in rejection.message
    assert rejection.source_id == "in_1Pgc6tB7WZ01zgkWu9fdqL6I"


@pytest.mark.parametrize("record", [5, "cus_1", None, ["a"]])
def test_non_objects_are_rejected(record: Any) -> None:
    rejection = _reject_one("stripe_customers", record, [])
    assert rejection.reason_code == "NOT_AN_OBJECT"
    assert rejection.raw_payload == json.dumps(record)


@needs_fixtures
def test_several_problems_pick_the_most_specific_reason_and_list_them() -> None:
    record = {**fixture("charge"), "currency": "xyz", "amount": "1"}
    rejection = _reject_one("stripe_charges", record, [])
    assert rejection.reason_code == "UNKNOWN_CURRENCY"
    assert "field amount" in rejection.message and "field currency" in rejection.message


@needs_fixtures
def test_page_problems_pass_through() -> None:
    problem = Rejection(stream="stripe_charges", reason_code="BAD_JSON", message="x", raw_payload="{oops")
    batch = map_pages(
        SPECS["stripe_charges"], [page("stripe_charges", [fixture("charge")], problems=[problem])]
    )
    assert batch.rejections == [problem]
    assert (batch.extracted, batch.accepted) == (2, 1)


def test_pages_need_one_version_per_record() -> None:
    with pytest.raises(ValueError, match="versions"):
        map_pages(SPECS["stripe_invoices"], [page("stripe_invoices", invoices(2), [1])])


def test_spec_and_mapping_must_agree_on_tables() -> None:
    spec = StreamSpec("x", "stripe", "/", "Invoice", "stripe_invoices", ("ar_invoices",))
    with pytest.raises(ValueError, match="target_tables"):
        map_pages(spec, [])


# --- in-batch dedupe --------------------------------------------------------------------------


def test_dedupe_keeps_the_newest_version_across_pages() -> None:
    old, new = invoices(1), invoices(1)
    old[0]["status"], new[0]["status"] = "open", "paid"
    others = invoices(2, start=1)
    pages = [
        page("stripe_invoices", [new[0], others[0]], [20, 5]),
        page("stripe_invoices", [old[0], others[1]], [10, 5]),
    ]
    batch = map_pages(SPECS["stripe_invoices"], pages)
    headers = batch.tables["ar_invoices"]
    assert headers["source_id"].tolist() == ["in_gen000000000", "in_gen000000001", "in_gen000000002"]
    assert headers.set_index("source_id").loc["in_gen000000000", "status"] == "paid"
    assert headers.set_index("source_id").loc["in_gen000000000", "source_version"] == 20
    assert batch.superseded == 1
    assert batch.extracted == batch.accepted + batch.superseded + len(batch.rejections) == 4
    lines = batch.tables["ar_invoice_lines"]
    assert lines["source_id"].is_unique and len(lines) == 9


def test_dedupe_tie_keeps_the_first_seen() -> None:
    first, second = invoices(1), invoices(1)
    first[0]["status"], second[0]["status"] = "paid", "open"
    second[0]["lines"]["data"].pop()
    batch = map_pages(SPECS["stripe_invoices"], [page("stripe_invoices", [first[0], second[0]], [7, 7])])
    assert batch.tables["ar_invoices"]["status"].tolist() == ["paid"]
    assert len(batch.tables["ar_invoice_lines"]) == 3
    assert batch.superseded == 1


def test_snapshots_the_client_dropped_count_as_superseded() -> None:
    """An event page's older snapshots never reach `records` (the client's `drop_superseded`); the
    batch still accounts for them: extracted == accepted + superseded + rejected."""
    records = invoices(2)
    dropped_by_client = page("stripe_invoices", records, [7, 7])
    dropped_by_client.superseded = 3
    batch = map_pages(SPECS["stripe_invoices"], [dropped_by_client])
    assert (batch.extracted, batch.accepted, batch.superseded) == (5, 2, 3)
    headers = map_pages(SPECS["stripe_invoices"], [dropped_by_client], primary_only=True)
    assert (headers.extracted, headers.superseded) == (5, 3)


def test_a_deleted_record_maps_to_a_tombstone_with_no_lines() -> None:
    """ADR 0015: a record the client marked deleted (its lines already emptied) keeps its header row,
    with a row_sha256 no live snapshot of it has, so the ledger sends it to the loader; a re-read of
    the same deletion hashes the same. Other records of the batch are untouched."""
    live, gone = invoices(2)
    gone["lines"]["data"] = []
    spec = SPECS["stripe_invoices"]
    batch = map_pages(
        spec, [page("stripe_invoices", [gone, live], [9, 9], deleted_ids=frozenset({gone["id"]}))]
    )
    assert batch.deleted_ids == frozenset({gone["id"]})
    assert set(batch.tables["ar_invoice_lines"]["invoice_source_id"]) == {live["id"]}
    as_live = map_pages(spec, [page("stripe_invoices", [gone, live], [9, 9])])
    assert as_live.deleted_ids == frozenset()
    tomb = batch.tables["ar_invoices"].set_index("source_id")["row_sha256"]
    alive = as_live.tables["ar_invoices"].set_index("source_id")["row_sha256"]
    assert tomb[gone["id"]] != alive[gone["id"]] and tomb[live["id"]] == alive[live["id"]]
    again = map_pages(spec, [page("stripe_invoices", [gone], [9], deleted_ids=frozenset({gone["id"]}))])
    assert again.tables["ar_invoices"]["row_sha256"].tolist() == [tomb[gone["id"]]]


def test_a_deletion_marks_only_a_record_the_batch_keeps() -> None:
    """A key marked deleted whose snapshot was rejected is not a tombstone: nothing of it loads, and
    its rejection says it is a deletion (its replay stages the tombstone); other rejections do not."""
    bad, other = invoices(2)
    bad["total"] = other["total"] = "x"
    batch = map_pages(
        SPECS["stripe_invoices"],
        [page("stripe_invoices", [bad, other], [9, 9], deleted_ids=frozenset({bad["id"]}))],
    )
    assert batch.deleted_ids == frozenset()
    assert {(r.source_id, r.deleted) for r in batch.rejections} == {(bad["id"], True), (other["id"], False)}


def test_dedupe_older_copy_first_in_the_list_loses() -> None:
    records = invoices(1) * 3
    batch = map_pages(SPECS["stripe_invoices"], [page("stripe_invoices", records, [1, 3, 2])])
    assert batch.tables["ar_invoices"]["source_version"].tolist() == [3]
    assert batch.superseded == 2


def test_rejected_copies_do_not_count_as_superseded() -> None:
    good, bad = invoices(1), invoices(1)
    bad[0]["total"] = "x"
    batch = map_pages(SPECS["stripe_invoices"], [page("stripe_invoices", [bad[0], good[0]], [9, 1])])
    assert (batch.accepted, batch.superseded, len(batch.rejections)) == (1, 0, 1)


def test_empty_batch_has_every_table_with_its_columns() -> None:
    batch = map_pages(SPECS["stripe_invoices"], [])
    assert set(batch.tables) == {"ar_invoices", "ar_invoice_lines"}
    assert all(len(frame) == 0 for frame in batch.tables.values())
    assert (batch.extracted, batch.superseded, batch.accepted) == (0, 0, 0)


@needs_fixtures
def test_text_columns_keep_none_not_nan_and_object_dtype() -> None:
    named = {**fixture("customer"), "id": "cus_named", "name": "Jenny Rosen", "email": "j@example.com"}
    batch = map_pages(SPECS["stripe_customers"], [page("stripe_customers", [fixture("customer"), named])])
    frame = batch.tables["customers"]
    for column in ("name", "email", "currency_code", "source_id", "source_system", "row_sha256"):
        assert frame[column].dtype == object, column
    assert frame["name"].tolist() == [None, "Jenny Rosen"]
    assert frame["email"].tolist() == [None, "j@example.com"]


@needs_fixtures
def test_invoice_with_truncated_lines_is_rejected_not_loaded_partially() -> None:
    record = fixture("invoice")
    record["lines"]["has_more"] = True
    rejection = _reject_one("stripe_invoices", record, invoices(1))
    assert rejection.reason_code == "INCOMPLETE_CHILDREN"
    assert "field lines.has_more" in rejection.message
    assert rejection.source_id == "in_1Pgc6tB7WZ01zgkWu9fdqL6I"


def test_decimal_quantity_string_maps_to_decimal() -> None:
    record = invoices(1)[0]
    record["lines"]["data"][0]["quantity_decimal"] = "2.500000"
    record["lines"]["data"][1]["quantity"] = None
    batch = map_pages(SPECS["stripe_invoices"], [page("stripe_invoices", [record])])
    quantities = batch.tables["ar_invoice_lines"]["quantity"].tolist()
    assert quantities == [Decimal("2.500000"), None, Decimal(3)]
    assert str(quantities[0]) == "2.500000"


@needs_fixtures
def test_one_by_one_fallback_gives_the_same_split() -> None:
    from erp_sync.core.models import Charge
    from erp_sync.core.transform import _validate_one_by_one, validate_records

    records = [
        fixture("charge"),
        {**fixture("charge"), "amount": "1"},
        7,
        {**fixture("charge"), "id": "ch_2"},
    ]
    fast = validate_records("stripe_charges", "id", Charge, records)
    slow = _validate_one_by_one("stripe_charges", "id", Charge, records, records.__getitem__)
    assert fast[0] == slow[0] == [0, 3]
    assert fast[1] == slow[1]
    assert (
        [r.reason_code for r in fast[2]]
        == [r.reason_code for r in slow[2]]
        == ["INVALID_FIELD", "NOT_AN_OBJECT"]
    )


def test_a_rejection_from_a_narrow_page_keeps_the_whole_record_across_pages() -> None:
    """Records decoded narrow map as usual; a rejected one's raw payload is `Page.whole_record`'s,
    found by its page and position."""
    whole = invoices(4)
    whole[3]["total"] = "12"  # invalid: a string amount
    narrow = [{k: v for k, v in record.items() if k != "footer"} for record in whole]
    for record in whole:
        record["footer"] = f"kept for {record['id']}"

    def narrow_page(no: int, part: slice) -> Page:
        built = page("stripe_invoices", narrow[part], [7] * len(narrow[part]))
        built.page_no = no
        built.rebuild_whole = lambda _stored: whole[part]
        return built

    batch = map_pages(SPECS["stripe_invoices"], [narrow_page(1, slice(0, 2)), narrow_page(2, slice(2, 4))])
    assert batch.tables["ar_invoices"]["source_id"].tolist() == [
        "in_gen000000000",
        "in_gen000000001",
        "in_gen000000002",
    ]
    [rejection] = batch.rejections
    assert rejection.source_id == "in_gen000000003"
    assert json.loads(rejection.raw_payload) == whole[3]


# Pinned: SHA-256 of every row_sha256 the sandbox's objects below map to, every mapping (computed at
# fc86e1e). If this changes, every stored row looks changed to the ledger and the upsert on the next run.
# A change to the sandbox's generator changes it too: re-pin only when the hashing is untouched.
SANDBOX_ROW_HASHES_SHA256 = "8509274d2e17155b7532c40eaa68f63dd7ad7ae33a8cc3d41c223e732d9ce83c"


def test_the_sandbox_objects_row_hashes_are_pinned() -> None:
    from erp_sync.sandbox.world import CHARGE, CREDIT_NOTE, CUSTOMER, INVOICE, ORDER, REFUND, World
    from erp_sync.streams import get_stream

    world = World(invoices=300, seed=5, anchor=1_790_000_000)
    combined = hashlib.sha256()
    for res, stream in [
        (CUSTOMER, "customers"),
        (INVOICE, "invoices"),
        (CHARGE, "charges"),
        (REFUND, "refunds"),
        (CREDIT_NOTE, "credit_notes"),
        (ORDER, "orders"),
    ]:
        render = world.render_order if res == ORDER else functools.partial(world.render, res)
        records = [render(row) for row in range(world.table(res).n)]
        for row, record in enumerate(records):
            if res == INVOICE and record["lines"]["has_more"]:  # completed, as the client does
                record["lines"] = world.lines_list(row, 0, 1_000)
        batch = map_pages(get_stream(stream), [page(stream, records)])
        assert batch.rejections == [] and batch.accepted == len(records) > 0, stream
        for table in sorted(batch.tables):
            combined.update(f"{table}\n".encode())
            combined.update("\n".join(batch.tables[table]["row_sha256"]).encode())
    assert combined.hexdigest() == SANDBOX_ROW_HASHES_SHA256
