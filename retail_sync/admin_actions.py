"""Admin actions at the door (issue 13): validated, audited, then done.

Each action (``POST /orders/{key}/cancel``, ``POST /orders/{key}/returns``, ``POST
/exceptions/replay``, ``POST /reconciliation/jobs``) gets a request id (answered in
``X-Request-Id`` and in the JSON), checks synchronously what it can, writes its audit record
(retail_sync/audit.py) and waits for the broker's acknowledgement, and only then takes effect:

- cancel: the order must exist (else 404) and be cancellable (not shipped, refunded, cancelled
  or already cancelling: else 409 with the reason);
- return: the body must be a JSON object (400), the order must exist (404), and the rule of the
  order agent itself (``streams.rules.aftersale.return_refusal``) must hold on the order as it is now:
  every line id is the order's, units are whole numbers >= 1 and <= shipped - refunded for that
  line, the amount is >= 0 and <= what was paid less what was refunded (else 422 with the reason);
- an audit write that fails or is not acknowledged in time answers 503 and nothing is done.

202 means accepted, not done: the order agent applies the action in order with everything else
that happens to the order, and if the order changed meanwhile (shipped before the warehouse got
the cancellation) its refusal is on the order's timeline (``cancel_refused``/``return_refused``
with the caller and request id), in the exception topic and in the audit trail
(``refused_later``).

Also here: ``GET /audit`` and the reconciliation job views (retail_sync/recon_jobs.py).

Long module: the four operator actions go through one door (request id, synchronous checks, audit
record, broker acknowledgement, forwarding to the worker that runs the jobs); each action is short,
and apart they would each import the door's helpers back.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp
import faust
import orjson
from faust.web import Request, Response, View
from pydantic import ValidationError

from retail_sync import admin_auth, audit, pii, recon_jobs
from retail_sync import query_params as qp
from retail_sync.audit import AuditRecord, AuditUnavailable
from retail_sync.streams.codecs import decode
from retail_sync.streams.events import CancelRequested, ReturnRequested
from retail_sync.streams.models import OrderStatus, RefundRecord, utcnow
from retail_sync.streams.rules import aftersale
from retail_sync.streams.state import OrderState

log = logging.getLogger(__name__)

MAX_AUDIT_LIMIT = 10_000
MAX_RECONCILE_DAYS = 3650.0


def _answer(view: View, body: dict[str, Any], status: int, request_id: str | None) -> Response:
    headers = {audit.REQUEST_ID_HEADER: request_id} if request_id else {}
    if request_id:
        body = {**body, "request_id": request_id}
    return view.bytes(orjson.dumps(body), content_type="application/json", status=status,
                      headers=headers)


class Door:
    """One admin request: its id, caller, action and target, and its audited answers."""

    def __init__(self, ctx: Any, view: View, request: Request, action: str, target: str) -> None:
        self.ctx, self.view, self.request = ctx, view, request
        self.request_id = audit.new_request_id()
        self.actor = audit.actor_of(request)
        self.action, self.target = action, target

    def record(self, outcome: audit.Outcome, status: int | None, reason: str | None = None, /,
               **details: Any) -> AuditRecord:
        return AuditRecord(request_id=self.request_id, actor=self.actor, action=self.action,
                           target=self.target, outcome=outcome, status=status,
                           reason=reason[:1000] if reason else None, details=details)

    async def refuse(self, status: int, reason: str, /, **details: Any) -> Response:
        """Audit the refusal, then answer it (503 when the audit record cannot be written)."""
        try:
            await audit.write(self.ctx, self.record("refused", status, reason, **details))
        except AuditUnavailable as exc:
            return self.unavailable(exc)
        return _answer(self.view, {"error": reason, **details}, status, self.request_id)

    async def accept(self, status: int = 202, /, **details: Any) -> Response | None:
        """Audit the acceptance; None when the broker acknowledged it (go ahead), else the 503."""
        try:
            await audit.write(self.ctx, self.record("accepted", status, None, **details))
        except AuditUnavailable as exc:
            return self.unavailable(exc)
        return None

    def unavailable(self, exc: Exception) -> Response:
        log.warning("admin %s on %s (request %s) not done: %s", self.action, self.target,
                    self.request_id, exc)
        return _answer(self.view, {"error": str(exc)}, 503, self.request_id)

    def answer(self, body: dict[str, Any], status: int) -> Response:
        return _answer(self.view, body, status, self.request_id)


async def _body(request: Request) -> dict[str, Any] | None:
    from retail_sync.web import _json_body

    return await _json_body(request)


async def _order(ctx: Any, request: Request, key: str) -> OrderState | None:
    from retail_sync.web import order_state

    known = await order_state(ctx, key, admin_auth.authorization_of(request))
    return OrderState.model_validate(known) if known is not None else None


def cancel_refusal(state: OrderState) -> str | None:
    """Why ``state`` cannot be cancelled now, or None (the order agent decides again on arrival)."""
    if state.status is OrderStatus.CANCELLED:
        return f"{state.order_key} is cancelled already ({state.cancel_reason or 'no reason'})"
    if state.status in aftersale.SHIPPED_OR_LATER:
        return (f"{state.order_key} is {state.status.value} ({len(state.shipments)} "
                "shipment(s)): too late to cancel; authorise a return instead")
    if state.status is OrderStatus.CANCEL_PENDING:
        by = state.cancel.by if state.cancel is not None else "someone"
        return f"a cancellation of {state.order_key} (by {by}) is already on its way"
    return None


# --- cancel -------------------------------------------------------------------------------------


async def cancel(ctx: Any, view: View, request: Request, order_key: str) -> Response:
    door = Door(ctx, view, request, "cancel", order_key)
    body = await _body(request)
    if body is None:
        return await door.refuse(400, 'body must be a JSON object such as {"reason": "..."}')
    reason = str(body.get("reason") or "cancelled by an operator")[:500]
    state = await _order(ctx, request, order_key)
    if state is None:
        return await door.refuse(404, f"no order {order_key!r}")
    why = cancel_refusal(state)
    if why is not None:
        return await door.refuse(409, why, status_now=state.status.value)
    refused = await door.accept(reason=reason)
    if refused is not None:
        return refused
    await ctx.topics.order_events.send(key=order_key, value=CancelRequested(
        order_key=order_key, by="operator", reason=reason, at=utcnow(), actor=door.actor,
        request_id=door.request_id))
    return door.answer({"status": "accepted", "order_key": order_key,
                        "see": f"/orders/{order_key}"}, 202)


# --- returns ------------------------------------------------------------------------------------


def parse_lines(raw: Any) -> dict[str, int] | str:
    """``{line_id: units}`` with whole-number units, or the reason it is not."""
    if not isinstance(raw, dict) or not raw:
        return 'lines must be a non-empty JSON object {"<line_id>": <units>}'
    lines: dict[str, int] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | str):
            return f"line {str(key)[:40]!r}: units must be a whole number, not {str(value)[:40]!r}"
        try:
            lines[str(key)] = int(value)
        except ValueError:
            return f"line {str(key)[:40]!r}: units must be a whole number, not {str(value)[:40]!r}"
    return lines


def parse_amount(raw: Any) -> Decimal | str:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return f"amount must be a decimal number such as \"12.50\", not {str(raw)[:40]!r}"
    try:
        amount = Decimal(str(raw))
    except (InvalidOperation, ValueError):
        return f"amount must be a decimal number such as \"12.50\", not {str(raw)[:40]!r}"
    if not amount.is_finite():
        return f"amount must be a finite number, not {raw!r}"
    return amount


async def authorise_return(ctx: Any, view: View, request: Request, order_key: str) -> Response:
    door = Door(ctx, view, request, "return", order_key)
    body = await _body(request)
    if body is None:
        return await door.refuse(400, 'body must be a JSON object: {"lines": {"<line_id>": '
                                      '<units>}, "amount": "12.50", "reason": "...", '
                                      '"restock": true}')
    state = await _order(ctx, request, order_key)
    if state is None:
        return await door.refuse(404, f"no order {order_key!r}")
    lines = parse_lines(body.get("lines"))
    if isinstance(lines, str):
        return await door.refuse(422, lines)
    given = body.get("amount")
    amount = aftersale.refund_value(state, lines) if given is None else parse_amount(given)
    if isinstance(amount, str):
        return await door.refuse(422, amount)
    why = aftersale.return_refusal(state, lines, amount)
    if why is not None:
        return await door.refuse(422, why, lines=lines, amount=str(amount))
    refund_id = str(body.get("refund_id") or f"RMA-{door.request_id[:10]}")[:64]
    if refund_id in state.refunds:
        return await door.refuse(409, f"refund {refund_id} exists already on {order_key}")
    try:
        refund = RefundRecord(
            refund_id=refund_id, lines=lines, amount=amount,
            reason=str(body.get("reason") or "return authorised")[:500],
            restock=bool(body.get("restock", True)), source="erp", requested_at=utcnow())
    except ValidationError as exc:
        return await door.refuse(422, f"not a valid return: {exc.errors()[0]['msg']}")
    refused = await door.accept(refund_id=refund_id, lines=lines, amount=str(amount))
    if refused is not None:
        return refused
    await ctx.topics.order_events.send(key=order_key, value=ReturnRequested(
        order_key=order_key, refund=refund, actor=door.actor, request_id=door.request_id))
    return door.answer({"status": "accepted", "refund_id": refund.refund_id,
                        "amount": str(amount), "see": f"/orders/{order_key}"}, 202)


# --- exception replay ---------------------------------------------------------------------------


async def replay(ctx: Any, view: View, request: Request) -> Response:
    from retail_sync import exceptions_view
    from retail_sync.streams.models import ExceptionKind

    door = Door(ctx, view, request, "exceptions_replay", "exceptions")
    body = await _body(request)
    ids = (body or {}).get("ids")
    kind = (body or {}).get("kind")
    if body is None or not (ids or kind) or (ids is not None and not (
            isinstance(ids, list) and all(isinstance(i, str) for i in ids))):
        return await door.refuse(400, 'send {"ids": ["..."]} or {"kind": "erp_permanent"}')
    kinds = [k.value for k in ExceptionKind]
    if kind and kind not in kinds:
        return await door.refuse(400, f"kind must be one of {', '.join(kinds)}, not "
                                      f"{str(kind)[:40]!r}")
    channel = body.get("channel")
    refused = await door.accept(200, ids=ids, kind=kind, channel=channel)
    if refused is not None:
        return refused
    async def verdict(record: Any, plan: Any) -> str | None:
        """An ERP post or warehouse release goes to the order agent, which rebuilds it from the
        order as it is now; answer "skipped" at once when the order's state refuses it."""
        from retail_sync.streams.rules.lifecycle import erp_retry_refusal, wms_retry_refusal

        try:
            state = await _order(ctx, request, plan.key)
        except Exception as exc:  # noqa: BLE001 - the order agent decides anyway
            log.warning("replay: order %s not looked up: %r", plan.key, exc)
            return None
        if state is None:
            return None  # not here (retired, or not found now): the order agent answers
        if plan.owner == "erp_post":
            return erp_retry_refusal(state)
        event = decode("rs.order_event", plan.value)
        return wms_retry_refusal(state, getattr(event, "reference", None))

    try:
        results = await exceptions_view.replay_from_topic(
            exceptions_view.bootstrap_of(ctx.app.conf.broker), ctx.settings.app_id, ids=ids,
            kind=kind, channel=channel, requested_by=door.actor or "operator", verdict=verdict)
    except ValueError as exc:
        await audit.note(ctx, door.record("failed", 400, str(exc)))
        return door.answer({"error": str(exc)}, 400)
    replayed = sum(r["replayed"] for r in results)
    skipped = sum(not r["replayed"] for r in results)
    await audit.note(ctx, door.record("done", 200, None, replayed=replayed, skipped=skipped,
                                      exception_ids=[r["exception_id"] for r in results][:100]))
    return door.answer({"replayed": replayed, "skipped": skipped, "results": results}, 200)


# --- reconciliation jobs ------------------------------------------------------------------------


def jobs_of(ctx: Any) -> recon_jobs.Jobs:
    jobs = getattr(ctx, "reconciliation_jobs", None)
    if jobs is None:
        from retail_sync.reconcile import reconcile

        async def run(channels: list[str], days: float) -> dict[str, Any]:
            report = await reconcile(ctx.settings, channels, lookback=timedelta(days=days))
            return report.as_json()

        async def finished(job: recon_jobs.Job) -> None:
            if job.status == "done" and job.result is not None and job.finished_at is not None:
                ctx.metrics.record_reconciliation(job.result, job.finished_at.timestamp())
            await audit.note(ctx, AuditRecord(
                request_id=job.request_id, actor=job.requested_by, action="reconciliation_job",
                target=_job_target(job.channels), outcome="done" if job.status == "done"
                else "failed", reason=job.error, details={
                    "job_id": job.job_id, "ok": (job.result or {}).get("ok"),
                    "mismatches": len((job.result or {}).get("mismatches") or [])}))

        jobs = recon_jobs.Jobs(run, ctx.settings.reconciliation_jobs_kept, finished)
        ctx.reconciliation_jobs = jobs
    return jobs


def _job_target(channels: list[str]) -> str:
    return "reconciliation:" + ",".join(sorted(channels))


def _owner(ctx: Any) -> str | None:
    """The admin URL of the worker that runs the jobs, or None when it is this one."""
    try:
        owner = str(ctx.app.router.key_store(ctx.tables.orders.name, recon_jobs.JOBS_KEY))
    except (KeyError, TypeError):  # no assignment yet: this worker
        return None
    owner = owner.rstrip("/")
    return None if owner == ctx.settings.web_url.rstrip("/") else owner


async def _forward(view: View, request: Request, owner: str, body: bytes | None) -> Response:
    """The same request answered by the worker that runs the jobs (it checks the token again)."""
    headers = {**admin_auth.authorization_of(request)}
    if body is not None:
        headers["Content-Type"] = "application/json"
    url = f"{owner}{request.rel_url.path}" + (f"?{request.query_string}" if request.query_string else "")
    async with aiohttp.ClientSession() as session, session.request(
            request.method, url, data=body, headers=headers,
            timeout=aiohttp.ClientTimeout(total=30)) as resp:
        data = await resp.read()
        kept = {k: v for k, v in resp.headers.items() if k == audit.REQUEST_ID_HEADER}
        return view.bytes(data, content_type="application/json", status=resp.status,
                          headers=kept)


async def start_job(ctx: Any, view: View, request: Request) -> Response:
    from retail_sync.web import _read_body

    raw = await _read_body(request, 64 * 1024)
    owner = _owner(ctx)
    if owner is not None:
        return await _forward(view, request, owner, raw)
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        body = None
    door = Door(ctx, view, request, "reconciliation_job", "reconciliation")
    if not isinstance(body, dict):
        return await door.refuse(400, 'body must be a JSON object: {"channels": ["shopify"], '
                                      '"days": 7} (both optional)')
    named = body.get("channels")
    if named is not None and not (isinstance(named, list) and all(
            isinstance(c, str) and c for c in named)):
        return await door.refuse(422, 'channels must be a list of channel names, e.g. '
                                      '["shopify", "amazon"]')
    days = body.get("days", 7)
    if isinstance(days, bool) or not isinstance(days, int | float) or not (
            0 < days <= MAX_RECONCILE_DAYS):
        return await door.refuse(422, f"days must be a number above 0 and at most "
                                      f"{MAX_RECONCILE_DAYS:g}, not {str(days)[:40]!r}")
    known = recon_jobs.known_channels(ctx.settings)
    unknown = sorted(set(named or []) - set(known))
    if unknown:
        return await door.refuse(422, f"unknown channels {unknown}: one of {', '.join(known)}")
    channels = sorted(set(named)) if named else recon_jobs.configured_channels(ctx.settings)
    if not channels:
        return await door.refuse(422, "no channel to reconcile is configured on this worker")
    door.target = _job_target(channels)
    jobs = jobs_of(ctx)
    running = jobs.busy(channels)
    if running is not None:
        busy = sorted(set(running.channels) & set(channels))
        return await door.refuse(409, f"a reconciliation of {', '.join(busy)} is running "
                                      f"(job {running.job_id}); one at a time per channel",
                                 running_job_id=running.job_id)
    job_id = recon_jobs.new_job_id()
    refused = await door.accept(channels=channels, days=float(days), job_id=job_id)
    if refused is not None:
        return refused
    running = jobs.busy(channels)  # another request may have started one while we audited
    if running is not None:
        await audit.note(ctx, door.record("refused", 409, f"job {running.job_id} started first",
                                          running_job_id=running.job_id, job_id=job_id))
        return door.answer({"error": f"a reconciliation of these channels is running (job "
                                     f"{running.job_id})", "running_job_id": running.job_id},
                           409)
    job = jobs.start(channels, float(days), door.actor, door.request_id, job_id)
    return door.answer({**job.as_json(with_result=False), "status": job.status}, 202)


async def job_view(ctx: Any, view: View, request: Request, job_id: str) -> Response:
    owner = _owner(ctx)
    if owner is not None:
        return await _forward(view, request, owner, None)
    job = jobs_of(ctx).get(job_id)
    if job is None:
        return _answer(view, {"error": f"no reconciliation job {job_id!r} (jobs are kept in "
                                        "memory: the last ones, until a restart)"}, 404, None)
    return _answer(view, job.as_json(), 200, None)


async def jobs_view(ctx: Any, view: View, request: Request) -> Response:
    owner = _owner(ctx)
    if owner is not None:
        return await _forward(view, request, owner, None)
    jobs = jobs_of(ctx)
    return _answer(view, {"running": len(jobs.running),
                          "kept": ctx.settings.reconciliation_jobs_kept,
                          "jobs": [j.as_json(with_result=False) for j in jobs.all()]}, 200, None)


async def reconciliation_gone(ctx: Any, view: View, request: Request) -> Response:
    """The old synchronous ``GET /reconciliation``: 410, pointing at the job API."""
    last = None
    if _owner(ctx) is None:
        finished = list(jobs_of(ctx).finished)
        last = f"/reconciliation/jobs/{finished[0].job_id}" if finished else None
    return view.bytes(orjson.dumps({
        "error": "GET /reconciliation no longer runs a reconciliation (it spent every "
                 "marketplace's API budget per call): start a job with POST /reconciliation/jobs "
                 '{"channels": [...], "days": N} and read it at GET /reconciliation/jobs/{id}',
        "start": "POST /reconciliation/jobs", "jobs": "/reconciliation/jobs", "last": last}),
        content_type="application/json", status=410,
        headers={"Link": '</reconciliation/jobs>; rel="alternate"'})


# --- audit view ---------------------------------------------------------------------------------


async def audit_view(ctx: Any, view: View, request: Request) -> Response:
    from retail_sync.exceptions_view import bootstrap_of

    q = request.query
    try:
        limit = qp.integer(q, "limit", 100, minimum=0, maximum=MAX_AUDIT_LIMIT)
        since = _since(q.get("since"))
    except qp.BadParam as exc:
        return _answer(view, {"error": str(exc)}, 400, None)
    topic = audit.topic_of(ctx).get_topic_name()
    values, truncated = await audit.read_recent(bootstrap_of(ctx.app.conf.broker), topic,
                                                ctx.settings.audit_view_scan)
    records, bad = audit.decode(values)
    chosen = audit.select(records, target=q.get("target") or None, actor=q.get("actor") or None,
                          since=since, limit=limit)
    notes = []
    if truncated:
        notes.append(f"only the newest {ctx.settings.audit_view_scan} records of each partition "
                     "were read (RETAIL_SYNC_AUDIT_VIEW_SCAN)")
    if bad:
        notes.append(f"{bad} record(s) are not audit records and were skipped")
    return _answer(view, pii.for_caller(request, {  # free-text reasons: personal data masked
        "matched": len(chosen), "notes": notes,
        "retention_days": ctx.settings.audit_retention_days,
        "records": audit.as_view(chosen)}), 200, None)


def _since(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise qp.BadParam(f"since must be an ISO-8601 time such as 2026-01-31T12:00:00Z, not "
                          f"{raw[:40]!r}") from None
    if value.tzinfo is None:
        raise qp.BadParam("since needs a time zone (e.g. Z or +01:00)")
    return value


# --- registration -------------------------------------------------------------------------------


def register(ctx: Any) -> None:
    """The audit topic and the views this module owns (the action views stay in web.py)."""
    app: faust.App = ctx.app
    audit.register(ctx)

    @app.page("/audit")
    class Audit(View):
        @admin_auth.requires("viewer")
        async def get(self, request: Request) -> Response:
            return await audit_view(ctx, self, request)

    @app.page("/reconciliation/jobs")
    class ReconciliationJobs(View):
        @admin_auth.requires("viewer")
        async def get(self, request: Request) -> Response:
            return await jobs_view(ctx, self, request)

        @admin_auth.requires("operator")
        async def post(self, request: Request) -> Response:
            return await start_job(ctx, self, request)

    @app.page("/reconciliation/jobs/{job_id}")
    class ReconciliationJob(View):
        @admin_auth.requires("viewer")
        async def get(self, request: Request, job_id: str) -> Response:
            return await job_view(ctx, self, request, job_id)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode: its SignalHandlerT accepts no handler
    async def _stop_jobs(sender: Any, **kwargs: Any) -> None:
        jobs = getattr(ctx, "reconciliation_jobs", None)
        if jobs is not None:
            await jobs.close()
