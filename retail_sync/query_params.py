"""Query parameters of the worker's HTTP views, read strictly: a bad value is a ``BadParam``
(answered 400 with its message), never a Python error text or a 500.

Numbers must be finite (``nan``, ``inf`` and ``1e308`` days are refused, not passed on to
``timedelta``), integers must be integers, and each has the range stated in its message.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping


class BadParam(ValueError):
    """A query parameter that is missing or malformed; ``str()`` is the message for the client."""


def required_text(query: Mapping[str, str], name: str, what: str) -> str:
    """A non-empty (after stripping) parameter, e.g. ``id``."""
    value = (query.get(name) or "").strip()
    if not value:
        raise BadParam(f"the query parameter {name!r} is required: {what}")
    return value


def number(query: Mapping[str, str], name: str, default: float | None, *,
           minimum: float, maximum: float, above_minimum: bool = False,
           unit: str = "") -> float | None:
    """A finite number in [minimum, maximum] (or (minimum, maximum] with ``above_minimum``);
    ``default`` when the parameter is absent or empty."""
    raw = query.get(name)
    if raw is None or raw.strip() == "":
        return default
    unit = f" {unit}" if unit else ""
    low = f"above {minimum:g}" if above_minimum else f"from {minimum:g}"
    rule = f"{name} must be a number {low} to {maximum:g}{unit}, not {raw[:40]!r}"
    try:
        value = float(raw)
    except ValueError:
        raise BadParam(rule) from None
    if not math.isfinite(value) or value > maximum or value < minimum or (
            above_minimum and value == minimum):
        raise BadParam(rule)
    return value


def integer(query: Mapping[str, str], name: str, default: int, *, minimum: int,
            maximum: int) -> int:
    """A whole number in [minimum, maximum]; ``default`` when absent or empty."""
    raw = query.get(name)
    if raw is None or raw.strip() == "":
        return default
    rule = f"{name} must be a whole number from {minimum} to {maximum}, not {raw[:40]!r}"
    try:
        value = int(raw.strip())
    except ValueError:
        raise BadParam(rule) from None
    if not minimum <= value <= maximum:
        raise BadParam(rule)
    return value


def choice(query: Mapping[str, str], name: str, choices: Iterable[str]) -> str | None:
    """One of ``choices``, or None when absent or empty."""
    raw = (query.get(name) or "").strip()
    if not raw:
        return None
    allowed = list(choices)
    if raw not in allowed:
        raise BadParam(f"{name} must be one of {', '.join(allowed)}, not {raw[:40]!r}")
    return raw
