"""The root of the sync error hierarchy and the mapping errors, shared by the mappers (in each
``connectors/<system>/mapper.py``), the validation rules and the connectors.

``SyncError`` and ``DecodeError`` live here so that streams never imports connectors;
``connectors/errors.py`` re-exports them with the rest of the hierarchy (retryable, rate limited,
permanent)."""

from __future__ import annotations


class SyncError(Exception):
    """Root of every error retail-sync raises about an external system or a payload."""

    def __init__(self, message: str, *, status: int | None = None, body: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = body


class DecodeError(SyncError):
    """A payload could not be decoded or mapped into the canonical model."""


class MappingError(DecodeError):
    """A channel payload that is valid JSON but cannot become a canonical order."""
