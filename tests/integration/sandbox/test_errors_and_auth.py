"""Bad parameters and bad credentials get Stripe's error JSON; OAuth mode and the orders API."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sandbox_http import TIMEOUT_S, Api

from erp_sync.sandbox.testing import INCLUDE_DIR, SandboxHandle, running_sandbox

pytestmark = pytest.mark.integration


def stripe_error(response: requests.Response, status: int, param: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("params", "param", "fragment"),
    [
        ({"limit": 0}, "limit", "greater than or equal to 1"),
        ({"limit": 101}, "limit", "less than or equal to 100"),
        ({"limit": "ten"}, "limit", "Invalid integer"),
        ({"created[gte]": "yesterday"}, "created[gte]", "Invalid integer"),
        ({"created[since]": 1}, "created[since]", "unknown parameter"),
        ({"colour": "blue"}, "colour", "unknown parameter"),
        ({"status": "late"}, "status", "Invalid status"),
        ({"starting_after": "in_nope"}, "starting_after", "No such invoice"),
        ({"starting_after": "a", "ending_before": "b"}, "ending_before", "only specify one"),
        ({"customer": "cus_nope"}, "customer", "No such customer"),
    ],
)
def test_bad_list_parameters_give_stripes_400(
    shared_api: Api, params: dict, param: str, fragment: str
) -> None:
    error = stripe_error(shared_api.get("/v1/invoices", params), 400, param)
    assert fragment in error["message"]


def test_unknown_ids_and_urls_give_404(shared_api: Api) -> None:
    error = stripe_error(shared_api.get("/v1/invoices/in_doesnotexist"), 404, "id")
    assert error["code"] == "resource_missing" and "in_doesnotexist" in error["message"]
    stripe_error(shared_api.get("/v1/charges/in_wrongprefix"), 404, "id")
    stripe_error(shared_api.get("/v1/subscriptions"), 404, None)
    stripe_error(shared_api.get("/v2/invoices"), 404, None)


def test_missing_or_wrong_key_gives_401_without_echoing_the_key(shared_sandbox: SandboxHandle) -> None:
    url = shared_sandbox.base_url + "/v1/invoices"
    stripe_error(requests.get(url, timeout=TIMEOUT_S), 401, None)
    wrong = "sk_test_" + "x" * 30
    error = stripe_error(
        requests.get(url, headers={"Authorization": f"Bearer {wrong}"}, timeout=TIMEOUT_S), 401, None
    )
    assert wrong not in error["message"]
    basic = requests.get(url, auth=(shared_sandbox.secret_key, ""), timeout=TIMEOUT_S)
    assert basic.status_code == 200  # Stripe also accepts the key as the basic-auth user


@pytest.fixture(scope="module")
def oauth_sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=150, seed=4, oauth=True) as handle:
        yield handle


def token(handle: SandboxHandle, via: str = "basic", secret: str | None = None) -> requests.Response:
    secret = handle.client_secret if secret is None else secret
    if via == "basic":
        return requests.post(
            handle.token_url,
            data={"grant_type": "client_credentials"},
            auth=(handle.client_id, secret),
            timeout=TIMEOUT_S,
        )
    body = {"grant_type": "client_credentials", "client_id": handle.client_id, "client_secret": secret}
    return requests.post(handle.token_url, data=body, timeout=TIMEOUT_S)


@pytest.mark.parametrize("via", ["basic", "body"])
def test_oauth_client_credentials_token_opens_the_api(oauth_sandbox: SandboxHandle, via: str) -> None:
    response = token(oauth_sandbox, via)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    api = Api(oauth_sandbox, key=body["access_token"])
    assert len(api.ok("/v1/invoices", {"limit": 3})["data"]) == 3
    stripe_error(Api(oauth_sandbox).get("/v1/invoices"), 401, None)  # the secret key is not enough


def test_oauth_rejects_bad_clients_and_grants(oauth_sandbox: SandboxHandle) -> None:
    bad = token(oauth_sandbox, secret="wrong")
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    grant = requests.post(
        oauth_sandbox.token_url,
        data={"grant_type": "password"},
        auth=(oauth_sandbox.client_id, "x"),
        timeout=30,
    )
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"


def test_expired_token_gets_401(oauth_sandbox: SandboxHandle) -> None:
    oauth_sandbox.admin.set_faults(token_ttl_s=0)
    try:
        expired = token(oauth_sandbox).json()
        assert expired["expires_in"] == 0
        response = Api(oauth_sandbox, key=expired["access_token"]).get("/v1/invoices")
        error = stripe_error(response, 401, None)
        assert error["code"] == "token_invalid"
        orders = requests.get(
            oauth_sandbox.orders_url,
            headers={"Authorization": f"Bearer {expired['access_token']}"},
            timeout=30,
        )
        assert orders.status_code == 401 and orders.json()["error"] == "invalid_token"
    finally:
        oauth_sandbox.admin.reset_faults()


def orders_get(handle: SandboxHandle, access_token: str, **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {access_token}"}
    return requests.get(handle.orders_url, params=params, headers=headers, timeout=TIMEOUT_S)


def walk_orders(
    handle: SandboxHandle, access_token: str, limit: int = 37, **params: Any
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        response = orders_get(handle, access_token, offset=len(out), limit=limit, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "total"}
        out.extend(body["items"])
        if len(body["items"]) < limit:
            assert len(out) == body["total"]
            return out


def test_orders_api_pages_by_offset_filters_by_update_time_and_matches_truth(
    oauth_sandbox: SandboxHandle,
) -> None:
    access_token = token(oauth_sandbox).json()["access_token"]
    truth = oauth_sandbox.admin.truth()
    orders = walk_orders(oauth_sandbox, access_token)
    assert sorted(o["order_id"] for o in orders) == sorted(o["order_id"] for o in truth["objects"]["orders"])
    assert [o["updated_at"] for o in orders] == sorted(o["updated_at"] for o in orders)
    assert set(orders[0]) == {
        "order_id",
        "customer_id",
        "state",
        "currency",
        "total_cents",
        "updated_at",
        "created_at",
    }
    sums: dict[str, dict[str, dict[str, int]]] = {}
    for order in orders:
        group = sums.setdefault(order["currency"], {}).setdefault(
            order["state"], {"count": 0, "total_cents": 0}
        )
        group["count"] += 1
        group["total_cents"] += order["total_cents"]
    assert sums == truth["totals"]["orders"]
    middle = orders[len(orders) // 2]["updated_at"]
    since = walk_orders(oauth_sandbox, access_token, updated_since=middle)
    before = walk_orders(oauth_sandbox, access_token, updated_before=middle)
    assert all(o["updated_at"] >= middle for o in since) and all(o["updated_at"] < middle for o in before)
    assert len(since) + len(before) == len(orders)


@pytest.mark.parametrize(
    "params",
    [
        {"updated_since": "yesterday"},
        {"updated_since": "2026-01-01T00:00:00"},
        {"offset": -1},
        {"limit": 0},
        {"x": 1},
    ],
)
def test_orders_api_rejects_bad_parameters(oauth_sandbox: SandboxHandle, params: dict[str, Any]) -> None:
    access_token = token(oauth_sandbox).json()["access_token"]
    response = orders_get(oauth_sandbox, access_token, **params)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_orders_api_takes_oauth_tokens_only(oauth_sandbox: SandboxHandle) -> None:
    response = orders_get(oauth_sandbox, oauth_sandbox.secret_key)
    assert response.status_code == 401 and "Bearer" in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--invoices", "0"], "--invoices"),
        (["--port", "70000"], "--port"),
        (["--secret-key", "pk_live_123"], "sk_test_"),
        (["--faults", '{"nope": 1}'], "unknown fault"),
        (["--faults", "not json"], "--faults"),
    ],
)
def test_bad_command_line_arguments_are_refused_clearly(args: list[str], fragment: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "erp_sync.sandbox", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(INCLUDE_DIR)},
    )
    assert result.returncode == 2
    assert fragment in result.stderr and "SANDBOX READY" not in result.stdout
