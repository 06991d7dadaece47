"""``retail-sync ingress``: the webhook front door as a process of its own (issue 16, session 29).

A worker serves its own ingress listener (retail_sync/ingress.py), so every webhook's HTTP,
signature, dedupe and raw record costs the same process that runs the order path: at 300
webhooks/s that was ~0.7 ms of a worker's ~3.1 ms of CPU per order, and a worker serving its own
webhooks saturated at ~350-400/s (docs/BENCHMARKS.md, session 28). An ingress process does only
that part, with the same code (``ingress.receive_webhook``): verify the signature, claim the
delivery id (Redis, shared with every worker and ingress process), write the raw record to
orders-raw and wait for the broker's acknowledgement before it answers 200. It runs no agents,
holds no table and joins no consumer group, so it starts in about a second, any number of them
can sit behind a load balancer, and a rebalance of the workers does not stop webhooks.

What it starts: Faust's producer only (``App.maybe_start_producer``, the records and exception
records go through the same topic handles and codecs as a worker's), the broker watch
(retail_sync/broker_watch.py: 503 while the broker is away or this process is stopping), the
ingress listener (``RETAIL_SYNC_INGRESS_HOST``/``_PORT``) and an admin listener
(``RETAIL_SYNC_WEB_HOST``/``_PORT``) with ``/metrics`` (``metrics`` scope), ``/health``
(readiness: the broker answers and the process is not stopping) and ``/health/live``. On SIGTERM
it stops taking webhooks (503: the sender retries elsewhere), lets the ones in flight finish
(their records acknowledged or the sender told 503) and flushes the producer. It needs a broker
URL: an embedded broker of its own would be a broker no worker reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from retail_sync import admin_auth, broker_watch, http_body
from retail_sync.context import Context
from retail_sync.ingress import IngressServer
from retail_sync.settings import Settings

log = logging.getLogger(__name__)

#: how long a stop waits for the webhooks in flight (each is bounded by its persist timeout)
DRAIN_S = 30.0


def admin_app(ctx: Context, watch: broker_watch.BrokerWatch,
              tokens: admin_auth.TokenStore | None) -> web.Application:
    """The ingress process's admin listener: ``/metrics`` (token with the ``metrics`` scope),
    ``/health`` and ``/health/live`` (open, as a worker's)."""
    app_id = ctx.settings.app_id

    def json(body: dict[str, Any], status: int, headers: dict[str, str] | None = None
             ) -> web.Response:
        return web.Response(body=orjson.dumps(body), status=status, headers=headers,
                            content_type="application/json")

    async def metrics(request: web.Request) -> web.Response:
        outcome = admin_auth.check(tokens, request, "metrics")
        if not isinstance(outcome, admin_auth.Principal):
            status, message, headers = outcome
            return json({"error": message}, status, headers)
        return web.Response(body=generate_latest(ctx.metrics.registry),
                            content_type=CONTENT_TYPE_LATEST.split(";")[0])

    async def health(request: web.Request) -> web.Response:
        ready = watch.accepting() and watch.reachable is True
        status = watch.state() if not watch.accepting() else ("ok" if ready else "starting")
        return json({"status": status, "app_id": app_id, "role": "ingress",
                     "broker": watch.as_json()}, 200 if ready else 503)

    async def live(request: web.Request) -> web.Response:
        alive = not watch.stopping
        return json({"status": "alive" if alive else "stopping", "app_id": app_id,
                     "role": "ingress"}, 200 if alive else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    return app


async def serve(ctx: Context, stop: asyncio.Event) -> None:
    """Take webhooks until ``stop`` is set, then drain and flush (see the module docstring)."""
    settings, app = ctx.settings, ctx.app
    watch = broker_watch.attach(app, settings)
    probing = asyncio.create_task(watch.run(settings.broker_probe_interval_s))
    producer = await app.maybe_start_producer()
    for topic in (ctx.topics.raw_orders, ctx.topics.sync_exceptions):
        try:  # the workers declare them too; a broker away now is the watch's to say
            await topic.maybe_declare()
        except Exception as exc:  # noqa: BLE001 - said and left to the workers
            log.warning("%s not declared at start: %r", topic.get_topic_name(), exc)
    ingress = IngressServer(ctx)
    await ingress.start()
    admin = http_body.GuardedAppRunner(
        admin_app(ctx, watch, admin_auth.TokenStore.from_settings(settings)), access_log=None,
        header_timeout_s=settings.web_header_timeout_s,
        body_timeout_s=settings.web_body_timeout_s, keepalive_timeout=http_body.IDLE_KEEPALIVE_S,
        shutdown_timeout=DRAIN_S)
    await admin.setup()
    await web.TCPSite(admin, settings.web_host, settings.web_port).start()
    log.info("ingress process %s: webhooks on http://%s:%d, /metrics and /health on "
             "http://%s:%d", settings.app_id, settings.ingress_host, settings.ingress_port,
             settings.web_host, settings.web_port)
    try:
        await stop.wait()
    finally:
        watch.stopping = True  # new webhooks: 503 (the sender retries); /health: 503
        log.info("ingress process stopping: webhooks in flight finish, the producer flushes")
        await ingress.stop()  # aiohttp waits for the handlers in flight
        with contextlib.suppress(Exception):
            await producer.flush()
        await producer.stop()
        await admin.cleanup()
        probing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probing
        close = getattr(ctx.deduper, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()


def main(settings: Settings) -> int:
    """``retail-sync ingress``: serve until SIGTERM or SIGINT (exit 2: no broker URL, or bad
    settings)."""
    from retail_sync import event_loop, tansu_compat
    from retail_sync.app import create_app

    if not settings.broker_url:
        print("retail-sync: the ingress process needs RETAIL_SYNC_BROKER_URL (the workers' "
              "broker): an embedded broker of its own would be one no worker reads",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    event_loop.use_event_loop(settings.event_loop)
    if settings.tansu_compat:
        tansu_compat.install()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        ctx = create_app(settings, settings.broker_url)  # the same topic handles and codecs
    except ValueError as exc:  # e.g. an unreadable admin tokens file
        print(f"retail-sync: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        loop.run_until_complete(serve(ctx, stop))
    finally:
        loop.close()
    return 0
