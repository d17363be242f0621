"""Start a sandbox subprocess for tests and the demo, and drive its admin API.

    with running_sandbox(invoices=200, seed=1) as sbx:
        sbx.base_url, sbx.secret_key, sbx.admin.truth(), sbx.admin.mutate(10)

The server runs in its own process (its own core); it is killed when the block exits."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

INCLUDE_DIR = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT_S = 30.0


class SandboxError(RuntimeError):
    pass


class AdminClient:
    """The sandbox's `/_admin` API over plain urllib (loopback, no auth), every call with a timeout."""

    def __init__(self, base_url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = Request(
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except HTTPError as exc:
            raise SandboxError(
                f"{method} {path} -> {exc.code}: {exc.read().decode(errors='replace')}"
            ) from None

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/_admin/health")  # type: ignore[no-any-return]

    def info(self) -> dict[str, Any]:
        return self._call("GET", "/_admin/info")  # type: ignore[no-any-return]

    def truth(self, objects: bool = True) -> dict[str, Any]:
        """`counts`, `totals[resource][currency][status]` (ints in minor units) and, with `objects`,
        every current object by resource (`objects["invoices"]`, ..., `objects["invoice_lines"][id]`)."""
        return self._call("GET", f"/_admin/truth?objects={int(objects)}")  # type: ignore[no-any-return]

    def mutate(self, n: int, at: int | None = None, kinds: list[str] | None = None) -> dict[str, Any]:
        """Apply n realistic changes (at unix time `at`, default now); returns what changed."""
        body: dict[str, Any] = {"n": n, "at": at}
        if kinds:
            body["kinds"] = kinds
        return self._call("POST", "/_admin/mutate", body)  # type: ignore[no-any-return]

    def faults(self) -> dict[str, Any]:
        return self._call("GET", "/_admin/faults")  # type: ignore[no-any-return]

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        return self._call("POST", "/_admin/faults", faults)  # type: ignore[no-any-return]

    def reset_faults(self) -> dict[str, Any]:
        return self._call("POST", "/_admin/faults/reset", {})  # type: ignore[no-any-return]

    def request_counts(self) -> dict[str, Any]:
        """`{"total": n, "by_route": {"GET /v1/invoices": n, ...}, "by_status": {"200": n, ...}}`."""
        return self._call("GET", "/_admin/requests")  # type: ignore[no-any-return]

    def reset_counts(self) -> dict[str, Any]:
        return self._call("POST", "/_admin/requests/reset", {})  # type: ignore[no-any-return]


@dataclass
class SandboxHandle:
    base_url: str
    secret_key: str
    client_id: str
    client_secret: str
    admin: AdminClient
    process: subprocess.Popen[str]

    @property
    def token_url(self) -> str:
        return self.base_url + "/oauth/token"

    @property
    def orders_url(self) -> str:
        return self.base_url + "/api/v2/orders"


def sandbox_command(
    *,
    port: int = 0,
    invoices: int = 200,
    seed: int = 1,
    secret_key: str | None = None,
    oauth: bool = False,
    faults: dict[str, Any] | None = None,
    history_days: int = 90,
    anchor: int | None = None,
) -> list[str]:
    cmd = [
        sys.executable, "-m", "erp_sync.sandbox", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--invoices", str(invoices), "--seed", str(seed), "--history-days", str(history_days),
    ]  # fmt: skip
    if secret_key is not None:  # else the server reads ERP_SYNC_SANDBOX_SECRET_KEY (kept out of `ps`)
        cmd += ["--secret-key", secret_key]
    if oauth:
        cmd.append("--oauth")
    if faults:
        cmd += ["--faults", json.dumps(faults)]
    if anchor is not None:
        cmd += ["--anchor", str(anchor)]
    return cmd


def _wait_ready(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """Read stdout until the READY line; the wait is bounded by a timer that kills the process."""
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("SANDBOX READY "):
                return line.split()[2]
    finally:
        timer.cancel()
    raise SandboxError(f"sandbox exited before it was ready (code {proc.wait()})")


@contextmanager
def running_sandbox(
    invoices: int = 200,
    seed: int = 1,
    oauth: bool = False,
    faults: dict[str, Any] | None = None,
    history_days: int = 90,
    anchor: int | None = None,
    startup_timeout_s: float = 180.0,
) -> Iterator[SandboxHandle]:
    """A sandbox subprocess on a free loopback port, with fresh random credentials."""
    secret_key = "sk_test_" + secrets.token_hex(16)
    client_id = "erp-sync-" + secrets.token_hex(4)
    client_secret = secrets.token_urlsafe(24)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(INCLUDE_DIR), env.get("PYTHONPATH", "")) if p)
    env["ERP_SYNC_SANDBOX_SECRET_KEY"] = secret_key
    env["ERP_SYNC_SANDBOX_CLIENT_ID"] = client_id
    env["ERP_SYNC_SANDBOX_CLIENT_SECRET"] = client_secret
    cmd = sandbox_command(
        invoices=invoices, seed=seed, oauth=oauth, faults=faults,
        history_days=history_days, anchor=anchor,
    )  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        base_url = _wait_ready(proc, startup_timeout_s)
        yield SandboxHandle(base_url, secret_key, client_id, client_secret, AdminClient(base_url), proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
