"""Integration fixtures: one embedded broker per session; per test its own app id, topics,
ERP simulator and real worker processes (retail_sync.stack)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from retail_sync.broker import EmbeddedBroker
from retail_sync.simulators.erpnext.simulator import ErpSimConfig
from retail_sync.stack import Stack
from tests.integration.helpers import GROUP_TIMINGS_ENV, TEARDOWN_STOP_TIMEOUT_S

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    """RETAIL_SYNC_TEST_BROKER_URL points the suite at a real Kafka; else the embedded Tansu."""
    configured = os.environ.get("RETAIL_SYNC_TEST_BROKER_URL")
    if configured:
        yield configured
        return
    with EmbeddedBroker() as broker:
        yield broker.url


@pytest.fixture
async def stack(broker_url: str, redis_url: str, tmp_path) -> AsyncIterator[Stack]:
    """Workers share the test Redis (tests/conftest.py finds or starts one): webhook dedupe and
    rate limits are shared by every worker of a test, as in production."""
    tansu = not os.environ.get("RETAIL_SYNC_TEST_BROKER_URL")
    # worker tests invent SKUs without modelling the ERP's item master: the simulated ERP
    # creates their Item on first sight (customers, company, warehouse are still checked)
    erp = ErpSimConfig(unknown_items="create")
    async with Stack(broker_url=broker_url, workdir=tmp_path, erp_config=erp, tansu=tansu,
                     env={"RETAIL_SYNC_REDIS_URL": redis_url, **GROUP_TIMINGS_ENV},
                     stop_timeout_s=TEARDOWN_STOP_TIMEOUT_S) as s:
        yield s
