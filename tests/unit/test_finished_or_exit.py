"""``agents.guard.finished_or_exit``: a failure after the per-record guard (a batch's writes and
sends) ends the worker process at once with status 70, before Faust can acknowledge the input;
success and cancellation pass through. The exit is checked on a real child process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from retail_sync.agents.guard import EXIT_UNFINISHED, finished_or_exit
from retail_sync.stack import ROOT

CHILD = textwrap.dedent("""
    import asyncio, logging, sys
    from retail_sync.agents.guard import finished_or_exit

    async def main():
        async with finished_or_exit("the test's batch"):
            print("handling", flush=True)
            raise RuntimeError("the producer refused the record")
        print("acknowledged", flush=True)  # what Faust would do next: never reached

    logging.basicConfig(stream=sys.stderr)
    try:
        asyncio.run(main())
    finally:
        print("finally ran", flush=True)  # os._exit skips it, as it skips Faust's ack
""")


def test_a_failure_exits_the_process_with_70_before_anything_after_it_runs() -> None:
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                            timeout=60, cwd=str(ROOT))
    assert result.returncode == EXIT_UNFINISHED == 70, result
    assert result.stdout.split() == ["handling"], result.stdout
    assert "the test's batch failed after its records were handled" in result.stderr
    assert "RuntimeError: the producer refused the record" in result.stderr  # the traceback


async def test_success_and_cancellation_pass_through() -> None:
    done = []
    async with finished_or_exit("a batch"):
        done.append(1)
    assert done == [1]

    async def cancelled() -> None:
        async with finished_or_exit("a batch"):
            await asyncio.sleep(10)

    task = asyncio.create_task(cancelled())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
