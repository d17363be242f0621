"""Test doubles for the client's pure unit tests: a routed in-memory transport, a fake clock and a
recording sleep. (Integration tests use the real sandbox over HTTP instead.)"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from erp_sync.clients import BearerSecretKey, RetryPolicy, SaaSClient
from erp_sync.clients.transport import HttpResponse

BASE = "https://api.example.test"


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> HttpResponse:
    return HttpResponse(status=status, body=orjson.dumps(payload), url="", headers=dict(headers or {}))


def raw_response(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> HttpResponse:
    return HttpResponse(status=status, body=body, url="", headers=dict(headers or {}))


@dataclass
class Call:
    method: str
    url: str
    params: list[tuple[str, str]]
    headers: dict[str, str]
    data: dict[str, str] | None
    timeout: tuple[float, float]

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    def param(self, name: str) -> str | None:
        return dict(self.params).get(name)


Handler = Callable[[Call], HttpResponse]


@dataclass
class FakeTransport:
    """Routes each request to `handler`; a handler may also raise (e.g. TransientNetworkError).

    `script` (a list) is consumed first when given: one response or exception per request."""

    handler: Handler | None = None
    script: list[HttpResponse | Exception] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    def send(self, method, url, *, params, headers, data, timeout):  # type: ignore[no-untyped-def]
        call = Call(method, url, list(params), dict(headers), dict(data) if data else None, timeout)
        self.calls.append(call)
        if self.script:
            item = self.script.pop(0)
        else:
            assert self.handler is not None, f"unexpected request {method} {url} {params}"
            item = self.handler(call)
        if isinstance(item, Exception):
            raise item
        full_url = url + ("?" + "&".join(f"{k}={v}" for k, v in params) if params else "")
        return HttpResponse(status=item.status, body=item.body, url=full_url, headers=item.headers)


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RecordingSleep:
    clock: FakeClock
    slept: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.advance(seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleep(clock: FakeClock) -> RecordingSleep:
    return RecordingSleep(clock)


@pytest.fixture
def policy(clock: FakeClock, sleep: RecordingSleep) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=5,
        max_elapsed_s=120,
        base_delay_s=1,
        max_delay_s=8,
        sleep=sleep,
        random=lambda: 0.5,
        clock=clock,
    )


WALL = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def make_client(clock: FakeClock, policy: RetryPolicy) -> Callable[..., SaaSClient]:
    def build(transport: FakeTransport, **kwargs: Any) -> SaaSClient:
        kwargs.setdefault("auth", BearerSecretKey("sk_test_secret"))
        kwargs.setdefault("retry", policy)
        kwargs.setdefault("progress", lambda stream, stats: None)
        return SaaSClient(BASE, transport=transport, clock=clock, wall_clock=lambda: WALL, **kwargs)

    return build


def stripe_list_handler(objects: list[dict[str, Any]], path: str = "/v1/customers") -> Handler:
    """Serve `objects` (already newest first) as a Stripe list at `path` with starting_after/limit."""

    def handle(call: Call) -> HttpResponse:
        assert call.path == path, call.path
        limit = int(call.param("limit") or 10)
        after = call.param("starting_after")
        start = 0
        if after is not None:
            start = next(i for i, o in enumerate(objects) if o.get("id") == after) + 1
        chunk = objects[start : start + limit]
        return json_response({"object": "list", "data": chunk, "has_more": start + limit < len(objects)})

    return handle


def objects(n: int, prefix: str = "cus") -> list[dict[str, Any]]:
    return [{"id": f"{prefix}_{i}", "object": "customer", "created": 1_700_000_000 + i} for i in range(n)]


def invoice_with_lines(invoice_id: str, n_lines: int, embedded: int, **line_fields: Any) -> dict[str, Any]:
    """A Stripe-shaped invoice embedding its first `embedded` of `n_lines` lines (`has_more` when
    truncated); every line, for the `/lines` endpoint, under `_all_lines` (pop it before serving)."""
    lines = [{"id": f"il_{invoice_id}_{i}", "amount": 100 + i, **line_fields} for i in range(n_lines)]
    return {
        "id": invoice_id,
        "object": "invoice",
        "lines": {
            "object": "list",
            "data": lines[:embedded],
            "has_more": n_lines > embedded,
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        "_all_lines": lines,
    }
