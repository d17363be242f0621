"""SaaSClient.get_record (ADR 0017's lookups, the repair's re-sends): None only when the API says the
record does not exist (404 `resource_missing`); any other 404 raises, naming the URL."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from client_fakes import BASE, FakeTransport, json_response, raw_response

from erp_sync.clients.errors import FatalApiError, NoByIdLookupError, UnconfirmedNotFoundError
from erp_sync.streams import get_stream

INVOICES = get_stream("invoices")


def test_a_404_resource_missing_is_none(make_client: Any) -> None:
    missing = {"error": {"message": "No such invoice: 'in_1'", "param": "id", "code": "resource_missing"}}
    transport = FakeTransport(script=[json_response(missing, status=404)])
    assert make_client(transport).get_record(INVOICES, "in_1") is None
    assert [c.path for c in transport.calls] == ["/v1/invoices/in_1"]


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (
            json_response(
                {"error": {"message": "Unrecognized request URL (GET: /api/v1/invoices/in_1)."}}, 404
            ),
            "Unrecognized request URL (GET: /api/v1/invoices/in_1). (no error code,",
        ),
        (raw_response(b"<html>Not Found</html>", status=404), "<html>Not Found</html> (no error code,"),
        (
            json_response({"error": {"message": "gone?", "code": "url_invalid"}}, 404),
            "(error code 'url_invalid',",
        ),
    ],
    ids=["unrecognized-url", "proxy-page", "another-code"],
)
def test_a_404_without_resource_missing_raises_naming_the_url_and_the_cause(
    make_client: Any, answer: Any, says: str
) -> None:
    transport = FakeTransport(script=[answer])
    with pytest.raises(UnconfirmedNotFoundError) as raised:
        make_client(transport).get_record(INVOICES, "in_1")
    error = raised.value
    assert isinstance(error, FatalApiError) and error.status == 404
    assert error.endpoint == f"GET {BASE}/v1/invoices/in_1"
    message = str(error)
    assert message.startswith(f"GET {BASE}/v1/invoices/in_1: HTTP 404: ")
    assert says in message
    assert "does not say the record is missing" in message and "base URL or the stream's path" in message
    assert len(transport.calls) == 1  # not retried: a 404 is an answer


def test_a_record_comes_back_with_its_child_lists_completed(make_client: Any) -> None:
    invoice = {"id": "in_1", "object": "invoice", "lines": {"data": [{"id": "il_1"}], "has_more": True}}
    tail = {"object": "list", "data": [{"id": "il_2"}], "has_more": False}
    transport = FakeTransport(script=[json_response(invoice), json_response(tail)])
    record = make_client(transport).get_record(INVOICES, "in_1")
    assert record is not None and [line["id"] for line in record["lines"]["data"]] == ["il_1", "il_2"]
    assert record["lines"]["has_more"] is False
    assert [c.path for c in transport.calls] == ["/v1/invoices/in_1", "/v1/invoices/in_1/lines"]


def test_the_stream_s_declared_by_id_path_is_asked_with_the_id_quoted(make_client: Any) -> None:
    """`StreamSpec.record_path` is a template: an API whose record lives elsewhere than `{path}/{id}`
    declares it, and the id is quoted as one path segment."""
    declared = replace(INVOICES, record_path="/v2/records/invoice/{id}/detail")
    missing = {"error": {"message": "No such invoice", "code": "resource_missing"}}
    transport = FakeTransport(script=[json_response(missing, status=404)])
    assert make_client(transport).get_record(declared, "in 1/2") is None
    assert [c.path for c in transport.calls] == ["/v2/records/invoice/in%201%2F2/detail"]


def test_a_stream_without_a_by_id_path_raises_before_any_request(make_client: Any) -> None:
    transport = FakeTransport(script=[])
    client = make_client(transport)
    for ask in (client.get_record, client.lookup_record):
        with pytest.raises(NoByIdLookupError) as raised:
            ask(replace(get_stream("orders"), record_path=None), "ord_1")
        assert raised.value.stream == "orders" and "record_path=None" in str(raised.value)
    assert transport.calls == []
