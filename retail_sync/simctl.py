"""`retail-sync sim erp|shopify`: run a simulator as a standalone server (docker-compose, load tests)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from retail_sync.cli import load_settings
from retail_sync.simulators.erpnext.simulator import ErpSimConfig, ErpSimulator
from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator


def run_simulator(args: argparse.Namespace) -> int:
    asyncio.run(_serve(args))
    return 0


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings = load_settings()
    if args.system == "erp":
        erp = ErpSimulator(ErpSimConfig(api_key=settings.erp_api_key.get_secret_value(),
                                        api_secret=settings.erp_api_secret.get_secret_value()))
        print(f"ERP simulator on {await erp.start(args.host, args.port)}", flush=True)
        await stop.wait()
        await erp.stop()
        return
    shop = ShopifySimulator(ShopifySimConfig(
        webhook_url=args.webhook_url, secret=settings.shopify_webhook_secret.get_secret_value(),
        rate_per_s=args.rate, max_attempts=8,
    ))
    print(f"Shopify simulator on {await shop.start(args.host, args.port)}, sending "
          f"{args.rate:g} orders/s to {args.webhook_url}", flush=True)
    sending = asyncio.create_task(shop.send_orders())
    await stop.wait()
    shop.stop_sending()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(sending, 30)
    await shop.stop()
