"""The stream registry: every stream the DAG can sync, by name."""

from __future__ import annotations

from erp_sync.streams.orders import ORDERS
from erp_sync.streams.spec import StreamSpec
from erp_sync.streams.stripe import STRIPE_STREAMS

STREAMS: dict[str, StreamSpec] = {spec.name: spec for spec in (*STRIPE_STREAMS, ORDERS)}


def get_stream(name: str) -> StreamSpec:
    """The spec registered under `name`; a clear error listing the known names otherwise."""
    try:
        return STREAMS[name]
    except KeyError:
        raise KeyError(f"unknown stream {name!r}; known streams: {', '.join(sorted(STREAMS))}") from None


__all__ = ["STREAMS", "StreamSpec", "get_stream"]
