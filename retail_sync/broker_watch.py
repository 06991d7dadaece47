"""Is the broker there? The worker's readiness and the webhook's gate during a broker outage.

A worker answers a webhook 200 only once the broker acknowledged the record, so while the
broker is unreachable the webhook must say 503 quickly (the sender retries) instead of hanging,
and ``/health`` (readiness) must say 503 so a load balancer stops sending deliveries here.

`BrokerWatch` keeps the answer. A task of the worker asks the broker for its API versions
(the cheapest request every Kafka-protocol broker answers) every ``broker_probe_interval_s``
over a connection of its own to a bootstrap host, bounded by ``broker_probe_timeout_s``: a
refused or dropped connection, or no answer in time, marks the broker unreachable; the next
answer marks it reachable again. The probe's own connection is used, not Faust's clients, so it
says the same whatever state the consumer or producer is in (rejoining, reconnecting). A
broker acknowledgement seen by the webhook also counts as an answer.

The webhook consults `accepting()`: false while the broker is known unreachable (503 at once,
nothing is queued in the producer to be delivered later as a duplicate) and once the worker is
stopping or has crashed (no 200 is given by a worker on its way out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from typing import Any

import faust
from aiokafka.conn import create_conn
from aiokafka.protocol.admin import ApiVersionRequest

log = logging.getLogger(__name__)


def bootstrap_hosts(broker_url: str) -> list[tuple[str, int]]:
    """``kafka://a:9092,b:9093`` -> [("a", 9092), ("b", 9093)] (9092 when no port is given)."""
    hosts = []
    for part in str(broker_url).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        part = part.split("://", 1)[-1].rstrip("/")
        host, _, port = part.rpartition(":")
        hosts.append((host or port, int(port) if host and port.isdigit() else 9092))
    return hosts


class BrokerWatch:
    """Reachability of the broker as last probed, and whether the worker still accepts."""

    def __init__(self, hosts: list[tuple[str, int]], probe_timeout_s: float) -> None:
        self.hosts = hosts
        self.probe_timeout_s = probe_timeout_s
        self.reachable: bool | None = None  # None: not probed yet
        self.last_ok: float | None = None  # monotonic
        self.down_since: float | None = None
        self.last_error = ""
        self.stopping = False
        self._conn: Any = None
        self._next_host = 0

    # -- state ---------------------------------------------------------------------------------
    def mark_ok(self) -> None:
        if self.reachable is False:
            log.warning("broker reachable again after %.1f s",
                        time.monotonic() - (self.down_since or time.monotonic()))
        self.reachable, self.last_ok, self.down_since, self.last_error = (
            True, time.monotonic(), None, "")

    def mark_failed(self, reason: str) -> None:
        if self.reachable is not False:
            log.error("broker unreachable (%s): webhooks answer 503 and /health 503 until it "
                      "answers again", reason)
            self.down_since = time.monotonic()
        self.reachable, self.last_error = False, reason

    def accepting(self, app: Any = None) -> bool:
        """May a webhook be taken now? Not while the broker is known unreachable, nor once the
        worker is stopping or has crashed."""
        if self.stopping or (app is not None and (app.should_stop or app.crashed)):
            return False
        return self.reachable is not False

    def state(self, app: Any = None) -> str:
        if self.stopping or (app is not None and (app.should_stop or app.crashed)):
            return "stopping"
        return "broker_unreachable" if self.reachable is False else "ok"

    def refusal(self, app: Any = None) -> str:
        """Why a webhook is not taken now (the 503's message)."""
        if self.state(app) == "stopping":
            return "this worker is stopping; retry (another worker or this one once restarted)"
        return f"the broker is unreachable ({self.last_error}); retry"

    def as_json(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "reachable": self.reachable,
            "last_answer_s_ago": None if self.last_ok is None else round(now - self.last_ok, 1),
            "down_for_s": None if self.down_since is None else round(now - self.down_since, 1),
            "error": self.last_error or None,
        }

    # -- probe ---------------------------------------------------------------------------------
    async def probe(self) -> bool:
        """One ApiVersions round trip to a bootstrap host (the next one after a failure)."""
        try:
            await asyncio.wait_for(self._round_trip(), self.probe_timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure (refused, reset, timeout) = unreachable
            self._drop_conn()
            self._next_host = (self._next_host + 1) % max(1, len(self.hosts))
            name, text = type(exc).__name__, str(exc)
            self.mark_failed(text if text.startswith(name) else f"{name}: {text}".rstrip(": "))
            return False
        self.mark_ok()
        return True

    async def _round_trip(self) -> None:
        if self._conn is None or not self._conn.connected():
            self._drop_conn()
            host, port = self.hosts[self._next_host % len(self.hosts)]
            self._conn = await create_conn(
                host, port, client_id="retail-sync-broker-watch",
                request_timeout_ms=int(self.probe_timeout_s * 1000))
        await self._conn.send(ApiVersionRequest())

    def _drop_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    async def run(self, interval_s: float) -> None:
        """Probe forever (the worker's task); the state is read by the webhook and /health."""
        try:
            while not self.stopping:
                await self.probe()
                await asyncio.sleep(interval_s)
        finally:
            self._drop_conn()


_watches: weakref.WeakKeyDictionary[Any, BrokerWatch] = weakref.WeakKeyDictionary()


def watch_of(app: Any) -> BrokerWatch | None:
    """The watch registered for this app (None for an app built without `register`)."""
    return _watches.get(app)


def attach(app: Any, settings: Any) -> BrokerWatch:
    """A watch of ``app``'s broker, registered for it (``watch_of``); its ``run`` probes."""
    from retail_sync.exceptions_view import bootstrap_of

    watch = BrokerWatch(bootstrap_hosts(bootstrap_of(app.conf.broker)),
                        settings.broker_probe_timeout_s)
    _watches[app] = watch
    return watch


def register(ctx: Any) -> BrokerWatch:
    """Probe the app's broker while the worker runs; stop accepting webhooks when it stops."""
    app: faust.App = ctx.app
    settings = ctx.settings
    watch = attach(app, settings)

    @app.task  # type: ignore[untyped-decorator]  # Faust: @no_type_check
    async def _watch_broker() -> None:
        await watch.run(settings.broker_probe_interval_s)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode: its SignalHandlerT accepts no handler
    async def _stop_accepting(sender: Any, **kwargs: Any) -> None:
        watch.stopping = True

    return watch
