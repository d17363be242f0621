"""The client's by-id read (used by reconciliation repair) against the sandbox over HTTP."""

from __future__ import annotations

import orjson
import pytest

from erp_sync.clients.auth import BearerSecretKey
from erp_sync.clients.client import SaaSClient
from erp_sync.sandbox.testing import running_sandbox
from erp_sync.streams import get_stream

pytestmark = pytest.mark.integration


def test_get_record_completes_children_and_answers_none_for_unknown_ids() -> None:
    with running_sandbox(invoices=300, seed=5) as sandbox:
        truth = orjson.loads(orjson.dumps(sandbox.admin.truth(objects=True)))["objects"]
        longest = max(truth["invoices"], key=lambda inv: len(truth["invoice_lines"][inv["id"]]))
        expected_lines = [line["id"] for line in truth["invoice_lines"][longest["id"]]]
        assert len(expected_lines) > 10, "the seed has an invoice whose lines are paginated"

        client = SaaSClient(sandbox.base_url, BearerSecretKey(sandbox.secret_key))
        record = client.get_record(get_stream("invoices"), longest["id"])
        assert record is not None and record["id"] == longest["id"]
        assert [line["id"] for line in record["lines"]["data"]] == expected_lines
        assert record["lines"]["has_more"] is False
        assert client.get_record(get_stream("invoices"), "in_does_not_exist") is None
