"""Which connection serves each source system, and the clients of one run by source system.

Airflow-free: the sync operator and the reconcile DAG build each client from the connection named
here (`erp_sync.hooks.saas`); `erp_sync.reconcile_run` resolves a stream's client with
`SourceClients.for_spec`, so every stream is read, looked up and repaired through its own API.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from erp_sync.streams import get_stream
from erp_sync.streams.spec import StreamSpec

DEFAULT_CONNECTION = "saas_api"
# Which Airflow connection serves each source system's streams (the sync operator's saas_conn_id
# overrides it per task). A source system not listed is served by DEFAULT_CONNECTION.
SOURCE_CONNECTIONS: Mapping[str, str] = {"stripe": "saas_api", "orders_api": "orders_api"}


def connection_for(source_system: str) -> str:
    return SOURCE_CONNECTIONS.get(source_system, DEFAULT_CONNECTION)


def streams_by_source_system(streams: Iterable[str]) -> dict[str, list[str]]:
    """`{source_system: [stream, ...]}` for the named streams, names sorted."""
    grouped: dict[str, list[str]] = {}
    for name in sorted(set(streams)):
        grouped.setdefault(get_stream(name).source_system, []).append(name)
    return grouped


class MissingSourceClientError(LookupError):
    """A stream's source system has no client in this run (its connection was not built)."""


class MissingSourceConnectionError(LookupError):
    """The connection that serves some of a run's streams is not defined."""

    def __init__(self, conn_id: str, source_system: str, streams: Iterable[str]) -> None:
        names = ", ".join(streams)
        super().__init__(
            f"streams {names} (source system {source_system!r}) are read through the connection"
            f" {conn_id!r}, which is not defined: add it, or leave them out of the run's streams"
        )
        self.conn_id = conn_id


class SourceClients:
    """The SaaS client of each source system one run reads; `for_spec` picks a stream's."""

    def __init__(self, by_source_system: Mapping[str, Any]) -> None:
        self._by_source_system = dict(by_source_system)

    @property
    def source_systems(self) -> list[str]:
        return sorted(self._by_source_system)

    def for_spec(self, spec: StreamSpec) -> Any:
        try:
            return self._by_source_system[spec.source_system]
        except KeyError:
            raise MissingSourceClientError(
                f"stream {spec.name}: no client for its source system {spec.source_system!r} (connection"
                f" {connection_for(spec.source_system)!r}); this run has clients for {self.source_systems}"
            ) from None

    def check_serves(self, streams: Iterable[str]) -> None:
        """Raise `MissingSourceClientError` for the first stream without a client, before any read."""
        for name in sorted(set(streams)):
            self.for_spec(get_stream(name))

    def close(self) -> None:
        """Close every client that can be closed (each once: one client may serve several systems)."""
        closed: set[int] = set()
        for client in self._by_source_system.values():
            if id(client) not in closed and hasattr(client, "close"):
                closed.add(id(client))
                client.close()
