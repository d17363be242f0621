"""Page.compressed and the page envelope: what the outbox and the backups keep, computed once."""

from __future__ import annotations

import gzip
import hashlib
from typing import Any

import orjson
import pytest

from erp_sync.core.batch import Page, envelope, open_envelope

BODY = b'{"data": [{"id": "in_1", "lines": {"data": [{"id": "il_1"}], "has_more": true}}]}'


def _page(fetched_children: bytes = b"") -> Page:
    return Page(
        stream="invoices",
        page_no=1,
        url="/v1/invoices?limit=100",
        body=BODY,
        records=[{"id": "in_1"}],
        versions=[1],
        fetched_children=fetched_children,
    )


def test_compressed_is_the_stored_body_gzipped_with_its_sha256() -> None:
    page = _page()
    content, sha = page.compressed(2)
    assert page.stored_body() is page.body
    assert gzip.decompress(content) == page.body
    assert sha == hashlib.sha256(page.body).hexdigest()
    assert content == gzip.compress(page.body, compresslevel=2, mtime=0)  # no timestamp: reproducible


def test_a_completed_page_is_stored_as_its_body_and_tails_and_compressed_once() -> None:
    tails = orjson.dumps([[{"id": "il_2"}]])
    page = _page(tails)
    first = page.compressed(2)
    assert page.compressed(2)[0] is first[0]  # kept, not compressed again
    stored = gzip.decompress(first[0])
    assert open_envelope(stored) == (BODY, tails)
    assert first[1] == hashlib.sha256(stored).hexdigest()
    assert orjson.loads(stored)["fetched_children"] == [[{"id": "il_2"}]]


@pytest.mark.parametrize(
    "tails",
    [b'[[{"description": ",\\"fetched_children\\":[]}"}]]', b"[]", b'[["}"]]'],
)
def test_the_envelope_gives_back_the_exact_bytes_whatever_the_tails_hold(tails: bytes) -> None:
    body = b'{"a": "\\u00e9 ,\\"body\\":", "n": [1, 2]}'
    assert open_envelope(envelope(body, tails)) == (body, tails)


def test_a_plain_body_is_not_an_envelope() -> None:
    assert open_envelope(BODY) is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda stored: stored.replace(b"il_1", b"il_12"),  # the body grew
        lambda stored: stored[:-1],  # cut short
        lambda stored: stored.replace(b'"body_length":', b'"body_length":x'),
        lambda stored: stored.replace(b',"body":', b',"bodY":'),
    ],
)
def test_a_damaged_envelope_is_refused(damage: Any) -> None:
    with pytest.raises(ValueError, match="damaged page envelope"):
        open_envelope(damage(envelope(BODY, b"[]")))
