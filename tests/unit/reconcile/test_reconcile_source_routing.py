"""Each stream is re-read, looked up by id and repaired through its own source system's client
(`SourceClients`), pure: a recording client per source system, no HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from erp_sync.clients.sources import (
    SOURCE_CONNECTIONS,
    MissingSourceClientError,
    MissingSourceConnectionError,
    SourceClients,
    connection_for,
    streams_by_source_system,
)
from erp_sync.core.tombstones import TombstonePolicy
from erp_sync.reconcile_run import (
    LookupStats,
    ReconcileRequest,
    _compare_stream,
    _read_saas_stream,
    fetch_first_chunks,
    parse_request,
)
from erp_sync.streams import STREAMS
from erp_sync.streams.spec import StreamSpec


@dataclass
class RecordingClient:
    """Answers every listing with no pages and every by-id GET with "not found"; records each call."""

    base_url: str
    calls: list[tuple[str, str]] = field(default_factory=list)
    child_concurrency: int = 1
    closed: int = 0

    def iter_pages(self, spec: StreamSpec, **_: Any) -> Iterator[Any]:
        self.calls.append(("list", spec.name))
        return iter(())

    def get_record(self, spec: StreamSpec, source_id: str) -> None:
        self.calls.append(("get", spec.name))

    def lookup_record(self, spec: StreamSpec, source_id: str) -> Any:
        from erp_sync.core.tombstones import LookupAnswer

        self.calls.append(("lookup", spec.name))
        return LookupAnswer(source_id, 200, record={"id": source_id})

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def stripe() -> RecordingClient:
    return RecordingClient("https://stripe.example.test")


@pytest.fixture
def orders_api() -> RecordingClient:
    return RecordingClient("https://orders.example.test")


@pytest.fixture
def orders_by_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """The orders example as if its API had a by-id path, so it is looked up and re-sent too."""
    monkeypatch.setitem(STREAMS, "orders", replace(STREAMS["orders"], record_path="/api/v2/orders/{id}"))


def _request(*streams: str) -> ReconcileRequest:
    conf = {
        "period_start": "2026-01-01T00:00:00Z",
        "period_end": "2026-02-01T00:00:00Z",
        "streams": list(streams),
    }
    return parse_request(conf, now=datetime(2026, 3, 1, tzinfo=UTC))


def test_connections_are_one_definition_shared_with_the_sync_operator() -> None:
    from erp_sync.operators import sync

    assert connection_for("stripe") == "saas_api" and connection_for("orders_api") == "orders_api"
    assert connection_for("some_other_api") == "saas_api"
    assert not hasattr(sync, "SOURCE_CONNECTIONS") and SOURCE_CONNECTIONS["orders_api"] == "orders_api"


def test_streams_are_grouped_by_their_source_system() -> None:
    grouped = streams_by_source_system(["orders", "invoices", "charges", "invoices"])
    assert grouped == {"orders_api": ["orders"], "stripe": ["charges", "invoices"]}


def test_a_stream_gets_its_own_source_system_s_client(stripe, orders_api) -> None:
    clients = SourceClients({"stripe": stripe, "orders_api": orders_api})
    assert clients.for_spec(STREAMS["orders"]) is orders_api
    assert clients.for_spec(STREAMS["invoices"]) is stripe


def test_a_stream_without_a_client_is_refused_naming_it_and_its_connection(stripe) -> None:
    clients = SourceClients({"stripe": stripe})
    clients.check_serves(["invoices", "charges"])
    with pytest.raises(MissingSourceClientError) as raised:
        clients.check_serves(["invoices", "orders"])
    assert str(raised.value) == (
        "stream orders: no client for its source system 'orders_api' (connection 'orders_api');"
        " this run has clients for ['stripe']"
    )


def test_the_missing_connection_error_names_the_connection_and_its_streams() -> None:
    error = MissingSourceConnectionError("orders_api", "orders_api", ["orders"])
    assert error.conn_id == "orders_api"
    assert str(error) == (
        "streams orders (source system 'orders_api') are read through the connection 'orders_api', which is"
        " not defined: add it, or leave them out of the run's streams"
    )


def test_close_closes_a_client_that_serves_two_systems_once(stripe) -> None:
    SourceClients({"stripe": stripe, "orders_api": stripe}).close()
    assert stripe.closed == 1


def test_each_stream_is_re_read_through_its_own_client(stripe, orders_api) -> None:
    clients = SourceClients({"stripe": stripe, "orders_api": orders_api})
    request = _request("invoices", "orders")
    for name in request.streams:
        side, _ = _read_saas_stream(clients, request, name)
        side.close()
    assert orders_api.calls == [("list", "orders")]
    assert stripe.calls == [("list", "invoices")]


def test_the_lookups_by_id_go_through_the_stream_s_own_client(
    stripe, orders_api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`_compare_stream` hands `lookup_by_id` the stream's client: the records only the ERP holds are
    asked for where the listing was read."""
    from erp_sync import reconcile_run

    handed: list[Any] = []

    class Compared(Exception):
        """Stops the comparison once the lookup is built: only the client it was handed matters here."""

    def recording_lookup_by_id(client: Any, spec: StreamSpec, *period: Any, **kwargs: Any) -> None:
        handed.append(client)

    def stop(*args: Any, **kwargs: Any) -> None:
        raise Compared

    monkeypatch.setattr(reconcile_run, "lookup_by_id", recording_lookup_by_id)
    monkeypatch.setattr(reconcile_run, "reconcile_stream", stop)
    clients = SourceClients({"stripe": stripe, "orders_api": orders_api})
    for name in ("orders", "invoices"):
        with pytest.raises(Compared):
            _compare_stream(name, (None, LookupStats()), (None, None), _request(name), {"saas": {}}, clients)
    assert handed == [orders_api, stripe]


def test_the_repair_s_re_sends_and_tombstone_lookups_go_through_the_stream_s_own_client(
    stripe, orders_api, orders_by_id, monkeypatch: pytest.MonkeyPatch
) -> None:
    from erp_sync import tombstone_repair

    clients = SourceClients({"stripe": stripe, "orders_api": orders_api})
    targets = {name: {"missing": {f"{name}_1"}, "mismatched": set()} for name in ("invoices", "orders")}
    resends = fetch_first_chunks(clients, targets)
    assert resends["orders"].client is orders_api and resends["invoices"].client is stripe

    monkeypatch.setattr(tombstone_repair, "missing_in_saas_ids", lambda conn, report_id: {"orders": ["o_9"]})
    tombstone_repair.look_up_gone(None, clients, {"report_id": 1, "summary": {}}, TombstonePolicy())
    assert orders_api.calls == [("get", "orders"), ("lookup", "orders")]
    assert stripe.calls == [("get", "invoices")]
