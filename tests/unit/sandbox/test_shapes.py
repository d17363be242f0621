"""Every object the sandbox generates has the shape of Stripe's own fixture for its resource:
the same keys, the same JSON types, null only where the fixture has null (or where Stripe documents
the field as nullable: `templates.NULLABLE_FIELDS`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from erp_sync.sandbox import templates
from erp_sync.sandbox.world import CHARGE, CREDIT_NOTE, CUSTOMER, EVENT, EVENT_TYPES, INVOICE, REFUND, World

SHARED_FIXTURE = Path("/work/shared/reference/stripe/fixtures3.subset.json")


def reference() -> dict[str, Any]:
    """The original fixture when it is on this machine, else the package's verbatim copy."""
    if SHARED_FIXTURE.exists():
        return json.loads(SHARED_FIXTURE.read_text())["resources"]
    return templates.fixtures()


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


def shape_errors(
    obj: Any, ref: Any, path: str, nullable: frozenset[str], optional: frozenset[str]
) -> list[str]:
    errors: list[str] = []
    if ref is None:
        return errors  # the fixture has null: any type is allowed
    if obj is None:
        return (
            [] if path in nullable else [f"{path or '<root>'}: null where the fixture has {json_type(ref)}"]
        )
    if json_type(obj) != json_type(ref) and not (json_type(ref) == "number" and json_type(obj) == "integer"):
        return [f"{path}: {json_type(obj)} where the fixture has {json_type(ref)}"]
    if path.rsplit(".", 1)[-1] == "metadata":  # free-form string map in Stripe
        return [f"{path}.{k}: not a string" for k, v in obj.items() if not isinstance(v, str)]
    if isinstance(ref, dict):
        prefix = f"{path}." if path else ""
        extra = {k for k in obj if k not in ref and f"{prefix}{k}" not in optional}
        missing = set(ref) - set(obj)
        errors += [f"{prefix}{k}: missing" for k in sorted(missing)]
        errors += [f"{prefix}{k}: not in the fixture" for k in sorted(extra)]
        for key in set(ref) & set(obj):
            errors += shape_errors(obj[key], ref[key], f"{prefix}{key}", nullable, optional)
    elif isinstance(ref, list) and ref and obj:
        for item in obj:
            errors += shape_errors(item, ref[0], f"{path}[]", nullable, optional)
    return errors


def check(obj: dict[str, Any], resource: str, ref: dict[str, Any] | None = None) -> None:
    errors = shape_errors(
        obj,
        reference()[resource] if ref is None else ref,
        "",
        templates.NULLABLE_FIELDS.get(resource, frozenset()),
        templates.OPTIONAL_KEYS.get(resource, frozenset()),
    )
    assert not errors, f"{resource} {obj.get('id')}: " + "; ".join(errors[:10])


@pytest.fixture(scope="module")
def world() -> World:
    w = World(invoices=400, seed=5, history_days=60)
    w.mutate(300)  # voids, credit-note voids, new invoices, refunds ... so every state is covered
    return w


def test_every_customer_has_the_fixture_shape(world: World) -> None:
    for i in range(world.customers.n):
        check(world.render(CUSTOMER, i), "customer")


def test_every_invoice_and_embedded_line_has_the_fixture_shape(world: World) -> None:
    statuses = set()
    for i in range(world.invoices.n):
        invoice = world.render(INVOICE, i)
        statuses.add(invoice["status"])
        check(invoice, "invoice")
    assert statuses == {"open", "paid", "void", "uncollectible"}


def test_every_line_item_has_the_fixture_shape(world: World) -> None:
    for j in range(world.lines.n):
        check(world.render_line(j), "line_item")


def test_every_charge_refund_and_credit_note_has_the_fixture_shape(world: World) -> None:
    for resource, name in ((CHARGE, "charge"), (REFUND, "refund"), (CREDIT_NOTE, "credit_note")):
        rows = world.table(resource).n
        assert rows > 0, name
        for r in range(rows):
            check(world.render(resource, r), name)
    assert {world.render(CREDIT_NOTE, c)["status"] for c in range(world.credit_notes.n)} == {"issued", "void"}


def test_every_event_and_its_object_have_the_fixture_shapes(world: World) -> None:
    seen_types = set()
    for ev in range(world.events.n):
        event = world.render(EVENT, ev)
        seen_types.add(event["type"])
        obj = event["data"]["object"]
        # The envelope against the fixture's (whose data.object is a plan), the object against its own.
        envelope_ref = {**reference()["event"], "data": {}}
        check(
            {**event, "data": {k: v for k, v in event["data"].items() if k != "object"}},
            "event",
            envelope_ref,
        )
        assert ("previous_attributes" in event["data"]) == EVENT_TYPES[world.events.kind[ev]][2]
        check(obj, obj["object"])
    # Deletions happen only by an explicit mutation (test_world: test_deleted_objects_leave_...).
    assert seen_types == {name for name, _, _ in EVENT_TYPES} - {"customer.deleted", "invoice.deleted"}


def test_deletion_events_carry_the_object_as_it_was() -> None:
    world = World(invoices=60, seed=5)
    world.mutate(4, kinds=["new_draft_invoice"])
    applied = world.mutate(3, kinds=["delete_draft_invoice", "delete_customer"])["applied"]
    events = [world.render(EVENT, world.ids.decode("evt", e) or -1) for c in applied for e in c["events"]]
    assert {e["type"] for e in events} == {"invoice.deleted", "customer.deleted"}
    for event in events:
        assert "previous_attributes" not in event["data"]
        check(event["data"]["object"], event["data"]["object"]["object"])


def test_a_draft_finalized_days_later_is_open_and_dated_then() -> None:
    world = World(invoices=60, seed=6)
    created_at = 1_790_000_000
    world.mutate(1, at=created_at, kinds=["new_draft_invoice"])
    finalized_at = created_at + 5 * 86_400
    change = world.mutate(1, at=finalized_at, kinds=["finalize_draft_invoice"])["applied"][0]
    assert change["kind"] == "finalize_draft_invoice"
    invoice = world.render(INVOICE, world.ids.decode("in", change["id"]) or -1)
    assert invoice["status"] == "open" and invoice["effective_at"] == finalized_at
    assert invoice["status_transitions"]["finalized_at"] == finalized_at and invoice["number"]
    check(invoice, "invoice")
    (event,) = (world.render(EVENT, world.ids.decode("evt", e) or -1) for e in change["events"])
    assert event["type"] == "invoice.finalized" and event["created"] == finalized_at
    assert event["data"]["object"]["id"] == change["id"] and event["data"]["object"]["status"] == "open"
