"""The canonical order-status vocabulary and the shape of a channel's status translation table.

The Amazon, Walmart and regional mappers write one of ``CANONICAL_STATUSES`` to
``Order.fulfillment_status`` (the Shopify mapper still copies Shopify's fields verbatim). Each channel
has a ``StatusTable``: its status -> canonical (``to_canonical``), canonical -> the status we would send
or write back (``from_canonical``), and the canonical statuses it cannot express (``unsupported``,
listed explicitly).
The tables are data, built from the mappers' own dicts, so a status is added in one place; each
channel's lives in its package (``connectors/<system>/status.py``) and reaches the engine as its
plugin's ``status`` (``retail_sync.channels.status_tables``); tests/unit/test_status_tables.py
walks every canonical status for every channel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# The one lifecycle vocabulary, in lifecycle order; the union of what the mappers emit
# (Walmart derives partially_shipped / partially_refunded from a mix of line statuses).
CANONICAL_STATUSES: tuple[str, ...] = (
    "pending",
    "accepted",
    "partially_shipped",
    "shipped",
    "delivered",
    "cancelled",
    "partially_refunded",
    "refunded",
    "unfulfillable",
)


@dataclass(frozen=True)
class StatusTable:
    """One channel's status translation, both directions."""

    channel: str
    to_canonical: Mapping[str, str]
    from_canonical: Mapping[str, str]
    unsupported: frozenset[str] = field(default_factory=frozenset)

    def canonical(self, channel_status: str) -> str:
        """The canonical status for a status of this channel; KeyError naming the channel if unknown."""
        try:
            return self.to_canonical[channel_status]
        except KeyError:
            known = ", ".join(sorted(self.to_canonical))
            raise KeyError(f"{self.channel}: unknown channel status {channel_status!r} "
                           f"(known: {known})") from None  # fmt: skip

    def channel_status(self, canonical: str) -> str:
        """The status this channel uses for ``canonical``; KeyError if it cannot express it."""
        try:
            return self.from_canonical[canonical]
        except KeyError:
            why = "cannot express" if canonical in self.unsupported else "has no mapping for"
            raise KeyError(f"{self.channel}: {why} canonical status {canonical!r}") from None


def table(channel: str, to_canonical: Mapping[str, str], from_canonical: Mapping[str, str],
          unsupported: set[str]) -> StatusTable:  # fmt: skip
    """A read-only table (copies of the mapper dicts, so callers cannot change the mappers')."""
    return StatusTable(
        channel,
        MappingProxyType(dict(to_canonical)),
        MappingProxyType(dict(from_canonical)),
        frozenset(unsupported),
    )


__all__ = ["CANONICAL_STATUSES", "StatusTable", "table"]
