"""Errors the SaaS client raises, split by what the caller should do about them.

Retriable errors are handled inside the client's retry loop; only `FatalApiError` (and its
subclasses) ever reach the pipeline, always naming the endpoint, the HTTP status and the API's own
error text so the task log says what went wrong without a debugger.
"""

from __future__ import annotations


class SaaSClientError(Exception):
    """Base class of everything the client raises."""


class RetriableError(SaaSClientError):
    """A failure a later attempt may not see (429, 5xx, network, malformed body)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransientNetworkError(RetriableError):
    """Connection refused/reset, DNS failure or a timeout: nothing (usable) came back."""


class RetriableHttpError(RetriableError):
    """429 or 5xx."""

    def __init__(self, endpoint: str, status: int, api_message: str, *, retry_after: float | None) -> None:
        super().__init__(f"{endpoint}: HTTP {status}: {api_message}", retry_after=retry_after)
        self.endpoint = endpoint
        self.status = status
        self.api_message = api_message


class MalformedResponseError(RetriableError):
    """A 2xx body that is not the JSON page we expected (HTML, truncated JSON, no record list)."""


class FatalApiError(SaaSClientError):
    """The API refused the request in a way retrying cannot fix, or kept failing past the policy."""

    def __init__(self, endpoint: str, status: int | None, api_message: str) -> None:
        status_text = f"HTTP {status}" if status is not None else "no HTTP status"
        super().__init__(f"{endpoint}: {status_text}: {api_message}")
        self.endpoint = endpoint
        self.status = status
        self.api_message = api_message


class AuthenticationError(FatalApiError):
    """Credentials were refused (after one token refresh, for OAuth2)."""


class RetryExhaustedError(FatalApiError):
    """A retriable failure kept happening until the retry policy gave up."""


class UnconfirmedNotFoundError(FatalApiError):
    """A 404 for a record by id that does not say the record is missing (none of the stream's gone
    codes, Stripe's `resource_missing` by default): the base URL or the path is wrong, or the API
    has no such lookup. A retry gets the same answer."""


class NoByIdLookupError(SaaSClientError):
    """The stream declares no by-id path (`StreamSpec.record_path` is None): the API has no lookup of
    one record, so none was asked for. Callers check `StreamSpec.looks_up_by_id` first (ADR 0023)."""

    def __init__(self, stream: str) -> None:
        super().__init__(
            f"stream {stream} declares no by-id path (record_path=None): its API cannot be asked for one"
            " record; no request was sent"
        )
        self.stream = stream
