"""The broker-outage scenario: the broker goes away mid-load and comes back; nothing is lost.

Used by `retail-sync chaos broker-outage` and tests/integration/test_broker_outage.py.

Why a proxy and not ``kill -9`` of the broker: the embedded Tansu (0.6.0) keeps its records in
memory only (its postgres and sqlite engines are not compiled in, see retail_sync/broker.py), so
a killed Tansu restarted on the same port is an *empty* broker: every record it had
acknowledged is gone, which no worker can make up for (Apache Kafka keeps them on disk). The
worker's side of an outage is the same either way: its connections are reset, new ones are
refused, and later they are accepted again. So the broker runs behind `BrokerProxy`, which is
where the worker connects (the broker advertises the proxy's port); `cut()` aborts every
connection (RST) and closes the port, `restore()` opens it again, and the broker keeps what it
had acknowledged, as a restarted Kafka does. (A real SIGKILL of the broker is also tested, for
the answers during the outage and for the worker staying up: test_broker_outage.py.)

What must hold (ARCHITECTURE §5f.2): every webhook attempt is answered (200 or 503, none hangs
until the sender's 5 s timeout), each 503 comes within ``webhook_persist_timeout_s`` plus a
margin, ``/health`` says 503 during the outage while ``/health/live`` says 200, the worker never
exits, and at the end every offered order was accepted with a 200 (the sender retries the 503s,
as Shopify does) and is in the ERP exactly once (sales orders unique by ``po_no``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from retail_sync.broker import EmbeddedBroker, free_port
from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator

SECRET = "shpss_demo_secret"  # noqa: S105 - the demo's webhook secret
#: a 503 may take the persist timeout plus this (event loop, a loaded 2-core machine)
ANSWER_MARGIN_S = 1.5


class BrokerProxy:
    """A TCP forwarder in front of the broker whose connections can be cut and restored."""

    def __init__(self, upstream_port: int, port: int | None = None,
                 host: str = "127.0.0.1") -> None:
        self.host, self.upstream_port = host, upstream_port
        self.port = port or free_port(host)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> BrokerProxy:
        self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                  reuse_address=True)
        return self

    restore = start

    @property
    def up(self) -> bool:
        return self._server is not None

    async def cut(self) -> None:
        """The broker vanishes: no new connections, every open one reset."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    async def close(self) -> None:
        await self.cut()


class ProxiedBroker:
    """An embedded Tansu that advertises, and is reached through, a `BrokerProxy`."""

    def __init__(self) -> None:
        self.proxy_port = free_port()
        self.broker = EmbeddedBroker(advertised_port=self.proxy_port)
        self.proxy = BrokerProxy(self.broker.port, self.proxy_port)

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.proxy_port}"

    async def __aenter__(self) -> ProxiedBroker:
        self.broker.start()
        await self.proxy.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.proxy.close()
        self.broker.stop()


class TimedShopify(ShopifySimulator):
    """The Shopify sender, recording each attempt's answer and how long it took."""

    def __init__(self, config: ShopifySimConfig) -> None:
        super().__init__(config)
        self.attempts: list[tuple[float, float, str]] = []  # (started, seconds, outcome)

    async def _attempt(self, session: aiohttp.ClientSession, delivery: Any) -> str:
        started = time.monotonic()
        outcome = await super()._attempt(session, delivery)
        self.attempts.append((started, time.monotonic() - started, outcome))
        return outcome


@dataclass
class OutageReport:
    offered: set[str] = field(default_factory=set)
    accepted: set[str] = field(default_factory=set)
    in_erp: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    slowest_503_s: float = 0.0
    slowest_outage_answer_s: float = 0.0
    outage_answers: int = 0
    #: HTTP statuses, and the names of the errors when no answer came
    health_during: set[int | str] = field(default_factory=set)
    live_during: set[int | str] = field(default_factory=set)
    health_status_during: set[str] = field(default_factory=set)
    worker_exited: bool = False
    outage_s: float = 0.0
    persist_timeout_s: float = 0.0

    @property
    def lost(self) -> set[str]:
        return self.accepted - set(self.in_erp)

    @property
    def twice(self) -> list[str]:
        return [k for k, n in self.in_erp.items() if n > 1]

    def failures(self) -> list[str]:
        bound = self.persist_timeout_s + ANSWER_MARGIN_S
        found = []
        if self.worker_exited:
            found.append("the worker exited")
        if set(self.outcomes) - {"200", "503"}:
            found.append(f"attempts answered other than 200/503: {dict(self.outcomes)}")
        if not self.outage_answers or "503" not in self.outcomes:
            found.append("no webhook was answered 503 during the outage")
        if self.slowest_503_s > bound:
            found.append(f"a 503 took {self.slowest_503_s:.1f}s (bound {bound:.1f}s)")
        if 503 not in self.health_during:
            found.append(f"/health never said 503 during the outage: {self.health_during}")
        if self.live_during != {200}:
            found.append(f"/health/live was not always 200: {self.live_during}")
        if self.offered != self.accepted:
            found.append(f"{len(self.offered - self.accepted)} offered orders never accepted")
        if self.lost:
            found.append(f"accepted but not in the ERP: {sorted(self.lost)[:5]}")
        if set(self.in_erp) - self.offered:
            found.append(f"in the ERP but never offered: {sorted(set(self.in_erp) - self.offered)[:5]}")
        if self.twice:
            found.append(f"sales orders twice: {self.twice[:5]}")
        return found

    def rows(self) -> list[tuple[str, object]]:
        return [
            ("orders offered / accepted (200) / in the ERP",
             f"{len(self.offered)} / {len(self.accepted)} / {len(self.in_erp)}"),
            ("lost / sales orders twice", f"{len(self.lost)} / {len(self.twice)}"),
            ("broker away", f"{self.outage_s:.0f}s"),
            ("attempts by answer", dict(sorted(self.outcomes.items()))),
            ("answers during the outage / slowest", f"{self.outage_answers} / "
                                                    f"{self.slowest_outage_answer_s:.2f}s"),
            ("slowest 503", f"{self.slowest_503_s:.2f}s (bound: {self.persist_timeout_s:g}s "
                            f"+ {ANSWER_MARGIN_S}s)"),
            ("/health during the outage", sorted(self.health_during, key=str)),
            ("/health status during the outage", sorted(self.health_status_during)),
            ("/health/live during the outage", sorted(self.live_during, key=str)),
            ("worker exited", self.worker_exited),
        ]


async def _watch_health(url: str, report: OutageReport, stop: asyncio.Event) -> None:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            for path, seen in (("/health", report.health_during), ("/health/live",
                                                                   report.live_during)):
                try:
                    async with session.get(url + path) as resp:
                        seen.add(resp.status)
                        if path == "/health":
                            report.health_status_during.add((await resp.json())["status"])
                except (aiohttp.ClientError, TimeoutError) as exc:
                    seen.add(type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)


async def broker_outage(stack: Any, proxy: BrokerProxy, *, rate_per_s: float = 15,
                        before_s: float = 5.0, outage_s: float = 15.0, after_s: float = 5.0,
                        settle_timeout_s: float = 180.0, persist_timeout_s: float = 3.0,
                        progress: Any = None) -> OutageReport:
    """Run the scenario on ``stack`` (ERP simulator started, its workers' broker URL = the
    proxy's) and return what was seen; `OutageReport.failures` says what did not hold."""
    say = progress or (lambda _msg: None)
    stack.env["RETAIL_SYNC_WEBHOOK_PERSIST_TIMEOUT_S"] = str(persist_timeout_s)
    worker = await stack.start_worker()
    report = OutageReport(outage_s=outage_s, persist_timeout_s=persist_timeout_s)
    shop = TimedShopify(ShopifySimConfig(
        webhook_url=worker.webhook_url(), secret=SECRET,
        rate_per_s=rate_per_s, max_attempts=12, retry_backoff_s=1.0, concurrency=64))
    sending = asyncio.create_task(shop.send_orders(duration_s=before_s + outage_s + after_s))
    await asyncio.sleep(before_s)
    say(f"cutting the broker off for {outage_s:.0f}s")
    await proxy.cut()
    down_at = time.monotonic()
    stop_watch = asyncio.Event()
    watching = asyncio.create_task(_watch_health(worker.url, report, stop_watch))
    await asyncio.sleep(outage_s)
    stop_watch.set()
    await watching
    up_at = time.monotonic()
    await proxy.restore()
    say("broker back; waiting for the sender's retries")
    await sending
    report.offered = {f"shopify:{oid}" for oid in shop.orders}
    report.accepted = {f"shopify:{oid}" for oid in shop.accepted_order_ids()}
    report.outcomes = Counter(outcome for _, _, outcome in shop.attempts)
    report.slowest_503_s = max((s for _, s, o in shop.attempts if o == "503"), default=0.0)
    during = [s for t, s, _ in shop.attempts if down_at <= t < up_at]
    report.outage_answers = len(during)
    report.slowest_outage_answer_s = max(during, default=0.0)
    say("waiting for every accepted order in the ERP")
    deadline = time.monotonic() + settle_timeout_s
    assert stack.erp is not None
    while time.monotonic() < deadline:
        report.in_erp = Counter(s.doc["po_no"] for s in stack.erp.orders.values())
        if not worker.alive() or set(report.in_erp) >= report.accepted:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.0)  # a late duplicate would show now
    report.in_erp = Counter(s.doc["po_no"] for s in stack.erp.orders.values())
    report.worker_exited = not worker.alive()
    return report


async def chaos_scenario(stack: Any, rows: list[tuple[str, object]]) -> None:
    """`retail-sync chaos broker-outage`: its own embedded broker behind the proxy (a configured
    Kafka advertises its own listeners, which a proxy cannot stand in front of)."""
    from retail_sync.chaos import Failed

    def say(message: str) -> None:
        print(f"broker-outage: {message}", file=sys.stderr, flush=True)

    async with ProxiedBroker() as proxied:
        stack.env.update({"RETAIL_SYNC_BROKER_URL": proxied.url,
                          "RETAIL_SYNC_TANSU_COMPAT": "true"})
        report = await broker_outage(stack, proxied.proxy, progress=say)
        rows += report.rows()
        for worker in stack.workers:  # stopped while the proxied broker is still there
            await worker.stop()
    failures = report.failures()
    if failures:
        raise Failed("; ".join(failures))
