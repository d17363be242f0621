"""Request handling: auth, Stripe list semantics and errors, the orders API, faults and admin routes.

Transport-free: `SandboxApp.handle(Request) -> Response`; `server.py` puts it on a socket."""

from __future__ import annotations

import base64
import binascii
import fnmatch
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import orjson

from erp_sync.sandbox import faults as fault_mod
from erp_sync.sandbox.world import (
    CHARGE,
    CREDIT_NOTE,
    CUSTOMER,
    EVENT,
    EVENT_TYPES,
    INVOICE,
    INVOICE_STATUSES,
    NEVER,
    OBJECT_NAME,
    ORDER,
    PREFIX,
    REFUND,
    World,
)

JSON = b"application/json"
MAX_TRUTH_OBJECTS = 100_000  # /_admin/truth with objects beyond this needs force=1
LIST_RESOURCES = {
    "customers": CUSTOMER,
    "invoices": INVOICE,
    "charges": CHARGE,
    "refunds": REFUND,
    "credit_notes": CREDIT_NOTE,
    "events": EVENT,
}
OBJECT_NAME_ALL = {**OBJECT_NAME, EVENT: "event"}
COMMON_LIST_PARAMS = {"limit", "starting_after", "ending_before", "created"}
CREATED_OPS = ("gt", "gte", "lt", "lte")
FILTER_PARAMS = {
    CUSTOMER: set(),
    INVOICE: {"customer", "status"},
    CHARGE: {"customer"},
    REFUND: {"charge"},
    CREDIT_NOTE: {"invoice", "customer"},
    EVENT: {"type", "types"},
}
AMOUNT_FIELD = {
    CUSTOMER: "balance",
    INVOICE: "total",
    CHARGE: "amount",
    REFUND: "amount",
    CREDIT_NOTE: "total",
}
HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Scheduled maintenance</title></head>"
    b"<body><h1>We&rsquo;ll be right back</h1></body></html>"
)


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    peer: str = "127.0.0.1"


@dataclass
class Response:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay_s: float = 0.0


@dataclass
class Settings:
    secret_key: str
    client_id: str
    client_secret: str
    oauth: bool = False


class ApiError(Exception):
    """A Stripe-shaped error response."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_

    def response(self) -> Response:
        error: dict[str, Any] = {"type": self.type, "message": self.message, "param": self.param}
        if self.code:
            error["code"] = self.code
        return Response(self.status, orjson.dumps({"error": error}))


class OrdersError(Exception):
    """An error of the non-Stripe orders API (its own, OAuth-style error body)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description

    def response(self) -> Response:
        headers = [("WWW-Authenticate", f'Bearer error="{self.error}"')] if self.status == 401 else []
        body = orjson.dumps({"error": self.error, "error_description": self.description})
        return Response(self.status, body, headers=headers)


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(obj))


def _mask(key: str) -> str:
    return f"{key[:8]}****{key[-4:]}" if len(key) > 12 else "****"


def _int_param(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, f"Invalid integer: {raw}", name, "parameter_invalid_integer") from None


class SandboxApp:
    def __init__(self, world: World, settings: Settings, faults: dict[str, Any] | None = None) -> None:
        self.world = world
        self.settings = settings
        self.faults = fault_mod.default_faults()
        self.faults.update(fault_mod.validate_faults(faults or {}))
        self._reset_fault_counters()
        self.tokens: dict[str, float] = {}
        self.request_counts: dict[str, int] = {}
        self.status_counts: dict[str, int] = {}

    # ------------------------------------------------------------------ entry point
    def handle(self, req: Request) -> Response:
        if req.path.startswith("/_admin/"):
            return self._admin(req)
        route, response = self._route(req)
        self.request_counts[route] = self.request_counts.get(route, 0) + 1
        self.status_counts[str(response.status)] = self.status_counts.get(str(response.status), 0) + 1
        return response

    def _route(self, req: Request) -> tuple[str, Response]:
        path = req.path.rstrip("/") or "/"
        if path == "/oauth/token":
            return "POST /oauth/token", self._token(req)
        if path.startswith("/api/v2/"):
            route = f"{req.method} {path}"
            try:
                if path != "/api/v2/orders" or req.method != "GET":
                    raise OrdersError(404, "not_found", f"no route for {req.method} {path}")
                self._check_token(req)
                injected = self._injected_fault()
                if injected is not None:
                    return route, injected
                return route, self._with_delay(self._orders(req))
            except OrdersError as exc:
                return route, exc.response()
        parts = path.strip("/").split("/")
        route = f"{req.method} /" + "/".join(p if i != 2 else "{id}" for i, p in enumerate(parts))
        try:
            if parts[0] != "v1":
                raise ApiError(404, f"Unrecognized request URL ({req.method}: {path}).")
            self._check_api_auth(req)
            injected = self._injected_fault()
            if injected is not None:
                return route, injected
            return route, self._with_delay(self._stripe(req, parts[1:]))
        except ApiError as exc:
            return route, exc.response()

    def _with_delay(self, response: Response) -> Response:
        response.delay_s = self.faults["slow_ms"] / 1000.0
        return response

    # ------------------------------------------------------------------ auth
    def _bearer(self, req: Request) -> str | None:
        header = req.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        if scheme.lower() == "basic":
            try:
                user = base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                return None
            return user or None
        return None

    def _token_valid(self, token: str) -> bool:
        expires = self.tokens.get(token)
        return expires is not None and time.time() < expires

    def _check_api_auth(self, req: Request) -> None:
        key = self._bearer(req)
        if key is None:
            raise ApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization "
                "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        if self.settings.oauth:
            if self._token_valid(key):
                return
            message = (
                "Expired or invalid access token." if key in self.tokens else f"Invalid token: {_mask(key)}"
            )
            raise ApiError(401, message, code="token_invalid" if key in self.tokens else None)
        if not secrets.compare_digest(key.encode(), self.settings.secret_key.encode()):
            raise ApiError(401, f"Invalid API Key provided: {_mask(key)}", code="api_key_invalid")

    def _check_token(self, req: Request) -> None:
        header = req.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise OrdersError(401, "invalid_token", "an OAuth2 bearer access token is required")
        if not self._token_valid(token.strip()):
            raise OrdersError(401, "invalid_token", "the access token is expired or unknown")

    def _token(self, req: Request) -> Response:
        def error(status: int, code: str, description: str) -> Response:
            headers = [("WWW-Authenticate", 'Basic realm="sandbox"')] if status == 401 else []
            return Response(
                status, orjson.dumps({"error": code, "error_description": description}), headers=headers
            )

        if req.method != "POST":
            return error(405, "invalid_request", "use POST")
        form = dict(parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        scheme, _, value = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _, client_secret = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return error(401, "invalid_client", "malformed basic credentials")
        if form.get("grant_type") != "client_credentials":
            return error(400, "unsupported_grant_type", "grant_type must be client_credentials")
        ok = secrets.compare_digest((client_id or "").encode(), self.settings.client_id.encode()) and (
            secrets.compare_digest((client_secret or "").encode(), self.settings.client_secret.encode())
        )
        if not ok:
            return error(401, "invalid_client", "unknown client or wrong secret")
        ttl = int(self.faults["token_ttl_s"])
        token = "sbx_at_" + secrets.token_urlsafe(24)
        now = time.time()
        if len(self.tokens) > 10_000:
            self.tokens = {t: exp for t, exp in self.tokens.items() if exp > now}
        self.tokens[token] = now + ttl
        body = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": form.get("scope", "read"),
        }
        return Response(200, orjson.dumps(body), headers=[("Cache-Control", "no-store")])

    # ------------------------------------------------------------------ faults
    def _reset_fault_counters(self) -> None:
        self.api_requests = 0
        self.list_requests = 0
        self.records_served = 0
        self.malformed_served = 0

    def _injected_fault(self) -> Response | None:
        self.api_requests += 1
        every_429, every_503 = self.faults["http_429_every"], self.faults["http_503_every"]
        if every_429 and self.api_requests % every_429 == 0:
            err = ApiError(429, "Too many requests hit the API too quickly.", code="rate_limit").response()
            err.headers.append(("Retry-After", str(self.faults["retry_after_s"])))
            return err
        if every_503 and self.api_requests % every_503 == 0:
            return ApiError(503, "The sandbox is temporarily unavailable.", type_="api_error").response()
        return None

    def _next_record_kind(self) -> str:
        kind = str(self.faults["malformed_kind"])
        if kind == "cycle":
            kind = fault_mod.RECORD_KINDS[self.malformed_served % len(fault_mod.RECORD_KINDS)]
        self.malformed_served += 1
        return kind

    def _corrupt(self, res: int, body: bytes, kind: str) -> bytes:
        obj = orjson.loads(body)
        target = obj
        target_res = res
        if res == EVENT:
            target = obj["data"]["object"]
            target_res = EVENT_TYPES[self.world.events.kind[self.world.ids.decode("evt", obj["id"]) or 0]][1]
        if kind == "missing_id":
            target.pop("order_id" if res == ORDER else "id", None)
        elif kind == "string_amount":
            amount_field = "total_cents" if res == ORDER else AMOUNT_FIELD[target_res]
            target[amount_field] = f"{target[amount_field]}.00"
        else:
            target["currency"] = "xxx"
        return orjson.dumps(obj)

    def _page_records(self, res: int, rows: list[int]) -> list[bytes]:
        """Each row's JSON, with one record per `malformed_every` replaced when a record fault is on.
        A page's last record is never corrupted: clients need its id as the next cursor."""
        world = self.world
        items = world.json_many(res, rows)
        every = self.faults["malformed_every"]
        if not every or self.faults["malformed_kind"] in fault_mod.BODY_KINDS:
            return items
        for k in range(len(items) - 1 if res != ORDER else len(items)):
            self.records_served += 1
            if self.records_served % every == 0:
                items[k] = self._corrupt(res, items[k], self._next_record_kind())
        return items

    def _body_fault(self, response: Response) -> Response:
        every, kind = self.faults["malformed_every"], self.faults["malformed_kind"]
        if not every or kind not in fault_mod.BODY_KINDS or self.list_requests % every:
            return response
        if kind == "truncated":
            response.body = response.body[: max(1, len(response.body) // 2)]
        elif kind == "non_json":
            response.body = b"upstream error: <<not json>>"
            response.content_type = b"text/plain"
        else:
            response.body, response.content_type = HTML_PAGE, b"text/html; charset=utf-8"
        return response

    def _before_list(self) -> None:
        self.list_requests += 1
        every = self.faults["mutate_between_pages"]
        if every and self.list_requests % every == 0:
            self.world.mutate(1)

    # ------------------------------------------------------------------ Stripe API
    def _stripe(self, req: Request, parts: list[str]) -> Response:
        if req.method != "GET" or not parts or parts[0] not in LIST_RESOURCES or len(parts) > 3:
            raise ApiError(404, f"Unrecognized request URL ({req.method}: {req.path}).")
        res = LIST_RESOURCES[parts[0]]
        if len(parts) == 1:
            return self._list(res, req)
        row = self.world.find(res, parts[1])
        deleted = row is not None and self.world.is_deleted(res, row)
        if row is None or (deleted and (res != CUSTOMER or len(parts) > 2)):
            raise ApiError(404, f"No such {OBJECT_NAME_ALL[res]}: '{parts[1]}'", "id", "resource_missing")
        if deleted:  # Stripe's stub for a deleted customer
            return json_response({"id": parts[1], "object": "customer", "deleted": True})
        if len(parts) == 2:
            return Response(200, self.world.json(res, row))
        if res == INVOICE and parts[2] == "lines":
            return self._lines(row, req)
        raise ApiError(404, f"Unrecognized request URL ({req.method}: {req.path}).")

    @staticmethod
    def _params(req: Request, allowed: set[str]) -> dict[str, Any]:
        """Query parameters; `a[]=` and `a[0]=` collect into a list under `a`, `created[gte]` stays."""
        params: dict[str, Any] = {}
        for key, value in parse_qsl(req.query, keep_blank_values=True):
            base, _, rest = key.partition("[")
            if base == "expand":
                continue
            if rest and (rest == "]" or rest[:-1].isdigit()) and base not in ("created",):
                params.setdefault(base, []).append(value)
                name = base
            else:
                params[key] = value
                name = base
            if name not in allowed:
                raise ApiError(400, f"Received unknown parameter: {key}", key, "parameter_unknown")
            if base == "created" and rest and rest[:-1] not in CREATED_OPS:
                raise ApiError(400, f"Received unknown parameter: {key}", key, "parameter_unknown")
        return params

    def _cursor(self, res: int, params: dict[str, Any], name: str) -> int | None:
        value = params.get(name)
        if value is None:
            return None
        row = self.world.ids.decode(PREFIX[res], value)  # an event past retention is still a valid cursor
        if row is None or row >= self.world.table(res).n:
            raise ApiError(400, f"No such {OBJECT_NAME_ALL[res]}: '{value}'", name, "resource_missing")
        return row

    @staticmethod
    def _limit(params: dict[str, Any], maximum: int = 100) -> int:
        raw = params.get("limit")
        if raw is None:
            return 10
        limit = _int_param("limit", raw)
        if limit < 1:
            raise ApiError(
                400, "This value must be greater than or equal to 1.", "limit", "parameter_invalid_integer"
            )
        if limit > maximum:
            raise ApiError(
                400,
                f"This value must be less than or equal to {maximum}.",
                "limit",
                "parameter_invalid_integer",
            )
        return limit

    @staticmethod
    def _created_bounds(params: dict[str, Any]) -> tuple[int | None, int | None]:
        gte: int | None = None
        lte: int | None = None

        def tighten_low(v: int) -> None:
            nonlocal gte
            gte = v if gte is None else max(gte, v)

        def tighten_high(v: int) -> None:
            nonlocal lte
            lte = v if lte is None else min(lte, v)

        if "created" in params:
            exact = _int_param("created", params["created"])
            tighten_low(exact)
            tighten_high(exact)
        for op in CREATED_OPS:
            name = f"created[{op}]"
            if name in params:
                v = _int_param(name, params[name])
                if op == "gt":
                    tighten_low(v + 1)
                elif op == "gte":
                    tighten_low(v)
                elif op == "lt":
                    tighten_high(v - 1)
                else:
                    tighten_high(v)
        return gte, lte

    def _predicate(self, res: int, params: dict[str, Any]) -> Any:
        world = self.world
        checks: list[Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]] = []
        if "customer" in params:
            cust = world.find(CUSTOMER, params["customer"])
            if cust is None:
                raise ApiError(
                    400, f"No such customer: '{params['customer']}'", "customer", "resource_missing"
                )
            if res == INVOICE:
                checks.append(lambda rows: world.invoices.customer.v[rows] == cust)
            elif res == CHARGE:
                checks.append(lambda rows: world.invoices.customer.v[world.charges.invoice.v[rows]] == cust)
            else:
                checks.append(
                    lambda rows: world.invoices.customer.v[world.credit_notes.invoice.v[rows]] == cust
                )
        if res == INVOICE and "status" in params:
            if params["status"] not in INVOICE_STATUSES:
                raise ApiError(
                    400,
                    "Invalid status: must be one of draft, open, paid, uncollectible, or void",
                    "status",
                    "invalid_enum",  # Stripe's message names the allowed values
                )
            code = INVOICE_STATUSES.index(params["status"])

            def status_is(rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
                inv = world.invoices
                final = inv.final_ev.v[rows]
                status = np.where(
                    final != NEVER, inv.final_status.v[rows], np.where(inv.fin_ev.v[rows] != NEVER, 1, 0)
                )
                return status == code  # type: ignore[no-any-return]

            checks.append(status_is)
        if res == REFUND and "charge" in params:
            charge = world.find(CHARGE, params["charge"])
            if charge is None:
                raise ApiError(400, f"No such charge: '{params['charge']}'", "charge", "resource_missing")
            checks.append(lambda rows: world.refunds.charge.v[rows] == charge)
        if res == CREDIT_NOTE and "invoice" in params:
            invoice = world.find(INVOICE, params["invoice"])
            if invoice is None:
                raise ApiError(400, f"No such invoice: '{params['invoice']}'", "invoice", "resource_missing")
            checks.append(lambda rows: world.credit_notes.invoice.v[rows] == invoice)
        if res == EVENT and ("type" in params or "types" in params):
            if "type" in params and "types" in params:
                raise ApiError(400, "You may only specify one of these parameters: type, types.", "types")
            patterns = [params["type"]] if "type" in params else list(params["types"])
            codes = [
                c
                for c, (name, _, _) in enumerate(EVENT_TYPES)
                if any(fnmatch.fnmatchcase(name, p) for p in patterns)
            ]
            wanted = np.array(codes, dtype=np.int8)
            checks.append(lambda rows: np.isin(world.events.kind.v[rows], wanted))
        if not checks:
            return None

        def predicate(rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            mask = checks[0](rows)
            for check in checks[1:]:
                mask &= check(rows)
            return mask

        return predicate

    def _list(self, res: int, req: Request) -> Response:
        params = self._params(req, COMMON_LIST_PARAMS | FILTER_PARAMS[res])
        if "starting_after" in params and "ending_before" in params:
            raise ApiError(
                400,
                "You may only specify one of these parameters: ending_before, starting_after.",
                "ending_before",
            )
        limit = self._limit(params)
        gte, lte = self._created_bounds(params)
        after = self._cursor(res, params, "starting_after")
        before = self._cursor(res, params, "ending_before")
        predicate = self._predicate(res, params)
        self._before_list()
        page = self.world.listing(
            res,
            created_gte=gte,
            created_lte=lte,
            starting_after=after,
            ending_before=before,
            limit=limit,
            predicate=predicate,
        )
        rows, has_more = page.rows, page.has_more
        if self.faults["duplicate_across_pages"] and after is not None:
            if len(rows) == limit:
                rows, has_more = rows[:-1], True
            rows = [after, *rows]
        url = "/v1/" + {v: k for k, v in LIST_RESOURCES.items()}[res]
        return self._body_fault(Response(200, self._list_body(self._page_records(res, rows), has_more, url)))

    @staticmethod
    def _list_body(items: list[bytes], has_more: bool, url: str) -> bytes:
        head = b'{"object":"list","data":['
        tail = b'],"has_more":' + (b"true" if has_more else b"false") + b',"url":"' + url.encode() + b'"}'
        if not items:
            return head + tail
        # One join over the records (no second copy of a ~0.5 MB page): glue head/tail to the ends.
        parts = list(items)
        parts[0] = head + parts[0]
        parts[-1] = parts[-1] + tail
        return b",".join(parts)

    def _lines(self, invoice: int, req: Request) -> Response:
        params = self._params(req, {"limit", "starting_after", "ending_before"})
        if "starting_after" in params and "ending_before" in params:
            raise ApiError(
                400,
                "You may only specify one of these parameters: ending_before, starting_after.",
                "ending_before",
            )
        limit = self._limit(params)
        world = self.world
        off, n = int(world.invoices.line_off[invoice]), int(world.invoices.n_lines[invoice])

        def position(name: str) -> int | None:
            if name not in params:
                return None
            j = world.ids.decode("il", params[name])
            if j is None or not off <= j < off + n:
                raise ApiError(400, f"No such line item: '{params[name]}'", name, "resource_missing")
            return j - off

        after, before = position("starting_after"), position("ending_before")
        if before is not None:
            start = max(0, before - limit)
            stop = before
            has_more = start > 0
        else:
            start = 0 if after is None else after + 1
            stop = min(n, start + limit)
            has_more = stop < n
        items = [world.line_json(off + k) for k in range(start, stop)]
        url = f"/v1/invoices/{world.ids.encode('in', invoice)}/lines"
        return Response(200, self._list_body(items, has_more, url))

    # ------------------------------------------------------------------ orders API
    @staticmethod
    def _iso_param(params: dict[str, str], name: str) -> int | None:
        raw = params.get(name)
        if raw is None:
            return None
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            raise OrdersError(
                400, "invalid_request", f"{name} must be an ISO-8601 timestamp, got {raw!r}"
            ) from None
        if moment.tzinfo is None:
            raise OrdersError(
                400, "invalid_request", f"{name} must include a UTC offset (e.g. 'Z'), got {raw!r}"
            )
        # Orders carry whole seconds: `>= since` and `< before` both hold exactly from the ceiling on.
        return int(moment.timestamp()) + (1 if moment.microsecond else 0)

    def _orders(self, req: Request) -> Response:
        params = dict(parse_qsl(req.query, keep_blank_values=True))
        unknown = set(params) - {"updated_since", "updated_before", "offset", "limit"}
        if unknown:
            raise OrdersError(400, "invalid_request", f"unknown parameter(s): {', '.join(sorted(unknown))}")

        def integer(name: str, default: int, low: int, high: int) -> int:
            raw = params.get(name)
            if raw is None:
                return default
            if not raw.isdigit() or not low <= int(raw) <= high:
                raise OrdersError(400, "invalid_request", f"{name} must be an integer in {low}..{high}")
            return int(raw)

        offset = integer("offset", 0, 0, 10**9)
        limit = integer("limit", 100, 1, 1000)
        since, before = self._iso_param(params, "updated_since"), self._iso_param(params, "updated_before")
        self._before_list()
        rows, total = self.world.orders_page(since, before, offset, limit)
        if self.faults["duplicate_across_pages"] and offset > 0:
            previous, _ = self.world.orders_page(since, before, offset - 1, 1)
            rows = previous + rows
        items = self._page_records(ORDER, rows)
        body = b"".join((b'{"items":[', b",".join(items), b'],"total":', str(total).encode(), b"}"))
        return self._body_fault(Response(200, body))

    # ------------------------------------------------------------------ admin
    def _admin(self, req: Request) -> Response:
        if req.peer not in ("127.0.0.1", "::1", "localhost"):
            return json_response({"error": "admin routes are loopback only"}, 403)
        route = (req.method, req.path.rstrip("/"))
        try:
            body = orjson.loads(req.body) if req.body else {}
        except orjson.JSONDecodeError:
            return json_response({"error": "body must be JSON"}, 400)
        try:
            return self._admin_route(route, req, body)
        except (ValueError, TypeError, fault_mod.FaultError) as exc:
            return json_response({"error": str(exc)}, 400)

    def _admin_route(self, route: tuple[str, str], req: Request, body: Any) -> Response:
        world = self.world
        query = dict(parse_qsl(req.query))
        if route == ("GET", "/_admin/health"):
            return json_response({"ok": True})
        if route == ("GET", "/_admin/info"):
            return json_response(
                {
                    "seed": world.seed,
                    "anchor": world.anchor,
                    "history_days": world.history_days,
                    "oauth": self.settings.oauth,
                    "counts": world.counts(),
                }
            )
        if route == ("GET", "/_admin/truth"):
            with_objects = query.get("objects", "1") not in ("0", "false", "no")
            if with_objects and world.invoices.n > MAX_TRUTH_OBJECTS and query.get("force") != "1":
                raise ValueError(
                    f"{world.invoices.n} invoices are too many to return as objects; "
                    "ask for /_admin/truth?objects=0 (totals only) or add force=1"
                )
            return json_response(world.truth(objects=with_objects))
        if route == ("POST", "/_admin/mutate"):
            n = body.get("n", 1)
            at = body.get("at")
            if not isinstance(n, int) or (at is not None and not isinstance(at, int)):
                raise ValueError("n and at must be integers")
            return json_response(world.mutate(n, at=at, kinds=body.get("kinds")))
        if route == ("GET", "/_admin/faults"):
            return json_response(self.faults)
        if route == ("POST", "/_admin/faults"):
            self.faults.update(fault_mod.validate_faults(body))
            self._reset_fault_counters()
            return json_response(self.faults)
        if route in (("POST", "/_admin/faults/reset"), ("DELETE", "/_admin/faults")):
            self.faults = fault_mod.default_faults()
            self._reset_fault_counters()
            return json_response(self.faults)
        if route == ("GET", "/_admin/requests"):
            total = sum(self.request_counts.values())
            return json_response(
                {"total": total, "by_route": self.request_counts, "by_status": self.status_counts}
            )
        if route == ("POST", "/_admin/requests/reset"):
            self.request_counts, self.status_counts = {}, {}
            return json_response({"total": 0, "by_route": {}, "by_status": {}})
        return json_response({"error": f"no admin route {route[0]} {route[1]}"}, 404)
