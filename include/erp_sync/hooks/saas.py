"""Airflow hook over the `saas_api` connection: builds an Airflow-free `SaaSClient`.

Connection fields: host (with or without scheme; `schema` may name the scheme), port, login
(unused), password = the secret key (auth=secret_key|api_key) or the OAuth client secret
(auth=oauth2). Extras are read by allowlist; anything else is logged as ignored and never passed on.
`window_slices` (default 1) cuts a listing's window by `created` into that many spans read
concurrently: against a real API, whose round trips dominate a delta, up to that many times faster
(see `SaaSClient.slices_of`); each slice is one more walk within the `max_rps` budget.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from erp_sync.clients import (
    ApiKeyHeader,
    AuthStrategy,
    BearerSecretKey,
    LocalTokenBucket,
    OAuth2ClientCredentials,
    RateLimiter,
    RedisTokenBucket,
    SaaSClient,
)
from erp_sync.clients.sources import (
    MissingSourceConnectionError,
    SourceClients,
    connection_for,
    streams_by_source_system,
)

ALLOWED_EXTRAS = frozenset(
    {
        "auth",
        "token_url",
        "client_id",
        "scope",
        "ca_bundle",
        "timeout",
        "page_size",
        "max_rps",
        "api_key_header",
        "window_slices",
    }
)
AUTH_KINDS = ("secret_key", "oauth2", "api_key")


class SaaSApiHook(BaseHook):
    """One SaaS API, one connection. `get_client()` returns a ready `SaaSClient`."""

    conn_name_attr = "saas_conn_id"
    default_conn_name = "saas_api"
    conn_type = "http"
    hook_name = "SaaS API (Stripe-compatible)"

    def __init__(self, saas_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.saas_conn_id = saas_conn_id

    def get_conn(self) -> SaaSClient:
        return self.get_client()

    def get_client(
        self,
        rate_limiter: RateLimiter | None = None,
        *,
        redis_client: Any = None,
        namespace: str = "erpsync",
    ) -> SaaSClient:
        """Build the client. Without an explicit `rate_limiter`, `max_rps` gives a Redis token bucket
        `{namespace}:ratelimit:{conn_id}` shared by every task (when `redis_client` is given) or an
        in-process bucket."""
        conn = self.get_connection(self.saas_conn_id)
        extras = self.allowed_extras(conn.extra_dejson)
        max_rps = _positive_float(extras.get("max_rps"), "max_rps")
        if rate_limiter is None and max_rps is not None:
            burst = max(1, math.ceil(max_rps))
            if redis_client is not None:
                key = f"{namespace}:ratelimit:{self.saas_conn_id}"
                rate_limiter = RedisTokenBucket(redis_client, key, max_rps, burst)
            else:
                rate_limiter = LocalTokenBucket(max_rps, burst)
        page_size = _positive_int(extras.get("page_size"), "page_size")
        window_slices = _positive_int(extras.get("window_slices"), "window_slices") or 1
        return SaaSClient(
            base_url=base_url_of(conn.host, conn.schema, conn.port),
            auth=build_auth(extras, conn.login, conn.password),
            timeout=parse_timeout(extras.get("timeout")),
            ca_bundle=extras.get("ca_bundle") or None,
            rate_limiter=rate_limiter,
            page_size=page_size,
            window_slices=window_slices,
            progress=lambda stream, stats: self.log.info("extract %s: %s", stream, stats.line()),
        )

    def allowed_extras(self, extras: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(extras) - ALLOWED_EXTRAS)
        if unknown:
            self.log.warning(
                "connection %s: ignoring unknown extras %s (allowed: %s)",
                self.saas_conn_id,
                unknown,
                sorted(ALLOWED_EXTRAS),
            )
        return {key: value for key, value in extras.items() if key in ALLOWED_EXTRAS}


def source_clients(
    streams: Iterable[str], *, redis_client: Any = None, namespace: str = "erpsync"
) -> SourceClients:
    """A client for each source system of `streams` (only those), each from its own connection
    (`SOURCE_CONNECTIONS`). Building a client sends no request: a missing connection raises
    `MissingSourceConnectionError`, naming it and the streams it serves, before any read."""
    clients: dict[str, SaaSClient] = {}
    for system, names in streams_by_source_system(streams).items():
        conn_id = connection_for(system)
        hook = SaaSApiHook(saas_conn_id=conn_id)
        try:
            clients[system] = hook.get_client(redis_client=redis_client, namespace=namespace)
        except AirflowNotFoundException:
            SourceClients(clients).close()
            raise MissingSourceConnectionError(conn_id, system, names) from None
    return SourceClients(clients)


def base_url_of(host: str | None, schema: str | None, port: int | None) -> str:
    if not host:
        raise ValueError("the SaaS connection has no host")
    if host.startswith(("https://", "http://")):
        base = host.rstrip("/")
    else:
        scheme = schema if schema in ("http", "https") else "https"
        base = f"{scheme}://{host.strip('/')}"
    if port and f":{port}" not in base.split("//", 1)[1]:
        scheme_part, rest = base.split("//", 1)
        host_part, _, path = rest.partition("/")
        base = f"{scheme_part}//{host_part}:{port}" + (f"/{path}" if path else "")
    return base


def build_auth(extras: dict[str, Any], login: str | None, password: str | None) -> AuthStrategy:
    kind = extras.get("auth", "secret_key")
    if kind not in AUTH_KINDS:
        raise ValueError(f"extra 'auth' must be one of {AUTH_KINDS}, got {kind!r}")
    if not password:
        raise ValueError("the SaaS connection needs a password (secret key, API key or OAuth client secret)")
    if kind == "secret_key":
        return BearerSecretKey(password)
    if kind == "api_key":
        return ApiKeyHeader(str(extras.get("api_key_header") or "X-Api-Key"), password)
    client_id = extras.get("client_id") or login
    if not extras.get("token_url") or not client_id:
        raise ValueError("auth=oauth2 needs the extras 'token_url' and 'client_id' (or the login)")
    return OAuth2ClientCredentials(str(extras["token_url"]), str(client_id), password, extras.get("scope"))


def parse_timeout(value: Any) -> tuple[float, float]:
    """`timeout` extra: one number (read timeout; connect stays 5 s) or [connect, read]."""
    if value is None or value == "":
        return (5.0, 30.0)
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        seconds = _positive_float(value, "timeout")
        if seconds is None:
            raise ValueError("timeout: expected a positive number of seconds")
        return (min(5.0, seconds), seconds)
    if isinstance(value, list | tuple) and len(value) == 2:
        connect, read = (_positive_float(v, "timeout") for v in value)
        if connect is None or read is None:
            raise ValueError("timeout must be positive")
        return (connect, read)
    raise ValueError(f"extra 'timeout' must be seconds or [connect, read], got {value!r}")


def _positive_int(value: Any, name: str) -> int | None:
    number = _positive_float(value, name)
    if number is None:
        return None
    if number != int(number):
        raise ValueError(f"extra {name!r} must be a whole number, got {value!r}")
    return int(number)


def _positive_float(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"extra {name!r} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"extra {name!r} must be positive, got {value!r}")
    return number
