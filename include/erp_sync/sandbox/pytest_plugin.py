"""pytest fixtures: `pytest_plugins = ["erp_sync.sandbox.pytest_plugin"]` in a conftest.

`sandbox`: a fresh sandbox per test (200 invoices, seed 1, Bearer secret key).
`oauth_sandbox`: the same in OAuth mode (/v1 takes only access tokens from /oauth/token)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from erp_sync.sandbox.testing import SandboxHandle, running_sandbox


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=200, seed=1) as handle:
        yield handle


@pytest.fixture
def oauth_sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=200, seed=1, oauth=True) as handle:
        yield handle
