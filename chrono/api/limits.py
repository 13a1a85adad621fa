"""Rate limits: a token bucket per key, one per client address on the routes that need no key,
and a count of open ``/stream`` connections per key and in all.

A bucket holds up to ``limit`` tokens (the per-minute limit of ``[limits]``, or the key's own
``rate_per_min``) and refills continuously at ``limit / 60`` tokens a second, so a client may
burst its whole minute at once and then goes at the steady rate. A request takes one token;
with less than one left it is refused (429 ``RATE_LIMIT_EXCEEDED``) and takes nothing. A limit
of 0 is no limit (admin keys by default): no bucket, no ``X-RateLimit-*`` headers. Time is
``trio.current_time()``.

What a take says, as headers (``RateState.headers``), all integer seconds or counts:

- ``X-RateLimit-Limit``: the bucket's capacity, the per-minute limit;
- ``X-RateLimit-Remaining``: whole tokens left after this request;
- ``X-RateLimit-Reset``: seconds, rounded up, until the bucket is full again (0: full);
- on a refusal, ``Retry-After``: seconds, rounded up and at least 1, until the next token.

Keys' buckets are bounded by the configured keys. Address buckets are kept in the order they
were last used and a bucket idle for ``ADDRESS_IDLE_S`` (the time any bucket takes to fill from
empty) is forgotten: it is full again, so a fresh one is the same. At most
``MAX_ADDRESS_BUCKETS`` are kept; past that the least recently used goes even if not full.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from types import TracebackType

import msgspec
import trio

from chrono.api.auth import ApiKey, Role
from chrono.api.errors import ApiError, ErrorCode
from chrono.config import LimitsConfig
from chrono.status import LimiterStats

ADDRESS_IDLE_S = 60.0  # a bucket refills from empty to full in a minute, whatever its limit
MAX_ADDRESS_BUCKETS = 100_000
UNKEYED = "unkeyed"  # the counters' name for the per-address buckets
_EPSILON = 1e-9  # float slack: a bucket refilled for exactly Retry-After has its token


class RateState(msgspec.Struct, frozen=True):
    """One take from a bucket: whether it was allowed, and what the headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: int  # 0 when allowed

    def headers(self) -> dict[str, str]:
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after_s)
        return out

    def error(self) -> ApiError:
        return ApiError(
            ErrorCode.RATE_LIMIT_EXCEEDED,
            f"rate limit of {self.limit} requests per minute exceeded; "
            f"retry in {self.retry_after_s} s",
            {"limit_per_min": self.limit, "retry_after_s": self.retry_after_s},
        )


class TokenBucket:
    __slots__ = ("_rate", "_tokens", "limit", "updated")

    def __init__(self, limit: int, now: float) -> None:
        assert limit > 0
        self.limit = limit
        self.updated = now
        self._rate = limit / 60.0  # tokens a second
        self._tokens = float(limit)

    def take(self, now: float) -> RateState:
        tokens = min(float(self.limit), self._tokens + max(0.0, now - self.updated) * self._rate)
        self.updated = now
        allowed = tokens >= 1.0 - _EPSILON
        if allowed:
            tokens = max(0.0, tokens - 1.0)
        self._tokens = tokens
        retry_after = 0 if allowed else max(1, math.ceil((1.0 - tokens) / self._rate))
        return RateState(
            allowed=allowed,
            limit=self.limit,
            remaining=math.floor(tokens + _EPSILON),
            reset_s=max(0, math.ceil((self.limit - tokens) / self._rate - 1e-6)),
            retry_after_s=retry_after,
        )


class StreamSlot:
    """One counted ``/stream`` connection; leaving the ``with`` block frees it."""

    def __init__(self, limiter: Limiter, name: str) -> None:
        self._limiter = limiter
        self._name = name
        self._open = True

    def __enter__(self) -> StreamSlot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def release(self) -> None:
        if self._open:
            self._open = False
            self._limiter._release_stream(self._name)


class Limiter:
    """Every bucket and stream count of the API; ``statistics()`` for ``/metrics``."""

    def __init__(self, limits: LimitsConfig | None = None) -> None:
        self.limits = limits = limits or LimitsConfig()
        self._role_limits = {
            Role.INTERNAL: limits.internal_per_min,
            Role.PUBLIC: limits.public_per_min,
            Role.ADMIN: limits.admin_per_min,
        }
        self._keys: dict[str, TokenBucket] = {}  # by key name
        self._addresses: OrderedDict[str, TokenBucket] = OrderedDict()  # least recent first
        self._limited: Counter[str] = Counter()
        self._streams: Counter[str] = Counter()  # open streams by key name
        self._streams_open = 0
        self._streams_refused = 0

    def limit_of(self, key: ApiKey) -> int:
        """The key's per-minute limit; 0: unlimited."""
        return self._role_limits[key.role] if key.rate_per_min is None else key.rate_per_min

    def take_key(self, key: ApiKey) -> RateState | None:
        """A token from the key's bucket; None: the key is unlimited."""
        limit = self.limit_of(key)
        if not limit:
            return None
        now = trio.current_time()
        bucket = self._keys.get(key.name)
        if bucket is None:
            bucket = self._keys[key.name] = TokenBucket(limit, now)
        state = bucket.take(now)
        if not state.allowed:
            self._limited[key.role.value] += 1
        return state

    def take_address(self, address: str) -> RateState | None:
        """A token from the client address's bucket; None: ``unkeyed_per_min = 0``."""
        limit = self.limits.unkeyed_per_min
        if not limit:
            return None
        now = trio.current_time()
        buckets = self._addresses
        while buckets:  # forget the idle: they are full again
            oldest = next(iter(buckets.values()))
            if now - oldest.updated < ADDRESS_IDLE_S:
                break
            buckets.popitem(last=False)
        bucket = buckets.get(address)
        if bucket is None:
            if len(buckets) >= MAX_ADDRESS_BUCKETS:
                buckets.popitem(last=False)
            bucket = buckets[address] = TokenBucket(limit, now)
        else:
            buckets.move_to_end(address)
        state = bucket.take(now)
        if not state.allowed:
            self._limited[UNKEYED] += 1
        return state

    def open_stream(self, key: ApiKey) -> StreamSlot:
        """A slot for one more ``/stream`` connection of ``key``, or ``ApiError`` 429 when the
        key or the server has all it may have open."""
        per_key, total = self.limits.stream_per_key, self.limits.stream_total
        if total and self._streams_open >= total:
            self._streams_refused += 1
            raise ApiError(
                ErrorCode.RATE_LIMIT_EXCEEDED,
                f"the server has its {total} streams open; try again later",
                {"stream_total": total},
            )
        if per_key and self._streams[key.name] >= per_key:
            self._streams_refused += 1
            raise ApiError(
                ErrorCode.RATE_LIMIT_EXCEEDED,
                f"this key has its {per_key} streams open; close one first",
                {"stream_per_key": per_key},
            )
        self._streams[key.name] += 1
        self._streams_open += 1
        return StreamSlot(self, key.name)

    def _release_stream(self, name: str) -> None:
        self._streams_open -= 1
        self._streams[name] -= 1
        if not self._streams[name]:
            del self._streams[name]

    def statistics(self) -> LimiterStats:
        names = [*(role.value for role in Role), UNKEYED]
        return LimiterStats(
            rate_limited={name: self._limited[name] for name in names},
            streams_open=self._streams_open,
            streams_refused=self._streams_refused,
            address_buckets=len(self._addresses),
        )
