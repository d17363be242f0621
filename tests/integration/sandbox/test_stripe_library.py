"""Stripe's official Python library, pointed at the sandbox, walks it with its own auto-pagination."""

from __future__ import annotations

import pytest
import stripe

from erp_sync.sandbox.testing import SandboxHandle, running_sandbox

pytestmark = pytest.mark.integration


def client_for(handle: SandboxHandle, retries: int = 0) -> stripe.StripeClient:
    return stripe.StripeClient(
        handle.secret_key, base_addresses={"api": handle.base_url}, max_network_retries=retries
    )


def test_stripe_library_auto_pagination_sees_every_object(shared_sandbox: SandboxHandle) -> None:
    truth = shared_sandbox.admin.truth()
    client = client_for(shared_sandbox)
    invoices = list(client.v1.invoices.list(params={"limit": 100}).auto_paging_iter())
    assert [i.id for i in invoices] == [i["id"] for i in truth["objects"]["invoices"]]
    assert sum(i.total for i in invoices) == sum(
        g["total"] for by in truth["totals"]["invoices"].values() for g in by.values()
    )
    charges = list(client.v1.charges.list(params={"limit": 30}).auto_paging_iter())
    assert [c.id for c in charges] == [c["id"] for c in truth["objects"]["charges"]]
    assert all(c.metadata["invoice"].startswith("in_") for c in charges)
    events = list(
        client.v1.events.list(params={"types": ["invoice.paid", "invoice.voided"]}).auto_paging_iter()
    )
    assert events and {e.type for e in events} <= {"invoice.paid", "invoice.voided"}
    one = client.v1.invoices.retrieve(invoices[0].id)
    assert one.id == invoices[0].id and one.lines.data[0].invoice == one.id


def test_stripe_library_reports_sandbox_errors_as_stripe_errors(shared_sandbox: SandboxHandle) -> None:
    client = client_for(shared_sandbox)
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.invoices.retrieve("in_missing")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"
    with pytest.raises(stripe.AuthenticationError):
        stripe.StripeClient(
            "sk_test_wrong", base_addresses={"api": shared_sandbox.base_url}
        ).v1.customers.list()


def test_stripe_library_retries_503s_and_surfaces_429s() -> None:
    with running_sandbox(invoices=60, seed=5, faults={"http_503_every": 4}) as handle:
        ids = [
            i.id
            for i in client_for(handle, retries=3).v1.invoices.list(params={"limit": 10}).auto_paging_iter()
        ]
        assert ids == [i["id"] for i in handle.admin.truth()["objects"]["invoices"]]
        assert handle.admin.request_counts()["by_status"]["503"] >= 1
        handle.admin.set_faults(http_429_every=1)
        with pytest.raises(stripe.RateLimitError):  # Stripe's library leaves rate limits to the caller
            client_for(handle, retries=0).v1.invoices.list()
