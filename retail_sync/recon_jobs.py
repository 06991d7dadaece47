"""Reconciliation as a job (issue 13, cost guard): a reconciliation started over HTTP reads every
chosen marketplace's API (its rate budget) and the ERP, so it is never a synchronous call anyone
can repeat: ``POST /reconciliation/jobs {"channels": [...], "days": N}`` starts one in the
background (202 + job id), at most one running per channel (a request naming a busy channel is
refused with 409 and the running job's id), and ``GET /reconciliation/jobs[/{id}]`` show the status
and the kept report.

Where jobs live: in memory on one worker, the one that owns the order-table partition of the key
``JOBS_KEY`` (the job views forward there, like ``app.table_route``), so "one at a time per
channel" holds across workers; the last ``RETAIL_SYNC_RECONCILIATION_JOBS_KEPT`` finished jobs are
kept. Jobs do not survive a restart or a move of that partition (a running job's audit record
stays; its result is lost and it can be started again). The CLI ``retail-sync reconcile`` runs one
in the foreground and keeps nothing.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from retail_sync.streams.models import utcnow

log = logging.getLogger(__name__)

#: the order-table key whose partition owner runs the jobs
JOBS_KEY = "__reconciliation_jobs__"

Runner = Callable[[list[str], float], Awaitable[dict[str, Any]]]


@dataclass
class Job:
    job_id: str
    channels: list[str]
    days: float
    requested_by: str
    request_id: str
    started_at: datetime = field(default_factory=utcnow)
    status: str = "running"  # running, done, failed
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def as_json(self, *, with_result: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "job_id": self.job_id, "status": self.status, "channels": self.channels,
            "days": self.days, "requested_by": self.requested_by,
            "request_id": self.request_id, "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "error": self.error, "see": f"/reconciliation/jobs/{self.job_id}"}
        if self.result is not None:
            body["ok"] = self.result.get("ok")
            body["mismatches"] = len(self.result.get("mismatches") or [])
            if with_result:
                body["result"] = self.result
        return body


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


class Jobs:
    """The jobs of one worker: running ones by id, the last ``kept`` finished ones."""

    def __init__(self, run: Runner, kept: int,
                 on_finished: Callable[[Job], Awaitable[None]] | None = None) -> None:
        self._run = run
        self._on_finished = on_finished
        self.running: dict[str, Job] = {}
        self.finished: deque[Job] = deque(maxlen=kept)

    def busy(self, channels: Iterable[str]) -> Job | None:
        """The running job holding any of ``channels``, if one does."""
        wanted = set(channels)
        return next((j for j in self.running.values() if wanted & set(j.channels)), None)

    def start(self, channels: list[str], days: float, requested_by: str,
              request_id: str, job_id: str | None = None) -> Job:
        """Start a job; the caller checked ``busy`` first (nothing awaits in between)."""
        if self.busy(channels) is not None:
            raise RuntimeError(f"channels {channels} are busy")
        job = Job(job_id=job_id or new_job_id(), channels=channels, days=days,
                  requested_by=requested_by, request_id=request_id)
        self.running[job.job_id] = job
        job.task = asyncio.ensure_future(self._execute(job))
        return job

    async def _execute(self, job: Job) -> None:
        try:
            job.result = await self._run(job.channels, job.days)
            job.status = "done"
        except asyncio.CancelledError:
            job.status, job.error = "failed", "the worker stopped while it ran"
            raise
        except Exception as exc:  # noqa: BLE001 - a job's failure is its result
            log.exception("reconciliation job %s failed", job.job_id)
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job.finished_at = utcnow()
            self.running.pop(job.job_id, None)
            self.finished.appendleft(job)
            job.task = None
        if self._on_finished is not None:
            await self._on_finished(job)

    def get(self, job_id: str) -> Job | None:
        return self.running.get(job_id) or next(
            (j for j in self.finished if j.job_id == job_id), None)

    def all(self) -> list[Job]:
        """Running first, then finished, newest first."""
        running = sorted(self.running.values(), key=lambda j: j.started_at, reverse=True)
        return [*running, *self.finished]

    async def close(self) -> None:
        tasks = [j.task for j in self.running.values() if j.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def configured_channels(settings: Any) -> list[str]:
    """The channels ``reconcile`` reads when none are named (configured and with a reader)."""
    from retail_sync.channels import channels as registry
    from retail_sync.channels import plugin_settings
    from retail_sync.reconcile import readers

    plugins = registry(settings)
    return [name for name, reader in readers(settings).items()
            if reader.configured(plugin_settings(plugins[name], settings))]


def known_channels(settings: Any) -> list[str]:
    """Every channel with a reconciliation reader (its plugin's ``reconcile``)."""
    from retail_sync.reconcile import readers

    return list(readers(settings))
