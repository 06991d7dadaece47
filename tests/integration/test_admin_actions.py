"""Admin actions on a real worker (issue 13): validated at the door (404, 409, 422 before any
effect), audited (X-Request-Id, a record on <app>.admin-audit with the token's name, shown by
GET /audit and on the order's timeline), refusals that happen later on the order's timeline; and
reconciliation as a job (202 + job id, one at a time per channel: 409, the result kept)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from retail_sync.broker import free_port
from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator
from retail_sync.simulators.wms.simulator import WmsSimConfig, WmsSimulator
from retail_sync.stack import Stack, WorkerProcess, token_name
from tests.integration.helpers import SECRET, eventually

pytestmark = pytest.mark.integration

SKUS = ["ADMIN-A", "ADMIN-B"]
OPERATOR = ("operator", "viewer")


async def call(worker: WorkerProcess, method: str, path: str, hdrs: dict[str, str],
               body: Any = None) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as session, session.request(
            method, worker.url + path, json=body, headers=hdrs) as resp:
        return resp.status, resp.headers.copy(), await resp.json(content_type=None)


async def state_of(worker: WorkerProcess, key: str) -> dict[str, Any] | None:
    status, body = await worker.get_json(f"/orders/{key}")
    return body if status == 200 else None


async def until(worker: WorkerProcess, key: str, check: Any, timeout_s: float = 60) -> dict:
    async def probe() -> dict | None:
        state = await state_of(worker, key)
        return state if state is not None and check(state) else None
    return await eventually(probe, timeout_s=timeout_s, every=0.3)


async def audit_of(stack: Stack, worker: WorkerProcess, target: str) -> list[dict[str, Any]]:
    status, _, body = await call(worker, "GET", f"/audit?target={target}",
                                 stack.admin_headers("viewer"))
    assert status == 200, body
    return body["records"]


def released(state: dict) -> bool:
    return state["correlation"]["wms_fulfilment_id"] is not None


async def test_actions_validated_audited_and_refusals_on_the_timeline(stack: Stack) -> None:
    ingress = free_port()
    shop = ShopifySimulator(ShopifySimConfig(
        webhook_url=f"http://127.0.0.1:{ingress}/webhooks/shopify/orders/create", secret=SECRET,
        skus=SKUS, max_quantity=2, seed=131))
    wms = WmsSimulator(WmsSimConfig(hold=True, seed=132))  # ships only when told
    stack.env.update({"RETAIL_SYNC_SHOPIFY_ADMIN_BASE_URL": await shop.start(),
                      "RETAIL_SYNC_WMS_BASE_URL": await wms.start(),
                      "RETAIL_SYNC_WMS_POLL_INTERVAL_S": "0.3",
                      "RETAIL_SYNC_MARKETPLACE_MAX_ATTEMPTS": "2"})
    operator, viewer = stack.admin_headers(*OPERATOR), stack.admin_headers("viewer")
    who = token_name(OPERATOR)
    try:
        worker = await stack.start_worker(ingress_port=ingress)
        orders = []
        for _ in range(3):
            placed = await shop.send_order([(SKUS[0], 2), (SKUS[1], 1)])
            assert placed is not None
            orders.append(f"shopify:{placed['id']}")
        shipped_key, cancel_key, late_key = orders
        for key in orders:
            await until(worker, key, released)

        # unknown order: 404 for both actions, and nothing happens
        for path, body in (("/orders/shopify:404404/cancel", {"reason": "x"}),
                           ("/orders/shopify:404404/returns", {"lines": {"1": 1}, "amount": "1"})):
            status, hdrs, answer = await call(worker, "POST", path, operator, body)
            assert status == 404, answer
            assert hdrs["X-Request-Id"] == answer["request_id"]

        # one unit of the first line shipped
        state = await state_of(worker, shipped_key)
        first = state["order"]["lines"][0]["line_id"]
        wms.ship_now(shipped_key, [{"line_id": first, "quantity": 1}])
        state = await until(worker, shipped_key, lambda s: s["status"] == "partially_shipped")
        paid = Decimal(state["order"]["total"]["amount"])
        returns = f"/orders/{shipped_key}/returns"
        for body, why in (({"lines": {first: -5}, "amount": "1.00"}, "at least 1"),
                          ({"lines": {first: 0}, "amount": "1.00"}, "at least 1"),
                          ({"lines": {"no-such-line": 1}, "amount": "1.00"}, "not lines of"),
                          ({"lines": {first: 2}, "amount": "1.00"}, "1 returnable"),
                          ({"lines": {first: 1}, "amount": str(paid + 1)}, "more than was paid"),
                          ({"lines": {first: 1}, "amount": "-1"}, "0 or more")):
            status, _, answer = await call(worker, "POST", returns, operator, body)
            assert status == 422 and why in answer["error"], (body, status, answer)
        # shipped (in part): a cancellation is refused at the door
        status, _, answer = await call(worker, "POST", f"/orders/{shipped_key}/cancel", operator,
                                       {"reason": "too late"})
        assert status == 409 and "too late to cancel" in answer["error"], answer
        # a valid return goes through, with who and the request on the timeline
        status, hdrs, answer = await call(worker, "POST", returns, operator, {
            "lines": {first: 1}, "amount": "1.00", "restock": False})
        assert status == 202, answer
        rid = hdrs["X-Request-Id"]
        state = await until(worker, shipped_key, lambda s: answer["refund_id"] in s["refunds"])
        assert any(t["event"] == "return_requested" and who in t["detail"] and rid in t["detail"]
                   for t in state["timeline"]), state["timeline"]
        assert all(r["amount"] >= "0" and min(r["lines"].values()) > 0
                   for r in state["refunds"].values())

        # an operator cancels: 202, the audit record (who, request id) before the event, the
        # timeline names them
        status, hdrs, answer = await call(worker, "POST", f"/orders/{cancel_key}/cancel",
                                          operator, {"reason": "customer called"})
        assert status == 202, answer
        rid = hdrs["X-Request-Id"]
        assert answer["request_id"] == rid
        records = await audit_of(stack, worker, cancel_key)
        assert [(r["actor"], r["action"], r["outcome"], r["request_id"]) for r in records] == [
            (who, "cancel", "accepted", rid)]
        state = await until(worker, cancel_key, lambda s: s["status"] == "cancelled")
        entry = next(t for t in state["timeline"] if t["event"] == "cancel_requested")
        assert f"cancel requested by {who}, request id {rid}" in entry["detail"]
        # the refusals at the door are audited too, with the reason
        refused = await audit_of(stack, worker, shipped_key)
        assert {(r["outcome"], r["status"]) for r in refused} >= {("refused", 422),
                                                                 ("refused", 409),
                                                                 ("accepted", 202)}
        assert all(r["actor"] == who and r["reason"] for r in refused
                   if r["outcome"] == "refused")
        status, _, body = await call(worker, "GET", f"/audit?actor={who}&limit=3", viewer)
        assert status == 200 and len(body["records"]) == 3, body
        assert body["records"][0]["at"] >= body["records"][-1]["at"]

        # refused later: accepted at the door, the goods leave the warehouse before the
        # warehouse gets the cancellation; the refusal is on the timeline with the request
        wms.set_config({"error_rate": 1.0})  # the warehouse cannot be reached for a while
        status, hdrs, answer = await call(worker, "POST", f"/orders/{late_key}/cancel",
                                          operator, {"reason": "changed mind"})
        assert status == 202, answer
        late_rid = hdrs["X-Request-Id"]
        await until(worker, late_key, lambda s: s["status"] == "cancel_pending")
        wms.ship_now(late_key)
        wms.set_config({"error_rate": 0.0})
        state = await until(worker, late_key, lambda s: any(
            t["event"] == "cancel_refused" for t in s["timeline"]))
        refusal = next(t for t in state["timeline"] if t["event"] == "cancel_refused")
        assert late_rid in refusal["detail"] and who in refusal["detail"], refusal
        assert state["status"] in ("shipped", "partially_shipped")
        later = await eventually(lambda: _outcome(stack, worker, late_key, "refused_later"),
                                 timeout_s=20)
        assert later["request_id"] == late_rid and later["actor"] == who
    finally:
        await shop.stop()
        await wms.stop()


async def _outcome(stack: Stack, worker: WorkerProcess, target: str,
                   outcome: str) -> dict[str, Any] | None:
    return next((r for r in await audit_of(stack, worker, target) if r["outcome"] == outcome),
                None)


class HeldShopify:
    """A Shopify Admin API stand-in whose orders.json answers only once released (an empty
    shop): a reconciliation of Shopify stays running until the test lets it finish."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls = 0
        self.runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}"

    async def handle(self, request: web.Request) -> web.Response:
        if request.path.endswith("/orders.json"):
            self.calls += 1
            await self.gate.wait()
            return web.json_response({"orders": []})
        return web.json_response({})

    async def stop(self) -> None:
        self.gate.set()
        if self.runner is not None:
            await self.runner.cleanup()


async def test_reconciliation_is_a_job_one_at_a_time_per_channel(stack: Stack) -> None:
    held = HeldShopify()
    stack.env.update({"RETAIL_SYNC_SHOPIFY_ADMIN_BASE_URL": await held.start()})
    operator, viewer = stack.admin_headers(*OPERATOR), stack.admin_headers("viewer")
    try:
        worker = await stack.start_worker()
        status, hdrs, job = await call(worker, "POST", "/reconciliation/jobs", operator,
                                       {"channels": ["shopify"], "days": 2})
        assert status == 202 and job["status"] == "running", job
        job_id = job["job_id"]
        await eventually(lambda: held.calls >= 1, timeout_s=20)  # it is reading Shopify
        # a second job for the busy channel: 409 naming the running one; nothing called
        status, _, busy = await call(worker, "POST", "/reconciliation/jobs", operator,
                                     {"channels": ["shopify"], "days": 2})
        assert status == 409 and busy["running_job_id"] == job_id, busy
        assert held.calls == 1
        status, _, bad = await call(worker, "POST", "/reconciliation/jobs", operator,
                                    {"channels": ["nowhere"]})
        assert status == 422, bad
        for days in (0, -1, "abc", 1e308):
            status, _, bad = await call(worker, "POST", "/reconciliation/jobs", operator,
                                        {"channels": ["shopify"], "days": days})
            assert status == 422 and "days must be a number" in bad["error"], bad
        status, _, listing = await call(worker, "GET", "/reconciliation/jobs", viewer)
        assert status == 200 and [j["status"] for j in listing["jobs"]] == ["running"]
        # the old synchronous view points at the job API and runs nothing
        status, _, gone = await call(worker, "GET", "/reconciliation?channels=shopify", operator)
        assert status == 410 and gone["jobs"] == "/reconciliation/jobs" and held.calls == 1
        held.gate.set()

        async def finished() -> dict | None:
            code, _, body = await call(worker, "GET", f"/reconciliation/jobs/{job_id}", viewer)
            return body if code == 200 and body["status"] != "running" else None
        result = await eventually(finished, timeout_s=30)
        assert result["status"] == "done", result
        assert result["result"]["channels"]["shopify"]["marketplace"] == 0
        records = await audit_of(stack, worker, "reconciliation:shopify")
        assert {(r["outcome"], r["status"]) for r in records} == {
            ("accepted", 202), ("refused", 409), ("done", None)}, records
        assert all(r["actor"] == token_name(OPERATOR) for r in records)
        # free again: a new job starts
        status, _, again = await call(worker, "POST", "/reconciliation/jobs", operator,
                                      {"channels": ["shopify"], "days": 1})
        assert status == 202 and again["job_id"] != job_id, again
    finally:
        await held.stop()
