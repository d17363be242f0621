"""`remember` writes each chunk with one MSET (not a SET per key) and stores exactly the row_sha256."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from store_factories import invoice_batch, sample_invoices

from erp_sync.store.ledger import CHUNK, RedisLedger

pytestmark = pytest.mark.integration


class _RecordingPipeline:
    def __init__(self, pipe: Any, commands: Counter[str]) -> None:
        self._pipe = pipe
        self._commands = commands

    def __getattr__(self, name: str) -> Any:
        if name in ("set", "mset", "setex"):
            self._commands[name] += 1
        return getattr(self._pipe, name)


class _RecordingRedis:
    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self.commands: Counter[str] = Counter()

    def pipeline(self, *args: Any, **kwargs: Any) -> _RecordingPipeline:
        return _RecordingPipeline(self._redis.pipeline(*args, **kwargs), self.commands)

    def __getattr__(self, name: str) -> Any:
        if name in ("set", "mset", "setex"):
            self.commands[name] += 1
        return getattr(self._redis, name)


def test_remember_sends_one_mset_per_chunk_with_the_exact_values(redis_client, redis_namespace):
    recording = _RecordingRedis(redis_client)
    ledger = RedisLedger(recording, namespace=redis_namespace)
    _, mapped, _ = invoice_batch(sample_invoices(2 * CHUNK + 500))
    lines = mapped.tables["ar_invoice_lines"]  # 9,000 rows

    assert ledger.remember("ar_invoice_lines", lines) == len(lines)

    assert recording.commands == Counter({"mset": 5})  # ceil(9000 / 2000), no SET per key
    assert ledger.lookup("ar_invoice_lines", lines) == [str(sha) for sha in lines["row_sha256"]]
    keys = ledger._frame_keys("ar_invoice_lines", lines)
    assert all(ttl == -1 for ttl in (redis_client.ttl(k) for k in keys[:50]))  # no TTL, as SET left it


def test_remember_after_evict_restores_the_entries_the_split_trusts(ledger):
    _, mapped, _ = invoice_batch(sample_invoices(30))
    head = mapped.tables["ar_invoices"]
    ledger.remember("ar_invoices", head)
    assert ledger.evict_frame("ar_invoices", head) == len(head)
    assert ledger.split_unchanged("ar_invoices", head)[1] == 0  # evicted: nothing is skipped
    ledger.remember("ar_invoices", head)
    assert ledger.split_unchanged("ar_invoices", head)[1] == len(head)
