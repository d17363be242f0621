"""HTTP helper for the sandbox contract tests (kept out of conftest so tests can import it)."""

from __future__ import annotations

from typing import Any

import requests

from erp_sync.sandbox.testing import SandboxHandle

TIMEOUT_S = 30


class Api:
    """A minimal Stripe-style caller: Bearer auth, GET with params, full list walks."""

    def __init__(self, handle: SandboxHandle, key: str | None = None) -> None:
        self.handle = handle
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key or handle.secret_key}"

    def get(self, path: str, params: Any = None, **kwargs: Any) -> requests.Response:
        return self.session.get(self.handle.base_url + path, params=params, timeout=TIMEOUT_S, **kwargs)

    def ok(self, path: str, params: Any = None) -> dict[str, Any]:
        response = self.get(path, params)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def walk(self, path: str, params: dict[str, Any] | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Every object of a list endpoint, following starting_after until has_more is false."""
        out: list[dict[str, Any]] = []
        query = dict(params or {}, limit=limit)
        while True:
            page = self.ok(path, query)
            assert page["object"] == "list" and page["url"] == path.split("?")[0]
            assert len(page["data"]) <= limit
            out.extend(page["data"])
            if not page["has_more"]:
                return out
            query["starting_after"] = page["data"][-1]["id"]


def walk_sums(api: Api) -> dict[str, Any]:
    """Totals computed from full walks, shaped like the admin truth's `totals` (ints, minor units)."""
    fields = {
        "invoices": ("total", "amount_paid", "amount_remaining", "post_payment_credit_notes_amount"),
        "charges": ("amount", "amount_refunded"),
        "refunds": ("amount",),
        "credit_notes": ("total",),
    }
    sums: dict[str, Any] = {}
    for resource, names in fields.items():
        by_currency: dict[str, dict[str, dict[str, int]]] = {}
        for obj in api.walk(f"/v1/{resource}"):
            group = by_currency.setdefault(obj["currency"], {}).setdefault(obj["status"], {"count": 0})
            group["count"] += 1
            for name in names:
                group[name] = group.get(name, 0) + obj[name]
        sums[resource] = by_currency
    return sums
