"""The sandbox's serialised-object cache: one arena, found by (resource, row)."""

from __future__ import annotations

from erp_sync.sandbox.world import INVOICE, LINE, JsonCache, World


def test_put_get_forget_and_start_over_past_the_limit() -> None:
    cache = JsonCache(limit=3)
    cache.put(INVOICE, 7, b'{"id":"in_7"}')
    cache.put(LINE, 7, b'{"id":"il_7","amount":5}')
    assert cache.get(INVOICE, 7) == b'{"id":"in_7"}'
    assert cache.get(LINE, 7) == b'{"id":"il_7","amount":5}'
    assert cache.get(INVOICE, 8) is None
    cache.forget(INVOICE, 7)
    assert cache.get(INVOICE, 7) is None
    cache.put(INVOICE, 9, b"{}")
    cache.put(INVOICE, 10, b"[]")  # the 4th object: everything before it is dropped
    assert cache.get(LINE, 7) is None and cache.get(INVOICE, 9) is None
    assert cache.get(INVOICE, 10) == b"[]"


def test_the_world_serves_the_same_json_cached_or_not() -> None:
    cached = World(invoices=50, seed=3, anchor=1_700_000_000, cache_objects=1_000)
    uncached = World(invoices=50, seed=3, anchor=1_700_000_000, cache_objects=1)
    for row in range(50):
        assert cached.json(INVOICE, row) == uncached.json(INVOICE, row)
    assert [cached.json(INVOICE, row) for row in range(50)] == cached.json_many(INVOICE, list(range(50)))
    assert cached.line_json(3) == uncached.line_json(3)
