"""Mutations through the admin API show up in lists, single objects, events and the truth."""

from __future__ import annotations

import pytest
from sandbox_http import Api, walk_sums

from erp_sync.sandbox.testing import SandboxHandle

pytestmark = pytest.mark.integration

PREFIX_RESOURCE = {
    "in": "invoices",
    "ch": "charges",
    "re": "refunds",
    "cn": "credit_notes",
    "cus": "customers",
}


def test_events_reflect_mutations(sandbox: SandboxHandle, api: Api) -> None:
    result = sandbox.admin.mutate(60)
    assert len(result["applied"]) == 60
    listed = api.walk("/v1/events", {"created[gte]": result["at"]})
    listed_ids = {e["id"] for e in listed}
    expected_ids = {e for change in result["applied"] for e in change["events"]}
    assert expected_ids and expected_ids <= listed_ids
    latest: dict[str, dict] = {}
    for event in reversed(listed):  # oldest first, so the newest event per object wins
        latest[event["data"]["object"]["id"]] = event
        assert event["created"] == result["at"]
        if event["type"].endswith((".paid", ".voided", ".refunded", ".updated", ".marked_uncollectible")):
            assert event["data"]["previous_attributes"], event["type"]
    for object_id, event in latest.items():
        resource = PREFIX_RESOURCE[object_id.split("_")[0]]
        assert api.ok(f"/v1/{resource}/{object_id}") == event["data"]["object"], event["type"]
    for change in result["applied"]:
        if change["kind"] == "new_invoice":
            assert api.ok(f"/v1/invoices/{change['id']}")["status"] == "open"
        if change["kind"] == "pay_invoice":
            assert api.ok(f"/v1/invoices/{change['id']}")["status"] == "paid"


def test_truth_equals_a_full_walk_after_mutations(sandbox: SandboxHandle, api: Api) -> None:
    sandbox.admin.mutate(80)
    truth = sandbox.admin.truth()
    walked = api.walk("/v1/invoices")
    assert [i["id"] for i in walked] == [i["id"] for i in truth["objects"]["invoices"]]
    sums = walk_sums(api)
    for resource in ("invoices", "charges", "refunds", "credit_notes"):
        assert sums[resource] == truth["totals"][resource], resource


def test_mutations_back_in_time_keep_lists_ordered_and_complete(sandbox: SandboxHandle, api: Api) -> None:
    truth = sandbox.admin.truth()
    middle = truth["objects"]["invoices"][60]["created"]
    result = sandbox.admin.mutate(30, at=middle, kinds=["new_invoice", "new_customer"])
    walked = api.walk("/v1/invoices", limit=9)
    created = [i["created"] for i in walked]
    assert created == sorted(created, reverse=True)
    assert (
        len({i["id"] for i in walked})
        == len(walked)
        == truth["counts"]["invoices"] + result["counts"].get("new_invoice", 0)
    )
