"""A whole retail-sync world on one machine: broker, ERP simulator and real worker processes.

Used by `retail-sync demo`, `retail-sync bench` and the integration tests, so all three run the
same real parts: the embedded Tansu broker (or a configured Kafka), the ERP simulator as an HTTP
server, and each worker as its own `retail-sync worker` process with its own app id, topics,
ports and RocksDB directory.

Each worker has two listeners on 127.0.0.1: ``worker.url`` is the admin listener (views, actions,
metrics, health) and ``worker.ingress_url`` the ingress listener (webhooks only; ``worker.webhook_url
(topic)``). The stack configures admin tokens for every combination of scopes (hashes only in the
workers' RETAIL_SYNC_ADMIN_TOKENS): ``stack.admin_headers()`` is a token with every scope,
``stack.admin_headers("viewer")`` one with only ``viewer``, ``stack.admin_headers("viewer", "pii")``
one with exactly those two; ``worker.get_json``/``post_json``/``metrics_text`` use every scope.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from retail_sync.admin_auth import SCOPES, hash_token, new_token
from retail_sync.broker import EmbeddedBroker, free_port
from retail_sync.simulators.erpnext.simulator import ErpSimConfig, ErpSimulator
from retail_sync.tansu_compat import true_end_offsets

ROOT = Path(__file__).resolve().parent.parent


class WorkerFailed(RuntimeError):
    """A worker process exited or never became ready; the message carries its log tail."""


@dataclass
class WorkerProcess:
    """One `retail-sync worker` process and its two listeners."""

    name: str
    env: dict[str, str]
    log_path: Path
    port: int  # the admin listener
    proc: subprocess.Popen[bytes] | None = None
    ingress_port: int = 0
    admin_token: str = ""  # one with every scope
    command: str = "worker"  # or "ingress": a webhook front door (retail_sync/ingress_process.py)

    @property
    def url(self) -> str:
        """The admin listener (views, actions, metrics, health)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ingress_url(self) -> str:
        """The ingress listener (webhooks only)."""
        return f"http://127.0.0.1:{self.ingress_port}"

    def webhook_url(self, topic: str = "orders/create") -> str:
        return f"{self.ingress_url}/webhooks/shopify/{topic}"

    @property
    def headers(self) -> dict[str, str]:
        """Authorization with every scope, for the admin listener."""
        return {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "retail_sync.cli", self.command],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
            start_new_session=True,
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Until /health says partitions are assigned (the worker consumes)."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise WorkerFailed(f"worker {self.name} exited:\n{self.log_tail()}")
                try:
                    async with session.get(f"{self.url}/health") as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, OSError):
                    pass
                await asyncio.sleep(0.2)
        raise WorkerFailed(f"worker {self.name} not ready in {timeout_s:.0f}s:\n{self.log_tail()}")

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Graceful stop (SIGTERM): Faust commits offsets and leaves the group."""
        await self._signal(signal.SIGTERM, timeout_s)

    async def kill(self) -> None:
        """SIGKILL: no goodbye, nothing flushed."""
        await self._signal(signal.SIGKILL, 10.0)

    async def _signal(self, sig: signal.Signals, timeout_s: float) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(sig)
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    async def get_json(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession(headers=self.headers) as session, \
                session.get(self.url + path) as resp:
            return resp.status, await resp.json(content_type=None)

    async def post_json(self, path: str, body: Any = None) -> tuple[int, Any]:
        """POST JSON to the admin listener with every scope."""
        async with aiohttp.ClientSession(headers=self.headers) as session, \
                session.post(self.url + path, json=body if body is not None else {}) as resp:
            return resp.status, await resp.json(content_type=None)

    async def metrics_text(self) -> str:
        async with aiohttp.ClientSession(headers=self.headers) as session, \
                session.get(f"{self.url}/metrics") as resp:
            return await resp.text()


@dataclass
class Stack:
    """Broker + ERP simulator + workers, started and stopped together (async context manager)."""

    app_id: str = field(default_factory=lambda: f"rs-{uuid.uuid4().hex[:8]}")
    workdir: Path = field(default_factory=lambda: ROOT / "var" / "stack")
    broker_url: str | None = None
    erp_config: ErpSimConfig = field(default_factory=ErpSimConfig)
    env: dict[str, str] = field(default_factory=dict)
    tansu: bool | None = None  # is the broker Tansu? None: yes when no broker URL is given
    partitions: int = 4
    broker: EmbeddedBroker | None = None
    erp: ErpSimulator | None = None
    erp_url: str = ""
    workers: list[WorkerProcess] = field(default_factory=list)
    ingresses: list[WorkerProcess] = field(default_factory=list)  # ingress processes
    #: how long close() waits for a worker to stop on SIGTERM before it is killed
    stop_timeout_s: float = 30.0
    #: token name -> token, one for every non-empty combination of scopes (see admin_headers)
    admin_tokens: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.admin_tokens:
            for n in range(1, len(SCOPES) + 1):
                for combo in itertools.combinations(SCOPES, n):
                    self.admin_tokens[token_name(combo)] = new_token()

    def admin_token(self, *scopes: str) -> str:
        """The token with exactly ``scopes`` (every scope when none are named)."""
        return self.admin_tokens[token_name(scopes or SCOPES)]

    def admin_headers(self, *scopes: str) -> dict[str, str]:
        """``Authorization`` for the admin listener with exactly ``scopes`` (default: all)."""
        return {"Authorization": f"Bearer {self.admin_token(*scopes)}"}

    def admin_tokens_setting(self) -> str:
        """RETAIL_SYNC_ADMIN_TOKENS for the workers: the hashes of ``admin_tokens``."""
        return orjson.dumps({name: {"token_sha256": hash_token(tok),
                                    "scopes": name.removeprefix("stack-").split("-")}
                             for name, tok in self.admin_tokens.items()}).decode()

    async def __aenter__(self) -> Stack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self.tansu is None:
            self.tansu = not self.broker_url
        if not self.broker_url:
            self.broker = EmbeddedBroker().start()
            self.broker_url = self.broker.url
        self.erp = ErpSimulator(self.erp_config)
        self.erp_url = await self.erp.start()

    @property
    def bootstrap(self) -> str:
        assert self.broker_url
        return ",".join(h.split("://", 1)[-1] for h in self.broker_url.split(","))

    def worker_env(self, name: str, port: int, ingress_port: int | None = None) -> dict[str, str]:
        pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        return {
            **os.environ,
            "PYTHONPATH": pythonpath,
            "RETAIL_SYNC_APP_ID": self.app_id,
            "RETAIL_SYNC_BROKER_URL": self.broker_url or "",
            "RETAIL_SYNC_WEB_PORT": str(port),
            "RETAIL_SYNC_WEB_HOST": "127.0.0.1",
            "RETAIL_SYNC_INGRESS_PORT": str(ingress_port or free_port()),
            "RETAIL_SYNC_INGRESS_HOST": "127.0.0.1",
            "RETAIL_SYNC_ADMIN_TOKENS": self.admin_tokens_setting(),
            "RETAIL_SYNC_ERP_BASE_URL": self.erp_url,
            "RETAIL_SYNC_DATADIR": str(self.workdir / self.app_id / name),
            "RETAIL_SYNC_PARTITIONS": str(self.partitions),
            "RETAIL_SYNC_TANSU_COMPAT": "true" if self.tansu else "false",
            **self.env,
        }

    def new_worker(self, name: str | None = None, port: int | None = None,
                   ingress_port: int | None = None) -> WorkerProcess:
        """A worker (not started): ``port`` is its admin listener, ``ingress_port`` its webhook
        listener (free ports when not given)."""
        worker = self._process(name or f"w{len(self.workers) + 1}", port, ingress_port)
        self.workers.append(worker)
        return worker

    def _process(self, name: str, port: int | None, ingress_port: int | None,
                 command: str = "worker") -> WorkerProcess:
        """A `retail-sync <command>` process of this stack (not started)."""
        port = port or free_port()
        env = self.worker_env(name, port, ingress_port)
        return WorkerProcess(
            name=name, env=env, port=port, ingress_port=int(env["RETAIL_SYNC_INGRESS_PORT"]),
            admin_token=self.admin_token(), log_path=self.workdir / self.app_id / f"{name}.log",
            command=command)

    async def start_worker(self, name: str | None = None, port: int | None = None,
                           timeout_s: float = 90.0, ingress_port: int | None = None) -> WorkerProcess:
        worker = self.new_worker(name, port, ingress_port).start()
        await worker.wait_ready(timeout_s)
        return worker

    async def start_ingress(self, name: str | None = None,
                            timeout_s: float = 60.0) -> WorkerProcess:
        """An ingress process (``retail-sync ingress``: webhooks into orders-raw, no agents),
        ready once its /health says the broker answers; not one of ``workers``."""
        ingress = self._process(name or f"ingress{len(self.ingresses) + 1}", None, None,
                                command="ingress")
        self.ingresses.append(ingress)
        await ingress.start().wait_ready(timeout_s)
        return ingress

    async def restart(self, worker: WorkerProcess, timeout_s: float = 90.0) -> WorkerProcess:
        """Start the same worker again: same name, port and RocksDB directory."""
        await worker.stop()
        worker.start()
        await worker.wait_ready(timeout_s)
        return worker

    async def close(self) -> None:
        # every worker at once: one by one, each stop waited out the rebalance the previous
        # one's leaving started (a whole rebalance timeout per worker)
        await asyncio.gather(*(worker.stop(self.stop_timeout_s)
                               for worker in [*self.ingresses, *self.workers]))
        if self.erp is not None:
            await self.erp.stop()
        if self.broker is not None:
            self.broker.stop()

    def topic(self, name: str) -> str:
        return f"{self.app_id}.{name}"

    async def read_topic(self, name: str, timeout_s: float = 5.0) -> list[Any]:
        """Every record currently on ``<app_id>.<name>``, from the beginning."""
        return await read_topic(self.bootstrap, self.topic(name), timeout_s)


def token_name(scopes: tuple[str, ...] | list[str]) -> str:
    """The stack's name of the token with exactly these scopes, e.g. ``stack-operator-viewer``."""
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes {sorted(unknown)}: one of {', '.join(SCOPES)}")
    return "stack-" + "-".join(sorted(set(scopes)))


async def read_topic(bootstrap: str, topic: str, timeout_s: float = 5.0) -> list[Any]:
    """All records of a topic up to its current end offsets (no consumer group, no commits)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    try:
        await consumer.start()  # inside: a start that fails (broker away) is stopped too
        partitions = await _partitions(consumer, topic, timeout_s)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await true_end_offsets(bootstrap, await consumer.end_offsets(tps))
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and await _behind(consumer, ends):
            batch = await consumer.getmany(*tps, timeout_ms=200)
            for msgs in batch.values():
                records.extend(msgs)
        return records
    finally:
        await consumer.stop()


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


async def _partitions(consumer: AIOKafkaConsumer, topic: str, timeout_s: float) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public call
        consumer._client.add_topic(topic)  # noqa: SLF001
        await asyncio.sleep(0.2)
    return set()
