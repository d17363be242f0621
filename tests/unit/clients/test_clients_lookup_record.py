"""SaaSClient.lookup_record (the repair's tombstones, ADR 0020): what a lookup by id reports for each
answer, and that only a 404 ever comes back as an answer (every other failure raises)."""

from __future__ import annotations

from typing import Any

import pytest
from client_fakes import FakeTransport, json_response, raw_response

from erp_sync.clients.errors import AuthenticationError, FatalApiError, RetryExhaustedError
from erp_sync.core.tombstones import Evidence, Verdict, evidence_of, verdict_of
from erp_sync.streams import get_stream

INVOICES = get_stream("invoices")


def _missing(object_name: str, source_id: str) -> Any:
    error = {"type": "invalid_request_error", "message": f"No such {object_name}: '{source_id}'"}
    return json_response({"error": {**error, "param": "id", "code": "resource_missing"}}, status=404)


def test_a_404_resource_missing_is_an_answer_that_proves_the_record_gone(make_client: Any) -> None:
    transport = FakeTransport(script=[_missing("invoice", "in_1")])
    answer = make_client(transport).lookup_record(INVOICES, "in_1")
    assert (answer.http_status, answer.error_code, answer.record) == (404, "resource_missing", None)
    assert answer.message == "No such invoice: 'in_1'"
    assert (verdict_of(answer), evidence_of(answer)) == (Verdict.GONE, Evidence.RESOURCE_MISSING)
    assert [c.path for c in transport.calls] == ["/v1/invoices/in_1"]


def test_a_404_without_the_code_proves_nothing(make_client: Any) -> None:
    """A wrong base URL answers 404 too: Stripe's "Unrecognized request URL" has no code, a proxy's HTML none."""
    unrecognized = {"error": {"type": "invalid_request_error", "message": "Unrecognized request URL"}}
    transport = FakeTransport(
        script=[json_response(unrecognized, status=404), raw_response(b"<html>Not Found</html>", status=404)]
    )
    client = make_client(transport)
    for _ in range(2):
        answer = client.lookup_record(INVOICES, "in_1")
        assert answer.http_status == 404 and answer.error_code is None
        assert verdict_of(answer) is Verdict.UNCONFIRMED and evidence_of(answer) is None


def test_a_record_comes_back_whole_without_its_line_tail(make_client: Any) -> None:
    invoice = {"id": "in_1", "object": "invoice", "lines": {"data": [{"id": "il_1"}], "has_more": True}}
    transport = FakeTransport(script=[json_response(invoice)])
    answer = make_client(transport).lookup_record(INVOICES, "in_1")
    assert answer.record == invoice and verdict_of(answer) is Verdict.EXISTS
    assert len(transport.calls) == 1  # no /lines request: the header answers the question


def test_a_deleted_customer_stub_is_gone(make_client: Any) -> None:
    stub = {"id": "cus_1", "object": "customer", "deleted": True}
    transport = FakeTransport(script=[json_response(stub)])
    answer = make_client(transport).lookup_record(get_stream("customers"), "cus_1")
    assert (verdict_of(answer), evidence_of(answer)) == (Verdict.GONE, Evidence.DELETED_STUB)


def test_a_5xx_is_retried_and_only_the_final_answer_counts(make_client: Any) -> None:
    unavailable = json_response({"error": {"message": "try later"}}, status=503)
    transport = FakeTransport(script=[unavailable, _missing("invoice", "in_1")])
    answer = make_client(transport).lookup_record(INVOICES, "in_1")
    assert verdict_of(answer) is Verdict.GONE and len(transport.calls) == 2


def test_a_5xx_that_persists_raises_instead_of_answering(make_client: Any) -> None:
    unavailable = json_response({"error": {"message": "try later"}}, status=503)
    transport = FakeTransport(handler=lambda call: unavailable)
    with pytest.raises(RetryExhaustedError) as failed:
        make_client(transport).lookup_record(INVOICES, "in_1")
    assert failed.value.status == 503


@pytest.mark.parametrize(
    ("status", "error"), [(401, AuthenticationError), (403, FatalApiError), (400, FatalApiError)]
)
def test_other_client_errors_raise(make_client: Any, status: int, error: type[Exception]) -> None:
    refused = json_response({"error": {"message": "no", "code": "resource_missing"}}, status=status)
    transport = FakeTransport(handler=lambda call: refused)
    with pytest.raises(error):
        make_client(transport).lookup_record(INVOICES, "in_1")


def test_a_body_that_is_not_a_json_object_is_retried_then_fatal(make_client: Any) -> None:
    transport = FakeTransport(handler=lambda call: raw_response(b"[1, 2]"))
    with pytest.raises(FatalApiError, match="malformed"):
        make_client(transport).lookup_record(INVOICES, "in_1")
    assert len(transport.calls) == 3
