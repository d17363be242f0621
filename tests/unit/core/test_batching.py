"""ReadAhead (the pipeline's extraction thread) and the garbage-collector pause."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator

import pytest

from erp_sync.core.batching import ReadAhead, chunked, collect_between_batches, each_in_flight, gc_paused


def test_read_ahead_yields_every_item_in_order_from_another_thread() -> None:
    producers: set[str] = set()

    def source() -> Iterator[int]:
        for n in range(1_000):
            producers.add(threading.current_thread().name)
            yield n

    with ReadAhead(source(), depth=7, name="extract-test") as ahead:
        assert list(ahead) == list(range(1_000))
    assert producers == {"extract-test"}


def test_read_ahead_stays_within_its_depth() -> None:
    produced: list[int] = []

    def source() -> Iterator[int]:
        for n in range(100):
            produced.append(n)
            yield n

    with ReadAhead(source(), depth=3) as ahead:
        assert next(ahead) == 0
        time.sleep(0.2)  # give the producer every chance to run ahead
        # one consumed, three queued, one more produced and waiting to be queued
        assert len(produced) <= 1 + 3 + 1


def test_an_error_in_the_source_reaches_the_consumer_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise RuntimeError("HTTP 500 on page 3")

    got: list[int] = []
    with ReadAhead(source(), depth=2) as ahead, pytest.raises(RuntimeError, match="page 3"):
        for item in ahead:
            got.append(item)
    assert got == [1, 2]


def test_closing_early_stops_the_producer_and_closes_the_source() -> None:
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    ahead = ReadAhead(source(), depth=2)
    assert next(ahead) == 0
    ahead.close()
    assert closed.wait(5), "the source generator was not closed"
    assert not ahead._thread.is_alive()
    with pytest.raises(StopIteration):
        next(ahead)


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"):
        ReadAhead(iter([1]), depth=0)


def test_gc_pause_restores_the_previous_state_even_when_nested() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
        collect_between_batches(50)  # an explicit collection still runs while paused
    assert gc.isenabled()


def test_collect_between_batches_frees_cycles_while_paused() -> None:
    class Node:
        other: object = None

    with gc_paused():
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = {id(a), id(b)}
        del a, b
        collect_between_batches(50)  # batch 50: a full collection
        assert not any(id(o) in alive for o in gc.get_objects() if isinstance(o, Node))


def test_gc_pause_as_a_decorator_pauses_each_call() -> None:
    seen: list[bool] = []

    @gc_paused()
    def work() -> None:
        seen.append(gc.isenabled())

    work()
    work()
    assert seen == [False, False]
    assert gc.isenabled()


def test_handoff_builds_the_next_item_only_after_the_consumer_took_the_previous() -> None:
    produced: list[int] = []

    def source() -> Iterator[int]:
        for n in range(10):
            produced.append(n)
            yield n

    with ReadAhead(source(), depth=1, handoff=True) as ahead:
        assert next(ahead) == 0
        time.sleep(0.2)  # give the producer every chance to run ahead
        assert produced == [0, 1]  # one taken, one waiting, nothing built behind it
        assert list(ahead) == list(range(1, 10))


def test_closing_a_handoff_with_an_item_waiting_stops_the_producer() -> None:
    ahead = ReadAhead(iter(range(10)), depth=1, handoff=True)
    assert next(ahead) == 0
    time.sleep(0.1)
    started = time.monotonic()
    ahead.close()
    assert not ahead._thread.is_alive()
    assert time.monotonic() - started < 5


def test_chunked_slices_in_order_with_a_short_last_slice() -> None:
    assert [list(c) for c in chunked(list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunked([], 3)) == []


def test_each_in_flight_keeps_the_items_order_and_calls_on_its_pool_threads() -> None:
    started: list[str] = []

    def slow_first(item: int) -> int:
        started.append(threading.current_thread().name)
        time.sleep(0.05 if item == 0 else 0)
        return item * 10

    assert each_in_flight(slow_first, [0, 1, 2, 3], workers=3, name="probe") == [0, 10, 20, 30]
    assert all(name.startswith("probe") for name in started)
    assert each_in_flight(slow_first, [5], workers=3, name="probe") == [50]  # one item: no pool


def test_each_in_flight_raises_the_first_failure() -> None:
    def fail_on_two(item: int) -> int:
        if item == 2:
            raise ValueError("boom 2")
        return item

    with pytest.raises(ValueError, match="boom 2"):
        each_in_flight(fail_on_two, [1, 2, 3], workers=2, name="probe")
