"""The worker's start-up check of the ERP's Custom Fields (issue 12 item 1).

Exactly-once into the ERP rests on Custom Fields the integration needs on the ERPNext site
(``connectors.erpnext.fields.CUSTOM_FIELDS``): a Sales Order is looked up by its unique
``custom_marketplace_order_key`` before it is created, a Delivery Note by ``custom_shipment_id``,
returns and credit notes by ``custom_return_id``. On a site where one is missing, ERPNext drops the
value from every document we post (and the look-up finds nothing); where a field that must be
unique is not, two concurrent posts both succeed. Either way duplicates appear only later, under
load, so the worker asks once at start:

    GET /api/resource/Custom Field?filters=[["dt","in",[...]]]&fields=["dt","fieldname","unique"]

and names every field missing or not unique. ``RETAIL_SYNC_ERP_CUSTOM_FIELDS_CHECK``: ``warn``
(default: a loud error line, the worker starts), ``refuse`` (the worker exits 2), ``off``. An ERP
that cannot be asked (down, no permission to read Custom Field) is a warning in every mode: the
start is not held hostage by the ERP.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from retail_sync.connectors.erpnext.fields import CUSTOM_FIELDS
from retail_sync.connectors.erpnext.frappe import FrappeSession
from retail_sync.connectors.erpnext.settings import ErpNextSettings

DOCTYPE = "Custom Field"
#: a start-up check waits at most this long for the ERP, whatever RETAIL_SYNC_ERP_TIMEOUT_S says
MAX_WAIT_S = 5.0


@dataclass
class FieldCheck:
    """What the check found: ``problems`` (fields missing or not unique, one line each) and,
    when the ERP could not be asked, ``unverified`` (why)."""

    problems: list[str] = field(default_factory=list)
    unverified: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.unverified is None


def query() -> dict[str, str]:
    """The list query of every Custom Field on the doctypes the integration uses."""
    return {"filters": json.dumps([["dt", "in", sorted(CUSTOM_FIELDS)]]),
            "fields": json.dumps(["dt", "fieldname", "unique"]),
            "limit_page_length": "0"}  # fmt: skip


def problems_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    """One line per Custom Field of ``CUSTOM_FIELDS`` missing from ``rows`` or, when it must
    be unique, not unique there."""
    found = {(str(r.get("dt")), str(r.get("fieldname"))): r for r in rows if isinstance(r, dict)}
    problems = []
    for doctype, fields in CUSTOM_FIELDS.items():
        for name, definition in fields.items():
            row = found.get((doctype, name))
            if row is None:
                problems.append(f"Custom Field {doctype}.{name} ({definition['fieldtype']}, "
                                f"label {definition['label']!r}) is missing on the ERP")
            elif definition.get("unique") and str(row.get("unique")) not in ("1", "True", "true"):
                problems.append(f"Custom Field {doctype}.{name} must be unique (exactly-once "
                                "into the ERP rests on its unique index) but is not")
    return problems


async def check(session: FrappeSession) -> FieldCheck:
    """Ask the ERP behind ``session`` for its Custom Fields and compare with CUSTOM_FIELDS."""
    try:
        rows = await session.get_data(session.url(DOCTYPE), "list Custom Field", params=query())
    except Exception as exc:  # noqa: BLE001 - any failure to ask is reported, never fatal
        return FieldCheck(unverified=f"{type(exc).__name__}: {exc}")
    if not isinstance(rows, list):
        return FieldCheck(unverified="the ERP's answer is not a list of Custom Fields")
    return FieldCheck(problems=problems_of(rows))


async def check_settings(settings: ErpNextSettings) -> FieldCheck:
    """``check`` against the ERP the settings name (at most MAX_WAIT_S)."""
    session = FrappeSession(str(settings.erp_base_url), settings.erp_api_key.get_secret_value(),
                            settings.erp_api_secret.get_secret_value(),
                            timeout_s=min(settings.erp_timeout_s, MAX_WAIT_S))
    try:
        return await asyncio.wait_for(check(session), MAX_WAIT_S + 1)
    except TimeoutError:
        return FieldCheck(unverified=f"no answer within {MAX_WAIT_S:.0f} s")
    finally:
        await session.close()


def messages(result: FieldCheck, mode: str) -> tuple[list[tuple[str, str]], bool]:
    """((level, line) to log, whether the worker must refuse to start) for ``result`` under
    ``mode``: problems are errors, an ERP that could not be asked a warning."""
    lines = [("ERROR", f"ERP CUSTOM FIELDS: {p}") for p in result.problems]
    if result.problems:
        lines.append(("ERROR", "ERP CUSTOM FIELDS: create them as docs/ARCHITECTURE.md §6 lists "
                     "(connectors/erpnext/fields.py CUSTOM_FIELDS); until then orders may reach the "
                     "ERP twice" + ("; refusing to start (RETAIL_SYNC_ERP_CUSTOM_FIELDS_CHECK="
                                    "refuse)" if mode == "refuse" else "")))
    if result.unverified:
        lines.append(("WARNING", f"ERP CUSTOM FIELDS: could not be checked ({result.unverified})"))
    return lines, mode == "refuse" and bool(result.problems)


def run_startup_check(settings: ErpNextSettings) -> tuple[list[tuple[str, str]], bool]:
    """The check as the worker's start runs it: synchronously, before Faust starts, in a thread
    of its own (``asyncio.run`` here would leave the main thread without the event loop Faust
    expects)."""
    mode = settings.erp_custom_fields_check
    if mode == "off":
        return [], False
    with ThreadPoolExecutor(1, thread_name_prefix="erp-fields-check") as pool:
        result = pool.submit(asyncio.run, check_settings(settings)).result()
    return messages(result, mode)


__all__ = ["FieldCheck", "check", "check_settings", "messages", "problems_of", "query",
           "run_startup_check"]
