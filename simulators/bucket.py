"""The one call-limit bucket every simulator meters its API with.

A bucket holds at most ``burst`` tokens and earns ``rate * time_scale`` tokens per second of its
clock (injectable, ``time.monotonic`` by default); a call takes one token or is refused. The
real APIs' limits are this one shape with different numbers:

* Amazon SP-API usage plans (a token bucket per operation: getOrders 0.0167/s burst 20, ...);
  the simulator folds its ``time_scale`` into ``rate``.
* Walmart Marketplace (a token bucket per operation, the count in ``x-current-token-count``,
  the refill time in ``x-next-replenish-time``): ``count``, ``seconds_to_next_token``.
* Shopify's REST leaky bucket (40 calls leaking 2/s, reported as ``used/capacity`` in
  ``X-Shopify-Shop-Api-Call-Limit``): a token bucket seen from the other side, ``used`` calls in
  it being ``burst - tokens``. Build it with ``Bucket.leaky(capacity, leak_per_s)``.

The one difference between the two readings is what a new plan does (``reshape``): a token bucket
keeps the tokens it has earned up to the new burst; a leaky bucket keeps the calls already in it
(``keep_used``), so a smaller capacity can leave it over-full until they leak away.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class Bucket:
    """``burst`` tokens refilled at ``rate * time_scale`` per second of ``clock``."""

    def __init__(self, rate: float, burst: int, *, time_scale: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, keep_used: bool = False) -> None:
        self.rate, self.burst, self.time_scale = rate, burst, time_scale
        self.clock, self.keep_used = clock, keep_used
        self.tokens = float(burst)
        self._at = clock()

    @classmethod
    def leaky(cls, capacity: int = 40, leak_per_s: float = 2.0, *,
              clock: Callable[[], float] = time.monotonic) -> Bucket:
        """A leaky bucket of ``capacity`` calls leaking ``leak_per_s`` (Shopify's REST limit)."""
        return cls(leak_per_s, capacity, clock=clock, keep_used=True)

    def take(self) -> bool:
        """Admit one call if a token is left."""
        self._refill()
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def reshape(self, rate: float, burst: int, time_scale: float | None = None) -> None:
        """A new plan from now on (see the module docstring for what is kept)."""
        self._refill()
        used = self.burst - self.tokens
        self.rate, self.burst = rate, burst
        if time_scale is not None:
            self.time_scale = time_scale
        self.tokens = burst - used if self.keep_used else min(self.tokens, float(burst))

    def count(self) -> int:
        """Whole tokens left now."""
        self._refill()
        return math.floor(self.tokens)

    def seconds_to_next_token(self) -> float:
        """Seconds until the count grows by one (0 when the bucket is full), as of the last call."""
        if self.tokens >= self.burst:
            return 0.0
        return (1 - (self.tokens % 1)) / (self.rate * self.time_scale)

    @property
    def used(self) -> float:
        """Calls in the bucket as of the last call (a leaky bucket's level)."""
        return self.burst - self.tokens

    def header(self) -> str:
        """``used/capacity`` as Shopify's ``X-Shopify-Shop-Api-Call-Limit`` reports it."""
        return f"{min(self.burst, math.ceil(self.used))}/{self.burst}"

    def _refill(self) -> None:
        now = self.clock()
        gained = (now - self._at) * self.rate * self.time_scale
        self.tokens = min(float(self.burst), self.tokens + gained)
        self._at = now


__all__ = ["Bucket"]
