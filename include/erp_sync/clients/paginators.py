"""Paginators as small strategies: given the request just made and its response, the next request
or None. They see the raw items of the page (events, not their objects) because that is what the
API's cursors refer to."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import urljoin

from erp_sync.clients.errors import MalformedResponseError
from erp_sync.clients.pages import dig
from erp_sync.clients.transport import HttpResponse
from erp_sync.streams.spec import PaginatorSpec


@dataclass(frozen=True)
class PageRequest:
    """One page's request: `url` absolute, `params` the query (empty when the URL carries it)."""

    url: str
    params: tuple[tuple[str, str], ...]

    def with_param(self, name: str, value: str) -> PageRequest:
        kept = tuple((k, v) for k, v in self.params if k != name)
        return replace(self, params=(*kept, (name, value)))


class Paginator(Protocol):
    def first(self, request: PageRequest) -> PageRequest:
        """Add the paging parameters to the first request."""
        ...

    def next(
        self, request: PageRequest, response: HttpResponse, payload: Any, items: list[Any]
    ) -> PageRequest | None:
        """The request for the following page, or None after the last one."""
        ...


class StripePaginator:
    """`limit` + `starting_after=<last id>` while `has_more` is true (Stripe lists)."""

    def __init__(self, spec: PaginatorSpec) -> None:
        self.spec = spec

    def first(self, request: PageRequest) -> PageRequest:
        return request.with_param(self.spec.limit_param, str(self.spec.page_size))

    def next(
        self, request: PageRequest, response: HttpResponse, payload: Any, items: list[Any]
    ) -> PageRequest | None:
        if dig(payload, self.spec.has_more_field) is not True or not items:
            return None
        last_id = next(
            (
                item["id"]
                for item in reversed(items)
                if isinstance(item, dict) and isinstance(item.get("id"), str)
            ),
            None,
        )
        if last_id is None:
            raise MalformedResponseError(f"{request.url}: has_more is true but no item on the page has an id")
        return request.with_param("starting_after", last_id)


class CursorPaginator:
    """An opaque cursor read from the body at `cursor_path` and sent back as `cursor_param`."""

    def __init__(self, spec: PaginatorSpec) -> None:
        self.spec = spec

    def first(self, request: PageRequest) -> PageRequest:
        return request.with_param(self.spec.limit_param, str(self.spec.page_size))

    def next(
        self, request: PageRequest, response: HttpResponse, payload: Any, items: list[Any]
    ) -> PageRequest | None:
        cursor = dig(payload, self.spec.cursor_path)
        if cursor is None or cursor == "" or not items:
            return None
        if not isinstance(cursor, str | int):
            raise MalformedResponseError(
                f"{request.url}: cursor at {self.spec.cursor_path!r} is not a string"
            )
        return request.with_param(self.spec.cursor_param, str(cursor))


class OffsetPaginator:
    """`offset`/`limit`: stop on a short page, or once the walk reaches the body's `total`.

    Plain offset paging over a filtered, sorted set skips rows when earlier rows leave the set
    between two requests (an order updated past `updated_before` mid-walk): every later row moves
    back and one lands just before the next offset. With `overlap` k, each next request starts k
    rows early and the walk resumes after the last row it had already seen (found by `id_field`),
    wherever that row now sits; when none of the last k rows is found (more than k rows moved),
    it steps back a page at a time until it is. Rows read twice are deduplicated by the load.
    """

    def __init__(self, spec: PaginatorSpec, id_field: str = "id") -> None:
        self.spec = spec
        self.id_field = id_field
        self._position = 0  # rows read without a gap, in the set's current numbering
        self._tail: list[Any] = []  # ids of the last `overlap` rows read

    def first(self, request: PageRequest) -> PageRequest:
        return self._at(request, 0, self.spec.page_size)

    def next(
        self, request: PageRequest, response: HttpResponse, payload: Any, items: list[Any]
    ) -> PageRequest | None:
        params = dict(request.params)
        offset = int(params.get(self.spec.offset_param, "0"))
        limit = int(params.get(self.spec.limit_param, str(self.spec.page_size)))
        if offset < self._position and self._tail and not self._finds_tail(items) and offset > 0:
            # More than `overlap` rows moved: back up a page and look for the seen rows again.
            self._position = max(0, offset - self.spec.page_size)
            return self._resume(request)
        self._position = offset + len(items)
        self._remember(items)
        raw_total = dig(payload, self.spec.total_path) if self.spec.total_path else None
        total = raw_total if isinstance(raw_total, int) and not isinstance(raw_total, bool) else None
        if len(items) < limit or (total is not None and self._position >= total):
            return None
        return self._resume(request)

    def _resume(self, request: PageRequest) -> PageRequest:
        start = max(0, self._position - self.spec.overlap)
        return self._at(request, start, self._position - start + self.spec.page_size)

    def _at(self, request: PageRequest, offset: int, limit: int) -> PageRequest:
        return request.with_param(self.spec.limit_param, str(limit)).with_param(
            self.spec.offset_param, str(offset)
        )

    def _finds_tail(self, items: list[Any]) -> bool:
        ids = {item.get(self.id_field) for item in items if isinstance(item, dict)}
        return any(seen in ids for seen in self._tail)

    def _remember(self, items: list[Any]) -> None:
        if not self.spec.overlap:
            return
        ids = [item.get(self.id_field) for item in items if isinstance(item, dict)]
        self._tail = [i for i in (*self._tail, *ids) if i is not None][-self.spec.overlap :]


_LINK_PART = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]+)*)")
_REL = re.compile(r'rel\s*=\s*"?([^";]+)"?', re.IGNORECASE)


def parse_link_header(value: str | None) -> dict[str, str]:
    """RFC 8288 (formerly 5988) `Link` header as {rel: url}; each space-separated rel is a key."""
    links: dict[str, str] = {}
    if not value:
        return links
    for match in _LINK_PART.finditer(value):
        url, params = match.group(1), match.group(2)
        rel = _REL.search(params)
        if rel:
            for name in rel.group(1).split():
                links.setdefault(name.lower(), url.strip())
    return links


class LinkHeaderPaginator:
    """Follow `Link: <...>; rel="next"` until it is absent. The next URL carries its own query."""

    def __init__(self, spec: PaginatorSpec) -> None:
        self.spec = spec

    def first(self, request: PageRequest) -> PageRequest:
        return request.with_param(self.spec.limit_param, str(self.spec.page_size))

    def next(
        self, request: PageRequest, response: HttpResponse, payload: Any, items: list[Any]
    ) -> PageRequest | None:
        target = parse_link_header(response.header("Link")).get("next")
        if not target:
            return None
        return PageRequest(url=urljoin(request.url, target), params=())


def make_paginator(spec: PaginatorSpec, id_field: str = "id") -> Paginator:
    kinds: dict[str, type[StripePaginator | CursorPaginator | OffsetPaginator | LinkHeaderPaginator]] = {
        "stripe": StripePaginator,
        "cursor": CursorPaginator,
        "offset": OffsetPaginator,
        "link_header": LinkHeaderPaginator,
    }
    if spec.kind == "offset":
        return OffsetPaginator(spec, id_field)
    try:
        return kinds[spec.kind](spec)
    except KeyError:
        raise ValueError(f"unknown paginator kind {spec.kind!r}") from None
