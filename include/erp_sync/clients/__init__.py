"""The Airflow-free SaaS HTTP client: auth strategies, paginators, retry policy, rate limiters."""

from __future__ import annotations

from erp_sync.clients.auth import ApiKeyHeader, AuthStrategy, BearerSecretKey, OAuth2ClientCredentials
from erp_sync.clients.client import ClientStats, SaaSClient
from erp_sync.clients.errors import (
    AuthenticationError,
    FatalApiError,
    MalformedResponseError,
    RetriableError,
    RetryExhaustedError,
    SaaSClientError,
)
from erp_sync.clients.pages import meta_for_page, meta_for_pages, page_from_body
from erp_sync.clients.ratelimit import LocalTokenBucket, RateLimiter, RedisTokenBucket
from erp_sync.clients.retry import RetryPolicy
from erp_sync.clients.windows import Window, compute_window

__all__ = [
    "ApiKeyHeader",
    "AuthStrategy",
    "AuthenticationError",
    "BearerSecretKey",
    "ClientStats",
    "FatalApiError",
    "LocalTokenBucket",
    "MalformedResponseError",
    "OAuth2ClientCredentials",
    "RateLimiter",
    "RedisTokenBucket",
    "RetriableError",
    "RetryExhaustedError",
    "RetryPolicy",
    "SaaSClient",
    "SaaSClientError",
    "Window",
    "compute_window",
    "meta_for_page",
    "meta_for_pages",
    "page_from_body",
]
