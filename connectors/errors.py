"""The sync error hierarchy. Every connector converts HTTP and vendor errors into these at its edge.

    SyncError
     +-- RetryableError          transient: timeouts, connection resets, 5xx (carries retry_after)
     |    +-- RateLimitedError   the service said 429 / throttled
     +-- PermanentError          the service refused the request (4xx validation); retrying won't help
     +-- DecodeError             a payload that is not what the contract says
          +-- MappingError       valid JSON that cannot become a canonical order

SyncError, DecodeError and MappingError are defined in streams/errors.py (streams never imports
connectors) and re-exported here.
"""

from __future__ import annotations

from retail_sync.streams.errors import DecodeError, MappingError, SyncError

__all__ = ["DecodeError", "MappingError", "PermanentError", "RateLimitedError", "RetryableError",
           "SyncError", "parse_retry_after"]


class RetryableError(SyncError):
    """Worth trying again later; ``retry_after`` is the service's own hint, in seconds."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_after


class RateLimitedError(RetryableError):
    """The service throttled us (HTTP 429 or its vendor equivalent)."""


class PermanentError(SyncError):
    """The service refused the request as invalid; it goes to the exception topic."""


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds (may be fractional, as Shopify sends it); None if absent or odd."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
