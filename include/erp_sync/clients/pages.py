"""Turning one raw response body into a `Page`: JSON parsing, record selection, versions, problems.

The client and restore-from-backup share this code, so a page rebuilt from its stored bytes holds
exactly the records (and versions) the client yielded the night it was read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from erp_sync.clients.errors import MalformedResponseError
from erp_sync.core.batch import Page, Rejection, open_envelope
from erp_sync.core.models import resolve
from erp_sync.core.shape import Shape, model_shape
from erp_sync.streams.spec import StreamSpec

Mode = Literal["full", "incremental"]
EVENTS_SELECTOR = "data"


def parse_json_body(endpoint: str, body: bytes) -> Any:
    """The body as JSON, or `MalformedResponseError` naming the endpoint (HTML, truncated, empty...)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        snippet = body[:80].decode("utf-8", "replace").replace("\n", " ")
        raise MalformedResponseError(
            f"{endpoint}: body is not JSON ({exc}); starts with {snippet!r}"
        ) from None


def shape_decoder(selector: str, shape: Shape) -> Callable[[str, bytes], Any]:
    """A list-page decoder that builds, of each record under `selector`, only what `shape` names.

    `parse_json_body` builds every field of every record as Python objects; the page is parsed in
    pydantic-core instead and only the shape's fields are materialised (a 100-invoice Stripe page:
    1.3 ms against orjson's 2.3 ms, and fewer objects to free). The envelope's other keys
    (`has_more`, cursors) are kept whole; a value that does not have the shape's type (an item that
    is not an object, a list that is a string) is kept as it is, so record selection and validation
    still reject it. Not JSON, or no list under `selector`: the same `MalformedResponseError` as
    `parse_json_body`.
    """
    if not selector or "." in selector:
        raise ValueError(f"narrow decoding needs a top-level list key, got {selector!r}")
    adapter = _shape_adapter(selector, shape)

    def decode(endpoint: str, body: bytes) -> Any:
        try:
            return adapter.validate_json(body)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            snippet = body[:80].decode("utf-8", "replace").replace("\n", " ")
            if first["type"] == "json_invalid":
                raise MalformedResponseError(
                    f"{endpoint}: body is not JSON ({first['msg']}); starts with {snippet!r}"
                ) from None
            raise MalformedResponseError(f"{endpoint}: response has no list at {selector!r}") from None

    return decode


@functools.cache
def _shape_adapter(selector: str, shape: Shape) -> TypeAdapter[Any]:
    envelope = TypedDict("NarrowPage", {selector: list[_or_as_is(_object_type(shape))]}, total=False)  # type: ignore[misc]
    return TypeAdapter(with_config(ConfigDict(extra="allow"))(envelope))


def _object_type(shape: Shape) -> Any:
    fields = {name: Any if sub is None else _or_as_is(_shape_type(sub)) for name, sub in shape.fields}
    record = TypedDict("NarrowRecord", fields, total=False)  # type: ignore[misc]
    return with_config(ConfigDict(extra="ignore"))(record)  # not the page envelope's "allow"


def _shape_type(shape: Shape) -> Any:
    item = _object_type(shape)
    if not shape.is_list:
        return item
    items: Any = _or_as_is(item)
    return list[items]


def _or_as_is(narrow: Any) -> Any:
    """`narrow` when the value has its type, else the value as it is (left to right: never fails)."""
    return Annotated[Union[narrow, Any], Field(union_mode="left_to_right")]  # noqa: UP007


def dig(payload: Any, dotted_path: str) -> Any:
    """`payload["a"]["b"]` for "a.b"; None when any step is missing."""
    current = payload
    for part in dotted_path.split("."):
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current


def select_items(endpoint: str, payload: Any, selector: str) -> list[Any]:
    """The list of records under `selector`; a missing or non-list selector is a malformed page."""
    items = dig(payload, selector) if selector else payload
    if not isinstance(items, list):
        raise MalformedResponseError(f"{endpoint}: response has no list at {selector!r}")
    return items


def uses_events(spec: StreamSpec, mode: str) -> bool:
    return mode == "incremental" and spec.incremental.kind == "stripe_events"


def page_selector(spec: StreamSpec, mode: Mode) -> str:
    return EVENTS_SELECTOR if uses_events(spec, mode) else spec.record_selector


def to_unix_seconds(value: Any) -> int | None:
    """A version/timestamp field as unix seconds: int/float seconds or an ISO-8601 string with offset."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            return None  # a naive timestamp is ambiguous; refuse rather than guess the zone
        return int(parsed.astimezone(UTC).timestamp())
    return None


def _raw(item: Any) -> str:
    return orjson.dumps(item).decode("utf-8")


def _has_key(record: Mapping[str, Any], primary_key: str) -> bool:
    key = record.get(primary_key)
    return (isinstance(key, str) and key != "") or (isinstance(key, int) and not isinstance(key, bool))


class RecordSelection:
    """Records, versions and problems selected from one page's items; `deleted`, per record, whether
    it came from a deletion event."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.versions: list[int] = []
        self.problems: list[Rejection] = []
        self.deleted: list[bool] = []

    def deleted_ids(self, primary_key: str) -> frozenset[str]:
        if True not in self.deleted:  # every listing page, and most event pages
            return frozenset()
        return frozenset(
            str(record[primary_key]) for record, gone in zip(self.records, self.deleted, strict=True) if gone
        )


def select_records(
    spec: StreamSpec, items: list[Any], *, mode: Mode, default_version: int | None
) -> RecordSelection:
    """Pick each item's record and version; what cannot be understood becomes a `Rejection`."""
    selection = RecordSelection()
    events = uses_events(spec, mode)
    wanted_types = set(spec.incremental.event_types)
    delete_types = set(spec.incremental.delete_event_types)
    for item in items:
        if not isinstance(item, dict):
            selection.problems.append(_reject(spec, "NOT_AN_OBJECT", "item is not a JSON object", item))
            continue
        if events:
            if wanted_types and item.get("type") not in wanted_types:
                continue  # another stream's event: not ours to count
            record = dig(item, "data.object")
            version = to_unix_seconds(item.get("created"))
        else:
            record = item
            version = _record_version(spec, item, mode, default_version)
        if not isinstance(record, dict):
            selection.problems.append(_reject(spec, "NOT_AN_OBJECT", "event has no data.object", item))
            continue
        if not _has_key(record, spec.primary_key):
            selection.problems.append(
                _reject(spec, "MISSING_ID", f"record has no {spec.primary_key!r}", item)
            )
            continue
        if version is None:
            reason = "event has no created time" if events else f"bad {spec.incremental.version_field!r}"
            selection.problems.append(
                _reject(spec, "BAD_VERSION", reason, item, str(record[spec.primary_key]))
            )
            continue
        gone = events and item.get("type") in delete_types
        if gone:
            _empty_child_lists(spec, record)
        selection.records.append(record)
        selection.versions.append(version)
        selection.deleted.append(gone)
    return selection


def _empty_child_lists(spec: StreamSpec, record: dict[str, Any]) -> None:
    """A deleted record keeps no children: its embedded lists are emptied (the loader retires the
    stored ones), so no tail of them is fetched -- Stripe answers 404 for a deleted invoice's lines."""
    for child in spec.children:
        embedded = record.get(child.field)
        if isinstance(embedded, dict):
            record[child.field] = {**embedded, "data": [], "has_more": False}


def drop_superseded(spec: StreamSpec, selection: RecordSelection, seen: set[str]) -> int:
    """Drop the older snapshots of an event listing's records; returns how many were dropped.

    An event listing is newest first, so a record whose key the walk already met (earlier on this
    page or on an earlier page of the window, `seen`) is an older snapshot: it is dropped here,
    before its child lists are fetched or it is validated. The newest snapshot of a window decides,
    whatever becomes of it -- loaded, unchanged, or rejected into quarantine (ADR 0013). On a tie
    of `created` seconds, the listing's order decides: the first met is the newer.
    """
    kept: list[int] = []
    for position, record in enumerate(selection.records):
        key = str(record[spec.primary_key])
        if key not in seen:
            seen.add(key)
            kept.append(position)
    dropped = len(selection.records) - len(kept)
    if dropped:
        selection.records = [selection.records[i] for i in kept]
        selection.versions = [selection.versions[i] for i in kept]
        selection.deleted = [selection.deleted[i] for i in kept]
    return dropped


def _record_version(
    spec: StreamSpec, record: dict[str, Any], mode: Mode, default_version: int | None
) -> int | None:
    if spec.incremental.kind == "updated_since":  # the record says when it changed, in every mode
        return to_unix_seconds(record.get(spec.incremental.version_field))
    return default_version


def _reject(spec: StreamSpec, code: str, message: str, item: Any, source_id: str | None = None) -> Rejection:
    if source_id is None and isinstance(item, dict):
        candidate = item.get(spec.primary_key)
        source_id = str(candidate) if isinstance(candidate, str | int) and candidate != "" else None
    return Rejection(
        stream=spec.name, reason_code=code, message=message, raw_payload=_raw(item), source_id=source_id
    )


def page_from_body(
    spec: StreamSpec,
    body: bytes,
    url: str,
    page_meta: Mapping[str, Any],
    page_no: int,
    seen: set[str] | None = None,
    decode: Callable[[str, bytes], Any] = parse_json_body,
) -> Page:
    """Rebuild the `Page` the client yielded from its stored body and `page_meta`
    (`{"mode": "full"|"incremental", "default_version": <unix s>}`). A stored page envelope (the body
    as received plus the child-list tails the client fetched) gives back both, its lists completed.

    `seen`: for a page of an event listing, the keys its window's earlier pages carried (updated
    here): older snapshots are dropped as the client dropped them (`drop_superseded`). None keeps
    every record. `decode`: how the body (not the fetched tails) is decoded; by default whole.
    """
    mode: Mode = "incremental" if page_meta.get("mode") == "incremental" else "full"
    raw_default = page_meta.get("default_version")
    default_version = (
        int(raw_default) if isinstance(raw_default, int | float | str) and raw_default != "" else None
    )
    opened = open_envelope(body)
    raw, stored_tails, child_pages = opened if opened is not None else (body, b"", True)
    payload = decode(url, raw)
    items = select_items(url, payload, page_selector(spec, mode))
    selection = select_records(spec, items, mode=mode, default_version=default_version)
    tails = parse_json_body(url, stored_tails) if stored_tails else None
    events = uses_events(spec, mode)
    if tails is not None and events:
        if _tails_for_every_list(spec, selection.records, tails):
            # Stored before the client dropped older snapshots first (or none dropped had a tail).
            complete_child_lists(spec, selection.records, tails, child_pages=child_pages)
            tails = None
        elif seen is None:
            raise MalformedResponseError(
                f"{url}: an event page's stored tails are for its newest snapshots only; rebuild its"
                " window's pages in order with their `seen` keys"
            )
    superseded = drop_superseded(spec, selection, seen) if seen is not None and events else 0
    if tails is not None:
        complete_child_lists(spec, selection.records, tails, child_pages=child_pages)
    return Page(
        stream=spec.name,
        page_no=page_no,
        url=url,
        body=raw,
        records=selection.records,
        versions=selection.versions,
        problems=selection.problems,
        superseded=superseded,
        deleted_ids=selection.deleted_ids(spec.primary_key),
        fetched_at=None,
        fetched_children=(stored_tails,) if stored_tails else (),
        child_pages=child_pages,
    )


def _tails_for_every_list(spec: StreamSpec, records: Sequence[dict[str, Any]], tails: Any) -> bool:
    return isinstance(tails, list) and len(tails) == sum(1 for _ in truncated_child_lists(spec, records))


def whole_records(
    spec: StreamSpec,
    url: str,
    page_meta: Mapping[str, Any],
    seen_before: frozenset[str] | None,
    stored: bytes,
) -> list[dict[str, Any]]:
    """The records of a stored page decoded whole, in the order the client selected them
    (`Page.rebuild_whole` of a page the client decoded narrow). `seen_before`: of the page's keys,
    those the walk met on earlier pages (None: not an event listing)."""
    return decoded_records(spec, url, page_meta, seen_before, parse_json_body, stored)


def decoded_records(
    spec: StreamSpec,
    url: str,
    page_meta: Mapping[str, Any],
    seen_before: frozenset[str] | None,
    decode: Callable[[str, bytes], Any],
    stored: bytes,
) -> list[dict[str, Any]]:
    """The records of a stored page as `decode` builds them, in the order the client selected them
    (`whole_records`; `Page.rebuild_records` of a page the client decoded for navigation only)."""
    seen = None if seen_before is None else set(seen_before)
    return page_from_body(spec, stored, url, page_meta, 0, seen, decode).records


def record_shape(spec: StreamSpec, model_fields: Shape | None) -> Shape | None:
    """What the client decodes of each record: `model_fields` (None: everything) plus what the
    client reads itself -- the key, the version field, each child list's `has_more` and item ids."""
    if model_fields is None:
        return None
    own: dict[str, Shape | None] = {spec.primary_key: None, "id": None}
    if spec.incremental.kind == "updated_since":
        own[spec.incremental.version_field] = None
    for child in spec.children:
        own[child.field] = Shape.of({"has_more": None, "data": Shape.of(["id"], is_list=True)})
    return model_fields.merge(Shape.of(own))


def list_decoder(
    spec: StreamSpec, mode: Mode, record_fields: Collection[str] | None = None
) -> Callable[[str, bytes], Any]:
    """The decoder of the stream's list (or events) pages in `mode`: narrow to what the stream's
    model reads (`record_fields`: only these top-level fields) plus what the client reads itself;
    `parse_json_body` when the model must be read whole or the selector is nested."""
    selector = page_selector(spec, mode)
    fields = _model_fields(spec) if record_fields is None else Shape.of(record_fields)
    shape = record_shape(spec, fields)
    if shape is None or not selector or "." in selector:
        return parse_json_body
    return shape_decoder(selector, event_shape(shape) if uses_events(spec, mode) else shape)


def navigation_decoder(spec: StreamSpec, mode: Mode) -> Callable[[str, bytes], Any] | None:
    """The decoder of the stream's list (or events) pages that builds only what the walk itself
    reads of each record: its key, its version, its child lists' `has_more` and item ids. A
    replay's batches are found committed by their bodies' digest and never mapped, so their
    records are not needed (`Page.rebuild_records`): on a 100-invoice sandbox page this shape
    decoded and freed in 8.9 us an invoice against the model's 17.3 us. None when the stream's
    pages are decoded whole anyway (`list_decoder`)."""
    if list_decoder(spec, mode) is parse_json_body:
        return None
    return list_decoder(spec, mode, record_fields=())


# A child list's continuation page, for navigation only: its items' ids (the envelope's `has_more`
# is kept whole by `shape_decoder`).
CHILD_PAGE_SHAPE = Shape.of(["id"])


def _model_fields(spec: StreamSpec) -> Shape | None:
    """What the stream's model reads; None (decode whole) when the model does not resolve -- the
    mapping reports that, the client reads pages either way."""
    try:
        return model_shape(resolve(spec.model))
    except (LookupError, ImportError):
        return None


def event_shape(record: Shape) -> Shape:
    """A Stripe event narrowed to what record selection reads, its `data.object` to `record`."""
    return Shape.of({"id": None, "type": None, "created": None, "data": Shape.of({"object": record})})


def truncated_child_lists(
    spec: StreamSpec, records: Sequence[dict[str, Any]]
) -> Iterator[tuple[Any, dict[str, Any], dict[str, Any]]]:
    """(child spec, record, embedded list) of every child list marked `has_more`, in the order the
    client fetches their tails -- and `complete_child_lists` puts them back."""
    for child in spec.children:
        for record in records:
            embedded = record.get(child.field)
            if isinstance(embedded, dict) and embedded.get("has_more") is True:
                yield child, record, embedded


def complete_child_lists(
    spec: StreamSpec, records: Sequence[dict[str, Any]], fetched: Any, *, child_pages: bool
) -> None:
    """Complete each truncated list in place with what was fetched for it, as the client did when
    it read the page: its continuation pages (`child_pages`, read as `tail_items` reads them) or
    its tail items. A count that does not match is a damaged page, never a partial fill."""
    truncated = list(truncated_child_lists(spec, records))
    if not isinstance(fetched, list) or len(fetched) != len(truncated):
        found = len(fetched) if isinstance(fetched, list) else type(fetched).__name__
        raise MalformedResponseError(f"stored page: {len(truncated)} truncated child lists, {found} tails")
    for (_, _, embedded), entry in zip(truncated, fetched, strict=True):
        if not isinstance(entry, list):
            raise MalformedResponseError(f"stored page: a child list's tail is a {type(entry).__name__}")
        tail = tail_items(embedded["data"], entry) if child_pages else entry
        embedded["data"].extend(tail)
        embedded["has_more"] = False


def tail_items(head: Sequence[Any], pages: Sequence[Any]) -> list[Any]:
    """The items of a child list's continuation pages (Stripe lists: items under `data`) that its
    embedded `head` and the earlier pages do not already hold (by `id`); items without an id are
    kept."""
    seen_ids = {item["id"] for item in head if isinstance(item, dict) and "id" in item}
    tail: list[Any] = []
    for page in pages:
        for item in select_items("child list page", page, "data"):
            item_id = item.get("id") if isinstance(item, dict) else None
            if item_id is None or item_id not in seen_ids:
                tail.append(item)
                if item_id is not None:
                    seen_ids.add(item_id)
    return tail


def page_meta_for(mode: Mode, default_version: int | None) -> dict[str, Any]:
    """What the loader stores beside a page body so `page_from_body` can rebuild it."""
    return {"mode": mode, "default_version": default_version}


def meta_for_page(page: Page, mode: Mode) -> dict[str, Any]:
    """`page_meta` for a page the client yielded: in full mode every record carries the listing's
    start time as its version, so the page itself says what `default_version` was."""
    default_version = page.versions[0] if mode == "full" and page.versions else None
    return page_meta_for(mode, default_version)


def meta_for_pages(pages: Sequence[Page], mode: Mode) -> dict[str, Any]:
    """`page_meta` for a batch of pages from one `iter_pages` call (they share the listing start)."""
    for page in pages:
        if page.versions:
            return meta_for_page(page, mode)
    return page_meta_for(mode, None)
