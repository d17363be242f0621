"""The retry policy: what is retried, how long it waits, when it gives up, and how it fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from client_fakes import (
    FakeClock,
    FakeTransport,
    RecordingSleep,
    json_response,
    raw_response,
    stripe_list_handler,
)

from erp_sync.clients import FatalApiError, RetryExhaustedError, RetryPolicy
from erp_sync.clients.errors import TransientNetworkError
from erp_sync.clients.retry import parse_retry_after
from erp_sync.streams.spec import StreamSpec

SPEC = StreamSpec(
    name="customers", source_system="test", path="/v1/customers", model="M", mapping="m", target_tables=("t",)
)
END = datetime(2027, 1, 1, tzinfo=UTC)
OK = stripe_list_handler([{"id": "cus_1"}])


def read(client: Any) -> list[Any]:
    return list(client.iter_pages(SPEC, mode="full", window_start=None, window_end=END))


class TestBackoff:
    def test_full_jitter_grows_exponentially_up_to_the_cap(self) -> None:
        policy = RetryPolicy(base_delay_s=1, max_delay_s=8, random=lambda: 1.0)
        assert [policy.delay(a) for a in range(1, 7)] == [1, 2, 4, 8, 8, 8]

    def test_jitter_spreads_over_zero_to_ceiling(self) -> None:
        policy = RetryPolicy(base_delay_s=1, max_delay_s=8, random=lambda: 0.25)
        assert policy.delay(4) == 2.0

    def test_retry_after_is_a_floor(self) -> None:
        policy = RetryPolicy(base_delay_s=1, max_delay_s=8, random=lambda: 0.0)
        assert policy.delay(1, retry_after=3) == 3

    def test_retry_after_forms(self) -> None:
        now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
        assert parse_retry_after("2") == 2.0
        assert parse_retry_after(format_datetime(now + timedelta(seconds=7), usegmt=True), now=now) == 7.0
        assert parse_retry_after("soon") is None
        assert parse_retry_after(None) is None


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_retried(
    make_client: Any, sleep: RecordingSleep, status: int
) -> None:
    transport = FakeTransport(OK, script=[json_response({"error": {"message": "busy"}}, status=status)])
    client = make_client(transport)
    assert [r["id"] for p in read(client) for r in p.records] == ["cus_1"]
    assert client.stats.retries == 1 and len(transport.calls) == 2
    assert sleep.slept == [0.5]  # attempt 1: random 0.5 x base 1 s


def test_retry_after_is_honoured(make_client: Any, sleep: RecordingSleep) -> None:
    transport = FakeTransport(OK, script=[json_response({}, status=429, headers={"Retry-After": "4"})])
    read(make_client(transport))
    assert sleep.slept == [4.0]


@pytest.mark.parametrize(
    "exc", [TransientNetworkError("connection reset"), TransientNetworkError("ReadTimeout")]
)
def test_network_errors_and_timeouts_are_retried(make_client: Any, exc: Exception) -> None:
    transport = FakeTransport(OK, script=[exc, exc])
    client = make_client(transport)
    assert len(read(client)[0].records) == 1
    assert client.stats.retries == 2


@pytest.mark.parametrize(
    ("status", "message"),
    [(400, "No such parameter: foo"), (404, "No such customer"), (403, "Forbidden"), (422, "bad window")],
)
def test_other_client_errors_fail_fast_with_the_apis_message(
    make_client: Any, sleep: RecordingSleep, status: int, message: str
) -> None:
    transport = FakeTransport(
        OK, script=[json_response({"error": {"message": message, "type": "x"}}, status=status)]
    )
    with pytest.raises(FatalApiError) as info:
        read(make_client(transport))
    assert str(info.value) == f"GET https://api.example.test/v1/customers: HTTP {status}: {message}"
    assert info.value.status == status and len(transport.calls) == 1 and sleep.slept == []


def test_non_stripe_error_bodies_are_quoted(make_client: Any) -> None:
    transport = FakeTransport(OK, script=[raw_response(b"<h1>Bad Request</h1>", status=400)])
    with pytest.raises(FatalApiError, match="HTTP 400: <h1>Bad Request</h1>"):
        read(make_client(transport))


def test_gives_up_after_max_attempts_naming_endpoint_and_status(make_client: Any) -> None:
    transport = FakeTransport(
        lambda call: json_response({"error": {"message": "down for maintenance"}}, status=503)
    )
    with pytest.raises(RetryExhaustedError) as info:
        read(make_client(transport))
    assert "GET https://api.example.test/v1/customers: HTTP 503" in str(info.value)
    assert "down for maintenance" in str(info.value)
    assert len(transport.calls) == 5  # max_attempts


def test_gives_up_when_the_elapsed_budget_is_spent(
    make_client: Any, clock: FakeClock, sleep: RecordingSleep
) -> None:
    policy = RetryPolicy(
        max_attempts=100,
        max_elapsed_s=10,
        base_delay_s=1,
        max_delay_s=8,
        sleep=sleep,
        random=lambda: 0.5,
        clock=clock,
    )
    transport = FakeTransport(lambda call: json_response({}, status=429, headers={"Retry-After": "4"}))
    with pytest.raises(RetryExhaustedError):
        read(make_client(transport, retry=policy))
    assert sum(sleep.slept) <= 10
    assert len(transport.calls) == 3  # 0 s, 4 s, 8 s; a third wait would pass 10 s


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Service Unavailable</body></html>",
        b'{"data": [{"id": "cus_1"',
        b"",
        b'{"object": "list", "has_more": false}',
        b'{"data": {"id": "x"}}',
    ],
)
def test_malformed_pages_are_retried(make_client: Any, body: bytes) -> None:
    transport = FakeTransport(OK, script=[raw_response(body)])
    client = make_client(transport)
    assert len(read(client)[0].records) == 1
    assert client.stats.retries == 1


def test_persistently_malformed_pages_fail_naming_the_endpoint(make_client: Any) -> None:
    transport = FakeTransport(lambda call: raw_response(b"<html>oops</html>"))
    with pytest.raises(FatalApiError) as info:
        read(make_client(transport))
    assert "GET https://api.example.test/v1/customers" in str(info.value)
    assert "not JSON" in str(info.value)
    assert len(transport.calls) == RetryPolicy().malformed_attempts


def test_every_request_carries_the_timeout(make_client: Any) -> None:
    transport = FakeTransport(OK)
    read(make_client(transport, timeout=(2, 9)))
    assert all(call.timeout == (2.0, 9.0) for call in transport.calls)
