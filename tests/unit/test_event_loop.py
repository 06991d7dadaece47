"""RETAIL_SYNC_EVENT_LOOP (retail_sync/event_loop.py ``use_event_loop``): ``uvloop`` makes the loops
the worker creates uvloop's; ``asyncio`` leaves asyncio's own. Each case in a fresh interpreter,
since the policy is process-wide."""

from __future__ import annotations

import subprocess
import sys

import pytest

from retail_sync.settings import Settings

PROBE = """
import asyncio, sys
from retail_sync.event_loop import use_event_loop
use_event_loop(sys.argv[1])
loop = asyncio.new_event_loop()
print(type(loop).__module__)
loop.close()
"""


@pytest.mark.parametrize(("name", "module"), [("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_the_worker_event_loop_is_the_one_asked_for(name: str, module: str) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, name], capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip()
    assert out.split(".")[0] == module, out


def test_the_setting_refuses_an_unknown_loop() -> None:
    assert Settings(event_loop="uvloop").event_loop == "uvloop"
    with pytest.raises(ValueError, match="event_loop"):
        Settings(event_loop="trio")
