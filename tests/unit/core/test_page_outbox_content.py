"""Page.compressed: the outbox's gzip and sha256 of what the backups keep, computed once."""

from __future__ import annotations

import gzip
import hashlib

from erp_sync.core.batch import Page


def _page(render=None) -> Page:
    return Page(
        stream="invoices",
        page_no=1,
        url="/v1/invoices?limit=100",
        body=b'{"data": [{"id": "in_1", "lines": {"has_more": true}}]}',
        records=[{"id": "in_1"}],
        versions=[1],
        render_completed=render,
    )


def test_compressed_is_the_stored_body_gzipped_with_its_sha256() -> None:
    page = _page()
    content, sha = page.compressed(2)
    assert gzip.decompress(content) == page.body
    assert sha == hashlib.sha256(page.body).hexdigest()
    assert content == gzip.compress(page.body, compresslevel=2, mtime=0)  # no timestamp: reproducible


def test_a_completed_page_is_rendered_and_compressed_once() -> None:
    calls: list[int] = []
    completed = b'{"data": [{"id": "in_1", "lines": {"has_more": false}}]}'

    def render() -> bytes:
        calls.append(1)
        return completed

    page = _page(render)
    first = page.compressed(2)
    assert page.compressed(2) is not None and page.compressed(2) == first
    assert gzip.decompress(first[0]) == completed
    assert first[1] == hashlib.sha256(completed).hexdigest()
    assert len(calls) == 1
    # another level is another content, from the same rendering
    assert gzip.decompress(page.compressed(6)[0]) == completed and len(calls) == 1
