"""The SaaS HTTP client: pages a stream's list or delta endpoint and yields `Page`s.

One request path (`_call`) holds every network rule: rate budget, auth headers, timeout, retry
policy, 401 refresh, fatal-error messages. Everything else is declarative: the `StreamSpec` says
which endpoint, which paginator, which incremental strategy and which child lists to complete.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import orjson

from erp_sync.clients.auth import AuthStrategy
from erp_sync.clients.errors import (
    AuthenticationError,
    FatalApiError,
    MalformedResponseError,
    NoByIdLookupError,
    RetriableError,
    RetriableHttpError,
    RetryExhaustedError,
    UnconfirmedNotFoundError,
)
from erp_sync.clients.pages import (
    CHILD_PAGE_SHAPE,
    Mode,
    decoded_records,
    drop_superseded,
    list_decoder,
    navigation_decoder,
    page_meta_for,
    page_selector,
    parse_json_body,
    select_items,
    select_records,
    shape_decoder,
    tail_items,
    truncated_child_lists,
    uses_events,
    whole_records,
)
from erp_sync.clients.paginators import OffsetPaginator, PageRequest, StripePaginator, make_paginator
from erp_sync.clients.ratelimit import RateLimiter
from erp_sync.clients.retry import RetryPolicy, parse_retry_after
from erp_sync.clients.transport import HttpResponse, Transport, Urllib3Transport
from erp_sync.core.batch import Page, json_list_pieces
from erp_sync.core.batching import ReadAhead
from erp_sync.core.tombstones import LookupAnswer
from erp_sync.streams.spec import ChildListSpec, GoneAnswerSpec, PaginatorSpec, StreamSpec

log = logging.getLogger(__name__)

T = TypeVar("T")
_Tail = tuple[list[Any], list[bytes]]  # a child list's tail items, and the bodies they came in
# A listed page: its request, response, decoded items, whether it is the last, whether it was
# decoded for navigation only.
_Listed = tuple[PageRequest, HttpResponse, list[Any], bool, bool]
_Decoder = Callable[[str, bytes], Any]
CHILD_PAGE_SIZE = 100  # Stripe's maximum `limit`
SLICE_READ_AHEAD = 4  # pages a slice's walk may read before the consumer reaches that slice


@dataclass
class ClientStats:
    """Counters for one `iter_pages` call (token requests included in `requests`)."""

    pages: int = 0
    records: int = 0
    problems: int = 0
    requests: int = 0
    retries: int = 0
    rate_limit_waits: int = 0
    wait_seconds: float = 0.0  # time spent waiting for the rate budget
    backoff_seconds: float = 0.0  # time spent waiting between retries
    child_requests: int = 0
    slices: int = 1  # walks the window was cut into (`window_slices`; 1: one walk)
    started: float = field(default_factory=time.monotonic, repr=False)
    finished: float | None = field(default=None, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    @property
    def elapsed(self) -> float:
        return (self.finished if self.finished is not None else self.clock()) - self.started

    @property
    def records_per_s(self) -> float:
        elapsed = self.elapsed
        return self.records / elapsed if elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "pages": self.pages,
            "records": self.records,
            "problems": self.problems,
            "requests": self.requests,
            "retries": self.retries,
            "rate_limit_waits": self.rate_limit_waits,
            "wait_seconds": round(self.wait_seconds, 3),
            "backoff_seconds": round(self.backoff_seconds, 3),
            "elapsed": round(self.elapsed, 3),
            "records_per_s": round(self.records_per_s, 1),
            "slices": self.slices,
        }

    def line(self) -> str:
        return (
            f"pages={self.pages} records={self.records} problems={self.problems} requests={self.requests} "
            f"retries={self.retries} rate_limit_waits={self.rate_limit_waits} "
            f"waited={self.wait_seconds + self.backoff_seconds:.1f}s elapsed={self.elapsed:.1f}s "
            f"records/s={self.records_per_s:.1f}" + (f" slices={self.slices}" if self.slices > 1 else "")
        )


ProgressCallback = Callable[[str, ClientStats], None]


def log_progress(stream: str, stats: ClientStats) -> None:
    log.info("extract %s: %s", stream, stats.line())


class SaaSClient:
    """Reads streams from one SaaS API: one listing (`iter_pages`) at a time per client.

    Its requests are thread-safe (rate budget, token, connection pool, counters): child lists and
    `get_record` may be called from other threads while a listing runs; their requests then count
    in that listing's `stats`."""

    def __init__(
        self,
        base_url: str,
        auth: AuthStrategy,
        *,
        timeout: tuple[float, float] = (5, 30),
        ca_bundle: str | None = None,
        retry: RetryPolicy | None = None,
        rate_limiter: RateLimiter | None = None,
        transport: Transport | None = None,
        progress: ProgressCallback | None = None,
        progress_interval_s: float = 5.0,
        page_size: int | None = None,
        child_concurrency: int = 4,
        window_slices: int = 1,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not base_url.startswith(("https://", "http://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.timeout = (float(timeout[0]), float(timeout[1]))
        self.retry = retry or RetryPolicy()
        self.rate_limiter = rate_limiter
        self.child_concurrency = max(1, child_concurrency)
        if isinstance(window_slices, bool) or not isinstance(window_slices, int) or window_slices < 1:
            raise ValueError(f"window_slices must be a positive integer, got {window_slices!r}")
        self.window_slices = window_slices
        # A pooled connection for each child-list thread and each slice's walk, plus one spare.
        self.transport: Transport = transport or Urllib3Transport(
            ca_bundle=ca_bundle, pool_size=self.child_concurrency + self.window_slices + 1
        )
        self.progress = progress or log_progress
        self.progress_interval_s = progress_interval_s
        self.page_size = page_size
        self._clock = clock
        self._wall_clock = wall_clock
        self.stats = ClientStats(clock=clock, started=clock())
        self._stream = ""
        self._last_progress = clock()
        self._stats_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.page_meta: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"SaaSClient(base_url={self.base_url!r}, auth={self.auth!r})"

    # ------------------------------------------------------------------ pages

    def iter_pages(
        self,
        spec: StreamSpec,
        *,
        mode: Literal["full", "incremental"],
        window_start: datetime | None,
        window_end: datetime,
        record_fields: Collection[str] | None = None,
        records_needed: Callable[[], bool] | None = None,
    ) -> Iterator[Page]:
        """Yield the stream's pages for `[window_start, window_end)`, lazily.

        One request at a time, or (`window_slices` > 1, a listing by `created` with a start) one walk
        per slice of the window in its threads, the pages still yielded in one walk's order.

        full: `spec.path` filtered by created window, every record versioned with the listing's
        start time; incremental: Stripe events (record = `data.object`, version = event `created`)
        or `updated_since` (version = the record's update field).

        Records hold only what the stream's model reads (and what the client reads itself), decoded
        without building the rest (`list_decoder`); `Page.whole_record` decodes a
        record whole again, for a rejection. `record_fields`: a reader that needs only these top-level
        fields (the reconciliation's header re-read) gets just them. `Page.body` is the raw body.

        `records_needed`, asked before each listing request: False decodes that page for navigation
        only (`navigation_decoder`; its records then hold only their keys, versions and child-list
        ids until `Page.decode_records`). The pipeline says False while its batches are found
        committed (a replay), where nothing reads the records.
        """
        for name, value in (("window_start", window_start), ("window_end", window_end)):
            if value is not None and value.utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware")
        if mode not in ("full", "incremental"):
            raise ValueError(f"mode must be 'full' or 'incremental', got {mode!r}")
        effective_mode = _effective_mode(spec, mode)
        self.stats = ClientStats(clock=self._clock, started=self._clock())
        self._stream = spec.name
        self._last_progress = self._clock()
        default_version = int(self._wall_clock().timestamp()) if effective_mode == "full" else None
        # What the loader stores beside each outbox page so restore can rebuild it (page_from_body).
        self.page_meta = page_meta_for(effective_mode, default_version)
        if window_start is not None and window_start >= window_end:
            log.info(
                "extract %s: empty window [%s, %s), nothing to read", spec.name, window_start, window_end
            )
            return
        selector = page_selector(spec, effective_mode)
        decode = list_decoder(spec, effective_mode, record_fields)
        narrow = decode is not parse_json_body
        navigate = navigation_decoder(spec, effective_mode) if records_needed is not None else None

        def decoder() -> tuple[_Decoder, bool]:
            if navigate is not None and records_needed is not None and not records_needed():
                return navigate, True
            return decode, False

        def walk(start: datetime | None, end: datetime) -> Generator[_Listed, None, None]:
            return self._walk(
                spec, effective_mode, self._first_request(spec, effective_mode, start, end), selector, decoder
            )

        # The keys an event listing met so far: the newest snapshot of each record (drop_superseded).
        keys_met: set[str] | None = set() if uses_events(spec, effective_mode) else None
        page_no = 0
        with ExitStack() as running:
            for request, response, items, _, navigation in self._walks(
                spec, effective_mode, window_start, window_end, walk, running
            ):
                page_no += 1
                yield self._page(
                    spec,
                    effective_mode,
                    default_version,
                    page_no,
                    (request, response, items),
                    narrow,
                    keys_met,
                    decode if navigation else None,
                )
        self.stats.finished = self._clock()
        self.progress(spec.name, self.stats)

    def slices_of(
        self, spec: StreamSpec, mode: Mode, start: datetime | None, end: datetime
    ) -> list[tuple[datetime | None, datetime]]:
        """The window cut into up to `window_slices` equal spans of `created`, newest first.

        Only listings filtered by `created` are cut (the full listing and Stripe events; not an
        `updated_since` walk), and only a window with a start. Inner bounds are whole seconds, as the
        API's `created` filters are; the outer ones stay the window's own.
        """
        mode = _effective_mode(spec, mode)
        if self.window_slices == 1 or start is None or not (mode == "full" or uses_events(spec, mode)):
            return [(start, end)]
        low, high = _unix(start), _unix(end)
        count = min(self.window_slices, high - low)
        if count <= 1:
            return [(start, end)]
        inner = [datetime.fromtimestamp(low + (high - low) * i // count, UTC) for i in range(1, count)]
        bounds = [start, *inner, end]
        return [(bounds[i], bounds[i + 1]) for i in reversed(range(count))]

    def _walks(
        self,
        spec: StreamSpec,
        mode: Mode,
        start: datetime | None,
        end: datetime,
        walk: Callable[[datetime | None, datetime], Generator[_Listed, None, None]],
        running: ExitStack,
    ) -> Iterator[_Listed]:
        """The window's listed pages in one walk's order: one walk, or one per slice (`slices_of`).

        A window that fits one page is read as one page: the first page of the whole window is read
        first, and only when the API says there is more is that page set aside and the window read
        again in slices, each walk in its own thread (`running` stops them), taken newest slice first.
        """
        slices = self.slices_of(spec, mode, start, end)
        whole = walk(start, end)
        if len(slices) == 1:
            yield from whole
            return
        first = next(whole, None)
        if first is None or first[3]:
            yield from ([first] if first is not None else [])
            return
        whole.close()
        self.stats.slices = len(slices)
        walks = [
            running.enter_context(ReadAhead(walk(*bounds), SLICE_READ_AHEAD, name=f"{spec.name}-slice-{i}"))
            for i, bounds in enumerate(slices)
        ]
        for sliced in walks:
            yield from sliced

    def _walk(
        self,
        spec: StreamSpec,
        mode: Mode,
        first: PageRequest,
        selector: str,
        decoder: Callable[[], tuple[_Decoder, bool]],
    ) -> Generator[_Listed, None, None]:
        """One paginated walk: each page's request, response, decoded items, whether it is the
        last and whether it was decoded for navigation only (`decoder`, asked for each page), in the
        API's order."""
        paginator = make_paginator(self._paginator_spec(spec, mode), spec.primary_key)
        request: PageRequest | None = paginator.first(first)
        # The requests read so far, by hash: keeping the requests themselves held ~700 bytes a page for
        # the whole walk (the sync's RSS creep, ~7 MB per million invoices). A 64-bit hash taken for a
        # loop by chance is ~1e-10 likely after 50,000 pages.
        requested: set[int] = set()
        while request is not None:
            if hash(request) in requested and not isinstance(paginator, OffsetPaginator):
                # An offset walk may repeat a request after backing up (see OffsetPaginator).
                raise FatalApiError(request.url, None, "paginator returned a page already read (loop)")
            requested.add(hash(request))
            decode, navigation = decoder()
            response, payload, items = self._call(
                "GET",
                request.url,
                request.params,
                parse=functools.partial(self._parse_list, selector=selector, decode=decode),
            )
            following = paginator.next(request, response, payload, items)
            yield request, response, items, following is None, navigation
            request = following

    def _page(
        self,
        spec: StreamSpec,
        mode: Mode,
        default_version: int | None,
        page_no: int,
        listed: tuple[PageRequest, HttpResponse, list[Any]],
        narrow: bool,
        keys_met: set[str] | None,
        model_decode: _Decoder | None,
    ) -> Page:
        """Select the page's records, drop older snapshots (`keys_met`: the event listing's keys so
        far), complete the child lists of the rest, count them. `model_decode`: the page was decoded
        for navigation only; its records are decoded with this when they are read
        (`Page.decode_records`).

        The body is the exact bytes received; when child lists were completed, the page's stored
        body (`Page.stored_body`, what the outbox keeps) is that body with the fetched tails, in an
        envelope `page_from_body` opens. Narrow items select exactly as whole ones (the shape keeps
        what selection reads); the problems of a narrow page are taken from the whole items.
        """
        request, response, items = listed
        selection = select_records(spec, items, mode=mode, default_version=default_version)
        url = _page_url(request)
        problems = selection.problems
        if narrow and problems:
            whole_items = select_items(url, parse_json_body(url, response.body), page_selector(spec, mode))
            problems = select_records(spec, whole_items, mode=mode, default_version=default_version).problems
        met_before: frozenset[str] | None = None  # what a narrow page's rebuild must drop again
        superseded = 0
        if keys_met is not None:
            if narrow:
                met_before = frozenset(
                    key for key in (str(r[spec.primary_key]) for r in selection.records) if key in keys_met
                )
            superseded = drop_superseded(spec, selection, keys_met)
        child_bodies = self._complete_children(spec, selection.records, navigation=model_decode is not None)
        meta = page_meta_for(mode, default_version)
        page = Page(
            stream=spec.name,
            page_no=page_no,
            url=url,
            body=response.body,
            records=selection.records,
            versions=selection.versions,
            problems=problems,
            superseded=superseded,
            deleted_ids=selection.deleted_ids(spec.primary_key),
            fetched_at=self._wall_clock(),
            fetched_children=json_list_pieces(child_bodies) if child_bodies else (),
            rebuild_whole=functools.partial(whole_records, spec, url, meta, met_before) if narrow else None,
            rebuild_records=(
                functools.partial(decoded_records, spec, url, meta, met_before, model_decode)
                if model_decode is not None
                else None
            ),
        )
        self._count(pages=1, records=len(page.records) + page.superseded, problems=len(page.problems))
        for problem in page.problems:
            log.warning(
                "extract %s: rejected record (%s): %s", spec.name, problem.reason_code, problem.message
            )
        self._maybe_report()
        return page

    def _paginator_spec(self, spec: StreamSpec, mode: Mode) -> PaginatorSpec:
        if uses_events(spec, mode):
            base = PaginatorSpec("stripe")  # /v1/events is always a Stripe list
            return replace(base, page_size=self.page_size or spec.paginator.page_size)
        if self.page_size:
            return replace(spec.paginator, page_size=self.page_size)
        return spec.paginator

    def _first_request(
        self, spec: StreamSpec, mode: Mode, window_start: datetime | None, window_end: datetime
    ) -> PageRequest:
        params: list[tuple[str, str]] = list(spec.extra_params)
        if uses_events(spec, mode):
            path = spec.incremental.events_path
            params = [("types[]", event_type) for event_type in spec.incremental.event_types]
            if window_start is not None:
                params.append(("created[gte]", str(_unix(window_start))))
            params.append(("created[lt]", str(_unix(window_end))))
        elif mode == "incremental":  # updated_since
            path = spec.path
            if window_start is not None:
                params.append((spec.incremental.since_param, _iso(window_start)))
            params.append((spec.incremental.until_param, _iso(window_end)))
        else:
            path = spec.path
            fmt = spec.full_refresh.timestamp_format
            if window_start is not None:
                params.append((spec.full_refresh.created_gte_param, _stamp(window_start, fmt)))
            params.append((spec.full_refresh.created_lt_param, _stamp(window_end, fmt)))
        return PageRequest(url=self._url(path), params=tuple(params))

    def _parse_list(
        self, response: HttpResponse, selector: str, decode: Callable[[str, bytes], Any] = parse_json_body
    ) -> tuple[HttpResponse, Any, list[Any]]:
        endpoint = _endpoint(response.url)
        payload = decode(endpoint, response.body)
        return response, payload, select_items(endpoint, payload, selector)

    # --------------------------------------------------------------- children

    def get_record(self, spec: StreamSpec, source_id: str) -> dict[str, Any] | None:
        """GET the stream's by-id path (`spec.record_path`, by default `{path}/{id}`) with the client's
        retry, rate and auth policies, children completed like a listing's; None when the API says the
        record does not exist (a 404 with an error code of `spec.gone_answer`, by default Stripe's
        `resource_missing`).

        Read as `lookup_record` reads it. A 404 without such a code (a wrong base URL or path: Stripe's
        "Unrecognized request URL", a proxy's page, an API without that code) raises
        `UnconfirmedNotFoundError` (a `FatalApiError`) naming the URL: it does not say the record is
        missing. A stream that declares no by-id path raises `NoByIdLookupError`, sending nothing."""
        answer = self.lookup_record(spec, source_id)
        if answer.record is None:
            if answer.says_gone:
                return None
            raise _unconfirmed_404(self._record_url(spec, source_id), answer)
        record = dict(answer.record)
        self._complete_children(spec, [record])
        return record

    def lookup_record(self, spec: StreamSpec, source_id: str) -> LookupAnswer:
        """GET the stream's by-id path for the repair's tombstones (ADR 0020) and `get_record`: the
        record as answered (its child lists not completed), or a 404 with the API's error code (read at
        `spec.gone_answer.code_path`), which says whether the record is gone (one of the spec's gone
        codes) or the URL is wrong. Every other failure raises, as elsewhere (`NoByIdLookupError`,
        before any request, when there is no by-id path)."""
        url = self._record_url(spec, source_id)
        response, record = self._call("GET", url, (), parse=_record_or_error, pass_client_errors=True)
        if response.status == 404:
            return LookupAnswer(
                source_id,
                404,
                error_code=_api_code(response, spec.gone_answer),
                message=_api_message(response),
                gone_codes=spec.gone_answer.codes,
            )
        if response.status >= 300:
            raise FatalApiError(f"GET {_endpoint(url)}", response.status, _api_message(response))
        return LookupAnswer(source_id, response.status, record=record)

    def _complete_children(
        self, spec: StreamSpec, records: list[dict[str, Any]], *, navigation: bool = False
    ) -> list[list[bytes]]:
        """Complete every truncated child list of the page in place (fetching the tails with up to
        `child_concurrency` requests in flight); returns, per completed list, the bodies of its
        continuation pages as received (empty: none was truncated). Each parent's tail is fetched:
        a walk meets a record once (an event listing's older snapshots are dropped before this,
        ADR 0013). `navigation`: the tails' items are decoded to their ids only, as the records are."""
        decode = _CHILD_NAVIGATION if navigation else parse_json_body
        pending = [
            (embedded, self._child_fetch(child, str(record[spec.primary_key]), embedded, decode))
            for child, record, embedded in truncated_child_lists(spec, records)
        ]
        fetched = self._run_child_jobs([fetch for _, fetch in pending])
        for (embedded, _), (tail, _) in zip(pending, fetched, strict=True):
            embedded["data"].extend(tail)
            embedded["has_more"] = False
        return [bodies for _, bodies in fetched]

    def _child_fetch(
        self, child: ChildListSpec, parent_id: str, embedded: dict[str, Any], decode: _Decoder
    ) -> Callable[[], _Tail]:
        head = embedded.get("data")
        if not isinstance(head, list):
            raise MalformedResponseError(f"{child.field} of {parent_id} has has_more but no data list")
        head_copy = list(head)
        return lambda: self._fetch_child_tail(child, parent_id, head_copy, decode)

    def _run_child_jobs(self, jobs: list[Callable[[], _Tail]]) -> list[_Tail]:
        if self.child_concurrency == 1 or len(jobs) <= 1:
            return [fetch() for fetch in jobs]
        pool = self._child_pool()
        futures = [pool.submit(fetch) for fetch in jobs]
        return [future.result() for future in futures]

    def _child_pool(self) -> ThreadPoolExecutor:
        """One pool for the client's life (not one per page: a million-invoice walk has 10,000
        pages with truncated line lists); its idle threads end with `close()` or the process."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.child_concurrency, thread_name_prefix="child-lists")
        return self._pool

    def _fetch_child_tail(
        self, child: ChildListSpec, parent_id: str, head: list[Any], decode: _Decoder
    ) -> _Tail:
        """The child items after the embedded head, from the child endpoint (Stripe list paging),
        and the bodies of the pages they came in, as received (what the stored page keeps)."""
        paginator = StripePaginator(PaginatorSpec("stripe", page_size=CHILD_PAGE_SIZE))
        request: PageRequest | None = paginator.first(
            PageRequest(url=self._url(child.path_template.format(id=parent_id)), params=())
        )
        last_id = next(
            (i["id"] for i in reversed(head) if isinstance(i, dict) and isinstance(i.get("id"), str)), None
        )
        if request is not None and last_id is not None:
            request = request.with_param("starting_after", last_id)
        payloads: list[Any] = []
        bodies: list[bytes] = []
        while request is not None:
            response, payload, items = self._call(
                "GET", request.url, request.params, parse=lambda r: self._parse_list(r, "data", decode)
            )
            self._count(child_requests=1)
            payloads.append(payload)
            bodies.append(response.body)
            request = paginator.next(request, response, payload, items)
        return tail_items(head, payloads), bodies

    # ---------------------------------------------------------------- request

    def _record_url(self, spec: StreamSpec, source_id: str) -> str:
        """The stream's declared by-id path (`StreamSpec.record_path`) for one id."""
        if spec.record_path is None:
            raise NoByIdLookupError(spec.name)
        return self._url(spec.record_path.format(path=spec.path.rstrip("/"), id=quote(source_id, safe="")))

    def _url(self, path: str) -> str:
        if path.startswith(("https://", "http://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def _fetch_token(self, url: str, form: Mapping[str, str], headers: Mapping[str, str]) -> HttpResponse:
        """Token endpoint POST for OAuth2: same timeouts, TLS and retries; 4xx come back to the auth."""
        return self._call(
            "POST",
            url,
            (),
            data=form,
            extra_headers=headers,
            authed=False,
            parse=lambda r: r,
            pass_client_errors=True,
        )

    def _call(
        self,
        method: str,
        url: str,
        params: tuple[tuple[str, str], ...],
        *,
        parse: Callable[[HttpResponse], T],
        data: Mapping[str, str] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        authed: bool = True,
        pass_client_errors: bool = False,
    ) -> T:
        """One logical request with the whole retry policy around it; `parse` runs inside the loop so
        a malformed body is retried like a 5xx (a few times, then fatal, naming the endpoint)."""
        endpoint = f"{method} {_endpoint(url)}"
        started = self._clock()
        attempt = 0
        malformed = 0
        refreshed = False
        last_status: int | None = None
        while True:
            attempt += 1
            try:
                self._take_rate_token()
                headers = {"Accept": "application/json", "User-Agent": "saas-erp-sync/0.1"}
                if extra_headers:
                    headers.update(extra_headers)
                if authed:
                    headers.update(self.auth.headers(self._fetch_token))
                self._count(requests=1)
                response = self.transport.send(
                    method, url, params=params, headers=headers, data=data, timeout=self.timeout
                )
                last_status = response.status
                if response.status == 401 and authed:
                    if not refreshed and self.auth.on_unauthorized():
                        log.info("%s: 401, refreshing credentials once", endpoint)
                        refreshed = True
                        attempt -= 1  # a refresh is not a failure of the API
                        continue
                    raise AuthenticationError(
                        endpoint, 401, _api_message(response) + " (credentials refused)"
                    )
                self._raise_for_status(endpoint, response, pass_client_errors)
                result = parse(response)
                if authed:
                    self.auth.on_success()
                return result
            except MalformedResponseError as exc:
                malformed += 1
                if malformed >= self.retry.malformed_attempts:
                    raise FatalApiError(
                        endpoint, last_status, f"malformed response {malformed} times in a row: {exc}"
                    ) from exc
                delay = self.retry.delay(attempt)
                failure: Exception = exc
            except RetriableError as exc:
                delay = self.retry.delay(attempt, exc.retry_after)
                failure = exc
            if not self.retry.may_retry(attempt, started, delay):
                raise RetryExhaustedError(
                    endpoint, last_status, f"gave up after {attempt} attempts: {failure}"
                ) from failure
            log.info("%s: attempt %d failed (%s); retrying in %.2fs", endpoint, attempt, failure, delay)
            self._count(retries=1, backoff_seconds=delay)
            self.retry.sleep(delay)
            self._maybe_report()

    def _raise_for_status(self, endpoint: str, response: HttpResponse, pass_client_errors: bool) -> None:
        """429/5xx: retriable (with the server's Retry-After); other non-2xx: fatal with the API's
        own message, except 4xx the caller wants to read itself (the OAuth token endpoint)."""
        if self.retry.is_retriable_status(response.status):
            raise RetriableHttpError(
                endpoint,
                response.status,
                _api_message(response),
                retry_after=parse_retry_after(response.header("Retry-After")),
            )
        if response.status >= 300 and not (pass_client_errors and 400 <= response.status < 500):
            raise FatalApiError(endpoint, response.status, _api_message(response))

    def _take_rate_token(self) -> None:
        if self.rate_limiter is None:
            return
        while True:
            wait = self.rate_limiter.try_acquire()
            if wait <= 0:
                return
            self._count(rate_limit_waits=1, wait_seconds=wait)
            self.retry.sleep(wait)

    def _count(self, **increments: float) -> None:
        with self._stats_lock:
            for name, value in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + value)

    def _maybe_report(self) -> None:
        with self._stats_lock:
            now = self._clock()
            if now - self._last_progress < self.progress_interval_s:
                return
            self._last_progress = now
        self.progress(self._stream, self.stats)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        close = getattr(self.transport, "close", None)
        if callable(close):
            close()


_CHILD_NAVIGATION = shape_decoder("data", CHILD_PAGE_SHAPE)


def _api_message(response: HttpResponse) -> str:
    """The API's own error text (Stripe: error.message; others: message/error/detail), else a snippet."""
    try:
        payload = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        for key in ("message", "error_description", "error", "detail"):
            if isinstance(payload.get(key), str):
                return str(payload[key])
    snippet = response.body[:200].decode("utf-8", "replace").strip()
    return snippet or "(empty body)"


def _record_or_error(response: HttpResponse) -> tuple[HttpResponse, dict[str, Any] | None]:
    """A 2xx body as the JSON object it must be (else malformed: retried like a 5xx), or no record."""
    if response.status >= 300:
        return response, None
    try:
        record = orjson.loads(response.body)
    except orjson.JSONDecodeError as exc:
        raise MalformedResponseError(f"record body is not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise MalformedResponseError(f"expected a JSON object, got {type(record).__name__}")
    return response, record


def _unconfirmed_404(url: str, answer: LookupAnswer) -> UnconfirmedNotFoundError:
    """A by-id 404 that does not say the record is missing (none of the stream's gone codes)."""
    code = f"error code {answer.error_code!r}" if answer.error_code else "no error code"
    wanted = " or ".join(repr(gone) for gone in answer.gone_codes)
    return UnconfirmedNotFoundError(
        f"GET {url}",
        404,
        f"{answer.message} ({code}, not {wanted}: the 404 does not say the record is missing,"
        " so the base URL or the stream's path may be wrong)",
    )


def _api_code(response: HttpResponse, gone_answer: GoneAnswerSpec) -> str | None:
    """The API's error code where the stream says it is (Stripe: error.code, e.g. `resource_missing`),
    when the body gives one."""
    try:
        payload = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return None
    return gone_answer.code_in(payload)


def _effective_mode(spec: StreamSpec, mode: str) -> Mode:
    """A stream without an incremental strategy is always read in full."""
    return "incremental" if mode == "incremental" and spec.incremental.kind != "none" else "full"


def _endpoint(url: str) -> str:
    return url.split("?", 1)[0]


def _page_url(request: PageRequest) -> str:
    if not request.params:
        return request.url
    from urllib.parse import urlencode

    joiner = "&" if "?" in request.url else "?"
    return request.url + joiner + urlencode(request.params)


def _unix(value: datetime) -> int:
    return int(value.timestamp())


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _stamp(value: datetime, fmt: str) -> str:
    return str(_unix(value)) if fmt == "unix" else _iso(value)
