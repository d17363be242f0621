"""Page.compressed and the page envelope: what the outbox and the backups keep, computed once."""

from __future__ import annotations

import gzip
import hashlib
from typing import Any

import orjson
import pytest

from erp_sync.core.batch import Page, envelope, join_json_lists, json_list_pieces, open_envelope

BODY = b'{"data": [{"id": "in_1", "lines": {"data": [{"id": "il_1"}], "has_more": true}}]}'


def _page(fetched_children: bytes = b"") -> Page:
    """A page as `page_from_body` gives it back: what was fetched in one piece, as stored."""
    return Page(
        stream="invoices",
        page_no=1,
        url="/v1/invoices?limit=100",
        body=BODY,
        records=[{"id": "in_1"}],
        versions=[1],
        fetched_children=(fetched_children,) if fetched_children else (),
    )


def test_compressed_is_the_stored_body_gzipped_with_its_sha256() -> None:
    page = _page()
    content, sha = page.compressed(2)
    assert page.stored_body() is page.body
    assert gzip.decompress(content) == page.body
    assert sha == hashlib.sha256(page.body).hexdigest()
    assert content == gzip.compress(page.body, compresslevel=2, mtime=0)  # no timestamp: reproducible


def test_a_completed_page_is_stored_as_its_body_and_continuation_pages_and_compressed_once() -> None:
    continuation = b'{"object": "list", "data": [{"id": "il_2"}], "has_more": false}'
    fetched = join_json_lists([[continuation]])
    page = _page(fetched)
    first = page.compressed(2)
    assert page.compressed(2)[0] is first[0]  # kept, not compressed again
    stored = gzip.decompress(first[0])
    assert open_envelope(stored) == (BODY, fetched, True)
    assert continuation in stored  # as received, not re-serialised
    assert first[1] == hashlib.sha256(stored).hexdigest()
    assert orjson.loads(stored)["fetched_child_pages"] == [[orjson.loads(continuation)]]


def test_a_page_stored_with_tail_items_keeps_that_form() -> None:
    """Pages stored before session 7 (envelope version 1) come back, and are stored again, as they
    were: restore puts the bytes it verified back into the outbox."""
    tails = orjson.dumps([[{"id": "il_2"}]])
    stored = envelope(BODY, tails)
    assert stored.startswith(b'{"erp_sync_page_envelope":1,')
    assert open_envelope(stored) == (BODY, tails, False)
    page = _page(tails)
    page.child_pages = False
    assert page.stored_body() == stored


@pytest.mark.parametrize("child_pages", [True, False])
@pytest.mark.parametrize(
    "tails",
    [b'[[{"description": ",\\"fetched_children\\":[]}"}]]', b"[]", b'[["}"]]'],
)
def test_the_envelope_gives_back_the_exact_bytes_whatever_the_tails_hold(
    tails: bytes, child_pages: bool
) -> None:
    body = b'{"a": "\\u00e9 ,\\"body\\":", "n": [1, 2]}'
    assert open_envelope(envelope(body, tails, child_pages=child_pages)) == (body, tails, child_pages)


def test_lists_of_json_documents_join_into_one_array() -> None:
    assert orjson.loads(join_json_lists([[b'{"a": 1}', b"[2]"], [], [b'"x"']])) == [
        [{"a": 1}, [2]],
        [],
        ["x"],
    ]
    assert join_json_lists([]) == b"[]"


@pytest.mark.parametrize(
    "lists", [[[b'{"a": 1}', b"[2]"], [], [b'"x"']], [[b"{}"]], [[], []], [[b"1", b"2", b"3"], [b"4"]]]
)
def test_the_pieces_of_joined_lists_are_the_joined_bytes(lists: list[list[bytes]]) -> None:
    expected = b"[" + b",".join(b"[" + b",".join(items) + b"]" for items in lists) + b"]"
    assert b"".join(json_list_pieces(lists)) == expected == join_json_lists(lists)


def test_a_page_with_unjoined_continuation_pages_stores_and_digests_as_one_with_them_joined() -> None:
    """The client hands over the continuation pages unjoined, as pieces (a replay's batches never need
    them joined); the outbox content and the batch's input digest are the same bytes as a stored
    page's, whose tails come back in one piece."""
    from erp_sync.pipeline import input_sha256

    bodies = [[b'{"data": [{"id": "il_2"}]}', b'{"data": [{"id": "il_3"}]}'], [b'{"data": []}']]
    unjoined = _page()
    unjoined.fetched_children = json_list_pieces(bodies)
    joined = _page(join_json_lists(bodies))
    assert b"".join(unjoined.fetched_children) == b"".join(joined.fetched_children)
    assert unjoined.stored_body() == joined.stored_body()
    assert unjoined.compressed(2) == joined.compressed(2)
    assert input_sha256([unjoined]) == input_sha256([joined])
    assert input_sha256([unjoined]) != input_sha256([_page()])


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
@pytest.mark.parametrize("child_pages", [True, False])
def test_a_damaged_envelope_is_refused(damage: Any, child_pages: bool) -> None:
    with pytest.raises(ValueError, match="damaged page envelope"):
        open_envelope(damage(envelope(BODY, b"[]", child_pages=child_pages)))
