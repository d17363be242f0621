"""Every fault behaves as configured, at start (`--faults`) and at run time (admin API)."""

from __future__ import annotations

import itertools
import socket
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from sandbox_http import Api

from erp_sync.sandbox.faults import RECORD_KINDS
from erp_sync.sandbox.testing import SandboxHandle, running_sandbox

pytestmark = pytest.mark.integration


def statuses(api: Api, n: int) -> list[int]:
    return [api.get("/v1/customers", {"limit": 1}).status_code for _ in range(n)]


def test_http_429_every_n_with_retry_after(sandbox: SandboxHandle, api: Api) -> None:
    sandbox.admin.set_faults(http_429_every=3, retry_after_s=2)
    assert statuses(api, 6) == [200, 200, 429, 200, 200, 429]
    response = api.get("/v1/invoices")
    response = api.get("/v1/invoices")
    response = api.get("/v1/invoices")
    assert response.status_code == 429 and response.headers["Retry-After"] == "2"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["code"] == "rate_limit"


def test_http_503_every_n(sandbox: SandboxHandle, api: Api) -> None:
    sandbox.admin.set_faults(http_503_every=2)
    assert statuses(api, 4) == [200, 503, 200, 503]
    assert api.get("/v1/invoices").json()["object"] == "list"
    assert api.get("/v1/invoices").json()["error"]["type"] == "api_error"


def test_faults_set_at_start_and_reset_at_run_time() -> None:
    with running_sandbox(invoices=50, seed=2, faults={"http_503_every": 1}) as handle:
        api = Api(handle)
        assert handle.admin.faults()["http_503_every"] == 1
        assert statuses(api, 2) == [503, 503]
        handle.admin.reset_faults()
        assert statuses(api, 2) == [200, 200]


def test_slow_responses_wait_at_least_the_configured_time(sandbox: SandboxHandle, api: Api) -> None:
    sandbox.admin.set_faults(slow_ms=400)
    started = time.monotonic()
    assert api.get("/v1/invoices", {"limit": 1}).status_code == 200
    assert time.monotonic() - started >= 0.4  # a lower bound: the response cannot come sooner
    sandbox.admin.reset_faults()
    assert sandbox.admin.faults()["slow_ms"] == 0


def raw_walk(api: Api, limit: int) -> list[list[dict[str, Any]]]:
    """Pages of a full invoice walk, tolerant of corrupted records (never the last one of a page)."""
    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["starting_after"] = cursor
        page = api.ok("/v1/invoices", params)
        pages.append(page["data"])
        if not page["has_more"]:
            return pages
        cursor = page["data"][-1]["id"]


def corrupted(record: dict[str, Any], kind: str) -> bool:
    if kind == "missing_id":
        return "id" not in record
    if kind == "string_amount":
        return isinstance(record["total"], str)
    return record["currency"] == "xxx"


@pytest.mark.parametrize("kind", RECORD_KINDS)
def test_malformed_records_one_per_n(sandbox: SandboxHandle, api: Api, kind: str) -> None:
    truth = {i["id"]: i for i in sandbox.admin.truth()["objects"]["invoices"]}
    sandbox.admin.set_faults(malformed_every=4, malformed_kind=kind)
    pages = raw_walk(api, limit=10)
    eligible = [rec for page in pages for rec in page[:-1]]  # a page's last record is the cursor
    bad = [k for k, rec in enumerate(eligible) if corrupted(rec, kind)]
    assert bad == list(range(3, len(eligible), 4))
    assert not any(corrupted(page[-1], kind) for page in pages)
    for k in bad:
        record = eligible[k]
        if kind != "missing_id":
            original = truth[record["id"]]
            field = "total" if kind == "string_amount" else "currency"
            assert {f: v for f, v in record.items() if f != field} == {
                f: v for f, v in original.items() if f != field
            }


@pytest.mark.parametrize("kind", ["truncated", "non_json", "html"])
def test_malformed_bodies_one_list_response_per_n(sandbox: SandboxHandle, api: Api, kind: str) -> None:
    sandbox.admin.set_faults(malformed_every=2, malformed_kind=kind)
    first, second = api.get("/v1/invoices"), api.get("/v1/invoices")
    assert first.status_code == second.status_code == 200
    assert orjson.loads(first.content)["object"] == "list"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(second.content)
    if kind == "html":
        assert second.headers["Content-Type"].startswith("text/html") and second.text.startswith(
            "<!DOCTYPE html>"
        )
    if kind == "truncated":
        assert second.content == first.content[: len(first.content) // 2]


def test_duplicate_across_pages_repeats_the_cursor_record(sandbox: SandboxHandle, api: Api) -> None:
    ids = [i["id"] for i in sandbox.admin.truth()["objects"]["invoices"]]
    sandbox.admin.set_faults(duplicate_across_pages=True)
    pages = raw_walk(api, limit=20)
    for previous, page in itertools.pairwise(pages):
        assert page[0]["id"] == previous[-1]["id"]
    seen = [rec["id"] for page in pages for rec in page]
    counts = Counter(seen)
    assert set(seen) == set(ids)
    assert sum(c - 1 for c in counts.values()) == len(pages) - 1


def test_mutate_between_pages_changes_data_mid_walk_without_losing_records(
    sandbox: SandboxHandle, api: Api
) -> None:
    before = sandbox.admin.truth()
    sandbox.admin.set_faults(mutate_between_pages=2)
    pages = raw_walk(api, limit=10)
    after = sandbox.admin.truth(objects=False)
    assert after["counts"]["events"] > before["counts"]["events"]
    seen = [rec["id"] for page in pages for rec in page]
    assert len(seen) == len(set(seen))
    assert {i["id"] for i in before["objects"]["invoices"]} <= set(seen)


def test_request_counts_by_route_and_status(sandbox: SandboxHandle, api: Api) -> None:
    sandbox.admin.reset_counts()
    api.get("/v1/invoices")
    api.get("/v1/invoices", {"limit": 0})
    first = api.ok("/v1/charges", {"limit": 1})["data"][0]["id"]
    api.get(f"/v1/charges/{first}")
    counts = sandbox.admin.request_counts()
    assert counts["total"] == 4
    assert counts["by_route"] == {"GET /v1/invoices": 2, "GET /v1/charges": 1, "GET /v1/charges/{id}": 1}
    assert counts["by_status"] == {"200": 3, "400": 1}
    assert sandbox.admin.reset_counts()["total"] == 0


def test_pipelined_requests_are_answered_in_order_even_when_slow(sandbox: SandboxHandle) -> None:
    sandbox.admin.set_faults(slow_ms=150)
    host, port = sandbox.base_url.removeprefix("http://").split(":")
    ids = [c["id"] for c in sandbox.admin.truth()["objects"]["customers"][:3]]
    auth = f"Authorization: Bearer {sandbox.secret_key}\r\n"
    wire = "".join(f"GET /v1/customers/{cid} HTTP/1.1\r\nHost: x\r\n{auth}\r\n" for cid in ids)
    wire += f"GET /v1/customers/nope HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(wire.encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    responses = raw.split(b"HTTP/1.1 ")[1:]
    assert [r.split(b" ", 1)[0] for r in responses] == [b"200", b"200", b"200", b"404"]
    bodies = [orjson.loads(r.split(b"\r\n\r\n", 1)[1]) for r in responses[:3]]
    assert [b["id"] for b in bodies] == ids
