"""The repair and each stream's by-id path (ADR 0023), pure: every stream's first chunk of re-sends is
fetched before any write and reused, not fetched again; a stream that declares no by-id path is
re-sent from a re-listing (ADR 0024), and what it leaves (its records missing in the SaaS) is counted
with its reason and named in a warning."""

from __future__ import annotations

import logging
from dataclasses import replace
from urllib.parse import unquote

import pytest

from erp_sync.clients import BearerSecretKey, SaaSClient
from erp_sync.clients.errors import UnconfirmedNotFoundError
from erp_sync.clients.sources import SourceClients
from erp_sync.clients.transport import HttpResponse
from erp_sync.reconcile_run import (
    REPAIR_CHUNK,
    RepairResult,
    RunOutcome,
    SkippedStream,
    fetch_first_chunks,
    relists,
    skipped_streams,
)
from erp_sync.streams import STREAMS
from erp_sync.tombstone_repair import StreamLookups
from tests.unit.clients.client_fakes import BASE, Call, FakeTransport, json_response


def _charges_api(call: Call) -> HttpResponse:
    """Answers `/v1/charges/{id}` with the charge; any other path as Stripe answers an unknown URL."""
    if call.path.startswith("/v1/charges/"):
        return json_response({"id": unquote(call.path.rsplit("/", 1)[1]), "object": "charge"})
    return json_response({"error": {"message": f"Unrecognized request URL (GET: {call.path})."}}, 404)


def _client(transport: FakeTransport) -> SaaSClient:
    return SaaSClient(BASE, BearerSecretKey("sk_test_secret"), transport=transport, child_concurrency=1)


def _targets(**ids: list[str]) -> dict[str, dict[str, set[str]]]:
    return {stream: {"missing": set(some), "mismatched": set()} for stream, some in ids.items()}


def test_each_stream_s_first_chunk_is_fetched_once_and_the_rest_as_reached() -> None:
    ids = [f"ch_{n:03d}" for n in range(REPAIR_CHUNK + 20)]
    transport = FakeTransport(handler=_charges_api)
    client = _client(transport)
    [(stream, resends)] = fetch_first_chunks(SourceClients({"stripe": client}), _targets(charges=ids)).items()
    assert stream == "charges" and len(transport.calls) == REPAIR_CHUNK

    chunks = list(resends.fetched_chunks())

    assert [[r["id"] for r in records] for records, _ in chunks] == [ids[:REPAIR_CHUNK], ids[REPAIR_CHUNK:]]
    assert sorted(call.path for call in transport.calls) == [f"/v1/charges/{i}" for i in ids]


def test_a_later_stream_s_by_id_path_that_does_not_answer_raises_from_the_first_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(STREAMS, "invoices", replace(STREAMS["invoices"], record_path="/v1/invoice/{id}"))
    transport = FakeTransport(handler=_charges_api)
    with pytest.raises(UnconfirmedNotFoundError) as raised:
        fetch_first_chunks(
            SourceClients({"stripe": _client(transport)}), _targets(charges=["ch_1"], invoices=["in_1"])
        )
    assert str(raised.value).startswith(f"GET {BASE}/v1/invoice/in_1: HTTP 404: Unrecognized request URL")
    assert [call.path for call in transport.calls] == ["/v1/charges/ch_1", "/v1/invoice/in_1"]


def test_a_stream_without_a_by_id_path_is_re_sent_from_a_re_listing_whether_or_not_it_has_child_lists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Invoices as if declared without a by-id path: a listing completes its truncated line lists at
    their own endpoint, so it is re-sent from a re-listing like orders (ADR 0024's amendment)."""
    monkeypatch.setitem(STREAMS, "invoices", replace(STREAMS["invoices"], record_path=None))
    assert STREAMS["invoices"].children and relists(STREAMS["invoices"]) and relists(STREAMS["orders"])
    assert not relists(STREAMS["charges"])  # asked by id


def test_a_stream_re_sent_from_a_re_listing_leaves_only_its_records_missing_in_the_saas(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Orders (no by-id path): its re-sends come from a re-listing (ADR 0024); what is left, and said,
    is the records missing in the SaaS that a listing cannot tell gone."""
    lookups = {
        "orders": StreamLookups("orders", candidates=4, erp_records=9, not_asked_because="no_by_id_lookup")
    }
    with caplog.at_level(logging.WARNING, logger="erp_sync.reconcile_run"):
        skipped = skipped_streams(lookups)
    assert skipped == {"orders": SkippedStream("no_by_id_lookup", not_resent=0, not_looked_up=4)}
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith("repair orders: 4 records missing in the SaaS not looked up")
    assert "they stay missing_in_saas" in warning
    assert skipped_streams({}) == {}


def test_a_stream_with_only_records_missing_in_the_saas_is_skipped_too() -> None:
    lookups = {
        "orders": StreamLookups("orders", candidates=2, erp_records=9, not_asked_because="no_by_id_lookup")
    }
    assert skipped_streams(lookups) == {"orders": SkippedStream("no_by_id_lookup", not_looked_up=2)}


def test_the_summary_and_the_xcom_say_which_streams_were_skipped_and_why() -> None:
    result = RepairResult(
        report_id=7, requested={"invoices": 1}, fetched={"invoices": 1}, not_found={}, batch_ids=[1],
        skipped={"orders": SkippedStream("no_by_id_lookup", not_resent=3, not_looked_up=4)},
    )  # fmt: skip
    assert result.summary()["skipped"] == {
        "orders": {"reason": "no_by_id_lookup", "not_resent": 3, "not_looked_up": 4}
    }
    assert RunOutcome(reports=[], repair=result).xcom()["repair"]["skipped"] == result.summary()["skipped"]
    assert RepairResult(7, {}, {}, {}, []).summary()["skipped"] == {}
