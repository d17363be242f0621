"""Pure parts of the pipeline: batching, the batch input hash, and how run totals add up."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from erp_sync.core.batch import BatchResult, Page
from erp_sync.pipeline import StreamRunResult, batch_sizes, batched_pages, input_sha256


def page(n: int, records: int) -> Page:
    return Page(
        stream="invoices",
        page_no=n,
        url=f"u{n}",
        body=b"x" * n,
        records=[{}] * records,
        versions=[1] * records,
    )


def test_batches_close_at_the_record_budget_and_the_last_is_flagged() -> None:
    batches = list(batched_pages([page(1, 40), page(2, 40), page(3, 40)], batch_records=80))
    assert [([p.page_no for p in b], last) for b, last in batches] == [([1, 2], False), ([3], True)]


def test_an_empty_window_still_yields_the_last_batch_that_moves_the_cursor() -> None:
    assert list(batched_pages([], batch_records=10)) == [([], True)]


def test_input_hash_depends_on_urls_bodies_and_order() -> None:
    a, b = page(1, 1), page(2, 1)
    assert input_sha256([a, b]) == input_sha256([a, b])
    assert input_sha256([a, b]) != input_sha256([b, a])
    assert input_sha256([a]) != input_sha256([page(2, 1)])


def run() -> StreamRunResult:
    return StreamRunResult(
        stream="invoices",
        source_system="stripe",
        mode="full",
        window_start=None,
        window_end=datetime(2026, 11, 26, tzinfo=UTC),
        window_reason="test",
        dry_run=False,
        cursor_before=None,
        cursor_after=None,
    )


def test_a_batch_committed_by_an_earlier_try_counts_as_skipped_not_new() -> None:
    result = run()
    result.add(BatchResult(1, 10, 7, 1, 1, 1, {"ar_invoices": 8}))
    result.add(BatchResult(2, 5, 5, 0, 0, 0, {"ar_invoices": 5}, already_committed=True))
    assert (
        result.extracted,
        result.loaded_new,
        result.loaded_changed,
        result.skipped_unchanged,
        result.rejected,
    ) == (15, 7, 1, 6, 1)
    assert result.already_committed_batches == 1
    assert result.rows_by_table == {"ar_invoices": 8}
    assert result.summary()["batches"] == 2


@pytest.mark.parametrize("counts", [(10, 5, 2, 2, 0), (3, 0, 0, 0, 0)])
def test_conservation_violation_is_an_error(counts) -> None:
    from erp_sync.core.batch import ConservationError

    with pytest.raises(ConservationError):
        BatchResult(1, *counts, {}).check_conservation()


def keyed_page(n: int, ids: list[str]) -> Page:
    return Page(
        stream="invoices",
        page_no=n,
        url=f"u{n}",
        body=b"x",
        records=[{"id": i} for i in ids],
        versions=[1] * len(ids),
    )


def test_prepared_batches_carry_their_input_digest_and_are_mapped_only_when_asked() -> None:
    from erp_sync.pipeline import _prepare_batches
    from erp_sync.streams import get_stream

    pages = [keyed_page(1, ["in_a", "in_b"]), keyed_page(2, ["in_b", "in_c"]), keyed_page(3, ["in_a"])]
    not_ahead = threading.Event()  # clear: nothing is mapped ahead
    batches = list(_prepare_batches(get_stream("invoices"), pages, (1, 2), not_ahead))
    assert [b.mapped for b in batches] == [None, None, None]
    assert [b.digest for b in batches] == [input_sha256([p]) for p in pages]
    assert [b.is_last for b in batches] == [False, False, True]


def test_a_smaller_first_batch_then_full_ones() -> None:
    pages = [page(n, 40) for n in range(1, 7)]
    batches = list(batched_pages(pages, batch_records=80, first_batch_records=40))
    assert [[p.page_no for p in b] for b, _ in batches] == [[1], [2, 3], [4, 5], [6]]
    assert list(batched_pages(pages, 80, 40)) == batches  # the same pages form the same batches


def test_an_incremental_window_stops_its_batches_at_2500_unless_the_size_is_set() -> None:
    pages = [page(n, 500) for n in range(1, 28)]  # 13,500 records, as a 1% delta at 1,000,000
    first, size = batch_sizes("incremental", None)
    sizes = [sum(p.extracted for p in b) for b, _ in batched_pages(pages, size, first)]
    assert sizes == [1_000, 2_000, 2_500, 2_500, 2_500, 2_500, 500]
    assert batch_sizes("full", None) == (1_000, 5_000)
    assert batch_sizes("incremental", 10_000) == batch_sizes("full", 10_000) == (2_000, 10_000)
    assert batch_sizes("incremental", 80) == (16, 80)


def test_batches_after_a_small_first_one_double_up_to_the_batch_size() -> None:
    pages = [page(n, 1_000) for n in range(1, 16)]
    batches = list(batched_pages(pages, batch_records=5_000, first_batch_records=1_000))
    sizes = [sum(p.extracted for p in b) for b, _ in batches]
    assert sizes == [1_000, 2_000, 4_000, 5_000, 3_000]
    assert [last for _, last in batches] == [False, False, False, False, True]
