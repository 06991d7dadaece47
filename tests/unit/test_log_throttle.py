"""Repeated aiokafka/Faust errors are logged once per window with a count (ARCHITECTURE §5f.2):
real loggers and a real handler, the clock driven by the test."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from retail_sync import log_throttle
from retail_sync.log_throttle import RepeatThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, Clock]]:
    """A root-like logger with one stream handler carrying a throttle (window 30 s)."""
    out, clock = io.StringIO(), Clock()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    handler.addFilter(RepeatThrottle(30.0, clock=clock))
    top = logging.getLogger("throttle-test-root")
    top.handlers, top.propagate, top.level = [handler], False, logging.DEBUG
    saved = {n: logging.getLogger(n).parent for n in ("aiokafka.conn", "faust.x", "retail_sync.y")}
    for name in saved:  # the loggers as children of our root-like logger
        logging.getLogger(name).parent = top
    try:
        yield top, out, clock
    finally:
        for name, parent in saved.items():
            logging.getLogger(name).parent = parent


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_first_of_each_kind_then_one_summary_per_window(logged) -> None:
    _, out, clock = logged
    conn = logging.getLogger("aiokafka.conn")
    for i in range(1234):  # ~140 a second in an outage, for 10 s: one line
        conn.error("Unable connect to node with id %s: %s", 1 + i % 2, "refused")
        clock.now += 0.007
    assert lines(out) == ["ERROR aiokafka.conn Unable connect to node with id 1: refused"]
    clock.now += 25.0  # 30 s after the first
    conn.error("Unable connect to node with id %s: %s", 2, "refused")
    assert lines(out)[1] == ("ERROR aiokafka.conn Unable connect to node with id 2: refused "
                             "[repeated 1233 times in the last 34 s]")
    conn.error("Unable connect to node with id %s: %s", 1, "refused")  # a new window: dropped
    assert len(lines(out)) == 2


def test_kinds_are_apart_and_a_quiet_kind_starts_afresh(logged) -> None:
    _, out, clock = logged
    conn, faust_log = logging.getLogger("aiokafka.conn"), logging.getLogger("faust.x")
    conn.error("Unable to update metadata from %s", [1])
    faust_log.warning("Got error produce response: %s", "NodeNotReadyError")
    conn.warning("Unable to update metadata from %s", [1])  # another level: another kind
    conn.error("Unable to update metadata from %s", [1])
    assert len(lines(out)) == 3
    clock.now += 31  # 1 repeat dropped, then quiet: the next says so
    conn.error("Unable to update metadata from %s", [1])
    assert lines(out)[-1].endswith("[repeated 1 times in the last 31 s]")
    clock.now += 31  # nothing dropped in this window: plain again
    conn.error("Unable to update metadata from %s", [1])
    assert lines(out)[-1] == "ERROR aiokafka.conn Unable to update metadata from [1]"


def test_our_own_lines_and_info_are_never_throttled(logged) -> None:
    _, out, _ = logged
    for _ in range(5):
        logging.getLogger("retail_sync.y").error("webhook %s: 503", "abc")
        logging.getLogger("aiokafka.conn").info("connected")
    assert len(lines(out)) == 10


def test_a_message_with_percent_and_no_args_survives_the_note(logged) -> None:
    _, out, clock = logged
    conn = logging.getLogger("aiokafka.conn")
    conn.error("100% of 1 node down")
    conn.error("100% of 1 node down")
    clock.now += 30
    conn.error("100% of 1 node down")
    assert lines(out)[-1] == ("ERROR aiokafka.conn 100% of 1 node down "
                              "[repeated 1 times in the last 30 s]")


def test_install_puts_one_throttle_per_handler_and_zero_turns_it_off() -> None:
    top = logging.Logger("install-test")
    first, second = logging.StreamHandler(io.StringIO()), logging.StreamHandler(io.StringIO())
    top.handlers = [first, second]
    assert log_throttle.install(0, top) == []
    assert len(log_throttle.install(30, top)) == 2
    assert log_throttle.install(30, top) == []  # idempotent
    assert [len(h.filters) for h in top.handlers] == [1, 1]


def test_two_handlers_each_show_the_note_once() -> None:
    """Faust's root logger has more than one handler; the note is appended once."""
    clock = Clock()
    outs = [io.StringIO(), io.StringIO()]
    top = logging.Logger("two-handlers")
    for out in outs:
        h = logging.StreamHandler(out)
        h.addFilter(RepeatThrottle(30.0, clock=clock))
        top.addHandler(h)
    child = logging.Logger("aiokafka.client")
    child.parent = top
    for _ in range(3):
        child.error("Unable to bootstrap")
    clock.now += 30
    child.error("Unable to bootstrap")
    for out in outs:
        assert lines(out) == ["Unable to bootstrap",
                              "Unable to bootstrap [repeated 2 times in the last 30 s]"]
