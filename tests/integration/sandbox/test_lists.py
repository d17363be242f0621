"""Stripe list semantics over real HTTP: complete walks, order, cursors, filters, lines, events."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from sandbox_http import Api, walk_sums

from erp_sync.sandbox.testing import SandboxHandle

pytestmark = pytest.mark.integration

RESOURCES = ("customers", "invoices", "charges", "refunds", "credit_notes")


@pytest.fixture(scope="module")
def truth(shared_sandbox: SandboxHandle) -> dict[str, Any]:
    return shared_sandbox.admin.truth()


@pytest.mark.parametrize("limit", [100, 7])
def test_full_walk_sees_every_invoice_exactly_once_newest_first(
    shared_api: Api, truth: dict, limit: int
) -> None:
    walked = shared_api.walk("/v1/invoices", limit=limit)
    ids = [i["id"] for i in walked]
    assert Counter(ids).most_common(1)[0][1] == 1
    assert ids == [i["id"] for i in truth["objects"]["invoices"]]
    created = [i["created"] for i in walked]
    assert created == sorted(created, reverse=True)


@pytest.mark.parametrize("resource", RESOURCES)
def test_every_resource_walks_completely(shared_api: Api, truth: dict, resource: str) -> None:
    walked = shared_api.walk(f"/v1/{resource}")
    assert [o["id"] for o in walked] == [o["id"] for o in truth["objects"][resource]]
    assert walked == truth["objects"][resource]


def test_default_limit_is_ten_and_list_envelope_is_stripes(shared_api: Api) -> None:
    page = shared_api.ok("/v1/invoices")
    assert set(page) == {"object", "data", "has_more", "url"}
    assert (page["object"], page["url"], len(page["data"]), page["has_more"]) == (
        "list",
        "/v1/invoices",
        10,
        True,
    )


def test_ending_before_walks_back_towards_the_newest(shared_api: Api, truth: dict) -> None:
    ids = [i["id"] for i in truth["objects"]["invoices"]]
    seen: list[str] = []
    cursor = ids[-1]
    while True:
        page = shared_api.ok("/v1/invoices", {"limit": 25, "ending_before": cursor})
        chunk = [i["id"] for i in page["data"]]
        assert chunk == ids[ids.index(cursor) - len(chunk) : ids.index(cursor)]
        seen = chunk + seen
        if not page["has_more"]:
            break
        cursor = chunk[0]
    assert seen == ids[:-1]


def test_created_filters_select_exactly_the_window(shared_api: Api, truth: dict) -> None:
    invoices = truth["objects"]["invoices"]
    t = invoices[len(invoices) // 3]["created"]
    u = invoices[2 * len(invoices) // 3]["created"]
    cases = {
        "created[gte]": lambda c: c >= t,
        "created[gt]": lambda c: c > t,
        "created[lte]": lambda c: c <= t,
        "created[lt]": lambda c: c < t,
        "created": lambda c: c == t,
    }
    for param, keep in cases.items():
        walked = shared_api.walk("/v1/invoices", {param: t}, limit=50)
        assert [i["id"] for i in walked] == [i["id"] for i in invoices if keep(i["created"])], param
    window = shared_api.walk("/v1/invoices", {"created[gte]": u, "created[lt]": t}, limit=50)
    assert [i["id"] for i in window] == [i["id"] for i in invoices if u <= i["created"] < t]
    assert window


def test_invoice_lines_are_embedded_up_to_ten_and_continue_at_the_lines_endpoint(
    shared_api: Api, truth: dict
) -> None:
    long_ones = [
        i for i in truth["objects"]["invoices"] if len(truth["objects"]["invoice_lines"][i["id"]]) > 10
    ]
    assert long_ones
    for invoice in long_ones:
        expected = truth["objects"]["invoice_lines"][invoice["id"]]
        embedded = invoice["lines"]
        assert embedded["has_more"] and len(embedded["data"]) == 10
        assert embedded["url"] == f"/v1/invoices/{invoice['id']}/lines"
        rest = shared_api.walk(embedded["url"], {"starting_after": embedded["data"][-1]["id"]}, limit=7)
        assert embedded["data"] + rest == expected
        own = [  # a line's own discounts are not in the subtotal (ADR 0019)
            sum(a["amount"] for a in line["discount_amounts"] if a["discount"] in line["discounts"])
            for line in expected
        ]
        assert sum(line["amount"] for line in expected) - sum(own) == invoice["subtotal"]
    assert (
        shared_api.walk(long_ones[0]["lines"]["url"], limit=3)
        == truth["objects"]["invoice_lines"][long_ones[0]["id"]]
    )


def test_resource_filters(shared_api: Api, truth: dict) -> None:
    objs = truth["objects"]
    paid = shared_api.walk("/v1/invoices", {"status": "paid"})
    assert [i["id"] for i in paid] == [i["id"] for i in objs["invoices"] if i["status"] == "paid"]
    customer = objs["invoices"][0]["customer"]
    mine = shared_api.walk("/v1/invoices", {"customer": customer})
    assert [i["id"] for i in mine] == [i["id"] for i in objs["invoices"] if i["customer"] == customer]
    refund = objs["refunds"][0]
    by_charge = shared_api.walk("/v1/refunds", {"charge": refund["charge"]})
    assert refund["id"] in [r["id"] for r in by_charge] and {r["charge"] for r in by_charge} == {
        refund["charge"]
    }
    note = objs["credit_notes"][0]
    assert [n["id"] for n in shared_api.walk("/v1/credit_notes", {"invoice": note["invoice"]})] == [
        n["id"] for n in objs["credit_notes"] if n["invoice"] == note["invoice"]
    ]


def test_single_objects_by_id_equal_the_listed_ones(shared_api: Api, truth: dict) -> None:
    for resource in RESOURCES:
        for obj in truth["objects"][resource][:5]:
            assert shared_api.ok(f"/v1/{resource}/{obj['id']}") == obj


def test_events_filter_by_type_wildcard_and_types_list(shared_api: Api) -> None:
    invoice_events = shared_api.walk("/v1/events", {"type": "invoice.*"})
    assert invoice_events and all(e["type"].startswith("invoice.") for e in invoice_events)
    pair = shared_api.walk("/v1/events", {"types[]": ["charge.succeeded", "refund.created"]})
    assert {e["type"] for e in pair} == {"charge.succeeded", "refund.created"}
    everything = shared_api.walk("/v1/events")
    assert len(pair) == sum(e["type"] in ("charge.succeeded", "refund.created") for e in everything)
    assert shared_api.ok("/v1/events", {"type": "no.such_type"})["data"] == []


def test_events_older_than_thirty_days_are_not_listed(shared_api: Api, truth: dict) -> None:
    horizon = int(time.time()) - 30 * 86400
    everything = shared_api.walk("/v1/events")
    assert truth["counts"]["events"] > len(everything) > 0
    assert min(e["created"] for e in everything) >= horizon - 60
    assert shared_api.ok("/v1/events", {"created[lt]": horizon - 3600})["data"] == []


def test_truth_totals_equal_a_full_walks_sums(shared_api: Api, truth: dict) -> None:
    sums = walk_sums(shared_api)
    for resource in ("invoices", "charges", "refunds", "credit_notes"):
        assert sums[resource] == truth["totals"][resource], resource
    assert {"jpy", "kwd"} <= set(sums["invoices"])
