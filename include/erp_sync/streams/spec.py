"""Streams as data: what to read from a SaaS API and where it lands in the ERP.

A stream is declared, not coded: the client reads `path` with the declared paginator and
incremental strategy, the validator parses records with `model`, and the transform maps them with
the mapping registered under `mapping`. Adding another SaaS means adding specs (and, when its
objects differ, a model and a mapping) -- never a new operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from string import Formatter
from typing import Literal

PaginatorKind = Literal["stripe", "cursor", "offset", "link_header"]
IncrementalKind = Literal["stripe_events", "updated_since", "none"]
# Stripe's, and most REST APIs': one record at its list path plus its id (`GET /v1/invoices/in_123`).
DEFAULT_RECORD_PATH = "{path}/{id}"
RECORD_PATH_FIELDS = frozenset({"path", "id"})
# Why a stream's records were not asked for by id, where the reconcile and the repair report it.
NO_BY_ID_LOOKUP = "no_by_id_lookup"
# Stripe's answer for an id it does not have: 404 `{"error": {"code": "resource_missing", ...}}`.
STRIPE_GONE_CODE = "resource_missing"


@dataclass(frozen=True)
class PaginatorSpec:
    """How to walk pages. Parameters name the API's own query/body fields."""

    kind: PaginatorKind
    page_size: int = 100
    limit_param: str = "limit"
    # stripe: starting_after=<last id>, stop when has_more is false
    has_more_field: str = "has_more"
    # cursor: the next cursor is read from the body at `cursor_path`, sent as `cursor_param`
    cursor_param: str = "cursor"
    cursor_path: str = "next_cursor"
    # offset: offset/limit until a short page, or until offset + page >= the body's `total_path`
    offset_param: str = "offset"
    total_path: str = "total"
    # offset: re-read this many rows before each next offset and resume after the last row already
    # seen, so rows that leave the filtered set mid-walk (shifting later rows back) skip nothing.
    # 0 = plain offset paging. The API must accept limit = page_size + overlap.
    overlap: int = 0


@dataclass(frozen=True)
class IncrementalSpec:
    """How deltas are found after the first (full) run.

    stripe_events: page /v1/events filtered by `event_types` and created[gte|lt]; each event's
        data.object is the new version of the record; its version is the event's `created`. An
        event of one of `delete_event_types` (a subset of `event_types`) says the record is gone:
        it is staged as a tombstone (`interface_status = 'DELETED'`, its child rows too; ADR 0015).
    updated_since: page `path` with `since_param`=<window start>, `until_param`=<window end>,
        the record's `version_field` is its version.
    none: every run is a full refresh.
    """

    kind: IncrementalKind
    event_types: tuple[str, ...] = ()
    delete_event_types: tuple[str, ...] = ()
    events_path: str = "/v1/events"
    since_param: str = "updated_since"
    until_param: str = "updated_before"
    version_field: str = "updated"
    # Stripe keeps events for 30 days: an older cursor falls back to a full refresh.
    retention_days: int | None = 30

    def __post_init__(self) -> None:
        unread = set(self.delete_event_types) - set(self.event_types)
        if unread:
            raise ValueError(f"delete_event_types {sorted(unread)} are not among the event_types read")


@dataclass(frozen=True)
class FullRefreshSpec:
    """The first run and `full_refresh`: list by creation window."""

    created_gte_param: str = "created[gte]"
    created_lt_param: str = "created[lt]"
    timestamp_format: Literal["unix", "iso8601"] = "unix"


@dataclass(frozen=True)
class ChildListSpec:
    """A child list embedded in each record and continued at its own endpoint when truncated
    (Stripe invoice lines: `lines.data` + `lines.has_more`, continued at /v1/invoices/{id}/lines)."""

    field: str
    path_template: str


@dataclass(frozen=True)
class GoneAnswerSpec:
    """What a 404 for one record by id must say to prove the record gone (ADR 0020, ADR 0029): the
    error code at `code_path` in its JSON body is one of `codes`. A 404 that says anything else
    proves nothing, since a wrong base URL or path answers 404 too. The default is Stripe's.
    Declare only codes the API keeps for "no such record": one it also answers for a path that
    matches no endpoint would make every 404 of a wrong URL a gone record."""

    codes: tuple[str, ...] = (STRIPE_GONE_CODE,)
    code_path: tuple[str, ...] = ("error", "code")

    def __post_init__(self) -> None:
        for name, values in (("codes", self.codes), ("code_path", self.code_path)):
            if (
                not isinstance(values, tuple)
                or not values
                or not all(isinstance(v, str) and v for v in values)
            ):
                raise ValueError(
                    f"GoneAnswerSpec.{name}: a tuple of non-empty strings, at least one, not {values!r}"
                )

    def code_in(self, body: object) -> str | None:
        """The error code a decoded 404 body holds at `code_path`, if it holds a string there."""
        for key in self.code_path:
            body = body.get(key) if isinstance(body, dict) else None
        return body if isinstance(body, str) else None


@dataclass(frozen=True)
class StreamSpec:
    name: str
    source_system: str
    path: str
    model: str  # dotted name of the pydantic model, resolved by erp_sync.core.models.resolve
    mapping: str  # key in erp_sync.core.transform.MAPPINGS
    target_tables: tuple[str, ...]  # erp_staging tables the mapping fills
    primary_key: str = "id"
    record_selector: str = "data"
    created_field: str = "created"
    paginator: PaginatorSpec = field(default_factory=lambda: PaginatorSpec("stripe"))
    incremental: IncrementalSpec = field(default_factory=lambda: IncrementalSpec("none"))
    full_refresh: FullRefreshSpec = field(default_factory=FullRefreshSpec)
    children: tuple[ChildListSpec, ...] = ()
    extra_params: tuple[tuple[str, str], ...] = ()
    # GET one record by id (the reconcile's lookups, the repair's re-sends and tombstones): a template
    # of `{path}` (the list path above) and `{id}`. None: the API has no such lookup, and those skip
    # the stream, saying so (ADR 0023).
    record_path: str | None = DEFAULT_RECORD_PATH
    # What that lookup's 404 says when the record is gone (the default is Stripe's `resource_missing`).
    gone_answer: GoneAnswerSpec = field(default_factory=GoneAnswerSpec)

    def __post_init__(self) -> None:
        if self.record_path is not None:
            check_record_path(self.name, self.record_path)

    @property
    def looks_up_by_id(self) -> bool:
        """Whether the API can be asked for one record of this stream by its id."""
        return self.record_path is not None


def check_record_path(stream: str, template: str) -> None:
    """A by-id path names `{id}`, and `{path}` at most besides, plainly (a typo would otherwise fail
    only at the first GET, or ask for the wrong URL)."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in Formatter().parse(template)]
    except ValueError as exc:
        raise _record_path_error(stream, template, str(exc)) from None
    names = {name for name, _, _ in fields if name is not None}
    if "id" not in names or not names <= RECORD_PATH_FIELDS:
        raise _record_path_error(stream, template, f"it names {sorted(names)}")
    if any(spec or conversion for name, spec, conversion in fields if name is not None):
        raise _record_path_error(stream, template, "a field has a format spec or a conversion")


def _record_path_error(stream: str, template: str, why: str) -> ValueError:
    return ValueError(
        f"stream {stream}: record_path {template!r} must name {{id}} and may name {{path}}, nothing else"
        f" ({why}); set record_path=None when the API has no by-id lookup"
    )
