"""A changelog record batch the broker refuses (tables/changelog.py): the worker exits with status
70 at once, so the input behind it, not yet committed, is read again; an acknowledged batch makes
its last offset the partition's persisted offset. The exit is checked on a real child process
with a real asyncio future, as aiokafka resolves it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from typing import Any

from faust.types import TP

from retail_sync.stack import ROOT
from retail_sync.tables import changelog

CHILD = textwrap.dedent("""
    import asyncio, logging, sys
    from faust.types import TP
    from retail_sync.tables import changelog

    async def main():
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(changelog._persisted(None, TP("app-stock-changelog", 3), 12))
        print("queued", flush=True)
        future.set_exception(RuntimeError("NotLeaderForPartition"))
        await asyncio.sleep(0.5)
        print("acknowledged", flush=True)  # what Faust would do next: never reached

    logging.basicConfig(stream=sys.stderr)
    asyncio.run(main())
""")


def test_a_refused_batch_exits_the_worker_with_70() -> None:
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                            timeout=60, cwd=str(ROOT))
    assert result.returncode == changelog.EXIT_UNSENT == 70, result
    assert result.stdout.split() == ["queued"], result.stdout
    assert "did not take a changelog batch of 12 records" in result.stderr
    assert "NotLeaderForPartition" in result.stderr


class _Store:
    def __init__(self) -> None:
        self.offsets: dict[TP, int] = {}

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.offsets[tp] = offset


async def test_an_acknowledged_batch_persists_its_last_offset() -> None:
    table: Any = type("Table", (), {"data": _Store()})()
    tp = TP("app-stock-changelog", 1)
    future = asyncio.get_running_loop().create_future()
    future.add_done_callback(changelog._persisted(table, tp, 5))
    future.set_result(type("RecordMetadata", (), {"offset": 100})())  # the batch's base offset
    await asyncio.sleep(0)
    assert table.data.offsets == {tp: 104}
