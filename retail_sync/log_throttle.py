"""Repeated Kafka-client errors logged once per window, not ~140 times a second.

While the broker is away aiokafka (and Faust through it) log the same few errors over and over:
"Unable connect to node with id 1", "Unable to update metadata from [1]", "Failed fetch
messages ...", "Group Coordinator Request failed ...", "Got error produce response ...".
Measured in the broker-kill test: ~10,000 lines in the 72 s the broker was away (ARCHITECTURE
§5f.2), which buries everything else and fills disks.

`RepeatThrottle` lets the first record of each kind through (a kind: logger name, level and the
message *template*, so "node 1" and "node 2" are one kind), drops repeats for ``window_s``, and
lets the first repeat after the window through with "[repeated N times in the last S s]"
appended. A kind that has been quiet for a window starts afresh. Only records of loggers
under ``aiokafka`` and ``faust`` at WARNING or above are throttled; our own log lines and
everything below WARNING pass untouched.

`install` puts one throttle on each handler of the root logger (the worker calls it once Faust
has configured logging): a handler filter sees every record, whichever logger it came from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import faust

#: loggers whose repeats are throttled (and their children)
THROTTLED = ("aiokafka", "faust")
#: kinds remembered at most; the oldest are forgotten first (templates, so few in practice)
MAX_KINDS = 1000
_ORIGINAL = "_retail_sync_throttle_msg"


class RepeatThrottle(logging.Filter):
    """The first of each kind of record, then at most one per ``window_s`` with a count."""

    def __init__(self, window_s: float, prefixes: tuple[str, ...] = THROTTLED,
                 level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s, self.prefixes, self.level, self.clock = window_s, prefixes, level, clock
        self._kinds: dict[tuple[str, int, str], list[float]] = {}  # -> [window start, dropped]
        self.dropped = 0  # in all, since start (for tests and curiosity)

    def _throttled(self, record: logging.LogRecord) -> bool:
        name = record.name
        return self.window_s > 0 and record.levelno >= self.level and any(
            name == p or name.startswith(p + ".") for p in self.prefixes)

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: A003 - logging's name
        if not self._throttled(record):
            return True
        template = getattr(record, _ORIGINAL, record.msg)
        key = (record.name, record.levelno, str(template))
        now = self.clock()
        state = self._kinds.get(key)
        if state is None or now - state[0] >= self.window_s and not state[1]:
            self._remember(key, now)
            return True
        started, dropped = state
        if now - started < self.window_s:
            state[1] += 1
            self.dropped += 1
            return False
        # the window is over and repeats were dropped in it: this one goes out with the count
        self._kinds[key] = [now, 0.0]
        if not hasattr(record, _ORIGINAL):  # another handler's throttle may have said it already
            setattr(record, _ORIGINAL, record.msg)
            note = f" [repeated {int(dropped)} times in the last {now - started:.0f} s]"
            record.msg = f"{record.msg}{note}"  # no "%" in the note: safe with record.args
        return True

    def _remember(self, key: tuple[str, int, str], now: float) -> None:
        self._kinds.pop(key, None)
        if len(self._kinds) >= MAX_KINDS:
            self._kinds.pop(next(iter(self._kinds)))
        self._kinds[key] = [now, 0.0]


def install(window_s: float, logger: logging.Logger | None = None) -> list[RepeatThrottle]:
    """One `RepeatThrottle` on each handler of ``logger`` (the root logger) that has none yet;
    nothing when ``window_s`` is 0."""
    if window_s <= 0:
        return []
    logger = logger or logging.getLogger()
    added = []
    for handler in logger.handlers:
        if not any(isinstance(f, RepeatThrottle) for f in handler.filters):
            throttle = RepeatThrottle(window_s)
            handler.addFilter(throttle)
            added.append(throttle)
    return added


def worker(app: faust.App, window_s: float, **kwargs: Any) -> faust.Worker:
    """A ``faust.Worker`` for ``app`` that installs the throttles once it has set up logging
    (Faust replaces the root logger's handlers when it starts, so not before)."""
    import faust

    class Worker(faust.Worker):
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            install(window_s, logger)

    return Worker(app, **kwargs)
