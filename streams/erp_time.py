"""An ERP's position in time, as a value: what the stock rules order ERP positions by.

The ERP stamps every change of a stock position and every sales order it creates (ERPNext:
``modified`` and ``creation``, ``YYYY-MM-DD HH:MM:SS.ffffff`` in the site's timezone, UTC here).
Its connector parses them into aware datetimes (UTC); the rules compare those values, never the
ERP's text. On the wire and in the tables an ``ErpTime`` is still that text (UTC, microseconds),
so records written before it decode unchanged and a reader of either kind orders them alike:

* a text that is no time (none of ours: only hand-made or sample records) and the empty text
  are ``EARLIEST``: before every position ("covered by any position the ERP shows");
* a text ending in ``~`` (the old "just after this one" sentinel of committed reservations
  whose sales order's creation the ERP did not say) is that time plus ``JUST_AFTER``: the first
  instant a datetime names after it, so ``position >= t + JUST_AFTER`` is ``position > t``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

#: before every ERP position (written as the empty text)
EARLIEST = datetime.min.replace(tzinfo=UTC)
#: the finest step of a datetime: ``x >= t + JUST_AFTER`` exactly when ``x > t``
JUST_AFTER = timedelta(microseconds=1)
#: the old sentinel appended to an ERP timestamp meaning "just after it" (read, never written)
_LEGACY_AFTER = "~"


def aware(moment: datetime) -> datetime:
    """``moment`` in UTC (a naive one is taken as UTC already)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_erp_time(value: Any) -> datetime:
    """An ``ErpTime`` from a datetime or from its text (see the module doc)."""
    if isinstance(value, datetime):
        return aware(value)
    if not isinstance(value, str):
        raise ValueError(f"an ERP time is a datetime or its text, not {type(value).__name__}")
    text, after = (value[:-1], True) if value.endswith(_LEGACY_AFTER) else (value, False)
    try:
        moment = aware(datetime.fromisoformat(text.strip()))
    except ValueError:
        return EARLIEST
    return moment + JUST_AFTER if after else moment


@lru_cache(maxsize=1 << 16)  # a SKU's record writes its pending commits' times on every write
def erp_time_text(moment: datetime) -> str:
    """The text an ``ErpTime`` is written as: UTC ``YYYY-MM-DD HH:MM:SS.ffffff`` (empty for
    ``EARLIEST``). Equal instants have one text, so the cache may answer for another zone's."""
    if moment == EARLIEST:
        return ""
    return aware(moment).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


#: a datetime (UTC) in Python, its text in JSON; the JSON Schema stays a plain string
ErpTime = Annotated[
    datetime,
    PlainValidator(parse_erp_time),
    PlainSerializer(erp_time_text, return_type=str),
    WithJsonSchema({"type": "string"}),
]

__all__ = ["EARLIEST", "JUST_AFTER", "ErpTime", "aware", "erp_time_text", "parse_erp_time"]
