"""Run one stream's window (two batches) in its own process, the way the pipeline does.

Used by the crash and concurrency tests: `python store_runner.py --dsn ... --redis-url ... --namespace ...
[--crash-at POINT --crash-batch A|B] [--lock-timeout S]`. Prints one JSON line per batch result.
The window: batch A = 20 new invoices; batch B = 20 more and newer versions of 5 of A's (the last
batch, which moves the cursor).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[3] / "include"), str(Path(__file__).resolve().parent)]

import psycopg2  # noqa: E402
import redis  # noqa: E402
from store_factories import WINDOW, Invoice, bad_record, invoice_batch, sample_invoices  # noqa: E402

from erp_sync.store.counters import next_batch_id  # noqa: E402
from erp_sync.store.faults import CRASH_ENV  # noqa: E402
from erp_sync.store.ledger import RedisLedger  # noqa: E402
from erp_sync.store.loader import load_batch  # noqa: E402
from erp_sync.store.locks import stream_lock  # noqa: E402


def window_batches() -> dict[str, list[Invoice]]:
    first = sample_invoices(20)
    second = sample_invoices(20, prefix="in_b")
    updated = [inv.bump(200, total=inv.total + Decimal("1"), status="paid") for inv in first[:5]]
    return {"A": first, "B": second + updated}


def truth() -> list[Invoice]:
    batches = window_batches()
    final = {inv.source_id: inv for inv in batches["A"]}
    final.update({inv.source_id: inv for inv in batches["B"]})
    return list(final.values())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--crash-at")
    parser.add_argument("--crash-batch", default="A")
    parser.add_argument("--lock-timeout", type=float, default=120.0)
    args = parser.parse_args()

    conn = psycopg2.connect(args.dsn)
    client = redis.Redis.from_url(args.redis_url)
    ledger = RedisLedger(client, namespace=args.namespace)
    batches = window_batches()
    with stream_lock(conn, "stripe", "invoices", timeout_s=args.lock_timeout):
        for name in ("A", "B"):
            rejections = [bad_record(f"in_bad_{name}")]
            key, mapped, pages = invoice_batch(batches[name], rejections=rejections, tag=name)
            if args.crash_at and args.crash_batch == name:
                os.environ[CRASH_ENV] = args.crash_at
            result = load_batch(
                conn,
                ledger,
                key,
                mapped,
                pages,
                batch_id=next_batch_id(client, args.namespace, conn),
                cursor_after=WINDOW[1] if name == "B" else None,
            )
            result.check_conservation()
            print(json.dumps({"batch": name, **asdict(result)}), flush=True)
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
