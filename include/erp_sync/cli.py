"""Run one stream's sync outside Airflow: the same `erp_sync.pipeline.sync_stream` the DAG's tasks
call, with plain connection settings. Used by the crash tests (a process to SIGKILL), the benchmark,
and engineers debugging a stream.

    ERP_SYNC_SECRET_KEY=sk_test_... python -m erp_sync.cli sync --stream invoices \
        --base-url http://127.0.0.1:18111 --dsn "dbname=erp_demo host=127.0.0.1 user=postgres" \
        --redis-url redis://127.0.0.1:6379/1 [--full-refresh] [--window-start ISO --window-end ISO]

The secret comes from the environment (ERP_SYNC_SECRET_KEY), never from the command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import timedelta
from typing import Any

import psycopg2
import redis

from erp_sync.clients.auth import BearerSecretKey
from erp_sync.clients.client import SaaSClient
from erp_sync.core.params import parse_utc
from erp_sync.pipeline import WindowRequest, sync_stream
from erp_sync.store.migrations import apply_migrations
from erp_sync.streams import get_stream


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m erp_sync.cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sync = sub.add_parser("sync", help="sync one stream's window")
    sync.add_argument("--stream", required=True)
    sync.add_argument("--base-url", required=True)
    sync.add_argument("--dsn", required=True, help="libpq DSN of the ERP staging database")
    sync.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    sync.add_argument("--namespace", default="erpsync")
    sync.add_argument("--run-id", default="cli")
    sync.add_argument("--full-refresh", action="store_true")
    sync.add_argument("--dry-run", action="store_true")
    sync.add_argument("--window-start", default=None)
    sync.add_argument("--window-end", default=None)
    sync.add_argument("--lookback-minutes", type=float, default=10.0)
    sync.add_argument(
        "--batch-records",
        type=int,
        default=None,
        help="records per batch (default: 5,000 for a full refresh, 2,500 for an incremental window)",
    )
    sync.add_argument("--page-size", type=int, default=100)
    return parser


def run_sync(args: argparse.Namespace) -> dict[str, Any]:
    secret = os.environ.get("ERP_SYNC_SECRET_KEY")
    if not secret:
        raise SystemExit("ERP_SYNC_SECRET_KEY is not set")
    spec = get_stream(args.stream)
    client = SaaSClient(args.base_url, BearerSecretKey(secret), page_size=args.page_size)
    redis_client = redis.Redis.from_url(args.redis_url, socket_timeout=30)
    conn = psycopg2.connect(args.dsn)
    try:
        apply_migrations(conn)
        result = sync_stream(
            spec=spec,
            client=client,
            conn=conn,
            redis_client=redis_client,
            run_id=args.run_id,
            window=WindowRequest(
                window_start=parse_utc("window_start", args.window_start),
                window_end=parse_utc("window_end", args.window_end),
                full_refresh=args.full_refresh,
                lookback=timedelta(minutes=args.lookback_minutes),
            ),
            namespace=args.namespace,
            batch_records=args.batch_records,
            dry_run=args.dry_run,
        )
    finally:
        conn.close()
        client.close()
    return result.summary()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    summary = run_sync(args)
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
