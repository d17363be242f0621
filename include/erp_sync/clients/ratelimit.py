"""Rate budgets: a token bucket shared through Redis by every task and worker of the deployment, and
an in-process bucket for when there is no Redis (local runs, unit tests).

Both answer `try_acquire()` with 0.0 (go) or the seconds to wait before asking again; the client does
the sleeping so waits are counted in its stats and tests can inject `sleep`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol


class RateLimiter(Protocol):
    def try_acquire(self) -> float:
        """Take one token and return 0.0, or take none and return seconds until one is due."""
        ...


class LocalTokenBucket:
    """Thread-safe token bucket for one process."""

    def __init__(self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def try_acquire(self) -> float:
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate_per_s)
            self._updated = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate_per_s


# KEYS[1] = bucket hash; ARGV = rate_per_s, burst. Uses the server's clock (TIME) so workers with
# skewed clocks still share one budget. Returns the wait in microseconds (0 = token taken).
_BUCKET_SCRIPT_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
local elapsed = math.max(0, now - ts)
tokens = math.min(burst, tokens + elapsed * rate / 1000000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 60000)
return wait
"""


class RedisTokenBucket:
    """A token bucket in one Redis hash, updated atomically by a Lua script.

    `key` should be `{namespace}:ratelimit:{bucket}` (see ARCHITECTURE.md); every client using the
    same key shares `rate_per_s` with a burst of `burst` requests.
    """

    def __init__(self, redis_client: Any, key: str, rate_per_s: float, burst: int) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.key = key
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._script = redis_client.register_script(_BUCKET_SCRIPT_LUA)

    def try_acquire(self) -> float:
        wait_us = int(self._script(keys=[self.key], args=[repr(self.rate_per_s), str(self.burst)]))
        return wait_us / 1_000_000

    def __repr__(self) -> str:
        return f"RedisTokenBucket(key={self.key!r}, rate_per_s={self.rate_per_s}, burst={self.burst})"
