"""The outbox's backup marks: one statement per 1,000 rows, first mark kept, counts exact."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from backup_helpers import add_batch, outbox_state, stripe_list_body

from erp_sync.store.outbox import BackupMark, mark_backed_up, mark_restored

pytestmark = pytest.mark.integration

PAGES = 1_203  # more than one VALUES page of 1,000


def _mark(outbox_id: int, tag: str) -> BackupMark:
    return BackupMark(outbox_id, f"raw/{tag}/{outbox_id}.json.gz", tag * 64, 10, 20)


def test_marks_past_one_statement_keep_each_rows_first_mark_and_count_what_they_changed(db: Any) -> None:
    ids = add_batch(
        db,
        batch_id=901,
        run_id=f"manual__{uuid.uuid4().hex[:6]}",
        pages=[stripe_list_body([{"id": f"cus_{i}"}]) for i in range(PAGES)],
    )
    db.commit()
    already = ids[:3]
    assert mark_backed_up(db, [_mark(i, "a") for i in already]) == 3
    db.commit()

    marks = [_mark(i, "b") for i in ids] + [_mark(ids[-1], "c")]  # the last row marked twice
    assert mark_backed_up(db, marks) == PAGES - 3
    db.commit()

    state = {outbox_id: (path, sha) for outbox_id, path, sha in outbox_state(db)}
    assert [state[i] for i in already] == [(f"raw/a/{i}.json.gz", "a" * 64) for i in already]
    assert all(state[i] == (f"raw/b/{i}.json.gz", "b" * 64) for i in ids[3:])
    assert mark_backed_up(db, marks) == 0


def test_restored_pages_are_marked_only_where_their_raw_hash_matches(db: Any) -> None:
    bodies = [stripe_list_body([{"id": f"cus_r{i}"}]) for i in range(3)]
    ids = add_batch(db, batch_id=902, run_id=f"manual__{uuid.uuid4().hex[:6]}", pages=bodies)
    db.commit()
    with db.cursor() as cur:
        cur.execute("SELECT page_no, sha256 FROM erp_sync.outbox WHERE batch_id = 902 ORDER BY page_no")
        raw = dict(cur.fetchall())
    pages = [(n, f"raw/r/{n}.json.gz", "d" * 64, raw[n] if n != 2 else "0" * 64) for n in (1, 2, 3)]
    assert mark_restored(db, 902, pages) == 2
    db.commit()
    state = {outbox_id: path for outbox_id, path, _ in outbox_state(db)}
    assert [state[i] for i in ids] == ["raw/r/1.json.gz", None, "raw/r/3.json.gz"]
