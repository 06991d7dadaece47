"""Webhook delivery dedupe: a sender's retries of one delivery (same delivery id) are written
once. In this process (``InProcessDeduper``, a cachetools TTL cache) or shared by every worker
through Redis (``RedisDeduper``, falling back to this process while Redis is away)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

from cachetools import TTLCache

from retail_sync.connectors.redis_batch import Pipeliner
from retail_sync.connectors.redis_support import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_POOL_TIMEOUT_S,
    REDIS_ERRORS,
    failure_reason,
    make_client,
)

_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/\s]*):[^@/\s]*@", re.I)


def mask_url(url: str) -> str:
    """``url`` with the password of its credentials masked (for logs)."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


class DeliveryDeduper(Protocol):
    """Remembers delivery ids for a while.

    ``claim`` answers "new" (this call may persist it), "done" (persisted before: a duplicate) or
    "pending" (another call is persisting it right now: the sender should retry later);
    ``confirm`` marks a claimed delivery as persisted; ``forget`` drops it (persisting failed).
    A claim that is never confirmed (the worker died) expires after a short while, so the
    sender's retry is accepted then: a delivery is never lost to the dedupe."""

    async def claim(self, delivery_id: str) -> str: ...

    async def confirm(self, delivery_id: str) -> None: ...

    async def forget(self, delivery_id: str) -> None: ...


class InProcessDeduper:
    """A bounded TTL set in this process (one worker): a cachetools ``TTLCache`` (entries expire
    ``ttl_s`` after they were first seen; past ``max_entries`` the oldest goes). Redis makes it
    shared by every worker; the order table stays the final guard against duplicates either way."""

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] | None = None):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._seen: TTLCache[str, bool] = TTLCache(max_entries, ttl_s, timer=clock or time.monotonic)

    async def first_seen(self, delivery_id: str) -> bool:
        if delivery_id in self._seen:
            return False
        self._seen[delivery_id] = True
        return True

    async def claim(self, delivery_id: str) -> str:
        """In one process a claim is as good as done: its memory dies with the process."""
        return "new" if await self.first_seen(delivery_id) else "done"

    async def confirm(self, delivery_id: str) -> None:
        return None

    async def forget(self, delivery_id: str) -> None:
        """Undo `first_seen` when the delivery could not be written, so a retry is accepted."""
        self._seen.pop(delivery_id, None)


log = logging.getLogger(__name__)


class RedisDeduper:
    """Delivery ids shared by every worker: ``SET <prefix>:<id> 1 NX PX <ttl>``.

    Its client has a bounded pool (``max_connections``); a call that finds every connection busy
    waits up to ``pool_timeout_s`` for one. Only a real Redis failure (down, too slow, pool still
    exhausted after the wait) makes the call fall back to an in-process deduper: logged once per
    outage, and every fallback counted (``fallbacks`` by reason, and ``on_fallback(reason)``,
    which the worker wires to ``retail_sync_dedupe_fallback_total``). The order table stays the
    final guard against duplicates.
    """

    def __init__(
        self,
        url: str,
        ttl_s: float,
        prefix: str = "rs:webhook:shopify",
        *,
        client: Any = None,
        fallback_max_entries: int = 10_000,
        timeout_s: float = 0.5,
        pending_ttl_s: float = 30.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout_s: float = DEFAULT_POOL_TIMEOUT_S,
        on_fallback: Callable[[str], None] | None = None,
    ):
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.url, self.ttl_s, self.prefix = url, ttl_s, prefix
        self.timeout_s, self.pending_ttl_s = timeout_s, pending_ttl_s
        self.max_connections, self.pool_timeout_s = max_connections, pool_timeout_s
        self.on_fallback = on_fallback
        self.fallbacks: dict[str, int] = {}
        self.fallback = InProcessDeduper(ttl_s, fallback_max_entries)
        self._client = client
        self._own_client = client is None
        self._degraded = False
        #: the commands of concurrent webhooks go to Redis as one pipeline
        #: (connectors/redis_batch.py)
        self._pipe = Pipeliner(self._redis)

    def key(self, delivery_id: str) -> str:
        return f"{self.prefix}:{delivery_id}"

    def _redis(self) -> Any:
        if self._client is None:
            self._client = make_client(self.url, self.timeout_s,
                                       max_connections=self.max_connections,
                                       pool_timeout_s=self.pool_timeout_s)
        return self._client

    def _failed(self, what: str, exc: BaseException) -> None:
        reason = failure_reason(exc)
        self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1
        if self.on_fallback is not None:
            self.on_fallback(reason)
        if not self._degraded:
            log.warning("webhook dedupe: Redis unavailable for %s at %s (%s: %r); deduplicating "
                        "in this process only (counted in retail_sync_dedupe_fallback_total)",
                        what, mask_url(self.url), reason, exc)
        self._degraded = True

    def _recovered(self) -> None:
        if self._degraded:
            log.info("webhook dedupe: Redis reachable again")
        self._degraded = False

    async def first_seen(self, delivery_id: str) -> bool:
        try:
            created = await self._pipe.call(
                "set", self.key(delivery_id), 1, nx=True, px=max(1, int(self.ttl_s * 1000)))
        except REDIS_ERRORS as exc:
            self._failed("first_seen", exc)
            return await self.fallback.first_seen(delivery_id)
        self._recovered()
        return bool(created)

    async def claim(self, delivery_id: str) -> str:
        key = self.key(delivery_id)
        try:
            for _ in range(2):
                if await self._pipe.call("set", key, "pending", nx=True,
                                         px=max(1, int(self.pending_ttl_s * 1000))):
                    self._recovered()
                    return "new"
                value = await self._pipe.call("get", key)
                if value is not None:
                    self._recovered()
                    return "pending" if value in (b"pending", "pending") else "done"
        except REDIS_ERRORS as exc:
            self._failed("claim", exc)
        return await self.fallback.claim(delivery_id)

    async def confirm(self, delivery_id: str) -> None:
        try:
            await self._pipe.call("set", self.key(delivery_id), "done",
                                  px=max(1, int(self.ttl_s * 1000)))
        except REDIS_ERRORS as exc:
            self._failed("confirm", exc)
        else:
            self._recovered()

    async def forget(self, delivery_id: str) -> None:
        await self.fallback.forget(delivery_id)
        try:
            await self._pipe.call("delete", self.key(delivery_id))
        except REDIS_ERRORS as exc:
            self._failed("forget", exc)
        else:
            self._recovered()

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
        self._client = None
