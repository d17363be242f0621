"""The client's walk in a child process (`ExtractProcess`), against the sandbox over HTTP: the same
pages as a walk in this process, the child's errors, logs and progress in this process, and no child
left behind however the walk ends."""

from __future__ import annotations

import logging
import os
import pickle
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis

from erp_sync.clients import (
    AuthenticationError,
    BearerSecretKey,
    OAuth2ClientCredentials,
    RedisTokenBucket,
    RetryPolicy,
    SaaSClient,
)
from erp_sync.clients.extract_process import ExtractProcess, ExtractProcessError
from erp_sync.clients.transport import Urllib3Transport
from erp_sync.core.batch import Page
from erp_sync.core.transform import map_pages
from erp_sync.pipeline import input_sha256
from erp_sync.sandbox.testing import SandboxHandle, running_sandbox
from erp_sync.streams import get_stream

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=400, seed=21, oauth=True) as sbx:
        yield sbx


@pytest.fixture(autouse=True)
def _no_faults(sandbox: SandboxHandle) -> Iterator[None]:
    yield
    sandbox.admin.reset_faults()


def _client(sandbox: SandboxHandle, **kwargs: Any) -> SaaSClient:
    """An OAuth2 client (its token state and lock are pickled too)."""
    kwargs.setdefault("progress", lambda stream, stats: None)
    auth = OAuth2ClientCredentials(sandbox.token_url, sandbox.client_id, sandbox.client_secret)
    return SaaSClient(sandbox.base_url, auth, **kwargs)


def _walk_in_child(client: SaaSClient, stream: str, mode: str = "full", **kwargs: Any) -> list[Page]:
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=30) if mode == "incremental" else None
    with ExtractProcess() as extraction:
        return list(
            extraction.iter_pages(
                client, get_stream(stream), mode=mode, window_start=start, window_end=end, **kwargs
            )
        )


@pytest.mark.parametrize("mode", ["full", "incremental"])
def test_the_child_yields_the_pages_a_walk_here_yields(sandbox: SandboxHandle, mode: str) -> None:
    spec = get_stream("invoices")
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=30) if mode == "incremental" else None
    here = _client(sandbox)
    expected = list(here.iter_pages(spec, mode=mode, window_start=start, window_end=end))  # type: ignore[arg-type]
    there = _client(sandbox)
    with ExtractProcess() as extraction:
        pages = list(extraction.iter_pages(there, spec, mode=mode, window_start=start, window_end=end))

    assert [p.extracted for p in pages] == [p.extracted for p in expected]
    assert any(p.fetched_children for p in pages)  # completed line lists came across too
    assert input_sha256(pages) == input_sha256(expected)
    assert [(p.records, p.problems) for p in pages] == [(p.records, p.problems) for p in expected]
    if mode == "incremental":  # versions are the events' times
        assert [p.versions for p in pages] == [p.versions for p in expected]
    else:  # versions are the child's listing start
        assert {v for p in pages for v in p.versions} == {there.page_meta["default_version"]}
    assert pages[0].whole_record(0) == expected[0].whole_record(0)
    assert [p.stored_body() for p in pages] == [p.stored_body() for p in expected]
    # the child's counters and page metadata land on the client that was handed over
    assert there.stats.pages == here.stats.pages == len(pages)
    assert there.stats.requests == here.stats.requests
    assert there.page_meta["mode"] == here.page_meta["mode"]
    # the same mapped rows, digests included (a full walk's version is the time it started)
    mapped, mapped_here = (map_pages(spec, p).tables["ar_invoices"] for p in (pages, expected))
    assert mapped.drop(columns="source_version").equals(mapped_here.drop(columns="source_version"))


def test_a_client_with_a_redis_budget_takes_its_tokens_there_from_the_child(
    sandbox: SandboxHandle, redis_client: redis.Redis, redis_namespace: str
) -> None:
    key = f"{redis_namespace}:ratelimit:saas_api"
    client = _client(
        sandbox, rate_limiter=RedisTokenBucket(redis_client, key, rate_per_s=40, burst=2), page_size=20
    )
    pages = _walk_in_child(client, "charges")
    assert sum(p.extracted for p in pages) == len(sandbox.admin.truth()["objects"]["charges"])
    assert client.stats.rate_limit_waits > 0  # the child took its tokens from the shared bucket
    assert redis_client.exists(key)


def test_the_childs_errors_are_raised_here_with_their_type_and_details(sandbox: SandboxHandle) -> None:
    client = SaaSClient(sandbox.base_url, BearerSecretKey("sk_test_wrong_key_000"))
    with pytest.raises(AuthenticationError, match="HTTP 401: Invalid token") as info:
        _walk_in_child(client, "customers")
    assert info.value.status == 401
    assert info.value.endpoint.endswith("/v1/customers")
    assert "extraction process" in "".join(info.value.__notes__)
    assert "sk_test_wrong_key_000" not in str(info.value) + "".join(info.value.__notes__)


def test_the_childs_logs_and_progress_arrive_here(
    sandbox: SandboxHandle, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.admin.set_faults(http_503_every=3)
    reports: list[tuple[str, int]] = []
    client = _client(
        sandbox,
        retry=RetryPolicy(base_delay_s=0.01),
        progress=lambda stream, stats: reports.append((stream, stats.pages)),
        progress_interval_s=0.0,
        page_size=20,
    )
    caplog.set_level(logging.INFO, logger="erp_sync")
    pages = _walk_in_child(client, "charges")

    retried = [r for r in caplog.records if r.name == "erp_sync.clients.client" and "retrying" in r.message]
    assert retried and client.stats.retries == len(retried)
    assert reports and reports[-1] == ("charges", len(pages))


def test_a_rejected_record_keeps_its_whole_payload_across_the_pipe(sandbox: SandboxHandle) -> None:
    sandbox.admin.set_faults(malformed_every=15, malformed_kind="cycle")
    pages = _walk_in_child(_client(sandbox), "invoices")
    batch = map_pages(get_stream("invoices"), pages)
    assert {r.reason_code for r in batch.rejections} >= {"MISSING_ID", "UNKNOWN_CURRENCY"}
    payloads = [orjson.loads(r.raw_payload) for r in batch.rejections]
    # whole records, not the narrow ones the mapping reads: fields the model never declares are there
    assert all("lines" in p and "object" in p for p in payloads)
    assert batch.accepted + batch.superseded + len(batch.rejections) == batch.extracted


def test_closing_the_walk_early_ends_the_child(sandbox: SandboxHandle) -> None:
    end = datetime.now(UTC)
    with ExtractProcess() as extraction:
        walk = extraction.iter_pages(
            _client(sandbox, page_size=10),
            get_stream("invoices"),
            mode="full",
            window_start=None,
            window_end=end,
        )
        first = next(walk)
        assert first.records
        walk.close()
        assert extraction.exit_code is not None


def test_a_child_that_dies_mid_walk_fails_the_walk_instead_of_ending_it(sandbox: SandboxHandle) -> None:
    end = datetime.now(UTC)
    with ExtractProcess() as extraction:
        walk = extraction.iter_pages(
            _client(sandbox, page_size=5),
            get_stream("invoices"),
            mode="full",
            window_start=None,
            window_end=end,
        )
        next(walk)
        os.kill(extraction.pid, 9)
        with pytest.raises(ExtractProcessError, match=r"ended before the walk did \(exit code -9"):
            for _ in walk:
                pass


class _LockedTransport(Urllib3Transport):
    """A transport that cannot be pickled (a lock of its own, no reduce for it)."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def __reduce__(self) -> Any:
        return object.__reduce__(self)


def test_a_client_that_cannot_be_handed_over_fails_before_any_request(sandbox: SandboxHandle) -> None:
    before = sandbox.admin.request_counts()["total"]
    client = _client(sandbox, transport=_LockedTransport())
    with pytest.raises(ExtractProcessError, match="extract_process=False"):
        _walk_in_child(client, "customers")
    assert sandbox.admin.request_counts()["total"] == before
    with pytest.raises(TypeError):
        pickle.dumps(client)
