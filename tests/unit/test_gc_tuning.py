"""The worker's garbage collector thresholds (retail_sync/heap.py ``tune_gc``, issue 16)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from retail_sync import heap
from retail_sync.settings import Settings


@pytest.fixture
def restore_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_thresholds")
def test_the_setting_sets_the_thresholds_and_default_leaves_pythons() -> None:
    assert Settings().gc_thresholds == "50000,20,20"
    assert heap.tune_gc(Settings().gc_thresholds) == (50000, 20, 20) == gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    assert heap.tune_gc(Settings(gc_thresholds="default").gc_thresholds) == (700, 10, 10)
    assert heap.tune_gc("1000,5,7") == (1000, 5, 7)


@pytest.mark.parametrize("bad", ["", "1,2", "a,b,c", "1,2,3,4", "-1,2,3"])
def test_malformed_thresholds_are_refused_at_start(bad: str) -> None:
    with pytest.raises(ValidationError, match="gc_thresholds"):
        Settings(gc_thresholds=bad)
