"""The ingress listener: the worker's public HTTP port, serving inbound webhooks and nothing else.

A worker has two listeners (docs/ARCHITECTURE.md §10):

- **ingress** (``RETAIL_SYNC_INGRESS_HOST``/``_PORT``, default 0.0.0.0:6065): ``POST
  /webhooks/<channel>/{resource}/{event}`` only, for each push channel (Shopify's built in),
  authenticated by the webhook's signature (``receive_webhook`` below asks the channel plugin's
  ``inbound`` hooks); every other path is 404, other methods 405. Public by design.
- **admin** (``RETAIL_SYNC_WEB_HOST``/``_PORT``, default 127.0.0.1:6066): Faust's web server with
  the views, actions, metrics and health, token-authenticated (``retail_sync.admin_auth``), and
  table routing between workers.

The ingress is an aiohttp server of its own, run through ``http_body.GuardedAppRunner`` (the same
header and body times and idle keep-alive bound as the admin listener), started and stopped with
Faust's web service: it listens as early as the admin listener, while tables recover (a webhook
only writes a raw record to Kafka and needs no table).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web
from mode import Service

from retail_sync import broker_watch, http_body
from retail_sync.agents.exceptions import record_exception
from retail_sync.channels import plugin_settings
from retail_sync.connectors.plugin import InboundHooks
from retail_sync.context import Context
from retail_sync.streams.models import ExceptionKind, RawOrderMessage, utcnow

log = logging.getLogger(__name__)

WEBHOOK_ROUTE = "/webhooks/{channel}/{{resource}}/{{event}}"


def ingress_app(ctx: Context | None) -> web.Application:
    """The aiohttp application of the ingress listener: one webhook route per push channel (a
    channel plugin with ``inbound`` hooks; the built-in one is Shopify's)."""
    def receiver(channel: str) -> Any:
        async def webhook(request: web.Request) -> web.Response:
            assert ctx is not None  # routes are served only with a context
            topic = f"{request.match_info['resource']}/{request.match_info['event']}"
            status, body = await receive_webhook(ctx, request, channel, topic)
            return web.Response(body=orjson.dumps(body), status=status,
                                content_type="application/json")

        return webhook

    from retail_sync.channels import BUILTIN

    # without a context (the OpenAPI document lists the routes): the built-in channels
    plugins = ctx.channels if ctx is not None else {p.channel: p for p in BUILTIN}
    app = web.Application()
    for name, plugin in plugins.items():
        if plugin.inbound is not None:
            app.router.add_post(WEBHOOK_ROUTE.format(channel=name), receiver(name))
    return app


async def receive_webhook(ctx: Context, request: web.Request, channel: str,
                          topic: str) -> tuple[int, dict[str, Any]]:
    """Verify, dedupe and persist one webhook delivery of ``channel`` (a push channel: its
    plugin's ``inbound`` hooks say how); (HTTP status, JSON body) to answer."""
    settings, metrics = ctx.settings, ctx.metrics

    def outcome(name: str, status: int, message: str) -> tuple[int, dict[str, Any]]:
        metrics.webhooks.labels(channel=channel, outcome=name).inc()
        return status, {"status": name, "message": message}

    plugin = ctx.channels.get(channel)
    hooks = plugin.inbound if plugin is not None else None
    if plugin is None or hooks is None:
        return outcome("unsupported_topic", 404, f"channel {channel!r} receives no webhooks")

    try:
        body = await http_body.read_body(request, settings.webhook_max_body_bytes)
    except http_body.BodyRejected as exc:  # too_large 413, body_timeout 408, bad_framing 400
        return outcome(exc.outcome, exc.code, exc.detail)
    headers = request.headers
    if not hooks.verify(body, headers, plugin_settings(plugin, settings)):
        return outcome("bad_signature", 401, hooks.signature_error)
    delivery = hooks.delivery(headers)
    delivery_id = delivery.delivery_id
    if not delivery_id:
        return outcome("bad_request", 400, hooks.delivery_id_error)
    if topic not in hooks.topics:
        return outcome("unsupported_topic", 404, f"topic {topic!r} is not handled here")
    watch = broker_watch.watch_of(ctx.app)
    if watch is not None and not watch.accepting(ctx.app):  # broker away or worker stopping
        return outcome("unavailable", 503, watch.refusal(ctx.app))
    claimed = _claim_refusal(await ctx.deduper.claim(delivery_id), delivery_id)
    if claimed is not None:
        return outcome(*claimed)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # Kept as an exception record and remembered as seen: the sender's retries of this same
        # delivery are answered "duplicate" instead of filling the dead-letter topic.
        await record_exception(
            ctx, kind=ExceptionKind.DECODE, exc=f"webhook body is not JSON: {exc}", payload=body,
            channel=channel, source_key=f"{channel}:delivery:{delivery_id}",
        )
        await ctx.deduper.confirm(delivery_id)
        return outcome("malformed", 400, f"body is not valid JSON: {exc}")
    raw = RawOrderMessage(
        channel=channel, topic=topic, delivery_id=delivery_id,
        event_id=delivery.event_id, shop_domain=delivery.shop_domain,
        api_version=delivery.api_version, triggered_at=delivery.triggered_at,
        received_at=utcnow(), body=body.decode("utf-8", "replace"),
    )
    not_persisted = await _persisted(ctx, hooks, payload, delivery_id, raw)
    if not_persisted is not None:
        return outcome("unavailable", 503, not_persisted)
    stopping = await _stopping_since(ctx, watch, delivery_id)
    if stopping is not None:
        return outcome("unavailable", 503, stopping)
    await ctx.deduper.confirm(delivery_id)  # only now: a worker dying before this loses nothing
    return outcome("accepted", 200, "received")


def _claim_refusal(claim: str, delivery_id: str) -> tuple[str, int, str] | None:
    """The answer to a delivery the deduper did not give to us (None: it did)."""
    if claim == "done":
        return "duplicate", 200, f"delivery {delivery_id} was already received"
    if claim == "pending":  # another worker is writing it now: the sender retries later
        return "in_progress", 503, f"delivery {delivery_id} is being received; retry"
    return None


async def _stopping_since(ctx: Context, watch: broker_watch.BrokerWatch | None,
                          delivery_id: str) -> str | None:
    """After the broker's acknowledgement (an answer from the broker): the refusal when the
    worker began to stop on the record's way (None: it did not)."""
    if watch is None:
        return None
    watch.mark_ok()
    if watch.accepting(ctx.app):
        return None
    await ctx.deduper.forget(delivery_id)  # the retry is taken (a duplicate, not a loss)
    return watch.refusal(ctx.app)


async def _persisted(ctx: Context, hooks: InboundHooks, payload: Any, delivery_id: str,
                     raw: RawOrderMessage) -> str | None:
    """Write the raw delivery and wait for the broker; None when it is written, else why not
    (the delivery is forgotten by the deduper: the sender will retry; let it)."""
    timeout_s = ctx.settings.webhook_persist_timeout_s
    try:
        # bounded: Faust's producer would wait producer_request_timeout_s (20 min) for a broker
        # that is away. A record timed out here may still reach the broker later: a duplicate
        # raw record (the order table keeps one order per key), never a loss
        await asyncio.wait_for(_persist(ctx, hooks.order_key(payload, delivery_id), raw), timeout_s)
    except Exception as exc:  # noqa: BLE001 - the sender will retry; let it
        await ctx.deduper.forget(delivery_id)
        if isinstance(exc, TimeoutError):
            log.warning("webhook %s: no broker acknowledgement within %.1f s: 503",
                        delivery_id, timeout_s)
            return (f"the broker did not acknowledge the delivery "
                    f"within {timeout_s:g} s; retry")
        log.exception("could not write webhook %s to Kafka", delivery_id)
        return f"could not persist the delivery: {exc}"
    return None


async def _persist(ctx: Context, key: str, raw: RawOrderMessage) -> None:
    """Send and wait for the broker's acknowledgement before the sender hears 200."""
    pending = await ctx.topics.raw_orders.send(key=key, value=raw)
    # shielded: when the caller gives up waiting (the persist timeout), the record stays with
    # the producer, which may still deliver it (a duplicate, never a loss); cancelling Faust's
    # future instead logged a CancelledError traceback from Topic._on_published per webhook
    await asyncio.shield(pending)


class IngressServer(Service):
    """Serves ``ingress_app`` on the ingress host and port while the worker runs."""

    def __init__(self, ctx: Context, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ctx = ctx
        self.host = ctx.settings.ingress_host
        self.port = ctx.settings.ingress_port
        self._runner: http_body.GuardedAppRunner | None = None

    async def on_start(self) -> None:
        settings = self.ctx.settings
        runner = http_body.GuardedAppRunner(
            ingress_app(self.ctx), access_log=None,
            header_timeout_s=settings.web_header_timeout_s,
            body_timeout_s=settings.web_body_timeout_s,
            keepalive_timeout=http_body.IDLE_KEEPALIVE_S)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("ingress listener on http://%s:%d (webhooks only)", self.host, self.port)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def register(ctx: Context) -> IngressServer | None:
    """Start and stop the ingress listener with the worker's (admin) web server (none when
    ``worker_ingress`` is off: the webhooks go to ingress processes only)."""
    if not ctx.settings.worker_ingress:
        return None
    server = IngressServer(ctx)
    ctx.app.web.add_dependency(server)
    return server
