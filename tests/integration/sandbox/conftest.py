"""Sandbox contract tests talk to a real sandbox subprocess over HTTP (requests, with timeouts)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sandbox_http import Api

from erp_sync.sandbox.testing import SandboxHandle, running_sandbox


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[SandboxHandle]:
    """Read-only tests share one sandbox per module (they must not mutate it)."""
    with running_sandbox(invoices=300, seed=3) as handle:
        yield handle


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    """A fresh sandbox for tests that mutate data or set faults."""
    with running_sandbox(invoices=120, seed=9) as handle:
        yield handle


@pytest.fixture
def api(sandbox: SandboxHandle) -> Api:
    return Api(sandbox)


@pytest.fixture(scope="module")
def shared_api(shared_sandbox: SandboxHandle) -> Api:
    return Api(shared_sandbox)
