"""`python -m erp_sync.sandbox serve ...`: run the Stripe-compatible sandbox until SIGTERM/SIGINT.

Prints exactly one line `SANDBOX READY http://HOST:PORT` once it is listening (port 0 picks a free
port). Secrets are never printed."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

import orjson

from erp_sync.sandbox.app import SandboxApp, Settings
from erp_sync.sandbox.faults import FaultError, validate_faults
from erp_sync.sandbox.server import new_event_loop, start_server
from erp_sync.sandbox.world import World

DEFAULT_SECRET_KEY = "sk_test_sandbox_0000000000000000"
DEFAULT_CLIENT_ID = "erp-sync-sandbox"
DEFAULT_CLIENT_SECRET = "sandbox-client-secret"


def _positive_int(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {raw!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m erp_sync.sandbox", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the sandbox HTTP server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_positive_int(0, 65535), default=0)
    serve.add_argument("--invoices", type=_positive_int(1, 5_000_000), default=200)
    serve.add_argument("--seed", type=int, default=1)
    serve.add_argument("--history-days", type=_positive_int(1, 3650), default=90)
    serve.add_argument("--anchor", type=int, default=None, help="unix time the seeded history ends at")
    serve.add_argument(
        "--secret-key",
        default=os.environ.get("ERP_SYNC_SANDBOX_SECRET_KEY", DEFAULT_SECRET_KEY),
        help="the API key clients send as 'Authorization: Bearer <key>' (must start with sk_test_)",
    )
    serve.add_argument("--client-id", default=os.environ.get("ERP_SYNC_SANDBOX_CLIENT_ID", DEFAULT_CLIENT_ID))
    serve.add_argument(
        "--client-secret", default=os.environ.get("ERP_SYNC_SANDBOX_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
    )
    serve.add_argument(
        "--cache-objects",
        type=_positive_int(1, 100_000_000),
        default=250_000,
        help="serialised objects kept in memory (~5 KB per invoice); more serves repeated walks faster",
    )
    serve.add_argument("--oauth", action="store_true", help="/v1 accepts only OAuth2 access tokens")
    serve.add_argument("--faults", default="{}", help="JSON object of faults, e.g. '{\"http_429_every\": 5}'")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.secret_key.startswith("sk_test_"):
        parser.error("--secret-key must start with sk_test_ (this is a test-mode sandbox)")
    try:
        faults = validate_faults(orjson.loads(args.faults))
    except (orjson.JSONDecodeError, FaultError) as exc:
        parser.error(f"--faults: {exc}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    started = time.monotonic()
    world = World(
        invoices=args.invoices,
        seed=args.seed,
        history_days=args.history_days,
        anchor=args.anchor,
        cache_objects=args.cache_objects,
    )
    settings = Settings(args.secret_key, args.client_id, args.client_secret, oauth=args.oauth)
    app = SandboxApp(world, settings, faults)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(start_server(app, args.host, args.port))
    host, port = server.sockets[0].getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    print(
        f"generated {args.invoices} invoices (seed {args.seed}) in {time.monotonic() - started:.1f}s",
        file=sys.stderr,
        flush=True,
    )
    print(f"SANDBOX READY http://{shown_host}:{port}", flush=True)
    stop = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
    try:
        loop.run_until_complete(stop)
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
