import pytest
from pydantic import ValidationError

from retail_sync.cli import load_settings
from retail_sync.settings import Settings


def test_defaults_are_valid_and_topics_are_prefixed():
    s = Settings()
    assert s.broker_url is None
    assert s.topic("orders-raw") == "retail-sync.orders-raw"


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("RETAIL_SYNC_APP_ID", "t1")
    monkeypatch.setenv("RETAIL_SYNC_ERP_BASE_URL", "http://erp.internal:8000")
    monkeypatch.setenv("RETAIL_SYNC_BROKER_URL", "kafka://kafka:9092")
    s = Settings()
    assert s.app_id == "t1"
    assert str(s.erp_base_url) == "http://erp.internal:8000/"
    assert s.broker_url == "kafka://kafka:9092"


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("RETAIL_SYNC_BROKER_URL", "localhost:9092", "kafka://"),
        ("RETAIL_SYNC_ERP_BASE_URL", "not a url", "URL"),
        ("RETAIL_SYNC_PARTITIONS", "0", "greater than or equal to 1"),
        ("RETAIL_SYNC_APP_ID", "bad id with spaces", "pattern"),
        ("RETAIL_SYNC_CANONICAL_URL", "ftp://x", "http://"),
        ("RETAIL_SYNC_BROKER_HEARTBEAT_INTERVAL_S", "30", "heartbeat"),
        # the default webhook limit is 512 KiB: a raw delivery of that size must fit a record
        ("RETAIL_SYNC_PRODUCER_MAX_REQUEST_BYTES", "300000", "webhook_max_body_bytes"),
    ],
)
def test_invalid_values_are_rejected(monkeypatch, var, value, message):
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_cli_reports_bad_settings_in_one_line_each(monkeypatch, capsys):
    monkeypatch.setenv("RETAIL_SYNC_PARTITIONS", "zero")
    with pytest.raises(SystemExit) as exit_info:
        load_settings()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "RETAIL_SYNC_PARTITIONS" in err
    assert "Traceback" not in err


def test_secrets_are_masked():
    masked = Settings().masked()
    assert masked["shopify_webhook_secret"] == "***"
    assert masked["erp_api_secret"] == "***"
