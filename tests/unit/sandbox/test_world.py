"""The sandbox's data model without HTTP: seeded generation, consistency, mutations and truth."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
import pytest

from erp_sync.sandbox.faults import FaultError, validate_faults
from erp_sync.sandbox.ids import IdCodec
from erp_sync.sandbox.world import (
    AWKWARD_NAMES,
    CHARGE,
    CREDIT_NOTE,
    CUSTOMER,
    EVENT,
    INVOICE,
    REFUND,
    World,
)


def objects(world: World) -> dict[str, list[dict[str, Any]]]:
    return orjson.loads(orjson.dumps(world.truth(objects=True)))["objects"]


@pytest.fixture(scope="module")
def world() -> World:
    w = World(invoices=500, seed=11)
    w.mutate(200)
    return w


def test_same_seed_same_data_and_other_seed_other_data() -> None:
    a = World(invoices=150, seed=3, anchor=1_790_000_000)
    b = World(invoices=150, seed=3, anchor=1_790_000_000)
    c = World(invoices=150, seed=4, anchor=1_790_000_000)
    a.mutate(20, at=1_790_000_100)
    b.mutate(20, at=1_790_000_100)
    assert orjson.dumps(a.truth()) == orjson.dumps(b.truth())
    assert a.truth(objects=False)["totals"] != c.truth(objects=False)["totals"]


def _tax(entries: list[dict[str, Any]]) -> int:
    return sum(entry["amount"] for entry in entries)


def _own_discount(line: dict[str, Any]) -> int:
    """What the line's own (item-level) discounts took off it (ADR 0019)."""
    return sum(a["amount"] for a in line["discount_amounts"] if a["discount"] in line["discounts"])


def _half_up(amount: int, percent: int) -> int:
    return (amount * percent + 50) // 100


def test_invoice_subtotals_are_their_lines_and_totals_add_the_lines_vat(world: World) -> None:
    """subtotal = sum of (line amount - its own discount); total = subtotal - invoice-level discount
    + exclusive VAT, each line's VAT rounded half up on what is left after every discount."""
    objs = objects(world)
    taxed = set()
    for invoice in objs["invoices"]:
        lines = objs["invoice_lines"][invoice["id"]]
        assert invoice["subtotal"] == invoice["subtotal_excluding_tax"]
        assert invoice["subtotal"] == sum(line["amount"] - _own_discount(line) for line in lines)
        on_invoice = sum(
            a["amount"] for a in invoice["total_discount_amounts"] if a["discount"] in invoice["discounts"]
        )
        assert invoice["total_excluding_tax"] == invoice["subtotal"] - on_invoice
        line_tax = sum(_tax(line["taxes"]) for line in lines)
        assert _tax(invoice["total_taxes"]) == line_tax
        assert invoice["total"] == invoice["amount_due"] == invoice["subtotal"] - on_invoice + line_tax
        rate = {"eur": 19, "gbp": 20}.get(invoice["currency"], 0)
        for line in lines:
            taxable = line["amount"] - _tax(line["discount_amounts"])
            assert _tax(line["taxes"]) == _half_up(taxable, rate)
            assert all(t["taxable_amount"] == taxable for t in line["taxes"])
        if line_tax:
            taxed.add(invoice["currency"])
        assert all(
            line["amount"] == line["quantity"] * int(line["pricing"]["unit_amount_decimal"]) for line in lines
        )
        assert invoice["lines"]["data"] == lines[:10]
        assert invoice["lines"]["has_more"] == (len(lines) > 10)
    assert max(len(v) for v in objs["invoice_lines"].values()) > 10
    assert taxed == {"eur", "gbp"}


def test_some_invoices_have_a_line_coupon_and_some_of_those_one_on_the_invoice_too() -> None:
    """About 5% of invoices: a percent-off coupon on one line (in that line's `discounts`, rounded
    half up); about half of those also a percent-off coupon on the invoice, apportioned to every
    line's `discount_amounts` by what the line is after its own discount (ADR 0019)."""
    world = World(invoices=2_000, seed=19)
    world.mutate(300, at=world.anchor + 10, kinds=["new_invoice"])  # these are discounted alike
    objs = objects(world)
    discounted, on_invoice, created = set(), set(), set()
    for invoice in objs["invoices"]:
        lines = objs["invoice_lines"][invoice["id"]]
        own_lines = [line for line in lines if line["discounts"]]
        assert len(own_lines) <= 1
        if not own_lines:
            assert invoice["discounts"] == invoice["total_discount_amounts"] == []
            assert all(line["discount_amounts"] == [] for line in lines)
            continue
        discounted.add(invoice["id"])
        created.update({invoice["id"]} if invoice["created"] > world.anchor else set())
        [line] = own_lines
        [discount_id] = line["discounts"]
        own = line["discount_amounts"][0]
        assert own["discount"] == discount_id and discount_id.startswith("di_")
        assert any(own["amount"] == _half_up(line["amount"], p) for p in (10, 15, 20, 25, 50))
        totals = {a["discount"]: a["amount"] for a in invoice["total_discount_amounts"]}
        assert totals[discount_id] == own["amount"]
        if invoice["discounts"]:
            on_invoice.add(invoice["id"])
            [coupon] = invoice["discounts"]
            assert coupon != discount_id
            shares = [a["amount"] for ln in lines for a in ln["discount_amounts"] if a["discount"] == coupon]
            assert len(shares) == len(lines) and sum(shares) == totals[coupon] > 0
            percent = next(
                p
                for p in (5, 10)
                if _half_up(line["amount"] - own["amount"], p) == line["discount_amounts"][1]["amount"]
            )
            for other in lines:
                [share] = [a["amount"] for a in other["discount_amounts"] if a["discount"] == coupon]
                assert share == _half_up(other["amount"] - _own_discount(other), percent)
        else:
            assert len(totals) == 1 and all(
                len(other["discount_amounts"]) == (other is line) for other in lines
            )
    share = len(discounted) / len(objs["invoices"])
    assert 0.03 < share < 0.07, share
    assert 0.25 < len(on_invoice) / len(discounted) < 0.75
    assert created  # the mutation path discounts too


def test_statuses_are_consistent_with_charges_refunds_and_credit_notes(world: World) -> None:
    objs = objects(world)
    charges_by_invoice = defaultdict(list)
    for charge in objs["charges"]:
        charges_by_invoice[charge["metadata"]["invoice"]].append(charge)
    for invoice in objs["invoices"]:
        charges = charges_by_invoice[invoice["id"]]
        if invoice["status"] == "paid":
            assert [c["amount"] for c in charges] == [invoice["total"]]
            assert invoice["amount_paid"] == invoice["total"] and invoice["amount_remaining"] == 0
            assert invoice["status_transitions"]["paid_at"] >= invoice["status_transitions"]["finalized_at"]
        else:
            assert charges == [] and invoice["amount_paid"] == 0
    refunds_by_charge = defaultdict(list)
    for refund in objs["refunds"]:
        refunds_by_charge[refund["charge"]].append(refund["amount"])
    partial = 0
    for charge in objs["charges"]:
        assert charge["amount_refunded"] == sum(refunds_by_charge[charge["id"]]) <= charge["amount"]
        assert charge["refunded"] == (charge["amount_refunded"] == charge["amount"])
        partial += 0 < charge["amount_refunded"] < charge["amount"]
    assert partial > 0
    issued = defaultdict(int)
    for note in objs["credit_notes"]:
        issued[note["invoice"]] += note["amount"] if note["status"] == "issued" else 0
    for invoice in objs["invoices"]:
        assert invoice["post_payment_credit_notes_amount"] == issued[invoice["id"]] <= invoice["total"]


def test_currencies_and_awkward_names_are_present(world: World) -> None:
    objs = objects(world)
    assert {i["currency"] for i in objs["invoices"]} >= {"usd", "eur", "gbp", "jpy", "kwd"}
    names = {c["name"] for c in objs["customers"]}
    assert {"Robert'); DROP TABLE customers;--", 'The "Quoted" Company', "🚀 Rocket Café 🎉"} <= names
    assert set(AWKWARD_NAMES) <= names


def test_each_objects_latest_event_carries_its_current_state(world: World) -> None:
    latest: dict[str, int] = {}
    for ev in range(world.events.n):  # rows are in causal order
        event = world.render(EVENT, ev)
        latest[event["data"]["object"]["id"]] = ev
    for res in (INVOICE, CHARGE, REFUND, CREDIT_NOTE):
        for row in range(world.table(res).n):
            current = world.render(res, row)
            assert world.render(EVENT, latest[current["id"]])["data"]["object"] == current


def test_update_events_carry_the_previous_values(world: World) -> None:
    change = world.mutate(1, kinds=["pay_invoice"])["applied"][0]
    paid_event = world.render(EVENT, world.ids.decode("evt", change["events"][-1]) or 0)
    assert paid_event["type"] == "invoice.paid"
    assert paid_event["data"]["object"]["status"] == "paid"
    assert paid_event["data"]["previous_attributes"]["status"] == "open"
    assert paid_event["data"]["previous_attributes"]["amount_paid"] == 0


def test_truth_totals_equal_sums_over_the_objects(world: World) -> None:
    truth = world.truth(objects=True)
    objs = orjson.loads(orjson.dumps(truth))["objects"]
    expected: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(int))
    for invoice in objs["invoices"]:
        expected[invoice["currency"]][invoice["status"]] += invoice["total"]
    got = {cur: {st: g["total"] for st, g in by.items()} for cur, by in truth["totals"]["invoices"].items()}
    assert got == {cur: dict(by) for cur, by in expected.items()}
    refunds = sum(r["amount"] for r in objs["refunds"])
    assert refunds == sum(g["amount"] for by in truth["totals"]["refunds"].values() for g in by.values())


def test_mutations_report_what_changed_and_are_applied(world: World) -> None:
    before = world.truth(objects=False)["counts"]
    result = world.mutate(50, at=world.anchor + 10)
    after = world.truth(objects=False)["counts"]
    assert len(result["applied"]) == 50 and sum(result["counts"].values()) == 50
    assert after["events"] == before["events"] + sum(len(c["events"]) for c in result["applied"])
    assert after["invoices"] - before["invoices"] == result["counts"].get("new_invoice", 0)
    for change in result["applied"]:
        for event_id in change["events"]:
            assert (
                world.render(EVENT, world.ids.decode("evt", event_id) or -1)["created"] == world.anchor + 10
            )


def _drafts(truth: dict[str, Any]) -> int:
    return sum(by.get("draft", {}).get("count", 0) for by in truth["totals"]["invoices"].values())


def test_deleted_objects_leave_the_lists_and_the_truth() -> None:
    world = World(invoices=80, seed=7)
    drafts = world.mutate(5, kinds=["new_draft_invoice"])
    assert drafts["counts"] == {"new_draft_invoice": 5}
    draft_ids = {c["id"] for c in drafts["applied"]}
    before = world.truth(objects=False)
    assert _drafts(before) == 5
    gone = world.mutate(3, kinds=["delete_draft_invoice", "delete_customer"])
    deleted = {c["id"] for c in gone["applied"]}
    deleted_invoices = {i for i in deleted if i.startswith("in_")}
    deleted_customers = {i for i in deleted if i.startswith("cus_")}
    assert deleted_invoices <= draft_ids and len(deleted) == 3
    objs = objects(world)
    listed = {o["id"] for o in objs["invoices"]} | {o["id"] for o in objs["customers"]}
    assert not listed & deleted
    assert not set(objs["invoice_lines"]) & deleted_invoices
    after = world.truth(objects=False)
    assert after["counts"]["invoices"] == before["counts"]["invoices"] - len(deleted_invoices)
    assert after["counts"]["customers"] == before["counts"]["customers"] - len(deleted_customers)
    assert after["counts"]["invoice_lines"] == sum(len(lines) for lines in objs["invoice_lines"].values())
    assert _drafts(after) == 5 - len(deleted_invoices)
    page = world.listing(
        CUSTOMER, created_gte=None, created_lte=None, starting_after=None, ending_before=None, limit=1000
    )
    assert {world.ids.encode("cus", r) for r in page.rows}.isdisjoint(deleted_customers)
    assert len(page.rows) == after["counts"]["customers"]


def test_ids_round_trip_and_reject_other_seeds() -> None:
    codec, other = IdCodec(1), IdCodec(2)
    for row in (0, 1, 61, 62, 10**6, 62**8 - 1):
        assert codec.decode("in", codec.encode("in", row)) == row
    assert codec.decode("in", other.encode("in", 5)) is None
    assert codec.decode("ch", codec.encode("in", 5)) is None
    assert codec.decode("in", "in_garbage") is None


def test_fault_settings_are_validated() -> None:
    assert validate_faults({"http_429_every": 3, "duplicate_across_pages": True}) == {
        "http_429_every": 3,
        "duplicate_across_pages": 1,
    }
    for bad in ({"nope": 1}, {"http_503_every": -1}, {"slow_ms": "fast"}, {"malformed_kind": "weird"}):
        with pytest.raises(FaultError):
            validate_faults(bad)


@pytest.mark.slow
def test_one_million_invoices_generate() -> None:
    world = World(invoices=1_000_000, seed=2)
    counts = world.counts()
    assert counts["invoices"] == 1_000_000 and counts["invoice_lines"] > 1_000_000
    page = world.listing(
        INVOICE, created_gte=None, created_lte=None, starting_after=None, ending_before=None, limit=100
    )
    assert len(page.rows) == 100 and page.has_more
