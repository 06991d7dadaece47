"""Checks made when a command starts (issue 11, item 6: safe defaults).

* Every ``RETAIL_SYNC_*`` environment variable must be a setting: the settings object ignores
  unknown names, so ``RETAIL_SYNC_CANONICAL_ULR`` would silently leave the default in force.
  ``RETAIL_SYNC_TEST_*`` (the test suite's own knobs, tests/conftest.py) are not settings and
  are allowed.
* Secrets still at their demo defaults (settings.py) or the docker-compose placeholder
  ``change-me`` are reported, so a production start says so loudly.
* Log records go through ``retail_sync.redact`` so no URL's password reaches a log.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from retail_sync.channels import plugin_variables as channel_plugin_variables
from retail_sync.erps import plugin_variables
from retail_sync.pii import mask_text
from retail_sync.redact import mask_url
from retail_sync.settings import ENV_PREFIX, Settings

#: prefixes of RETAIL_SYNC_* variables that are not settings but allowed (the test suite's)
ALLOWED_PREFIXES = (f"{ENV_PREFIX}TEST_",)
#: placeholders that are as good as no secret (docker-compose.yml's defaults)
PLACEHOLDER_SECRETS = {"change-me", "changeme"}
#: secret settings -> the setting that says whether that system is used at all (None: always)
SECRET_USED_WHEN: dict[str, str | None] = {
    "shopify_webhook_secret": None,
    "erp_api_key": None,
    "erp_api_secret": None,
    "amazon_access_token": "amazon_base_url",
    "walmart_client_secret": "walmart_base_url",
    "shopify_access_token": "shopify_admin_base_url",
    "wms_api_key": "wms_base_url",
}


def known_variables() -> list[str]:
    return sorted(ENV_PREFIX + name.upper() for name in Settings.model_fields)


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """``RETAIL_SYNC_*`` variables that are no setting, each with the closest known name."""
    environ = os.environ if environ is None else environ
    known = known_variables() + plugin_variables(environ)  # an external ERP's own settings
    known += channel_plugin_variables(environ)  # and those of external channel plugins
    unknown = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or upper.startswith(ALLOWED_PREFIXES):
            continue
        suffixes = [k[len(ENV_PREFIX):] for k in known]  # the shared prefix would match all
        close = difflib.get_close_matches(upper[len(ENV_PREFIX):], suffixes, n=1, cutoff=0.6)
        unknown.append((name, ENV_PREFIX + close[0] if close else None))
    return unknown


def unknown_variables_message(found: list[tuple[str, str | None]]) -> str:
    parts = [f"{name} (did you mean {close}?)" if close else name for name, close in found]
    noun = "variable" if len(found) == 1 else "variables"
    return (f"unknown {noun} {', '.join(parts)}: every {ENV_PREFIX}* variable must be a setting "
            "(`retail-sync settings` lists them; README 'Settings')")


def demo_secrets(settings: Settings) -> list[str]:
    """The secret settings still at their demo default (or a placeholder) while in use."""
    found = []
    for name, used_when in SECRET_USED_WHEN.items():
        if used_when is not None and not getattr(settings, used_when, None):
            continue
        value = getattr(settings, name)
        default = Settings.model_fields[name].default
        raw = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        demo = default.get_secret_value() if isinstance(default, SecretStr) else default
        if raw == demo or raw.strip().lower() in PLACEHOLDER_SECRETS:
            found.append(ENV_PREFIX + name.upper())
    return found


class MaskedLogRecord(logging.LogRecord):
    """A log record whose message has every URL's credentials masked, and customers' emails,
    phones and personal ``"key": "value"`` pairs too (``retail_sync.pii.mask_text``), traceback
    included."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # logging.LogRecord's own
        super().__init__(*args, **kwargs)
        if self.exc_info and self.exc_info[0] is not None:  # formatters reuse exc_text
            self.exc_text = mask_text(mask_url(_FORMATTER.formatException(self.exc_info)))

    def getMessage(self) -> str:  # noqa: N802 - logging's name
        return mask_text(mask_url(super().getMessage()))


_FORMATTER = logging.Formatter()


def mask_credentials_in_logs() -> None:
    """From now on every log message of this process has its URLs' passwords masked."""
    if logging.getLogRecordFactory() is logging.LogRecord:
        logging.setLogRecordFactory(MaskedLogRecord)
