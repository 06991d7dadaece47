"""Two listeners on a real worker (issue 13): the ingress serves the signed webhook and nothing
else; the admin listener binds 127.0.0.1, wants a token with the right scope on every view but
/health, refuses state changes that are not JSON (no cross-site forgery), routes table views
between workers with the caller's token, and takes rotated tokens from its file without a
restart."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess

import aiohttp
import pytest

from retail_sync.admin_auth import hash_token, new_token
from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory, ShopifySimConfig, ShopifySimulator
from retail_sync.stack import Stack, WorkerProcess
from tests.integration.helpers import SECRET, all_assigned, eventually, headers, order_body

pytestmark = pytest.mark.integration

#: every admin view but /health: (method, path, scope it needs)
ADMIN_VIEWS = [
    ("GET", "/orders/lookup?id=1", "viewer"),
    ("GET", "/orders/shopify:1", "viewer"),
    ("GET", "/exceptions", "viewer"),
    ("GET", "/inventory/SKU-1", "viewer"),
    ("GET", "/metrics", "metrics"),
    ("GET", "/reconciliation?channels=shopify", "operator"),
    ("POST", "/orders/shopify:1/cancel", "operator"),
    ("POST", "/orders/shopify:1/returns", "operator"),
    ("POST", "/exceptions/replay", "operator"),
]


async def _call(method: str, url: str, hdrs: dict[str, str] | None = None,
                data: bytes | None = None) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as session, \
            session.request(method, url, headers=hdrs or {}, data=data) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def _order(stack: Stack, worker: WorkerProcess, seed: int = 13) -> str:
    """One signed order through the ingress, until the admin view shows it; its key."""
    order, body = order_body(ShopifyOrderFactory(seed=seed))
    status, _, text = await _call("POST", worker.webhook_url(), headers(body), body)
    assert status == 200, text
    key = f"shopify:{order['id']}"

    async def known() -> bool:
        return (await worker.get_json(f"/orders/{key}"))[0] == 200
    await eventually(known, timeout_s=30)
    return key


async def test_ingress_serves_only_the_webhook_and_admin_wants_tokens(stack: Stack) -> None:
    worker = await stack.start_worker()
    key = await _order(stack, worker)

    # the ingress: the webhook and nothing else
    for path in (f"/orders/{key}", "/health", "/metrics", "/exceptions", "/orders/lookup?id=1"):
        status, _, _ = await _call("GET", worker.ingress_url + path, stack.admin_headers())
        assert status == 404, path
    status, _, _ = await _call("POST", f"{worker.ingress_url}/orders/{key}/cancel",
                               {**stack.admin_headers(), "Content-Type": "application/json"}, b"{}")
    assert status == 404
    # ... and the webhook is no longer served on the admin listener
    _, body = order_body(ShopifyOrderFactory(seed=14))
    status, _, _ = await _call("POST", f"{worker.url}/webhooks/shopify/orders/create",
                               headers(body), body)
    assert status == 404

    # health stays open: orchestrators probe it
    for path in ("/health", "/health/live"):
        assert (await _call("GET", worker.url + path))[0] == 200

    # every other admin view: 401 without a token or with an unknown one, 403 with another scope
    json_hdr = {"Content-Type": "application/json"}
    for method, path, scope in ADMIN_VIEWS:
        data = b'{"ids": ["x"]}' if method == "POST" else None
        status, hdrs, text = await _call(method, worker.url + path, json_hdr, data)
        assert status == 401, (path, status, text)
        assert hdrs.get("WWW-Authenticate", "").startswith("Bearer"), path
        assert "error" in json.loads(text)
        status, _, _ = await _call(method, worker.url + path,
                                   {**json_hdr, "Authorization": f"Bearer {new_token()}"}, data)
        assert status == 401, path
        other = "viewer" if scope != "viewer" else "pii"
        status, _, text = await _call(method, worker.url + path,
                                      {**json_hdr, **stack.admin_headers(other)}, data)
        assert status == 403, (path, other, text)
        assert scope in json.loads(text)["error"]

    status, _, text = await _call("GET", f"{worker.url}/metrics", stack.admin_headers("metrics"))
    assert status == 200 and "retail_sync_webhooks_total" in text
    status, _, text = await _call("GET", f"{worker.url}/orders/{key}", stack.admin_headers("viewer"))
    assert status == 200 and json.loads(text)["order_key"] == key

    # a cross-site form post: text/plain from a foreign Origin, no token (a browser has none)
    forged = {"Content-Type": "text/plain", "Origin": "https://evil.example"}
    cancel = f"{worker.url}/orders/{key}/cancel"
    status, _, _ = await _call("POST", cancel, forged, b'{"reason": "forged"}')
    assert status == 401
    # even with an operator's token, a state change must be JSON
    status, _, text = await _call("POST", cancel, {**forged, **stack.admin_headers("operator")},
                                  b'{"reason": "forged"}')
    assert status == 415, text
    status, _, _ = await _call("POST", cancel, stack.admin_headers("operator"), b"")  # no type
    assert status == 415
    status, _, _ = await _call("POST", cancel, {**json_hdr, **stack.admin_headers("viewer")},
                               b'{"reason": "viewer"}')
    assert status == 403
    await asyncio.sleep(1.0)
    assert (await worker.get_json(f"/orders/{key}"))[1]["status"] != "cancelled"

    status, _, text = await _call("POST", cancel, {**json_hdr, **stack.admin_headers("operator")},
                                  b'{"reason": "customer asked"}')
    assert status == 202, text

    async def cancelled() -> bool:
        return (await worker.get_json(f"/orders/{key}"))[1]["status"] == "cancelled"
    await eventually(cancelled, timeout_s=30)


def _non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine that is not loopback (traffic to it stays here)."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],  # noqa: S607
                             capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            return parts[parts.index("inet") + 1].split("/")[0]
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        return None
    return None if address.startswith("127.") else address


def _connects(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=3).close()
        return True
    except OSError:
        return False


async def test_admin_port_is_not_reachable_on_a_non_loopback_address(stack: Stack) -> None:
    address = _non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to probe")
    # the ingress at its default bind (every interface): proves the address reaches this host
    stack.env["RETAIL_SYNC_INGRESS_HOST"] = "0.0.0.0"  # noqa: S104
    worker = await stack.start_worker()
    assert _connects("127.0.0.1", worker.port)
    assert _connects(address, worker.ingress_port), f"{address} does not reach this machine"
    assert not _connects(address, worker.port), (
        f"the admin listener answers on {address}:{worker.port}, not only on 127.0.0.1")


async def test_views_routed_between_workers_carry_the_callers_token(stack: Stack) -> None:
    first = await stack.start_worker("w1")
    second = await stack.start_worker("w2")
    await eventually(lambda: all_assigned(first, second), timeout_s=60)
    shop = ShopifySimulator(ShopifySimConfig(webhook_url=first.webhook_url(), secret=SECRET,
                                             rate_per_s=100, seed=43, max_attempts=8))
    await shop.send_orders(count=12)
    keys = sorted(f"shopify:{oid}" for oid in shop.accepted_order_ids())
    assert len(keys) == 12
    viewer = stack.admin_headers("viewer")

    async def answers_on_both(key: str) -> None:
        for worker in (first, second):
            async def found(w: WorkerProcess = worker, k: str = key) -> bool:
                status, _, text = await _call("GET", f"{w.url}/orders/{k}", viewer)
                return status == 200 and json.loads(text)["order_key"] == k
            await eventually(found, timeout_s=30)
            status, _, _ = await _call("GET", f"{worker.url}/orders/{key}")
            assert status == 401
            status, _, text = await _call(
                "GET", f"{worker.url}/orders/lookup?id={key.split(':', 1)[1]}", viewer)
            assert status == 200, text

    # 4 partitions over 2 workers: each asks the other for about half the keys; the keys side by
    # side (a lookup reads the archive topic for every other channel's key, ~0.5 s apiece)
    await asyncio.gather(*(answers_on_both(key) for key in keys))


async def test_tokens_rotate_without_a_restart(stack: Stack, tmp_path) -> None:
    path = tmp_path / "admin-tokens.json"
    old, new = new_token(), new_token()

    def write(entries: dict[str, str]) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({name: {"token_sha256": hash_token(tok), "scopes": ["viewer"]}
                                   for name, tok in entries.items()}))
        os.replace(tmp, path)  # as Docker/Kubernetes and `retail-sync admin-token` do

    write({"ops": old})
    stack.env["RETAIL_SYNC_ADMIN_TOKENS_FILE"] = str(path)
    worker = await stack.start_worker()
    pid = worker.proc.pid  # type: ignore[union-attr]
    url = f"{worker.url}/exceptions?limit=1"

    async def status_with(token: str) -> int:
        return (await _call("GET", url, {"Authorization": f"Bearer {token}"}))[0]

    assert await status_with(old) == 200
    assert await status_with(new) == 401
    write({"ops-2": new})  # rotate: the new token in, the old one revoked
    await eventually(lambda: _is(status_with(new), 200), timeout_s=10)
    assert await status_with(old) == 401
    path.write_text("{ not json")  # a broken edit
    await asyncio.sleep(1.5)
    assert await status_with(new) == 200  # a broken file keeps the last good tokens
    assert worker.alive() and worker.proc.pid == pid  # type: ignore[union-attr]
    assert "admin tokens file not reloaded" in worker.log_path.read_text()


async def _is(call: object, expected: int) -> bool:
    return await call == expected  # type: ignore[misc]
