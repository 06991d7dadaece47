"""The bench's Faust anchor: a tuned Faust worker doing one table update per event, nothing else.

``python -m retail_sync.bench_faust_anchor BOOTSTRAP TOPIC APP_ID DATADIR PARTITIONS EXPECT OUT
[--tansu]``: consumes TOPIC (preloaded by the bench) from the beginning; each event reads and
writes one key of a RocksDB table (``counts[key] += 1``: a get, a put and one changelog record),
as our agents do per record. Tuned as docs/BENCHMARKS.md and shared/FAUST.md found best on this
machine without changing the programming model: producer linger 50 ms with 1 MiB batches, the
root log level reset to WARNING after start (the worker's spinner sets DEBUG), the Monitor sensor
removed. The clock runs from the first event to the EXPECT-th with its changelog records flushed;
the process's own CPU time over the same span is measured too. Writes JSON to OUT and idles
until the bench stops it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any


def build(bootstrap: str, topic: str, app_id: str, datadir: str, partitions: int, expect: int,
          out: Path) -> Any:
    import faust

    app = faust.App(
        app_id, broker=f"kafka://{bootstrap}", store="rocksdb://", datadir=datadir,
        topic_partitions=partitions, producer_linger=0.05,
        producer_max_batch_size=1024 * 1024, web_enabled=False, autodiscover=False,
    )
    source = app.topic(topic, key_serializer="raw", value_serializer="raw", partitions=partitions)
    counts = app.Table("anchor-counts", default=int, partitions=partitions,  # raw keys, json values
                       options={"block_cache_size": 64 * 1024 * 1024})
    state: dict[str, float] = {"seen": 0}

    @app.task  # type: ignore[untyped-decorator]  # Faust: @no_type_check
    async def _tune() -> None:
        logging.getLogger().setLevel(logging.WARNING)
        if app.monitor in set(app.sensors):
            app.sensors.remove(app.monitor)

    @app.agent(source)
    async def update(stream: Any) -> Any:
        async for key, _value in stream.items():
            if not state["seen"]:
                state["t0"], state["cpu0"] = time.perf_counter(), time.process_time()
            counts[key] += 1
            state["seen"] += 1
            if state["seen"] == expect:
                await app.producer.flush()
                seconds = time.perf_counter() - state["t0"]
                cpu = time.process_time() - state["cpu0"]
                tmp = out.with_suffix(".tmp")
                tmp.write_text(json.dumps({
                    "events": expect, "seconds": seconds,
                    "events_per_s": expect / seconds if seconds > 0 else None,
                    "cpu_s_per_event": cpu / expect}))
                tmp.replace(out)  # the bench waits for OUT: it appears whole

    return app


def main(argv: list[str]) -> int:
    tansu = "--tansu" in argv
    bootstrap, topic, app_id, datadir, partitions, expect, out = [a for a in argv if a != "--tansu"]
    if tansu:
        from retail_sync import tansu_compat

        tansu_compat.install()
    import faust

    app = build(bootstrap, topic, app_id, datadir, int(partitions), int(expect), Path(out))
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
