"""Our short-lived Kafka clients are closed even when the broker is away (ARCHITECTURE §5f.2).

During a broker outage the worker's 30 s exception-gauge timer (`exceptions_view.load_exceptions`
-> `stack.read_topic`) started a consumer whose ``start()`` raised "Unable to bootstrap"; nothing
stopped it, so every 30 s asyncio logged "Unclosed AIOKafkaConsumer" when it was collected. The
broker here is a real closed port: the connection is refused, as in an outage.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from retail_sync import exceptions_view, stack, tansu_compat
from retail_sync.broker import free_port
from retail_sync.streams.models import ExceptionKind
from tests.unit.test_exceptions_view import erp_post, exc


async def _leaks(coro_factory: Any) -> list[str]:
    """Await the coroutine (it must raise KafkaConnectionError), drop every reference to what
    it created, collect garbage; the "Unclosed ..." warnings and loop reports seen."""
    loop = asyncio.get_running_loop()
    reports: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reports.append(str(context.get("message"))))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            raised = False
            try:
                await coro_factory()
            except KafkaConnectionError:
                raised = True  # the exception (and its frames) is dropped when this block ends
            assert raised, "the broker at a closed port was reached?"
            for _ in range(3):
                gc.collect()
            await asyncio.sleep(0)
        found = [str(w.message) for w in caught if "Unclosed" in str(w.message)]
        return found + [r for r in reports if "Unclosed" in r]
    finally:
        loop.set_exception_handler(previous)


def _closed_port() -> str:
    return f"127.0.0.1:{free_port()}"


async def test_read_topic_stops_its_consumer_when_the_broker_is_away() -> None:
    bootstrap = _closed_port()
    assert await _leaks(lambda: stack.read_topic(bootstrap, "t", timeout_s=1)) == []


async def test_load_exceptions_the_gauge_timers_read_leaves_no_consumer_open() -> None:
    bootstrap = _closed_port()
    leaks = await _leaks(lambda: exceptions_view.load_exceptions(bootstrap, "x.sync-exceptions",
                                                                  timeout_s=1))
    assert leaks == []


class _Recorded:
    """Every client of ``cls`` created while patched in, to ask afterwards if it was closed."""

    def __init__(self, cls: type) -> None:
        self.made: list[Any] = []
        recorded = self

        class Recording(cls):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                recorded.made.append(self)

        self.cls = Recording


async def test_true_end_offsets_stops_its_consumer_when_the_broker_is_away(
        monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = _Recorded(AIOKafkaConsumer)
    monkeypatch.setattr(tansu_compat, "AIOKafkaConsumer", recorded.cls)
    with pytest.raises(KafkaConnectionError):
        await tansu_compat.true_end_offsets(_closed_port(), {TopicPartition("t", 0): 5})
    assert recorded.made and all(c._closed for c in recorded.made)  # noqa: SLF001


async def test_replay_stops_its_producer_when_the_broker_is_away(
        monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = _Recorded(AIOKafkaProducer)
    monkeypatch.setattr("aiokafka.AIOKafkaProducer", recorded.cls)
    request = erp_post()
    record = exc(ExceptionKind.ERP_PERMANENT, request.model_dump_json(),
                 source_topic="app.erp-requests", order_key=request.order_key)
    with pytest.raises(KafkaConnectionError):
        await exceptions_view.replay(_closed_port(), "app", [record])
    assert recorded.made and all(p._closed for p in recorded.made)  # noqa: SLF001
