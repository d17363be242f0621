"""Each paginator strategy alone, then each driven end to end by the client over a fake transport."""

from __future__ import annotations

from typing import Any

import pytest
from client_fakes import BASE, Call, FakeTransport, json_response, objects, raw_response, stripe_list_handler

from erp_sync.clients.errors import MalformedResponseError
from erp_sync.clients.paginators import (
    CursorPaginator,
    LinkHeaderPaginator,
    OffsetPaginator,
    PageRequest,
    StripePaginator,
    make_paginator,
    parse_link_header,
)
from erp_sync.clients.transport import HttpResponse
from erp_sync.streams.spec import PaginatorSpec, StreamSpec

FIRST = PageRequest(url=f"{BASE}/v1/things", params=(("x", "1"),))
EMPTY = HttpResponse(200, b"{}", FIRST.url, {})


def stream(paginator: PaginatorSpec, selector: str = "data") -> StreamSpec:
    return StreamSpec(
        name="things",
        source_system="test",
        path="/v1/things",
        model="M",
        mapping="m",
        target_tables=("t",),
        paginator=paginator,
        record_selector=selector,
    )


class TestStripePaginator:
    def test_first_request_sends_limit(self) -> None:
        request = StripePaginator(PaginatorSpec("stripe", page_size=3)).first(FIRST)
        assert dict(request.params) == {"x": "1", "limit": "3"}

    def test_next_starts_after_last_id_while_has_more(self) -> None:
        paginator = StripePaginator(PaginatorSpec("stripe"))
        items = [{"id": "a"}, {"id": "b"}]
        nxt = paginator.next(FIRST, EMPTY, {"has_more": True, "data": items}, items)
        assert nxt is not None and dict(nxt.params)["starting_after"] == "b"

    def test_stops_when_has_more_is_false(self) -> None:
        paginator = StripePaginator(PaginatorSpec("stripe"))
        assert paginator.next(FIRST, EMPTY, {"has_more": False}, [{"id": "a"}]) is None

    def test_skips_items_without_id_when_choosing_the_cursor(self) -> None:
        items: list[Any] = [{"id": "a"}, {"no_id": 1}, "junk"]
        nxt = StripePaginator(PaginatorSpec("stripe")).next(FIRST, EMPTY, {"has_more": True}, items)
        assert nxt is not None and dict(nxt.params)["starting_after"] == "a"

    def test_has_more_without_any_id_is_malformed(self) -> None:
        with pytest.raises(MalformedResponseError):
            StripePaginator(PaginatorSpec("stripe")).next(FIRST, EMPTY, {"has_more": True}, [{"x": 1}])


class TestCursorPaginator:
    spec = PaginatorSpec("cursor", cursor_param="page_token", cursor_path="meta.next")

    def test_next_sends_the_body_cursor(self) -> None:
        nxt = CursorPaginator(self.spec).next(FIRST, EMPTY, {"meta": {"next": "abc"}}, [{"id": 1}])
        assert nxt is not None and dict(nxt.params)["page_token"] == "abc"

    @pytest.mark.parametrize("payload", [{"meta": {"next": None}}, {"meta": {"next": ""}}, {}])
    def test_stops_without_cursor(self, payload: dict[str, Any]) -> None:
        assert CursorPaginator(self.spec).next(FIRST, EMPTY, payload, [{"id": 1}]) is None


class TestOffsetPaginator:
    spec = PaginatorSpec("offset", page_size=2)

    def test_first_request_starts_at_zero(self) -> None:
        assert dict(OffsetPaginator(self.spec).first(FIRST).params) == {"x": "1", "limit": "2", "offset": "0"}

    def test_full_page_advances_offset(self) -> None:
        request = OffsetPaginator(self.spec).first(FIRST)
        nxt = OffsetPaginator(self.spec).next(request, EMPTY, {}, [{"id": 1}, {"id": 2}])
        assert nxt is not None and dict(nxt.params)["offset"] == "2"

    def test_short_page_stops(self) -> None:
        request = OffsetPaginator(self.spec).first(FIRST)
        assert OffsetPaginator(self.spec).next(request, EMPTY, {}, [{"id": 1}]) is None

    def test_total_reached_stops_without_an_empty_extra_page(self) -> None:
        request = OffsetPaginator(self.spec).first(FIRST).with_param("offset", "2")
        assert OffsetPaginator(self.spec).next(request, EMPTY, {"total": 4}, [{"id": 3}, {"id": 4}]) is None

    def test_overlap_rereads_the_tail_and_resumes_after_it(self) -> None:
        paginator = OffsetPaginator(PaginatorSpec("offset", page_size=2, overlap=1))
        first = paginator.first(FIRST)
        second = paginator.next(first, EMPTY, {"total": 6}, [{"id": 1}, {"id": 2}])
        assert second is not None and dict(second.params) == {"x": "1", "limit": "3", "offset": "1"}

    def test_rows_moving_more_than_the_overlap_make_the_walk_back_up(self) -> None:
        paginator = OffsetPaginator(PaginatorSpec("offset", page_size=2, overlap=1))
        second = paginator.next(paginator.first(FIRST), EMPTY, {}, [{"id": 1}, {"id": 2}])
        assert second is not None
        # the tail row (id 2) is not in the re-read window: back up a page and look again
        third = paginator.next(second, EMPTY, {}, [{"id": 5}, {"id": 6}, {"id": 7}])
        assert third is not None and dict(third.params) == {"x": "1", "limit": "2", "offset": "0"}


class TestLinkHeaderPaginator:
    def test_parses_rfc_8288_links(self) -> None:
        header = '<https://a.test/x?page=2>; rel="next", <https://a.test/x?page=9>; rel="last prev"'
        assert parse_link_header(header) == {
            "next": "https://a.test/x?page=2",
            "last": "https://a.test/x?page=9",
            "prev": "https://a.test/x?page=9",
        }

    def test_follows_next_relative_to_the_request(self) -> None:
        response = HttpResponse(200, b"{}", FIRST.url, {"link": '</v1/things?page=2>; rel="next"'})
        nxt = LinkHeaderPaginator(PaginatorSpec("link_header")).next(FIRST, response, {}, [{"id": 1}])
        assert nxt == PageRequest(url=f"{BASE}/v1/things?page=2", params=())

    def test_stops_without_next(self) -> None:
        response = HttpResponse(200, b"{}", FIRST.url, {"Link": '<https://a.test/x?page=1>; rel="prev"'})
        assert (
            LinkHeaderPaginator(PaginatorSpec("link_header")).next(FIRST, response, {}, [{"id": 1}]) is None
        )


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown paginator"):
        make_paginator(PaginatorSpec("nope"))  # type: ignore[arg-type]


# -- end to end through the client: every record exactly once, minimum number of requests ---------


def _ids(pages: list[Any]) -> list[str]:
    return [r["id"] for p in pages for r in p.records]


def run_full(make_client: Any, transport: FakeTransport, spec: StreamSpec) -> list[Any]:
    from datetime import UTC, datetime

    client = make_client(transport)
    return list(
        client.iter_pages(spec, mode="full", window_start=None, window_end=datetime(2027, 1, 1, tzinfo=UTC))
    )


def test_client_walks_a_stripe_list(make_client: Any) -> None:
    data = objects(5)
    transport = FakeTransport(stripe_list_handler(data, "/v1/things"))
    pages = run_full(make_client, transport, stream(PaginatorSpec("stripe", page_size=2)))
    assert _ids(pages) == [o["id"] for o in data]
    assert len(transport.calls) == 3


def test_client_walks_a_cursor_api(make_client: Any) -> None:
    data = objects(5)

    def handle(call: Call) -> HttpResponse:
        start = int(call.param("cursor") or 0)
        nxt = start + 2 if start + 2 < len(data) else None
        return json_response({"items": data[start : start + 2], "next_cursor": nxt})

    transport = FakeTransport(handle)
    pages = run_full(make_client, transport, stream(PaginatorSpec("cursor", page_size=2), selector="items"))
    assert _ids(pages) == [o["id"] for o in data]
    assert len(transport.calls) == 3


@pytest.mark.parametrize(
    ("n", "with_total", "expected_requests"), [(5, False, 3), (4, False, 3), (4, True, 2)]
)
def test_client_walks_an_offset_api(
    make_client: Any, n: int, with_total: bool, expected_requests: int
) -> None:
    data = objects(n)

    def handle(call: Call) -> HttpResponse:
        offset, limit = int(call.param("offset") or 0), int(call.param("limit") or 0)
        body: dict[str, Any] = {"data": data[offset : offset + limit]}
        if with_total:
            body["total"] = len(data)
        return json_response(body)

    transport = FakeTransport(handle)
    pages = run_full(make_client, transport, stream(PaginatorSpec("offset", page_size=2)))
    assert _ids(pages) == [o["id"] for o in data]
    assert len(transport.calls) == expected_requests


def test_client_walks_link_headers(make_client: Any) -> None:
    data = objects(5)

    def handle(call: Call) -> HttpResponse:
        page = (
            int(dict(call.params).get("page", "0"))
            if "page=" not in call.url
            else int(call.url.split("page=")[1])
        )
        chunk = data[page * 2 : page * 2 + 2]
        headers = (
            {"Link": f'<{BASE}/v1/things?page={page + 1}>; rel="next"'} if page * 2 + 2 < len(data) else {}
        )
        return raw_response(json_response({"data": chunk}).body, headers=headers)

    transport = FakeTransport(handle)
    pages = run_full(make_client, transport, stream(PaginatorSpec("link_header", page_size=2)))
    assert _ids(pages) == [o["id"] for o in data]
    assert len(transport.calls) == 3
    assert transport.calls[1].params == []  # the next URL carries its own query


@pytest.mark.parametrize("removed_per_page", [1, 2, 3, 5])
def test_offset_walk_loses_nothing_when_rows_leave_the_set_mid_walk(
    make_client: Any, removed_per_page: int
) -> None:
    """Rows 0..39 sorted; before every page after the first, the lowest rows not yet removed leave the
    set (updated past the window end). Plain offset paging would skip the rows that slide back."""
    rows = [{"id": f"o{i}"} for i in range(40)]
    removed: set[str] = set()
    served = {"n": 0}

    def handle(call: Call) -> HttpResponse:
        served["n"] += 1
        if served["n"] > 1:
            for row in [r for r in rows if r["id"] not in removed][:removed_per_page]:
                removed.add(row["id"])
        live = [r for r in rows if r["id"] not in removed]
        offset, limit = int(call.param("offset") or 0), int(call.param("limit") or 0)
        return json_response({"data": live[offset : offset + limit], "total": len(live)})

    transport = FakeTransport(handle)
    spec = stream(PaginatorSpec("offset", page_size=5, overlap=3))
    seen = set(_ids(run_full(make_client, transport, spec)))
    assert {r["id"] for r in rows} - removed <= seen


def test_plain_offset_paging_would_skip_rows_that_slide_back(make_client: Any) -> None:
    rows = [{"id": f"o{i}"} for i in range(10)]

    def handle(call: Call) -> HttpResponse:
        offset, limit = int(call.param("offset") or 0), int(call.param("limit") or 0)
        page = rows[offset : offset + limit]
        if offset == 0:
            del rows[0]  # after the first page, o0 leaves the set; o2 slides to offset 1
        return json_response({"data": page})

    pages = run_full(make_client, FakeTransport(handle), stream(PaginatorSpec("offset", page_size=2)))
    assert "o2" not in _ids(pages)  # why orders declare an overlap


def test_a_walk_does_not_keep_the_requests_of_the_pages_it_has_read(make_client: Any) -> None:
    """Memory stays flat over a long walk: the loop check keeps each request's hash, not the request
    (a million invoices are 10,000 pages)."""
    import gc

    data = objects(300, prefix="thing")
    serve = stripe_list_handler(data, "/v1/things")
    live_at_the_last_page: list[int] = []

    def handle(call: Call) -> HttpResponse:
        if call.param("starting_after") == "thing_298":
            gc.collect()
            live_at_the_last_page.append(sum(type(o) is PageRequest for o in gc.get_objects()))
        return serve(call)

    pages = run_full(make_client, FakeTransport(handle), stream(PaginatorSpec("stripe", page_size=1)))
    assert len(pages) == 300
    assert live_at_the_last_page and live_at_the_last_page[0] < 10, live_at_the_last_page


def test_a_paginator_loop_fails_instead_of_spinning(make_client: Any) -> None:
    from erp_sync.clients.errors import FatalApiError

    transport = FakeTransport(lambda call: json_response({"data": [{"id": "a"}], "next_cursor": "same"}))
    with pytest.raises(FatalApiError, match="already read"):
        run_full(make_client, transport, stream(PaginatorSpec("cursor", page_size=1)))
