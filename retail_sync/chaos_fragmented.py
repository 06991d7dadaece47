"""`retail-sync chaos webhook-fragmented`: signed Shopify orders whose bytes arrive in pieces.

One worker (header time 2 s, body time 3 s, the default 512 KiB body limit) receives, over raw
sockets and all at once, valid signed orders each fragmented its own way (split writes with
pauses, headers cut mid-line, chunked in 1, 2 or many chunks, chunk-size lines cut across
writes, 200 kB and exactly-the-limit bodies), oversize bodies (Content-Length over the limit,
one byte over it chunked, 20 MiB chunked) and slow clients (a body trickling one byte every
0.5 s, headers one byte every 0.3 s, a connection that says nothing). Passes when every valid
order was answered 200 and is in the ERP exactly once (and nothing else is), every oversize
body got 413, every slow client was dropped within its time (+ a margin), and the worker is
alive and healthy at the end. See docs/ARCHITECTURE.md §5f.1.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from retail_sync import raw_http
from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory, sign
from retail_sync.stack import Stack

SECRET = "shpss_demo_secret"  # noqa: S105 - the demo's webhook secret
PATH = "/webhooks/shopify/orders/create"
LIMIT = 512 * 1024  # RETAIL_SYNC_WEBHOOK_MAX_BODY_BYTES default
SMALL = 9000  # an ordinary order padded to this size (the simulator's orders are 4.3-6.9 kB)
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 3.0
DROP_MARGIN_S = 5.0  # a slow client must be gone within its time plus this
VALID_ROUNDS = 3  # each valid fragmentation is sent this many times (own cuts and pauses)


def shopify_delivery(factory: ShopifyOrderFactory, size: int | None, secret: str = SECRET,
                     ) -> tuple[str, bytes, dict[str, str]]:
    """(order key, body, headers) of one signed orders/create delivery; with ``size`` the order's
    ``note`` pads the JSON body to exactly that many bytes."""
    order = factory.order()
    if size is not None:
        order["note"] = ""
        bare = len(json.dumps(order).encode())
        if size < bare:
            raise ValueError(f"an order needs at least {bare} bytes")
        order["note"] = "n" * (size - bare)
    body = json.dumps(order).encode()
    assert size is None or len(body) == size
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Hmac-Sha256": sign(body, secret),
        "X-Shopify-Shop-Domain": factory.shop_domain,
        "X-Shopify-API-Version": "2024-04",
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
    }
    return f"shopify:{order['id']}", body, headers


def _interleave(pieces: list[bytes], pause_s: float) -> list[bytes | float]:
    plan: list[bytes | float] = []
    for i, piece in enumerate(pieces):
        if i:
            plan.append(pause_s)
        plan.append(piece)
    return plan


def _cuts(data: bytes, n: int, rng: random.Random) -> list[bytes]:
    """``data`` cut at ``n - 1`` random places (pieces non-empty)."""
    points = sorted(rng.sample(range(1, len(data)), min(n - 1, len(data) - 1)))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


#: A fragmentation: (plan for head + body, size of the body or None for an ordinary order).
Fragmenter = Callable[[str, bytes, dict[str, str], random.Random], list[bytes | float]]


def _cl(hdrs: dict[str, str], body: bytes) -> bytes:
    return raw_http.head(PATH, hdrs, content_length=len(body))


def _chunked_head(hdrs: dict[str, str]) -> bytes:
    return raw_http.head(PATH, hdrs, chunked=True)


VALID: dict[str, tuple[int | None, Fragmenter]] = {
    "one write": (None, lambda k, b, h, r: [_cl(h, b) + b]),
    "2 writes 200 ms apart": (SMALL, lambda k, b, h, r: _interleave(
        [_cl(h, b) + raw_http.split(b, 2)[0], raw_http.split(b, 2)[1]], 0.2)),
    "head alone, body in 5 writes": (None, lambda k, b, h, r: _interleave(
        [_cl(h, b), *_cuts(b, 5, r)], 0.1)),
    "head cut mid-line, 3 writes": (None, lambda k, b, h, r: _interleave(
        _cuts(_cl(h, b) + b, 3, r), 0.15)),
    "60 small writes": (None, lambda k, b, h, r: _interleave(_cuts(_cl(h, b) + b, 60, r), 0.01)),
    "chunked, 1 chunk": (None, lambda k, b, h, r: [_chunked_head(h),
                                                   *raw_http.chunked_body([b])]),
    "chunked, 2 chunks 200 ms apart": (None, lambda k, b, h, r: [
        _chunked_head(h), *raw_http.chunked_body(raw_http.split(b, 2), 0.2)]),
    "chunked, 100 chunks": (None, lambda k, b, h, r: [
        _chunked_head(h), *raw_http.chunked_body(raw_http.split(b, 100))]),
    "chunked, cut across size lines": (None, lambda k, b, h, r: _interleave(_cuts(
        _chunked_head(h) + b"".join(raw_http.chunk(p) for p in _cuts(b, 7, r))
        + raw_http.chunk(b""), 12, r), 0.05)),
    "200 kB in 8 writes": (200_000, lambda k, b, h, r: _interleave(
        [_cl(h, b), *raw_http.split(b, 8)], 0.05)),
    "exactly the limit, chunked": (LIMIT, lambda k, b, h, r: [
        _chunked_head(h), *raw_http.chunked_body(raw_http.split(b, 9), 0.05)]),
    "exactly the limit, Content-Length": (LIMIT, lambda k, b, h, r: _interleave(
        [_cl(h, b), *raw_http.split(b, 4)], 0.05)),
}


def _twenty_mib(hdrs: dict[str, str]) -> list[bytes | float]:
    piece = raw_http.chunk(b" " * 65536)
    plan: list[bytes | float] = [_chunked_head(hdrs)]
    for _ in range(20 * 16):
        plan += [piece, 0.001]
    return [*plan, raw_http.chunk(b"")]


OVERSIZE: dict[str, tuple[int, Callable[[bytes, dict[str, str]], list[bytes | float]]]] = {
    "Content-Length over the limit": (LIMIT + 1, lambda b, h: [_cl(h, b), 0.5, b]),
    "limit + 1, chunked": (LIMIT + 1, lambda b, h: [
        _chunked_head(h), *raw_http.chunked_body(raw_http.split(b, 9), 0.05)]),
    "20 MiB, chunked": (SMALL, lambda b, h: _twenty_mib(h)),
}


def _trickle(b: bytes, h: dict[str, str]) -> list[bytes | float]:
    plan: list[bytes | float] = [_cl(h, b)]
    for byte in b[:80]:
        plan += [bytes([byte]), 0.5]
    return plan


def _slow_head(b: bytes, h: dict[str, str]) -> list[bytes | float]:
    plan: list[bytes | float] = []
    for byte in _cl(h, b)[:150]:
        plan += [bytes([byte]), 0.3]
    return plan


SLOW: dict[str, tuple[float, Callable[[bytes, dict[str, str]], list[bytes | float]]]] = {
    "body, 1 byte / 0.5 s": (BODY_TIMEOUT_S, _trickle),
    "headers, 1 byte / 0.3 s": (HEADER_TIMEOUT_S, _slow_head),
    "connects, says nothing": (HEADER_TIMEOUT_S, lambda b, h: [60.0]),
}


@dataclass
class Case:
    kind: str  # valid | oversize | slow
    name: str
    key: str
    plan: list[bytes | float]
    limit_s: float = 0.0  # slow: must be dropped within this (+ DROP_MARGIN_S)
    answer: raw_http.RawAnswer | None = None
    took_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    def judge(self) -> None:
        a = self.answer
        assert a is not None
        status = (a.json() or {}).get("status") if a.status and a.body else None
        if self.kind == "valid" and (a.status, status) != (200, "accepted"):
            self.problems.append(f"answered {a.status} {status or a.error or ''}".strip())
        if self.kind == "oversize" and a.status != 413:
            self.problems.append(f"answered {a.status}, not 413")
        if self.kind == "slow":
            if not a.closed or a.plan_done or a.status not in (408, None):
                self.problems.append(f"not dropped (answer {a.status}, closed {a.closed})")
            elif self.took_s > self.limit_s + DROP_MARGIN_S:
                self.problems.append(f"dropped after {self.took_s:.1f}s, over "
                                     f"{self.limit_s:g}s + {DROP_MARGIN_S:g}s")

    def expected(self) -> str:
        return {"valid": "200, ERP once", "oversize": "413",
                "slow": f"dropped by {self.limit_s:g}s"}[self.kind]


def build_cases(seed: int = 11) -> list[Case]:
    rng, factory = random.Random(seed), ShopifyOrderFactory(seed=seed)
    cases = []
    for round_ in range(VALID_ROUNDS):
        for name, (size, fragment) in VALID.items():
            key, body, hdrs = shopify_delivery(factory, size)
            cases.append(Case("valid", f"{name} #{round_ + 1}", key, fragment(key, body, hdrs, rng)))
    for name, (size, plan) in OVERSIZE.items():
        key, body, hdrs = shopify_delivery(factory, size)
        cases.append(Case("oversize", name, key, plan(body, hdrs)))
    for name, (limit, plan) in SLOW.items():
        key, body, hdrs = shopify_delivery(factory, SMALL)
        cases.append(Case("slow", name, key, plan(body, hdrs), limit_s=limit))
    return cases


async def _run_case(port: int, case: Case, gate: asyncio.Semaphore) -> None:
    async with gate:
        started = time.monotonic()
        try:
            case.answer = await raw_http.send("127.0.0.1", port, case.plan, answer_timeout_s=60)
        except OSError as exc:
            case.answer = raw_http.RawAnswer(None, {}, b"", True, 0, 0.0, False, repr(exc))
        case.took_s = time.monotonic() - started
    case.judge()


def case_table(cases: list[Case]) -> str:
    head = f"  {'case':<46}{'expected':<17}{'answer':<8}{'sent':>10}{'took':>7}  verdict"
    lines = [head, "  " + "─" * (len(head) - 2)]
    for c in cases:
        a = c.answer
        answer = ("-" if a is None else str(a.status) if a.status is not None
                  else "closed" if a.closed else "none")
        sent = f"{a.sent:,}" if a else "-"
        lines.append(f"  {c.kind + ': ' + c.name:<46}{c.expected():<17}{answer:<8}{sent:>10}"
                     f"{c.took_s:>6.1f}s  {'ok' if not c.problems else '; '.join(c.problems)}")
    return "\n".join(lines)


async def webhook_fragmented(stack: Stack, rows: list[tuple[str, object]]) -> None:
    from retail_sync.chaos import Failed, until  # here: chaos imports this module lazily

    erp = stack.erp
    assert erp is not None
    stack.env.update({"RETAIL_SYNC_WEB_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
                      "RETAIL_SYNC_WEB_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)})
    worker = await stack.start_worker()
    cases = build_cases()
    gate = asyncio.Semaphore(8)
    # the slow clients first, so they hold connections while the rest arrive
    order = sorted(cases, key=lambda c: c.kind != "slow")
    await asyncio.gather(*(_run_case(worker.ingress_port, c, gate) for c in order))

    valid = [c for c in cases if c.kind == "valid"]
    accepted = {c.key for c in valid if not c.problems}

    def erp_counts() -> Counter[str]:
        return Counter(s.doc["po_no"] for s in erp.orders.values())
    try:
        await until(lambda: accepted <= set(erp_counts()), 90, "every accepted order in the ERP")
    except Failed:
        pass  # reported per case below
    counts = erp_counts()
    for c in valid:
        if c.key in accepted and counts[c.key] != 1:
            c.problems.append(f"in the ERP {counts[c.key]} times")
    strays = sorted(set(counts) - {c.key for c in valid})
    status, _ = await worker.get_json("/health") if worker.alive() else (None, None)
    print(case_table(cases))

    bad = [c for c in cases if c.problems]
    by_kind = Counter(c.kind for c in cases)
    rows += [("valid orders (200, ERP once)",
              f"{sum(1 for c in valid if not c.problems)} / {by_kind['valid']}"),
             ("oversize (413)", f"{sum(1 for c in cases if c.kind == 'oversize' and not c.problems)}"
                                f" / {by_kind['oversize']}"),
             ("slow clients dropped", f"{sum(1 for c in cases if c.kind == 'slow' and not c.problems)}"
                                      f" / {by_kind['slow']}"),
             ("orders in the ERP not sent as valid", len(strays)),
             ("worker /health", status if worker.alive() else "worker exited")]
    if bad or strays or status != 200:
        what = [f"{c.kind} '{c.name}': {'; '.join(c.problems)}" for c in bad[:5]]
        if strays:
            what.append(f"unexpected ERP orders {strays[:3]}")
        if status != 200:
            what.append(f"worker health {status}")
        raise Failed(" | ".join(what))


__all__ = ["build_cases", "shopify_delivery", "webhook_fragmented"]
