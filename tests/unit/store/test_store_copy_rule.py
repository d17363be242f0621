"""When a batch's rows may be COPied straight into a staging table instead of upserted."""

from __future__ import annotations

from erp_sync.store.loader import _may_copy, _TableOutcome

HEAD, LINES = "ar_invoices", "ar_invoice_lines"


def test_headers_the_ledger_does_not_know_are_copied() -> None:
    assert _may_copy(HEAD, HEAD, {HEAD, LINES}, {})


def test_a_table_with_any_key_the_ledger_knows_is_upserted() -> None:
    assert not _may_copy(HEAD, HEAD, {LINES}, {})


def test_new_lines_are_copied_only_when_their_headers_were_copied_too() -> None:
    copied_heads = {HEAD: _TableOutcome(copied=True)}
    upserted_heads = {HEAD: _TableOutcome(copied=False)}
    assert _may_copy(LINES, HEAD, {HEAD, LINES}, copied_heads)
    # a stored header may be newer than the batch's (an old version arriving late): the upsert's
    # guard must see these lines
    assert not _may_copy(LINES, HEAD, {LINES}, upserted_heads)
    assert not _may_copy(LINES, HEAD, {LINES}, {})
