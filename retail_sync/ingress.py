"""The ingress listener: the worker's public HTTP port, serving inbound webhooks and nothing else.

A worker has two listeners (docs/ARCHITECTURE.md §10):

- **ingress** (``RETAIL_SYNC_INGRESS_HOST``/``_PORT``, default 0.0.0.0:6065): ``POST
  /webhooks/<channel>/{resource}/{event}`` only, for each push channel (Shopify's built in),
  authenticated by the webhook's signature (``web.receive_webhook`` asks the channel plugin's
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

import logging
from typing import Any

import orjson
from aiohttp import web
from mode import Service

from retail_sync import http_body
from retail_sync.context import Context

log = logging.getLogger(__name__)

WEBHOOK_ROUTE = "/webhooks/{channel}/{{resource}}/{{event}}"


def ingress_app(ctx: Context | None) -> web.Application:
    """The aiohttp application of the ingress listener: one webhook route per push channel (a
    channel plugin with ``inbound`` hooks; the built-in one is Shopify's)."""
    from retail_sync.web import receive_webhook  # web registers this service: import late

    def receiver(channel: str) -> Any:
        async def webhook(request: web.Request) -> web.Response:
            assert ctx is not None  # routes are served only with a context
            topic = f"{request.match_info['resource']}/{request.match_info['event']}"
            status, body = await receive_webhook(ctx, request, channel, topic)  # type: ignore[arg-type]
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


def register(ctx: Context) -> IngressServer:
    """Start and stop the ingress listener with the worker's (admin) web server."""
    server = IngressServer(ctx)
    ctx.app.web.add_dependency(server)
    return server
