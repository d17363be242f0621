"""The client's by-id read (used by reconciliation repair) against the sandbox over HTTP."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from erp_sync.clients.auth import BearerSecretKey
from erp_sync.clients.client import SaaSClient
from erp_sync.clients.errors import UnconfirmedNotFoundError
from erp_sync.sandbox.testing import running_sandbox
from erp_sync.streams import get_stream

pytestmark = pytest.mark.integration


def test_get_record_completes_children_and_answers_none_for_unknown_ids() -> None:
    with running_sandbox(invoices=300, seed=5) as sandbox:
        truth = orjson.loads(orjson.dumps(sandbox.admin.truth(objects=True)))["objects"]
        longest = max(truth["invoices"], key=lambda inv: len(truth["invoice_lines"][inv["id"]]))
        expected_lines = [line["id"] for line in truth["invoice_lines"][longest["id"]]]
        assert len(expected_lines) > 10, "the seed has an invoice whose lines are paginated"

        client = SaaSClient(sandbox.base_url, BearerSecretKey(sandbox.secret_key))
        record = client.get_record(get_stream("invoices"), longest["id"])
        assert record is not None and record["id"] == longest["id"]
        assert [line["id"] for line in record["lines"]["data"]] == expected_lines
        assert record["lines"]["has_more"] is False
        assert client.get_record(get_stream("invoices"), "in_does_not_exist") is None


def test_get_record_raises_for_a_wrong_path_or_base_url_and_answers_none_only_for_an_unknown_id() -> None:
    """The sandbox, as Stripe: an unknown id is a 404 `resource_missing`; an unknown path is a 404
    "Unrecognized request URL" without a code, which must not read as "no such record"."""
    invoices = get_stream("invoices")
    with running_sandbox(invoices=20, seed=5) as sandbox:
        key = BearerSecretKey(sandbox.secret_key)
        client = SaaSClient(sandbox.base_url, key)
        live = sandbox.admin.truth(objects=True)["objects"]["invoices"][0]["id"]
        assert client.get_record(invoices, "in_does_not_exist") is None
        with pytest.raises(UnconfirmedNotFoundError) as wrong_path:
            client.get_record(replace(invoices, path="/v1/invoice"), live)
        with pytest.raises(UnconfirmedNotFoundError) as wrong_base:
            SaaSClient(sandbox.base_url + "/api", key).get_record(invoices, live)
    assert str(wrong_path.value).startswith(f"GET {sandbox.base_url}/v1/invoice/{live}: HTTP 404: ")
    assert str(wrong_base.value).startswith(f"GET {sandbox.base_url}/api/v1/invoices/{live}: HTTP 404: ")
    for error in (wrong_path.value, wrong_base.value):
        assert "Unrecognized request URL" in str(error) and "does not say the record is missing" in str(error)


def test_lookup_record_tells_a_deleted_record_from_a_wrong_url() -> None:
    """What the repair's tombstones rest on (ADR 0020): a deleted draft invoice answers 404
    `resource_missing`, a deleted customer Stripe's `"deleted": true` stub, a live record itself, and a
    wrong base URL a 404 without that code."""
    from erp_sync.core.tombstones import Evidence, Verdict, evidence_of, verdict_of

    with running_sandbox(invoices=60, seed=8) as sandbox:
        sandbox.admin.mutate(3, kinds=["new_draft_invoice"])
        gone = sandbox.admin.mutate(4, kinds=["delete_draft_invoice", "delete_customer"])["applied"]
        invoice = next(c["id"] for c in gone if c["kind"] == "delete_draft_invoice")
        customer = next(c["id"] for c in gone if c["kind"] == "delete_customer")
        live = sandbox.admin.truth(objects=True)["objects"]["invoices"][0]["id"]
        client = SaaSClient(sandbox.base_url, BearerSecretKey(sandbox.secret_key))
        wrong_url = SaaSClient(sandbox.base_url + "/api", BearerSecretKey(sandbox.secret_key))

        answers = {
            "invoice": client.lookup_record(get_stream("invoices"), invoice),
            "customer": client.lookup_record(get_stream("customers"), customer),
            "live": client.lookup_record(get_stream("invoices"), live),
            "wrong_url": wrong_url.lookup_record(get_stream("invoices"), invoice),
        }
    assert {name: (verdict_of(a), evidence_of(a)) for name, a in answers.items()} == {
        "invoice": (Verdict.GONE, Evidence.RESOURCE_MISSING),
        "customer": (Verdict.GONE, Evidence.DELETED_STUB),
        "live": (Verdict.EXISTS, None),
        "wrong_url": (Verdict.UNCONFIRMED, None),
    }
    assert answers["invoice"].message == f"No such invoice: '{invoice}'"
    assert answers["live"].record is not None and answers["live"].record["id"] == live


def test_the_stream_declares_which_404_proves_a_record_gone() -> None:
    """ADR 0029: the gone answer is the stream's `GoneAnswerSpec`, read from the 404's body where the
    spec says. The sandbox answers an unknown id as Stripe does: 404 with `error.code`
    `resource_missing` and `error.type` `invalid_request_error`."""
    from erp_sync.core.tombstones import Verdict, verdict_of
    from erp_sync.streams.spec import GoneAnswerSpec

    invoices = get_stream("invoices")
    other_code = replace(invoices, gone_answer=GoneAnswerSpec(codes=("not_found", "gone")))
    by_type = replace(
        invoices, gone_answer=GoneAnswerSpec(codes=("invalid_request_error",), code_path=("error", "type"))
    )
    with running_sandbox(invoices=20, seed=5) as sandbox:
        client = SaaSClient(sandbox.base_url, BearerSecretKey(sandbox.secret_key))
        answers = {
            name: client.lookup_record(spec, "in_does_not_exist")
            for name, spec in (("stripe", invoices), ("other_code", other_code), ("by_type", by_type))
        }
        assert client.get_record(by_type, "in_does_not_exist") is None
        with pytest.raises(UnconfirmedNotFoundError) as unconfirmed:
            client.get_record(other_code, "in_does_not_exist")
    assert {name: (a.error_code, verdict_of(a)) for name, a in answers.items()} == {
        "stripe": ("resource_missing", Verdict.GONE),
        "other_code": ("resource_missing", Verdict.UNCONFIRMED),
        "by_type": ("invalid_request_error", Verdict.GONE),
    }
    text = str(unconfirmed.value)
    assert "error code 'resource_missing', not 'not_found' or 'gone'" in text
    assert "does not say the record is missing" in text
